-- Erasure of a person's data (UK GDPR art. 17). The users row stays, under its id, with the
-- personal fields replaced by contract::erasure's placeholders and erased_at set: the audit
-- trail, appointments and every copy keep the pseudonymous id, and nothing changes the record
-- again.
ALTER TABLE users ADD COLUMN erased_at timestamptz;

-- One row per erasure: who asked, why, when, the version of its user.erased event, and keyed
-- fingerprints of what was erased (platform::erasure), so `portal erasure verify` can search
-- every database and queue for the data without the data being kept. Kept as long as the
-- audit trail is (never pruned with the event store).
CREATE TABLE erasures (
    user_id       uuid PRIMARY KEY REFERENCES users (id),
    requested_by  uuid NOT NULL,
    reason        text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    user_version  bigint NOT NULL,
    erased_at     timestamptz NOT NULL DEFAULT now(),
    fingerprints  jsonb NOT NULL,
    -- When `portal erasure purge` last removed the person's messages from every dead-letter
    -- and retry queue (NULL: not yet).
    queues_purged_at timestamptz
);
CREATE INDEX erasures_recent ON erasures (erased_at);
