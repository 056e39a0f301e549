//! The message contract (../shared/PROTOCOL.md sections 2 and 3): command and event
//! names, payloads, error codes and validation. Routing keys and JSON field names live
//! here and nowhere else.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub mod image;
pub mod policy;

pub use policy::AgentPolicy;

/// The six commands the Core Engine sends, by routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Create,
    Update,
    Start,
    Stop,
    Delete,
    Restart,
}

impl CommandKind {
    pub const ALL: [CommandKind; 6] = [
        CommandKind::Create,
        CommandKind::Update,
        CommandKind::Start,
        CommandKind::Stop,
        CommandKind::Delete,
        CommandKind::Restart,
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
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Stopped,
        EventKind::Deleted,
        EventKind::Health,
        EventKind::Updated,
        EventKind::Restarted,
        EventKind::Error,
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
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 10] = [
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
}

/// Optional changes carried by `agent.update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpecPatch {
    pub name: Option<String>,
    pub config: Option<Value>,
    pub autogen_config: Option<Value>,
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: Option<u32>,
    pub image: Option<String>,
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
        if let Some(memory_mb) = self.memory_mb {
            next.resources.memory_mb = memory_mb;
        }
        if let Some(cpus) = self.cpus {
            next.resources.cpus = cpus;
        }
        if let Some(gpus) = self.gpus {
            next.resources.gpus = gpus;
        }
        if let Some(image) = &self.image {
            next.image = image.clone();
        }
        next
    }
}

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

static AGENT_ID_RULE: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$";

/// True when `id` matches the contract's agent id pattern.
pub fn valid_agent_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Decodes and validates one delivery. `routing_key` and `amqp_message_id` come from the
/// AMQP envelope; `policy` holds the configured defaults and bounds.
pub fn decode_command(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    policy: &AgentPolicy,
) -> Result<Command, Rejection> {
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
    let Value::Object(obj) = value else {
        return Err(Rejection::NotAnObject(format!(
            "body is JSON but not an object ({})",
            json_kind(&value)
        )));
    };

    let envelope = Envelope::of(&obj);
    let (message_id, message_id_given) = envelope.message_id(amqp_message_id);
    let invalid = |code: ErrorCode, command: Option<String>, message: String| {
        Rejection::Invalid(Box::new(envelope.invalid(
            message_id.clone(),
            command,
            code,
            message,
        )))
    };

    let kind = match CommandKind::from_routing_key(routing_key) {
        Some(kind) => kind,
        None => match obj.get("command") {
            Some(Value::String(c)) => match CommandKind::from_routing_key(c) {
                Some(kind) => kind,
                None => {
                    return Err(invalid(
                        ErrorCode::InvalidMessage,
                        Some(printable_prefix(c, 64)),
                        format!(
                            "unknown command '{}': expected one of {}",
                            printable_prefix(c, 64),
                            CommandKind::ALL.map(CommandKind::routing_key).join(", ")
                        ),
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    ErrorCode::InvalidMessage,
                    None,
                    "field 'command' must be a string".into(),
                ))
            }
            None => {
                return Err(invalid(
                    ErrorCode::InvalidMessage,
                    None,
                    format!(
                        "routing key '{}' is not a command and the body has no 'command' field",
                        printable_prefix(routing_key, 64)
                    ),
                ))
            }
        },
    };
    let fail = |message: String| {
        invalid(
            ErrorCode::ValidationFailed,
            Some(kind.routing_key().to_string()),
            message,
        )
    };

    let body_message_id_invalid = match &envelope.message_id {
        Field::Absent => false,
        Field::Str(id) => !valid_message_id(id),
        Field::Other => true,
    };
    if body_message_id_invalid {
        return Err(fail(
            "field 'message_id' must be a string of 1-255 bytes without control characters".into(),
        ));
    }
    let customer_id = required_string(&obj, "customer_id").map_err(&fail)?;
    if customer_id.is_empty() || customer_id.len() > 128 || !is_printable(&customer_id) {
        return Err(fail(
            "field 'customer_id' must be 1-128 printable characters".into(),
        ));
    }

    let agent_id = match obj.get("agent_id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) if kind == CommandKind::Create => {
            generated_agent_id(message_id_given.then_some(message_id.as_str()))
        }
        None | Some(Value::Null) => return Err(fail("field 'agent_id' is required".into())),
        Some(other) => {
            return Err(fail(format!(
                "field 'agent_id' must be a string, got {}",
                json_kind(other)
            )))
        }
    };
    if !valid_agent_id(&agent_id) {
        return Err(fail(format!("field 'agent_id' must match {AGENT_ID_RULE}")));
    }

    let action = match kind {
        CommandKind::Create => {
            let type_str = required_string(&obj, "agent_type").map_err(&fail)?;
            let agent_type = AgentType::parse(&type_str).ok_or_else(|| {
                fail(format!(
                    "field 'agent_type' must be one of {}",
                    AgentType::ALL.map(AgentType::as_str).join(", ")
                ))
            })?;
            let name = required_string(&obj, "name").map_err(&fail)?;
            check_name(&name).map_err(&fail)?;
            let config = optional_object(&obj, "config", policy).map_err(&fail)?;
            let autogen_config = optional_object(&obj, "autogen_config", policy).map_err(&fail)?;
            let patch = resources_patch(&obj, policy).map_err(&fail)?;
            let resources = Resources {
                memory_mb: patch.0.unwrap_or(policy.memory_mb),
                cpus: patch.1.unwrap_or(policy.cpus),
                gpus: patch.2.unwrap_or(0),
            };
            let image = optional_image(&obj, policy)
                .map_err(&fail)?
                .unwrap_or_else(|| policy.default_image(resources.gpus).to_string());
            let auto_start = match obj.get("auto_start") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(fail(format!(
                        "field 'auto_start' must be a boolean, got {}",
                        json_kind(other)
                    )))
                }
            };
            Action::Create {
                spec: AgentSpec {
                    customer_id: customer_id.clone(),
                    agent_type,
                    name,
                    config: config.unwrap_or_else(|| Value::Object(Map::new())),
                    autogen_config: autogen_config.unwrap_or_else(|| Value::Object(Map::new())),
                    resources,
                    image,
                },
                auto_start,
            }
        }
        CommandKind::Update => {
            let name = match obj.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) => {
                    check_name(n).map_err(&fail)?;
                    Some(n.clone())
                }
                Some(other) => {
                    return Err(fail(format!(
                        "field 'name' must be a string, got {}",
                        json_kind(other)
                    )))
                }
            };
            let (memory_mb, cpus, gpus) = resources_patch(&obj, policy).map_err(&fail)?;
            Action::Update {
                patch: SpecPatch {
                    name,
                    config: optional_object(&obj, "config", policy).map_err(&fail)?,
                    autogen_config: optional_object(&obj, "autogen_config", policy)
                        .map_err(&fail)?,
                    memory_mb,
                    cpus,
                    gpus,
                    image: optional_image(&obj, policy).map_err(&fail)?,
                },
            }
        }
        CommandKind::Start => Action::Start,
        CommandKind::Stop => Action::Stop {
            timeout_s: timeout_field(&obj, policy).map_err(&fail)?,
        },
        CommandKind::Restart => Action::Restart {
            timeout_s: timeout_field(&obj, policy).map_err(&fail)?,
        },
        CommandKind::Delete => Action::Delete {
            timeout_s: timeout_field(&obj, policy).map_err(&fail)?,
        },
    };

    Ok(Command {
        message_id,
        message_id_given,
        kind,
        agent_id,
        customer_id,
        action,
    })
}

/// A top-level field of the envelope as far as answering needs it.
#[derive(Debug, Clone, Default, PartialEq)]
enum Field {
    /// Absent or null.
    #[default]
    Absent,
    Str(String),
    /// Any other JSON value (never built when scanned).
    Other,
}

impl Field {
    fn of(v: Option<&Value>) -> Field {
        match v {
            None | Some(Value::Null) => Field::Absent,
            Some(Value::String(s)) => Field::Str(s.clone()),
            Some(_) => Field::Other,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What is needed to answer a command, even one whose body is refused: its ids and
/// command.
#[derive(Debug, Clone, Default)]
struct Envelope {
    message_id: Field,
    command: Field,
    agent_id: Field,
    customer_id: Field,
}

/// True for a message id that can be echoed as an AMQP `correlation_id` (a short string
/// of at most 255 bytes) and used in a Redis key.
fn valid_message_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && !id.chars().any(char::is_control)
}

impl Envelope {
    fn of(obj: &Map<String, Value>) -> Envelope {
        Envelope {
            message_id: Field::of(obj.get("message_id")),
            command: Field::of(obj.get("command")),
            agent_id: Field::of(obj.get("agent_id")),
            customer_id: Field::of(obj.get("customer_id")),
        }
    }

    /// The message id (body, else AMQP property, else generated) and whether the sender
    /// gave it. A body `message_id` that is not valid is not used (the command is then
    /// refused for it).
    fn message_id(&self, amqp_message_id: Option<&str>) -> (String, bool) {
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

    fn invalid(
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
            customer_id: printable_prefix(self.customer_id.as_str().unwrap_or(""), 128),
            code,
            message,
        }
    }

    /// Reads the envelope of a JSON object without building any value: every other field
    /// is skipped by serde's `IgnoredAny`, which serde_json walks without recursion, so
    /// neither size nor nesting can exhaust memory or the stack. `None` when `body` is not
    /// one JSON object.
    fn scan(body: &[u8]) -> Option<Envelope> {
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
fn refuse_unbuilt(
    routing_key: &str,
    amqp_message_id: Option<&str>,
    body: &[u8],
    problem: String,
) -> Rejection {
    let Some(envelope) = Envelope::scan(body) else {
        return Rejection::NotAnObject(problem);
    };
    let (message_id, _) = envelope.message_id(amqp_message_id);
    let command = CommandKind::from_routing_key(routing_key)
        .or_else(|| {
            envelope
                .command
                .as_str()
                .and_then(CommandKind::from_routing_key)
        })
        .map(|k| k.routing_key().to_string());
    Rejection::Invalid(Box::new(envelope.invalid(
        message_id,
        command,
        ErrorCode::ValidationFailed,
        problem,
    )))
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

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A copy of `s` safe to echo back: control characters dropped, at most `max` chars.
fn printable_prefix(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(format!("field '{field}' is required")),
        Some(other) => Err(format!(
            "field '{field}' must be a string, got {}",
            json_kind(other)
        )),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 || len > 128 || !is_printable(name) {
        return Err("field 'name' must be 1-128 printable characters".into());
    }
    Ok(())
}

fn optional_object(
    obj: &Map<String, Value>,
    field: &str,
    policy: &AgentPolicy,
) -> Result<Option<Value>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if size > policy.max_config_bytes {
                return Err(format!(
                    "field '{field}' is {size} bytes, more than the limit of {}",
                    policy.max_config_bytes
                ));
            }
            let depth = json_depth(v);
            if depth > policy.max_config_depth {
                return Err(format!(
                    "field '{field}' nests {depth} levels deep, more than the limit of {}",
                    policy.max_config_depth
                ));
            }
            Ok(Some(v.clone()))
        }
        Some(other) => Err(format!(
            "field '{field}' must be an object, got {}",
            json_kind(other)
        )),
    }
}

fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

type ResourcesPatch = (Option<u64>, Option<f64>, Option<u32>);

fn resources_patch(
    obj: &Map<String, Value>,
    policy: &AgentPolicy,
) -> Result<ResourcesPatch, String> {
    let res = match obj.get("resources") {
        None | Some(Value::Null) => return Ok((None, None, None)),
        Some(Value::Object(res)) => res,
        Some(other) => {
            return Err(format!(
                "field 'resources' must be an object, got {}",
                json_kind(other)
            ))
        }
    };
    if let Some(unknown) = res
        .keys()
        .find(|k| !matches!(k.as_str(), "memory_mb" | "cpus" | "gpus"))
    {
        return Err(format!(
            "field 'resources.{}' is unknown: expected memory_mb, cpus, gpus",
            printable_prefix(unknown, 64)
        ));
    }
    let memory_mb = match res.get("memory_mb") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let mb = v
                .as_u64()
                .ok_or("field 'resources.memory_mb' must be a whole number")?;
            if mb < policy.min_memory_mb || mb > policy.max_memory_mb {
                return Err(format!(
                    "field 'resources.memory_mb' must be between {} and {}",
                    policy.min_memory_mb, policy.max_memory_mb
                ));
            }
            Some(mb)
        }
    };
    let cpus = match res.get("cpus") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let cpus = v
                .as_f64()
                .ok_or("field 'resources.cpus' must be a number")?;
            if !(cpus >= policy.min_cpus && cpus <= policy.max_cpus) {
                return Err(format!(
                    "field 'resources.cpus' must be between {} and {}",
                    policy.min_cpus, policy.max_cpus
                ));
            }
            Some(cpus)
        }
    };
    let gpus = match res.get("gpus") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let gpus = v
                .as_u64()
                .filter(|g| *g <= u64::from(policy.max_gpus))
                .ok_or_else(|| {
                    format!(
                        "field 'resources.gpus' must be a whole number between 0 and {}",
                        policy.max_gpus
                    )
                })?;
            Some(gpus as u32)
        }
    };
    Ok((memory_mb, cpus, gpus))
}

fn optional_image(
    obj: &Map<String, Value>,
    policy: &AgentPolicy,
) -> Result<Option<String>, String> {
    match obj.get("image") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(image)) => {
            if policy.image_allowed(image) {
                Ok(Some(image.clone()))
            } else {
                Err(format!(
                    "field 'image' ('{}') is not in the allowed images ({})",
                    printable_prefix(image, 200),
                    policy.allowed_images.join(", ")
                ))
            }
        }
        Some(other) => Err(format!(
            "field 'image' must be a string, got {}",
            json_kind(other)
        )),
    }
}

fn timeout_field(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<u32, String> {
    match obj.get("timeout_s") {
        None | Some(Value::Null) => Ok(policy.stop_timeout_s),
        Some(v) => v
            .as_u64()
            .filter(|t| *t <= u64::from(policy.max_stop_timeout_s))
            .map(|t| t as u32)
            .ok_or_else(|| {
                format!(
                    "field 'timeout_s' must be a whole number of seconds between 0 and {}",
                    policy.max_stop_timeout_s
                )
            }),
    }
}

/// An event as published to RabbitMQ and appended to the agent's Redis stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub event: EventKind,
    pub agent_id: String,
    pub customer_id: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub correlation_id: Option<String>,
    pub status: String,
    pub container_id: Option<String>,
    pub details: Value,
}

impl Event {
    pub fn new(
        event: EventKind,
        agent_id: &str,
        customer_id: &str,
        correlation_id: Option<&str>,
        status: &str,
        container_id: Option<&str>,
        details: Value,
    ) -> Self {
        Event {
            event_id: Uuid::new_v4().to_string(),
            event,
            agent_id: agent_id.to_string(),
            customer_id: customer_id.to_string(),
            timestamp: rfc3339(Utc::now()),
            correlation_id: correlation_id.map(str::to_string),
            status: status.to_string(),
            container_id: container_id.map(str::to_string),
            details,
        }
    }

    /// The `agent.error` answering a command that failed decoding or validation. No
    /// agent status applies, so the status is `failed` (the command failed).
    pub fn for_invalid(invalid: &InvalidCommand) -> Self {
        Event::new(
            EventKind::Error,
            &invalid.agent_id,
            &invalid.customer_id,
            Some(&invalid.message_id),
            AgentStatus::Failed.as_str(),
            None,
            error_details(invalid.command.as_deref(), invalid.code, &invalid.message),
        )
    }

    pub fn routing_key(&self) -> &'static str {
        self.event.routing_key()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and a serde_json::Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `details` of an `agent.error`.
pub fn error_details(command: Option<&str>, code: ErrorCode, message: &str) -> Value {
    serde_json::json!({ "command": command, "code": code.as_str(), "message": message })
}

/// Formats a time the way every timestamp of the contract is written.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
        },
        image: "autogen-agent:latest".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> AgentPolicy {
        policy::sample_policy()
    }

    fn decode(rk: &str, body: Value) -> Result<Command, Rejection> {
        decode_command(rk, None, body.to_string().as_bytes(), &policy())
    }

    fn invalid(r: Result<Command, Rejection>) -> InvalidCommand {
        match r {
            Err(Rejection::Invalid(i)) => *i,
            other => panic!("expected an invalid command, got {other:?}"),
        }
    }

    fn create_body() -> Value {
        json!({"message_id": "m1", "agent_id": "a1", "customer_id": "c1",
               "agent_type": "trading", "name": "Alpha"})
    }

    #[test]
    fn create_gets_defaults() {
        let cmd = decode("agent.create", create_body()).unwrap();
        assert_eq!(cmd.message_id, "m1");
        let Action::Create { spec, auto_start } = cmd.action else {
            panic!("not a create")
        };
        assert!(auto_start);
        assert_eq!(spec.image, "autogen-agent:latest");
        assert_eq!(spec.resources.memory_mb, 1024);
        assert_eq!(spec.resources.cpus, 1.0);
        assert_eq!(spec.resources.gpus, 0);
        assert_eq!(spec.config, json!({}));
    }

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
    fn missing_and_wrong_fields_name_the_field() {
        let cases = [
            ("customer_id", Value::Null, "customer_id"),
            ("customer_id", json!(5), "customer_id"),
            ("agent_id", json!("-bad"), "agent_id"),
            ("agent_id", json!("a/../b"), "agent_id"),
            ("agent_id", json!("x".repeat(64)), "agent_id"),
            ("agent_type", json!("wizard"), "agent_type"),
            ("agent_type", Value::Null, "agent_type"),
            ("name", json!(""), "name"),
            ("name", json!("x".repeat(129)), "name"),
            ("name", json!("bell\u{7}"), "name"),
            ("config", json!([1]), "config"),
            ("autogen_config", json!("s"), "autogen_config"),
            ("resources", json!({"memory_mb": 1}), "resources.memory_mb"),
            (
                "resources",
                json!({"memory_mb": 1.5}),
                "resources.memory_mb",
            ),
            ("resources", json!({"cpus": 0}), "resources.cpus"),
            ("resources", json!({"cpus": "1"}), "resources.cpus"),
            ("resources", json!({"gpus": -1}), "resources.gpus"),
            ("resources", json!({"memory": 512}), "resources.memory"),
            ("image", json!("evil/miner:latest"), "image"),
            ("auto_start", json!("yes"), "auto_start"),
        ];
        for (field, value, named) in cases {
            let mut body = create_body();
            if value.is_null() {
                body.as_object_mut().unwrap().remove(field);
            } else {
                body[field] = value.clone();
            }
            let e = invalid(decode("agent.create", body));
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{field}={value}");
            assert!(e.message.contains(named), "{field}={value}: {}", e.message);
            assert_eq!(e.command.as_deref(), Some("agent.create"));
            assert_eq!(e.message_id, "m1");
        }
    }

    #[test]
    fn deep_and_large_configs_are_refused() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "a": deep });
        }
        let mut body = create_body();
        body["config"] = deep;
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("nests"));
        let mut body = create_body();
        body["config"] = json!({"blob": "x".repeat(300_000)});
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("bytes"));
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
    fn unknown_top_level_fields_are_ignored_but_not_inside_resources() {
        let mut body = create_body();
        body["x_future_field"] = json!({"anything": [1, 2]});
        assert!(decode("agent.create", body.clone()).is_ok());
        body["resources"] = json!({"memory_mb": 256, "swap_mb": 0});
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("resources.swap_mb"));
    }

    #[test]
    fn digest_pinned_images_of_allowed_repositories_are_accepted() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let mut body = create_body();
        body["image"] = json!(format!("autogen-agent@{digest}"));
        let Action::Create { spec, .. } = decode("agent.create", body).unwrap().action else {
            panic!()
        };
        assert_eq!(spec.image, format!("autogen-agent@{digest}"));
        for bad in [
            "autogen-agent@sha256:short",
            "AUTOGEN-AGENT:latest",
            "autogen-agent:lat est",
            "autogen-agent:latest\u{0}",
            "autogen-agent:../../etc",
        ] {
            let mut body = create_body();
            body["image"] = json!(bad);
            assert!(
                invalid(decode("agent.create", body))
                    .message
                    .contains("image"),
                "{bad}"
            );
        }
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
        ] {
            let e = invalid(decode(rk, json!({"customer_id": "c"})));
            assert!(e.message.contains("agent_id"), "{rk}");
        }
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

    #[test]
    fn timeouts_are_bounded() {
        let cmd = decode(
            "agent.stop",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": 3}),
        )
        .unwrap();
        assert_eq!(cmd.action, Action::Stop { timeout_s: 3 });
        let cmd = decode("agent.stop", json!({"agent_id": "a", "customer_id": "c"})).unwrap();
        assert_eq!(cmd.action, Action::Stop { timeout_s: 10 });
        let e = invalid(decode(
            "agent.stop",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": -1}),
        ));
        assert!(e.message.contains("timeout_s"));
    }

    #[test]
    fn update_patch_applies_only_given_fields() {
        let Action::Create { spec, .. } = decode("agent.create", create_body()).unwrap().action
        else {
            panic!()
        };
        let cmd = decode(
            "agent.update",
            json!({"agent_id": "a1", "customer_id": "c1", "resources": {"memory_mb": 256}}),
        )
        .unwrap();
        let Action::Update { patch } = cmd.action else {
            panic!()
        };
        let next = patch.apply(&spec);
        assert_eq!(next.resources.memory_mb, 256);
        assert_eq!(next.resources.cpus, spec.resources.cpus);
        assert_eq!(next.name, spec.name);
    }

    #[test]
    fn event_serializes_contract_fields() {
        let e = Event::new(
            EventKind::Started,
            "a",
            "c",
            Some("m"),
            "running",
            Some("cid"),
            json!({}),
        );
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        for f in [
            "event_id",
            "event",
            "agent_id",
            "customer_id",
            "timestamp",
            "correlation_id",
            "status",
            "container_id",
            "details",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
        assert_eq!(v["event"], "agent.started");
        assert!(DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    }
}
