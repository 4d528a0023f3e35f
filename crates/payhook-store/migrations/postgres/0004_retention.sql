-- payhook schema v4 (PostgreSQL): retention.
-- `feed_horizons` keeps, per merchant, the highest event position a purge has taken, so the
-- events feed can refuse a cursor that would skip purged events (410 cursor_expired) instead
-- of leaving a silent gap. `polls_by_time` lets the purge find old polls without a scan.
-- `deliveries_by_event` serves the foreign-key check of every event the purge deletes (without
-- it, PostgreSQL scans the deliveries table once per deleted event).

CREATE TABLE feed_horizons (
    merchant_id     TEXT PRIMARY KEY,
    purged_through  BIGINT NOT NULL
);
CREATE INDEX polls_by_time ON polls (started_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
