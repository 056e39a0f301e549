//! Validators of a command's JSON fields, shared by the decoders of each command kind:
//! required strings, optional objects (size and nesting), names, resources, images and
//! timeouts, and the helpers that make a refusal safe to echo (printable prefixes, the
//! kind of a JSON value). Each refuses with a [`FieldError`] naming the field.

use std::borrow::Cow;

use serde_json::{Map, Value};
use thiserror::Error;

use super::contract::ResourceChanges;
use super::egress::{canonical_list, MAX_EGRESS_ENTRIES};
use super::policy::AgentPolicy;

/// Why a command's field is refused. The decoder answers it `validation_failed`, with
/// this as the message for a person: the field, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(super) enum FieldError {
    /// Absent or null, and required.
    #[error("field '{field}' is required")]
    Missing { field: &'static str },
    /// Another kind of JSON value than the field takes.
    #[error("field '{field}' must be {expected}, got {got}")]
    WrongKind {
        field: Cow<'static, str>,
        /// What it takes: "a string", "an object", "an array of agent ids", ...
        expected: &'static str,
        /// What it was ([`json_kind`]).
        got: &'static str,
    },
    /// The value breaks the field's rule, which `rule` states ("must be 1-128
    /// printable characters").
    #[error("field '{field}' {rule}")]
    Rule {
        field: Cow<'static, str>,
        rule: String,
    },
}

impl FieldError {
    /// `field` holds `got`, not `expected`.
    pub(super) fn wrong_kind(
        field: impl Into<Cow<'static, str>>,
        expected: &'static str,
        got: &Value,
    ) -> FieldError {
        FieldError::WrongKind {
            field: field.into(),
            expected,
            got: json_kind(got),
        }
    }

    /// `field`'s value breaks `rule`.
    pub(super) fn rule(field: impl Into<Cow<'static, str>>, rule: impl Into<String>) -> FieldError {
        FieldError::Rule {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// How a refusal names the kind of a JSON value: "a string", "an array", ...
pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// True when `s` has no control characters.
pub(super) fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A copy of `s` safe to echo back: control characters dropped, at most `max` chars.
pub(super) fn printable_prefix(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The string `field`, which must be present.
pub(super) fn required_string(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<String, FieldError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(FieldError::Missing { field }),
        Some(other) => Err(FieldError::wrong_kind(field, "a string", other)),
    }
}

/// Checks an agent's display name: 1-128 printable characters.
pub(super) fn check_name(name: &str) -> Result<(), FieldError> {
    let len = name.chars().count();
    if len == 0 || len > 128 || !is_printable(name) {
        return Err(FieldError::rule(
            "name",
            "must be 1-128 printable characters",
        ));
    }
    Ok(())
}

/// The object `field` if given, within the policy's size and nesting limits.
pub(super) fn optional_object(
    obj: &Map<String, Value>,
    field: &'static str,
    policy: &AgentPolicy,
) -> Result<Option<Value>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if size > policy.max_config_bytes {
                return Err(FieldError::rule(
                    field,
                    format!(
                        "is {size} bytes, more than the limit of {}",
                        policy.max_config_bytes
                    ),
                ));
            }
            let depth = json_depth(v);
            if depth > policy.max_config_depth {
                return Err(FieldError::rule(
                    field,
                    format!(
                        "nests {depth} levels deep, more than the limit of {}",
                        policy.max_config_depth
                    ),
                ));
            }
            Ok(Some(v.clone()))
        }
        Some(other) => Err(FieldError::wrong_kind(field, "an object", other)),
    }
}

/// How deeply `v` nests arrays and objects (a scalar is 0).
pub(super) fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The largest `resources.max_messages_per_s` a command may set.
pub(super) const MAX_MESSAGES_PER_S_LIMIT: f64 = 1_000_000.0;

/// The changes of the `resources` object if given: only `memory_mb`, `cpus`, `gpus`
/// and `max_messages_per_s` (section 10), each within the policy's bounds.
pub(super) fn resources(
    obj: &Map<String, Value>,
    policy: &AgentPolicy,
) -> Result<ResourceChanges, FieldError> {
    let res = match obj.get("resources") {
        None | Some(Value::Null) => return Ok(ResourceChanges::default()),
        Some(Value::Object(res)) => res,
        Some(other) => return Err(FieldError::wrong_kind("resources", "an object", other)),
    };
    if let Some(unknown) = res.keys().find(|k| {
        !matches!(
            k.as_str(),
            "memory_mb" | "cpus" | "gpus" | "max_messages_per_s"
        )
    }) {
        return Err(FieldError::rule(
            format!("resources.{}", printable_prefix(unknown, 64)),
            "is unknown: expected memory_mb, cpus, gpus, max_messages_per_s",
        ));
    }
    let memory_mb = match res.get("memory_mb") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let field = "resources.memory_mb";
            let mb = v
                .as_u64()
                .ok_or_else(|| FieldError::rule(field, "must be a whole number"))?;
            if mb < policy.min_memory_mb || mb > policy.max_memory_mb {
                return Err(FieldError::rule(
                    field,
                    format!(
                        "must be between {} and {}",
                        policy.min_memory_mb, policy.max_memory_mb
                    ),
                ));
            }
            Some(mb)
        }
    };
    let cpus = match res.get("cpus") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let field = "resources.cpus";
            let cpus = v
                .as_f64()
                .ok_or_else(|| FieldError::rule(field, "must be a number"))?;
            if !(cpus >= policy.min_cpus && cpus <= policy.max_cpus) {
                return Err(FieldError::rule(
                    field,
                    format!(
                        "must be between {} and {}",
                        policy.min_cpus, policy.max_cpus
                    ),
                ));
            }
            Some(cpus)
        }
    };
    let gpus = match res.get("gpus") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let gpus = v
                .as_u64()
                .filter(|g| *g <= u64::from(policy.max_gpus))
                .ok_or_else(|| {
                    FieldError::rule(
                        "resources.gpus",
                        format!("must be a whole number between 0 and {}", policy.max_gpus),
                    )
                })?;
            Some(gpus as u32)
        }
    };
    let max_messages_per_s = match res.get("max_messages_per_s") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|r| *r > 0.0 && *r <= MAX_MESSAGES_PER_S_LIMIT)
                .ok_or_else(|| {
                    FieldError::rule(
                        "resources.max_messages_per_s",
                        format!("must be a number above 0 and at most {MAX_MESSAGES_PER_S_LIMIT}"),
                    )
                })?,
        ),
    };
    Ok(ResourceChanges {
        memory_mb,
        cpus,
        gpus,
        max_messages_per_s,
    })
}

/// The `image` if given, which the policy must allow.
pub(super) fn image(
    obj: &Map<String, Value>,
    policy: &AgentPolicy,
) -> Result<Option<String>, FieldError> {
    match obj.get("image") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(image)) => {
            if policy.image_allowed(image) {
                Ok(Some(image.clone()))
            } else {
                Err(FieldError::rule(
                    "image",
                    format!(
                        "('{}') is not in the allowed images ({})",
                        printable_prefix(image, 200),
                        policy.allowed_images.join(", ")
                    ),
                ))
            }
        }
        Some(other) => Err(FieldError::wrong_kind("image", "a string", other)),
    }
}

/// The `egress` list if given (section 11): at most [`MAX_EGRESS_ENTRIES`] strings,
/// each `host:port`, `*.domain:port` or `CIDR:port`, kept in canonical form.
pub(super) fn egress(obj: &Map<String, Value>) -> Result<Option<Vec<String>>, FieldError> {
    let list = match obj.get("egress") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(FieldError::wrong_kind(
                "egress",
                "an array of strings",
                other,
            ))
        }
    };
    if list.len() > MAX_EGRESS_ENTRIES {
        return Err(FieldError::rule(
            "egress",
            format!(
                "has {} entries; at most {MAX_EGRESS_ENTRIES} are allowed",
                list.len()
            ),
        ));
    }
    let mut texts = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        match value {
            Value::String(s) => texts.push(s.as_str()),
            other => {
                return Err(FieldError::wrong_kind(
                    format!("egress[{i}]"),
                    "a string",
                    other,
                ))
            }
        }
    }
    canonical_list(texts)
        .map(Some)
        .map_err(|(i, rule)| FieldError::rule(format!("egress[{i}]"), rule))
}

/// The `timeout_s` of a stop, restart or delete: the policy's default when not given,
/// else at most the policy's maximum.
pub(super) fn timeout(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<u32, FieldError> {
    match obj.get("timeout_s") {
        None | Some(Value::Null) => Ok(policy.stop_timeout_s),
        Some(v) => v
            .as_u64()
            .filter(|t| *t <= u64::from(policy.max_stop_timeout_s))
            .map(|t| t as u32)
            .ok_or_else(|| {
                FieldError::rule(
                    "timeout_s",
                    format!(
                        "must be a whole number of seconds between 0 and {}",
                        policy.max_stop_timeout_s
                    ),
                )
            }),
    }
}

/// The optional text `field`: at most `max_chars` characters, no control characters.
/// An empty string is as good as none.
pub(super) fn optional_text(
    obj: &Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<Option<String>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max_chars || !is_printable(s) {
                return Err(FieldError::rule(
                    field,
                    format!("must be at most {max_chars} characters without control characters"),
                ));
            }
            Ok(Some(s.clone()))
        }
        Some(other) => Err(FieldError::wrong_kind(field, "a string", other)),
    }
}
