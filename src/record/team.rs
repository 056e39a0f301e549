//! A team's record (contract section 9): which agents of one customer form it and the
//! configuration its orchestrator gives them. [`crate::store`] maps it to the Redis hash
//! `team:<team_id>`; only the team actor writes it.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One team as the manager knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    pub team_id: String,
    /// The owner; every member belongs to this customer.
    pub customer_id: String,
    /// The members' agent ids, in the order the team was formed.
    pub agent_ids: Vec<String>,
    /// Given to every member (`{}` when the command gave none).
    pub orchestrator_config: Value,
    pub created_at: DateTime<Utc>,
    /// When the members last changed (a member deleted).
    pub updated_at: DateTime<Utc>,
}

impl TeamRecord {
    /// A new team, formed now.
    pub fn new(
        team_id: &str,
        customer_id: &str,
        agent_ids: Vec<String>,
        orchestrator_config: Value,
    ) -> Self {
        let now = Utc::now();
        TeamRecord {
            team_id: team_id.to_string(),
            customer_id: customer_id.to_string(),
            agent_ids,
            orchestrator_config,
            created_at: now,
            updated_at: now,
        }
    }

    /// True when `agent_id` is a member.
    pub fn has(&self, agent_id: &str) -> bool {
        self.agent_ids.iter().any(|a| a == agent_id)
    }

    /// True when this team is what an orchestration of `agent_ids` with
    /// `orchestrator_config` would form (the same members in any order).
    pub fn same_as(&self, agent_ids: &[String], orchestrator_config: &Value) -> bool {
        let mut mine = self.agent_ids.clone();
        let mut theirs = agent_ids.to_vec();
        mine.sort();
        theirs.sort();
        mine == theirs && &self.orchestrator_config == orchestrator_config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_team_is_the_same_members_in_any_order_and_the_same_config() {
        let t = TeamRecord::new("t", "c", vec!["a".into(), "b".into()], json!({"k": 1}));
        assert!(t.same_as(&["b".into(), "a".into()], &json!({"k": 1})));
        assert!(!t.same_as(&["a".into(), "c".into()], &json!({"k": 1})));
        assert!(!t.same_as(&["a".into(), "b".into()], &json!({})));
        assert!(t.has("a") && !t.has("z"));
    }
}
