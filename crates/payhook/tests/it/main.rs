//! payhook's end-to-end tests: the real server on port 0, a real SQLite file, real receivers
//! on loopback.

mod api;
mod architecture;
mod backup;
mod contract;
mod crash;
mod crosscheck;
mod delivery;
mod dialects;
#[path = "../common/disk.rs"]
mod disk;
mod full_disk;
mod health;
mod helpers;
mod keys;
mod logs;
mod merchant_state;
mod openapi;
mod ops_alerts;
mod ordering;
mod pg_restore;
mod props;
mod retention;
mod retry;
mod security;
mod tools;
mod watchdog;
