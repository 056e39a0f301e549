//! Translating between the manager's model and Swarm's: the service an agent's
//! [`ContainerSpec`] becomes (labels, env, limits, security, placement, GPUs as generic
//! resources), its replicas and grace period, and what a service and its tasks say of
//! the agent ([`Observed`]). Pure: no Docker call.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::config::SwarmConfig;
use crate::runtime::engine::{
    health_config, json_file_log_options, nofile_ulimit, LOG_DRIVER, SECOND_NS,
};
use crate::runtime::spec::{self, ContainerSpec};
use crate::runtime::Observed;

use super::gpu as swarm_gpu;
use super::task::*;

/// The first API version whose services take `Privileges.NoNewPrivileges`.
pub(super) const NO_NEW_PRIVILEGES_API: (u32, u32) = (1, 46);

/// Replicas the service asks for.
pub fn replicas(spec: &ServiceSpec) -> u64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0) as u64
}

pub(super) fn set_replicas(spec: &mut ServiceSpec, n: i64) {
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(n) }),
        ..Default::default()
    });
}

pub(super) fn set_grace(spec: &mut ServiceSpec, timeout_s: u32) {
    let template = spec.task_template.get_or_insert_with(Default::default);
    let container = template.container_spec.get_or_insert_with(Default::default);
    container.stop_grace_period = Some(i64::from(timeout_s) * SECOND_NS);
}

pub(super) fn limits(spec: &ServiceSpec) -> Option<&Limit> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
}

/// The service for `spec` (contract section 4, as far as Swarm can express it).
/// `gpus_with_networks`: the swarm runs tasks with both GPUs and a network (see
/// [`swarm_gpu::generic_resources_with_networks`]); when not, a GPU agent gets none.
pub fn service_spec(
    spec: &ContainerSpec,
    replicas: i64,
    grace_s: u32,
    force_update: u64,
    policy: &SwarmConfig,
    gpus_with_networks: bool,
) -> ServiceSpec {
    let mut mounts = vec![Mount {
        target: Some("/tmp".into()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some((spec.tmpfs_mb * 1024 * 1024) as i64),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Default::default()
    }];
    for m in &spec.module_mounts {
        if let Some((source, target)) = m.split_once(':') {
            mounts.push(Mount {
                source: Some(source.into()),
                target: Some(target.into()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    let condition = match policy.restart_condition.as_str() {
        "any" => TaskSpecRestartPolicyConditionEnum::ANY,
        "none" => TaskSpecRestartPolicyConditionEnum::NONE,
        _ => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
    };
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(spec.labels.clone()),
        env: Some(spec.env.clone()),
        read_only: Some(true),
        init: Some(true),
        mounts: Some(mounts),
        stop_grace_period: Some(i64::from(grace_s) * SECOND_NS),
        capability_drop: Some(vec!["ALL".into()]),
        // Only what the config adds back (checked by crate::security at load).
        capability_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        user: spec.user.clone(),
        // Honoured from API 1.46 on; dockerd 20.10 drops it (see the module notes).
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        ulimits: Some(vec![nofile_ulimit(spec.nofile)]),
        // Swarm reports a task running only once this check passes, and replaces a task
        // whose check fails.
        health_check: spec.healthcheck.as_ref().map(health_config),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(spec.labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: Some(spec.nano_cpus),
                    memory_bytes: Some(spec.memory_bytes),
                    pids: Some(spec.pids_limit),
                }),
                reservations: swarm_gpu::reservation(&policy.gpu_resource, spec.gpus),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(condition),
                delay: Some(policy.restart_delay_s as i64 * SECOND_NS),
                max_attempts: Some(policy.restart_max_attempts as i64),
                window: Some(policy.restart_window_s as i64 * SECOND_NS),
            }),
            force_update: Some(force_update),
            networks: (spec.gpus == 0 || gpus_with_networks).then(|| {
                vec![NetworkAttachmentConfig {
                    target: Some(spec.network.clone()),
                    ..Default::default()
                }]
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some(LOG_DRIVER.into()),
                options: Some(json_file_log_options()),
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(
                    policy.constraints_for(
                        spec.labels
                            .get(spec::LABEL_AGENT_TYPE)
                            .map_or("", String::as_str),
                        spec.labels
                            .get(spec::LABEL_CUSTOMER_ID)
                            .map_or("", String::as_str),
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // DNS round robin, not a virtual IP: VIPs need IPVS in every node's kernel, which
        // hosts without the ip_vs module (and this project's test machines) lack. Agents
        // publish no ports, so nothing is lost.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        }),
        // One agent never runs twice: the old task stops before the new one starts.
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the manager sees of an agent's service and its tasks.
pub fn observed_from(service: &Service, tasks: &[Task]) -> Observed {
    let spec = service.spec.clone().unwrap_or_default();
    let container = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.clone())
        .unwrap_or_default();
    let current = current_task(tasks);
    let state = match current.map(task_state) {
        Some(s) if s == "running" => "running",
        Some(s) if is_live(&s) => "created",
        Some(_) => "exited",
        None if replicas(&spec) == 0 => "exited",
        None => "created",
    };
    let image = container.image.clone().unwrap_or_default();
    // Swarm may pin the image by digest (`image@sha256:…`); the agent's image is the name.
    let image = image.split('@').next().unwrap_or_default().to_string();
    let status = current.and_then(|t| t.status.as_ref());
    let limit = limits(&spec);
    Observed {
        id: service.id.clone().unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        image,
        labels: spec.labels.clone().unwrap_or_default(),
        env: container.env.clone().unwrap_or_default(),
        state: state.to_string(),
        running: current.is_some_and(is_up),
        exit_code: (state == "exited")
            .then(|| {
                status
                    .and_then(|s| s.container_status.as_ref())
                    .and_then(|c| c.exit_code)
            })
            .flatten(),
        oom_killed: false,
        paused: false,
        health: if current.is_some_and(|t| task_state(t) == "starting") {
            "starting".into()
        } else {
            "none".into()
        },
        started_at: (state == "running")
            .then(|| status.and_then(|s| s.timestamp.clone()))
            .flatten(),
        restart_count: tasks.iter().filter(|t| has_failed(t)).count() as i64,
        memory_bytes: limit.and_then(|l| l.memory_bytes).unwrap_or(0),
        nano_cpus: limit.and_then(|l| l.nano_cpus).unwrap_or(0),
        // Docker's JSON names the task's GPU ids `GenericResources`, which the API
        // description (and so this client) calls `AssignedGenericResources`: not seen.
        gpu_devices: Vec::new(),
        task_container_id: current.and_then(task_container),
        node: None,
        reason: None,
    }
}

/// What one listing of `services` and of the swarm's `tasks` tells of each service, as
/// [`observed_from`] reads a service and its own tasks (without what only the node
/// running a task knows: the container's health and out-of-memory kill).
pub fn briefs_from(services: &[Service], tasks: Vec<Task>) -> Vec<Observed> {
    let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
    for task in tasks {
        if let Some(service) = task.service_id.clone() {
            by_service.entry(service).or_default().push(task);
        }
    }
    services
        .iter()
        .map(|service| {
            let own = service
                .id
                .as_ref()
                .and_then(|id| by_service.get(id))
                .map(Vec::as_slice)
                .unwrap_or_default();
            observed_from(service, own)
        })
        .collect()
}

/// `"1.41"` → `(1, 41)`.
pub(super) fn api_version(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
