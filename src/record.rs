//! The agent's record: what the manager knows of one agent (its spec, where it runs,
//! how it is doing). The domain object every layer above shares; [`crate::store`] maps
//! it to the Redis hash of contract section 5.

use chrono::{DateTime, Utc};

use crate::protocol::{AgentSpec, AgentStatus, DesiredState};

/// One agent as the manager knows it: its spec, where it is, and how it is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub agent_id: String,
    pub spec: AgentSpec,
    pub status: AgentStatus,
    /// What the last command asked for; the manager converges towards it.
    pub desired_state: DesiredState,
    pub container_id: Option<String>,
    /// Docker health: healthy, unhealthy, starting or none.
    pub health: String,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub restart_count: u64,
    pub last_error: String,
    /// The last lines of the container's log when it last died (secrets redacted).
    pub last_logs: Vec<String>,
    /// The command being applied (routing key and message id) while it is half done, so
    /// a manager that died meanwhile can finish it at start and answer it.
    pub pending_command: String,
    pub pending_message_id: String,
    /// Counts the commands applied to the agent; work scheduled under an older
    /// generation (an automatic restart) is fenced off.
    pub generation: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_health_at: Option<DateTime<Utc>>,
}

impl AgentRecord {
    pub fn new(agent_id: &str, spec: AgentSpec, desired_state: DesiredState) -> Self {
        let now = Utc::now();
        AgentRecord {
            agent_id: agent_id.to_string(),
            spec,
            status: AgentStatus::Creating,
            desired_state,
            container_id: None,
            health: "none".into(),
            cpu_percent: 0.0,
            memory_bytes: 0,
            restart_count: 0,
            last_error: String::new(),
            last_logs: Vec::new(),
            pending_command: String::new(),
            pending_message_id: String::new(),
            generation: 0,
            created_at: now,
            updated_at: now,
            last_health_at: None,
        }
    }
}
