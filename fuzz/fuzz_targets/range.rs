//! `Range` parsing and resolution: never panics, and every satisfiable resolution is a set of
//! non-empty, non-overlapping windows inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rangecache_core::range::{RangeLimits, RangeSpec, Resolved, parse_range, resolve};

fuzz_target!(|input: (&str, u64, u8, u8)| {
    let (value, size, max_ranges, gap) = input;
    let Some(specs) = parse_range(value) else { return };
    assert!(!specs.is_empty(), "a parsed Range names at least one range: {value:?}");
    let limits = RangeLimits { max_ranges: usize::from(max_ranges), coalesce_gap: u64::from(gap) };
    match resolve(&specs, size, &limits) {
        Resolved::Full => {
            let empty_with_suffix =
                size == 0 && specs.iter().any(|s| matches!(s, RangeSpec::Suffix(n) if *n > 0));
            assert!(
                specs.len() > limits.max_ranges || empty_with_suffix,
                "{value:?} against {size}"
            );
        }
        Resolved::Unsatisfiable => {}
        Resolved::Partial(windows) => {
            assert!(!windows.is_empty());
            assert!(windows.len() <= specs.len());
            let mut sorted = windows.clone();
            sorted.sort();
            for pair in sorted.windows(2) {
                assert!(pair[0].end() <= pair[1].start(), "{value:?}: overlapping {pair:?}");
            }
            for window in &windows {
                assert!(window.start() < window.end() && window.end() <= size, "{window:?}");
            }
        }
    }
});
