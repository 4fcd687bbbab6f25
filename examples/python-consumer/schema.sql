-- The reference consumer's copy of the portal's users (examples/python-consumer), in its own
-- database: `psql "$DATABASE_URL" -f schema.sql` before the first start (safe to run again).
--
-- A row for EVERY user, not only those this consumer cares about: the stored user_version is
-- what stops a late event from bringing back an older state (a doctor who became a nurse).
CREATE TABLE IF NOT EXISTS users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL,
    first_name           text NOT NULL,
    last_name            text NOT NULL,
    role                 text NOT NULL,
    phone_number         text,
    is_active            boolean NOT NULL,
    must_change_password boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz,
    -- The event's userVersion: the version rule compares it. NULL only from an older producer
    -- that sent none (such rows are ordered by event_timestamp).
    user_version         bigint,
    event_timestamp      timestamptz NOT NULL,
    -- When this copy last changed the row (this consumer's own clock).
    applied_at           timestamptz NOT NULL DEFAULT now(),
    -- Set when the person was erased: the row keeps id and version (so no late event brings them
    -- back), holds placeholders instead of personal data, and never changes again.
    erased_at            timestamptz
);
-- A copy made before erasure existed (contract 1.1) gets the column too.
ALTER TABLE users ADD COLUMN IF NOT EXISTS erased_at timestamptz;

-- The end-of-history mark of a backfill (`portal consumer add`): once it is here and the copy
-- holds at least `users` rows, the copy knows every user that existed when the backfill began.
CREATE TABLE IF NOT EXISTS history_complete (
    consumer  text PRIMARY KEY,
    users     bigint NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now()
);
