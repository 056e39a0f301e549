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
//! - `lifecycle`: LIFECYCLE_AGENTS agents created and started through RabbitMQ by a
//!   manager process (release build under `cargo bench`) with per-agent credentials,
//!   as many by a second one with `AGENT_CREDENTIALS=shared`, and as many containers
//!   created and started straight through bollard, same create body, same concurrency
//!   (`DOCKER_MAX_CONCURRENT_OPS` workers), in batches of LIFECYCLE_BATCH rotating
//!   which path goes first. Throughput, ratios, latency distributions.
//! - `burst`: BURST_COMMANDS `agent.start` commands spread over BURST_AGENTS running
//!   agents: command-to-answer latency, commands/s, every command answered once and acked.
//! - `scale`: SCALE_RUNNING running agents monitored at a 5 s interval (manager CPU and
//!   RSS, dockerd CPU), then SCALE_STOPPED created-but-stopped agents (RSS per agent).
//! - `recovery`: a manager restart (SIGTERM, start again) with RECOVERY_AGENTS running
//!   agents, RESTARTS times, beside the start with no agents: time to `/readyz` 200 and
//!   to the answer of a command published right at the process start; in each of
//!   RECOVERY_MODES (default `docker,swarm,gpu`).
//! - `machine`: what monitoring costs the whole machine. For each N in MACHINE_AGENTS
//!   (default `200,1000`): N agents started straight through bollard (same image,
//!   environment and heartbeats, no manager), whole-machine CPU from /proc/stat over
//!   MACHINE_WINDOW_S, then removed; then the same N under a manager process, the same
//!   window; side by side, with dockerd's, containerd's (and its shims'), Redis' and the
//!   manager's shares. Then HUNG_AGENTS agents that stop heartbeating, HUNG_ROUNDS times
//!   each (the manager restarts them): their heartbeat key's expiry (PTTL, to the ms) →
//!   the `agent.health` that reports them, p50/p99. Intervals: MACHINE_INTERVAL_S for
//!   heartbeats and checks alike (default 10, production's). With MACHINE_EXEC_PROBE=1,
//!   a last run of the same N under a manager that gives them the old default Docker
//!   HEALTHCHECK (an exec every 5 s), for the cost of the exec probe beside.
//! - `pause`: `agent.pause` → `agent.paused` latency over PAUSES pauses spread over
//!   PAUSE_AGENTS agents of a manager process (each resumed before its next pause),
//!   beside Docker's own pause call: the manager's own calls (its Prometheus histogram),
//!   and as many `docker pause` calls straight through bollard on plain containers of
//!   the same image and limits, interleaved. Also Docker's `pause` event → `agent.paused`
//!   (the manager's part after the freeze). Issue 17 goal: p99 < 100 ms beyond Docker's.
//! - `autogen`: the reference AutoGen agent (`autogen-agent:ref-<hash>`, which
//!   scripts/services.sh builds) under a manager process, its two-agent example team on
//!   the replay model client: `agent.create` → first task answered, for AUTOGEN_AGENTS
//!   agents one after another (the task is published right after the create, into an
//!   inbox the bench declared as the Core Engine may); then AUTOGEN_TASKS tasks one at a
//!   time to one agent, publish → result (round trip); then the agent's idle memory and
//!   CPU from its cgroup over AUTOGEN_IDLE_S.
//!
//! Results are printed and written to `target/bench-results/<scenario>.json`, with the
//! load average before and after each scenario (the figures are only comparable side
//! by side within one run).

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
    lifecycle_agents: usize,
    lifecycle_batch: usize,
    burst_agents: usize,
    burst_commands: usize,
    scale_running: usize,
    scale_stopped: usize,
    scale_window: Duration,
    recovery_agents: usize,
    restarts: usize,
    machine_agents: Vec<usize>,
    machine_window: Duration,
    machine_settle: Duration,
    machine_interval_s: u64,
    hung_agents: usize,
    hung_rounds: usize,
    machine_exec_probe: bool,
    pause_agents: usize,
    pauses: usize,
    autogen_agents: usize,
    autogen_tasks: usize,
    autogen_idle: Duration,
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
        lifecycle_agents: n("LIFECYCLE_AGENTS", 100, 5),
        lifecycle_batch: n("LIFECYCLE_BATCH", 25, 5),
        burst_agents: n("BURST_AGENTS", 50, 5),
        burst_commands: n("BURST_COMMANDS", 5000, 200),
        scale_running: n("SCALE_RUNNING", 200, 5),
        scale_stopped: n("SCALE_STOPPED", 1000, 10),
        scale_window: Duration::from_secs(n("SCALE_WINDOW_S", 60, 3) as u64),
        recovery_agents: n("RECOVERY_AGENTS", 200, 5),
        restarts: n("RESTARTS", 5, 1),
        machine_agents: std::env::var("MACHINE_AGENTS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| if quick { vec![3] } else { vec![200, 1000] }),
        machine_window: Duration::from_secs(n("MACHINE_WINDOW_S", 60, 3) as u64),
        machine_settle: Duration::from_secs(n("MACHINE_SETTLE_S", 30, 1) as u64),
        machine_interval_s: n("MACHINE_INTERVAL_S", 10, 1) as u64,
        hung_agents: n("HUNG_AGENTS", 20, 1),
        hung_rounds: n("HUNG_ROUNDS", 5, 1),
        machine_exec_probe: n("MACHINE_EXEC_PROBE", 0, 0) > 0,
        pause_agents: n("PAUSE_AGENTS", 5, 2),
        pauses: n("PAUSES", 200, 6),
        autogen_agents: n("AUTOGEN_AGENTS", 10, 1),
        autogen_tasks: n("AUTOGEN_TASKS", 100, 3),
        autogen_idle: Duration::from_secs(n("AUTOGEN_IDLE_S", 60, 2) as u64),
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

/// The load average (1, 5, 15 min), as /proc/loadavg says.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// p50, p99, max and mean of `ms` (sorted here).
fn dist(ms: &mut [f64]) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    json!({
        "n": ms.len(),
        "p50": percentile(ms, 50.0),
        "p99": percentile(ms, 99.0),
        "max": ms.last(),
        "mean": mean,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time of a few processes over a window, as % of one core.
struct CpuProbe {
    start: Instant,
    procs: Vec<(String, u32, Option<u64>)>,
}

impl CpuProbe {
    /// This bench process, `manager`, and dockerd, RabbitMQ (beam.smp) and Redis when
    /// found.
    fn start(manager: Option<u32>) -> CpuProbe {
        let mut procs: Vec<(String, u32)> = vec![("bench".into(), std::process::id())];
        if let Some(pid) = manager {
            procs.push(("manager".into(), pid));
        }
        for (name, exe) in [
            ("dockerd", "dockerd"),
            ("rabbitmq", "beam.smp"),
            ("redis", "redis-server"),
        ] {
            if let Some(pid) = pid_of(exe) {
                procs.push((name.into(), pid));
            }
        }
        CpuProbe {
            start: Instant::now(),
            procs: procs
                .into_iter()
                .map(|(n, p)| (n, p, cpu_ticks(p)))
                .collect(),
        }
    }

    /// name → % of one core since `start`.
    fn percent(&self) -> serde_json::Value {
        let secs = self.start.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for (name, pid, t0) in &self.procs {
            if let (Some(a), Some(b)) = (*t0, cpu_ticks(*pid)) {
                let pct = (b.saturating_sub(a)) as f64 / 100.0 / secs * 100.0;
                out.insert(name.clone(), json!((pct * 10.0).round() / 10.0));
            }
        }
        serde_json::Value::Object(out)
    }
}

/// A manager process for `env` whose admin endpoint listens on a port of its own.
fn spawn_manager(
    env: &TestEnv,
    overrides: &[(&str, &str)],
) -> (common::ManagerProcess, std::net::SocketAddr, Instant) {
    let mut vars = common::test_env_vars(&env.id, overrides);
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    vars.insert("ADMIN_LISTEN".into(), admin.to_string());
    let spawned = Instant::now();
    (common::ManagerProcess::spawn(&vars), admin, spawned)
}

/// Polls `/readyz` until it answers 200; the instant it did.
async fn wait_ready(
    manager: &mut common::ManagerProcess,
    admin: std::net::SocketAddr,
    deadline: Duration,
) -> Instant {
    let until = Instant::now() + deadline;
    loop {
        if let Ok((200, _)) = common::http_get(admin, "/readyz", Duration::from_secs(2)).await {
            return Instant::now();
        }
        if let Ok(Some(status)) = manager.child.try_wait() {
            panic!("the manager exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < until,
            "the manager was not ready within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `(sum, count)` of a Prometheus histogram series of the manager's `/metrics`.
async fn metric_sum_count(admin: std::net::SocketAddr, series: &str) -> Option<(f64, f64)> {
    let (_, text) = common::http_get(admin, "/metrics", Duration::from_secs(10))
        .await
        .ok()?;
    let value = |suffix: &str| -> Option<f64> {
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let key = if labels.is_empty() {
            format!("{name}{suffix}")
        } else {
            format!("{name}{suffix}{{{labels}")
        };
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    Some((value("_sum")?, value("_count")?))
}

/// Mean of a histogram series in ms, over everything it saw (or since `before`).
fn mean_ms(now: Option<(f64, f64)>, before: Option<(f64, f64)>) -> Option<f64> {
    let (sum, count) = now?;
    let (s0, c0) = before.unwrap_or((0.0, 0.0));
    (count > c0).then(|| (sum - s0) / (count - c0) * 1000.0)
}

/// A small agent: 32 MB, 0.1 CPU.
fn small_agent(env: &TestEnv, agent_id: &str) -> serde_json::Value {
    let mut body = env.create_body(agent_id);
    body["resources"] = json!({"memory_mb": 32, "cpus": 0.1});
    body
}

/// Creates (and, with `start`, starts) `ids` through the manager, all published at once;
/// panics unless every one is answered in time.
async fn create_all(env: &TestEnv, tap: &common::EventTap, ids: &[String], start: bool) {
    let commands = ids
        .iter()
        .map(|id| {
            let mut body = small_agent(env, id);
            if !start {
                body["auto_start"] = json!(false);
            }
            ("agent.create", body)
        })
        .collect();
    let sent = env.send_many(commands).await;
    let deadline = Duration::from_secs(120 + 2 * ids.len() as u64);
    let answer = if start {
        "agent.started"
    } else {
        "agent.created"
    };
    for (mid, _) in &sent {
        tap.wait_answer(mid, answer, deadline)
            .await
            .unwrap_or_else(|| panic!("{mid} not answered with {answer} within {deadline:?}"));
    }
}

/// Workload settings shared by the scenarios that run a manager process: production's
/// check interval, so monitoring does not dominate.
const PRODUCTION_LOOKS: [(&str, &str); 1] = [("HEALTH_CHECK_INTERVAL_S", "10")];

/// What one path of the lifecycle comparison measured.
struct PathResult {
    total: Duration,
    /// Submission → started, per agent, ms.
    latency: Vec<f64>,
}

/// N containers created and started straight through bollard by `workers` workers, with
/// exactly the create body the manager would send. Latency counts from the burst's start
/// (every container is asked for at once, as the manager's commands are).
async fn direct_path(env: &TestEnv, n: usize, workers: usize, tag: &str) -> (PathResult, Vec<f64>) {
    use agent_manager::protocol::{decode_command, Action, DesiredState};
    let policy = env.config.agent_policy();
    let mut queue = std::collections::VecDeque::new();
    for i in 0..n {
        let id = env.agent_id(&format!("d{tag}x{i}"));
        let body = small_agent(env, &id).to_string();
        let Ok(cmd) = decode_command("agent.create", None, body.as_bytes(), &policy) else {
            panic!("the bench's create body must be valid")
        };
        let Action::Create { spec, .. } = cmd.action else {
            panic!("a create")
        };
        let record = agent_manager::store::AgentRecord::new(&id, spec, DesiredState::Running);
        queue.push_back(agent_manager::runtime::spec::build(&record, &env.config));
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, docker) = (queue.clone(), env.docker.clone());
        handles.push(actix_rt::spawn(async move {
            let mut done = Vec::new();
            loop {
                let Some(spec) = queue.lock().unwrap().pop_front() else {
                    return done;
                };
                let picked = Instant::now();
                let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(&spec.name)
                    .build();
                let created = docker
                    .create_container(
                        Some(options),
                        agent_manager::runtime::docker::create_body(&spec),
                    )
                    .await
                    .expect("direct create");
                docker
                    .start_container(
                        &created.id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                    .expect("direct start");
                done.push((picked, Instant::now()));
            }
        }));
    }
    let mut latency = Vec::new();
    let mut service = Vec::new();
    let mut last = t0;
    for h in handles {
        for (picked, at) in h.await.expect("direct worker") {
            latency.push(ms(at - t0));
            service.push(ms(at - picked));
            last = last.max(at);
        }
    }
    (
        PathResult {
            total: last - t0,
            latency,
        },
        service,
    )
}

/// N agents created and started through RabbitMQ, every command published at once:
/// command published → `agent.started` received.
async fn manager_path(env: &TestEnv, tap: &common::EventTap, n: usize, tag: &str) -> PathResult {
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
const LIFECYCLE_OVERRIDES: [(&str, &str); 2] = [
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
async fn lifecycle(s: &Sizes) {
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
        let series = format!("agent_manager_docker_call_duration_seconds{{op=\"{op}\"}}");
        let mean = mean_ms(metric_sum_count(admin, &series).await, None);
        op_ms.insert(op.into(), json!(mean));
    }
    // What making each agent's own users cost (both services, per create).
    let issue_ms = mean_ms(
        metric_sum_count(
            admin,
            "agent_manager_credential_call_duration_seconds{op=\"issue\"}",
        )
        .await,
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

/// A manager process with production's looks, and `n` running agents `<prefix><i>`
/// created through it; the tap sees every event (the test's own consumer none).
async fn running_fleet(
    prefix: &str,
    n: usize,
) -> (
    TestEnv,
    common::ManagerProcess,
    std::net::SocketAddr,
    common::EventTap,
    Vec<String>,
) {
    let env = TestEnv::client_only(&PRODUCTION_LOOKS).await;
    let (mut manager, admin, _) = spawn_manager(&env, &PRODUCTION_LOOKS);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..n)
        .map(|i| env.agent_id(&format!("{prefix}{i}")))
        .collect();
    create_all(&env, &tap, &ids, true).await;
    (env, manager, admin, tap, ids)
}

/// A burst of `agent.start` commands for agents that already run: the manager's own
/// cost per command (Docker answers 304 to each start).
async fn burst(s: &Sizes) {
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

    let start_series = "agent_manager_docker_call_duration_seconds{op=\"start container\"}";
    let command_series = "agent_manager_command_duration_seconds{command=\"agent.start\"}";
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
async fn direct_starts(env: &TestEnv, names: Vec<String>, workers: usize) -> (Duration, Vec<f64>) {
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

/// Monitoring cost at scale, and the memory each created-but-stopped agent costs.
async fn scale(s: &Sizes) {
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
async fn scale_phase(
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

/// Wall-clock time of a record's `last_health_at`, if it has one.
fn last_health_at(record: &std::collections::HashMap<String, String>) -> Option<DateTime> {
    chrono::DateTime::parse_from_rfc3339(record.get("last_health_at")?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

type DateTime = chrono::DateTime<chrono::Utc>;

/// One manager start, timed from the process spawn.
struct TimedStart {
    manager: common::ManagerProcess,
    spawned: Instant,
    /// → `/readyz` 200.
    ready_ms: f64,
    /// → the answer of a command published right after the spawn.
    answered_ms: f64,
    answer: String,
}

async fn timed_start(
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
fn recovery_modes() -> Vec<String> {
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
async fn recovery(s: &Sizes, mode: &str) {
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

/// The whole machine's CPU counters (`/proc/stat`'s `cpu` line): (busy, total) ticks,
/// busy = user + nice + system + irq + softirq (guest time is inside user), total adds
/// idle, iowait and steal.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some((busy, busy + at(3) + at(4) + at(7)))
}

/// The pids of every process whose name (`comm`) is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Whole-machine CPU over a window, and the shares of the processes that matter, as %
/// of one core.
struct MachineProbe {
    start: Instant,
    machine: Option<(u64, u64)>,
    cpus: usize,
    /// (name, pids, ticks at the start).
    groups: Vec<(String, Vec<u32>, u64)>,
}

impl MachineProbe {
    fn start(manager: Option<u32>) -> MachineProbe {
        let mut groups: Vec<(String, Vec<u32>)> = vec![
            ("dockerd".into(), pids_named("dockerd")),
            ("containerd".into(), pids_named("containerd")),
            ("containerd_shims".into(), pids_named("containerd-shim")),
            ("redis".into(), pids_named("redis-server")),
            ("rabbitmq".into(), pids_named("beam.smp")),
            ("bench".into(), vec![std::process::id()]),
        ];
        if let Some(pid) = manager {
            groups.push(("manager".into(), vec![pid]));
        }
        let ticks = |pids: &[u32]| pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>();
        MachineProbe {
            start: Instant::now(),
            machine: machine_ticks(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            groups: groups
                .into_iter()
                .map(|(n, pids)| {
                    let t = ticks(&pids);
                    (n, pids, t)
                })
                .collect(),
        }
    }

    /// `{"machine": %, "<group>": %, ...}` since `start`, % of one core.
    fn percent(&self) -> serde_json::Value {
        let secs = self.start.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, machine_ticks()) {
            let share = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
            let pct = share * self.cpus as f64 * 100.0;
            out.insert("machine".into(), json!((pct * 10.0).round() / 10.0));
        }
        for (name, pids, t0) in &self.groups {
            let t1: u64 = pids.iter().filter_map(|p| cpu_ticks(*p)).sum();
            let pct = t1.saturating_sub(*t0) as f64 / 100.0 / secs * 100.0;
            out.insert(name.clone(), json!((pct * 10.0).round() / 10.0));
        }
        out.insert("window_s".into(), json!((secs * 10.0).round() / 10.0));
        serde_json::Value::Object(out)
    }
}

/// Stops, then removes, containers (names or ids), [`REMOVE_WORKERS`] at a time, every
/// call bounded; panics naming dockerd when one is not answered. A stop first, so the
/// agent exits on its SIGTERM and the remove kills nothing: dockerd 20.10 stalled for
/// good on 16 (and the CLI's 50) concurrent force-removes among 1,000 running
/// containers (a kill waiting for an exit event that never came).
async fn remove_all(env: &TestEnv, names: Vec<String>) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        names.into_iter().collect::<std::collections::VecDeque<_>>(),
    ));
    let mut handles = Vec::new();
    for _ in 0..REMOVE_WORKERS {
        let (queue, docker) = (queue.clone(), env.docker.clone());
        handles.push(actix_rt::spawn(async move {
            let mut unanswered = Vec::new();
            loop {
                let Some(name) = queue.lock().unwrap().pop_front() else {
                    return unanswered;
                };
                let bound = Duration::from_secs(60);
                let stop = bollard::query_parameters::StopContainerOptionsBuilder::new()
                    .t(10)
                    .build();
                if tokio::time::timeout(bound, docker.stop_container(&name, Some(stop)))
                    .await
                    .is_err()
                {
                    unanswered.push(format!("stop {name}"));
                    continue;
                }
                let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                if tokio::time::timeout(bound, docker.remove_container(&name, Some(remove)))
                    .await
                    .is_err()
                {
                    unanswered.push(format!("remove {name}"));
                }
            }
        }));
    }
    let mut unanswered = Vec::new();
    for h in handles {
        unanswered.extend(h.await.unwrap_or_default());
    }
    assert!(
        unanswered.is_empty(),
        "dockerd answered no call in 60 s for {} of them (first: {}); \
         it may need a restart (README, troubleshooting)",
        unanswered.len(),
        unanswered[0]
    );
}

/// How many containers [`remove_all`] stops and removes at once.
const REMOVE_WORKERS: usize = 4;

/// Removes, as [`remove_all`] does, every container of the test's instance left after
/// its manager is gone, before the test environment's cleanup would force-remove them
/// all through the CLI (50 at a time).
async fn remove_left(env: &TestEnv) {
    let left = env.containers().await;
    remove_all(env, left).await;
}

/// Hung agents, round after round: when each one's heartbeat key expired (polled PTTL,
/// so to the ms) and when the manager's `agent.health` saying so arrived.
async fn hung_latencies(
    env: &TestEnv,
    tap: &common::EventTap,
    ids: &[String],
    rounds: usize,
    interval_s: u64,
) -> (Vec<f64>, usize) {
    let keys: Vec<String> = ids
        .iter()
        .map(|id| env.key(&format!("agent:{id}:data:heartbeat")))
        .collect();
    let mut expiry: Vec<Option<Instant>> = vec![None; ids.len()];
    let mut expired: Vec<Vec<Instant>> = vec![Vec::new(); ids.len()];
    // A round: heartbeats for a while, silence, three intervals, the check interval.
    let until = Instant::now() + Duration::from_secs((rounds as u64 + 1) * 12 * interval_s + 120);
    while expired.iter().any(|e| e.len() < rounds) && Instant::now() < until {
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("PTTL").arg(k);
        }
        let mut conn = env.redis.clone();
        let ttls: Vec<i64> = pipe.query_async(&mut conn).await.unwrap_or_default();
        let now = Instant::now();
        for (i, ttl) in ttls.into_iter().enumerate() {
            if ttl > 0 {
                expiry[i] = Some(now + Duration::from_millis(ttl as u64));
            } else if ttl == -2 {
                if let Some(at) = expiry[i].take() {
                    expired[i].push(at);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last expiry's report may still be on its way: wait for every report, up to
    // the goal (the check interval and a second) and a second more.
    let deadline = Instant::now() + Duration::from_secs(interval_s + 2);
    loop {
        let seen = tap.state.lock().unwrap().health.clone();
        let (latency, missed) = match_expiries(ids, &expired, &seen);
        if missed == 0 || Instant::now() >= deadline {
            return (latency, missed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each expiry's first `agent.health` saying `expired` at or after it: the latencies
/// (ms) of those found, and how many have none.
fn match_expiries(
    ids: &[String],
    expired: &[Vec<Instant>],
    seen: &[common::HealthSeen],
) -> (Vec<f64>, usize) {
    let mut latency = Vec::new();
    let mut missed = 0;
    for (id, expiries) in ids.iter().zip(expired) {
        for at in expiries {
            let report = seen.iter().find(|h| {
                &h.agent_id == id
                    && h.heartbeat == "expired"
                    && h.at + Duration::from_millis(50) >= *at
            });
            match report {
                Some(h) => latency.push(ms(h.at.saturating_duration_since(*at))),
                None => missed += 1,
            }
        }
    }
    (latency, missed)
}

/// Whole-machine CPU of N agents bare and under the manager, and hung-agent reports.
async fn machine(s: &Sizes) {
    for &n in &s.machine_agents {
        machine_with(s, n).await;
    }
}

async fn machine_with(s: &Sizes, n: usize) {
    let load_before = load();
    let interval = s.machine_interval_s.to_string();
    let overrides = [
        ("HEALTH_CHECK_INTERVAL_S", interval.as_str()),
        ("HEARTBEAT_INTERVAL_S", interval.as_str()),
        ("HEALTH_REPORT_INTERVAL_S", "30"),
        // The hung agents are restarted at their first unhealthy look, so the rounds
        // follow each other quickly; nothing else is unhealthy.
        ("UNHEALTHY_RESTART_AFTER", "1"),
    ];
    let env = TestEnv::client_only(&overrides).await;
    let workers = env.config.docker.max_concurrent_ops;

    // 1. Bare: the agents' containers exactly as the manager would make them.
    let t0 = Instant::now();
    let (bare, _) = direct_path(&env, n, workers, "bare").await;
    let bare_started_in = t0.elapsed();
    assert_eq!(bare.latency.len(), n, "every bare agent started");
    tokio::time::sleep(s.machine_settle).await;
    let probe = MachineProbe::start(None);
    tokio::time::sleep(s.machine_window).await;
    let bare_cpu = probe.percent();
    // Printed now: a later phase that fails must not take this figure with it.
    eprintln!("machine-{n} bare: started in {bare_started_in:?}, {bare_cpu}");
    let names = (0..n)
        .map(|i| format!("agent-{}", env.agent_id(&format!("dbarex{i}"))))
        .collect();
    remove_all(&env, names).await;

    // 2. The same agents under the manager.
    let (mut manager, admin, _) = spawn_manager(&env, &overrides);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..n).map(|i| env.agent_id(&format!("m{i}"))).collect();
    let t0 = Instant::now();
    create_all(&env, &tap, &ids, true).await;
    let managed_started_in = t0.elapsed();
    tokio::time::sleep(s.machine_settle).await;
    let probe = MachineProbe::start(Some(manager.pid()));
    tokio::time::sleep(s.machine_window).await;
    let managed_cpu = probe.percent();
    let rss_mb = rss_kb(manager.pid()).map(|k| k as f64 / 1024.0);
    let restarts_meanwhile = tap.count("agent.restarted");

    // 3. Hung agents beside them: two heartbeats, then silence.
    let hung: Vec<String> = (0..s.hung_agents)
        .map(|i| env.agent_id(&format!("hung{i}")))
        .collect();
    let stop_after_ms = s.machine_interval_s * 1000 + 1000;
    let commands = hung
        .iter()
        .map(|id| {
            let mut body = small_agent(&env, id);
            body["config"] = json!({"heartbeat_stop_after_ms": stop_after_ms});
            ("agent.create", body)
        })
        .collect();
    env.send_many(commands).await;
    let (mut latency, missed) =
        hung_latencies(&env, &tap, &hung, s.hung_rounds, s.machine_interval_s).await;
    let samples = latency.len();
    let hung_ms = dist(&mut latency);
    let goal_ms = (s.machine_interval_s * 1000 + 1000) as f64;

    let pct = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let above = pct(&managed_cpu, "machine") - pct(&bare_cpu, "machine");
    let goal = if n <= 200 { 5.0 } else { 20.0 };
    write_result(
        &format!("machine-{n}"),
        &json!({
            "agents": n,
            "quick": s.quick,
            "interval_s": s.machine_interval_s,
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "window_s": s.machine_window.as_secs_f64(),
            "settle_s": s.machine_settle.as_secs_f64(),
            "manager": "process (the binary cargo built for this bench)",
            "bare_started_in_s": bare_started_in.as_secs_f64(),
            "managed_started_in_s": managed_started_in.as_secs_f64(),
            "cpu_percent_of_one_core_bare": bare_cpu,
            "cpu_percent_of_one_core_managed": managed_cpu,
            "machine_above_bare_percent_of_one_core": (above * 10.0).round() / 10.0,
            "goal_percent_of_one_core": goal,
            "goal_met": above <= goal,
            "manager_rss_mb": rss_mb,
            "restarts_during_window": restarts_meanwhile,
            "hung_agents": s.hung_agents,
            "hung_rounds": s.hung_rounds,
            "hung_expiry_to_report_ms": hung_ms,
            "hung_reports_missed": missed,
            "hung_goal_ms": goal_ms,
            "hung_goal_met": samples > 0 && missed == 0
                && hung_ms["p99"].as_f64().is_some_and(|p| p <= goal_ms),
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(manager);
    remove_left(&env).await;
    env.finish().await;
    if s.machine_exec_probe {
        machine_exec_probe(s, n, &overrides).await;
    }
    assert!(samples > 0, "no hung agent was seen expiring");
    assert_eq!(missed, 0, "every expiry is reported");
}

/// The same N agents under a manager that gives them the old default Docker
/// HEALTHCHECK (`test ! -e /tmp/unhealthy` every 5 s: an exec in every agent).
async fn machine_exec_probe(s: &Sizes, n: usize, overrides: &[(&str, &str)]) {
    let mut overrides = overrides.to_vec();
    overrides.push((
        "CONTAINER_HEALTHCHECK",
        "CMD-SHELL,test ! -e /tmp/unhealthy",
    ));
    overrides.push(("CONTAINER_CHECK_INTERVAL_S", "5"));
    let env = TestEnv::client_only(&overrides).await;
    let (mut manager, admin, _) = spawn_manager(&env, &overrides);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..n).map(|i| env.agent_id(&format!("p{i}"))).collect();
    let t0 = Instant::now();
    create_all(&env, &tap, &ids, true).await;
    let started_in = t0.elapsed();
    tokio::time::sleep(s.machine_settle).await;
    let probe = MachineProbe::start(Some(manager.pid()));
    tokio::time::sleep(s.machine_window).await;
    write_result(
        &format!("machine-{n}-exec-probe"),
        &json!({
            "agents": n,
            "quick": s.quick,
            "healthcheck": "CMD-SHELL test ! -e /tmp/unhealthy, every 5 s",
            "started_in_s": started_in.as_secs_f64(),
            "cpu_percent_of_one_core": probe.percent(),
            "load_after": load(),
        }),
    );
    drop(manager);
    remove_left(&env).await;
    env.finish().await;
}

/// Now, as nanoseconds since the epoch (Docker's event time's unit).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Plain containers of the agent image with the agents' limits, for Docker's own pause
/// call; labelled with the test's instance so the test's cleanup removes them too.
async fn plain_containers(env: &TestEnv, n: usize) -> Vec<String> {
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

/// Docker's `event` events (`die`, `pause`, ...) of the test's containers as they
/// arrive here: (agent id, Docker's own timestamp in ns, host clock), in arrival order.
type SeenEvents = std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>;

fn docker_events(env: &TestEnv, event: &str) -> SeenEvents {
    let seen = SeenEvents::default();
    let docker = env.docker.clone();
    let filters = std::collections::HashMap::from([
        ("event", vec![event.to_string()]),
        (
            "label",
            vec![format!("autogen.manager-instance={}", env.config.instance)],
        ),
    ]);
    let options = bollard::query_parameters::EventsOptionsBuilder::new()
        .filters(&filters)
        .build();
    let into = seen.clone();
    actix_rt::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = docker.events(Some(options));
        while let Some(Ok(e)) = stream.next().await {
            let id = e
                .actor
                .and_then(|a| a.attributes)
                .and_then(|mut a| a.remove("autogen.agent-id"))
                .unwrap_or_default();
            into.lock().unwrap().push((id, e.time_nano.unwrap_or(0)));
        }
    });
    seen
}

/// `agent.pause` → `agent.paused`, beside Docker's own pause call.
async fn pause(s: &Sizes) {
    let load_before = load();
    let (env, manager, admin, tap, ids) = running_fleet("p", s.pause_agents).await;
    let plain = plain_containers(&env, s.pause_agents).await;
    let paused_at = docker_events(&env, "pause");
    let docker = env.docker.clone();
    let bounded = Duration::from_secs(30);

    let pause_series = "agent_manager_docker_call_duration_seconds{op=\"pause container\"}";
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

/// The reference agent, its example team on the replay client: create → first answer,
/// task round trips, idle cost.
async fn autogen(s: &Sizes) {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let load_before = load();
    let image = common::reference_image().to_string();
    let team_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/images/autogen-agent/examples/analysis-risk-team.json"
    );
    let team: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(team_file).expect("the example team"))
            .expect("the example team's JSON");
    let looks = [
        ("HEALTH_CHECK_INTERVAL_S", "10"),
        ("AGENT_IMAGE", image.as_str()),
    ];
    let env = TestEnv::client_only(&looks).await;
    let (mut manager, admin, _) = spawn_manager(&env, &looks);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let exchange = env.config.rabbitmq.exchange.clone();
    let conn =
        lapin::Connection::connect(common::RABBITMQ_URL, lapin::ConnectionProperties::default())
            .await
            .expect("connect");
    let results = format!("bench-{}.results", env.id);
    // Bound to each agent's result key as the agent is made.
    let ch =
        common::bound_exclusive_queue(&conn, &results, &env.config.rabbitmq.exchange, &[]).await;
    let ids: Vec<String> = (0..s.autogen_agents)
        .map(|i| env.agent_id(&format!("ag{i}")))
        .collect();
    let next_result = |deadline: Duration| {
        let ch = ch.clone();
        let results = results.clone();
        async move {
            let until = Instant::now() + deadline;
            loop {
                let got = ch
                    .basic_get(results.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .expect("basic_get");
                if let Some(m) = got {
                    let v: serde_json::Value =
                        serde_json::from_slice(&m.delivery.data).expect("result JSON");
                    return (v, Instant::now());
                }
                assert!(Instant::now() < until, "no result within {deadline:?}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let task = |id: &str, task_id: &str| {
        json!({"task_id": task_id, "task": "Assess ACME", "agent": id}).to_string()
    };

    // Create → first task answered, one agent at a time.
    let mut first_answer = Vec::new();
    for id in &ids {
        // The manager makes the inbox when it handles the create (with the agent's
        // users); the task is published before that, so, as a Core Engine may, the bench
        // declares it first itself (durable, no arguments: the same queue).
        let inbox = common::declare_inbox(&ch, id).await;
        for (queue, key) in [
            (inbox.as_str(), format!("agent:{id}:task")),
            (results.as_str(), format!("agent:{id}:result")),
        ] {
            ch.queue_bind(
                queue.into(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        }
        let mut body = env.create_body(id);
        body["agent_type"] = json!("analysis");
        body["autogen_config"] = team.clone();
        body["resources"] = json!({"memory_mb": 512, "cpus": 1.0});
        let t0 = Instant::now();
        let sent = env.send_many(vec![("agent.create", body)]).await;
        env.publish_raw(
            &format!("agent:{id}:task"),
            task(id, "first").as_bytes(),
            None,
        )
        .await;
        let (result, at) = next_result(common::DEADLINE).await;
        assert_eq!(result["status"], "completed", "{result:#}");
        first_answer.push(ms(at - t0));
        tap.wait_answer(&sent[0].0, "agent.started", common::DEADLINE)
            .await
            .expect("agent.started");
    }

    // Round trips to one agent.
    let one = &ids[0];
    let mut round_trip = Vec::with_capacity(s.autogen_tasks);
    for k in 0..s.autogen_tasks {
        let t0 = Instant::now();
        env.publish_raw(
            &format!("agent:{one}:task"),
            task(one, &format!("rt-{k}")).as_bytes(),
            None,
        )
        .await;
        let (result, at) = next_result(common::DEADLINE).await;
        assert_eq!(result["task_id"], format!("rt-{k}"), "{result:#}");
        round_trip.push(ms(at - t0));
    }

    // Idle: memory and CPU from the container's cgroup.
    let full_id = env
        .inspect(one)
        .await
        .and_then(|c| c.id)
        .expect("the agent's container");
    let idle = agent_manager::runtime::cgroup::CgroupReader::new("/sys/fs/cgroup", "/proc")
        .and_then(|reader| {
            let a = reader.sample(&full_id)?;
            let t0 = Instant::now();
            std::thread::sleep(s.autogen_idle);
            let b = reader.sample(&full_id)?;
            let secs = t0.elapsed().as_secs_f64();
            Some(json!({
                "window_s": secs.round(),
                "cpu_percent_of_a_core":
                    ((b.cpu_total_ns - a.cpu_total_ns) as f64 / 1e9 / secs * 100.0 * 100.0).round()
                        / 100.0,
                "memory_working_set_mb": (b.memory_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
                "pids": b.pids,
            }))
        });

    write_result(
        "autogen",
        &json!({
            "image": image,
            "agents": s.autogen_agents,
            "tasks": s.autogen_tasks,
            "quick": s.quick,
            "team": "examples/analysis-risk-team.json (two agents, one tool call, replay client)",
            "create_to_first_answer_ms": dist(&mut first_answer),
            "task_round_trip_ms": dist(&mut round_trip),
            "idle_agent": idle,
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    for id in &ids {
        let mid = env
            .send(
                "agent.delete",
                json!({"agent_id": id, "customer_id": env.customer()}),
            )
            .await;
        tap.wait_answer(&mid, "agent.deleted", common::DEADLINE)
            .await;
        let _ = ch
            .queue_delete(
                format!("agent:{id}:inbox").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
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
        if wanted("lifecycle") {
            lifecycle(&s).await;
        }
        if wanted("burst") {
            burst(&s).await;
        }
        if wanted("scale") {
            scale(&s).await;
        }
        if wanted("pause") {
            pause(&s).await;
        }
        if wanted("recovery") {
            for mode in recovery_modes() {
                recovery(&s, &mode).await;
            }
        }
        if wanted("machine") {
            machine(&s).await;
        }
        if wanted("autogen") {
            autogen(&s).await;
        }
    });
}
