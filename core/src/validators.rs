//! Validators of RFC 9110 §8.8: entity-tags (strong, weak, lists, `*`) with strong and weak
//! comparison (§8.8.3.2), and HTTP dates (§5.6.7).

use serde::{Deserialize, Serialize};

/// An entity-tag (RFC 9110 §8.8.3): an opaque quoted string, possibly marked weak with `W/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityTag {
    /// True for a weak tag (`W/"..."`).
    pub weak: bool,
    /// The opaque characters between the quotes.
    pub opaque: String,
}
