-- payhook schema v6 (SQLite): events and deliveries refer to their operation and event by
-- number, not by text id.
-- Until v5 an event held its operation's id (26 characters) and a delivery held its event's
-- and its operation's ids, each again in an index: about 115 bytes per status report on the
-- single writer's pages, and every foreign-key check a seek by string in a unique index. From
-- v6 an event holds `operation_number` (the operation's `number`, its rowid) and a delivery
-- `event_position` (the event's `position`, its rowid) and `operation_number`, so those checks
-- are rowid lookups; reads join the text ids back in (`EVENTS_JOINED`, `DELIVERY_COLUMNS` in
-- sqlite/rows.rs). The API's ids do not change.
-- SQLite cannot change a column's type, so both tables are rebuilt as in v3: same rows, same
-- positions, the position counter carried over. The store runs this with foreign keys off and
-- checks them before committing (`migrate` in sqlite/migrate.rs). A reference that finds no row gives
-- NULL and fails the NOT NULL constraint, so the migration stops rather than drop a row. The
-- copy takes time and disk in proportion to the two tables.

CREATE TABLE events_v6 (
    position          INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    operation_number  INTEGER NOT NULL REFERENCES operations(number),
    merchant_id       TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    status            TEXT NOT NULL,
    previous_status   TEXT NOT NULL,
    event_key         TEXT,
    created_at        INTEGER NOT NULL,
    snapshot          TEXT NOT NULL,        -- JSON: the event's own part (v4), or the whole operation
    UNIQUE (operation_number, seq)
);
INSERT INTO events_v6 (position, id, operation_number, merchant_id, seq, status,
                       previous_status, event_key, created_at, snapshot)
SELECT position, id, (SELECT o.number FROM operations o WHERE o.id = events.operation_id),
       merchant_id, seq, status, previous_status, event_key, created_at, snapshot
FROM events
ORDER BY position;

CREATE TABLE deliveries_v6 (
    id                TEXT PRIMARY KEY,
    event_position    INTEGER NOT NULL REFERENCES events(position),
    operation_number  INTEGER NOT NULL,
    merchant_id       TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    dialect           TEXT NOT NULL,
    url               TEXT NOT NULL,
    host              TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    series_attempts   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    lease_until       INTEGER,
    leased_by         TEXT,
    policy            TEXT NOT NULL,        -- JSON retry policy before v5, '' with policy_id
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    kind              TEXT NOT NULL DEFAULT 'status',
    policy_id         INTEGER REFERENCES policies(id)
);
INSERT INTO deliveries_v6 (id, event_position, operation_number, merchant_id, seq, dialect, url,
                           host, state, attempts, series_attempts, next_attempt_at, lease_until,
                           leased_by, policy, last_error, created_at, updated_at, kind,
                           policy_id)
SELECT id, (SELECT e.position FROM events e WHERE e.id = deliveries.event_id),
       (SELECT o.number FROM operations o WHERE o.id = deliveries.operation_id),
       merchant_id, seq, dialect, url, host, state, attempts, series_attempts, next_attempt_at,
       lease_until, leased_by, policy, last_error, created_at, updated_at, kind, policy_id
FROM deliveries
ORDER BY rowid;

-- Positions are never reused: carry the old counter over, even past the last row.
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
 WHERE name = 'events_v6';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'events_v6', seq FROM sqlite_sequence
 WHERE name = 'events' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_v6');

DROP TABLE deliveries;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
ALTER TABLE deliveries_v6 RENAME TO deliveries;
CREATE UNIQUE INDEX events_by_key ON events (operation_number, event_key)
    WHERE event_key IS NOT NULL;
CREATE INDEX events_by_merchant ON events (merchant_id, position);
-- The claim query walks pending deliveries by due time; nothing else is in this index.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_operation ON deliveries (operation_number, seq);
