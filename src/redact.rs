//! Removes secrets from text that leaves the manager (container log lines in events
//! and records): credentials in URLs, `password=...`-style pairs, bearer tokens.

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

/// `line` with every secret replaced by `***`.
pub fn redact(line: &str) -> String {
    patterns()
        .iter()
        .fold(line.to_string(), |text, (re, with)| {
            re.replace_all(&text, *with).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced() {
        assert_eq!(
            redact("connecting to amqp://bot:hunter2@rabbit:5672/%2f"),
            "connecting to amqp://bot:***@rabbit:5672/%2f"
        );
        assert_eq!(redact("login password=hunter2 ok"), "login password=*** ok");
        assert_eq!(redact(r#"{"api_key": "abc123"}"#), r#"{"api_key": "***"}"#);
        assert_eq!(redact("DB_PASSWORD: s3cr3t"), "DB_PASSWORD: ***");
        assert_eq!(
            redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y"),
            "Authorization: Bearer ***"
        );
        assert_eq!(redact("key AKIAABCDEFGHIJKLMNOP"), "key ***");
    }

    #[test]
    fn ordinary_lines_are_kept() {
        for line in [
            "agent a1: started",
            "exit code 3",
            "redis://127.0.0.1:6379/0",
            "tokens used: 12",
        ] {
            assert_eq!(redact(line), line);
        }
    }
}
