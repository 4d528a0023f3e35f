//! payhook-dispatch: everything that sends outbound HTTP.
//!
//! - [`dispatcher`]: claims due deliveries from the store, sends them, records every attempt
//!   and schedules retries. [`Dispatcher::run_once`] drives one round (tests); [`Dispatcher::run`]
//!   loops until cancelled.
//! - [`metrics`]: the counters and histograms the two loops record.
//! - [`ops`]: the operator alerts, sent to the ops webhook one at a time.
//! - [`purger`]: the retention purge, in small batches on every node.
//! - [`sender`]: the HTTP client (timeouts, no redirects, the SSRF-guarded resolver).
//! - `ssrf`: which addresses payhook refuses to connect to — `payhook_core::target`, the one
//!   table the API's registration check shares.
//! - [`watchdog`]: the re-poll watchdog for operations with a `status_source`.

pub mod dispatcher;
pub mod metrics;
pub mod ops;
pub mod purger;
pub mod sender;
/// The SSRF guard's rules live in core, shared with the API's check at registration.
pub use payhook_core::target as ssrf;
pub mod watchdog;

pub use dispatcher::{DispatchConfig, Dispatcher};
pub use ops::{OpsConfig, OpsNotifier};
pub use purger::{PurgeConfig, PurgeRun, Purger};
pub use sender::{SendResult, Sender, SenderConfig};
pub use ssrf::TargetPolicy;
pub use watchdog::{Watchdog, WatchdogConfig};
