//! The `pause` scenario: `agent.pause` → `agent.paused` latency over PAUSES pauses
//! spread over PAUSE_AGENTS agents of a manager process (each resumed before its next
//! pause), beside Docker's own pause call: the manager's own calls (its Prometheus
//! histogram), and as many `docker pause` calls straight through bollard on plain
//! containers of the same image and limits, interleaved. Also Docker's `pause` event →
//! `agent.paused` (the manager's part after the freeze). Issue 17 goal: p99 < 100 ms
//! beyond Docker's.

use agent_manager::metrics::Metric;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::docker::docker_events;
use crate::support::manager::{mean_ms, metric_sum_count, running_fleet, Series};
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// Now, as nanoseconds since the epoch (Docker's event time's unit).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Plain containers of the agent image with the agents' limits, for Docker's own pause
/// call; labelled with the test's instance so the test's cleanup removes them too.
pub async fn plain_containers(env: &TestEnv, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("pause-bench-{}-{i}", env.id);
        let body = bollard::models::ContainerCreateBody {
            image: Some(env.config.agents.image.clone()),
            labels: Some(std::collections::HashMap::from([(
                "autogen.manager-instance".to_string(),
                env.config.instance.clone(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                memory: Some(32 * 1024 * 1024),
                nano_cpus: Some(100_000_000),
                init: Some(true),
                // The agents' network (this host has no default bridge).
                network_mode: Some(env.config.docker.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(&name)
            .build();
        let docker = &env.docker;
        tokio::time::timeout(
            Duration::from_secs(60),
            docker.create_container(Some(options), body),
        )
        .await
        .expect("create within 60 s")
        .expect("create a plain container");
        tokio::time::timeout(
            Duration::from_secs(60),
            docker.start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            ),
        )
        .await
        .expect("start within 60 s")
        .expect("start it");
        names.push(name);
    }
    names
}

/// `agent.pause` → `agent.paused`, beside Docker's own pause call.
pub async fn pause(s: &Sizes) {
    let load_before = load();
    let (env, manager, admin, tap, ids) = running_fleet("p", s.pause_agents).await;
    let plain = plain_containers(&env, s.pause_agents).await;
    let paused_at = docker_events(&env, "pause");
    let docker = env.docker.clone();
    let bounded = Duration::from_secs(30);

    let pause_series: Series = (Metric::DockerCallDurationSeconds, &["pause container"]);
    let calls_before = metric_sum_count(admin, pause_series).await;
    let mut to_answer = Vec::with_capacity(s.pauses);
    let mut after_event = Vec::with_capacity(s.pauses);
    let mut docker_call = Vec::with_capacity(s.pauses);
    let mut no_event = 0;
    // Under load runc's freeze can give up ("unable to freeze"): counted on both paths,
    // not timed.
    let mut manager_refused = Vec::new();
    let mut docker_failed = Vec::new();
    for k in 0..s.pauses {
        let id = &ids[k % ids.len()];
        let seen_before = paused_at.lock().unwrap().len();
        let body = json!({"agent_id": id, "customer_id": env.customer()});
        let sent = env.send_many(vec![("agent.pause", body.clone())]).await;
        let (mid, at) = &sent[0];
        let (answer, arrived) = tap
            .wait_any_answer(mid, common::DEADLINE)
            .await
            .unwrap_or_else(|| panic!("{mid} not answered"));
        if answer == "agent.paused" {
            let arrived_ns = now_ns() - arrived.elapsed().as_nanos() as i64;
            to_answer.push(ms(arrived - *at));
            // Docker's event may reach this process after the manager's answer does.
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let found = paused_at.lock().unwrap()[seen_before..]
                    .iter()
                    .find(|(a, _)| a == id)
                    .map(|(_, t)| *t);
                if let Some(t) = found {
                    after_event.push((arrived_ns - t) as f64 / 1e6);
                    break;
                }
                if Instant::now() > until {
                    no_event += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let resumed = env.send_many(vec![("agent.resume", body)]).await;
            tap.wait_answer(&resumed[0].0, "agent.resumed", common::DEADLINE)
                .await
                .unwrap_or_else(|| panic!("{} not answered with agent.resumed", resumed[0].0));
        } else {
            manager_refused.push(format!("{answer}: {:?}", tap.answers(mid)));
        }

        let name = &plain[k % plain.len()];
        let t0 = Instant::now();
        let paused = tokio::time::timeout(bounded, docker.pause_container(name))
            .await
            .expect("docker pause within 30 s");
        match paused {
            Ok(()) => docker_call.push(ms(t0.elapsed())),
            Err(e) => docker_failed.push(e.to_string()),
        }
        // Unpausing a container the failed freeze left thawed answers 409: harmless.
        let _ = tokio::time::timeout(bounded, docker.unpause_container(name)).await;
    }
    let manager_call_mean = mean_ms(metric_sum_count(admin, pause_series).await, calls_before);
    let total = dist(&mut to_answer);
    let own = dist(&mut docker_call);
    let beyond =
        |p: &str| total[p].as_f64().unwrap_or(f64::NAN) - own[p].as_f64().unwrap_or(f64::NAN);
    let mean_beyond_own_calls =
        manager_call_mean.map(|call| total["mean"].as_f64().unwrap_or(f64::NAN) - call);
    write_result(
        "pause",
        &json!({
            "agents": s.pause_agents,
            "pauses": s.pauses,
            "quick": s.quick,
            "manager": "process (the binary cargo built for this bench)",
            "command_to_agent_paused_ms": total,
            "docker_pause_call_ms": own,
            "manager_docker_pause_call_mean_ms": manager_call_mean,
            "docker_pause_event_to_agent_paused_ms": dist(&mut after_event),
            "pause_events_missed": no_event,
            "manager_pauses_refused": manager_refused,
            "docker_pause_calls_failed": docker_failed,
            "beyond_docker_p50_ms": beyond("p50"),
            "beyond_docker_p99_ms": beyond("p99"),
            "mean_beyond_the_managers_own_pause_calls_ms": mean_beyond_own_calls,
            "goal_p99_beyond_docker_ms": 100,
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(manager);
    env.finish().await;
}
