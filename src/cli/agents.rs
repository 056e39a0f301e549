//! `agent-manager agents show|events|logs`: what the manager recorded about an agent
//! (Redis, through [`Store`]) and what its container prints (Docker); the helpers the
//! other reading commands ([`super::list`], [`super::describe`]) share.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    InspectContainerOptions, InspectServiceOptions, LogsOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use super::table::{self, Cut};
use super::{CliError, Format};
use crate::config::{Config, DeploymentMode};
use crate::error::StoreError;
use crate::protocol::valid_agent_id;
use crate::redact;
use crate::runtime::engine::{connect_docker, unframe};
use crate::runtime::spec::container_name;
use crate::store::{record_json, AgentRecord, Store, StreamEntry};

/// How long one `--follow` read waits for new events before looking again.
const FOLLOW_STEP: Duration = Duration::from_secs(1);

/// Connects to Redis, naming the URL (redacted) when it does not answer.
pub(super) async fn store(config: &Config) -> Result<Store, CliError> {
    let store = Store::connect(&config.redis)
        .await
        .map_err(|e| redis_down(config, &e))?;
    Ok(store)
}

pub(super) fn redis_down(config: &Config, e: &StoreError) -> CliError {
    CliError::Unavailable(redact::secret_of_url_in(
        &format!(
            "Redis at {}: {} (`agent-manager check` says what to do)",
            redact::url(&config.redis.url),
            super::error_chain(e)
        ),
        &config.redis.url,
    ))
}

pub(super) fn docker_down(message: &str) -> CliError {
    CliError::Unavailable(format!(
        "Docker: {message} (`agent-manager check` says what to do)"
    ))
}

pub(super) fn check_id(agent_id: &str) -> Result<(), CliError> {
    if valid_agent_id(agent_id) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "'{agent_id}' is not an agent id (letters, digits, '_', '.', '-'; at most 63)"
        )))
    }
}

pub(super) fn not_found(config: &Config, agent_id: &str) -> CliError {
    let prefix = &config.redis.prefix;
    let scope = if prefix.is_empty() {
        String::new()
    } else {
        format!(" (REDIS_PREFIX '{prefix}')")
    };
    CliError::NotFound(format!("agent {agent_id} not found{scope}"))
}

/// The agent's record as stored (after checking the id), and the store it came from.
pub(super) async fn stored_fields(
    config: &Config,
    agent_id: &str,
) -> Result<(Store, HashMap<String, String>), CliError> {
    check_id(agent_id)?;
    let store = store(config).await?;
    let (_, fields) = store
        .load_fields(&[agent_id.to_string()])
        .await
        .map_err(|e| redis_down(config, &e))?
        .pop()
        .ok_or_else(|| not_found(config, agent_id))?;
    Ok((store, fields))
}

/// `agents show ID`: the whole record.
pub async fn show(
    config: &Config,
    agent_id: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (store, fields) = stored_fields(config, agent_id).await?;
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &record_json(&fields))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Table => out.write_all(show_text(&store, agent_id, &fields).as_bytes())?,
    }
    Ok(())
}

/// `name: value` lines: the record's fields in the manager's order, then any others
/// (newer fields) by name; sizes also in binary units, problems flagged.
fn show_text(store: &Store, agent_id: &str, fields: &HashMap<String, String>) -> String {
    let parsed = AgentRecord::from_fields(&store.keys().agent(agent_id), fields);
    let mut names: Vec<String> = match &parsed {
        Ok(r) => r
            .to_fields()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut others: Vec<&String> = fields.keys().filter(|k| !names.contains(k)).collect();
    others.sort();
    names.extend(others.into_iter().cloned());
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut text = String::new();
    if let Err(e) = &parsed {
        text.push_str(&format!("# {e}\n"));
    }
    for name in &names {
        let Some(value) = fields.get(name) else {
            continue;
        };
        let shown = match (name.as_str(), value.parse::<u64>()) {
            ("memory_bytes", Ok(n)) if n > 0 => format!("{value} ({})", table::bytes(n)),
            _ => value.clone(),
        };
        text.push_str(&format!("{name:<width$}  {shown}\n"));
    }
    text
}

/// `agents events ID`: the last `count` events of the agent's stream; with `follow`,
/// then every new one as it comes, until the agent is deleted or the command is
/// interrupted.
pub async fn events(
    config: &Config,
    agent_id: &str,
    count: usize,
    follow: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    check_id(agent_id)?;
    let store = store(config).await?;
    let exists = |store: Store| async move {
        store
            .load_fields(&[agent_id.to_string()])
            .await
            .map(|found| !found.is_empty())
    };
    // At least one, for the position to follow on from; only `count` are printed.
    let mut last = store
        .last_events(agent_id, count.max(1))
        .await
        .map_err(|e| redis_down(config, &e))?;
    if last.is_empty()
        && !exists(store.clone())
            .await
            .map_err(|e| redis_down(config, &e))?
    {
        return Err(not_found(config, agent_id));
    }
    let mut cursor = last
        .last()
        .map_or_else(|| "0".to_string(), |e| e.id.clone());
    last.drain(..last.len() - count.min(last.len()));
    for entry in &last {
        write_event(out, entry, format)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    loop {
        let new = store
            .events_after(agent_id, &cursor, FOLLOW_STEP, 100)
            .await
            .map_err(|e| redis_down(config, &e))?;
        if new.is_empty() {
            // Nothing new: stop once the agent is gone (a delete removes its stream).
            if !exists(store.clone())
                .await
                .map_err(|e| redis_down(config, &e))?
            {
                eprintln!("agent {agent_id} was deleted");
                return Ok(());
            }
            continue;
        }
        for entry in &new {
            write_event(out, entry, format)?;
        }
        out.flush()?;
        if let Some(e) = new.last() {
            cursor = e.id.clone();
        }
    }
}

fn write_event(out: &mut dyn Write, entry: &StreamEntry, format: Format) -> std::io::Result<()> {
    let data: Option<Value> = serde_json::from_str(&entry.data).ok();
    match format {
        Format::Json => {
            // The event as published; an entry whose data is not JSON is wrapped.
            let value = data.unwrap_or_else(|| {
                serde_json::json!({
                    "event": entry.event,
                    "event_id": entry.event_id,
                    "data": entry.data,
                })
            });
            writeln!(out, "{value}")
        }
        Format::Table => writeln!(out, "{}", event_line(entry, data.as_ref())),
    }
}

/// One event for people: time, event, status, correlation id, details.
pub fn event_line(entry: &StreamEntry, data: Option<&Value>) -> String {
    let text = |name: &str| -> String {
        data.and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string()
    };
    let time = data
        .and_then(|d| d.get("timestamp"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| stream_id_time(&entry.id));
    let details = match data.and_then(|d| d.get("details")) {
        Some(Value::Object(m)) if m.is_empty() => String::new(),
        Some(Value::Null) | None => String::new(),
        Some(d) => d.to_string(),
    };
    let line = format!(
        "{time:<24}  {:<15}  {:<10}  corr={}  {details}",
        entry.event,
        text("status"),
        table::truncate(&text("correlation_id"), 13, Cut::Middle),
    );
    line.trim_end().to_string()
}

/// The time a stream id (`<ms>-<seq>`) was written, RFC 3339.
fn stream_id_time(id: &str) -> String {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(crate::protocol::rfc3339)
        .unwrap_or_else(|| id.to_string())
}

/// A container's or a service's output, as Docker streams it.
type LogStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// `agents logs ID`: the agent container's output (stdout to `out`, stderr to `err`);
/// `tail` lines from the end, or all; with `follow`, until the container stops or the
/// command is interrupted. In swarm mode the agent's service's output, wherever its
/// task runs (Swarm's log broker brings it through the manager node).
pub async fn logs(
    config: &Config,
    agent_id: &str,
    tail: Option<usize>,
    follow: bool,
    timestamps: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    check_id(agent_id)?;
    let docker = connect_docker(&config.docker, config.agents.max_stop_timeout_s)
        .map_err(|e| docker_down(&e.to_string()))?;
    let limit = Duration::from_secs(config.docker.timeout_s);
    let name = container_name(agent_id);
    let timed_out = || {
        CliError::Unavailable(format!(
            "Docker did not answer within {} s (DOCKER_TIMEOUT_S)",
            limit.as_secs()
        ))
    };
    let swarm = config.deployment_mode == DeploymentMode::Swarm;
    let docker_failed = |e: bollard::errors::Error| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => CliError::NotFound(if swarm {
            format!("agent {agent_id} has no service ({name}) in this swarm")
        } else {
            format!("agent {agent_id} has no container ({name}) on this Docker host")
        }),
        other => docker_down(&super::error_chain(&other)),
    };
    let found = if swarm {
        tokio::time::timeout(
            limit,
            docker.inspect_service(&name, None::<InspectServiceOptions>),
        )
        .await
        .map(|r| r.map(|_| ()))
    } else {
        tokio::time::timeout(
            limit,
            docker.inspect_container(&name, None::<InspectContainerOptions>),
        )
        .await
        .map(|r| r.map(|_| ()))
    };
    found.map_err(|_| timed_out())?.map_err(docker_failed)?;

    let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .timestamps(timestamps)
        .tail(&tail)
        .build();
    let mut stream: LogStream = if swarm {
        Box::pin(docker.service_logs(&name, Some(options)))
    } else {
        Box::pin(docker.logs(&name, Some(options)))
    };
    // Without --follow the whole read is bounded; with it, only the wait for Docker's
    // answer is (bollard's request timeout), then output comes as the agent writes it.
    let deadline = (!follow).then(|| tokio::time::Instant::now() + limit);
    loop {
        let next = match deadline {
            Some(at) => tokio::time::timeout_at(at, stream.next())
                .await
                .map_err(|_| timed_out())?,
            None => stream.next().await,
        };
        let Some(item) = next else { break };
        match item.map_err(docker_failed)? {
            // A service's output from other nodes may keep Docker's framing.
            LogOutput::StdErr { message } => {
                err.write_all(&unframe(&message))?;
                err.flush()?;
            }
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.write_all(&unframe(&message))?;
                out.flush()?;
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(data: &str) -> StreamEntry {
        StreamEntry {
            id: "1700000000000-0".into(),
            event: "agent.started".into(),
            event_id: "e1".into(),
            data: data.into(),
        }
    }

    #[test]
    fn an_event_line_shows_time_event_status_and_details() {
        let data = json!({
            "timestamp": "2025-01-02T03:04:05.678Z",
            "status": "running",
            "correlation_id": "m-1",
            "details": {"k": 1},
        });
        let e = entry(&data.to_string());
        assert_eq!(
            event_line(&e, Some(&data)),
            "2025-01-02T03:04:05.678Z  agent.started    running     corr=m-1  {\"k\":1}"
        );
    }

    #[test]
    fn an_event_without_json_data_still_has_a_time() {
        let e = entry("not json");
        let line = event_line(&e, None);
        assert!(
            line.starts_with("2023-11-14T22:13:20.000Z  agent.started"),
            "{line}"
        );
        assert!(line.contains("corr=-"), "{line}");
    }

    #[test]
    fn ids_are_checked_before_anything_is_asked() {
        assert!(matches!(check_id("-bad"), Err(CliError::Usage(_))));
        assert!(matches!(check_id("a/b"), Err(CliError::Usage(_))));
        assert!(check_id("trading-1").is_ok());
    }
}
