//! The agent's record: what the manager knows of one agent (its spec, where it runs,
//! how it is doing). The domain object every layer above shares; [`crate::store`] maps
//! it to the Redis hash of contract section 5. Its status changes only through
//! [`status::transition`]. A team of agents has a record of its own ([`team`]).

pub mod halt;
pub mod holds;
pub mod status;
pub mod team;

use chrono::{DateTime, Utc};

use crate::protocol::{AgentSpec, AgentStatus, DesiredState, Event, EventKind};

/// One agent as the manager knows it: its spec, where it is, and how it is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub agent_id: String,
    pub spec: AgentSpec,
    /// Written only by [`status::transition`], so every status change has a named cause.
    status: AgentStatus,
    /// What the last command asked for; the manager converges towards it.
    pub desired_state: DesiredState,
    /// The runtime's id of the agent's workload: the container id in docker and gpu
    /// modes, the service id in swarm mode. `None` while the agent has none. Contract
    /// section 5 names it `container_id` in Redis and in events.
    pub workload_id: Option<String>,
    /// Docker health: healthy, unhealthy, starting or none.
    pub health: String,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub restart_count: u64,
    /// Why the agent is not as asked, for people; cleared when a command succeeds.
    pub last_error: Option<String>,
    /// The last lines of the container's log when it last died (secrets redacted).
    pub last_logs: Vec<String>,
    /// Who asked for the last stop (`requested_by`), kept until the agent starts again.
    pub stopped_by: Option<String>,
    /// Why the agent was last stopped (`reason`, redacted), kept until it starts again.
    pub stop_reason: Option<String>,
    /// The command being applied while it is half done, so a manager that died
    /// meanwhile can finish it at start and answer it.
    pub pending: Option<PendingCommand>,
    /// Counts the commands applied to the agent; work scheduled under an older
    /// generation (an automatic restart) is fenced off.
    pub generation: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_health_at: Option<DateTime<Utc>>,
    /// When the agent wrote the last heartbeat the manager read (the agent's own `ts`):
    /// kept across manager restarts, so a key that expires meanwhile still means hung.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Swarm mode: the node (hostname) the agent's task was last seen placed on; `None`
    /// in the other modes and while no task is placed.
    pub node: Option<String>,
    /// The halts holding the agent (contract section 10), oldest first; empty when none.
    /// While it is not empty the agent is `halted` ([`status::transition`]).
    pub halt_ids: Vec<String>,
    /// Who engaged the halt that last took the agent out (`requested_by`).
    pub halted_by: Option<String>,
    /// Why (the halt's `reason`).
    pub halt_reason: Option<String>,
    /// When the agent was taken out.
    pub halted_at: Option<DateTime<Utc>>,
}

/// A command that has begun and not finished (its effects are partly durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// The routing key, e.g. `agent.delete`.
    pub command: String,
    /// The command's message id: its answer's correlation id.
    pub message_id: String,
}

impl AgentRecord {
    /// A new agent, `creating`, with no workload yet.
    pub fn new(agent_id: &str, spec: AgentSpec, desired_state: DesiredState) -> Self {
        let now = Utc::now();
        AgentRecord {
            agent_id: agent_id.to_string(),
            spec,
            status: AgentStatus::Creating,
            desired_state,
            workload_id: None,
            health: "none".into(),
            cpu_percent: 0.0,
            memory_bytes: 0,
            restart_count: 0,
            last_error: None,
            last_logs: Vec::new(),
            stopped_by: None,
            stop_reason: None,
            pending: None,
            generation: 0,
            created_at: now,
            updated_at: now,
            last_health_at: None,
            last_heartbeat_at: None,
            node: None,
            halt_ids: Vec::new(),
            halted_by: None,
            halt_reason: None,
            halted_at: None,
        }
    }

    /// A halt holds the agent (section 10): nothing but `halt.release` gives it back.
    pub fn is_held(&self) -> bool {
        !self.halt_ids.is_empty()
    }

    /// The agent's status (contract section 5).
    pub fn status(&self) -> AgentStatus {
        self.status
    }

    /// True when the message id is that of the command the record names as half done.
    pub fn is_pending(&self, message_id: &str) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.message_id == message_id)
    }

    /// The agent runs as asked: a start has nothing to ask of the runtime.
    pub fn runs_as_asked(&self) -> bool {
        self.status == AgentStatus::Running
            && self.desired_state == DesiredState::Running
            && self.workload_id.is_some()
    }

    /// An event about this agent as it stands (status and workload), answering the
    /// command `correlation_id` when one is given.
    pub fn event(
        &self,
        kind: EventKind,
        correlation_id: Option<&str>,
        details: serde_json::Value,
    ) -> Event {
        Event::new(
            kind,
            &self.agent_id,
            &self.spec.customer_id,
            correlation_id,
            self.status.as_str(),
            self.workload_id.as_deref(),
            details,
        )
    }

    /// Meant to be stopped and stopped: the periodic look has nothing to ask Docker.
    pub fn is_resting(&self) -> bool {
        self.desired_state == DesiredState::Stopped
            && matches!(self.status, AgentStatus::Created | AgentStatus::Stopped)
    }
}
