//! `agent-manager halt engage|release|list|show`: the operator's halts (contract
//! section 10).
//!
//! - `engage` builds `halt.engage` from the command line: the scope (`--agent`,
//!   `--team`, `--customer` or `--platform`, narrowed by `--type`), the reason, who asks
//!   (the operator's name, as `agents stop` says it), a `halt_id` (given, or made:
//!   [`new_halt_id`]) and the customer the command is sent as: the scope's owner, read
//!   from the agents' records or the team's (`--customer-id` for a platform halt). It
//!   goes through [`super::act::round_trip`] as every acting command does; `--wait`
//!   waits for `halt.engaged` (exit 0: the agents, `cut_ms`, `frozen_ms`, and any that
//!   failed) or `agent.error` (exit 1).
//! - `release` sends `halt.release` as the customer that engaged the halt (from
//!   `halt:<id>`); an unknown halt is exit 1 before anything is sent.
//! - `list` and `show` read Redis: every engaged halt (`halts`, `halt:<id>`), and one
//!   halt with each of its agents' status, `halted_at` and when it was cut and frozen
//!   (the newest `agent.halted` of that halt in `agent:<id>:events`), and its entries of
//!   `halts:events`.
//!
//! Building the bodies, deciding the owner and printing are plain functions, tested
//! without a network.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::act::{refusal, round_trip, Outgoing};
use super::agents::{redis_down, store};
use super::describe::{line, when};
use super::table::{self, Column, Cut};
use super::{CliError, Format};
use crate::config::Config;
use crate::protocol::{
    rfc3339, valid_agent_id, AgentType, Event, EventKind, HaltCommandKind, HaltScope, HaltTarget,
    HALT_REASON_MAX_CHARS, TEAM_ID_RULE,
};
use crate::record::halt::HaltRecord;
use crate::store::{Store, StreamEntry, HALT_EVENTS_KEPT};

/// Entries read per round trip when searching a stream.
const PAGE: usize = 200;

/// Which agents `halt engage` names: exactly one of `--agent`, `--team`, `--customer`,
/// `--platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Agents(Vec<String>),
    Team(String),
    Customer(String),
    Platform,
}

/// What `halt engage` was asked for.
#[derive(Debug, Clone)]
pub struct EngageOptions {
    pub target: Target,
    /// `--type`: only agents of these types (names, checked here); empty: every type.
    pub types: Vec<String>,
    pub reason: String,
    /// `--halt-id`; `None`: one is made ([`new_halt_id`]).
    pub halt_id: Option<String>,
    /// `--customer-id`: the customer the command is sent as; `None`: the scope's owner.
    pub customer_id: Option<String>,
    /// Who asks (`requested_by`): the operator's name ([`super::act::operator_name`]).
    pub requested_by: Option<String>,
    /// `--wait`: how long to wait for the answer; `None`: done once the broker has it.
    pub wait: Option<Duration>,
    pub format: Format,
}

/// What `halt release` was asked for.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub halt_id: String,
    pub reason: String,
    /// Who asks (`requested_by`).
    pub requested_by: Option<String>,
    pub wait: Option<Duration>,
    pub format: Format,
}

/// `halt engage`.
pub async fn engage(
    config: &Config,
    opts: &EngageOptions,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let scope = scope(&opts.target, &opts.types)?;
    let reason = checked_reason(&opts.reason)?;
    let requested_by = checked_requested_by(opts.requested_by.as_deref())?;
    let halt_id = match &opts.halt_id {
        Some(id) => checked_halt_id(id)?.to_string(),
        None => new_halt_id(Utc::now(), random_u16()),
    };
    let customer_id = customer_of(config, &scope.target, opts.customer_id.as_deref()).await?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let command = Outgoing {
        routing_key: HaltCommandKind::Engage.routing_key(),
        body: engage_body(
            &message_id,
            &halt_id,
            &customer_id,
            &scope,
            reason,
            &requested_by,
        ),
        message_id: &message_id,
        answers: vec![EventKind::HaltEngaged],
        what: format!("halt.engage of halt {halt_id}"),
    };
    let answer = round_trip(&config.rabbitmq, &command, opts.wait, |e| {
        e.event == EventKind::HaltEngaged
    })
    .await?;
    let sent = Sent {
        command: HaltCommandKind::Engage,
        halt_id: &halt_id,
        customer_id: &customer_id,
        message_id: &message_id,
    };
    print_answer(&sent, answer, opts.format, out)
}

/// `halt release HALT_ID`.
pub async fn release(
    config: &Config,
    opts: &ReleaseOptions,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let halt_id = checked_halt_id(&opts.halt_id)?;
    let reason = checked_reason(&opts.reason)?;
    let requested_by = checked_requested_by(opts.requested_by.as_deref())?;
    let store = store(config).await?;
    let halt = store
        .load_halt(halt_id)
        .await
        .map_err(|e| redis_down(config, &e))?
        .ok_or_else(|| not_engaged(config, halt_id, None))?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let command = Outgoing {
        routing_key: HaltCommandKind::Release.routing_key(),
        body: release_body(
            &message_id,
            halt_id,
            &halt.customer_id,
            reason,
            &requested_by,
        ),
        message_id: &message_id,
        answers: vec![EventKind::HaltReleased],
        what: format!("halt.release of halt {halt_id}"),
    };
    let answer = round_trip(&config.rabbitmq, &command, opts.wait, |e| {
        e.event == EventKind::HaltReleased
    })
    .await?;
    let sent = Sent {
        command: HaltCommandKind::Release,
        halt_id,
        customer_id: &halt.customer_id,
        message_id: &message_id,
    };
    print_answer(&sent, answer, opts.format, out)
}

/// `halt list`: every engaged halt, oldest first.
pub async fn list(
    config: &Config,
    format: Format,
    width: usize,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = store(config).await?;
    let mut halts = store
        .load_halts()
        .await
        .map_err(|e| redis_down(config, &e))?;
    halts.sort_by(|a, b| (a.engaged_at, &a.halt_id).cmp(&(b.engaged_at, &b.halt_id)));
    match format {
        Format::Json => {
            let all: Vec<Value> = halts.iter().map(halt_json).collect();
            serde_json::to_writer_pretty(&mut *out, &all).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Table => out.write_all(list_text(&halts, Utc::now(), width).as_bytes())?,
    }
    Ok(())
}

/// `halt show HALT_ID`.
pub async fn show(
    config: &Config,
    halt_id: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let halt_id = checked_halt_id(halt_id)?;
    let store = store(config).await?;
    let down = |e: crate::error::StoreError| redis_down(config, &e);
    let trail = trail_of(&store, halt_id).await.map_err(down)?;
    let Some(halt) = store.load_halt(halt_id).await.map_err(down)? else {
        return Err(not_engaged(config, halt_id, trail.last()));
    };
    let records: HashMap<String, HashMap<String, String>> = store
        .load_fields(&halt.agent_ids)
        .await
        .map_err(down)?
        .into_iter()
        .collect();
    let mut agents = Vec::with_capacity(halt.agent_ids.len());
    for agent_id in &halt.agent_ids {
        let figures = newest_halted(&store, agent_id, halt_id)
            .await
            .map_err(down)?;
        agents.push(HeldAgent::of(agent_id, records.get(agent_id), figures));
    }
    match format {
        Format::Json => {
            let shown = json!({
                "halt": halt_json(&halt),
                "agents": agents.iter().map(HeldAgent::to_json).collect::<Vec<_>>(),
                "events": trail,
            });
            serde_json::to_writer_pretty(&mut *out, &shown).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Table => out.write_all(show_text(&halt, &agents, &trail, Utc::now()).as_bytes())?,
    }
    Ok(())
}

// ---- The command's body ----

/// The scope the command line names, as the contract writes it: ids checked (and
/// named twice only once), types read.
pub fn scope(target: &Target, types: &[String]) -> Result<HaltScope, CliError> {
    let target = match target {
        Target::Agents(ids) => {
            let mut unique: Vec<String> = Vec::with_capacity(ids.len());
            for id in ids {
                if !valid_agent_id(id) {
                    return Err(CliError::Usage(format!(
                        "'{id}' is not an agent id (letters, digits, '_', '.', '-'; at most 63)"
                    )));
                }
                if !unique.contains(id) {
                    unique.push(id.clone());
                }
            }
            if unique.is_empty() {
                return Err(CliError::Usage("--agent names no agent".into()));
            }
            HaltTarget::AgentIds(unique)
        }
        Target::Team(id) if !valid_agent_id(id) => {
            return Err(CliError::Usage(format!(
                "'{id}' is not a team id ({TEAM_ID_RULE})"
            )))
        }
        Target::Team(id) => HaltTarget::TeamId(id.clone()),
        Target::Customer(c) if c.is_empty() || c.chars().count() > 128 => {
            return Err(CliError::Usage(
                "--customer must be 1-128 characters".into(),
            ))
        }
        Target::Customer(c) => HaltTarget::CustomerId(c.clone()),
        Target::Platform => HaltTarget::Platform,
    };
    let mut agent_types: Vec<AgentType> = Vec::new();
    for name in types {
        let t = AgentType::parse(name).ok_or_else(|| {
            CliError::Usage(format!(
                "unknown agent type '{name}'; one of: {}",
                AgentType::ALL.map(AgentType::as_str).join(", ")
            ))
        })?;
        if !agent_types.contains(&t) {
            agent_types.push(t);
        }
    }
    Ok(HaltScope {
        target,
        agent_types: (!agent_types.is_empty()).then_some(agent_types),
    })
}

/// A halt id for people: `halt-<UTC yyyymmddThhmmss>-<4 hex digits>`.
pub fn new_halt_id(now: DateTime<Utc>, random: u16) -> String {
    format!("halt-{}-{random:04x}", now.format("%Y%m%dT%H%M%S"))
}

fn random_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn checked_halt_id(id: &str) -> Result<&str, CliError> {
    if valid_agent_id(id) {
        Ok(id)
    } else {
        Err(CliError::Usage(format!(
            "'{id}' is not a halt id ({TEAM_ID_RULE})"
        )))
    }
}

/// The reason as the contract bounds it: 1 to 500 printable characters.
fn checked_reason(reason: &str) -> Result<&str, CliError> {
    let chars = reason.chars().count();
    if reason.trim().is_empty()
        || chars > HALT_REASON_MAX_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(CliError::Usage(format!(
            "--reason must be 1-{HALT_REASON_MAX_CHARS} printable characters (it has {chars})"
        )));
    }
    Ok(reason)
}

/// Who asks: required by the contract, so an operator without a name is told how to
/// give one.
fn checked_requested_by(name: Option<&str>) -> Result<String, CliError> {
    name.filter(|n| !n.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::Usage(
                "a halt says who asked (requested_by): set AGENT_MANAGER_OPERATOR (or `operator` in the configuration file); USER and LOGNAME are empty"
                    .into(),
            )
        })
}

/// The customer the command is sent as when the command line decides it alone:
/// `--customer`'s (which `--customer-id` may only repeat), a platform halt's
/// `--customer-id` (required); `None`: read from Redis (agents and teams).
pub fn fixed_customer(
    target: &HaltTarget,
    given: Option<&str>,
) -> Result<Option<String>, CliError> {
    match (target, given) {
        (HaltTarget::CustomerId(c), Some(g)) if g != c => Err(CliError::Usage(format!(
            "--customer-id {g} and --customer {c} differ: a customer may halt only its own agents"
        ))),
        (HaltTarget::CustomerId(c), _) => Ok(Some(c.clone())),
        (HaltTarget::Platform, Some(g)) => Ok(Some(g.to_string())),
        (HaltTarget::Platform, None) => Err(CliError::Usage(
            "--platform needs --customer-id: the customer the command is sent as (any customer may release a platform halt)"
                .into(),
        )),
        (HaltTarget::AgentIds(_) | HaltTarget::TeamId(_), _) => Ok(None),
    }
}

/// The customer `halt.engage` is sent as: decided by the command line
/// ([`fixed_customer`]), else the owner of the agents or team the scope names, read
/// from their records in Redis.
async fn customer_of(
    config: &Config,
    target: &HaltTarget,
    given: Option<&str>,
) -> Result<String, CliError> {
    let down = |e: crate::error::StoreError| redis_down(config, &e);
    match target {
        HaltTarget::AgentIds(ids) => {
            let owners: HashMap<String, String> = store(config)
                .await?
                .load_fields(ids)
                .await
                .map_err(down)?
                .into_iter()
                .map(|(id, f)| (id, f.get("customer_id").cloned().unwrap_or_default()))
                .collect();
            owner_of_agents(ids, &owners, given, &prefix_note(config))
        }
        HaltTarget::TeamId(team_id) => {
            let team = store(config)
                .await?
                .load_team(team_id)
                .await
                .map_err(down)?
                .ok_or_else(|| {
                    CliError::NotFound(format!("team {team_id} not found{}", prefix_note(config)))
                })?;
            match given {
                Some(g) if g != team.customer_id => Err(CliError::Usage(format!(
                    "team {team_id} is customer {}'s, not {g}'s",
                    team.customer_id
                ))),
                _ => Ok(team.customer_id),
            }
        }
        HaltTarget::CustomerId(_) | HaltTarget::Platform => {
            Ok(fixed_customer(target, given)?.unwrap_or_default())
        }
    }
}

/// The one customer owning every agent of `agent_ids` (`owners`: each found agent's
/// owner), or `given` when it owns them all. An unknown agent is `NotFound`; agents of
/// several customers, or not `given`'s, a usage error naming them.
pub fn owner_of_agents(
    agent_ids: &[String],
    owners: &HashMap<String, String>,
    given: Option<&str>,
    note: &str,
) -> Result<String, CliError> {
    let missing: Vec<&str> = agent_ids
        .iter()
        .filter(|id| owners.get(*id).is_none_or(String::is_empty))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(CliError::NotFound(format!(
            "no such agent{}: {}{note}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        )));
    }
    let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in agent_ids {
        by_owner
            .entry(owners[id].as_str())
            .or_default()
            .push(id.as_str());
    }
    let listed = |skip: Option<&str>| -> String {
        by_owner
            .iter()
            .filter(|(owner, _)| Some(**owner) != skip)
            .map(|(owner, ids)| format!("{} (customer {owner})", ids.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match given {
        Some(g) if by_owner.keys().any(|owner| *owner != g) => Err(CliError::Usage(format!(
            "not customer {g}'s: {}; a customer may halt only its own agents",
            listed(Some(g))
        ))),
        Some(g) => Ok(g.to_string()),
        None if by_owner.len() > 1 => Err(CliError::Usage(format!(
            "the agents belong to more than one customer: {}; a halt is one customer's: halt each customer's agents apart (or --platform --type ...)",
            listed(None)
        ))),
        None => Ok(by_owner
            .keys()
            .next()
            .map(|o| o.to_string())
            .unwrap_or_default()),
    }
}

/// `halt.engage`'s body (contract section 10).
pub fn engage_body(
    message_id: &str,
    halt_id: &str,
    customer_id: &str,
    scope: &HaltScope,
    reason: &str,
    requested_by: &str,
) -> Value {
    json!({
        "message_id": message_id,
        "command": HaltCommandKind::Engage.routing_key(),
        "halt_id": halt_id,
        "customer_id": customer_id,
        "scope": scope.to_json(),
        "reason": reason,
        "requested_by": requested_by,
    })
}

/// `halt.release`'s body (contract section 10).
pub fn release_body(
    message_id: &str,
    halt_id: &str,
    customer_id: &str,
    reason: &str,
    requested_by: &str,
) -> Value {
    json!({
        "message_id": message_id,
        "command": HaltCommandKind::Release.routing_key(),
        "halt_id": halt_id,
        "customer_id": customer_id,
        "reason": reason,
        "requested_by": requested_by,
    })
}

// ---- What the manager answered ----

/// A halt command the CLI sent.
struct Sent<'a> {
    command: HaltCommandKind,
    halt_id: &'a str,
    customer_id: &'a str,
    message_id: &'a str,
}

/// Prints what became of `sent`: sent (not waiting), its answer, or its refusal (an
/// error: exit 1).
fn print_answer(
    sent: &Sent<'_>,
    answer: Option<Event>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Some(event) = answer else {
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                json!({"sent": sent.command.routing_key(), "halt_id": sent.halt_id,
                       "customer_id": sent.customer_id, "message_id": sent.message_id})
            )?,
            Format::Table => writeln!(
                out,
                "sent {} for halt {} (customer {}, message_id {}); `agent-manager halt show {}` says how it stands",
                sent.command, sent.halt_id, sent.customer_id, sent.message_id, sent.halt_id
            )?,
        }
        return Ok(());
    };
    if let Some(refused) = refusal(&event) {
        return Err(refused);
    }
    match format {
        Format::Json => writeln!(out, "{}", String::from_utf8_lossy(&event.to_json()))?,
        Format::Table if event.event == EventKind::HaltReleased => {
            out.write_all(released_text(&event).as_bytes())?
        }
        Format::Table => out.write_all(engaged_text(&event).as_bytes())?,
    }
    Ok(())
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `halt.engaged` for people: the halt, its agents, the time to cut and to freeze them,
/// and the agents that could not be taken out fully.
pub fn engaged_text(event: &Event) -> String {
    let halt_id = event.halt_id.as_deref().unwrap_or("?");
    let agents = event.agent_ids.clone().unwrap_or_default();
    let ms = |k: &str| {
        event.details[k]
            .as_u64()
            .map_or_else(|| "?".to_string(), |n| n.to_string())
    };
    let mut text = if agents.is_empty() {
        format!("halt.engaged {halt_id}: no agent in its scope")
    } else {
        format!(
            "halt.engaged {halt_id}: {} cut in {} ms, frozen in {} ms",
            count(agents.len(), "agent"),
            ms("cut_ms"),
            ms("frozen_ms")
        )
    };
    if event.details["again"] == json!(true) {
        text.push_str(" (engaged before: answered again)");
    }
    text.push('\n');
    for id in &agents {
        let _ = writeln!(text, "  {id}");
    }
    failed_lines(&mut text, &event.details["failed"]);
    text
}

/// `halt.released` for people: how many agents came back, and which did not.
pub fn released_text(event: &Event) -> String {
    let halt_id = event.halt_id.as_deref().unwrap_or("?");
    let agents = event.agent_ids.clone().unwrap_or_default();
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().or_else(|| x["agent_id"].as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let held = ids(&event.details["still_held"]);
    let failed = ids(&event.details["failed"]);
    let back = agents
        .iter()
        .filter(|a| !held.contains(a) && !failed.contains(a))
        .count();
    let mut text = format!(
        "halt.released {halt_id}: {} given back\n",
        count(back, "agent")
    );
    if !held.is_empty() {
        let _ = writeln!(text, "still held by another halt: {}", held.join(", "));
    }
    failed_lines(&mut text, &event.details["failed"]);
    text
}

/// `failed:` then one line per entry of `details.failed` (`agent_id`, `step`, `message`).
fn failed_lines(text: &mut String, failed: &Value) {
    let Some(failed) = failed.as_array().filter(|f| !f.is_empty()) else {
        return;
    };
    text.push_str("failed:\n");
    for f in failed {
        let id = f["agent_id"].as_str().unwrap_or("?");
        let message = f["message"].as_str().unwrap_or("");
        match f["step"].as_str() {
            Some(step) => {
                let _ = writeln!(text, "  {id} ({step}): {message}");
            }
            None => {
                let _ = writeln!(text, "  {id}: {message}");
            }
        }
    }
}

// ---- Reading halts ----

/// A halt for scripts: the hash's fields, `scope` as the contract writes it.
pub fn halt_json(h: &HaltRecord) -> Value {
    json!({
        "halt_id": h.halt_id,
        "customer_id": h.customer_id,
        "scope": h.scope.to_json(),
        "reason": h.reason,
        "requested_by": h.requested_by,
        "engaged_at": rfc3339(h.engaged_at),
        "agent_ids": h.agent_ids,
        "automatic": h.automatic,
    })
}

/// The scope for people: `agents a1, a2`, `team t1`, `customer acme`, `platform`, with
/// the types that narrow it in brackets.
pub fn scope_text(scope: &HaltScope) -> String {
    let mut text = match &scope.target {
        HaltTarget::AgentIds(ids) => format!("agents {}", ids.join(", ")),
        HaltTarget::TeamId(id) => format!("team {id}"),
        HaltTarget::CustomerId(id) => format!("customer {id}"),
        HaltTarget::Platform => "platform".to_string(),
    };
    if let Some(types) = &scope.agent_types {
        let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        let _ = write!(text, " [{}]", names.join(", "));
    }
    text
}

fn list_columns() -> Vec<Column> {
    vec![
        Column::new("HALT ID", 10, 40, Cut::Middle).keep(),
        Column::new("CUSTOMER", 8, 16, Cut::Middle),
        Column::new("SCOPE", 5, 32, Cut::End),
        Column::new("AGENTS", 6, 6, Cut::End).right(),
        Column::new("ENGAGED", 7, 7, Cut::End).right(),
        Column::new("BY", 4, 16, Cut::End),
        Column::new("REASON", 6, 60, Cut::End),
    ]
}

/// `halt list` for people.
pub fn list_text(halts: &[HaltRecord], now: DateTime<Utc>, width: usize) -> String {
    if halts.is_empty() {
        return "no halt is engaged\n".into();
    }
    let rows: Vec<Vec<String>> = halts
        .iter()
        .map(|h| {
            vec![
                h.halt_id.clone(),
                h.customer_id.clone(),
                scope_text(&h.scope),
                h.agent_ids.len().to_string(),
                table::age((now - h.engaged_at).num_seconds()),
                h.requested_by.clone(),
                h.reason.clone(),
            ]
        })
        .collect();
    table::render(&list_columns(), &rows, width)
}

/// One agent a halt holds, as `halt show` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldAgent {
    pub agent_id: String,
    /// Its status; `None`: it has no record (deleted meanwhile).
    pub status: Option<String>,
    /// `halted_at` as recorded.
    pub halted_at: Option<String>,
    /// From the newest `agent.halted` of this halt: milliseconds from the command's
    /// arrival until it was cut, and until it was frozen.
    pub cut_ms: Option<u64>,
    pub frozen_ms: Option<u64>,
}

impl HeldAgent {
    fn of(
        agent_id: &str,
        record: Option<&HashMap<String, String>>,
        figures: Option<(Option<u64>, Option<u64>)>,
    ) -> Self {
        let field = |name: &str| {
            record
                .and_then(|r| r.get(name))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let (cut_ms, frozen_ms) = figures.unwrap_or_default();
        HeldAgent {
            agent_id: agent_id.to_string(),
            status: record.map(|_| field("status").unwrap_or_else(|| "?".into())),
            halted_at: field("halted_at"),
            cut_ms,
            frozen_ms,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "agent_id": self.agent_id,
            "status": self.status,
            "halted_at": self.halted_at,
            "cut_ms": self.cut_ms,
            "frozen_ms": self.frozen_ms,
        })
    }
}

/// `cut_ms` and `frozen_ms` of the newest `agent.halted` of halt `halt_id` among
/// `entries` (newest first); `None` when there is none among them.
pub fn halted_figures(
    entries: &[StreamEntry],
    halt_id: &str,
) -> Option<(Option<u64>, Option<u64>)> {
    entries.iter().find_map(|entry| {
        if entry.event != EventKind::Halted.routing_key() {
            return None;
        }
        let event: Event = serde_json::from_str(&entry.data).ok()?;
        (event.details["halt_id"] == halt_id).then(|| {
            (
                event.details["cut_ms"].as_u64(),
                event.details["frozen_ms"].as_u64(),
            )
        })
    })
}

/// The figures of the newest `agent.halted` of `halt_id` in the agent's stream,
/// searched newest first, page by page.
async fn newest_halted(
    store: &Store,
    agent_id: &str,
    halt_id: &str,
) -> Result<Option<(Option<u64>, Option<u64>)>, crate::error::StoreError> {
    let mut before: Option<String> = None;
    loop {
        let page = store
            .events_before(agent_id, before.as_deref(), PAGE)
            .await?;
        if let Some(found) = halted_figures(&page, halt_id) {
            return Ok(Some(found));
        }
        match page.last() {
            Some(last) if page.len() == PAGE => before = Some(last.id.clone()),
            _ => return Ok(None),
        }
    }
}

/// The entries of `halts:events` about halt `halt_id`, oldest first, among the newest
/// [`HALT_EVENTS_KEPT`] of the stream.
async fn trail_of(store: &Store, halt_id: &str) -> Result<Vec<Value>, crate::error::StoreError> {
    let mut found = Vec::new();
    let mut before: Option<String> = None;
    let mut read = 0;
    while read < HALT_EVENTS_KEPT {
        let page = store.halt_events(before.as_deref(), PAGE).await?;
        read += page.len();
        let last = page
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_string);
        let full = page.len() == PAGE;
        found.extend(page.into_iter().filter(|e| e["halt_id"] == halt_id));
        match last {
            Some(id) if full => before = Some(id),
            _ => break,
        }
    }
    found.reverse();
    Ok(found)
}

/// ` (REDIS_PREFIX 'p')` when a prefix is set: where the CLI looked.
fn prefix_note(config: &Config) -> String {
    match config.redis.prefix.as_str() {
        "" => String::new(),
        prefix => format!(" (REDIS_PREFIX '{prefix}')"),
    }
}

/// Halt `halt_id` is not engaged; `last`: its newest entry of `halts:events`, if any.
fn not_engaged(config: &Config, halt_id: &str, last: Option<&Value>) -> CliError {
    let mut message = format!("halt {halt_id} is not engaged{}", prefix_note(config));
    if let Some(e) = last {
        let text = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        let _ = write!(
            message,
            "; its last entry in halts:events: {} at {} by {}: {}",
            text("kind"),
            text("at"),
            text("requested_by"),
            text("reason")
        );
    }
    CliError::NotFound(message)
}

/// `halt show` for people: the halt, its agents, its audit trail.
pub fn show_text(
    halt: &HaltRecord,
    agents: &[HeldAgent],
    trail: &[Value],
    now: DateTime<Utc>,
) -> String {
    let mut text = String::new();
    line(&mut text, "Halt", &halt.halt_id);
    line(&mut text, "Customer", &halt.customer_id);
    line(&mut text, "Scope", scope_text(&halt.scope));
    line(&mut text, "Reason", &halt.reason);
    line(&mut text, "Requested by", &halt.requested_by);
    line(&mut text, "Engaged", when(Some(halt.engaged_at), now));
    if halt.automatic {
        line(
            &mut text,
            "Automatic",
            "yes (the manager's own: a publishing rate over the limit)",
        );
    }
    line(&mut text, "Agents", halt.agent_ids.len());
    if !agents.is_empty() {
        let columns = vec![
            Column::new("AGENT ID", 10, 63, Cut::Middle).keep(),
            Column::new("STATUS", 6, 12, Cut::End),
            Column::new("HALTED AT", 9, 24, Cut::End),
            Column::new("CUT MS", 6, 10, Cut::End).right(),
            Column::new("FROZEN MS", 9, 10, Cut::End).right(),
        ];
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = agents
            .iter()
            .map(|a| {
                vec![
                    a.agent_id.clone(),
                    a.status.clone().unwrap_or_else(|| "(no record)".into()),
                    dash(a.halted_at.clone()),
                    dash(a.cut_ms.map(|n| n.to_string())),
                    dash(a.frozen_ms.map(|n| n.to_string())),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&table::render(&columns, &rows, usize::MAX));
    }
    text.push_str("\nhalts:events:\n");
    if trail.is_empty() {
        text.push_str("  <none>\n");
    }
    for e in trail {
        let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let _ = writeln!(
            text,
            "  {}  {:<9}  by {}: {}",
            field("at"),
            field("kind"),
            field("requested_by"),
            field("reason")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::policy::sample_policy;
    use crate::protocol::{Decoded, HaltAction};

    fn decoded(routing_key: &str, body: &Value) -> crate::protocol::HaltCommand {
        match crate::protocol::decode(
            routing_key,
            None,
            body.to_string().as_bytes(),
            &sample_policy(),
        ) {
            Ok(Decoded::Halt(h)) => h,
            other => panic!("the manager would not take {body}: {other:?}"),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_scope_builds_a_halt_engage_the_manager_decodes_as_given() {
        for (target, types, want) in [
            (
                Target::Agents(ids(&["a1", "a2", "a1"])),
                vec![],
                json!({"agent_ids": ["a1", "a2"]}),
            ),
            (
                Target::Team("t1".into()),
                ids(&["trading"]),
                json!({"team_id": "t1", "agent_types": ["trading"]}),
            ),
            (
                Target::Customer("acme".into()),
                vec![],
                json!({"customer_id": "acme"}),
            ),
            (
                Target::Platform,
                ids(&["trading", "analysis", "trading"]),
                json!({"platform": true, "agent_types": ["trading", "analysis"]}),
            ),
        ] {
            let scope = scope(&target, &types).unwrap();
            let body = engage_body("m-1", "h-1", "acme", &scope, "runaway", "alice");
            assert_eq!(body["scope"], want, "{target:?}");
            let cmd = decoded("halt.engage", &body);
            assert_eq!(cmd.halt_id, "h-1");
            assert_eq!(cmd.customer_id, "acme");
            assert_eq!(cmd.message_id, "m-1");
            assert_eq!(
                cmd.action,
                HaltAction::Engage {
                    scope,
                    reason: "runaway".into(),
                    requested_by: "alice".into()
                }
            );
        }
        let body = release_body("m-2", "h-1", "acme", "fixed", "bob");
        let cmd = decoded("halt.release", &body);
        assert_eq!(
            cmd.action,
            HaltAction::Release {
                reason: "fixed".into(),
                requested_by: "bob".into()
            }
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors_before_anything_is_read() {
        let usage = |r: Result<HaltScope, CliError>| match r {
            Err(CliError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(usage(scope(&Target::Platform, &ids(&["robot"]))).contains("trading"));
        assert!(usage(scope(&Target::Agents(ids(&["bad id"])), &[])).contains("bad id"));
        assert!(usage(scope(&Target::Agents(vec![]), &[])).contains("no agent"));
        assert!(usage(scope(&Target::Team("t/1".into()), &[])).contains("team id"));
        assert!(matches!(checked_reason(""), Err(CliError::Usage(_))));
        assert!(matches!(checked_reason("a\nb"), Err(CliError::Usage(_))));
        assert!(checked_reason(&"x".repeat(500)).is_ok());
        let long = checked_reason(&"x".repeat(501)).unwrap_err().to_string();
        assert!(long.contains("501"), "{long}");
        assert!(checked_halt_id("no spaces").is_err());
        let nobody = checked_requested_by(None).unwrap_err();
        assert_eq!(nobody.exit_code(), super::super::EXIT_USAGE);
        assert!(nobody.to_string().contains("AGENT_MANAGER_OPERATOR"));
        assert_eq!(checked_requested_by(Some("ops")).unwrap(), "ops");
    }

    #[test]
    fn a_made_halt_id_is_readable_and_valid() {
        let at = DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = new_halt_id(at, 0x0a1f);
        assert_eq!(id, "halt-20250304T050607-0a1f");
        assert!(valid_agent_id(&id));
        assert_ne!(
            new_halt_id(at, random_u16()),
            new_halt_id(at, random_u16().wrapping_add(1))
        );
    }

    #[test]
    fn the_customer_comes_from_the_scope_and_platform_halts_must_name_one() {
        let customer = HaltTarget::CustomerId("acme".into());
        assert_eq!(
            fixed_customer(&customer, None).unwrap(),
            Some("acme".into())
        );
        assert_eq!(
            fixed_customer(&customer, Some("acme")).unwrap(),
            Some("acme".into())
        );
        assert!(matches!(
            fixed_customer(&customer, Some("other")),
            Err(CliError::Usage(_))
        ));
        let platform = fixed_customer(&HaltTarget::Platform, None).unwrap_err();
        assert!(platform.to_string().contains("--customer-id"), "{platform}");
        assert_eq!(
            fixed_customer(&HaltTarget::Platform, Some("ops")).unwrap(),
            Some("ops".into())
        );
        assert_eq!(
            fixed_customer(&HaltTarget::TeamId("t".into()), None).unwrap(),
            None
        );
    }

    #[test]
    fn the_agents_owner_is_one_customer_and_unknown_agents_are_named() {
        let owners: HashMap<String, String> = [("a1", "c1"), ("a2", "c1"), ("b1", "c2")]
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .into();
        assert_eq!(
            owner_of_agents(&ids(&["a1", "a2"]), &owners, None, "").unwrap(),
            "c1"
        );
        let unknown =
            owner_of_agents(&ids(&["a1", "zz", "yy"]), &owners, None, " (p)").unwrap_err();
        assert!(matches!(unknown, CliError::NotFound(_)));
        assert_eq!(unknown.to_string(), "no such agents: zz, yy (p)");
        let mixed = owner_of_agents(&ids(&["a1", "b1", "a2"]), &owners, None, "").unwrap_err();
        assert!(matches!(mixed, CliError::Usage(_)));
        let text = mixed.to_string();
        assert!(
            text.contains("a1, a2 (customer c1); b1 (customer c2)"),
            "{text}"
        );
        let foreign = owner_of_agents(&ids(&["a1", "b1"]), &owners, Some("c1"), "").unwrap_err();
        assert!(
            foreign.to_string().contains("b1 (customer c2)"),
            "{foreign}"
        );
        assert!(!foreign.to_string().contains("a1"), "{foreign}");
        assert_eq!(
            owner_of_agents(&ids(&["b1"]), &owners, Some("c2"), "").unwrap(),
            "c2"
        );
    }

    fn answer(kind: EventKind, agents: &[&str], details: Value) -> Event {
        Event::for_halt(
            kind,
            "h-1",
            "acme",
            Some("m"),
            "engaged",
            Some(ids(agents)),
            details,
        )
    }

    #[test]
    fn an_engaged_halt_prints_its_agents_figures_and_failures() {
        let ok = answer(
            EventKind::HaltEngaged,
            &["a1", "a2"],
            json!({"cut_ms": 12, "frozen_ms": 250, "failed": [], "again": false}),
        );
        assert_eq!(
            engaged_text(&ok),
            "halt.engaged h-1: 2 agents cut in 12 ms, frozen in 250 ms\n  a1\n  a2\n"
        );
        let partly = answer(
            EventKind::HaltEngaged,
            &["a1"],
            json!({"cut_ms": 3, "frozen_ms": 9, "again": true,
                   "failed": [{"agent_id": "a1", "step": "freeze", "message": "docker said no"}]}),
        );
        let text = engaged_text(&partly);
        assert!(text.starts_with("halt.engaged h-1: 1 agent cut in 3 ms, frozen in 9 ms (engaged before: answered again)\n"), "{text}");
        assert!(
            text.ends_with("failed:\n  a1 (freeze): docker said no\n"),
            "{text}"
        );
        let none = answer(EventKind::HaltEngaged, &[], json!({"failed": []}));
        assert_eq!(
            engaged_text(&none),
            "halt.engaged h-1: no agent in its scope\n"
        );
    }

    #[test]
    fn a_released_halt_says_what_came_back_and_what_did_not() {
        let released = answer(
            EventKind::HaltReleased,
            &["a1", "a2", "a3", "a4"],
            json!({"still_held": ["a2"], "failed": [{"agent_id": "a3", "message": "gone"}]}),
        );
        assert_eq!(
            released_text(&released),
            "halt.released h-1: 2 agents given back\nstill held by another halt: a2\nfailed:\n  a3: gone\n"
        );
    }

    fn halt(target: HaltTarget, agents: &[&str]) -> HaltRecord {
        HaltRecord {
            halt_id: "halt-20250304T050607-0a1f".into(),
            customer_id: "acme".into(),
            scope: HaltScope {
                target,
                agent_types: Some(vec![AgentType::Trading]),
            },
            reason: "runaway strategy in the order loop".into(),
            requested_by: "alice".into(),
            engaged_at: Utc::now() - chrono::Duration::minutes(5),
            agent_ids: ids(agents),
            automatic: false,
        }
    }

    #[test]
    fn the_list_fits_80_columns_and_json_writes_the_scope_as_the_contract() {
        let h = halt(
            HaltTarget::AgentIds(ids(&["trading-7f3a9c", "trading-8e2b"])),
            &["trading-7f3a9c", "trading-8e2b"],
        );
        let text = list_text(std::slice::from_ref(&h), Utc::now(), 80);
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        for col in [
            "HALT ID", "CUSTOMER", "SCOPE", "AGENTS", "ENGAGED", "BY", "REASON",
        ] {
            assert!(header.contains(col), "{header}");
        }
        let row = lines.next().unwrap();
        assert!(row.contains("5m") && row.contains("alice"), "{row}");
        for l in text.lines() {
            assert!(l.chars().count() <= 80, "{l}");
        }
        assert_eq!(list_text(&[], Utc::now(), 80), "no halt is engaged\n");
        let j = halt_json(&h);
        assert_eq!(
            j["scope"],
            json!({"agent_ids": ["trading-7f3a9c", "trading-8e2b"], "agent_types": ["trading"]})
        );
        assert_eq!(j["agent_ids"].as_array().unwrap().len(), 2);
        assert_eq!(
            scope_text(&halt(HaltTarget::Platform, &[]).scope),
            "platform [trading]"
        );
    }

    fn entry(id: &str, event: &Event) -> StreamEntry {
        StreamEntry {
            id: id.into(),
            event: event.routing_key().into(),
            event_id: event.event_id.clone(),
            data: String::from_utf8(event.to_json()).unwrap(),
        }
    }

    #[test]
    fn the_figures_are_the_newest_agent_halted_of_that_halt() {
        let halted = |halt_id: &str, cut: u64, frozen: u64| {
            Event::new(
                EventKind::Halted,
                "a1",
                "acme",
                None,
                "halted",
                None,
                json!({"halt_id": halt_id, "cut_ms": cut, "frozen_ms": frozen}),
            )
        };
        let health = Event::new(
            EventKind::Health,
            "a1",
            "acme",
            None,
            "halted",
            None,
            json!({}),
        );
        // Newest first: another halt's, a health report, this halt's newest, an older one.
        let entries = [
            entry("5-0", &halted("h-2", 1, 2)),
            entry("4-0", &health),
            entry("3-0", &halted("h-1", 12, 250)),
            entry("2-0", &halted("h-1", 99, 999)),
        ];
        assert_eq!(halted_figures(&entries, "h-1"), Some((Some(12), Some(250))));
        assert_eq!(halted_figures(&entries, "h-9"), None);
    }

    #[test]
    fn show_prints_the_halt_each_agent_and_the_trail() {
        let h = halt(HaltTarget::CustomerId("acme".into()), &["a1", "a2"]);
        let record: HashMap<String, String> = [
            ("status", "halted"),
            ("halted_at", "2025-03-04T05:06:07.500Z"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let agents = [
            HeldAgent::of("a1", Some(&record), Some((Some(12), Some(250)))),
            HeldAgent::of("a2", None, None),
        ];
        let trail = [
            json!({"id": "1-0", "kind": "engaged", "at": "2025-03-04T05:06:07.400Z",
                            "requested_by": "alice", "reason": "runaway"}),
        ];
        let text = show_text(&h, &agents, &trail, Utc::now());
        assert!(
            text.contains("Scope:             customer acme [trading]"),
            "{text}"
        );
        assert!(text.contains("Agents:            2"), "{text}");
        let a1 = text.lines().find(|l| l.starts_with("a1")).unwrap();
        for v in ["halted", "2025-03-04T05:06:07.500Z", "12", "250"] {
            assert!(a1.contains(v), "{a1}");
        }
        let a2 = text.lines().find(|l| l.starts_with("a2")).unwrap();
        assert!(a2.contains("(no record)"), "{a2}");
        assert!(text.contains("engaged    by alice: runaway"), "{text}");
        let j = agents[0].to_json();
        assert_eq!(j["cut_ms"], 12);
        assert_eq!(j["frozen_ms"], 250);
        assert_eq!(agents[1].to_json()["status"], Value::Null);
    }
}
