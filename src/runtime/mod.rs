//! Where agents run. The [`Runtime`] trait is all the actors know, whatever the
//! deployment mode:
//!
//! - `docker` mode: [`docker::DockerRuntime`], one plain container per agent;
//! - `gpu` mode: [`gpu::GpuRuntime`], the Docker runtime plus GPU allocation (device
//!   requests, with the allocations kept in Redis);
//! - `swarm` mode: [`swarm::SwarmRuntime`], one single-replica Swarm service per agent.
//!
//! `spec` turns an agent record into the runtime-neutral [`ContainerSpec`]: the one
//! place that knows the contract's labels and environment. In swarm mode the "container
//! id" the actors hold is the service id: the stable handle of the agent.
//!
//! [`cgroup`] reads resource samples from the containers' cgroup files (no Docker call).
//! [`engine`] is the Docker plumbing docker and swarm modes share: the bounded, timed,
//! admitted calls (named by [`engine::DockerOp`]), error mapping, the agents' networks,
//! log collection and the spec's translation into Docker's health, ulimit and logging
//! models; `mac_create` the one create bollard cannot send (a container-level MAC
//! address, for the agents' egress rules). [`watcher`] follows Docker's events and produces the messages
//! ([`watcher::ContainerEvent`], [`watcher::LookAtAll`]) whoever holds the agents
//! handles.

pub mod agent_urls;
pub mod cgroup;
pub mod docker;
pub mod engine;
pub mod gpu;
mod mac_create;
pub mod spec;
pub mod swarm;
pub mod watcher;

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::RuntimeError;
pub use spec::ContainerSpec;

/// What the runtime reports about one agent's container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    /// The image reference the container was created from.
    pub image: String,
    pub labels: HashMap<String, String>,
    /// `KEY=value` strings, as Docker reports them.
    pub env: Vec<String>,
    /// Docker's state: created, running, exited, ...
    pub state: String,
    /// True while the process runs, frozen or not (Docker: a paused container is
    /// running and paused).
    pub running: bool,
    /// Frozen by Docker's pause (freezer cgroup): not a crash, not hung.
    pub paused: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// healthy, unhealthy, starting or none.
    pub health: String,
    pub started_at: Option<String>,
    pub restart_count: i64,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    /// GPU devices the container was created with (its device requests); empty without.
    pub gpu_devices: Vec<String>,
    /// Swarm mode: the container of the service's current task (it changes with every
    /// task); `None` in docker mode, where `id` is the container.
    pub task_container_id: Option<String>,
    /// Swarm mode: the hostname of the node the current task is placed on (`None` in
    /// docker and gpu modes, and while the task waits for a node).
    pub node: Option<String>,
    /// Why the workload is not running when the runtime knows more than the state says
    /// (swarm mode: its task's node was lost); `None` otherwise.
    pub reason: Option<String>,
}

impl Observed {
    /// The value of one environment variable of the container.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
    }
}

/// One resource-usage sample of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Cumulative CPU time of the container, ns.
    pub cpu_total_ns: u64,
    /// Cumulative CPU time of the host, ns: Docker's `system_cpu_usage` (from
    /// `/proc/stat`), or for cgroup samples wall time since the reader started times
    /// the CPUs online. Only deltas between samples of one origin mean anything.
    pub system_ns: u64,
    pub online_cpus: u32,
    /// Memory in use, page cache excluded.
    pub memory_bytes: u64,
    /// 0 when the container has none.
    pub memory_limit_bytes: u64,
    pub pids: u64,
    /// Bytes over the container's interfaces; `None` where the source cannot see them.
    pub network: Option<NetworkBytes>,
    /// OOM kills in the container's cgroup (cgroup files only; Docker's stats have none).
    pub oom_kills: Option<u64>,
    /// Where the sample came from.
    pub origin: StatsOrigin,
}

/// A container's network counters, every interface but loopback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkBytes {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Where a [`Stats`] sample was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatsOrigin {
    /// The container's cgroup files, read by the manager ([`cgroup`]).
    Cgroup,
    /// Docker's stats API.
    #[default]
    Docker,
}

impl StatsOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            StatsOrigin::Cgroup => "cgroup",
            StatsOrigin::Docker => "docker",
        }
    }
}

impl Stats {
    /// CPU use between `prev` and `self`, in percent of one core (Docker's formula). 0
    /// between samples of different origins (their host clocks differ).
    pub fn cpu_percent_since(&self, prev: &Stats) -> f64 {
        if self.origin != prev.origin {
            return 0.0;
        }
        let cpu = self.cpu_total_ns.saturating_sub(prev.cpu_total_ns) as f64;
        let system = self.system_ns.saturating_sub(prev.system_ns) as f64;
        if system <= 0.0 || cpu < 0.0 {
            return 0.0;
        }
        cpu / system * f64::from(self.online_cpus.max(1)) * 100.0
    }
}

/// The operations the agent actors need, whatever runs the agents.
///
/// What every mode must do is required: preparing the host, making, starting, stopping,
/// removing and finding workloads. What a mode may lack, or a wrapper may leave as the
/// runtime it wraps does, has a default: a runtime that wraps another (gpu mode wraps
/// docker's) names it in [`Runtime::wrapped`] and writes only the methods whose
/// behaviour it changes; a base runtime's unwritten defaults answer
/// [`RuntimeError::Unsupported`] (swarm mode cannot pause), naming its mode.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The mode's name in messages (`docker`, `swarm`, `gpu`).
    fn mode(&self) -> &'static str;

    /// The runtime this one adds to: every defaulted method it does not write is that
    /// runtime's. `None` (the default): a base runtime.
    fn wrapped(&self) -> Option<&dyn Runtime> {
        None
    }

    /// Prepares the host once at start (network).
    async fn prepare(&self) -> Result<(), RuntimeError>;
    /// Creates the container (not started) and returns its id. Idempotent: a container
    /// of the same name and spec left by an earlier attempt is returned instead
    /// ([`name_taken`] says what a taken name means).
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Starts the container. `NotFound` when it is gone, including when the runtime had
    /// to remove it because it can no longer start as created (gpu mode: its GPUs went
    /// to another agent while it was stopped); the caller then creates a new one, which
    /// gets what is allocated now.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// SIGTERM, then SIGKILL after `timeout_s`. Stopping a stopped container succeeds.
    async fn stop(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError>;
    /// Stops (with grace) and starts again; starts a stopped one. `NotFound` as for
    /// [`Runtime::start`].
    async fn restart(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError>;
    /// Stops (with grace) and removes. Removing a missing container succeeds.
    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError>;
    /// `None` when there is no such container.
    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError>;
    /// Every container of this manager instance.
    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError>;
    /// Every container of this manager instance from one listing, without inspecting
    /// each: id, name, image, labels, state and `running` are filled; `env`, limits,
    /// health, exit details and GPU devices may be empty (inspect the ones that need
    /// them). Reconciliation and the relist use it so that they cost a constant number
    /// of Docker calls, not one per container. No default: each runtime lists in its
    /// own way, and forwarding to [`Runtime::list_managed`] would inspect every one.
    async fn list_managed_brief(&self) -> Result<Vec<Observed>, RuntimeError>;

    /// Succeeds when the container engine answers.
    async fn ping(&self) -> Result<(), RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.ping().await,
            None => Err(unsupported(self.mode(), "be pinged")),
        }
    }
    /// Fails with `ImageNotFound` when the image is neither present nor pullable.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.ensure_image(image).await,
            None => Err(unsupported(self.mode(), "check images")),
        }
    }
    /// Freezes every process of the container (Docker pause: the freezer cgroup).
    /// Pausing a paused container succeeds.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.pause(id).await,
            None => Err(unsupported(self.mode(), "pause agents")),
        }
    }
    /// Thaws a paused container. Unpausing one that is not paused succeeds.
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.unpause(id).await,
            None => Err(unsupported(self.mode(), "resume paused agents")),
        }
    }
    /// Takes the workload out for a halt (section 10): its processes frozen. A wrapper's
    /// is its runtime's; a base runtime's pauses it. A workload that does not run (or
    /// is gone, or is paused already) is fine.
    async fn freeze(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(inner) = self.wrapped() {
            return inner.freeze(id).await;
        }
        match self.pause(id).await {
            Err(RuntimeError::NotFound(_))
            | Err(RuntimeError::Docker {
                status: Some(409), ..
            }) => Ok(()),
            other => other,
        }
    }
    /// Gives a frozen workload back (thaws it); one that is not frozen is fine.
    async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(inner) = self.wrapped() {
            return inner.thaw(id).await;
        }
        match self.unpause(id).await {
            Err(RuntimeError::Docker {
                status: Some(409), ..
            }) => Ok(()),
            other => other,
        }
    }
    /// Applies the spec's memory and CPU limits to the existing container.
    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.update_resources(id, spec).await,
            None => Err(unsupported(self.mode(), "change resources in place")),
        }
    }
    /// One resource sample (`None` when the container is not running).
    async fn stats(&self, id: &str) -> Result<Option<Stats>, RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.stats(id).await,
            None => Err(unsupported(self.mode(), "sample resources")),
        }
    }
    /// The last `tail` lines of the container's output.
    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<String>, RuntimeError> {
        match self.wrapped() {
            Some(inner) => inner.logs(id, tail).await,
            None => Err(unsupported(self.mode(), "read logs")),
        }
    }
}

/// What a base runtime's unwritten method answers.
fn unsupported(mode: &str, what: &str) -> RuntimeError {
    RuntimeError::Unsupported(format!(
        "{mode} mode cannot {what} (DEPLOYMENT_MODE={mode})"
    ))
}

/// What a create does when Docker says its name is taken (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameTaken {
    /// This instance's workload of the same spec: an earlier attempt of this create.
    Reuse,
    /// This instance's workload of an earlier spec: remove it and create again.
    RemoveStale,
    /// Not this instance's: refuse, never touch it.
    Foreign,
}

/// The one rule for a taken name, from the labels of the workload holding it.
pub fn name_taken(found: &HashMap<String, String>, spec: &ContainerSpec) -> NameTaken {
    if found.get(spec::LABEL_INSTANCE) != spec.labels.get(spec::LABEL_INSTANCE) {
        NameTaken::Foreign
    } else if found.get(spec::LABEL_RECREATE_HASH) == Some(&spec.recreate_hash) {
        NameTaken::Reuse
    } else {
        NameTaken::RemoveStale
    }
}

/// The refusal of a create whose name another owner's workload (`kind` `id`) holds.
pub fn foreign_name(op: &'static str, kind: &str, name: &str, id: &str) -> RuntimeError {
    RuntimeError::Docker {
        op,
        status: Some(409),
        message: format!("the name {name} is taken by {kind} {id} that this manager does not own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_is_reused_replaced_or_refused_by_its_labels() {
        let record = crate::record::AgentRecord::new(
            "a1",
            crate::protocol::sample_spec(),
            crate::protocol::DesiredState::Running,
        );
        let mut config = crate::config::Config::defaults();
        config.instance = "blue".into();
        let mut spec = spec::build(&record, &config);
        spec.recreate_hash = "h1".into();
        let labels = |instance: &str, hash: &str| {
            HashMap::from([
                (spec::LABEL_INSTANCE.to_string(), instance.to_string()),
                (spec::LABEL_RECREATE_HASH.to_string(), hash.to_string()),
            ])
        };
        assert_eq!(name_taken(&labels("blue", "h1"), &spec), NameTaken::Reuse);
        assert_eq!(
            name_taken(&labels("blue", "h0"), &spec),
            NameTaken::RemoveStale
        );
        assert_eq!(
            name_taken(&labels("green", "h1"), &spec),
            NameTaken::Foreign
        );
        assert_eq!(name_taken(&HashMap::new(), &spec), NameTaken::Foreign);
        let e = foreign_name("create service", "service", "agent-a", "s1");
        assert!(e.to_string().contains("taken by service s1"), "{e}");
    }

    #[test]
    fn cpu_percent_uses_deltas_and_cpu_count() {
        let a = Stats {
            cpu_total_ns: 1_000,
            system_ns: 10_000,
            online_cpus: 2,
            ..Default::default()
        };
        let b = Stats {
            cpu_total_ns: 1_500,
            system_ns: 12_000,
            online_cpus: 2,
            ..Default::default()
        };
        assert!((b.cpu_percent_since(&a) - 50.0).abs() < 1e-9);
        assert_eq!(a.cpu_percent_since(&a), 0.0);
        assert_eq!(a.cpu_percent_since(&b), 0.0, "counters going back give 0");
        let from_files = Stats {
            origin: StatsOrigin::Cgroup,
            ..b
        };
        assert_eq!(
            from_files.cpu_percent_since(&a),
            0.0,
            "two clocks: no figure"
        );
    }
}
