//! Canonical operation statuses and the rules for moving between them.
//!
//! ```text
//! created → pending ⇄ requires_3ds → success | failed | expired
//! success → success (partial refund: new seq, same status) | reversed | refunded
//! failed, expired, reversed, refunded: terminal
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Pending,
    #[serde(rename = "requires_3ds")]
    Requires3ds,
    Success,
    Failed,
    Expired,
    Reversed,
    Refunded,
}

/// A status change the rules forbid. Nothing is stored for it (the API answers 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot change status from {from} to {to}")]
pub struct InvalidTransition {
    pub from: Status,
    pub to: Status,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Created,
        Status::Pending,
        Status::Requires3ds,
        Status::Success,
        Status::Failed,
        Status::Expired,
        Status::Reversed,
        Status::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Pending => "pending",
            Status::Requires3ds => "requires_3ds",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Reversed => "reversed",
            Status::Refunded => "refunded",
        }
    }

    /// An outcome of the payment itself: the operation will not go back to pending.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Created | Status::Pending | Status::Requires3ds)
    }

    /// No further change is possible.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Failed | Status::Expired | Status::Reversed | Status::Refunded)
    }

    /// Checks a change from `self` to `to` against the transition rules.
    pub fn check_transition(self, to: Status) -> Result<(), InvalidTransition> {
        use Status::*;
        let allowed = match self {
            Created | Pending | Requires3ds => {
                matches!(to, Pending | Requires3ds | Success | Failed | Expired)
            }
            Success => matches!(to, Success | Reversed | Refunded),
            Failed | Expired | Reversed | Refunded => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the canonical status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    fn check(from: Status, to: Status, expect_ok: bool) {
        assert_eq!(
            from.check_transition(to).is_ok(),
            expect_ok,
            "{from} -> {to} should be {}",
            if expect_ok { "allowed" } else { "refused" }
        );
    }

    #[test]
    fn transition_table() {
        check(Created, Pending, true);
        check(Pending, Requires3ds, true);
        check(Requires3ds, Pending, true);
        check(Requires3ds, Success, true);
        check(Created, Failed, true);
        check(Pending, Expired, true);
        check(Success, Success, true);
        check(Success, Refunded, true);
        check(Success, Reversed, true);
        check(Created, Created, false);
        check(Pending, Created, false);
        check(Success, Pending, false);
        check(Success, Failed, false);
        check(Pending, Refunded, false);
        for to in Status::ALL {
            for terminal in [Failed, Expired, Reversed, Refunded] {
                check(terminal, to, false);
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).expect("serializes"), format!("\"{st}\""));
        }
        assert!("done".parse::<Status>().is_err());
    }
}
