//! `ReceiveError`: why a callback was refused. Every variant means "do not act on it".

/// Why a callback was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now: a replay, or a clock off")]
    StaleTimestamp(i64),
    #[error("no valid signature")]
    BadSignature,
    #[error("invalid token: {0}")]
    BadToken(String),
    #[error("the body is encrypted and no private key was given")]
    NoKey,
    #[error("cannot decrypt the body: {0}")]
    Decrypt(String),
    #[error("this dialect needs the merchant's secret")]
    NoSecret,
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// The receiver was set up wrongly (bad secret, bad key, unknown dialect).
    #[error("{0}")]
    Config(String),
}
