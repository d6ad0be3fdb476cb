//! rangecache-core: every decision of the rangecache object cache, with no effects.
//!
//! The core decides how a `Range` resolves, in which order preconditions are evaluated, what
//! status and headers answer a request, which tier a read is served from, and when a copy into
//! a nearer tier may be committed. It never reads a socket, a file, a clock or an environment
//! variable: time arrives as a [`Timestamp`] argument and bytes as lengths or `bytes::Bytes` in
//! inputs. Two hosts drive it: the native server (`rangecache`) and the wasm build.
//!
//! Decisions that need only their arguments are pure functions (`conditional::plan_response`,
//! `range::parse_range`); decisions that depend on what happened before are state machines
//! with one way in and one way out (`read`, `backfill` and `write`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backfill;
pub mod cache_status;
pub mod conditional;
pub mod key;
pub mod object;
pub mod range;
pub mod read;
pub mod tier;
pub mod time;
pub mod validators;
pub mod write;

pub use backfill::{CopyId, Generation};
pub use cache_status::CacheStatus;
pub use conditional::{
    Body, Part, PlanSpare, Precondition, RequestHeaders, ResponsePlan, plan_response,
    plan_response_with,
};
pub use key::{Key, Namespace, ObjectKey};
pub use object::ObjectMeta;
pub use range::{OpenWindow, RangeLimits, RangeSpec, Resolved, Span, Window};
pub use tier::TierIdx;
pub use time::Timestamp;
pub use validators::{EntityTag, EtagList};
