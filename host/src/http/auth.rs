//! Bearer tokens (SPEC §5): reads need the read token or the write token, writes need the write
//! token. Tokens are compared in constant time so a wrong guess teaches nothing about the
//! right one.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Auth;

/// Accepts a GET or HEAD: open when no read token is configured.
pub fn require_read(auth: Option<&Auth>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(auth) = auth else { return Ok(()) };
    let Some(read_token) = &auth.read_token else { return Ok(()) };
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    // Both comparisons always run, so timing does not tell which token was close.
    let read_ok = token_eq(presented, read_token);
    let write_ok = token_eq(presented, &auth.write_token);
    if bool::from(read_ok | write_ok) { Ok(()) } else { Err(ApiError::Unauthorized) }
}

/// Accepts a write, a delete or an invalidation.
pub fn require_write(auth: Option<&Auth>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(auth) = auth else { return Ok(()) };
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    if bool::from(token_eq(presented, &auth.write_token)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    // RFC 9110 §11.1: the scheme is case-insensitive.
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| token.trim_ascii())
}

fn token_eq(presented: &[u8], expected: &str) -> subtle::Choice {
    // ct_eq on slices of different lengths is false without looking at the bytes; the length
    // of a token is not the secret.
    presented.ct_eq(expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_gate_reads_and_writes() {
        let auth = Auth { read_token: Some("r".into()), write_token: "w".into() };
        assert!(require_read(Some(&auth), &headers("Bearer r")).is_ok());
        assert!(require_read(Some(&auth), &headers("bearer w")).is_ok());
        assert!(require_read(Some(&auth), &headers("Bearer x")).is_err());
        assert!(require_read(Some(&auth), &HeaderMap::new()).is_err());
        assert!(require_write(Some(&auth), &headers("Bearer r")).is_err());
        assert!(require_write(Some(&auth), &headers("Bearer w")).is_ok());
        assert!(require_write(None, &HeaderMap::new()).is_ok());
    }
}
