//! Halt (contract section 10) against the real services: a halt cuts the agents' own
//! RabbitMQ and Redis logins (an open connection of the agent's own user is closed,
//! new logins are refused), freezes their containers, records them `halted`, refuses
//! what would give them back, leaves agents out of scope untouched, survives a manager
//! `kill -9` and a wipe of the installation's Redis keys, and `halt.release` gives
//! everything back (the same passwords).

mod common;

use std::time::{Duration, Instant};

use common::{ManagerProcess, TestEnv, DEADLINE};
use lapin::options::*;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// The agent's `RABBITMQ_URL` and `REDIS_URL`, as its container has them.
async fn agent_urls(env: &TestEnv, agent_id: &str) -> (String, String) {
    let c = env.inspect(agent_id).await.expect("the agent's container");
    let vars = c.config.and_then(|c| c.env).unwrap_or_default();
    let var = |name: &str| {
        vars.iter()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in the agent's environment"))
            .to_string()
    };
    (var("RABBITMQ_URL"), var("REDIS_URL"))
}

/// The agent's URLs as the test (on the host) reaches the services: same login, the
/// host's addresses.
fn from_host(url: &str, base: &str) -> String {
    let mut u = url::Url::parse(url).expect("a URL");
    let b = url::Url::parse(base).expect("a URL");
    let _ = u.set_host(b.host_str());
    let _ = u.set_port(b.port());
    u.to_string()
}

async fn amqp(url: &str) -> lapin::Result<Connection> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => panic!("no answer from RabbitMQ within 10 s"),
    }
}

async fn redis_login(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .map(|_| ())
}

/// Publishes to the agent's own result key every 20 ms on a connection of the agent's
/// own user until the broker refuses; resolves with when that happened.
fn publish_until_refused(
    conn: Connection,
    exchange: String,
    agent_id: String,
) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        let key = agent_manager::protocol::task::result_key(&agent_id);
        let Ok(ch) = conn.create_channel().await else {
            return Instant::now();
        };
        loop {
            let sent = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                )
                .await;
            if sent.is_err() || !conn.status().connected() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn paused(c: &bollard::models::ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

async fn engage(env: &TestEnv, halt_id: &str, scope: Value) -> String {
    env.send(
        "halt.engage",
        json!({"halt_id": halt_id, "customer_id": env.customer(), "scope": scope,
               "reason": "runaway strategy", "requested_by": "ops-test"}),
    )
    .await
}

async fn release(env: &TestEnv, halt_id: &str) -> String {
    env.send(
        "halt.release",
        json!({"halt_id": halt_id, "customer_id": env.customer(),
               "reason": "fixed", "requested_by": "ops-test"}),
    )
    .await
}

#[actix_rt::test]
async fn a_halt_cuts_freezes_and_refuses_and_a_release_gives_everything_back() {
    let env = TestEnv::start(&[]).await;
    let (a1, a2, other) = (
        env.agent_id("h-a1"),
        env.agent_id("h-a2"),
        env.agent_id("h-out"),
    );
    for id in [&a1, &a2, &other] {
        env.create_running(id).await;
    }
    let (mq, redis_url) = agent_urls(&env, &a1).await;
    let (mq, redis_url) = (
        from_host(&mq, &env.config.rabbitmq.url),
        from_host(&redis_url, &env.config.redis.url),
    );
    let held = amqp(&mq).await.expect("the agent's own login");
    let publisher = publish_until_refused(held, env.config.rabbitmq.exchange.clone(), a1.clone());
    let halt_id = format!("halt-{}", env.id);

    let sent = Instant::now();
    let mid = engage(&env, &halt_id, json!({"agent_ids": [a1, a2]})).await;
    let engaged = env.answer(&mid, "halt.engaged").await;
    assert_eq!(engaged.halt_id.as_deref(), Some(halt_id.as_str()));
    let mut named = engaged.agent_ids.clone().unwrap_or_default();
    named.sort();
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(named, want);
    assert!(
        engaged.details["cut_ms"].as_u64().is_some(),
        "{}",
        engaged.details
    );
    assert!(
        engaged.details["frozen_ms"].as_u64().is_some(),
        "{}",
        engaged.details
    );
    assert_eq!(engaged.details["failed"], json!([]));

    // Cut: the open connection of the agent's own user is refused, and so are new logins.
    let refused_at = tokio::time::timeout(DEADLINE, publisher)
        .await
        .expect("the agent's connection refused")
        .expect("publisher task");
    println!(
        "own connection refused {:?} after the engage was sent",
        refused_at - sent
    );
    assert!(
        amqp(&mq).await.is_err(),
        "RabbitMQ login refused while halted"
    );
    assert!(
        redis_login(&redis_url).await.is_err(),
        "Redis login refused while halted"
    );

    // Frozen, recorded and reported; the agent out of scope untouched.
    for id in [&a1, &a2] {
        let c = env.inspect(id).await.expect("container");
        assert!(paused(&c), "{id} frozen");
        let r = env.record(id).await;
        assert_eq!(r["status"], "halted");
        assert_eq!(r["halt_ids"], format!("[\"{halt_id}\"]"));
        assert_eq!(r["halted_by"], "ops-test");
        assert_eq!(r["halt_reason"], "runaway strategy");
        assert!(!r["halted_at"].is_empty());
        let id2 = id.clone();
        let e = env
            .wait_event("agent.halted", DEADLINE, move |e| {
                e.agent_id == id2 && e.event.routing_key() == "agent.halted"
            })
            .await;
        assert_eq!(e.details["halt_id"], halt_id.as_str());
        assert!(e.details["frozen_ms"].as_u64() >= e.details["cut_ms"].as_u64());
    }
    let untouched = env.inspect(&other).await.expect("container");
    assert!(!paused(&untouched) && untouched.state.and_then(|s| s.running) == Some(true));
    assert_eq!(env.record(&other).await["status"], "running");

    // The halt in Redis and in the audit trail.
    let h = env.hash(&format!("halt:{halt_id}")).await;
    assert_eq!(h["customer_id"], env.customer());
    assert_eq!(h["requested_by"], "ops-test");
    let members: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("halts")))
        .await;
    assert!(members.contains(&halt_id));

    // Refusals: everything that would give it back; stop and delete would work.
    for (command, extra) in [
        ("agent.start", json!({})),
        ("agent.resume", json!({})),
        ("agent.restart", json!({})),
        ("agent.pause", json!({})),
        ("agent.update", json!({"name": "renamed"})),
    ] {
        let mid = env.command(command, &a1, extra).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "halted", "{command}: {}", e.details);
    }
    let team = env
        .send(
            "team.orchestrate",
            json!({"team_id": format!("t-{}", env.id), "customer_id": env.customer(),
                   "agent_ids": [a1, other]}),
        )
        .await;
    assert_eq!(env.error_code(&team).await.0, "halted");
    // Engaging the same halt again is answered again.
    let again = engage(&env, &halt_id, json!({"agent_ids": [a1, a2]})).await;
    env.answer(&again, "halt.engaged").await;

    // Release: the same logins work again, the containers run, the records say so.
    let mid = release(&env, &halt_id).await;
    env.answer(&mid, "halt.released").await;
    for id in [&a1, &a2] {
        let id2 = id.clone();
        env.wait_event("agent.released", DEADLINE, move |e| {
            e.agent_id == id2 && e.event.routing_key() == "agent.released"
        })
        .await;
        let c = env.inspect(id).await.expect("container");
        assert!(
            !paused(&c) && c.state.and_then(|s| s.running) == Some(true),
            "{id} runs"
        );
        let r = env.record(id).await;
        assert_eq!(r["status"], "running");
        assert_eq!(r["halt_ids"], "[]");
    }
    amqp(&mq)
        .await
        .expect("the same RabbitMQ login works again");
    redis_login(&redis_url)
        .await
        .expect("the same Redis login works again");
    let members: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("halts")))
        .await;
    assert!(!members.contains(&halt_id));
    let trail: Vec<redis::Value> = env
        .redis_query(
            redis::cmd("XRANGE")
                .arg(env.key("halts:events"))
                .arg("-")
                .arg("+"),
        )
        .await;
    assert_eq!(trail.len(), 2, "engaged, released");
    env.finish().await;
}

#[actix_rt::test]
async fn a_customer_halt_refuses_creates_in_scope_and_overlapping_halts_hold_until_both_go() {
    let env = TestEnv::start(&[]).await;
    let a = env.agent_id("ov-a");
    env.create_running(&a).await;
    let (h1, h2) = (format!("h1-{}", env.id), format!("h2-{}", env.id));
    let m1 = engage(&env, &h1, json!({"customer_id": env.customer()})).await;
    env.answer(&m1, "halt.engaged").await;
    let m2 = engage(&env, &h2, json!({"agent_ids": [a]})).await;
    env.answer(&m2, "halt.engaged").await;
    // A new agent of the customer falls in h1's scope.
    let newcomer = env.agent_id("ov-new");
    let mid = env.send("agent.create", env.create_body(&newcomer)).await;
    assert_eq!(env.error_code(&mid).await.0, "halted");
    assert!(env.inspect(&newcomer).await.is_none(), "nothing created");
    // Another customer cannot release it, nor halt this customer's agents.
    let foreign = env
        .send(
            "halt.release",
            json!({"halt_id": h1, "customer_id": "someone-else", "reason": "x", "requested_by": "y"}),
        )
        .await;
    assert_eq!(env.error_code(&foreign).await.0, "forbidden");
    let foreign = env
        .send(
            "halt.engage",
            json!({"halt_id": format!("hx-{}", env.id), "customer_id": "someone-else",
                   "scope": {"agent_ids": [a]}, "reason": "x", "requested_by": "y"}),
        )
        .await;
    assert_eq!(env.error_code(&foreign).await.0, "forbidden");
    let unknown = engage(
        &env,
        &format!("hu-{}", env.id),
        json!({"agent_ids": ["nobody-here"]}),
    )
    .await;
    let (code, e) = env.error_code(&unknown).await;
    assert_eq!(code, "not_found");
    assert_eq!(e.agent_ids, Some(vec!["nobody-here".to_string()]));
    // Released from h1, still held by h2.
    let r1 = release(&env, &h1).await;
    env.answer(&r1, "halt.released").await;
    assert_eq!(env.record(&a).await["status"], "halted");
    assert!(paused(&env.inspect(&a).await.expect("container")));
    let r2 = release(&env, &h2).await;
    env.answer(&r2, "halt.released").await;
    common::wait_until("the agent runs again", DEADLINE, || async {
        env.record(&a).await.get("status").map(String::as_str) == Some("running")
    })
    .await;
    // Stop and delete work on a halted agent, and a deleted agent leaves its halt.
    let h3 = format!("h3-{}", env.id);
    let m3 = engage(&env, &h3, json!({"agent_ids": [a]})).await;
    env.answer(&m3, "halt.engaged").await;
    let stop = env.command("agent.stop", &a, json!({"timeout_s": 1})).await;
    env.answer(&stop, "agent.stopped").await;
    assert_eq!(env.record(&a).await["status"], "halted", "still held");
    let del = env
        .command("agent.delete", &a, json!({"timeout_s": 1}))
        .await;
    env.answer(&del, "agent.deleted").await;
    common::wait_until("the halt forgets the deleted agent", DEADLINE, || async {
        env.hash(&format!("halt:{h3}"))
            .await
            .get("agent_ids")
            .is_some_and(|ids| ids == "[]")
    })
    .await;
    env.finish().await;
}

#[actix_rt::test]
async fn a_halt_survives_kill_9_and_a_redis_wipe_and_release_still_works() {
    let env = TestEnv::client_only(&[]).await;
    let vars = common::test_env_vars(&env.id, &[]);
    let mut manager = ManagerProcess::spawn(&vars);
    let a = env.agent_id("k9");
    env.create_running(&a).await;
    let (mq, redis_url) = agent_urls(&env, &a).await;
    let (mq, redis_url) = (
        from_host(&mq, &env.config.rabbitmq.url),
        from_host(&redis_url, &env.config.redis.url),
    );
    let halt_id = format!("hk-{}", env.id);
    let mid = engage(&env, &halt_id, json!({"customer_id": env.customer()})).await;
    env.answer(&mid, "halt.engaged").await;
    manager.kill9();
    // Every key of this installation gone (as FLUSHALL would do, without touching the
    // other tests that share this Redis).
    let keys: Vec<String> = env
        .redis_query(redis::cmd("KEYS").arg(format!("{}*", env.config.redis.prefix)))
        .await;
    if !keys.is_empty() {
        let _: i64 = env.redis_query(redis::cmd("DEL").arg(&keys)).await;
    }
    manager = ManagerProcess::spawn(&vars);
    // The new manager holds the agent again: still frozen, logins refused, halted.
    common::wait_until("the record rebuilt as halted", DEADLINE, || async {
        env.record(&a).await.get("status").map(String::as_str) == Some("halted")
    })
    .await;
    assert!(
        paused(&env.inspect(&a).await.expect("container")),
        "still frozen"
    );
    assert!(amqp(&mq).await.is_err(), "RabbitMQ login still refused");
    assert!(
        redis_login(&redis_url).await.is_err(),
        "Redis login still refused"
    );
    let h = env.hash(&format!("halt:{halt_id}")).await;
    assert_eq!(
        h["halt_id"], halt_id,
        "the halt back in Redis from RabbitMQ's copy"
    );
    let mid = release(&env, &halt_id).await;
    env.answer(&mid, "halt.released").await;
    common::wait_until("the agent runs again", DEADLINE, || async {
        env.record(&a).await.get("status").map(String::as_str) == Some("running")
    })
    .await;
    amqp(&mq).await.expect("the same login works again");
    redis_login(&redis_url)
        .await
        .expect("the same Redis login works again");
    drop(manager);
    env.finish().await;
}

/// The automatic halt: an agent whose own user publishes more than its limit averaged
/// over the window is halted by the manager itself within the window and 5 s, with
/// `auto-<agent_id>-<ms>`, `requested_by` `agent-manager` and the rate in the reason,
/// an `automatic` entry in the audit trail; only `halt.release` gives it back.
#[actix_rt::test]
async fn an_agent_that_floods_is_halted_by_the_manager_itself() {
    let env = TestEnv::start(&[
        ("HALT_MAX_MESSAGES_PER_S", "20"),
        ("HALT_WINDOW_S", "2"),
        ("HALT_WATCH_INTERVAL_MS", "500"),
    ])
    .await;
    let (flood, calm) = (env.agent_id("flood"), env.agent_id("calm"));
    env.create_running(&flood).await;
    env.create_running(&calm).await;
    let (mq, _) = agent_urls(&env, &flood).await;
    let mq = from_host(&mq, &env.config.rabbitmq.url);
    let conn = amqp(&mq).await.expect("the agent's own login");
    let ch = conn.create_channel().await.expect("a channel");
    let key = agent_manager::protocol::task::result_key(&flood);
    let exchange = env.config.rabbitmq.exchange.clone();
    let flooding = tokio::spawn(async move {
        // ~100 messages a second until the broker cuts the connection.
        loop {
            let sent = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                )
                .await;
            if sent.is_err() || !conn.status().connected() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = Instant::now();
    let id = flood.clone();
    let halted = env
        .wait_event("agent.halted of the flooding agent", DEADLINE, move |e| {
            e.agent_id == id && e.event.routing_key() == "agent.halted"
        })
        .await;
    let took = started.elapsed();
    let halt_id = halted.details["halt_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(halt_id.starts_with(&format!("auto-{flood}-")), "{halt_id}");
    assert_eq!(halted.details["requested_by"], "agent-manager");
    assert!(
        halted.details["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("messages/s"),
        "{}",
        halted.details
    );
    assert!(
        took < Duration::from_secs(2 + 5 + 5),
        "halted {took:?} after the flood began"
    );
    tokio::time::timeout(DEADLINE, flooding)
        .await
        .expect("the flood's connection cut")
        .expect("flood task");
    assert_eq!(
        env.record(&calm).await["status"],
        "running",
        "a calm agent is left alone"
    );
    let trail: Vec<(String, Vec<(String, String)>)> = env
        .redis_query(
            redis::cmd("XRANGE")
                .arg(env.key("halts:events"))
                .arg("-")
                .arg("+"),
        )
        .await;
    assert!(
        trail
            .iter()
            .any(|(_, fields)| fields.contains(&("kind".to_string(), "automatic".to_string()))),
        "{trail:?}"
    );
    let mid = release(&env, &halt_id).await;
    env.answer(&mid, "halt.released").await;
    common::wait_until("the agent runs again", DEADLINE, || async {
        env.record(&flood).await.get("status").map(String::as_str) == Some("running")
    })
    .await;
    env.finish().await;
}
