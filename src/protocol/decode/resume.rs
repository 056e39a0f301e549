//! `agent.resume`: nothing to read beyond what every command has (section 9).

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::fields::FieldError;
use crate::protocol::policy::AgentPolicy;

/// The resume described by `_obj`: no fields of its own.
pub(super) fn parse(
    _obj: &Map<String, Value>,
    _policy: &AgentPolicy,
) -> Result<Action, FieldError> {
    Ok(Action::Resume)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::decode;
    use crate::protocol::command::Action;
    use crate::protocol::CommandKind;

    #[test]
    fn resume_needs_only_the_ids() {
        let cmd = decode("agent.resume", json!({"agent_id": "a", "customer_id": "c"})).unwrap();
        assert_eq!(
            (cmd.kind, cmd.action),
            (CommandKind::Resume, Action::Resume)
        );
    }
}
