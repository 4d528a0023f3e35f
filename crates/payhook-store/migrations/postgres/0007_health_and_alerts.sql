-- payhook schema v7 (PostgreSQL): each destination's health (`payhook_core::lifecycle::health`),
-- kept with every attempt record, and the queue of operator alerts for the ops webhook.

CREATE TABLE destination_health (
    merchant_id           TEXT NOT NULL,
    url                   TEXT NOT NULL,
    consecutive_failures  BIGINT NOT NULL,
    failing_since         BIGINT,
    last_success_at       BIGINT,
    last_failure_at       BIGINT,
    alerted               BOOLEAN NOT NULL,
    hours                 TEXT NOT NULL,      -- JSON [HourCount], oldest first
    PRIMARY KEY (merchant_id, url)
);

CREATE TABLE ops_alerts (
    id               TEXT PRIMARY KEY,        -- evt_…, the webhook-id
    kind             TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    data             TEXT NOT NULL,           -- JSON
    created_at       BIGINT NOT NULL,
    state            TEXT NOT NULL,           -- pending | delivered | exhausted
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    leased_by        TEXT,
    last_error       TEXT
);
CREATE INDEX ops_alerts_due ON ops_alerts (next_attempt_at) WHERE state = 'pending';
-- A merchant's alerts go in the order they were raised: a claim looks for an older one.
CREATE INDEX ops_alerts_pending_by_merchant ON ops_alerts (merchant_id, created_at)
    WHERE state = 'pending';
