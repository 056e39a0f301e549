//! Many managers, one leader (contract section 12), against the real services with the
//! manager binary run as several processes of one installation: one leads, the others
//! stand by; a `kill -9` of the leader under a stream of commands loses and repeats
//! nothing; `SIGTERM` hands over at once; a leader frozen past its lease is fenced and
//! undoes nothing when thawed; a leader cut off from Redis stops acting.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{ManagerProcess, TestEnv, DEADLINE};
use serde_json::json;

/// Health looks every second; a short lease so failovers are quick.
const FAST: &[(&str, &str)] = &[
    ("HEALTH_CHECK_INTERVAL_S", "1"),
    ("LEADER_LEASE_MS", "2000"),
    ("LEADER_RENEW_MS", "500"),
    ("LEADER_RETRY_MS", "250"),
];

/// The leader hash: (id, pid, term), once there is a live one.
async fn leader(env: &TestEnv) -> Option<(String, u32, u64)> {
    let h = env
        .hash(&format!("manager:{}:leader", env.config.instance))
        .await;
    let live = h
        .get("expires_ms")
        .and_then(|e| e.parse::<u64>().ok())
        .is_some_and(|e| e > 0);
    if !live {
        return None;
    }
    Some((
        h.get("id")?.clone(),
        h.get("pid")?.parse().ok()?,
        h.get("term")?.parse().ok()?,
    ))
}

/// Waits for a leader of a term above `after`; returns its pid and term.
async fn new_leader(env: &TestEnv, after: u64) -> (u32, u64) {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some((_, pid, term)) = leader(env).await {
            if term > after {
                return (pid, term);
            }
        }
        assert!(
            Instant::now() < until,
            "no leader above term {after} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The process of `managers` with `pid`.
fn by_pid(managers: &mut [ManagerProcess], pid: u32) -> &mut ManagerProcess {
    managers
        .iter_mut()
        .find(|m| m.pid() == pid)
        .unwrap_or_else(|| panic!("the leader pid {pid} is none of ours"))
}

/// Waits for `m` to exit; its exit code.
fn exit_code(m: &mut ManagerProcess, deadline: Duration) -> Option<i32> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = m.child.try_wait() {
            return status.code();
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_rt::test]
async fn three_managers_one_leads_and_the_others_stand_by() {
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let _managers: Vec<ManagerProcess> = (0..3).map(|_| ManagerProcess::spawn(&vars)).collect();
    let (_, term) = new_leader(&env, 0).await;
    let a = env.agent_id("one");
    env.create_running(&a).await;
    // Several leases later the same leader leads: nobody fought over it.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, _, now) = leader(&env).await.expect("a leader");
    assert_eq!(now, term, "the lease changed hands with nobody gone");
    // manager.leader was said once, naming the leader and its term.
    let said: Vec<_> = env
        .all_events()
        .into_iter()
        .filter(|e| e.event.routing_key() == "manager.leader")
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!(said[0].details["term"], json!(term));
    // One container for the agent: only the leader created it.
    assert_eq!(env.containers().await.len(), 1);
    env.finish().await;
}

#[actix_rt::test]
async fn kill_9_of_the_leader_under_a_stream_of_commands_twenty_times_loses_and_repeats_nothing() {
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let mut managers: Vec<ManagerProcess> = (0..2).map(|_| ManagerProcess::spawn(&vars)).collect();
    let (_, mut term) = new_leader(&env, 0).await;
    let ids: Vec<String> = (0..4).map(|i| env.agent_id(&format!("k{i}"))).collect();
    for id in &ids {
        env.create_running(id).await;
    }
    let mut sent = Vec::new();
    for round in 0..20 {
        // A steady stream: a restart of each agent, then the leader killed mid-stream.
        for id in &ids {
            sent.push(
                env.command("agent.restart", id, json!({"timeout_s": 1}))
                    .await,
            );
        }
        let (_, pid, _) = leader(&env).await.expect("a leader");
        by_pid(&mut managers, pid).kill9();
        managers.retain(|m| m.pid() != pid);
        managers.push(ManagerProcess::spawn(&vars));
        let (_, t) = new_leader(&env, term).await;
        term = t;
        // A crash after the failover is healed by the new leader.
        if round % 5 == 4 {
            let victim = &ids[round % ids.len()];
            let c = env.inspect(victim).await.expect("container");
            let _ = env
                .docker
                .kill_container(
                    c.id.as_deref().expect("id"),
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await;
            common::wait_until("the crash healed", DEADLINE, || async {
                env.running(victim).await
                    && env.record(victim).await.get("status").map(String::as_str) == Some("running")
            })
            .await;
        }
    }
    // Every command answered exactly once: one answer event id each.
    for mid in &sent {
        env.answer(mid, "agent.restarted").await;
    }
    common::wait_until("every answer in", DEADLINE, || async {
        sent.iter().all(|m| !env.answers(m).is_empty())
    })
    .await;
    let mut repeated = Vec::new();
    for mid in &sent {
        let answers = env.answers(mid);
        let ids: HashSet<_> = answers.iter().map(|e| e.event_id.clone()).collect();
        if ids.len() != 1 {
            repeated.push((mid.clone(), answers.len()));
        }
    }
    assert!(
        repeated.is_empty(),
        "answered more or less than once: {repeated:?}"
    );
    // No agent with two containers, every one running.
    let containers = env.containers().await;
    assert_eq!(containers.len(), ids.len(), "{containers:?}");
    for id in &ids {
        assert!(env.running(id).await, "{id} running");
    }
    env.finish().await;
}

#[actix_rt::test]
async fn sigterm_hands_the_lease_over_without_waiting_for_it_to_end() {
    // A long lease: a hand-over that waited for it would take 20 s.
    let slow: &[(&str, &str)] = &[
        ("LEADER_LEASE_MS", "20000"),
        ("LEADER_RENEW_MS", "1000"),
        ("LEADER_RETRY_MS", "100"),
    ];
    let env = TestEnv::client_only(slow).await;
    let vars = common::test_env_vars(&env.id, slow);
    let mut managers: Vec<ManagerProcess> = (0..2).map(|_| ManagerProcess::spawn(&vars)).collect();
    let (pid, term) = new_leader(&env, 0).await;
    let a = env.agent_id("h");
    env.create_running(&a).await;
    let asked = Instant::now();
    let status = by_pid(&mut managers, pid).terminate(DEADLINE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "a clean exit");
    let (_, next) = new_leader(&env, term).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the standby took over after {took:?}: the lease was not released"
    );
    assert_eq!(next, term + 1);
    let stop = env.command("agent.stop", &a, json!({"timeout_s": 1})).await;
    env.answer(&stop, "agent.stopped").await;
    env.finish().await;
}

#[actix_rt::test]
async fn a_leader_frozen_past_its_lease_is_fenced_and_undoes_nothing_when_thawed() {
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let mut managers: Vec<ManagerProcess> = (0..2).map(|_| ManagerProcess::spawn(&vars)).collect();
    let (pid, term) = new_leader(&env, 0).await;
    let a = env.agent_id("f");
    env.create_running(&a).await;
    signal(pid, "-STOP");
    let (_, _) = new_leader(&env, term).await;
    // The new leader stops the agent while the old one is frozen.
    let stop = env.command("agent.stop", &a, json!({"timeout_s": 1})).await;
    env.answer(&stop, "agent.stopped").await;
    signal(pid, "-CONT");
    // Thawed, it learns it was deposed and exits without acting.
    let code = exit_code(by_pid(&mut managers, pid), DEADLINE);
    assert_eq!(code, Some(75), "the deposed leader exits with EXIT_DEPOSED");
    // The agent stayed stopped: nothing of the old leader's undid the stop.
    assert_eq!(env.record(&a).await["status"], "stopped");
    assert!(!env.running(&a).await, "not started again");
    env.finish().await;
}

/// A TCP proxy to Redis the test can cut: every connection through it is closed, and
/// new ones refused, once `cut` is called.
struct RedisProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl RedisProxy {
    async fn start(target: std::net::SocketAddr) -> RedisProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        actix_rt::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cut_rx = cut_rx.clone();
                if *cut_rx.borrow() {
                    continue;
                }
                actix_rt::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        RedisProxy { addr, cut }
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

#[actix_rt::test]
async fn a_leader_cut_off_from_redis_stops_acting_and_a_standby_takes_over() {
    let env = TestEnv::client_only(FAST).await;
    let target: std::net::SocketAddr = "127.0.0.1:6379".parse().expect("address");
    let proxy = RedisProxy::start(target).await;
    let mut through_proxy: HashMap<String, String> = common::test_env_vars(&env.id, FAST);
    through_proxy.insert("REDIS_URL".into(), format!("redis://{}", proxy.addr));
    let mut cut_off = ManagerProcess::spawn(&through_proxy);
    let (pid, term) = new_leader(&env, 0).await;
    assert_eq!(pid, cut_off.pid(), "the first manager leads");
    let vars = common::test_env_vars(&env.id, FAST);
    let _standby = ManagerProcess::spawn(&vars);
    let a = env.agent_id("c");
    env.create_running(&a).await;
    proxy.cut();
    // It stops acting (exits) before its lease could have ended, and the standby leads.
    let code = exit_code(&mut cut_off, DEADLINE);
    assert_eq!(code, Some(75), "the cut-off leader exits with EXIT_DEPOSED");
    let (_, next) = new_leader(&env, term).await;
    assert!(next > term);
    let stop = env.command("agent.stop", &a, json!({"timeout_s": 1})).await;
    env.answer(&stop, "agent.stopped").await;
    env.finish().await;
}

#[actix_rt::test]
async fn the_lease_is_taken_once_renewed_released_and_survives_a_wipe_under_its_leader() {
    use agent_manager::store::{Acquired, Candidate, Store};
    let env = TestEnv::client_only(&[]).await;
    let store = Store::connect(&env.config.redis).await.expect("redis");
    let inst = env.config.instance.clone();
    let who = |id: &str| Candidate {
        id: id.into(),
        host: "h".into(),
        pid: 1,
    };
    let (a, b) = (who("a"), who("b"));
    let lease = 3_000;
    // The first ever: a marker holds it for one lease, then a takes it.
    let first = store
        .acquire_lease(&inst, &a, "t0", lease, 1_000)
        .await
        .expect("acquire");
    assert!(matches!(first, Acquired::Held { term: 0, .. }), "{first:?}");
    let key = env.key(&format!("manager:{inst}:leader"));
    let _: () = env
        .redis_query(redis::cmd("HSET").arg(&key).arg("expires_ms").arg(0))
        .await;
    assert_eq!(
        store
            .acquire_lease(&inst, &a, "t0", lease, 1_000)
            .await
            .expect("acquire"),
        Acquired::Leader { term: 1 }
    );
    // Held: b waits; a renews.
    assert!(matches!(
        store
            .acquire_lease(&inst, &b, "t0", lease, 1_000)
            .await
            .expect("acquire"),
        Acquired::Held { term: 1, .. }
    ));
    assert!(store
        .renew_lease(&inst, &a, "t0", 1, lease)
        .await
        .expect("renew"));
    // Wiped under its leader: b finds a marker and waits; a's renewal writes it back.
    let _: () = env.redis_query(redis::cmd("DEL").arg(&key)).await;
    assert!(matches!(
        store
            .acquire_lease(&inst, &b, "t0", lease, 1_000)
            .await
            .expect("acquire"),
        Acquired::Held { term: 0, .. }
    ));
    assert!(store
        .renew_lease(&inst, &a, "t0", 1, lease)
        .await
        .expect("renew"));
    assert!(matches!(
        store
            .acquire_lease(&inst, &b, "t0", lease, 1_000)
            .await
            .expect("acquire"),
        Acquired::Held { term: 1, .. }
    ));
    // Released: b takes term 2; a's renewal of term 1 is refused.
    assert!(store.release_lease(&inst, "a", 1).await.expect("release"));
    assert_eq!(
        store
            .acquire_lease(&inst, &b, "t0", lease, 1_000)
            .await
            .expect("acquire"),
        Acquired::Leader { term: 2 }
    );
    assert!(!store
        .renew_lease(&inst, &a, "t0", 1, lease)
        .await
        .expect("renew"));
    // A writer fenced by term 1 is refused; one of term 2 writes.
    let fenced = Store::connect(&env.config.redis).await.expect("redis");
    fenced.fence_with(&inst, 1);
    let err = fenced
        .save_processed(agent_manager::ports::Processed {
            message_id: "m-old",
            answer: &[],
        })
        .await
        .expect_err("term 1 has passed");
    assert!(err.to_string().contains("term 1 has passed"), "{err}");
    let current = Store::connect(&env.config.redis).await.expect("redis");
    current.fence_with(&inst, 2);
    current
        .save_processed(agent_manager::ports::Processed {
            message_id: "m-new",
            answer: &[],
        })
        .await
        .expect("term 2 writes");
    env.finish().await;
}
