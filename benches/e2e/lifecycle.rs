//! The `lifecycle` scenario: LIFECYCLE_AGENTS agents created and started through
//! RabbitMQ by a manager process (release build under `cargo bench`) with per-agent
//! credentials, as many by a second one with `AGENT_CREDENTIALS=shared`, and as many
//! containers created and started straight through bollard, same create body, same
//! concurrency (`DOCKER_MAX_CONCURRENT_OPS` workers), in batches of LIFECYCLE_BATCH
//! rotating which path goes first. Throughput, ratios, latency distributions.

use agent_manager::metrics::Metric;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::docker::{direct_path, PathResult};
use crate::support::manager::{mean_ms, metric_sum_count, small_agent, spawn_manager, wait_ready};
use crate::support::probe::CpuProbe;
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// N agents created and started through RabbitMQ, every command published at once:
/// command published → `agent.started` received.
pub async fn manager_path(
    env: &TestEnv,
    tap: &common::EventTap,
    n: usize,
    tag: &str,
) -> PathResult {
    let commands = (0..n)
        .map(|i| {
            let id = env.agent_id(&format!("m{tag}x{i}"));
            ("agent.create", small_agent(env, &id))
        })
        .collect();
    let t0 = Instant::now();
    let sent = env.send_many(commands).await;
    let deadline = Duration::from_secs(120 + 2 * n as u64);
    let mut latency = Vec::new();
    let mut last = t0;
    for (mid, published) in &sent {
        let at = tap
            .wait_answer(mid, "agent.started", deadline)
            .await
            .unwrap_or_else(|| panic!("{mid} not started within {deadline:?}"));
        latency.push(ms(at - *published));
        last = last.max(at);
    }
    PathResult {
        total: last - t0,
        latency,
    }
}

/// The lifecycle comparison's settings, for the manager and the direct path alike:
/// production's check interval, and no Docker HEALTHCHECK (its execs, on every running
/// container of both paths, would load dockerd more and more as the run goes on).
pub const LIFECYCLE_OVERRIDES: [(&str, &str); 2] = [
    ("HEALTH_CHECK_INTERVAL_S", "10"),
    ("CONTAINER_HEALTHCHECK", "NONE"),
];

/// Manager vs Docker itself: create + start throughput at the same concurrency, and the
/// cost of per-agent credentials: a manager with `AGENT_CREDENTIALS=per-agent` (the
/// default: users made in RabbitMQ and Redis before each container) beside one with
/// `shared`, each with its own exchange, queues and prefix. The agents go in batches,
/// rotating which of the three paths goes first (D P S, P S D, S D P, ...), so all see
/// the same Docker state (containers already running) and the same drift in the
/// machine's load.
pub async fn lifecycle(s: &Sizes) {
    let load_before = load();
    let n = s.lifecycle_agents;
    let shared_overrides = [
        LIFECYCLE_OVERRIDES[0],
        LIFECYCLE_OVERRIDES[1],
        ("AGENT_CREDENTIALS", "shared"),
    ];
    let env = TestEnv::client_only(&LIFECYCLE_OVERRIDES).await;
    let shared_env = TestEnv::client_only(&shared_overrides).await;
    let (mut manager, admin, _) = spawn_manager(&env, &LIFECYCLE_OVERRIDES);
    let (mut shared_manager, shared_admin, _) = spawn_manager(&shared_env, &shared_overrides);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    wait_ready(&mut shared_manager, shared_admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let shared_tap = shared_env.tap().await;
    shared_env.mute_events().await;
    let workers = env.config.docker.max_concurrent_ops;
    let batch = s.lifecycle_batch.clamp(1, n.max(1));
    // Per path (direct, per-agent manager, shared manager): total time, latencies.
    let mut totals = [Duration::ZERO; 3];
    let mut latency: [Vec<f64>; 3] = Default::default();
    let mut direct_service = Vec::new();
    const NAMES: [&str; 3] = ["direct", "manager_per_agent", "manager_shared"];
    let mut batches = Vec::new();
    let probe = CpuProbe::start(Some(manager.pid()));
    let shared_probe = CpuProbe::start(Some(shared_manager.pid()));
    let mut done = 0;
    let mut b = 0;
    while done < n {
        let size = batch.min(n - done);
        let tag = b.to_string();
        let mut took = [Duration::ZERO; 3];
        for step in 0..3 {
            if step > 0 && !s.quick {
                // The other path's tail (stats, looks after a start) settles first.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let path = (b + step) % 3;
            match path {
                0 => {
                    let (d, service) = direct_path(&env, size, workers, &tag).await;
                    took[0] = d.total;
                    latency[0].extend(d.latency);
                    direct_service.extend(service);
                }
                1 => {
                    let m = manager_path(&env, &tap, size, &tag).await;
                    took[1] = m.total;
                    latency[1].extend(m.latency);
                }
                _ => {
                    let m = manager_path(&shared_env, &shared_tap, size, &tag).await;
                    took[2] = m.total;
                    latency[2].extend(m.latency);
                }
            }
        }
        for (total, t) in totals.iter_mut().zip(took) {
            *total += t;
        }
        batches.push(json!({
            "agents": size,
            "first": NAMES[b % 3],
            "direct_s": took[0].as_secs_f64(),
            "manager_per_agent_s": took[1].as_secs_f64(),
            "manager_shared_s": took[2].as_secs_f64(),
            "load": load(),
        }));
        done += size;
        b += 1;
        if done < n && !s.quick {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let cpu = probe.percent();
    let shared_cpu = shared_probe.percent();
    let mut op_ms = serde_json::Map::new();
    for op in ["create container", "start container"] {
        let series = (Metric::DockerCallDurationSeconds, &[op][..]);
        let mean = mean_ms(metric_sum_count(admin, series).await, None);
        op_ms.insert(op.into(), json!(mean));
    }
    // What making each agent's own users cost (both services, per create).
    let issue_ms = mean_ms(
        metric_sum_count(admin, (Metric::CredentialCallDurationSeconds, &["issue"])).await,
        None,
    );
    let rate = |i: usize| n as f64 / totals[i].as_secs_f64();
    let (direct_rate, manager_rate, shared_rate) = (rate(0), rate(1), rate(2));
    let [direct_latency, manager_latency, shared_latency] = &mut latency;
    write_result(
        "lifecycle",
        &json!({
            "agents_per_path": n,
            "batch": batch,
            "concurrency": workers,
            "manager": "process (the binary cargo built for this bench); per-agent credentials (the default) and shared, two processes",
            "settings_all_paths": "HEALTH_CHECK_INTERVAL_S=10, CONTAINER_HEALTHCHECK=NONE, memory 32 MB, 0.1 CPU",
            "quick": s.quick,
            "direct_agents_per_s": direct_rate,
            "manager_agents_per_s": manager_rate,
            "manager_shared_agents_per_s": shared_rate,
            "ratio_manager_over_direct": manager_rate / direct_rate,
            "ratio_shared_over_direct": shared_rate / direct_rate,
            "ratio_per_agent_over_shared": manager_rate / shared_rate,
            "direct_latency_ms": dist(direct_latency),
            "manager_latency_ms": dist(manager_latency),
            "manager_shared_latency_ms": dist(shared_latency),
            "direct_create_plus_start_call_ms": dist(&mut direct_service),
            "manager_docker_call_mean_ms": op_ms,
            "manager_credential_issue_mean_ms": issue_ms,
            "cpu_percent_of_one_core": cpu,
            "shared_cpu_percent_of_one_core": shared_cpu,
            "batches": batches,
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(manager);
    drop(shared_manager);
    shared_env.finish().await;
    env.finish().await;
}
