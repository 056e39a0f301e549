//! Health monitoring and self-healing on real Docker: crashes seen through Docker
//! events and restarted with backoff, crash loops given up on, OOM kills classified,
//! unhealthy agents restarted (by their heartbeat or a Docker HEALTHCHECK), hung
//! agents (heartbeat expired) reported within the check interval and restarted, stopped
//! agents left alone, stats from the cgroup files matching Docker's, an agent whose
//! image promises heartbeats (`autogen.heartbeat=true`) and writes none `starting`, then
//! unhealthy with the reason once its start period is over.

mod common;

use std::time::{Duration, Instant};

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

/// The Docker HEALTHCHECK path, set explicitly (no exec probe by default): Docker's
/// `unhealthy` restarts the agent as before.
#[actix_rt::test]
async fn unhealthy_agent_is_restarted() {
    let mut overrides = FAST.to_vec();
    overrides.push((
        "CONTAINER_HEALTHCHECK",
        "CMD-SHELL,test ! -e /tmp/unhealthy",
    ));
    let env = TestEnv::start(&overrides).await;
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
    use agent_manager::actors::supervisor::{LookAtAll, Supervisor};
    use agent_manager::context::Deps;
    use agent_manager::protocol::{decode_command, Action, DesiredState};
    use agent_manager::record::status::{transition, Cause};
    use agent_manager::runtime::{docker::DockerRuntime, spec, Runtime};
    use agent_manager::store::{AgentRecord, Store};
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
    let deps = Deps::new(
        runtime.clone(),
        store,
        publisher,
        config.clone(),
        std::sync::Arc::new(agent_manager::egress::Unfiltered),
    )
    .expect("deps");
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
    // The container runs again a moment before the record that counts it is saved.
    common::wait_until("the record counts the restart", DEADLINE, || async {
        env.record(&id)
            .await
            .get("restart_count")
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| c >= 1)
    })
    .await;
    supervisor
        .send(agent_manager::actors::supervisor::Shutdown)
        .await
        .ok();
    env.finish().await;
}

/// Heartbeats every second, a look every second, a restart after two unhealthy looks.
const BEATS: &[(&str, &str)] = &[
    ("HEARTBEAT_INTERVAL_S", "1"),
    ("HEALTH_CHECK_INTERVAL_S", "1"),
    ("UNHEALTHY_RESTART_AFTER", "2"),
    ("HEALTH_REPORT_INTERVAL_S", "2"),
];

/// The agent's heartbeat key (under the test's prefix).
fn heartbeat_key(env: &TestEnv, agent_id: &str) -> String {
    env.key(&format!("agent:{agent_id}:data:heartbeat"))
}

/// By default an agent gets no HEALTHCHECK (no exec probe): its heartbeat, written to
/// Redis from inside its container, keeps it healthy, and the record remembers it.
#[actix_rt::test]
async fn heartbeat_keeps_an_agent_healthy_without_an_exec_probe() {
    let env = TestEnv::start(BEATS).await;
    let id = env.agent_id("beat");
    env.create_running(&id).await;
    let inspect = env.inspect(&id).await.expect("the container");
    let config = inspect.config.expect("its config");
    assert!(config.healthcheck.is_none(), "no HEALTHCHECK by default");
    let vars = config.env.unwrap_or_default();
    assert!(
        vars.contains(&"HEARTBEAT_INTERVAL_S=1".to_string()),
        "{vars:?}"
    );
    let aid = id.clone();
    let healthy = env
        .wait_event("agent.health healthy by heartbeat", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["health"] == "healthy"
        })
        .await;
    assert_eq!(healthy.status, "running");
    assert_eq!(healthy.details["heartbeat"]["status"], "ok");
    assert!(healthy.details["heartbeat"]["last_at"].is_string());
    let raw: String = env
        .redis_query(redis::cmd("GET").arg(heartbeat_key(&env, &id)))
        .await;
    let beat: serde_json::Value = serde_json::from_str(&raw).expect("the contract's JSON");
    assert_eq!(beat["status"], "ok");
    assert!(beat["ts"].as_i64().is_some_and(|t| t > 1_600_000_000_000));
    let ttl: i64 = env
        .redis_query(redis::cmd("PTTL").arg(heartbeat_key(&env, &id)))
        .await;
    assert!(ttl > 0 && ttl <= 3000, "expiry of 3 intervals: {ttl} ms");
    common::wait_until("the record's last heartbeat", DEADLINE, || async {
        env.record(&id)
            .await
            .get("last_heartbeat_at")
            .is_some_and(|t| !t.is_empty())
    })
    .await;
    assert_eq!(env.record(&id).await["health"], "healthy");
    env.finish().await;
}

/// Issue 27: a plain `agent-manager run` (no AGENT_RABBITMQ_URL / AGENT_REDIS_URL, the
/// manager's own URLs on 127.0.0.1) gives agents the gateway of their network, where the
/// services answer (scripts/services.sh makes them listen there): the agent's heartbeat
/// arrives, with its own login.
#[actix_rt::test]
async fn a_plain_run_gives_agents_the_gateway_of_their_network() {
    let gateway = common::agent_gateway().expect("autogen-network's gateway (scripts/services.sh)");
    let mut plain = BEATS.to_vec();
    plain.extend([("AGENT_REDIS_URL", ""), ("AGENT_RABBITMQ_URL", "")]);
    let env = TestEnv::start(&plain).await;
    assert!(
        env.config.redis.url.contains("127.0.0.1") && env.config.rabbitmq.url.contains("127.0.0.1"),
        "the manager's own URLs are on loopback"
    );
    let id = env.agent_id("plain");
    env.create_running(&id).await;
    let vars = env
        .inspect(&id)
        .await
        .and_then(|c| c.config)
        .and_then(|c| c.env)
        .unwrap_or_default();
    for var in ["RABBITMQ_URL", "REDIS_URL"] {
        let url = vars
            .iter()
            .find_map(|kv| kv.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} in the agent's environment"));
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        assert_eq!(host.as_deref(), Some(gateway), "{var}'s host");
    }
    let aid = id.clone();
    env.wait_event("agent.health healthy by heartbeat", DEADLINE, move |e| {
        is(e, &aid, "agent.health")
            && e.details["health"] == "healthy"
            && e.details["heartbeat"]["status"] == "ok"
    })
    .await;
    env.finish().await;
}

/// An agent whose heartbeat says `unhealthy` is reported and restarted, with its words.
#[actix_rt::test]
async fn agent_reporting_unhealthy_is_restarted() {
    let env = TestEnv::start(BEATS).await;
    let id = env.agent_id("sickbeat");
    create_with(&env, &id, json!({"heartbeat_unhealthy_after_ms": 1500}), 64).await;
    let aid = id.clone();
    let sick = env
        .wait_event("agent.health unhealthy by heartbeat", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["health"] == "unhealthy"
        })
        .await;
    assert_eq!(sick.status, "unhealthy");
    assert_eq!(sick.details["heartbeat"]["status"], "unhealthy");
    let detail = sick.details["heartbeat"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("told to report unhealthy"), "{detail}");
    let aid = id.clone();
    let restarted = env
        .wait_event("agent.restarted for its heartbeat", DEADLINE, move |e| {
            is(e, &aid, "agent.restarted")
        })
        .await;
    assert_eq!(restarted.details["reason"], "unhealthy");
    let why = restarted.details["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("says it is unhealthy"), "{why}");
    env.finish().await;
}

/// A hung agent (its heartbeat stops, the key expires) is reported unhealthy within the
/// check interval plus a second of the expiry, then restarted as an unhealthy one is.
#[actix_rt::test]
async fn hung_agent_is_reported_within_the_interval_and_restarted() {
    let env = TestEnv::start(BEATS).await;
    let id = env.agent_id("hung");
    create_with(&env, &id, json!({"heartbeat_stop_after_ms": 2500}), 64).await;
    // The key's expiry, to the millisecond: while it exists, now + its PTTL.
    let key = heartbeat_key(&env, &id);
    let mut expiry: Option<Instant> = None;
    let until = Instant::now() + DEADLINE;
    loop {
        let pttl: i64 = env.redis_query(redis::cmd("PTTL").arg(&key)).await;
        if pttl > 0 {
            expiry = Some(Instant::now() + Duration::from_millis(pttl as u64));
        } else if pttl == -2 && expiry.is_some() {
            break;
        }
        assert!(Instant::now() < until, "the heartbeat key never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expired = expiry.expect("the key existed");
    let interval = Duration::from_secs(env.config.health.check_interval_s);
    // Within the interval plus a second (and half a second for this busy test machine).
    let deadline = (expired + interval + Duration::from_millis(1500))
        .saturating_duration_since(Instant::now());
    let aid = id.clone();
    let hung = env
        .wait_event("agent.health for the hung agent", deadline, move |e| {
            is(e, &aid, "agent.health") && e.details["heartbeat"]["status"] == "expired"
        })
        .await;
    assert_eq!(hung.details["health"], "unhealthy");
    assert_eq!(hung.status, "unhealthy");
    let aid = id.clone();
    let restarted = env
        .wait_event("agent.restarted for the hung agent", DEADLINE, move |e| {
            is(e, &aid, "agent.restarted")
        })
        .await;
    assert_eq!(restarted.details["reason"], "unhealthy");
    let why = restarted.details["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("hung"), "{why}");
    env.finish().await;
}

/// The test agent's image with the label that promises heartbeats
/// (`autogen.heartbeat=true`), built by the test (one `LABEL` layer) and removed in Drop,
/// after the test's containers (declare it before the `TestEnv`).
struct PromisingImage(String);

impl PromisingImage {
    fn build() -> PromisingImage {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let tag = format!("autogen-agent:promise-{id}");
        let dir = std::env::temp_dir().join(format!("agent-manager-promise-{id}"));
        std::fs::create_dir_all(&dir).expect("a build context");
        let dockerfile = format!(
            "FROM {}\nLABEL autogen.heartbeat=true\n",
            common::agent_image()
        );
        std::fs::write(dir.join("Dockerfile"), dockerfile).expect("the Dockerfile");
        let mut cmd = std::process::Command::new("docker");
        // The classic builder: this dockerd may have no BuildKit.
        cmd.env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag])
            .arg(&dir);
        let out = common::run_bounded(cmd, Duration::from_secs(120), "docker build");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(out.code, 0, "docker build: {}", out.stderr);
        PromisingImage(tag)
    }
}

impl Drop for PromisingImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("timeout")
            .args(["60", "docker", "rmi", &self.0])
            .output();
    }
}

/// An agent whose image promises heartbeats (`autogen.heartbeat=true`) and writes none
/// is `starting` for HEARTBEAT_START_PERIOD_S after its container starts (no unhealthy
/// report), then unhealthy with a reason a person can act on, and restarted like any
/// unhealthy agent.
#[actix_rt::test]
async fn a_promised_heartbeat_that_never_comes_is_unhealthy_after_the_start_period() {
    let image = PromisingImage::build();
    let env = TestEnv::start(&[
        ("AGENT_IMAGE", image.0.as_str()),
        ("HEARTBEAT_INTERVAL_S", "1"),
        ("HEALTH_CHECK_INTERVAL_S", "1"),
        ("HEARTBEAT_START_PERIOD_S", "3"),
        ("UNHEALTHY_RESTART_AFTER", "2"),
    ])
    .await;
    let id = env.agent_id("promise");
    create_with(&env, &id, json!({"heartbeat": false}), 64).await;
    let aid = id.clone();
    let overdue = env
        .wait_event("agent.health unhealthy: no heartbeat", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["heartbeat"]["status"] == "overdue"
        })
        .await;
    assert_eq!(
        overdue.details["health"], "unhealthy",
        "{}",
        overdue.details
    );
    assert_eq!(overdue.status, "unhealthy");
    let why = overdue.details["heartbeat"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for says in [
        "autogen.heartbeat=true",
        "none came in 3 s since it started",
        "AGENT_REDIS_URL",
    ] {
        assert!(why.contains(says), "{why}");
    }
    // Not before the start period was over.
    let started = env
        .inspect(&id)
        .await
        .and_then(|c| c.state)
        .and_then(|s| s.started_at)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .expect("the container's start");
    let reported = chrono::DateTime::parse_from_rfc3339(&overdue.timestamp).expect("timestamp");
    assert!(
        reported - started >= chrono::Duration::milliseconds(2_900),
        "reported {} after the start",
        reported - started
    );
    // Before it: `starting`, never unhealthy.
    let before: Vec<String> = env
        .events_of(&id)
        .iter()
        .filter(|e| e.event.routing_key() == "agent.health")
        .take_while(|e| e.event_id != overdue.event_id)
        .map(|e| e.details["health"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|h| h == "starting"),
        "{before:?}"
    );
    let aid = id.clone();
    let restarted = env
        .wait_event("agent.restarted: no heartbeat", DEADLINE, move |e| {
            is(e, &aid, "agent.restarted")
        })
        .await;
    assert_eq!(restarted.details["reason"], "unhealthy");
    let last_error = restarted.details["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("autogen.heartbeat=true"),
        "{last_error}"
    );
    env.finish().await;
}

/// An agent that never heartbeats is judged by its container alone: it runs, so it
/// stays running, and its missing heartbeat key is no reason to restart it.
#[actix_rt::test]
async fn agent_without_heartbeat_is_judged_by_its_container() {
    let env = TestEnv::start(BEATS).await;
    let id = env.agent_id("quiet");
    create_with(&env, &id, json!({"heartbeat": false}), 64).await;
    // Well past three heartbeat intervals and a few looks.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events = env.events_of(&id);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event.routing_key(), "agent.restarted" | "agent.error")),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .filter(|e| e.event.routing_key() == "agent.health")
        .all(|e| e.details["health"] == "none" && e.details.get("heartbeat").is_none()));
    let r = env.record(&id).await;
    assert_eq!(r["status"], "running");
    assert_eq!(r["last_heartbeat_at"], "");
    assert!(env.running(&id).await);
    env.finish().await;
}

/// Samples read from the container's cgroup files say what Docker's stats API says.
#[actix_rt::test]
async fn cgroup_samples_match_dockers() {
    use agent_manager::runtime::cgroup::CgroupReader;
    use agent_manager::runtime::docker::DockerRuntime;
    use agent_manager::runtime::StatsOrigin;

    let env = TestEnv::start(&[("HEALTH_REPORT_INTERVAL_S", "1")]).await;
    let id = env.agent_id("cgroup");
    // No heartbeat: its `nc` would come and go between the two reads of pids.
    create_with(&env, &id, json!({"heartbeat": false}), 64).await;
    let container = env
        .inspect(&id)
        .await
        .and_then(|c| c.id)
        .expect("a container");
    // Past its start (a burst of short processes reading CONFIG): two processes now.
    let name = format!("agent-{id}");
    common::wait_until("the agent's 'started' log line", DEADLINE, || async {
        std::process::Command::new("docker")
            .args(["logs", &name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("started"))
    })
    .await;
    let reader = CgroupReader::new(&env.config.health.cgroup_root, &env.config.health.proc_root)
        .expect("this host's cgroup filesystem");
    let runtime = DockerRuntime::connect(&env.config).expect("docker");
    // Side by side, a few times (an idle agent's numbers barely move in between).
    for _ in 0..3 {
        let ours = reader
            .sample(&container)
            .expect("the container's cgroup files");
        let docker = runtime
            .docker_stats(&container)
            .await
            .expect("docker stats")
            .expect("a running container");
        assert_eq!(ours.origin, StatsOrigin::Cgroup);
        assert_eq!(docker.origin, StatsOrigin::Docker);
        assert_eq!(ours.memory_limit_bytes, docker.memory_limit_bytes);
        assert_eq!(ours.memory_limit_bytes, 64 * 1024 * 1024);
        assert_eq!(ours.pids, docker.pids);
        assert_eq!(ours.online_cpus, docker.online_cpus);
        // Docker's call takes a second (two samples): the agent's memory may move
        // meanwhile (seen: 0.96 MB ours, 0.51 MB Docker's a second later on a cold
        // host), so Docker's figure must lie within ours before and after it.
        let after = reader
            .sample(&container)
            .expect("the container's cgroup files");
        let slack = 256 * 1024;
        let low = ours
            .memory_bytes
            .min(after.memory_bytes)
            .saturating_sub(slack);
        let high = ours.memory_bytes.max(after.memory_bytes) + slack;
        assert!(
            (low..=high).contains(&docker.memory_bytes),
            "{ours:?} then {docker:?} then {after:?}"
        );
        // Docker read after us: as much CPU time or a little more.
        assert!(
            docker.cpu_total_ns >= ours.cpu_total_ns,
            "{ours:?} vs {docker:?}"
        );
        assert!(
            docker.cpu_total_ns - ours.cpu_total_ns < 200_000_000,
            "{ours:?} vs {docker:?}"
        );
        let (n1, n2) = (
            ours.network.expect("our counters"),
            docker.network.expect("docker's"),
        );
        assert!(
            n1.rx_bytes <= n2.rx_bytes && n2.rx_bytes - n1.rx_bytes < 64 * 1024,
            "{n1:?} vs {n2:?}"
        );
        assert!(
            n1.tx_bytes <= n2.tx_bytes && n2.tx_bytes - n1.tx_bytes < 64 * 1024,
            "{n1:?} vs {n2:?}"
        );
        assert_eq!(ours.oom_kills, Some(0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The manager's own samples come from the files too.
    let aid = id.clone();
    let e = env
        .wait_event("agent.health with cgroup stats", DEADLINE, move |e| {
            is(e, &aid, "agent.health") && e.details["stats_source"] == "cgroup"
        })
        .await;
    assert_eq!(e.details["oom_kills"], 0);
    assert!(e.details["memory_bytes"].as_u64().is_some_and(|m| m > 0));
    env.finish().await;
}
