//! Settings: the defaults in `config/default.toml` (compiled in), overridden by an
//! optional TOML file, overridden by environment variables. Loading validates every
//! value and names the bad setting (file key and environment variable) when one is wrong.

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;
use toml::{Table, Value};

use crate::protocol::image::{check_image_pattern, parse_image_ref};
/// Built by [`Config::agent_policy`]; defined beside the protocol that reads it.
pub use crate::protocol::AgentPolicy;
use crate::redact;

/// The compiled-in defaults, documented setting by setting.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable → setting path. One line per setting.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("DEPLOYMENT_MODE", "deployment_mode"),
    ("MANAGER_INSTANCE", "instance"),
    ("ADMIN_LISTEN", "admin_listen"),
    ("DOCKER_HOST", "docker.host"),
    ("DOCKER_NETWORK", "docker.network"),
    ("DOCKER_TIMEOUT_S", "docker.timeout_s"),
    ("DOCKER_MAX_CONCURRENT_OPS", "docker.max_concurrent_ops"),
    ("ORPHAN_GRACE_S", "docker.orphan_grace_s"),
    ("ORPHAN_DRY_RUN", "docker.orphan_dry_run"),
    ("NETWORK_PER_CUSTOMER", "docker.network_per_customer"),
    ("NETWORK_INTERNAL", "docker.network_internal"),
    ("RABBITMQ_URL", "rabbitmq.url"),
    ("RABBITMQ_EXCHANGE", "rabbitmq.exchange"),
    ("COMMAND_QUEUE", "rabbitmq.command_queue"),
    ("DEAD_LETTER_EXCHANGE", "rabbitmq.dead_letter_exchange"),
    ("DEAD_LETTER_QUEUE", "rabbitmq.dead_letter_queue"),
    ("RABBITMQ_PREFETCH", "rabbitmq.prefetch"),
    ("RABBITMQ_TIMEOUT_S", "rabbitmq.timeout_s"),
    ("MAX_BODY_BYTES", "rabbitmq.max_body_bytes"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_PREFIX", "redis.prefix"),
    ("REDIS_TIMEOUT_MS", "redis.timeout_ms"),
    ("EVENT_STREAM_MAX_LEN", "redis.event_stream_max_len"),
    ("PROCESSED_TTL_S", "redis.processed_ttl_s"),
    ("AGENT_IMAGE", "agents.image"),
    ("ALLOWED_IMAGES", "agents.allowed_images"),
    ("AGENT_MEMORY_MB", "agents.memory_mb"),
    ("AGENT_CPUS", "agents.cpus"),
    ("AGENT_MIN_MEMORY_MB", "agents.min_memory_mb"),
    ("AGENT_MAX_MEMORY_MB", "agents.max_memory_mb"),
    ("AGENT_MIN_CPUS", "agents.min_cpus"),
    ("AGENT_MAX_CPUS", "agents.max_cpus"),
    ("AGENT_MAX_GPUS", "agents.max_gpus"),
    ("AGENT_PIDS_LIMIT", "agents.pids_limit"),
    ("AGENT_TMPFS_MB", "agents.tmpfs_mb"),
    ("STOP_TIMEOUT_S", "agents.stop_timeout_s"),
    ("MAX_STOP_TIMEOUT_S", "agents.max_stop_timeout_s"),
    ("MAX_CONFIG_BYTES", "agents.max_config_bytes"),
    ("MAX_CONFIG_DEPTH", "agents.max_config_depth"),
    ("MODULE_MOUNTS", "agents.module_mounts"),
    ("AGENT_RABBITMQ_URL", "agents.rabbitmq_url"),
    ("AGENT_REDIS_URL", "agents.redis_url"),
    ("AGENT_USER", "agents.user"),
    ("AGENT_CAP_ADD", "agents.cap_add"),
    ("AGENT_SECURITY_OPT", "agents.security_opt"),
    ("AGENT_NOFILE", "agents.nofile"),
    ("QUOTA_MAX_AGENTS", "quotas.max_agents"),
    ("QUOTA_MAX_MEMORY_MB", "quotas.max_memory_mb"),
    ("QUOTA_MAX_CPUS", "quotas.max_cpus"),
    ("QUOTA_MAX_GPUS", "quotas.max_gpus"),
    ("HEALTH_CHECK_INTERVAL_S", "health.check_interval_s"),
    ("HEALTH_REPORT_INTERVAL_S", "health.report_interval_s"),
    ("RELIST_INTERVAL_S", "health.relist_interval_s"),
    ("CONTAINER_HEALTHCHECK", "health.container_check"),
    (
        "CONTAINER_CHECK_INTERVAL_S",
        "health.container_check_interval_s",
    ),
    (
        "CONTAINER_CHECK_TIMEOUT_S",
        "health.container_check_timeout_s",
    ),
    ("CONTAINER_CHECK_RETRIES", "health.container_check_retries"),
    (
        "CONTAINER_CHECK_START_PERIOD_S",
        "health.container_check_start_period_s",
    ),
    ("UNHEALTHY_RESTART_AFTER", "health.unhealthy_restart_after"),
    ("RESTART_BACKOFF_BASE_MS", "health.restart_backoff_base_ms"),
    ("RESTART_BACKOFF_MAX_MS", "health.restart_backoff_max_ms"),
    ("RESTART_STABLE_S", "health.restart_stable_s"),
    ("CRASH_LOOP_MAX_RESTARTS", "health.crash_loop_max_restarts"),
    ("CRASH_LOOP_WINDOW_S", "health.crash_loop_window_s"),
    ("LOG_TAIL_LINES", "health.log_tail_lines"),
    ("SWARM_RESTART_CONDITION", "swarm.restart_condition"),
    ("SWARM_RESTART_DELAY_S", "swarm.restart_delay_s"),
    ("SWARM_RESTART_MAX_ATTEMPTS", "swarm.restart_max_attempts"),
    ("SWARM_RESTART_WINDOW_S", "swarm.restart_window_s"),
    ("SWARM_TASK_TIMEOUT_S", "swarm.task_timeout_s"),
    ("GPU_DEVICES", "gpu.devices"),
    ("GPU_DISCOVER", "gpu.discover"),
    ("GPU_NVIDIA_SMI", "gpu.nvidia_smi"),
    ("GPU_DISCOVER_TIMEOUT_S", "gpu.discover_timeout_s"),
    ("GPU_IMAGE", "gpu.image"),
];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("setting {key} (environment {env}): {message}")]
    Setting {
        key: String,
        env: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentMode {
    Docker,
    Swarm,
    Gpu,
}

impl DeploymentMode {
    /// The setting's value: `docker`, `swarm` or `gpu`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentMode::Docker => "docker",
            DeploymentMode::Swarm => "swarm",
            DeploymentMode::Gpu => "gpu",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which runtime drives the agents.
    pub deployment_mode: DeploymentMode,
    /// Scopes adoption to this installation's containers (label `autogen.manager-instance`).
    pub instance: String,
    /// Admin HTTP endpoint address; empty: off.
    pub admin_listen: String,
    pub docker: DockerConfig,
    pub rabbitmq: RabbitConfig,
    pub redis: RedisConfig,
    pub agents: AgentsConfig,
    pub health: HealthConfig,
    pub swarm: SwarmConfig,
    pub gpu: GpuConfig,
    /// Per-customer limits (see [`crate::quota`]).
    pub quotas: QuotaConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Docker endpoint; empty for the local socket.
    pub host: String,
    /// Network the agents join.
    pub network: String,
    /// Bound on one Docker API call.
    pub timeout_s: u64,
    /// State-changing Docker operations in flight at once (admission control).
    pub max_concurrent_ops: usize,
    /// Orphan containers are removed this long after they are found.
    pub orphan_grace_s: u64,
    /// Only report orphans.
    pub orphan_dry_run: bool,
    /// Each customer's agents get a network of their own, `<network>-<customer>`, so one
    /// customer's agents cannot reach another's.
    pub network_per_customer: bool,
    /// Per-customer networks are created `internal` (no traffic beyond the network).
    pub network_internal: bool,
}

/// Debug output never shows the credentials in `url` (see [`redact::url`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitConfig {
    pub url: String,
    pub exchange: String,
    pub command_queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Unacknowledged commands in flight; bounds the consumer's memory.
    pub prefetch: u16,
    pub timeout_s: u64,
    /// Largest command body decoded; a larger one is refused before it is parsed.
    pub max_body_bytes: usize,
}

/// Debug output never shows the credentials in `url`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    pub timeout_ms: u64,
    /// Approximate cap of each agent's event stream.
    pub event_stream_max_len: u64,
    /// Lifetime of a processed message id.
    pub processed_ttl_s: u64,
}

/// Debug output never shows the credentials in the agents' URLs.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    pub image: String,
    pub allowed_images: Vec<String>,
    pub memory_mb: u64,
    pub cpus: f64,
    pub min_memory_mb: u64,
    pub max_memory_mb: u64,
    pub min_cpus: f64,
    pub max_cpus: f64,
    pub max_gpus: u32,
    pub pids_limit: i64,
    pub tmpfs_mb: u64,
    pub stop_timeout_s: u32,
    pub max_stop_timeout_s: u32,
    pub max_config_bytes: usize,
    pub max_config_depth: usize,
    /// `host_path:container_path` pairs mounted read-only.
    pub module_mounts: Vec<String>,
    /// URL given to agents as RABBITMQ_URL; empty for the manager's.
    pub rabbitmq_url: String,
    /// URL given to agents as REDIS_URL; empty for the manager's.
    pub redis_url: String,
    /// `UID[:GID]` agents run as (never root); empty keeps the image's user.
    pub user: String,
    /// Capabilities added back after `cap_drop: ALL`; only Docker's default set
    /// ([`crate::security::ADDABLE_CAPABILITIES`]).
    pub cap_add: Vec<String>,
    /// Extra security options (AppArmor profile, SELinux label); never `unconfined`.
    pub security_opt: Vec<String>,
    /// Open files per agent process (`nofile` ulimit, soft = hard).
    pub nofile: u64,
}

/// Per-customer limits; 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Agents one customer may have (running or stopped).
    pub max_agents: u64,
    /// Sum of `memory_mb` over a customer's agents.
    pub max_memory_mb: u64,
    /// Sum of `cpus` over a customer's agents.
    pub max_cpus: f64,
    /// Sum of `gpus` over a customer's agents.
    pub max_gpus: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often each agent actor looks at its container.
    pub check_interval_s: u64,
    /// `agent.health` at least this often per running agent.
    pub report_interval_s: u64,
    /// Every agent is looked at this often, whatever the events stream said.
    pub relist_interval_s: u64,
    /// HEALTHCHECK test given to agent containers; empty keeps the image's.
    pub container_check: Vec<String>,
    /// Per agent type (`trading`, ...), a HEALTHCHECK test replacing `container_check`.
    pub container_check_by_type: std::collections::HashMap<String, Vec<String>>,
    pub container_check_interval_s: u64,
    pub container_check_timeout_s: u64,
    pub container_check_retries: u64,
    pub container_check_start_period_s: u64,
    /// Unhealthy looks in a row before a restart.
    pub unhealthy_restart_after: u32,
    pub restart_backoff_base_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Running this long resets the restart backoff.
    pub restart_stable_s: u64,
    /// More restarts than this within `crash_loop_window_s` is a crash loop.
    pub crash_loop_max_restarts: u32,
    pub crash_loop_window_s: u64,
    /// Lines of a dead container's log kept with its exit.
    pub log_tail_lines: u32,
}

/// Swarm mode: how the agents' services behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// Swarm's own restart policy for an agent's task: `on-failure`, `any` or `none`.
    pub restart_condition: String,
    /// Pause before Swarm restarts a task.
    pub restart_delay_s: u64,
    /// Restarts Swarm attempts within `restart_window_s` (0: no limit).
    pub restart_max_attempts: u64,
    /// Window the attempts are counted in (0: the service's life).
    pub restart_window_s: u64,
    /// How long start, stop, restart and update wait for the service's task to run or
    /// to end (a stop also gets its grace period).
    pub task_timeout_s: u64,
}

/// GPU mode: the inventory and the image of GPU agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Device ids (indexes or UUIDs) the manager may hand out. When empty, the inventory
    /// comes from nvidia-smi (if `discover`).
    pub devices: Vec<String>,
    /// Ask nvidia-smi for the host's GPUs when `devices` is empty.
    pub discover: bool,
    /// The nvidia-smi program (name on PATH or absolute path).
    pub nvidia_smi: String,
    /// Bound on one nvidia-smi run.
    pub discover_timeout_s: u64,
    /// Image of an agent with `gpus > 0` whose create names none; empty: `agents.image`.
    pub image: String,
}

impl Config {
    /// The compiled-in defaults alone.
    pub fn defaults() -> Config {
        Self::from_sources(None, |_| None).unwrap_or_else(|e| panic!("config/default.toml: {e}"))
    }

    /// Loads defaults < `file` < process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
            )),
            None => None,
        };
        Self::from_sources(
            text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            |name| std::env::var(name).ok(),
        )
    }

    /// Loads defaults < `file` (path, contents) < `env` (a lookup, so tests never touch
    /// the process environment).
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: Table =
            DEFAULT_TOML
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: "config/default.toml".into(),
                    message: e.to_string(),
                })?;
        if let Some((path, text)) = file {
            let overlay: Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.into(),
                    message: e.to_string(),
                })?;
            merge(&mut table, overlay);
        }
        for (var, key) in ENV_VARS {
            if let Some(raw) = env(var) {
                set_from_env(&mut table, key, var, &raw)?;
            }
        }
        let config: Config = Config::deserialize(Value::Table(table))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            let env = ENV_VARS
                .iter()
                .find(|(_, k)| *k == key)
                .map(|(v, _)| *v)
                .unwrap_or("-");
            Err(ConfigError::Setting {
                key: key.into(),
                env: env.into(),
                message,
            })
        };
        if !self
            .instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.instance.is_empty()
        {
            return bad(
                "instance",
                "must be letters, digits, '-', '_' or '.'".into(),
            );
        }
        if self.rabbitmq.url.parse::<lapin::uri::AMQPUri>().is_err() {
            return bad(
                "rabbitmq.url",
                format!(
                    "'{}' is not an amqp:// URL",
                    redact::url(&self.rabbitmq.url)
                ),
            );
        }
        if redis::Client::open(self.redis.url.as_str()).is_err() {
            return bad(
                "redis.url",
                format!("'{}' is not a redis:// URL", redact::url(&self.redis.url)),
            );
        }
        for (key, value) in [
            ("rabbitmq.exchange", &self.rabbitmq.exchange),
            ("rabbitmq.command_queue", &self.rabbitmq.command_queue),
            (
                "rabbitmq.dead_letter_exchange",
                &self.rabbitmq.dead_letter_exchange,
            ),
            (
                "rabbitmq.dead_letter_queue",
                &self.rabbitmq.dead_letter_queue,
            ),
            ("docker.network", &self.docker.network),
            ("agents.image", &self.agents.image),
        ] {
            if value.is_empty() {
                return bad(key, "must not be empty".into());
            }
        }
        for (key, value) in [
            ("docker.timeout_s", self.docker.timeout_s),
            ("rabbitmq.timeout_s", self.rabbitmq.timeout_s),
            ("redis.timeout_ms", self.redis.timeout_ms),
            ("redis.processed_ttl_s", self.redis.processed_ttl_s),
            (
                "redis.event_stream_max_len",
                self.redis.event_stream_max_len,
            ),
            ("health.check_interval_s", self.health.check_interval_s),
            ("health.report_interval_s", self.health.report_interval_s),
            ("health.relist_interval_s", self.health.relist_interval_s),
            (
                "health.container_check_interval_s",
                self.health.container_check_interval_s,
            ),
            (
                "health.container_check_timeout_s",
                self.health.container_check_timeout_s,
            ),
            (
                "health.container_check_retries",
                self.health.container_check_retries,
            ),
            (
                "health.restart_backoff_base_ms",
                self.health.restart_backoff_base_ms,
            ),
            (
                "health.crash_loop_window_s",
                self.health.crash_loop_window_s,
            ),
            ("agents.tmpfs_mb", self.agents.tmpfs_mb),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0".into());
            }
        }
        if !self.admin_listen.is_empty()
            && self.admin_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "admin_listen",
                format!("'{}' is not host:port", self.admin_listen),
            );
        }
        if self.docker.max_concurrent_ops == 0 {
            return bad("docker.max_concurrent_ops", "must be at least 1".into());
        }
        if self.rabbitmq.prefetch == 0 {
            return bad("rabbitmq.prefetch", "must be greater than 0".into());
        }
        let h = &self.health;
        if h.restart_backoff_max_ms < h.restart_backoff_base_ms {
            return bad(
                "health.restart_backoff_max_ms",
                "must be at least health.restart_backoff_base_ms".into(),
            );
        }
        if h.unhealthy_restart_after == 0 || h.crash_loop_max_restarts == 0 {
            return bad(
                "health.unhealthy_restart_after",
                "health.unhealthy_restart_after and health.crash_loop_max_restarts must be at least 1".into(),
            );
        }
        let check_ok = |c: &Vec<String>| {
            c.is_empty()
                || (c.len() >= 2 && (c[0] == "CMD" || c[0] == "CMD-SHELL"))
                || (c.len() == 1 && c[0] == "NONE")
        };
        if !check_ok(&h.container_check) {
            return bad(
                "health.container_check",
                "must be [], [\"NONE\"], [\"CMD\", prog, args...] or [\"CMD-SHELL\", command]"
                    .into(),
            );
        }
        for (agent_type, check) in &h.container_check_by_type {
            if crate::protocol::AgentType::parse(agent_type).is_none() || !check_ok(check) {
                return bad(
                    "health.container_check_by_type",
                    format!(
                        "entry '{agent_type}' needs a known agent type and a CMD or CMD-SHELL test"
                    ),
                );
            }
        }
        let a = &self.agents;
        if a.min_memory_mb < 6 || a.min_memory_mb > a.max_memory_mb {
            return bad(
                "agents.min_memory_mb",
                "must be at least 6 (Docker's minimum) and at most agents.max_memory_mb".into(),
            );
        }
        if a.memory_mb < a.min_memory_mb || a.memory_mb > a.max_memory_mb {
            return bad(
                "agents.memory_mb",
                format!(
                    "must be between {} and {}",
                    a.min_memory_mb, a.max_memory_mb
                ),
            );
        }
        if !(a.min_cpus > 0.0 && a.min_cpus <= a.max_cpus) {
            return bad(
                "agents.min_cpus",
                "must be > 0 and <= agents.max_cpus".into(),
            );
        }
        if !(a.cpus >= a.min_cpus && a.cpus <= a.max_cpus) {
            return bad(
                "agents.cpus",
                format!("must be between {} and {}", a.min_cpus, a.max_cpus),
            );
        }
        if a.pids_limit < 16 {
            return bad("agents.pids_limit", "must be at least 16".into());
        }
        if a.stop_timeout_s > a.max_stop_timeout_s {
            return bad(
                "agents.stop_timeout_s",
                "must not exceed agents.max_stop_timeout_s".into(),
            );
        }
        let mut targets = std::collections::HashSet::new();
        for mount in &a.module_mounts {
            match crate::security::check_module_mount(mount) {
                Ok((_, target)) => {
                    if !targets.insert(target) {
                        return bad(
                            "agents.module_mounts",
                            format!("'{mount}' mounts onto a container path already used"),
                        );
                    }
                }
                Err(message) => return bad("agents.module_mounts", message),
            }
        }
        if let Err(message) = crate::security::check_user(&a.user) {
            return bad("agents.user", message);
        }
        for cap in &a.cap_add {
            if let Err(message) = crate::security::addable_capability(cap) {
                return bad("agents.cap_add", message);
            }
        }
        for opt in &a.security_opt {
            if let Err(message) = crate::security::check_security_opt(opt) {
                return bad("agents.security_opt", message);
            }
        }
        if a.nofile < 64 || a.nofile > 1 << 20 {
            return bad("agents.nofile", "must be between 64 and 1048576".into());
        }
        if parse_image_ref(&a.image).is_none() {
            return bad(
                "agents.image",
                format!("'{}' is not a valid image reference", a.image),
            );
        }
        for pattern in &a.allowed_images {
            if let Err(message) = check_image_pattern(pattern) {
                return bad("agents.allowed_images", message);
            }
        }
        if self.rabbitmq.max_body_bytes < 1024 {
            return bad("rabbitmq.max_body_bytes", "must be at least 1024".into());
        }
        if self.docker.network_per_customer
            && !crate::protocol::valid_agent_id(&self.docker.network)
        {
            return bad(
                "docker.network",
                "must be letters, digits, '_', '.' or '-' (at most 63) when docker.network_per_customer is on".into(),
            );
        }
        if !(self.quotas.max_cpus >= 0.0 && self.quotas.max_cpus.is_finite()) {
            return bad(
                "quotas.max_cpus",
                "must be 0 (unlimited) or a positive number".into(),
            );
        }
        for (key, url) in [
            ("agents.rabbitmq_url", &a.rabbitmq_url),
            ("agents.redis_url", &a.redis_url),
            ("gpu.image", &self.gpu.image),
            ("gpu.nvidia_smi", &self.gpu.nvidia_smi),
        ] {
            if url.chars().any(char::is_control) {
                return bad(key, "must not contain control characters".into());
            }
        }
        let w = &self.swarm;
        if !matches!(w.restart_condition.as_str(), "on-failure" | "any" | "none") {
            return bad(
                "swarm.restart_condition",
                format!("'{}' must be on-failure, any or none", w.restart_condition),
            );
        }
        if w.task_timeout_s == 0 {
            return bad("swarm.task_timeout_s", "must be greater than 0".into());
        }
        let g = &self.gpu;
        if g.discover_timeout_s == 0 {
            return bad("gpu.discover_timeout_s", "must be greater than 0".into());
        }
        for (i, device) in g.devices.iter().enumerate() {
            let valid = !device.is_empty()
                && device.len() <= 128
                && device
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
            if !valid {
                return bad(
                    "gpu.devices",
                    format!("'{device}' is not a GPU index or UUID"),
                );
            }
            if g.devices[..i].contains(device) {
                return bad("gpu.devices", format!("'{device}' is listed twice"));
            }
        }
        Ok(())
    }

    /// The validation policy commands are checked against.
    pub fn agent_policy(&self) -> AgentPolicy {
        let a = &self.agents;
        AgentPolicy {
            image: a.image.clone(),
            allowed_images: a.allowed_images.clone(),
            memory_mb: a.memory_mb,
            cpus: a.cpus,
            min_memory_mb: a.min_memory_mb,
            max_memory_mb: a.max_memory_mb,
            min_cpus: a.min_cpus,
            max_cpus: a.max_cpus,
            max_gpus: a.max_gpus,
            stop_timeout_s: a.stop_timeout_s,
            max_stop_timeout_s: a.max_stop_timeout_s,
            max_config_bytes: a.max_config_bytes,
            max_config_depth: a.max_config_depth,
            max_body_bytes: self.rabbitmq.max_body_bytes,
            gpu_image: (!self.gpu.image.is_empty()).then(|| self.gpu.image.clone()),
        }
    }

    /// RABBITMQ_URL given to agents.
    pub fn agent_rabbitmq_url(&self) -> &str {
        if self.agents.rabbitmq_url.is_empty() {
            &self.rabbitmq.url
        } else {
            &self.agents.rabbitmq_url
        }
    }

    /// REDIS_URL given to agents.
    pub fn agent_redis_url(&self) -> &str {
        if self.agents.redis_url.is_empty() {
            &self.redis.url
        } else {
            &self.agents.redis_url
        }
    }
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RabbitConfig {
            url,
            exchange,
            command_queue,
            dead_letter_exchange,
            dead_letter_queue,
            prefetch,
            timeout_s,
            max_body_bytes,
        } = self;
        f.debug_struct("RabbitConfig")
            .field("url", &redact::url(url))
            .field("exchange", exchange)
            .field("command_queue", command_queue)
            .field("dead_letter_exchange", dead_letter_exchange)
            .field("dead_letter_queue", dead_letter_queue)
            .field("prefetch", prefetch)
            .field("timeout_s", timeout_s)
            .field("max_body_bytes", max_body_bytes)
            .finish()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RedisConfig {
            url,
            prefix,
            timeout_ms,
            event_stream_max_len,
            processed_ttl_s,
        } = self;
        f.debug_struct("RedisConfig")
            .field("url", &redact::url(url))
            .field("prefix", prefix)
            .field("timeout_ms", timeout_ms)
            .field("event_stream_max_len", event_stream_max_len)
            .field("processed_ttl_s", processed_ttl_s)
            .finish()
    }
}

impl std::fmt::Debug for AgentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let AgentsConfig {
            image,
            allowed_images,
            memory_mb,
            cpus,
            min_memory_mb,
            max_memory_mb,
            min_cpus,
            max_cpus,
            max_gpus,
            pids_limit,
            tmpfs_mb,
            stop_timeout_s,
            max_stop_timeout_s,
            max_config_bytes,
            max_config_depth,
            module_mounts,
            rabbitmq_url,
            redis_url,
            user,
            cap_add,
            security_opt,
            nofile,
        } = self;
        f.debug_struct("AgentsConfig")
            .field("image", image)
            .field("allowed_images", allowed_images)
            .field("memory_mb", memory_mb)
            .field("cpus", cpus)
            .field("min_memory_mb", min_memory_mb)
            .field("max_memory_mb", max_memory_mb)
            .field("min_cpus", min_cpus)
            .field("max_cpus", max_cpus)
            .field("max_gpus", max_gpus)
            .field("pids_limit", pids_limit)
            .field("tmpfs_mb", tmpfs_mb)
            .field("stop_timeout_s", stop_timeout_s)
            .field("max_stop_timeout_s", max_stop_timeout_s)
            .field("max_config_bytes", max_config_bytes)
            .field("max_config_depth", max_config_depth)
            .field("module_mounts", module_mounts)
            .field("rabbitmq_url", &redact::url(rabbitmq_url))
            .field("redis_url", &redact::url(redis_url))
            .field("user", user)
            .field("cap_add", cap_add)
            .field("security_opt", security_opt)
            .field("nofile", nofile)
            .finish()
    }
}

/// Overlays `over` on `base`, table by table.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets `path` from an environment string, parsed as the type of the default there.
fn set_from_env(table: &mut Table, path: &str, var: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.into(),
        message,
    };
    let (section, key) = match path.split_once('.') {
        Some((s, k)) => (Some(s), k),
        None => (None, path),
    };
    let target = match section {
        Some(s) => match table.get_mut(s) {
            Some(Value::Table(t)) => t,
            _ => return Err(err(format!("section [{s}] is missing"))),
        },
        None => table,
    };
    let value = match target.get(key) {
        Some(Value::Integer(_)) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| err(format!("'{raw}' is not a whole number")))?,
        ),
        Some(Value::Float(_)) => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| err(format!("'{raw}' is not a number")))?,
        ),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(err(format!("'{raw}' is not true or false"))),
        }),
        Some(Value::Array(_)) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    };
    target.insert(key.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(None, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::defaults();
        assert_eq!(c.deployment_mode, DeploymentMode::Docker);
        assert_eq!(c.rabbitmq.exchange, "autogen");
        assert_eq!(c.rabbitmq.command_queue, "agent-manager.commands");
        assert_eq!(c.rabbitmq.dead_letter_exchange, "autogen.dlx");
        assert_eq!(c.rabbitmq.dead_letter_queue, "agent-manager.commands.dead");
        assert_eq!(c.docker.network, "autogen-network");
        assert_eq!(c.agents.image, "autogen-agent:latest");
        assert_eq!(c.agents.memory_mb, 1024);
        assert_eq!(c.agents.cpus, 1.0);
        assert_eq!(c.redis.prefix, "");
        assert_eq!(c.health.report_interval_s, 30);
        assert_eq!(c.agents.stop_timeout_s, 10);
    }

    #[test]
    fn every_env_var_names_a_setting() {
        let defaults: Table = DEFAULT_TOML.parse().unwrap();
        for (var, path) in ENV_VARS {
            let found = match path.split_once('.') {
                Some((s, k)) => defaults.get(s).and_then(|t| t.get(k)).is_some(),
                None => defaults.get(*path).is_some(),
            };
            assert!(found, "{var} -> {path} has no default");
        }
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let file = "[docker]\nnetwork = \"from-file\"\n[agents]\nmemory_mb = 512\n";
        let c = Config::from_sources(Some(("f.toml", file)), |k| {
            (k == "DOCKER_NETWORK").then(|| "from-env".to_string())
        })
        .unwrap();
        assert_eq!(c.docker.network, "from-env");
        assert_eq!(c.agents.memory_mb, 512);
        let c = with_env(&[("ALLOWED_IMAGES", "a:*, b:1"), ("AGENT_CPUS", "2")]).unwrap();
        assert_eq!(c.agents.allowed_images, vec!["a:*", "b:1"]);
        assert_eq!(c.agents.cpus, 2.0);
    }

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
        ] {
            let e = with_env(&[(var, value)])
                .expect_err(&format!("{var}={value} accepted"))
                .to_string();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
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
    fn debug_output_hides_credentials() {
        let c = with_env(&[
            ("RABBITMQ_URL", "amqp://u:rabbit-secret@127.0.0.1:5672/%2f"),
            ("REDIS_URL", "redis://:redis-secret@127.0.0.1:6379/0"),
            ("AGENT_RABBITMQ_URL", "amqp://a:agent-secret@mq/%2f"),
            ("AGENT_REDIS_URL", "redis://a:agent-redis-secret@r/0"),
        ])
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in ["rabbit-secret", "redis-secret", "agent-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("amqp://u:***@127.0.0.1:5672/%2f"));
    }

    #[test]
    fn default_settings_build_the_protocols_sample_policy() {
        assert_eq!(
            Config::defaults().agent_policy(),
            crate::protocol::policy::sample_policy()
        );
    }
}
