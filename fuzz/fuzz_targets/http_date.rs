//! HTTP dates: never panic; a parsed date formats as IMF-fixdate and parses back to itself, and
//! formatting any instant gives a date that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rangecache_core::Timestamp;
use rangecache_core::validators::{format_http_date, parse_http_date};

fuzz_target!(|input: (&str, u64)| {
    let (value, millis) = input;
    if let Some(at) = parse_http_date(value) {
        assert_eq!(parse_http_date(&format_http_date(at)), Some(at), "{value:?}");
    }
    let formatted = format_http_date(Timestamp::from_millis(millis));
    assert!(parse_http_date(&formatted).is_some(), "{millis} formatted as {formatted:?}");
});
