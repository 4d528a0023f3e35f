-- payhook schema v2 (PostgreSQL): the re-poll watchdog, and delivery kinds.

ALTER TABLE deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'status';

CREATE TABLE watches (
    operation_id  TEXT PRIMARY KEY REFERENCES operations(id),
    merchant_id   TEXT NOT NULL,
    source        JSON NOT NULL,           -- status_source, normalized
    polls         INTEGER NOT NULL DEFAULT 0,
    next_poll_at  BIGINT,
    state         TEXT NOT NULL,           -- active | finished | exhausted
    lease_until   BIGINT,
    leased_by     TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- The poll claim walks active watches by due time (`FOR UPDATE SKIP LOCKED`).
CREATE INDEX watches_due ON watches (next_poll_at) WHERE state = 'active';
-- Releasing a restarted node's leases.
CREATE INDEX watches_leased ON watches (leased_by) WHERE leased_by IS NOT NULL;

CREATE TABLE polls (
    operation_id     TEXT NOT NULL REFERENCES operations(id),
    number           INTEGER NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    request          TEXT NOT NULL,
    response_status  INTEGER,
    response_body    TEXT,
    read_value       TEXT,
    mapped_status    TEXT,
    outcome          TEXT NOT NULL,
    error_kind       TEXT,
    error            TEXT,
    PRIMARY KEY (operation_id, number)
);
