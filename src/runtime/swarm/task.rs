//! Reading Swarm's tasks: their state, node and container, as plain strings and ids;
//! which task stands for the agent now, and why one failed. Shared by the runtime
//! ([`super`]), the nodes ([`super::nodes`]) and the GPUs ([`super::gpu`]: which task
//! holds which GPUs). Pure.

use bollard::models::Task;

use crate::runtime::engine::SECOND_NS;

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

pub(super) fn task_grace_s(t: &Task) -> Option<i64> {
    t.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.stop_grace_period)
        .map(|ns| ns / SECOND_NS)
}

/// Why a task failed, for a person.
pub(super) fn task_error(t: &Task) -> String {
    let status = t.status.as_ref();
    let err = status.and_then(|s| s.err.clone()).unwrap_or_default();
    let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
    match (err.is_empty(), message.is_empty()) {
        (false, _) => format!("task {} {}: {err}", task_id(t), task_state(t)),
        (true, false) => format!("task {} {}: {message}", task_id(t), task_state(t)),
        (true, true) => format!("task {} {}", task_id(t), task_state(t)),
    }
}

/// Running and meant to run.
pub(super) fn is_up(t: &Task) -> bool {
    task_state(t) == "running" && desired_state(t) == "running"
}

/// Ended by failing (the task's container exited non-zero, or was refused).
pub(super) fn has_failed(t: &Task) -> bool {
    matches!(task_state(t).as_str(), "failed" | "rejected")
}

/// The task that stands for the agent now: the newest one meant to run, else the newest.
pub fn current_task(tasks: &[Task]) -> Option<&Task> {
    let index = |t: &Task| t.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    tasks
        .iter()
        .max_by_key(|t| (desired_state(t) == "running", index(t)))
}
