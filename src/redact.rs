//! Removes secrets from text that leaves the manager, in one place:
//!
//! - [`line`]: a container's log line (in events and records): credentials in URLs,
//!   `password=...`-style pairs, bearer tokens, AWS access key ids.
//! - [`url`]: a URL shown in logs, errors and `agent-manager config`:
//!   `scheme://user:***@host`.
//! - [`secret_of_url_in`]: a text (a client library's error message) with the password of
//!   a given URL hidden wherever it appears, not only inside the URL.
//!
//! # Why not the `url` crate (issue 26)
//! `url` is a dependency already, and `Url::set_password` would redact a URL that
//! parses. Kept ours, because (compared on 18 URLs, a scratch program running both):
//! - it works on text, and so must [`line`] and [`secret_of_url_in`]: a log line or a
//!   client's error is not one URL, and `url` has nothing to find URLs in text;
//! - a URL that does not parse still has to be shown without its password, and the
//!   malformed ones are the ones shown most (in "… is not an AMQP URL" errors): `url`
//!   refused 3 of the 18 (a password with an unencoded `/` or `?`: "invalid port
//!   number"; plain text), where this module needs an answer anyway;
//! - it normalises what it shows (`http://admin:pw@RABBIT:15672` comes back as
//!   `http://admin:***@rabbit:15672/`, a space in a vhost as `%20`), while an operator
//!   should read the URL as they set it.
//!
//! The comparison found a leak in ours, fixed here: a password with an unencoded `/`
//! (`amqp://u:pa/ss@host`) ended the authority early, and the URL was shown whole.

use std::sync::OnceLock;

use regex::Regex;

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            // scheme://user:secret@host
            (r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", "${1}***@"),
            // password=..., token: ..., api_key="..."
            (
                r#"(?i)\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_-]*)(["']?\s*[=:]\s*["']?)[^\s"',;&]+"#,
                "${1}${2}***",
            ),
            // Authorization: Bearer xyz
            (r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}", "${1} ***"),
            // AWS access key ids
            (r"\bAKIA[0-9A-Z]{16}\b", "***"),
        ]
        .into_iter()
        .filter_map(|(re, with)| Regex::new(re).ok().map(|r| (r, with)))
        .collect()
    })
}

/// `text` (a log line) with every secret replaced by `***`.
pub fn line(text: &str) -> String {
    patterns()
        .iter()
        .fold(text.to_string(), |text, (re, with)| {
            re.replace_all(&text, *with).into_owned()
        })
}

/// The name callers used before [`line`].
pub use self::line as redact;

/// `url` as `(scheme, userinfo, what follows the userinfo's '@')`, when it has a
/// userinfo. A URL's authority ends at the first `/`, but a password with an unencoded
/// `/` (not a valid URL, and so just the kind shown in an error) must not end it: when
/// the authority holds no `@`, the last `@` ends the userinfo if a `:` comes before it.
/// (`redis://h:6379/0?x=a@b`, valid and without a password, is then over-redacted:
/// better than a password shown.)
fn userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.find('/').map_or(rest, |end| &rest[..end]);
    let at = match authority.rfind('@') {
        Some(at) => at,
        None => rest.rfind('@').filter(|at| rest[..*at].contains(':'))?,
    };
    Some((scheme, &rest[..at], &rest[at + 1..]))
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, for logs and messages.
pub fn url(url: &str) -> String {
    match userinfo(url) {
        Some((scheme, userinfo, host_and_rest)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host_and_rest}")
        }
        None => url.to_string(),
    }
}

/// `text` with the password of `url` (if it has one) replaced by `***`, so that no
/// message of a client library can leak it. (A password equal to the user name, like
/// RabbitMQ's guest:guest, is only hidden where it follows the user.)
pub fn secret_of_url_in(text: &str, url: &str) -> String {
    let Some((user, password)) = userinfo(url).and_then(|(_, u, _)| u.split_once(':')) else {
        return text.to_string();
    };
    if password.is_empty() {
        return text.to_string();
    }
    let text = text.replace(&format!("{user}:{password}@"), &format!("{user}:***@"));
    if password == user {
        text
    } else {
        text.replace(password, "***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced() {
        assert_eq!(
            line("connecting to amqp://bot:hunter2@rabbit:5672/%2f"),
            "connecting to amqp://bot:***@rabbit:5672/%2f"
        );
        assert_eq!(line("login password=hunter2 ok"), "login password=*** ok");
        assert_eq!(line(r#"{"api_key": "abc123"}"#), r#"{"api_key": "***"}"#);
        assert_eq!(line("DB_PASSWORD: s3cr3t"), "DB_PASSWORD: ***");
        assert_eq!(
            line("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y"),
            "Authorization: Bearer ***"
        );
        assert_eq!(line("key AKIAABCDEFGHIJKLMNOP"), "key ***");
    }

    #[test]
    fn ordinary_lines_are_kept() {
        for text in [
            "agent a1: started",
            "exit code 3",
            "redis://127.0.0.1:6379/0",
            "tokens used: 12",
        ] {
            assert_eq!(line(text), text);
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(url("amqp://u:p@ss@h/v"), "amqp://u:***@h/v");
        assert_eq!(url("amqp://bot@h/v"), "amqp://bot:***@h/v");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn a_password_with_an_unencoded_slash_is_hidden_too() {
        let bad = "amqp://u:pa/ss@rabbit:5672/%2f";
        assert_eq!(url(bad), "amqp://u:***@rabbit:5672/%2f");
        assert_eq!(
            secret_of_url_in("RABBITMQ_URL amqp://u:pa/ss@rabbit is wrong; pa/ss", bad),
            "RABBITMQ_URL amqp://u:***@rabbit is wrong; ***"
        );
        // Unencoded '?' and '#' never ended the authority early.
        assert_eq!(url("amqp://u:pa?ss@h/v"), "amqp://u:***@h/v");
    }

    #[test]
    fn secret_of_url_in_hides_the_password_wherever_it_appears() {
        let url = "amqp://user:s3cret@rabbit:5672/%2f";
        assert_eq!(
            secret_of_url_in(
                "failed to log in to amqp://user:s3cret@rabbit with s3cret",
                url
            ),
            "failed to log in to amqp://user:***@rabbit with ***"
        );
        assert_eq!(
            secret_of_url_in("no password here", "redis://127.0.0.1:6379/0"),
            "no password here"
        );
        assert_eq!(secret_of_url_in("x", "redis://:pw@h:1/0"), "x");
        assert_eq!(
            secret_of_url_in(
                "amqp://guest:guest@h: refused for guest",
                "amqp://guest:guest@h"
            ),
            "amqp://guest:***@h: refused for guest"
        );
    }
}
