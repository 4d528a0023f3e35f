-- payhook schema v3 (SQLite): events without an event key write no entry in the event-key index.
-- v1 declared UNIQUE (operation_id, event_key) on the events table, so every event, keyed or
-- not, wrote an entry into that index: one more b-tree insert on the single writer thread per
-- status report and per registration. A partial unique index over the keyed events keeps the
-- same rule (one event per operation and key) and skips the rest; it cut the writer's work
-- per report + attempt record by 4.1% (`scripts/writer-cost`).
-- SQLite cannot drop a table's constraint, so the table is rebuilt: same columns, same rows,
-- same positions. The store runs this with foreign keys off (deliveries refer to events) and
-- checks them before committing (`migrate` in sqlite/migrate.rs), as SQLite's procedure for
-- rebuilding a table asks. The copy takes time and disk in proportion to the events table.

CREATE TABLE events_v3 (
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
    UNIQUE (operation_id, seq)
);
INSERT INTO events_v3 (position, id, operation_id, merchant_id, seq, status, previous_status,
                       event_key, created_at, snapshot)
SELECT position, id, operation_id, merchant_id, seq, status, previous_status,
       event_key, created_at, snapshot
FROM events
ORDER BY position;
-- Positions are never reused: carry the old counter over, even past the last row.
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
 WHERE name = 'events_v3';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'events_v3', seq FROM sqlite_sequence
 WHERE name = 'events' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_v3');

DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE UNIQUE INDEX events_by_key ON events (operation_id, event_key) WHERE event_key IS NOT NULL;
CREATE INDEX events_by_merchant ON events (merchant_id, position);
