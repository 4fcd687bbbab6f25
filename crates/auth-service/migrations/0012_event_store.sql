-- The event store leaves the outbox. Until now `outbox` was both the relay's queue and the
-- history (rows only marked published), so it grew with every change and its cleanup was one
-- unbounded DELETE. From here on every user event is written, in the same statement as its
-- outbox row, to `event_store` too (same seq, tx_id, created_at and body bytes): the relay
-- reads and cleans `outbox`, readers of history (`portal events`, replay, backfill) read
-- `event_store`.
--
-- The store is partitioned by month of `created_at` (UTC), so retention (EVENT_RETENTION_DAYS)
-- drops whole partitions instead of deleting rows: no dead tuples, no long locks. A DEFAULT
-- partition takes any row whose month has no partition yet, so an insert never fails; the
-- maintenance (`event_store_maintain`, run by the auth-service at start and hourly) keeps this
-- month and two ahead created and moves rows out of DEFAULT when their month is created.
-- Month boundaries are UTC whatever the session says (the functions set it too).
SET LOCAL TimeZone = 'UTC';

CREATE TABLE event_store (
    seq          bigint NOT NULL,
    event_id     uuid NOT NULL,
    event_type   text NOT NULL,
    user_id      uuid NOT NULL,
    user_version bigint,
    -- json (not jsonb) keeps the exact bytes that were published.
    body         json NOT NULL,
    created_at   timestamptz NOT NULL,
    trace_id     text,
    -- The writing transaction, for the readers' (tx_id, seq) horizon (see migration 0002).
    tx_id        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- A key must hold the partition key; seq alone is unique (it is the outbox's bigserial).
    PRIMARY KEY (seq, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX event_store_user ON event_store (user_id, seq);
CREATE INDEX event_store_tx_seq ON event_store (tx_id, seq);
CREATE INDEX event_store_created ON event_store (created_at);
CREATE TABLE event_store_default PARTITION OF event_store DEFAULT;

-- The partition of the month (UTC) holding `month`, named event_store_YYYY_MM, unless it
-- exists; returns its name when it made it. It is made as a table of its own and then
-- attached: ATTACH takes SHARE UPDATE EXCLUSIVE on event_store, which neither writers nor
-- readers conflict with (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE, and
-- writers would queue behind it). Its CHECK constraint equals the bound, so ATTACH need not
-- scan it. Rows of that month already in DEFAULT are moved in first, with DEFAULT locked
-- against inserts meanwhile (they would land there again and fail the attach).
CREATE FUNCTION event_store_add_month(month timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    lo   timestamptz := date_trunc('month', month);
    hi   timestamptz := date_trunc('month', month) + interval '1 month';
    name text := 'event_store_' || to_char(date_trunc('month', month), 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE event_store INCLUDING DEFAULTS, '
        'CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L))',
        name, name || '_month', lo, hi);
    IF EXISTS (SELECT 1 FROM event_store_default WHERE created_at >= lo AND created_at < hi) THEN
        LOCK TABLE event_store_default IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format(
            'WITH moved AS (DELETE FROM event_store_default '
            'WHERE created_at >= %L AND created_at < %L RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved',
            lo, hi, name);
    END IF;
    EXECUTE format('ALTER TABLE event_store ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, lo, hi);
    RETURN name;
END $$;

-- Creates the partitions of this month, of `months_ahead` months after it, and of every month
-- that has rows waiting in DEFAULT (moving them in); returns the names it made. One maintainer
-- at a time (several auth-service replicas): a second call while one runs returns nothing.
-- lock_timeout bounds how long a writer could queue behind a statement of it waiting for a
-- lock; a call that times out is tried again an hour later (DEFAULT takes the rows meanwhile).
CREATE FUNCTION event_store_maintain(months_ahead integer) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '1s'
AS $$
DECLARE
    m    timestamptz;
    made text;
BEGIN
    -- 0x706f7274616c0003: "portal" and 3 (0001 is the admin guard, 0002 the setup).
    IF NOT pg_try_advisory_xact_lock(8101820098839052291) THEN
        RETURN;
    END IF;
    FOR m IN
        SELECT generate_series(date_trunc('month', now()),
                               date_trunc('month', now()) + make_interval(months => months_ahead),
                               interval '1 month')
        UNION
        SELECT DISTINCT date_trunc('month', created_at) FROM event_store_default
        ORDER BY 1
    LOOP
        made := event_store_add_month(m);
        IF made IS NOT NULL THEN
            RETURN NEXT made;
        END IF;
    END LOOP;
END $$;

-- Retention: detaches and drops the oldest monthly partition that ends at or before
-- `drop_before` and returns its name; NULL when there is none (or another maintainer runs).
-- One partition per call, each call its own transaction: DETACH takes ACCESS EXCLUSIVE on
-- event_store until the commit (DETACH ... CONCURRENTLY is not allowed beside a DEFAULT
-- partition), so it is held for one catalog change and one file removal, never for a DELETE.
-- A lock not granted within lock_timeout fails the call, which is tried again an hour later.
-- The DEFAULT partition is never dropped.
CREATE FUNCTION event_store_expire(drop_before timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '200ms'
AS $$
DECLARE
    name text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(8101820098839052291) THEN
        RETURN NULL;
    END IF;
    SELECT c.relname INTO name
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'event_store'::regclass
       AND c.relname ~ '^event_store_[0-9]{4}_[0-9]{2}$'
       AND to_timestamp(substr(c.relname, 13), 'YYYY_MM') + interval '1 month' <= drop_before
     ORDER BY c.relname
     LIMIT 1;
    IF name IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('ALTER TABLE event_store DETACH PARTITION %I', name);
    EXECUTE format('DROP TABLE %I', name);
    RETURN name;
END $$;

-- Only the auth-service (granted by the setup) runs them; functions are executable by PUBLIC
-- unless revoked.
REVOKE EXECUTE ON FUNCTION event_store_add_month(timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION event_store_maintain(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION event_store_expire(timestamptz) FROM PUBLIC;

-- The history so far: a partition for every month it spans and this month and two ahead,
-- then every row, with the same seq, tx_id and bytes.
SELECT event_store_add_month(m)
  FROM generate_series(
           date_trunc('month', least(now(), (SELECT min(created_at) FROM outbox))),
           date_trunc('month', now()) + interval '2 months',
           interval '1 month') AS m;
INSERT INTO event_store (seq, event_id, event_type, user_id, user_version, body, created_at,
                         trace_id, tx_id)
SELECT seq, event_id, event_type, user_id, user_version, body, created_at, trace_id, tx_id
  FROM outbox
 ORDER BY seq;

-- The outbox is now only the relay's queue: published rows are removed a minute after
-- publishing (OUTBOX_KEEP_PUBLISHED_SECS). The indexes that served history readers go; each
-- one cost every insert a write.
DROP INDEX outbox_user;
DROP INDEX outbox_tx_seq;
DROP INDEX outbox_created;
