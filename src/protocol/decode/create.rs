//! `agent.create`: the agent's type, name, configurations, resources, image and egress
//! list, and whether to start it at once; what the command leaves out comes from the
//! policy.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::contract::{AgentSpec, AgentType};
use crate::protocol::fields::{self, check_name, optional_object, required_string, FieldError};
use crate::protocol::policy::AgentPolicy;

/// The create of `customer_id`'s agent described by `obj`.
pub(super) fn parse(
    obj: &Map<String, Value>,
    customer_id: &str,
    policy: &AgentPolicy,
) -> Result<Action, FieldError> {
    let type_str = required_string(obj, "agent_type")?;
    let agent_type = AgentType::parse(&type_str).ok_or_else(|| {
        FieldError::rule(
            "agent_type",
            format!(
                "must be one of {}",
                AgentType::ALL.map(AgentType::as_str).join(", ")
            ),
        )
    })?;
    let name = required_string(obj, "name")?;
    check_name(&name)?;
    let config = optional_object(obj, "config", policy)?;
    let autogen_config = optional_object(obj, "autogen_config", policy)?;
    let resources = fields::resources(obj, policy)?.apply(policy.default_resources());
    let image = fields::image(obj, policy)?
        .unwrap_or_else(|| policy.default_image(resources.gpus).to_string());
    let auto_start = match obj.get("auto_start") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(FieldError::wrong_kind("auto_start", "a boolean", other)),
    };
    Ok(Action::Create {
        spec: AgentSpec {
            customer_id: customer_id.to_string(),
            agent_type,
            name,
            config: config.unwrap_or_else(|| Value::Object(Map::new())),
            autogen_config: autogen_config.unwrap_or_else(|| Value::Object(Map::new())),
            resources,
            image,
            egress: fields::egress(obj)?.unwrap_or_default(),
        },
        auto_start,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::testing::{create_body, decode, invalid};
    use crate::protocol::command::Action;
    use crate::protocol::contract::ErrorCode;

    #[test]
    fn create_gets_defaults() {
        let cmd = decode("agent.create", create_body()).unwrap();
        assert_eq!(cmd.message_id, "m1");
        let Action::Create { spec, auto_start } = cmd.action else {
            panic!("not a create")
        };
        assert!(auto_start);
        assert_eq!(spec.image, "autogen-agent:latest");
        assert_eq!(spec.resources.memory_mb, 1024);
        assert_eq!(spec.resources.cpus, 1.0);
        assert_eq!(spec.resources.gpus, 0);
        assert_eq!(spec.config, json!({}));
    }

    #[test]
    fn an_egress_list_is_kept_canonical() {
        let mut body = create_body();
        body["egress"] = json!(["API.example-exchange.com:443", "10.20.0.0/16:9878"]);
        let Action::Create { spec, .. } = decode("agent.create", body).unwrap().action else {
            panic!("not a create")
        };
        assert_eq!(
            spec.egress,
            vec!["api.example-exchange.com:443", "10.20.0.0/16:9878"]
        );
        let Action::Create { spec, .. } = decode("agent.create", create_body()).unwrap().action
        else {
            panic!("not a create")
        };
        assert!(spec.egress.is_empty());
    }

    #[test]
    fn missing_and_wrong_fields_name_the_field() {
        let cases = [
            ("customer_id", Value::Null, "customer_id"),
            ("customer_id", json!(5), "customer_id"),
            ("agent_id", json!("-bad"), "agent_id"),
            ("agent_id", json!("a/../b"), "agent_id"),
            ("agent_id", json!("x".repeat(64)), "agent_id"),
            ("agent_type", json!("wizard"), "agent_type"),
            ("agent_type", Value::Null, "agent_type"),
            ("name", json!(""), "name"),
            ("name", json!("x".repeat(129)), "name"),
            ("name", json!("bell\u{7}"), "name"),
            ("config", json!([1]), "config"),
            ("autogen_config", json!("s"), "autogen_config"),
            ("resources", json!({"memory_mb": 1}), "resources.memory_mb"),
            (
                "resources",
                json!({"memory_mb": 1.5}),
                "resources.memory_mb",
            ),
            ("resources", json!({"cpus": 0}), "resources.cpus"),
            ("resources", json!({"cpus": "1"}), "resources.cpus"),
            ("resources", json!({"gpus": -1}), "resources.gpus"),
            ("resources", json!({"memory": 512}), "resources.memory"),
            ("image", json!("evil/miner:latest"), "image"),
            ("auto_start", json!("yes"), "auto_start"),
            ("egress", json!("a.com:443"), "egress"),
            ("egress", json!(["a.com:443", "b.com"]), "egress[1]"),
            ("egress", json!([443]), "egress[0]"),
            ("egress", json!(["10.0.1.0/8:1"]), "host bits"),
            (
                "egress",
                Value::Array((0..65).map(|i| json!(format!("h{i}.com:1"))).collect()),
                "at most 64",
            ),
        ];
        for (field, value, named) in cases {
            let mut body = create_body();
            if value.is_null() {
                body.as_object_mut().unwrap().remove(field);
            } else {
                body[field] = value.clone();
            }
            let e = invalid(decode("agent.create", body));
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{field}={value}");
            assert!(e.message.contains(named), "{field}={value}: {}", e.message);
            assert_eq!(e.command.as_deref(), Some("agent.create"));
            assert_eq!(e.message_id, "m1");
        }
    }

    #[test]
    fn deep_and_large_configs_are_refused() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "a": deep });
        }
        let mut body = create_body();
        body["config"] = deep;
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("nests"));
        let mut body = create_body();
        body["config"] = json!({"blob": "x".repeat(300_000)});
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("bytes"));
    }

    #[test]
    fn unknown_top_level_fields_are_ignored_but_not_inside_resources() {
        let mut body = create_body();
        body["x_future_field"] = json!({"anything": [1, 2]});
        assert!(decode("agent.create", body.clone()).is_ok());
        body["resources"] = json!({"memory_mb": 256, "swap_mb": 0});
        assert!(invalid(decode("agent.create", body))
            .message
            .contains("resources.swap_mb"));
    }

    #[test]
    fn digest_pinned_images_of_allowed_repositories_are_accepted() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let mut body = create_body();
        body["image"] = json!(format!("autogen-agent@{digest}"));
        let Action::Create { spec, .. } = decode("agent.create", body).unwrap().action else {
            panic!()
        };
        assert_eq!(spec.image, format!("autogen-agent@{digest}"));
        for bad in [
            "autogen-agent@sha256:short",
            "AUTOGEN-AGENT:latest",
            "autogen-agent:lat est",
            "autogen-agent:latest\u{0}",
            "autogen-agent:../../etc",
        ] {
            let mut body = create_body();
            body["image"] = json!(bad);
            assert!(
                invalid(decode("agent.create", body))
                    .message
                    .contains("image"),
                "{bad}"
            );
        }
    }
}
