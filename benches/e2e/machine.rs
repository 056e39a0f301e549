//! The `machine` scenario: what monitoring costs the whole machine. For each N in
//! MACHINE_AGENTS (default `200,1000`): N agents started straight through bollard (same
//! image, environment and heartbeats, no manager), whole-machine CPU from /proc/stat
//! over MACHINE_WINDOW_S, then removed; then the same N under a manager process, the
//! same window; side by side, with dockerd's, containerd's (and its shims'), Redis' and
//! the manager's shares. Then HUNG_AGENTS agents that stop heartbeating, HUNG_ROUNDS
//! times each (the manager restarts them): their heartbeat key's expiry (PTTL, to the
//! ms) → the `agent.health` that reports them, p50/p99. Intervals: MACHINE_INTERVAL_S
//! for heartbeats and checks alike (default 10, production's). With
//! MACHINE_EXEC_PROBE=1, a last run of the same N under a manager that gives them the
//! old default Docker HEALTHCHECK (an exec every 5 s), for the cost of the exec probe
//! beside.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::docker::direct_path;
use crate::support::manager::{create_all, small_agent, spawn_manager, wait_ready};
use crate::support::probe::{cpu_ticks, rss_kb};
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// The whole machine's CPU counters (`/proc/stat`'s `cpu` line): (busy, total) ticks,
/// busy = user + nice + system + irq + softirq (guest time is inside user), total adds
/// idle, iowait and steal.
pub fn machine_ticks() -> Option<(u64, u64)> {
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
pub fn pids_named(name: &str) -> Vec<u32> {
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
pub struct MachineProbe {
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
pub async fn remove_all(env: &TestEnv, names: Vec<String>) {
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
pub const REMOVE_WORKERS: usize = 4;

/// Removes, as [`remove_all`] does, every container of the test's instance left after
/// its manager is gone, before the test environment's cleanup would force-remove them
/// all through the CLI (50 at a time).
pub async fn remove_left(env: &TestEnv) {
    let left = env.containers().await;
    remove_all(env, left).await;
}

/// Hung agents, round after round: when each one's heartbeat key expired (polled PTTL,
/// so to the ms) and when the manager's `agent.health` saying so arrived.
pub async fn hung_latencies(
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
pub fn match_expiries(
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
pub async fn machine(s: &Sizes) {
    for &n in &s.machine_agents {
        machine_with(s, n).await;
    }
}

pub async fn machine_with(s: &Sizes, n: usize) {
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
pub async fn machine_exec_probe(s: &Sizes, n: usize, overrides: &[(&str, &str)]) {
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
