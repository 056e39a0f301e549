//! The Docker engine plumbing that docker mode ([`super::docker`]) and swarm mode
//! ([`super::swarm`]) share, so that those two hold only what differs:
//!
//! - [`Engine::call`]: every Docker call is named by a [`DockerOp`], bounded by the
//!   configured timeout, timed (`agent_manager_docker_call_duration_seconds{op}`), and,
//!   when it changes state ([`DockerOp::admitted`]), goes through admission control;
//!   Docker's errors become [`RuntimeError`]s in one place.
//! - [`Engine::ensure_network`]: the agents' networks, bridge (docker and gpu modes) or
//!   attachable overlay (swarm mode, which refuses a network of another kind);
//! - [`Engine::logs`]: a container's or a service's last lines of output;
//! - the translations of a [`ContainerSpec`]'s HEALTHCHECK, `nofile` ulimit and log
//!   rotation into Docker's models, which containers and services take alike.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{HealthConfig, NetworkCreateRequest, NetworkInspect, ResourcesUlimits};
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::sync::Semaphore;

use super::spec::{Healthcheck, LOG_MAX_FILES, LOG_MAX_SIZE};
use crate::config::DockerConfig;
use crate::error::RuntimeError;
use crate::metrics::events::DockerCallTimed;

/// Nanoseconds in a second: Docker gives durations in ns.
pub const SECOND_NS: i64 = 1_000_000_000;

/// The log driver of every agent (rotated by [`json_file_log_options`]).
pub const LOG_DRIVER: &str = "json-file";

/// One kind of Docker call. Its [`DockerOp::as_str`] is the `op` label of the call's
/// duration metric and names the call in errors; [`DockerOp::admitted`] says whether it
/// waits for admission control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DockerOp {
    /// Connecting the client (no call; names a bad `docker.host`).
    Connect,
    Ping,
    Info,
    Version,
    InspectImage,
    Pull,
    InspectNetwork,
    CreateNetwork,
    CreateContainer,
    StartContainer,
    StopContainer,
    RestartContainer,
    RemoveContainer,
    UpdateContainer,
    PauseContainer,
    UnpauseContainer,
    InspectContainer,
    ContainerStats,
    ContainerLogs,
    ListContainers,
    CreateService,
    InspectService,
    ListServices,
    ListTasks,
    /// Listing the swarm's nodes (where tasks run, which nodes are up).
    ListNodes,
    /// Scaling a service to 0 or 1 replicas (stop, start).
    ScaleService,
    /// Bumping a service's `ForceUpdate` (restart).
    ForceUpdateService,
    /// A new task template (resources).
    UpdateService,
    RemoveService,
    ServiceLogs,
    /// Asking the image's registry for its digest (swarm mode pins services to it).
    ResolveDigest,
}

impl DockerOp {
    /// Every operation, for tests and documentation.
    pub const ALL: [DockerOp; 31] = [
        DockerOp::Connect,
        DockerOp::Ping,
        DockerOp::Info,
        DockerOp::Version,
        DockerOp::InspectImage,
        DockerOp::Pull,
        DockerOp::InspectNetwork,
        DockerOp::CreateNetwork,
        DockerOp::CreateContainer,
        DockerOp::StartContainer,
        DockerOp::StopContainer,
        DockerOp::RestartContainer,
        DockerOp::RemoveContainer,
        DockerOp::UpdateContainer,
        DockerOp::PauseContainer,
        DockerOp::UnpauseContainer,
        DockerOp::InspectContainer,
        DockerOp::ContainerStats,
        DockerOp::ContainerLogs,
        DockerOp::ListContainers,
        DockerOp::CreateService,
        DockerOp::InspectService,
        DockerOp::ListServices,
        DockerOp::ListTasks,
        DockerOp::ListNodes,
        DockerOp::ScaleService,
        DockerOp::ForceUpdateService,
        DockerOp::UpdateService,
        DockerOp::RemoveService,
        DockerOp::ServiceLogs,
        DockerOp::ResolveDigest,
    ];

    /// The operation's name: the metric's `op` label and the `op` of its errors.
    pub fn as_str(self) -> &'static str {
        match self {
            DockerOp::Connect => "connect",
            DockerOp::Ping => "ping",
            DockerOp::Info => "info",
            DockerOp::Version => "version",
            DockerOp::InspectImage => "inspect image",
            DockerOp::Pull => "pull",
            DockerOp::InspectNetwork => "inspect network",
            DockerOp::CreateNetwork => "create network",
            DockerOp::CreateContainer => "create container",
            DockerOp::StartContainer => "start container",
            DockerOp::StopContainer => "stop container",
            DockerOp::RestartContainer => "restart container",
            DockerOp::RemoveContainer => "remove container",
            DockerOp::UpdateContainer => "update container",
            DockerOp::PauseContainer => "pause container",
            DockerOp::UnpauseContainer => "unpause container",
            DockerOp::InspectContainer => "inspect container",
            DockerOp::ContainerStats => "container stats",
            DockerOp::ContainerLogs => "container logs",
            DockerOp::ListContainers => "list containers",
            DockerOp::CreateService => "create service",
            DockerOp::InspectService => "inspect service",
            DockerOp::ListServices => "list services",
            DockerOp::ListTasks => "list tasks",
            DockerOp::ListNodes => "list nodes",
            DockerOp::ScaleService => "scale service",
            DockerOp::ForceUpdateService => "force-update service",
            DockerOp::UpdateService => "update service",
            DockerOp::RemoveService => "remove service",
            DockerOp::ServiceLogs => "service logs",
            DockerOp::ResolveDigest => "resolve digest",
        }
    }

    /// True for the operations that change an agent's container or service: they go
    /// through admission control. Reads (inspect, stats, logs, list) do not wait, and
    /// neither do network creation and the engine queries.
    pub fn admitted(self) -> bool {
        match self {
            DockerOp::Pull
            | DockerOp::CreateContainer
            | DockerOp::StartContainer
            | DockerOp::StopContainer
            | DockerOp::RestartContainer
            | DockerOp::RemoveContainer
            | DockerOp::UpdateContainer
            | DockerOp::PauseContainer
            | DockerOp::UnpauseContainer
            | DockerOp::CreateService
            | DockerOp::ScaleService
            | DockerOp::ForceUpdateService
            | DockerOp::UpdateService
            | DockerOp::RemoveService => true,
            DockerOp::Connect
            | DockerOp::Ping
            | DockerOp::Info
            | DockerOp::Version
            | DockerOp::InspectImage
            | DockerOp::ResolveDigest
            | DockerOp::InspectNetwork
            | DockerOp::CreateNetwork
            | DockerOp::InspectContainer
            | DockerOp::ContainerStats
            | DockerOp::ContainerLogs
            | DockerOp::ListContainers
            | DockerOp::InspectService
            | DockerOp::ListServices
            | DockerOp::ListTasks
            | DockerOp::ListNodes
            | DockerOp::ServiceLogs => false,
        }
    }
}

impl std::fmt::Display for DockerOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of network agents are attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    /// docker and gpu modes: a bridge network on this host.
    Bridge,
    /// swarm mode: an attachable overlay network, which services on any node can join.
    Overlay,
}

impl NetworkKind {
    /// The request that creates network `name` of this kind.
    fn request(
        self,
        name: &str,
        labels: HashMap<String, String>,
        internal: bool,
    ) -> NetworkCreateRequest {
        let (driver, attachable) = match self {
            NetworkKind::Bridge => ("bridge", None),
            NetworkKind::Overlay => ("overlay", Some(true)),
        };
        NetworkCreateRequest {
            name: name.to_string(),
            driver: Some(driver.into()),
            attachable,
            internal: internal.then_some(true),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// Whether an existing network `found` named `name` will do. Any network does for
    /// containers; Swarm services need an overlay network of swarm scope, and anything
    /// else is refused with what the operator can do about it.
    fn accepts(self, name: &str, found: &NetworkInspect) -> Result<(), RuntimeError> {
        if self == NetworkKind::Bridge {
            return Ok(());
        }
        let driver = found.driver.as_deref().unwrap_or_default();
        let scope = found.scope.as_deref().unwrap_or_default();
        if driver != "overlay" || scope != "swarm" {
            return Err(RuntimeError::Setup(format!(
                "network {name} is a {driver} network (scope {scope}), but Swarm \
                 services need an overlay network; set DOCKER_NETWORK to another name \
                 (the manager creates it as an attachable overlay network) or remove \
                 this network (docker network rm {name})"
            )));
        }
        Ok(())
    }

    /// Says that the manager made network `name` of this kind.
    fn log_created(self, name: &str, internal: bool) {
        match self {
            NetworkKind::Bridge => {
                tracing::info!(network = name, internal, "created a network for agents")
            }
            NetworkKind::Overlay => tracing::info!(
                network = name,
                internal,
                "created an attachable overlay network for agents"
            ),
        }
    }
}

/// Whose output [`Engine::logs`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// One container's.
    Container,
    /// A Swarm service's: every task's, as Swarm's log broker collects it.
    Service,
}

/// The Docker client with its bounded, timed, admitted calls.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// Bound on one call (a stop adds its grace period).
    timeout: Duration,
    /// Admission control: Docker operations that change state in flight at once. Tokio's
    /// semaphore is fair, so a burst is served in the order it arrived.
    admission: Arc<Semaphore>,
}

impl Engine {
    /// `max_concurrent_ops`: how many state-changing calls may be in flight at once.
    pub fn new(docker: Docker, timeout: Duration, max_concurrent_ops: usize) -> Self {
        Engine {
            docker,
            timeout,
            admission: Arc::new(Semaphore::new(max_concurrent_ops)),
        }
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Runs one Docker call bounded by the configured timeout plus `extra`, after
    /// waiting for admission when `op` changes state.
    pub async fn call<T>(
        &self,
        op: DockerOp,
        extra: Duration,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, RuntimeError> {
        let _permit = if op.admitted() {
            // Waiting for a turn is not part of the call's timeout.
            Some(
                self.admission
                    .acquire()
                    .await
                    .map_err(|_| RuntimeError::Docker {
                        op: op.as_str(),
                        status: None,
                        message: "admission control closed".into(),
                    })?,
            )
        } else {
            None
        };
        let limit = self.timeout + extra;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(limit, fut).await;
        crate::metrics::emit(DockerCallTimed {
            op: op.as_str(),
            took: started.elapsed(),
        });
        result
            .map_err(|_| RuntimeError::Timeout {
                op: op.as_str(),
                after_s: limit.as_secs(),
            })?
            .map_err(|e| docker_error(op, e))
    }

    /// Makes sure the network `name` exists: creates it as `kind` (with `labels`,
    /// `internal` when asked) when missing; an existing one of a kind that will not do
    /// is refused ([`RuntimeError::Setup`]).
    pub async fn ensure_network(
        &self,
        name: &str,
        kind: NetworkKind,
        labels: HashMap<String, String>,
        internal: bool,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker.clone();
        let wanted = name.to_string();
        let found = self
            .call(DockerOp::InspectNetwork, Duration::ZERO, async move {
                docker
                    .inspect_network(
                        &wanted,
                        None::<bollard::query_parameters::InspectNetworkOptions>,
                    )
                    .await
            })
            .await;
        match found {
            Ok(network) => return kind.accepts(name, &network),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let docker = self.docker.clone();
        let request = kind.request(name, labels, internal);
        let created = self
            .call(DockerOp::CreateNetwork, Duration::ZERO, async move {
                docker.create_network(request).await
            })
            .await;
        // 409: another process created it in between, which is fine.
        if is_status(&created, 409) {
            return Ok(());
        }
        created?;
        kind.log_created(name, internal);
        Ok(())
    }

    /// The last `tail` lines of the output (stdout and stderr) of container or service
    /// `id`.
    pub async fn logs(
        &self,
        source: LogSource,
        id: &str,
        tail: u32,
    ) -> Result<Vec<String>, RuntimeError> {
        let docker = self.docker.clone();
        let id = id.to_string();
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let op = match source {
            LogSource::Container => DockerOp::ContainerLogs,
            LogSource::Service => DockerOp::ServiceLogs,
        };
        self.call(op, Duration::ZERO, async move {
            match source {
                LogSource::Container => lines_of(docker.logs(&id, Some(options))).await,
                LogSource::Service => lines_of(docker.service_logs(&id, Some(options))).await,
            }
        })
        .await
    }
}

/// The lines of a log stream (stdout, stderr and console output; stdin is skipped).
async fn lines_of(
    stream: impl Stream<Item = Result<LogOutput, BollardError>>,
) -> Result<Vec<String>, BollardError> {
    let mut stream = std::pin::pin!(stream);
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk? {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => {
                text.push_str(&String::from_utf8_lossy(&unframe(&message)))
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// The text of output that may still carry Docker's stream framing: 8-byte headers
/// (stream 0–3, three zero bytes, a big-endian length) before each payload. A Swarm
/// service's logs mix framed frames from other nodes, and the daemon's own errors
/// ("node … is not available") come as stream 3, which the client passes through
/// undecoded. Bytes that do not start a whole frame are kept as they are.
pub fn unframe(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.len() >= 8 && rest[0] <= 3 && rest[1..4] == [0, 0, 0] {
            let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            if let Some(payload) = rest.get(8..8 + len) {
                if rest[0] == 3 {
                    out.extend_from_slice(b"error from the Docker daemon: ");
                }
                out.extend_from_slice(payload);
                if rest[0] == 3 && !payload.ends_with(b"\n") {
                    out.push(b'\n');
                }
                i += 8 + len;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// A bollard client for `docker.host` (none: the local socket): a `unix://` socket,
/// plain HTTP for `tcp://`/`http://`, or TLS with the client certificate of
/// `docker.cert_path` (`ca.pem`, `cert.pem`, `key.pem`) for `https://`, and for `tcp://`
/// with `docker.tls_verify`. Only the configuration decides: bollard's own reading of
/// `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` is never used. Its own timeout is set above the
/// longest stop grace period so that only our per-call timeouts apply.
pub fn connect_docker(
    docker: &DockerConfig,
    max_stop_timeout_s: u32,
) -> Result<Docker, RuntimeError> {
    let timeout_s = u64::from(max_stop_timeout_s) + 300;
    let version = bollard::API_DEFAULT_VERSION;
    let client = match docker.host() {
        None => Docker::connect_with_local_defaults(),
        Some(host) if docker.uses_tls() => {
            crate::tls::install_provider();
            let dir = docker.cert_dir();
            Docker::connect_with_ssl(
                host,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                timeout_s,
                version,
            )
        }
        Some(host) if host.starts_with("unix://") => {
            Docker::connect_with_unix(host, timeout_s, version)
        }
        Some(host) if host.starts_with("tcp://") || host.starts_with("http://") => {
            Docker::connect_with_http(host, timeout_s, version)
        }
        Some(host) => Docker::connect_with_host(host),
    }
    .map_err(|e| docker_error(DockerOp::Connect, e))?;
    Ok(client.with_timeout(Duration::from_secs(timeout_s)))
}

/// Docker's answer to `op` as a [`RuntimeError`]: 404 is `NotFound`, any other status
/// or failure a `Docker` error carrying it.
fn docker_error(op: DockerOp, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Docker {
            op: op.as_str(),
            status: Some(status_code),
            message,
        },
        other => RuntimeError::Docker {
            op: op.as_str(),
            status: None,
            message: other.to_string(),
        },
    }
}

/// True when `r` failed with Docker's HTTP `status` (304 not modified, 409 conflict).
pub(crate) fn is_status<T>(r: &Result<T, RuntimeError>, status: u16) -> bool {
    matches!(r, Err(RuntimeError::Docker { status: Some(s), .. }) if *s == status)
}

/// The configured HEALTHCHECK in Docker's terms (a container's `Healthcheck`, a
/// service's `HealthCheck`).
pub fn health_config(h: &Healthcheck) -> HealthConfig {
    HealthConfig {
        test: Some(h.test.clone()),
        interval: Some(h.interval_s as i64 * SECOND_NS),
        timeout: Some(h.timeout_s as i64 * SECOND_NS),
        retries: Some(h.retries as i64),
        start_period: Some(h.start_period_s as i64 * SECOND_NS),
        start_interval: None,
    }
}

/// The `nofile` ulimit (soft = hard).
pub fn nofile_ulimit(nofile: u64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some("nofile".into()),
        soft: Some(nofile as i64),
        hard: Some(nofile as i64),
    }
}

/// The [`LOG_DRIVER`]'s rotation: size of one file, and files kept.
pub fn json_file_log_options() -> HashMap<String, String> {
    HashMap::from([
        ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
        ("max-file".to_string(), LOG_MAX_FILES.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The state-changing operations as they were named when admission control looked
    /// them up by name, and pause and unpause since: the admitted set is exactly this.
    const ADMITTED_BEFORE: [&str; 14] = [
        "pull",
        "create container",
        "start container",
        "stop container",
        "restart container",
        "remove container",
        "update container",
        "pause container",
        "unpause container",
        "create service",
        "scale service",
        "force-update service",
        "update service",
        "remove service",
    ];

    #[test]
    fn the_admitted_operations_are_the_state_changing_ones() {
        let admitted: HashSet<&str> = DockerOp::ALL
            .iter()
            .filter(|op| op.admitted())
            .map(|op| op.as_str())
            .collect();
        assert_eq!(admitted, HashSet::from(ADMITTED_BEFORE));
    }

    #[test]
    fn operation_names_are_the_metric_labels_of_before() {
        let names: Vec<&str> = DockerOp::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(
            names,
            [
                "connect",
                "ping",
                "info",
                "version",
                "inspect image",
                "pull",
                "inspect network",
                "create network",
                "create container",
                "start container",
                "stop container",
                "restart container",
                "remove container",
                "update container",
                "pause container",
                "unpause container",
                "inspect container",
                "container stats",
                "container logs",
                "list containers",
                "create service",
                "inspect service",
                "list services",
                "list tasks",
                "list nodes",
                "scale service",
                "force-update service",
                "update service",
                "remove service",
                "service logs",
                "resolve digest",
            ]
        );
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "one name per operation");
        assert_eq!(DockerOp::ScaleService.to_string(), "scale service");
    }

    #[test]
    fn docker_errors_keep_the_operation_and_status() {
        let e = docker_error(
            DockerOp::CreateContainer,
            BollardError::DockerResponseServerError {
                status_code: 409,
                message: "name taken".into(),
            },
        );
        assert!(matches!(
            e,
            RuntimeError::Docker {
                op: "create container",
                status: Some(409),
                ..
            }
        ));
        assert!(is_status(&Err::<(), _>(e), 409));
        let e = docker_error(
            DockerOp::InspectContainer,
            BollardError::DockerResponseServerError {
                status_code: 404,
                message: "no such container".into(),
            },
        );
        assert!(matches!(e, RuntimeError::NotFound(m) if m == "no such container"));
    }

    fn network(driver: &str, scope: &str) -> NetworkInspect {
        NetworkInspect {
            driver: Some(driver.into()),
            scope: Some(scope.into()),
            ..Default::default()
        }
    }

    #[test]
    fn swarm_refuses_a_network_that_is_not_a_swarm_overlay() {
        let bridge = network("bridge", "local");
        assert!(NetworkKind::Bridge.accepts("n", &bridge).is_ok());
        match NetworkKind::Overlay.accepts("n", &bridge) {
            Err(RuntimeError::Setup(m)) => {
                assert!(
                    m.contains("network n is a bridge network (scope local)"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(NetworkKind::Overlay
            .accepts("n", &network("overlay", "swarm"))
            .is_ok());
        assert!(NetworkKind::Overlay
            .accepts("n", &network("overlay", "local"))
            .is_err());
    }

    #[test]
    fn networks_are_created_as_their_kind() {
        let labels = HashMap::from([("k".to_string(), "v".to_string())]);
        let b = NetworkKind::Bridge.request("n", labels.clone(), false);
        assert_eq!(
            (b.driver.as_deref(), b.attachable, b.internal),
            (Some("bridge"), None, None)
        );
        assert_eq!(b.labels.as_ref(), Some(&labels));
        let o = NetworkKind::Overlay.request("n", labels, true);
        assert_eq!(
            (o.driver.as_deref(), o.attachable, o.internal),
            (Some("overlay"), Some(true), Some(true))
        );
        assert_eq!(o.name, "n");
    }

    #[test]
    fn healthcheck_and_ulimit_are_in_docker_units() {
        let h = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval_s: 5,
            timeout_s: 2,
            retries: 3,
            start_period_s: 10,
        };
        let c = health_config(&h);
        assert_eq!(c.test.as_ref(), Some(&h.test));
        assert_eq!(c.interval, Some(5 * SECOND_NS));
        assert_eq!(c.timeout, Some(2 * SECOND_NS));
        assert_eq!(c.retries, Some(3));
        assert_eq!(c.start_period, Some(10 * SECOND_NS));
        let u = nofile_ulimit(4096);
        assert_eq!(
            (u.name.as_deref(), u.soft, u.hard),
            (Some("nofile"), Some(4096), Some(4096))
        );
    }

    #[test]
    fn framing_is_taken_off_and_plain_text_kept() {
        let mut framed = vec![1, 0, 0, 0, 0, 0, 0, 6];
        framed.extend_from_slice(b"hello\n");
        framed.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 27]);
        framed.extend_from_slice(b"node amc3 is not available ");
        framed.extend_from_slice(b"plain\n");
        assert_eq!(
            String::from_utf8_lossy(&unframe(&framed)),
            "hello\nerror from the Docker daemon: node amc3 is not available \nplain\n"
        );
        assert_eq!(unframe(b"no frames here\n"), b"no frames here\n");
        // A header whose payload is cut short is text, not a frame.
        assert_eq!(
            unframe(&[1, 0, 0, 0, 0, 0, 0, 9, b'x']),
            vec![1, 0, 0, 0, 0, 0, 0, 9, b'x']
        );
    }
}
