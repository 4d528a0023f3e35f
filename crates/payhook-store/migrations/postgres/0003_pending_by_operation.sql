-- A status report supersedes its operation's pending deliveries and checks for one in flight
-- (`WHERE operation_id = $1 AND state = 'pending'`, one prepared statement). With only
-- `deliveries_due` (every pending delivery) and `deliveries_by_operation` to choose from,
-- PostgreSQL's generic plan for it ANDed the two bitmaps, reading the entry of every pending
-- delivery on every report: under load, PostgreSQL's CPU went to that. This index holds
-- exactly the rows the statement looks for.
--
-- Built in the migration's transaction (not CONCURRENTLY): writes to `deliveries` wait while
-- it is built, once, at the upgrade.
CREATE INDEX deliveries_pending_by_operation ON deliveries (operation_id) WHERE state = 'pending';
