//! Properties of the range arithmetic (proptest): windows stay inside the object, lengths add
//! up, equivalent forms agree, clamping never widens, and nothing satisfiable is empty.

use http::Method;
use http::header::CONTENT_LENGTH;
use proptest::prelude::*;
use rangecache_core::conditional::{Body, RequestHeaders, plan_response};
use rangecache_core::range::{
    OpenWindow, RangeLimits, RangeSpec, Resolved, Span, parse_range, resolve,
};
use rangecache_core::{EntityTag, ObjectMeta, Timestamp};

/// A spec whose positions fall before, inside and past an object of up to 4 KiB.
fn any_spec() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        (0..6_000u64, proptest::option::of(0..6_000u64)).prop_map(|(a, b)| match b {
            Some(b) => RangeSpec::FromTo { first: a.min(b), last: Some(a.max(b)) },
            None => RangeSpec::FromTo { first: a, last: None },
        }),
        (0..6_000u64).prop_map(RangeSpec::Suffix),
    ]
}

/// The wire form of a spec.
fn wire(spec: &RangeSpec) -> String {
    match spec {
        RangeSpec::FromTo { first, last: Some(last) } => format!("{first}-{last}"),
        RangeSpec::FromTo { first, last: None } => format!("{first}-"),
        RangeSpec::Suffix(n) => format!("-{n}"),
    }
}

fn header(specs: &[RangeSpec]) -> String {
    format!("bytes={}", specs.iter().map(wire).collect::<Vec<_>>().join(","))
}

fn meta(size: u64, content_type: bool) -> ObjectMeta {
    let headers = if content_type {
        vec![("content-type".to_owned(), "application/octet-stream".to_owned())]
    } else {
        Vec::new()
    };
    ObjectMeta {
        size,
        etag: EntityTag::strong("v1").expect("valid tag"),
        last_modified: Timestamp::from_secs(1_700_000_000),
        headers,
        expires: None,
    }
}

/// The byte range a spec asks for, before clamping, as `[start, end)` over u128 so nothing
/// overflows; suffixes are measured from `size`.
fn requested(spec: &RangeSpec, size: u64) -> (u128, u128) {
    match *spec {
        RangeSpec::FromTo { first, last } => {
            (u128::from(first), last.map_or(u128::from(size), |l| u128::from(l) + 1))
        }
        RangeSpec::Suffix(n) => (u128::from(size.saturating_sub(n)), u128::from(size)),
    }
}

proptest! {
    #[test]
    fn every_window_lies_inside_the_object_and_none_overlap(
        specs in proptest::collection::vec(any_spec(), 1..20),
        size in 0..4_096u64,
    ) {
        let limits = RangeLimits::default();
        match resolve(&specs, size, &limits) {
            Resolved::Full => {
                let empty_with_suffix =
                    size == 0 && specs.iter().any(|s| matches!(s, RangeSpec::Suffix(n) if *n > 0));
                prop_assert!(specs.len() > limits.max_ranges || empty_with_suffix);
            }
            Resolved::Unsatisfiable => {
                // Unsatisfiable only when no spec overlaps the object.
                let none_overlaps = specs.iter().all(|s| {
                    let (start, end) = requested(s, size);
                    start >= u128::from(size) || start >= end
                });
                prop_assert!(none_overlaps);
            }
            Resolved::Partial(windows) => {
                prop_assert!(!windows.is_empty());
                prop_assert!(windows.len() <= specs.len());
                let mut sorted = windows.clone();
                sorted.sort();
                for pair in sorted.windows(2) {
                    prop_assert!(pair[0].end() < pair[1].start(), "overlap or touch: {pair:?}");
                }
                let total: u64 = windows.iter().map(|w| w.len()).sum();
                prop_assert!(total <= size);
                for w in &windows {
                    prop_assert!(w.start() < w.end() && w.end() <= size, "{w:?} of {size}");
                }
            }
        }
    }

    #[test]
    fn clamping_never_widens_and_every_window_was_asked_for(
        specs in proptest::collection::vec(any_spec(), 1..6),
        size in 1..4_096u64,
    ) {
        // With no coalescing gap, each window is covered by the union of the requested ranges.
        let limits = RangeLimits { coalesce_gap: 0, ..RangeLimits::default() };
        if let Resolved::Partial(windows) = resolve(&specs, size, &limits) {
            for w in windows {
                for byte in [w.start(), w.end() - 1] {
                    let byte = u128::from(byte);
                    let asked = specs.iter().any(|s| {
                        let (start, end) = requested(s, size);
                        start <= byte && byte < end
                    });
                    prop_assert!(asked, "byte {byte} of {w:?} was not requested by {specs:?}");
                }
            }
        }
        for spec in &specs {
            if let Some(open) = spec.to_span().resolve(size) {
                let bounds = open.bounds(size);
                let (start, end) = requested(spec, size);
                prop_assert!(u128::from(bounds.start) >= start && u128::from(bounds.end) <= end);
                prop_assert!(bounds.start < bounds.end, "{spec:?} resolved empty");
            }
        }
    }

    #[test]
    fn suffix_and_open_forms_agree_with_their_explicit_equivalents(
        n in 1..6_000u64,
        size in 1..4_096u64,
    ) {
        let start = size - n.min(size);
        let one = |value: String| resolve(&parse_range(&value).unwrap(), size, &RangeLimits::default());
        let suffix = one(format!("bytes=-{n}"));
        prop_assert_eq!(&suffix, &one(format!("bytes={start}-")));
        prop_assert_eq!(&suffix, &one(format!("bytes={start}-{}", size - 1)));
        let bounds = |span: Span| span.resolve(size).map(|open| open.bounds(size));
        prop_assert_eq!(bounds(Span::Last(n)), bounds(Span::From { start, end: None }));
        prop_assert_eq!(bounds(Span::Last(n)), bounds(Span::From { start, end: Some(size) }));
    }

    #[test]
    fn open_spans_are_satisfiable_exactly_when_they_start_inside_the_object(
        start in 0..6_000u64,
        end in proptest::option::of(0..6_000u64),
        size in 0..4_096u64,
    ) {
        let got = Span::From { start, end }.resolve(size);
        if start == 0 && end.is_none() {
            prop_assert_eq!(got, Some(OpenWindow::Whole));
        } else {
            let clamped_end = end.unwrap_or(size).min(size);
            prop_assert_eq!(got.is_some(), start < clamped_end);
            if let Some(OpenWindow::Part(w)) = got {
                prop_assert_eq!((w.start(), w.end()), (start, clamped_end));
            }
        }
    }

    #[test]
    fn content_length_equals_the_bytes_the_plan_sends(
        specs in proptest::collection::vec(any_spec(), 1..20),
        size in 0..4_096u64,
        content_type in any::<bool>(),
        head in any::<bool>(),
    ) {
        let meta = meta(size, content_type);
        let range = header(&specs);
        let method = if head { Method::HEAD } else { Method::GET };
        let req = RequestHeaders { range: Some(&range), ..RequestHeaders::new(&method) };
        let plan = plan_response(&req, &meta, &RangeLimits::default());
        let object: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // Render the body the way a host does, then compare with the advertised length.
        let rendered: Vec<u8> = match &plan.body {
            Body::None => Vec::new(),
            Body::Full => object.clone(),
            Body::Window(w) => object[w.start() as usize..w.end() as usize].to_vec(),
            Body::Multipart { parts, closing, .. } => {
                let mut out = Vec::new();
                for part in parts {
                    prop_assert!(!part.window.is_empty());
                    out.extend_from_slice(part.head.as_bytes());
                    out.extend_from_slice(&object[part.window.start() as usize..part.window.end() as usize]);
                }
                out.extend_from_slice(closing.as_bytes());
                out
            }
        };
        let length: u64 = plan.header(&CONTENT_LENGTH).expect("200/206/416 carry Content-Length").parse().unwrap();
        if head {
            prop_assert_eq!(plan.status.as_u16(), 200);
            prop_assert_eq!(length, size);
            prop_assert!(rendered.is_empty());
        } else {
            prop_assert_eq!(length, rendered.len() as u64, "{:?}", plan);
            // No amplification: each byte at most once, plus at most 16 part headers (each
            // well under 200 bytes with this Content-Type) and the closing delimiter.
            prop_assert!(length <= size + 16 * 200, "{} bytes for an object of {}", length, size);
            // A satisfiable plan never sends an empty window.
            if plan.status.as_u16() == 206 {
                prop_assert!(length > 0);
            }
        }
    }
}
