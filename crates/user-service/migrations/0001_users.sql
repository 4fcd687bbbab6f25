-- The user-service's copy of every user, kept in step by user events.
CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    -- Not unique here: events may arrive out of order (an email moving from one user to another
    -- could otherwise collide mid-way); uniqueness is the auth-service's job.
    email                text NOT NULL,
    first_name           text NOT NULL,
    last_name            text NOT NULL,
    role                 text NOT NULL,
    phone_number         text,
    is_active            boolean NOT NULL,
    must_change_password boolean NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz,
    -- The userVersion of the snapshot applied last; NULL for rows written from events of
    -- producers that send no userVersion (those are ordered by event_timestamp).
    user_version         bigint,
    event_timestamp      timestamptz NOT NULL,
    synced_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_directory ON users (role, is_active, last_name, first_name);
CREATE INDEX users_name ON users (last_name, first_name);
CREATE INDEX users_email ON users (email);
