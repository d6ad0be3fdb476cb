//! The RFC 9110 §13–§15 conformance table (`tests/data/rfc_cases.json`), run through
//! `plan_response`. The wasm package's JavaScript tests read the same file.

use std::collections::BTreeMap;

use http::{HeaderName, Method};
use rangecache_core::conditional::{
    Body, PlanSpare, RequestHeaders, plan_response, plan_response_with,
};
use rangecache_core::range::{RangeLimits, content_range};
use rangecache_core::validators::{EntityTag, parse_http_date};
use rangecache_core::{ObjectMeta, ResponsePlan};
use serde::Deserialize;

#[derive(Deserialize)]
struct Table {
    format: u32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    section: String,
    why: String,
    request: Request,
    object: Object,
    expected: Expected,
}

#[derive(Deserialize)]
struct Request {
    method: String,
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    size: u64,
    etag: String,
    last_modified: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expected {
    status: u16,
    headers: BTreeMap<String, String>,
    absent_headers: Vec<String>,
    #[serde(default)]
    header_prefixes: BTreeMap<String, String>,
    body: ExpectedBody,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ExpectedBody {
    None,
    Full,
    Range { start: u64, end: u64 },
    Multipart { parts: Vec<Bounds> },
}

#[derive(Deserialize, Debug)]
struct Bounds {
    start: u64,
    end: u64,
}

const REQUEST_FIELDS: &[&str] =
    &["if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range", "if-range"];

fn table() -> Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc_cases.json");
    let text = std::fs::read_to_string(path).expect("the case table is checked in");
    serde_json::from_str(&text).expect("the case table follows tests/data/README.md")
}

fn meta(object: &Object) -> ObjectMeta {
    ObjectMeta {
        size: object.size,
        etag: EntityTag::parse(&object.etag).expect("case objects have valid entity-tags"),
        last_modified: parse_http_date(&object.last_modified)
            .expect("case objects have valid Last-Modified dates"),
        headers: object.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
        expires: None,
    }
}

/// The request fields of `case`, sent with `method`.
fn request<'a>(case: &'a Case, method: &'a Method) -> RequestHeaders<'a> {
    let field = |name: &str| case.request.headers.get(name).map(String::as_str);
    RequestHeaders {
        method,
        if_match: field("if-match"),
        if_none_match: field("if-none-match"),
        if_modified_since: field("if-modified-since"),
        if_unmodified_since: field("if-unmodified-since"),
        range: field("range"),
        if_range: field("if-range"),
    }
}

/// Plans one case and checks everything it expects, plus what every plan must satisfy.
#[track_caller]
fn check(case: &Case) {
    let ctx = format!("case {:?} ({}: {})", case.name, case.section, case.why);
    for name in case.request.headers.keys() {
        assert!(REQUEST_FIELDS.contains(&name.as_str()), "{ctx}: unknown request field {name}");
    }
    let method = Method::from_bytes(case.request.method.as_bytes()).expect("valid method");
    let req = request(case, &method);
    let meta = meta(&case.object);
    let plan = plan_response(&req, &meta, &RangeLimits::default());
    let expected = &case.expected;

    assert_eq!(plan.status.as_u16(), expected.status, "{ctx}: status; plan {plan:#?}");
    for (name, value) in &expected.headers {
        assert_eq!(header(&plan, name), Some(value.as_str()), "{ctx}: header {name}");
    }
    for name in &expected.absent_headers {
        assert_eq!(header(&plan, name), None, "{ctx}: header {name} must be absent");
    }
    for (name, prefix) in &expected.header_prefixes {
        let value = header(&plan, name).unwrap_or_default();
        assert!(value.starts_with(prefix.as_str()), "{ctx}: header {name} is {value:?}");
    }
    match (&expected.body, &plan.body) {
        (ExpectedBody::None, Body::None) | (ExpectedBody::Full, Body::Full) => {}
        (ExpectedBody::Range { start, end }, Body::Window(window)) => {
            assert_eq!((window.start(), window.end()), (*start, *end), "{ctx}: window");
        }
        (ExpectedBody::Multipart { parts: want }, Body::Multipart { boundary, parts, closing }) => {
            let got: Vec<(u64, u64)> =
                parts.iter().map(|p| (p.window.start(), p.window.end())).collect();
            let want: Vec<(u64, u64)> = want.iter().map(|b| (b.start, b.end)).collect();
            assert_eq!(got, want, "{ctx}: parts");
            assert_eq!(
                header(&plan, "content-type"),
                Some(format!("multipart/byteranges; boundary={boundary}").as_str()),
                "{ctx}: multipart Content-Type"
            );
            let part_type = meta.header("content-type").map(|t| format!("Content-Type: {t}\r\n"));
            for (i, part) in parts.iter().enumerate() {
                let delimiter = if i == 0 { "" } else { "\r\n" };
                let expected_head = format!(
                    "{delimiter}--{boundary}\r\n{}Content-Range: {}\r\n\r\n",
                    part_type.clone().unwrap_or_default(),
                    content_range(part.window, meta.size)
                );
                assert_eq!(part.head, expected_head, "{ctx}: head of part {i}");
            }
            assert_eq!(closing, &format!("\r\n--{boundary}--\r\n"), "{ctx}: closing delimiter");
        }
        (want, got) => panic!("{ctx}: body {got:?}, expected {want:?}"),
    }
    // Whatever the case: a GET's Content-Length is exactly the bytes its body sends, and a
    // HEAD's is what the GET's would be.
    if let Some(length) = header(&plan, "content-length") {
        let length: u64 = length.parse().expect("Content-Length is a number");
        if method == Method::GET {
            assert_eq!(length, plan.body.len(meta.size), "{ctx}: Content-Length");
        }
    }
    if matches!(plan.status.as_u16(), 200 | 206 | 416) {
        assert_eq!(header(&plan, "accept-ranges"), Some("bytes"), "{ctx}: Accept-Ranges");
    }
}

fn header<'p>(plan: &'p ResponsePlan, name: &str) -> Option<&'p str> {
    let name = HeaderName::from_bytes(name.as_bytes()).expect("case header names are valid");
    let mut values = plan.headers.iter().filter(|(n, _)| *n == name);
    let first = values.next().map(|(_, v)| v.as_str());
    assert!(values.next().is_none(), "header {name} planned twice in {plan:#?}");
    first
}

#[test]
fn every_case_of_the_rfc_table_plans_as_expected() {
    let table = table();
    assert_eq!(table.format, 1);
    assert!(table.cases.len() >= 40, "the table covers every rule of RFC 9110 §13-§14");
    for case in &table.cases {
        check(case);
    }
}

#[test]
fn a_plan_written_into_recycled_strings_is_the_plan_made_afresh() {
    // Every case, GET and HEAD, planned in turn through one spare that each plan is handed back
    // to, forwards then backwards (so every plan reuses strings of other sizes and contents), and
    // each compared with the same plan made afresh.
    let table = table();
    let mut spare = PlanSpare::new();
    let order = (0..table.cases.len()).chain((0..table.cases.len()).rev());
    let mut recycled = 0;
    for index in order {
        let case = &table.cases[index];
        let meta = meta(&case.object);
        for method in [Method::GET, Method::HEAD] {
            let req = request(case, &method);
            let limits = RangeLimits::default();
            let afresh = plan_response(&req, &meta, &limits);
            let reused = plan_response_with(&req, &meta, &limits, &mut spare);
            assert_eq!(reused, afresh, "case {:?}, {method}", case.name);
            recycled += reused.headers.len();
            spare.recycle(reused);
        }
    }
    assert!(recycled > 500, "only {recycled} field values went through the spare");
}

#[test]
fn head_plans_exactly_as_get_without_body_or_range() {
    for case in table().cases {
        if case.request.method != "GET" || case.request.headers.contains_key("range") {
            continue;
        }
        let meta = meta(&case.object);
        let plan_for = |method: &Method| {
            let req = RequestHeaders { range: None, ..request(&case, method) };
            plan_response(&req, &meta, &RangeLimits::default())
        };
        let get = plan_for(&Method::GET);
        let head = plan_for(&Method::HEAD);
        assert_eq!(head.status, get.status, "case {:?}", case.name);
        assert_eq!(head.headers, get.headers, "case {:?}", case.name);
        assert_eq!(head.body, Body::None, "case {:?}", case.name);
    }
}
