-- Users of the portal, owned by the auth-service.
CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL,
    password_hash        text NOT NULL,
    first_name           text NOT NULL,
    last_name            text NOT NULL,
    role                 text NOT NULL CHECK (role IN ('admin', 'doctor', 'nurse', 'pharmacist', 'consultant')),
    phone_number         text,
    is_active            boolean NOT NULL,
    must_change_password boolean NOT NULL,
    -- Incremented in the same transaction as every change and carried by its event, so
    -- consumers can apply events in any order.
    user_version         bigint NOT NULL CHECK (user_version >= 1),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
-- Emails are stored lower-cased; the index on lower() keeps uniqueness case-insensitive even
-- for rows written by other tools.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
CREATE INDEX users_role_name ON users (role, last_name, first_name);

-- The outbox, kept as the event store: one row per event, written in the same transaction as the
-- user change it describes. Rows are never deleted by the relay, only marked published.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    user_id      uuid NOT NULL,
    user_version bigint,
    -- json (not jsonb) keeps the exact bytes that are published.
    body         json NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_user ON outbox (user_id, seq);

-- Wakes the relay as soon as events commit (notifications are delivered at commit, once per
-- transaction and channel), so the hot path never waits for a poll.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
