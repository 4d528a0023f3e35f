//! `xpay`: XPAY's Success/Failed callbacks — a bare `GET` whose query carries `state` and
//! `xrayOperationID`. Unsigned by the protocol: confirm the outcome with payhook's status API
//! (`GET /v1/operations/{id}`) before acting on it.

use crate::ReceiveError;
use serde::{Deserialize, Serialize};

/// XPAY's `state` of a successful operation.
pub const STATE_SUCCESS: u32 = 10;
/// XPAY's `state` of a failed (or expired) operation.
pub const STATE_FAILED: u32 = 21;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpayCallback {
    /// `10` success, `21` failure.
    pub state: u32,
    /// payhook's numeric operation number (`xrayOperationID`).
    pub xray_operation_id: i64,
}

/// What `state` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XpayOutcome {
    Success,
    Failed,
    Unknown(u32),
}

impl XpayCallback {
    /// Reads the query string (without `?`); other parameters of your own URL are ignored.
    pub fn from_query(query: &str) -> Result<Self, ReceiveError> {
        let (mut state, mut id) = (None, None);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "state" => state = Some(number(&v, "state")?),
                "xrayOperationID" => id = Some(number(&v, "xrayOperationID")?),
                _ => {}
            }
        }
        let missing = |name: &str| ReceiveError::Malformed(format!("no {name} in the query"));
        Ok(XpayCallback {
            state: u32::try_from(state.ok_or_else(|| missing("state"))?)
                .map_err(|_| ReceiveError::Malformed("state out of range".into()))?,
            xray_operation_id: id.ok_or_else(|| missing("xrayOperationID"))?,
        })
    }

    pub fn outcome(&self) -> XpayOutcome {
        match self.state {
            STATE_SUCCESS => XpayOutcome::Success,
            STATE_FAILED => XpayOutcome::Failed,
            other => XpayOutcome::Unknown(other),
        }
    }
}

fn number(text: &str, name: &str) -> Result<i64, ReceiveError> {
    text.parse().map_err(|_| ReceiveError::Malformed(format!("{name} is not a number: {text:?}")))
}
