//! Wall-clock time as an input: the core never reads a clock.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as read by the host (`SystemTime::now()` natively,
/// `Date.now()` in a worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis)
    }

    /// The instant `secs` whole seconds after the Unix epoch.
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down (HTTP dates have one-second resolution).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// This instant truncated to a whole second, as an HTTP date would carry it.
    pub const fn truncated_to_secs(self) -> Timestamp {
        Timestamp(self.0 / 1000 * 1000)
    }

    /// The instant `millis` later, saturating at the end of time.
    pub const fn saturating_add_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_convert_both_ways() {
        for (millis, secs, truncated) in
            [(0, 0, 0), (999, 0, 0), (1_000, 1, 1_000), (1_999, 1, 1_000)]
        {
            let at = Timestamp::from_millis(millis);
            assert_eq!(at.as_millis(), millis);
            assert_eq!(at.as_secs(), secs);
            assert_eq!(at.truncated_to_secs(), Timestamp::from_millis(truncated));
        }
        assert_eq!(Timestamp::from_secs(2).as_millis(), 2_000);
    }

    #[test]
    fn arithmetic_saturates_at_the_end_of_time() {
        assert_eq!(Timestamp::from_secs(u64::MAX).as_millis(), u64::MAX);
        assert_eq!(
            Timestamp::from_millis(u64::MAX - 1).saturating_add_millis(5).as_millis(),
            u64::MAX
        );
        assert_eq!(Timestamp::from_millis(1).saturating_add_millis(5), Timestamp::from_millis(6));
    }

    #[test]
    fn timestamps_serialize_as_plain_milliseconds() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(serde_json::to_string(&at).unwrap(), "1700000000123");
        assert_eq!(serde_json::from_str::<Timestamp>("1700000000123").unwrap(), at);
    }
}
