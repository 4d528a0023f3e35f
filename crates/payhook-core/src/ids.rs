//! Prefixed identifiers. Parsed once at the edge (`FromStr`), trusted after.
//!
//! The core never generates ids (that needs randomness); the store mints them with
//! [`IdPrefix`] plus a UUIDv7, so ids sort by creation time and stay within 36 characters.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An id string did not have the expected `prefix_` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct BadId {
    pub kind: &'static str,
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $kind:literal) => {
        #[doc = concat!("A `", $prefix, "…` identifier.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Builds an id from its random part (`{prefix}{suffix}`).
            pub fn from_suffix(suffix: &str) -> Self {
                $name(format!("{}{}", $prefix, suffix))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                let rest = s.strip_prefix($prefix).ok_or(BadId { kind: $kind })?;
                let ok = !rest.is_empty()
                    && s.len() <= 36
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric());
                if ok {
                    Ok($name(s.to_owned()))
                } else {
                    Err(BadId { kind: $kind })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadId;
            fn try_from(s: String) -> Result<Self, BadId> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(MerchantId, "mer_", "merchant");
prefixed_id!(OperationId, "op_", "operation");
prefixed_id!(EventId, "evt_", "event");
prefixed_id!(DeliveryId, "dlv_", "delivery");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_its_own_prefix() {
        assert!("op_0193abc".parse::<OperationId>().is_ok());
        assert_eq!("dlv_1".parse::<OperationId>(), Err(BadId { kind: "operation" }));
        assert!("op_".parse::<OperationId>().is_err());
        assert!("op_a-b".parse::<OperationId>().is_err());
        assert!(format!("op_{}", "a".repeat(34)).parse::<OperationId>().is_err());
    }
}
