//! Settings from environment variables: [`ENV_VARS`] names the variable of each setting,
//! and a variable's text is read as the type of the setting's default (numbers,
//! booleans, comma-separated lists, strings). A variable that does not read is reported
//! with every other wrong setting rather than on its own.
//!
//! The settings that carry credentials ([`SECRET_VARS`]) may instead be given as
//! `<VAR>_FILE`: the path of a file holding the value (Docker and Swarm secrets), so
//! the manager's own passwords need not sit in its environment or in `docker inspect`.

use toml::{Table, Value};

use super::SettingError;

/// Environment variable → setting path. One line per setting.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("DEPLOYMENT_MODE", "deployment_mode"),
    ("MANAGER_INSTANCE", "instance"),
    ("ADMIN_LISTEN", "admin_listen"),
    ("ADMIN_TOKEN", "admin_token"),
    ("AGENT_MANAGER_OPERATOR", "operator"),
    ("DOCKER_HOST", "docker.host"),
    ("DOCKER_TLS_VERIFY", "docker.tls_verify"),
    ("DOCKER_CERT_PATH", "docker.cert_path"),
    ("DOCKER_NETWORK", "docker.network"),
    ("DOCKER_TIMEOUT_S", "docker.timeout_s"),
    ("DOCKER_MAX_CONCURRENT_OPS", "docker.max_concurrent_ops"),
    ("ORPHAN_GRACE_S", "docker.orphan_grace_s"),
    ("ORPHAN_DRY_RUN", "docker.orphan_dry_run"),
    ("NETWORK_PER_CUSTOMER", "docker.network_per_customer"),
    ("NETWORK_INTERNAL", "docker.network_internal"),
    ("EGRESS_MODE", "egress.mode"),
    ("EGRESS_ALLOW", "egress.allow"),
    ("EGRESS_PROXY_LISTEN", "egress.proxy_listen"),
    ("RABBITMQ_URL", "rabbitmq.url"),
    ("RABBITMQ_EXCHANGE", "rabbitmq.exchange"),
    ("COMMAND_QUEUE", "rabbitmq.command_queue"),
    ("DEAD_LETTER_EXCHANGE", "rabbitmq.dead_letter_exchange"),
    ("DEAD_LETTER_QUEUE", "rabbitmq.dead_letter_queue"),
    ("RABBITMQ_PREFETCH", "rabbitmq.prefetch"),
    ("RABBITMQ_TIMEOUT_S", "rabbitmq.timeout_s"),
    ("MAX_BODY_BYTES", "rabbitmq.max_body_bytes"),
    ("RABBITMQ_MANAGEMENT_URL", "rabbitmq.management_url"),
    ("RABBITMQ_MANAGEMENT_CA_FILE", "rabbitmq.management_ca_file"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_PREFIX", "redis.prefix"),
    ("REDIS_TIMEOUT_MS", "redis.timeout_ms"),
    ("EVENT_STREAM_MAX_LEN", "redis.event_stream_max_len"),
    ("PROCESSED_TTL_S", "redis.processed_ttl_s"),
    ("REDIS_TLS_CA_FILE", "redis.tls_ca_file"),
    ("REDIS_TLS_CERT_FILE", "redis.tls_cert_file"),
    ("REDIS_TLS_KEY_FILE", "redis.tls_key_file"),
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
    ("AGENT_CREDENTIALS", "agents.credentials"),
    (
        "CREDENTIALS_AUDIT_INTERVAL_S",
        "agents.credentials_audit_interval_s",
    ),
    ("AGENT_USER", "agents.user"),
    ("AGENT_CAP_ADD", "agents.cap_add"),
    ("AGENT_SECURITY_OPT", "agents.security_opt"),
    ("AGENT_NOFILE", "agents.nofile"),
    ("HALT_MAX_MESSAGES_PER_S", "halt.max_messages_per_s"),
    ("HALT_WINDOW_S", "halt.window_s"),
    ("HALT_WATCH_INTERVAL_MS", "halt.watch_interval_ms"),
    ("LEADER_LEASE_MS", "leader.lease_ms"),
    ("LEADER_RENEW_MS", "leader.renew_ms"),
    ("LEADER_RETRY_MS", "leader.retry_ms"),
    ("QUOTA_MAX_AGENTS", "quotas.max_agents"),
    ("QUOTA_MAX_MEMORY_MB", "quotas.max_memory_mb"),
    ("QUOTA_MAX_CPUS", "quotas.max_cpus"),
    ("QUOTA_MAX_GPUS", "quotas.max_gpus"),
    ("HEALTH_CHECK_INTERVAL_S", "health.check_interval_s"),
    ("HEALTH_REPORT_INTERVAL_S", "health.report_interval_s"),
    ("RELIST_INTERVAL_S", "health.relist_interval_s"),
    ("HEARTBEAT_INTERVAL_S", "health.heartbeat_interval_s"),
    (
        "HEARTBEAT_START_PERIOD_S",
        "health.heartbeat_start_period_s",
    ),
    ("STATS_SOURCE", "health.stats_source"),
    ("CGROUP_ROOT", "health.cgroup_root"),
    ("PROC_ROOT", "health.proc_root"),
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
    ("SWARM_CONSTRAINTS", "swarm.constraints"),
    ("SWARM_GPU_RESOURCE", "swarm.gpu_resource"),
    ("GPU_DEVICES", "gpu.devices"),
    ("GPU_DISCOVER", "gpu.discover"),
    ("GPU_NVIDIA_SMI", "gpu.nvidia_smi"),
    ("GPU_DISCOVER_TIMEOUT_S", "gpu.discover_timeout_s"),
    ("GPU_IMAGE", "gpu.image"),
];

/// The settings that carry credentials: each may be given as `<VAR>_FILE` instead.
pub const SECRET_VARS: &[&str] = &[
    "RABBITMQ_URL",
    "REDIS_URL",
    "AGENT_RABBITMQ_URL",
    "AGENT_REDIS_URL",
    "RABBITMQ_MANAGEMENT_URL",
    "ADMIN_TOKEN",
];

/// The environment variable of setting `key`; `-` for a setting that has none.
pub(super) fn env_var_of(key: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(_, k)| *k == key)
        .map_or("-", |(v, _)| *v)
}

/// Sets every setting whose variable `env` has (or, for [`SECRET_VARS`], whose
/// `<VAR>_FILE` names a readable file), and returns the variables that did not read
/// (their settings keep the value they had).
pub(super) fn apply(table: &mut Table, env: impl Fn(&str) -> Option<String>) -> Vec<SettingError> {
    ENV_VARS
        .iter()
        .filter_map(|(var, key)| {
            let raw = match value_of(var, key, &env) {
                Ok(Some(raw)) => raw,
                Ok(None) => return None,
                Err(e) => return Some(e),
            };
            set_from_env(table, key, var, &raw).err()
        })
        .collect()
}

/// The value of `var`: the variable itself, or for a secret the contents of the file
/// `<VAR>_FILE` names (one trailing line break dropped). Both at once is an error.
fn value_of(
    var: &str,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SettingError> {
    let direct = env(var);
    if !SECRET_VARS.contains(&var) {
        return Ok(direct);
    }
    let file_var = format!("{var}_FILE");
    let Some(path) = env(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(direct);
    };
    let err = |message: String| SettingError {
        key: key.into(),
        env: file_var.clone(),
        message,
    };
    if direct.is_some() {
        return Err(err(format!("set {var} or {file_var}, not both")));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(format!("cannot read the file '{path}': {e}")))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Some(value.to_string()))
}

/// Sets `path` from an environment string, parsed as the type of the default there.
fn set_from_env(table: &mut Table, path: &str, var: &str, raw: &str) -> Result<(), SettingError> {
    let err = |message: String| SettingError {
        key: path.into(),
        env: var.into(),
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
            // Empty: unset, as Docker reads DOCKER_TLS_VERIFY.
            "false" | "0" | "no" | "" => false,
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
    use crate::config::DEFAULT_TOML;

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
    fn every_variable_that_does_not_read_is_reported() {
        let mut table: Table = DEFAULT_TOML.parse().unwrap();
        let errors = apply(&mut table, |var| match var {
            "DOCKER_TIMEOUT_S" => Some("soon".into()),
            "AGENT_CPUS" => Some("many".into()),
            "ORPHAN_DRY_RUN" => Some("perhaps".into()),
            "DOCKER_NETWORK" => Some("from-env".into()),
            _ => None,
        });
        let named: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.env.as_str(), e.key.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("DOCKER_TIMEOUT_S", "docker.timeout_s"),
                ("ORPHAN_DRY_RUN", "docker.orphan_dry_run"),
                ("AGENT_CPUS", "agents.cpus"),
            ]
        );
        assert_eq!(table["docker"]["network"].as_str(), Some("from-env"));
        assert_eq!(table["docker"]["timeout_s"].as_integer(), Some(30));
        assert_eq!(env_var_of("agents.cpus"), "AGENT_CPUS");
        assert_eq!(env_var_of("health.container_check_by_type"), "-");
    }

    #[test]
    fn secrets_may_come_from_files() {
        let dir = std::env::temp_dir().join(format!("am-env-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("redis_url");
        std::fs::write(&file, "redis://:from-file@r:6379/0\n").unwrap();
        let path = file.display().to_string();
        let mut table: Table = DEFAULT_TOML.parse().unwrap();
        let errors = apply(&mut table, |var| match var {
            "REDIS_URL_FILE" => Some(path.clone()),
            "AGENT_REDIS_URL_FILE" => Some(dir.join("missing").display().to_string()),
            // Only secrets are read from files.
            "DOCKER_NETWORK_FILE" => Some(path.clone()),
            "RABBITMQ_URL" => Some("amqp://a:b@mq/%2f".into()),
            "RABBITMQ_URL_FILE" => Some(path.clone()),
            _ => None,
        });
        assert_eq!(
            table["redis"]["url"].as_str(),
            Some("redis://:from-file@r:6379/0")
        );
        assert_eq!(table["docker"]["network"].as_str(), Some("autogen-network"));
        let named: Vec<&str> = errors.iter().map(|e| e.env.as_str()).collect();
        assert_eq!(named, ["RABBITMQ_URL_FILE", "AGENT_REDIS_URL_FILE"]);
        assert!(errors[0].message.contains("not both"), "{:?}", errors[0]);
        assert!(!errors[1].message.contains("from-file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
