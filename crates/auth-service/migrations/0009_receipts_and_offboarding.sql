-- Consumers of user events, registered by the setup and `portal consumer add`: every operator
-- view, the receipts and the offboarding saga read this list (no list in code). A receipt is
-- believed only when the broker user that published it (AMQP user_id, checked by RabbitMQ) is
-- the consumer's `broker_user`. A required consumer must confirm a change before an
-- offboarding goes on; an optional one is shown, never waited for.
CREATE TABLE consumers (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    required      boolean NOT NULL,
    broker_user   text NOT NULL CHECK (broker_user <> ''),
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Per consumer and user, the highest version the consumer reported applied, when that version
-- was written here (`changed_at`) and when the consumer committed it (`applied_at`).
CREATE TABLE consumer_versions (
    consumer     text NOT NULL,
    user_id      uuid NOT NULL,
    user_version bigint NOT NULL,
    changed_at   timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL,
    PRIMARY KEY (consumer, user_id)
);
-- The alert on unconfirmed deactivations reads recent deactivations only.
CREATE INDEX users_inactive_changed ON users (updated_at) WHERE NOT is_active;

-- Messages that are not user events (the saga's commands, snapshots sent again to one late
-- consumer), written in the transaction of the saga's step and published by the shared relay
-- (crates/outbox) like the user outbox. Not history: published rows are pruned after a week.
CREATE TABLE message_outbox (
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
CREATE INDEX message_outbox_unpublished ON message_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX message_outbox_created ON message_outbox (created_at);

-- The message relay's wake-up flag (as relay_wakeup is the user outbox's, migration 0005).
CREATE TABLE message_relay_wakeup (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    waiting boolean NOT NULL
);
INSERT INTO message_relay_wakeup (waiting) VALUES (true);

CREATE FUNCTION message_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce((SELECT waiting FROM message_relay_wakeup), true) THEN
        PERFORM pg_notify('message_outbox', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER message_outbox_notify AFTER INSERT ON message_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION message_outbox_notify();

-- The offboarding saga: one row per instance, its state, and when the runner looks at it next.
-- `version` is the optimistic-concurrency token: every transition names the version it read.
-- A user has at most one offboarding running (the partial unique index), so two requests at
-- once make one saga. `stalled_reason` is set while a running saga is stalled (it still
-- completes when what it waits for arrives). `due_at` is NULL once the saga has ended.
CREATE TABLE offboardings (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id),
    state          text NOT NULL CHECK (state IN ('awaiting_receipts', 'resolving_appointments',
                       'completed', 'needs_attention', 'cancelled')),
    stalled_reason text,
    policy         text NOT NULL CHECK (policy IN ('reassign', 'cancel')),
    reason         text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    requested_by   uuid NOT NULL,
    -- The version that deactivated the user: what every required consumer must confirm.
    target_version bigint NOT NULL,
    -- Re-sends in the current step.
    attempts       integer NOT NULL DEFAULT 0,
    command_id     uuid,
    outcome        jsonb,
    version        integer NOT NULL DEFAULT 1,
    -- When the runner looks next (a receipt or a reply brings it forward), and when the
    -- current wait times out.
    due_at         timestamptz,
    deadline_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE UNIQUE INDEX offboardings_one_running ON offboardings (user_id)
    WHERE state IN ('awaiting_receipts', 'resolving_appointments');
CREATE INDEX offboardings_due ON offboardings (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX offboardings_recent ON offboardings (created_at);

-- Every transition of a saga, with its time: the saga page's steps and the proof afterwards.
CREATE TABLE offboarding_steps (
    id             bigserial PRIMARY KEY,
    offboarding_id uuid NOT NULL REFERENCES offboardings (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    step           text NOT NULL,
    detail         text NOT NULL
);
CREATE INDEX offboarding_steps_of ON offboarding_steps (offboarding_id, id);

-- Message ids of replies already handled: a redelivered reply changes nothing.
CREATE TABLE processed_messages (
    message_id   uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);
