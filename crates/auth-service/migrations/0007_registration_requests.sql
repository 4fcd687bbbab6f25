-- Requests for an account (issue 26): a self-registration no longer creates an account. It is a
-- request with no password and no role, which an admin approves (creating the account with the
-- role the admin chooses and a temporary password) or declines. Nothing of it reaches an event
-- or a copy until then. One request per email (the first stays); kept 30 days.
CREATE TABLE registration_requests (
    id              uuid PRIMARY KEY,
    email           text NOT NULL UNIQUE,
    first_name      text NOT NULL,
    last_name       text NOT NULL,
    phone_number    text,
    requested_role  text,
    requested_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registration_requests_age ON registration_requests (requested_at);
