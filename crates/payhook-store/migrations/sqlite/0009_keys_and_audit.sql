-- payhook schema v9 (SQLite): API keys get an id, a shown prefix and the hour of their last
-- use (`payhook_core::lifecycle::keys`), and the audit log of operators' and merchants'
-- actions begins.
-- A key made before v9 gets its id from its hash (the key itself is not stored, so it cannot
-- be derived from the key) and the prefix `pk_` until its next use shows the real one.

ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT 'pk_';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
UPDATE api_keys SET id = 'key_' || substr(key_hash, 1, 22);
CREATE UNIQUE INDEX api_keys_by_id ON api_keys (id);
CREATE INDEX api_keys_by_merchant ON api_keys (merchant_id, created_at);

CREATE TABLE audit_log (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,            -- admin | merchant
    action       TEXT NOT NULL,            -- payhook_core::model::AuditAction
    merchant_id  TEXT NOT NULL,
    detail       TEXT NOT NULL             -- JSON
);
CREATE INDEX audit_by_merchant ON audit_log (merchant_id, position);
