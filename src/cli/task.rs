//! `agent-manager agents task ID TEXT` (or `-f FILE`, `-f -`): gives an agent a task as
//! the Core Engine would (contract section 8) and waits for its result. The agent must
//! have a record (an unknown agent fails at once); one that would not take the task
//! without someone acting (stopped, paused, failed, being deleted) is refused before
//! anything is sent. A queue of the CLI's own is bound to `agent:<id>:result` before
//! the task goes (persistent, confirmed, mandatory: a missing inbox is an error, not a
//! task sent into the void); the result whose `task_id` is the task's is printed, for
//! people (the team's messages, then status, stop reason and token usage) or as
//! published (`-o json`). `completed` is exit 0; `failed`, or no result within
//! `--timeout`, exit 1.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::act::{close, confirmed_channel, own_queue, publish, rabbit_down};
use super::agents::stored_fields;
use super::{CliError, Format};
use crate::config::Config;
use crate::protocol::task::{inbox_queue, result_key, task_key};
use crate::protocol::{AgentStatus, DesiredState};

/// The body's fields this command reads and sets (contract section 8).
const TASK_ID: &str = "task_id";
const TASK: &str = "task";
/// The result's status that is a success (section 8); anything else is a failure.
const COMPLETED: &str = "completed";

/// The task body from the command line: TEXT becomes `{"task_id": <new UUID>, "task":
/// TEXT}`; FILE (`-`: standard input) is a JSON (or YAML) object, given a `task_id`
/// when it has none.
pub fn body(text: Option<&str>, file: Option<&Path>) -> Result<Map<String, Value>, CliError> {
    match (text, file) {
        (Some(text), None) => body_from_text(text),
        (None, Some(path)) => body_from_object(super::spec_file::read(path)?),
        (Some(_), Some(_)) => Err(CliError::Usage(
            "give the task as TEXT or as -f FILE, not both".into(),
        )),
        (None, None) => Err(CliError::Usage(
            "give the task as TEXT, or its JSON body with -f FILE (- for standard input)".into(),
        )),
    }
}

/// `{"task_id": <new UUID>, "task": text}`.
pub fn body_from_text(text: &str) -> Result<Map<String, Value>, CliError> {
    if text.trim().is_empty() {
        return Err(CliError::Usage("the task text is empty".into()));
    }
    let mut body = Map::new();
    body.insert(TASK_ID.into(), json!(new_task_id()));
    body.insert(TASK.into(), json!(text));
    Ok(body)
}

/// A body read from a file: `task` must be text, `task_id` a non-empty string (made
/// when absent); other fields go as they are (section 8 allows more).
pub fn body_from_object(mut body: Map<String, Value>) -> Result<Map<String, Value>, CliError> {
    match body.get(TASK) {
        Some(Value::String(_)) => {}
        None => {
            return Err(CliError::Usage(
                "the task body needs a \"task\" field (the text the agent works on)".into(),
            ))
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "\"task\" must be text, not {other}"
            )))
        }
    }
    match body.get(TASK_ID) {
        None | Some(Value::Null) => {
            body.insert(TASK_ID.into(), json!(new_task_id()));
        }
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(other) => {
            return Err(CliError::Usage(format!(
                "\"task_id\" must be a non-empty string, not {other} (or leave it out: one is made)"
            )))
        }
    }
    Ok(body)
}

fn new_task_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The body's `task_id` (every body [`body`] makes has one).
fn task_id_of(body: &Map<String, Value>) -> Result<&str, CliError> {
    body.get(TASK_ID)
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::Usage("the task body has no task_id".into()))
}

/// Whether an agent, as its record says, takes a task sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    /// Running: send and wait.
    Takes,
    /// On its way to running (starting, restarting, unhealthy, ...): send and wait,
    /// saying so.
    Later(String),
    /// Takes it only once someone acts (start, resume, restart): refused, nothing sent.
    Refused(String),
}

/// What the record's `status` and `desired_state` say about a task sent now.
fn readiness(agent_id: &str, fields: &HashMap<String, String>) -> Readiness {
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let (status, desired) = (field("status"), field("desired_state"));
    let act = |verb: &str| format!("`agent-manager agents {verb} {agent_id}`");
    match (AgentStatus::parse(status), DesiredState::parse(desired)) {
        (Some(AgentStatus::Paused), _) => Readiness::Refused(format!(
            "agent {agent_id} is paused: resume it first ({})",
            act("resume")
        )),
        (Some(AgentStatus::Failed), _) => Readiness::Refused(format!(
            "agent {agent_id} has failed: restart it first ({}; {} says why)",
            act("restart"),
            act("describe")
        )),
        (Some(AgentStatus::Deleting), _) => {
            Readiness::Refused(format!("agent {agent_id} is being deleted"))
        }
        (_, Some(DesiredState::Stopped)) => Readiness::Refused(format!(
            "agent {agent_id} is {status} and meant to stay stopped: start it first ({})",
            act("start")
        )),
        (Some(AgentStatus::Running), _) => Readiness::Takes,
        (Some(AgentStatus::Unhealthy), _) if !field("last_error").is_empty() => {
            Readiness::Later(format!(
                "agent {agent_id} is unhealthy ({}): the task waits in its inbox until the \
                 agent takes it",
                field("last_error")
            ))
        }
        _ => Readiness::Later(format!(
            "agent {agent_id} is {status}, not running: the task waits in its inbox until \
             the agent takes it"
        )),
    }
}

/// How `agents task` waits and prints.
#[derive(Debug, Clone, Copy)]
pub struct TaskOptions {
    /// How long to wait for the result (`--timeout`).
    pub wait: Duration,
    pub format: Format,
}

/// `agents task ID`: sends `body` to the agent and prints its result to `out`
/// (warnings to `err`). `Err(TaskFailed)` when the result is not `completed`.
pub async fn run(
    config: &Config,
    agent_id: &str,
    body: &Map<String, Value>,
    opts: TaskOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let task_id = task_id_of(body)?;
    let (_, fields) = stored_fields(config, agent_id).await?;
    match readiness(agent_id, &fields) {
        Readiness::Takes => {}
        Readiness::Later(why) => writeln!(
            err,
            "agent-manager: {why}; waiting up to {} s",
            opts.wait.as_secs()
        )?,
        Readiness::Refused(why) => return Err(CliError::NotRunning(why)),
    }
    let (data, result) = send_and_wait(config, agent_id, task_id, body, opts.wait).await?;
    match opts.format {
        Format::Json => {
            out.write_all(&data)?;
            if !data.ends_with(b"\n") {
                writeln!(out)?;
            }
        }
        Format::Table => out.write_all(render(&result).as_bytes())?,
    }
    out.flush()?;
    match result["status"].as_str() {
        Some(COMPLETED) => Ok(()),
        status => Err(CliError::TaskFailed {
            task_id: task_id.to_string(),
            error: failure(status, &result),
        }),
    }
}

/// Why a result is not a success, for stderr.
fn failure(status: Option<&str>, result: &Value) -> String {
    match (status, result["error"].as_str()) {
        (_, Some(error)) => error.to_string(),
        (Some(status), None) => format!("status {status}"),
        (None, None) => "the result has no status".into(),
    }
}

/// Binds the CLI's own queue to the agent's results, publishes the task, and waits for
/// its result: the bytes as published and their JSON.
async fn send_and_wait(
    config: &Config,
    agent_id: &str,
    task_id: &str,
    body: &Map<String, Value>,
    wait: Duration,
) -> Result<(Vec<u8>, Value), CliError> {
    let rabbit = &config.rabbitmq;
    let limit = Duration::from_secs(rabbit.timeout_s);
    let (conn, channel) = confirmed_channel(rabbit).await?;
    let outcome = async {
        let mut results = own_queue(&channel, &rabbit.exchange, &[result_key(agent_id)], limit)
            .await
            .map_err(|e| rabbit_down(rabbit, &e))?;
        let payload = Value::Object(body.clone()).to_string();
        let key = task_key(agent_id);
        if !publish(&channel, rabbit, &key, payload.as_bytes(), task_id).await? {
            return Err(CliError::Unavailable(format!(
                "no queue takes {key} on exchange {}: agent {agent_id}'s inbox {} is \
                 missing (the manager declares it with the agent's users; with \
                 AGENT_CREDENTIALS=shared the agent declares it when it starts)",
                rabbit.exchange,
                inbox_queue(agent_id)
            )));
        }
        wait_result(&mut results, agent_id, task_id, wait).await
    }
    .await;
    close(&conn, limit).await;
    outcome
}

/// The first result on `results` answering `task_id`, within `wait`.
async fn wait_result(
    results: &mut lapin::Consumer,
    agent_id: &str,
    task_id: &str,
    wait: Duration,
) -> Result<(Vec<u8>, Value), CliError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let next = tokio::time::timeout_at(until, results.next())
            .await
            .map_err(|_| {
                CliError::Unavailable(format!(
                    "task {task_id} was sent to agent {agent_id} but no result came within \
                     {} s (a longer --timeout waits longer; the agent may still answer it, on \
                     {})",
                    wait.as_secs(),
                    result_key(agent_id)
                ))
            })?;
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(CliError::Unavailable(format!("RabbitMQ: {e}"))),
            None => {
                return Err(CliError::Unavailable(
                    "RabbitMQ closed the result queue".into(),
                ))
            }
        };
        if let Some(result) = result_for(&delivery.data, task_id) {
            return Ok((delivery.data.to_vec(), result));
        }
    }
}

/// The result in `data` when it is one answering `task_id` (other tasks' results, and
/// anything that is not a JSON object, are passed over).
fn result_for(data: &[u8], task_id: &str) -> Option<Value> {
    let result: Value = serde_json::from_slice(data).ok()?;
    (result.is_object() && result[TASK_ID].as_str() == Some(task_id)).then_some(result)
}

/// The result for people: each message as `source: content` (its type named when it is
/// not a plain text message, continuation lines indented), then status, stop reason,
/// token usage and the error of a failed task.
pub fn render(result: &Value) -> String {
    let mut text = String::new();
    let messages = result["messages"].as_array().map(Vec::as_slice);
    for message in messages.unwrap_or_default() {
        message_block(&mut text, message);
    }
    if !text.is_empty() {
        text.push('\n');
    }
    let mut line = |label: &str, value: &str| {
        text.push_str(&format!(
            "{:<13}{}\n",
            format!("{label}:"),
            printable(value)
        ));
    };
    line("status", result["status"].as_str().unwrap_or("-"));
    if let Some(reason) = result["stop_reason"].as_str() {
        line("stop_reason", reason);
    }
    let tokens = |k: &str| result["usage"][k].as_u64().unwrap_or(0);
    line(
        "usage",
        &format!(
            "{} prompt + {} completion tokens",
            tokens("prompt_tokens"),
            tokens("completion_tokens")
        ),
    );
    if let Some(error) = result["error"].as_str() {
        line("error", error);
    }
    text
}

/// One message: `source: first line`, then its other lines indented by two spaces.
fn message_block(text: &mut String, message: &Value) {
    let source = printable(message["source"].as_str().unwrap_or("?"));
    let head = match message["type"].as_str() {
        None | Some("TextMessage") => format!("{source}:"),
        Some(kind) => format!("{source} ({}):", printable(kind)),
    };
    let content = match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut lines = content.lines();
    text.push_str(&head);
    if let Some(first) = lines.next() {
        text.push(' ');
        text.push_str(&printable(first));
    }
    text.push('\n');
    for rest in lines {
        text.push_str("  ");
        text.push_str(&printable(rest));
        text.push('\n');
    }
}

/// `s` with control characters (a model's output may hold terminal escapes) written
/// as escapes, tabs kept.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn record(status: &str, desired: &str) -> HashMap<String, String> {
        HashMap::from([
            ("status".to_string(), status.to_string()),
            ("desired_state".to_string(), desired.to_string()),
        ])
    }

    #[test]
    fn text_becomes_a_task_with_a_new_id() {
        let body = body(Some("Assess ACME"), None).unwrap();
        assert_eq!(body.len(), 2);
        assert_eq!(body["task"], "Assess ACME");
        let id = body["task_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let other = body_from_text("Assess ACME").unwrap();
        assert_ne!(other["task_id"], body["task_id"], "each task its own id");
        assert!(matches!(body_from_text("  "), Err(CliError::Usage(_))));
    }

    #[test]
    fn a_body_keeps_its_fields_and_gets_an_id_when_it_has_none() {
        let given = map(json!({"task_id": "t-42", "task": "Assess", "priority": 3}));
        assert_eq!(body_from_object(given.clone()).unwrap(), given);
        let made = body_from_object(map(json!({"task": "Assess", "task_id": null}))).unwrap();
        assert!(uuid::Uuid::parse_str(made["task_id"].as_str().unwrap()).is_ok());
        for bad in [
            json!({"task_id": "t"}),
            json!({"task": 7}),
            json!({"task": "x", "task_id": ""}),
            json!({"task": "x", "task_id": 42}),
        ] {
            let refused = body_from_object(map(bad.clone()));
            assert!(matches!(refused, Err(CliError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn the_task_comes_from_text_or_a_file_never_both_or_neither() {
        let file = Path::new("task.json");
        assert!(matches!(
            body(Some("x"), Some(file)),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(body(None, None), Err(CliError::Usage(_))));
        let missing = body(None, Some(Path::new("/nonexistent/task.json")));
        assert!(matches!(missing, Err(CliError::Usage(_))));
    }

    #[test]
    fn only_a_running_agent_takes_a_task_at_once() {
        assert_eq!(
            readiness("a", &record("running", "running")),
            Readiness::Takes
        );
        for status in ["starting", "restarting", "unhealthy", "creating", "created"] {
            let r = readiness("a", &record(status, "running"));
            assert!(
                matches!(&r, Readiness::Later(w) if w.contains(status)),
                "{r:?}"
            );
        }
        for (status, desired, fix) in [
            ("stopped", "stopped", "agents start a"),
            ("created", "stopped", "agents start a"),
            ("running", "stopped", "agents start a"),
            ("paused", "running", "agents resume a"),
            ("failed", "running", "agents restart a"),
            ("deleting", "stopped", "being deleted"),
        ] {
            let r = readiness("a", &record(status, desired));
            assert!(
                matches!(&r, Readiness::Refused(w) if w.contains(fix)),
                "{status}: {r:?}"
            );
        }
        let mut sick = record("unhealthy", "running");
        sick.insert(
            "last_error".into(),
            "heartbeat: no connection to the broker".into(),
        );
        let r = readiness("a", &sick);
        assert!(
            matches!(&r, Readiness::Later(w) if w.contains("(heartbeat: no connection")),
            "{r:?}"
        );
        // A record this CLI cannot read is given the benefit of the doubt.
        assert!(matches!(
            readiness("a", &HashMap::new()),
            Readiness::Later(_)
        ));
    }

    #[test]
    fn only_the_tasks_own_result_is_taken() {
        let ours = br#"{"task_id": "t-1", "status": "completed"}"#;
        assert_eq!(result_for(ours, "t-1").unwrap()["status"], "completed");
        assert!(result_for(ours, "t-2").is_none());
        assert!(result_for(b"[\"t-1\"]", "t-1").is_none());
        assert!(result_for(b"not json", "t-1").is_none());
        assert!(result_for(br#"{"task_id": null}"#, "t-1").is_none());
    }

    #[test]
    fn people_see_the_messages_then_the_outcome() {
        let result = json!({
            "task_id": "t-1", "agent_id": "a", "status": "completed",
            "messages": [
                {"source": "user", "type": "TextMessage", "content": "Assess ACME"},
                {"source": "analysis", "type": "ToolCallRequestEvent",
                 "content": [{"name": "get_price", "arguments": "{}", "id": "call-1"}]},
                {"source": "risk", "type": "TextMessage", "content": "Risk: moderate.\nLimit 2%."}
            ],
            "stop_reason": "Maximum number of messages 3 reached",
            "usage": {"prompt_tokens": 60, "completion_tokens": 25}
        });
        let expected = "user: Assess ACME\n\
             analysis (ToolCallRequestEvent): [{\"arguments\":\"{}\",\"id\":\"call-1\",\"name\":\"get_price\"}]\n\
             risk: Risk: moderate.\n  Limit 2%.\n\
             \n\
             status:      completed\n\
             stop_reason: Maximum number of messages 3 reached\n\
             usage:       60 prompt + 25 completion tokens\n";
        assert_eq!(render(&result), expected);
    }

    #[test]
    fn a_failure_shows_its_error_and_no_messages_is_fine() {
        let result = json!({
            "task_id": "t-1", "status": "failed", "messages": [], "stop_reason": null,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0},
            "error": "the task ran past task_timeout_s (2 s)"
        });
        assert_eq!(
            render(&result),
            "status:      failed\n\
             usage:       0 prompt + 0 completion tokens\n\
             error:       the task ran past task_timeout_s (2 s)\n"
        );
        assert_eq!(
            failure(Some("failed"), &result),
            "the task ran past task_timeout_s (2 s)"
        );
        assert_eq!(failure(Some("odd"), &json!({})), "status odd");
        assert_eq!(failure(None, &json!({})), "the result has no status");
    }

    #[test]
    fn terminal_escapes_from_a_model_are_shown_not_obeyed() {
        let result = json!({"status": "completed", "messages": [
            {"source": "x\u{1b}[2J", "type": "TextMessage", "content": "a\u{1b}]0;title\u{7}\tb\r\nc"}
        ]});
        let text = render(&result);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(
            text.starts_with("x\\u{1b}[2J: a\\u{1b}]0;title\\u{7}\tb\n  c\n"),
            "{text:?}"
        );
    }
}
