-- payhook schema v10 (SQLite): each destination's health (`payhook_core::lifecycle::health`),
-- kept with every attempt record, and the queue of operator alerts for the ops webhook.

CREATE TABLE destination_health (
    merchant_id           TEXT NOT NULL,
    url                   TEXT NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    failing_since         INTEGER,
    last_success_at       INTEGER,
    last_failure_at       INTEGER,
    alerted               INTEGER NOT NULL,   -- 0 | 1
    hours                 TEXT NOT NULL,      -- JSON [HourCount], oldest first
    PRIMARY KEY (merchant_id, url)
);

CREATE TABLE ops_alerts (
    id               TEXT PRIMARY KEY,        -- evt_…, the webhook-id
    kind             TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    data             TEXT NOT NULL,           -- JSON
    created_at       INTEGER NOT NULL,
    state            TEXT NOT NULL,           -- pending | delivered | exhausted
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_until      INTEGER,
    leased_by        TEXT,
    last_error       TEXT
);
CREATE INDEX ops_alerts_due ON ops_alerts (next_attempt_at) WHERE state = 'pending';
-- A merchant's alerts go in the order they were raised: a claim looks for an older one.
CREATE INDEX ops_alerts_pending_by_merchant ON ops_alerts (merchant_id, created_at)
    WHERE state = 'pending';
