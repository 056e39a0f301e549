//! The reference agent (images/autogen-agent) run by the real manager, RabbitMQ, Redis
//! and Docker: an agent created with a two-agent AutoGen team (replayed model answers,
//! one tool call) as its AUTOGEN_CONFIG answers a task published to
//! `agent:<id>:task` with a result on `agent:<id>:result` (contract section 8); ten
//! tasks in a row come back in order, each once; a broken AUTOGEN_CONFIG ends the
//! container with exit 2 and a log line naming the problem; a new agent is `starting`,
//! never `unhealthy`, until it consumes its inbox, and `healthy` within 3 s of that.
//!
//! The agent reaches the services at its network's gateway with the login the manager
//! made for it (section 7): RabbitMQ's `guest` logs in from loopback only, so a result
//! at all means it used its own.
//!
//! Needs the image `autogen-agent:ref-<hash of its sources>`, which
//! `bash scripts/services.sh` builds (images/autogen-agent/build.sh; minutes, once).

mod common;

use std::time::Duration;

use common::{TestEnv, DEADLINE, RABBITMQ_URL};
use lapin::options::*;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

const IMAGE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/images/autogen-agent");

/// An example team (examples/make_team.py): `analysis-risk-team` (analysis calls
/// `get_price`, then answers; risk answers) or `slow-team` (its tool waits 8 s).
fn example_team(name: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{IMAGE_DIR}/examples/{name}.json")).expect("example team");
    serde_json::from_str(&text).expect("example team JSON")
}

/// A queue of the test's own bound to `agent:<id>:result`, on a connection of its own.
async fn results_queue(env: &TestEnv, agent_id: &str) -> (Connection, Channel, String) {
    let conn = Connection::connect(RABBITMQ_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let queue = format!("test-{}.results.{agent_id}", env.id);
    let ch = common::bound_exclusive_queue(
        &conn,
        &queue,
        &env.config.rabbitmq.exchange,
        &[format!("agent:{agent_id}:result")],
    )
    .await;
    (conn, ch, queue)
}

/// The next result on `queue`, waiting up to `deadline`; None when none came.
async fn next_result(ch: &Channel, queue: &str, deadline: Duration) -> Option<Value> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get");
        if let Some(msg) = got {
            return Some(serde_json::from_slice(&msg.delivery.data).expect("result JSON"));
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a running agent with `autogen_config` on the reference image.
async fn create_agent(env: &TestEnv, agent_id: &str, autogen_config: Value) {
    create_agent_with(env, agent_id, autogen_config, json!({})).await;
}

/// [`create_agent`] with `config` as the agent's CONFIG.
async fn create_agent_with(env: &TestEnv, agent_id: &str, autogen_config: Value, config: Value) {
    let mut body = env.create_body(agent_id);
    body["agent_type"] = json!("analysis");
    body["autogen_config"] = autogen_config;
    body["config"] = config;
    body["resources"] = json!({"memory_mb": 512, "cpus": 1.0});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;
    env.answer(&mid, "agent.started").await;
}

/// Waits until the agent's heartbeat says `ok` with a detail containing `detail`
/// (`""`: any): `ok` means its inbox is declared and consumed.
async fn wait_heartbeat(env: &TestEnv, agent_id: &str, detail: &str) {
    let key = env.key(&format!("agent:{agent_id}:data:heartbeat"));
    common::wait_until("the agent's heartbeat", DEADLINE, || {
        let key = key.clone();
        async move {
            let hb: Option<String> = env.redis_query(redis::cmd("GET").arg(&key)).await;
            hb.and_then(|h| serde_json::from_str::<Value>(&h).ok())
                .is_some_and(|h| {
                    h["status"] == "ok" && h["detail"].as_str().is_some_and(|d| d.contains(detail))
                })
        }
    })
    .await;
}

async fn send_task(env: &TestEnv, agent_id: &str, task_id: &str, text: &str) {
    let body = json!({"task_id": task_id, "task": text});
    env.publish_raw(
        &format!("agent:{agent_id}:task"),
        body.to_string().as_bytes(),
        None,
    )
    .await;
}

/// A running agent on the reference image, its inbox consumed, and a queue of the
/// test's own for its results.
struct Agent {
    env: TestEnv,
    id: String,
    _conn: Connection,
    ch: Channel,
    queue: String,
}

impl Agent {
    /// The agent `name` with `team` (an example's name) and CONFIG `config`.
    async fn start(name: &str, team: &str, config: Value) -> Agent {
        let image = common::reference_image().to_string();
        let env = TestEnv::start(&[
            ("AGENT_IMAGE", image.as_str()),
            ("HEARTBEAT_INTERVAL_S", "1"),
            ("RESTART_BACKOFF_BASE_MS", "100"),
        ])
        .await;
        let id = env.agent_id(name);
        let (conn, ch, queue) = results_queue(&env, &id).await;
        create_agent_with(&env, &id, example_team(team), config).await;
        wait_heartbeat(&env, &id, "").await;
        Agent {
            env,
            id,
            _conn: conn,
            ch,
            queue,
        }
    }

    async fn send(&self, task_id: &str, text: &str) {
        send_task(&self.env, &self.id, task_id, text).await;
    }

    /// The next result, waiting up to `deadline`.
    async fn result(&self, deadline: Duration) -> Option<Value> {
        next_result(&self.ch, &self.queue, deadline).await
    }

    /// Deletes the agent's inbox (the test's manager removes it with the agent's users
    /// anyway; this is for a test that failed before), then finishes the test's manager.
    async fn finish(self) {
        self.env
            .delete_queue(&format!("agent:{}:inbox", self.id))
            .await;
        self.env.finish().await;
    }

    /// No further result comes within 3 s (a task answered twice would).
    async fn no_more_results(&self) {
        let again = self.result(Duration::from_secs(3)).await;
        assert!(again.is_none(), "answered twice: {again:?}");
    }
}

#[actix_rt::test]
async fn a_task_comes_back_as_the_teams_result_and_ten_in_a_row_in_order() {
    let a = Agent::start("team", "analysis-risk-team", json!({})).await;
    a.send("t-first", "Assess ACME").await;
    let result = a
        .result(DEADLINE)
        .await
        .expect("a result within the deadline");
    assert_eq!(result["task_id"], "t-first", "{result:#}");
    assert_eq!(result["agent_id"], a.id.as_str());
    assert_eq!(result["status"], "completed", "{result:#}");
    assert!(result.get("error").is_none(), "{result:#}");
    let said: Vec<(String, String)> = result["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["source"].as_str().unwrap_or_default().to_string(),
                m["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("user", "TextMessage"),
        ("analysis", "ToolCallRequestEvent"),
        ("analysis", "ToolCallExecutionEvent"),
        ("analysis", "TextMessage"),
        ("risk", "TextMessage"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect();
    assert_eq!(said, expected, "{result:#}");
    assert_eq!(result["messages"][0]["content"], "Assess ACME");
    assert_eq!(result["messages"][2]["content"][0]["content"], "101.50");
    assert_eq!(
        result["usage"],
        json!({"prompt_tokens": 60, "completion_tokens": 25})
    );
    assert!(result["stop_reason"]
        .as_str()
        .is_some_and(|r| r.contains("Maximum number of messages")));
    let (started, finished) = (
        chrono::DateTime::parse_from_rfc3339(result["started_at"].as_str().unwrap_or_default())
            .expect("started_at RFC 3339"),
        chrono::DateTime::parse_from_rfc3339(result["finished_at"].as_str().unwrap_or_default())
            .expect("finished_at RFC 3339"),
    );
    assert!(started <= finished);

    let ids: Vec<String> = (0..10).map(|i| format!("t-{i:02}")).collect();
    for id in &ids {
        a.send(id, "Assess ACME").await;
    }
    let mut answered = Vec::new();
    for _ in &ids {
        let Some(r) = a.result(DEADLINE).await else {
            break;
        };
        answered.push(r["task_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(answered, ids, "each task once, in order");
    a.no_more_results().await;
    a.finish().await;
}

#[actix_rt::test]
async fn a_task_in_hand_when_the_container_is_killed_is_answered_once_after_the_restart() {
    let a = Agent::start("killed", "slow-team", json!({})).await;
    a.send("t-kill", "wait").await;
    wait_heartbeat(&a.env, &a.id, "working on task t-kill").await;
    let out = std::process::Command::new("docker")
        .args(["kill", &format!("agent-{}", a.id)])
        .output()
        .expect("docker kill");
    assert!(out.status.success(), "docker kill: {out:?}");
    let id = a.id.clone();
    a.env
        .wait_event("agent.restarted", DEADLINE, move |e| {
            e.agent_id == id && e.event.routing_key() == "agent.restarted"
        })
        .await;
    let result = a
        .result(DEADLINE)
        .await
        .expect("the task answered after the restart");
    assert_eq!(result["task_id"], "t-kill");
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["messages"][3]["content"], "Done waiting.");
    a.no_more_results().await;
    a.finish().await;
}

#[actix_rt::test]
async fn a_stop_past_the_grace_gives_the_task_back_and_the_next_start_answers_it() {
    let config = json!({"stop_grace_s": 1});
    let a = Agent::start("stopped", "slow-team", config).await;
    a.send("t-stop", "wait").await;
    wait_heartbeat(&a.env, &a.id, "working on task t-stop").await;
    let stop = a
        .env
        .command("agent.stop", &a.id, json!({"timeout_s": 30}))
        .await;
    a.env.answer(&stop, "agent.stopped").await;
    let exit = a
        .env
        .inspect(&a.id)
        .await
        .and_then(|c| c.state)
        .and_then(|s| s.exit_code);
    let logs = std::process::Command::new("timeout")
        .args(["10", "docker", "logs", "--tail", "15"])
        .arg(format!("agent-{}", a.id))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert_eq!(
        exit,
        Some(0),
        "SIGTERM ends the agent with 0 (by itself, long before Docker's SIGKILL at 30 s); \
         its last lines:\n{logs}"
    );
    assert!(
        a.result(Duration::from_secs(1)).await.is_none(),
        "the task was given back, not answered"
    );
    let start = a.env.command("agent.start", &a.id, json!({})).await;
    a.env.answer(&start, "agent.started").await;
    let result = a
        .result(DEADLINE)
        .await
        .expect("the task answered after the start");
    assert_eq!(result["task_id"], "t-stop");
    assert_eq!(result["status"], "completed", "{result:#}");
    a.no_more_results().await;
    a.finish().await;
}

#[actix_rt::test]
async fn a_broken_autogen_config_exits_2_naming_the_problem() {
    let image = common::reference_image().to_string();
    let env = TestEnv::start(&[("AGENT_IMAGE", image.as_str())]).await;
    let agent = env.agent_id("broken");
    let broken = json!({"provider": "nowhere.Team", "component_type": "team", "config": {}});
    create_agent(&env, &agent, broken).await;
    let id = agent.clone();
    let exit = env
        .wait_event("agent.health with the exit", DEADLINE, move |e| {
            e.agent_id == id && e.details.get("exit_code").is_some_and(|c| c == 2)
        })
        .await;
    assert_eq!(exit.details["exit_code"], 2, "{}", exit.details);
    common::wait_until("the record's last log lines", DEADLINE, || async {
        env.record(&agent)
            .await
            .get("last_logs")
            .is_some_and(|l| l.contains("AUTOGEN_CONFIG is not a team"))
    })
    .await;
    env.finish().await;
}

/// The text of the first (replayed) answer of the team's participant `agent`.
fn set_answer(team: &mut Value, agent: &str, text: &str) {
    let participants = team["config"]["participants"]
        .as_array_mut()
        .expect("participants");
    let p = participants
        .iter_mut()
        .find(|p| p["config"]["name"] == agent)
        .expect("the participant");
    p["config"]["model_client"]["config"]["chat_completions"][0]["content"] = json!(text);
}

#[actix_rt::test]
async fn an_update_with_a_new_autogen_config_changes_the_next_answer() {
    let a = Agent::start("updated", "analysis-risk-team", json!({})).await;
    a.send("t-before", "Assess ACME").await;
    let before = a.result(DEADLINE).await.expect("the first result");
    assert_eq!(
        before["messages"][4]["content"], "Risk: moderate. Position limit 2% of the portfolio.",
        "{before:#}"
    );
    let mut team = example_team("analysis-risk-team");
    set_answer(&mut team, "risk", "Risk: high. No new positions.");
    let update = a
        .env
        .command("agent.update", &a.id, json!({"autogen_config": team}))
        .await;
    a.env.answer(&update, "agent.updated").await;
    // The inbox is durable: a task sent now waits for the re-created container.
    a.send("t-after", "Assess ACME").await;
    let after = a
        .result(DEADLINE)
        .await
        .expect("the result after the update");
    assert_eq!(after["task_id"], "t-after", "{after:#}");
    assert_eq!(
        after["messages"][4]["content"], "Risk: high. No new positions.",
        "{after:#}"
    );
    a.no_more_results().await;
    a.finish().await;
}

/// The agent logs in to RabbitMQ as its own user (contract section 7): when that user
/// is removed, the agent has lost the broker, says so in its heartbeat, and the manager
/// reports it unhealthy with the agent's reason.
#[actix_rt::test]
async fn an_agent_that_lost_the_broker_reports_unhealthy() {
    let a = Agent::start("lost", "analysis-risk-team", json!({})).await;
    let env_vars = a
        .env
        .inspect(&a.id)
        .await
        .and_then(|c| c.config)
        .and_then(|c| c.env)
        .unwrap_or_default();
    let user = format!("agent-{}", a.id);
    assert!(
        env_vars
            .iter()
            .any(|e| e.starts_with("RABBITMQ_URL=") && e.contains(&format!("//{user}:"))),
        "the agent's RABBITMQ_URL names its own user"
    );
    let management = agent_manager::broker::management::Management::new(
        &a.env.config.rabbitmq.management_url(),
        None,
        Duration::from_secs(10),
    )
    .expect("the management API client");
    management
        .delete_user(&user)
        .await
        .expect("delete the agent's RabbitMQ user");
    management
        .close_connections(&user)
        .await
        .expect("close the agent's connections");
    let id = a.id.clone();
    let sick = a
        .env
        .wait_event(
            "agent.health: no connection to the broker",
            DEADLINE,
            move |e| {
                e.agent_id == id
                    && e.event.routing_key() == "agent.health"
                    && e.details["heartbeat"]["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("no connection to the broker"))
            },
        )
        .await;
    assert_eq!(sick.details["health"], "unhealthy", "{}", sick.details);
    a.finish().await;
}

/// When the agent logged `msg` first (its JSON log lines' `ts`), from `docker logs`.
fn logged_at(agent_id: &str, msg: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["logs", &format!("agent-{agent_id}")]);
    let out = common::run_bounded(cmd, Duration::from_secs(20), "docker logs");
    out.stdout.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["msg"] == msg).then_some(())?;
        let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str()?).ok()?;
        Some(ts.with_timezone(&chrono::Utc))
    })
}

fn timestamp(e: &agent_manager::protocol::Event) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&e.timestamp)
        .expect("event timestamp")
        .with_timezone(&chrono::Utc)
}

/// Issue 27: a new reference agent is `starting` until it has connected and consumes
/// its inbox (it writes no heartbeat before, and the image's `autogen.heartbeat=true`
/// label tells the manager one will come), `healthy` within 3 s of that, and never
/// `unhealthy` in its first 30 s. With the default check interval (10 s): the
/// supervisor's one-second read of starting agents' keys is what makes it quick.
#[actix_rt::test]
async fn a_new_agent_is_starting_then_healthy_within_3_s_of_consuming_never_unhealthy() {
    let image = common::reference_image().to_string();
    let env = TestEnv::start(&[
        ("AGENT_IMAGE", image.as_str()),
        ("HEALTH_CHECK_INTERVAL_S", "10"),
    ])
    .await;
    let id = env.agent_id("fresh");
    let created = tokio::time::Instant::now();
    let created_at = chrono::Utc::now();
    create_agent(&env, &id, example_team("analysis-risk-team")).await;
    let promised = env
        .inspect(&id)
        .await
        .and_then(|c| c.config)
        .and_then(|c| c.labels)
        .and_then(|l| l.get("autogen.heartbeat").cloned());
    assert_eq!(
        promised.as_deref(),
        Some("true"),
        "the image's label reaches the container"
    );
    let aid = id.clone();
    let healthy = env
        .wait_event("agent.health healthy", DEADLINE, move |e| {
            e.agent_id == aid
                && e.event.routing_key() == "agent.health"
                && e.details["health"] == "healthy"
        })
        .await;
    let consuming = logged_at(&id, "consuming tasks").expect("the agent's `consuming tasks` line");
    let after = timestamp(&healthy) - consuming;
    eprintln!(
        "consuming {} ms after the create was sent; healthy {} ms after that",
        (consuming - created_at).num_milliseconds(),
        after.num_milliseconds()
    );
    assert!(
        after <= chrono::Duration::seconds(3),
        "healthy {after} after it began consuming (at {consuming}): {}",
        healthy.details
    );
    let health_events = |env: &TestEnv| -> Vec<agent_manager::protocol::Event> {
        env.events_of(&id)
            .into_iter()
            .filter(|e| e.event.routing_key() == "agent.health")
            .collect()
    };
    let before: Vec<String> = health_events(&env)
        .iter()
        .take_while(|e| e.event_id != healthy.event_id)
        .map(|e| e.details["health"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|h| h == "starting"),
        "before healthy, `starting` only: {before:?}"
    );
    // Its first 30 s: watched as they pass, failing at the first unhealthy report.
    let window_end = created + Duration::from_secs(30);
    loop {
        let unhealthy: Vec<_> = health_events(&env)
            .into_iter()
            .filter(|e| e.details["health"] == "unhealthy" || e.status == "unhealthy")
            .collect();
        assert!(
            unhealthy.is_empty(),
            "unhealthy within 30 s: {unhealthy:#?}"
        );
        if tokio::time::Instant::now() >= window_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = env.record(&id).await;
    assert_eq!(
        (r["status"].as_str(), r["health"].as_str()),
        ("running", "healthy")
    );
    env.delete_queue(&format!("agent:{id}:inbox")).await;
    env.finish().await;
}

/// The agent program's own unit tests (images/autogen-agent/tests), run by the Python
/// and the packages of the image itself, offline and under the manager's hardening.
#[actix_rt::test]
async fn the_agent_programs_unit_tests_pass_in_its_image() {
    let image = common::reference_image().to_string();
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["run", "--rm", "--network", "none", "--read-only"])
        .args(["--tmpfs", "/tmp:rw,noexec,nosuid", "--cap-drop", "ALL"])
        .args(["--security-opt", "no-new-privileges"])
        .args(["--entrypoint", "/opt/agent/bin/python"])
        .args(["-v", &format!("{IMAGE_DIR}:/t:ro"), "-w", "/t", &image])
        .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."]);
    let out = tokio::task::spawn_blocking(move || {
        common::run_bounded(cmd, Duration::from_secs(120), "the agent's unit tests")
    })
    .await
    .expect("join");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("\nOK"), "{}", out.stderr);
}
