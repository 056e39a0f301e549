//! Swarm mode: each agent is a Docker Swarm service `agent-<agent_id>` with one replica
//! on an overlay network. The handle the actors hold (the record's `container_id`) is
//! the service id; the container of the current task is in
//! [`Observed::task_container_id`].
//!
//! | operation | on the service |
//! | --- | --- |
//! | create | service with 0 replicas (labels, env, limits, security from [`ContainerSpec`]) |
//! | start | scale to 1, wait for a running task |
//! | stop | scale to 0 with `StopGracePeriod` = timeout, wait for the task to end |
//! | restart | bump `TaskTemplate.ForceUpdate` (and scale to 1), wait for a new running task |
//! | update (resources) | new limits in the task template: Swarm replaces the task |
//! | delete | stop, then remove the service |
//! | brief listing (relist, adoption) | one listing of the services, one of every task |
//!
//! What dockerd 20.10 (API 1.41) does not take, and how it is handled:
//! - no swap setting for services: Docker's default applies (swap up to the memory
//!   limit again, where the host has swap at all);
//! - no per-service `no-new-privileges` (`Privileges.NoNewPrivileges` needs API 1.46): the
//!   field is sent (newer engines honour it, 20.10 drops it), every capability is
//!   dropped (so a set-uid binary gains nothing), and at start the manager warns unless
//!   the daemon sets `no-new-privileges` for every container;
//! - no tmpfs mount flags (API 1.46): Docker mounts a service's tmpfs
//!   `nosuid,nodev,noexec` by default, which is what docker mode asks for;
//! - a task keeps the `StopGracePeriod` it was created with, so a stop's timeout only
//!   reaches the next task through the spec: for a task on this node the manager also
//!   stops its container itself with the command's timeout;
//! - no device requests: GPUs are Swarm's generic resources instead ([`gpu`]),
//!   and before Docker 23.0.2 a service with GPUs cannot also have a network (moby#44378):
//!   GPU agents then run on no network;
//! - the image is pinned to its registry digest where a registry knows it
//!   ([`image_pin`]), else every node needs the tag.
//!
//! The folder: [`service`] (pure translation to and from Swarm's services), [`task`]
//! (reading tasks), [`nodes`] (nodes and lost nodes), [`gpu`] (GPUs as generic
//! resources), [`image_pin`] (services pinned to the registry digest); this file holds
//! the runtime: the Docker calls and waits, and the `Runtime` implementation.

pub mod gpu;
pub mod image_pin;
pub mod nodes;
pub mod service;
pub mod task;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerSummary, Node, Service, ServiceSpec, Task};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};

use self::gpu as swarm_gpu;
use self::image_pin::Unpinnable;
use self::nodes::*;
use self::service::*;
use self::task::*;
use crate::config::{Config, SwarmConfig};
use crate::error::RuntimeError;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::engine::{DockerOp, Engine, LogSource, NetworkKind, SECOND_NS};
use crate::runtime::spec::{self, ContainerSpec};
use crate::runtime::{foreign_name, name_taken, NameTaken, Observed, Runtime, Stats};

/// How often a wait for tasks looks again.
const POLL: Duration = Duration::from_millis(250);

/// Swarm's label on a task's container naming its service.
const LABEL_SWARM_SERVICE_ID: &str = "com.docker.swarm.service.id";

/// Agents as single-replica Swarm services (swarm mode).
pub struct SwarmRuntime {
    /// The Docker client, its bounded calls, and containers of tasks on this node.
    docker: DockerRuntime,
    network: String,
    instance: String,
    policy: SwarmConfig,
    /// Bound on waiting for a task to run or end (a stop adds its grace period).
    task_timeout: Duration,
    /// Per-customer networks are created `internal` (`docker.network_internal`).
    network_internal: bool,
    /// Extra security options from the config, which Swarm services cannot take.
    security_opt: Vec<String>,
    /// The swarm's nodes as last listed: node ids of tasks read as hostnames without a
    /// listing per look (listed again when a task names a node not in it).
    nodes: std::sync::Mutex<HashMap<String, NodeInfo>>,
    /// Whether the swarm runs tasks with both GPUs and a network (set by `prepare`).
    gpus_with_networks: AtomicBool,
    /// Images whose registry digest could not be had lately.
    unpinnable: Unpinnable,
}

impl SwarmRuntime {
    pub fn new(docker: DockerRuntime, config: &Config) -> Self {
        SwarmRuntime {
            docker,
            network: config.docker.network.clone(),
            instance: config.instance.clone(),
            policy: config.swarm.clone(),
            task_timeout: Duration::from_secs(config.swarm.task_timeout_s),
            network_internal: config.docker.network_internal,
            security_opt: config.agents.security_opt.clone(),
            nodes: std::sync::Mutex::new(HashMap::new()),
            gpus_with_networks: AtomicBool::new(true),
            unpinnable: Unpinnable::default(),
        }
    }

    /// The bounded calls, shared with docker mode.
    fn engine(&self) -> &Engine {
        self.docker.engine()
    }

    /// Every service of this manager instance.
    async fn managed_services(&self) -> Result<Vec<Service>, RuntimeError> {
        let filters = spec::managed_filters(&self.instance);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let docker = self.engine().client().clone();
        self.engine()
            .call(DockerOp::ListServices, Duration::ZERO, async move {
                docker.list_services(Some(options)).await
            })
            .await
    }

    /// One listing of the swarm's nodes, as Docker describes them.
    async fn nodes_described(&self) -> Result<Vec<Node>, RuntimeError> {
        let docker = self.engine().client().clone();
        self.engine()
            .call(DockerOp::ListNodes, Duration::ZERO, async move {
                docker
                    .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
                    .await
            })
            .await
    }

    /// Every task of the swarm (one listing).
    async fn all_tasks(&self) -> Result<Vec<Task>, RuntimeError> {
        let docker = self.engine().client().clone();
        self.engine()
            .call(DockerOp::ListTasks, Duration::ZERO, async move {
                docker
                    .list_tasks(None::<bollard::query_parameters::ListTasksOptions>)
                    .await
            })
            .await
    }

    /// The swarm's nodes now (one listing), kept for [`SwarmRuntime::known_nodes`].
    async fn list_nodes(&self) -> Result<HashMap<String, NodeInfo>, RuntimeError> {
        let nodes = self.nodes_described().await?;
        let infos = node_infos(&nodes);
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = infos.clone();
        Ok(infos)
    }

    /// The nodes as last listed, listed again when one of `tasks` names another.
    async fn known_nodes(&self, tasks: &[Task]) -> HashMap<String, NodeInfo> {
        let cached = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if tasks
            .iter()
            .filter_map(task_node)
            .all(|n| cached.contains_key(n))
        {
            return cached;
        }
        match self.list_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the swarm's nodes");
                cached
            }
        }
    }

    fn gpus_with_networks(&self) -> bool {
        self.gpus_with_networks.load(Ordering::Relaxed)
    }

    /// `gpu_unavailable` unless some ready, active node has `gpus` free now (Swarm
    /// itself decides where; a race for the last ones is answered at start).
    async fn check_gpu_room(&self, gpus: u32) -> Result<(), RuntimeError> {
        let nodes = self.nodes_described().await?;
        let tasks = self.all_tasks().await?;
        let kind = &self.policy.gpu_resource;
        let free = swarm_gpu::most_free(&nodes, &tasks, kind);
        if free >= u64::from(gpus) {
            return Ok(());
        }
        Err(RuntimeError::GpuUnavailable(format!(
            "no swarm node has {gpus} free GPU(s) (generic resource {kind}); the most free \
             on one ready node is {free}"
        )))
    }

    /// `image` pinned to its registry digest, or `image` itself when no registry
    /// answers for it (see [`image_pin`]).
    async fn pin_image(&self, image: &str) -> String {
        if !self.unpinnable.worth_asking(image) {
            return image.to_string();
        }
        let docker = self.engine().client().clone();
        let name = image.to_string();
        let r = self
            .engine()
            .call(DockerOp::ResolveDigest, Duration::ZERO, async move {
                docker.inspect_registry_image(&name, None).await
            })
            .await;
        let pinned = match &r {
            Ok(d) => d
                .descriptor
                .digest
                .as_deref()
                .and_then(|digest| image_pin::pinned(image, digest)),
            Err(_) => None,
        };
        match pinned {
            Some(p) => {
                self.unpinnable.succeeded(image);
                p
            }
            None => {
                if self.unpinnable.failed(image) {
                    let why = r
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "no digest".into());
                    tracing::warn!(image, error = %why, "the image's registry gave no digest: agents' services name the tag, and every node must have the image (a local registry pins them; README \"Swarm mode\")");
                }
                image.to_string()
            }
        }
    }

    async fn inspect_service(&self, id: &str) -> Result<Option<Service>, RuntimeError> {
        let docker = self.engine().client().clone();
        let id = id.to_string();
        let r = self
            .engine()
            .call(DockerOp::InspectService, Duration::ZERO, async move {
                docker
                    .inspect_service(
                        &id,
                        None::<bollard::query_parameters::InspectServiceOptions>,
                    )
                    .await
            })
            .await;
        match r {
            Ok(s) => Ok(Some(s)),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn require_service(&self, id: &str) -> Result<Service, RuntimeError> {
        self.inspect_service(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("service {id}")))
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<Task>, RuntimeError> {
        let filters = HashMap::from([("service", vec![service_id.to_string()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let docker = self.engine().client().clone();
        let tasks = self
            .engine()
            .call(DockerOp::ListTasks, Duration::ZERO, async move {
                docker.list_tasks(Some(options)).await
            })
            .await?;
        // The filter matches service names by prefix too: keep this service's own.
        Ok(tasks
            .into_iter()
            .filter(|t| t.service_id.as_deref() == Some(service_id))
            .collect())
    }

    /// Changes the service's spec with `change` (inspect, change, update at that version;
    /// again when another writer got in between). Returns the service as it was.
    async fn update(
        &self,
        id: &str,
        op: DockerOp,
        change: impl Fn(&mut ServiceSpec),
    ) -> Result<Service, RuntimeError> {
        let mut attempt = 0;
        loop {
            let service = self.require_service(id).await?;
            let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            let mut spec = service.spec.clone().unwrap_or_default();
            change(&mut spec);
            let options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            let docker = self.engine().client().clone();
            let sid = service.id.clone().unwrap_or_else(|| id.to_string());
            let r = self
                .engine()
                .call(op, Duration::ZERO, async move {
                    docker.update_service(&sid, spec, options, None).await
                })
                .await;
            match r {
                Ok(_) => return Ok(service),
                Err(RuntimeError::Docker { message, .. })
                    if message.contains("out of sequence") && attempt < 3 =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls the service's tasks until `done` says so (or fails), within `limit`.
    async fn wait_tasks(
        &self,
        service_id: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Task]) -> Result<bool, RuntimeError>,
    ) -> Result<Vec<Task>, RuntimeError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let tasks = self.tasks(service_id).await?;
            if done(&tasks)? {
                return Ok(tasks);
            }
            if tokio::time::Instant::now() >= until {
                let states: Vec<String> = tasks.iter().map(task_error).collect();
                tracing::warn!(service = service_id, what, tasks = ?states, "swarm task did not converge");
                return Err(RuntimeError::Timeout {
                    op: "wait for swarm task",
                    after_s: limit.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A task keeps the grace period it was created with; for the live tasks on this
    /// node whose grace differs from `timeout_s`, stop their containers with it.
    async fn stop_local(&self, tasks: &[Task], timeout_s: u32) {
        for t in tasks.iter().filter(|t| is_live(&task_state(t))) {
            if task_grace_s(t) == Some(i64::from(timeout_s)) {
                continue;
            }
            let Some(container) = task_container(t) else {
                continue;
            };
            match self.docker.stop(&container, timeout_s).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(task = %task_id(t), %container, error = %e, "could not stop the task's container directly; Swarm stops it with the task's own grace period")
                }
            }
        }
    }

    /// Waits until a task runs: with `fresh`, one not in `before`, and no task of
    /// `before` still live (a restart or an update replaced it); without, any task (a
    /// start may find one Swarm is already bringing up). Fails fast when a task that is
    /// not in `before` failed.
    async fn wait_task_up(
        &self,
        service_id: &str,
        before: &HashSet<String>,
        fresh: bool,
        limit: Duration,
    ) -> Result<(), RuntimeError> {
        let what = if fresh {
            "a new running task"
        } else {
            "a running task"
        };
        let began = tokio::time::Instant::now();
        self.wait_tasks(service_id, what, limit, |tasks| {
            let is_old = |t: &Task| before.contains(&task_id(t));
            if !fresh && tasks.iter().any(is_up) {
                return Ok(true);
            }
            if fresh && tasks.iter().any(|t| !is_old(t) && is_up(t)) {
                // stop-first: the old task is gone before the new one runs.
                return Ok(!tasks.iter().any(|t| is_old(t) && is_live(&task_state(t))));
            }
            if let Some(failed) = tasks.iter().find(|t| !is_old(t) && has_failed(t)) {
                return Err(RuntimeError::Docker {
                    op: "start service",
                    status: None,
                    message: task_error(failed),
                });
            }
            // Only GPUs are reserved: a task no node has room for waits for GPUs.
            let starved = tasks
                .iter()
                .find(|t| !is_old(t) && desired_state(t) == "running" && swarm_gpu::starved(t));
            if let Some(t) = starved {
                if began.elapsed() >= swarm_gpu::STARVED_GRACE {
                    return Err(RuntimeError::GpuUnavailable(format!(
                        "no swarm node has the GPUs the agent reserves free: {}",
                        task_reason(t)
                    )));
                }
            }
            Ok(false)
        })
        .await
        .map(|_| ())
    }

    async fn wait_no_live_task(
        &self,
        service_id: &str,
        limit: Duration,
    ) -> Result<(), RuntimeError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let tasks = self.tasks(service_id).await?;
            if !tasks.iter().any(|t| is_live(&task_state(t))) {
                return Ok(());
            }
            // Tasks on nodes Swarm has lost never report their end: not waited for.
            let nodes = self.list_nodes().await?;
            if !tasks.iter().any(|t| may_end(t, &nodes)) {
                let lost: Vec<&str> = tasks
                    .iter()
                    .filter(|t| is_live(&task_state(t)))
                    .filter_map(task_node)
                    .map(|n| nodes.get(n).map_or(n, |i| i.hostname.as_str()))
                    .collect();
                tracing::warn!(service = service_id, nodes = ?lost, "the service's remaining tasks are on nodes the swarm has lost; not waiting for them");
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                let states: Vec<String> = tasks.iter().map(task_error).collect();
                tracing::warn!(service = service_id, tasks = ?states, "swarm tasks did not end");
                return Err(RuntimeError::Timeout {
                    op: "wait for swarm task",
                    after_s: limit.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn observe(&self, service: Service) -> Result<Observed, RuntimeError> {
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks(&id).await?;
        tracing::trace!(service = %id, tasks = ?tasks.iter().map(|t| (task_id(t), task_state(t), desired_state(t))).collect::<Vec<_>>(), "service tasks");
        let mut observed = observed_from(&service, &tasks);
        let mut nodes = self.known_nodes(&tasks).await;
        if !observed.running {
            // Whether a node was lost is news the cached listing may not have yet.
            match self.list_nodes().await {
                Ok(fresh) => nodes = fresh,
                Err(e) => tracing::debug!(error = %e, "cannot list the swarm's nodes"),
            }
            observed.reason = lost_node(&tasks, &nodes)
                .map(|node| format!("node {node} is lost; Swarm reschedules the agent"));
        }
        observed.node = placed_on(&tasks, &nodes);
        // Health and out-of-memory are known to the node running the task: ask when it
        // is this one (a single-node swarm, or an agent placed on the manager's node).
        if let Some(container) = observed.task_container_id.clone() {
            match self.docker.inspect(&container).await {
                Ok(Some(local)) => {
                    observed.health = local.health;
                    observed.oom_killed = local.oom_killed;
                    if observed.running {
                        observed.started_at = local.started_at.or(observed.started_at);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%container, error = %e, "task container not inspectable here")
                }
            }
        }
        Ok(observed)
    }

    /// Local containers of the service's tasks (they outlive the service briefly).
    async fn local_task_containers(
        &self,
        service_id: &str,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_SWARM_SERVICE_ID}={service_id}")],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let docker = self.engine().client().clone();
        self.engine()
            .call(DockerOp::ListContainers, Duration::ZERO, async move {
                docker.list_containers(Some(options)).await
            })
            .await
    }

    async fn delete_service(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.engine().client().clone();
        let sid = id.to_string();
        let r = self
            .engine()
            .call(DockerOp::RemoveService, Duration::ZERO, async move {
                docker.delete_service(&sid).await
            })
            .await;
        match r {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The service named like `spec`: its id when it is this spec's (an earlier attempt
    /// of the same create), `None` when there is none or a stale one of this manager was
    /// removed; an error when another owner's service has the name.
    async fn existing(&self, spec: &ContainerSpec) -> Result<Option<String>, RuntimeError> {
        let Some(found) = self.inspect_service(&spec.name).await? else {
            return Ok(None);
        };
        let labels = found
            .spec
            .as_ref()
            .and_then(|s| s.labels.clone())
            .unwrap_or_default();
        let id = found.id.clone().unwrap_or_default();
        match name_taken(&labels, spec) {
            NameTaken::Reuse => Ok(Some(id)),
            NameTaken::Foreign => Err(foreign_name(
                DockerOp::CreateService.as_str(),
                "service",
                &spec.name,
                &id,
            )),
            NameTaken::RemoveStale => {
                tracing::warn!(service = %id, "removing stale service of an earlier spec");
                self.remove(&id, 0).await?;
                Ok(None)
            }
        }
    }

    /// The customer's own overlay network (`docker.network_per_customer`), labelled as
    /// in docker mode.
    async fn ensure_customer_network(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.engine()
            .ensure_network(
                &spec.network,
                NetworkKind::Overlay,
                spec::customer_network_labels(spec),
                self.network_internal,
            )
            .await
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    /// No `pause`/`unpause`: a service's task cannot be frozen through the Swarm API
    /// (contract section 9: `unsupported`, the trait's default answer).
    fn mode(&self) -> &'static str {
        "swarm"
    }

    async fn prepare(&self) -> Result<(), RuntimeError> {
        let docker = self.engine().client().clone();
        let info = self
            .engine()
            .call(DockerOp::Info, Duration::ZERO, async move {
                docker.info().await
            })
            .await?;
        let swarm = info.swarm.clone().unwrap_or_default();
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .unwrap_or_default();
        if state != "active" || swarm.control_available != Some(true) {
            return Err(RuntimeError::Setup(format!(
                "the Docker endpoint must be a swarm manager, but this node's swarm state \
                 is '{}'{}; run `docker swarm init` (or join the swarm as a manager), or use \
                 DEPLOYMENT_MODE=docker",
                if state.is_empty() { "unknown" } else { &state },
                if state == "active" {
                    " and it is not a manager"
                } else {
                    ""
                }
            )));
        }
        if !self.security_opt.is_empty() {
            // Fail closed: a hardening option the operator asked for would be missing.
            return Err(RuntimeError::Setup(format!(
                "AGENT_SECURITY_OPT ({}) cannot be applied to Swarm services (API 1.41 has no \
                 per-service security options); unset it for swarm mode, or use docker mode",
                self.security_opt.join(", ")
            )));
        }
        self.engine()
            .ensure_network(
                &self.network,
                NetworkKind::Overlay,
                spec::managed_labels(),
                false,
            )
            .await?;
        let docker = self.engine().client().clone();
        let version = self
            .engine()
            .call(DockerOp::Version, Duration::ZERO, async move {
                docker.version().await
            })
            .await?;
        let engine_version = version.version.clone().unwrap_or_default();
        let gpus_with_networks = swarm_gpu::generic_resources_with_networks(&engine_version);
        self.gpus_with_networks
            .store(gpus_with_networks, Ordering::Relaxed);
        if !gpus_with_networks {
            tracing::info!(
                engine = %engine_version,
                "Docker before 23.0.2 rejects Swarm tasks with both GPUs (generic resources) \
                 and a network (moby#44378): agents asking for GPUs run on no network"
            );
        }
        let api = version
            .api_version
            .as_deref()
            .and_then(api_version)
            .unwrap_or((0, 0));
        let daemon_wide = info
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.contains("no-new-privileges"));
        if api < NO_NEW_PRIVILEGES_API && !daemon_wide {
            tracing::warn!(
                api = ?version.api_version,
                "this Docker engine cannot set no-new-privileges per Swarm service (needs API 1.46); \
                 agents run with every capability dropped, and setting \"no-new-privileges\": true \
                 in /etc/docker/daemon.json on every swarm node restores it"
            );
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker.ping().await
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.docker.ensure_image(image).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if spec.gpus > 0 {
            self.check_gpu_room(spec.gpus).await?;
        }
        // The node running the task needs the image too; here it is at least checked.
        self.docker.ensure_image(&spec.image).await?;
        if spec.customer_network {
            self.ensure_customer_network(spec).await?;
        }
        let image = self.pin_image(&spec.image).await;
        for _ in 0..3 {
            let mut body = service_spec(
                spec,
                0,
                spec.stop_timeout_s,
                0,
                &self.policy,
                self.gpus_with_networks(),
            );
            if let Some(c) = body
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
            {
                c.image = Some(image.clone());
            }
            let docker = self.engine().client().clone();
            let r = self
                .engine()
                .call(DockerOp::CreateService, Duration::ZERO, async move {
                    docker.create_service(body, None).await
                })
                .await;
            match r {
                Ok(created) => {
                    return created.id.ok_or_else(|| RuntimeError::Docker {
                        op: DockerOp::CreateService.as_str(),
                        status: None,
                        message: "Docker returned no service id".into(),
                    })
                }
                Err(RuntimeError::Docker {
                    status: Some(409), ..
                }) => {
                    // The name is taken: by our own earlier attempt, or by a stale one.
                    if let Some(id) = self.existing(spec).await? {
                        return Ok(id);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Docker {
            op: DockerOp::CreateService.as_str(),
            status: None,
            message: format!("could not create {} after 3 attempts", spec.name),
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let service = self.require_service(id).await?;
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        let spec = service.spec.clone().unwrap_or_default();
        let tasks = self.tasks(&sid).await?;
        if replicas(&spec) == 1 && tasks.iter().any(is_up) {
            return Ok(());
        }
        let before: HashSet<String> = tasks.iter().map(task_id).collect();
        // Scaled up already but nothing on its way (Swarm gave up restarting it): a
        // forced update makes a fresh task, as `docker start` would.
        let pending = tasks
            .iter()
            .any(|t| desired_state(t) == "running" && is_live(&task_state(t)));
        let force = replicas(&spec) == 1 && !pending;
        self.update(&sid, DockerOp::ScaleService, |s| {
            set_replicas(s, 1);
            if force {
                let t = s.task_template.get_or_insert_with(Default::default);
                t.force_update = Some(t.force_update.unwrap_or(0) + 1);
            }
        })
        .await?;
        match self
            .wait_task_up(&sid, &before, false, self.task_timeout)
            .await
        {
            Err(e @ RuntimeError::GpuUnavailable(_)) => {
                // Not left waiting: it would take GPUs later, unasked.
                if let Err(undo) = self
                    .update(&sid, DockerOp::ScaleService, |s| set_replicas(s, 0))
                    .await
                {
                    tracing::warn!(service = %sid, error = %undo, "could not scale back a service no node has GPUs for");
                }
                Err(e)
            }
            r => r,
        }
    }

    async fn stop(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let service = self.require_service(id).await?;
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        let spec = service.spec.clone().unwrap_or_default();
        let grace = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.stop_grace_period);
        if replicas(&spec) != 0 || grace != Some(i64::from(timeout_s) * SECOND_NS) {
            self.update(&sid, DockerOp::ScaleService, |s| {
                set_replicas(s, 0);
                set_grace(s, timeout_s);
            })
            .await?;
        }
        let tasks = self.tasks(&sid).await?;
        self.stop_local(&tasks, timeout_s).await;
        let longest = tasks
            .iter()
            .filter_map(task_grace_s)
            .max()
            .unwrap_or(0)
            .max(i64::from(timeout_s));
        let limit = self.task_timeout + Duration::from_secs(longest as u64);
        self.wait_no_live_task(&sid, limit).await
    }

    async fn restart(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let service = self.require_service(id).await?;
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        let tasks = self.tasks(&sid).await?;
        let before: HashSet<String> = tasks.iter().map(task_id).collect();
        self.update(&sid, DockerOp::ForceUpdateService, |s| {
            set_replicas(s, 1);
            set_grace(s, timeout_s);
            let t = s.task_template.get_or_insert_with(Default::default);
            t.force_update = Some(t.force_update.unwrap_or(0) + 1);
        })
        .await?;
        self.stop_local(&tasks, timeout_s).await;
        let limit = self.task_timeout + Duration::from_secs(u64::from(timeout_s));
        self.wait_task_up(&sid, &before, true, limit).await
    }

    async fn remove(&self, id: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let Some(service) = self.inspect_service(id).await? else {
            return Ok(());
        };
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        match self.stop(&sid, timeout_s).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            // A task that does not end (its node unreachable, not yet known as lost) does
            // not keep the agent: Swarm removes the task with the service, and a node
            // that comes back removes its container.
            Err(RuntimeError::Timeout { after_s, .. }) => {
                tracing::warn!(service = %sid, after_s, "the service's task did not end; removing the service anyway");
            }
            Err(e) => return Err(e),
        }
        self.delete_service(&sid).await?;
        // Swarm removes the tasks' containers right after; wait for it here so that the
        // network and the name are free when the delete is reported.
        let until = tokio::time::Instant::now() + self.task_timeout;
        loop {
            if self.local_task_containers(&sid).await?.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                tracing::warn!(service = %sid, "the service's task containers outlived it; Swarm removes them later");
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let service = self.require_service(id).await?;
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        let current = service.spec.clone().unwrap_or_default();
        let unchanged = limits(&current).is_some_and(|l| {
            l.memory_bytes == Some(spec.memory_bytes)
                && l.nano_cpus == Some(spec.nano_cpus)
                && l.pids == Some(spec.pids_limit)
        });
        if unchanged {
            return Ok(());
        }
        let tasks = self.tasks(&sid).await?;
        let before: HashSet<String> = tasks.iter().map(task_id).collect();
        let running = replicas(&current) > 0;
        let policy = self.policy.clone();
        let gpus_with_networks = self.gpus_with_networks();
        // Swarm has no in-place update: a new task template replaces the task.
        self.update(&sid, DockerOp::UpdateService, |s| {
            let template = s.task_template.clone().unwrap_or_default();
            let grace = template
                .container_spec
                .as_ref()
                .and_then(|c| c.stop_grace_period)
                .map(|ns| (ns / SECOND_NS) as u32)
                .unwrap_or(spec.stop_timeout_s);
            let force = template.force_update.unwrap_or(0);
            // Limits only: the task keeps its environment, the agent's own login included
            // (the spec built for a resize carries none).
            let env = template.container_spec.as_ref().and_then(|c| c.env.clone());
            // And its image as pinned at create (the same name).
            let image = template
                .container_spec
                .as_ref()
                .and_then(|c| c.image.clone())
                .filter(|i| i.split('@').next() == Some(spec.image.as_str()));
            let n = replicas(s) as i64;
            *s = service_spec(spec, n, grace, force, &policy, gpus_with_networks);
            if let Some(container) = s
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
            {
                container.env = env;
                if image.is_some() {
                    container.image = image;
                }
            }
        })
        .await?;
        if running {
            self.wait_task_up(&sid, &before, true, self.task_timeout)
                .await?;
        }
        Ok(())
    }

    /// A halt in swarm mode: the service scaled to 0 at once (no grace: the agent is
    /// cut off already), so no node runs it, whatever Swarm or a node loss does.
    async fn freeze(&self, id: &str) -> Result<(), RuntimeError> {
        match self.stop(id, 0).await {
            Err(RuntimeError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Scaled back to 1, waiting for its task to run (as a start).
    async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
        self.start(id).await
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError> {
        match self.inspect_service(id_or_name).await? {
            Some(service) => self.observe(service).await.map(Some),
            None => Ok(None),
        }
    }

    /// The running task's container, when it runs on this node (stats are per node).
    async fn stats(&self, id: &str) -> Result<Option<Stats>, RuntimeError> {
        let Some(service) = self.inspect_service(id).await? else {
            return Ok(None);
        };
        let sid = service.id.clone().unwrap_or_else(|| id.to_string());
        let tasks = self.tasks(&sid).await?;
        match current_task(&tasks)
            .filter(|t| is_up(t))
            .and_then(task_container)
        {
            Some(container) => self.docker.stats(&container).await,
            None => Ok(None),
        }
    }

    /// The service's output (every task's, as Swarm's log broker collects it).
    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<String>, RuntimeError> {
        self.engine().logs(LogSource::Service, id, tail).await
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError> {
        let services = self.managed_services().await?;
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            out.push(self.observe(service).await?);
        }
        Ok(out)
    }

    /// Two Docker calls whatever the number of agents: this instance's services, and
    /// every task of the swarm (a task filter naming hundreds of services would not do).
    async fn list_managed_brief(&self) -> Result<Vec<Observed>, RuntimeError> {
        let services = self.managed_services().await?;
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let tasks = self.all_tasks().await?;
        let nodes = self.known_nodes(&tasks).await;
        let mut node_of: HashMap<String, Option<String>> = HashMap::new();
        for service in &services {
            if let Some(id) = &service.id {
                let own: Vec<Task> = tasks
                    .iter()
                    .filter(|t| t.service_id.as_deref() == Some(id))
                    .cloned()
                    .collect();
                node_of.insert(id.clone(), placed_on(&own, &nodes));
            }
        }
        let mut briefs = briefs_from(&services, tasks);
        for b in &mut briefs {
            b.node = node_of.get(&b.id).cloned().flatten();
        }
        Ok(briefs)
    }
}
