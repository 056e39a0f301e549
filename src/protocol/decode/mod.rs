//! [`decode`]: one delivery in, a validated [`Decoded`] command (about an agent or a
//! team) or a [`Rejection`] out. The steps every command shares are here: UTF-8, size,
//! JSON object, envelope, command kind, message id, customer id, agent id (team
//! commands: team id). What each kind reads from the body is in a file of its own
//! (`create.rs`, `update.rs`, `start.rs`, `stop.rs`, `restart.rs`, `delete.rs`,
//! `pause.rs`, `resume.rs`; `orchestrate.rs`, `disband.rs` for teams), each a `parse`
//! from the JSON object and the policy to its [`Action`] or [`TeamAction`].

mod create;
mod delete;
mod disband;
mod halt_engage;
pub use halt_engage::scope_from_json as halt_scope_from_json;
mod halt_release;
mod orchestrate;
mod pause;
mod restart;
mod resume;
mod start;
mod stop;
mod update;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::protocol::command::{
    Command, Decoded, HaltCommand, InvalidCommand, Rejection, TeamCommand,
};
use crate::protocol::contract::{
    command_routing_keys, valid_agent_id, CommandKind, ErrorCode, HaltCommandKind, TeamCommandKind,
    AGENT_ID_RULE, TEAM_ID_RULE,
};
use crate::protocol::envelope::{refuse_unbuilt, valid_message_id, Envelope, Field};
use crate::protocol::fields::{
    is_printable, json_kind, printable_prefix, required_string, FieldError,
};
use crate::protocol::policy::AgentPolicy;

/// The command a delivery names: about one agent, or about a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agent(CommandKind),
    Team(TeamCommandKind),
    Halt(HaltCommandKind),
}

impl Kind {
    fn of(key: &str) -> Option<Kind> {
        CommandKind::from_routing_key(key)
            .map(Kind::Agent)
            .or_else(|| TeamCommandKind::from_routing_key(key).map(Kind::Team))
            .or_else(|| HaltCommandKind::from_routing_key(key).map(Kind::Halt))
    }

    fn routing_key(self) -> &'static str {
        match self {
            Kind::Agent(k) => k.routing_key(),
            Kind::Team(k) => k.routing_key(),
            Kind::Halt(k) => k.routing_key(),
        }
    }
}

/// Decodes and validates one delivery. `routing_key` and `amqp_message_id` come from the
/// AMQP envelope; `policy` holds the configured defaults and bounds.
pub fn decode(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    policy: &AgentPolicy,
) -> Result<Decoded, Rejection> {
    let obj = json_object(routing_key, amqp_message_id, body, policy)?;
    let envelope = Envelope::of(&obj);
    let (message_id, message_id_given) = envelope.message_id(amqp_message_id);
    let refuse = |code: ErrorCode, command: Option<String>, message: String| {
        Rejection::Invalid(Box::new(envelope.invalid(
            message_id.clone(),
            command,
            code,
            message,
        )))
    };
    let kind = command_kind(routing_key, &obj)
        .map_err(|e| refuse(ErrorCode::InvalidMessage, e.echo(), e.to_string()))?;
    let fail = |e: FieldError| {
        refuse(
            ErrorCode::ValidationFailed,
            Some(kind.routing_key().to_string()),
            e.to_string(),
        )
    };

    check_body_message_id(&envelope.message_id).map_err(&fail)?;
    let customer_id = customer_id(&obj).map_err(&fail)?;
    let kind = match kind {
        Kind::Agent(kind) => kind,
        Kind::Team(kind) => {
            let team_id = team_id(&obj).map_err(&fail)?;
            let action = match kind {
                TeamCommandKind::Orchestrate => orchestrate::parse(&obj, policy),
                TeamCommandKind::Disband => disband::parse(&obj, policy),
            }
            .map_err(&fail)?;
            return Ok(Decoded::Team(TeamCommand {
                message_id,
                message_id_given,
                kind,
                team_id,
                customer_id,
                action,
            }));
        }
        Kind::Halt(kind) => {
            let halt_id = halt_id(&obj).map_err(&fail)?;
            let action = match kind {
                HaltCommandKind::Engage => halt_engage::parse(&obj),
                HaltCommandKind::Release => halt_release::parse(&obj),
            }
            .map_err(&fail)?;
            return Ok(Decoded::Halt(HaltCommand {
                message_id,
                message_id_given,
                kind,
                halt_id,
                customer_id,
                action,
            }));
        }
    };
    let given_message_id = message_id_given.then_some(message_id.as_str());
    let agent_id = agent_id(&obj, kind, given_message_id).map_err(&fail)?;
    let action = match kind {
        CommandKind::Create => create::parse(&obj, &customer_id, policy),
        CommandKind::Update => update::parse(&obj, policy),
        CommandKind::Start => start::parse(&obj, policy),
        CommandKind::Stop => stop::parse(&obj, policy),
        CommandKind::Restart => restart::parse(&obj, policy),
        CommandKind::Delete => delete::parse(&obj, policy),
        CommandKind::Pause => pause::parse(&obj, policy),
        CommandKind::Resume => resume::parse(&obj, policy),
    }
    .map_err(&fail)?;

    Ok(Decoded::Agent(Command {
        message_id,
        message_id_given,
        kind,
        agent_id,
        customer_id,
        action,
    }))
}

/// [`decode`] for a delivery that must be an agent command (tests and benches that
/// build one): a team command is refused as `invalid_message`.
pub fn decode_command(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    policy: &AgentPolicy,
) -> Result<Command, Rejection> {
    match decode(routing_key, amqp_message_id, body, policy)? {
        Decoded::Agent(cmd) => Ok(cmd),
        Decoded::Team(team) => Err(Rejection::Invalid(Box::new(InvalidCommand {
            message_id: team.message_id,
            command: Some(team.kind.routing_key().to_string()),
            agent_id: String::new(),
            team_id: Some(team.team_id),
            halt_id: None,
            customer_id: team.customer_id,
            code: ErrorCode::InvalidMessage,
            message: format!("{} is a team command, not an agent command", team.kind),
        }))),
        Decoded::Halt(halt) => Err(Rejection::Invalid(Box::new(InvalidCommand {
            message_id: halt.message_id,
            command: Some(halt.kind.routing_key().to_string()),
            agent_id: String::new(),
            team_id: None,
            halt_id: Some(halt.halt_id),
            customer_id: halt.customer_id,
            code: ErrorCode::InvalidMessage,
            message: format!("{} is a halt command, not an agent command", halt.kind),
        }))),
    }
}

/// The body as a JSON object. A body that is not UTF-8, not JSON or not an object is
/// dead-lettered; an oversized body, or one serde_json will not build, is answered when
/// its envelope can be read ([`refuse_unbuilt`]).
fn json_object(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    policy: &AgentPolicy,
) -> Result<Map<String, Value>, Rejection> {
    // JSON is UTF-8 (RFC 8259 section 8.1): anything else is not JSON at all.
    if std::str::from_utf8(body).is_err() {
        return Err(Rejection::NotAnObject(
            "body is not UTF-8, so not JSON".into(),
        ));
    }
    // Never build a value from an oversized body: only its envelope is scanned.
    if body.len() > policy.max_body_bytes {
        let problem = format!(
            "the body is {} bytes, more than the limit of {} bytes (MAX_BODY_BYTES)",
            body.len(),
            policy.max_body_bytes
        );
        return Err(refuse_unbuilt(routing_key, amqp_message_id, body, problem));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        // Either not JSON (dead-lettered) or JSON that serde_json will not build, such as
        // nesting deeper than its recursion limit (128) or a number out of range: that is
        // still a JSON object, answered when its envelope can be read.
        Err(e) => {
            return Err(refuse_unbuilt(
                routing_key,
                amqp_message_id,
                body,
                format!("the body could not be decoded: {e}"),
            ))
        }
    };
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(Rejection::NotAnObject(format!(
            "body is JSON but not an object ({})",
            json_kind(&other)
        ))),
    }
}

/// Why a delivery names no command this manager knows (`invalid_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnknownCommand {
    /// The body's `command` names none (kept as far as it can be echoed).
    #[error("unknown command '{0}': expected one of {known}", known = command_routing_keys().collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("field 'command' must be a string")]
    NotAString,
    /// Neither the routing key (kept as far as it can be echoed) nor a `command` field.
    #[error("routing key '{0}' is not a command and the body has no 'command' field")]
    Unnamed(String),
}

impl UnknownCommand {
    /// The command to echo in the refusal, when the body named one.
    fn echo(&self) -> Option<String> {
        match self {
            UnknownCommand::Unknown(c) => Some(c.clone()),
            UnknownCommand::NotAString | UnknownCommand::Unnamed(_) => None,
        }
    }
}

/// The command: the routing key when it is one, else the body's `command` field.
fn command_kind(routing_key: &str, obj: &Map<String, Value>) -> Result<Kind, UnknownCommand> {
    if let Some(kind) = Kind::of(routing_key) {
        return Ok(kind);
    }
    match obj.get("command") {
        Some(Value::String(c)) => {
            Kind::of(c).ok_or_else(|| UnknownCommand::Unknown(printable_prefix(c, 64)))
        }
        Some(_) => Err(UnknownCommand::NotAString),
        None => Err(UnknownCommand::Unnamed(printable_prefix(routing_key, 64))),
    }
}

/// A `message_id` in the body must be usable as one (else the command is refused, and
/// answered under the AMQP or a generated message id).
fn check_body_message_id(field: &Field) -> Result<(), FieldError> {
    let invalid = match field {
        Field::Absent => false,
        Field::Str(id) => !valid_message_id(id),
        Field::Other => true,
    };
    if invalid {
        return Err(FieldError::rule(
            "message_id",
            "must be a string of 1-255 bytes without control characters",
        ));
    }
    Ok(())
}

/// The owner: 1-128 printable characters.
fn customer_id(obj: &Map<String, Value>) -> Result<String, FieldError> {
    let customer_id = required_string(obj, "customer_id")?;
    if customer_id.is_empty() || customer_id.len() > 128 || !is_printable(&customer_id) {
        return Err(FieldError::rule(
            "customer_id",
            "must be 1-128 printable characters",
        ));
    }
    Ok(customer_id)
}

/// The agent id, matching the contract's rule; generated for a create that gives none.
fn agent_id(
    obj: &Map<String, Value>,
    kind: CommandKind,
    given_message_id: Option<&str>,
) -> Result<String, FieldError> {
    let agent_id = match obj.get("agent_id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) if kind == CommandKind::Create => {
            generated_agent_id(given_message_id)
        }
        None | Some(Value::Null) => return Err(FieldError::Missing { field: "agent_id" }),
        Some(other) => return Err(FieldError::wrong_kind("agent_id", "a string", other)),
    };
    if !valid_agent_id(&agent_id) {
        return Err(FieldError::rule(
            "agent_id",
            format!("must match {AGENT_ID_RULE}"),
        ));
    }
    Ok(agent_id)
}

/// The team id of a team command, matching the contract's rule.
fn team_id(obj: &Map<String, Value>) -> Result<String, FieldError> {
    let team_id = required_string(obj, "team_id")?;
    if !valid_agent_id(&team_id) {
        return Err(FieldError::rule(
            "team_id",
            format!("must match {TEAM_ID_RULE}"),
        ));
    }
    Ok(team_id)
}

/// The halt id of a halt command (the team id's rule, section 10).
fn halt_id(obj: &Map<String, Value>) -> Result<String, FieldError> {
    let halt_id = required_string(obj, "halt_id")?;
    if !valid_agent_id(&halt_id) {
        return Err(FieldError::rule(
            "halt_id",
            format!("must match {TEAM_ID_RULE}"),
        ));
    }
    Ok(halt_id)
}

/// A halt's `reason` or `requested_by`: required, 1 to `max` printable characters.
pub(super) fn bounded_text(
    obj: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<String, FieldError> {
    let text = required_string(obj, field)?;
    let chars = text.chars().count();
    if chars == 0 || chars > max || !is_printable(&text) {
        return Err(FieldError::rule(
            field,
            format!("must be 1-{max} printable characters"),
        ));
    }
    Ok(text)
}

/// The id of an agent created without one: a UUID v4. When the sender named the message
/// id, the UUID is derived from it so that a redelivered create finds the same agent.
fn generated_agent_id(message_id: Option<&str>) -> String {
    match message_id {
        Some(id) => {
            let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes());
            uuid::Builder::from_random_bytes(*digest.as_bytes())
                .into_uuid()
                .to_string()
        }
        None => Uuid::new_v4().to_string(),
    }
}

/// Helpers for the decoders' unit tests (this file's and each command's).
#[cfg(test)]
mod testing {
    use serde_json::{json, Value};

    use super::decode_command;
    use crate::protocol::command::{Command, Decoded, InvalidCommand, Rejection};
    use crate::protocol::policy::{sample_policy, AgentPolicy};

    pub fn policy() -> AgentPolicy {
        sample_policy()
    }

    pub fn decode(rk: &str, body: Value) -> Result<Command, Rejection> {
        decode_command(rk, None, body.to_string().as_bytes(), &policy())
    }

    /// Any delivery, agent or team command.
    pub fn decode_any(rk: &str, body: Value) -> Result<Decoded, Rejection> {
        super::decode(rk, None, body.to_string().as_bytes(), &policy())
    }

    pub fn invalid<T: std::fmt::Debug>(r: Result<T, Rejection>) -> InvalidCommand {
        match r {
            Err(Rejection::Invalid(i)) => *i,
            other => panic!("expected an invalid command, got {other:?}"),
        }
    }

    pub fn create_body() -> Value {
        json!({"message_id": "m1", "agent_id": "a1", "customer_id": "c1",
               "agent_type": "trading", "name": "Alpha"})
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{create_body, decode, invalid, policy};
    use super::*;
    use serde_json::json;

    #[test]
    fn non_objects_go_to_the_dead_letter_queue() {
        for body in [&b"not json"[..], b"[1,2]", b"42", b"\"s\"", b"null", b""] {
            let r = decode_command("agent.create", None, body, &policy());
            assert!(matches!(r, Err(Rejection::NotAnObject(_))), "{body:?}");
        }
    }

    #[test]
    fn command_comes_from_body_when_routing_key_is_not_a_command() {
        let mut body = create_body();
        body["command"] = json!("agent.create");
        let cmd = decode("agent-manager.commands", body).unwrap();
        assert_eq!(cmd.kind, CommandKind::Create);
        let e = invalid(decode("x", json!({"customer_id": "c"})));
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        let e = invalid(decode(
            "x",
            json!({"command": "agent.explode", "customer_id": "c"}),
        ));
        assert_eq!(e.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn bodies_that_are_not_utf8_are_dead_lettered() {
        for body in [
            &b"\xff\xfe{}"[..],
            b"{\"agent_id\": \"a\xc3\x28\", \"customer_id\": \"c\"}",
            b"{\"customer_id\": \"\xed\xa0\x80\"}",
        ] {
            let r = decode_command("agent.start", Some("m"), body, &policy());
            assert!(
                matches!(r, Err(Rejection::NotAnObject(_))),
                "{body:?}: {r:?}"
            );
        }
    }

    #[test]
    fn oversized_bodies_are_answered_when_their_envelope_reads_else_dead_lettered() {
        let mut p = policy();
        p.max_body_bytes = 4096;
        let mut body = create_body();
        body["config"] = json!({"blob": "x".repeat(10_000)});
        let r = decode_command("agent.create", None, body.to_string().as_bytes(), &p);
        let e = invalid(r);
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(e.message.contains("body"), "{}", e.message);
        assert_eq!(e.message_id, "m1");
        assert_eq!(e.agent_id, "a1");
        assert_eq!(e.command.as_deref(), Some("agent.create"));
        // Not an object, or broken JSON: dead-lettered without being built.
        for big in [
            format!("[{}]", "1,".repeat(5000) + "1"),
            format!("{{\"a\": \"{}", "x".repeat(5000)),
            "x".repeat(5000),
        ] {
            let r = decode_command("agent.create", None, big.as_bytes(), &p);
            assert!(matches!(r, Err(Rejection::NotAnObject(_))), "{r:?}");
        }
    }

    #[test]
    fn nesting_beyond_the_parser_limit_is_answered_not_crashed() {
        for depth in [129, 1_000, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(
                r#"{{"message_id": "deep", "agent_id": "a", "customer_id": "c", "config": {deep}}}"#
            );
            let e = invalid(decode_command(
                "agent.update",
                None,
                body.as_bytes(),
                &policy(),
            ));
            assert_eq!(e.code, ErrorCode::ValidationFailed);
            assert_eq!(e.message_id, "deep");
            // Deep nesting that is not a JSON object (or not JSON) is dead-lettered.
            let r = decode_command("agent.update", None, deep.as_bytes(), &policy());
            assert!(matches!(r, Err(Rejection::NotAnObject(_))));
            let r = decode_command("agent.update", None, &deep.as_bytes()[..depth], &policy());
            assert!(matches!(r, Err(Rejection::NotAnObject(_))));
        }
    }

    #[test]
    fn message_ids_must_be_short_printable_strings() {
        for bad in [
            json!(5),
            json!("x".repeat(256)),
            json!("a\nb"),
            json!(""),
            json!({}),
        ] {
            let body = json!({"message_id": bad, "agent_id": "a", "customer_id": "c"});
            let r = decode_command(
                "agent.start",
                Some("amqp-1"),
                body.to_string().as_bytes(),
                &policy(),
            );
            let e = invalid(r);
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{bad}");
            assert!(e.message.contains("message_id"), "{}", e.message);
            assert_eq!(e.message_id, "amqp-1", "answered under the AMQP message id");
        }
        // Multi-byte characters count as bytes: 128 'é' are 256 bytes.
        let body = json!({"message_id": "é".repeat(128), "agent_id": "a", "customer_id": "c"});
        assert!(
            decode_command("agent.start", None, body.to_string().as_bytes(), &policy()).is_err()
        );
        let body = json!({"message_id": "é".repeat(127), "agent_id": "a", "customer_id": "c"});
        assert!(
            decode_command("agent.start", None, body.to_string().as_bytes(), &policy()).is_ok()
        );
    }

    #[test]
    fn create_without_agent_id_gets_a_v4_uuid_stable_per_message_id() {
        let mut body = create_body();
        body.as_object_mut().unwrap().remove("agent_id");
        let a = decode("agent.create", body.clone()).unwrap();
        let b = decode("agent.create", body.clone()).unwrap();
        let id = Uuid::parse_str(&a.agent_id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(a.agent_id, b.agent_id);
        body.as_object_mut().unwrap().remove("message_id");
        let c = decode("agent.create", body.clone()).unwrap();
        let d = decode("agent.create", body).unwrap();
        assert_ne!(c.agent_id, d.agent_id);
        assert!(!c.message_id_given);
    }

    #[test]
    fn other_commands_need_an_agent_id() {
        for rk in [
            "agent.start",
            "agent.stop",
            "agent.update",
            "agent.delete",
            "agent.restart",
            "agent.pause",
            "agent.resume",
        ] {
            let e = invalid(decode(rk, json!({"customer_id": "c"})));
            assert!(e.message.contains("agent_id"), "{rk}");
        }
    }

    #[test]
    fn team_commands_need_a_team_id_by_the_rule_and_are_not_agent_commands() {
        use super::testing::decode_any;
        for rk in ["team.orchestrate", "team.disband"] {
            let e = invalid(decode_any(rk, json!({"customer_id": "c"})));
            assert!(e.message.contains("team_id"), "{rk}: {}", e.message);
            assert_eq!(e.command.as_deref(), Some(rk));
            let e = invalid(decode_any(rk, json!({"customer_id": "c", "team_id": "-x"})));
            assert!(e.message.contains(TEAM_ID_RULE), "{rk}: {}", e.message);
            assert_eq!(e.team_id.as_deref(), Some("-x"));
        }
        let body = json!({"team_id": "t1", "customer_id": "c"});
        let Ok(Decoded::Team(team)) = decode_any("team.disband", body.clone()) else {
            panic!("a team command")
        };
        assert_eq!(
            (team.team_id.as_str(), team.kind),
            ("t1", TeamCommandKind::Disband)
        );
        // Through the body's `command`, as on the default exchange.
        let mut routed = body.clone();
        routed["command"] = json!("team.disband");
        assert!(matches!(
            decode_any("agent-manager.commands", routed),
            Ok(Decoded::Team(_))
        ));
        let e = invalid(decode("team.disband", body));
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(e.team_id.as_deref(), Some("t1"));
    }

    #[test]
    fn an_unknown_command_names_every_known_one() {
        let e = invalid(decode(
            "x",
            json!({"command": "agent.freeze", "customer_id": "c"}),
        ));
        for known in [
            "agent.pause",
            "agent.resume",
            "team.orchestrate",
            "team.disband",
        ] {
            assert!(e.message.contains(known), "{}", e.message);
        }
    }

    #[test]
    fn refusals_read_as_before_the_errors_were_typed() {
        // The messages are the contract's `agent.error` text: typed errors render them
        // word for word as the strings they replaced.
        let cases = [
            (
                json!({"customer_id": "c"}),
                "agent.start",
                "field 'agent_id' is required",
            ),
            (
                json!({"agent_id": 5, "customer_id": "c"}),
                "agent.start",
                "field 'agent_id' must be a string, got a number",
            ),
            (
                json!({"agent_id": "a", "customer_id": ""}),
                "agent.start",
                "field 'customer_id' must be 1-128 printable characters",
            ),
            (
                json!({"agent_id": "a", "customer_id": "c", "resources": {"disk": 1}}),
                "agent.update",
                "field 'resources.disk' is unknown: expected memory_mb, cpus, gpus, max_messages_per_s",
            ),
            (
                json!({"agent_id": "a", "customer_id": "c", "force": "yes"}),
                "agent.stop",
                "field 'force' must be a boolean, got a string",
            ),
            (
                json!({"customer_id": "c"}),
                "x",
                "routing key 'x' is not a command and the body has no 'command' field",
            ),
            (
                json!({"command": 1, "customer_id": "c"}),
                "x",
                "field 'command' must be a string",
            ),
        ];
        for (body, rk, says) in cases {
            let e = invalid(decode(rk, body));
            assert_eq!(e.message, says);
        }
        let e = invalid(decode(
            "x",
            json!({"command": "agent.melt", "customer_id": "c"}),
        ));
        assert!(
            e.message
                .starts_with("unknown command 'agent.melt': expected one of agent.create"),
            "{}",
            e.message
        );
        assert_eq!(e.command.as_deref(), Some("agent.melt"));
    }

    #[test]
    fn message_id_falls_back_to_amqp_property_then_generated() {
        let body = json!({"agent_id": "a", "customer_id": "c"}).to_string();
        let cmd =
            decode_command("agent.start", Some("amqp-1"), body.as_bytes(), &policy()).unwrap();
        assert_eq!(cmd.message_id, "amqp-1");
        let cmd = decode_command("agent.start", None, body.as_bytes(), &policy()).unwrap();
        assert!(Uuid::parse_str(&cmd.message_id).is_ok());
    }
}
