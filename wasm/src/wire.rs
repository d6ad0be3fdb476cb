//! The one binary layout of every call across the boundary, and the table of strings that
//! cross it as numbers.
//!
//! # Input
//!
//! JavaScript encodes the strings of a call with `TextEncoder.encodeInto` straight into one
//! buffer the module keeps (`inputBuffer`), fields separated by NUL, and passes its length and
//! the call's numbers as arguments. NUL never occurs inside a field: a field value holding one is
//! invalid (RFC 9110 §5.5), and `api.js` replaces it by U+0001, which the core refuses the same
//! way.
//!
//! # Answer
//!
//! Every raw call that answers writes into one [`Answer`] the module keeps and returns the
//! address of its numbers, which JavaScript reads as a `Float64Array`:
//!
//! ```text
//! nums: textPtr, textLen, payload...
//! a string in the payload is two numbers a, b:
//!   a >= 0   the UTF-8 bytes [a, a + b) of text (decoded once, with TextDecoder)
//!   a = -1   KNOWN[b]: a constant of this table, which JavaScript holds as a literal
//!   a = -2   the b-th string JavaScript encoded for the call (planResponse's object strings)
//!   a = -3   absent
//! every other number is a number: a size, a status, a tier, a copy, or a code (KNOWN index)
//! ```
//!
//! Building result objects field by field from Rust would cost a crossing and a decode per name
//! and value, ten times a plan; a returned string would be allocated, copied and freed at the
//! boundary. Numbers in a kept buffer cost nothing of that.
//!
//! # The table
//!
//! [`KNOWN`] lists every string sent as a number: the field names a plan writes most, and the
//! name of every answer type, event, reason and kind. `cargo xtask wasm` writes it into the
//! package as `wire.js` (from [`javascript`], through `examples/wire_js.rs`), so `api.js` and
//! the module read one list and cannot drift apart.

use std::fmt::Write;

/// Declares [`K`], one code per string, and [`KNOWN`], the strings in code order.
macro_rules! known {
    ($($code:ident = $text:literal,)*) => {
        /// The code of each string of [`KNOWN`] (its position).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub(crate) enum K {
            $(
                #[doc = $text]
                $code,
            )*
        }

        /// Every string sent across the boundary as its position here.
        pub(crate) const KNOWN: &[&str] = &[$($text,)*];

        impl K {
            /// Every code, in order.
            pub(crate) const ALL: &[K] = &[$(K::$code,)*];
        }
    };
}

known! {
    // Field names a plan writes (the first `KNOWN_NAMES`, in the order of `KNOWN_HEADERS`),
    // then `bytes`, the value of Accept-Ranges.
    AcceptRanges = "accept-ranges",
    ContentLength = "content-length",
    ContentRange = "content-range",
    ContentType = "content-type",
    Etag = "etag",
    LastModified = "last-modified",
    CacheControl = "cache-control",
    Expires = "expires",
    Bytes = "bytes",
    // Body kinds of a plan; `full` is also what a Range resolves to without one.
    None = "none",
    Full = "full",
    Range = "range",
    Multipart = "multipart",
    // What a Range resolves to.
    Partial = "partial",
    Unsatisfiable = "unsatisfiable",
    // The backfill manager's answers to a copy request, and its actions.
    StartCopy = "startCopy",
    Refuse = "refuse",
    Cancel = "cancel",
    Commit = "commit",
    Finished = "finished",
    Discard = "discard",
    ProceedWithMutation = "proceedWithMutation",
    ShutdownComplete = "shutdownComplete",
    // Copy modes.
    Tee = "tee",
    Background = "background",
    // Why a copy was refused.
    Deduplicated = "deduplicated",
    TooManyInFlight = "tooManyInFlight",
    KeyChanging = "keyChanging",
    Superseded = "superseded",
    TooLarge = "tooLarge",
    ShuttingDown = "shuttingDown",
    // Why a copy was discarded (the metric labels).
    EarlyClose = "early_close",
    SourceFailedReason = "source_failed",
    WriterFailedReason = "writer_failed",
    SizeMismatch = "size_mismatch",
    Lagging = "lagging",
    // (and `superseded`, as a refusal above)
    ShuttingDownReason = "shutting_down",
    Stale = "stale",
    // Events about a copy.
    SourceRead = "sourceRead",
    ChunkWritten = "chunkWritten",
    SourceEnded = "sourceEnded",
    SourceFailed = "sourceFailed",
    WriterFailed = "writerFailed",
    ClientClosed = "clientClosed",
    CopyStopped = "copyStopped",
    CommitFinished = "commitFinished",
    // Mutation kinds.
    Write = "write",
    Delete = "delete",
    Invalidate = "invalidate",
    // The read machine's actions.
    OpenTier = "openTier",
    RequestCopy = "requestCopy",
    Serve = "serve",
    SendPart = "sendPart",
    Abort = "abort",
    DropBody = "dropBody",
    // What a read tells its machine.
    TierOpened = "tierOpened",
    TierMissed = "tierMissed",
    TierFailed = "tierFailed",
    PartSent = "partSent",
    // Where a served body comes from.
    Nothing = "nothing",
    Opened = "opened",
    Parts = "parts",
    // Why a response was cut short.
    RevisionChanged = "revisionChanged",
}

impl K {
    /// The code JavaScript sent, if it is one.
    pub(crate) fn from_code(code: u8) -> Option<K> {
        K::ALL.get(usize::from(code)).copied()
    }
}

/// A string's first number in the answer: see the module doc.
const FROM_KNOWN: f64 = -1.0;
const FROM_CALLER: f64 = -2.0;
const ABSENT: f64 = -3.0;

/// An answer as JavaScript reads it straight from wasm memory, in buffers kept from call to call
/// (no allocation, copy or free at the boundary); see the module doc for the layout.
pub(crate) struct Answer {
    pub nums: Vec<f64>,
    pub text: Vec<u8>,
}

impl Answer {
    pub(crate) const fn new() -> Answer {
        Answer { nums: Vec::new(), text: Vec::new() }
    }

    /// Starts a new answer.
    pub(crate) fn clear(&mut self) {
        self.nums.clear();
        self.text.clear();
        // Filled in by `finish`.
        self.nums.extend_from_slice(&[0.0, 0.0]);
    }

    /// A number: a size, a status, a tier, a copy. Exact below 2^53, which every one is.
    pub(crate) fn number(&mut self, n: u64) {
        self.nums.push(n as f64);
    }

    /// A constant of [`KNOWN`], as a number (a type, a kind, a reason).
    pub(crate) fn code(&mut self, code: K) {
        self.nums.push(f64::from(code as u8));
    }

    /// A string, as text.
    pub(crate) fn string(&mut self, s: &str) {
        self.nums.extend_from_slice(&[self.text.len() as f64, s.len() as f64]);
        self.text.extend_from_slice(s.as_bytes());
    }

    /// A string that is a constant of [`KNOWN`].
    pub(crate) fn known(&mut self, code: K) {
        self.nums.extend_from_slice(&[FROM_KNOWN, f64::from(code as u8)]);
    }

    /// The `idx`-th string JavaScript encoded for the call.
    pub(crate) fn callers(&mut self, idx: usize) {
        self.nums.extend_from_slice(&[FROM_CALLER, idx as f64]);
    }

    /// An optional string.
    pub(crate) fn optional(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.nums.extend_from_slice(&[ABSENT, 0.0]),
        }
    }

    /// Writes where the text is and returns the address of the numbers.
    pub(crate) fn finish(&mut self) -> u32 {
        self.nums[0] = self.text.as_ptr() as usize as f64;
        self.nums[1] = self.text.len() as f64;
        self.nums.as_ptr() as usize as u32
    }
}

/// The fields of an input, separated by NUL.
pub(crate) const SEP: char = '\0';

/// `wire.js`, the table for JavaScript: `KNOWN`, and `CODE`, each string's code.
pub fn javascript() -> String {
    let mut out = String::from(
        "// Generated by `cargo xtask wasm` from wasm/src/wire.rs; do not edit.\n\
         // The strings that cross the boundary as numbers: an answer's string -1, b is \
         KNOWN[b], and a\n// code sent to the module is CODE[name].\n\
         export const KNOWN = Object.freeze([\n",
    );
    for text in KNOWN {
        let _ = writeln!(out, "  {text:?},");
    }
    out.push_str("]);\n\nexport const CODE = Object.freeze({\n");
    for (code, text) in KNOWN.iter().enumerate() {
        let _ = writeln!(out, "  {text:?}: {code},");
    }
    out.push_str("});\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_its_strings_position() {
        for (position, code) in K::ALL.iter().enumerate() {
            assert_eq!(*code as usize, position);
            assert_eq!(K::from_code(position as u8), Some(*code));
        }
        assert_eq!(K::from_code(KNOWN.len() as u8), None);
        assert!(KNOWN.len() < 256, "codes are bytes");
        for (position, text) in KNOWN.iter().enumerate() {
            assert!(!KNOWN[..position].contains(text), "{text} is listed twice");
        }
    }

    #[test]
    fn the_javascript_table_lists_every_string_in_order() {
        let js = javascript();
        let listed: Vec<&str> = js
            .lines()
            .skip_while(|line| !line.starts_with("export const KNOWN"))
            .skip(1)
            .take_while(|line| !line.starts_with("]);"))
            .map(|line| line.trim().trim_end_matches(',').trim_matches('"'))
            .collect();
        assert_eq!(listed, KNOWN);
        assert!(js.contains(&format!("  \"openTier\": {},", K::OpenTier as u8)), "{js}");
    }
}
