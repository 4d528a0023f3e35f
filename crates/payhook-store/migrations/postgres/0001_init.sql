-- payhook schema v1 (PostgreSQL). Times are unix milliseconds (BIGINT), as in the SQLite
-- schema, so both stores order and compare times the same way. JSON columns are `json`, not
-- `jsonb`: PostgreSQL validates them, and keeps the text (and so the key order the dialects
-- render) exactly as written.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE merchants (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    dialect                TEXT NOT NULL,
    callback_url           TEXT,
    allowed_callback_urls  JSON NOT NULL,  -- array of prefixes
    retry                  JSON,           -- retry policy
    encryption_key         TEXT,           -- public JWK (JSON), sealed with the master key
    settings               JSON NOT NULL,  -- object
    signing_secret         TEXT NOT NULL,
    previous_secret        TEXT,
    previous_expires_at    BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_hash     TEXT PRIMARY KEY,         -- hex SHA-256 of the pk_… key
    merchant_id  TEXT NOT NULL REFERENCES merchants(id),
    created_at   BIGINT NOT NULL
);
CREATE INDEX api_keys_by_merchant ON api_keys (merchant_id);

CREATE TABLE operations (
    number        BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    merchant_id   TEXT NOT NULL REFERENCES merchants(id),
    external_id   TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    callback      JSON NOT NULL,           -- CallbackSettings
    data          JSON NOT NULL,           -- object
    request_hash  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (merchant_id, external_id)
);

CREATE TABLE events (
    position         BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    operation_id     TEXT NOT NULL REFERENCES operations(id),
    merchant_id      TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    status           TEXT NOT NULL,
    previous_status  TEXT NOT NULL,
    event_key        TEXT,
    created_at       BIGINT NOT NULL,
    snapshot         JSON NOT NULL,        -- Operation at this seq
    UNIQUE (operation_id, seq),
    UNIQUE (operation_id, event_key)
);
-- The merchant's pull feed: `WHERE merchant_id = $1 AND position > $2 ORDER BY position`.
CREATE INDEX events_by_merchant ON events (merchant_id, position);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    -- Deferred: a status change plans its delivery before inserting the event, so the event
    -- insert (and the per-merchant feed lock it needs) comes last, just before commit.
    event_id         TEXT NOT NULL REFERENCES events(id) DEFERRABLE INITIALLY DEFERRED,
    operation_id     TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    dialect          TEXT NOT NULL,
    url              TEXT NOT NULL,
    host             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    series_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    leased_by        TEXT,
    policy           JSON NOT NULL,        -- retry policy, fixed at creation
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The claim query walks pending deliveries by due time (`FOR UPDATE SKIP LOCKED`); delivered,
-- superseded and cancelled rows, the vast majority over time, are not in this index at all.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
-- Supersede, per-operation ordering and the delivery log all look up an operation's
-- deliveries by seq.
CREATE INDEX deliveries_by_operation ON deliveries (operation_id, seq);
-- Releasing a restarted node's leases.
CREATE INDEX deliveries_leased ON deliveries (leased_by) WHERE leased_by IS NOT NULL;

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id),
    number           INTEGER NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
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
    disabled_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, url)
);
