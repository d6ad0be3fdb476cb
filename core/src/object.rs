//! Object metadata: what a tier stores beside an object's bytes and what every response about
//! that object is planned from.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::validators::EntityTag;

/// Metadata of one revision of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Length of the object in bytes.
    pub size: u64,
    /// The strong entity-tag of this revision.
    pub etag: EntityTag,
    /// Last-Modified, at one-second resolution.
    pub last_modified: Timestamp,
    /// End-to-end headers stored with the object (lower-case names), returned on reads.
    pub headers: Vec<(String, String)>,
    /// When this revision expires; never served at or after this instant.
    pub expires: Option<Timestamp>,
}
