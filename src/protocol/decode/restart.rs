//! `agent.restart`: the grace period of the stop before the new start (`timeout_s`), bounded
//! by the policy.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::fields::{self, FieldError};
use crate::protocol::policy::AgentPolicy;

/// The restart described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<Action, FieldError> {
    Ok(Action::Restart {
        timeout_s: fields::timeout(obj, policy)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{decode, invalid};
    use crate::protocol::command::Action;

    #[test]
    fn restart_timeouts_are_bounded() {
        let cmd = decode(
            "agent.restart",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": 300}),
        )
        .unwrap();
        assert_eq!(cmd.action, Action::Restart { timeout_s: 300 });
        let cmd = decode(
            "agent.restart",
            json!({"agent_id": "a", "customer_id": "c"}),
        )
        .unwrap();
        assert_eq!(cmd.action, Action::Restart { timeout_s: 10 });
        let e = invalid(decode(
            "agent.restart",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": 301}),
        ));
        assert!(e.message.contains("timeout_s"), "{}", e.message);
    }
}
