//! `agent.update`: the changes to an agent's name, configurations, resources, image and
//! egress list, each optional.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::contract::SpecPatch;
use crate::protocol::fields::{self, check_name, optional_object, FieldError};
use crate::protocol::policy::AgentPolicy;

/// The update described by `obj`: only the fields it gives change.
pub(super) fn parse(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<Action, FieldError> {
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => {
            check_name(n)?;
            Some(n.clone())
        }
        Some(other) => return Err(FieldError::wrong_kind("name", "a string", other)),
    };
    let resources = fields::resources(obj, policy)?;
    Ok(Action::Update {
        patch: SpecPatch {
            name,
            config: optional_object(obj, "config", policy)?,
            autogen_config: optional_object(obj, "autogen_config", policy)?,
            resources,
            image: fields::image(obj, policy)?,
            egress: fields::egress(obj)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{create_body, decode};
    use crate::protocol::command::Action;

    #[test]
    fn update_patch_applies_only_given_fields() {
        let Action::Create { spec, .. } = decode("agent.create", create_body()).unwrap().action
        else {
            panic!()
        };
        let cmd = decode(
            "agent.update",
            json!({"agent_id": "a1", "customer_id": "c1", "resources": {"memory_mb": 256}}),
        )
        .unwrap();
        let Action::Update { patch } = cmd.action else {
            panic!()
        };
        let next = patch.apply(&spec);
        assert_eq!(next.resources.memory_mb, 256);
        assert_eq!(next.resources.cpus, spec.resources.cpus);
        assert_eq!(next.name, spec.name);
        assert_eq!(next.egress, spec.egress);
    }

    #[test]
    fn an_update_replaces_the_egress_list() {
        let Action::Create { spec, .. } = decode("agent.create", create_body()).unwrap().action
        else {
            panic!()
        };
        let cmd = decode(
            "agent.update",
            json!({"agent_id": "a1", "customer_id": "c1", "egress": ["*.Example.com:*"]}),
        )
        .unwrap();
        let Action::Update { patch } = cmd.action else {
            panic!()
        };
        assert_eq!(patch.apply(&spec).egress, vec!["*.example.com:*"]);
        let cleared = decode(
            "agent.update",
            json!({"agent_id": "a1", "customer_id": "c1", "egress": []}),
        )
        .unwrap();
        let Action::Update { patch } = cleared.action else {
            panic!()
        };
        assert_eq!(patch.egress, Some(vec![]));
    }
}
