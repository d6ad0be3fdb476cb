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
///
/// With these bounds the windows of a planned response never overlap (each byte of the object
/// is sent at most once), so a `multipart/byteranges` body is at most the object's size plus
/// `max_ranges` part headers (about 100 bytes each, plus the stored Content-Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimits {
    /// Most range-specs honoured in one request; past it the Range is ignored (200, whole
    /// object), as RFC 9110 §14.2 allows for a server that deems a request abusive.
    pub max_ranges: usize,
    /// Windows that overlap or lie at most this many bytes apart are merged into one, as RFC
    /// 9110 §14.2 and §15.3.7.2 allow, since a smaller gap costs less than a part header.
    pub coalesce_gap: u64,
}

impl Default for RangeLimits {
    /// 16 ranges (more than any downloader or media player asks for at once) and an 80-byte
    /// gap (about the size of one part's delimiter and headers).
    fn default() -> RangeLimits {
        RangeLimits { max_ranges: 16, coalesce_gap: 80 }
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

impl RangeSpec {
    /// The same bytes as a half-open [`Span`]: `first-last` is `[first, last + 1)`, `first-` is
    /// `[first, EOF)` and `-N` is the last `N` bytes.
    pub fn to_span(self) -> Span {
        match self {
            RangeSpec::FromTo { first, last } => {
                Span::From { start: first, end: last.map(|last| last.saturating_add(1)) }
            }
            RangeSpec::Suffix(n) => Span::Last(n),
        }
    }
}

/// What a Range header selects from an object of a known size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The whole object with 200: no Range, a Range ignored because it asked for more than
    /// [`RangeLimits::max_ranges`] ranges, or a non-zero suffix of a zero-byte object.
    Full,
    /// One or more non-overlapping windows: in the order the request named them, or in
    /// ascending order when some of them were coalesced.
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

impl OpenWindow {
    /// The half-open byte range this reads from an object of `size` bytes.
    pub fn bounds(self, size: u64) -> std::ops::Range<u64> {
        match self {
            OpenWindow::Whole => 0..size,
            OpenWindow::Part(window) => window.start()..window.end(),
        }
    }

    /// Number of bytes this reads from an object of `size` bytes.
    pub fn len(self, size: u64) -> u64 {
        match self {
            OpenWindow::Whole => size,
            OpenWindow::Part(window) => window.len(),
        }
    }
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

    /// The window this span reads from an object of `size` bytes, or `None` when it is not
    /// satisfiable (SPEC §1).
    ///
    /// The whole read is always satisfiable, even on zero bytes. Any other read needs
    /// `start < size` and a non-empty result: an `end` past the size is clamped to it, and an
    /// `end` at or before `start`, or a zero-length suffix, reads nothing and is refused.
    pub fn resolve(self, size: u64) -> Option<OpenWindow> {
        match self {
            Span::From { start: 0, end: None } => Some(OpenWindow::Whole),
            Span::From { start, end } => {
                let end = end.map_or(size, |end| end.min(size));
                Window::new(start, end).map(OpenWindow::Part)
            }
            Span::Last(n) => Window::new(size - n.min(size), size).map(OpenWindow::Part),
        }
    }
}

impl From<Window> for Span {
    fn from(window: Window) -> Span {
        Span::From { start: window.start(), end: Some(window.end()) }
    }
}

/// Parses a `Range` field value (RFC 9110 §14.1.1–14.1.2); `None` means "ignore the Range".
///
/// The unit `bytes` is matched case-insensitively; optional whitespace around commas and empty
/// list elements are accepted (§5.6.1). Anything else invalid gives `None`: another unit, an
/// empty set, a spec that is not `first-last`, `first-` or `-suffix`, or `last < first`.
/// Positions too large for a `u64` saturate, which keeps their meaning (past any object).
pub fn parse_range(value: &str) -> Option<Vec<RangeSpec>> {
    // Every delimiter is ASCII, so the value is taken apart as bytes.
    let value = trim_ows(value.as_bytes());
    let equals = value.iter().position(|b| *b == b'=')?;
    if !value[..equals].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = Vec::with_capacity(1);
    for element in value[equals + 1..].split(|b| *b == b',') {
        let element = trim_ows(element);
        if !element.is_empty() {
            specs.push(parse_spec(element)?);
        }
    }
    (!specs.is_empty()).then_some(specs)
}

/// Resolves parsed range-specs against an object of `size` bytes (RFC 9110 §14.1.2, §14.2).
///
/// * no specs, or more than `limits.max_ranges` of them → [`Resolved::Full`];
/// * a zero-byte object → [`Resolved::Full`] if a suffix-range with a non-zero length is among
///   the specs (satisfiable, but with nothing a 206 could describe), else
///   [`Resolved::Unsatisfiable`];
/// * no spec overlapping the object → [`Resolved::Unsatisfiable`];
/// * otherwise the satisfiable windows (ends clamped to the size, unsatisfiable specs dropped),
///   kept in request order unless two of them overlap or lie at most `limits.coalesce_gap`
///   bytes apart, in which case all are merged and returned in ascending order.
pub fn resolve(specs: &[RangeSpec], size: u64, limits: &RangeLimits) -> Resolved {
    if specs.is_empty() || specs.len() > limits.max_ranges {
        return Resolved::Full;
    }
    if size == 0 {
        // RFC 9110 §14.1.2: "When a selected representation has zero length, the only
        // satisfiable form of range-spec in a GET request is a suffix-range with a non-zero
        // suffix-length", yet no Content-Range can describe the nothing it selects; §14.2 lets
        // a server ignore a Range when the representation has no content, so that case is a
        // 200 with the empty object. Every other spec (`bytes=0-` included, SPEC §1) is 416.
        let any_suffix = specs.iter().any(|spec| matches!(spec, RangeSpec::Suffix(n) if *n > 0));
        return if any_suffix { Resolved::Full } else { Resolved::Unsatisfiable };
    }
    let windows: Vec<Window> = specs
        .iter()
        .filter_map(|spec| spec.to_span().resolve(size))
        .filter_map(|open| {
            let bounds = open.bounds(size);
            Window::new(bounds.start, bounds.end)
        })
        .collect();
    if windows.is_empty() {
        return Resolved::Unsatisfiable;
    }
    Resolved::Partial(coalesce(windows, limits.coalesce_gap))
}

/// `Content-Range` of a 206 or of one part (RFC 9110 §14.4): `bytes S-E/SIZE`, `E` inclusive.
pub fn content_range(window: Window, size: u64) -> String {
    // `bytes `, three numbers of at most 20 digits, `-` and `/`.
    let mut value = String::with_capacity(68);
    write_content_range(&mut value, window, size);
    value
}

/// Appends the `Content-Range` of `window` (see [`content_range`]) to `out`.
pub fn write_content_range(out: &mut String, window: Window, size: u64) {
    let (mut first, mut last, mut complete) =
        (itoa::Buffer::new(), itoa::Buffer::new(), itoa::Buffer::new());
    let (first, last, complete) =
        (first.format(window.start()), last.format(window.end() - 1), complete.format(size));
    out.reserve(8 + first.len() + last.len() + complete.len());
    out.push_str("bytes ");
    out.push_str(first);
    out.push('-');
    out.push_str(last);
    out.push('/');
    out.push_str(complete);
}

/// `Content-Range` of a 416 (RFC 9110 §14.4, §15.5.17): `bytes */SIZE`.
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

// OWS = *( SP / HTAB ), RFC 9110 §5.6.3.
/// `bytes` without leading and trailing OWS (RFC 9110 §5.6.3: spaces and tabs).
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn parse_spec(element: &[u8]) -> Option<RangeSpec> {
    let dash = element.iter().position(|b| *b == b'-')?;
    let (first, last) = (&element[..dash], &element[dash + 1..]);
    if first.is_empty() {
        return Some(RangeSpec::Suffix(parse_position(last)?));
    }
    let first_pos = parse_position(first)?;
    if last.is_empty() {
        return Some(RangeSpec::FromTo { first: first_pos, last: None });
    }
    let last_pos = parse_position(last)?;
    // RFC 9110 §14.1.1: a spec whose last-pos is less than its first-pos is invalid. Compare
    // the digits, not the saturated values, so that huge positions keep their order.
    if digits_cmp(last, first) == std::cmp::Ordering::Less {
        return None;
    }
    Some(RangeSpec::FromTo { first: first_pos, last: Some(last_pos) })
}

/// `1*DIGIT`, saturating at `u64::MAX`.
fn parse_position(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// Numeric order of two `1*DIGIT` strings of any length.
fn digits_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    fn significant(digits: &[u8]) -> &[u8] {
        let zeros = digits.iter().take_while(|b| **b == b'0').count();
        &digits[zeros..]
    }
    let (a, b) = (significant(a), significant(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Merges overlapping or nearby windows (RFC 9110 §15.3.7.2 allows coalescing "regardless of
/// the order"); when nothing merges, the request's order is kept, as §15.3.7.2 recommends.
fn coalesce(windows: Vec<Window>, gap: u64) -> Vec<Window> {
    if windows.len() < 2 {
        return windows;
    }
    // An insertion sort: there are at most `RangeLimits::max_ranges` windows (16 by default),
    // where it is as fast as a general sort, and the wasm module then carries no sort routine.
    let mut sorted = windows.clone();
    for i in 1..sorted.len() {
        let mut j = i;
        while j > 0 && sorted[j - 1] > sorted[j] {
            sorted.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut merged: Vec<Window> = Vec::with_capacity(sorted.len());
    for window in sorted {
        match merged.last_mut() {
            Some(last) if window.start() <= last.end().saturating_add(gap) => {
                last.end = last.end.max(window.end());
            }
            _ => merged.push(window),
        }
    }
    if merged.len() == windows.len() { windows } else { merged }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a resolution as `full`, `416` or `[s, e) [s, e)`.
    fn render(resolved: &Resolved) -> String {
        match resolved {
            Resolved::Full => "full".into(),
            Resolved::Unsatisfiable => "416".into(),
            Resolved::Partial(windows) => windows
                .iter()
                .map(|w| format!("[{}, {})", w.start(), w.end()))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    #[track_caller]
    fn check(range: &str, size: u64, expect: &str) {
        let got = match parse_range(range) {
            None => "ignored".to_owned(),
            Some(specs) => render(&resolve(&specs, size, &RangeLimits::default())),
        };
        assert_eq!(got, expect, "Range: {range} against {size} bytes");
    }

    #[test]
    fn the_examples_of_rfc_9110_section_14_1_2_resolve_as_described() {
        // "The first 500 bytes", "the second 500 bytes", "the final 500 bytes" (two ways),
        // against the RFC's 10000-byte representation.
        check("bytes=0-499", 10_000, "[0, 500)");
        check("bytes=500-999", 10_000, "[500, 1000)");
        check("bytes=-500", 10_000, "[9500, 10000)");
        check("bytes=9500-", 10_000, "[9500, 10000)");
        // "The first and last bytes only": 0 and 9999 are far apart and stay two parts.
        check("bytes=0-0,-1", 10_000, "[0, 1) [9999, 10000)");
        // "Other valid (but not canonical) specifications of the second 500 bytes".
        check("bytes=500-600,601-999", 10_000, "[500, 1000)");
        check("bytes=500-700,601-999", 10_000, "[500, 1000)");
    }

    #[test]
    fn ends_past_the_object_are_clamped_and_long_suffixes_select_everything() {
        check("bytes=0-999", 100, "[0, 100)");
        check("bytes=50-", 100, "[50, 100)");
        check("bytes=-500", 100, "[0, 100)");
        check("bytes=99-99", 100, "[99, 100)");
    }

    #[test]
    fn ranges_starting_at_or_past_the_end_are_not_satisfiable() {
        check("bytes=100-", 100, "416");
        check("bytes=100-200", 100, "416");
        check("bytes=-0", 100, "416");
        check("bytes=100-200,300-", 100, "416");
        // Unsatisfiable specs beside a satisfiable one are dropped.
        check("bytes=100-200,0-9", 100, "[0, 10)");
    }

    #[test]
    fn a_zero_byte_object_satisfies_only_a_non_zero_suffix_and_sends_it_whole() {
        for range in ["bytes=0-", "bytes=0-0", "bytes=-0", "bytes=5-,-0"] {
            check(range, 0, "416");
        }
        for range in ["bytes=-1", "bytes=0-,-5"] {
            check(range, 0, "full");
        }
    }

    #[test]
    fn syntax_errors_make_the_range_ignored() {
        for range in [
            "",
            "bytes",
            "bytes=",
            "bytes= , ",
            "items=0-1",
            "bytes =0-1",
            "bytes=1-0",
            "bytes=a-b",
            "bytes=-",
            "bytes=0-1-2",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=0 -1",
            "bytes=0-1;x",
            "bytes=99999999999999999999999-99999999999999999999998",
        ] {
            check(range, 100, "ignored");
        }
    }

    #[test]
    fn unit_case_whitespace_and_empty_elements_are_tolerated() {
        check("Bytes=0-0", 100, "[0, 1)");
        check("BYTES=0-0 , \t500-500", 1000, "[0, 1) [500, 501)");
        check("bytes=,0-0,,500-500,", 1000, "[0, 1) [500, 501)");
        check(" bytes=0-0 ", 100, "[0, 1)");
        check("bytes=000-001", 100, "[0, 2)");
    }

    #[test]
    fn huge_positions_saturate_and_keep_their_meaning() {
        check("bytes=99999999999999999999999-", 100, "416");
        check("bytes=0-99999999999999999999999", 100, "[0, 100)");
        check("bytes=-99999999999999999999999", 100, "[0, 100)");
    }

    #[test]
    fn multiple_ranges_keep_request_order_unless_coalesced() {
        check("bytes=500-599,0-99", 1000, "[500, 600) [0, 100)");
        // 20 bytes apart: cheaper to send the gap than another part header.
        check("bytes=500-599,0-99,120-129", 1000, "[0, 130) [500, 600)");
        // Duplicates are one range.
        check("bytes=0-9,0-9", 1000, "[0, 10)");
        // Ranges that, merged, cover everything are still one 206 window.
        check("bytes=0-499,500-", 1000, "[0, 1000)");
    }

    #[test]
    fn too_many_ranges_make_the_range_ignored() {
        let sixteen: Vec<String> = (0..16).map(|i| format!("{}-{}", i * 1000, i * 1000)).collect();
        check(&format!("bytes={}", sixteen.join(",")), 100_000, &{
            (0..16)
                .map(|i| format!("[{}, {})", i * 1000, i * 1000 + 1))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let seventeen: Vec<String> =
            (0..17).map(|i| format!("{}-{}", i * 1000, i * 1000)).collect();
        check(&format!("bytes={}", seventeen.join(",")), 100_000, "full");
    }

    #[test]
    fn open_spans_follow_spec_section_1() {
        let w = |s, e| Some(OpenWindow::Part(Window::new(s, e).unwrap()));
        for (span, size, expect) in [
            (Span::WHOLE, 0, Some(OpenWindow::Whole)),
            (Span::WHOLE, 10, Some(OpenWindow::Whole)),
            (Span::From { start: 0, end: Some(1) }, 0, None),
            (Span::From { start: 0, end: Some(20) }, 10, w(0, 10)),
            (Span::From { start: 3, end: None }, 10, w(3, 10)),
            (Span::From { start: 3, end: Some(7) }, 10, w(3, 7)),
            (Span::From { start: 10, end: None }, 10, None),
            (Span::From { start: 11, end: Some(20) }, 10, None),
            (Span::From { start: 5, end: Some(5) }, 10, None),
            (Span::From { start: 5, end: Some(2) }, 10, None),
            (Span::Last(3), 10, w(7, 10)),
            (Span::Last(30), 10, w(0, 10)),
            (Span::Last(0), 10, None),
            (Span::Last(3), 0, None),
        ] {
            assert_eq!(span.resolve(size), expect, "{span:?} against {size} bytes");
        }
    }

    #[test]
    fn content_range_is_inclusive_and_unsatisfied_names_the_size() {
        assert_eq!(content_range(Window::new(0, 500).unwrap(), 8000), "bytes 0-499/8000");
        assert_eq!(content_range(Window::new(7999, 8000).unwrap(), 8000), "bytes 7999-7999/8000");
        assert_eq!(unsatisfied_content_range(0), "bytes */0");
    }

    #[test]
    fn specs_turn_into_equivalent_spans() {
        assert_eq!(
            RangeSpec::FromTo { first: 2, last: Some(4) }.to_span(),
            Span::From { start: 2, end: Some(5) }
        );
        assert_eq!(
            RangeSpec::FromTo { first: 2, last: None }.to_span(),
            Span::From { start: 2, end: None }
        );
        assert_eq!(RangeSpec::Suffix(7).to_span(), Span::Last(7));
        assert_eq!(
            RangeSpec::FromTo { first: 0, last: Some(u64::MAX) }.to_span(),
            Span::From { start: 0, end: Some(u64::MAX) }
        );
    }
}
