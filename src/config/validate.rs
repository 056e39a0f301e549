//! Validation of a loaded [`Config`], one small check per section. Every check adds what
//! is wrong to one [`Problems`] list instead of stopping, so a load reports every wrong
//! setting at once, each naming its file key and environment variable.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::env::env_var_of;
use super::{
    AgentsConfig, Config, CredentialMode, DockerConfig, EgressConfig, GpuConfig, HaltConfig,
    HealthConfig, LeaderConfig, QuotaConfig, RabbitConfig, RedisConfig, SettingError, SwarmConfig,
};
use crate::credentials::can_carry_login;
use crate::protocol::egress::canonical_list;
use crate::protocol::image::{check_image_pattern, parse_image_ref};
use crate::protocol::{valid_agent_id, AgentType};
use crate::redact;
use crate::security;

/// The wrong settings found so far.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<SettingError>);

impl Problems {
    pub(super) fn new(found: Vec<SettingError>) -> Self {
        Problems(found)
    }

    /// Records that setting `key` is wrong; its environment variable comes from
    /// [`super::ENV_VARS`].
    fn bad(&mut self, key: &str, message: impl std::fmt::Display) {
        self.0.push(SettingError {
            key: key.into(),
            env: env_var_of(key).into(),
            message: message.to_string(),
        });
    }

    /// `key` must not be empty. True when it is not.
    fn not_empty(&mut self, key: &str, value: &str) -> bool {
        if value.is_empty() {
            self.bad(key, "must not be empty");
        }
        !value.is_empty()
    }

    /// `key`, a count or a duration, must be more than 0.
    fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.bad(key, "must be greater than 0");
        }
    }

    /// `key` must have no control characters.
    fn printable(&mut self, key: &str, value: &str) {
        if value.chars().any(char::is_control) {
            self.bad(key, "must not contain control characters");
        }
    }

    pub(super) fn into_vec(self) -> Vec<SettingError> {
        self.0
    }
}

impl Config {
    /// Checks every section, adding what is wrong to `problems`.
    pub(super) fn validate(&self, problems: &mut Problems) {
        check_instance(&self.instance, problems);
        check_admin_listen(self, problems);
        problems.printable("operator", &self.operator);
        check_docker(&self.docker, problems);
        check_rabbitmq(&self.rabbitmq, problems);
        check_redis(&self.redis, problems);
        check_agent_resources(&self.agents, problems);
        check_agent_hardening(&self.agents, problems);
        check_agent_images(&self.agents, problems);
        check_agent_urls(self, problems);
        check_health(&self.health, problems);
        check_quotas(&self.quotas, problems);
        check_halt(&self.halt, problems);
        check_leader(&self.leader, problems);
        check_egress(&self.egress, problems);
        check_swarm(&self.swarm, problems);
        check_gpu(&self.gpu, problems);
    }
}

fn check_instance(instance: &str, p: &mut Problems) {
    if instance.is_empty()
        || !instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        p.bad("instance", "must be letters, digits, '-', '_' or '.'");
    }
}

fn check_admin_listen(config: &Config, p: &mut Problems) {
    if let Some(listen) = config.admin_listen() {
        if listen.parse::<SocketAddr>().is_err() {
            p.bad("admin_listen", format!("'{listen}' is not host:port"));
        }
    }
    if let Some(token) = config.admin_token() {
        // Never quoted back: it is a secret.
        if token.chars().count() < 16 {
            p.bad("admin_token", "must be at least 16 characters");
        } else if !token.chars().all(|c| c.is_ascii_graphic()) {
            p.bad(
                "admin_token",
                "must be printable ASCII without spaces (it travels in a header)",
            );
        }
    }
}

fn check_docker(d: &DockerConfig, p: &mut Problems) {
    if p.not_empty("docker.network", &d.network)
        && d.network_per_customer
        && !valid_agent_id(&d.network)
    {
        p.bad(
            "docker.network",
            "must be letters, digits, '_', '.' or '-' (at most 63) when docker.network_per_customer is on",
        );
    }
    p.positive("docker.timeout_s", d.timeout_s);
    if d.max_concurrent_ops == 0 {
        p.bad("docker.max_concurrent_ops", "must be at least 1");
    }
    let tcp = d
        .host()
        .is_some_and(|h| h.starts_with("tcp://") || h.starts_with("https://"));
    if d.tls_verify && !tcp {
        p.bad(
            "docker.tls_verify",
            "applies to a tcp:// or https:// docker.host (DOCKER_HOST) only",
        );
    }
    if d.uses_tls() {
        let dir = d.cert_dir();
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            if !dir.join(file).is_file() {
                p.bad(
                    "docker.cert_path",
                    format!("{} has no {file} (TLS to the Docker host needs ca.pem, cert.pem and key.pem)", dir.display()),
                );
            }
        }
    }
}

/// A file setting, when set, must name a readable file.
fn readable(p: &mut Problems, key: &str, path: &str) {
    if !path.is_empty() && std::fs::File::open(path).is_err() {
        p.bad(key, format!("cannot read the file '{path}'"));
    }
}

fn check_rabbitmq(r: &RabbitConfig, p: &mut Problems) {
    if r.url.parse::<lapin::uri::AMQPUri>().is_err() {
        p.bad(
            "rabbitmq.url",
            format!("'{}' is not an amqp:// URL", redact::url(&r.url)),
        );
    }
    p.not_empty("rabbitmq.exchange", &r.exchange);
    p.not_empty("rabbitmq.command_queue", &r.command_queue);
    p.not_empty("rabbitmq.dead_letter_exchange", &r.dead_letter_exchange);
    p.not_empty("rabbitmq.dead_letter_queue", &r.dead_letter_queue);
    p.positive("rabbitmq.timeout_s", r.timeout_s);
    if r.prefetch == 0 {
        p.bad("rabbitmq.prefetch", "must be greater than 0");
    }
    if r.max_body_bytes < 1024 {
        p.bad("rabbitmq.max_body_bytes", "must be at least 1024");
    }
    p.printable("rabbitmq.management_url", &r.management_url);
    let management = r.management_url();
    let valid = url::Url::parse(&management).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if !valid {
        p.bad(
            "rabbitmq.management_url",
            format!(
                "'{}' is not an http:// or https:// URL",
                redact::url(&management)
            ),
        );
    }
    readable(p, "rabbitmq.management_ca_file", &r.management_ca_file);
}

fn check_redis(r: &RedisConfig, p: &mut Problems) {
    if redis::Client::open(r.url.as_str()).is_err() {
        p.bad(
            "redis.url",
            format!("'{}' is not a redis:// URL", redact::url(&r.url)),
        );
    }
    readable(p, "redis.tls_ca_file", &r.tls_ca_file);
    readable(p, "redis.tls_cert_file", &r.tls_cert_file);
    readable(p, "redis.tls_key_file", &r.tls_key_file);
    if r.tls_cert_file.is_empty() != r.tls_key_file.is_empty() {
        p.bad(
            "redis.tls_cert_file",
            "redis.tls_cert_file and redis.tls_key_file go together (both or none)",
        );
    }
    p.positive("redis.timeout_ms", r.timeout_ms);
    p.positive("redis.processed_ttl_s", r.processed_ttl_s);
    p.positive("redis.event_stream_max_len", r.event_stream_max_len);
}

/// The defaults and bounds of a command's resources and stop timeout.
fn check_agent_resources(a: &AgentsConfig, p: &mut Problems) {
    if a.min_memory_mb < 6 || a.min_memory_mb > a.max_memory_mb {
        p.bad(
            "agents.min_memory_mb",
            "must be at least 6 (Docker's minimum) and at most agents.max_memory_mb",
        );
    }
    if a.memory_mb < a.min_memory_mb || a.memory_mb > a.max_memory_mb {
        p.bad(
            "agents.memory_mb",
            format!(
                "must be between {} and {}",
                a.min_memory_mb, a.max_memory_mb
            ),
        );
    }
    if !(a.min_cpus > 0.0 && a.min_cpus <= a.max_cpus) {
        p.bad("agents.min_cpus", "must be > 0 and <= agents.max_cpus");
    }
    if !(a.cpus >= a.min_cpus && a.cpus <= a.max_cpus) {
        p.bad(
            "agents.cpus",
            format!("must be between {} and {}", a.min_cpus, a.max_cpus),
        );
    }
    if a.stop_timeout_s > a.max_stop_timeout_s {
        p.bad(
            "agents.stop_timeout_s",
            "must not exceed agents.max_stop_timeout_s",
        );
    }
}

/// The container's limits and hardening: pids, tmpfs, open files, mounts, user,
/// capabilities, security options (rules: [`crate::security`]).
fn check_agent_hardening(a: &AgentsConfig, p: &mut Problems) {
    if a.pids_limit < 16 {
        p.bad("agents.pids_limit", "must be at least 16");
    }
    p.positive("agents.tmpfs_mb", a.tmpfs_mb);
    if a.nofile < 64 || a.nofile > 1 << 20 {
        p.bad("agents.nofile", "must be between 64 and 1048576");
    }
    let mut targets = HashSet::new();
    for mount in &a.module_mounts {
        match security::check_module_mount(mount) {
            Ok((_, target)) => {
                if !targets.insert(target) {
                    p.bad(
                        "agents.module_mounts",
                        format!("'{mount}' mounts onto a container path already used"),
                    );
                }
            }
            Err(message) => p.bad("agents.module_mounts", message),
        }
    }
    if let Err(message) = security::check_user(&a.user) {
        p.bad("agents.user", message);
    }
    for cap in &a.cap_add {
        if let Err(message) = security::addable_capability(cap) {
            p.bad("agents.cap_add", message);
        }
    }
    for opt in &a.security_opt {
        if let Err(message) = security::check_security_opt(opt) {
            p.bad("agents.security_opt", message);
        }
    }
}

/// The default image and the allowlist (rules: [`crate::protocol::image`]).
fn check_agent_images(a: &AgentsConfig, p: &mut Problems) {
    if p.not_empty("agents.image", &a.image) && parse_image_ref(&a.image).is_none() {
        p.bad(
            "agents.image",
            format!("'{}' is not a valid image reference", a.image),
        );
    }
    for pattern in &a.allowed_images {
        if let Err(message) = check_image_pattern(pattern) {
            p.bad("agents.allowed_images", message);
        }
    }
}

/// The URLs given to agents instead of the manager's; with per-agent credentials they
/// must be able to carry the agent's own login, and the key prefix must fit an ACL rule.
fn check_agent_urls(c: &Config, p: &mut Problems) {
    let a = &c.agents;
    p.printable("agents.rabbitmq_url", &a.rabbitmq_url);
    p.printable("agents.redis_url", &a.redis_url);
    if a.credentials != CredentialMode::PerAgent {
        return;
    }
    for (key, url) in [
        ("agents.rabbitmq_url", c.agent_rabbitmq_url()),
        ("agents.redis_url", c.agent_redis_url()),
    ] {
        if !can_carry_login(url) {
            p.bad(
                key,
                format!(
                    "'{}' names no host, so agents cannot be given their own login \
                     (agents.credentials = per-agent); set a URL with a host, or \
                     AGENT_CREDENTIALS=shared",
                    redact::url(url)
                ),
            );
        }
    }
    if c.agent_rabbitmq_url()
        .parse::<lapin::uri::AMQPUri>()
        .is_err()
    {
        p.bad(
            "agents.rabbitmq_url",
            format!(
                "'{}' is not an amqp:// URL",
                redact::url(c.agent_rabbitmq_url())
            ),
        );
    }
    if c.redis
        .prefix
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        p.bad(
            "redis.prefix",
            "must not contain spaces or control characters with agents.credentials = per-agent (it goes into ACL rules)",
        );
    }
}

fn check_health(h: &HealthConfig, p: &mut Problems) {
    p.positive("health.check_interval_s", h.check_interval_s);
    p.positive("health.report_interval_s", h.report_interval_s);
    p.positive("health.relist_interval_s", h.relist_interval_s);
    if !(1..=3600).contains(&h.heartbeat_interval_s) {
        p.bad(
            "health.heartbeat_interval_s",
            "must be between 1 and 3600 (seconds)",
        );
    }
    if !(1..=86_400).contains(&h.heartbeat_start_period_s) {
        p.bad(
            "health.heartbeat_start_period_s",
            "must be between 1 and 86400 (seconds)",
        );
    }
    for (key, path) in [
        ("health.cgroup_root", &h.cgroup_root),
        ("health.proc_root", &h.proc_root),
    ] {
        if !path.starts_with('/') {
            p.bad(key, "must be an absolute path");
        }
    }
    p.positive(
        "health.container_check_interval_s",
        h.container_check_interval_s,
    );
    p.positive(
        "health.container_check_timeout_s",
        h.container_check_timeout_s,
    );
    p.positive("health.container_check_retries", h.container_check_retries);
    p.positive("health.restart_backoff_base_ms", h.restart_backoff_base_ms);
    p.positive("health.crash_loop_window_s", h.crash_loop_window_s);
    if h.restart_backoff_max_ms < h.restart_backoff_base_ms {
        p.bad(
            "health.restart_backoff_max_ms",
            "must be at least health.restart_backoff_base_ms",
        );
    }
    if h.unhealthy_restart_after == 0 || h.crash_loop_max_restarts == 0 {
        p.bad(
            "health.unhealthy_restart_after",
            "health.unhealthy_restart_after and health.crash_loop_max_restarts must be at least 1",
        );
    }
    let check_ok = |c: &Vec<String>| {
        c.is_empty()
            || (c.len() >= 2 && (c[0] == "CMD" || c[0] == "CMD-SHELL"))
            || (c.len() == 1 && c[0] == "NONE")
    };
    if !check_ok(&h.container_check) {
        p.bad(
            "health.container_check",
            "must be [], [\"NONE\"], [\"CMD\", prog, args...] or [\"CMD-SHELL\", command]",
        );
    }
    let mut by_type: Vec<_> = h.container_check_by_type.iter().collect();
    by_type.sort();
    for (agent_type, check) in by_type {
        if AgentType::parse(agent_type).is_none() || !check_ok(check) {
            p.bad(
                "health.container_check_by_type",
                format!(
                    "entry '{agent_type}' needs a known agent type and a CMD or CMD-SHELL test"
                ),
            );
        }
    }
}

fn check_quotas(q: &QuotaConfig, p: &mut Problems) {
    if !(q.max_cpus >= 0.0 && q.max_cpus.is_finite()) {
        p.bad(
            "quotas.max_cpus",
            "must be 0 (unlimited) or a positive number",
        );
    }
}

fn check_halt(h: &HaltConfig, p: &mut Problems) {
    if !(h.max_messages_per_s >= 0.0 && h.max_messages_per_s.is_finite()) {
        p.bad(
            "halt.max_messages_per_s",
            "must be 0 (no automatic halt) or a positive number",
        );
    }
    p.positive("halt.window_s", h.window_s);
    if !(100..=60_000).contains(&h.watch_interval_ms) {
        p.bad("halt.watch_interval_ms", "must be between 100 and 60000");
    }
}

fn check_egress(e: &EgressConfig, p: &mut Problems) {
    let lists = std::iter::once(("egress.allow".to_string(), &e.allow)).chain(
        e.customers
            .iter()
            .map(|(customer, list)| (format!("egress.customers.{customer}"), list)),
    );
    for (key, list) in lists {
        if let Err((i, message)) = canonical_list(list.iter().map(String::as_str)) {
            p.bad(&key, format!("entry {i}: {message}"));
        }
    }
}

fn check_leader(l: &LeaderConfig, p: &mut Problems) {
    if let Some(problem) = l.timing().problem() {
        p.bad("leader.lease_ms", problem);
    }
}

fn check_swarm(w: &SwarmConfig, p: &mut Problems) {
    if !matches!(w.restart_condition.as_str(), "on-failure" | "any" | "none") {
        p.bad(
            "swarm.restart_condition",
            format!("'{}' must be on-failure, any or none", w.restart_condition),
        );
    }
    p.positive("swarm.task_timeout_s", w.task_timeout_s);
    // Docker's kinds: letters, digits, `-`, `_`, `.` (it becomes an environment name).
    if w.gpu_resource.is_empty()
        || !w
            .gpu_resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        p.bad(
            "swarm.gpu_resource",
            format!(
                "'{}' is not a generic resource kind (letters, digits, -, _ and .)",
                w.gpu_resource
            ),
        );
    }
    // Swarm's grammar: `<attribute> == <value>` or `!=`; a typo would leave every agent
    // pending ("no suitable node"), so it is caught here.
    let ok = |c: &str| {
        c.split_once("==")
            .or_else(|| c.split_once("!="))
            .is_some_and(|(k, v)| {
                let (k, v) = (k.trim(), v.trim());
                (k.starts_with("node.") || k.starts_with("engine.labels."))
                    && !v.is_empty()
                    && !c.contains(['\n', '\r'])
            })
    };
    for c in &w.constraints {
        if !ok(c) {
            p.bad(
                "swarm.constraints",
                format!("'{c}' is not a placement constraint (node.<attribute>==<value> or !=)"),
            );
        }
    }
    for (agent_type, list) in &w.constraints_by_type {
        if AgentType::parse(agent_type).is_none() || !list.iter().all(|c| ok(c)) {
            p.bad(
                "swarm.constraints_by_type",
                format!("entry '{agent_type}' needs a known agent type and constraints node.<attribute>==<value> or !="),
            );
        }
    }
    for (customer, list) in &w.constraints_by_customer {
        if !list.iter().all(|c| ok(c)) {
            p.bad(
                "swarm.constraints_by_customer",
                format!("entry '{customer}' needs constraints node.<attribute>==<value> or !="),
            );
        }
    }
}

fn check_gpu(g: &GpuConfig, p: &mut Problems) {
    p.printable("gpu.image", &g.image);
    p.printable("gpu.nvidia_smi", &g.nvidia_smi);
    p.positive("gpu.discover_timeout_s", g.discover_timeout_s);
    for (i, device) in g.devices.iter().enumerate() {
        let valid = !device.is_empty()
            && device.len() <= 128
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
        if !valid {
            p.bad(
                "gpu.devices",
                format!("'{device}' is not a GPU index or UUID"),
            );
        } else if g.devices[..i].contains(device) {
            p.bad("gpu.devices", format!("'{device}' is listed twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::with_env;
    use crate::config::{Config, ConfigError, CredentialMode, DeploymentMode};

    #[test]
    fn wrong_settings_are_named() {
        let e = with_env(&[("DOCKER_TIMEOUT_S", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOCKER_TIMEOUT_S"), "{e}");
        let e = with_env(&[("DEPLOYMENT_MODE", "k8s")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("deployment_mode") || e.contains("k8s"), "{e}");
        let e = with_env(&[("RABBITMQ_URL", "http://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RABBITMQ_URL"), "{e}");
        let e = with_env(&[("AGENT_MEMORY_MB", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AGENT_MEMORY_MB"), "{e}");
        let e = with_env(&[("MODULE_MOUNTS", "/var/run/docker.sock:/s")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MODULE_MOUNTS"), "{e}");
        let e = Config::from_sources(Some(("f.toml", "[docker]\nnetwrok = \"x\"\n")), |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("netwrok"), "{e}");
    }

    #[test]
    fn mode_settings_load_and_are_checked() {
        let c = with_env(&[
            ("DEPLOYMENT_MODE", "gpu"),
            ("GPU_DEVICES", "0, GPU-1a2b"),
            ("GPU_IMAGE", "autogen-agent:cuda"),
            ("SWARM_RESTART_MAX_ATTEMPTS", "7"),
        ])
        .unwrap();
        assert_eq!(c.deployment_mode, DeploymentMode::Gpu);
        assert_eq!(c.gpu.devices, vec!["0", "GPU-1a2b"]);
        assert_eq!(c.swarm.restart_max_attempts, 7);
        let p = c.agent_policy();
        assert_eq!(p.default_image(0), "autogen-agent:latest");
        assert_eq!(p.default_image(1), "autogen-agent:cuda");
        assert!(p.image_allowed("autogen-agent:cuda"));
        let d = Config::defaults();
        assert_eq!(d.swarm.restart_condition, "on-failure");
        assert!(d.gpu.devices.is_empty());
        assert_eq!(d.agent_policy().default_image(2), "autogen-agent:latest");
        let e = with_env(&[("GPU_DEVICES", "0,0")]).unwrap_err().to_string();
        assert!(e.contains("GPU_DEVICES") && e.contains("twice"), "{e}");
        let e = with_env(&[("GPU_DEVICES", "0;rm")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPU_DEVICES"), "{e}");
        let e = with_env(&[("SWARM_RESTART_CONDITION", "always")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWARM_RESTART_CONDITION"), "{e}");
    }

    #[test]
    fn placement_constraints_are_checked() {
        let c = with_env(&[(
            "SWARM_CONSTRAINTS",
            "node.role==worker,node.labels.autogen.pool != gpu",
        )])
        .unwrap();
        assert_eq!(c.swarm.constraints.len(), 2);
        for bad in [
            "role==worker",
            "node.role=worker",
            "node.role==",
            "node.hostname",
        ] {
            let e = with_env(&[("SWARM_CONSTRAINTS", bad)])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("SWARM_CONSTRAINTS"), "{bad}: {e}");
        }
        let mut c = Config::defaults();
        c.swarm
            .constraints_by_type
            .insert("trader".into(), vec!["node.role==worker".into()]);
        c.swarm
            .constraints_by_customer
            .insert("acme".into(), vec!["pool==x".into()]);
        let mut p = super::Problems::default();
        super::check_swarm(&c.swarm, &mut p);
        let text = format!("{p:?}");
        assert!(
            text.contains("constraints_by_type") && text.contains("constraints_by_customer"),
            "{text}"
        );
    }

    #[test]
    fn the_admin_token_is_checked_without_being_quoted_back() {
        for token in ["short-secret", "a token with spaces in it"] {
            let e = with_env(&[("ADMIN_TOKEN", token)])
                .expect_err(token)
                .to_string();
            assert!(e.contains("ADMIN_TOKEN"), "{e}");
            assert!(!e.contains(token), "the token in the message: {e}");
        }
        let c = with_env(&[("ADMIN_TOKEN", "a-good-long-token-123")]).expect("a good token");
        assert_eq!(c.admin_token(), Some("a-good-long-token-123"));
        assert!(!format!("{c:?}").contains("a-good-long-token-123"), "Debug");
        let toml = c.to_toml(false).expect("toml");
        assert!(!toml.contains("a-good-long-token-123") && toml.contains("admin_token = \"***\""));
        assert_eq!(Config::defaults().admin_token(), None);
    }

    #[test]
    fn hardening_settings_are_checked() {
        let c = Config::defaults();
        assert_eq!(c.agents.user, "65534:65534");
        assert!(c.agents.cap_add.is_empty() && c.agents.security_opt.is_empty());
        assert!(!c.docker.network_per_customer);
        assert_eq!(c.rabbitmq.max_body_bytes, 1 << 20);
        assert_eq!(c.quotas.max_agents, 0);
        for (var, value) in [
            ("AGENT_USER", "0:0"),
            ("AGENT_USER", "root"),
            ("AGENT_CAP_ADD", "SYS_ADMIN"),
            ("AGENT_CAP_ADD", "NET_BIND_SERVICE,ALL"),
            ("AGENT_SECURITY_OPT", "seccomp=unconfined"),
            ("AGENT_SECURITY_OPT", "apparmor=unconfined"),
            ("AGENT_SECURITY_OPT", "label=disable"),
            ("MODULE_MOUNTS", "/etc:/modules"),
            ("MODULE_MOUNTS", "/proc/self:/m"),
            ("MODULE_MOUNTS", "/run/containerd/containerd.sock:/m"),
            ("MODULE_MOUNTS", "/:/host"),
            ("MODULE_MOUNTS", "/opt/m:/usr/bin"),
            ("MODULE_MOUNTS", "/opt/a:/m,/opt/b:/m"),
            ("AGENT_IMAGE", "Not A Reference"),
            ("ALLOWED_IMAGES", "bad pattern"),
            ("MAX_BODY_BYTES", "10"),
            ("QUOTA_MAX_CPUS", "-1"),
            ("AGENT_NOFILE", "1"),
            ("AGENT_REDIS_URL", "redis+unix:///tmp/redis.sock"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("RABBITMQ_MANAGEMENT_URL", "ftp://h"),
            ("REDIS_TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ] {
            let e = with_env(&[(var, value)])
                .expect_err(&format!("{var}={value} accepted"))
                .to_string();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
        let e = with_env(&[
            ("DOCKER_HOST", "tcp://127.0.0.1:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/nonexistent"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("DOCKER_CERT_PATH") && e.contains("ca.pem"),
            "{e}"
        );
        let e = with_env(&[("AGENT_CREDENTIALS", "each")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("each") && e.contains("per-agent"), "{e}");
        let c = with_env(&[
            ("AGENT_CREDENTIALS", "shared"),
            ("AGENT_REDIS_URL", "redis+unix:///tmp/redis.sock"),
            ("DOCKER_TLS_VERIFY", ""),
        ])
        .unwrap();
        assert_eq!(c.agents.credentials, CredentialMode::Shared);
        assert!(!c.docker.tls_verify);
        let c = with_env(&[
            ("AGENT_USER", ""),
            ("AGENT_CAP_ADD", "net_bind_service"),
            ("AGENT_SECURITY_OPT", "apparmor=autogen"),
            ("MODULE_MOUNTS", "/opt/modules:/opt/modules"),
            ("NETWORK_PER_CUSTOMER", "true"),
            ("QUOTA_MAX_AGENTS", "5"),
        ])
        .unwrap();
        assert_eq!(c.agents.user, "");
        assert!(c.docker.network_per_customer);
        assert_eq!(c.quotas.max_agents, 5);
    }

    #[test]
    fn every_wrong_setting_is_reported_at_once() {
        let e = with_env(&[
            ("DOCKER_TIMEOUT_S", "soon"),
            ("AGENT_MEMORY_MB", "1"),
            ("SWARM_RESTART_CONDITION", "always"),
            ("DOCKER_NETWORK", "fine"),
        ])
        .unwrap_err();
        let ConfigError::Settings(errors) = &e else {
            panic!("not a settings error: {e}")
        };
        let named: Vec<(&str, &str)> = errors
            .0
            .iter()
            .map(|s| (s.env.as_str(), s.key.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("DOCKER_TIMEOUT_S", "docker.timeout_s"),
                ("AGENT_MEMORY_MB", "agents.memory_mb"),
                ("SWARM_RESTART_CONDITION", "swarm.restart_condition"),
            ]
        );
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("3 settings"), "{text}");
        for (line, (var, key)) in lines[1..].iter().zip(&named) {
            assert!(line.contains(var) && line.contains(key), "{text}");
        }
    }
}
