//! The envelope of a command: the fields needed to answer it (`message_id`, `command`,
//! `agent_id`, `team_id` or `halt_id`, `customer_id`) even when its body is refused. [`Envelope::scan`] reads
//! them from raw bytes without building the body (a hand-written `Deserialize` that
//! skips every other field), so an oversized or too deeply nested object is still
//! answered with `agent.error`.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::command::{InvalidCommand, Rejection};
use super::contract::{CommandKind, ErrorCode, HaltCommandKind, TeamCommandKind};
use super::fields::printable_prefix;

/// A top-level field of the envelope as far as answering needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) enum Field {
    /// Absent or null.
    #[default]
    Absent,
    Str(String),
    /// Any other JSON value (never built when scanned).
    Other,
}

impl Field {
    pub(super) fn of(v: Option<&Value>) -> Field {
        match v {
            None | Some(Value::Null) => Field::Absent,
            Some(Value::String(s)) => Field::Str(s.clone()),
            Some(_) => Field::Other,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What is needed to answer a command, even one whose body is refused: its ids and
/// command.
#[derive(Debug, Clone, Default)]
pub(super) struct Envelope {
    pub(super) message_id: Field,
    pub(super) command: Field,
    pub(super) agent_id: Field,
    /// Team commands name a team instead of an agent.
    pub(super) team_id: Field,
    /// Halt commands name a halt.
    pub(super) halt_id: Field,
    pub(super) customer_id: Field,
}

/// True for a message id that can be echoed as an AMQP `correlation_id` (a short string
/// of at most 255 bytes) and used in a Redis key.
pub(super) fn valid_message_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && !id.chars().any(char::is_control)
}

impl Envelope {
    pub(super) fn of(obj: &Map<String, Value>) -> Envelope {
        Envelope {
            message_id: Field::of(obj.get("message_id")),
            command: Field::of(obj.get("command")),
            agent_id: Field::of(obj.get("agent_id")),
            team_id: Field::of(obj.get("team_id")),
            halt_id: Field::of(obj.get("halt_id")),
            customer_id: Field::of(obj.get("customer_id")),
        }
    }

    /// The message id (body, else AMQP property, else generated) and whether the sender
    /// gave it. A body `message_id` that is not valid is not used (the command is then
    /// refused for it).
    pub(super) fn message_id(&self, amqp_message_id: Option<&str>) -> (String, bool) {
        let given = match &self.message_id {
            Field::Absent => amqp_message_id.filter(|id| valid_message_id(id)),
            Field::Str(id) if valid_message_id(id) => Some(id.as_str()),
            _ => amqp_message_id.filter(|id| valid_message_id(id)),
        };
        match given {
            Some(id) => (id.to_string(), true),
            None => (Uuid::new_v4().to_string(), false),
        }
    }

    pub(super) fn invalid(
        &self,
        message_id: String,
        command: Option<String>,
        code: ErrorCode,
        message: String,
    ) -> InvalidCommand {
        InvalidCommand {
            message_id,
            command,
            agent_id: printable_prefix(self.agent_id.as_str().unwrap_or(""), 63),
            team_id: self
                .team_id
                .as_str()
                .map(|t| printable_prefix(t, 63))
                .filter(|t| !t.is_empty()),
            halt_id: self
                .halt_id
                .as_str()
                .map(|t| printable_prefix(t, 63))
                .filter(|t| !t.is_empty()),
            customer_id: printable_prefix(self.customer_id.as_str().unwrap_or(""), 128),
            code,
            message,
        }
    }

    /// Reads the envelope of a JSON object without building any value: every other field
    /// is skipped by serde's `IgnoredAny`, which serde_json walks without recursion, so
    /// neither size nor nesting can exhaust memory or the stack. `None` when `body` is not
    /// one JSON object.
    pub(super) fn scan(body: &[u8]) -> Option<Envelope> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let envelope = serde::Deserialize::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(envelope)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::Str(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Field, E> {
                Ok(Field::Str(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Field, E> {
                Ok(Field::Absent)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Field, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Field, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    // Later duplicates win, as when the body is built into a value.
                    match key.as_ref() {
                        "message_id" => env.message_id = map.next_value()?,
                        "command" => env.command = map.next_value()?,
                        "agent_id" => env.agent_id = map.next_value()?,
                        "team_id" => env.team_id = map.next_value()?,
                        "halt_id" => env.halt_id = map.next_value()?,
                        "customer_id" => env.customer_id = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(EnvelopeVisitor)
    }
}

/// The refusal of a body that is never built into a value (`problem` says why): an
/// `agent.error` `validation_failed` when it is a JSON object whose envelope can be read,
/// else the dead-letter queue.
pub(super) fn refuse_unbuilt(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    problem: String,
) -> Rejection {
    let Some(envelope) = Envelope::scan(body) else {
        return Rejection::NotAnObject(problem);
    };
    let (message_id, _) = envelope.message_id(amqp_message_id);
    let known = |key: &str| {
        CommandKind::from_routing_key(key)
            .map(CommandKind::routing_key)
            .or_else(|| TeamCommandKind::from_routing_key(key).map(TeamCommandKind::routing_key))
            .or_else(|| HaltCommandKind::from_routing_key(key).map(HaltCommandKind::routing_key))
    };
    let command = known(routing_key)
        .or_else(|| envelope.command.as_str().and_then(known))
        .map(str::to_string);
    Rejection::Invalid(Box::new(envelope.invalid(
        message_id,
        command,
        ErrorCode::ValidationFailed,
        problem,
    )))
}
