//! Settings: the defaults in `config/default.toml` (compiled in), overridden by an
//! optional TOML file, overridden by environment variables. Loading validates every
//! value and names each bad setting (file key and environment variable), all of them at
//! once.
//!
//! This file holds the settings' types, loading and what is derived from them (the
//! command policy, the agents' URLs); [`ENV_VARS`] and reading the environment are in
//! `env.rs`, the checks of each section in `validate.rs`. A string setting whose empty
//! value means "not set" (`admin_listen`, `operator`, `docker.host`, `agents.rabbitmq_url`,
//! `agents.redis_url`, `agents.user`, `gpu.image`) stays a string in TOML and in the
//! environment, and is read as an `Option` through the accessor of the same name.

pub mod agent_urls;
mod env;
mod toml_out;
mod validate;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::{Table, Value};

pub use self::env::ENV_VARS;
/// Built by [`Config::agent_policy`]; defined beside the protocol that reads it.
pub use crate::protocol::AgentPolicy;
use crate::redact;
use validate::Problems;

/// The compiled-in defaults, documented setting by setting.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Why the configuration did not load.
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
    /// A value of the wrong shape: an unknown key, a wrong type, an unknown mode (the
    /// first one found).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Every setting that is wrong, one per line.
    #[error("{0}")]
    Settings(SettingErrors),
}

/// One wrong setting: its file key, its environment variable and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("setting {key} (environment {env}): {message}")]
pub struct SettingError {
    /// The setting's path in the file (`docker.timeout_s`).
    pub key: String,
    /// Its environment variable (`DOCKER_TIMEOUT_S`), `-` when it has none.
    pub env: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every wrong setting one load found, never empty. Shown one per line: a single one
/// as itself, several under a line that counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingErrors(pub Vec<SettingError>);

impl fmt::Display for SettingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} settings are wrong:", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which runtime drives the agents.
    pub deployment_mode: DeploymentMode,
    /// Scopes adoption to this installation's containers (label `autogen.manager-instance`).
    pub instance: String,
    /// Admin HTTP endpoint address; empty: off. Read through [`Config::admin_listen`].
    pub admin_listen: String,
    /// The bearer token the admin endpoint asks for (all but `/healthz` and `/readyz`);
    /// empty: none. Read through [`Config::admin_token`].
    pub admin_token: AdminToken,
    /// Who the operator's acting commands say asked (`requested_by`); empty: the OS
    /// user. Read through [`Config::operator`].
    pub operator: String,
    pub docker: DockerConfig,
    pub rabbitmq: RabbitConfig,
    pub redis: RedisConfig,
    pub agents: AgentsConfig,
    pub health: HealthConfig,
    pub swarm: SwarmConfig,
    pub gpu: GpuConfig,
    /// Per-customer limits (see [`crate::quota`]).
    pub quotas: QuotaConfig,
    /// The automatic halt (contract section 10).
    pub halt: HaltConfig,
    /// The leader lease of the installation's managers (contract section 12).
    pub leader: LeaderConfig,
    /// What agents may reach outside the platform (contract section 11).
    pub egress: EgressConfig,
}

/// How egress is enforced ([`EgressConfig::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// Enforced when this process can change the host's iptables; else said loudly.
    Auto,
    /// Enforced, or the manager does not start.
    Iptables,
    /// Nothing enforced.
    Off,
}

impl EgressMode {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Auto => "auto",
            EgressMode::Iptables => "iptables",
            EgressMode::Off => "off",
        }
    }
}

/// What agents may reach outside the platform (contract section 11), besides each
/// agent's own `egress` list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    pub mode: EgressMode,
    /// Entries every agent may reach (`EGRESS_ALLOW`).
    pub allow: Vec<String>,
    /// Entries each customer's agents may reach, by customer id.
    #[serde(default)]
    pub customers: std::collections::BTreeMap<String, Vec<String>>,
    /// Where the egress proxy listens (`host:port`); `auto`: the gateway of the agents'
    /// network, port 3128; empty: no proxy.
    pub proxy_listen: String,
    /// The proxy's URL as agents are given it (`HTTPS_PROXY`), once it listens; set at
    /// start, never read from a file.
    #[serde(skip)]
    pub proxy_url: Option<String>,
}

impl EgressConfig {
    /// Everything agent `spec` may reach: the installation's entries, its customer's,
    /// its own, each once (the lists were checked when they were read).
    pub fn entries_for(&self, spec: &crate::protocol::AgentSpec) -> Vec<String> {
        let customer = self.customers.get(&spec.customer_id);
        let mut all: Vec<String> = Vec::new();
        for entry in self
            .allow
            .iter()
            .chain(customer.into_iter().flatten())
            .chain(&spec.egress)
        {
            if !all.contains(entry) {
                all.push(entry.clone());
            }
        }
        all
    }
}

/// The leader lease (contract section 12; [`crate::leader`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderConfig {
    /// How long a lease lasts from a renewal, milliseconds.
    pub lease_ms: u64,
    /// How often the leader renews it, milliseconds.
    pub renew_ms: u64,
    /// How often a standby tries to take it, milliseconds.
    pub retry_ms: u64,
}

impl LeaderConfig {
    pub fn timing(&self) -> crate::leader::Timing {
        crate::leader::Timing {
            lease: std::time::Duration::from_millis(self.lease_ms),
            renew_every: std::time::Duration::from_millis(self.renew_ms),
            retry_every: std::time::Duration::from_millis(self.retry_ms),
        }
    }
}

/// The automatic halt on a publishing rate (contract section 10).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaltConfig {
    /// Messages per second an agent may publish, averaged over `window_s`, unless its
    /// `resources.max_messages_per_s` says otherwise; 0: no automatic halt.
    pub max_messages_per_s: f64,
    /// The window the rate is averaged over, seconds.
    pub window_s: u64,
    /// How often the broker's channel counters are read (one listing for every agent),
    /// milliseconds.
    pub watch_interval_ms: u64,
}

/// Whose credentials agents get in `RABBITMQ_URL` and `REDIS_URL` (contract section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CredentialMode {
    /// Each agent its own RabbitMQ and Redis users, made, rotated and removed by the
    /// manager ([`crate::identity`]).
    #[serde(rename = "per-agent")]
    PerAgent,
    /// The agents' URLs as configured, the same for every agent.
    #[serde(rename = "shared")]
    Shared,
}

impl CredentialMode {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialMode::PerAgent => "per-agent",
            CredentialMode::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Docker endpoint; empty for the local socket. Read through [`DockerConfig::host`].
    pub host: String,
    /// A `tcp://` endpoint is spoken to over TLS with the client certificate in
    /// `cert_path` (`https://` always is).
    pub tls_verify: bool,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem`; empty: `~/.docker`. Read
    /// through [`DockerConfig::cert_dir`].
    pub cert_path: String,
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

/// The admin endpoint's bearer token (`ADMIN_TOKEN`): a secret, so Debug output shows
/// `***` in its place.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

/// Debug output never shows the credentials in `url` (see [`redact::url`]).
#[derive(Clone, Deserialize, Serialize)]
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
    /// The management HTTP API (agents' users); empty: derived from `url`. Read through
    /// [`RabbitConfig::management_url`].
    pub management_url: String,
    /// A CA certificate (PEM) an `https` management endpoint may be signed by, besides
    /// the system's roots; empty: none.
    pub management_ca_file: String,
}

/// Debug output never shows the credentials in `url`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    pub timeout_ms: u64,
    /// Approximate cap of each agent's event stream.
    pub event_stream_max_len: u64,
    /// Lifetime of a processed message id.
    pub processed_ttl_s: u64,
    /// `rediss://`: a CA certificate (PEM) the server's may be signed by, besides the
    /// system's roots; empty: none.
    pub tls_ca_file: String,
    /// `rediss://`: the manager's client certificate and key (PEM); empty: none.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

/// Debug output never shows the credentials in the agents' URLs.
#[derive(Clone, Deserialize, Serialize)]
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
    /// URL given to agents as RABBITMQ_URL; empty for the manager's. Read through
    /// [`AgentsConfig::rabbitmq_url`] or [`Config::agent_rabbitmq_url`].
    pub rabbitmq_url: String,
    /// URL given to agents as REDIS_URL; empty for the manager's. Read through
    /// [`AgentsConfig::redis_url`] or [`Config::agent_redis_url`].
    pub redis_url: String,
    /// `per-agent` (each agent its own users) or `shared` (the URLs above as they are).
    pub credentials: CredentialMode,
    /// Seconds between the running manager's checks that every agent's users still
    /// exist (per-agent credentials; 0: only at start and when Redis restarts).
    pub credentials_audit_interval_s: u64,
    /// `UID[:GID]` agents run as (never root); empty keeps the image's user. Read through
    /// [`AgentsConfig::user`].
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// Where resource samples (CPU, memory, pids, OOM kills) come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsSource {
    /// The cgroup files when the Docker host is this machine, else Docker's stats API.
    Auto,
    /// The cgroup files (Docker's stats API where a container's files are not found).
    Cgroup,
    /// Docker's stats API only.
    Docker,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often each agent actor looks at its agent, and how often every agent's
    /// heartbeat is read (one batched read).
    pub check_interval_s: u64,
    /// `agent.health` at least this often per running agent.
    pub report_interval_s: u64,
    /// Every agent is looked at this often, whatever the events stream said.
    pub relist_interval_s: u64,
    /// Given to agents as `HEARTBEAT_INTERVAL_S`: they write their heartbeat this often,
    /// with an expiry of three times it (contract section 8).
    pub heartbeat_interval_s: u64,
    /// How long after its container starts an agent whose image promises heartbeats
    /// (`autogen.heartbeat=true`) and has written none yet is `starting`; after it,
    /// still none is unhealthy.
    pub heartbeat_start_period_s: u64,
    /// Where resource samples come from.
    pub stats_source: StatsSource,
    /// The host's cgroup filesystem (v1 or v2), read for resource samples.
    pub cgroup_root: String,
    /// The host's /proc, read for the containers' network counters.
    pub proc_root: String,
    /// HEALTHCHECK test given to agent containers; empty: none from the manager (the
    /// image's own applies). The costly option: every check is an exec in the agent.
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Placement constraints of every agent's service, in Swarm's syntax
    /// (`node.labels.autogen.pool==general`, `node.role==worker`).
    pub constraints: Vec<String>,
    /// Per agent type (`trading`, ...): constraints added to `constraints`.
    pub constraints_by_type: std::collections::BTreeMap<String, Vec<String>>,
    /// Per customer id: constraints added to `constraints` and the type's.
    pub constraints_by_customer: std::collections::BTreeMap<String, Vec<String>>,
    /// The generic resource kind the swarm's nodes offer their GPUs as
    /// (`--node-generic-resource NVIDIA-GPU=GPU-<uuid>`); GPU agents reserve it.
    pub gpu_resource: String,
}

impl SwarmConfig {
    /// Every constraint of an agent of `agent_type` owned by `customer_id`: the general
    /// ones, then the type's, then the customer's (Swarm requires all of them).
    pub fn constraints_for(&self, agent_type: &str, customer_id: &str) -> Vec<String> {
        let mut all = self.constraints.clone();
        for extra in [
            self.constraints_by_type.get(agent_type),
            self.constraints_by_customer.get(customer_id),
        ]
        .into_iter()
        .flatten()
        {
            for c in extra {
                if !all.contains(c) {
                    all.push(c.clone());
                }
            }
        }
        all
    }
}

/// GPU mode: the inventory and the image of GPU agents.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Read through [`GpuConfig::image`].
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
    /// the process environment). Environment variables that do not read and settings
    /// that fail validation are reported together; a value of the wrong shape (serde's
    /// first error) is reported alone, or after the variables that did not read.
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
        let unread = env::apply(&mut table, env);
        let config = match Config::deserialize(Value::Table(table)) {
            Ok(config) => config,
            Err(e) if unread.is_empty() => return Err(ConfigError::Invalid(e.to_string())),
            Err(_) => return Err(ConfigError::Settings(SettingErrors(unread))),
        };
        let mut problems = Problems::new(unread);
        config.validate(&mut problems);
        let problems = problems.into_vec();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Settings(SettingErrors(problems)))
        }
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
            gpu_image: self.gpu.image().map(str::to_string),
        }
    }

    /// RABBITMQ_URL given to agents.
    pub fn agent_rabbitmq_url(&self) -> &str {
        self.agents.rabbitmq_url().unwrap_or(&self.rabbitmq.url)
    }

    /// REDIS_URL given to agents.
    pub fn agent_redis_url(&self) -> &str {
        self.agents.redis_url().unwrap_or(&self.redis.url)
    }

    /// The admin HTTP endpoint's address; `None`: off (`admin_listen = ""`).
    pub fn admin_listen(&self) -> Option<&str> {
        set(&self.admin_listen)
    }

    /// The admin endpoint's bearer token; `None`: it asks for none (`admin_token = ""`).
    pub fn admin_token(&self) -> Option<&str> {
        set(&self.admin_token.0)
    }

    /// The operator's configured name; `None`: the OS user's (`operator = ""`).
    pub fn operator(&self) -> Option<&str> {
        set(&self.operator)
    }
}

/// The host of `scheme://[user[:password]@]host[:port][/path]` (IPv6 in brackets).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `value` unless it is empty: how a string setting says "not set".
fn set(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

impl DockerConfig {
    /// The Docker endpoint; `None`: the local socket (`host = ""`).
    pub fn host(&self) -> Option<&str> {
        set(&self.host)
    }

    /// Whether the Docker endpoint is spoken to over TLS with a client certificate.
    pub fn uses_tls(&self) -> bool {
        self.host().is_some_and(|h| {
            h.starts_with("https://") || (self.tls_verify && h.starts_with("tcp://"))
        })
    }

    /// Where `ca.pem`, `cert.pem` and `key.pem` are: `cert_path`, else `~/.docker`.
    pub fn cert_dir(&self) -> std::path::PathBuf {
        match set(&self.cert_path) {
            Some(dir) => dir.into(),
            None => std::path::Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".docker"),
        }
    }
}

impl RabbitConfig {
    /// The management API's URL: `management_url`, else `http://<host>:15672` (for
    /// `amqps://`: `https://<host>:15671`) with `url`'s user and password (AMQP's default
    /// `guest:guest` when it names none).
    pub fn management_url(&self) -> String {
        if let Some(url) = set(&self.management_url) {
            return url.to_string();
        }
        let Ok(amqp) = url::Url::parse(&self.url) else {
            return "http://guest:guest@127.0.0.1:15672".into();
        };
        let (scheme, port) = match amqp.scheme() {
            "amqps" => ("https", 15671),
            _ => ("http", 15672),
        };
        let or_guest = |s: &str| {
            if s.is_empty() {
                "guest".to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "{scheme}://{}:{}@{}:{port}",
            or_guest(amqp.username()),
            or_guest(amqp.password().unwrap_or("")),
            amqp.host_str()
                .filter(|h| !h.is_empty())
                .unwrap_or("localhost"),
        )
    }

    /// The extra CA of an `https` management endpoint; `None`: the system's roots only.
    pub fn management_ca_file(&self) -> Option<&str> {
        set(&self.management_ca_file)
    }
}

impl RedisConfig {
    /// `rediss://`: the extra CA; `None`: the system's roots only.
    pub fn tls_ca_file(&self) -> Option<&str> {
        set(&self.tls_ca_file)
    }

    /// `rediss://`: the client certificate and key, when both are set.
    pub fn tls_client(&self) -> Option<(&str, &str)> {
        set(&self.tls_cert_file).zip(set(&self.tls_key_file))
    }
}

impl AgentsConfig {
    /// The URL given to agents as RABBITMQ_URL; `None`: the manager's own
    /// ([`Config::agent_rabbitmq_url`] resolves it).
    pub fn rabbitmq_url(&self) -> Option<&str> {
        set(&self.rabbitmq_url)
    }

    /// The URL given to agents as REDIS_URL; `None`: the manager's own
    /// ([`Config::agent_redis_url`] resolves it).
    pub fn redis_url(&self) -> Option<&str> {
        set(&self.redis_url)
    }

    /// The `UID[:GID]` agents run as; `None`: the image's own user (`user = ""`).
    pub fn user(&self) -> Option<&str> {
        set(&self.user)
    }
}

impl GpuConfig {
    /// The image of a GPU agent whose create names none; `None`: `agents.image`.
    pub fn image(&self) -> Option<&str> {
        set(&self.image)
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
            management_url,
            management_ca_file,
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
            .field("management_url", &redact::url(management_url))
            .field("management_ca_file", management_ca_file)
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
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
        } = self;
        f.debug_struct("RedisConfig")
            .field("url", &redact::url(url))
            .field("prefix", prefix)
            .field("timeout_ms", timeout_ms)
            .field("event_stream_max_len", event_stream_max_len)
            .field("processed_ttl_s", processed_ttl_s)
            .field("tls_ca_file", tls_ca_file)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
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
            credentials,
            credentials_audit_interval_s,
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
            .field("credentials", credentials)
            .field("credentials_audit_interval_s", credentials_audit_interval_s)
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

/// Loading with only the given environment variables, for the tests of this module.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use super::{Config, ConfigError};

    pub fn with_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(None, |k| map.get(k).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::with_env;
    use super::*;

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
        assert_eq!(c.health.heartbeat_interval_s, 10);
        assert_eq!(c.health.heartbeat_start_period_s, 60);
        assert!(
            c.health.container_check.is_empty(),
            "no exec probe by default"
        );
        assert_eq!(c.health.stats_source, StatsSource::Auto);
        assert_eq!(c.health.cgroup_root, "/sys/fs/cgroup");
    }

    #[test]
    fn heartbeat_and_stats_settings_are_checked() {
        let c = with_env(&[
            ("HEARTBEAT_INTERVAL_S", "2"),
            ("HEARTBEAT_START_PERIOD_S", "5"),
            ("STATS_SOURCE", "docker"),
            ("CGROUP_ROOT", "/host/sys/fs/cgroup"),
        ])
        .unwrap();
        assert_eq!(c.health.heartbeat_interval_s, 2);
        assert_eq!(c.health.heartbeat_start_period_s, 5);
        assert_eq!(c.health.stats_source, StatsSource::Docker);
        assert_eq!(c.health.cgroup_root, "/host/sys/fs/cgroup");
        let e = with_env(&[
            ("HEARTBEAT_INTERVAL_S", "0"),
            ("PROC_ROOT", "proc"),
            ("HEARTBEAT_START_PERIOD_S", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("HEARTBEAT_INTERVAL_S"), "{e}");
        assert!(e.contains("HEARTBEAT_START_PERIOD_S"), "{e}");
        assert!(e.contains("PROC_ROOT"), "{e}");
        assert!(with_env(&[("STATS_SOURCE", "magic")]).is_err());
    }

    #[test]
    fn url_hosts_and_loopback_are_recognised() {
        for (url, host) in [
            ("redis://[::1]:6379", Some("::1")),
            ("amqp://a:b@mq/%2f", Some("mq")),
            ("redis://10.0.0.1", Some("10.0.0.1")),
            ("nonsense", None),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("::1"));
        assert!(!is_loopback_host("172.18.0.1"));
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
        let c = with_env(&[
            ("RABBITMQ_URL", "amqps://mq:p%40ss@broker.example:5671/prod"),
            (
                "RABBITMQ_MANAGEMENT_URL",
                "https://admin:mgmt-secret@mq.example/",
            ),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("mgmt-secret"));
        assert_eq!(
            c.rabbitmq.management_url(),
            "https://admin:mgmt-secret@mq.example/"
        );
        let c =
            with_env(&[("RABBITMQ_URL", "amqps://mq:p%40ss@broker.example:5671/prod")]).unwrap();
        assert_eq!(
            c.rabbitmq.management_url(),
            "https://mq:p%40ss@broker.example:15671"
        );
    }

    #[test]
    fn default_settings_build_the_protocols_sample_policy() {
        assert_eq!(
            Config::defaults().agent_policy(),
            crate::protocol::policy::sample_policy()
        );
    }

    #[test]
    fn empty_strings_read_as_not_set() {
        let c = Config::defaults();
        assert_eq!(c.admin_listen(), Some("127.0.0.1:9464"));
        assert_eq!(c.docker.host(), None);
        assert_eq!(c.agents.rabbitmq_url(), None);
        assert_eq!(c.agents.redis_url(), None);
        assert_eq!(c.agents.user(), Some("65534:65534"));
        assert_eq!(c.gpu.image(), None);
        assert_eq!(c.agent_rabbitmq_url(), c.rabbitmq.url);
        assert_eq!(c.agent_redis_url(), c.redis.url);
        assert_eq!(c.agents.credentials, CredentialMode::PerAgent);
        assert_eq!(
            c.rabbitmq.management_url(),
            "http://guest:guest@127.0.0.1:15672"
        );
        let c = with_env(&[
            ("ADMIN_LISTEN", ""),
            ("DOCKER_HOST", "tcp://docker:2375"),
            ("AGENT_RABBITMQ_URL", "amqp://a:p@mq/%2f"),
            ("AGENT_REDIS_URL", "redis://a:p@r/0"),
            ("AGENT_USER", ""),
            ("GPU_IMAGE", "autogen-agent:cuda"),
        ])
        .unwrap();
        assert_eq!(c.admin_listen(), None);
        assert_eq!(c.docker.host(), Some("tcp://docker:2375"));
        assert_eq!(c.agent_rabbitmq_url(), "amqp://a:p@mq/%2f");
        assert_eq!(c.agent_redis_url(), "redis://a:p@r/0");
        assert_eq!(c.agents.user(), None);
        assert_eq!(c.gpu.image(), Some("autogen-agent:cuda"));
        assert_eq!(
            c.agent_policy().gpu_image.as_deref(),
            Some("autogen-agent:cuda")
        );
    }
}
