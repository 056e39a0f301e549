//! The agent's heartbeat (contract section 8): the JSON an agent writes to
//! `agent:<agent_id>:data:heartbeat` (the key's name is in `store::Keys`), with an expiry
//! of [`TTL_INTERVALS`] times `HEARTBEAT_INTERVAL_S`.
//!
//! `{"ts": <unix ms>, "status": "ok" | "unhealthy", "detail": "<text>"}`
//!
//! An image may promise heartbeats with the label [`PROMISE_LABEL`]`=true` (the
//! reference image does): its agents are `starting` until their first heartbeat, and
//! unhealthy when none came within the start period (see `health`).

use std::collections::HashMap;

use serde::Deserialize;

/// The image label (Docker merges it into each container's labels) that says the
/// image's agents write the heartbeat: `autogen.heartbeat=true`.
pub const PROMISE_LABEL: &str = "autogen.heartbeat";

/// Whether a container's labels promise heartbeats ([`PROMISE_LABEL`] is `true`, in any
/// case; anything else, or no label, promises nothing).
pub fn promised_by(labels: &HashMap<String, String>) -> bool {
    labels
        .get(PROMISE_LABEL)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The key's expiry, in heartbeat intervals: a hung agent's key is gone this long after
/// its last write.
pub const TTL_INTERVALS: u64 = 3;

/// Longest `detail` kept (the rest is cut): it travels in records and events.
pub const MAX_DETAIL_CHARS: usize = 500;

/// What the agent says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatStatus {
    Ok,
    Unhealthy,
}

impl BeatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BeatStatus::Ok => "ok",
            BeatStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One heartbeat, as written by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// When the agent wrote it, Unix time in ms (the agent's clock).
    pub ts_ms: i64,
    pub status: BeatStatus,
    /// The agent's own words (empty when it gave none), at most [`MAX_DETAIL_CHARS`].
    pub detail: String,
}

#[derive(Deserialize)]
struct Wire {
    ts: serde_json::Number,
    status: String,
    #[serde(default)]
    detail: Option<String>,
}

/// Why a heartbeat does not read; the message says, for people, what is wrong with it
/// (the agent's health says it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// Not JSON, or not the contract's object (serde_json's words).
    #[error("the heartbeat is not the contract's JSON object: {0}")]
    NotTheObject(String),
    #[error("the heartbeat's ts {0} is not a Unix time in ms")]
    NotAUnixTime(serde_json::Number),
    /// Its status (at most 40 characters of it) is neither `ok` nor `unhealthy`.
    #[error("the heartbeat's status '{0}' is neither ok nor unhealthy")]
    UnknownStatus(String),
}

/// Reads a heartbeat's JSON.
pub fn parse(raw: &str) -> Result<Heartbeat, HeartbeatError> {
    let wire: Wire =
        serde_json::from_str(raw).map_err(|e| HeartbeatError::NotTheObject(e.to_string()))?;
    let ts_ms = wire
        .ts
        .as_i64()
        .or_else(|| wire.ts.as_f64().map(|f| f as i64))
        .filter(|t| *t >= 0)
        .ok_or_else(|| HeartbeatError::NotAUnixTime(wire.ts.clone()))?;
    let status = match wire.status.as_str() {
        "ok" => BeatStatus::Ok,
        "unhealthy" => BeatStatus::Unhealthy,
        other => {
            return Err(HeartbeatError::UnknownStatus(
                other.chars().take(40).collect(),
            ))
        }
    };
    let detail = wire
        .detail
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL_CHARS)
        .collect();
    Ok(Heartbeat {
        ts_ms,
        status,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_heartbeat_reads() {
        let hb = parse(r#"{"ts": 1700000000123, "status": "ok", "detail": ""}"#).unwrap();
        assert_eq!(hb.ts_ms, 1_700_000_000_123);
        assert_eq!(hb.status, BeatStatus::Ok);
        assert_eq!(hb.detail, "");
        let sick = parse(r#"{"ts":1,"status":"unhealthy","detail":"db down\n","more":1}"#).unwrap();
        assert_eq!(sick.status, BeatStatus::Unhealthy);
        assert_eq!(sick.detail, "db down", "control characters dropped");
        let no_detail = parse(r#"{"ts": 5.0, "status": "ok"}"#).unwrap();
        assert_eq!((no_detail.ts_ms, no_detail.detail.as_str()), (5, ""));
    }

    #[test]
    fn only_the_label_set_to_true_promises_heartbeats() {
        let labels = |v: &str| HashMap::from([(PROMISE_LABEL.to_string(), v.to_string())]);
        assert!(promised_by(&labels("true")));
        assert!(promised_by(&labels("TRUE")));
        for no in ["false", "", "1", "yes please"] {
            assert!(!promised_by(&labels(no)), "{no:?}");
        }
        assert!(!promised_by(&HashMap::new()));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for (raw, says) in [
            ("nope", "not the contract's JSON"),
            (r#"{"status": "ok"}"#, "not the contract's JSON"),
            (r#"{"ts": -1, "status": "ok"}"#, "not a Unix time"),
            (r#"{"ts": 1, "status": "fine"}"#, "neither ok nor unhealthy"),
        ] {
            let e = parse(raw).unwrap_err().to_string();
            assert!(e.contains(says), "{raw}: {e}");
        }
        let long = format!(
            r#"{{"ts": 1, "status": "ok", "detail": "{}"}}"#,
            "x".repeat(900)
        );
        assert_eq!(parse(&long).unwrap().detail.len(), MAX_DETAIL_CHARS);
    }
}
