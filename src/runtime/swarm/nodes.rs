//! The swarm's nodes as the manager needs them: each node's hostname and whether Swarm
//! sees it, a task's node by hostname, and the node Swarm lost under a task. Pure.

use std::collections::HashMap;

use bollard::models::{Node, NodeState, Task};

use super::task::{current_task, is_live, task_node, task_state};

/// What the manager needs to know of a swarm node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub hostname: String,
    /// Swarm sees the node (state `ready`); a task on a node that is not is lost with it.
    pub ready: bool,
}

/// Node id → what one listing of the nodes says of it.
pub fn node_infos(nodes: &[Node]) -> HashMap<String, NodeInfo> {
    nodes
        .iter()
        .filter_map(|n| {
            let id = n.id.clone()?;
            let hostname = n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_else(|| id.clone());
            let ready = n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
            Some((id, NodeInfo { hostname, ready }))
        })
        .collect()
}

/// A task that may still end by itself: live, and on a node Swarm still sees (a task
/// on a lost node stays `running` in Swarm's books until the node comes back).
pub(super) fn may_end(t: &Task, nodes: &HashMap<String, NodeInfo>) -> bool {
    is_live(&task_state(t)) && task_node(t).is_none_or(|n| nodes.get(n).is_some_and(|i| i.ready))
}

/// The hostname of a node Swarm has lost that one of `tasks` was live on.
pub fn lost_node(tasks: &[Task], nodes: &HashMap<String, NodeInfo>) -> Option<String> {
    tasks
        .iter()
        .filter(|t| is_live(&task_state(t)) && !may_end(t, nodes))
        .filter_map(task_node)
        .map(|n| {
            nodes
                .get(n)
                .map_or_else(|| n.to_string(), |i| i.hostname.clone())
        })
        .next()
}

/// The node the current task is placed on, by hostname.
pub fn placed_on(tasks: &[Task], nodes: &HashMap<String, NodeInfo>) -> Option<String> {
    let current = current_task(tasks).filter(|t| is_live(&task_state(t)))?;
    let id = task_node(current)?;
    Some(
        nodes
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.hostname.clone()),
    )
}
