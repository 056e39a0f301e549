//! End-to-end benchmarks against the real RabbitMQ, Redis and Docker
//! (`bash scripts/services.sh` first).
//!
//!   cargo bench --bench e2e                      # every scenario, full size
//!   E2E=detect cargo bench --bench e2e           # one scenario
//!   cargo test --bench e2e                       # quick smoke (tiny sizes), as CI runs it
//!
//! Scenarios:
//! - `detect`: `docker kill` → `agent.health` (state exited) latency, p50/p99 over
//!   KILLS kills spread over a few agents (each restarted by the manager in between).
//! - `monitor`: a manager process monitoring AGENTS running agents at a 5 s interval:
//!   its CPU % of one core and RSS over WINDOW seconds, with dockerd's CPU beside it.
//!
//! Results are printed and written to `target/bench-results/<scenario>.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestEnv;
use serde_json::json;

struct Sizes {
    quick: bool,
    detect_agents: usize,
    kills: usize,
    monitor_agents: usize,
    window: Duration,
}

fn sizes() -> Sizes {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = |var: &str, full: usize, small: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { small } else { full })
    };
    Sizes {
        quick,
        detect_agents: n("DETECT_AGENTS", 5, 2),
        kills: n("KILLS", 60, 4),
        monitor_agents: n("AGENTS", 100, 3),
        window: Duration::from_secs(n("WINDOW_S", 60, 6) as u64),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn write_result(name: &str, value: &serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    );
    println!(
        "{name}: {}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `docker kill` → `agent.health` with the exit.
async fn detect(s: &Sizes) {
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
    let dies: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>> = Default::default();
    {
        let dies = dies.clone();
        let docker = env.docker.clone();
        let filters = std::collections::HashMap::from([
            ("event", vec!["die".to_string()]),
            (
                "label",
                vec![format!("autogen.manager-instance={}", env.config.instance)],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        actix_rt::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = docker.events(Some(options));
            while let Some(Ok(e)) = stream.next().await {
                let id = e
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove("autogen.agent-id"))
                    .unwrap_or_default();
                // Docker's own timestamp of the death (host clock, ns).
                dies.lock().unwrap().push((id, e.time_nano.unwrap_or(0)));
            }
        });
    }
    let mut to_event = Vec::new();
    let mut to_event_after_kill = Vec::new();
    let mut die_to_event = Vec::new();
    for k in 0..s.kills {
        let id = &ids[k % ids.len()];
        let t0 = Instant::now();
        env.docker
            .kill_container(
                &format!("agent-{id}"),
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .expect("docker kill");
        let killed = t0.elapsed();
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
        dies.lock().unwrap().clear();
        to_event.push(arrived.as_secs_f64() * 1000.0);
        to_event_after_kill.push((arrived - killed).as_secs_f64() * 1000.0);
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
    to_event_after_kill.sort_by(f64::total_cmp);
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
            "kill_return_to_health_event_ms": {
                "p50": percentile(&to_event_after_kill, 50.0), "p99": percentile(&to_event_after_kill, 99.0),
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

/// CPU time (user + system, clock ticks) of a process, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pidof").arg(name).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A manager process monitoring running agents at a 5 s interval.
async fn monitor(s: &Sizes) {
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

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let s = sizes();
    let only = std::env::var("E2E").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    actix_rt::System::new().block_on(async {
        if wanted("detect") {
            detect(&s).await;
        }
        if wanted("monitor") {
            monitor(&s).await;
        }
    });
}
