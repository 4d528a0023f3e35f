//! `ws2mpi`: Ukrcard WS2MPI callbacks — `{"orderNumber","respStatus","orderStatus"?,"orderId"}`,
//! acknowledged by HTTP 200 with `{"orderNumber":<same>,"applicationStatus":200}`. Unsigned by
//! the protocol: confirm with payhook's status API before shipping goods.

use crate::ReceiveError;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `respStatus` of a callback carrying an order status.
pub const RESP_OK: u16 = 200;
/// `respStatus` when payhook's re-poll watchdog gave up without a final status.
pub const RESP_TIMEOUT: u16 = 408;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ws2mpiCallback {
    /// Your order id.
    pub order_number: String,
    /// `200` with an `order_status`; `408` when the status could not be learned in time.
    pub resp_status: u16,
    /// 0 registered, 1 amount held, 2 fully authorized, 3 authorization cancelled, 4 refunded,
    /// 5 3-D Secure in progress, 6 declined. Present only when `resp_status` is 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<u8>,
    /// payhook's operation id.
    pub order_id: String,
}

impl Ws2mpiCallback {
    pub fn from_body(body: &[u8]) -> Result<Self, ReceiveError> {
        serde_json::from_slice(body).map_err(|e| ReceiveError::Malformed(e.to_string()))
    }

    /// The body to answer with (HTTP 200) so WS2MPI stops repeating the callback.
    pub fn acknowledgement(&self) -> Vec<u8> {
        acknowledgement(&self.order_number)
    }
}

/// `{"orderNumber":<order_number>,"applicationStatus":200}`.
pub fn acknowledgement(order_number: &str) -> Vec<u8> {
    let body = json!({"orderNumber": order_number, "applicationStatus": 200});
    serde_json::to_vec(&body).expect("a JSON object of a string and a number serializes")
}
