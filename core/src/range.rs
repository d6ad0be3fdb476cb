//! Byte ranges: the `Range` header of RFC 9110 §14.1–14.2, its resolution against an object's
//! size, `Content-Range` (§14.4), and the half-open `[start, end)` window used everywhere.

/// A non-empty, half-open byte window `[start, end)` inside one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    start: u64,
    end: u64,
}

impl Window {
    /// `None` if the window would be empty.
    pub fn new(start: u64, end: u64) -> Option<Window> {
        (start < end).then_some(Window { start, end })
    }

    /// First byte of the window.
    pub fn start(self) -> u64 {
        self.start
    }

    /// One past the last byte of the window.
    pub fn end(self) -> u64 {
        self.end
    }

    /// Number of bytes in the window (never zero).
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// Always false: a window is never empty; present so clippy's `len_without_is_empty` holds.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// Bounds on a multi-range request, so that a request cannot amplify the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimits {
    /// Most ranges honoured in one request; past it the Range is ignored (200, whole object).
    pub max_ranges: usize,
}

impl Default for RangeLimits {
    fn default() -> RangeLimits {
        RangeLimits { max_ranges: 16 }
    }
}

/// One byte-range-spec of RFC 9110 §14.1.2, before it is resolved against a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (inclusive on the wire) or `first-` when `last` is `None`.
    FromTo {
        /// First byte position.
        first: u64,
        /// Last byte position, inclusive; `None` for an open range.
        last: Option<u64>,
    },
    /// `-N`: the last `N` bytes.
    Suffix(u64),
}

/// What a Range header selects from an object of a known size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The whole object (no Range, an ignored Range, or ranges that cover it all).
    Full,
    /// One or more windows, in the order the request named them.
    Partial(Vec<Window>),
    /// No range overlaps the object: 416.
    Unsatisfiable,
}

/// What `open(key, start, end)` reads from an object of a known size (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenWindow {
    /// The whole object, `open(key, 0, None)`, which is satisfiable even for zero bytes.
    Whole,
    /// A non-empty part of the object.
    Part(Window),
}

/// What `open(key, start, end)` asks of an object whose size the caller does not know yet
/// (SPEC §1); [`Span::resolve`] turns it into an [`OpenWindow`] once the size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// `[start, end)`, `end = None` reading to EOF; `From { start: 0, end: None }` is the
    /// whole object, satisfiable even when it has zero bytes.
    From {
        /// First byte.
        start: u64,
        /// One past the last byte, clamped to the size; `None` for EOF.
        end: Option<u64>,
    },
    /// The last `n` bytes (a suffix range).
    Last(u64),
}

impl Span {
    /// The whole object.
    pub const WHOLE: Span = Span::From { start: 0, end: None };
}

impl From<Window> for Span {
    fn from(window: Window) -> Span {
        Span::From { start: window.start(), end: Some(window.end()) }
    }
}
