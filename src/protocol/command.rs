//! A decoded command ([`Command`] about one agent with its [`Action`], or
//! [`TeamCommand`] about a team with its [`TeamAction`]; either as [`Decoded`]) and why
//! a delivery was refused ([`Rejection`], [`InvalidCommand`]): what `decode` hands to
//! the rest of the manager.

use serde_json::Value;

use super::contract::{
    AgentSpec, AgentType, CommandKind, ErrorCode, HaltCommandKind, SpecPatch, StopOrder,
    TeamCommandKind,
};

/// What a command asks for, with the fields each kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        spec: AgentSpec,
        auto_start: bool,
    },
    Update {
        patch: SpecPatch,
    },
    Start,
    Stop(StopOrder),
    Restart {
        timeout_s: u32,
    },
    Delete {
        timeout_s: u32,
    },
    /// Freeze every process of the agent (section 9).
    Pause,
    /// Thaw a paused agent (section 9).
    Resume,
}

/// A decoded, validated command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Idempotency key, echoed as the events' `correlation_id`.
    pub message_id: String,
    /// True when the sender gave the message id (body or AMQP property); only such ids
    /// are remembered to apply a redelivered command once.
    pub message_id_given: bool,
    pub kind: CommandKind,
    pub agent_id: String,
    pub customer_id: String,
    pub action: Action,
}

/// What a team command asks for (section 9).
#[derive(Debug, Clone, PartialEq)]
pub enum TeamAction {
    /// Form the team of these agents (2 to 32, no duplicates, in the order given).
    Orchestrate {
        agent_ids: Vec<String>,
        /// Given to every member; `{}` when the command has none.
        orchestrator_config: Value,
    },
    /// Remove the team.
    Disband,
}

/// A decoded, validated team command.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamCommand {
    /// Idempotency key, echoed as the answer's `correlation_id`.
    pub message_id: String,
    /// As [`Command::message_id_given`].
    pub message_id_given: bool,
    pub kind: TeamCommandKind,
    pub team_id: String,
    pub customer_id: String,
    pub action: TeamAction,
}

/// Which agents a halt takes out (section 10): one target, narrowed by agent types.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HaltScope {
    pub target: HaltTarget,
    /// Only agents of these types; `None`: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_types: Option<Vec<AgentType>>,
}

/// The one target of a halt's scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltTarget {
    /// These agents (each must exist and be the command's customer's).
    AgentIds(Vec<String>),
    /// The members of this team.
    TeamId(String),
    /// Every agent of this customer (the command's own).
    CustomerId(String),
    /// Every agent of this manager installation.
    Platform,
}

impl HaltScope {
    /// The scope as the contract writes it: `{"agent_ids": [...]}`, `{"team_id": ..}`,
    /// `{"customer_id": ..}` or `{"platform": true}`, with `agent_types` when narrowed.
    pub fn to_json(&self) -> Value {
        let mut v = match &self.target {
            HaltTarget::AgentIds(ids) => serde_json::json!({ "agent_ids": ids }),
            HaltTarget::TeamId(id) => serde_json::json!({ "team_id": id }),
            HaltTarget::CustomerId(id) => serde_json::json!({ "customer_id": id }),
            HaltTarget::Platform => serde_json::json!({ "platform": true }),
        };
        if let (Some(types), Some(obj)) = (&self.agent_types, v.as_object_mut()) {
            obj.insert(
                "agent_types".into(),
                types.iter().map(|t| Value::from(t.as_str())).collect(),
            );
        }
        v
    }

    /// Whether an agent of `agent_type` passes the `agent_types` narrowing.
    pub fn admits_type(&self, agent_type: AgentType) -> bool {
        self.agent_types
            .as_ref()
            .is_none_or(|types| types.contains(&agent_type))
    }
}

/// What a halt command asks for (section 10).
#[derive(Debug, Clone, PartialEq)]
pub enum HaltAction {
    /// Take every agent in `scope` out: cut, then freeze.
    Engage {
        scope: HaltScope,
        reason: String,
        requested_by: String,
    },
    /// Give the halt's agents back (those no other halt holds).
    Release {
        reason: String,
        requested_by: String,
    },
}

/// A decoded, validated halt command.
#[derive(Debug, Clone, PartialEq)]
pub struct HaltCommand {
    /// Idempotency key, echoed as the answer's `correlation_id`.
    pub message_id: String,
    /// As [`Command::message_id_given`].
    pub message_id_given: bool,
    pub kind: HaltCommandKind,
    pub halt_id: String,
    pub customer_id: String,
    pub action: HaltAction,
}

/// A delivery decoded into the command it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// About one agent: goes to that agent's actor.
    Agent(Command),
    /// About a team: goes to the team actor.
    Team(TeamCommand),
    /// About a halt: goes to the halt actor.
    Halt(HaltCommand),
}

/// Why a delivery was not turned into a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// Not a JSON object at all: goes to the dead-letter queue.
    NotAnObject(String),
    /// A JSON object that can never succeed: answered with `agent.error`.
    Invalid(Box<InvalidCommand>),
}

/// What is known of a command that failed decoding or validation, to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidCommand {
    pub message_id: String,
    pub command: Option<String>,
    /// Empty when the body names none (a team command names a team instead).
    pub agent_id: String,
    /// The `team_id` the body names, when it names one (team commands).
    pub team_id: Option<String>,
    /// The `halt_id` the body names, when it names one (halt commands).
    pub halt_id: Option<String>,
    pub customer_id: String,
    pub code: ErrorCode,
    pub message: String,
}
