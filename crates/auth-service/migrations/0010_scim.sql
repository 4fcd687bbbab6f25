-- SCIM 2.0 provisioning (`/scim/v2`): the bearer tokens of SCIM clients, and what SCIM keeps of
-- a user beyond the portal's own record.

-- A SCIM client's token: only its SHA-256 is kept (a random 256-bit secret needs no slow hash;
-- a fast one lets every request be checked with one index lookup).
CREATE TABLE scim_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash  bytea NOT NULL UNIQUE,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- A name names one live token: the log lines of its uses must say which client it was.
CREATE UNIQUE INDEX scim_tokens_live_name ON scim_tokens (name) WHERE revoked_at IS NULL;

-- What a SCIM client said of a user that the portal's record does not hold: its `userName`
-- (often the directory's UPN), `externalId`, and the multi-valued attributes as sent (the
-- portal keeps one email, one phone and one role; SCIM answers what the client sent while it
-- still agrees with the record). A user with no row here is seen through SCIM with its email
-- as `userName`. None of this is in the user events: the copies never needed it.
CREATE TABLE scim_users (
    user_id       uuid PRIMARY KEY REFERENCES users (id),
    user_name     text NOT NULL,
    external_id   text CHECK (length(external_id) <= 255),
    emails        jsonb,
    phone_numbers jsonb,
    roles         jsonb,
    -- Changes of the fields above that changed nothing of the record, since the record's last
    -- version: the ETag is W/"<user_version>.<scim_version>" while it is not 0, so a client
    -- that changed only a userName or an externalId is not answered 304 for it, nor its old
    -- ETag taken by If-Match.
    scim_version  integer NOT NULL DEFAULT 0,
    changed_at    timestamptz NOT NULL DEFAULT now(),
    -- Set by a SCIM DELETE: the person is deactivated (a clinical system keeps the record) and,
    -- while inactive, no longer seen through SCIM (RFC 7644 §3.6).
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (lower(user_name));
CREATE INDEX scim_users_external_id ON scim_users (external_id);
