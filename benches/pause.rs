//! Pause latency against the real RabbitMQ, Redis and Docker (`bash scripts/services.sh`
//! first): how long `agent.pause` takes to be answered with `agent.paused`, beside how
//! long Docker's own pause call takes (issue 17 goal: p99 under 100 ms beyond Docker's).
//!
//!   cargo bench --bench pause             # PAUSE_AGENTS agents, PAUSES pauses
//!   cargo test --bench pause              # quick smoke (tiny sizes), as CI runs it
//!
//! For each of PAUSES rounds, in turn over PAUSE_AGENTS agents of an in-process manager
//! (release build under `cargo bench`): publish `agent.pause`, time the arrival of its
//! `agent.paused` at a second consumer of the exchange, then resume it (not timed).
//! Interleaved with those, the same number of `docker pause` calls (bollard, straight to
//! dockerd) on as many plain containers of the agent image with the agents' limits, each
//! unpaused again. Also Docker's own `pause` event → `agent.paused` arrival: the
//! manager's part after Docker's freeze (its Redis write, its confirmed publish, the
//! broker's delivery). Written to `target/bench-results/pause.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestEnv;
use futures_util::StreamExt;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": percentile(&ms, 50.0),
        "p90_ms": percentile(&ms, 90.0),
        "p99_ms": percentile(&ms, 99.0),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn bench(quick: bool) {
    let n = |var: &str, full: usize, small: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { small } else { full })
    };
    let agents = n("PAUSE_AGENTS", 5, 2);
    let pauses = n("PAUSES", 200, 6);
    let load_before = load_average();
    let env = TestEnv::start(&[("HEALTH_CHECK_INTERVAL_S", "30")]).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..agents)
        .map(|i| env.agent_id(&format!("p{i}")))
        .collect();
    for id in &ids {
        let mut body = env.create_body(id);
        body["resources"] = json!({"memory_mb": 32, "cpus": 0.25});
        let sent = env.send_many(vec![("agent.create", body)]).await;
        tap.wait_answer(&sent[0].0, "agent.started", common::DEADLINE)
            .await
            .expect("the agent started");
    }
    // Plain containers of the same image and limits, for Docker's own pause call.
    let docker = env.docker.clone();
    let mut plain = Vec::new();
    for i in 0..agents {
        let name = format!("pause-bench-{}-{i}", env.id);
        let body = bollard::models::ContainerCreateBody {
            image: Some(env.config.agents.image.clone()),
            labels: Some(HashMap::from([(
                "autogen.manager-instance".to_string(),
                env.config.instance.clone(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                memory: Some(32 * 1024 * 1024),
                nano_cpus: Some(250_000_000),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(&name)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .expect("create a plain container");
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .expect("start it");
        plain.push(name);
    }
    // Docker's `pause` events, as this process receives them (Docker's own timestamp).
    let paused_at: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    {
        let paused_at = paused_at.clone();
        let docker = docker.clone();
        let filters = HashMap::from([
            ("event", vec!["pause".to_string()]),
            (
                "label",
                vec![format!("autogen.manager-instance={}", env.config.instance)],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        actix_rt::spawn(async move {
            let mut stream = docker.events(Some(options));
            while let Some(Ok(e)) = stream.next().await {
                let id = e
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove("autogen.agent-id"))
                    .unwrap_or_default();
                paused_at
                    .lock()
                    .unwrap()
                    .insert(id, e.time_nano.unwrap_or(0));
            }
        });
    }
    let mut to_answer = Vec::with_capacity(pauses);
    let mut docker_pause = Vec::with_capacity(pauses);
    let mut after_docker = Vec::with_capacity(pauses);
    for k in 0..pauses {
        let id = &ids[k % ids.len()];
        paused_at.lock().unwrap().remove(id);
        let body = json!({"agent_id": id, "customer_id": env.customer()});
        let sent = env.send_many(vec![("agent.pause", body.clone())]).await;
        let (mid, at) = &sent[0];
        let arrived = tap
            .wait_answer(mid, "agent.paused", common::DEADLINE)
            .await
            .expect("agent.paused");
        let arrived_ns = now_ns();
        to_answer.push((arrived - *at).as_secs_f64() * 1000.0);
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(t) = paused_at.lock().unwrap().get(id).copied() {
                after_docker.push((arrived_ns - t) as f64 / 1e6);
                break;
            }
            if Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let resumed = env.send_many(vec![("agent.resume", body)]).await;
        tap.wait_answer(&resumed[0].0, "agent.resumed", common::DEADLINE)
            .await
            .expect("agent.resumed");

        let name = &plain[k % plain.len()];
        let t0 = Instant::now();
        docker.pause_container(name).await.expect("docker pause");
        docker_pause.push(t0.elapsed().as_secs_f64() * 1000.0);
        docker
            .unpause_container(name)
            .await
            .expect("docker unpause");
    }
    for name in &plain {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .build();
        let _ = docker.remove_container(name, Some(options)).await;
    }
    let total = summary(to_answer);
    let own = summary(docker_pause);
    let beyond_p99 =
        total["p99_ms"].as_f64().unwrap_or(f64::NAN) - own["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let beyond_p50 =
        total["p50_ms"].as_f64().unwrap_or(f64::NAN) - own["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let result = json!({
        "agents": agents,
        "pauses": pauses,
        "command_to_agent_paused": total,
        "docker_pause_call": own,
        "docker_pause_event_to_agent_paused": summary(after_docker),
        "beyond_docker_p50_ms": beyond_p50,
        "beyond_docker_p99_ms": beyond_p99,
        "goal_p99_beyond_docker_ms": 100,
        "load_before": load_before,
        "load_after": load_average(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("pause.json"),
        serde_json::to_vec_pretty(&result).unwrap_or_default(),
    );
    println!(
        "pause: {}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    env.finish().await;
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    actix_rt::System::new().block_on(bench(quick));
}
