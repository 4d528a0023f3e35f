//! payhook, the binary's library half: configuration and the wiring that `main` and the
//! integration tests share.
//!
//! - [`config`]: layered settings (defaults → file → `PAYHOOK_*` env → flags).
//! - [`app`]: opens the store, builds the dispatcher and the API, runs them until shutdown.
//! - [`cluster_clock`]: a node's clock, corrected to the database's on a shared store.
//! - [`backup`]: `payhook backup` and `payhook check`.
//! - [`listen`]: the local receiver of `payhook listen`.
//! - [`bench`]: `payhook bench`, the measurements behind BENCHMARKS.md.
//! - [`demo`]: `payhook demo`, the walk-through of every dialect.

pub mod app;
pub mod backup;
pub mod bench;
pub mod cluster_clock;
pub mod config;
pub mod demo;
pub mod listen;
