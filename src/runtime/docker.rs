//! Agents as plain Docker containers (docker and gpu modes), through bollard: the
//! container's create body, its lifecycle calls, and what inspect, list and stats report.
//! Every call goes through the shared [`Engine`] (bounded by a timeout, admission
//! control for the ones that change state); the agents' network is a bridge network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, ContainerSummary,
    ContainerUpdateBody, DeviceRequest, EndpointSettings, HostConfig, HostConfigLogConfig,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::cgroup::CgroupReader;
use super::engine::{
    connect_docker, health_config, is_status, json_file_log_options, nofile_ulimit, DockerOp,
    Engine, LogSource, NetworkKind, LOG_DRIVER,
};
use super::spec::{self, ContainerSpec};
use super::{
    foreign_name, name_taken, NameTaken, NetworkBytes, Observed, Runtime, Stats, StatsOrigin,
};
use crate::config::{Config, StatsSource};
use crate::error::RuntimeError;

/// The Docker engine runtime.
#[derive(Clone)]
pub struct DockerRuntime {
    /// The client with its bounded, admitted calls (shared with swarm mode).
    engine: Engine,
    network: String,
    instance: String,
    /// Per-customer networks are created `internal` (`docker.network_internal`).
    network_internal: bool,
    /// Samples from the containers' cgroup files (`health.stats_source`); `None`: every
    /// sample from Docker's stats API.
    cgroups: Option<Arc<CgroupReader>>,
    /// A container's files were not found once (said once, not per sample).
    cgroup_miss_logged: Arc<AtomicBool>,
    /// The local Docker socket, when agents get a MAC address of the manager's (their
    /// egress rules' key): creates that set one go through it ([`super::mac_create`]).
    socket: Option<String>,
}

/// The cgroup reader `health.stats_source` asks for, if the files are there: `auto`
/// reads them only when the Docker host is this machine (no `docker.host`, or a unix
/// socket).
fn cgroup_reader(config: &Config) -> Option<Arc<CgroupReader>> {
    let h = &config.health;
    let local = config
        .docker
        .host()
        .is_none_or(|host| host.starts_with("unix://"));
    match h.stats_source {
        StatsSource::Docker => return None,
        StatsSource::Auto if !local => return None,
        StatsSource::Auto | StatsSource::Cgroup => {}
    }
    match CgroupReader::new(&h.cgroup_root, &h.proc_root) {
        Some(reader) => {
            tracing::info!(root = %h.cgroup_root, version = ?reader.version(), "resource samples from the containers' cgroup files");
            Some(Arc::new(reader))
        }
        None => {
            tracing::warn!(root = %h.cgroup_root, "no cgroup filesystem there (mount the host's read-only: -v /sys/fs/cgroup:/sys/fs/cgroup:ro); resource samples from Docker's stats API");
            None
        }
    }
}

impl DockerRuntime {
    /// Connects to `docker.host` (or the local socket). No I/O happens until the first call.
    pub fn connect(config: &Config) -> Result<Self, RuntimeError> {
        let docker = connect_docker(&config.docker, config.agents.max_stop_timeout_s)?;
        Ok(DockerRuntime {
            engine: Engine::new(
                docker,
                Duration::from_secs(config.docker.timeout_s),
                config.docker.max_concurrent_ops,
            ),
            network: config.docker.network.clone(),
            instance: config.instance.clone(),
            network_internal: config.docker.network_internal,
            socket: crate::egress::keyed_by_mac(config)
                .then(|| crate::egress::local_socket(config))
                .flatten(),
            cgroups: cgroup_reader(config),
            cgroup_miss_logged: Arc::default(),
        })
    }

    /// One sample from Docker's stats API (a one-shot read: dockerd reads the cgroup
    /// files and answers a JSON document).
    pub async fn docker_stats(&self, id: &str) -> Result<Option<Stats>, RuntimeError> {
        let docker = self.client().clone();
        let id = id.to_string();
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let r = self
            .engine
            .call(DockerOp::ContainerStats, Duration::ZERO, async move {
                let mut stream = docker.stats(&id, Some(options));
                stream.next().await.transpose()
            })
            .await;
        match r {
            Ok(Some(s)) if s.read.is_some() || s.cpu_stats.is_some() => Ok(Some(stats_from(s))),
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn client(&self) -> &Docker {
        self.engine.client()
    }

    /// The bounded calls, for swarm mode's services.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let docker = self.client().clone();
        let result = self
            .engine
            .call(DockerOp::Pull, Duration::ZERO, async move {
                let mut stream = docker.create_image(Some(options), None, None);
                while let Some(item) = stream.next().await {
                    item?;
                }
                Ok(())
            })
            .await;
        result.map_err(|e| {
            tracing::warn!(image, error = %e, "image pull failed");
            RuntimeError::ImageNotFound(image.to_string())
        })
    }
}

impl DockerRuntime {
    /// The customer's own bridge network (`docker.network_per_customer`).
    async fn ensure_customer_network(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.engine
            .ensure_network(
                &spec.network,
                NetworkKind::Bridge,
                spec::customer_network_labels(spec),
                self.network_internal,
            )
            .await
    }
}

/// The device-request driver of GPU mode.
pub const GPU_DRIVER: &str = "nvidia";

/// The Docker create body for `spec`: contract section 4's limits and security settings.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let binds: Vec<String> = spec
        .module_mounts
        .iter()
        .map(|m| format!("{m}:ro"))
        .collect();
    let host_config = HostConfig {
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        nano_cpus: Some(spec.nano_cpus),
        pids_limit: Some(spec.pids_limit),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={}m", spec.tmpfs_mb),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        security_opt: Some(spec.security_opt.clone()),
        privileged: Some(false),
        init: Some(true),
        network_mode: Some(spec.network.clone()),
        // Private namespaces, never the host's (CIS 5.9, 5.15, 5.16, 5.20, 5.30); Docker's
        // defaults already are, IPC is named so `inspect` says so.
        ipc_mode: Some("private".into()),
        publish_all_ports: Some(false),
        binds: (!binds.is_empty()).then_some(binds),
        ulimits: Some(vec![nofile_ulimit(spec.nofile)]),
        log_config: Some(HostConfigLogConfig {
            typ: Some(LOG_DRIVER.into()),
            config: Some(json_file_log_options()),
        }),
        // GPU mode only: these devices and no others (docker mode never sets any).
        device_requests: (!spec.gpu_devices.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some(GPU_DRIVER.into()),
                device_ids: Some(spec.gpu_devices.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: spec.user.clone(),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.clone()),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    mac_address: spec.mac_address.clone(),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// A [`Stats`] sample from Docker's stats (cgroup v1 or v2).
pub fn stats_from(s: ContainerStatsResponse) -> Stats {
    let cpu = s.cpu_stats.unwrap_or_default();
    let mem = s.memory_stats.unwrap_or_default();
    let usage = mem.usage.unwrap_or(0);
    // Page cache is not the agent's memory: v1 reports it as total_inactive_file (or
    // cache), v2 as inactive_file.
    let cache = mem
        .stats
        .as_ref()
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .or_else(|| st.get("cache"))
                .copied()
        })
        .unwrap_or(0);
    let network = s.networks.map(|networks| {
        networks
            .values()
            .fold(NetworkBytes::default(), |sum, n| NetworkBytes {
                rx_bytes: sum.rx_bytes + n.rx_bytes.unwrap_or(0),
                tx_bytes: sum.tx_bytes + n.tx_bytes.unwrap_or(0),
            })
    });
    let online = cpu.online_cpus.unwrap_or_else(|| {
        cpu.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map(|v| v.len() as u32)
            .unwrap_or(1)
    });
    Stats {
        cpu_total_ns: cpu.cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
        system_ns: cpu.system_cpu_usage.unwrap_or(0),
        online_cpus: online,
        memory_bytes: usage.saturating_sub(cache),
        memory_limit_bytes: mem.limit.unwrap_or(0),
        pids: s.pids_stats.and_then(|p| p.current).unwrap_or(0),
        network,
        oom_kills: None,
        origin: StatsOrigin::Docker,
    }
}

/// What a container listing tells of one container (no env, limits or health).
fn brief_from(summary: ContainerSummary) -> Option<Observed> {
    let state = summary
        .state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    Some(Observed {
        paused: state == "paused",
        id: summary.id?,
        name: summary
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: summary.image.unwrap_or_default(),
        labels: summary.labels.unwrap_or_default(),
        running: state == "running",
        state,
        health: "none".into(),
        ..Observed::default()
    })
}

/// The interesting part of a Docker inspect.
pub fn observed_from(inspect: ContainerInspectResponse) -> Observed {
    let state = inspect.state.unwrap_or_default();
    let config = inspect.config.unwrap_or_default();
    let host = inspect.host_config.unwrap_or_default();
    Observed {
        id: inspect.id.unwrap_or_default(),
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        state: state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into()),
        started_at: state.started_at,
        restart_count: inspect.restart_count.unwrap_or(0),
        memory_bytes: host.memory.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        gpu_devices: host
            .device_requests
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| r.device_ids.unwrap_or_default())
            .collect(),
        task_container_id: None,
        node: None,
        reason: None,
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn mode(&self) -> &'static str {
        "docker"
    }

    async fn prepare(&self) -> Result<(), RuntimeError> {
        self.engine
            .ensure_network(
                &self.network,
                NetworkKind::Bridge,
                spec::managed_labels(),
                false,
            )
            .await
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        self.engine
            .call(DockerOp::Ping, Duration::ZERO, async move {
                docker.ping().await
            })
            .await
            .map(|_| ())
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let name = image.to_string();
        match self
            .engine
            .call(DockerOp::InspectImage, Duration::ZERO, async move {
                docker.inspect_image(&name).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(RuntimeError::NotFound(_)) => self.pull(image).await,
            Err(e) => Err(e),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if spec.customer_network {
            self.ensure_customer_network(spec).await?;
        }
        for attempt in 0..3 {
            let docker = self.client().clone();
            let options = CreateContainerOptionsBuilder::new()
                .name(&spec.name)
                .build();
            let body = create_body(spec);
            let with_mac = spec.mac_address.clone().zip(self.socket.clone());
            let name = spec.name.clone();
            let result = self
                .engine
                .call(DockerOp::CreateContainer, Duration::ZERO, async move {
                    match with_mac {
                        Some((mac, socket)) => {
                            super::mac_create::create_with_mac(&socket, &name, &body, &mac).await
                        }
                        None => docker.create_container(Some(options), body).await,
                    }
                })
                .await;
            match result {
                Ok(created) => return Ok(created.id),
                Err(RuntimeError::NotFound(message))
                    if spec.customer_network && message.contains("network") && attempt < 2 =>
                {
                    // Removed behind our back (an operator's prune): make it again.
                    self.ensure_customer_network(spec).await?;
                }
                Err(RuntimeError::NotFound(message)) if message.contains("image") => {
                    if attempt > 0 {
                        return Err(RuntimeError::ImageNotFound(spec.image.clone()));
                    }
                    self.pull(&spec.image).await?;
                }
                Err(RuntimeError::Docker {
                    status: Some(409), ..
                }) => {
                    // The name is taken: by our own earlier attempt, or by a stale one.
                    if let Some(found) = self.inspect(&spec.name).await? {
                        match name_taken(&found.labels, spec) {
                            NameTaken::Reuse => return Ok(found.id),
                            NameTaken::RemoveStale => {
                                tracing::warn!(container = %found.id, "removing stale container of an earlier spec");
                                self.remove(&found.id, 0).await?;
                            }
                            NameTaken::Foreign => {
                                return Err(foreign_name(
                                    DockerOp::CreateContainer.as_str(),
                                    "container",
                                    &spec.name,
                                    &found.id,
                                ))
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Docker {
            op: DockerOp::CreateContainer.as_str(),
            status: None,
            message: format!("could not create {} after 3 attempts", spec.name),
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let id = id.to_string();
        let r = self
            .engine
            .call(DockerOp::StartContainer, Duration::ZERO, async move {
                docker
                    .start_container(
                        &id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
            })
            .await;
        // 304: already running.
        if is_status(&r, 304) {
            return Ok(());
        }
        r
    }

    async fn stop(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let id = id.to_string();
        let options = StopContainerOptionsBuilder::new()
            .t(timeout_s as i32)
            .build();
        let r = self
            .engine
            .call(
                DockerOp::StopContainer,
                Duration::from_secs(u64::from(timeout_s)),
                async move { docker.stop_container(&id, Some(options)).await },
            )
            .await;
        if is_status(&r, 304) {
            return Ok(());
        }
        r
    }

    async fn restart(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let id = id.to_string();
        let options = RestartContainerOptionsBuilder::new()
            .t(timeout_s as i32)
            .build();
        self.engine
            .call(
                DockerOp::RestartContainer,
                Duration::from_secs(u64::from(timeout_s)),
                async move { docker.restart_container(&id, Some(options)).await },
            )
            .await
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut attempt = 0;
        let r = loop {
            let docker = self.client().clone();
            let target = id.to_string();
            let r = self
                .engine
                .call(DockerOp::PauseContainer, Duration::ZERO, async move {
                    docker.pause_container(&target).await
                })
                .await;
            attempt += 1;
            match &r {
                Err(e) if freeze_gave_up(e) && attempt < PAUSE_ATTEMPTS => {
                    tracing::debug!(container = %id, attempt, "runc could not freeze the container; trying again");
                    tokio::time::sleep(PAUSE_RETRY_DELAY * attempt).await;
                }
                _ => break r,
            }
        };
        // 409 "is already paused": done. Any other 409 (not running) is an error.
        if matches!(&r, Err(RuntimeError::Docker { status: Some(409), message, .. }) if message.contains("already paused"))
        {
            return Ok(());
        }
        r
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let target = id.to_string();
        let r = self
            .engine
            .call(DockerOp::UnpauseContainer, Duration::ZERO, async move {
                docker.unpause_container(&target).await
            })
            .await;
        // 409 "is not paused": done.
        if matches!(&r, Err(RuntimeError::Docker { status: Some(409), message, .. }) if message.contains("not paused"))
        {
            return Ok(());
        }
        r
    }

    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        match self.stop(id, timeout_s).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let docker = self.client().clone();
        let id = id.to_string();
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let r = self
            .engine
            .call(DockerOp::RemoveContainer, Duration::ZERO, async move {
                docker.remove_container(&id, Some(options)).await
            })
            .await;
        match r {
            Err(RuntimeError::NotFound(_)) => Ok(()),
            // 409: a removal is already in progress.
            Err(RuntimeError::Docker {
                status: Some(409), ..
            }) => Ok(()),
            other => other,
        }
    }

    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let docker = self.client().clone();
        let id = id.to_string();
        let body = ContainerUpdateBody {
            memory: Some(spec.memory_bytes),
            memory_swap: Some(spec.memory_bytes),
            nano_cpus: Some(spec.nano_cpus),
            pids_limit: Some(spec.pids_limit),
            ..Default::default()
        };
        self.engine
            .call(DockerOp::UpdateContainer, Duration::ZERO, async move {
                docker.update_container(&id, body).await
            })
            .await
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError> {
        let docker = self.client().clone();
        let id = id_or_name.to_string();
        let r = self
            .engine
            .call(DockerOp::InspectContainer, Duration::ZERO, async move {
                docker
                    .inspect_container(
                        &id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
            })
            .await;
        match r {
            Ok(inspect) => Ok(Some(observed_from(inspect))),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// From the cgroup files when they can be read (no Docker call), else from
    /// Docker's stats API.
    async fn stats(&self, id: &str) -> Result<Option<Stats>, RuntimeError> {
        if let Some(reader) = &self.cgroups {
            if let Some(sample) = reader.sample(id) {
                return Ok(Some(sample));
            }
            if !self.cgroup_miss_logged.swap(true, Ordering::Relaxed) {
                tracing::info!(container = %id, root = %reader.root().display(), "a container's cgroup files were not found (not running, or a cgroup layout other than Docker's defaults); Docker's stats API samples such containers");
            }
        }
        self.docker_stats(id).await
    }

    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<String>, RuntimeError> {
        self.engine.logs(LogSource::Container, id, tail).await
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError> {
        let mut out = Vec::new();
        for brief in self.list_managed_brief().await? {
            if let Some(observed) = self.inspect(&brief.id).await? {
                out.push(observed);
            }
        }
        Ok(out)
    }

    async fn list_managed_brief(&self) -> Result<Vec<Observed>, RuntimeError> {
        let filters = spec::managed_filters(&self.instance);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let docker = self.client().clone();
        let summaries = self
            .engine
            .call(DockerOp::ListContainers, Duration::ZERO, async move {
                docker.list_containers(Some(options)).await
            })
            .await?;
        Ok(summaries.into_iter().filter_map(brief_from).collect())
    }
}

/// How often a pause is tried when runc gives up freezing, and the delay that grows
/// between tries.
const PAUSE_ATTEMPTS: u32 = 3;
const PAUSE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// runc gave up freezing the container's cgroup ("unable to freeze": a process in the
/// middle of something the freezer must wait for, common on a loaded host). runc thaws
/// it again before answering, so the pause can simply be tried once more.
fn freeze_gave_up(e: &RuntimeError) -> bool {
    matches!(e, RuntimeError::Docker { message, .. } if message.contains("unable to freeze"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_freeze_runc_gave_up_on_is_tried_again_and_nothing_else() {
        let docker = |status, message: &str| RuntimeError::Docker {
            op: "pause container",
            status,
            message: message.into(),
        };
        assert!(freeze_gave_up(&docker(
            Some(500),
            "Cannot pause container 8dc3: OCI runtime pause failed: unable to freeze: unknown"
        )));
        assert!(!freeze_gave_up(&docker(
            Some(409),
            "Container 8dc3 is not running"
        )));
        assert!(!freeze_gave_up(&RuntimeError::NotFound("x".into())));
    }

    use super::*;
    use bollard::models::ContainerSummaryStateEnum;

    /// Where resource samples come from, for `STATS_SOURCE`, `DOCKER_HOST` and a cgroup
    /// root (the v1 fixture, or a directory with no cgroup filesystem).
    fn reads_cgroup_files(source: &str, docker_host: &str, mounted: bool) -> bool {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let root = if mounted {
            format!("{fixtures}/cgroup/v1")
        } else {
            format!("{fixtures}/proc")
        };
        let env = HashMap::from([
            ("STATS_SOURCE", source.to_string()),
            ("DOCKER_HOST", docker_host.to_string()),
            ("CGROUP_ROOT", root),
            ("PROC_ROOT", format!("{fixtures}/proc")),
        ]);
        let config = Config::from_sources(None, |k| env.get(k).cloned()).expect("a valid config");
        cgroup_reader(&config).is_some()
    }

    #[test]
    fn samples_come_from_cgroup_files_only_where_the_docker_host_is_this_machine() {
        assert!(reads_cgroup_files("auto", "", true), "the default socket");
        assert!(reads_cgroup_files("auto", "unix:///run/other.sock", true));
        assert!(
            !reads_cgroup_files("auto", "tcp://docker:2375", true),
            "a remote DOCKER_HOST: Docker's stats API"
        );
        assert!(
            reads_cgroup_files("cgroup", "tcp://docker:2375", true),
            "forced"
        );
        assert!(!reads_cgroup_files("docker", "", true), "forced off");
        assert!(
            !reads_cgroup_files("auto", "", false),
            "no cgroup filesystem mounted: Docker's stats API"
        );
    }

    #[test]
    fn a_listing_gives_id_name_labels_and_state() {
        let summary = ContainerSummary {
            id: Some("c1".into()),
            names: Some(vec!["/agent-a-1".into()]),
            image: Some("autogen-agent:latest".into()),
            labels: Some(HashMap::from([("autogen.agent-id".into(), "a-1".into())])),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            ..Default::default()
        };
        let o = brief_from(summary).expect("has an id");
        assert_eq!((o.id.as_str(), o.name.as_str()), ("c1", "agent-a-1"));
        assert_eq!(o.image, "autogen-agent:latest");
        assert_eq!(o.labels["autogen.agent-id"], "a-1");
        assert!(o.running);
        assert!(!o.paused);
        assert_eq!(o.state, "running");

        let paused = ContainerSummary {
            id: Some("c3".into()),
            state: Some(ContainerSummaryStateEnum::PAUSED),
            ..Default::default()
        };
        let o = brief_from(paused).expect("has an id");
        assert!(o.paused, "listed paused");
        assert_eq!(o.state, "paused");

        let exited = ContainerSummary {
            id: Some("c2".into()),
            state: Some(ContainerSummaryStateEnum::EXITED),
            ..Default::default()
        };
        let o = brief_from(exited).expect("has an id");
        assert!(!o.running);
        assert_eq!(o.state, "exited");
        assert!(brief_from(ContainerSummary::default()).is_none());
    }
}
