-- payhook schema v7 (SQLite): retention.
-- `feed_horizons` keeps, per merchant, the highest event position a purge has taken, so the
-- events feed can refuse a cursor that would skip purged events (410 cursor_expired) instead
-- of leaving a silent gap. `polls_by_time` lets the purge find old polls without reading the
-- whole table. `deliveries_by_event` serves the purge's lookups of an event's deliveries and,
-- above all, the foreign-key check of every event it deletes: without it, SQLite reads the
-- whole deliveries table once per deleted event. Its key is the event's position, which only
-- grows, so each new delivery appends to the index's last page (measured: +1.8% writer
-- instructions per report + attempt record, `scripts/writer-cost`). Nothing existing
-- changes; old rows are purged by age like new ones.

CREATE TABLE feed_horizons (
    merchant_id     TEXT PRIMARY KEY,
    purged_through  INTEGER NOT NULL
);
CREATE INDEX polls_by_time ON polls (started_at);
CREATE INDEX deliveries_by_event ON deliveries (event_position);
