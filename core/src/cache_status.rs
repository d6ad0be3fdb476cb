//! The RFC 9211 `Cache-Status` header: one member per tier consulted, deepest first.
//!
//! Each tier is a cache in the chain of RFC 9211 §2: the tier nearest to the origin (the
//! deepest one consulted) comes first and tier 0, nearest to the client, last. What a tier did
//! with the request becomes the member's parameters:
//!
//! | what the tier did                                    | parameters                     |
//! | ---------------------------------------------------- | ------------------------------ |
//! | answered the request (200, 206, 304, 412, 416)       | `hit`                          |
//! | held no copy                                         | `fwd=uri-miss`                 |
//! | held an expired copy                                 | `fwd=stale`                    |
//! | held a copy the request's validators did not accept  | `fwd=request`                  |
//! | failed (I/O, network)                                | `fwd=miss; detail=error`       |
//! | was asked to change (write, delete, invalidate)      | `fwd=method`                   |
//! | was left alone (a request refused before any tier was asked, the authoritative tier of an invalidation) | `fwd=bypass` |
//!
//! A forwarding member carries `fwd-status` (§2.3) when what its forwarded request got differs
//! from the response's status (absent, it defaults to that status): a tier deeper than the one
//! whose answer stood got 404 from below it, or 502 when a tier below it failed. A failed tier
//! with nothing deeper consulted (an unreachable upstream) received no response and carries
//! none. Tier 0
//! carries `stored` when a copy into it was started for this response (§2.5), and a `detail`
//! says `error` for a failed tier, or why tier 0 got no copy (`backfill-deduplicated`,
//! `backfill-skipped`). A write that succeeded is `stored` in the authoritative tier, which
//! committed it (a nearer tier may have been left out).
//!
//! `fwd=method` says the method is not one a cache answers from a stored copy (§2.2), which is
//! what a write, a delete or an invalidation is to each tier it asks to change.

use std::fmt;

use http::StatusCode;

use crate::tier::TierIdx;

/// What one tier did with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The tier's copy answered the request.
    Hit,
    /// The tier had no copy.
    Missed,
    /// The tier's copy had expired and was not used.
    Expired,
    /// The tier held a revision the request's validators did not accept (a failed If-Match or
    /// If-Unmodified-Since, or an If-Range naming another revision).
    NotAccepted,
    /// The tier failed.
    Failed,
    /// The tier was asked to change, not to answer from a stored copy (a write, a delete, an
    /// invalidation).
    Method,
    /// The tier was not asked at all: the request was refused before any tier was, or an
    /// invalidation leaves the authoritative tier alone.
    Bypassed,
}

impl Lookup {
    /// The metric label of `rangecache_tier_reads_total{result}`: `hit`, `miss` or `error`;
    /// `None` when the tier was not read.
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            Lookup::Hit => Some("hit"),
            Lookup::Missed | Lookup::Expired | Lookup::NotAccepted => Some("miss"),
            Lookup::Failed => Some("error"),
            Lookup::Method | Lookup::Bypassed => None,
        }
    }
}

/// What a response stored into a tier: the copy into tier 0 a read asked for, or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyNote {
    /// Nothing (served from tier 0, no bytes were read, or the tier was not written).
    None,
    /// A copy was started, or a write committed: `stored`.
    Started,
    /// A copy of the same key was already in flight.
    Deduplicated,
    /// The backfill manager skipped the copy (limit reached, key changing, shutdown).
    Skipped,
}

/// One member of `Cache-Status`: a tier and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Which tier.
    pub tier: TierIdx,
    /// The tier's name from the configuration.
    pub name: String,
    /// What the tier did.
    pub lookup: Lookup,
    /// `fwd-status`: what the tier's forwarded request got, when it differs from the response.
    pub fwd_status: Option<StatusCode>,
    /// The copy into this tier (tier 0 only).
    pub copy: CopyNote,
}

/// The `Cache-Status` of one response; `Display` renders the field value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Members in the order the tiers were consulted (tier 0 first); rendered in reverse.
    pub members: Vec<Member>,
}

impl CacheStatus {
    /// Every tier of `names` (nearest first) left alone: the field of an answer refused before
    /// any tier was asked (a malformed request, a missing token, shutdown).
    pub fn bypassed(names: &[impl AsRef<str>]) -> CacheStatus {
        let members = names
            .iter()
            .enumerate()
            .map(|(idx, name)| Member {
                tier: TierIdx::new(idx),
                name: name.as_ref().to_owned(),
                lookup: Lookup::Bypassed,
                fwd_status: None,
                copy: CopyNote::None,
            })
            .collect();
        CacheStatus { members }
    }

    /// The member of `tier`, if it was consulted.
    pub fn member(&self, tier: TierIdx) -> Option<&Member> {
        self.members.iter().find(|m| m.tier == tier)
    }

    /// The field value, what `Display` writes, built straight into one string: every answer
    /// about an object carries one.
    pub fn to_field_value(&self) -> String {
        let mut value = String::with_capacity(32 * self.members.len());
        self.write_to(&mut value).expect("writing into a String cannot fail");
        value
    }

    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        // RFC 9211 §2: the member of the cache nearest the origin comes first.
        for (i, member) in self.members.iter().rev().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            member.write_to(out)?;
        }
        Ok(())
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Member {
    fn write_to(&self, f: &mut impl fmt::Write) -> fmt::Result {
        write_identifier(f, &self.name)?;
        match self.lookup {
            Lookup::Hit => f.write_str("; hit")?,
            Lookup::Missed => f.write_str("; fwd=uri-miss")?,
            Lookup::Expired => f.write_str("; fwd=stale")?,
            Lookup::NotAccepted => f.write_str("; fwd=request")?,
            Lookup::Failed => f.write_str("; fwd=miss")?,
            Lookup::Method => f.write_str("; fwd=method")?,
            Lookup::Bypassed => f.write_str("; fwd=bypass")?,
        }
        if let Some(status) = self.fwd_status {
            f.write_str("; fwd-status=")?;
            f.write_str(status.as_str())?;
        }
        match self.copy {
            CopyNote::None => {}
            CopyNote::Started => f.write_str("; stored")?,
            CopyNote::Deduplicated | CopyNote::Skipped => {}
        }
        // One `detail` per member (RFC 9211 §2.8): a failure says more than a copy's fate.
        let detail = match (self.lookup, self.copy) {
            (Lookup::Failed, _) => Some("error"),
            (_, CopyNote::Deduplicated) => Some("backfill-deduplicated"),
            (_, CopyNote::Skipped) => Some("backfill-skipped"),
            (_, CopyNote::None | CopyNote::Started) => None,
        };
        if let Some(detail) = detail {
            f.write_str("; detail=")?;
            f.write_str(detail)?;
        }
        Ok(())
    }
}

/// A cache identifier is an sf-token when it can be one, else an sf-string (RFC 9211 §2,
/// RFC 8941 §3.3.3–3.3.4); tier names from the configuration are usually tokens.
fn write_identifier(f: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if is_sf_token(name) {
        return f.write_str(name);
    }
    f.write_char('"')?;
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            // sf-string allows only printable ASCII; anything else is dropped, not escaped.
            ' '..='~' => f.write_char(c)?,
            _ => {}
        }
    }
    f.write_char('"')
}

// sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" ), RFC 8941 §3.3.4.
fn is_sf_token(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(tier: usize, name: &str, lookup: Lookup) -> Member {
        Member {
            tier: TierIdx::new(tier),
            name: name.into(),
            lookup,
            fwd_status: None,
            copy: CopyNote::None,
        }
    }

    #[test]
    fn members_are_rendered_deepest_first() {
        let mut memory = member(0, "memory", Lookup::Missed);
        memory.copy = CopyNote::Started;
        let status = CacheStatus { members: vec![memory, member(1, "disk", Lookup::Hit)] };
        assert_eq!(status.to_string(), "disk; hit, memory; fwd=uri-miss; stored");
        assert_eq!(status.to_field_value(), status.to_string());
    }

    #[test]
    fn every_lookup_has_its_parameters() {
        let mut failed = member(1, "disk", Lookup::Failed);
        failed.fwd_status = Some(StatusCode::OK);
        let mut memory = member(0, "memory", Lookup::NotAccepted);
        memory.fwd_status = Some(StatusCode::OK);
        memory.copy = CopyNote::Deduplicated;
        let status = CacheStatus {
            members: vec![
                memory,
                failed,
                member(2, "s3", Lookup::Hit),
                member(3, "x", Lookup::Expired),
            ],
        };
        assert_eq!(
            status.to_string(),
            "x; fwd=stale, s3; hit, disk; fwd=miss; fwd-status=200; detail=error, \
             memory; fwd=request; fwd-status=200; detail=backfill-deduplicated"
        );
    }

    #[test]
    fn a_name_that_is_not_a_token_is_a_quoted_string() {
        let status = CacheStatus { members: vec![member(0, "my \"fast\" tier", Lookup::Hit)] };
        assert_eq!(status.to_string(), r#""my \"fast\" tier"; hit"#);
        let status = CacheStatus { members: vec![member(0, "0mem", Lookup::Missed)] };
        assert_eq!(status.to_string(), r#""0mem"; fwd=uri-miss"#);
    }

    #[test]
    fn metric_labels_are_hit_miss_or_error() {
        assert_eq!(Lookup::Hit.metric_label(), Some("hit"));
        assert_eq!(Lookup::NotAccepted.metric_label(), Some("miss"));
        assert_eq!(Lookup::Expired.metric_label(), Some("miss"));
        assert_eq!(Lookup::Failed.metric_label(), Some("error"));
        assert_eq!(Lookup::Method.metric_label(), None, "a write reads nothing");
        assert_eq!(Lookup::Bypassed.metric_label(), None);
    }

    #[test]
    fn a_refused_request_bypasses_every_tier_deepest_first() {
        let status = CacheStatus::bypassed(&["memory", "disk"]);
        assert_eq!(status.to_string(), "disk; fwd=bypass, memory; fwd=bypass");
    }
}
