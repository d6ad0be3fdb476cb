//! Parts over HTTP: ranged GETs (RFC 9110 §14.2) pinned to one strong entity-tag by `If-Match`
//! (§13.1.1) and `If-Range` (§13.1.5), for any server that honours Range and If-Range.
//!
//! Both fields are sent because servers differ in which they honour: a server that checks
//! `If-Match` answers 412 when the revision changed, one that checks only `If-Range` answers 200
//! with the whole new revision, and every 206 is checked to name the pinned entity-tag and size
//! in case a server honours neither.

use std::io;
use std::ops::Range;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use crate::{BodyStream, PartError, PartSource};

/// An object on an HTTP server, and how to ask for it.
#[derive(Clone, Debug)]
pub struct Target {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl Target {
    /// The object at `url`, asked for with `client`.
    pub fn new(client: reqwest::Client, url: impl Into<String>) -> Target {
        Target { client, url: url.into(), headers: HeaderMap::new() }
    }

    /// Sends `headers` (such as `Authorization`) with every request.
    pub fn with_headers(mut self, headers: HeaderMap) -> Target {
        self.headers = headers;
        self
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A GET of the `wanted` bytes, pinned to the strong entity-tag `pin` (as sent by the
    /// server, quotes included) when given.
    pub fn get(&self, wanted: Wanted, pin: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self.client.get(&self.url).headers(self.headers.clone());
        match wanted {
            Wanted::Whole => {}
            Wanted::From(start) => {
                request = request.header(header::RANGE, range_value(start, None))
            }
            Wanted::Window(window) => {
                request =
                    request.header(header::RANGE, range_value(window.start, Some(window.end)));
            }
        }
        if let Some(pin) = pin {
            request = request.header(header::IF_MATCH, pin).header(header::IF_RANGE, pin);
        }
        request
    }
}

/// The bytes a GET asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The whole object, without a Range field: what a server that ignores ranges also answers.
    Whole,
    /// From a byte to the end (`bytes=S-`), which a server answers with a 206 that names the size.
    From(u64),
    /// The bytes `[start, end)`.
    Window(Range<u64>),
}

/// The parts of one revision on an HTTP server.
pub struct HttpParts {
    target: Target,
    etag: String,
    size: u64,
}

impl HttpParts {
    /// The revision of `target` tagged with the strong entity-tag `etag` (quotes included),
    /// `size` bytes long.
    pub fn new(target: Target, etag: String, size: u64) -> HttpParts {
        HttpParts { target, etag, size }
    }
}

#[async_trait::async_trait]
impl PartSource for HttpParts {
    async fn open(&self, window: Range<u64>) -> Result<BodyStream, PartError> {
        let response = self
            .target
            .get(Wanted::Window(window.clone()), Some(&self.etag))
            .send()
            .await
            .map_err(|e| PartError::Failed(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers();
        match status {
            StatusCode::PARTIAL_CONTENT => {}
            // 200: If-Range failed, so this is the whole of another revision. 412: If-Match
            // failed. 404, 410: gone. 416: the object shrank.
            StatusCode::OK
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(PartError::Changed(format!("a ranged GET was answered {status}")));
            }
            _ => return Err(PartError::Failed(format!("a ranged GET was answered {status}"))),
        }
        let etag = strong_etag(headers);
        if etag.as_deref() != Some(self.etag.as_str()) {
            let named = etag.as_deref().unwrap_or("no strong entity-tag");
            return Err(PartError::Changed(format!("a part names {named}, not {}", self.etag)));
        }
        let range = headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
        match range.and_then(parse_content_range) {
            Some((_, size)) if size != self.size => Err(PartError::Changed(format!(
                "a part says the object has {size} bytes, not {}",
                self.size
            ))),
            Some((got, _)) if got == window => Ok(body(response)),
            _ => Err(PartError::Failed(format!(
                "asked for bytes {}-{}, the answer says {range:?}",
                window.start,
                window.end - 1
            ))),
        }
    }
}

/// The body of `response` as a [`BodyStream`].
pub fn body(response: reqwest::Response) -> BodyStream {
    Box::pin(
        response.bytes_stream().map(|item| item.map_err(|e| io::Error::other(error_chain(&e)))),
    )
}

/// `bytes=S-E` for the bytes from `start` to `end` (exclusive), `bytes=S-` without an end.
pub fn range_value(start: u64, end: Option<u64>) -> String {
    match end {
        Some(end) => format!("bytes={start}-{}", end.max(start + 1) - 1),
        None => format!("bytes={start}-"),
    }
}

/// `bytes S-E/SIZE` (RFC 9110 §14.4) as the window `[S, E + 1)` and SIZE.
pub fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let size: u64 = size.trim().parse().ok()?;
    let end = last.checked_add(1)?;
    (first < end && end <= size).then_some((first..end, size))
}

/// The answer's entity-tag as sent (quotes included) when it is strong (RFC 9110 §8.8.3): only a
/// strong one may pin ranges (§13.1.5).
pub fn strong_etag(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::ETAG)?.to_str().ok()?.trim();
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    (quoted && !value[1..value.len() - 1].contains('"')).then(|| value.to_owned())
}

/// An error and its causes on one line: reqwest's own message rarely says what failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn windows_become_range_values() {
        assert_eq!(range_value(0, Some(10)), "bytes=0-9");
        assert_eq!(range_value(5, None), "bytes=5-");
    }

    #[test]
    fn content_range_is_read_back_as_a_window() {
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5..10, 100)));
        assert_eq!(parse_content_range("bytes 5-200/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
    }

    #[test]
    fn only_a_strong_entity_tag_pins() {
        let tag = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ETAG, HeaderValue::from_static(value));
            strong_etag(&headers)
        };
        assert_eq!(tag("\"abc\"").as_deref(), Some("\"abc\""));
        assert_eq!(tag("W/\"abc\""), None);
        assert_eq!(tag("abc"), None);
        assert_eq!(strong_etag(&HeaderMap::new()), None);
    }
}
