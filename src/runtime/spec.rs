//! The container an agent gets (contract section 4): name, labels, environment, limits
//! and security settings. The only place that knows the label and env names, so also
//! where the labels of the agents' networks and the filter that finds this instance's
//! containers and services are made.

use std::collections::HashMap;

use uuid::Uuid;

use crate::config::Config;
use crate::credentials::AgentUrls;
use crate::protocol::{AgentSpec, AgentType, Resources};
use crate::store::AgentRecord;

pub const LABEL_MANAGED_BY: &str = "autogen.managed-by";
pub const MANAGED_BY_VALUE: &str = "agent-manager";
pub const LABEL_AGENT_ID: &str = "autogen.agent-id";
pub const LABEL_CUSTOMER_ID: &str = "autogen.customer-id";
pub const LABEL_AGENT_TYPE: &str = "autogen.agent-type";
pub const LABEL_AGENT_NAME: &str = "autogen.agent-name";
/// Which manager installation owns the container (see `instance` in the config).
pub const LABEL_INSTANCE: &str = "autogen.manager-instance";
/// [`recreate_hash`] of the agent's spec: a create that finds a container of its name
/// with this hash adopts it, one with another hash is stale. The label keeps the name
/// earlier versions gave it, so their containers are still recognised.
pub const LABEL_RECREATE_HASH: &str = "autogen.spec-hash";
/// The agent's resources as JSON, to rebuild its record from Docker alone.
pub const LABEL_RESOURCES: &str = "autogen.resources";

pub const ENV_AGENT_ID: &str = "AGENT_ID";
pub const ENV_CUSTOMER_ID: &str = "CUSTOMER_ID";
pub const ENV_AGENT_TYPE: &str = "AGENT_TYPE";
pub const ENV_AGENT_NAME: &str = "AGENT_NAME";
pub const ENV_CONFIG: &str = "CONFIG";
pub const ENV_AUTOGEN_CONFIG: &str = "AUTOGEN_CONFIG";
pub const ENV_RABBITMQ_URL: &str = "RABBITMQ_URL";
pub const ENV_REDIS_URL: &str = "REDIS_URL";
/// How often the agent writes its heartbeat, in seconds (contract section 8).
pub const ENV_HEARTBEAT_INTERVAL_S: &str = "HEARTBEAT_INTERVAL_S";
/// The prefix of every Redis key (`REDIS_PREFIX`): the agent's heartbeat key and its
/// `agent:<id>:data:*` keys are behind it.
pub const ENV_REDIS_PREFIX: &str = "REDIS_PREFIX";
/// The exchange the agent's tasks and results go through (contract section 8; the
/// exchange its own RabbitMQ user may use, section 7).
pub const ENV_RABBITMQ_EXCHANGE: &str = "RABBITMQ_EXCHANGE";
/// Section 11: the egress proxy, for destinations with host names (standard names).
pub const ENV_HTTPS_PROXY: &str = "HTTPS_PROXY";
pub const ENV_HTTP_PROXY: &str = "HTTP_PROXY";
/// Section 11: what is reached without the proxy (the platform's services).
pub const ENV_NO_PROXY: &str = "NO_PROXY";
/// GPU mode: the devices the NVIDIA runtime exposes to the agent.
pub const ENV_NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
/// GPU mode: the driver libraries the NVIDIA runtime mounts (compute and nvidia-smi).
pub const ENV_NVIDIA_DRIVER_CAPABILITIES: &str = "NVIDIA_DRIVER_CAPABILITIES";
pub const NVIDIA_DRIVER_CAPABILITIES: &str = "compute,utility";

/// The labels of what the manager makes besides agents (the agents' networks).
pub fn managed_labels() -> HashMap<String, String> {
    HashMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())])
}

/// The labels of the customer's own network (`docker.network_per_customer`): the
/// manager's, and the customer's id so operators can find and prune it.
pub fn customer_network_labels(spec: &ContainerSpec) -> HashMap<String, String> {
    let mut labels = managed_labels();
    if let Some(customer) = spec.labels.get(LABEL_CUSTOMER_ID) {
        labels.insert(LABEL_CUSTOMER_ID.to_string(), customer.clone());
    }
    labels
}

/// Docker's list and events filter for the containers and services of manager
/// installation `instance`: `label` = managed by the manager, of that instance.
pub fn managed_filters(instance: &str) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([(
        "label",
        vec![
            format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"),
            format!("{LABEL_INSTANCE}={instance}"),
        ],
    )])
}

/// json-file log rotation in every mode: size of one file, and files kept.
pub const LOG_MAX_SIZE: &str = "10m";
pub const LOG_MAX_FILES: &str = "3";

/// Runtime-neutral description of one agent's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// `agent-<agent_id>`: deterministic, so a retried create finds its own container.
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub gpus: u32,
    pub pids_limit: i64,
    pub tmpfs_mb: u64,
    /// The agents' network, or the customer's own one (`docker.network_per_customer`).
    pub network: String,
    /// True when `network` is a per-customer network (created on demand).
    pub customer_network: bool,
    /// `host:target` pairs, mounted read-only.
    pub module_mounts: Vec<String>,
    pub recreate_hash: String,
    /// Grace period between SIGTERM and SIGKILL when the runtime stops the agent by
    /// itself (swarm: the task's `StopGracePeriod`); a stop command gives its own.
    pub stop_timeout_s: u32,
    /// GPU mode: the specific devices (indexes or UUIDs) given to the agent. Empty in
    /// the spec built here; the GPU runtime fills it from its allocation.
    pub gpu_devices: Vec<String>,
    /// HEALTHCHECK for the container; `None` keeps the image's.
    pub healthcheck: Option<Healthcheck>,
    /// `UID[:GID]` the agent runs as; empty keeps the image's user.
    pub user: Option<String>,
    /// Capabilities added back after dropping all (checked by [`crate::security`]).
    pub cap_add: Vec<String>,
    /// Security options: `no-new-privileges` plus the configured extras.
    pub security_opt: Vec<String>,
    /// The `nofile` ulimit (soft = hard).
    pub nofile: u64,
    /// The MAC address the agent's egress rules are keyed on (`crate::egress`); `None`:
    /// Docker's own.
    pub mac_address: Option<String>,
}

/// Docker's HEALTHCHECK, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval_s: u64,
    pub timeout_s: u64,
    pub retries: u64,
    pub start_period_s: u64,
}

/// The HEALTHCHECK an agent of `agent_type` gets.
pub fn healthcheck(config: &Config, agent_type: AgentType) -> Option<Healthcheck> {
    let h = &config.health;
    let test = h
        .container_check_by_type
        .get(agent_type.as_str())
        .unwrap_or(&h.container_check);
    (!test.is_empty()).then(|| Healthcheck {
        test: test.clone(),
        interval_s: h.container_check_interval_s,
        timeout_s: h.container_check_timeout_s,
        retries: h.container_check_retries,
        start_period_s: h.container_check_start_period_s,
    })
}

impl ContainerSpec {
    /// The agent this container is for.
    pub fn agent_id(&self) -> Option<&str> {
        self.labels.get(LABEL_AGENT_ID).map(String::as_str)
    }

    /// The same container with `devices` as its GPUs: the device list, and the NVIDIA
    /// environment that makes exactly those devices visible inside it.
    pub fn with_gpu_devices(mut self, devices: Vec<String>) -> ContainerSpec {
        let owned = |kv: &String| {
            kv.starts_with(&format!("{ENV_NVIDIA_VISIBLE_DEVICES}="))
                || kv.starts_with(&format!("{ENV_NVIDIA_DRIVER_CAPABILITIES}="))
        };
        self.env.retain(|kv| !owned(kv));
        if !devices.is_empty() {
            self.env.push(format!(
                "{ENV_NVIDIA_VISIBLE_DEVICES}={}",
                devices.join(",")
            ));
            self.env.push(format!(
                "{ENV_NVIDIA_DRIVER_CAPABILITIES}={NVIDIA_DRIVER_CAPABILITIES}"
            ));
        }
        self.gpu_devices = devices;
        self
    }

    /// The same container with the agent's own login (contract section 7): its
    /// `RABBITMQ_URL` and `REDIS_URL` carry `urls`, and its recreate hash also names this
    /// issue of the login (`serial`, random), so that a container made with an earlier
    /// password (an attempt a dead manager left) is replaced, never adopted.
    pub fn with_login(mut self, urls: &AgentUrls, serial: &str) -> ContainerSpec {
        for kv in &mut self.env {
            if kv.starts_with(&format!("{ENV_RABBITMQ_URL}=")) {
                *kv = format!("{ENV_RABBITMQ_URL}={}", urls.rabbitmq);
            } else if kv.starts_with(&format!("{ENV_REDIS_URL}=")) {
                *kv = format!("{ENV_REDIS_URL}={}", urls.redis);
            }
        }
        let issued = format!("{}:{serial}", self.recreate_hash);
        self.recreate_hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, issued.as_bytes())
            .simple()
            .to_string();
        self.labels
            .insert(LABEL_RECREATE_HASH.to_string(), self.recreate_hash.clone());
        self
    }
}

/// The container name of an agent.
pub fn container_name(agent_id: &str) -> String {
    format!("agent-{agent_id}")
}

/// A stable digest of the parts of a spec that need a new container when they change:
/// everything but memory and CPU limits (which Docker changes in place). Two specs with
/// equal hashes can share a container.
pub fn recreate_hash(spec: &AgentSpec) -> String {
    let replaced = serde_json::json!({
        "customer_id": spec.customer_id,
        "agent_type": spec.agent_type,
        "name": spec.name,
        "config": spec.config,
        "autogen_config": spec.autogen_config,
        "image": spec.image,
        "gpus": spec.resources.gpus,
    });
    Uuid::new_v5(&Uuid::NAMESPACE_OID, replaced.to_string().as_bytes())
        .simple()
        .to_string()
}

/// `NO_PROXY`: loopback and the hosts of the agents' RabbitMQ and Redis URLs.
fn no_proxy(config: &Config) -> String {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for url in [config.agent_rabbitmq_url(), config.agent_redis_url()] {
        if let Some((host, _)) = crate::egress::host_port(url, 0) {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts.join(",")
}

/// The container for `record` under `config`.
pub fn build(record: &AgentRecord, config: &Config) -> ContainerSpec {
    let spec = &record.spec;
    let json = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    let hash = recreate_hash(spec);
    let labels = HashMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_AGENT_ID.to_string(), record.agent_id.clone()),
        (LABEL_CUSTOMER_ID.to_string(), spec.customer_id.clone()),
        (
            LABEL_AGENT_TYPE.to_string(),
            spec.agent_type.as_str().to_string(),
        ),
        (LABEL_AGENT_NAME.to_string(), spec.name.clone()),
        (LABEL_INSTANCE.to_string(), config.instance.clone()),
        (LABEL_RECREATE_HASH.to_string(), hash.clone()),
        (
            LABEL_RESOURCES.to_string(),
            serde_json::to_string(&spec.resources).unwrap_or_default(),
        ),
    ]);
    let mut env = vec![
        format!("{ENV_AGENT_ID}={}", record.agent_id),
        format!("{ENV_CUSTOMER_ID}={}", spec.customer_id),
        format!("{ENV_AGENT_TYPE}={}", spec.agent_type.as_str()),
        format!("{ENV_AGENT_NAME}={}", spec.name),
        format!("{ENV_CONFIG}={}", json(&spec.config)),
        format!("{ENV_AUTOGEN_CONFIG}={}", json(&spec.autogen_config)),
        format!("{ENV_RABBITMQ_URL}={}", config.agent_rabbitmq_url()),
        format!("{ENV_REDIS_URL}={}", config.agent_redis_url()),
        format!(
            "{ENV_HEARTBEAT_INTERVAL_S}={}",
            config.health.heartbeat_interval_s
        ),
        format!("{ENV_REDIS_PREFIX}={}", config.redis.prefix),
        format!("{ENV_RABBITMQ_EXCHANGE}={}", config.rabbitmq.exchange),
    ];
    if let Some(proxy) = &config.egress.proxy_url {
        env.extend([
            format!("{ENV_HTTPS_PROXY}={proxy}"),
            format!("{ENV_HTTP_PROXY}={proxy}"),
            format!("{ENV_NO_PROXY}={}", no_proxy(config)),
        ]);
    }
    ContainerSpec {
        name: container_name(&record.agent_id),
        image: spec.image.clone(),
        env,
        labels,
        memory_bytes: (spec.resources.memory_mb * 1024 * 1024) as i64,
        nano_cpus: (spec.resources.cpus * 1e9).round() as i64,
        gpus: spec.resources.gpus,
        pids_limit: config.agents.pids_limit,
        tmpfs_mb: config.agents.tmpfs_mb,
        network: if config.docker.network_per_customer {
            crate::security::customer_network(&config.docker.network, &spec.customer_id)
        } else {
            config.docker.network.clone()
        },
        customer_network: config.docker.network_per_customer,
        module_mounts: config.agents.module_mounts.clone(),
        recreate_hash: hash,
        stop_timeout_s: config.agents.stop_timeout_s,
        gpu_devices: Vec::new(),
        healthcheck: healthcheck(config, spec.agent_type),
        user: config.agents.user().map(str::to_string),
        cap_add: config
            .agents
            .cap_add
            .iter()
            .filter_map(|c| crate::security::addable_capability(c).ok())
            .collect(),
        security_opt: crate::security::security_opts(&config.agents.security_opt),
        nofile: config.agents.nofile,
        mac_address: crate::egress::keyed_by_mac(config)
            .then(|| crate::egress::rules::mac_of(&config.instance, &record.agent_id)),
    }
}

/// What can be rebuilt of an agent from its container's labels and environment, when
/// Redis has lost its record. `None` when the container is not a complete agent.
pub fn spec_from_container(
    labels: &HashMap<String, String>,
    env_var: impl Fn(&str) -> Option<String>,
    image: &str,
) -> Option<(String, AgentSpec)> {
    let agent_id = labels.get(LABEL_AGENT_ID)?.clone();
    let agent_type = AgentType::parse(labels.get(LABEL_AGENT_TYPE)?)?;
    let resources: Resources = serde_json::from_str(labels.get(LABEL_RESOURCES)?).ok()?;
    let parse = |name: &str| {
        env_var(name)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_else(|| serde_json::json!({}))
    };
    Some((
        agent_id,
        AgentSpec {
            customer_id: labels.get(LABEL_CUSTOMER_ID)?.clone(),
            agent_type,
            name: labels.get(LABEL_AGENT_NAME)?.clone(),
            config: parse(ENV_CONFIG),
            autogen_config: parse(ENV_AUTOGEN_CONFIG),
            resources,
            image: image.to_string(),
            // Not kept on the container (an update changes it in place): a rebuilt
            // record allows nothing outside the platform until an update says again.
            egress: Vec::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DesiredState;
    use serde_json::json;

    fn record() -> AgentRecord {
        AgentRecord::new("a1", crate::protocol::sample_spec(), DesiredState::Running)
    }

    #[test]
    fn container_carries_contract_labels_env_and_limits() {
        let c = build(&record(), &Config::defaults());
        assert_eq!(c.name, "agent-a1");
        assert_eq!(c.labels[LABEL_MANAGED_BY], "agent-manager");
        assert_eq!(c.labels[LABEL_AGENT_ID], "a1");
        assert_eq!(c.labels[LABEL_CUSTOMER_ID], "c1");
        assert_eq!(c.labels[LABEL_AGENT_TYPE], "trading");
        assert_eq!(c.labels[LABEL_AGENT_NAME], "Alpha");
        for var in [
            "AGENT_ID=a1",
            "CUSTOMER_ID=c1",
            "AGENT_TYPE=trading",
            "AGENT_NAME=Alpha",
            "CONFIG={\"symbol\":\"BTC\"}",
            "AUTOGEN_CONFIG={\"model\":\"x\"}",
        ] {
            assert!(c.env.contains(&var.to_string()), "{var}");
        }
        assert!(c.env.iter().any(|e| e.starts_with("RABBITMQ_URL=amqp://")));
        assert!(c.env.iter().any(|e| e.starts_with("REDIS_URL=redis://")));
        assert!(c.env.contains(&"HEARTBEAT_INTERVAL_S=10".to_string()));
        assert!(c.env.contains(&"REDIS_PREFIX=".to_string()));
        assert!(c.env.contains(&"RABBITMQ_EXCHANGE=autogen".to_string()));
        assert_eq!(c.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(c.nano_cpus, 500_000_000);
        assert_eq!(c.network, "autogen-network");
        assert!(!c.customer_network);
        assert_eq!(c.user.as_deref(), Some("65534:65534"));
        assert!(c.cap_add.is_empty());
        assert_eq!(c.security_opt, vec!["no-new-privileges:true"]);
    }

    #[test]
    fn per_customer_network_is_named_after_the_customer() {
        let mut config = Config::defaults();
        config.docker.network_per_customer = true;
        let c = build(&record(), &config);
        assert_eq!(c.network, "autogen-network-c1");
        assert!(c.customer_network);
        let labels = customer_network_labels(&c);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(labels[LABEL_CUSTOMER_ID], "c1");
    }

    #[test]
    fn the_filter_selects_this_instances_managed_objects() {
        let f = managed_filters("blue");
        assert_eq!(f.len(), 1);
        assert_eq!(
            f["label"],
            vec![
                "autogen.managed-by=agent-manager".to_string(),
                "autogen.manager-instance=blue".to_string()
            ]
        );
    }

    #[test]
    fn gpu_devices_come_with_their_environment() {
        let c = build(&record(), &Config::defaults());
        assert!(c.gpu_devices.is_empty());
        assert!(!c.env.iter().any(|e| e.starts_with("NVIDIA_")));
        let g = c
            .clone()
            .with_gpu_devices(vec!["0".into(), "GPU-abc".into()]);
        assert_eq!(g.gpu_devices, vec!["0", "GPU-abc"]);
        assert!(g
            .env
            .contains(&"NVIDIA_VISIBLE_DEVICES=0,GPU-abc".to_string()));
        assert!(g
            .env
            .contains(&"NVIDIA_DRIVER_CAPABILITIES=compute,utility".to_string()));
        // Re-allocating replaces the variables instead of adding more.
        let g = g.with_gpu_devices(vec!["1".into()]);
        let visible: Vec<_> = g
            .env
            .iter()
            .filter(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES="))
            .collect();
        assert_eq!(visible, vec!["NVIDIA_VISIBLE_DEVICES=1"]);
        assert_eq!(g.clone().with_gpu_devices(vec![]).env, c.env);
        assert_eq!(g.agent_id(), Some("a1"));
    }

    #[test]
    fn the_agents_own_login_replaces_the_urls_and_names_a_new_container() {
        let c = build(&record(), &Config::defaults());
        let login = crate::credentials::AgentLogin::fresh("a1").unwrap();
        let urls =
            AgentUrls::new("amqp://guest:guest@mq:5672/%2f", "redis://r:6379/0", &login).unwrap();
        let own = c.clone().with_login(&urls, &login.serial);
        let pw = login.password.expose();
        assert!(own
            .env
            .contains(&format!("RABBITMQ_URL=amqp://agent-a1:{pw}@mq:5672/%2f")));
        assert!(own
            .env
            .contains(&format!("REDIS_URL=redis://agent-a1:{pw}@r:6379/0")));
        assert_eq!(own.env.len(), c.env.len());
        assert!(!own.env.iter().any(|e| e.contains("guest")));
        assert_ne!(own.recreate_hash, c.recreate_hash);
        assert_eq!(own.labels[LABEL_RECREATE_HASH], own.recreate_hash);
        // Nothing of the password in the labels.
        assert!(!format!("{:?}", own.labels).contains(pw));
        let again = c.with_login(&urls, "another-serial");
        assert_ne!(again.recreate_hash, own.recreate_hash);
    }

    #[test]
    fn healthcheck_comes_from_config_with_per_type_override() {
        let mut config = Config::defaults();
        let c = build(&record(), &config);
        assert!(c.healthcheck.is_none(), "no exec probe by default");
        config.health.container_check = vec!["CMD-SHELL".into(), "test ! -e /tmp/unhealthy".into()];
        let hc = build(&record(), &config)
            .healthcheck
            .expect("the configured healthcheck");
        assert_eq!(hc.test, vec!["CMD-SHELL", "test ! -e /tmp/unhealthy"]);
        assert_eq!(hc.interval_s, 5);
        config
            .health
            .container_check_by_type
            .insert("trading".into(), vec!["CMD".into(), "/app/check".into()]);
        let c = build(&record(), &config);
        assert_eq!(c.healthcheck.unwrap().test, vec!["CMD", "/app/check"]);
        config.health.container_check_by_type.clear();
        config.health.container_check.clear();
        assert!(build(&record(), &config).healthcheck.is_none());
    }

    #[test]
    fn recreate_hash_ignores_memory_and_cpus_only() {
        let a = record();
        let mut b = a.clone();
        b.spec.resources.memory_mb = 2048;
        b.spec.resources.cpus = 2.0;
        assert_eq!(recreate_hash(&a.spec), recreate_hash(&b.spec));
        b.spec.config = json!({"symbol": "ETH"});
        assert_ne!(recreate_hash(&a.spec), recreate_hash(&b.spec));
    }

    #[test]
    fn spec_is_rebuilt_from_labels_and_env() {
        let r = record();
        let c = build(&r, &Config::defaults());
        let env = |name: &str| {
            c.env
                .iter()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        let (id, spec) = spec_from_container(&c.labels, env, &c.image).unwrap();
        assert_eq!(id, "a1");
        assert_eq!(spec, r.spec);
    }
}
