//! [`Keys`]: the name of every Redis key the manager uses, behind the configured prefix
//! (contract section 5 for the ones operators read; the others are the manager's own).
//! The one place that spells a key; the other files of [`crate::store`] only call these.

use crate::credentials::glob_escape;

/// Key names, all behind the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `REDIS_PREFIX`, put in front of every key (empty by default).
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    /// `agent:<agent_id>`: the record (hash).
    pub fn agent(&self, agent_id: &str) -> String {
        format!("{}agent:{agent_id}", self.prefix)
    }
    /// `agent:<agent_id>:events`: the agent's events (stream).
    pub fn events(&self, agent_id: &str) -> String {
        format!("{}agent:{agent_id}:events", self.prefix)
    }
    /// `agents`: every agent id (set).
    pub fn agents(&self) -> String {
        format!("{}agents", self.prefix)
    }
    /// `agent:<agent_id>:data:heartbeat`: the agent's heartbeat, written by the agent
    /// itself with an expiry (string; contract section 8, the format in
    /// [`crate::protocol::heartbeat`]). The manager only reads it.
    pub fn heartbeat(&self, agent_id: &str) -> String {
        format!("{}agent:{agent_id}:data:heartbeat", self.prefix)
    }
    /// A SCAN pattern matching every `agent:<agent_id>:data:*` key: what the agent
    /// itself wrote (contract section 7 lets it write only those; its heartbeat is one).
    pub fn agent_data_pattern(&self, agent_id: &str) -> String {
        format!(
            "{}agent:{}:data:*",
            glob_escape(&self.prefix),
            glob_escape(agent_id)
        )
    }
    /// `customer:<customer_id>:agents`: one customer's agent ids (set).
    pub fn customer_agents(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:agents", self.prefix)
    }
    /// `processed:<message_id>`: events that answered an applied command (string, TTL).
    pub fn processed(&self, message_id: &str) -> String {
        format!("{}processed:{message_id}", self.prefix)
    }
    /// `gpu:allocations`: GPU mode's allocations (hash, field = device id, value = the
    /// agent id holding it).
    pub fn gpu_allocations(&self) -> String {
        format!("{}gpu:allocations", self.prefix)
    }
    /// `outbox`: events waiting for RabbitMQ, oldest first (list of event JSON).
    pub fn outbox(&self) -> String {
        format!("{}outbox", self.prefix)
    }
}

/// Keys of the teams (contract section 9; [`crate::store`]'s `teams.rs`).
impl Keys {
    /// `team:<team_id>`: the team's record (hash).
    pub fn team(&self, team_id: &str) -> String {
        format!("{}team:{team_id}", self.prefix)
    }
    /// `customer:<customer_id>:teams`: one customer's team ids (set).
    pub fn customer_teams(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:teams", self.prefix)
    }
    /// `manager:<instance>:leader` (contract section 12): who leads the installation's
    /// managers, and its term.
    pub fn leader(&self, instance: &str) -> String {
        format!("{}manager:{instance}:leader", self.prefix)
    }

    /// One halt's record (contract section 10).
    pub fn halt(&self, halt_id: &str) -> String {
        format!("{}halt:{halt_id}", self.prefix)
    }

    /// Every engaged halt's id.
    pub fn halts(&self) -> String {
        format!("{}halts", self.prefix)
    }

    /// The audit trail of every engage, release and automatic halt.
    pub fn halt_events(&self) -> String {
        format!("{}halts:events", self.prefix)
    }

    /// `teams`: every team id (set; the manager's own index, as `agents` is for agents),
    /// read by reconciliation at start.
    pub fn teams(&self) -> String {
        format!("{}teams", self.prefix)
    }
}

/// Keys of the per-customer quota accounting ([`crate::quota`]; the scripts are in
/// `src/store/quota.rs`).
impl Keys {
    /// `customer:<customer_id>:usage`: the customer's totals (hash: `agents`,
    /// `memory_mb`, `cpus_milli`, `gpus`).
    pub fn customer_usage(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:usage", self.prefix)
    }
    /// `customer:<customer_id>:reservations`: what each agent of the customer holds
    /// (hash: agent id → `"<memory_mb> <cpus_milli> <gpus>"`).
    pub fn customer_reservations(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:reservations", self.prefix)
    }
    /// A SCAN pattern matching every `customer:*:reservations` key of this prefix.
    pub fn customer_reservations_pattern(&self) -> String {
        format!("{}customer:*:reservations", glob_escape(&self.prefix))
    }
    /// The customer id of a `customer:<customer_id>:reservations` key.
    pub fn customer_of_reservations<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)?
            .strip_prefix("customer:")?
            .strip_suffix(":reservations")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix() {
        let k = Keys::new("t1:");
        assert_eq!(k.agent("a"), "t1:agent:a");
        assert_eq!(k.events("a"), "t1:agent:a:events");
        assert_eq!(k.heartbeat("a"), "t1:agent:a:data:heartbeat");
        assert_eq!(k.agents(), "t1:agents");
        assert_eq!(k.customer_agents("c"), "t1:customer:c:agents");
        assert_eq!(k.gpu_allocations(), "t1:gpu:allocations");
        assert_eq!(k.processed("m"), "t1:processed:m");
        assert_eq!(k.outbox(), "t1:outbox");
        assert_eq!(k.team("x"), "t1:team:x");
        assert_eq!(k.customer_teams("c"), "t1:customer:c:teams");
        assert_eq!(k.teams(), "t1:teams");
        assert_eq!(Keys::new("").agent("a"), "agent:a");
        assert_eq!(k.customer_usage("c"), "t1:customer:c:usage");
        assert_eq!(k.customer_reservations("c"), "t1:customer:c:reservations");
        assert_eq!(
            k.customer_of_reservations("t1:customer:a:b:reservations"),
            Some("a:b")
        );
        assert_eq!(
            Keys::new("p*[x]:").customer_reservations_pattern(),
            "p\\*\\[x\\]:customer:*:reservations"
        );
        assert_eq!(
            Keys::new("p*[x]:").agent_data_pattern("a.1"),
            "p\\*\\[x\\]:agent:a.1:data:*"
        );
    }
}
