//! A halt's record (contract section 10): who took which agents out, why and when.
//! Kept in Redis (`halt:<halt_id>`, [`crate::store`]) and, so that a Redis wipe loses
//! nothing, in RabbitMQ as a global runtime parameter ([`crate::broker::management`]);
//! only the halt actor writes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::{HaltScope, HaltTarget};

/// One engaged halt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaltRecord {
    pub halt_id: String,
    /// Who engaged it: only this customer may release it, unless it is a platform halt.
    pub customer_id: String,
    pub scope: HaltScope,
    pub reason: String,
    pub requested_by: String,
    pub engaged_at: DateTime<Utc>,
    /// The agents it holds: those in scope when it was engaged (a deleted agent leaves).
    pub agent_ids: Vec<String>,
    /// Engaged by the manager itself (a publishing rate over the limit).
    #[serde(default)]
    pub automatic: bool,
}

impl HaltRecord {
    /// A platform halt may be released by any sender (section 10).
    pub fn is_platform(&self) -> bool {
        self.scope.target == HaltTarget::Platform
    }

    /// Whether a new agent `agent_id` of `customer_id` and `agent_type` falls in this
    /// halt's scope (an `agent.create` of it is refused `halted`). A team scope names the
    /// team's members when it was engaged: a new agent is in no team yet.
    pub fn covers_new(
        &self,
        agent_id: &str,
        customer_id: &str,
        agent_type: crate::protocol::AgentType,
    ) -> bool {
        let target = match &self.scope.target {
            HaltTarget::AgentIds(ids) => ids.iter().any(|id| id == agent_id),
            HaltTarget::TeamId(_) => self.agent_ids.iter().any(|id| id == agent_id),
            HaltTarget::CustomerId(c) => c == customer_id,
            HaltTarget::Platform => true,
        };
        target && self.scope.admits_type(agent_type)
    }

    /// The record as JSON (RabbitMQ's copy, and the `halts:events` stream).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// What an entry of `halts:events` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltEventKind {
    Engaged,
    Released,
    /// Engaged by the manager itself (a publishing rate over the limit).
    Automatic,
}

impl HaltEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HaltEventKind::Engaged => "engaged",
            HaltEventKind::Released => "released",
            HaltEventKind::Automatic => "automatic",
        }
    }
}

/// One entry of `halts:events`: what happened to which halt, who asked and why.
#[derive(Debug, Clone, PartialEq)]
pub struct HaltEntry<'a> {
    pub kind: HaltEventKind,
    pub halt: &'a HaltRecord,
    /// Who asked and why (the release's own, for a release).
    pub requested_by: &'a str,
    pub reason: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AgentType;

    fn halt(target: HaltTarget, types: Option<Vec<AgentType>>) -> HaltRecord {
        HaltRecord {
            halt_id: "h1".into(),
            customer_id: "c1".into(),
            scope: HaltScope {
                target,
                agent_types: types,
            },
            reason: "r".into(),
            requested_by: "ops".into(),
            engaged_at: Utc::now(),
            agent_ids: vec!["a1".into()],
            automatic: false,
        }
    }

    #[test]
    fn a_new_agent_falls_in_a_scope_by_id_customer_platform_and_type() {
        let t = AgentType::Trading;
        assert!(halt(HaltTarget::AgentIds(vec!["n1".into()]), None).covers_new("n1", "c9", t));
        assert!(!halt(HaltTarget::AgentIds(vec!["n1".into()]), None).covers_new("n2", "c1", t));
        assert!(halt(HaltTarget::CustomerId("c1".into()), None).covers_new("n", "c1", t));
        assert!(!halt(HaltTarget::CustomerId("c1".into()), None).covers_new("n", "c2", t));
        assert!(halt(HaltTarget::Platform, None).covers_new("n", "c2", t));
        assert!(!halt(HaltTarget::TeamId("t".into()), None).covers_new("n", "c1", t));
        let traders = halt(HaltTarget::Platform, Some(vec![AgentType::Trading]));
        assert!(traders.covers_new("n", "c1", AgentType::Trading));
        assert!(!traders.covers_new("n", "c1", AgentType::Analysis));
        let back: HaltRecord = serde_json::from_value(traders.to_json()).unwrap();
        assert_eq!(back, traders);
        assert!(traders.is_platform());
    }
}
