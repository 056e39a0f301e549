//! Image references, the contract's `image` field: Docker's reference grammar
//! ([`parse_image_ref`], [`ImageRef`]), the allowlist patterns of `agents.allowed_images`
//! ([`check_image_pattern`]) and which references they admit ([`image_allowed`]).
//! Configuration validation and command validation both use these rules.

use std::sync::OnceLock;

use regex::Regex;
use thiserror::Error;

/// A parsed image reference: `repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `[domain/]path`, exactly as written (no docker.io normalisation).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
}

fn reference_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Docker's reference grammar (distribution/reference): domain components may use
        // upper case, path components may not; tags are [\w][\w.-]{0,127}; digests here
        // are sha256 only.
        let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"{domain_component}(?:\.{domain_component})*(?::[0-9]+)?");
        let path_component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{path_component}(?:/{path_component})*");
        let pattern = format!(
            r"^({name})(?::([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?(?:@(sha256:[a-f0-9]{{64}}))?$"
        );
        Regex::new(&pattern).unwrap_or_else(|e| panic!("image reference grammar: {e}"))
    })
}

/// Parses `image` by Docker's reference grammar. `None` for anything else: whitespace,
/// control characters, upper-case repository paths, empty parts, bad digests, or more
/// than 255 characters of name.
pub fn parse_image_ref(image: &str) -> Option<ImageRef> {
    if image.len() > 512 {
        return None;
    }
    let caps = reference_regex().captures(image)?;
    let repository = caps.get(1)?.as_str().to_string();
    if repository.len() > 255 {
        return None;
    }
    Some(ImageRef {
        repository,
        tag: caps.get(2).map(|m| m.as_str().to_string()),
        digest: caps.get(3).map(|m| m.as_str().to_string()),
    })
}

/// Why an `agents.allowed_images` pattern is refused (configuration validation names
/// the setting).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImagePatternError {
    #[error("'{0}' must not be empty or contain spaces or control characters")]
    NotOneWord(String),
    /// `repository:*` whose repository is not one.
    #[error("'{pattern}': '{repository}' is not a repository name")]
    NotARepository { pattern: String, repository: String },
    #[error("'{0}' is not an image reference")]
    NotAReference(String),
}

/// Checks one `agents.allowed_images` pattern: a reference, `repository:*`,
/// `prefix/*`, or (older form) any prefix followed by `*`.
pub fn check_image_pattern(pattern: &str) -> Result<(), ImagePatternError> {
    if pattern.is_empty() || pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ImagePatternError::NotOneWord(pattern.to_string()));
    }
    if let Some(repo) = pattern.strip_suffix(":*") {
        if parse_image_ref(repo).is_some_and(|r| r.tag.is_none() && r.digest.is_none()) {
            return Ok(());
        }
        return Err(ImagePatternError::NotARepository {
            pattern: pattern.to_string(),
            repository: repo.to_string(),
        });
    }
    if pattern.ends_with('*') {
        return Ok(());
    }
    parse_image_ref(pattern)
        .map(|_| ())
        .ok_or_else(|| ImagePatternError::NotAReference(pattern.to_string()))
}

/// True when the allowlist admits `image`. `image` must first be a valid reference.
/// Patterns:
/// - `repo:*`: any tag or digest of that repository (`repo:tag`, `repo@sha256:…`,
///   `repo:tag@sha256:…`);
/// - `prefix/*`: any repository below `prefix/`, with any tag or digest;
/// - `text*`: any reference starting with `text` (kept for older configurations);
/// - `repo:tag`: that reference, also pinned by digest (`repo:tag@sha256:…`);
/// - anything else: that exact reference.
///
/// `default_image` (the configured `agents.image`) is always admitted.
pub fn image_allowed(image: &str, default_image: &str, patterns: &[String]) -> bool {
    let Some(r) = parse_image_ref(image) else {
        return false;
    };
    if image == default_image {
        return true;
    }
    patterns.iter().any(|p| {
        if let Some(repo) = p.strip_suffix(":*") {
            r.repository == repo
        } else if let Some(prefix) = p.strip_suffix("/*") {
            r.repository.starts_with(&format!("{prefix}/"))
        } else if let Some(prefix) = p.strip_suffix('*') {
            image.starts_with(prefix)
        } else {
            image == p
                || r.digest.as_ref().is_some_and(|d| {
                    r.tag.is_some() && image.strip_suffix(&format!("@{d}")) == Some(p)
                })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_dockers_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let ok = [
            "autogen-agent:latest".to_string(),
            "autogen-agent".to_string(),
            "registry.example:5000/agents/trader:v1.2".to_string(),
            "localhost/agents/x".to_string(),
            "Registry.Example/agents/x:TAG_1".to_string(),
            format!("autogen-agent@{digest}"),
            format!("autogen-agent:v1@{digest}"),
            "a__b/c-d/e.f:1".to_string(),
        ];
        for image in &ok {
            assert!(parse_image_ref(image).is_some(), "{image}");
        }
        let r = parse_image_ref(&format!("reg.io/a/b:t@{digest}")).unwrap();
        assert_eq!(r.repository, "reg.io/a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        let bad = [
            "".to_string(),
            "Autogen-Agent:latest".to_string(),
            "UPPER".to_string(),
            "autogen-agent :latest".to_string(),
            "autogen-agent:lat est".to_string(),
            "autogen-agent:latest\n".to_string(),
            "autogen-agent:\u{0}".to_string(),
            "autogen-agent@sha256:abc".to_string(),
            format!("autogen-agent@sha256:{}", "A".repeat(64)),
            format!("autogen-agent@md5:{}", "a".repeat(64)),
            "../../etc/passwd".to_string(),
            "autogen-agent/../x".to_string(),
            "-x".to_string(),
            "x:".to_string(),
            ":tag".to_string(),
            "x::y".to_string(),
            "a//b".to_string(),
            format!("x:{}", "t".repeat(129)),
            "a".repeat(256),
        ];
        for image in &bad {
            assert!(parse_image_ref(image).is_none(), "{image:?}");
        }
    }

    #[test]
    fn allowlist_admits_repositories_tags_and_digests() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let patterns: Vec<String> = ["autogen-agent:*", "reg.io/team/*", "pinned:v1", "old*"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let allowed = |i: &str| image_allowed(i, "autogen-agent:latest", &patterns);
        assert!(allowed("autogen-agent:latest"));
        assert!(allowed("autogen-agent:v2"));
        assert!(allowed(&format!("autogen-agent@{digest}")));
        assert!(allowed(&format!("autogen-agent:v2@{digest}")));
        assert!(allowed("reg.io/team/x:1"));
        assert!(allowed(&format!("reg.io/team/deep/x@{digest}")));
        assert!(allowed("pinned:v1"));
        assert!(allowed(&format!("pinned:v1@{digest}")));
        assert!(allowed("oldthing:1"));
        assert!(!allowed("pinned:v2"));
        assert!(!allowed(&format!("pinned@{digest}")));
        assert!(!allowed("autogen-agent-evil:latest"));
        assert!(!allowed("reg.io/team:1"));
        assert!(!allowed("reg.io/teamx/y:1"));
        assert!(!allowed("evil/miner:latest"));
        assert!(!allowed("autogen-agent:latest "));
        assert!(!allowed("Autogen-agent:latest"));
        assert!(!allowed(""));
        for p in ["autogen-agent:*", "reg.io/team/*", "pinned:v1", "x*"] {
            assert!(check_image_pattern(p).is_ok(), "{p}");
        }
        for p in ["", "a b", "Bad:*", "bad pattern:*", "x:y:z"] {
            assert!(check_image_pattern(p).is_err(), "{p}");
        }
    }
}
