//! `agent-manager config -o toml`: the effective configuration as a TOML file that
//! `--config` loads back (the same settings, environment variables included, as values).
//! Passwords in URLs (and the admin token) are `***` unless asked for: such a file
//! loads, but its URLs then need their passwords (or the `*_FILE` variables) again.

use super::Config;
use crate::redact;

impl Config {
    /// The configuration as TOML; `secrets`: URLs with their passwords.
    pub fn to_toml(&self, secrets: bool) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        if !secrets {
            for url in [
                &mut shown.rabbitmq.url,
                &mut shown.rabbitmq.management_url,
                &mut shown.redis.url,
                &mut shown.agents.rabbitmq_url,
                &mut shown.agents.redis_url,
            ] {
                *url = redact::url(url);
            }
            if !shown.admin_token.0.is_empty() {
                shown.admin_token.0 = "***".into();
            }
        }
        let body = toml::to_string_pretty(&shown)?;
        Ok(format!(
            "# agent-manager {}: the effective configuration (agent-manager config -o toml).\n\
             # Load it with --config FILE or AGENT_MANAGER_CONFIG; environment variables\n\
             # still override it.{}\n\n{body}",
            crate::build_info::LONG_VERSION,
            if secrets {
                ""
            } else {
                " Passwords in URLs are shown as ***."
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toml_loads_back_into_the_same_configuration() {
        let vars = [
            ("REDIS_URL", "redis://mgr:hunter2@redis:6379/0"),
            ("DEPLOYMENT_MODE", "swarm"),
            ("QUOTA_MAX_CPUS", "2.5"),
            ("ALLOWED_IMAGES", "autogen-agent:*,registry.local/agents/*"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let config = Config::from_sources(None, env).unwrap();
        let text = config.to_toml(true).unwrap();
        let back = Config::from_sources(Some(("printed.toml", &text)), |_| None).unwrap();
        assert_eq!(back.to_toml(true).unwrap(), text);
        assert_eq!(back.redis.url, "redis://mgr:hunter2@redis:6379/0");
        assert_eq!(back.deployment_mode, super::super::DeploymentMode::Swarm);

        let redacted = config.to_toml(false).unwrap();
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(
            redacted.contains("redis://mgr:***@redis:6379/0"),
            "{redacted}"
        );
        let back = Config::from_sources(Some(("printed.toml", &redacted)), |_| None).unwrap();
        assert_eq!(back.quotas.max_cpus, 2.5);
    }
}
