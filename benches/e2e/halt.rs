//! The `halt` scenario (contract section 10; issue 23's speed part), in one run, side by
//! side. HALT_AGENTS (default 1,000) running agents of one customer, each with a
//! connection of its own user held open by the bench:
//!
//! 1. **Cut**: `halt.engage` (the customer's scope) → each held connection refused
//!    (the broker closing it, or the first publish that fails; while the probes are on
//!    each connection publishes to its agent's own result key every HALT_PROBE_MS,
//!    default 50), p50/p99/max from the engage's publication; then HALT_LOGIN_SAMPLE
//!    new logins with the agents' users (RabbitMQ and Redis), all refused. Goal: p99 ≤
//!    1 s.
//! 2. **Freeze**: `halt.engage` → the last container's Docker `pause` event (and the
//!    manager's own `frozen_ms`), beside a plain concurrent `docker pause` of the same
//!    containers through bollard (HALT_IN_FLIGHT, default 16, in flight; no manager
//!    running, the probes on, as during the halt), from the burst's start to its last
//!    `pause` event; they are unpaused before the halt. Goal: ratio ≤ 1.2.
//! 3. **Release**: `halt.release` → every agent's record `running` again and a RabbitMQ
//!    login with each agent's user (HALT_LOGIN_IN_FLIGHT, default 64, at a time, once
//!    the manager has answered `halt.released`). Goal: ≤ 10 s.
//! 4. **Automatic halt**: one more agent of the customer, its
//!    `resources.max_messages_per_s` HALT_FLOOD_LIMIT (default 5), publishes ten times
//!    that on its own connection → its `agent.halted` with an `auto-` halt id, under a
//!    manager with `HALT_WINDOW_S` = HALT_AUTO_WINDOW_S (default 5). Goal: within the
//!    window + 5 s.
//! 5. **Rate watch cost**: the manager's CPU with the agents idle (their held
//!    connections open, nothing published) over HALT_CPU_WINDOW_S (default 60, after
//!    HALT_SETTLE_S, default 30), with the rate watch off (`HALT_MAX_MESSAGES_PER_S=0`,
//!    the watch does not run) and on (the default 50, one listing per second), and
//!    RabbitMQ's (beam.smp) beside, since the listing is RabbitMQ's work too. Goal: the
//!    manager's difference ≤ 1 % of one core.
//!
//! Order: manager with the watch off (agents created, connections opened, CPU window),
//! that manager stopped, the plain pause and unpause, a manager with the watch on (CPU
//! window), engage, release, the automatic halt. RabbitMQ must accept HALT_AGENTS
//! connections and more: checked first (`scripts/services.sh` raises its open-file
//! limit; a broker started before needs a restart).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_manager::protocol::Event;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::common::{self, TestEnv};
use crate::machine::remove_left;
use crate::pause::now_ns;
use crate::support::docker::{docker_events, SeenEvents};
use crate::support::logins::{
    amqp_connect, amqp_login, hold_all, own_urls, redis_login, Held, OwnUrls, Probes, CALL_LIMIT,
};
use crate::support::manager::{small_agent, spawn_manager, wait_ready, PRODUCTION_LOOKS};
use crate::support::probe::CpuProbe;
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::{HaltSizes, Sizes};

/// The manager's default limit, set explicitly: the probes stay well below it.
const DEFAULT_LIMIT: &str = "50";

/// How long to wait for what the manager does for every agent at once.
fn for_all(n: usize) -> Duration {
    Duration::from_secs(60 + n as u64 / 10)
}

/// The events of halts as they arrive (a queue of the bench's own, on a connection of
/// its own), decoded, with their arrival.
#[derive(Clone)]
struct HaltEvents {
    seen: Arc<Mutex<Vec<(Instant, Event)>>>,
    arrived: Arc<Notify>,
}

impl HaltEvents {
    async fn start(env: &TestEnv) -> (Connection, HaltEvents) {
        let conn = amqp_connect(common::RABBITMQ_URL)
            .await
            .expect("the bench's own connection to RabbitMQ");
        let keys: Vec<String> = [
            "agent.halted",
            "agent.released",
            "halt.engaged",
            "halt.released",
            "agent.error",
        ]
        .map(String::from)
        .to_vec();
        let queue = format!("test-{}.halt-events", env.id);
        let channel =
            common::bound_exclusive_queue(&conn, &queue, &env.config.rabbitmq.exchange, &keys)
                .await;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "halt-bench".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume the halt events");
        let log = HaltEvents {
            seen: Arc::default(),
            arrived: Arc::new(Notify::new()),
        };
        let (seen, arrived) = (log.seen.clone(), log.arrived.clone());
        actix_rt::spawn(async move {
            let _keep = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let at = Instant::now();
                if let Ok(e) = serde_json::from_slice::<Event>(&delivery.data) {
                    seen.lock().unwrap().push((at, e));
                    arrived.notify_waiters();
                }
            }
        });
        (conn, log)
    }

    /// The events that `pick` accepts, with their arrival.
    fn all(&self, pick: impl Fn(&Event) -> bool) -> Vec<(Instant, Event)> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(_, e)| pick(e)).cloned().collect()
    }

    /// Waits until `n` events that `pick` accepts have arrived; all of them, or `None`
    /// after `deadline`.
    async fn wait_n(
        &self,
        n: usize,
        deadline: Duration,
        pick: impl Fn(&Event) -> bool,
    ) -> Option<Vec<(Instant, Event)>> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            let found = self.all(&pick);
            if found.len() >= n {
                return Some(found);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The answer to command `mid` (the first event correlated with it); panics after
    /// `deadline` or on `agent.error`.
    async fn answer(&self, mid: &str, routing_key: &str, deadline: Duration) -> (Instant, Event) {
        let found = self
            .wait_n(1, deadline, |e| e.correlation_id.as_deref() == Some(mid))
            .await
            .unwrap_or_else(|| panic!("{mid} not answered within {deadline:?}"));
        let (at, e) = found[0].clone();
        assert_eq!(
            e.event.routing_key(),
            routing_key,
            "{mid} answered with {}: {}",
            e.event.routing_key(),
            e.details
        );
        (at, e)
    }
}

/// RabbitMQ's socket limit and use (management API, `guest`): `None` when unknown.
async fn rabbitmq_sockets() -> Option<(u64, u64)> {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 15672).into();
    let (status, _, body) = common::http_get_with(
        addr,
        "/api/nodes?columns=sockets_total,sockets_used",
        &["Authorization: Basic Z3Vlc3Q6Z3Vlc3Q="],
        Duration::from_secs(10),
    )
    .await
    .ok()?;
    if status != 200 {
        return None;
    }
    let json = &body[body.find('[')?..=body.rfind(']')?];
    let nodes: Value = serde_json::from_str(json).ok()?;
    let node = nodes.get(0)?;
    Some((
        node["sockets_total"].as_u64()?,
        node["sockets_used"].as_u64()?,
    ))
}

/// Fails at once when RabbitMQ cannot take `n` more connections (and a margin).
async fn check_sockets(n: usize) -> Option<(u64, u64)> {
    let sockets = rabbitmq_sockets().await;
    match sockets {
        Some((total, used)) => assert!(
            total.saturating_sub(used) >= n as u64 + 50,
            "RabbitMQ accepts {total} connections ({used} in use): too few for {n} agents' \
             own connections; restart it with a higher open-file limit \
             (`bash scripts/stop-services.sh && bash scripts/services.sh` raises it)"
        ),
        None => eprintln!("halt: RabbitMQ's socket limit is unknown (management API); going on"),
    }
    sockets
}

/// Stops a manager process gracefully (SIGTERM) off the bench's thread; the agents keep
/// running.
async fn stop_manager(mut manager: common::ManagerProcess) {
    let status = tokio::task::spawn_blocking(move || {
        let status = manager.terminate(Duration::from_secs(60));
        (status, manager)
    })
    .await
    .expect("stopping the manager");
    assert!(
        status.0.is_some(),
        "the manager did not exit within 60 s of SIGTERM"
    );
}

/// Each agent's `status` in its record (one pipeline, bounded).
async fn statuses(env: &TestEnv, ids: &[String]) -> Vec<Option<String>> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET")
            .arg(env.key(&format!("agent:{id}")))
            .arg("status");
    }
    let mut conn = env.redis.clone();
    tokio::time::timeout(CALL_LIMIT, pipe.query_async(&mut conn))
        .await
        .expect("Redis answered within 30 s")
        .expect("the agents' statuses")
}

/// Waits until every agent's record says `status`; when each was first seen so (polled
/// every 50 ms), or panics after `deadline`.
async fn wait_statuses(
    env: &TestEnv,
    ids: &[String],
    status: &str,
    deadline: Duration,
) -> Vec<Instant> {
    let until = Instant::now() + deadline;
    let mut seen: Vec<Option<Instant>> = vec![None; ids.len()];
    loop {
        let now = Instant::now();
        for (at, s) in seen.iter_mut().zip(statuses(env, ids).await) {
            if at.is_none() && s.as_deref() == Some(status) {
                *at = Some(now);
            }
        }
        if seen.iter().all(Option::is_some) {
            return seen.into_iter().flatten().collect();
        }
        let missing = seen.iter().filter(|s| s.is_none()).count();
        assert!(
            Instant::now() < until,
            "{missing} of {} agents not {status} within {deadline:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Docker's pause or unpause of every container in `names`, `in_flight` calls at once,
/// each bounded: when each call returned, and the failures. A pause runc gave up on
/// ("unable to freeze", a busy container on a loaded host) is tried again as the
/// manager's own pause does (`runtime::docker`: three attempts, 100 ms more between
/// each), so both sides pay the same.
async fn docker_all(
    env: &TestEnv,
    names: &[String],
    in_flight: usize,
    pause: bool,
) -> (Vec<Instant>, Vec<String>) {
    let docker = env.docker.clone();
    let results: Vec<Result<Instant, String>> = futures_util::stream::iter(names.iter())
        .map(|name| {
            let docker = docker.clone();
            async move {
                let call = async {
                    let mut attempt = 1;
                    loop {
                        let done = if pause {
                            docker.pause_container(name).await
                        } else {
                            docker.unpause_container(name).await
                        };
                        match done {
                            Err(e)
                                if pause
                                    && attempt < 3
                                    && e.to_string().contains("unable to freeze") =>
                            {
                                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                                attempt += 1;
                            }
                            other => break other,
                        }
                    }
                };
                match tokio::time::timeout(CALL_LIMIT, call).await {
                    Ok(Ok(())) => Ok(Instant::now()),
                    Ok(Err(e)) => Err(format!("{name}: {e}")),
                    Err(_) => Err(format!("{name}: no answer within {CALL_LIMIT:?}")),
                }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(at) => done.push(at),
            Err(e) => failed.push(e),
        }
    }
    (done, failed)
}

/// Waits until Docker has reported `event` for every one of `ids` at or after `since_ns`
/// (its own clock, ns; asked again every 100 ms): the last agent's first such event's
/// time, or how many agents had one by `deadline`.
async fn wait_docker_events(
    seen: &SeenEvents,
    ids: &[String],
    since_ns: i64,
    deadline: Duration,
) -> Result<i64, usize> {
    // A live subscription, not a replay: dockerd replays only its last 256 events, and
    // a thousand pauses are more.
    let until = Instant::now() + deadline;
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    loop {
        // Each agent's first such event.
        let mut first: HashMap<String, i64> = HashMap::new();
        for (id, t) in seen.lock().expect("events").iter() {
            if *t >= since_ns && wanted.contains(id.as_str()) {
                let e = first.entry(id.clone()).or_insert(*t);
                *e = (*e).min(*t);
            }
        }
        if first.len() == ids.len() {
            return Ok(first.values().copied().max().unwrap_or(since_ns));
        }
        if Instant::now() > until {
            return Err(first.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every held connection has published `more` times since `before`.
async fn wait_published(held: &[Held], before: &[u64], more: u64, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let behind = held
            .iter()
            .zip(before)
            .filter(|(h, b)| h.refused().is_none() && h.published() < *b + more)
            .count();
        let refused = held.iter().filter(|h| h.refused().is_some()).count();
        assert_eq!(
            refused,
            0,
            "held connections refused before the halt: {:?}",
            held.iter().find_map(|h| h.refused())
        );
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "{behind} held connections published nothing within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(held: &[Held]) -> Vec<u64> {
    held.iter().map(Held::published).collect()
}

fn halt_body(env: &TestEnv, halt_id: &str, scope: Value) -> Value {
    json!({"halt_id": halt_id, "customer_id": env.customer(), "scope": scope,
           "reason": "halt bench", "requested_by": "bench"})
}

fn release_body(env: &TestEnv, halt_id: &str) -> Value {
    json!({"halt_id": halt_id, "customer_id": env.customer(),
           "reason": "halt bench done", "requested_by": "bench"})
}

/// Logs in with each of `owns`' RabbitMQ users, `in_flight` at a time, each retried
/// every 100 ms while refused, until `deadline`: when each first worked (`None`: never).
async fn logins_work(
    owns: &[OwnUrls],
    in_flight: usize,
    deadline: Duration,
) -> Vec<Option<Instant>> {
    let until = Instant::now() + deadline;
    futures_util::stream::iter(owns.iter())
        .map(|own| async move {
            loop {
                if amqp_login(&own.amqp).await.is_ok() {
                    return Some(Instant::now());
                }
                if Instant::now() > until {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .buffered(in_flight)
        .collect()
        .await
}

/// Every `step`-th of `items`, at most `n` of them.
fn sample<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    let step = (items.len() / n.max(1)).max(1);
    items.iter().step_by(step).take(n).cloned().collect()
}

/// Rounds to a tenth.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The bench's verdict on a goal, for the summary lines.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// Cut, freeze, release, automatic halt and the rate watch's cost, side by side.
pub async fn halt(s: &Sizes) {
    let h = &s.halt;
    let n = h.agents;
    assert!(
        1000.0 / (h.probe_ms.max(1) as f64) < 0.8 * DEFAULT_LIMIT.parse::<f64>().unwrap_or(50.0),
        "HALT_PROBE_MS={} publishes too often: the automatic halt would take the probes",
        h.probe_ms
    );
    let load_before = load();
    let window = h.auto_window_s.to_string();
    let with_watch = |limit: &'static str| {
        vec![
            PRODUCTION_LOOKS[0],
            ("HALT_MAX_MESSAGES_PER_S", limit),
            ("HALT_WINDOW_S", window.as_str()),
            ("HALT_WATCH_INTERVAL_MS", "1000"),
        ]
    };
    let (on, off) = (with_watch(DEFAULT_LIMIT), with_watch("0"));
    let env = TestEnv::client_only(&on).await;
    let sockets = check_sockets(n + 1).await;
    let (_events_conn, events) = HaltEvents::start(&env).await;

    // The agents, under a manager without the rate watch, and their held connections.
    let (mut manager, admin, _) = spawn_manager(&env, &off);
    wait_ready(&mut manager, admin, Duration::from_secs(60)).await;
    let tap = env.tap().await;
    env.mute_events().await;
    let ids: Vec<String> = (0..n).map(|i| env.agent_id(&format!("h{i}"))).collect();
    let t0 = Instant::now();
    crate::support::manager::create_all(&env, &tap, &ids, true).await;
    let started_in = t0.elapsed();
    let owns = own_urls(&env, &ids, h.in_flight).await;
    let (probes, probes_on) = Probes::new();
    let probe_every = Duration::from_millis(h.probe_ms);
    let t0 = Instant::now();
    let held = hold_all(
        &owns,
        &env.config.rabbitmq.exchange,
        probe_every,
        &probes_on,
        h.login_in_flight,
    )
    .await;
    let held_in = t0.elapsed();
    eprintln!(
        "halt: {n} agents started in {started_in:?}, their connections opened in {held_in:?}"
    );

    // Docker's pause and unpause events of the test's containers, as they happen.
    let pause_events = docker_events(&env, "pause");
    let unpause_events = docker_events(&env, "unpause");

    // 5a. The rate watch off.
    tokio::time::sleep(h.settle).await;
    let probe = CpuProbe::start(Some(manager.pid()));
    tokio::time::sleep(h.cpu_window).await;
    let cpu_off = probe.percent();
    eprintln!("halt: rate watch off: {cpu_off}");
    stop_manager(manager).await;

    // 2a. Docker's own pause of the same containers, no manager running, probes on.
    let names: Vec<String> = ids.iter().map(|id| format!("agent-{id}")).collect();
    probes.set(true);
    wait_published(&held, &counts(&held), 1, Duration::from_secs(30)).await;
    let busy = CpuProbe::start(None);
    let base_ns = now_ns();
    let t0 = Instant::now();
    let (paused, pause_failed) = docker_all(&env, &names, h.in_flight, true).await;
    let plain_calls_ms = paused.iter().max().map(|at| ms(*at - t0));
    let plain_events =
        wait_docker_events(&pause_events, &ids, base_ns, Duration::from_secs(30)).await;
    let (unpaused, unpause_failed) = docker_all(&env, &names, h.in_flight, false).await;
    let cpu_plain = busy.percent();
    probes.set(false);
    assert!(
        pause_failed.is_empty() && unpause_failed.is_empty(),
        "plain pause: {pause_failed:?}; unpause: {unpause_failed:?}"
    );
    assert_eq!(
        unpaused.len(),
        n,
        "every container unpaused before the halt"
    );
    let plain_ms = match plain_events {
        Ok(last) => (last - base_ns) as f64 / 1e6,
        Err(seen) => panic!("Docker reported {seen} of {n} plain pauses"),
    };
    eprintln!("halt: plain docker pause of {n}: {plain_ms:.0} ms (calls: {plain_calls_ms:?} ms)");

    // 5b. The rate watch on: the manager the rest runs under.
    let (mut manager, admin, _) = spawn_manager(&env, &on);
    wait_ready(&mut manager, admin, for_all(n)).await;
    wait_statuses(&env, &ids, "running", for_all(n)).await;
    tokio::time::sleep(h.settle).await;
    let probe = CpuProbe::start(Some(manager.pid()));
    tokio::time::sleep(h.cpu_window).await;
    let cpu_on = probe.percent();
    eprintln!("halt: rate watch on: {cpu_on}");

    // 1, 2. Engage, every held connection publishing.
    probes.set(true);
    wait_published(&held, &counts(&held), 2, Duration::from_secs(30)).await;
    let halt_id = format!("bench-{}", env.id);
    let busy = CpuProbe::start(Some(manager.pid()));
    let engage_ns = now_ns();
    let sent = env
        .send_many(vec![(
            "halt.engage",
            halt_body(&env, &halt_id, json!({"customer_id": env.customer()})),
        )])
        .await;
    let (engage_mid, engaged_sent) = sent[0].clone();
    let (engaged_at, engaged) = events.answer(&engage_mid, "halt.engaged", for_all(n)).await;
    assert_eq!(
        engaged.agent_ids.as_ref().map(Vec::len),
        Some(n),
        "every agent of the customer in the halt"
    );
    assert_eq!(engaged.details["failed"], json!([]), "{}", engaged.details);
    let until = Instant::now() + Duration::from_secs(30);
    while held.iter().any(|c| c.refused().is_none()) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probes.set(false);
    let mut refused_ms = Vec::with_capacity(n);
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut not_refused = Vec::new();
    for c in &held {
        match c.refused() {
            Some(r) => {
                refused_ms.push(ms(r.at.saturating_duration_since(engaged_sent)));
                let kind = r.why.split(':').next().unwrap_or_default().to_string();
                *reasons.entry(kind).or_default() += 1;
            }
            None => not_refused.push(c.agent_id.clone()),
        }
    }
    let first_reason = held.iter().find_map(|c| c.refused()).map(|r| r.why);
    let frozen = wait_docker_events(&pause_events, &ids, engage_ns, for_all(n)).await;
    let frozen_ms = match frozen {
        Ok(last) => (last - engage_ns) as f64 / 1e6,
        Err(seen) => panic!("Docker reported {seen} of {n} pauses after halt.engage"),
    };
    let cpu_halt = busy.percent();
    let halted = events
        .wait_n(n, for_all(n), |e| {
            e.event.routing_key() == "agent.halted" && e.details["halt_id"] == halt_id.as_str()
        })
        .await
        .map_or(0, |v| v.len());
    let sampled = sample(&owns, h.login_sample);
    let mut logins_let_in = Vec::new();
    for own in &sampled {
        if amqp_login(&own.amqp).await.is_ok() {
            logins_let_in.push(format!("{}: RabbitMQ", own.agent_id));
        }
        if redis_login(&own.redis).await.is_ok() {
            logins_let_in.push(format!("{}: Redis", own.agent_id));
        }
    }

    // 3. Release.
    let release_ns = now_ns();
    let sent = env
        .send_many(vec![("halt.release", release_body(&env, &halt_id))])
        .await;
    let (release_mid, release_sent) = sent[0].clone();
    let (released_at, released) = events
        .answer(&release_mid, "halt.released", for_all(n))
        .await;
    // The logins begin once the manager has answered (every user is back by then),
    // beside the records' polling.
    let logins_began = Instant::now();
    let (running_at, logged_in) = tokio::join!(
        wait_statuses(&env, &ids, "running", for_all(n)),
        logins_work(&owns, h.login_in_flight, Duration::from_secs(60)),
    );
    let logins_took = logins_began.elapsed();
    let thawed = wait_docker_events(&unpause_events, &ids, release_ns, for_all(n)).await;
    let agents_released = events
        .wait_n(n, for_all(n), |e| {
            e.event.routing_key() == "agent.released" && e.details["halt_id"] == halt_id.as_str()
        })
        .await
        .map_or(0, |v| v.len());
    let mut redis_refused_after = Vec::new();
    for own in &sampled {
        if let Err(e) = redis_login(&own.redis).await {
            redis_refused_after.push(format!("{}: {e}", own.agent_id));
        }
    }
    let since_release = |at: &Instant| ms(at.saturating_duration_since(release_sent));
    let all_running_ms = running_at.iter().map(since_release).fold(0.0, f64::max);
    let logins_failed = logged_in.iter().filter(|l| l.is_none()).count();
    let all_logged_in_ms = logged_in
        .iter()
        .flatten()
        .map(since_release)
        .fold(0.0, f64::max);
    let thawed_ms = thawed.ok().map(|last| (last - release_ns) as f64 / 1e6);

    // 4. The automatic halt.
    let (auto_ms, auto_halt_id) = automatic_halt(&env, &tap, &events, h).await;
    let others_auto_halted = events
        .all(|e| {
            e.event.routing_key() == "agent.halted"
                && e.details["halt_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("auto-"))
                && !e.agent_id.starts_with("flood-")
        })
        .len();

    // The figures.
    let refused = dist(&mut refused_ms);
    let p99 = refused["p99"].as_f64().unwrap_or(f64::NAN);
    let cut_met = not_refused.is_empty() && p99 <= 1000.0;
    let ratio = frozen_ms / plain_ms;
    let pct = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let watch_manager = pct(&cpu_on, "manager") - pct(&cpu_off, "manager");
    let watch_rabbitmq = pct(&cpu_on, "rabbitmq") - pct(&cpu_off, "rabbitmq");
    let back_ms = all_running_ms.max(all_logged_in_ms);
    let auto_goal_ms = (h.auto_window_s + 5) as f64 * 1000.0;
    let lines = [
        format!(
            "halt: cut: {n} held connections refused after halt.engage: p50 {:.0} ms, p99 {p99:.0} ms, max {:.0} ms ({} not refused) — goal p99 ≤ 1000 ms: {}",
            refused["p50"].as_f64().unwrap_or(f64::NAN),
            refused["max"].as_f64().unwrap_or(f64::NAN),
            not_refused.len(),
            verdict(cut_met)
        ),
        format!(
            "halt: freeze: last of {n} containers paused {frozen_ms:.0} ms after halt.engage (manager's frozen_ms {}), plain docker pause of the same {n} ({} in flight) {plain_ms:.0} ms: ratio {ratio:.2} — goal ≤ 1.2: {}",
            engaged.details["frozen_ms"],
            h.in_flight,
            verdict(ratio <= 1.2)
        ),
        format!(
            "halt: release: all {n} running {all_running_ms:.0} ms and logged in again {all_logged_in_ms:.0} ms after halt.release ({logins_failed} logins failed) — goal ≤ 10000 ms: {}",
            verdict(logins_failed == 0 && back_ms <= 10_000.0)
        ),
        format!(
            "halt: automatic: halted {auto_ms:.0} ms after the flood began (window {} s) — goal ≤ {auto_goal_ms:.0} ms: {}",
            h.auto_window_s,
            verdict(auto_ms <= auto_goal_ms)
        ),
        format!(
            "halt: rate watch at {n} agents: manager {watch_manager:+.1} % of one core (on {}, off {}), RabbitMQ {watch_rabbitmq:+.1} % — goal manager ≤ 1 %: {}",
            pct(&cpu_on, "manager"),
            pct(&cpu_off, "manager"),
            verdict(watch_manager <= 1.0)
        ),
    ];
    for line in &lines {
        println!("{line}");
    }
    write_result(
        "halt",
        &json!({
            "agents": n,
            "quick": s.quick,
            "manager": "process (the binary cargo built for this bench)",
            "cpus": std::thread::available_parallelism().map_or(1, |c| c.get()),
            "rabbitmq_sockets": sockets.map(|(total, used)| json!({"total": total, "used": used})),
            "probe_ms": h.probe_ms,
            "in_flight": h.in_flight,
            "login_in_flight": h.login_in_flight,
            "agents_started_in_s": started_in.as_secs_f64(),
            "connections_opened_in_s": held_in.as_secs_f64(),
            "cut": {
                "engage_to_connection_refused_ms": refused,
                "not_refused": not_refused,
                "refused_by": reasons,
                "first_refusal": first_reason,
                "managers_cut_ms": engaged.details["cut_ms"],
                "halt_engaged_answer_ms": ms(engaged_at - engaged_sent),
                "new_logins_tried": sampled.len(),
                "new_logins_let_in": logins_let_in,
                "goal_p99_ms": 1000,
                "goal_met": cut_met,
            },
            "freeze": {
                "engage_to_last_pause_event_ms": tenth(frozen_ms),
                "managers_frozen_ms": engaged.details["frozen_ms"],
                "agent_halted_events": halted,
                "plain_docker_pause_to_last_event_ms": tenth(plain_ms),
                "plain_docker_pause_calls_ms": plain_calls_ms.map(tenth),
                "cpu_percent_of_one_core_during_plain_pause_and_unpause": cpu_plain,
                "cpu_percent_of_one_core_from_engage_to_all_frozen": cpu_halt,
                "ratio": (ratio * 100.0).round() / 100.0,
                "goal_ratio": 1.2,
                "goal_met": ratio <= 1.2,
            },
            "release": {
                "halt_released_answer_ms": ms(released_at - release_sent),
                "still_held": released.details["still_held"],
                "failed": released.details["failed"],
                "agent_released_events": agents_released,
                "all_running_ms": tenth(all_running_ms),
                "all_unpaused_events_ms": thawed_ms.map(tenth),
                "all_logged_in_ms": tenth(all_logged_in_ms),
                "logins_failed": logins_failed,
                "logins_per_s_from_halt_released": tenth(n as f64 / logins_took.as_secs_f64()),
                "redis_logins_refused_after": redis_refused_after,
                "goal_ms": 10_000,
                "goal_met": logins_failed == 0 && back_ms <= 10_000.0,
            },
            "automatic": {
                "window_s": h.auto_window_s,
                "limit_messages_per_s": h.flood_limit,
                "flood_messages_per_s": h.flood_limit * 10.0,
                "flood_to_agent_halted_ms": tenth(auto_ms),
                "halt_id": auto_halt_id,
                "other_agents_halted_automatically": others_auto_halted,
                "goal_ms": auto_goal_ms,
                "goal_met": auto_ms <= auto_goal_ms,
            },
            "rate_watch": {
                "window_s": h.cpu_window.as_secs_f64(),
                "settle_s": h.settle.as_secs_f64(),
                "cpu_percent_of_one_core_off": cpu_off,
                "cpu_percent_of_one_core_on": cpu_on,
                "manager_difference": tenth(watch_manager),
                "rabbitmq_difference": tenth(watch_rabbitmq),
                "goal_manager_percent_of_one_core": 1.0,
                "goal_met": watch_manager <= 1.0,
            },
            "summary": lines,
            "load_before": load_before,
            "load_after": load(),
        }),
    );

    drop(probes);
    futures_util::stream::iter(held.iter())
        .for_each_concurrent(h.in_flight, |c| c.close())
        .await;
    drop(manager);
    remove_left(&env).await;
    env.finish().await;

    // What must hold at any size (the goals are figures, judged on a quiet machine).
    assert!(
        not_refused.is_empty(),
        "held connections never refused: {not_refused:?}"
    );
    assert!(
        logins_let_in.is_empty(),
        "logins while halted: {logins_let_in:?}"
    );
    assert_eq!(halted, n, "an agent.halted for every agent");
    assert_eq!(agents_released, n, "an agent.released for every agent");
    assert_eq!(
        logins_failed, 0,
        "every agent's login works after the release"
    );
    assert!(redis_refused_after.is_empty(), "{redis_refused_after:?}");
    assert_eq!(
        others_auto_halted, 0,
        "only the flooding agent is halted automatically"
    );
}

/// One more agent of the customer with a limit of `flood_limit` messages a second
/// publishes ten times that on its own connection: (flood start → its `agent.halted`
/// with an `auto-` halt id, ms; that halt id). The halt is released again.
async fn automatic_halt(
    env: &TestEnv,
    tap: &common::EventTap,
    events: &HaltEvents,
    h: &HaltSizes,
) -> (f64, String) {
    let flood = env.agent_id("flood");
    let mut body = small_agent(env, &flood);
    body["resources"]["max_messages_per_s"] = json!(h.flood_limit);
    let sent = env.send_many(vec![("agent.create", body)]).await;
    tap.wait_answer(&sent[0].0, "agent.started", common::DEADLINE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the flooding agent not started within {:?}",
                common::DEADLINE
            )
        });
    let own = own_urls(env, std::slice::from_ref(&flood), 1).await;
    let conn = amqp_connect(&own[0].amqp)
        .await
        .expect("the flooding agent's own login");
    let channel = tokio::time::timeout(CALL_LIMIT, conn.create_channel())
        .await
        .expect("a channel within 30 s")
        .expect("a channel");
    let key = agent_manager::protocol::task::result_key(&flood);
    let exchange = env.config.rabbitmq.exchange.clone();
    let every = Duration::from_secs_f64(1.0 / (h.flood_limit * 10.0));
    let started = Instant::now();
    let flooding = actix_rt::spawn(async move {
        loop {
            let sent = tokio::time::timeout(
                CALL_LIMIT,
                channel.basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                ),
            )
            .await;
            if !matches!(sent, Ok(Ok(_))) || !conn.status().connected() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let prefix = format!("auto-{flood}-");
    let found = events
        .wait_n(1, Duration::from_secs(h.auto_window_s + 30), |e| {
            e.event.routing_key() == "agent.halted"
                && e.agent_id == flood
                && e.details["halt_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&prefix))
        })
        .await
        .unwrap_or_else(|| panic!("{flood} not halted automatically"));
    let (at, halted) = found[0].clone();
    let took = ms(at - started);
    let halt_id = halted.details["halt_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let _ = tokio::time::timeout(common::DEADLINE, flooding).await;
    let sent = env
        .send_many(vec![("halt.release", release_body(env, &halt_id))])
        .await;
    events
        .answer(&sent[0].0, "halt.released", common::DEADLINE)
        .await;
    (took, halt_id)
}
