//! One `planResponse` call from JavaScript against the same plan computed natively, in one run,
//! and the size of the optimised `.wasm` (targets: under 3 times the native cost, under
//! 150 KiB).
//!
//! The native side does what the JavaScript call does: it starts from the raw request fields
//! and the object's description as strings, parses the validators, plans, and renders the
//! planned fields as owned strings. The JavaScript side is `wasm/js/bench/plan.mjs` over the
//! package in `wasm/pkg` (built first with `cargo xtask wasm` when missing), run with `node`.
//! The package keeps the last object planned (`api.js` compares its strings, the module keeps it
//! parsed), so the JavaScript side, which plans one object over and over, encodes and parses it
//! once; BENCHMARKS.md gives the cost of a call for another object.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use http::Method;
use rangecache_core::conditional::{RequestHeaders, plan_response};
use rangecache_core::validators::parse_http_date;
use rangecache_core::{Body, EntityTag, ObjectMeta, RangeLimits};

/// The request of `plan.mjs`: every field a browser sends, of which the plan reads two.
const REQUEST: &[(&str, &str)] = &[
    ("host", "edge.example"),
    ("user-agent", "rangecache-bench/1"),
    ("accept", "*/*"),
    ("range", "bytes=1048576-2097151"),
    ("if-range", "\"5d41402abc4b2a76b9719d911017c592\""),
];
const SIZE: u64 = 1 << 30;
const ETAG: &str = "\"5d41402abc4b2a76b9719d911017c592\"";
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
const STORED: &[(&str, &str)] =
    &[("cache-control", "max-age=3600"), ("content-type", "application/octet-stream")];

const ROUNDS: usize = 5;
const BATCHES: usize = 7;
const PER_BATCH: u32 = 200_000;
const TARGET_RATIO: f64 = 3.0;
const TARGET_BYTES: u64 = 150 * 1024;

fn main() {
    // `cargo bench` passes `--bench`. Without it the binary runs as a test (`cargo test
    // --all-targets`), possibly before the package is built: check the native side plans the
    // 206 the bench is about, and measure nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        let planned = plan_from_strings(REQUEST, &RangeLimits::default());
        assert!(planned > 206, "the bench request plans a 206 with headers");
        println!("wasm_plan: not measuring (run it with cargo bench)");
        return;
    }
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches/ is in the workspace");
    let module = root.join("wasm/pkg/rangecache_wasm_bg.wasm");
    if !module.exists() {
        // The package is built by xtask; cargo has released its lock once a bench runs.
        eprintln!(
            "wasm_plan: {} is missing; building it with `cargo xtask wasm`",
            module.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo).args(["xtask", "wasm"]).current_dir(root).status();
        if !built.is_ok_and(|status| status.success()) || !module.exists() {
            eprintln!("wasm_plan: `cargo xtask wasm` did not build {}", module.display());
            std::process::exit(1);
        }
    }

    // Rounds alternate the two sides, and the ratio is taken within each round, so that load
    // from other processes on a shared machine weighs on both sides of a ratio alike.
    let mut rounds = Vec::new();
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let native = native_ns_per_call();
        let output = Command::new("node")
            .arg(root.join("wasm/js/bench/plan.mjs"))
            .output()
            .expect("node runs (Node.js 20 is needed for the wasm package)");
        if !output.status.success() {
            eprintln!("wasm_plan: node failed:\n{}", String::from_utf8_lossy(&output.stderr));
            std::process::exit(1);
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let js = number_after(&line, "\"nsPerCall\":").expect("plan.mjs prints nsPerCall");
        bytes = number_after(&line, "\"wasmBytes\":").expect("plan.mjs prints wasmBytes") as u64;
        rounds.push((native, js, js / native));
    }
    rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
    let (native, js, ratio) = rounds[rounds.len() / 2];

    println!("wasm_plan: planResponse, one 206 with If-Range; the median of {ROUNDS} rounds");
    for (native, js, ratio) in &rounds {
        println!("  round: native {native:>6.0} ns, JavaScript {js:>6.0} ns, ratio {ratio:.2}x");
    }
    println!("  native (parse + plan + render)   {native:>10.0} ns/call");
    println!("  JavaScript -> wasm planResponse  {js:>10.0} ns/call");
    println!(
        "  ratio                            {ratio:>10.2}x  (target < {TARGET_RATIO}x: {})",
        verdict(ratio < TARGET_RATIO)
    );
    println!(
        "  rangecache_wasm_bg.wasm          {bytes:>10} bytes = {:.1} KiB  (target < 150 KiB: {})",
        bytes as f64 / 1024.0,
        verdict(bytes < TARGET_BYTES)
    );
}

/// Median nanoseconds of one native plan from strings, over `BATCHES` batches.
fn native_ns_per_call() -> f64 {
    let limits = RangeLimits::default();
    let mut sink = 0usize;
    for _ in 0..PER_BATCH {
        sink += plan_from_strings(black_box(REQUEST), &limits);
    }
    let mut samples: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PER_BATCH {
                sink += plan_from_strings(black_box(REQUEST), &limits);
            }
            started.elapsed().as_nanos() as f64 / f64::from(PER_BATCH)
        })
        .collect();
    black_box(sink);
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// What `planResponse` computes, natively: pick the fields, parse the validators, plan, and
/// render the headers and body as owned values. Returns a number so nothing is optimised away.
fn plan_from_strings(request: &[(&str, &str)], limits: &RangeLimits) -> usize {
    let field =
        |name: &str| request.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let method = Method::GET;
    let mut req = RequestHeaders::new(&method);
    req.if_match = field("if-match");
    req.if_none_match = field("if-none-match");
    req.if_modified_since = field("if-modified-since");
    req.if_unmodified_since = field("if-unmodified-since");
    req.range = field("range");
    req.if_range = field("if-range");
    let meta = ObjectMeta {
        size: black_box(SIZE),
        etag: EntityTag::parse(black_box(ETAG)).expect("valid tag"),
        last_modified: parse_http_date(black_box(LAST_MODIFIED)).expect("valid date"),
        headers: STORED.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        expires: None,
    };
    let plan = plan_response(&req, &meta, limits);
    let headers: Vec<(String, String)> =
        plan.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.clone())).collect();
    let body = match plan.body {
        Body::None | Body::Full => 0,
        Body::Window(window) => window.len() as usize,
        Body::Multipart { parts, .. } => parts.len(),
    };
    usize::from(plan.status.as_u16()) + headers.len() + body
}

fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
