-- A second factor (TOTP, RFC 6238) with recovery codes, the login's second step, and a record
-- of security-relevant acts that are not changes of a user (issue 26).

-- One factor per user. `confirmed_at` is NULL while enrolling (the secret shown, no code
-- accepted yet). `last_step` is the TOTP time step of the last accepted code: a code is good
-- once, so a code seen over a shoulder cannot be replayed within its 30 s.
CREATE TABLE second_factors (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret        bytea NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Recovery codes, stored as SHA-256 (they are random, 50 bits each); each signs in once.
CREATE TABLE recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A right password waiting for its second factor: the token's SHA-256, the password hash the
-- login saw (a temporary password is spent only when the second step succeeds), the throttle's
-- account and source, and the wrong codes so far.
CREATE TABLE login_challenges (
    token_hash     bytea PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_seen  text NOT NULL,
    expires_at     timestamptz NOT NULL,
    failures       integer NOT NULL DEFAULT 0
);
CREATE INDEX login_challenges_expiry ON login_challenges (expires_at);

-- Security-relevant acts that change no user (no version, no event to the copies): a second
-- factor enrolled or reset, by whom, when.
CREATE TABLE security_events (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text NOT NULL,
    user_id  uuid NOT NULL,
    by_user  uuid,
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX security_events_user ON security_events (user_id, at);
