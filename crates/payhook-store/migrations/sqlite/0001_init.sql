-- payhook schema v1 (SQLite). Times are unix milliseconds; JSON columns hold text.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE merchants (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    dialect                TEXT NOT NULL,
    callback_url           TEXT,
    allowed_callback_urls  TEXT NOT NULL,  -- JSON array of prefixes
    retry                  TEXT,           -- JSON retry policy
    encryption_key         TEXT,           -- JSON (public JWK)
    settings               TEXT NOT NULL,  -- JSON object
    signing_secret         TEXT NOT NULL,
    previous_secret        TEXT,
    previous_expires_at    INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash     TEXT PRIMARY KEY,         -- hex SHA-256 of the pk_… key
    merchant_id  TEXT NOT NULL REFERENCES merchants(id),
    created_at   INTEGER NOT NULL
);

CREATE TABLE operations (
    number        INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    merchant_id   TEXT NOT NULL REFERENCES merchants(id),
    external_id   TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    callback      TEXT NOT NULL,           -- JSON CallbackSettings
    data          TEXT NOT NULL,           -- JSON object
    request_hash  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (merchant_id, external_id)
);

CREATE TABLE events (
    position         INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    operation_id     TEXT NOT NULL REFERENCES operations(id),
    merchant_id      TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    status           TEXT NOT NULL,
    previous_status  TEXT NOT NULL,
    event_key        TEXT,
    created_at       INTEGER NOT NULL,
    snapshot         TEXT NOT NULL,        -- JSON Operation at this seq
    UNIQUE (operation_id, seq),
    UNIQUE (operation_id, event_key)
);
CREATE INDEX events_by_merchant ON events (merchant_id, position);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events(id),
    operation_id     TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    dialect          TEXT NOT NULL,
    url              TEXT NOT NULL,
    host             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    series_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_until      INTEGER,
    leased_by        TEXT,
    policy           TEXT NOT NULL,        -- JSON retry policy, fixed at creation
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- The claim query walks pending deliveries by due time; nothing else is in this index.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_operation ON deliveries (operation_id, seq);

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id),
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    request          TEXT NOT NULL,
    response_status  INTEGER,
    response_body    TEXT,
    outcome          TEXT NOT NULL,
    error_kind       TEXT,
    error            TEXT,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE disabled_destinations (
    merchant_id  TEXT NOT NULL,
    url          TEXT NOT NULL,
    disabled_at  INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, url)
);
