-- payhook schema v5 (SQLite): each distinct retry policy is stored once.
-- A delivery keeps the retry policy it was created with (so a merchant's later change does not
-- alter callbacks already owed). Until v4 every delivery row held that policy as JSON, about
-- 80 bytes and nearly always the same as its neighbours'. From v5 a new delivery refers to a
-- row of `policies` by `policy_id` and leaves `policy` empty; the SQLite writer thread keeps
-- the ids it has seen (`policy_ref` in sqlite/rows.rs). Deliveries written before v5 keep
-- their JSON in `policy` and a NULL `policy_id`, and are read as before.

CREATE TABLE policies (
    id      INTEGER PRIMARY KEY,
    policy  TEXT NOT NULL UNIQUE        -- JSON retry policy
);
ALTER TABLE deliveries ADD COLUMN policy_id INTEGER REFERENCES policies(id);
