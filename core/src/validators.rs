//! Validators of RFC 9110 §8.8: entity-tags (strong, weak, lists, `*`) with strong and weak
//! comparison (§8.8.3.2), and HTTP dates (§5.6.7).

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// An entity-tag (RFC 9110 §8.8.3): an opaque quoted string, possibly marked weak with `W/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityTag {
    /// True for a weak tag (`W/"..."`).
    pub weak: bool,
    /// The opaque characters between the quotes.
    pub opaque: String,
}

impl EntityTag {
    /// A strong tag with the given opaque characters; `None` if one of them is not allowed
    /// between the quotes (`etagc` of RFC 9110 §8.8.3: visible ASCII but `"`, or non-ASCII).
    pub fn strong(opaque: impl Into<String>) -> Option<EntityTag> {
        let opaque = opaque.into();
        opaque.chars().all(is_etagc).then_some(EntityTag { weak: false, opaque })
    }

    /// A weak tag with the given opaque characters; `None` as for [`EntityTag::strong`].
    pub fn weak(opaque: impl Into<String>) -> Option<EntityTag> {
        EntityTag::strong(opaque).map(|tag| EntityTag { weak: true, ..tag })
    }

    /// Parses one entity-tag, `"xyz"` or `W/"xyz"`, ignoring surrounding whitespace.
    ///
    /// The `W/` prefix is case-sensitive (RFC 9110 §8.8.3: `weak = %s"W/"`).
    pub fn parse(value: &str) -> Option<EntityTag> {
        let (tag, rest) = parse_one(value.trim_matches(is_ows))?;
        rest.is_empty().then_some(tag)
    }

    /// True if this tag is strong.
    pub fn is_strong(&self) -> bool {
        !self.weak
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both tags strong and their opaque parts equal.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque parts equal, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            f.write_str("W/")?;
        }
        write!(f, "\"{}\"", self.opaque)
    }
}

/// The value of `If-Match` or `If-None-Match` (RFC 9110 §13.1.1, §13.1.2): `*` or a list of
/// entity-tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtagList {
    /// `*`: any current representation.
    Any,
    /// One or more entity-tags, in the order given.
    Tags(Vec<EntityTag>),
}

impl EtagList {
    /// Parses `*` or `1#entity-tag`.
    ///
    /// Optional whitespace around commas and empty list elements are accepted (RFC 9110
    /// §5.6.1); `None` when the value holds no entity-tag, a malformed one, or `*` mixed with
    /// tags.
    pub fn parse(value: &str) -> Option<EtagList> {
        let value = value.trim_matches(is_ows);
        if value == "*" {
            return Some(EtagList::Any);
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches(|c| is_ows(c) || c == ',');
            if rest.is_empty() {
                break;
            }
            let (tag, after) = parse_one(rest)?;
            tags.push(tag);
            rest = after.trim_start_matches(is_ows);
            if !rest.is_empty() && !rest.starts_with(',') {
                return None;
            }
        }
        (!tags.is_empty()).then_some(EtagList::Tags(tags))
    }

    /// True if `tag` matches a member by strong comparison, or the list is `*` (If-Match,
    /// If-Range semantics).
    pub fn matches_strong(&self, tag: &EntityTag) -> bool {
        match self {
            EtagList::Any => true,
            EtagList::Tags(tags) => tags.iter().any(|t| t.strong_eq(tag)),
        }
    }

    /// True if `tag` matches a member by weak comparison, or the list is `*` (If-None-Match
    /// semantics).
    pub fn matches_weak(&self, tag: &EntityTag) -> bool {
        match self {
            EtagList::Any => true,
            EtagList::Tags(tags) => tags.iter().any(|t| t.weak_eq(tag)),
        }
    }
}

/// Parses an HTTP-date in any of the three formats a recipient must accept (RFC 9110 §5.6.7):
/// IMF-fixdate, the obsolete RFC 850 form and asctime; `None` for anything else.
///
/// An RFC 850 two-digit year is read as 1970–2069 (the core has no clock to apply the
/// "more than 50 years in the future" rule against). Dates before 1970 or after 9999 are
/// refused.
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    let time = httpdate::parse_http_date(value.trim_matches(is_ows)).ok()?;
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp::from_secs(since_epoch.as_secs()))
}

/// Formats an instant as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), dropping the
/// sub-second part; instants past the year 9999, which the format cannot carry, are written as
/// its last second.
pub fn format_http_date(at: Timestamp) -> String {
    // 253_402_300_799 is 9999-12-31T23:59:59Z, the last instant IMF-fixdate can express.
    let secs = at.as_secs().min(253_402_300_799);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

// OWS = *( SP / HTAB ), RFC 9110 §5.6.3.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

// etagc = %x21 / %x23-7E / obs-text, RFC 9110 §8.8.3; obs-text arrives here as non-ASCII chars.
fn is_etagc(c: char) -> bool {
    c == '\x21' || ('\x23'..='\x7e').contains(&c) || !c.is_ascii()
}

/// One entity-tag at the start of `s`, and what follows it.
fn parse_one(s: &str) -> Option<(EntityTag, &str)> {
    let (weak, s) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix('"')?;
    let close = s.find('"')?;
    let opaque = &s[..close];
    if !opaque.chars().all(is_etagc) {
        return None;
    }
    Some((EntityTag { weak, opaque: opaque.to_owned() }, &s[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> EntityTag {
        EntityTag::parse(s).expect("test tags are valid")
    }

    #[test]
    fn entity_tags_parse_and_print_back_the_same() {
        for (input, weak, opaque, printed) in [
            ("\"xyzzy\"", false, "xyzzy", "\"xyzzy\""),
            ("W/\"xyzzy\"", true, "xyzzy", "W/\"xyzzy\""),
            ("\"\"", false, "", "\"\""),
            ("  \"a-b\"\t", false, "a-b", "\"a-b\""),
        ] {
            let got = EntityTag::parse(input);
            assert_eq!(got, Some(EntityTag { weak, opaque: opaque.into() }), "{input:?}");
            assert_eq!(got.unwrap().to_string(), printed);
        }
    }

    #[test]
    fn malformed_entity_tags_are_refused() {
        for input in
            ["xyzzy", "\"xyzzy", "w/\"x\"", "W/x", "\"a\"b", "\"a\" \"b\"", "", "\"\u{7f}\""]
        {
            assert_eq!(EntityTag::parse(input), None, "{input:?}");
        }
        assert_eq!(EntityTag::strong("has\"quote"), None);
        assert_eq!(EntityTag::strong("ok").unwrap().to_string(), "\"ok\"");
        assert_eq!(EntityTag::weak("ok").unwrap().to_string(), "W/\"ok\"");
    }

    #[test]
    fn comparison_follows_the_table_of_rfc_9110_section_8_8_3_2() {
        // (first, second, strong comparison, weak comparison), the four rows of the RFC's table.
        for (a, b, strong, weak) in [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ] {
            assert_eq!(tag(a).strong_eq(&tag(b)), strong, "strong {a} {b}");
            assert_eq!(tag(a).weak_eq(&tag(b)), weak, "weak {a} {b}");
        }
    }

    #[test]
    fn lists_accept_star_whitespace_and_empty_elements() {
        assert_eq!(EtagList::parse(" * "), Some(EtagList::Any));
        assert_eq!(
            EtagList::parse("\"a\" ,W/\"b\",, \"c\""),
            Some(EtagList::Tags(vec![tag("\"a\""), tag("W/\"b\""), tag("\"c\"")]))
        );
        assert_eq!(EtagList::parse(", \"a\","), Some(EtagList::Tags(vec![tag("\"a\"")])));
        for bad in ["", " , ", "*, \"a\"", "\"a\" \"b\"", "a", "\"a\";"] {
            assert_eq!(EtagList::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lists_match_strongly_or_weakly() {
        let list = EtagList::parse("W/\"a\", \"b\"").unwrap();
        assert!(!list.matches_strong(&tag("\"a\"")));
        assert!(list.matches_weak(&tag("\"a\"")));
        assert!(list.matches_strong(&tag("\"b\"")));
        assert!(!list.matches_weak(&tag("\"c\"")));
        assert!(EtagList::Any.matches_strong(&tag("\"z\"")));
    }

    #[test]
    fn the_three_date_formats_of_rfc_9110_section_5_6_7_are_the_same_instant() {
        let expected = Some(Timestamp::from_secs(784_111_777));
        for input in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(parse_http_date(input), expected, "{input:?}");
        }
        for bad in
            ["", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 32 Nov 1994 08:49:37 GMT"]
        {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates_format_as_imf_fixdate_and_clamp_at_year_9999() {
        assert_eq!(
            format_http_date(Timestamp::from_millis(784_111_777_999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            format_http_date(Timestamp::from_millis(u64::MAX)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
