//! Criterion benches of the core's decisions: header parsing and response planning.
//!
//! Each group holds peers measured in the same run (a single range against sixteen, a 200
//! against a 206), so the ratios between them are what to read, not the absolute times.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use rangecache_core::conditional::{RequestHeaders, plan_response};
use rangecache_core::range::{RangeLimits, parse_range, resolve};
use rangecache_core::validators::{EtagList, parse_http_date};
use rangecache_core::{EntityTag, ObjectMeta, Timestamp, Window};

fn meta() -> ObjectMeta {
    ObjectMeta {
        size: 1 << 30,
        etag: EntityTag::strong("5d41402abc4b2a76b9719d911017c592").expect("valid tag"),
        last_modified: Timestamp::from_secs(1_700_000_000),
        headers: vec![
            ("cache-control".into(), "max-age=3600".into()),
            ("content-type".into(), "application/octet-stream".into()),
        ],
        expires: None,
    }
}

fn sixteen_ranges() -> String {
    let specs: Vec<String> =
        (0..16u64).map(|i| format!("{}-{}", i << 20, (i << 20) + 4095)).collect();
    format!("bytes={}", specs.join(","))
}

fn window(c: &mut Criterion) {
    c.bench_function("window_new", |b| b.iter(|| Window::new(black_box(3), 10)));
}

fn parsing(c: &mut Criterion) {
    let many = sixteen_ranges();
    let mut group = c.benchmark_group("parse");
    group.bench_function("range_single", |b| b.iter(|| parse_range(black_box("bytes=0-1023"))));
    group.bench_function("range_sixteen", |b| b.iter(|| parse_range(black_box(&many))));
    group.bench_function("etag_list_three", |b| {
        b.iter(|| EtagList::parse(black_box("\"xyzzy\", \"r2d2xxxx\", W/\"c3piozzzz\"")))
    });
    group.bench_function("http_date_imf", |b| {
        b.iter(|| parse_http_date(black_box("Sun, 06 Nov 1994 08:49:37 GMT")))
    });
    group.finish();
}

fn resolving(c: &mut Criterion) {
    let single = parse_range("bytes=0-1023").expect("valid range");
    let many = parse_range(&sixteen_ranges()).expect("valid range");
    let limits = RangeLimits::default();
    let mut group = c.benchmark_group("resolve");
    group.bench_function("single", |b| b.iter(|| resolve(black_box(&single), 1 << 30, &limits)));
    group.bench_function("sixteen", |b| b.iter(|| resolve(black_box(&many), 1 << 30, &limits)));
    group.finish();
}

fn planning(c: &mut Criterion) {
    let meta = meta();
    let limits = RangeLimits::default();
    let many = sixteen_ranges();
    let get = Method::GET;
    let mut group = c.benchmark_group("plan");
    let full = RequestHeaders::new(&get);
    group
        .bench_function("full_200", |b| b.iter(|| plan_response(black_box(&full), &meta, &limits)));
    let not_modified = RequestHeaders {
        if_none_match: Some("\"5d41402abc4b2a76b9719d911017c592\""),
        ..full.clone()
    };
    group.bench_function("not_modified_304", |b| {
        b.iter(|| plan_response(black_box(&not_modified), &meta, &limits))
    });
    let single = RequestHeaders { range: Some("bytes=0-1023"), ..full.clone() };
    group.bench_function("single_206", |b| {
        b.iter(|| plan_response(black_box(&single), &meta, &limits))
    });
    let multi = RequestHeaders { range: Some(&many), ..full.clone() };
    group.bench_function("multipart_206_sixteen", |b| {
        b.iter(|| plan_response(black_box(&multi), &meta, &limits))
    });
    group.finish();
}

criterion_group!(benches, window, parsing, resolving, planning);
criterion_main!(benches);
