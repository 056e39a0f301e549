//! The admin endpoint's optional bearer token (`ADMIN_TOKEN`). With one set, every
//! path but `/healthz` and `/readyz` (probes) asks for it, given either as
//! `Authorization: Bearer <token>` (Prometheus' `authorization`, curl, scripts) or as
//! the cookie [`COOKIE`], which a browser gets by opening `/?token=<token>` once: the
//! answer sets the cookie (`HttpOnly`, `SameSite=Strict`) and sends the browser on to
//! the same page without the token in its address (so it stays out of the history).

use actix_web::http::header;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

/// The cookie a browser keeps the token in.
pub const COOKIE: &str = "agent_manager_token";

/// What a request carries, judged against the configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token is configured, or the request carries it.
    Granted,
    /// A token is configured and the request carries none, or another.
    Denied,
}

/// Equal without telling, by its timing, how much of `given` was right (the digests
/// are compared in full).
fn same(given: &str, token: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(token.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token in `Authorization: Bearer …`, if any.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The token in the [`COOKIE`] cookie, if any.
fn cookie(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether `req` may see what `token` guards.
pub fn check(req: &HttpRequest, token: Option<&str>) -> Access {
    let Some(token) = token else {
        return Access::Granted;
    };
    let given = [bearer(req), cookie(req)];
    if given.into_iter().flatten().any(|g| same(g, token)) {
        Access::Granted
    } else {
        Access::Denied
    }
}

/// The `Set-Cookie` value that keeps `token` in the browser.
pub fn set_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// Whether `given` (from `?token=`) is the configured token.
pub fn is_token(given: &str, token: Option<&str>) -> bool {
    token.is_some_and(|t| same(given, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn without_a_token_everything_is_granted() {
        let req = TestRequest::default().to_http_request();
        assert_eq!(check(&req, None), Access::Granted);
    }

    #[test]
    fn the_token_is_taken_from_the_header_or_the_cookie_and_nothing_else() {
        let none = TestRequest::default().to_http_request();
        assert_eq!(check(&none, Some(TOKEN)), Access::Denied);
        let header = TestRequest::default()
            .insert_header((header::AUTHORIZATION, format!("Bearer {TOKEN}")))
            .to_http_request();
        assert_eq!(check(&header, Some(TOKEN)), Access::Granted);
        let wrong = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer 0123456789abcdef-tokeN"))
            .to_http_request();
        assert_eq!(check(&wrong, Some(TOKEN)), Access::Denied);
        let cookie = TestRequest::default()
            .insert_header((header::COOKIE, format!("theme=dark; {COOKIE}={TOKEN}")))
            .to_http_request();
        assert_eq!(check(&cookie, Some(TOKEN)), Access::Granted);
        let basic = TestRequest::default()
            .insert_header((header::AUTHORIZATION, format!("Basic {TOKEN}")))
            .to_http_request();
        assert_eq!(check(&basic, Some(TOKEN)), Access::Denied);
        assert!(is_token(TOKEN, Some(TOKEN)));
        assert!(!is_token(TOKEN, None));
        assert!(!is_token("", Some(TOKEN)));
    }
}
