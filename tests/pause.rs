//! Pause, resume and forced stop (contract section 9) on the real services: Docker's
//! freezer, the `paused` status and its events, a paused agent left alone by health
//! handling and the relist for longer than the unhealthy threshold, stop/restart/update/
//! delete of a paused agent, a manager restart and a Redis wipe that keep it paused,
//! swarm mode answering `unsupported`, every refusal, and the CLI's
//! `agents pause|resume|stop`.

mod common;

use std::time::{Duration, Instant};

use common::swarm::{Swarm, SwarmLock};
use common::{TestEnv, DEADLINE};
use serde_json::json;

/// Fast health handling: a look and a relist every second, unhealthy after 2 looks,
/// Docker's health check every second with one retry.
const FAST: &[(&str, &str)] = &[
    ("HEALTH_CHECK_INTERVAL_S", "1"),
    ("RELIST_INTERVAL_S", "1"),
    ("UNHEALTHY_RESTART_AFTER", "2"),
    ("CONTAINER_CHECK_INTERVAL_S", "1"),
    ("CONTAINER_CHECK_TIMEOUT_S", "1"),
    ("CONTAINER_CHECK_RETRIES", "1"),
    ("CONTAINER_CHECK_START_PERIOD_S", "1"),
    ("RESTART_BACKOFF_BASE_MS", "100"),
    ("RESTART_BACKOFF_MAX_MS", "400"),
];

/// Docker's `State.Paused` of the agent's container.
async fn docker_paused(env: &TestEnv, agent_id: &str) -> bool {
    env.inspect(agent_id)
        .await
        .and_then(|i| i.state)
        .and_then(|s| s.paused)
        .unwrap_or(false)
}

async fn started_at(env: &TestEnv, agent_id: &str) -> Option<String> {
    env.inspect(agent_id)
        .await
        .and_then(|i| i.state)
        .and_then(|s| s.started_at)
}

/// The agent's event stream: each entry's id and its fields joined (`event`, `event_id`,
/// `data`).
async fn stream(env: &TestEnv, agent_id: &str) -> Vec<(String, String)> {
    let entries: Vec<(String, Vec<(String, String)>)> = env
        .redis_query(
            redis::cmd("XRANGE")
                .arg(env.key(&format!("agent:{agent_id}:events")))
                .arg("-")
                .arg("+"),
        )
        .await;
    entries
        .into_iter()
        .map(|(id, fields)| {
            let text: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (id, text.join(" "))
        })
        .collect()
}

/// Waits until the manager has looked at the agent `looks` more times (each look writes
/// `last_health_at` into the record) and at least `span` has passed, so what follows
/// is what those looks decided.
async fn wait_for_looks(env: &TestEnv, agent_id: &str, looks: usize, span: Duration) {
    let since = Instant::now();
    let mut seen = std::collections::HashSet::new();
    if let Some(at) = env.record(agent_id).await.get("last_health_at") {
        seen.insert(at.clone());
    }
    let first = seen.len();
    loop {
        if let Some(at) = env.record(agent_id).await.get("last_health_at") {
            if !at.is_empty() {
                seen.insert(at.clone());
            }
        }
        if seen.len() - first >= looks && since.elapsed() >= span {
            return;
        }
        assert!(
            since.elapsed() < DEADLINE,
            "{looks} looks at {agent_id}: only {} within {DEADLINE:?}",
            seen.len() - first
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pause(env: &TestEnv, agent_id: &str) -> agent_manager::protocol::Event {
    let mid = env.command("agent.pause", agent_id, json!({})).await;
    env.answer(&mid, "agent.paused").await
}

#[actix_rt::test]
async fn pause_freezes_resume_thaws_and_both_are_idempotent() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("freeze");
    env.create_running(&id).await;

    let paused = pause(&env, &id).await;
    assert_eq!(paused.status, "paused");
    assert!(paused.container_id.is_some());
    assert!(docker_paused(&env, &id).await, "Docker froze the container");
    assert_eq!(env.record(&id).await["status"], "paused");
    assert_eq!(env.record(&id).await["desired_state"], "running");

    // Paused again: answered again, still paused.
    let again = pause(&env, &id).await;
    assert_eq!(again.status, "paused");
    assert!(docker_paused(&env, &id).await);

    let mid = env.command("agent.resume", &id, json!({})).await;
    let resumed = env.answer(&mid, "agent.resumed").await;
    assert_eq!(resumed.status, "running");
    assert!(!docker_paused(&env, &id).await);
    assert!(env.running(&id).await);
    assert_eq!(env.record(&id).await["status"], "running");

    // Resumed again: answered again.
    let mid = env.command("agent.resume", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.resumed").await.status, "running");

    // A start of a paused agent thaws it.
    pause(&env, &id).await;
    let mid = env.command("agent.start", &id, json!({})).await;
    let started = env.answer(&mid, "agent.started").await;
    assert_eq!(started.status, "running");
    assert!(!docker_paused(&env, &id).await);
    env.finish().await;
}

#[actix_rt::test]
async fn a_paused_agent_stays_paused_and_crash_free_past_the_unhealthy_threshold() {
    let env = TestEnv::start(FAST).await;
    let id = env.agent_id("frozen");
    env.create_running(&id).await;
    let before = started_at(&env, &id).await;
    pause(&env, &id).await;
    let seen_before = env.events_of(&id).len();
    // Looks every second, a relist every second, unhealthy after 2 looks; Docker's own
    // health check (every second) cannot run in a frozen container. Three times the
    // unhealthy threshold in looks, and as many seconds:
    wait_for_looks(&env, &id, 6, Duration::from_secs(6)).await;
    let since: Vec<String> = env.events_of(&id)[seen_before..]
        .iter()
        .map(|e| format!("{} {} {}", e.event.routing_key(), e.status, e.details))
        .collect();
    assert!(
        since.iter().all(|e| e.starts_with("agent.health paused")),
        "a paused agent was judged: {since:#?}"
    );
    assert!(docker_paused(&env, &id).await, "still frozen");
    assert_eq!(started_at(&env, &id).await, before, "never restarted");
    let r = env.record(&id).await;
    assert_eq!(r["status"], "paused");
    assert_eq!(r["restart_count"], "0");
    // Every look since the pause said so.
    let aid = id.clone();
    let health = env
        .wait_event("agent.health of the paused agent", DEADLINE, move |e| {
            e.agent_id == aid && e.event.routing_key() == "agent.health" && e.status == "paused"
        })
        .await;
    assert_eq!(health.details["state"], "paused");

    // Thawed: Docker's `unhealthy` from the frozen time is not held against it; its
    // next probe says healthy, and it was never restarted.
    let mid = env.command("agent.resume", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.resumed").await.status, "running");
    wait_for_looks(&env, &id, 4, Duration::from_secs(4)).await;
    let r = env.record(&id).await;
    assert_eq!(r["status"], "running", "{r:?}");
    assert_eq!(r["restart_count"], "0");
    assert_eq!(started_at(&env, &id).await, before, "never restarted");
    env.finish().await;
}

#[actix_rt::test]
async fn stop_restart_update_and_delete_work_on_a_paused_agent() {
    let env = TestEnv::start(&[]).await;
    let ids: Vec<String> = ["p-stop", "p-restart", "p-resize", "p-replace", "p-delete"]
        .iter()
        .map(|n| env.agent_id(n))
        .collect();
    for id in &ids {
        env.create_running(id).await;
        pause(&env, id).await;
    }
    let [stop, restart, resize, replace, delete] = ids.as_slice() else {
        panic!()
    };

    let mid = env
        .command("agent.stop", stop, json!({"timeout_s": 5}))
        .await;
    assert_eq!(env.answer(&mid, "agent.stopped").await.status, "stopped");
    assert!(!env.running(stop).await);

    let mid = env.command("agent.restart", restart, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.restarted").await.status, "running");
    assert!(env.running(restart).await && !docker_paused(&env, restart).await);

    let mid = env
        .command(
            "agent.update",
            resize,
            json!({"resources": {"memory_mb": 96}}),
        )
        .await;
    let updated = env.answer(&mid, "agent.updated").await;
    assert_eq!(updated.details["in_place"], true);
    assert_eq!(updated.status, "paused", "an update keeps it paused");
    assert!(docker_paused(&env, resize).await);
    let memory = env
        .inspect(resize)
        .await
        .and_then(|i| i.host_config)
        .and_then(|h| h.memory);
    assert_eq!(memory, Some(96 * 1024 * 1024));

    let old = env.inspect(replace).await.and_then(|i| i.id);
    let mid = env
        .command(
            "agent.update",
            replace,
            json!({"config": {"symbol": "ETH"}}),
        )
        .await;
    let updated = env.answer(&mid, "agent.updated").await;
    assert_eq!(updated.details["replaced"], true);
    assert_eq!(updated.status, "paused");
    assert_ne!(env.inspect(replace).await.and_then(|i| i.id), old);
    assert!(
        docker_paused(&env, replace).await,
        "the new container is frozen too"
    );

    let mid = env.command("agent.delete", delete, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert!(env.inspect(delete).await.is_none());
    assert!(env.record(delete).await.is_empty());
    env.finish().await;
}

#[actix_rt::test]
async fn a_manager_restart_and_a_redis_wipe_keep_a_paused_agent_paused() {
    let mut env = TestEnv::start(FAST).await;
    let id = env.agent_id("keep");
    env.create_running(&id).await;
    pause(&env, &id).await;
    let before = started_at(&env, &id).await;

    env.restart_manager().await;
    // The new manager has looked at it, past the unhealthy threshold.
    wait_for_looks(&env, &id, 3, Duration::ZERO).await;
    assert!(docker_paused(&env, &id).await);
    assert_eq!(env.record(&id).await["status"], "paused");

    // Redis loses everything of the test while the manager is down: the record is
    // rebuilt from the container, paused.
    let prefix = env.config.redis.prefix.clone();
    let mut redis = env.redis.clone();
    env.restart_manager_with(|| async move {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .expect("del");
        }
    })
    .await;
    // Rebuilt from the container at start, then looked at past the unhealthy threshold.
    wait_for_looks(&env, &id, 3, Duration::ZERO).await;
    let r = env.record(&id).await;
    assert_eq!(r["status"], "paused", "{r:?}");
    assert!(docker_paused(&env, &id).await);
    assert_eq!(started_at(&env, &id).await, before, "never restarted");
    // And it resumes from there.
    let mid = env.command("agent.resume", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.resumed").await.status, "running");
    env.finish().await;
}

#[actix_rt::test]
async fn pause_and_resume_are_refused_where_they_cannot_be() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("refuse");
    let mut body = env.create_body(&id);
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;

    // Not running: nothing to freeze; not paused: nothing to thaw.
    for rk in ["agent.pause", "agent.resume"] {
        let mid = env.command(rk, &id, json!({})).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "validation_failed", "{rk}");
        assert!(e.details["message"].as_str().unwrap().contains("created"));
    }
    // Unknown agent.
    let ghost = env.agent_id("ghost");
    let mid = env.command("agent.pause", &ghost, json!({})).await;
    assert_eq!(env.error_code(&mid).await.0, "not_found");

    // Another customer's: forbidden, and no trace on the owner's agent.
    let start = env.command("agent.start", &id, json!({})).await;
    env.answer(&start, "agent.started").await;
    let events_before = stream(&env, &id).await.len();
    let mut intruders = Vec::new();
    for rk in ["agent.pause", "agent.resume"] {
        let mid = env
            .send(rk, json!({"agent_id": id, "customer_id": "intruder"}))
            .await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "forbidden", "{rk}");
        assert_eq!(e.status, "failed");
        assert!(e.container_id.is_none());
        intruders.push(mid);
    }
    assert!(!docker_paused(&env, &id).await);
    // The owner's stream gained at most its own looks' `agent.health`, nothing of the
    // intruder's commands.
    let since = stream(&env, &id).await.split_off(events_before);
    for (entry, fields) in &since {
        assert!(
            fields.starts_with("event=agent.health ")
                && intruders.iter().all(|mid| !fields.contains(mid.as_str()))
                && !fields.contains("intruder"),
            "no trace on the owner's stream: {entry} {fields}"
        );
    }
    env.finish().await;
}

#[actix_rt::test]
async fn a_forced_stop_kills_at_once_and_says_who_and_why_until_the_next_start() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("force");
    let mut body = env.create_body(&id);
    // It ignores SIGTERM: a graceful stop would take the whole grace period.
    body["config"] = json!({"ignore_sigterm": true});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;

    let t0 = Instant::now();
    let mid = env
        .command(
            "agent.stop",
            &id,
            json!({"force": true, "timeout_s": 60, "requested_by": "ops-alice",
                   "reason": "runaway loop; api_key=sk-live-123 leaked"}),
        )
        .await;
    let stopped = env.answer(&mid, "agent.stopped").await;
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "no grace period: {:?}",
        t0.elapsed()
    );
    assert_eq!(stopped.details["force"], true);
    assert_eq!(stopped.details["timeout_s"], 0);
    assert_eq!(stopped.details["requested_by"], "ops-alice");
    let reason = stopped.details["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("runaway loop"), "{reason}");
    assert!(!reason.contains("sk-live-123"), "redacted: {reason}");
    let exit = env
        .inspect(&id)
        .await
        .and_then(|i| i.state)
        .and_then(|s| s.exit_code);
    assert_eq!(exit, Some(137), "killed");
    let r = env.record(&id).await;
    assert_eq!(r["stopped_by"], "ops-alice");
    assert_eq!(r["stop_reason"], reason);

    // Refused texts: too long, control characters.
    for bad in [
        json!({"reason": "x".repeat(501)}),
        json!({"reason": "a\u{1b}[2Jb"}),
    ] {
        let mid = env.command("agent.stop", &id, bad).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "validation_failed");
        assert!(e.details["message"].as_str().unwrap().contains("reason"));
    }
    assert_eq!(env.record(&id).await["stop_reason"], reason, "kept");

    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    let r = env.record(&id).await;
    assert_eq!(r["stopped_by"], "", "gone once it starts again");
    assert_eq!(r["stop_reason"], "");
    env.finish().await;
}

#[actix_rt::test]
async fn swarm_mode_answers_pause_and_resume_unsupported() {
    let swarm = Swarm::join(SwarmLock::acquire());
    let env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_NETWORK", &swarm.network),
    ])
    .await;
    let id = env.agent_id("swarm-pause");
    env.create_running(&id).await;
    for rk in ["agent.pause", "agent.resume"] {
        let mid = env.command(rk, &id, json!({})).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "unsupported", "{rk}");
        assert!(e.details["message"].as_str().unwrap().contains("swarm"));
    }
    assert_eq!(env.record(&id).await["status"], "running");
    env.finish().await;
    drop(swarm);
}

/// Runs the CLI with the test's configuration, off the test's thread (the in-process
/// manager answers meanwhile).
async fn cli(env: &TestEnv, args: &[&str], operator: Option<&str>) -> common::CommandOut {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-manager"));
    cmd.args(args).env_clear();
    for (k, v) in common::config_env(&env.config) {
        cmd.env(k, v);
    }
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("USER", "os-user");
    if let Some(name) = operator {
        cmd.env("AGENT_MANAGER_OPERATOR", name);
    }
    let what = format!("agent-manager {args:?}");
    tokio::task::spawn_blocking(move || common::run_bounded(cmd, Duration::from_secs(90), &what))
        .await
        .expect("the CLI's runner")
}

#[actix_rt::test]
async fn the_cli_pauses_resumes_and_force_stops_and_exits_1_on_agent_error() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("cli");
    env.create_running(&id).await;

    let out = cli(&env, &["agents", "pause", &id, "--wait"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("agent.paused"), "{}", out.stdout);
    assert!(docker_paused(&env, &id).await);

    let out = cli(&env, &["agents", "resume", &id, "-w", "-o", "json"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    let answer: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(answer["event"], "agent.resumed");
    assert!(!docker_paused(&env, &id).await);

    // The configured operator name, else the OS user, is who asked.
    let out = cli(
        &env,
        &[
            "agents",
            "stop",
            &id,
            "--force",
            "--reason",
            "maintenance window",
            "--wait",
        ],
        Some("ops-carol"),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let r = env.record(&id).await;
    assert_eq!(r["stopped_by"], "ops-carol");
    assert_eq!(r["stop_reason"], "maintenance window");
    let start = env.command("agent.start", &id, json!({})).await;
    env.answer(&start, "agent.started").await;
    let out = cli(&env, &["agents", "stop", &id, "--force", "--wait"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.record(&id).await["stopped_by"], "os-user");

    // Paused while stopped: agent.error, exit 1 with its code and message.
    let out = cli(&env, &["agents", "pause", &id, "--wait"], None).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("agent.error validation_failed") && out.stderr.contains("stopped"),
        "{}",
        out.stderr
    );
    // Unknown agent: exit 1 before anything is sent; a bad id: exit 2.
    let nobody = env.agent_id("nobody");
    let out = cli(&env, &["agents", "pause", &nobody], None).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let out = cli(&env, &["agents", "resume", "-bad"], None).await;
    assert_eq!(out.code, 2, "{out:?}");
    // Without --wait: sent, exit 0.
    let out = cli(&env, &["agents", "stop", &id], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("sent agent.stop"), "{}", out.stdout);
    env.finish().await;
}
