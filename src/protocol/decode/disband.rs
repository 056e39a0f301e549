//! `team.disband`: nothing to read beyond the team id every team command has
//! (section 9).

use serde_json::{Map, Value};

use crate::protocol::command::TeamAction;
use crate::protocol::fields::FieldError;
use crate::protocol::policy::AgentPolicy;

/// The disband described by `_obj`: no fields of its own.
pub(super) fn parse(
    _obj: &Map<String, Value>,
    _policy: &AgentPolicy,
) -> Result<TeamAction, FieldError> {
    Ok(TeamAction::Disband)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::decode_any;
    use crate::protocol::command::{Decoded, TeamAction};

    #[test]
    fn disband_needs_only_the_ids() {
        let decoded = decode_any(
            "team.disband",
            json!({"team_id": "t", "customer_id": "c", "agent_ids": "ignored"}),
        )
        .unwrap();
        let Decoded::Team(team) = decoded else {
            panic!("a team command")
        };
        assert_eq!(team.action, TeamAction::Disband);
    }
}
