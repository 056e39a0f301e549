//! `halt.release` (section 10): who asks (`requested_by`) and why (`reason`), both
//! required, beside the halt id every halt command has.

use serde_json::{Map, Value};

use super::bounded_text;
use super::halt_engage::REQUESTED_BY_MAX_CHARS;
use crate::protocol::command::HaltAction;
use crate::protocol::contract::HALT_REASON_MAX_CHARS;
use crate::protocol::fields::FieldError;

/// The release described by `obj`.
pub(super) fn parse(obj: &Map<String, Value>) -> Result<HaltAction, FieldError> {
    Ok(HaltAction::Release {
        reason: bounded_text(obj, "reason", HALT_REASON_MAX_CHARS)?,
        requested_by: bounded_text(obj, "requested_by", REQUESTED_BY_MAX_CHARS)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{decode_any, invalid};
    use crate::protocol::command::{Decoded, HaltAction};

    #[test]
    fn a_release_says_who_and_why() {
        let ok = decode_any(
            "halt.release",
            json!({"halt_id": "h1", "customer_id": "c", "reason": "fixed", "requested_by": "ops"}),
        );
        let Ok(Decoded::Halt(h)) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(
            h.action,
            HaltAction::Release {
                reason: "fixed".into(),
                requested_by: "ops".into()
            }
        );
        let e = invalid(decode_any(
            "halt.release",
            json!({"halt_id": "h1", "customer_id": "c", "requested_by": "ops"}),
        ));
        assert!(e.message.contains("reason"), "{}", e.message);
    }
}
