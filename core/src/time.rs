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
