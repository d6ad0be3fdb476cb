//! The model the runs check every answer against: the versions written to each key (recorded
//! before the write is sent, since a write whose answer is lost may still have been stored),
//! and what a read may answer about them (RFC 9110 §13–§15, written here independently of the
//! server's core, so the two cannot share a mistake).
//!
//! A version's bytes are a function of its seed and the offset, so any window of any version
//! can be checked without keeping the bytes: byte `i` is byte `i % 8` of a 64-bit mix of the
//! seed and `i / 8`. Two versions agree on a window only by a 2^-64 chance per word.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

/// One version written to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Its entity-tag, quoted, as sent with the write.
    pub etag: String,
    /// Its size.
    pub len: u64,
    /// The seed of its bytes.
    pub seed: u64,
}

impl Version {
    /// The version's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(self.len).expect("versions fit in memory")];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = byte_at(self.seed, i as u64);
        }
        out
    }

    /// True if `body` is exactly the bytes `[first, first + body.len())` of this version.
    pub fn holds_at(&self, first: u64, body: &[u8]) -> bool {
        first.checked_add(body.len() as u64).is_some_and(|end| end <= self.len)
            && body
                .iter()
                .enumerate()
                .all(|(i, byte)| *byte == byte_at(self.seed, first + i as u64))
    }
}

fn byte_at(seed: u64, offset: u64) -> u8 {
    // splitmix64's finalizer: every bit of the word depends on every bit of its input.
    let mut z = seed ^ (offset / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z.to_le_bytes()[(offset % 8) as usize]
}

/// Every version written to every key, never forgotten.
#[derive(Default)]
pub struct Versions {
    by_key: Mutex<HashMap<String, Vec<Version>>>,
}

impl Versions {
    /// Records `version` of `key`; call it before the write is sent.
    pub fn add(&self, key: &str, version: Version) {
        self.lock().entry(key.to_owned()).or_default().push(version);
    }

    /// The version of `key` tagged `etag`.
    pub fn find(&self, key: &str, etag: &str) -> Option<Version> {
        self.lock().get(key)?.iter().find(|v| v.etag == etag).cloned()
    }

    /// Every version of `key`.
    pub fn of(&self, key: &str) -> Vec<Version> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Version>>> {
        self.by_key.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One range of a `Range: bytes=...` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    /// `first-last`, both inclusive.
    FromTo(u64, u64),
    /// `first-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl Spec {
    /// The header value.
    pub fn header(self) -> String {
        match self {
            Spec::FromTo(first, last) => format!("bytes={first}-{last}"),
            Spec::From(first) => format!("bytes={first}-"),
            Spec::Suffix(n) => format!("bytes=-{n}"),
        }
    }

    /// The inclusive byte range this selects from `len` bytes; `None` when unsatisfiable
    /// (RFC 9110 §14.1.1–§14.1.2).
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            Spec::FromTo(first, last) if first < len => Some((first, last.min(len - 1))),
            Spec::From(first) if first < len => Some((first, len - 1)),
            Spec::Suffix(n) if n > 0 && len > 0 => Some((len - n.min(len), len - 1)),
            Spec::FromTo(..) | Spec::From(_) | Spec::Suffix(_) => None,
        }
    }

    /// True for a suffix of a zero-byte object: satisfiable, yet no Content-Range can
    /// describe it, so the server answers 200 with the empty object (§14.1.2, §14.2).
    pub fn is_empty_suffix(self, len: u64) -> bool {
        matches!(self, Spec::Suffix(n) if n > 0) && len == 0
    }
}

/// A read, as the client asked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// A plain GET.
    Whole,
    /// A GET with one range.
    Range(Spec),
    /// A HEAD.
    Head,
    /// A GET with `If-None-Match: etag`.
    IfNoneMatch(String),
    /// A GET with `If-Match: etag`.
    IfMatch(String),
    /// A GET with `If-Range: etag` and one range.
    IfRange(String, Spec),
}

impl Read {
    /// Request header fields to send.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Read::Whole | Read::Head => Vec::new(),
            Read::Range(spec) => vec![("range", spec.header())],
            Read::IfNoneMatch(etag) => vec![("if-none-match", etag.clone())],
            Read::IfMatch(etag) => vec![("if-match", etag.clone())],
            Read::IfRange(etag, spec) => vec![("range", spec.header()), ("if-range", etag.clone())],
        }
    }

    /// A short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Read::Whole => "get",
            Read::Range(_) => "range",
            Read::Head => "head",
            Read::IfNoneMatch(_) => "if-none-match",
            Read::IfMatch(_) => "if-match",
            Read::IfRange(..) => "if-range",
        }
    }
}

/// What a checked answer was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Bytes (or, for HEAD, metadata) of a written version at the offsets advertised.
    Served,
    /// 404.
    NotFound,
    /// 304 for the version the client named.
    NotModified,
    /// 412.
    PreconditionFailed,
    /// 416 describing a version the range misses.
    Unsatisfiable,
    /// A 5xx: the server said it could not answer.
    ServerError,
}

impl Verdict {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Served => "served",
            Verdict::NotFound => "404",
            Verdict::NotModified => "304",
            Verdict::PreconditionFailed => "412",
            Verdict::Unsatisfiable => "416",
            Verdict::ServerError => "5xx",
        }
    }
}

/// Checks one answer to `read` of `key` against the versions written: `Err` says how it
/// contradicts them. `body` is `None` for HEAD.
pub fn check(
    versions: &Versions,
    key: &str,
    read: &Read,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&Bytes>,
) -> Result<Verdict, String> {
    let field = |name: header::HeaderName| {
        headers.get(&name).map(|v| v.to_str().map(str::to_owned).map_err(|_| format!("{name}")))
    };
    let etag = field(header::ETAG).transpose()?;
    let version = || -> Result<Version, String> {
        let etag = etag.as_deref().ok_or("no ETag")?;
        versions.find(key, etag).ok_or_else(|| format!("ETag {etag} was never written"))
    };
    let content_length = || -> Result<u64, String> {
        let text = field(header::CONTENT_LENGTH).transpose()?.ok_or("no Content-Length")?;
        text.parse().map_err(|_| format!("Content-Length {text:?}"))
    };
    let body_of = |len: u64| -> Result<&Bytes, String> {
        let body = body.ok_or("a GET without a body")?;
        if body.len() as u64 != len {
            return Err(format!("{} body bytes where {len} belong", body.len()));
        }
        Ok(body)
    };
    if status.is_server_error() {
        return Ok(Verdict::ServerError);
    }
    match (read, status.as_u16()) {
        (_, 404) => Ok(Verdict::NotFound),
        (Read::Head, 200) => {
            let version = version()?;
            let len = content_length()?;
            if len != version.len {
                return Err(format!("HEAD says {len} bytes, {} has {}", version.etag, version.len));
            }
            Ok(Verdict::Served)
        }
        (Read::Whole | Read::IfNoneMatch(_) | Read::IfMatch(_), 200) => {
            let version = version()?;
            if let Read::IfNoneMatch(named) = read
                && *named == version.etag
            {
                return Err(format!("200 of {named} to If-None-Match: {named}"));
            }
            if let Read::IfMatch(named) = read
                && *named != version.etag
            {
                return Err(format!("200 of {} to If-Match: {named}", version.etag));
            }
            whole(&version, content_length()?, body_of(version.len)?)
        }
        (Read::Range(spec) | Read::IfRange(_, spec), 200) => {
            // A 200 to a Range is the whole object: for a suffix of an empty one, or when an
            // If-Range names another version; any other satisfiable range must be a 206.
            let version = version()?;
            let named_other = matches!(read, Read::IfRange(named, _) if *named != version.etag);
            if !named_other && !spec.is_empty_suffix(version.len) {
                return Err(format!("200 to {} of {} bytes", spec.header(), version.len));
            }
            whole(&version, content_length()?, body_of(version.len)?)
        }
        (Read::Range(spec) | Read::IfRange(_, spec), 206) => {
            let version = version()?;
            if let Read::IfRange(named, _) = read
                && *named != version.etag
            {
                return Err(format!("206 of {} to If-Range: {named}", version.etag));
            }
            let text =
                field(header::CONTENT_RANGE).transpose()?.ok_or("206 without Content-Range")?;
            let (first, last, size) =
                parse_content_range(&text).ok_or_else(|| format!("Content-Range {text:?}"))?;
            if size != version.len {
                return Err(format!(
                    "Content-Range {text} for {} of {} bytes",
                    version.etag, version.len
                ));
            }
            let expected = spec.resolve(version.len);
            if expected != Some((first, last)) {
                return Err(format!(
                    "Content-Range {text} for {} of {} bytes, which selects {expected:?}",
                    spec.header(),
                    version.len
                ));
            }
            let len = last - first + 1;
            if content_length()? != len {
                return Err(format!("Content-Length {:?} for {text}", content_length()));
            }
            if !version.holds_at(first, body_of(len)?) {
                return Err(format!("the body is not bytes {first}-{last} of {}", version.etag));
            }
            Ok(Verdict::Served)
        }
        (Read::Range(spec) | Read::IfRange(_, spec), 416) => {
            let text =
                field(header::CONTENT_RANGE).transpose()?.ok_or("416 without Content-Range")?;
            let size: u64 = text
                .strip_prefix("bytes */")
                .and_then(|size| size.parse().ok())
                .ok_or_else(|| format!("416 with Content-Range {text:?}"))?;
            let fits = versions.of(key).iter().any(|v| {
                v.len == size && spec.resolve(size).is_none() && !spec.is_empty_suffix(size)
            });
            if !fits {
                return Err(format!("416 ({text}) for {} and no such version", spec.header()));
            }
            Ok(Verdict::Unsatisfiable)
        }
        (Read::IfNoneMatch(named), 304) => {
            let version = version()?;
            if version.etag != *named {
                return Err(format!("304 with ETag {} to If-None-Match: {named}", version.etag));
            }
            Ok(Verdict::NotModified)
        }
        (Read::IfMatch(_), 412) => Ok(Verdict::PreconditionFailed),
        (_, other) => Err(format!("status {other} to {}", read.kind())),
    }
}

fn whole(version: &Version, content_length: u64, body: &Bytes) -> Result<Verdict, String> {
    if content_length != version.len {
        return Err(format!("Content-Length {content_length} for {} bytes", version.len));
    }
    if !version.holds_at(0, body) {
        return Err(format!("the body is not the bytes of {}", version.etag));
    }
    Ok(Verdict::Served)
}

/// `bytes FIRST-LAST/SIZE`.
fn parse_content_range(text: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = text.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, size) = (first.parse().ok()?, last.parse().ok()?, size.parse().ok()?);
    (first <= last && last < size).then_some((first, last, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, fields: &[(&'static str, &str)]) -> (StatusCode, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.insert(*name, value.parse().unwrap());
        }
        (StatusCode::from_u16(status).unwrap(), headers)
    }

    fn model() -> (Versions, Version) {
        let versions = Versions::default();
        let version = Version { etag: "\"v1\"".into(), len: 100, seed: 7 };
        versions.add("k", version.clone());
        (versions, version)
    }

    #[test]
    fn a_window_of_the_version_at_its_offsets_is_served() {
        let (versions, version) = model();
        let bytes = version.bytes();
        let (status, headers) = answer(
            206,
            &[("etag", "\"v1\""), ("content-range", "bytes 10-19/100"), ("content-length", "10")],
        );
        let read = Read::Range(Spec::FromTo(10, 19));
        let body = Bytes::copy_from_slice(&bytes[10..20]);
        assert_eq!(
            check(&versions, "k", &read, status, &headers, Some(&body)),
            Ok(Verdict::Served)
        );
        // The same bytes advertised at other offsets are caught.
        let (status, headers) = answer(
            206,
            &[("etag", "\"v1\""), ("content-range", "bytes 11-20/100"), ("content-length", "10")],
        );
        let read = Read::Range(Spec::FromTo(11, 20));
        assert!(check(&versions, "k", &read, status, &headers, Some(&body)).is_err());
    }

    #[test]
    fn a_fragment_served_as_the_whole_object_is_caught() {
        let (versions, version) = model();
        let (status, headers) = answer(200, &[("etag", "\"v1\""), ("content-length", "50")]);
        let body = Bytes::copy_from_slice(&version.bytes()[..50]);
        assert!(check(&versions, "k", &Read::Whole, status, &headers, Some(&body)).is_err());
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        assert_eq!(Spec::FromTo(5, 500).resolve(100), Some((5, 99)));
        assert_eq!(Spec::From(100).resolve(100), None);
        assert_eq!(Spec::Suffix(500).resolve(100), Some((0, 99)));
        assert_eq!(Spec::Suffix(5).resolve(0), None);
        assert!(Spec::Suffix(5).is_empty_suffix(0));
    }

    #[test]
    fn an_if_range_answered_with_a_window_of_another_version_is_caught() {
        let (versions, version) = model();
        versions.add("k", Version { etag: "\"v2\"".into(), len: 100, seed: 8 });
        let (status, headers) = answer(
            206,
            &[("etag", "\"v1\""), ("content-range", "bytes 0-9/100"), ("content-length", "10")],
        );
        let body = Bytes::copy_from_slice(&version.bytes()[..10]);
        let read = Read::IfRange("\"v2\"".into(), Spec::FromTo(0, 9));
        assert!(check(&versions, "k", &read, status, &headers, Some(&body)).is_err());
    }
}
