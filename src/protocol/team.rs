//! What a team's members are told (contract section 9): a [`TeamMessage`] published to
//! the exchange with routing key `agent:<agent_id>:team` ([`routing_key`]), one per
//! member, persistent and confirmed like events. An agent may bind its own queues to
//! keys that begin `agent:<agent_id>:` (section 7), so it can receive it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The routing key of the team message for `agent_id`.
pub fn routing_key(agent_id: &str) -> String {
    format!("agent:{agent_id}:team")
}

/// The body of `agent:<agent_id>:team`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamMessage {
    pub team_id: String,
    /// Every member's agent id (the recipient's included), in the order the team was
    /// formed; empty when the team is disbanded.
    pub members: Vec<String>,
    /// The team's `orchestrator_config` (`{}` when none was given; null when disbanded).
    pub orchestrator_config: Value,
    /// True when the team no longer exists (disbanded, or too few members left): the
    /// recipient is in it no more.
    #[serde(default)]
    pub disbanded: bool,
}

impl TeamMessage {
    /// The team as it now stands.
    pub fn formed(team_id: &str, members: &[String], orchestrator_config: &Value) -> Self {
        TeamMessage {
            team_id: team_id.to_string(),
            members: members.to_vec(),
            orchestrator_config: orchestrator_config.clone(),
            disbanded: false,
        }
    }

    /// The team is gone.
    pub fn disbanded(team_id: &str) -> Self {
        TeamMessage {
            team_id: team_id.to_string(),
            members: Vec::new(),
            orchestrator_config: Value::Null,
            disbanded: true,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings and a serde_json::Value always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_message_has_the_contracts_fields() {
        let m = TeamMessage::formed("t1", &["a".into(), "b".into()], &json!({"k": 1}));
        let v: Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(v["team_id"], "t1");
        assert_eq!(v["members"], json!(["a", "b"]));
        assert_eq!(v["orchestrator_config"], json!({"k": 1}));
        assert_eq!(routing_key("a"), "agent:a:team");
        let gone: Value = serde_json::from_slice(&TeamMessage::disbanded("t1").to_json()).unwrap();
        assert_eq!(gone["disbanded"], true);
        assert_eq!(gone["members"], json!([]));
    }
}
