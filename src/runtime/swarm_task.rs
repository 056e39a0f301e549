//! Reading Swarm's tasks: their state, node and container, as plain strings and ids.
//! Shared by [`super::swarm`] (the agent's service) and [`super::swarm_gpu`] (which
//! task holds which GPUs).

use bollard::models::Task;

/// Task states before the task ends (Docker's `TaskState`, as strings).
pub fn is_live(state: &str) -> bool {
    matches!(
        state,
        "new"
            | "allocated"
            | "pending"
            | "assigned"
            | "accepted"
            | "preparing"
            | "ready"
            | "starting"
            | "running"
    )
}

pub fn task_state(t: &Task) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

pub fn desired_state(t: &Task) -> String {
    t.desired_state.map(|s| s.to_string()).unwrap_or_default()
}

pub fn task_id(t: &Task) -> String {
    t.id.clone().unwrap_or_default()
}

pub fn task_container(t: &Task) -> Option<String> {
    t.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .filter(|c| !c.is_empty())
}

pub fn task_node(t: &Task) -> Option<&str> {
    t.node_id.as_deref().filter(|n| !n.is_empty())
}

/// Why a task waits: Swarm's error on it (`no suitable node (insufficient resources on
/// 3 nodes)`), else its status message.
pub fn task_reason(t: &Task) -> String {
    let status = t.status.as_ref();
    status
        .and_then(|s| s.err.clone())
        .filter(|e| !e.is_empty())
        .or_else(|| status.and_then(|s| s.message.clone()))
        .unwrap_or_default()
}
