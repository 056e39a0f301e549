//! The `failover` scenario (contract section 12): FAILOVER_AGENTS running agents of one
//! installation, side by side in one run:
//! - **restart**: one manager, `kill -9`, a new process started at once (what a single
//!   manager's restart policy does): kill → the answer to a command published right
//!   after the kill, FAILOVERS times;
//! - **failover**: a leader and a standby, `kill -9` of the leader (a new standby started
//!   at once, so two run again): kill → the answer by the new leader, FAILOVERS times;
//! - **hand-over**: `SIGTERM` of the leader: signal → the answer by the new leader,
//!   HANDOVERS times;
//! - **standby cost**: the whole machine's CPU (`/proc/stat`) over FAILOVER_WINDOW_S
//!   with the leader alone, then with a standby beside it, and the lease's Redis
//!   traffic (renewals and standby tries per second, from the settings).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{EventTap, ManagerProcess, TestEnv};
use crate::machine::machine_ticks;
use crate::support::manager::{create_all, spawn_manager, wait_ready, PRODUCTION_LOOKS};
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// The lease settings the scenario runs with: the defaults, said out loud.
const LEASE: [(&str, &str); 3] = [
    ("LEADER_LEASE_MS", "2000"),
    ("LEADER_RENEW_MS", "500"),
    ("LEADER_RETRY_MS", "250"),
];

fn overrides() -> Vec<(&'static str, &'static str)> {
    PRODUCTION_LOOKS
        .iter()
        .chain(LEASE.iter())
        .copied()
        .collect()
}

/// The pid of the manager that leads now (the leader hash), once one does.
async fn leader_pid(env: &TestEnv, deadline: Duration) -> u32 {
    let key = format!("manager:{}:leader", env.config.instance);
    let until = Instant::now() + deadline;
    loop {
        let h = env.hash(&key).await;
        let live = h
            .get("expires_ms")
            .and_then(|e| e.parse::<u64>().ok())
            .is_some_and(|e| e > 0);
        if let (true, Some(pid)) = (live, h.get("pid").and_then(|p| p.parse().ok())) {
            return pid;
        }
        assert!(Instant::now() < until, "no leader within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `agent.start` for a running agent (answered `agent.started` at once by
/// whoever leads) and returns when it is answered: the instant.
async fn answered(env: &TestEnv, tap: &EventTap, agent_id: &str) -> Instant {
    let sent = env
        .send_many(vec![(
            "agent.start",
            json!({"agent_id": agent_id, "customer_id": env.customer()}),
        )])
        .await;
    let (event, at) = tap
        .wait_any_answer(&sent[0].0, Duration::from_secs(60))
        .await
        .expect("the command is answered within 60 s");
    assert_eq!(event, "agent.started", "answered by a leader");
    at
}

/// Whole-machine CPU, % of one core, over `window`.
async fn machine_percent(window: Duration) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let a = machine_ticks().expect("/proc/stat");
    tokio::time::sleep(window).await;
    let b = machine_ticks().expect("/proc/stat");
    let busy = b.0.saturating_sub(a.0) as f64;
    let total = b.1.saturating_sub(a.1).max(1) as f64;
    busy / total * cores * 100.0
}

pub async fn failover(s: &Sizes) {
    let load_before = load();
    let overrides = overrides();
    let env = TestEnv::client_only(&overrides).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..s.failover_agents)
        .map(|i| env.agent_id(&format!("fo{i}")))
        .collect();
    let (mut first, admin, _) = spawn_manager(&env, &overrides);
    wait_ready(&mut first, admin, Duration::from_secs(60)).await;
    create_all(&env, &tap, &ids, true).await;

    // One manager: kill -9, a new one at once.
    let mut restart_ms = Vec::new();
    let mut only = first;
    for i in 0..s.failovers {
        let killed = Instant::now();
        only.kill9();
        only = spawn_manager(&env, &overrides).0;
        let at = answered(&env, &tap, &ids[i % ids.len()]).await;
        restart_ms.push(ms(at - killed));
    }

    // A leader and a standby.
    let mut managers: Vec<ManagerProcess> = vec![only, spawn_manager(&env, &overrides).0];
    let mut failover_ms = Vec::new();
    for i in 0..s.failovers {
        // The standby is up (connected, its election running) before the kill.
        tokio::time::sleep(Duration::from_millis(if s.quick { 500 } else { 2000 })).await;
        let pid = leader_pid(&env, Duration::from_secs(30)).await;
        let killed = Instant::now();
        if let Some(m) = managers.iter_mut().find(|m| m.pid() == pid) {
            m.kill9();
        }
        managers.retain(|m| m.pid() != pid);
        let at = answered(&env, &tap, &ids[i % ids.len()]).await;
        failover_ms.push(ms(at - killed));
        managers.push(spawn_manager(&env, &overrides).0);
    }

    let mut handover_ms = Vec::new();
    for i in 0..s.handovers {
        tokio::time::sleep(Duration::from_millis(if s.quick { 500 } else { 2000 })).await;
        let pid = leader_pid(&env, Duration::from_secs(30)).await;
        let signalled = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let at = answered(&env, &tap, &ids[i % ids.len()]).await;
        handover_ms.push(ms(at - signalled));
        if let Some(m) = managers.iter_mut().find(|m| m.pid() == pid) {
            let exit = m.terminate(Duration::from_secs(60));
            assert!(exit.is_some_and(|e| e.success()), "a clean exit: {exit:?}");
        }
        managers.retain(|m| m.pid() != pid);
        managers.push(spawn_manager(&env, &overrides).0);
    }

    // The standby's cost: the leader alone, then with a standby, same agents.
    tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 10 })).await;
    let pid = leader_pid(&env, Duration::from_secs(30)).await;
    for m in managers.iter_mut().filter(|m| m.pid() != pid) {
        m.kill9();
    }
    managers.retain(|m| m.pid() == pid);
    tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 10 })).await;
    let alone = machine_percent(s.failover_window).await;
    managers.push(spawn_manager(&env, &overrides).0);
    tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 10 })).await;
    let with_standby = machine_percent(s.failover_window).await;
    let alone2 = {
        let standby = managers.pop();
        drop(standby);
        tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 5 })).await;
        machine_percent(s.failover_window).await
    };
    // Lease traffic from the settings: one renewal per LEADER_RENEW_MS by the leader,
    // one try per LEADER_RETRY_MS by each standby, each one EVALSHA of a few hundred bytes.
    let renewals_per_s = 1000.0 / 500.0;
    let tries_per_s = 1000.0 / 250.0;

    let (mut r, mut f, mut h) = (restart_ms.clone(), failover_ms.clone(), handover_ms.clone());
    let result = json!({
        "agents": ids.len(),
        "failovers": s.failovers,
        "lease": {"lease_ms": 2000, "renew_ms": 500, "retry_ms": 250},
        "single_manager_restart_ms": dist(&mut r),
        "failover_ms": dist(&mut f),
        "handover_ms": dist(&mut h),
        "machine_percent_of_one_core": {
            "leader_alone": alone,
            "leader_and_standby": with_standby,
            "leader_alone_again": alone2,
        },
        "lease_redis_calls_per_s": {"leader": renewals_per_s, "each_standby": tries_per_s},
        "load_before": load_before,
        "load_after": load(),
    });
    println!(
        "failover: {} agents; kill -9 of the only manager → answer p50 {:.0} ms p99 {:.0} ms; \
         kill -9 of the leader → answer by the standby p50 {:.0} ms p99 {:.0} ms (goal ≤ 3000); \
         SIGTERM hand-over p50 {:.0} ms max {:.0} ms (goal ≤ 1000); machine {:.1} % alone, \
         {:.1} % with a standby, {:.1} % alone again (goal: standby ≤ 1 point)",
        ids.len(),
        result["single_manager_restart_ms"]["p50"]
            .as_f64()
            .unwrap_or(0.0),
        result["single_manager_restart_ms"]["p99"]
            .as_f64()
            .unwrap_or(0.0),
        result["failover_ms"]["p50"].as_f64().unwrap_or(0.0),
        result["failover_ms"]["p99"].as_f64().unwrap_or(0.0),
        result["handover_ms"]["p50"].as_f64().unwrap_or(0.0),
        result["handover_ms"]["max"].as_f64().unwrap_or(0.0),
        alone,
        with_standby,
        alone2,
    );
    write_result("failover", &result);
    drop(managers);
    env.finish().await;
}
