//! Validators of RFC 9110 §8.8: entity-tags (strong, weak, lists, `*`) with strong and weak
//! comparison (§8.8.3.2), and HTTP dates (§5.6.7).

use std::fmt;

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
        opaque.bytes().all(is_etagc).then_some(EntityTag { weak: false, opaque })
    }

    /// A weak tag with the given opaque characters; `None` as for [`EntityTag::strong`].
    pub fn weak(opaque: impl Into<String>) -> Option<EntityTag> {
        EntityTag::strong(opaque).map(|tag| EntityTag { weak: true, ..tag })
    }

    /// Parses one entity-tag, `"xyz"` or `W/"xyz"`, ignoring surrounding whitespace.
    ///
    /// The `W/` prefix is case-sensitive (RFC 9110 §8.8.3: `weak = %s"W/"`).
    pub fn parse(value: &str) -> Option<EntityTag> {
        let (weak, opaque, rest) = parse_one(value.trim_matches(is_ows))?;
        rest.is_empty().then(|| EntityTag { weak, opaque: opaque.to_owned() })
    }

    /// True if this tag is strong.
    pub fn is_strong(&self) -> bool {
        !self.weak
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both tags strong and their opaque parts equal.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// True if `value` is exactly one entity-tag equal to this one by strong comparison: what
    /// `EntityTag::parse(value)` then [`EntityTag::strong_eq`] say, without allocating. (The
    /// characters are still checked: a tag read back from a store was not necessarily parsed.)
    pub fn strong_eq_value(&self, value: &str) -> bool {
        let value = value.trim_matches(is_ows);
        !self.weak
            && value.len() == self.opaque.len() + 2
            && value.starts_with('"')
            && value.ends_with('"')
            && value[1..value.len() - 1] == *self.opaque
            && self.opaque.bytes().all(is_etagc)
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque parts equal, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }

    /// The tag as a field value (`"xyz"` or `W/"xyz"`), what `Display` writes, built in one
    /// allocation of the exact size: every answer about an object carries one.
    pub fn to_field_value(&self) -> String {
        let mut value = String::with_capacity(4 + self.opaque.len());
        self.write_field_value(&mut value);
        value
    }

    /// Appends the tag as a field value to `out`.
    pub fn write_field_value(&self, out: &mut String) {
        out.reserve(4 + self.opaque.len());
        out.push_str(if self.weak { "W/\"" } else { "\"" });
        out.push_str(&self.opaque);
        out.push('"');
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
        let mut tags = Vec::new();
        let shape = walk_list(value, |weak, opaque| {
            tags.push(EntityTag { weak, opaque: opaque.to_owned() });
        })?;
        Some(match shape {
            ListShape::Any => EtagList::Any,
            ListShape::Tags => EtagList::Tags(tags),
        })
    }

    /// True if `value` parses as a list that `tag` matches by strong comparison, or is `*`:
    /// what `EtagList::parse(value)` then [`EtagList::matches_strong`] say, without
    /// allocating.
    pub fn value_matches_strong(value: &str, tag: &EntityTag) -> bool {
        let mut matched = false;
        let shape = walk_list(value, |weak, opaque| {
            matched |= !weak && !tag.weak && opaque == tag.opaque;
        });
        shape.is_some_and(|shape| shape == ListShape::Any || matched)
    }

    /// True if `value` parses as a list that `tag` matches by weak comparison, or is `*`: what
    /// `EtagList::parse(value)` then [`EtagList::matches_weak`] say, without allocating.
    pub fn value_matches_weak(value: &str, tag: &EntityTag) -> bool {
        let mut matched = false;
        let shape = walk_list(value, |_, opaque| matched |= opaque == tag.opaque);
        shape.is_some_and(|shape| shape == ListShape::Any || matched)
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
/// "more than 50 years in the future" rule against). Dates before 1970 or after 9999, days
/// their month does not have and a day of the week that is not the date's are refused.
///
/// Accepts exactly what the `httpdate` crate accepts (a test holds the two together), parsed
/// here as bytes: that crate builds a `SystemTime` and checks it by formatting it back, which
/// alone cost the wasm module several kilobytes.
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    let value = value.trim_matches(is_ows);
    if !value.is_ascii() {
        return None;
    }
    let s = trim_whitespace(value.as_bytes());
    let date =
        parse_imf_fixdate(s).or_else(|| parse_rfc850_date(s)).or_else(|| parse_asctime(s))?;
    date.timestamp()
}

/// The parts of an HTTP-date as written, before they are checked against each other.
struct DateParts {
    year: u64,
    /// 1–12.
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    /// 0 (Monday) to 6 (Sunday).
    weekday: u64,
}

impl DateParts {
    /// The instant, if the date exists, lies in 1970–9999 and falls on the weekday written.
    fn timestamp(&self) -> Option<Timestamp> {
        let in_range = self.second < 60
            && self.minute < 60
            && self.hour < 24
            && (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && (1970..=9999).contains(&self.year);
        if !in_range {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        // A day its month does not have lands in the next month; 1970-01-01 was a Thursday.
        let exists = civil_from_days(days) == (self.year, self.month, self.day);
        if !exists || (days + 3) % 7 != self.weekday {
            return None;
        }
        Some(Timestamp::from_secs(
            days * 86_400 + self.hour * 3_600 + self.minute * 60 + self.second,
        ))
    }
}

const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const DAY_NAMES: [&[u8]; 7] =
    [b"Monday", b"Tuesday", b"Wednesday", b"Thursday", b"Friday", b"Saturday", b"Sunday"];

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(s: &[u8]) -> Option<DateParts> {
    if s.len() != 29 || &s[3..5] != b", " || s[7] != b' ' || s[11] != b' ' || &s[25..] != b" GMT" {
        return None;
    }
    if s[16] != b' ' {
        return None;
    }
    let (hour, minute, second) = time_of_day(&s[17..25])?;
    Some(DateParts {
        year: digits(&s[12..16])?,
        month: month(&s[8..11])?,
        day: digits(&s[5..7])?,
        hour,
        minute,
        second,
        weekday: short_weekday(&s[..3])?,
    })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850_date(s: &[u8]) -> Option<DateParts> {
    let weekday = DAY_NAMES.iter().position(|name| s.starts_with(name))?;
    let s = s[DAY_NAMES[weekday].len()..].strip_prefix(b", ")?;
    if s.len() != 22 || s[2] != b'-' || s[6] != b'-' || &s[18..] != b" GMT" {
        return None;
    }
    // No separator is required between the year and the time, as `httpdate` requires none.
    let (hour, minute, second) = time_of_day(&s[10..18])?;
    let short_year = digits(&s[7..9])?;
    Some(DateParts {
        year: if short_year < 70 { 2000 + short_year } else { 1900 + short_year },
        month: month(&s[3..6])?,
        day: digits(&s[..2])?,
        hour,
        minute,
        second,
        weekday: weekday as u64,
    })
}

/// `Sun Nov  6 08:49:37 1994`
fn parse_asctime(s: &[u8]) -> Option<DateParts> {
    if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
        return None;
    }
    let (hour, minute, second) = time_of_day(&s[11..19])?;
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => digits(&s[8..10])?,
    };
    Some(DateParts {
        year: digits(&s[20..24])?,
        month: month(&s[4..7])?,
        day,
        hour,
        minute,
        second,
        weekday: short_weekday(&s[..3])?,
    })
}

/// `HH:MM:SS` as (hour, minute, second).
fn time_of_day(s: &[u8]) -> Option<(u64, u64, u64)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    Some((digits(&s[..2])?, digits(&s[3..5])?, digits(&s[6..])?))
}

/// ASCII digits as a number; `None` if any byte is not one.
fn digits(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

fn month(s: &[u8]) -> Option<u64> {
    MONTH_NAMES.iter().position(|name| s == *name).map(|i| i as u64 + 1)
}

fn short_weekday(s: &[u8]) -> Option<u64> {
    DAY_NAMES.iter().position(|name| s == &name[..3]).map(|i| i as u64)
}

/// `s` without the whitespace `str::trim` removes from an ASCII string (vertical tab
/// included, which `trim_ascii` keeps).
fn trim_whitespace(mut s: &[u8]) -> &[u8] {
    let is_space = |b: &u8| b.is_ascii_whitespace() || *b == 0x0b;
    while let [first, rest @ ..] = s
        && is_space(first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_space(last)
    {
        s = rest;
    }
    s
}

/// Formats an instant as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), dropping the
/// sub-second part; instants past the year 9999, which the format cannot carry, are written as
/// its last second.
///
/// Written here rather than through `httpdate` (which parses): every answer about an object
/// carries a date, and formatting it through `fmt` cost more than planning the answer.
pub fn format_http_date(at: Timestamp) -> String {
    String::from_utf8(imf_fixdate(at).to_vec()).expect("an IMF-fixdate is ASCII")
}

/// Appends `at` as an IMF-fixdate to `out` (see [`format_http_date`]).
pub fn write_http_date(out: &mut String, at: Timestamp) {
    out.push_str(std::str::from_utf8(&imf_fixdate(at)).expect("an IMF-fixdate is ASCII"));
}

/// The bytes of `at` as an IMF-fixdate (see [`format_http_date`]).
fn imf_fixdate(at: Timestamp) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // 253_402_300_799 is 9999-12-31T23:59:59Z, the last instant IMF-fixdate can express.
    let secs = at.as_secs().min(253_402_300_799);
    let days = secs / 86_400;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let two = |n: u64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    let mut buf = [0u8; 29];
    // The epoch, day 0, was a Thursday.
    buf[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    buf[3..5].copy_from_slice(b", ");
    buf[5..7].copy_from_slice(&two(day));
    buf[7] = b' ';
    buf[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    buf[11] = b' ';
    buf[12..14].copy_from_slice(&two(year / 100));
    buf[14..16].copy_from_slice(&two(year % 100));
    buf[16] = b' ';
    buf[17..19].copy_from_slice(&two(second_of_day / 3600));
    buf[19] = b':';
    buf[20..22].copy_from_slice(&two(second_of_day / 60 % 60));
    buf[22] = b':';
    buf[23..25].copy_from_slice(&two(second_of_day % 60));
    buf[25..].copy_from_slice(b" GMT");
    buf
}

/// Days since 1970-01-01 of the proleptic Gregorian `year` (1970 or later), `month` (1–12) and
/// `day`, by Howard Hinnant's `days_from_civil`; a day past the month's end counts on into the
/// next month.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Years start in March, so the leap day is the last day of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of `days` since 1970-01-01, by Howard
/// Hinnant's `civil_from_days` (eras of 400 years, years starting in March).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shifted to 0000-03-01, the start of an era, so every quantity stays unsigned.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// OWS = *( SP / HTAB ), RFC 9110 §5.6.3.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

// etagc = %x21 / %x23-7E / obs-text, RFC 9110 §8.8.3. Checked byte by byte: obs-text arrives
// here as the bytes of non-ASCII characters, every one of them 0x80 or above.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// One entity-tag at the start of `s`: its weakness, its opaque characters and what follows.
fn parse_one(s: &str) -> Option<(bool, &str, &str)> {
    let (weak, s) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix('"')?;
    let close = s.bytes().position(|b| b == b'"')?;
    let opaque = &s[..close];
    if !opaque.bytes().all(is_etagc) {
        return None;
    }
    Some((weak, opaque, &s[close + 1..]))
}

/// What a valid `If-Match` or `If-None-Match` value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListShape {
    Any,
    Tags,
}

/// Walks `*` or `1#entity-tag`, handing each tag's weakness and opaque characters to `visit`
/// in order; `None` when the value is not a valid list (see [`EtagList::parse`]), in which case
/// `visit` may have seen the tags before the fault.
fn walk_list<'a>(value: &'a str, mut visit: impl FnMut(bool, &'a str)) -> Option<ListShape> {
    let value = value.trim_matches(is_ows);
    if value == "*" {
        return Some(ListShape::Any);
    }
    let mut any_tag = false;
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c| is_ows(c) || c == ',');
        if rest.is_empty() {
            break;
        }
        let (weak, opaque, after) = parse_one(rest)?;
        visit(weak, opaque);
        any_tag = true;
        rest = after.trim_start_matches(is_ows);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    any_tag.then_some(ListShape::Tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> EntityTag {
        EntityTag::parse(s).expect("test tags are valid")
    }

    /// What `httpdate` makes of `value`, trimmed of OWS as `parse_http_date` trims it.
    fn httpdate_parse(value: &str) -> Option<Timestamp> {
        let time = httpdate::parse_http_date(value.trim_matches(is_ows)).ok()?;
        let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(Timestamp::from_secs(since_epoch.as_secs()))
    }

    #[test]
    fn a_value_matches_strongly_exactly_when_it_parses_to_a_strongly_equal_tag() {
        // Each value against each tag: the shortcut must agree with parsing, valid or not.
        // The last two were never parsed (a store's metadata is read back as it is).
        let unparsed = |opaque: &str| EntityTag { weak: false, opaque: opaque.to_owned() };
        let tags = [
            tag("\"abc\""),
            tag("W/\"abc\""),
            tag("\"\""),
            tag("\"é\""),
            unparsed("a\"b"),
            unparsed("a b"),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut values: Vec<String> = [
            "\"abc\"",
            " \"abc\"\t",
            "W/\"abc\"",
            "\"abc\", \"abc\"",
            "\"ab\"c\"",
            "\"a\"b\"",
            "\"a b\"",
            "abc",
            "\"abc",
            "\"\"",
            "\"",
            "",
            "\"é\"",
            "\"\u{1}\"",
            "*",
            "\"abc\" x",
        ]
        .map(String::from)
        .into();
        let alphabet = ['"', 'a', 'b', 'c', 'W', '/', ' ', '\t', ',', 'é', '\u{7f}', '\u{1}'];
        values.extend((0..5_000).map(|_| {
            let len = rng.usize(..8);
            (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect::<String>()
        }));
        for tag in &tags {
            for value in &values {
                let parsed = EntityTag::parse(value).is_some_and(|parsed| parsed.strong_eq(tag));
                assert_eq!(tag.strong_eq_value(value), parsed, "{value:?} against {tag}");
            }
        }
    }

    #[test]
    fn http_dates_are_parsed_as_httpdate_parses_them() {
        // Every format of many instants, then each of them with one byte changed, cut or
        // padded: the two parsers must agree on every one, valid or not.
        let mut rng = fastrand::Rng::with_seed(11);
        let mut secs: Vec<u64> = vec![0, 59, 86_399, 951_782_400, 253_402_300_799, 4_107_542_400];
        secs.extend((0..2_000).map(|_| rng.u64(..=253_402_300_799)));
        let mut values = vec![
            String::new(),
            " ".into(),
            "Sun, 06 Nov 1994 08:49:37 GMT".into(),
            "Sunday, 06-Nov-94 08:49:37 GMT".into(),
            "Sun Nov  6 08:49:37 1994".into(),
            "Sun, 06 Nov 1994 08:49:37 UTC".into(),
            "Mon, 06 Nov 1994 08:49:37 GMT".into(),
            "Thu, 29 Feb 2001 00:00:00 GMT".into(),
            "Thu, 29 Feb 1996 00:00:00 GMT".into(),
            "Wed, 31 Dec 1969 23:59:59 GMT".into(),
            "Friday, 31-Dec-99 23:59:59 GMT".into(),
            "Sunday, 06-Nov-94X08:49:37 GMT".into(),
            "\t Sun, 06 Nov 1994 08:49:37 GMT \u{b}\n".into(),
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}".into(),
        ];
        for secs in secs {
            let imf = format_http_date(Timestamp::from_secs(secs));
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let date = httpdate::HttpDate::from(time);
            assert_eq!(date.to_string(), imf);
            // The other two forms, rebuilt from the IMF-fixdate's parts.
            let (weekday, day, month, year, clock) =
                (&imf[..3], &imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
            let long = DAY_NAMES.iter().find(|d| d.starts_with(weekday.as_bytes())).unwrap();
            let long = std::str::from_utf8(long).unwrap();
            values.push(format!("{long}, {day}-{month}-{} {clock} GMT", &year[2..]));
            let asc_day = day.strip_prefix('0').map_or(day.to_owned(), |d| format!(" {d}"));
            values.push(format!("{weekday} {month} {asc_day} {clock} {year}"));
            values.push(imf);
        }
        let mut mutated = Vec::new();
        for value in &values {
            for _ in 0..4 {
                let mut bytes = value.clone().into_bytes();
                if bytes.is_empty() {
                    continue;
                }
                let at = rng.usize(..bytes.len());
                match rng.u8(..4) {
                    0 => bytes[at] = b" -:,0123456789GMTSunNov\t"[rng.usize(..24)],
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at, b' '),
                    _ => bytes[at] = bytes[at].wrapping_add(1),
                }
                if let Ok(text) = String::from_utf8(bytes) {
                    mutated.push(text);
                }
            }
        }
        values.extend(mutated);
        let mut n_valid = 0;
        for value in &values {
            let expected = httpdate_parse(value);
            assert_eq!(parse_http_date(value), expected, "{value:?}");
            n_valid += usize::from(expected.is_some());
        }
        assert!(n_valid > 6_000, "{n_valid} of {} values were dates", values.len());
    }

    #[test]
    fn http_dates_are_formatted_as_httpdate_formats_them() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut secs = vec![0, 59, 86_399, 86_400, 784_111_777, 951_782_400, 4_107_542_400];
        secs.extend([253_402_300_799, 1_700_000_000, 2_147_483_647, 68_256_000_000]);
        // Every day of four years around a leap year, at a second that moves through the day.
        secs.extend((0..1_461).map(|day| 946_684_800 + day * 86_400 + day * 59));
        let mut rng = fastrand::Rng::with_seed(7);
        secs.extend((0..10_000).map(|_| rng.u64(..=253_402_300_799)));
        for secs in secs {
            let expected = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(format_http_date(Timestamp::from_secs(secs)), expected, "{secs}");
        }
        assert_eq!(
            format_http_date(Timestamp::from_secs(u64::MAX / 1_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn matching_a_value_in_place_agrees_with_parsing_it_first() {
        let values = [
            "*",
            " * ",
            "\"a\"",
            "W/\"a\"",
            "\"b\", \"a\"",
            "\"b\" ,, W/\"a\" ",
            "\"a\" \"b\"",
            "\"a",
            "*, \"a\"",
            "",
            " , ",
            "a",
            "\"\"",
            "\"b\", W/\"c\"",
            "\"a\", bad",
        ];
        for value in values {
            for tag in [tag("\"a\""), tag("W/\"a\""), tag("\"c\""), tag("\"\"")] {
                let list = EtagList::parse(value);
                let strong = list.as_ref().is_some_and(|list| list.matches_strong(&tag));
                let weak = list.as_ref().is_some_and(|list| list.matches_weak(&tag));
                assert_eq!(EtagList::value_matches_strong(value, &tag), strong, "{value:?} {tag}");
                assert_eq!(EtagList::value_matches_weak(value, &tag), weak, "{value:?} {tag}");
            }
        }
    }

    #[test]
    fn a_field_value_is_what_display_writes() {
        for input in ["\"xyzzy\"", "W/\"xyzzy\"", "\"\""] {
            assert_eq!(tag(input).to_field_value(), tag(input).to_string());
        }
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
