//! The agent's tasks (contract section 8): the Core Engine publishes a task with routing
//! key `agent:<agent_id>:task`; the agent consumes it from its durable queue
//! `agent:<agent_id>:inbox` and publishes the result with `agent:<agent_id>:result`.
//! The manager never reads a task; it declares the inbox (with the agent's users, so a
//! task sent right after `agent.created` waits in it) and removes it on delete.

/// The agent's durable task queue.
pub fn inbox_queue(agent_id: &str) -> String {
    format!("agent:{agent_id}:inbox")
}

/// The routing key tasks for the agent are published with (the inbox's binding).
pub fn task_key(agent_id: &str) -> String {
    format!("agent:{agent_id}:task")
}

/// The routing key of the agent's results.
pub fn result_key(agent_id: &str) -> String {
    format!("agent:{agent_id}:result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contracts() {
        assert_eq!(inbox_queue("a-1"), "agent:a-1:inbox");
        assert_eq!(task_key("a-1"), "agent:a-1:task");
        assert_eq!(result_key("a-1"), "agent:a-1:result");
    }
}
