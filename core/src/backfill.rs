//! The backfill manager: copies from a deeper tier into tier 0, one per key at a time (SPEC §4).
