//! The message contract (../shared/PROTOCOL.md sections 2 and 3, section 8's heartbeat
//! and section 9): command and event names, payloads, error codes and validation.
//! Routing keys and JSON field names live here and nowhere else.
//!
//! # Layout
//!
//! - `contract`: the contract's names and types: command and event kinds, error codes,
//!   agent type, status and desired state, resources, spec, the changes of an update,
//!   the agent id rule.
//! - `command`: a decoded [`Command`] and its [`Action`], a [`TeamCommand`] and its
//!   [`TeamAction`], either as [`Decoded`]; a [`Rejection`].
//! - [`policy`]: [`AgentPolicy`], the defaults and bounds commands are checked against.
//! - [`egress`]: egress entries (section 11) and how a list of them is checked.
//! - [`image`]: image references and the allowlist (the `image` field's rules).
//! - `decode`: [`decode_command`] (the steps every command shares) and one file per
//!   command kind reading that command's fields.
//! - `envelope`: the ids and command of a body, read even when the body is refused.
//! - `fields`: validators of the JSON fields, shared by the decoders.
//! - `event`: the [`Event`] the manager publishes.
//! - [`heartbeat`]: the agent's heartbeat (section 8) and how it reads.
//! - [`team`]: the message each member of a team is sent ([`team::TeamMessage`] on
//!   routing key `agent:<agent_id>:team`).
//! - [`task`]: the names of an agent's tasks and results (section 8: its inbox queue,
//!   the task and result routing keys).
//!
//! Nothing here reads the configuration: `config::Config::agent_policy` builds the
//! policy.

mod command;
mod contract;
mod decode;
pub mod egress;
mod envelope;
mod event;
mod fields;
pub mod heartbeat;
pub mod image;
pub mod policy;
pub mod task;
pub mod team;

pub use command::{
    Action, Command, Decoded, HaltAction, HaltCommand, HaltScope, HaltTarget, InvalidCommand,
    Rejection, TeamAction, TeamCommand,
};
#[cfg(test)]
pub use contract::sample_spec;
pub use contract::{
    command_routing_keys, valid_agent_id, AgentSpec, AgentStatus, AgentType, CommandKind,
    DesiredState, ErrorCode, EventKind, HaltCommandKind, ResourceChanges, Resources, SpecPatch,
    StopOrder, TeamCommandKind, AGENT_ID_RULE, HALT_MAX_AGENT_IDS, HALT_REASON_MAX_CHARS,
    STOP_REASON_MAX_CHARS, TEAM_ID_RULE, TEAM_MAX_MEMBERS, TEAM_MIN_MEMBERS,
};
pub use decode::{decode, decode_command, halt_scope_from_json};
pub use event::{error_details, rfc3339, Event};
pub use policy::AgentPolicy;
