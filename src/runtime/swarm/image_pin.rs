//! Swarm mode pins each agent's service to its image's registry digest
//! (`name:tag@sha256:…`), as `docker service create` does: every node then runs the same
//! image however the tag moves later, and a node that lacks it pulls exactly that one.
//!
//! An image no registry answers for (built or loaded on the nodes by hand, or a registry
//! that is down) cannot be pinned: the service names the tag, and each node must have
//! it. The warning says so once per image; the registry is asked again after
//! [`RETRY_AFTER`], not on every create.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::image::parse_image_ref;

/// How long an image whose digest could not be had is not asked for again.
pub const RETRY_AFTER: Duration = Duration::from_secs(300);

/// `image` pinned to `digest`, or `None` when the digest is not one (`sha256:<64 hex>`)
/// or the image already names a digest.
pub fn pinned(image: &str, digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let r = parse_image_ref(image)?;
    if r.digest.is_some() {
        return None;
    }
    Some(format!("{image}@{digest}"))
}

/// The images whose digest could not be had lately.
#[derive(Debug, Default)]
pub struct Unpinnable {
    since: Mutex<HashMap<String, Instant>>,
}

impl Unpinnable {
    /// Whether to ask the registry for `image`'s digest now.
    pub fn worth_asking(&self, image: &str) -> bool {
        if image.contains('@') {
            return false;
        }
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.get(image).is_none_or(|t| t.elapsed() >= RETRY_AFTER)
    }

    /// Remembers that `image` has no digest now; true the first time (to warn once).
    pub fn failed(&self, image: &str) -> bool {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.insert(image.to_string(), Instant::now()).is_none()
    }

    /// `image` was pinned: a later failure is news again.
    pub fn succeeded(&self, image: &str) {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tag_is_pinned_to_its_digest() {
        assert_eq!(
            pinned("10.213.0.1:5000/autogen-agent:latest", DIGEST).as_deref(),
            Some(format!("10.213.0.1:5000/autogen-agent:latest@{DIGEST}").as_str())
        );
        assert_eq!(
            pinned("autogen-agent:latest", "sha256:abc"),
            None,
            "not a digest"
        );
        assert_eq!(
            pinned(&format!("a:b@{DIGEST}"), DIGEST),
            None,
            "pinned already"
        );
        assert_eq!(pinned("Bad Image", DIGEST), None);
    }

    #[test]
    fn an_unpinnable_image_is_asked_for_again_only_later() {
        let u = Unpinnable::default();
        assert!(u.worth_asking("a:1"));
        assert!(!u.worth_asking(&format!("a:1@{DIGEST}")));
        assert!(u.failed("a:1"), "the first failure is told");
        assert!(!u.failed("a:1"), "not the second");
        assert!(!u.worth_asking("a:1"));
        assert!(u.worth_asking("b:1"));
        u.succeeded("a:1");
        assert!(u.worth_asking("a:1"));
    }
}
