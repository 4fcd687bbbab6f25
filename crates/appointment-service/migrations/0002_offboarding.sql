-- Every change of an appointment raises its version: (id, version) names one change, so the
-- appointment events it causes can be told apart from a duplicate.
ALTER TABLE appointments ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- The appointment-service's outbox: appointment events and replies to the offboarding saga,
-- written in the transaction of the change they announce and published by the shared relay
-- (crates/outbox), as the auth-service's outbox is. Published rows are pruned after a week.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    message_id   uuid NOT NULL,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    message_type text NOT NULL,
    body         jsonb NOT NULL,
    trace_id     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_created ON outbox (created_at);

-- The relay's wake-up flag: writers notify only while the relay sleeps (see auth_db's 0005).
CREATE TABLE relay_wakeup (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    waiting boolean NOT NULL
);
INSERT INTO relay_wakeup (waiting) VALUES (true);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce((SELECT waiting FROM relay_wakeup), true) THEN
        PERFORM pg_notify('appointment_outbox', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- What each command (by its message id) did to each appointment, written in the appointment's
-- own transaction: a command redelivered after a crash skips what is done and replies with all.
CREATE TABLE command_results (
    command_id     uuid NOT NULL,
    appointment_id uuid NOT NULL,
    resolution     text NOT NULL
                   CHECK (resolution IN ('reassigned', 'cancelled', 'cancelled-no-doctor-free')),
    patient_name   text NOT NULL,
    starts_at      timestamptz NOT NULL,
    doctor_id      uuid,
    doctor_name    text,
    done_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, appointment_id)
);

-- Commands answered: a copy of one (the saga sends again when a reply is late) gets the same
-- reply, with the same message id.
CREATE TABLE processed_commands (
    message_id       uuid PRIMARY KEY,
    reply_message_id uuid NOT NULL,
    reply            jsonb NOT NULL,
    processed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_commands_age ON processed_commands (processed_at);
CREATE INDEX command_results_age ON command_results (done_at);
