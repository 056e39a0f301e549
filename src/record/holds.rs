//! Which halts hold which agents (contract section 10), in memory and shared by every
//! actor: the agent actors, self-healing, the credentials audit and reconciliation ask
//! it before they give an agent anything back; only the halt actor changes it. Its
//! truth is kept where the enforcement is (RabbitMQ and Redis, rebuilt from both at
//! start), so it is a view, not the only copy.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use super::halt::HaltRecord;
use crate::protocol::AgentType;

/// The engaged halts and the agents they hold. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Holds(Arc<RwLock<Inner>>);

#[derive(Default)]
struct Inner {
    halts: HashMap<String, HaltRecord>,
    by_agent: HashMap<String, BTreeSet<String>>,
}

impl Inner {
    fn index(&mut self, halt: &HaltRecord) {
        for agent in &halt.agent_ids {
            self.by_agent
                .entry(agent.clone())
                .or_default()
                .insert(halt.halt_id.clone());
        }
    }

    fn unindex(&mut self, halt: &HaltRecord) {
        for agent in &halt.agent_ids {
            if let Some(set) = self.by_agent.get_mut(agent) {
                set.remove(&halt.halt_id);
                if set.is_empty() {
                    self.by_agent.remove(agent);
                }
            }
        }
    }
}

impl Holds {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half written (every
        // write is a few map operations): the data is still good.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `halt` as engaged (replacing an earlier copy of it).
    pub fn engage(&self, halt: &HaltRecord) {
        let mut inner = self.write();
        if let Some(old) = inner.halts.remove(&halt.halt_id) {
            inner.unindex(&old);
        }
        inner.index(halt);
        inner.halts.insert(halt.halt_id.clone(), halt.clone());
    }

    /// Forgets halt `halt_id` (released); the agents only it held are free.
    pub fn release(&self, halt_id: &str) -> Option<HaltRecord> {
        let mut inner = self.write();
        let halt = inner.halts.remove(halt_id)?;
        inner.unindex(&halt);
        Some(halt)
    }

    /// A deleted agent leaves its halts; returns the halts that changed, as they now are.
    pub fn forget_agent(&self, agent_id: &str) -> Vec<HaltRecord> {
        let mut inner = self.write();
        inner.by_agent.remove(agent_id);
        let mut changed = Vec::new();
        for halt in inner.halts.values_mut() {
            let before = halt.agent_ids.len();
            halt.agent_ids.retain(|a| a != agent_id);
            if halt.agent_ids.len() != before {
                changed.push(halt.clone());
            }
        }
        changed
    }

    /// The halts holding `agent_id`, by id.
    pub fn holding(&self, agent_id: &str) -> Vec<String> {
        self.read()
            .by_agent
            .get(agent_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any halt holds `agent_id`.
    pub fn is_held(&self, agent_id: &str) -> bool {
        self.read().by_agent.contains_key(agent_id)
    }

    /// The engaged halt a new agent would fall in (its create is refused `halted`).
    pub fn blocking_create(
        &self,
        agent_id: &str,
        customer_id: &str,
        agent_type: AgentType,
    ) -> Option<String> {
        let inner = self.read();
        let mut ids: Vec<&String> = inner
            .halts
            .values()
            .filter(|h| h.covers_new(agent_id, customer_id, agent_type))
            .map(|h| &h.halt_id)
            .collect();
        ids.sort();
        ids.first().map(|id| id.to_string())
    }

    pub fn halt(&self, halt_id: &str) -> Option<HaltRecord> {
        self.read().halts.get(halt_id).cloned()
    }

    /// Every engaged halt, by id.
    pub fn all(&self) -> Vec<HaltRecord> {
        let mut out: Vec<HaltRecord> = self.read().halts.values().cloned().collect();
        out.sort_by(|a, b| a.halt_id.cmp(&b.halt_id));
        out
    }

    /// How many agents some halt holds.
    pub fn held_agents(&self) -> usize {
        self.read().by_agent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HaltScope, HaltTarget};

    fn halt(id: &str, agents: &[&str], target: HaltTarget) -> HaltRecord {
        HaltRecord {
            halt_id: id.into(),
            customer_id: "c1".into(),
            scope: HaltScope {
                target,
                agent_types: None,
            },
            reason: "r".into(),
            requested_by: "ops".into(),
            engaged_at: chrono::Utc::now(),
            agent_ids: agents.iter().map(|a| a.to_string()).collect(),
            automatic: false,
        }
    }

    #[test]
    fn overlapping_halts_hold_an_agent_until_both_are_released() {
        let holds = Holds::default();
        holds.engage(&halt(
            "h1",
            &["a", "b"],
            HaltTarget::CustomerId("c1".into()),
        ));
        holds.engage(&halt("h2", &["b"], HaltTarget::AgentIds(vec!["b".into()])));
        assert_eq!(holds.holding("b"), vec!["h1", "h2"]);
        assert_eq!(holds.held_agents(), 2);
        holds.release("h1");
        assert!(!holds.is_held("a"));
        assert_eq!(holds.holding("b"), vec!["h2"]);
        assert!(holds.release("h1").is_none(), "released once");
        holds.release("h2");
        assert!(!holds.is_held("b"));
        assert!(holds.all().is_empty());
    }

    #[test]
    fn a_deleted_agent_leaves_its_halts_and_creates_in_scope_are_blocked() {
        let holds = Holds::default();
        holds.engage(&halt("h1", &["a"], HaltTarget::CustomerId("c1".into())));
        assert_eq!(
            holds
                .blocking_create("new", "c1", AgentType::Trading)
                .as_deref(),
            Some("h1")
        );
        assert_eq!(holds.blocking_create("new", "c2", AgentType::Trading), None);
        let changed = holds.forget_agent("a");
        assert_eq!(changed.len(), 1);
        assert!(changed[0].agent_ids.is_empty());
        assert!(!holds.is_held("a"));
        // Engaging again replaces the copy.
        holds.engage(&halt("h1", &["z"], HaltTarget::CustomerId("c1".into())));
        assert_eq!(holds.holding("z"), vec!["h1"]);
        assert_eq!(holds.all().len(), 1);
    }
}
