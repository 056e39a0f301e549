//! `agent.delete`: the grace period of the stop before the container and the agent's state
//! are removed (`timeout_s`), bounded by the policy.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::fields::{self, FieldError};
use crate::protocol::policy::AgentPolicy;

/// The delete described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<Action, FieldError> {
    Ok(Action::Delete {
        timeout_s: fields::timeout(obj, policy)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{decode, invalid};
    use crate::protocol::command::Action;

    #[test]
    fn delete_timeouts_are_bounded() {
        let cmd = decode(
            "agent.delete",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": 300}),
        )
        .unwrap();
        assert_eq!(cmd.action, Action::Delete { timeout_s: 300 });
        let cmd = decode("agent.delete", json!({"agent_id": "a", "customer_id": "c"})).unwrap();
        assert_eq!(cmd.action, Action::Delete { timeout_s: 10 });
        let e = invalid(decode(
            "agent.delete",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": 301}),
        ));
        assert!(e.message.contains("timeout_s"), "{}", e.message);
    }
}
