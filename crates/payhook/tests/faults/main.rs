//! The fault suite (issue 26): payhook's real bad days, each with real processes, a real
//! receiver and a real database, each printing its figures (callbacks expected, delivered,
//! duplicates, lost, time to recover) on a `FIGURES` line.
//!
//! Every scenario is `#[ignore]`d in a plain `cargo test`: it needs root and a network
//! namespace of its own, which `scripts/faults` creates, runs this binary inside, and removes
//! (with every rule, mount and process made in it) however the run ends. Run them with
//! `scripts/faults`; one of them with `scripts/faults clocks`.

#[path = "../cluster/support.rs"]
#[allow(dead_code)]
mod support;

mod clocks;
mod database;
#[path = "../common/disk.rs"]
mod disk;
mod figures;
mod netns;
mod network;
mod pg_disk;
mod postgres;
mod proxy;
mod receivers;
