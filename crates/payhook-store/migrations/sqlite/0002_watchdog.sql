-- payhook schema v2 (SQLite): the re-poll watchdog, and delivery kinds.

ALTER TABLE deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'status';

CREATE TABLE watches (
    operation_id  TEXT PRIMARY KEY REFERENCES operations(id),
    merchant_id   TEXT NOT NULL,
    source        TEXT NOT NULL,          -- JSON status_source, normalized
    polls         INTEGER NOT NULL DEFAULT 0,
    next_poll_at  INTEGER,
    state         TEXT NOT NULL,          -- active | finished | exhausted
    lease_until   INTEGER,
    leased_by     TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX watches_due ON watches (next_poll_at) WHERE state = 'active';

CREATE TABLE polls (
    operation_id     TEXT NOT NULL REFERENCES operations(id),
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
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
