//! The `monitor` scenario: a manager process monitoring AGENTS running agents at a 5 s
//! interval: its CPU % of one core and RSS over WINDOW seconds, with dockerd's CPU
//! beside it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::probe::{cpu_ticks, pid_of, rss_kb};
use crate::support::report::write_result;
use crate::support::sizes::Sizes;

/// A manager process monitoring running agents at a 5 s interval.
pub async fn monitor(s: &Sizes) {
    let overrides = [
        ("HEALTH_CHECK_INTERVAL_S", "5"),
        ("HEALTH_REPORT_INTERVAL_S", "30"),
    ];
    let env = TestEnv::client_only(&overrides).await;
    let vars = common::test_env_vars(&env.id, &overrides);
    let manager = common::ManagerProcess::spawn(&vars);
    let pid = manager.pid();
    let t0 = Instant::now();
    let mut mids = Vec::new();
    for i in 0..s.monitor_agents {
        let id = env.agent_id(&format!("mon{i}"));
        let mut body = env.create_body(&id);
        body["resources"] = json!({"memory_mb": 32, "cpus": 0.1});
        mids.push(env.send("agent.create", body).await);
    }
    for mid in &mids {
        env.answer(mid, "agent.started").await;
    }
    let started_in = t0.elapsed();
    // Let the start-up burst settle into steady monitoring, then measure a window.
    tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 10 })).await;
    let tick = 100.0; // USER_HZ
    let dockerd = pid_of("dockerd");
    let (m0, d0) = (cpu_ticks(pid), dockerd.and_then(cpu_ticks));
    let w0 = Instant::now();
    tokio::time::sleep(s.window).await;
    let secs = w0.elapsed().as_secs_f64();
    let (m1, d1) = (cpu_ticks(pid), dockerd.and_then(cpu_ticks));
    let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) as f64 / tick / secs * 100.0),
        _ => None,
    };
    write_result(
        "monitor",
        &json!({
            "agents": s.monitor_agents,
            "check_interval_s": 5,
            "window_s": secs,
            "quick": s.quick,
            "all_started_in_s": started_in.as_secs_f64(),
            "manager_cpu_percent_of_one_core": pct(m0, m1),
            "manager_rss_mb": rss_kb(pid).map(|k| k as f64 / 1024.0),
            "dockerd_cpu_percent_of_one_core": pct(d0, d1),
        }),
    );
    drop(manager);
    env.finish().await;
}
