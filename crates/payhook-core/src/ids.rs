//! Prefixed identifiers. Parsed once at the edge (`FromStr`), trusted after.
//!
//! The core never generates ids (that needs randomness); the store mints them
//! (`payhook_store::mint_id`): the prefix plus a UUIDv7 in base 62, 22 characters, so ids
//! sort by creation time and stay within 36 characters. Ids minted before that carry 32 hex
//! digits instead; both forms pass the check.

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
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
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

            /// The `prefix_` form: the prefix, then ASCII letters and digits (at least
            /// one), 36 characters at most in all.
            fn check(s: &str) -> Result<(), BadId> {
                let rest = s.strip_prefix($prefix).ok_or(BadId { kind: $kind })?;
                let ok = !rest.is_empty()
                    && s.len() <= 36
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric());
                if ok {
                    Ok(())
                } else {
                    Err(BadId { kind: $kind })
                }
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Self::check(s).map(|()| $name(s.to_owned()))
            }
        }

        /// Deserialized ids keep the string serde built (no second copy).
        impl TryFrom<String> for $name {
            type Error = BadId;
            fn try_from(s: String) -> Result<Self, BadId> {
                Self::check(&s).map(|()| $name(s))
            }
        }

        /// Serialized as the string itself, borrowed (callbacks and answers carry several).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
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
prefixed_id!(ApiKeyId, "key_", "API key");

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

    #[test]
    fn serde_carries_the_plain_string_and_checks_it_on_the_way_in() {
        let id: OperationId = "op_0193abc".parse().expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("serializes"), r#""op_0193abc""#);
        let back: OperationId = serde_json::from_str(r#""op_0193abc""#).expect("deserializes");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<OperationId>(r#""evt_0193abc""#).is_err());
        assert!(serde_json::from_str::<OperationId>(r#""op_a-b""#).is_err());
    }
}
