//! The injectable clock: production reads the system time, tests move time by hand.

use crate::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where "now" comes from. Everything that schedules work takes a `Clock`, never the system time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock. The one place in the core that reads time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to: for retry-schedule tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicI64::new(start.0))
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Another clock read through a correction: `inner` plus an offset that can be changed while
/// the clock is shared. Nodes of a cluster read the database's time this way (the offset is
/// measured against it), so that leases and schedules written by one node mean the same
/// moment to every other, whatever their own clocks say.
#[derive(Debug)]
pub struct OffsetClock<C> {
    inner: C,
    offset_ms: AtomicI64,
}

impl<C: Clock> OffsetClock<C> {
    pub fn new(inner: C) -> Self {
        OffsetClock { inner, offset_ms: AtomicI64::new(0) }
    }

    /// The uncorrected time, for measuring the offset.
    pub fn inner_now(&self) -> Timestamp {
        self.inner.now()
    }

    /// The reference clock's reading `reference`, taken between the uncorrected readings
    /// `sent` and `received`, becomes the correction: the reference is taken to have been read
    /// half-way between them, so the error is at most half the round trip. Returns the
    /// offset in milliseconds.
    pub fn align(&self, sent: Timestamp, reference: Timestamp, received: Timestamp) -> i64 {
        let midpoint = sent.0 + (received.0 - sent.0) / 2;
        let offset = reference.0 - midpoint;
        self.offset_ms.store(offset, Ordering::SeqCst);
        offset
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for OffsetClock<C> {
    fn now(&self) -> Timestamp {
        Timestamp(self.inner.now().0 + self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_reads_the_reference_time_from_the_midpoint_of_the_round_trip() {
        let clock = OffsetClock::new(ManualClock::new(Timestamp(1_000)));
        assert_eq!(clock.now(), Timestamp(1_000), "no correction before the first alignment");
        // The reference (30 s behind) was read while the inner clock went from 1000 to 1040.
        let offset = clock.align(Timestamp(1_000), Timestamp(-28_980), Timestamp(1_040));
        assert_eq!(offset, -30_000);
        assert_eq!(clock.now(), Timestamp(-29_000));
        assert_eq!(clock.inner_now(), Timestamp(1_000));
        clock.inner.advance(std::time::Duration::from_secs(2));
        assert_eq!(clock.now(), Timestamp(-27_000), "the correction stays as time moves");
    }
}
