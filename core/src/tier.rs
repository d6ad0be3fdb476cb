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

/// The kind of failure a host saw from a tier, as far as a decision depends on it: a nearer
/// tier that cannot take an object is left out of a write, and the answer to a failed write
/// says why (`write::Failure::status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TierFault {
    /// The object is larger than the tier can ever hold.
    #[error("the object is larger than the tier can hold")]
    TooLarge,
    /// The tier's buffers for writes in progress are full; a later write may fit.
    #[error("the tier is busy")]
    Busy,
    /// The write's condition did not hold when the tier committed.
    #[error("the write's condition did not hold")]
    ConditionFailed,
    /// The writer received another number of bytes than was announced.
    #[error("the writer received another size than announced")]
    SizeMismatch,
    /// Local I/O failed.
    #[error("i/o failed")]
    Io,
    /// The backend (an object store, another server) failed or answered something unexpected.
    #[error("the backend failed")]
    Backend,
}
