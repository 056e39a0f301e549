//! Health monitoring and self-healing on real Docker: crashes seen through Docker
//! events and restarted with backoff, crash loops given up on, OOM kills classified,
//! unhealthy agents restarted, stopped agents left alone, stats plausible.

mod common;

use common::{TestEnv, DEADLINE};
use serde_json::json;

/// Fast self-healing for tests: restarts after ~100 ms, a crash loop after 3 restarts.
const FAST: &[(&str, &str)] = &[
    ("RESTART_BACKOFF_BASE_MS", "100"),
    ("RESTART_BACKOFF_MAX_MS", "400"),
    ("CRASH_LOOP_MAX_RESTARTS", "3"),
    ("CRASH_LOOP_WINDOW_S", "120"),
    ("CONTAINER_CHECK_INTERVAL_S", "1"),
    ("CONTAINER_CHECK_RETRIES", "1"),
    ("CONTAINER_CHECK_START_PERIOD_S", "1"),
    ("UNHEALTHY_RESTART_AFTER", "2"),
];

async fn create_with(env: &TestEnv, id: &str, config: serde_json::Value, memory_mb: u64) {
    let mut body = env.create_body(id);
    body["config"] = config;
    body["resources"] = json!({"memory_mb": memory_mb, "cpus": 0.5});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
}

fn is(e: &agent_manager::protocol::Event, agent_id: &str, rk: &str) -> bool {
    e.agent_id == agent_id && e.event.routing_key() == rk
}

#[actix_rt::test]
async fn killed_agent_is_reported_and_restarted() {
    let env = TestEnv::start(FAST).await;
    let id = env.agent_id("kill");
    env.create_running(&id).await;
    let first_start = env.inspect(&id).await.unwrap().state.unwrap().started_at;
    // The agent has said it started (so its last words can travel with the restart).
    let name = format!("agent-{id}");
    common::wait_until("the agent's 'started' log line", DEADLINE, || async {
        std::process::Command::new("docker")
            .args(["logs", &name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("started"))
    })
    .await;

    let out = std::process::Command::new("docker")
        .args(["kill", &format!("agent-{id}")])
        .output()
        .expect("docker kill");
    assert!(out.status.success());

    let aid = id.clone();
    let health = env
        .wait_event("agent.health for the kill", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["state"] == "exited"
        })
        .await;
    assert_eq!(health.details["exit_code"], 137);
    assert_eq!(health.details["signal"], "SIGKILL");
    assert_eq!(health.details["oom_killed"], false);
    assert_eq!(health.status, "restarting");
    assert!(health.correlation_id.is_none());

    let aid = id.clone();
    let restarted = env
        .wait_event("agent.restarted", DEADLINE, move |e| {
            is(e, &aid, "agent.restarted")
        })
        .await;
    assert_eq!(restarted.status, "running");
    assert!(restarted.correlation_id.is_none());
    assert_eq!(restarted.details["reason"], "crashed");
    let logs = restarted.details["logs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        logs.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("started"))),
        "the last log lines travel with the restart: {logs:?}"
    );
    assert!(restarted.details["last_error"]
        .as_str()
        .unwrap()
        .contains("137"));
    let state = env.inspect(&id).await.unwrap().state.unwrap();
    assert!(state.running.unwrap());
    assert_ne!(state.started_at, first_start);
    let r = env.record(&id).await;
    assert_eq!(r["restart_count"], "1");
    assert!(r["last_error"].contains("137"), "{}", r["last_error"]);
    env.finish().await;
}

#[actix_rt::test]
async fn crash_loop_ends_in_failed_with_crash_loop_error() {
    let env = TestEnv::start(FAST).await;
    let id = env.agent_id("loop");
    create_with(
        &env,
        &id,
        json!({"exit_after_ms": 200, "exit_code": 4, "log_secret": "hunter2"}),
        64,
    )
    .await;
    let aid = id.clone();
    let err = env
        .wait_event("agent.error crash_loop", DEADLINE, move |e| {
            is(e, &aid, "agent.error")
        })
        .await;
    assert_eq!(err.details["code"], "crash_loop");
    assert!(err.details["command"].is_null());
    assert_eq!(err.status, "failed");
    let events = env.events_of(&id);
    let restarts = events
        .iter()
        .filter(|e| e.event.routing_key() == "agent.restarted")
        .count();
    let trace: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {}", e.event.routing_key(), e.status, e.details))
        .collect();
    assert_eq!(
        restarts, 3,
        "restarted up to the limit, then given up: {trace:#?}"
    );
    let r = env.record(&id).await;
    assert_eq!(r["status"], "failed");
    assert!(
        r["last_error"].contains("crash loop"),
        "{}",
        r["last_error"]
    );
    assert!(r["last_error"].contains("code 4"), "{}", r["last_error"]);
    // The container's last words are kept, with the secret redacted.
    let logs = &r["last_logs"];
    assert!(logs.contains("password=***"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
    assert!(!env
        .events_of(&id)
        .iter()
        .any(|e| e.details.to_string().contains("hunter2")));

    // A command takes over: start runs it again.
    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    env.finish().await;
}

#[actix_rt::test]
async fn oom_kill_is_classified() {
    let env = TestEnv::start(FAST).await;
    let id = env.agent_id("oom");
    let mut body = env.create_body(&id);
    body["config"] = json!({"oom": true});
    body["resources"] = json!({"memory_mb": 32, "cpus": 0.5});
    env.send("agent.create", body).await;
    let aid = id.clone();
    let health = env
        .wait_event("agent.health with oom_killed", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["oom_killed"] == true
        })
        .await;
    assert_eq!(health.details["exit_class"], "oom_killed");
    assert_eq!(health.details["exit_code"], 137);
    env.finish().await;
}

#[actix_rt::test]
async fn unhealthy_agent_is_restarted() {
    let env = TestEnv::start(FAST).await;
    let id = env.agent_id("sick");
    create_with(&env, &id, json!({"unhealthy_after_ms": 500}), 64).await;
    let aid = id.clone();
    let sick = env
        .wait_event("agent.health unhealthy", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["health"] == "unhealthy"
        })
        .await;
    assert_eq!(sick.status, "unhealthy");
    let aid = id.clone();
    let restarted = env
        .wait_event("agent.restarted for unhealthy", DEADLINE, move |e| {
            is(e, &aid, "agent.restarted")
        })
        .await;
    assert_eq!(restarted.details["reason"], "unhealthy");
    let inspect = env.inspect(&id).await.unwrap();
    assert!(
        inspect.config.unwrap().healthcheck.is_some(),
        "the container has a HEALTHCHECK"
    );
    env.finish().await;
}

#[actix_rt::test]
async fn stopped_agent_is_left_alone_while_a_crashing_one_is_healed() {
    let env = TestEnv::start(FAST).await;
    let calm = env.agent_id("calm");
    env.create_running(&calm).await;
    let mid = env.command("agent.stop", &calm, json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    // A crashing neighbour: its restarts prove the healing loop ran meanwhile.
    let crashy = env.agent_id("crashy");
    create_with(
        &env,
        &crashy,
        json!({"exit_after_ms": 300, "exit_code": 1}),
        64,
    )
    .await;
    let cid = crashy.clone();
    env.wait_event("the neighbour's crash loop", DEADLINE, move |e| {
        is(e, &cid, "agent.error")
    })
    .await;
    // Relisted in between too: every agent was looked at after the stop.
    assert!(!env.running(&calm).await);
    assert!(!env
        .events_of(&calm)
        .iter()
        .any(|e| matches!(e.event.routing_key(), "agent.restarted" | "agent.error")));
    assert_eq!(env.record(&calm).await["status"], "stopped");
    env.finish().await;
}

#[actix_rt::test]
async fn stats_are_plausible() {
    let env = TestEnv::start(&[("HEALTH_REPORT_INTERVAL_S", "1")]).await;
    let id = env.agent_id("stats");
    env.create_running(&id).await;
    let aid = id.clone();
    let e = env
        .wait_event("agent.health with stats", DEADLINE, move |e| {
            is(e, &aid, "agent.health")
                && e.details["memory_bytes"].as_u64().is_some_and(|m| m > 0)
                && e.details["pids"].as_u64().is_some()
        })
        .await;
    let d = &e.details;
    let mem = d["memory_bytes"].as_u64().unwrap();
    let limit = d["memory_limit_bytes"].as_u64().unwrap();
    assert_eq!(limit, 64 * 1024 * 1024);
    assert!(mem < limit, "memory {mem} under the limit {limit}");
    assert!(d["cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(d["pids"].as_u64().unwrap() >= 1);
    assert_eq!(d["state"], "running");
    let r = env.record(&id).await;
    assert!(r["memory_bytes"].parse::<u64>().unwrap() > 0);
    assert!(!r["last_health_at"].is_empty());
    env.finish().await;
}

/// The relist is the safety net under the events stream: one listing of every
/// container, and an agent whose container is not as its record says is looked at and
/// healed. Here no events watcher and no periodic look run, so only the relist can see
/// a container stopped behind the manager's back.
#[actix_rt::test]
async fn the_relist_finds_what_the_events_stream_missed() {
    use actix::Actor;
    use agent_manager::context::Deps;
    use agent_manager::protocol::{decode_command, Action, DesiredState};
    use agent_manager::record::status::{transition, Cause};
    use agent_manager::runtime::{docker::DockerRuntime, spec, Runtime};
    use agent_manager::store::{AgentRecord, Store};
    use agent_manager::supervisor::{LookAtAll, Supervisor};
    use std::sync::Arc;

    let mut overrides = FAST.to_vec();
    overrides.push(("HEALTH_CHECK_INTERVAL_S", "3600"));
    let env = TestEnv::client_only(&overrides).await;
    let config = Arc::new(env.config.clone());
    let runtime: Arc<dyn Runtime> =
        Arc::new(DockerRuntime::connect(&config).expect("docker runtime"));
    runtime.prepare().await.expect("network");
    let store = Store::connect(&config.redis).await.expect("redis");
    let publisher = agent_manager::broker::publisher::EventPublisher::new(config.rabbitmq.clone());

    // An agent running as its record says.
    let id = env.agent_id("relist");
    let body = env.create_body(&id).to_string();
    let cmd = decode_command(
        "agent.create",
        None,
        body.as_bytes(),
        &config.agent_policy(),
    )
    .expect("a valid create");
    let Action::Create { spec: agent, .. } = cmd.action else {
        panic!("a create")
    };
    let mut record = AgentRecord::new(&id, agent, DesiredState::Running);
    let container = runtime
        .create(&spec::build(&record, &config))
        .await
        .expect("create");
    runtime.start(&container).await.expect("start");
    record.workload_id = Some(container.clone());
    transition(&mut record, Cause::Adopted { running: true });
    store.save(&record, &[], None).await.expect("save");
    let deps = Deps::new(runtime.clone(), store, publisher, config.clone()).expect("deps");
    let supervisor = Supervisor::new(deps, vec![record]).start();

    // Its first look (at adoption) is done once the record carries a health time.
    common::wait_until("the adopted agent's first look", DEADLINE, || async {
        env.record(&id).await.contains_key("last_health_at")
    })
    .await;
    // Stopped behind the manager's back, with nobody watching Docker's events.
    runtime.stop(&container, 0).await.expect("stop");
    assert!(!env.running(&id).await);
    supervisor.send(LookAtAll).await.expect("supervisor");
    common::wait_until("the relist restarts the agent", DEADLINE, || async {
        env.running(&id).await
    })
    .await;
    let restarts: u64 = env.record(&id).await["restart_count"]
        .parse()
        .expect("a count");
    assert!(restarts >= 1, "the record counts the restart");
    supervisor
        .send(agent_manager::supervisor::Shutdown)
        .await
        .ok();
    env.finish().await;
}
