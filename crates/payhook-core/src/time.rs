//! Timestamps as unix milliseconds, and the date formats the dialects put on the wire.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time, in milliseconds since the unix epoch (UTC). Stored as-is in every store, so
/// ordering and arithmetic are plain integer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }

    fn datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 in UTC with millisecond precision: `2021-04-12T10:03:10.000Z`
    /// (UAPAY's date format, and the Standard Webhooks `timestamp` field).
    pub fn rfc3339_millis(self) -> String {
        // humantime writes this exact form without going through `format!` padding (a
        // quarter of the time: it runs a few times per callback), for the years 1970–9999
        // it covers; anything else (never a clock reading) takes the general path.
        const YEAR_10000_MS: i64 = 253_402_300_800_000;
        if (0..YEAR_10000_MS).contains(&self.0) {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs());
            return humantime::format_rfc3339_millis(at).to_string();
        }
        let dt = self.datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        )
    }

    /// ECOM's date format (seed 004): `2025-07-21 10:20:23.49+00:00`: centiseconds, UTC offset.
    pub fn ecom_format(self) -> String {
        let dt = self.datetime();
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:02}+00:00",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond() / 10
        )
    }

    /// Parses an RFC 3339 date (any offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Timestamp(i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_seeds() {
        let t = Timestamp::parse_rfc3339("2021-04-12T10:03:10Z").expect("valid date");
        assert_eq!(t.rfc3339_millis(), "2021-04-12T10:03:10.000Z");
        assert_eq!(Timestamp(1_618_221_790_123).rfc3339_millis(), "2021-04-12T10:03:10.123Z");
        let t = Timestamp::parse_rfc3339("2025-07-21T10:20:23.49Z").expect("valid date");
        assert_eq!(t.ecom_format(), "2025-07-21 10:20:23.49+00:00");
        assert_eq!(t.unix_seconds(), 1_753_093_223);
    }

    #[test]
    fn rfc3339_millis_is_one_form_across_the_range() {
        // Both sides of each edge of the fast path: the epoch and the year 10000.
        assert_eq!(Timestamp(0).rfc3339_millis(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-1).rfc3339_millis(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(253_402_300_799_999).rfc3339_millis(), "9999-12-31T23:59:59.999Z");
        // Past the year 9999 no calendar type here represents the time: the epoch stands in.
        assert_eq!(Timestamp(253_402_300_800_000).rfc3339_millis(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn arithmetic_saturates_and_clamps() {
        let t = Timestamp(1_000);
        assert_eq!(t.plus(Duration::from_millis(500)), Timestamp(1_500));
        assert_eq!(Timestamp(1_000).since(Timestamp(2_000)), Duration::ZERO);
        assert_eq!(Timestamp(2_500).since(Timestamp(1_000)), Duration::from_millis(1_500));
    }
}
