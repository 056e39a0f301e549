//! [`Order`]: one command of the contract (sections 2 and 9) for one agent, as the
//! operator's acting commands build it, and the event that answers it when it succeeds.
//! Pure data: [`super::act::send`] publishes it.

use serde_json::{json, Map, Value};

use super::CliError;
use crate::protocol::{CommandKind, EventKind};

/// Fields a spec or patch file may not set: the CLI sets them itself.
const SET_BY_THE_CLI: [&str; 2] = ["command", "message_id"];

/// One command for one agent, and the event that answers it when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub kind: CommandKind,
    pub agent_id: String,
    /// The owner when the order names it (a create's spec); else it is read from the
    /// agent's record.
    pub customer_id: Option<String>,
    /// The command's own fields (`force`, `reason`, a spec, ...), beside the ids.
    pub fields: Map<String, Value>,
}

impl Order {
    pub fn pause(agent_id: &str) -> Self {
        Order::of(CommandKind::Pause, agent_id, Map::new())
    }

    pub fn resume(agent_id: &str) -> Self {
        Order::of(CommandKind::Resume, agent_id, Map::new())
    }

    pub fn start(agent_id: &str) -> Self {
        Order::of(CommandKind::Start, agent_id, Map::new())
    }

    /// A restart; `timeout_s` is the grace period (the manager's default when `None`).
    pub fn restart(agent_id: &str, timeout_s: Option<u32>) -> Self {
        Order::of(CommandKind::Restart, agent_id, grace(timeout_s))
    }

    /// A delete; `timeout_s` is the grace period of its stop.
    pub fn delete(agent_id: &str, timeout_s: Option<u32>) -> Self {
        Order::of(CommandKind::Delete, agent_id, grace(timeout_s))
    }

    /// A stop: `force` kills at once; `timeout_s` is the grace period otherwise (the
    /// manager's default when `None`); `reason` and `requested_by` are recorded.
    pub fn stop(
        agent_id: &str,
        force: bool,
        timeout_s: Option<u32>,
        reason: Option<&str>,
        requested_by: Option<&str>,
    ) -> Self {
        let mut fields = grace(timeout_s);
        if force {
            fields.insert("force".into(), json!(true));
        }
        if let Some(r) = reason {
            fields.insert("reason".into(), json!(r));
        }
        if let Some(by) = requested_by {
            fields.insert("requested_by".into(), json!(by));
        }
        Order::of(CommandKind::Stop, agent_id, fields)
    }

    /// A create from a spec file: `customer_id` is required, `agent_id` is made (UUID
    /// v4) when the spec has none, so the operator learns it from the answer.
    pub fn create(mut spec: Map<String, Value>) -> Result<Self, CliError> {
        refuse_cli_fields(&spec, "spec")?;
        let customer_id = take_text(&mut spec, "customer_id")?
            .ok_or_else(|| CliError::Usage("the spec needs a customer_id".into()))?;
        let agent_id =
            take_text(&mut spec, "agent_id")?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut order = Order::of(CommandKind::Create, &agent_id, spec);
        order.customer_id = Some(customer_id);
        Ok(order)
    }

    /// An update of `agent_id` with the fields of a patch file (name, config,
    /// autogen_config, resources, image); ids in the patch must be the agent's.
    pub fn update(agent_id: &str, mut patch: Map<String, Value>) -> Result<Self, CliError> {
        refuse_cli_fields(&patch, "patch")?;
        if let Some(id) = take_text(&mut patch, "agent_id")? {
            if id != agent_id {
                return Err(CliError::Usage(format!(
                    "the patch names agent {id}, not {agent_id}"
                )));
            }
        }
        let customer_id = take_text(&mut patch, "customer_id")?;
        if patch.is_empty() {
            return Err(CliError::Usage(
                "the patch changes nothing (name, config, autogen_config, resources, image)".into(),
            ));
        }
        let mut order = Order::of(CommandKind::Update, agent_id, patch);
        order.customer_id = customer_id;
        Ok(order)
    }

    fn of(kind: CommandKind, agent_id: &str, fields: Map<String, Value>) -> Self {
        Order {
            kind,
            agent_id: agent_id.to_string(),
            customer_id: None,
            fields,
        }
    }

    /// The event that answers the command when it has done all it was asked: a create
    /// that starts its agent (`auto_start`, true unless false) is done at `agent.started`.
    pub fn success(&self) -> EventKind {
        match self.kind {
            CommandKind::Create if self.fields.get("auto_start") == Some(&json!(false)) => {
                EventKind::Created
            }
            CommandKind::Create => EventKind::Started,
            CommandKind::Update => EventKind::Updated,
            CommandKind::Start => EventKind::Started,
            CommandKind::Stop => EventKind::Stopped,
            CommandKind::Delete => EventKind::Deleted,
            CommandKind::Restart => EventKind::Restarted,
            CommandKind::Pause => EventKind::Paused,
            CommandKind::Resume => EventKind::Resumed,
        }
    }

    /// The events that may answer the command when it succeeds: its success event, and
    /// for a create that starts its agent `agent.created` too (the same create again
    /// answers only that).
    pub fn answers(&self) -> Vec<EventKind> {
        match (self.kind, self.success()) {
            (CommandKind::Create, EventKind::Started) => {
                vec![EventKind::Created, EventKind::Started]
            }
            (_, success) => vec![success],
        }
    }

    /// True when `event` (answering this command) is the last answer it gets: the
    /// success event, or the `agent.created` of a create that found its agent already
    /// there (`details.existing`: nothing more follows).
    pub fn is_done_at(&self, event: &crate::protocol::Event) -> bool {
        event.event == self.success()
            || (event.event == EventKind::Created && event.details["existing"] == json!(true))
    }

    /// The command's body as the contract writes it.
    pub fn body(&self, message_id: &str, customer_id: &str) -> Value {
        let mut body = self.fields.clone();
        body.insert("message_id".into(), json!(message_id));
        body.insert("command".into(), json!(self.kind.routing_key()));
        body.insert("agent_id".into(), json!(self.agent_id));
        body.insert("customer_id".into(), json!(customer_id));
        Value::Object(body)
    }
}

fn grace(timeout_s: Option<u32>) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(t) = timeout_s {
        fields.insert("timeout_s".into(), json!(t));
    }
    fields
}

fn refuse_cli_fields(fields: &Map<String, Value>, what: &str) -> Result<(), CliError> {
    match SET_BY_THE_CLI.iter().find(|k| fields.contains_key(**k)) {
        Some(k) => Err(CliError::Usage(format!(
            "the {what} may not set {k}: the CLI sets it"
        ))),
        None => Ok(()),
    }
}

/// Removes `key` from `fields`: its text, `None` when absent, a usage error when it
/// is not a non-empty string.
fn take_text(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, CliError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(other) => Err(CliError::Usage(format!(
            "{key} must be a non-empty string, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_stop_order_carries_only_what_was_given() {
        let plain = Order::stop("a-1", false, None, None, None);
        assert_eq!(
            plain.body("m", "c"),
            json!({"message_id": "m", "command": "agent.stop", "agent_id": "a-1", "customer_id": "c"})
        );
        let forced = Order::stop("a-1", true, Some(5), Some("runaway"), Some("ops"));
        let body = forced.body("m", "c");
        assert_eq!(body["force"], true);
        assert_eq!(body["timeout_s"], 5);
        assert_eq!(body["reason"], "runaway");
        assert_eq!(body["requested_by"], "ops");
        assert_eq!(forced.success(), EventKind::Stopped);
        assert_eq!(Order::pause("a").success(), EventKind::Paused);
        assert_eq!(Order::resume("a").success(), EventKind::Resumed);
        assert_eq!(Order::pause("a").body("m", "c")["command"], "agent.pause");
    }

    #[test]
    fn lifecycle_orders_answer_with_their_events() {
        assert_eq!(Order::start("a").success(), EventKind::Started);
        assert_eq!(Order::restart("a", None).success(), EventKind::Restarted);
        assert_eq!(Order::delete("a", Some(3)).body("m", "c")["timeout_s"], 3);
        assert!(Order::delete("a", None).fields.is_empty());
    }

    #[test]
    fn a_create_takes_its_owner_and_id_from_the_spec() {
        let order = Order::create(map(json!({
            "agent_id": "t-1", "customer_id": "acme", "agent_type": "trading", "name": "T"
        })))
        .unwrap();
        assert_eq!(order.agent_id, "t-1");
        assert_eq!(order.customer_id.as_deref(), Some("acme"));
        assert_eq!(order.success(), EventKind::Started);
        let body = order.body("m", "acme");
        assert_eq!(body["agent_type"], "trading");
        assert_eq!(body["command"], "agent.create");

        let idle = Order::create(map(json!({"customer_id": "acme", "auto_start": false})));
        let idle = idle.unwrap();
        assert_eq!(idle.success(), EventKind::Created);
        assert!(
            uuid::Uuid::parse_str(&idle.agent_id).is_ok(),
            "an id is made"
        );

        assert!(matches!(
            Order::create(map(json!({"name": "x"}))),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Order::create(map(json!({"customer_id": 7}))),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Order::create(map(json!({"customer_id": "c", "message_id": "m"}))),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn a_starting_create_is_done_when_started_or_found_existing() {
        use crate::protocol::Event;
        let order = Order::create(map(json!({"agent_id": "a", "customer_id": "c"}))).unwrap();
        assert_eq!(
            order.answers(),
            vec![EventKind::Created, EventKind::Started]
        );
        let event = |kind, details| Event::new(kind, "a", "c", Some("m"), "running", None, details);
        assert!(!order.is_done_at(&event(EventKind::Created, json!({"image": "x"}))));
        assert!(order.is_done_at(&event(EventKind::Created, json!({"existing": true}))));
        assert!(order.is_done_at(&event(EventKind::Started, json!({}))));
        let idle = Order::create(map(json!({"customer_id": "c", "auto_start": false}))).unwrap();
        assert_eq!(idle.answers(), vec![EventKind::Created]);
        assert!(idle.is_done_at(&event(EventKind::Created, json!({}))));
    }

    #[test]
    fn an_update_keeps_to_its_agent() {
        let order = Order::update("a-1", map(json!({"name": "New", "agent_id": "a-1"}))).unwrap();
        assert_eq!(order.fields, map(json!({"name": "New"})));
        assert_eq!(order.success(), EventKind::Updated);
        assert!(Order::update("a-1", map(json!({"name": "x", "agent_id": "b"}))).is_err());
        assert!(Order::update("a-1", map(json!({}))).is_err());
    }
}
