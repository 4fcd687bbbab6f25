-- Exclusion constraints over a uuid need btree_gist (a trusted extension: the database's owner
-- may create it).
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- The appointment-service's copy of the staff, kept by user events under the version rule,
-- holding only what booking needs (no email, no phone). Every user has a row, not only the
-- doctors: a row is the version the rule compares with, so a late "doctor" snapshot cannot
-- bring back someone who has since become a nurse.
CREATE TABLE clinicians (
    id              uuid PRIMARY KEY,
    first_name      text NOT NULL,
    last_name       text NOT NULL,
    role            text NOT NULL,
    is_active       boolean NOT NULL,
    -- The userVersion of the snapshot applied last; NULL for events of producers that send none
    -- (those are ordered by event_timestamp).
    user_version    bigint,
    event_timestamp timestamptz NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now()
);

-- The end-of-history mark of the last backfill (`portal consumer add`), one row: the service is
-- not ready, and books nothing, before it has the mark and holds at least `users` clinicians
-- (the users auth_db held when the backfill began).
CREATE TABLE history (
    complete     boolean PRIMARY KEY DEFAULT true CHECK (complete),
    users        bigint NOT NULL CHECK (users >= 0),
    completed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE appointments (
    id               uuid PRIMARY KEY,
    -- Free text: there is no patient service.
    patient_name     text NOT NULL CHECK (char_length(patient_name) BETWEEN 1 AND 200),
    doctor_id        uuid NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    reason           text CHECK (char_length(reason) <= 500),
    status           text NOT NULL DEFAULT 'booked'
                     CHECK (status IN ('booked', 'cancelled', 'needs_reassignment')),
    created_by       uuid NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    -- A doctor sees one patient at a time: of two overlapping bookings, however concurrent, only
    -- one commits. Cancelled appointments and those waiting for another doctor do not count.
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        doctor_id WITH =, tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status = 'booked')
);
CREATE INDEX appointments_doctor ON appointments (doctor_id, starts_at);
CREATE INDEX appointments_time ON appointments (starts_at);
