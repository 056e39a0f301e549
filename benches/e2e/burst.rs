//! The `burst` scenario: BURST_COMMANDS `agent.start` commands spread over BURST_AGENTS
//! running agents: command-to-answer latency, commands/s, every command answered once
//! and acked.

use agent_manager::metrics::Metric;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestEnv;
use crate::support::manager::{mean_ms, metric_sum_count, running_fleet, Series};
use crate::support::probe::CpuProbe;
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// A burst of `agent.start` commands for agents that already run: the manager's own
/// cost per command (Docker answers 304 to each start).
pub async fn burst(s: &Sizes) {
    let load_before = load();
    let (env, mut manager, admin, tap, ids) = running_fleet("b", s.burst_agents).await;
    // Let the creates' own looks and first stats settle.
    tokio::time::sleep(Duration::from_secs(if s.quick { 1 } else { 5 })).await;
    let commands = (0..s.burst_commands)
        .map(|i| {
            let id = &ids[i % ids.len()];
            (
                "agent.start",
                json!({"agent_id": id, "customer_id": env.customer()}),
            )
        })
        .collect();
    // Docker itself: as many start calls on the running containers (each answered 304)
    // at the manager's concurrency, straight through bollard.
    let workers = env.config.docker.max_concurrent_ops;
    let names: Vec<String> = (0..s.burst_commands)
        .map(|i| format!("agent-{}", ids[i % ids.len()]))
        .collect();
    let direct_probe = CpuProbe::start(None);
    let (direct_total, mut direct_calls) = direct_starts(&env, names, workers).await;
    let direct_cpu = direct_probe.percent();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let start_series: Series = (Metric::DockerCallDurationSeconds, &["start container"]);
    let command_series: Series = (Metric::CommandDurationSeconds, &["agent.start"]);
    let start_before = metric_sum_count(admin, start_series).await;
    let command_before = metric_sum_count(admin, command_series).await;
    let started_before = tap.count("agent.started");
    let probe = CpuProbe::start(Some(manager.pid()));
    let t0 = Instant::now();
    let sent = env.send_many(commands).await;
    let published_in = t0.elapsed();
    let deadline = Duration::from_secs(60 + s.burst_commands as u64 / 20);
    let all = tap
        .wait_count("agent.started", started_before + s.burst_commands, deadline)
        .await;
    let cpu = probe.percent();
    // Every command answered exactly once, with agent.started.
    let mut latency = Vec::new();
    let (mut once, mut missing, mut wrong) = (0, 0, 0);
    let mut last = t0;
    for (mid, published) in &sent {
        let answers = tap.answers(mid);
        match answers.as_slice() {
            [] => missing += 1,
            [one] if one == "agent.started" => once += 1,
            _ => wrong += 1,
        }
        if let Some(at) = tap.answered_at(mid, "agent.started") {
            latency.push(ms(at - *published));
            last = last.max(at);
        }
    }
    let total = last - t0;
    let command_mean = mean_ms(
        metric_sum_count(admin, command_series).await,
        command_before,
    );
    let start_call_mean = mean_ms(metric_sum_count(admin, start_series).await, start_before);
    let manager_rate = s.burst_commands as f64 / total.as_secs_f64();
    let direct_rate = s.burst_commands as f64 / direct_total.as_secs_f64();
    // Acked: a graceful stop settles what is in flight; anything not acked would be
    // back in the queue, ready, once the manager's channel closes.
    let exit = manager.terminate(Duration::from_secs(90));
    let left_in_queue = env.command_queue_ready().await;
    let result = json!({
        "agents": s.burst_agents,
        "commands": s.burst_commands,
        "quick": s.quick,
        "manager": "process (the binary cargo built for this bench)",
        "published_in_s": published_in.as_secs_f64(),
        "first_publish_to_last_answer_s": total.as_secs_f64(),
        "commands_per_s": manager_rate,
        "latency_ms": dist(&mut latency),
        "docker_direct_start_calls_per_s": direct_rate,
        "docker_direct_start_call_ms": dist(&mut direct_calls),
        "docker_direct_concurrency": workers,
        "docker_direct_cpu_percent_of_one_core": direct_cpu,
        "ratio_manager_over_docker_direct": manager_rate / direct_rate,
        "answered_once": once,
        "missing": missing,
        "answered_otherwise": wrong,
        "left_in_queue_after_stop": left_in_queue,
        "manager_exit": exit.map(|e| e.to_string()),
        "manager_command_duration_mean_ms": command_mean,
        "manager_docker_start_call_mean_ms": start_call_mean,
        "cpu_percent_of_one_core": cpu,
        "load_before": load_before,
        "load_after": load(),
    });
    write_result("burst", &result);
    assert!(all, "not every command was answered within {deadline:?}");
    assert_eq!(
        once, s.burst_commands,
        "every command answered exactly once"
    );
    assert_eq!(left_in_queue, 0, "every command acked");
    drop(manager);
    env.finish().await;
}

/// `docker start` of each of `names` (running containers: Docker answers 304) by
/// `workers` workers: the whole time, and each call's duration in ms.
pub async fn direct_starts(
    env: &TestEnv,
    names: Vec<String>,
    workers: usize,
) -> (Duration, Vec<f64>) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        names.into_iter().collect::<std::collections::VecDeque<_>>(),
    ));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, docker) = (queue.clone(), env.docker.clone());
        handles.push(actix_rt::spawn(async move {
            let mut calls = Vec::new();
            loop {
                let Some(name) = queue.lock().unwrap().pop_front() else {
                    return calls;
                };
                let t = Instant::now();
                match docker
                    .start_container(
                        &name,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                {
                    Ok(())
                    | Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 304,
                        ..
                    }) => {}
                    Err(e) => panic!("direct start of {name}: {e}"),
                }
                calls.push(ms(t.elapsed()));
            }
        }));
    }
    let mut calls = Vec::new();
    for h in handles {
        calls.extend(h.await.expect("direct worker"));
    }
    (t0.elapsed(), calls)
}
