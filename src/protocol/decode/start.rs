//! `agent.start`: nothing to read beyond what every command has.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::fields::FieldError;
use crate::protocol::policy::AgentPolicy;

/// The start described by `_obj`: no fields of its own.
pub(super) fn parse(
    _obj: &Map<String, Value>,
    _policy: &AgentPolicy,
) -> Result<Action, FieldError> {
    Ok(Action::Start)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::decode;
    use crate::protocol::command::Action;

    #[test]
    fn start_needs_only_the_ids() {
        let cmd = decode(
            "agent.start",
            json!({"agent_id": "a", "customer_id": "c", "timeout_s": "ignored"}),
        )
        .unwrap();
        assert_eq!(cmd.action, Action::Start);
    }
}
