//! The memory bound of disk reads: streaming a 1 GiB object from the disk tier to a reader keeps
//! the process's peak resident set under 64 MiB. Alone in its own test binary, so no other test
//! shares the process whose peak (`VmHWM`) is read.

use bytes::Bytes;
use futures::StreamExt;
use rangecache::storage::{
    Conditions, DiskTier, NewObject, OpenRequest, Opened, Tier, WriteCondition,
};
use rangecache_core::range::Span;
use rangecache_core::{EntityTag, Key, Namespace, ObjectKey, Timestamp};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;

/// Peak resident set size of this process so far, from `/proc/self/status`.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux procfs");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM is reported");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The byte at `offset` of the object: a 1 MiB block of `i % 251` repeated.
fn expected_byte(offset: u64) -> u8 {
    ((offset % MIB) % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_gibibyte_from_disk_keeps_peak_rss_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open("disk", dir.path(), 2 * GIB).await.unwrap();
    let key =
        ObjectKey { namespace: Namespace::parse("rss").unwrap(), key: Key::from_segment("big") };
    let new = NewObject {
        etag: EntityTag::strong("big").unwrap(),
        last_modified: Timestamp::from_secs(1_700_000_000),
        headers: Vec::new(),
        expires: None,
        condition: WriteCondition::None,
        expected_size: Some(GIB),
    };
    // One 1 MiB block, shared by every chunk written (clones of `Bytes` share the buffer).
    let block = Bytes::from((0..MIB).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut writer = tier.create(&key, new).await.unwrap();
    for _ in 0..GIB / MIB {
        writer.write(block.clone()).await.unwrap();
    }
    writer.commit().await.unwrap();
    let after_write = peak_rss();

    let req = OpenRequest {
        span: Span::WHOLE,
        conditions: Conditions::default(),
        now: Timestamp::from_secs(1_700_000_000),
    };
    let Opened::Body { meta, mut body, .. } = tier.open(&key, &req).await.unwrap() else {
        panic!("the object was just written");
    };
    assert_eq!(meta.size, GIB);
    let started = std::time::Instant::now();
    let mut offset: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        let last = offset + chunk.len() as u64 - 1;
        assert_eq!(chunk[0], expected_byte(offset), "byte {offset}");
        assert_eq!(*chunk.last().unwrap(), expected_byte(last), "byte {last}");
        offset += chunk.len() as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(offset, GIB, "every byte was streamed");
    let peak = peak_rss();
    eprintln!(
        "peak RSS after writing 1 GiB: {:.1} MiB; after streaming it: {:.1} MiB (limit 64 MiB); \
         read at {:.0} MiB/s",
        after_write as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        GIB as f64 / MIB as f64 / elapsed.as_secs_f64()
    );
    assert!(peak < LIMIT, "peak RSS {peak} bytes is over {LIMIT}");
}
