//! Conditional requests (RFC 9110 §13) evaluated in the order of §13.2.2, then ranges (§14),
//! producing one [`ResponsePlan`] that every host renders.

use http::{HeaderName, Method, StatusCode};

use crate::range::Window;

/// The request fields a plan depends on, as raw field values (joined with `, ` when a field
/// repeats, RFC 9110 §5.3); the core does all the parsing.
#[derive(Clone, Debug)]
pub struct RequestHeaders<'a> {
    /// The request method; only GET and HEAD read an object.
    pub method: &'a Method,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a str>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a str>,
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
}

/// Status, headers and body of the answer to one GET or HEAD of one object revision.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    /// 200, 206, 304, 412 or 416.
    pub status: StatusCode,
    /// Headers to emit, in order (stored end-to-end headers included).
    pub headers: Vec<(HeaderName, String)>,
    /// What bytes of the object the body carries.
    pub body: Body,
}

/// The body of a [`ResponsePlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 304, 412, 416).
    None,
    /// The whole object.
    Full,
    /// One window of the object.
    Window(Window),
    /// `multipart/byteranges`: each part is its header block followed by its window, and the
    /// body ends with `closing`.
    Multipart {
        /// The boundary named in Content-Type.
        boundary: String,
        /// The parts in order.
        parts: Vec<Part>,
        /// The closing delimiter, `\r\n--boundary--\r\n`.
        closing: String,
    },
}

/// One part of a `multipart/byteranges` body (RFC 9110 §14.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The bytes written before the window: delimiter and part headers, ending in a blank line.
    pub head: String,
    /// The window of the object this part carries.
    pub window: Window,
}
