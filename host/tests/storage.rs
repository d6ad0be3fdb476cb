//! The storage conformance suite: one set of checks, written once against `&dyn Tier`, run
//! against the memory, disk and s3 tiers; then what only one kind of tier can show (a disk
//! restart, the GETs an s3 read sends, eviction).

mod storage_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use rangecache::storage::s3::MIXED_REVISIONS;
use rangecache::storage::{
    Conditions, DiskTier, MemoryTier, NewObject, OpenRequest, S3Tier, Tier, TierError,
    WriteCondition,
};
use rangecache_core::range::Span;
use rangecache_core::validators::format_http_date;
use rangecache_core::{ObjectKey, ObjectMeta, Timestamp};
use storage_support::{
    CountingProxy, Got, S3Env, collect, etag, key, new_object, now, pattern, put, put_with, read,
    request, try_read,
};

/// A tier under test and whatever must outlive it (a directory, a server).
struct Fixture {
    tier: Arc<dyn Tier>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Fixture {
    fn memory() -> Fixture {
        Fixture { tier: Arc::new(MemoryTier::new("memory", 64 << 20)), _keep: Box::new(()) }
    }

    async fn disk() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open("disk", dir.path(), 64 << 20).await.unwrap();
        Fixture { tier: Arc::new(tier), _keep: Box::new(dir) }
    }

    fn s3() -> Fixture {
        let env = S3Env::get();
        let (tier, _) = env.fresh_tier();
        Fixture { tier: Arc::new(tier), _keep: Box::new(env) }
    }
}

/// Runs each named check against every tier, as `memory::check`, `disk::check`, `s3::check`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = super::Fixture::memory();
                    super::$check(fixture.tier.clone()).await;
                }
            )*
        }
        mod disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = super::Fixture::disk().await;
                    super::$check(fixture.tier.clone()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = super::Fixture::s3();
                    super::$check(fixture.tier.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    reads_return_exactly_the_window_asked_for,
    spans_outside_the_object_are_not_satisfiable_even_on_zero_bytes,
    nothing_is_visible_before_commit,
    abort_drop_and_a_wrong_size_leave_nothing,
    a_cancelled_write_leaves_nothing,
    expired_objects_are_never_served,
    an_overwrite_replaces_the_whole_revision,
    delete_removes_the_object,
    namespaces_are_isolated_and_listed,
    headers_etag_and_last_modified_round_trip,
    conditional_writes_are_checked_at_commit,
    read_preconditions_are_judged_against_the_revision_opened,
    readers_during_overwrites_see_one_whole_revision,
    stats_during_overwrites_describe_one_revision,
);

async fn reads_return_exactly_the_window_asked_for(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "ranges");
    let body = pattern(10_000);
    put(tier, &k, "v1", &body).await;
    let cases: [(Span, (u64, u64)); 7] = [
        (Span::WHOLE, (0, 10_000)),
        (Span::From { start: 100, end: Some(200) }, (100, 200)),
        (Span::From { start: 0, end: Some(1) }, (0, 1)),
        (Span::From { start: 9_990, end: None }, (9_990, 10_000)),
        (Span::Last(10), (9_990, 10_000)),
        (Span::From { start: 9_995, end: Some(20_000) }, (9_995, 10_000)),
        (Span::Last(20_000), (0, 10_000)),
    ];
    for (span, (start, end)) in cases {
        let expected = Got::Body {
            etag: "v1".into(),
            size: 10_000,
            range: (start, end),
            bytes: body[start as usize..end as usize].to_vec(),
        };
        assert_eq!(read(tier, &k, &request(span)).await, expected, "{span:?}");
    }
}

async fn spans_outside_the_object_are_not_satisfiable_even_on_zero_bytes(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "small");
    put(tier, &k, "v1", &pattern(100)).await;
    for span in [
        Span::From { start: 100, end: None },
        Span::From { start: 500, end: Some(600) },
        Span::From { start: 5, end: Some(5) },
        Span::Last(0),
    ] {
        let got = read(tier, &k, &request(span)).await;
        assert_eq!(got, Got::NotSatisfiable { etag: "v1".into() }, "{span:?}");
    }
    let empty = key("ns", "empty");
    put(tier, &empty, "e", b"").await;
    let whole = read(tier, &empty, &request(Span::WHOLE)).await;
    let expected = Got::Body { etag: "e".into(), size: 0, range: (0, 0), bytes: vec![] };
    assert_eq!(whole, expected);
    for span in [Span::From { start: 0, end: Some(1) }, Span::Last(1), Span::Last(0)] {
        let got = read(tier, &empty, &request(span)).await;
        assert_eq!(got, Got::NotSatisfiable { etag: "e".into() }, "{span:?} of zero bytes");
    }
    let missing = read(tier, &key("ns", "missing"), &request(Span::Last(1))).await;
    assert_eq!(missing, Got::NotFound);
}

async fn nothing_is_visible_before_commit(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "pending");
    let mut writer = tier.create(&k, new_object("v1")).await.unwrap();
    writer.write(Bytes::from_static(b"hello ")).await.unwrap();
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);
    assert_eq!(tier.stat(&k, now()).await.unwrap(), None);
    writer.write(Bytes::from_static(b"world")).await.unwrap();
    let meta = writer.commit().await.unwrap();
    assert_eq!(meta.size, 11);
    assert!(matches!(read(tier, &k, &request(Span::WHOLE)).await,
        Got::Body { bytes, .. } if bytes == b"hello world"));

    // A second revision stays invisible until its own commit.
    let mut writer = tier.create(&k, new_object("v2")).await.unwrap();
    writer.write(Bytes::from_static(b"second")).await.unwrap();
    assert!(matches!(read(tier, &k, &request(Span::WHOLE)).await,
        Got::Body { etag, .. } if etag == "v1"));
    writer.commit().await.unwrap();
    assert!(matches!(read(tier, &k, &request(Span::WHOLE)).await,
        Got::Body { etag, bytes, .. } if etag == "v2" && bytes == b"second"));
}

async fn abort_drop_and_a_wrong_size_leave_nothing(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "aborted");
    let mut writer = tier.create(&k, new_object("a")).await.unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    writer.abort().await;
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);

    let mut writer = tier.create(&k, new_object("b")).await.unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    drop(writer);
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);

    let short = NewObject { expected_size: Some(10), ..new_object("c") };
    let refused = put_with(tier, &k, short, b"12345", 2).await;
    assert!(
        matches!(refused, Err(TierError::SizeMismatch { expected: 10, received: 5, .. })),
        "{refused:?}"
    );
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);

    // An aborted overwrite leaves the previous revision in place.
    put(tier, &k, "kept", b"kept").await;
    let mut writer = tier.create(&k, new_object("lost")).await.unwrap();
    writer.write(Bytes::from_static(b"lost")).await.unwrap();
    writer.abort().await;
    assert!(matches!(read(tier, &k, &request(Span::WHOLE)).await,
        Got::Body { etag, .. } if etag == "kept"));
    assert_eq!(tier.stats(now()).await.unwrap().objects, 1);
}

async fn a_cancelled_write_leaves_nothing(tier: Arc<dyn Tier>) {
    let k = key("ns", "cancelled");
    let (wrote, wrote_rx) = tokio::sync::oneshot::channel();
    let task = {
        let tier = Arc::clone(&tier);
        let k = k.clone();
        tokio::spawn(async move {
            let mut writer = tier.create(&k, new_object("x")).await.unwrap();
            writer.write(Bytes::from(pattern(50_000))).await.unwrap();
            wrote.send(()).unwrap();
            // The upload stalls here, as a client that stops sending would.
            std::future::pending::<()>().await;
            writer.commit().await.unwrap();
        })
    };
    wrote_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(read(tier.as_ref(), &k, &request(Span::WHOLE)).await, Got::NotFound);
}

async fn expired_objects_are_never_served(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "ttl");
    let expires = now().saturating_add_millis(60_000);
    let new = NewObject { expires: Some(expires), ..new_object("t") };
    put_with(tier, &k, new, b"short-lived", 4).await.unwrap();
    assert!(matches!(read(tier, &k, &request(Span::WHOLE)).await, Got::Body { .. }));
    let later = OpenRequest { now: expires, ..request(Span::WHOLE) };
    assert_eq!(read(tier, &k, &later).await, Got::NotFound);
    let ranged_later =
        OpenRequest { now: expires.saturating_add_millis(1), ..request(Span::Last(2)) };
    assert_eq!(read(tier, &k, &ranged_later).await, Got::NotFound);
    assert_eq!(tier.stat(&k, expires).await.unwrap(), None);
}

async fn an_overwrite_replaces_the_whole_revision(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "over");
    put(tier, &k, "v1", b"first revision, longer").await;
    put(tier, &k, "v2", b"second").await;
    let expected =
        Got::Body { etag: "v2".into(), size: 6, range: (0, 6), bytes: b"second".to_vec() };
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, expected);
    assert_eq!(tier.stats(now()).await.unwrap().objects, 1);
}

async fn delete_removes_the_object(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "gone");
    put(tier, &k, "v1", b"bytes").await;
    assert!(tier.delete(&k).await.unwrap());
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);
    assert_eq!(tier.stat(&k, now()).await.unwrap(), None);
    assert!(!tier.delete(&k).await.unwrap());
}

async fn namespaces_are_isolated_and_listed(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let (a, b) = (key("beta", "same"), key("alpha", "same"));
    put(tier, &a, "in-beta", b"beta bytes").await;
    put(tier, &b, "in-alpha", b"alpha bytes").await;
    assert!(matches!(read(tier, &a, &request(Span::WHOLE)).await,
        Got::Body { etag, bytes, .. } if etag == "in-beta" && bytes == b"beta bytes"));
    assert!(matches!(read(tier, &b, &request(Span::WHOLE)).await,
        Got::Body { etag, bytes, .. } if etag == "in-alpha" && bytes == b"alpha bytes"));
    assert_eq!(tier.namespaces().await.unwrap(), ["alpha", "beta"]);
    assert!(tier.delete(&b).await.unwrap());
    assert!(matches!(read(tier, &a, &request(Span::WHOLE)).await,
        Got::Body { etag, .. } if etag == "in-beta"));
}

async fn headers_etag_and_last_modified_round_trip(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "meta");
    let new = NewObject {
        etag: etag("supplied-0123456789abcdef"),
        last_modified: Timestamp::from_secs(784_111_777),
        headers: vec![
            ("cache-control".into(), "max-age=60, public".into()),
            (
                "content-disposition".into(),
                "attachment; filename=\"r\u{e9}sum\u{e9} 100%.pdf\"".into(),
            ),
            ("content-type".into(), "application/pdf".into()),
        ],
        expires: Some(now().saturating_add_millis(3_600_000)),
        condition: WriteCondition::None,
        expected_size: Some(3),
    };
    let committed = put_with(tier, &k, new.clone(), b"pdf", 3).await.unwrap();
    let expected = ObjectMeta {
        size: 3,
        etag: new.etag.clone(),
        last_modified: new.last_modified,
        headers: new.headers.clone(),
        expires: new.expires,
    };
    assert_eq!(committed, expected);
    assert_eq!(tier.stat(&k, now()).await.unwrap(), Some(expected.clone()));
    match tier.open(&k, &request(Span::Last(1))).await.unwrap() {
        rangecache::storage::Opened::Body { meta, body, .. } => {
            assert_eq!(meta, expected);
            assert_eq!(collect(body).await, b"f");
        }
        _ => panic!("the object is there"),
    }
}

async fn conditional_writes_are_checked_at_commit(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "cond");
    let with = |tag: &str, condition: WriteCondition| NewObject { condition, ..new_object(tag) };
    let failed =
        |r: Result<ObjectMeta, TierError>| matches!(r, Err(TierError::PreconditionFailed { .. }));
    let current = |got: Got| match got {
        Got::Body { etag, .. } => etag,
        other => panic!("expected a body, got {other:?}"),
    };

    // If-Match on a missing object fails; If-None-Match: * creates.
    assert!(failed(
        put_with(tier, &k, with("m", WriteCondition::IfMatch("*".into())), b"m", 9).await
    ));
    assert_eq!(read(tier, &k, &request(Span::WHOLE)).await, Got::NotFound);
    put_with(tier, &k, with("v1", WriteCondition::IfAbsent), b"one", 9).await.unwrap();
    assert!(failed(put_with(tier, &k, with("v0", WriteCondition::IfAbsent), b"zero", 9).await));
    assert_eq!(current(read(tier, &k, &request(Span::WHOLE)).await), "v1");

    // If-Match replaces only the named revision.
    let if_v1 = || WriteCondition::IfMatch("\"v1\"".into());
    put_with(tier, &k, with("v2", if_v1()), b"two", 9).await.unwrap();
    assert!(failed(put_with(tier, &k, with("v3", if_v1()), b"three", 9).await));
    assert_eq!(current(read(tier, &k, &request(Span::WHOLE)).await), "v2");
    put_with(tier, &k, with("v3", WriteCondition::IfMatch("\"x\", \"v2\"".into())), b"3", 9)
        .await
        .unwrap();
    put_with(tier, &k, with("v4", WriteCondition::IfMatch("*".into())), b"4", 9).await.unwrap();
    assert_eq!(current(read(tier, &k, &request(Span::WHOLE)).await), "v4");

    // The condition holds at the commit: a create-only write loses to a write that committed
    // while it was uploading.
    let fresh = key("ns", "race");
    let mut slow = tier.create(&fresh, with("slow", WriteCondition::IfAbsent)).await.unwrap();
    slow.write(Bytes::from_static(b"slow")).await.unwrap();
    put(tier, &fresh, "fast", b"fast").await;
    assert!(failed(slow.commit().await));
    assert_eq!(current(read(tier, &fresh, &request(Span::WHOLE)).await), "fast");

    // An expired copy counts as absent.
    let stale = key("ns", "stale");
    let expired = NewObject { expires: Some(Timestamp::from_secs(1)), ..new_object("old") };
    put_with(tier, &stale, expired, b"old", 9).await.unwrap();
    put_with(tier, &stale, with("new", WriteCondition::IfAbsent), b"new", 9).await.unwrap();
    assert_eq!(current(read(tier, &stale, &request(Span::WHOLE)).await), "new");
}

async fn read_preconditions_are_judged_against_the_revision_opened(tier: Arc<dyn Tier>) {
    let tier = tier.as_ref();
    let k = key("ns", "pre");
    let last_modified = Timestamp::from_secs(1_700_000_000);
    put(tier, &k, "v1", b"precondition body").await;
    let date = |at: Timestamp| Some(format_http_date(at));
    let hour_before = Timestamp::from_secs(1_700_000_000 - 3_600);
    let with = |conditions: Conditions, span: Span| OpenRequest { conditions, ..request(span) };
    let body = |got: &Got| matches!(got, Got::Body { etag, .. } if etag == "v1");
    let cases: Vec<(Conditions, Span, &str)> = vec![
        (Conditions { if_match: Some("\"v1\"".into()), ..Default::default() }, Span::WHOLE, "body"),
        (Conditions { if_match: Some("*".into()), ..Default::default() }, Span::Last(3), "body"),
        (Conditions { if_match: Some("\"v0\"".into()), ..Default::default() }, Span::WHOLE, "412"),
        // Preconditions come before the range: a failed If-Match beats an unsatisfiable span.
        (
            Conditions { if_match: Some("\"v0\"".into()), ..Default::default() },
            Span::From { start: 1_000, end: None },
            "412",
        ),
        (
            Conditions { if_none_match: Some("\"v1\"".into()), ..Default::default() },
            Span::WHOLE,
            "304",
        ),
        (Conditions { if_none_match: Some("*".into()), ..Default::default() }, Span::WHOLE, "304"),
        (
            Conditions { if_none_match: Some("\"v0\"".into()), ..Default::default() },
            Span::WHOLE,
            "body",
        ),
        (
            Conditions { if_modified_since: date(last_modified), ..Default::default() },
            Span::WHOLE,
            "304",
        ),
        (
            Conditions { if_modified_since: date(hour_before), ..Default::default() },
            Span::WHOLE,
            "body",
        ),
        (
            Conditions { if_unmodified_since: date(hour_before), ..Default::default() },
            Span::WHOLE,
            "412",
        ),
        (
            Conditions { if_unmodified_since: date(last_modified), ..Default::default() },
            Span::WHOLE,
            "body",
        ),
    ];
    for (conditions, span, expect) in cases {
        let got = read(tier, &k, &with(conditions.clone(), span)).await;
        let ok = match expect {
            "body" => body(&got),
            "412" => got == Got::PreconditionFailed { etag: "v1".into() },
            _ => got == Got::NotModified { etag: "v1".into() },
        };
        assert!(ok, "{conditions:?} {span:?}: expected {expect}, got {got:?}");
    }
}

/// Sizes differ per revision so that a server pairing one revision's metadata with another's
/// bytes is caught by the length as well as by the content.
fn revision_body(n: u64) -> Vec<u8> {
    vec![n as u8; 20_000 + n as usize * 100]
}

/// Once the four readers have counted 4 answers in `answered` (so reads and commits interleave;
/// at most 10 s), writes revisions 1 to `revisions` of `k`, tells the readers it is `done` and
/// waits for them to end.
async fn overwrite_once_reading(
    tier: &dyn Tier,
    k: &ObjectKey,
    revisions: u64,
    answered: &AtomicU64,
    done: &AtomicBool,
    readers: Vec<tokio::task::JoinHandle<()>>,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < 4 {
        assert!(std::time::Instant::now() < deadline, "the readers never started");
        tokio::task::yield_now().await;
    }
    for n in 1..=revisions {
        let body = revision_body(n);
        let new =
            NewObject { expected_size: Some(body.len() as u64), ..new_object(&format!("r{n}")) };
        put_with(tier, k, new, &body, 4_096).await.unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.await.unwrap();
    }
}

async fn readers_during_overwrites_see_one_whole_revision(tier: Arc<dyn Tier>) {
    const REVISIONS: u64 = 20;
    let k = key("ns", "contended");
    put(tier.as_ref(), &k, "r0", &revision_body(0)).await;
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for reader in 0..4u64 {
        let (tier, k, done) = (tier.clone(), k.clone(), done.clone());
        let (reads, refused) = (reads.clone(), refused.clone());
        readers.push(tokio::spawn(async move {
            let spans = [Span::WHOLE, Span::Last(700), Span::From { start: 19_950, end: None }];
            let mut i = reader as usize;
            // At least one read each, however fast the writer is.
            loop {
                let finished = done.load(Ordering::Acquire);
                let span = spans[i % spans.len()];
                i += 1;
                let got = match try_read(tier.as_ref(), &k, &request(span)).await {
                    Ok(got) => got,
                    // Refusing is correct; serving a mix would not be. Only a tier over a server
                    // that stores metadata beside the bytes (s3s-fs) ever refuses, after retries.
                    Err(TierError::Backend { message, .. }) if message == MIXED_REVISIONS => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if finished {
                            break;
                        }
                        continue;
                    }
                    Err(e) => panic!("{span:?}: {e}"),
                };
                let Got::Body { etag, size, range, bytes } = got else {
                    panic!("the object always exists, got {got:?}");
                };
                let n: u64 = etag.trim_start_matches('r').parse().unwrap();
                assert_eq!(size, revision_body(n).len() as u64, "size of revision {n}");
                assert_eq!(bytes.len() as u64, range.1 - range.0, "{span:?} of revision {n}");
                assert!(
                    bytes.iter().all(|b| *b == n as u8),
                    "{span:?}: bytes of another revision than {n}"
                );
                reads.fetch_add(1, Ordering::Relaxed);
                if finished {
                    break;
                }
            }
        }));
    }
    overwrite_once_reading(tier.as_ref(), &k, REVISIONS, &reads, &done, readers).await;
    let (reads, refused) = (reads.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert!(reads >= 4, "every reader read whole revisions ({reads} reads, {refused} refused)");
    assert!(refused == 0 || tier.name() == "s3", "only s3 may refuse, {refused} refusals");
}

/// What a HEAD reads (`stat`) must describe one revision too: its entity-tag with its size.
async fn stats_during_overwrites_describe_one_revision(tier: Arc<dyn Tier>) {
    const REVISIONS: u64 = 20;
    let k = key("ns", "stat-contended");
    put(tier.as_ref(), &k, "r0", &revision_body(0)).await;
    let done = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (tier, k, done) = (tier.clone(), k.clone(), done.clone());
        let (stats, refused) = (stats.clone(), refused.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let finished = done.load(Ordering::Acquire);
                match tier.stat(&k, now()).await {
                    Ok(Some(meta)) => {
                        let n: u64 = meta.etag.to_string().trim_matches('"')[1..].parse().unwrap();
                        let size = revision_body(n).len() as u64;
                        assert_eq!(meta.size, size, "the size of another revision than {n}");
                        stats.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => panic!("the object always exists"),
                    // Refusing is correct, as for reads; describing a mix is not.
                    Err(TierError::Backend { message, .. }) if message == MIXED_REVISIONS => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("{e}"),
                }
                if finished {
                    break;
                }
            }
        }));
    }
    overwrite_once_reading(tier.as_ref(), &k, REVISIONS, &stats, &done, readers).await;
    let (stats, refused) = (stats.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert!(stats >= 4, "every reader described revisions ({stats} stats, {refused} refused)");
    assert!(refused == 0 || tier.name() == "s3", "only s3 may refuse, {refused} refusals");
}

// ---- memory only ----

#[tokio::test]
async fn memory_evicts_the_least_recently_used_object_past_its_capacity() {
    let tier = MemoryTier::new("memory", 3_000);
    let (a, b, c, d) = (key("ns", "a"), key("ns", "b"), key("ns", "c"), key("ns", "d"));
    for k in [&a, &b, &c] {
        put(&tier, k, "x", &pattern(1_000)).await;
    }
    assert!(matches!(read(&tier, &a, &request(Span::WHOLE)).await, Got::Body { .. }));
    put(&tier, &d, "x", &pattern(1_000)).await;
    assert_eq!(read(&tier, &b, &request(Span::WHOLE)).await, Got::NotFound);
    for k in [&a, &c, &d] {
        assert!(matches!(read(&tier, k, &request(Span::WHOLE)).await, Got::Body { .. }));
    }
    let stats = tier.stats(now()).await.unwrap();
    assert_eq!((stats.objects, stats.bytes, stats.capacity), (3, 3_000, Some(3_000)));
    let too_large = put_with(&tier, &a, new_object("big"), &pattern(3_001), 1_000).await;
    assert!(matches!(too_large, Err(TierError::TooLarge { size: 3_001, .. })), "{too_large:?}");
}

#[tokio::test]
async fn memory_ranged_reads_share_the_stored_buffer() {
    let tier = MemoryTier::new("memory", 1 << 20);
    let k = key("ns", "slice");
    put_with(&tier, &k, new_object("s"), &pattern(4_096), 4_096).await.unwrap();
    let first = |opened| match opened {
        rangecache::storage::Opened::Body { body, .. } => body,
        _ => panic!("the object is there"),
    };
    use futures::StreamExt;
    let mut whole = first(tier.open(&k, &request(Span::WHOLE)).await.unwrap());
    let mut part = first(
        tier.open(&k, &request(Span::From { start: 1_000, end: Some(2_000) })).await.unwrap(),
    );
    let whole = whole.next().await.unwrap().unwrap();
    let part = part.next().await.unwrap().unwrap();
    // Same allocation: the window starts 1 000 bytes into the whole object's buffer.
    assert_eq!(part.as_ptr() as usize - whole.as_ptr() as usize, 1_000);
    assert_eq!(part.len(), 1_000);
}

/// A write of `len` bytes announced in advance, as a backfill makes.
fn sized(tag: &str, len: u64) -> NewObject {
    NewObject { expected_size: Some(len), ..new_object(tag) }
}

#[tokio::test]
async fn memory_writers_past_the_write_budget_are_refused_and_give_their_bytes_back() {
    let tier = MemoryTier::new("memory", 10_000);
    let keys: Vec<_> = (0..5).map(|i| key("ns", &format!("w{i}"))).collect();
    // Announced sizes are reserved at create: three fit the budget, the fourth does not.
    let mut sized_writers = Vec::new();
    for k in &keys[..3] {
        sized_writers.push(tier.create(k, sized("s", 3_000)).await.unwrap());
    }
    assert_eq!(tier.reserved_bytes(), 9_000);
    let refused = tier.create(&keys[3], sized("s", 3_000)).await.map(drop);
    assert!(
        matches!(refused, Err(TierError::Busy { needed: 3_000, available: 1_000, .. })),
        "{refused:?}"
    );
    assert_eq!(tier.reserved_bytes(), 9_000, "a refused create reserves nothing");

    // A write of unknown size reserves as its chunks arrive, and a chunk past the budget is
    // refused without being counted.
    let mut growing = tier.create(&keys[4], new_object("u")).await.unwrap();
    assert_eq!(tier.reserved_bytes(), 9_000);
    growing.write(Bytes::from(pattern(1_000))).await.unwrap();
    assert_eq!(tier.reserved_bytes(), 10_000);
    let refused = growing.write(Bytes::from(pattern(1))).await;
    assert!(matches!(refused, Err(TierError::Busy { needed: 1, available: 0, .. })), "{refused:?}");
    assert_eq!(tier.reserved_bytes(), 10_000);

    // Abort, drop and commit each give the reservation back.
    growing.abort().await;
    assert_eq!(tier.reserved_bytes(), 9_000);
    let mut writers = sized_writers.into_iter();
    drop(writers.next().unwrap());
    assert_eq!(tier.reserved_bytes(), 6_000);
    let mut half_written = writers.next().unwrap();
    half_written.write(Bytes::from(pattern(1_500))).await.unwrap();
    half_written.abort().await;
    assert_eq!(tier.reserved_bytes(), 3_000);
    let mut last = writers.next().unwrap();
    last.write(Bytes::from(pattern(3_000))).await.unwrap();
    last.commit().await.unwrap();
    assert_eq!(tier.reserved_bytes(), 0);
    let stats = tier.stats(now()).await.unwrap();
    assert_eq!((stats.objects, stats.bytes), (1, 3_000));
    assert!(matches!(read(&tier, &keys[2], &request(Span::WHOLE)).await,
        Got::Body { bytes, .. } if bytes == pattern(3_000)));
    for k in [&keys[0], &keys[1], &keys[3], &keys[4]] {
        assert_eq!(read(&tier, k, &request(Span::WHOLE)).await, Got::NotFound);
    }

    // With every reservation back, an object of the whole capacity can be written again.
    put_with(&tier, &keys[0], sized("full", 10_000), &pattern(10_000), 4_096).await.unwrap();
    assert_eq!(tier.reserved_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_writers_never_hold_more_than_the_budget() {
    const N_WRITERS: usize = 64;
    const BUDGET: u64 = 20_000;
    const SIZE: usize = 5_000;
    let tier = Arc::new(MemoryTier::new("memory", BUDGET));
    let all_written = Arc::new(tokio::sync::Barrier::new(N_WRITERS));
    let (committed, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for i in 0..N_WRITERS {
        let (tier, all_written) = (Arc::clone(&tier), Arc::clone(&all_written));
        let (committed, refused) = (Arc::clone(&committed), Arc::clone(&refused));
        tasks.push(tokio::spawn(async move {
            let k = key("ns", &format!("c{i}"));
            // Half announce their size (backfills), half do not (uploads without a length).
            let new = if i % 2 == 0 { sized("c", SIZE as u64) } else { new_object("c") };
            let mut outcome = tier.create(&k, new).await;
            if let Ok(writer) = &mut outcome {
                for piece in pattern(SIZE).chunks(1_000) {
                    if let Err(e) = writer.write(Bytes::copy_from_slice(piece)).await {
                        outcome = Err(e);
                        break;
                    }
                    assert!(tier.reserved_bytes() <= BUDGET);
                }
            }
            let writer = match outcome {
                Ok(writer) => Some(writer),
                Err(TierError::Busy { .. }) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => panic!("only a budget refusal is expected, got {e}"),
            };
            // Every surviving writer holds its whole object until all the others are done; the
            // refused ones have dropped theirs.
            all_written.wait().await;
            if let Some(writer) = writer {
                writer.commit().await.unwrap();
                committed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (committed, refused) = (committed.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert_eq!(committed + refused, N_WRITERS as u64);
    assert!(committed <= BUDGET / SIZE as u64, "{committed} writers of {SIZE} bytes committed");
    assert!(refused >= (N_WRITERS as u64) - BUDGET / SIZE as u64, "{refused} refused");
    assert_eq!(tier.reserved_bytes(), 0, "every reservation was given back");
    let stats = tier.stats(now()).await.unwrap();
    assert_eq!(stats.bytes, committed * SIZE as u64);
    assert!(stats.bytes <= BUDGET);
}

#[tokio::test]
async fn memory_commit_moves_a_reservation_into_the_lru_which_evicts_for_it() {
    let tier = MemoryTier::new("memory", 3_000);
    let old: Vec<_> = (0..3).map(|i| key("ns", &format!("old{i}"))).collect();
    for k in &old {
        put(&tier, k, "x", &pattern(1_000)).await;
    }
    // A full tier still takes writes: the budget counts buffers, the LRU counts objects.
    let big = key("ns", "big");
    let mut writer = tier.create(&big, sized("big", 2_500)).await.unwrap();
    writer.write(Bytes::from(pattern(2_500))).await.unwrap();
    assert_eq!(tier.reserved_bytes(), 2_500);
    assert_eq!(tier.stats(now()).await.unwrap().bytes, 3_000, "nothing evicted before commit");
    writer.commit().await.unwrap();
    assert_eq!(tier.reserved_bytes(), 0);
    let stats = tier.stats(now()).await.unwrap();
    assert_eq!((stats.objects, stats.bytes), (1, 2_500), "the least recently used went first");
    assert_eq!(read(&tier, &old[2], &request(Span::WHOLE)).await, Got::NotFound);

    // A write refused at commit gives its reservation back too.
    let mut writer = tier
        .create(&big, NewObject { condition: WriteCondition::IfAbsent, ..sized("again", 100) })
        .await
        .unwrap();
    writer.write(Bytes::from(pattern(100))).await.unwrap();
    let refused = writer.commit().await;
    assert!(matches!(refused, Err(TierError::PreconditionFailed { .. })), "{refused:?}");
    assert_eq!(tier.reserved_bytes(), 0);
}

#[tokio::test]
async fn memory_write_budget_can_be_smaller_than_the_capacity() {
    let tier = MemoryTier::with_write_budget("memory", 10_000, 1_000);
    let k = key("ns", "budget");
    let refused = tier.create(&k, sized("x", 2_000)).await.map(drop);
    assert!(
        matches!(refused, Err(TierError::TooLarge { size: 2_000, capacity: 1_000, .. })),
        "{refused:?}"
    );
    let refused = put_with(&tier, &k, new_object("x"), &pattern(2_000), 600).await;
    assert!(matches!(refused, Err(TierError::TooLarge { .. })), "{refused:?}");
    assert_eq!(tier.reserved_bytes(), 0);
    for i in 0..5 {
        put(&tier, &key("ns", &format!("small{i}")), "s", &pattern(1_000)).await;
    }
    assert_eq!(tier.stats(now()).await.unwrap().bytes, 5_000);
    assert_eq!(tier.reserved_bytes(), 0);
}

// ---- disk only ----

/// Every file below `root`, as paths relative to it, sorted.
fn files_under(root: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &entry.path(), out);
            } else {
                out.push(entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_rebuilds_its_index_on_restart_and_cleans_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    // `b` is a key given as 64 upper-case hex digits, kept as given (SPEC §3).
    let (a, b, gone) = (key("ns", "a"), key("other", &"AB".repeat(32)), key("ns", "expired"));
    {
        let tier = DiskTier::open("disk", dir.path(), 1 << 20).await.unwrap();
        put(&tier, &a, "a1", &pattern(1_000)).await;
        put(&tier, &b, "b1", &pattern(2_000)).await;
        let expired = NewObject { expires: Some(Timestamp::from_secs(1)), ..new_object("e") };
        put_with(&tier, &gone, expired, b"expired", 8).await.unwrap();
        // An interrupted write: its temporary file stays behind, as after a crash.
        let mut writer = tier.create(&a, new_object("a2")).await.unwrap();
        writer.write(Bytes::from(pattern(500))).await.unwrap();
        std::mem::forget(writer);
    }
    std::fs::write(dir.path().join("ns").join("0".repeat(64)), b"not an object").unwrap();
    let before = files_under(dir.path());
    assert!(before.iter().any(|f| f.contains(".tmp-")), "{before:?}");

    let tier = DiskTier::open("disk", dir.path(), 1 << 20).await.unwrap();
    let expected = vec![format!("ns/{}", a.key), format!("other/{}", b.key)];
    assert_eq!(
        files_under(dir.path()),
        expected,
        "leftovers, corrupt and expired entries are removed"
    );
    assert!(matches!(read(&tier, &a, &request(Span::Last(10))).await,
        Got::Body { etag, bytes, .. } if etag == "a1" && bytes == pattern(1_000)[990..]));
    assert!(matches!(read(&tier, &b, &request(Span::WHOLE)).await,
        Got::Body { etag, .. } if etag == "b1"));
    let stats = tier.stats(now()).await.unwrap();
    assert_eq!((stats.objects, stats.bytes), (2, 3_000));
    assert_eq!(tier.namespaces().await.unwrap(), ["ns", "other"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_evicts_by_size_in_lru_order_and_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..4).map(|i| key("ns", &format!("k{i}"))).collect();
    {
        let tier = DiskTier::open("disk", dir.path(), 3_000).await.unwrap();
        for k in &keys[..3] {
            put(&tier, k, "x", &pattern(1_000)).await;
        }
        assert!(matches!(read(&tier, &keys[0], &request(Span::WHOLE)).await, Got::Body { .. }));
        put(&tier, &keys[3], "x", &pattern(1_000)).await;
        assert_eq!(read(&tier, &keys[1], &request(Span::WHOLE)).await, Got::NotFound);
        let stats = tier.stats(now()).await.unwrap();
        assert_eq!((stats.objects, stats.bytes, stats.capacity), (3, 3_000, Some(3_000)));
        let too_large = put_with(&tier, &keys[0], new_object("big"), &pattern(3_001), 1_000).await;
        assert!(matches!(too_large, Err(TierError::TooLarge { .. })), "{too_large:?}");
    }
    let smaller = DiskTier::open("disk", dir.path(), 1_500).await.unwrap();
    let stats = smaller.stats(now()).await.unwrap();
    assert_eq!((stats.objects, stats.bytes), (1, 1_000));
    assert_eq!(files_under(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_writes_that_end_early_leave_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Arc::new(DiskTier::open("disk", dir.path(), 1 << 20).await.unwrap());
    let k = key("ns", "../../../etc/passwd");
    let mut writer = tier.create(&k, new_object("a")).await.unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    writer.abort().await;
    let writer = tier.create(&k, new_object("b")).await.unwrap();
    drop(writer);
    a_cancelled_write_leaves_nothing(tier.clone()).await;
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
    put(tier.as_ref(), &k, "c", b"inside").await;
    // The key of a hostile segment is its SHA-256, a file inside the namespace directory.
    assert_eq!(files_under(dir.path()), [format!("ns/{}", k.key)]);
}

// ---- s3 only ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ranged_reads_are_one_ranged_get_each() {
    let env = S3Env::get();
    let (direct, prefix) = env.fresh_tier();
    let k = key("ns", "counted");
    let body = pattern(100_000);
    put(&direct, &k, "v1", &body).await;
    let proxy = CountingProxy::start(&env.endpoint).await;
    let through: S3Tier = env.tier_at(&proxy.endpoint, &prefix);
    let cases = [
        (Span::From { start: 1_000, end: Some(2_000) }, "bytes=1000-1999", (1_000, 2_000)),
        (Span::From { start: 99_000, end: None }, "bytes=99000-", (99_000, 100_000)),
        (Span::Last(500), "bytes=-500", (99_500, 100_000)),
    ];
    for (span, header, (start, end)) in cases {
        let got = read(&through, &k, &request(span)).await;
        let expected = Got::Body {
            etag: "v1".into(),
            size: 100_000,
            range: (start, end),
            bytes: body[start as usize..end as usize].to_vec(),
        };
        assert_eq!(got, expected);
        let seen = proxy.take();
        assert_eq!(seen.len(), 1, "{span:?}: exactly one request, got {seen:?}");
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].range.as_deref(), Some(header), "{seen:?}");
    }
    // Conditions travel with the GET, in S3's terms: our entity-tag as the S3 ETag this tier
    // saw for it, dates as they are; the answer is still judged against our metadata.
    let conditional = OpenRequest {
        conditions: Conditions {
            if_match: Some("\"v1\"".into()),
            if_modified_since: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
            ..Conditions::default()
        },
        ..request(Span::Last(5))
    };
    let got = read(&through, &k, &conditional).await;
    assert!(matches!(&got, Got::Body { bytes, .. } if bytes[..] == body[99_995..]), "{got:?}");
    let seen = proxy.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let [if_match, if_modified_since] = seen[0].conditions.as_slice() else {
        panic!("two conditions sent: {seen:?}");
    };
    assert!(if_match.starts_with("if-match: \"") && if_match != "if-match: \"v1\"", "{seen:?}");
    assert_eq!(if_modified_since, "if-modified-since: Sun, 06 Nov 1994 08:49:37 GMT");

    // A whole read is one GET without a Range.
    let got = read(&through, &k, &request(Span::WHOLE)).await;
    assert!(matches!(got, Got::Body { bytes, .. } if bytes == body));
    let seen = proxy.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].range.as_deref()), ("GET", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_objects_go_up_in_parts_and_a_dropped_upload_leaves_nothing() {
    let env = S3Env::get();
    let (tier, _) = env.fresh_tier();
    let tier: Arc<dyn Tier> = Arc::new(tier);
    let k = key("ns", "large");
    let size = rangecache::storage::s3::PART_SIZE * 2 + 12_345;
    let body = pattern(size);
    let new = NewObject { expected_size: Some(size as u64), ..new_object("big") };
    put_with(tier.as_ref(), &k, new, &body, 1 << 20).await.unwrap();
    let window = Span::From { start: 8_388_000, end: Some(8_389_000) };
    assert!(matches!(read(tier.as_ref(), &k, &request(window)).await,
        Got::Body { bytes, .. } if bytes == body[8_388_000..8_389_000]));
    assert!(matches!(read(tier.as_ref(), &k, &request(Span::WHOLE)).await,
        Got::Body { bytes, .. } if bytes == body));

    // A multipart upload cancelled after its first part is never visible.
    let other = key("ns", "large-cancelled");
    let mut writer = tier.create(&other, new_object("never")).await.unwrap();
    writer.write(Bytes::from(pattern(rangecache::storage::s3::PART_SIZE + 1))).await.unwrap();
    drop(writer);
    assert_eq!(read(tier.as_ref(), &other, &request(Span::WHOLE)).await, Got::NotFound);
}
