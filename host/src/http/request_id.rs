//! Request ids: the client's `X-Request-Id` when it sends a usable one, else one made here. The
//! id goes back on the response and into the access line, so a client, a proxy and the server's
//! log can name the same request.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The field that carries the id, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client; a longer one is replaced, so a client cannot make every log
/// line carry kilobytes.
const MAX_CLIENT_ID_LEN: usize = 128;

/// Makes ids from a prefix drawn once per process and a counter: unique across restarts and
/// servers without drawing a random number, or formatting one, per request.
pub struct RequestIds {
    /// 16 hex digits and a dash.
    prefix: [u8; 17],
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> RequestIds {
        let mut prefix = [b'-'; 17];
        let hex = format!("{:016x}", fastrand::u64(..));
        prefix[..16].copy_from_slice(hex.as_bytes());
        RequestIds { prefix, next: AtomicU64::new(1) }
    }
}

impl RequestIds {
    /// The id of a request with `headers`: its `X-Request-Id` when that is 1 to 128 visible
    /// ASCII characters, else a new one such as `3f9c0a1b2c3d4e5f-42`.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(X_REQUEST_ID) {
            Some(id) if is_usable(id) => id.clone(),
            _ => self.generate(),
        }
    }

    fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        let mut id = Id { bytes: [0; 37], len: 17 + digits.len() };
        id.bytes[..17].copy_from_slice(&self.prefix);
        id.bytes[17..id.len].copy_from_slice(digits);
        // Owned by a refcounted `Bytes` from the start, so the access line's copy of the id is a
        // count, not a second allocation (a `Bytes` made from a `Vec` allocates again when first
        // cloned).
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
            .expect("hex digits, a dash and decimal digits make a valid field value")
    }
}

/// A generated id: 16 hex digits, a dash and up to 20 decimal digits.
struct Id {
    bytes: [u8; 37],
    len: usize,
}

impl AsRef<[u8]> for Id {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Visible ASCII only: the id is written into log lines, where spaces, quotes of other scripts
/// or control bytes would make them ambiguous.
fn is_usable(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    (1..=MAX_CLIENT_ID_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(value: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        }
        RequestIds::default().for_request(&headers).to_str().unwrap().to_owned()
    }

    #[test]
    fn a_clients_id_is_kept_when_usable_and_replaced_otherwise() {
        assert_eq!(id_for(Some("abc-123")), "abc-123");
        for unusable in [None, Some(""), Some("has space"), Some(&"x".repeat(129))] {
            let id = id_for(unusable);
            let (prefix, counter) = id.split_once('-').expect("prefix-counter");
            assert_eq!(prefix.len(), 16, "{id}");
            assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert_eq!(counter, "1", "{id}");
        }
    }

    #[test]
    fn generated_ids_differ_within_a_process() {
        let ids = RequestIds::default();
        let headers = HeaderMap::new();
        let (a, b) = (ids.for_request(&headers), ids.for_request(&headers));
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..17], b.as_bytes()[..17], "one prefix per process");
    }
}
