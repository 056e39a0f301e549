//! The `detect` scenario: `docker kill` → `agent.health` (state exited) latency,
//! p50/p99 over KILLS kills spread over a few agents (each restarted by the manager in
//! between).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::docker::docker_events;
use crate::support::report::{percentile, write_result};
use crate::support::sizes::Sizes;

/// `docker kill` → `agent.health` with the exit.
pub async fn detect(s: &Sizes) {
    let env = TestEnv::start(&[
        ("RESTART_BACKOFF_BASE_MS", "50"),
        ("RESTART_BACKOFF_MAX_MS", "50"),
        ("CRASH_LOOP_MAX_RESTARTS", "100000"),
        ("HEALTH_CHECK_INTERVAL_S", "30"),
    ])
    .await;
    let ids: Vec<String> = (0..s.detect_agents)
        .map(|i| env.agent_id(&format!("det{i}")))
        .collect();
    for id in &ids {
        let mut body = env.create_body(id);
        body["resources"] = json!({"memory_mb": 32, "cpus": 0.25});
        let mid = env.send("agent.create", body).await;
        env.answer(&mid, "agent.started").await;
    }
    // Docker's own die events, as this process receives them: the manager's part of
    // the detection starts there.
    let dies = docker_events(&env, "die");
    let mut to_event = Vec::new();
    let mut kill_calls = Vec::new();
    let mut die_to_event = Vec::new();
    for k in 0..s.kills {
        let id = &ids[k % ids.len()];
        // The kill runs beside the wait: Docker's kill call returns only after its own
        // exit handling, often after the health event has already arrived.
        let t0 = Instant::now();
        let docker = env.docker.clone();
        let name = format!("agent-{id}");
        let kill = actix_rt::spawn(async move {
            docker
                .kill_container(
                    &name,
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await
                .expect("docker kill");
            t0.elapsed()
        });
        let aid = id.clone();
        env.wait_event("agent.health after kill", common::DEADLINE, move |e| {
            e.agent_id == aid
                && e.event.routing_key() == "agent.health"
                && e.details["state"] == "exited"
        })
        .await;
        let arrived = t0.elapsed();
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        // The die event may reach this process after the health event: wait for it.
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((_, die)) = dies.lock().unwrap().iter().rev().find(|(a, _)| a == id) {
                die_to_event.push((now_ns - die) as f64 / 1e6);
                break;
            }
            if Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = kill.await.expect("the kill task");
        dies.lock().unwrap().clear();
        to_event.push(arrived.as_secs_f64() * 1000.0);
        kill_calls.push(killed.as_secs_f64() * 1000.0);
        // Wait for the manager's restart before the next kill of this agent.
        let aid = id.clone();
        env.wait_event("agent.restarted", common::DEADLINE, move |e| {
            e.agent_id == aid && e.event.routing_key() == "agent.restarted"
        })
        .await;
        // Only events after this kill count for the next round.
        env.clear_events();
    }
    to_event.sort_by(f64::total_cmp);
    kill_calls.sort_by(f64::total_cmp);
    die_to_event.sort_by(f64::total_cmp);
    write_result(
        "detect",
        &json!({
            "kills": s.kills,
            "agents": s.detect_agents,
            "quick": s.quick,
            "kill_call_to_health_event_ms": {
                "p50": percentile(&to_event, 50.0), "p99": percentile(&to_event, 99.0),
                "max": to_event.last(),
            },
            "docker_kill_call_ms": {
                "p50": percentile(&kill_calls, 50.0), "p99": percentile(&kill_calls, 99.0),
                "max": kill_calls.last(),
            },
            "docker_die_event_to_health_event_ms": {
                "samples": die_to_event.len(),
                "p50": percentile(&die_to_event, 50.0), "p99": percentile(&die_to_event, 99.0),
                "max": die_to_event.last(),
            },
        }),
    );
    env.finish().await;
}
