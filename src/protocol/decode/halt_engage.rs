//! `halt.engage` (section 10): the `scope` (one target: `agent_ids`, `team_id`,
//! `customer_id` or `platform: true`, with an optional `agent_types` narrowing), the
//! `reason` (1 to 500 characters) and who asked (`requested_by`). Whether the agents
//! exist and whose they are is decided when the halt is planned, not here.

use serde_json::{Map, Value};

use super::bounded_text;
use crate::protocol::command::{HaltAction, HaltScope, HaltTarget};
use crate::protocol::contract::{
    valid_agent_id, AgentType, AGENT_ID_RULE, HALT_MAX_AGENT_IDS, HALT_REASON_MAX_CHARS,
    TEAM_ID_RULE,
};
use crate::protocol::fields::{json_kind, printable_prefix, FieldError};

/// The most characters of `requested_by` (an operator or system id).
pub(super) const REQUESTED_BY_MAX_CHARS: usize = 128;

/// The halt described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>) -> Result<HaltAction, FieldError> {
    let scope = match obj.get("scope") {
        Some(Value::Object(scope)) => scope,
        None | Some(Value::Null) => return Err(FieldError::rule("scope", "is required")),
        Some(other) => {
            return Err(FieldError::rule(
                "scope",
                format!("must be an object, got {}", json_kind(other)),
            ))
        }
    };
    Ok(HaltAction::Engage {
        scope: parse_scope(scope)?,
        reason: bounded_text(obj, "reason", HALT_REASON_MAX_CHARS)?,
        requested_by: bounded_text(obj, "requested_by", REQUESTED_BY_MAX_CHARS)?,
    })
}

/// A halt's scope as the contract writes it (what [`HaltScope::to_json`] gives).
pub fn scope_from_json(scope: &Value) -> Result<HaltScope, String> {
    match scope {
        Value::Object(obj) => parse_scope(obj).map_err(|e| e.to_string()),
        other => Err(format!(
            "a scope must be an object, got {}",
            json_kind(other)
        )),
    }
}

fn parse_scope(scope: &Map<String, Value>) -> Result<HaltScope, FieldError> {
    let targets: Vec<&str> = ["agent_ids", "team_id", "customer_id", "platform"]
        .into_iter()
        .filter(|k| !matches!(scope.get(*k), None | Some(Value::Null)))
        .collect();
    let target = match targets.as_slice() {
        ["agent_ids"] => HaltTarget::AgentIds(agent_ids(&scope["agent_ids"])?),
        ["team_id"] => match &scope["team_id"] {
            Value::String(id) if valid_agent_id(id) => HaltTarget::TeamId(id.clone()),
            _ => {
                return Err(FieldError::rule(
                    "scope.team_id",
                    format!("must match {TEAM_ID_RULE}"),
                ))
            }
        },
        ["customer_id"] => match &scope["customer_id"] {
            Value::String(id) if !id.is_empty() && id.len() <= 128 => {
                HaltTarget::CustomerId(id.clone())
            }
            _ => {
                return Err(FieldError::rule(
                    "scope.customer_id",
                    "must be 1-128 characters",
                ))
            }
        },
        ["platform"] => match &scope["platform"] {
            Value::Bool(true) => HaltTarget::Platform,
            _ => return Err(FieldError::rule("scope.platform", "must be true")),
        },
        [] => {
            return Err(FieldError::rule(
                "scope",
                "must name one of agent_ids, team_id, customer_id or platform",
            ))
        }
        many => {
            return Err(FieldError::rule(
                "scope",
                format!("must name one target, got {}", many.join(", ")),
            ))
        }
    };
    let agent_types = match scope.get("agent_types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(types)) if !types.is_empty() => Some(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    t.as_str().and_then(AgentType::parse).ok_or_else(|| {
                        FieldError::rule(
                            format!("scope.agent_types[{i}]"),
                            format!(
                                "must be one of {}",
                                AgentType::ALL.map(AgentType::as_str).join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(FieldError::rule(
                "scope.agent_types",
                "must be a non-empty array of agent types",
            ))
        }
    };
    Ok(HaltScope {
        target,
        agent_types,
    })
}

fn agent_ids(value: &Value) -> Result<Vec<String>, FieldError> {
    let Value::Array(ids) = value else {
        return Err(FieldError::rule(
            "scope.agent_ids",
            format!("must be an array of agent ids, got {}", json_kind(value)),
        ));
    };
    if ids.is_empty() || ids.len() > HALT_MAX_AGENT_IDS {
        return Err(FieldError::rule(
            "scope.agent_ids",
            format!(
                "must name 1 to {HALT_MAX_AGENT_IDS} agents, got {}",
                ids.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let Value::String(id) = id else {
            return Err(FieldError::rule(
                format!("scope.agent_ids[{i}]"),
                format!("must be a string, got {}", json_kind(id)),
            ));
        };
        if !valid_agent_id(id) {
            return Err(FieldError::rule(
                format!("scope.agent_ids[{i}]"),
                format!("must match {AGENT_ID_RULE}"),
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(FieldError::rule(
                "scope.agent_ids",
                format!("names agent {} twice", printable_prefix(id, 63)),
            ));
        }
        out.push(id.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::testing::{decode_any, invalid};
    use crate::protocol::command::{Decoded, HaltAction, HaltScope, HaltTarget};
    use crate::protocol::contract::AgentType;

    fn body(scope: Value) -> Value {
        json!({"halt_id": "h1", "customer_id": "c1", "scope": scope,
               "reason": "runaway strategy", "requested_by": "ops-7"})
    }

    fn scope_of(scope: Value) -> HaltScope {
        match decode_any("halt.engage", body(scope)) {
            Ok(Decoded::Halt(h)) => match h.action {
                HaltAction::Engage { scope, .. } => scope,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_scope_target_decodes_and_types_narrow_it() {
        assert_eq!(
            scope_of(json!({"agent_ids": ["a1", "a2"]})).target,
            HaltTarget::AgentIds(vec!["a1".into(), "a2".into()])
        );
        assert_eq!(
            scope_of(json!({"team_id": "t1"})).target,
            HaltTarget::TeamId("t1".into())
        );
        assert_eq!(
            scope_of(json!({"customer_id": "c1"})).target,
            HaltTarget::CustomerId("c1".into())
        );
        let platform = scope_of(json!({"platform": true, "agent_types": ["trading"]}));
        assert_eq!(platform.target, HaltTarget::Platform);
        assert_eq!(platform.agent_types, Some(vec![AgentType::Trading]));
        assert!(platform.admits_type(AgentType::Trading));
        assert!(!platform.admits_type(AgentType::Analysis));
        assert_eq!(
            platform.to_json(),
            json!({"platform": true, "agent_types": ["trading"]})
        );
    }

    #[test]
    fn a_scope_names_exactly_one_valid_target_and_the_texts_are_bounded() {
        for (scope, says) in [
            (json!({}), "must name one of"),
            (json!({"platform": true, "team_id": "t"}), "one target"),
            (json!({"platform": false}), "must be true"),
            (json!({"agent_ids": []}), "1 to"),
            (json!({"agent_ids": ["a", "a"]}), "twice"),
            (json!({"agent_ids": ["bad id"]}), "must match"),
            (json!({"team_id": 5}), "must match"),
            (
                json!({"platform": true, "agent_types": ["robot"]}),
                "must be one of",
            ),
            (json!({"platform": true, "agent_types": []}), "non-empty"),
        ] {
            let e = invalid(decode_any("halt.engage", body(scope.clone())));
            assert!(e.message.contains(says), "{scope}: {}", e.message);
            assert_eq!(e.halt_id.as_deref(), Some("h1"));
            assert_eq!(e.command.as_deref(), Some("halt.engage"));
        }
        let mut b = body(json!({"platform": true}));
        b["reason"] = json!("x".repeat(501));
        assert!(invalid(decode_any("halt.engage", b))
            .message
            .contains("reason"));
        let mut b = body(json!({"platform": true}));
        b.as_object_mut().unwrap().remove("requested_by");
        assert!(invalid(decode_any("halt.engage", b))
            .message
            .contains("requested_by"));
        let mut b = body(json!({"platform": true}));
        b["halt_id"] = json!("no spaces");
        assert!(invalid(decode_any("halt.engage", b))
            .message
            .contains("halt_id"));
    }
}
