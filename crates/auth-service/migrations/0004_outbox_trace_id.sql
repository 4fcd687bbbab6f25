-- The trace id of the request that wrote each event (W3C trace context), so one change can be
-- followed from the HTTP request through the relay's AMQP headers to each consumer's apply.
-- NULL for events written outside a traced request (the seed, bulk imports, repairs).
ALTER TABLE outbox ADD COLUMN trace_id text;
