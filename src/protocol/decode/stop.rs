//! `agent.stop`: the grace period before SIGKILL (`timeout_s`, bounded by the policy),
//! and section 9's `force` (kill at once), `reason` (at most 500 characters) and
//! `requested_by` (who asked). The texts are checked like every other field (no control
//! characters) and have their secrets redacted before anything keeps or sends them.

use serde_json::{Map, Value};

use crate::protocol::command::Action;
use crate::protocol::contract::{StopOrder, STOP_REASON_MAX_CHARS};
use crate::protocol::fields::{self, optional_text, FieldError};
use crate::protocol::policy::AgentPolicy;
use crate::redact;

/// Longest `requested_by`, in characters (as a customer id).
const REQUESTED_BY_MAX_CHARS: usize = 128;

/// The stop described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>, policy: &AgentPolicy) -> Result<Action, FieldError> {
    let force = match obj.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(force)) => *force,
        Some(other) => return Err(FieldError::wrong_kind("force", "a boolean", other)),
    };
    let timeout_s = fields::timeout(obj, policy)?;
    let reason = optional_text(obj, "reason", STOP_REASON_MAX_CHARS)?;
    let requested_by = optional_text(obj, "requested_by", REQUESTED_BY_MAX_CHARS)?;
    Ok(Action::Stop(StopOrder {
        // Forced: no grace period, whatever `timeout_s` says.
        timeout_s: if force { 0 } else { timeout_s },
        force,
        reason: reason.map(|r| redact::line(&r)),
        requested_by: requested_by.map(|r| redact::line(&r)),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{decode, invalid};
    use crate::protocol::command::Action;
    use crate::protocol::StopOrder;

    fn stop(extra: serde_json::Value) -> serde_json::Value {
        let mut body = json!({"agent_id": "a", "customer_id": "c"});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        body
    }

    #[test]
    fn timeouts_are_bounded() {
        let cmd = decode("agent.stop", stop(json!({"timeout_s": 3}))).unwrap();
        assert_eq!(cmd.action, Action::Stop(StopOrder::graceful(3)));
        let cmd = decode("agent.stop", stop(json!({}))).unwrap();
        assert_eq!(cmd.action, Action::Stop(StopOrder::graceful(10)));
        let e = invalid(decode("agent.stop", stop(json!({"timeout_s": -1}))));
        assert!(e.message.contains("timeout_s"));
    }

    #[test]
    fn a_forced_stop_has_no_grace_and_says_why_and_who() {
        let cmd = decode(
            "agent.stop",
            stop(
                json!({"force": true, "timeout_s": 30, "reason": "runaway trading loop",
                        "requested_by": "ops-alice"}),
            ),
        )
        .unwrap();
        assert_eq!(
            cmd.action,
            Action::Stop(StopOrder {
                timeout_s: 0,
                force: true,
                reason: Some("runaway trading loop".into()),
                requested_by: Some("ops-alice".into()),
            })
        );
        // Empty texts are as good as absent.
        let cmd = decode("agent.stop", stop(json!({"reason": "", "force": false}))).unwrap();
        assert_eq!(cmd.action, Action::Stop(StopOrder::graceful(10)));
    }

    #[test]
    fn reasons_are_checked_and_their_secrets_redacted() {
        let long = "é".repeat(501);
        for (bad, field) in [
            (json!({"force": "yes"}), "force"),
            (json!({"reason": long}), "reason"),
            (json!({"reason": "a\nb"}), "reason"),
            (json!({"reason": "bell\u{7}"}), "reason"),
            (json!({"reason": 5}), "reason"),
            (json!({"requested_by": "x".repeat(129)}), "requested_by"),
            (json!({"requested_by": "tab\there"}), "requested_by"),
            (json!({"requested_by": ["ops"]}), "requested_by"),
        ] {
            let e = invalid(decode("agent.stop", stop(bad.clone())));
            assert!(e.message.contains(field), "{bad}: {}", e.message);
        }
        // 500 characters (1000 bytes) is the limit, counted in characters.
        let cmd = decode("agent.stop", stop(json!({"reason": "é".repeat(500)}))).unwrap();
        assert!(
            matches!(cmd.action, Action::Stop(StopOrder { reason: Some(r), .. }) if r.chars().count() == 500)
        );
        let cmd = decode(
            "agent.stop",
            stop(
                json!({"reason": "leaked password=hunter2 and amqp://u:s3cret@h/",
                        "requested_by": "token=abc123"}),
            ),
        )
        .unwrap();
        let Action::Stop(order) = cmd.action else {
            panic!("a stop")
        };
        let reason = order.reason.unwrap_or_default();
        assert!(
            !reason.contains("hunter2") && !reason.contains("s3cret"),
            "{reason}"
        );
        assert!(reason.contains("password=***"), "{reason}");
        assert_eq!(order.requested_by.as_deref(), Some("token=***"));
    }
}
