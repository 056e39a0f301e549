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

pub mod docker;
pub mod gpu;
pub mod spec;
pub mod swarm;

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
    pub running: bool,
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

/// The operations the agent actors need, whatever runs the agents.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Prepares the host once at start (network).
    async fn prepare(&self) -> Result<(), RuntimeError>;
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
    /// Stops (with grace) and removes. Removing a missing container succeeds.
    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError>;
    /// Applies the spec's memory and CPU limits to the existing container.
    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// `None` when there is no such container.
    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError>;
    /// Every container of this manager instance.
    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError>;
}
