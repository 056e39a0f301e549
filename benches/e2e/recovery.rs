//! The `recovery` scenario: a manager restart (SIGTERM, start again) with
//! RECOVERY_AGENTS running agents, RESTARTS times, beside the start with no agents:
//! time to `/readyz` 200 and to the answer of a command published right at the process
//! start; in each of RECOVERY_MODES (default `docker,swarm,gpu`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::manager::{create_all, spawn_manager, wait_ready, PRODUCTION_LOOKS};
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// Wall-clock time of a record's `last_health_at`, if it has one.
pub fn last_health_at(record: &std::collections::HashMap<String, String>) -> Option<DateTime> {
    chrono::DateTime::parse_from_rfc3339(record.get("last_health_at")?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub type DateTime = chrono::DateTime<chrono::Utc>;

/// One manager start, timed from the process spawn.
pub struct TimedStart {
    manager: common::ManagerProcess,
    spawned: Instant,
    /// → `/readyz` 200.
    ready_ms: f64,
    /// → the answer of a command published right after the spawn.
    answered_ms: f64,
    answer: String,
}

pub async fn timed_start(
    env: &TestEnv,
    tap: &common::EventTap,
    agent_id: &str,
    overrides: &[(&str, &str)],
) -> TimedStart {
    let (mut manager, admin, spawned) = spawn_manager(env, overrides);
    let sent = env
        .send_many(vec![(
            "agent.start",
            json!({"agent_id": agent_id, "customer_id": env.customer()}),
        )])
        .await;
    let ready = wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let (answer, at) = tap
        .wait_any_answer(&sent[0].0, Duration::from_secs(60))
        .await
        .expect("the command sent at start is answered");
    TimedStart {
        manager,
        spawned,
        ready_ms: ms(ready - spawned),
        answered_ms: ms(at - spawned),
        answer,
    }
}

/// The deployment modes the recovery scenario runs in: `RECOVERY_MODES` (comma
/// separated), else all three.
pub fn recovery_modes() -> Vec<String> {
    std::env::var("RECOVERY_MODES")
        .unwrap_or_else(|_| "docker,swarm,gpu".into())
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Manager restart with running agents in `mode` (docker, swarm or gpu): adoption,
/// readiness, first answer. Swarm mode joins the node to a swarm for the run (one user
/// of the swarm at a time, as the swarm tests); GPU mode runs with a fake two-device
/// inventory and agents without GPUs, so it measures the GPU runtime's listing and
/// allocation reconciliation rather than GPUs.
pub async fn recovery(s: &Sizes, mode: &str) {
    let load_before = load();
    let swarm =
        (mode == "swarm").then(|| common::swarm::Swarm::join(common::swarm::SwarmLock::acquire()));
    let mut overrides: Vec<(&str, &str)> = PRODUCTION_LOOKS.to_vec();
    overrides.push(("DEPLOYMENT_MODE", mode));
    if let Some(swarm) = &swarm {
        overrides.push(("DOCKER_NETWORK", swarm.network.as_str()));
    }
    if mode == "gpu" {
        overrides.push(("GPU_DEVICES", "fake-gpu-0,fake-gpu-1"));
    }
    let env = TestEnv::client_only(&overrides).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..s.recovery_agents)
        .map(|i| env.agent_id(&format!("rec{i}")))
        .collect();
    // Baseline: a start with no agents (the command is answered not_found).
    let empty = timed_start(&env, &tap, &ids[0], &overrides).await;
    let mut manager = empty.manager;
    create_all(&env, &tap, &ids, true).await;
    let mut restarts = Vec::new();
    let (mut ready_ms, mut answer_ms, mut looked_ms) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..s.restarts {
        // Let the agents settle between restarts.
        tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 5 })).await;
        let exit = manager.terminate(Duration::from_secs(90));
        assert!(
            exit.is_some_and(|e| e.success()),
            "the manager stops cleanly on SIGTERM: {exit:?}"
        );
        let wall = chrono::Utc::now();
        let start = timed_start(&env, &tap, &ids[r % ids.len()], &overrides).await;
        manager = start.manager;
        let (ready, answered) = (start.ready_ms, start.answered_ms);
        assert_eq!(
            start.answer, "agent.started",
            "the command at start is served"
        );
        // Until every adopted agent has been looked at (its record's last look is
        // after the restart).
        let until = Instant::now() + Duration::from_secs(120);
        let looked = loop {
            let mut all = true;
            for id in &ids {
                if last_health_at(&env.record(id).await).is_none_or(|t| t < wall) {
                    all = false;
                    break;
                }
            }
            if all {
                break Some(ms(start.spawned.elapsed()));
            }
            if Instant::now() > until {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ready_ms.push(ready);
        answer_ms.push(answered);
        if let Some(l) = looked {
            looked_ms.push(l);
        }
        restarts.push(json!({
            "restart": r,
            "ready_ms": ready,
            "command_answered_ms": answered,
            "all_agents_looked_at_ms": looked,
        }));
    }
    let name = if mode == "docker" {
        "recovery".to_string()
    } else {
        format!("recovery-{mode}")
    };
    write_result(
        &name,
        &json!({
            "mode": mode,
            "agents": s.recovery_agents,
            "restarts": s.restarts,
            "quick": s.quick,
            "manager": "process (the binary cargo built for this bench); SIGTERM, then started again",
            "no_agents": {
                "ready_ms": empty.ready_ms,
                "command_answered_ms": empty.answered_ms,
                "answer": empty.answer,
            },
            "with_agents_ready_ms": dist(&mut ready_ms),
            "with_agents_command_answered_ms": dist(&mut answer_ms),
            "with_agents_all_looked_at_ms": dist(&mut looked_ms),
            "per_restart": restarts,
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(manager);
    env.finish().await;
    drop(swarm);
}
