//! The RFC 9211 `Cache-Status` header: one member per tier consulted, deepest first.
