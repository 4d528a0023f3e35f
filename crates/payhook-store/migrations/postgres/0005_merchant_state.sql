-- payhook schema v5 (PostgreSQL): a merchant's state — active, paused or archived
-- (`payhook_core::lifecycle::merchant`). Claims skip the deliveries of a paused merchant by
-- looking its row up by primary key; every existing merchant is active.

ALTER TABLE merchants ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
