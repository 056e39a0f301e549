//! `agent-manager agents task` as a user runs it: the built binary, configured from the
//! environment, gives tasks to agents on the reference image
//! (`autogen-agent:ref-<hash>`, images/autogen-agent) that a real manager (the
//! harness's, in-process) made, through the real RabbitMQ and Redis, and exits 0 for a
//! completed result, 1 for a failed one, an unknown agent (at once), an agent that is
//! not running (at once, nothing sent) and no result within `--timeout`. The agent of
//! the README's quick start is made from `examples/analysis-team-agent.json` by
//! `agents create -f`, as the README says.
//!
//! Needs the services and the reference image `bash scripts/services.sh` brings up.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_manager::Config;
use common::{CommandOut as Out, TestEnv, RABBITMQ_URL};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Bound on one CLI run: above the command's own default `--timeout` (60 s).
const CLI_DEADLINE: Duration = Duration::from_secs(90);
/// What "at once" means for a command that must not wait for a result.
const AT_ONCE: Duration = Duration::from_secs(10);

/// The CLI with `args`, configured for `config` (and nothing from the developer's
/// environment that would change its configuration).
fn command(config: &Config, args: &[&str]) -> Command {
    common::cli_command(config, args, &[])
}

/// Runs the CLI to its end (bounded, off the test's async thread so the manager keeps
/// working), with `stdin` from a file when given; its output and how long it took.
async fn cli(config: &Config, args: &[&str], stdin: Option<&Path>) -> (Out, Duration) {
    let cmd = command(config, args);
    let what = format!("agent-manager {}", args.join(" "));
    let stdin = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).expect("open the stdin file")),
        None => Stdio::null(),
    };
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = common::run_bounded_with_stdin(cmd, stdin, CLI_DEADLINE, &what);
        (out, started.elapsed())
    })
    .await
    .expect("cli thread")
}

/// A file for `-f` or standard input, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("agent-manager-cli-task-{name}"));
        std::fs::write(&path, text).expect("write the file");
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The agents' inboxes, deleted when dropped (the manager deletes them with their
/// agents; this is for a test that failed before).
struct Inboxes(Vec<String>);

impl Drop for Inboxes {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let connect = Connection::connect(RABBITMQ_URL, ConnectionProperties::default());
                let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for name in names {
                        let _ = ch
                            .queue_delete(name.into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "bye".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// How many tasks wait in `inbox`.
async fn waiting_tasks(inbox: &str) -> u32 {
    let conn = Connection::connect(RABBITMQ_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let queue = ch
        .queue_declare(
            inbox.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{inbox}: {e}"));
    let _ = conn.close(200, "counted".into()).await;
    queue.message_count()
}

/// A JSON file of the repository.
fn repo_json(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's example spec with this test's agent id and customer.
fn example_spec(env: &TestEnv, agent_id: &str) -> Value {
    let mut spec = repo_json("examples/analysis-team-agent.json");
    spec["agent_id"] = json!(agent_id);
    spec["customer_id"] = json!(env.customer());
    spec
}

fn inbox(agent_id: &str) -> String {
    agent_manager::protocol::task::inbox_queue(agent_id)
}

#[test]
fn the_example_spec_is_a_valid_create_with_the_image_example_team() {
    let spec = repo_json("examples/analysis-team-agent.json");
    assert_eq!(
        spec["autogen_config"],
        repo_json("images/autogen-agent/examples/analysis-risk-team.json"),
        "examples/analysis-team-agent.json carries the image's example team; regenerate it \
         when images/autogen-agent/examples/make_team.py changes"
    );
    let config = Config::from_sources(None, |_| None).expect("default config");
    let body = serde_json::to_vec(&spec).expect("JSON");
    let decoded = agent_manager::protocol::decode_command(
        "agent.create",
        None,
        &body,
        &config.agent_policy(),
    );
    assert!(decoded.is_ok(), "{decoded:?}");
}

#[actix_rt::test]
async fn a_task_is_answered_and_the_exit_code_says_how() {
    let image = common::reference_image().to_string();
    let env = TestEnv::start(&[
        ("AGENT_IMAGE", image.as_str()),
        ("HEARTBEAT_INTERVAL_S", "1"),
    ])
    .await;
    let cfg = env.config.clone();
    let team = env.agent_id("task-team");
    let slow = env.agent_id("task-slow");
    let _inboxes = Inboxes(vec![inbox(&team), inbox(&slow)]);

    // The README's quick start: create from the example spec, then give it a task.
    let spec = TempFile::write(
        &format!("{team}.json"),
        &example_spec(&env, &team).to_string(),
    );
    let (created, _) = cli(
        &cfg,
        &["agents", "create", "-f", spec.arg(), "--wait"],
        None,
    )
    .await;
    assert_eq!(created.code, 0, "{created:#?}");

    let (done, _) = cli(&cfg, &["agents", "task", &team, "Assess ACME"], None).await;
    assert_eq!(done.code, 0, "{done:#?}");
    for said in [
        "user: Assess ACME\n",
        "analysis (ToolCallRequestEvent): ",
        "analysis: ACME trades at 101.50: fairly valued.\n",
        "risk: Risk: moderate. Position limit 2% of the portfolio.\n",
        "status:      completed\n",
        "stop_reason: ",
        "usage:       60 prompt + 25 completion tokens\n",
    ] {
        assert!(done.stdout.contains(said), "{said:?} in {done:#?}");
    }

    // -f FILE with a body of its own: its task_id and fields go as they are; -o json
    // prints the result as published.
    let task_id = format!("t-file-{}", env.id);
    let body = TempFile::write(
        &format!("{team}-task.json"),
        &json!({"task_id": task_id, "task": "Assess ACME", "priority": "high"}).to_string(),
    );
    let (from_file, _) = cli(
        &cfg,
        &["agents", "task", &team, "-f", body.arg(), "-o", "json"],
        None,
    )
    .await;
    assert_eq!(from_file.code, 0, "{from_file:#?}");
    let result: Value = serde_json::from_str(&from_file.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {from_file:#?}"));
    assert_eq!(result["task_id"], task_id.as_str(), "{result:#}");
    assert_eq!(result["agent_id"], team.as_str(), "{result:#}");
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["usage"]["prompt_tokens"], 60, "{result:#}");

    // -f - reads the body from standard input; a task_id is made when it has none.
    let stdin = TempFile::write(&format!("{team}-stdin.json"), r#"{"task": "Assess ACME"}"#);
    let (from_stdin, _) = cli(
        &cfg,
        &["agents", "task", &team, "-f", "-", "-o", "json"],
        Some(&stdin.0),
    )
    .await;
    assert_eq!(from_stdin.code, 0, "{from_stdin:#?}");
    let result: Value = serde_json::from_str(&from_stdin.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {from_stdin:#?}"));
    assert_eq!(result["status"], "completed", "{result:#}");
    let made = result["task_id"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{result:#}");

    // An unknown agent: exit 1 at once, from its (missing) record.
    let nobody = env.agent_id("task-nobody");
    let (unknown, took) = cli(&cfg, &["agents", "task", &nobody, "hello"], None).await;
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(
        unknown
            .stderr
            .contains(&format!("agent {nobody} not found")),
        "{unknown:#?}"
    );
    assert!(took < AT_ONCE, "took {took:?}");

    // The slow team (its tool waits 8 s) with task_timeout_s 2: each task fails after
    // 2 s. First no result within --timeout 1s (exit 1), then a failed result (exit 1).
    let mut body = env.create_body(&slow);
    body["agent_type"] = json!("analysis");
    body["autogen_config"] = repo_json("images/autogen-agent/examples/slow-team.json");
    body["config"] = json!({"task_timeout_s": 2});
    body["resources"] = json!({"memory_mb": 512, "cpus": 1.0});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;

    let (late, took) = cli(
        &cfg,
        &["agents", "task", &slow, "Wait", "--timeout", "1s"],
        None,
    )
    .await;
    assert_eq!(late.code, 1, "{late:#?}");
    assert!(
        late.stderr.contains("no result came within 1 s"),
        "{late:#?}"
    );
    assert!(late.stdout.is_empty(), "{late:#?}");
    assert!(
        took >= Duration::from_secs(1) && took < AT_ONCE,
        "took {took:?}"
    );

    let (failed, _) = cli(&cfg, &["agents", "task", &slow, "Wait"], None).await;
    assert_eq!(failed.code, 1, "{failed:#?}");
    assert!(
        failed.stdout.contains("status:      failed\n"),
        "{failed:#?}"
    );
    assert!(
        failed
            .stdout
            .contains("error:       the task ran past task_timeout_s (2 s)\n"),
        "{failed:#?}"
    );
    assert!(
        failed
            .stderr
            .contains(" failed: the task ran past task_timeout_s (2 s)"),
        "{failed:#?}"
    );

    // A stopped agent: refused at once, nothing sent (its inbox would keep the task).
    let mid = env
        .command("agent.stop", &slow, json!({"timeout_s": 1}))
        .await;
    env.answer(&mid, "agent.stopped").await;
    let (refused, took) = cli(&cfg, &["agents", "task", &slow, "Wait"], None).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains(&format!("agents start {slow}"))
            && refused.stderr.contains("nothing was sent"),
        "{refused:#?}"
    );
    assert!(took < AT_ONCE, "took {took:?}");
    assert_eq!(waiting_tasks(&inbox(&slow)).await, 0, "nothing was sent");

    for agent in [&team, &slow] {
        let mid = env
            .command("agent.delete", agent, json!({"timeout_s": 1}))
            .await;
        env.answer(&mid, "agent.deleted").await;
    }
    env.finish().await;
}

#[actix_rt::test]
async fn bad_task_arguments_are_usage_errors_before_anything_is_sent() {
    // Nothing here reaches a service: the configuration points at none.
    let cfg = Config::from_sources(None, |k| {
        (k == "REDIS_URL" || k == "RABBITMQ_URL").then(|| match k {
            "REDIS_URL" => "redis://127.0.0.1:1/0".to_string(),
            _ => "amqp://guest:guest@127.0.0.1:1/%2f".to_string(),
        })
    })
    .expect("config");
    let list = TempFile::write("list.json", "[1, 2]");
    let no_text = TempFile::write("no-text.json", r#"{"task_id": "t-1"}"#);
    for args in [
        vec!["agents", "task", "a-1"],
        vec!["agents", "task", "a-1", "text", "-f", list.arg()],
        vec!["agents", "task", "a-1", "-f", list.arg()],
        vec!["agents", "task", "a-1", "-f", no_text.arg()],
        vec!["agents", "task", "a-1", "-f", "/nonexistent/task.json"],
        vec!["agents", "task", "a-1", ""],
        vec!["agents", "task", "a-1", "hi", "--timeout", "0"],
        vec!["agents", "task", "not an id!", "hi"],
    ] {
        let (out, took) = cli(&cfg, &args, None).await;
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(took < AT_ONCE, "{args:?} took {took:?}");
    }
    let (help, _) = cli(&cfg, &["agents", "task", "--help"], None).await;
    assert_eq!(help.code, 0, "{help:#?}");
    assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
}
