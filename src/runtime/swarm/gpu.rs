//! GPUs in swarm mode, through Swarm's generic resources.
//!
//! - A node offers its GPUs as generic resources of one kind (`swarm.gpu_resource`,
//!   default `NVIDIA-GPU`): `dockerd --node-generic-resource NVIDIA-GPU=GPU-<uuid>` per
//!   GPU, or `"node-generic-resources"` in the node's daemon.json.
//! - An agent with `resources.gpus = N` reserves N of that kind ([`reservation`]): Swarm
//!   places its task only on a node with N free and hands the task their ids as
//!   `DOCKER_RESOURCE_<KIND>` (NVIDIA's container runtime, with `swarm-resource =
//!   "DOCKER_RESOURCE_NVIDIA-GPU"` in its config.toml, makes them the visible devices).
//!   (Docker's JSON names a task's ids `GenericResources`, not the
//!   `AssignedGenericResources` of its API description, so clients built from that
//!   description never see them: the manager counts reservations instead.)
//! - Create answers `gpu_unavailable`, with nothing made, when no ready and active node
//!   has N free ([`most_free`]: what a node offers minus what its live tasks reserve); a
//!   start whose task Swarm still leaves pending for lack of resources after
//!   [`STARVED_GRACE`] (two creates raced for the last GPU) answers it too, and the
//!   service is scaled back to 0 so that it takes no GPU later, unasked.
//! - Docker before 23.0.2 rejects every task with both a generic resource and a network
//!   (moby#44378: "node is missing network attachments"); on such a swarm the GPU
//!   agents' services are attached to no network ([`generic_resources_with_networks`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec, Node,
    NodeSpecAvailabilityEnum, NodeState, ResourceObject, Task,
};

use super::task::{desired_state, is_live, task_node, task_reason, task_state};

/// The generic resource kind GPUs are offered as, unless configured otherwise.
pub const DEFAULT_KIND: &str = "NVIDIA-GPU";

/// How long a start lets Swarm look for a node with free GPUs before answering
/// `gpu_unavailable` (GPUs another agent gives back are free again within it).
pub const STARVED_GRACE: Duration = Duration::from_secs(5);

/// The reservation of an agent asking `gpus` GPUs (none for 0).
pub fn reservation(kind: &str, gpus: u32) -> Option<ResourceObject> {
    (gpus > 0).then(|| ResourceObject {
        generic_resources: Some(vec![GenericResourcesInner {
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(kind.to_string()),
                value: Some(i64::from(gpus)),
            }),
            ..Default::default()
        }]),
        ..Default::default()
    })
}

/// How many of `kind` `resources` hold: a named resource is one, a discrete one its value.
fn count(resources: Option<&Vec<GenericResourcesInner>>, kind: &str) -> u64 {
    resources
        .into_iter()
        .flatten()
        .map(|r| {
            if let Some(named) = r.named_resource_spec.as_ref() {
                u64::from(named.kind.as_deref() == Some(kind))
            } else if let Some(discrete) = r.discrete_resource_spec.as_ref() {
                if discrete.kind.as_deref() == Some(kind) {
                    discrete.value.unwrap_or(0).max(0) as u64
                } else {
                    0
                }
            } else {
                0
            }
        })
        .sum()
}

/// What `task` reserves of `kind` (its own copy of the service's task template).
fn reserved(task: &Task, kind: &str) -> u64 {
    count(
        task.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.reservations.as_ref())
            .and_then(|r| r.generic_resources.as_ref()),
        kind,
    )
}

/// A node Swarm places new tasks on: ready, and neither paused nor drained.
fn schedulable(node: &Node) -> bool {
    node.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
        && node.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE)
}

/// The most GPUs free on any one schedulable node: what it offers minus what the live
/// tasks meant to run there reserve.
pub fn most_free(nodes: &[Node], tasks: &[Task], kind: &str) -> u64 {
    let mut held: HashMap<&str, u64> = HashMap::new();
    for t in tasks
        .iter()
        .filter(|t| desired_state(t) == "running" && is_live(&task_state(t)))
    {
        if let Some(node) = task_node(t) {
            *held.entry(node).or_default() += reserved(t, kind);
        }
    }
    nodes
        .iter()
        .filter(|n| schedulable(n))
        .map(|n| {
            let offered = count(
                n.description
                    .as_ref()
                    .and_then(|d| d.resources.as_ref())
                    .and_then(|r| r.generic_resources.as_ref()),
                kind,
            );
            let used =
                n.id.as_deref()
                    .and_then(|id| held.get(id))
                    .copied()
                    .unwrap_or(0);
            offered.saturating_sub(used)
        })
        .max()
        .unwrap_or(0)
}

/// Swarm found no node with room for the task (it waits, `pending`, for one).
pub fn starved(task: &Task) -> bool {
    task_state(task) == "pending" && task_reason(task).contains("insufficient resources")
}

/// `"20.10.24+dfsg1"` → `(20, 10, 24)`.
fn engine_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Whether a swarm managed by Docker `version` runs tasks that have both a generic
/// resource and a network (moby#44378, fixed in 23.0.2). Unknown versions are trusted.
pub fn generic_resources_with_networks(version: &str) -> bool {
    engine_version(version).is_none_or(|v| v >= (23, 0, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        GenericResourcesInnerNamedResourceSpec, NodeDescription, NodeSpec, NodeStatus, TaskSpec,
        TaskSpecResources, TaskState, TaskStatus,
    };

    fn gpu(id: &str) -> GenericResourcesInner {
        GenericResourcesInner {
            named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                kind: Some(DEFAULT_KIND.into()),
                value: Some(id.into()),
            }),
            ..Default::default()
        }
    }

    fn node(id: &str, gpus: &[&str], ready: bool, availability: NodeSpecAvailabilityEnum) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                availability: Some(availability),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(if ready {
                    NodeState::READY
                } else {
                    NodeState::DOWN
                }),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                resources: Some(ResourceObject {
                    generic_resources: Some(gpus.iter().map(|g| gpu(g)).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(node: &str, state: TaskState, gpus: u32) -> Task {
        Task {
            node_id: Some(node.into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                resources: Some(TaskSpecResources {
                    reservations: reservation(DEFAULT_KIND, gpus),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_reservation_asks_for_a_count_of_the_kind() {
        assert!(reservation(DEFAULT_KIND, 0).is_none());
        let r = reservation("NVIDIA-GPU", 2).unwrap();
        let d = r.generic_resources.unwrap()[0]
            .discrete_resource_spec
            .clone()
            .unwrap();
        assert_eq!((d.kind.as_deref(), d.value), (Some("NVIDIA-GPU"), Some(2)));
    }

    #[test]
    fn free_gpus_are_what_a_schedulable_node_offers_minus_what_its_live_tasks_hold() {
        use NodeSpecAvailabilityEnum::{ACTIVE, DRAIN};
        let nodes = vec![
            node("a", &["a0", "a1"], true, ACTIVE),
            node("b", &["b0"], true, ACTIVE),
            node("c", &["c0", "c1", "c2"], false, ACTIVE),
            node("d", &["d0", "d1", "d2"], true, DRAIN),
        ];
        assert_eq!(
            most_free(&nodes, &[], DEFAULT_KIND),
            2,
            "down and drained nodes do not count"
        );
        let one = [task("a", TaskState::RUNNING, 1)];
        assert_eq!(most_free(&nodes, &one, DEFAULT_KIND), 1);
        let both = [
            task("a", TaskState::RUNNING, 1),
            task("a", TaskState::STARTING, 1),
            task("b", TaskState::RUNNING, 1),
            task("b", TaskState::SHUTDOWN, 1),
            task("c", TaskState::RUNNING, 0),
        ];
        assert_eq!(most_free(&nodes, &both, DEFAULT_KIND), 0);
        let two = [task("a", TaskState::RUNNING, 2)];
        assert_eq!(most_free(&nodes, &two, DEFAULT_KIND), 1, "b's one");
        assert_eq!(most_free(&nodes, &[], "OTHER"), 0, "another kind");
    }

    #[test]
    fn a_task_pending_for_resources_is_starved() {
        let mut t = task("", TaskState::PENDING, 1);
        assert!(!starved(&t));
        t.status.as_mut().unwrap().err =
            Some("no suitable node (insufficient resources on 3 nodes)".into());
        assert!(starved(&t));
        t.status.as_mut().unwrap().err =
            Some("no suitable node (scheduling constraints not satisfied on 3 nodes)".into());
        assert!(!starved(&t), "constraints are not a lack of GPUs");
    }

    #[test]
    fn engines_before_23_0_2_cannot_mix_generic_resources_and_networks() {
        assert!(!generic_resources_with_networks("20.10.24+dfsg1"));
        assert!(!generic_resources_with_networks("23.0.1"));
        assert!(generic_resources_with_networks("23.0.2"));
        assert!(generic_resources_with_networks("27.3.1"));
        assert!(generic_resources_with_networks("dev"));
    }
}
