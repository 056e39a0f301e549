//! Fault injection on the real services: the manager killed with SIGKILL in a burst of
//! creates, RabbitMQ restarted in a burst, Redis losing every key, dockerd restarted,
//! SIGTERM, a command queue someone else declared with other arguments. Afterwards
//! nothing is lost: every command answered, every agent with exactly one running
//! container and a correct record.
//!
//! These tests disturb shared services (RabbitMQ, dockerd), so they run one at a time.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{ManagerProcess, TestEnv, DEADLINE};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

/// One fault test at a time (they restart shared services).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FAST: &[(&str, &str)] = &[
    // Hundreds of containers on two cores: no HEALTHCHECK execs competing with the test.
    ("CONTAINER_HEALTHCHECK", "NONE"),
    ("HEALTH_CHECK_INTERVAL_S", "1"),
    ("RESTART_BACKOFF_BASE_MS", "100"),
    ("RESTART_BACKOFF_MAX_MS", "1000"),
    ("CRASH_LOOP_MAX_RESTARTS", "1000"),
];

fn small_create(env: &TestEnv, id: &str) -> serde_json::Value {
    let mut body = env.create_body(id);
    body["resources"] = json!({"memory_mb": 32, "cpus": 0.1});
    body
}

/// Waits until every agent runs in exactly one container and its record says so.
async fn assert_all_running(env: &TestEnv, ids: &[String]) {
    assert_running_beside(env, ids, 0).await
}

/// As [`assert_all_running`], with `stopped` more agents' containers (not running) beside.
async fn assert_running_beside(env: &TestEnv, ids: &[String], stopped: usize) {
    let until = Instant::now() + DEADLINE;
    for id in ids {
        loop {
            let record = env.record(id).await;
            if env.running(id).await && record.get("status").map(String::as_str) == Some("running")
            {
                let container = env.inspect(id).await.and_then(|c| c.id).unwrap_or_default();
                assert_eq!(
                    record["container_id"], container,
                    "{id}: record names its container"
                );
                break;
            }
            assert!(
                Instant::now() < until,
                "{id} is not running with a correct record: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Exactly one container per agent: names are unique, and no strays.
    let containers = env.containers().await;
    assert_eq!(
        containers.len(),
        ids.len() + stopped,
        "one container per agent, no strays"
    );
}

#[actix_rt::test]
async fn kill_9_during_a_burst_of_creates_loses_nothing_ten_times() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let mut manager = ManagerProcess::spawn(&vars);
    let mut all = Vec::new();
    for round in 0..10 {
        let ids: Vec<String> = (0..20)
            .map(|i| env.agent_id(&format!("r{round}a{i}")))
            .collect();
        let mut mids = Vec::new();
        for id in &ids {
            mids.push(env.send("agent.create", small_create(&env, id)).await);
        }
        // Kill it while the burst is being applied: after some, not all, answers.
        let first = mids[0].clone();
        env.wait_event("the burst under way", DEADLINE, move |e| {
            e.correlation_id.as_deref() == Some(first.as_str())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(37 * round as u64)).await;
        manager.kill9();
        manager = ManagerProcess::spawn(&vars);
        for mid in &mids {
            env.answer(mid, "agent.started").await;
        }
        all.extend(ids);
        assert_all_running(&env, &all).await;
    }
    // Nothing was answered with an error.
    let errors: Vec<_> = all
        .iter()
        .flat_map(|id| env.events_of(id))
        .filter(|e| e.event.routing_key() == "agent.error")
        .collect();
    assert!(errors.is_empty(), "errors: {errors:#?}");
    drop(manager);
    env.finish().await;
}

/// Restarts the RabbitMQ application (connections drop; durable queues and persistent
/// messages survive).
fn restart_rabbitmq() {
    for args in [["stop_app"], ["start_app"]] {
        let out = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn connect_with_retry() -> Connection {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(c) =
            Connection::connect(common::RABBITMQ_URL, ConnectionProperties::default()).await
        {
            return c;
        }
        assert!(Instant::now() < until, "RabbitMQ did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn rabbitmq_restart_during_a_burst_loses_no_event() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start(FAST).await;
    // A durable queue of our own collects the events across the restart.
    let conn = connect_with_retry().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("test-{}.durable-events", env.id);
    ch.queue_declare(
        queue.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for rk in ["agent.created", "agent.started", "agent.error"] {
        ch.queue_bind(
            queue.clone().into(),
            env.config.rabbitmq.exchange.clone().into(),
            rk.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let ids: Vec<String> = (0..20).map(|i| env.agent_id(&format!("mq{i}"))).collect();
    let mut mids = Vec::new();
    for id in &ids {
        mids.push(env.send("agent.create", small_create(&env, id)).await);
    }
    let first = mids[0].clone();
    env.wait_event("the burst under way", DEADLINE, move |e| {
        e.correlation_id.as_deref() == Some(first.as_str())
    })
    .await;
    restart_rabbitmq();

    // Count what reached the durable queue: every create answered with created and
    // started (duplicates from redelivery are allowed, losses are not).
    let conn = connect_with_retry().await;
    let ch = conn.create_channel().await.unwrap();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let until = Instant::now() + DEADLINE * 2;
    let complete = |seen: &HashMap<String, HashSet<String>>| {
        mids.iter().all(|m| {
            seen.get(m).is_some_and(|kinds| {
                kinds.contains("agent.created") && kinds.contains("agent.started")
            })
        })
    };
    while !complete(&seen) {
        assert!(Instant::now() < until, "events lost; seen: {seen:#?}");
        match ch
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(Some(msg)) => {
                let e: serde_json::Value = serde_json::from_slice(&msg.delivery.data).unwrap();
                assert_ne!(e["event"], "agent.error", "{e}");
                if let Some(c) = e["correlation_id"].as_str() {
                    seen.entry(c.to_string())
                        .or_default()
                        .insert(e["event"].as_str().unwrap_or_default().to_string());
                }
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("reading the durable queue: {e}"),
        }
    }
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    assert_all_running(&env, &ids).await;
    env.finish().await;
}

#[actix_rt::test]
async fn lost_redis_keys_are_rebuilt_live_and_at_start() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::start(FAST).await;
    let ids: Vec<String> = (0..3).map(|i| env.agent_id(&format!("rd{i}"))).collect();
    for id in &ids {
        env.create_running(id).await;
    }
    // One agent stopped on purpose: no periodic Docker look, its record still comes back.
    let resting = env.agent_id("rd-stopped");
    let mut body = env.create_body(&resting);
    body["auto_start"] = serde_json::json!(false);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;
    let prefix = env.config.redis.prefix.clone();
    let wipe = move || {
        let prefix = prefix.clone();
        async move {
            let client = redis::Client::open(common::REDIS_URL).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut c)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
    };
    // Live: the agent actors write their records back at their next look.
    wipe().await;
    assert_running_beside(&env, &ids, 1).await;
    common::wait_until("the stopped agent's record back", DEADLINE, || async {
        env.record(&resting).await.get("status").map(String::as_str) == Some("created")
    })
    .await;
    let members: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("agents")))
        .await;
    assert_eq!(members.len(), 4);
    // At start: rebuilt from the containers' labels and environment.
    env.restart_manager_with(wipe).await;
    for id in &ids {
        let r = env.record(id).await;
        assert_eq!(r["customer_id"], env.customer());
        assert_eq!(r["agent_type"], "trading");
        assert_eq!(r["status"], "running");
        assert_eq!(r["desired_state"], "running");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r["resources"]).unwrap()["memory_mb"],
            64
        );
    }
    let r = env.record(&resting).await;
    assert_eq!(
        (r["status"].as_str(), r["desired_state"].as_str()),
        ("stopped", "stopped")
    );
    let members: Vec<String> = env
        .redis_query(
            redis::cmd("SMEMBERS").arg(env.key(&format!("customer:{}:agents", env.customer()))),
        )
        .await;
    assert_eq!(members.len(), 4);
    env.finish().await;
}

#[actix_rt::test]
async fn dockerd_restart_agents_recovered() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start(FAST).await;
    let ids: Vec<String> = (0..3).map(|i| env.agent_id(&format!("dk{i}"))).collect();
    for id in &ids {
        env.create_running(id).await;
    }
    let pid = std::process::Command::new("pidof")
        .arg("dockerd")
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty(), "dockerd is not running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // Wait until it is gone, then bring it back the way CI does.
    let until = Instant::now() + DEADLINE;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < until, "dockerd did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "services.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // dockerd stopped the agents; the manager restarts them.
    assert_all_running(&env, &ids).await;
    env.finish().await;
}

#[actix_rt::test]
async fn sigterm_exits_cleanly_and_leaves_agents_running() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let mut manager = ManagerProcess::spawn(&vars);
    let id = env.agent_id("term");
    let mid = env.send("agent.create", small_create(&env, &id)).await;
    env.answer(&mid, "agent.started").await;
    let started_at = env.inspect(&id).await.unwrap().state.unwrap().started_at;
    // A command sent as the signal comes is finished and answered (by this manager if
    // it took it, else by the next one: nothing is lost either way).
    let restart = env.command("agent.restart", &id, json!({})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = manager
        .terminate(Duration::from_secs(30))
        .expect("exited within 30 s");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        env.running(&id).await,
        "agents keep running after the manager stops"
    );
    let mut manager = ManagerProcess::spawn(&vars);
    env.answer(&restart, "agent.restarted").await;
    let after = env.inspect(&id).await.unwrap().state.unwrap();
    assert!(after.running.unwrap());
    assert_ne!(after.started_at, started_at, "the restart was applied");
    // A manager restart does not restart running agents.
    manager.kill9();
    let mut manager = ManagerProcess::spawn(&vars);
    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    assert_eq!(
        env.inspect(&id).await.unwrap().state.unwrap().started_at,
        after.started_at
    );
    manager.kill9();
    env.finish().await;
}

#[actix_rt::test]
async fn commands_wait_while_redis_is_away_then_are_applied() {
    let _serial = SERIAL.lock().await;
    // One manager whose lease outlasts the pause: it keeps leading, and waits. (With
    // the default 2 s lease a 6 s Redis outage deposes it; the daemon then exits and
    // leads again once Redis is back: tests/leader.rs.)
    let mut vars: Vec<(&str, &str)> = FAST.to_vec();
    vars.extend([("LEADER_LEASE_MS", "30000"), ("LEADER_RENEW_MS", "1000")]);
    let env = TestEnv::start(&vars).await;
    let id = env.agent_id("paused");
    // Redis stops answering for 6 s (longer than the manager's probes and timeouts).
    let client = redis::Client::open(common::REDIS_URL).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(6000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let paused_at = Instant::now();
    // Let the manager notice, then send a command while Redis is away.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = env.admin_get("/readyz").await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < until, "readiness never went false");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mid = env.send("agent.create", small_create(&env, &id)).await;
    assert!(
        paused_at.elapsed() < Duration::from_secs(6),
        "sent while Redis was away"
    );
    // Not failed: applied once Redis is back.
    env.answer(&mid, "agent.started").await;
    assert!(env
        .answers(&mid)
        .iter()
        .all(|e| e.event.routing_key() != "agent.error"));
    let (status, _) = env.admin_get("/readyz").await;
    assert_eq!(status, 200);
    env.finish().await;
}

/// Someone declared the command queue before the manager, without its arguments (a
/// classic queue, no dead-lettering): the broker answers the manager's declaration
/// `PRECONDITION_FAILED`, which the typed [`agent_manager::broker::BrokerError`] tells
/// apart, and the manager uses the queue as it is (with a warning) instead of failing.
#[actix_rt::test]
async fn a_command_queue_declared_with_other_arguments_is_used_as_it_is() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let config = common::test_config(&id, &[]);
    struct Cleanup(agent_manager::Config);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            common::cleanup_test_resources(&self.0);
        }
    }
    let _cleanup = Cleanup(config.clone());
    let rabbit = &config.rabbitmq;
    let conn = connect_with_retry().await;
    let ch = conn.create_channel().await.expect("a channel");
    ch.queue_declare(
        rabbit.command_queue.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("a classic command queue");
    let manager = agent_manager::broker::connect(rabbit, "agent-manager.test")
        .await
        .expect("the manager's connection");
    // The declaration itself is refused as inequivalent...
    let refused = manager
        .create_channel()
        .await
        .expect("a channel")
        .queue_declare(
            rabbit.command_queue.clone().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            agent_manager::broker::topology::command_queue_arguments(rabbit),
        )
        .await
        .expect_err("other arguments");
    let typed = agent_manager::broker::BrokerError::Call {
        op: "declaring the command queue".into(),
        source: refused,
    };
    assert!(typed.is_precondition_failed(), "{typed}");
    // ...and the topology as a whole is declared, binding the queue as it is.
    agent_manager::broker::topology::declare(&manager, rabbit)
        .await
        .expect("the topology, with the queue as it is");
    let bound = ch
        .queue_declare(
            rabbit.command_queue.clone().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue is still there");
    assert_eq!(bound.message_count(), 0);
    let _ = manager.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
}
