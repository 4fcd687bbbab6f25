-- Refresh tokens: opaque to the client, stored here only as their SHA-256. Every refresh marks
-- its token used and issues the next one of the same family (one login); presenting a used
-- token again means it was copied, and the whole family is revoked. A family ends on logout,
-- deactivation, role change, password change or reset, and at its absolute expiry.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_live_by_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Login throttling per account (the normalised email as typed, known or not, so the answer
-- does not tell which accounts exist). Kept in auth_db so that every auth-service process
-- counts the same attempts. An attempt is counted before its password is checked, so a flood
-- of parallel guesses cannot all get past the limit before the first failure is recorded.
CREATE TABLE login_throttle (
    account         text PRIMARY KEY,
    attempts        integer NOT NULL,
    window_started  timestamptz NOT NULL,
    locked_until    timestamptz
);
CREATE INDEX login_throttle_window ON login_throttle (window_started);
