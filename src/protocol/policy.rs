//! [`AgentPolicy`]: the defaults and bounds commands are validated against (default
//! image and allowlist, resources, stop timeouts, size limits). The protocol only reads
//! it; `config::Config::agent_policy` builds it from the settings.

use super::image::image_allowed;
use super::Resources;

/// What validation needs to know about agents: defaults and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPolicy {
    /// Image of a create that names none (`AGENT_IMAGE`); always allowed.
    pub image: String,
    /// Patterns of the other images a command may name (rules: [`image_allowed`]).
    pub allowed_images: Vec<String>,
    /// `resources.memory_mb` of a create that gives none.
    pub memory_mb: u64,
    /// `resources.cpus` of a create that gives none.
    pub cpus: f64,
    /// Smallest `resources.memory_mb` a command may ask for.
    pub min_memory_mb: u64,
    /// Largest `resources.memory_mb` a command may ask for.
    pub max_memory_mb: u64,
    /// Smallest `resources.cpus` a command may ask for.
    pub min_cpus: f64,
    /// Largest `resources.cpus` a command may ask for.
    pub max_cpus: f64,
    /// Largest `resources.gpus` a command may ask for.
    pub max_gpus: u32,
    /// Grace period of a stop, restart or delete that gives no `timeout_s`.
    pub stop_timeout_s: u32,
    /// Largest `timeout_s` a command may ask for.
    pub max_stop_timeout_s: u32,
    /// Largest `config` or `autogen_config` object, serialized, in bytes.
    pub max_config_bytes: usize,
    /// Deepest nesting of a `config` or `autogen_config` object.
    pub max_config_depth: usize,
    /// Largest command body decoded at all.
    pub max_body_bytes: usize,
    /// Image of a GPU agent whose create names none (`GPU_IMAGE`); `None`: `image`.
    /// Always allowed, like `image`.
    pub gpu_image: Option<String>,
}

impl AgentPolicy {
    /// The image of a create that names none: the GPU image for an agent with GPUs.
    pub fn default_image(&self, gpus: u32) -> &str {
        match &self.gpu_image {
            Some(gpu_image) if gpus > 0 => gpu_image,
            _ => &self.image,
        }
    }

    /// The resources of a create that gives none: the configured memory and CPUs, no GPU.
    pub fn default_resources(&self) -> Resources {
        Resources {
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            gpus: 0,
            max_messages_per_s: None,
        }
    }

    /// True when `image` is a valid Docker reference and is the default image (or the GPU
    /// image) or matches an allowlist pattern (rules: [`image_allowed`]).
    pub fn image_allowed(&self, image: &str) -> bool {
        image_allowed(image, &self.image, &self.allowed_images)
            || self
                .gpu_image
                .as_deref()
                .is_some_and(|gpu_image| image_allowed(image, gpu_image, &[]))
    }
}

/// The policy of config/default.toml, for unit tests that must not depend on the
/// configuration module (`config`'s tests check that the defaults build this policy).
#[cfg(test)]
pub fn sample_policy() -> AgentPolicy {
    AgentPolicy {
        image: "autogen-agent:latest".into(),
        allowed_images: vec!["autogen-agent:*".into()],
        memory_mb: 1024,
        cpus: 1.0,
        min_memory_mb: 16,
        max_memory_mb: 65536,
        min_cpus: 0.01,
        max_cpus: 64.0,
        max_gpus: 8,
        stop_timeout_s: 10,
        max_stop_timeout_s: 300,
        max_config_bytes: 65536,
        max_config_depth: 32,
        max_body_bytes: 1 << 20,
        gpu_image: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_allowlist() {
        let p = sample_policy();
        assert!(p.image_allowed("autogen-agent:latest"));
        assert!(p.image_allowed("autogen-agent:v2"));
        assert!(!p.image_allowed("autogen-agent-evil:latest"));
        assert!(!p.image_allowed("docker.io/library/alpine"));
        assert!(!p.image_allowed(""));
    }

    #[test]
    fn gpu_agents_get_the_gpu_image_which_is_always_allowed() {
        let mut p = sample_policy();
        assert_eq!(p.default_image(2), "autogen-agent:latest");
        assert!(!p.image_allowed("autogen-agent-cuda:12"));
        p.gpu_image = Some("autogen-agent-cuda:12".into());
        assert_eq!(p.default_image(0), "autogen-agent:latest");
        assert_eq!(p.default_image(1), "autogen-agent-cuda:12");
        assert!(p.image_allowed("autogen-agent-cuda:12"));
        assert!(!p.image_allowed("autogen-agent-cuda:13"));
    }
}
