//! Whole plans from arbitrary request fields: never panic, and Content-Length always equals
//! the bytes the body sends.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use rangecache_core::conditional::{RequestHeaders, plan_response};
use rangecache_core::range::RangeLimits;
use rangecache_core::{EntityTag, ObjectMeta, Timestamp};

fuzz_target!(|input: (u8, [Option<&str>; 6], u64, &str, u32)| {
    let (method, fields, size, etag, last_modified) = input;
    let Some(etag) = EntityTag::strong(etag) else { return };
    let method = match method % 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        _ => Method::PUT,
    };
    let [if_match, if_none_match, if_modified_since, if_unmodified_since, range, if_range] = fields;
    let req = RequestHeaders {
        method: &method,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        if_range,
    };
    let meta = ObjectMeta {
        size,
        etag,
        last_modified: Timestamp::from_secs(u64::from(last_modified)),
        headers: vec![("content-type".into(), "text/plain".into())],
        expires: None,
    };
    let plan = plan_response(&req, &meta, &RangeLimits::default());
    if let Some(length) = plan.header(&http::header::CONTENT_LENGTH) {
        let length: u64 = length.parse().expect("Content-Length is a number");
        if method == Method::GET {
            assert_eq!(length, plan.body.len(size), "{plan:?}");
        }
    }
});
