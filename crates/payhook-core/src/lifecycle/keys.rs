//! A merchant's API keys: at most [`MAX_KEYS`] at once so a key can be rotated without a
//! gap (create the new one, move the integration, revoke the old), never none, and their
//! use recorded only to the hour.
//!
//! Keys are stored hashed. What may be shown of a key is its id, its [`prefix`], when it was
//! made and the hour it was last used in. Keys made before keys had ids got theirs from the
//! migration, with [`UNKNOWN_PREFIX`] until their first use shows the real one.

use crate::Timestamp;

/// How many keys a merchant may hold at once.
pub const MAX_KEYS: usize = 2;

/// How many characters of a key are shown: `pk_` and six more, enough to tell two keys
/// apart and far too few to guess the rest (a key has 32 random characters).
pub const PREFIX_LEN: usize = 9;

/// The prefix a migrated key shows until it is next used.
pub const UNKNOWN_PREFIX: &str = "pk_";

const HOUR_MS: i64 = 3_600_000;

/// A key change the rules refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("the merchant holds {MAX_KEYS} keys already: revoke one before creating another")]
    TooMany,
    #[error("this is the merchant's only key: create another before revoking it")]
    LastKey,
}

/// Whether a merchant holding `held` keys may get another.
pub fn check_create(held: usize) -> Result<(), KeyRefusal> {
    if held >= MAX_KEYS {
        Err(KeyRefusal::TooMany)
    } else {
        Ok(())
    }
}

/// Whether one of `held` keys may be revoked.
pub fn check_revoke(held: usize) -> Result<(), KeyRefusal> {
    if held <= 1 {
        Err(KeyRefusal::LastKey)
    } else {
        Ok(())
    }
}

/// What is shown of `key`.
pub fn prefix(key: &str) -> String {
    key.chars().take(PREFIX_LEN).collect()
}

/// The hour `now` falls in: a key's use is recorded no finer.
pub fn use_hour(now: Timestamp) -> Timestamp {
    Timestamp(now.0 - now.0.rem_euclid(HOUR_MS))
}

/// Whether a use at `now` changes what is recorded: the first use in a new hour, or the first
/// use of a migrated key (its prefix becomes known).
pub fn use_is_news(last_used_at: Option<Timestamp>, prefix: &str, now: Timestamp) -> bool {
    last_used_at != Some(use_hour(now)) || prefix == UNKNOWN_PREFIX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_holds_one_or_two_keys() {
        assert_eq!(check_create(1), Ok(()));
        assert_eq!(check_create(2), Err(KeyRefusal::TooMany));
        assert_eq!(check_revoke(2), Ok(()));
        assert_eq!(check_revoke(1), Err(KeyRefusal::LastKey));
    }

    #[test]
    fn use_is_recorded_to_the_hour() {
        let t = Timestamp::parse_rfc3339("2026-12-07T14:59:59.999Z").unwrap();
        let hour = Timestamp::parse_rfc3339("2026-12-07T14:00:00Z").unwrap();
        assert_eq!(use_hour(t), hour);
        assert!(!use_is_news(Some(hour), "pk_abcdef", t));
        assert!(use_is_news(Some(hour), "pk_abcdef", t.plus(std::time::Duration::from_millis(1))));
        assert!(use_is_news(Some(hour), UNKNOWN_PREFIX, t));
        assert!(use_is_news(None, "pk_abcdef", t));
    }

    #[test]
    fn the_prefix_shows_nine_characters() {
        assert_eq!(prefix("pk_abcdefghijkl"), "pk_abcdef");
    }
}
