//! `agent.stop`: the grace period before SIGKILL (`timeout_s`), bounded by the policy.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::fields;
use crate::protocol::policy::AgentPolicy;

/// The stop described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<Action, String> {
    Ok(Action::Stop {
        timeout_s: fields::timeout(obj, policy)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{decode, invalid};
    use crate::protocol::command::Action;

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
}
