-- The outbox doubles as the event store. Sequence numbers are taken at INSERT but become visible
-- at COMMIT, so a reader that pages "seq > last seen" could skip a row whose transaction commits
-- late. Each row therefore records its transaction id: readers page by (tx_id, seq) and stop at
-- the oldest transaction still running (pg_snapshot_xmin), below which nothing new can appear.
ALTER TABLE outbox ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX outbox_tx_seq ON outbox (tx_id, seq);
CREATE INDEX outbox_created ON outbox (created_at);
