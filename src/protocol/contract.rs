//! The contract's names and types (../shared/PROTOCOL.md sections 2, 3 and 5): the
//! command and event kinds with their routing keys, the `agent.error` codes, agent
//! types, statuses and desired states, an agent's resources and spec, the changes an
//! update carries, and the agent id rule.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The commands the Core Engine sends about one agent, by routing key (section 2, and
/// section 9's pause and resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Create,
    Update,
    Start,
    Stop,
    Delete,
    Restart,
    Pause,
    Resume,
}

impl CommandKind {
    pub const ALL: [CommandKind; 8] = [
        CommandKind::Create,
        CommandKind::Update,
        CommandKind::Start,
        CommandKind::Stop,
        CommandKind::Delete,
        CommandKind::Restart,
        CommandKind::Pause,
        CommandKind::Resume,
    ];

    /// The routing key, which is also the value of the body's `command` field.
    pub fn routing_key(self) -> &'static str {
        match self {
            CommandKind::Create => "agent.create",
            CommandKind::Update => "agent.update",
            CommandKind::Start => "agent.start",
            CommandKind::Stop => "agent.stop",
            CommandKind::Delete => "agent.delete",
            CommandKind::Restart => "agent.restart",
            CommandKind::Pause => "agent.pause",
            CommandKind::Resume => "agent.resume",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.routing_key() == key)
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// The commands about a team of agents (section 9), by routing key. They name a
/// `team_id` instead of an `agent_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeamCommandKind {
    Orchestrate,
    Disband,
}

impl TeamCommandKind {
    pub const ALL: [TeamCommandKind; 2] = [TeamCommandKind::Orchestrate, TeamCommandKind::Disband];

    /// The routing key, which is also the value of the body's `command` field.
    pub fn routing_key(self) -> &'static str {
        match self {
            TeamCommandKind::Orchestrate => "team.orchestrate",
            TeamCommandKind::Disband => "team.disband",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.routing_key() == key)
    }
}

impl fmt::Display for TeamCommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// Every routing key the command queue is bound to: the agent commands, then the team
/// commands.
pub fn command_routing_keys() -> impl Iterator<Item = &'static str> {
    CommandKind::ALL
        .into_iter()
        .map(CommandKind::routing_key)
        .chain(
            TeamCommandKind::ALL
                .into_iter()
                .map(TeamCommandKind::routing_key),
        )
        .chain(
            HaltCommandKind::ALL
                .into_iter()
                .map(HaltCommandKind::routing_key),
        )
}

/// The commands of a halt (section 10), by routing key. They name a `halt_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HaltCommandKind {
    Engage,
    Release,
}

impl HaltCommandKind {
    pub const ALL: [HaltCommandKind; 2] = [HaltCommandKind::Engage, HaltCommandKind::Release];

    /// The routing key, which is also the value of the body's `command` field.
    pub fn routing_key(self) -> &'static str {
        match self {
            HaltCommandKind::Engage => "halt.engage",
            HaltCommandKind::Release => "halt.release",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.routing_key() == key)
    }
}

impl fmt::Display for HaltCommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// A halt's `reason` (and a release's): 1 to 500 characters (section 10).
pub const HALT_REASON_MAX_CHARS: usize = 500;
/// The most agents a halt's `agent_ids` scope may name.
pub const HALT_MAX_AGENT_IDS: usize = 10_000;

/// The events the manager publishes, by routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "agent.created")]
    Created,
    #[serde(rename = "agent.started")]
    Started,
    #[serde(rename = "agent.stopped")]
    Stopped,
    #[serde(rename = "agent.deleted")]
    Deleted,
    #[serde(rename = "agent.health")]
    Health,
    #[serde(rename = "agent.updated")]
    Updated,
    #[serde(rename = "agent.restarted")]
    Restarted,
    #[serde(rename = "agent.error")]
    Error,
    #[serde(rename = "agent.paused")]
    Paused,
    #[serde(rename = "agent.resumed")]
    Resumed,
    #[serde(rename = "team.orchestrated")]
    TeamOrchestrated,
    #[serde(rename = "team.disbanded")]
    TeamDisbanded,
    /// One agent taken out by a halt (section 10): cut, then frozen.
    #[serde(rename = "agent.halted")]
    Halted,
    /// One agent given back by `halt.release`.
    #[serde(rename = "agent.released")]
    Released,
    #[serde(rename = "halt.engaged")]
    HaltEngaged,
    #[serde(rename = "halt.released")]
    HaltReleased,
    /// A manager took the lead of its installation (section 12).
    #[serde(rename = "manager.leader")]
    ManagerLeader,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Stopped,
        EventKind::Deleted,
        EventKind::Health,
        EventKind::Updated,
        EventKind::Restarted,
        EventKind::Error,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::TeamOrchestrated,
        EventKind::TeamDisbanded,
        EventKind::Halted,
        EventKind::Released,
        EventKind::HaltEngaged,
        EventKind::HaltReleased,
        EventKind::ManagerLeader,
    ];

    pub fn routing_key(self) -> &'static str {
        match self {
            EventKind::Created => "agent.created",
            EventKind::Started => "agent.started",
            EventKind::Stopped => "agent.stopped",
            EventKind::Deleted => "agent.deleted",
            EventKind::Health => "agent.health",
            EventKind::Updated => "agent.updated",
            EventKind::Restarted => "agent.restarted",
            EventKind::Error => "agent.error",
            EventKind::Paused => "agent.paused",
            EventKind::Resumed => "agent.resumed",
            EventKind::TeamOrchestrated => "team.orchestrated",
            EventKind::TeamDisbanded => "team.disbanded",
            EventKind::Halted => "agent.halted",
            EventKind::Released => "agent.released",
            EventKind::HaltEngaged => "halt.engaged",
            EventKind::HaltReleased => "halt.released",
            EventKind::ManagerLeader => "manager.leader",
        }
    }
}

/// `agent.error` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidMessage,
    ValidationFailed,
    NotFound,
    Forbidden,
    AlreadyExists,
    QuotaExceeded,
    ImageNotFound,
    DockerError,
    CrashLoop,
    GpuUnavailable,
    Internal,
    /// The deployment mode cannot do what was asked (section 9: pause in swarm mode).
    Unsupported,
    /// A halt holds the agent, or a create falls in an engaged halt's scope (section 10).
    Halted,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::ImageNotFound => "image_not_found",
            ErrorCode::DockerError => "docker_error",
            ErrorCode::CrashLoop => "crash_loop",
            ErrorCode::GpuUnavailable => "gpu_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Halted => "halted",
        }
    }
}

/// Kinds of agent the Core Engine can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentType {
    Trading,
    Analysis,
    RiskManagement,
    PortfolioOptimization,
    Custom,
}

impl AgentType {
    pub const ALL: [AgentType; 5] = [
        AgentType::Trading,
        AgentType::Analysis,
        AgentType::RiskManagement,
        AgentType::PortfolioOptimization,
        AgentType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentType::Trading => "trading",
            AgentType::Analysis => "analysis",
            AgentType::RiskManagement => "risk_management",
            AgentType::PortfolioOptimization => "portfolio_optimization",
            AgentType::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The agent's status as operators and the Core Engine see it (contract section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Creating,
    Created,
    Starting,
    Running,
    Unhealthy,
    Stopping,
    Stopped,
    Restarting,
    Failed,
    Deleting,
    /// Frozen on purpose by `agent.pause` (section 9): every process of the agent is
    /// suspended; neither a crash nor hung.
    Paused,
    /// Taken out by a halt (section 10): its logins cut, its workload frozen (or down),
    /// until `halt.release`.
    Halted,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 12] = [
        AgentStatus::Creating,
        AgentStatus::Created,
        AgentStatus::Starting,
        AgentStatus::Running,
        AgentStatus::Unhealthy,
        AgentStatus::Stopping,
        AgentStatus::Stopped,
        AgentStatus::Restarting,
        AgentStatus::Failed,
        AgentStatus::Deleting,
        AgentStatus::Paused,
        AgentStatus::Halted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Creating => "creating",
            AgentStatus::Created => "created",
            AgentStatus::Starting => "starting",
            AgentStatus::Running => "running",
            AgentStatus::Unhealthy => "unhealthy",
            AgentStatus::Stopping => "stopping",
            AgentStatus::Stopped => "stopped",
            AgentStatus::Restarting => "restarting",
            AgentStatus::Failed => "failed",
            AgentStatus::Deleting => "deleting",
            AgentStatus::Paused => "paused",
            AgentStatus::Halted => "halted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What the agent should be doing; the manager converges the container towards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(DesiredState::Running),
            "stopped" => Some(DesiredState::Stopped),
            _ => None,
        }
    }
}

/// Resources of one agent's container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in MiB; swap is limited to the same amount.
    pub memory_mb: u64,
    /// CPU limit in cores (fractions allowed).
    pub cpus: f64,
    /// GPUs to allocate (GPU mode only).
    pub gpus: u32,
    /// Messages per second the agent may publish before the manager halts it
    /// (section 10); `None`: `HALT_MAX_MESSAGES_PER_S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_s: Option<f64>,
}

/// Everything the Core Engine decides about an agent: two equal specs give equal
/// containers. Used to answer a repeated create and to decide how to apply an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub customer_id: String,
    pub agent_type: AgentType,
    pub name: String,
    /// Agent-specific configuration (a JSON object), given to the container as `CONFIG`.
    pub config: Value,
    /// AutoGen configuration (a JSON object), given as `AUTOGEN_CONFIG`.
    pub autogen_config: Value,
    pub resources: Resources,
    /// Image reference, already checked against the allowlist.
    pub image: String,
    /// What the agent may reach outside the platform (section 11), canonical entries;
    /// added to the installation's and its customer's lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
}

/// Resource changes carried by a command: each one given replaces that resource.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceChanges {
    /// New memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// New CPU limit in cores.
    pub cpus: Option<f64>,
    /// New number of GPUs.
    pub gpus: Option<u32>,
    /// New publishing limit (section 10).
    pub max_messages_per_s: Option<f64>,
}

impl ResourceChanges {
    /// `resources` with these changes made.
    pub fn apply(&self, resources: Resources) -> Resources {
        Resources {
            memory_mb: self.memory_mb.unwrap_or(resources.memory_mb),
            cpus: self.cpus.unwrap_or(resources.cpus),
            gpus: self.gpus.unwrap_or(resources.gpus),
            max_messages_per_s: self.max_messages_per_s.or(resources.max_messages_per_s),
        }
    }
}

/// Optional changes carried by `agent.update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpecPatch {
    pub name: Option<String>,
    pub config: Option<Value>,
    pub autogen_config: Option<Value>,
    pub resources: ResourceChanges,
    pub image: Option<String>,
    /// A new egress list, replacing the old one.
    pub egress: Option<Vec<String>>,
}

impl SpecPatch {
    /// The spec after this patch.
    pub fn apply(&self, spec: &AgentSpec) -> AgentSpec {
        let mut next = spec.clone();
        if let Some(name) = &self.name {
            next.name = name.clone();
        }
        if let Some(config) = &self.config {
            next.config = config.clone();
        }
        if let Some(autogen) = &self.autogen_config {
            next.autogen_config = autogen.clone();
        }
        next.resources = self.resources.apply(spec.resources);
        if let Some(image) = &self.image {
            next.image = image.clone();
        }
        if let Some(egress) = &self.egress {
            next.egress = egress.clone();
        }
        next
    }
}

/// The contract's agent id pattern, as named in refusals.
pub const AGENT_ID_RULE: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$";

/// The contract's team id pattern (section 9): the agent id's.
pub const TEAM_ID_RULE: &str = AGENT_ID_RULE;

/// Fewest and most members of a team (section 9).
pub const TEAM_MIN_MEMBERS: usize = 2;
pub const TEAM_MAX_MEMBERS: usize = 32;

/// Longest `reason` of an `agent.stop`, in characters (section 9).
pub const STOP_REASON_MAX_CHARS: usize = 500;

/// How an `agent.stop` is to be done and who asked (section 9's `force`, `reason`,
/// `requested_by`, beside section 2's `timeout_s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOrder {
    /// Grace period before SIGKILL; 0 when `force`.
    pub timeout_s: u32,
    /// Kill at once, no grace period.
    pub force: bool,
    /// Why, for people (secrets redacted, at most [`STOP_REASON_MAX_CHARS`]).
    pub reason: Option<String>,
    /// Who asked (an operator id).
    pub requested_by: Option<String>,
}

impl StopOrder {
    /// A plain stop with `timeout_s` of grace, no reason given.
    pub fn graceful(timeout_s: u32) -> Self {
        StopOrder {
            timeout_s,
            force: false,
            reason: None,
            requested_by: None,
        }
    }
}

/// True when `id` matches the contract's agent id pattern ([`AGENT_ID_RULE`]).
pub fn valid_agent_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A valid spec for unit tests across modules.
#[cfg(test)]
pub fn sample_spec() -> AgentSpec {
    AgentSpec {
        customer_id: "c1".into(),
        agent_type: AgentType::Trading,
        name: "Alpha".into(),
        config: serde_json::json!({"symbol": "BTC"}),
        autogen_config: serde_json::json!({"model": "x"}),
        resources: Resources {
            memory_mb: 256,
            cpus: 0.5,
            gpus: 0,
            max_messages_per_s: None,
        },
        image: "autogen-agent:latest".into(),
        egress: Vec::new(),
    }
}
