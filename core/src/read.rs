//! The tiered read: which tier to open next and which to serve from (SPEC §4).
