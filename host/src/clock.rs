//! The host's clock: the core takes time as an argument (`now`), and this is where the native
//! server reads it.
//!
//! Its own module so that storage tiers and the tiered driver read the time without reaching
//! into the HTTP layer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rangecache_core::Timestamp;

/// The wall clock as a [`Timestamp`], read once per request (a clock before 1970 reads as the
/// epoch).
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Timestamp::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}
