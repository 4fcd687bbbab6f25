-- Login throttling by source (issue 26): a stranger's guesses must not lock a colleague out.
-- The one counter table now holds three kinds of rows, told apart by the key's prefix:
--   pair:<account>|<address>  failures of one account from one address (locks that pair only),
--   addr:<address>            failures from one address at any account (locks that address for
--                             accounts it has never signed in to),
--   acct:<account>            failures of one account from anywhere (never locks; beyond a
--                             ceiling it slows addresses the account has not signed in from).
-- The rows are short-lived state: the old per-account rows are dropped, not converted.
TRUNCATE login_throttle;
ALTER TABLE login_throttle RENAME COLUMN account TO key;

-- The addresses (IPv6 by /64) each account signed in from successfully: a right password from
-- one of them is not slowed or refused because strangers guessed elsewhere. Kept 90 days after
-- the last sign-in there.
CREATE TABLE login_known_sources (
    account       text NOT NULL,
    source        text NOT NULL,
    last_success  timestamptz NOT NULL,
    PRIMARY KEY (account, source)
);
CREATE INDEX login_known_sources_age ON login_known_sources (last_success);
