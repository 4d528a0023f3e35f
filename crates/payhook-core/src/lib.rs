//! payhook-core: the pure domain of payhook.
//!
//! Nothing here performs I/O. Time and randomness reach the logic as arguments
//! (`now: Timestamp`, `jitter: f64`); the only clock reader is [`clock::SystemClock`], which
//! callers inject behind the [`clock::Clock`] trait so tests can drive time by hand. One
//! deliberate exception: the `ecom` dialect's JWE encryption draws its ephemeral key and IV from
//! OpenSSL's CSPRNG, randomness that must not be injectable.
//!
//! Main modules:
//! - [`ids`]: prefixed id newtypes (`mer_…`, `op_…`, `evt_…`, `dlv_…`).
//! - [`status`]: canonical statuses and the transition rules.
//! - [`model`]: merchants, operations, events, deliveries, attempts.
//! - [`retry`]: retry policies and their arithmetic.
//! - [`dialect`]: what goes on the wire per protocol (render) and how answers are read (classify):
//!   `standard`, `xpay`, `ws2mpi`, `ecom`, `uapay`.
//! - [`signing`]: Standard Webhooks signatures, re-exported from `payhook-receiver` so the sender
//!   and merchants' receivers share one implementation.
//! - [`status_source`]: the re-poll watchdog's source: request and reading of answers.
//! - [`target`]: the SSRF guard's rules — forbidden ranges, the operator's `TargetPolicy` —
//!   shared by the API's check at registration and the dispatcher's after DNS.

pub mod clock;
pub mod dialect;
pub mod ids;
pub mod lifecycle;
pub mod model;
pub mod retry;
pub mod status;
pub mod status_source;
pub mod target;
pub mod time;

pub use payhook_receiver::signing;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
mod props;

pub use crate::time::Timestamp;
