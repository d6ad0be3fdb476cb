//! Object metadata: what a tier stores beside an object's bytes and what every response about
//! that object is planned from, with the write-side policy that fills it (stored end-to-end
//! headers, SPEC §3, and the `Time-To-Live` header).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::validators::EntityTag;

/// Metadata of one revision of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Length of the object in bytes.
    pub size: u64,
    /// The strong entity-tag of this revision.
    pub etag: EntityTag,
    /// Last-Modified, at one-second resolution.
    pub last_modified: Timestamp,
    /// End-to-end headers stored with the object (lower-case names), returned on reads.
    pub headers: Vec<(String, String)>,
    /// When this revision expires; never served at or after this instant.
    pub expires: Option<Timestamp>,
}

impl ObjectMeta {
    /// True if this revision must no longer be served at `now` (SPEC §3: expired objects are
    /// never served).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|expires| now >= expires)
    }

    /// The stored value of header `name` (lower-case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether Last-Modified may be used as a strong validator (RFC 9110 §8.8.2.2), which
    /// decides whether a date in `If-Range` can ever hold.
    ///
    /// Never: a Last-Modified date is "implicitly weak unless it is possible to deduce that it
    /// is strong", and the cache cannot deduce it, since two writes of a key may land within
    /// one second and a writer may supply any Last-Modified. Every response carries a strong
    /// ETag, so a conforming client sends that in If-Range instead (RFC 9110 §13.1.5 forbids a
    /// date when the client has an entity-tag); a date If-Range gets the full object, which is
    /// always a correct answer.
    pub fn is_last_modified_strong(&self) -> bool {
        false
    }
}

/// Names (lower-case) of the request headers stored with an object on write and returned on
/// reads: representation metadata and caching directives that are end-to-end (RFC 9110 §6.5,
/// §8). Everything else is left out: hop-by-hop and transport fields (Connection,
/// Transfer-Encoding, Content-Length), preconditions, credentials, request-only fields (Host,
/// User-Agent, Accept), and the fields the core generates itself (ETag, Last-Modified).
pub const STORED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
    "expires",
];

/// True if a request header of this name is stored with the object on write (case-insensitive).
pub fn is_stored_header(name: &str) -> bool {
    STORED_HEADERS.iter().any(|stored| stored.eq_ignore_ascii_case(name))
}

/// The headers of a write request that are stored with the object: those passing
/// [`is_stored_header`], names lower-cased, values trimmed, a repeated field joined with `, `
/// (RFC 9110 §5.3), sorted by name so every host stores the same list.
pub fn select_stored_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if !is_stored_header(name) {
            continue;
        }
        let value = value.trim_matches([' ', '\t']);
        kept.entry(name.to_ascii_lowercase())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    kept.into_iter().collect()
}

/// Why a `Time-To-Live` header was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// The value was empty.
    #[error("time-to-live is empty")]
    Empty,
    /// Not a duration such as `90s`, `30m`, `1h` or `1h 30m`.
    #[error("time-to-live {0:?} is not a duration such as 90s, 30m or 1h")]
    Invalid(String),
    /// Shorter than one millisecond, so the object would expire as it is written.
    #[error("time-to-live {0:?} is shorter than one millisecond")]
    TooShort(String),
    /// Longer than the clock can count.
    #[error("time-to-live {0:?} is too long")]
    TooLong(String),
}

/// Parses a `Time-To-Live` write header into milliseconds.
///
/// Accepts humantime durations: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`, and the
/// long forms `sec`, `min`, `hours`, `days`...), several of them summed (`1h 30m`, `1h30m`). A
/// bare number without a unit is refused, as is anything shorter than a millisecond.
pub fn parse_ttl(value: &str) -> Result<u64, TtlError> {
    let trimmed = value.trim_matches([' ', '\t']);
    if trimmed.is_empty() {
        return Err(TtlError::Empty);
    }
    let duration: Duration = humantime::parse_duration(trimmed).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => TtlError::TooLong(trimmed.to_owned()),
        _ => TtlError::Invalid(trimmed.to_owned()),
    })?;
    let millis =
        u64::try_from(duration.as_millis()).map_err(|_| TtlError::TooLong(trimmed.to_owned()))?;
    if millis == 0 {
        return Err(TtlError::TooShort(trimmed.to_owned()));
    }
    Ok(millis)
}

/// When an object written at `now` expires: after the requested TTL capped by the tier's
/// maximum, or after the maximum when none was requested; `None` (never) when neither is set.
pub fn expires_at(
    now: Timestamp,
    ttl_millis: Option<u64>,
    max_ttl_millis: Option<u64>,
) -> Option<Timestamp> {
    let ttl = match (ttl_millis, max_ttl_millis) {
        (Some(ttl), Some(max)) => ttl.min(max),
        (Some(ttl), None) => ttl,
        (None, Some(max)) => max,
        (None, None) => return None,
    };
    Some(now.saturating_add_millis(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(expires: Option<u64>) -> ObjectMeta {
        ObjectMeta {
            size: 1,
            etag: EntityTag::strong("x").unwrap(),
            last_modified: Timestamp::from_secs(1),
            headers: vec![("content-type".into(), "text/plain".into())],
            expires: expires.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn an_object_expires_at_its_expiry_instant_and_not_before() {
        assert!(!meta(None).is_expired(Timestamp::from_millis(u64::MAX)));
        assert!(!meta(Some(1000)).is_expired(Timestamp::from_millis(999)));
        assert!(meta(Some(1000)).is_expired(Timestamp::from_millis(1000)));
        assert!(meta(Some(1000)).is_expired(Timestamp::from_millis(1001)));
    }

    #[test]
    fn stored_headers_are_looked_up_by_lower_case_name() {
        assert_eq!(meta(None).header("content-type"), Some("text/plain"));
        assert_eq!(meta(None).header("content-encoding"), None);
    }

    #[test]
    fn metadata_round_trips_through_serde() {
        let original = meta(Some(5));
        let json = serde_json::to_string(&original).unwrap();
        assert_eq!(serde_json::from_str::<ObjectMeta>(&json).unwrap(), original);
    }

    #[test]
    fn only_end_to_end_representation_headers_are_stored() {
        let request = [
            ("Content-Type", "application/octet-stream"),
            ("content-encoding", " gzip "),
            ("Content-Disposition", "attachment; filename=\"a.bin\""),
            ("Cache-Control", "max-age=60"),
            ("cache-control", "public"),
            ("Content-Language", "en"),
            ("Expires", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Content-Length", "10"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive"),
            ("Authorization", "Bearer w"),
            ("If-Match", "\"a\""),
            ("If-None-Match", "*"),
            ("ETag", "\"a\""),
            ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Time-To-Live", "1h"),
            ("Host", "localhost"),
            ("User-Agent", "curl"),
            ("Range", "bytes=0-1"),
        ];
        let stored = select_stored_headers(request);
        let expected: Vec<(String, String)> = [
            ("cache-control", "max-age=60, public"),
            ("content-disposition", "attachment; filename=\"a.bin\""),
            ("content-encoding", "gzip"),
            ("content-language", "en"),
            ("content-type", "application/octet-stream"),
            ("expires", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn ttls_take_humantime_units_and_refuse_garbage() {
        for (input, expect) in [
            ("90s", Ok(90_000)),
            ("30m", Ok(1_800_000)),
            ("1h", Ok(3_600_000)),
            (" 1h 30m ", Ok(5_400_000)),
            ("1h30m", Ok(5_400_000)),
            ("250ms", Ok(250)),
            ("2days", Ok(172_800_000)),
            ("", Err(TtlError::Empty)),
            ("90", Err(TtlError::Invalid("90".into()))),
            ("soon", Err(TtlError::Invalid("soon".into()))),
            ("-1h", Err(TtlError::Invalid("-1h".into()))),
            ("1 parsec", Err(TtlError::Invalid("1 parsec".into()))),
            ("0s", Err(TtlError::TooShort("0s".into()))),
            ("10us", Err(TtlError::TooShort("10us".into()))),
            ("99999999999999999999999y", Err(TtlError::TooLong("99999999999999999999999y".into()))),
        ] {
            assert_eq!(parse_ttl(input), expect, "{input:?}");
        }
    }

    #[test]
    fn expiry_is_the_requested_ttl_capped_by_the_tier_maximum() {
        let now = Timestamp::from_millis(1_000);
        assert_eq!(expires_at(now, Some(10), Some(100)), Some(Timestamp::from_millis(1_010)));
        assert_eq!(expires_at(now, Some(1_000), Some(100)), Some(Timestamp::from_millis(1_100)));
        assert_eq!(expires_at(now, None, Some(100)), Some(Timestamp::from_millis(1_100)));
        assert_eq!(expires_at(now, Some(10), None), Some(Timestamp::from_millis(1_010)));
        assert_eq!(expires_at(now, None, None), None);
    }
}
