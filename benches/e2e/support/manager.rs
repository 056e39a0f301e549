//! A manager process for a scenario: spawned with an admin endpoint of its own, awaited
//! until ready, its Prometheus histograms read; agents created through it.

use std::time::{Duration, Instant};

use agent_manager::metrics::Metric;
use serde_json::json;

use crate::common::{self, TestEnv};

/// A manager process for `env` whose admin endpoint listens on a port of its own.
pub fn spawn_manager(
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
pub async fn wait_ready(
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

/// One series of a histogram the manager serves: the metric, and its label values in
/// the metric's declared label order.
pub type Series<'a> = (Metric, &'a [&'a str]);

/// `(sum, count)` of a Prometheus histogram series of the manager's `/metrics`.
pub async fn metric_sum_count(
    admin: std::net::SocketAddr,
    (metric, values): Series<'_>,
) -> Option<(f64, f64)> {
    let (_, text) = common::http_get(admin, "/metrics", Duration::from_secs(10))
        .await
        .ok()?;
    let name = metric.name();
    let labels: Vec<String> = metric
        .labels()
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    let labels = labels.join(",");
    let value = |suffix: &str| -> Option<f64> {
        let key = if labels.is_empty() {
            format!("{name}{suffix}")
        } else {
            format!("{name}{suffix}{{{labels}}}")
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
pub fn mean_ms(now: Option<(f64, f64)>, before: Option<(f64, f64)>) -> Option<f64> {
    let (sum, count) = now?;
    let (s0, c0) = before.unwrap_or((0.0, 0.0));
    (count > c0).then(|| (sum - s0) / (count - c0) * 1000.0)
}

/// A small agent: 32 MB, 0.1 CPU.
pub fn small_agent(env: &TestEnv, agent_id: &str) -> serde_json::Value {
    let mut body = env.create_body(agent_id);
    body["resources"] = json!({"memory_mb": 32, "cpus": 0.1});
    body
}

/// Creates (and, with `start`, starts) `ids` through the manager, all published at once;
/// panics unless every one is answered in time.
pub async fn create_all(env: &TestEnv, tap: &common::EventTap, ids: &[String], start: bool) {
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
pub const PRODUCTION_LOOKS: [(&str, &str); 1] = [("HEALTH_CHECK_INTERVAL_S", "10")];

/// A manager process with production's looks, and `n` running agents `<prefix><i>`
/// created through it; the tap sees every event (the test's own consumer none).
pub async fn running_fleet(
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
