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
//! models. [`watcher`] follows Docker's events and produces the messages
//! ([`watcher::ContainerEvent`], [`watcher::LookAtAll`]) whoever holds the agents
//! handles.

pub mod agent_urls;
pub mod cgroup;
pub mod docker;
pub mod engine;
pub mod gpu;
pub mod image_pin;
pub mod spec;
pub mod swarm;
pub mod swarm_gpu;
pub mod swarm_task;
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
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Prepares the host once at start (network).
    async fn prepare(&self) -> Result<(), RuntimeError>;
    /// Succeeds when the container engine answers.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Fails with `ImageNotFound` when the image is neither present nor pullable.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError>;
    /// Creates the container (not started) and returns its id. Idempotent: a container
    /// of the same name and spec left by an earlier attempt is returned instead.
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
    /// Freezes every process of the container (Docker pause: the freezer cgroup).
    /// Pausing a paused container succeeds. `Unsupported` where the mode cannot (Swarm).
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Thaws a paused container. Unpausing one that is not paused succeeds.
    /// `Unsupported` where the mode cannot (Swarm).
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops (with grace) and removes. Removing a missing container succeeds.
    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError>;
    /// Applies the spec's memory and CPU limits to the existing container.
    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError>;
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
    /// One resource sample (`None` when the container is not running).
    async fn stats(&self, id: &str) -> Result<Option<Stats>, RuntimeError>;
    /// The last `tail` lines of the container's output.
    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<String>, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

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
