//! A decoded command ([`Command`] about one agent with its [`Action`], or
//! [`TeamCommand`] about a team with its [`TeamAction`]; either as [`Decoded`]) and why
//! a delivery was refused ([`Rejection`], [`InvalidCommand`]): what `decode` hands to
//! the rest of the manager.

use serde_json::Value;

use super::contract::{AgentSpec, CommandKind, ErrorCode, SpecPatch, StopOrder, TeamCommandKind};

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

/// A delivery decoded into the command it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// About one agent: goes to that agent's actor.
    Agent(Command),
    /// About a team: goes to the team actor.
    Team(TeamCommand),
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
    pub customer_id: String,
    pub code: ErrorCode,
    pub message: String,
}
