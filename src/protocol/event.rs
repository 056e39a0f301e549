//! The event published to RabbitMQ and appended to the agent's Redis stream
//! ([`Event`], contract section 3; a team's answers, section 9, are events too), the
//! `details` of an `agent.error` ([`error_details`]) and how the contract writes a time
//! ([`rfc3339`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::command::InvalidCommand;
use super::contract::{AgentStatus, ErrorCode, EventKind};

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
    /// The team a team command's answer is about (section 9); absent from agent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The team's members, in `team.orchestrated` and `team.disbanded`; the halt's
    /// agents, in `halt.engaged` and `halt.released`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<String>>,
    /// The halt a halt command's answer is about (section 10); absent from other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_id: Option<String>,
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
            team_id: None,
            agent_ids: None,
            halt_id: None,
        }
    }

    /// An event about team `team_id` (no agent: `agent_id` is empty, no container):
    /// `team.orchestrated`, `team.disbanded`, or the `agent.error` refusing a team
    /// command. `status` says where the team stands (`orchestrated`, `disbanded`;
    /// `failed` for a refusal).
    pub fn for_team(
        event: EventKind,
        team_id: &str,
        customer_id: &str,
        correlation_id: Option<&str>,
        status: &str,
        agent_ids: Option<Vec<String>>,
        details: Value,
    ) -> Self {
        let mut e = Event::new(
            event,
            "",
            customer_id,
            correlation_id,
            status,
            None,
            details,
        );
        e.team_id = Some(team_id.to_string());
        e.agent_ids = agent_ids;
        e
    }

    /// An event about halt `halt_id` (no agent: `agent_id` is empty, no container):
    /// `halt.engaged`, `halt.released`, or the `agent.error` refusing a halt command.
    /// `status` says where the halt stands (`engaged`, `released`; `failed` for a
    /// refusal).
    pub fn for_halt(
        event: EventKind,
        halt_id: &str,
        customer_id: &str,
        correlation_id: Option<&str>,
        status: &str,
        agent_ids: Option<Vec<String>>,
        details: Value,
    ) -> Self {
        let mut e = Event::new(
            event,
            "",
            customer_id,
            correlation_id,
            status,
            None,
            details,
        );
        e.halt_id = Some(halt_id.to_string());
        e.agent_ids = agent_ids;
        e
    }

    /// `manager.leader` (section 12): a manager took the lead; `details` names it, its
    /// `term` and the `previous` leader. No agent, no customer.
    pub fn for_manager(event: EventKind, details: Value) -> Self {
        Event::new(event, "", "", None, "leader", None, details)
    }

    /// The `agent.error` answering a command that failed decoding or validation. No
    /// agent status applies, so the status is `failed` (the command failed).
    pub fn for_invalid(invalid: &InvalidCommand) -> Self {
        let mut e = Event::new(
            EventKind::Error,
            &invalid.agent_id,
            &invalid.customer_id,
            Some(&invalid.message_id),
            AgentStatus::Failed.as_str(),
            None,
            error_details(invalid.command.as_deref(), invalid.code, &invalid.message),
        );
        e.team_id = invalid.team_id.clone();
        e.halt_id = invalid.halt_id.clone();
        e
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::contract::EventKind;
    use serde_json::json;

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
        assert!(v.get("team_id").is_none(), "agent events name no team");
    }

    #[test]
    fn team_events_carry_the_team_and_its_members() {
        let e = Event::for_team(
            EventKind::TeamOrchestrated,
            "t1",
            "c",
            Some("m"),
            "orchestrated",
            Some(vec!["a".into(), "b".into()]),
            json!({}),
        );
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["event"], "team.orchestrated");
        assert_eq!(v["team_id"], "t1");
        assert_eq!(v["agent_ids"], json!(["a", "b"]));
        assert_eq!(v["agent_id"], "");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
