//! `agents describe ID`: one agent as `kubectl describe` shows a pod: the record's
//! fields for people, its container's state as Docker reports it, and its last events.
//! What may hold secrets (`autogen_config`, the container's environment) is not shown.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::agents::{redis_down, stored_fields};
use super::table;
use super::CliError;
use crate::config::{Config, DeploymentMode};
use crate::record::AgentRecord;
use crate::runtime::engine::connect_docker;
use crate::runtime::spec::container_name;
use crate::store::StreamEntry;

/// Events shown under `Events:`.
const EVENTS_SHOWN: usize = 10;

/// `agents describe ID`.
pub async fn describe(
    config: &Config,
    agent_id: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (store, fields) = stored_fields(config, agent_id).await?;
    let record = AgentRecord::from_fields(&store.keys().agent(agent_id), &fields);
    let events = store
        .last_events(agent_id, EVENTS_SHOWN)
        .await
        .map_err(|e| redis_down(config, &e))?;
    let container = container_state(config, agent_id).await;
    let now = Utc::now();
    let mut text = String::new();
    match &record {
        Ok(r) => {
            record_section(&mut text, r, now);
            if let Some(n) = refused_connections(config, agent_id).await {
                line(
                    &mut text,
                    "Egress refused",
                    format!("{n} connection attempt(s)"),
                );
            }
        }
        Err(e) => {
            let _ = writeln!(
                text,
                "Name:         {agent_id}\nRecord:       corrupt ({e})"
            );
        }
    }
    text.push_str(&container_section(agent_id, &fields, container));
    text.push_str(&events_section(&events, now));
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// How many connections the kernel refused the agent (its egress chain's `REJECT`
/// counters), when this process may read the host's iptables; `None` otherwise.
async fn refused_connections(config: &Config, agent_id: &str) -> Option<u64> {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::process::Command::new("iptables-save")
            .args(["-c", "-t", "filter"])
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    let saved = String::from_utf8_lossy(&out.stdout);
    let chain = crate::egress::rules::chain_of(&config.instance, agent_id);
    crate::egress::rules::refused_by_chain(&saved)
        .get(&chain)
        .copied()
}

/// The label column: the longest label (`Docker restarts:`, indented by two) and a space.
const LABEL_WIDTH: usize = 19;

/// `label:` then the value, aligned (also `halt show`'s).
pub(super) fn line(text: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(text, "{:<LABEL_WIDTH$}{value}", format!("{label}:"));
}

/// A time and how long ago it was, or `<none>`.
pub(super) fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        Some(t) => format!(
            "{} ({} ago)",
            crate::protocol::rfc3339(t),
            table::age((now - t).num_seconds())
        ),
        None => "<none>".into(),
    }
}

fn record_section(text: &mut String, r: &AgentRecord, now: DateTime<Utc>) {
    let s = &r.spec;
    line(text, "Name", &r.agent_id);
    line(text, "Display name", &s.name);
    line(text, "Customer", &s.customer_id);
    line(text, "Type", s.agent_type.as_str());
    line(
        text,
        "Status",
        format!(
            "{} (desired: {})",
            r.status().as_str(),
            r.desired_state.as_str()
        ),
    );
    line(
        text,
        "Health",
        if r.health.is_empty() { "-" } else { &r.health },
    );
    line(text, "Restarts", r.restart_count);
    line(text, "Image", &s.image);
    line(
        text,
        "Resources",
        format!(
            "memory {} MiB, cpus {}, gpus {}",
            s.resources.memory_mb, s.resources.cpus, s.resources.gpus
        ),
    );
    line(
        text,
        "Egress",
        if s.egress.is_empty() {
            "none of its own".to_string()
        } else {
            s.egress.join(", ")
        },
    );
    line(
        text,
        "Usage",
        format!(
            "cpu {:.1}%, memory {}",
            r.cpu_percent,
            table::bytes(r.memory_bytes)
        ),
    );
    if let Some(node) = &r.node {
        line(text, "Node", node.as_str());
    }
    line(text, "Created", when(Some(r.created_at), now));
    line(text, "Updated", when(Some(r.updated_at), now));
    line(text, "Last health", when(r.last_health_at, now));
    line(text, "Last heartbeat", when(r.last_heartbeat_at, now));
    line(
        text,
        "Last error",
        r.last_error.as_deref().unwrap_or("<none>"),
    );
    if r.stopped_by.is_some() || r.stop_reason.is_some() {
        line(text, "Stopped by", r.stopped_by.as_deref().unwrap_or("-"));
        line(text, "Stop reason", r.stop_reason.as_deref().unwrap_or("-"));
    }
    if !r.halt_ids.is_empty() {
        line(text, "Halts", r.halt_ids.join(", "));
        line(text, "Halted by", r.halted_by.as_deref().unwrap_or("-"));
        line(text, "Halt reason", r.halt_reason.as_deref().unwrap_or("-"));
        line(text, "Halted", when(r.halted_at, now));
    }
    if let Some(p) = &r.pending {
        line(text, "Pending", format!("{} ({})", p.command, p.message_id));
    }
    line(text, "Config", compact(&s.config));
    // AutoGen configurations carry model API keys: only their size is shown.
    line(
        text,
        "AutoGen config",
        format!(
            "{} bytes (`agents show` prints it)",
            s.autogen_config.to_string().len()
        ),
    );
    if !r.last_logs.is_empty() {
        text.push_str("Last logs (when it last died):\n");
        for l in &r.last_logs {
            let _ = writeln!(text, "  {l}");
        }
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    table::truncate(&s, 200, table::Cut::End)
}

/// What Docker says about the agent's container: its inspection, none, or why not known.
enum ContainerState {
    Found(Box<ContainerInspectResponse>),
    Absent,
    Unknown(String),
}

async fn container_state(config: &Config, agent_id: &str) -> ContainerState {
    if config.deployment_mode == DeploymentMode::Swarm {
        return ContainerState::Unknown(format!(
            "a Swarm service: `docker service ps {}`",
            container_name(agent_id)
        ));
    }
    let docker = match connect_docker(&config.docker, config.agents.max_stop_timeout_s) {
        Ok(d) => d,
        Err(e) => return ContainerState::Unknown(format!("Docker: {e}")),
    };
    let limit = Duration::from_secs(config.docker.timeout_s);
    let name = container_name(agent_id);
    let asked = docker.inspect_container(&name, None::<InspectContainerOptions>);
    match tokio::time::timeout(limit, asked).await {
        Err(_) => ContainerState::Unknown(format!(
            "Docker did not answer within {} s",
            limit.as_secs()
        )),
        Ok(Ok(found)) => ContainerState::Found(Box::new(found)),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => ContainerState::Absent,
        Ok(Err(e)) => ContainerState::Unknown(format!("Docker: {}", super::error_chain(&e))),
    }
}

fn container_section(
    agent_id: &str,
    fields: &HashMap<String, String>,
    state: ContainerState,
) -> String {
    let mut text = String::from("Container:\n");
    let item = |text: &mut String, label: &str, value: &str| {
        let _ = writeln!(
            text,
            "  {:<width$}{value}",
            format!("{label}:"),
            width = LABEL_WIDTH - 2
        );
    };
    item(&mut text, "Name", &container_name(agent_id));
    match state {
        ContainerState::Absent => {
            let recorded = fields.get("container_id").filter(|c| !c.is_empty());
            item(&mut text, "State", "<no container on this Docker host>");
            if let Some(id) = recorded {
                item(&mut text, "Recorded ID", id);
            }
        }
        ContainerState::Unknown(why) => item(&mut text, "State", &format!("unknown ({why})")),
        ContainerState::Found(c) => {
            let id: String = c.id.clone().unwrap_or_default().chars().take(12).collect();
            item(&mut text, "ID", &id);
            if let Some(s) = &c.state {
                let status = s
                    .status
                    .map(|st| st.to_string())
                    .unwrap_or_else(|| "?".into());
                item(&mut text, "State", &status);
                if let Some(t) = s.started_at.as_deref().filter(|t| !t.starts_with("0001")) {
                    item(&mut text, "Started", t);
                }
                if let Some(t) = s.finished_at.as_deref().filter(|t| !t.starts_with("0001")) {
                    item(&mut text, "Finished", t);
                    item(
                        &mut text,
                        "Exit code",
                        &s.exit_code.unwrap_or_default().to_string(),
                    );
                }
                item(
                    &mut text,
                    "OOM killed",
                    &s.oom_killed.unwrap_or(false).to_string(),
                );
                if let Some(h) = &s.health {
                    let health = h
                        .status
                        .map(|st| st.to_string())
                        .unwrap_or_else(|| "-".into());
                    item(&mut text, "Docker health", &health);
                }
            }
            item(
                &mut text,
                "Docker restarts",
                &c.restart_count.unwrap_or_default().to_string(),
            );
            if let Some(image) = c.config.as_ref().and_then(|cfg| cfg.image.as_deref()) {
                item(&mut text, "Image", image);
            }
        }
    }
    text
}

fn events_section(events: &[StreamEntry], now: DateTime<Utc>) -> String {
    let mut text = String::from("Events:\n");
    if events.is_empty() {
        text.push_str("  <none>\n");
        return text;
    }
    let columns = [
        table::Column::new("AGE", 4, 5, table::Cut::End).right(),
        table::Column::new("EVENT", 14, 16, table::Cut::End),
        table::Column::new("STATUS", 8, 10, table::Cut::End),
        table::Column::new("DETAILS", 10, 80, table::Cut::End),
    ];
    let rows: Vec<Vec<String>> = events
        .iter()
        .rev()
        .map(|e| {
            let data: Option<Value> = serde_json::from_str(&e.data).ok();
            let at = data
                .as_ref()
                .and_then(|d| d.get("timestamp"))
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| table::age((now - t.with_timezone(&Utc)).num_seconds()))
                .unwrap_or_else(|| "?".into());
            let text = |k: &str| {
                data.as_ref()
                    .and_then(|d| d.get(k))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Object(m) if m.is_empty() => String::new(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            vec![at, e.event.clone(), text("status"), text("details")]
        })
        .collect();
    for l in table::render(&columns, &rows, 120).lines() {
        let _ = writeln!(text, "  {l}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_followed_by_a_space_and_values_share_one_column() {
        let found = ContainerInspectResponse {
            id: Some("abc".into()),
            restart_count: Some(0),
            ..Default::default()
        };
        let text = container_section(
            "a1",
            &HashMap::new(),
            ContainerState::Found(Box::new(found)),
        );
        assert!(text.contains("  Docker restarts: 0\n"), "{text}");
        let mut top = String::new();
        line(&mut top, "Last heartbeat", "x");
        let column = top.find('x').unwrap();
        for l in text.lines().skip(1).chain(top.lines()) {
            let colon = l.find(':').unwrap();
            assert!(colon + 1 < column, "{l:?}: no space after the label");
            assert!(
                l[colon + 1..column].chars().all(|c| c == ' '),
                "{l:?}: value not at column {column}"
            );
        }
    }

    #[test]
    fn a_halted_agent_says_which_halts_hold_it_who_asked_and_why() {
        let now = Utc::now();
        let mut r = AgentRecord::new(
            "a1",
            crate::protocol::sample_spec(),
            crate::protocol::DesiredState::Running,
        );
        let mut text = String::new();
        record_section(&mut text, &r, now);
        assert!(!text.contains("Halts:"), "{text}");
        r.halt_ids = vec!["h1".into(), "auto-a1-1".into()];
        r.halted_by = Some("alice".into());
        r.halt_reason = Some("runaway".into());
        r.halted_at = Some(now);
        let mut text = String::new();
        record_section(&mut text, &r, now);
        for want in [
            "Halts:             h1, auto-a1-1\n",
            "Halted by:         alice\n",
            "Halt reason:       runaway\n",
            "(0s ago)",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn events_are_listed_newest_first_with_their_age() {
        let now = Utc::now();
        let entry = |n: i64, event: &str| StreamEntry {
            id: format!("{n}-0"),
            event: event.into(),
            event_id: format!("e{n}"),
            data: serde_json::json!({
                "timestamp": crate::protocol::rfc3339(now - chrono::Duration::seconds(n)),
                "status": "running",
                "details": {},
            })
            .to_string(),
        };
        let text = events_section(
            &[entry(90, "agent.created"), entry(30, "agent.started")],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Events:");
        assert!(lines[1].trim_start().starts_with("AGE"), "{text}");
        assert!(
            lines[2].contains("agent.started") && lines[2].contains("30s"),
            "{text}"
        );
        assert!(
            lines[3].contains("agent.created") && lines[3].contains("90s"),
            "{text}"
        );
        assert_eq!(events_section(&[], now), "Events:\n  <none>\n");
    }
}
