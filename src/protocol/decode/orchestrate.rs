//! `team.orchestrate`: the members (`agent_ids`, 2 to 32 agent ids, no duplicates) and
//! the optional `orchestrator_config` object (section 9).

use serde_json::{Map, Value};

use crate::protocol::command::TeamAction;
use crate::protocol::contract::{
    valid_agent_id, AGENT_ID_RULE, TEAM_MAX_MEMBERS, TEAM_MIN_MEMBERS,
};
use crate::protocol::fields::{optional_object, printable_prefix, FieldError};
use crate::protocol::policy::AgentPolicy;

/// The team described by `obj`.
pub(super) fn parse(
    obj: &Map<String, Value>,
    policy: &AgentPolicy,
) -> Result<TeamAction, FieldError> {
    let ids = match obj.get("agent_ids") {
        Some(Value::Array(ids)) => ids,
        None | Some(Value::Null) => return Err(FieldError::Missing { field: "agent_ids" }),
        Some(other) => {
            return Err(FieldError::wrong_kind(
                "agent_ids",
                "an array of agent ids",
                other,
            ))
        }
    };
    if !(TEAM_MIN_MEMBERS..=TEAM_MAX_MEMBERS).contains(&ids.len()) {
        return Err(FieldError::rule(
            "agent_ids",
            format!(
                "must name {TEAM_MIN_MEMBERS} to {TEAM_MAX_MEMBERS} agents, got {}",
                ids.len()
            ),
        ));
    }
    let mut agent_ids: Vec<String> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let Value::String(id) = id else {
            return Err(FieldError::wrong_kind(
                format!("agent_ids[{i}]"),
                "a string",
                id,
            ));
        };
        if !valid_agent_id(id) {
            return Err(FieldError::rule(
                format!("agent_ids[{i}]"),
                format!("must match {AGENT_ID_RULE}"),
            ));
        }
        if agent_ids.contains(id) {
            return Err(FieldError::rule(
                "agent_ids",
                format!("names agent {} twice", printable_prefix(id, 63)),
            ));
        }
        agent_ids.push(id.clone());
    }
    let orchestrator_config = optional_object(obj, "orchestrator_config", policy)?
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(TeamAction::Orchestrate {
        agent_ids,
        orchestrator_config,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::testing::{decode_any, invalid};
    use crate::protocol::command::{Decoded, TeamAction};

    fn body(agent_ids: Value) -> Value {
        json!({"team_id": "t1", "customer_id": "c", "agent_ids": agent_ids})
    }

    fn ids(n: usize) -> Value {
        json!((0..n).map(|i| format!("a{i}")).collect::<Vec<_>>())
    }

    #[test]
    fn a_team_has_2_to_32_distinct_valid_members() {
        for n in [2, 32] {
            let Ok(Decoded::Team(team)) = decode_any("team.orchestrate", body(ids(n))) else {
                panic!("{n} members are fine")
            };
            let TeamAction::Orchestrate {
                agent_ids,
                orchestrator_config,
            } = team.action
            else {
                panic!("an orchestration")
            };
            assert_eq!(agent_ids.len(), n);
            assert_eq!(agent_ids[0], "a0", "in the order given");
            assert_eq!(orchestrator_config, json!({}), "none given");
        }
        for (bad, names) in [
            (ids(1), "agent_ids"),
            (ids(33), "agent_ids"),
            (json!([]), "agent_ids"),
            (json!("a0,a1"), "agent_ids"),
            (json!(["a0", 5]), "agent_ids[1]"),
            (json!(["a0", "-x"]), "agent_ids[1]"),
            (json!(["a0", "a0"]), "twice"),
            (Value::Null, "agent_ids"),
        ] {
            let e = invalid(decode_any("team.orchestrate", body(bad.clone())));
            assert!(e.message.contains(names), "{bad}: {}", e.message);
            assert_eq!(e.code, crate::protocol::ErrorCode::ValidationFailed);
        }
    }

    #[test]
    fn the_orchestrator_config_is_an_object_within_the_limits() {
        let mut b = body(ids(2));
        b["orchestrator_config"] = json!({"mode": "round_robin"});
        let Ok(Decoded::Team(team)) = decode_any("team.orchestrate", b.clone()) else {
            panic!("a team")
        };
        assert!(matches!(
            team.action,
            TeamAction::Orchestrate { orchestrator_config, .. } if orchestrator_config["mode"] == "round_robin"
        ));
        b["orchestrator_config"] = json!([1]);
        let e = invalid(decode_any("team.orchestrate", b.clone()));
        assert!(e.message.contains("orchestrator_config"), "{}", e.message);
        b["orchestrator_config"] = json!({"blob": "x".repeat(70_000)});
        let e = invalid(decode_any("team.orchestrate", b));
        assert!(e.message.contains("orchestrator_config"), "{}", e.message);
    }
}
