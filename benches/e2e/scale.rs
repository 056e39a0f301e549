//! The `scale` scenario: SCALE_RUNNING running agents monitored at a 5 s interval
//! (manager CPU and RSS, dockerd CPU), then SCALE_STOPPED created-but-stopped agents
//! (RSS per agent).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::manager::{create_all, spawn_manager, wait_ready};
use crate::support::probe::{rss_kb, CpuProbe};
use crate::support::report::{load, write_result};
use crate::support::sizes::Sizes;

/// Monitoring cost at scale, and the memory each created-but-stopped agent costs.
pub async fn scale(s: &Sizes) {
    let load_before = load();
    let overrides = [
        ("HEALTH_CHECK_INTERVAL_S", "5"),
        ("HEALTH_REPORT_INTERVAL_S", "30"),
    ];
    let env = TestEnv::client_only(&overrides).await;
    let (mut manager, admin, _) = spawn_manager(&env, &overrides);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let pid = manager.pid();
    let tap = env.tap().await;
    env.mute_events().await;
    let rss_empty = rss_kb(pid);
    // Settling times: the start-up burst turns into steady monitoring.
    let (settle_running, settle_stopped) = if s.quick { (1, 1) } else { (10, 15) };
    let (started_in, cpu_running, rss_running) = scale_phase(
        &env,
        &tap,
        pid,
        ("r", s.scale_running, true),
        settle_running,
        s,
    )
    .await;
    let (created_in, cpu_with_stopped, rss_with_stopped) = scale_phase(
        &env,
        &tap,
        pid,
        ("s", s.scale_stopped, false),
        settle_stopped,
        s,
    )
    .await;
    let mb = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    let per_agent_kb = match (rss_running, rss_with_stopped) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) / s.scale_stopped as f64),
        _ => None,
    };
    write_result(
        "scale",
        &json!({
            "running": s.scale_running,
            "stopped": s.scale_stopped,
            "check_interval_s": 5,
            "window_s": s.scale_window.as_secs_f64(),
            "quick": s.quick,
            "manager": "process (the binary cargo built for this bench)",
            "running_all_started_in_s": started_in.as_secs_f64(),
            "stopped_all_created_in_s": created_in.as_secs_f64(),
            "rss_mb_no_agents": mb(rss_empty),
            "rss_mb_running": mb(rss_running),
            "rss_mb_running_and_stopped": mb(rss_with_stopped),
            "rss_kb_per_stopped_agent": per_agent_kb,
            "cpu_percent_of_one_core_running": cpu_running,
            "cpu_percent_of_one_core_running_and_stopped": cpu_with_stopped,
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(manager);
    env.finish().await;
}

/// Creates `n` agents named `<prefix><i>` (started or not), lets them settle for
/// `settle_s`, then measures the manager over the scale window: (time to create them all,
/// CPU probe, RSS at the end).
pub async fn scale_phase(
    env: &TestEnv,
    tap: &common::EventTap,
    pid: u32,
    (prefix, n, start): (&str, usize, bool),
    settle_s: u64,
    s: &Sizes,
) -> (Duration, serde_json::Value, Option<u64>) {
    let ids: Vec<String> = (0..n)
        .map(|i| env.agent_id(&format!("{prefix}{i}")))
        .collect();
    let t0 = Instant::now();
    create_all(env, tap, &ids, start).await;
    let created_in = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(settle_s)).await;
    let probe = CpuProbe::start(Some(pid));
    tokio::time::sleep(s.scale_window).await;
    (created_in, probe.percent(), rss_kb(pid))
}
