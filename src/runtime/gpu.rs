//! GPU mode: the Docker runtime plus GPU allocation.
//!
//! - The **inventory** is the configured `gpu.devices`, or else what
//!   `nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader` reports.
//! - An agent with `resources.gpus = N` is given N specific devices: a Docker device
//!   request (driver `nvidia`, those device ids, capabilities `[["gpu"]]`) and
//!   `NVIDIA_VISIBLE_DEVICES` (see [`ContainerSpec::with_gpu_devices`]).
//! - **Allocations** live in Redis (`gpu:allocations`, device → agent id), claimed with
//!   an atomic compare-and-set, so concurrent agents and a restarted manager never hand
//!   one device out twice. Which devices to take is decided by the pure [`choose`].
//! - An agent holds its devices from its create until it is stopped or deleted. A
//!   stopped agent that starts again is allocated again, preferring its old devices;
//!   when one of them went to another agent meanwhile, the start removes its container
//!   and answers `NotFound`, and the caller (lifecycle: "the container vanished") creates
//!   a new one, which gets the devices allocated now. Docker mode is untouched.
//! - At start, [`Runtime::prepare`] makes the allocations match the containers: running
//!   containers hold their devices, created (never started) ones keep the reservation
//!   Redis remembers, everything else is released.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::docker::DockerRuntime;
use super::engine::DockerOp;
use super::spec::{self, ContainerSpec, LABEL_AGENT_ID};
use super::{Observed, Runtime};
use crate::config::{Config, GpuConfig};
use crate::error::RuntimeError;
use crate::store::Store;

/// One GPU as nvidia-smi reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    pub index: u32,
    /// `GPU-…`: stable across reboots and PCI re-ordering, so it is the device id used.
    pub uuid: String,
    pub memory_mb: Option<u64>,
}

/// Parses `nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader`
/// (`0, GPU-…, 81559 MiB` per line). Lines that do not parse are skipped.
pub fn parse_nvidia_smi(output: &str) -> Vec<GpuDevice> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse().ok()?;
            let uuid = fields.next().filter(|u| !u.is_empty())?.to_string();
            let memory_mb = fields
                .next()
                .and_then(|m| m.split_whitespace().next())
                .and_then(|m| m.parse().ok());
            Some(GpuDevice {
                index,
                uuid,
                memory_mb,
            })
        })
        .collect()
}

/// Runs nvidia-smi (bounded by `timeout`). `None` when it is absent, fails or hangs.
async fn nvidia_smi(program: &str, timeout: Duration) -> Option<Vec<GpuDevice>> {
    let child = tokio::process::Command::new(program)
        .args([
            "--query-gpu=index,uuid,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(program, error = %e, "nvidia-smi is not available; no GPUs discovered");
            return None;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            Some(parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)))
        }
        Ok(Ok(out)) => {
            tracing::warn!(program, status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "nvidia-smi failed; no GPUs discovered");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(program, error = %e, "nvidia-smi failed; no GPUs discovered");
            None
        }
        Err(_) => {
            tracing::warn!(
                program,
                after_s = timeout.as_secs(),
                "nvidia-smi timed out; no GPUs discovered"
            );
            None
        }
    }
}

/// The devices the manager may hand out: the configured ones, else nvidia-smi's (by UUID).
pub async fn inventory(cfg: &GpuConfig) -> Vec<String> {
    if !cfg.devices.is_empty() {
        return cfg.devices.clone();
    }
    if !cfg.discover {
        return Vec::new();
    }
    let timeout = Duration::from_secs(cfg.discover_timeout_s);
    let found = nvidia_smi(&cfg.nvidia_smi, timeout)
        .await
        .unwrap_or_default();
    for d in &found {
        tracing::info!(index = d.index, uuid = %d.uuid, memory_mb = ?d.memory_mb, "GPU discovered");
    }
    found.into_iter().map(|d| d.uuid).collect()
}

/// Why [`choose`] cannot give an agent the GPUs it wants (the create or start is
/// refused `gpu_unavailable`, with this as its message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuShortage {
    #[error(
        "{wanted} GPU(s) requested but the GPU inventory is empty (set GPU_DEVICES, or run \
         the manager where nvidia-smi lists the host's GPUs)"
    )]
    NoInventory { wanted: usize },
    #[error("{wanted} GPU(s) requested but the inventory has only {inventory}")]
    MoreThanInventory { wanted: usize, inventory: usize },
    /// Other agents hold the rest.
    #[error(
        "{wanted} GPU(s) requested but only {free} of the {inventory} in the inventory are free"
    )]
    TooFewFree {
        wanted: usize,
        free: usize,
        inventory: usize,
    },
}

/// Picks `wanted` devices for `agent` from `inventory`, given who holds what
/// (`allocations`: device → agent). Devices in `preferred` (the agent's container's
/// current ones) come first, then devices the agent already holds, then free ones in
/// inventory order. Fails, saying why for a person, when too few are usable.
pub fn choose(
    inventory: &[String],
    allocations: &HashMap<String, String>,
    agent: &str,
    wanted: usize,
    preferred: &[String],
) -> Result<Vec<String>, GpuShortage> {
    if inventory.is_empty() && wanted > 0 {
        return Err(GpuShortage::NoInventory { wanted });
    }
    if wanted > inventory.len() {
        return Err(GpuShortage::MoreThanInventory {
            wanted,
            inventory: inventory.len(),
        });
    }
    let usable = |d: &String| {
        inventory.contains(d) && allocations.get(d).is_none_or(|holder| holder == agent)
    };
    let held = inventory
        .iter()
        .filter(|d| allocations.get(*d).is_some_and(|h| h == agent));
    let free = inventory.iter().filter(|d| !allocations.contains_key(*d));
    let mut chosen: Vec<String> = Vec::with_capacity(wanted);
    for d in preferred.iter().chain(held).chain(free) {
        if chosen.len() == wanted {
            break;
        }
        if usable(d) && !chosen.contains(d) {
            chosen.push(d.clone());
        }
    }
    if chosen.len() < wanted {
        return Err(GpuShortage::TooFewFree {
            wanted,
            free: inventory.iter().filter(|d| usable(d)).count(),
            inventory: inventory.len(),
        });
    }
    Ok(chosen)
}

/// False only when a container's resources label says it was made without GPUs; a
/// missing or unreadable label may hide device requests, so it counts as true.
fn may_hold_gpus(labels: &HashMap<String, String>) -> bool {
    labels
        .get(spec::LABEL_RESOURCES)
        .and_then(|r| serde_json::from_str::<crate::protocol::Resources>(r).ok())
        .is_none_or(|r| r.gpus > 0)
}

/// True when `a` and `b` hold the same devices, in any order.
fn same_devices(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().collect::<HashSet<_>>() == b.iter().collect::<HashSet<_>>()
}

/// True when Docker refused a container because the host cannot give it GPUs.
fn nvidia_missing(message: &str) -> bool {
    message.contains("could not select device driver")
        || message.contains("nvidia-container-cli")
        || message.contains("runtime name: nvidia")
}

/// A start failure, with the missing NVIDIA runtime said plainly.
fn explain_start_error(e: RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::Docker { message, .. } if nvidia_missing(&message) => {
            RuntimeError::GpuUnavailable(format!(
                "the Docker host has no usable NVIDIA container runtime, so the agent's \
                 GPUs cannot be given to its container (install the NVIDIA driver and \
                 nvidia-container-toolkit, then restart dockerd); Docker said: {message}"
            ))
        }
        other => other,
    }
}

/// The Docker runtime with GPU allocation (gpu mode).
pub struct GpuRuntime {
    docker: DockerRuntime,
    store: Store,
    /// The devices that may be handed out, fixed at start.
    inventory: Vec<String>,
    /// Container id → agent id, so a container that vanished still releases its GPUs.
    owners: Mutex<HashMap<String, String>>,
}

impl GpuRuntime {
    /// Wraps `docker`; takes the inventory from the config or nvidia-smi.
    pub async fn new(docker: DockerRuntime, store: Store, config: &Config) -> Self {
        let inventory = inventory(&config.gpu).await;
        if inventory.is_empty() {
            tracing::warn!("GPU mode without GPUs: set GPU_DEVICES or install nvidia-smi; agents asking for GPUs are refused (gpu_unavailable)");
        }
        GpuRuntime {
            docker,
            store,
            inventory,
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub fn inventory(&self) -> &[String] {
        &self.inventory
    }

    fn remember(&self, container_id: &str, agent_id: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(container_id.to_string(), agent_id.to_string());
        }
    }

    fn remember_observed(&self, o: &Observed) {
        if let Some(agent) = o.labels.get(LABEL_AGENT_ID) {
            self.remember(&o.id, agent);
        }
    }

    /// The agent a container id or name belongs to, without asking Docker if possible.
    async fn agent_of(&self, id_or_name: &str) -> Result<Option<String>, RuntimeError> {
        if let Some(agent) = self
            .owners
            .lock()
            .ok()
            .and_then(|o| o.get(id_or_name).cloned())
        {
            return Ok(Some(agent));
        }
        if let Some(agent) = id_or_name.strip_prefix("agent-") {
            return Ok(Some(agent.to_string()));
        }
        Ok(self
            .docker
            .inspect(id_or_name)
            .await?
            .and_then(|o| o.labels.get(LABEL_AGENT_ID).cloned()))
    }

    /// Gives `agent` `wanted` devices (preferring `preferred`) and releases the others it
    /// held. Retries when another agent claimed a device in between.
    async fn allocate(
        &self,
        agent: &str,
        wanted: usize,
        preferred: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        for _ in 0..8 {
            let allocations = self.store.gpu_allocations().await?;
            let chosen = choose(&self.inventory, &allocations, agent, wanted, preferred)
                .map_err(|e| RuntimeError::GpuUnavailable(e.to_string()))?;
            let release: Vec<String> = allocations
                .iter()
                .filter(|(d, holder)| *holder == agent && !chosen.contains(d))
                .map(|(d, _)| d.clone())
                .collect();
            if self.store.gpu_claim(agent, &chosen, &release).await? {
                tracing::info!(agent_id = agent, devices = ?chosen, "GPUs allocated");
                return Ok(chosen);
            }
        }
        Err(RuntimeError::GpuUnavailable(format!(
            "{wanted} GPU(s): other agents kept claiming the free devices; try again"
        )))
    }

    async fn release(&self, agent: &str) -> Result<(), RuntimeError> {
        let released = self.store.gpu_release(agent).await?;
        if !released.is_empty() {
            tracing::info!(agent_id = agent, devices = ?released, "GPUs released");
        }
        Ok(())
    }

    /// Creates the container with exactly `devices` (re-creating one left by an earlier
    /// attempt with other devices).
    async fn create_with(
        &self,
        spec: &ContainerSpec,
        devices: Vec<String>,
    ) -> Result<String, RuntimeError> {
        let with = spec.clone().with_gpu_devices(devices);
        let id = self.docker.create(&with).await?;
        match self.docker.inspect(&id).await? {
            Some(o) if !same_devices(&o.gpu_devices, &with.gpu_devices) => {
                tracing::info!(container = %id, "replacing a container left with other GPUs");
                self.docker.remove(&id, 0).await?;
                self.docker.create(&with).await
            }
            _ => Ok(id),
        }
    }

    /// Allocates the agent's GPUs, then starts (or restarts, with `restart_timeout_s`)
    /// the container. When its old devices went to another agent, the container is
    /// removed and `NotFound` returned: the caller creates a new one, which gets the
    /// devices just allocated (they are held by the agent now).
    async fn run(&self, id: &str, restart_timeout_s: Option<u32>) -> Result<(), RuntimeError> {
        let observed = self
            .docker
            .inspect(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        self.remember_observed(&observed);
        let wanted = spec::spec_from_container(
            &observed.labels,
            |name| observed.env_var(name).map(str::to_string),
            &observed.image,
        )
        .map(|(_, s)| s.resources.gpus as usize)
        .unwrap_or(observed.gpu_devices.len());
        if wanted > 0 {
            let agent = observed
                .labels
                .get(LABEL_AGENT_ID)
                .cloned()
                .ok_or_else(|| RuntimeError::Docker {
                    op: DockerOp::StartContainer.as_str(),
                    status: None,
                    message: format!("container {id} has no {LABEL_AGENT_ID} label"),
                })?;
            let devices = self.allocate(&agent, wanted, &observed.gpu_devices).await?;
            if !same_devices(&devices, &observed.gpu_devices) {
                tracing::info!(agent_id = %agent, old = ?observed.gpu_devices, new = ?devices, "the agent's GPUs went to another agent; its container is re-created with the new ones");
                self.docker
                    .remove(id, restart_timeout_s.unwrap_or(0))
                    .await?;
                return Err(RuntimeError::NotFound(format!(
                    "container {id} was removed to be re-created with GPUs {}",
                    devices.join(",")
                )));
            }
        }
        match restart_timeout_s {
            Some(t) => self.docker.restart(id, t).await,
            None => self.docker.start(id).await,
        }
        .map_err(explain_start_error)
    }
}

#[async_trait]
impl Runtime for GpuRuntime {
    fn mode(&self) -> &'static str {
        "gpu"
    }

    /// Docker's runtime does the rest: ping, images, in-place resource changes, pause
    /// and resume (a paused agent keeps its GPUs, as at start, where `paused`
    /// containers hold theirs), stats and logs.
    fn wrapped(&self) -> Option<&dyn Runtime> {
        Some(&self.docker)
    }

    async fn prepare(&self) -> Result<(), RuntimeError> {
        self.docker.prepare().await?;
        // Make Redis match the containers: running ones hold their devices; created
        // (never started) ones keep a reservation Redis remembers; the rest is freed.
        let current = self.store.gpu_allocations().await?;
        let mut holdings: HashMap<String, String> = HashMap::new();
        // One listing; only containers whose labels say they may hold GPUs are
        // inspected (the listing does not show device requests), so a restart with
        // hundreds of GPU-less agents costs one Docker call, as in docker mode.
        for brief in self.docker.list_managed_brief().await? {
            self.remember_observed(&brief);
            if !may_hold_gpus(&brief.labels) {
                continue;
            }
            let Some(o) = self.docker.inspect(&brief.id).await? else {
                continue;
            };
            let Some(agent) = o.labels.get(LABEL_AGENT_ID) else {
                continue;
            };
            let holds = o.running || matches!(o.state.as_str(), "restarting" | "paused");
            for d in &o.gpu_devices {
                let keep = holds || (o.state == "created" && current.get(d) == Some(agent));
                if !keep {
                    continue;
                }
                if let Some(other) = holdings.insert(d.clone(), agent.clone()) {
                    if &other != agent {
                        tracing::warn!(device = %d, agents = ?[&other, agent], "one GPU is used by two running agents");
                    }
                }
            }
        }
        let pairs: Vec<(String, String)> = holdings.into_iter().collect();
        self.store.gpu_reset(&pairs).await?;
        tracing::info!(inventory = ?self.inventory, allocated = pairs.len(), "GPU allocations reconciled");
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let agent = spec.agent_id().map(str::to_string).unwrap_or_default();
        if spec.gpus == 0 {
            let id = self.docker.create(spec).await?;
            self.remember(&id, &agent);
            return Ok(id);
        }
        let devices = self.allocate(&agent, spec.gpus as usize, &[]).await?;
        match self.create_with(spec, devices).await {
            Ok(id) => {
                self.remember(&id, &agent);
                Ok(id)
            }
            Err(e) => {
                if let Err(release) = self.release(&agent).await {
                    tracing::warn!(agent_id = %agent, error = %release, "could not release the GPUs of a failed create");
                }
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(id, None).await
    }

    async fn stop(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let agent = self.agent_of(id).await?;
        let stopped = self.docker.stop(id, timeout_s).await;
        if matches!(stopped, Ok(()) | Err(RuntimeError::NotFound(_))) {
            if let Some(agent) = agent {
                self.release(&agent).await?;
            }
        }
        stopped
    }

    async fn restart(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        self.run(id, Some(timeout_s)).await
    }

    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let agent = self.agent_of(id).await?;
        self.docker.remove(id, timeout_s).await?;
        if let Some(agent) = agent {
            self.release(&agent).await?;
        }
        if let Ok(mut owners) = self.owners.lock() {
            owners.remove(id);
        }
        Ok(())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError> {
        let observed = self.docker.inspect(id_or_name).await?;
        if let Some(o) = &observed {
            self.remember_observed(o);
        }
        Ok(observed)
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError> {
        let all = self.docker.list_managed().await?;
        for o in &all {
            self.remember_observed(o);
        }
        Ok(all)
    }

    /// The Docker runtime's one listing (no GPU devices: inspect for those).
    async fn list_managed_brief(&self) -> Result<Vec<Observed>, RuntimeError> {
        let all = self.docker.list_managed_brief().await?;
        for o in &all {
            self.remember_observed(o);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn held(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(d, a)| (d.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn free_devices_are_handed_out_in_inventory_order() {
        let i = inv(&["0", "1", "2"]);
        assert_eq!(
            choose(&i, &held(&[]), "a", 2, &[]).unwrap(),
            inv(&["0", "1"])
        );
        assert_eq!(
            choose(&i, &held(&[("0", "b")]), "a", 2, &[]).unwrap(),
            inv(&["1", "2"])
        );
        assert_eq!(choose(&i, &held(&[]), "a", 0, &[]).unwrap(), inv(&[]));
    }

    #[test]
    fn a_device_is_never_handed_out_twice() {
        let i = inv(&["0", "1"]);
        let taken = held(&[("0", "b"), ("1", "c")]);
        let e = choose(&i, &taken, "a", 1, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 GPU(s) requested but only 0 of the 2 in the inventory are free"
        );
        // Preferring a device another agent holds does not get it.
        let e = choose(&i, &taken, "a", 1, &inv(&["0"])).unwrap_err();
        assert!(matches!(e, GpuShortage::TooFewFree { free: 0, .. }), "{e}");
    }

    #[test]
    fn an_agent_keeps_what_it_holds() {
        let i = inv(&["0", "1", "2"]);
        let taken = held(&[("2", "a"), ("0", "b")]);
        assert_eq!(choose(&i, &taken, "a", 1, &[]).unwrap(), inv(&["2"]));
        assert_eq!(choose(&i, &taken, "a", 2, &[]).unwrap(), inv(&["2", "1"]));
    }

    #[test]
    fn old_devices_are_preferred_when_still_free() {
        let i = inv(&["0", "1", "2", "3"]);
        assert_eq!(
            choose(&i, &held(&[]), "a", 2, &inv(&["3", "1"])).unwrap(),
            inv(&["3", "1"])
        );
        // One old device was taken meanwhile: keep the other, add a free one.
        assert_eq!(
            choose(&i, &held(&[("3", "b")]), "a", 2, &inv(&["3", "1"])).unwrap(),
            inv(&["1", "0"])
        );
    }

    #[test]
    fn requests_beyond_the_inventory_are_refused_clearly() {
        let e = choose(&inv(&[]), &held(&[]), "a", 1, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("inventory is empty (set GPU_DEVICES"),
            "{e}"
        );
        let e = choose(&inv(&["0"]), &held(&[]), "a", 2, &[]).unwrap_err();
        assert!(e.to_string().contains("inventory has only 1"), "{e}");
        // Devices no longer in the inventory are not handed out.
        let e = choose(&inv(&["0"]), &held(&[]), "a", 1, &inv(&["7"])).unwrap();
        assert_eq!(e, inv(&["0"]));
    }

    #[test]
    fn only_containers_that_may_hold_gpus_are_inspected_at_start() {
        let with = |resources: &str| {
            HashMap::from([(spec::LABEL_RESOURCES.to_string(), resources.to_string())])
        };
        assert!(!may_hold_gpus(&with(
            r#"{"memory_mb":256,"cpus":0.5,"gpus":0}"#
        )));
        assert!(may_hold_gpus(&with(
            r#"{"memory_mb":256,"cpus":0.5,"gpus":2}"#
        )));
        assert!(may_hold_gpus(&with("not json")), "unreadable: look closer");
        assert!(may_hold_gpus(&HashMap::new()), "no label: look closer");
    }

    #[test]
    fn nvidia_smi_output_is_parsed() {
        let out = "0, GPU-8f0e1a2b-0000-1111-2222-333344445555, 81559\n\
                   1, GPU-9a9a9a9a-0000-1111-2222-333344445555, 81559 MiB\n\
                   garbage\n\n";
        let d = parse_nvidia_smi(out);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].index, 0);
        assert_eq!(d[0].uuid, "GPU-8f0e1a2b-0000-1111-2222-333344445555");
        assert_eq!(d[0].memory_mb, Some(81559));
        assert_eq!(d[1].memory_mb, Some(81559));
    }

    #[test]
    fn missing_nvidia_runtime_is_named() {
        let e = explain_start_error(RuntimeError::Docker {
            op: "start container",
            status: Some(500),
            message: "could not select device driver \"nvidia\" with capabilities: [[gpu]]".into(),
        });
        match e {
            RuntimeError::GpuUnavailable(m) => {
                assert!(m.contains("no usable NVIDIA container runtime"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let other = explain_start_error(RuntimeError::NotFound("x".into()));
        assert!(matches!(other, RuntimeError::NotFound(_)));
    }

    #[tokio::test]
    async fn absent_nvidia_smi_means_no_gpus() {
        let cfg = GpuConfig {
            devices: vec![],
            discover: true,
            nvidia_smi: "/nonexistent/nvidia-smi".into(),
            discover_timeout_s: 2,
            image: String::new(),
        };
        assert!(inventory(&cfg).await.is_empty());
        let cfg = GpuConfig {
            devices: inv(&["0", "1"]),
            ..cfg
        };
        assert_eq!(inventory(&cfg).await, inv(&["0", "1"]));
    }
}
