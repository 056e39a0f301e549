//! The status page's data, as JSON for its script (`src/admin/page/`): every agent
//! (filtered by customer and status) with the manager's readiness, the engaged halts
//! ([`halt_rows`]) and each customer's agents counted ([`customer_rows`], for the halt
//! buttons' confirmations), and one agent's last hour of CPU and memory
//! ([`metrics::history`]) and its recent events.
//!
//! **Never a secret.** An agent is shown by what an operator's `agents list` shows:
//! ids, type, name, status, health, restarts, image, usage, resources and its last error
//! (redacted). Never its `config`, `autogen_config`, environment or logins. Events are
//! shown by their name, time and status and a few whitelisted scalar `details`
//! ([`EVENT_DETAILS`], redacted), never their whole `details`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cli::halt::scope_text;
use crate::error::StoreError;
use crate::metrics::history;
use crate::protocol::{rfc3339, AgentStatus, HaltTarget};
use crate::record::halt::HaltRecord;
use crate::record::AgentRecord;
use crate::redact;
use crate::store::StreamEntry;

/// Events shown for one agent.
pub const EVENTS_SHOWN: usize = 20;

/// The `details` fields an event is summed up by (scalars only).
pub const EVENT_DETAILS: &[&str] = &[
    "code",
    "message",
    "health",
    "state",
    "exit_code",
    "exit_class",
    "oom_killed",
    "reason",
    "automatic",
    "requested_by",
    "resumed",
];

/// Longest text shown of one value.
const MAX_TEXT: usize = 300;

/// One agent as the page lists it.
#[derive(Debug, Serialize, PartialEq)]
pub struct AgentRow {
    pub agent_id: String,
    pub customer_id: String,
    pub agent_type: String,
    pub name: String,
    pub status: String,
    pub health: String,
    pub restarts: u64,
    pub image: String,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// The agent's memory limit (its `resources.memory_mb`), bytes.
    pub memory_limit_bytes: u64,
    pub cpus: f64,
    pub container_id: Option<String>,
    /// Why the agent is not as asked (redacted).
    pub last_error: Option<String>,
    pub updated_at: String,
    /// The halts holding the agent (status `halted` while not empty), oldest first.
    pub halt_ids: Vec<String>,
    /// Who engaged the halt that last took it out, and why (redacted), and when.
    pub halted_by: Option<String>,
    pub halt_reason: Option<String>,
    pub halted_at: Option<String>,
}

/// One engaged halt as the page lists it.
#[derive(Debug, Serialize, PartialEq)]
pub struct HaltRow {
    pub halt_id: String,
    /// The customer that engaged it (who may release it, unless it is the platform's).
    pub customer_id: String,
    /// The scope for people (`agents a1, a2`, `customer c1`, `platform [trading]`).
    pub scope: String,
    /// The scope as the contract writes it.
    pub scope_json: Value,
    /// A platform halt (any sender may release it).
    pub platform: bool,
    pub reason: String,
    pub requested_by: String,
    pub engaged_at: String,
    /// How many agents it holds, and which.
    pub agents: usize,
    pub agent_ids: Vec<String>,
    /// Engaged by the manager itself (a publishing rate over the limit).
    pub automatic: bool,
}

/// Agents counted: all, halted, and by type (what a halt of them would take out).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    pub agents: usize,
    pub halted: usize,
    pub by_type: BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, r: &AgentRecord) {
        self.agents += 1;
        if r.status() == AgentStatus::Halted {
            self.halted += 1;
        }
        *self
            .by_type
            .entry(r.spec.agent_type.as_str().to_string())
            .or_default() += 1;
    }
}

/// One customer's agents, counted (every agent, whatever the filter).
#[derive(Debug, Serialize, PartialEq)]
pub struct CustomerRow {
    pub customer_id: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// What the page filters the list by (the query string of `/api/agents`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filter {
    /// Only this customer's agents; empty: all.
    #[serde(default)]
    pub customer: String,
    /// Only agents in this status; empty: all.
    #[serde(default)]
    pub status: String,
}

/// The `/api/agents` answer.
#[derive(Debug, Serialize)]
pub struct AgentList {
    /// The agents the filter lets through, by id.
    pub agents: Vec<AgentRow>,
    /// Every customer with an agent (for the filter's choices), sorted.
    pub customers: Vec<String>,
    /// Every status (for the filter's choices).
    pub statuses: Vec<&'static str>,
    /// Every customer's agents counted, by customer id.
    pub customer_rows: Vec<CustomerRow>,
    /// Every agent of the installation counted (a platform halt's reach).
    pub platform: Counts,
    /// The engaged halts, oldest first.
    pub halts: Vec<HaltRow>,
    /// The halts could not be read: why.
    pub halts_error: Option<String>,
    /// Writes (halt, release) are possible: `ADMIN_TOKEN` is configured.
    pub writes: bool,
    /// Agents in all, before filtering.
    pub total: usize,
    /// `/readyz`'s answer.
    pub ready: bool,
    /// `/readyz`'s checks, with this manager's `role` and `term` (contract section 12).
    pub checks: Value,
    /// Who leads the installation (`manager:<instance>:leader`: `id`, `host`, `pid`,
    /// `term`, `since`), when a manager ever did.
    pub leader: Option<LeaderRow>,
    /// The records could not be read (Redis away): why, for the page.
    pub error: Option<String>,
    pub now: String,
}

/// The installation's leader as the page shows it (contract section 12).
#[derive(Debug, Serialize, PartialEq)]
pub struct LeaderRow {
    pub id: String,
    pub host: String,
    pub term: u64,
    pub since: String,
    /// The lease is live (not released, not run out): someone leads now.
    pub live: bool,
}

/// The leader hash, read for the page; `None` when no manager ever led.
pub fn leader_row(
    hash: &std::collections::HashMap<String, String>,
    now_ms: u64,
) -> Option<LeaderRow> {
    let field = |k: &str| hash.get(k).cloned().unwrap_or_default();
    let id = hash.get("id")?.clone();
    let expires = hash
        .get("expires_ms")
        .and_then(|e| e.parse::<u64>().ok())
        .unwrap_or(0);
    Some(LeaderRow {
        id,
        host: field("host"),
        term: field("term").parse().unwrap_or(0),
        since: field("since"),
        live: expires > now_ms,
    })
}

/// One event as the page shows it.
#[derive(Debug, Serialize, PartialEq)]
pub struct EventRow {
    pub event: String,
    pub timestamp: String,
    pub status: String,
    /// Whitelisted `details` fields, `key=value`, redacted.
    pub summary: String,
}

/// The `/api/agents/{id}` answer.
#[derive(Debug, Serialize)]
pub struct AgentDetail {
    pub agent: AgentRow,
    /// `[unix seconds, cpu %, memory bytes]`, oldest first, over the last hour.
    pub points: Vec<(u32, f32, u64)>,
    pub window_s: u32,
    /// The last [`EVENTS_SHOWN`] events, newest first.
    pub events: Vec<EventRow>,
    /// The events could not be read: why.
    pub events_error: Option<String>,
}

fn cut(text: &str) -> String {
    let red = redact::line(text);
    match red.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}…", &red[..i]),
        None => red,
    }
}

/// The row of `r`.
pub fn row(r: &AgentRecord) -> AgentRow {
    AgentRow {
        agent_id: r.agent_id.clone(),
        customer_id: r.spec.customer_id.clone(),
        agent_type: r.spec.agent_type.as_str().into(),
        name: cut(&r.spec.name),
        status: r.status().as_str().into(),
        health: r.health.clone(),
        restarts: r.restart_count,
        image: r.spec.image.clone(),
        cpu_percent: r.cpu_percent,
        memory_bytes: r.memory_bytes,
        memory_limit_bytes: r.spec.resources.memory_mb.saturating_mul(1024 * 1024),
        cpus: r.spec.resources.cpus,
        container_id: r.workload_id.clone(),
        last_error: r.last_error.as_deref().map(cut),
        updated_at: r.updated_at.to_rfc3339(),
        halt_ids: r.halt_ids.clone(),
        halted_by: r.halted_by.as_deref().map(cut),
        halt_reason: r.halt_reason.as_deref().map(cut),
        halted_at: r.halted_at.map(rfc3339),
    }
}

/// The engaged halts as the page lists them, oldest first.
pub fn halt_rows(halts: &[HaltRecord]) -> Vec<HaltRow> {
    let mut sorted: Vec<&HaltRecord> = halts.iter().collect();
    sorted.sort_by(|a, b| (a.engaged_at, &a.halt_id).cmp(&(b.engaged_at, &b.halt_id)));
    sorted
        .into_iter()
        .map(|h| HaltRow {
            halt_id: h.halt_id.clone(),
            customer_id: h.customer_id.clone(),
            scope: cut(&scope_text(&h.scope)),
            scope_json: h.scope.to_json(),
            platform: h.scope.target == HaltTarget::Platform,
            reason: cut(&h.reason),
            requested_by: cut(&h.requested_by),
            engaged_at: rfc3339(h.engaged_at),
            agents: h.agent_ids.len(),
            agent_ids: h.agent_ids.clone(),
            automatic: h.automatic,
        })
        .collect()
}

/// Every customer's agents counted (by customer id), and the whole installation's.
pub fn customer_rows(records: &[AgentRecord]) -> (Vec<CustomerRow>, Counts) {
    let mut by_customer: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut platform = Counts::default();
    for r in records {
        by_customer
            .entry(r.spec.customer_id.as_str())
            .or_default()
            .add(r);
        platform.add(r);
    }
    let rows = by_customer
        .into_iter()
        .map(|(c, counts)| CustomerRow {
            customer_id: c.to_string(),
            counts,
        })
        .collect();
    (rows, platform)
}

/// The list the page shows: `records` through `filter`, sorted by id.
pub fn list(records: &[AgentRecord], filter: &Filter) -> (Vec<AgentRow>, Vec<String>) {
    let mut customers: Vec<String> = records.iter().map(|r| r.spec.customer_id.clone()).collect();
    customers.sort();
    customers.dedup();
    let mut rows: Vec<AgentRow> = records
        .iter()
        .filter(|r| filter.customer.is_empty() || r.spec.customer_id == filter.customer)
        .filter(|r| filter.status.is_empty() || r.status().as_str() == filter.status)
        .map(row)
        .collect();
    rows.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    (rows, customers)
}

/// Every status name.
pub fn statuses() -> Vec<&'static str> {
    AgentStatus::ALL.iter().map(|s| s.as_str()).collect()
}

/// One event of the stream as the page shows it; `None` when its data is not JSON.
pub fn event_row(e: &StreamEntry) -> Option<EventRow> {
    let v: Value = serde_json::from_str(&e.data).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut summary = Vec::new();
    if let Some(details) = v.get("details").and_then(Value::as_object) {
        for key in EVENT_DETAILS {
            let shown = match details.get(*key) {
                Some(Value::String(s)) if !s.is_empty() => cut(s),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            summary.push(format!("{key}={shown}"));
        }
    }
    Some(EventRow {
        event: if e.event.is_empty() {
            text("event")
        } else {
            e.event.clone()
        },
        timestamp: text("timestamp"),
        status: text("status"),
        summary: summary.join(" "),
    })
}

/// The agent's page: its row, its last hour, its events (newest first).
pub fn detail(r: &AgentRecord, events: Result<Vec<StreamEntry>, StoreError>) -> AgentDetail {
    let points = history::of(&r.agent_id)
        .into_iter()
        .map(|p| (p.at_s, p.cpu_percent, u64::from(p.memory_kib) * 1024))
        .collect();
    let (events, events_error) = match events {
        Ok(entries) => (entries.iter().rev().filter_map(event_row).collect(), None),
        Err(e) => (Vec::new(), Some(format!("events not read from Redis: {e}"))),
    };
    AgentDetail {
        agent: row(r),
        points,
        window_s: history::WINDOW_S,
        events,
        events_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_summed_up_by_whitelisted_scalars_only_and_redacted() {
        let data = serde_json::json!({
            "event": "agent.error",
            "timestamp": "2026-01-01T00:00:00Z",
            "status": "failed",
            "details": {
                "code": "docker_error",
                "message": "pull from redis://user:hunter2@redis:6379/0 failed",
                "config": {"api_key": "sk-secret"},
                "autogen_config": "sk-other-secret",
                "exit_code": 137,
            }
        });
        let e = StreamEntry {
            id: "1-0".into(),
            event: "agent.error".into(),
            event_id: "e".into(),
            data: data.to_string(),
        };
        let row = event_row(&e).expect("a row");
        assert_eq!(row.event, "agent.error");
        assert_eq!(row.status, "failed");
        assert!(
            row.summary.starts_with("code=docker_error message="),
            "{row:?}"
        );
        assert!(row.summary.contains("exit_code=137"), "{row:?}");
        assert!(!row.summary.contains("hunter2"), "{row:?}");
        assert!(!row.summary.contains("secret"), "{row:?}");
    }

    fn agent(
        id: &str,
        customer: &str,
        kind: crate::protocol::AgentType,
        halt: Option<&str>,
    ) -> AgentRecord {
        use crate::record::status::{transition, Cause};
        let mut spec = crate::protocol::sample_spec();
        spec.customer_id = customer.into();
        spec.agent_type = kind;
        let mut r = AgentRecord::new(id, spec, crate::protocol::DesiredState::Running);
        transition(&mut r, Cause::Started);
        if let Some(h) = halt {
            r.halt_ids.push(h.into());
            r.halted_by = Some("ops".into());
            r.halt_reason = Some("leaked api_key=sk-leaked-123456789".into());
            transition(&mut r, Cause::Halted);
        }
        r
    }

    #[test]
    fn customers_and_the_platform_are_counted_by_status_and_type_and_a_row_names_its_halts() {
        use crate::protocol::AgentType::{Analysis, Trading};
        let records = vec![
            agent("a1", "c1", Trading, Some("h1")),
            agent("a2", "c1", Analysis, None),
            agent("b1", "c2", Trading, None),
        ];
        let (rows, platform) = customer_rows(&records);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].customer_id, "c1");
        assert_eq!((rows[0].counts.agents, rows[0].counts.halted), (2, 1));
        assert_eq!(rows[0].counts.by_type.get("trading"), Some(&1));
        assert_eq!((platform.agents, platform.halted), (3, 1));
        assert_eq!(platform.by_type.get("trading"), Some(&2));
        let json = serde_json::to_value(&rows[1]).expect("JSON");
        assert_eq!(json["customer_id"], "c2");
        assert_eq!(json["agents"], 1, "counts flattened: {json}");
        let held = row(&records[0]);
        assert_eq!(held.status, "halted");
        assert_eq!(held.halt_ids, vec!["h1".to_string()]);
        assert_eq!(held.halted_by.as_deref(), Some("ops"));
        assert!(
            held.halt_reason
                .as_deref()
                .is_some_and(|r| !r.contains("sk-leaked")),
            "redacted: {held:?}"
        );
        assert!(row(&records[1]).halt_ids.is_empty());
    }

    #[test]
    fn halts_are_listed_oldest_first_with_their_scope_for_people() {
        use crate::protocol::{HaltScope, HaltTarget};
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).expect("a time");
        let halt = |id: &str, target: HaltTarget, when: i64, automatic: bool| HaltRecord {
            halt_id: id.into(),
            customer_id: "c1".into(),
            scope: HaltScope {
                target,
                agent_types: None,
            },
            reason: "why".into(),
            requested_by: "status-page".into(),
            engaged_at: at(when),
            agent_ids: vec!["a1".into(), "a2".into()],
            automatic,
        };
        let rows = halt_rows(&[
            halt("late", HaltTarget::Platform, 200, false),
            halt("early", HaltTarget::AgentIds(vec!["a1".into()]), 100, true),
        ]);
        assert_eq!(rows[0].halt_id, "early");
        assert_eq!(rows[0].scope, "agents a1");
        assert!(rows[0].automatic && !rows[0].platform);
        assert_eq!(rows[1].scope, "platform");
        assert!(rows[1].platform);
        assert_eq!(rows[1].agents, 2);
        assert_eq!(rows[1].scope_json, serde_json::json!({"platform": true}));
        assert_eq!(rows[1].engaged_at, "1970-01-01T00:03:20.000Z");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(MAX_TEXT + 50);
        let shown = cut(&long);
        assert_eq!(shown.chars().count(), MAX_TEXT + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn the_leader_row_says_who_leads_and_whether_the_lease_is_live() {
        let mut h = std::collections::HashMap::new();
        assert_eq!(leader_row(&h, 1_000), None, "no manager ever led");
        for (k, v) in [
            ("id", "m1-42-abcd"),
            ("host", "m1"),
            ("term", "3"),
            ("since", "2026-12-07T10:00:00Z"),
            ("expires_ms", "5000"),
        ] {
            h.insert(k.to_string(), v.to_string());
        }
        let row = leader_row(&h, 1_000).expect("a leader");
        assert_eq!(
            (row.id.as_str(), row.term, row.live),
            ("m1-42-abcd", 3, true)
        );
        assert!(!leader_row(&h, 6_000).expect("row").live, "ran out");
        h.insert("expires_ms".into(), "0".into());
        assert!(!leader_row(&h, 1_000).expect("row").live, "released");
    }
}
