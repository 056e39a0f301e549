//! A decoded command ([`Command`], [`Action`]) and why a delivery was refused
//! ([`Rejection`], [`InvalidCommand`]): what `decode_command` hands to the rest of the
//! manager.

use super::contract::{AgentSpec, CommandKind, ErrorCode, SpecPatch};

/// What a command asks for, with the fields each kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create { spec: AgentSpec, auto_start: bool },
    Update { patch: SpecPatch },
    Start,
    Stop { timeout_s: u32 },
    Restart { timeout_s: u32 },
    Delete { timeout_s: u32 },
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
    pub agent_id: String,
    pub customer_id: String,
    pub code: ErrorCode,
    pub message: String,
}
