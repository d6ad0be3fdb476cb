//! Tiers as the core sees them: a position in the configuration (SPEC §4: tier 0 is the
//! nearest, the last is authoritative) and the kinds of failure a host reports about one.
//!
//! Its own module because every machine names tiers: the read machine, the backfill manager,
//! the write machine and `Cache-Status` all depend on it, and it depends on none of them.

/// Index of a tier: 0 is the nearest, the last is authoritative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TierIdx(usize);

impl TierIdx {
    /// The tier at position `idx` in the configuration.
    pub const fn new(idx: usize) -> TierIdx {
        TierIdx(idx)
    }

    /// The position in the configuration.
    pub const fn get(self) -> usize {
        self.0
    }
}
