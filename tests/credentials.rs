//! Contract section 7 from inside: an agent's container holds credentials of its own,
//! and with real clients (lapin, redis) they do exactly what section 7 allows: the
//! agent's own queues, routing keys, record, stream, data keys and channels work;
//! commands, events, the command queue, other agents' queues and keys, listing and
//! wiping the keyspace, the server's settings and the management API are refused. A
//! container made anew gets a new password (the old one stops working); after delete
//! both logins fail and open connections are closed; a manager start puts back the
//! users Redis or RabbitMQ lost, from the container's own environment, without
//! restarting it.

mod common;

use std::time::Duration;

use common::{TestEnv, DEADLINE};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

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

fn password_of(url: &str) -> String {
    url::Url::parse(url)
        .expect("a URL")
        .password()
        .expect("a password")
        .to_string()
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

async fn redis_conn(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// Runs `op` on a channel of its own and returns the broker's refusal, if any. A
/// refused publish shows when its confirm (or the next call on the channel) fails.
async fn refusal<F, Fut>(conn: &Connection, op: F) -> Option<String>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<()>>,
{
    let ch = conn.create_channel().await.expect("a channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    if let Err(e) = op(ch.clone()).await {
        return Some(e.to_string());
    }
    // A channel the broker closed fails its next call.
    match ch.basic_qos(1, BasicQosOptions::default()).await {
        Err(e) => Some(e.to_string()),
        Ok(()) => {
            let _ = ch.close(200, "done".into()).await;
            None
        }
    }
}

async fn publish(ch: &Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            br#"{"task_id":"t","task":"x"}"#,
            BasicProperties::default(),
        )
        .await?
        .await?;
    assert!(!confirm.is_nack(), "publishing {key}: nacked");
    Ok(())
}

fn assert_refused(what: &str, refused: Option<String>) {
    let Some(message) = refused else {
        panic!("{what}: allowed, but section 7 refuses it")
    };
    assert!(
        message.contains("ACCESS_REFUSED"),
        "{what}: refused, but not by the broker's access control: {message}"
    );
}

fn assert_noperm<T: std::fmt::Debug>(what: &str, r: redis::RedisResult<T>) {
    match r {
        Ok(v) => panic!("{what}: allowed ({v:?}), but section 7 refuses it"),
        Err(e) => assert!(
            ["NOPERM", "permission", "can't access"]
                .iter()
                .any(|m| e.to_string().contains(m)),
            "{what}: refused, but not by Redis' ACL: {e}"
        ),
    }
}

#[actix_rt::test]
async fn an_agent_may_do_what_section_7_allows_and_nothing_else() {
    let env = TestEnv::start(&[]).await;
    let me = env.agent_id("me.1");
    let other = env.agent_id("other");
    env.create_running(&me).await;
    env.create_running(&other).await;
    let (mq_url, redis_url) = agent_urls(&env, &me).await;
    let (other_mq, _) = agent_urls(&env, &other).await;

    // Credentials of its own: never the manager's, never another agent's.
    let user = format!("agent-{me}");
    for url in [&mq_url, &redis_url] {
        let parsed = url::Url::parse(url).unwrap();
        assert_eq!(
            parsed.username(),
            user,
            "{}",
            agent_manager::redact::url(url)
        );
        assert!(!url.contains("guest"));
    }
    let password = password_of(&mq_url);
    assert_eq!(password, password_of(&redis_url));
    assert!(password.len() >= 22, "at least 128 bits");
    assert_ne!(password, password_of(&other_mq));

    let exchange = env.config.rabbitmq.exchange.clone();
    let conn = amqp(&mq_url).await.expect("the agent logs in to RabbitMQ");

    // Allowed: its inbox (the manager made it; the agent declares it again as section 8
    // says, durable, no arguments), bound to its task key, consumed; its results
    // published.
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let inbox = common::declare_inbox(&ch, &me).await;
    ch.queue_bind(
        inbox.as_str().into(),
        exchange.as_str().into(),
        format!("agent:{me}:task").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind its inbox to its task key");
    let mut tasks = ch
        .basic_consume(
            inbox.as_str().into(),
            "agent".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume its inbox");
    // The Core Engine gives it a task; it arrives.
    env.publish_raw(
        &format!("agent:{me}:task"),
        br#"{"task_id":"t1","task":"x"}"#,
        None,
    )
    .await;
    let task = tokio::time::timeout(Duration::from_secs(10), tasks.next())
        .await
        .expect("the task arrives")
        .expect("a delivery")
        .expect("no error");
    task.ack(BasicAckOptions::default()).await.expect("ack");
    publish(&ch, &exchange, &format!("agent:{me}:result"))
        .await
        .expect("publish its result");

    // Refused: every command and an event, other agents' keys, the default exchange.
    let forbidden_keys: Vec<String> = [
        "agent.create",
        "agent.update",
        "agent.start",
        "agent.stop",
        "agent.restart",
        "agent.delete",
        "agent.health",
    ]
    .iter()
    .map(|k| k.to_string())
    .chain([format!("agent:{other}:task"), format!("agent:{me}x:task")])
    .collect();
    for key in forbidden_keys {
        let (ex, k) = (exchange.clone(), key.clone());
        let refused = refusal(&conn, |ch| async move { publish(&ch, &ex, &k).await }).await;
        assert_refused(&format!("publishing {key}"), refused);
    }
    let queue = env.config.rabbitmq.command_queue.clone();
    let q = queue.clone();
    let refused = refusal(&conn, |ch| async move { publish(&ch, "", &q).await }).await;
    assert_refused("publishing to the default exchange", refused);
    // Reading the command queue, another agent's queue.
    // (The other agent's inbox exists: the manager made it with its users.)
    for q in [queue.clone(), format!("agent:{other}:inbox")] {
        let name = q.clone();
        let refused = refusal(&conn, |ch| async move {
            ch.basic_consume(
                name.as_str().into(),
                "thief".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ())
        })
        .await;
        assert_refused(&format!("consuming {q}"), refused);
        let name = q.clone();
        let refused = refusal(&conn, |ch| async move {
            ch.basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .map(|_| ())
        })
        .await;
        assert_refused(&format!("getting from {q}"), refused);
    }
    // Declaring another agent's queue; binding its own to commands or events.
    let theirs = format!("agent:{other}:mine-now");
    let refused = refusal(&conn, |ch| async move {
        ch.queue_declare(
            theirs.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ())
    })
    .await;
    assert_refused("declaring another agent's queue", refused);
    for key in ["agent.#", "agent.delete", "#"] {
        let (q, ex) = (inbox.clone(), exchange.clone());
        let refused = refusal(&conn, |ch| async move {
            ch.queue_bind(
                q.as_str().into(),
                ex.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        })
        .await;
        assert_refused(&format!("binding its queue to {key}"), refused);
    }
    // Binding to the dead-letter exchange (no permission on it at all).
    let (q, dlx) = (
        inbox.clone(),
        env.config.rabbitmq.dead_letter_exchange.clone(),
    );
    let refused = refusal(&conn, |ch| async move {
        ch.queue_bind(
            q.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_refused("binding to the dead-letter exchange", refused);
    // No management access.
    let management = agent_manager::broker::management::Management::new(
        &format!("http://{user}:{password}@127.0.0.1:15672"),
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    let denied = management
        .users()
        .await
        .expect_err("management refuses the agent");
    assert!(denied.to_string().contains("401"), "{denied}");

    // Redis: its record and stream readable, its data keys and channels usable.
    let mut r = redis_conn(&redis_url)
        .await
        .expect("the agent logs in to Redis");
    let key = |suffix: &str| env.key(suffix);
    let record: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key(&format!("agent:{me}")))
        .query_async(&mut r)
        .await
        .expect("read its record");
    assert_eq!(record["agent_id"], me);
    let _: redis::Value = redis::cmd("XRANGE")
        .arg(key(&format!("agent:{me}:events")))
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .expect("read its event stream");
    let data = key(&format!("agent:{me}:data:x"));
    let _: () = redis::cmd("SET")
        .arg(&data)
        .arg("v")
        .query_async(&mut r)
        .await
        .expect("write its data");
    let v: String = redis::cmd("GET")
        .arg(&data)
        .query_async(&mut r)
        .await
        .expect("read its data");
    assert_eq!(v, "v");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(key(&format!("agent:{me}:chat")))
        .arg("hi")
        .query_async(&mut r)
        .await
        .expect("publish on its channel");

    // Refused: writing its record, other agents' keys, the sets, listing, wiping,
    // the server's settings.
    let mut refused: Vec<(String, redis::Cmd)> = Vec::new();
    let mut add = |what: &str, cmd: &mut redis::Cmd| refused.push((what.into(), cmd.clone()));
    add(
        "writing its own record",
        redis::cmd("HSET")
            .arg(key(&format!("agent:{me}")))
            .arg("status")
            .arg("running"),
    );
    add(
        "reading another agent's record",
        redis::cmd("HGETALL").arg(key(&format!("agent:{other}"))),
    );
    add(
        "reading another agent's data",
        redis::cmd("GET").arg(key(&format!("agent:{other}:data:x"))),
    );
    add(
        "a key beside its own",
        redis::cmd("GET").arg(key(&format!("agent:{me}x:data:x"))),
    );
    add("the agents set", redis::cmd("SMEMBERS").arg(key("agents")));
    add(
        "a customer's agents",
        redis::cmd("SMEMBERS").arg(key(&format!("customer:{}:agents", env.customer()))),
    );
    add("KEYS", redis::cmd("KEYS").arg("*"));
    add("SCAN", redis::cmd("SCAN").arg(0));
    add("RANDOMKEY", &mut redis::cmd("RANDOMKEY"));
    add("DBSIZE", &mut redis::cmd("DBSIZE"));
    add("FLUSHALL", &mut redis::cmd("FLUSHALL"));
    add("FLUSHDB", &mut redis::cmd("FLUSHDB"));
    add("CONFIG GET", redis::cmd("CONFIG").arg("GET").arg("*"));
    // (A harmless value, should it ever be allowed.)
    add(
        "CONFIG SET",
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-samples")
            .arg(5),
    );
    add("ACL LIST", redis::cmd("ACL").arg("LIST"));
    add("INFO", &mut redis::cmd("INFO"));
    add("CLIENT LIST", redis::cmd("CLIENT").arg("LIST"));
    // (DEBUG is off in this server's configuration, which refuses it before the ACL.)
    add("SLOWLOG", redis::cmd("SLOWLOG").arg("GET"));
    add("LASTSAVE", &mut redis::cmd("LASTSAVE"));
    // ABORT: harmless even if it were allowed (no shutdown is under way).
    add("SHUTDOWN", redis::cmd("SHUTDOWN").arg("ABORT"));
    add("MODULE LIST", redis::cmd("MODULE").arg("LIST"));
    add("SELECT", redis::cmd("SELECT").arg(1));
    add("PUBSUB CHANNELS", redis::cmd("PUBSUB").arg("CHANNELS"));
    add("FUNCTION FLUSH", redis::cmd("FUNCTION").arg("FLUSH"));
    add(
        "publishing on another agent's channel",
        redis::cmd("PUBLISH")
            .arg(key(&format!("agent:{other}:chat")))
            .arg("hi"),
    );
    add(
        "a script on another agent's record",
        redis::cmd("EVAL")
            .arg("return redis.call('HGETALL', KEYS[1])")
            .arg(1)
            .arg(key(&format!("agent:{other}"))),
    );
    add(
        "a script reaching beyond its declared keys",
        redis::cmd("EVAL")
            .arg("return redis.call('SMEMBERS', ARGV[1])")
            .arg(1)
            .arg(&data)
            .arg(key("agents")),
    );
    for (what, cmd) in refused {
        assert_noperm(&what, cmd.query_async::<redis::Value>(&mut r).await);
    }

    // After delete, both logins fail and the open connections are closed.
    let mid = env.command("agent.delete", &me, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert!(amqp(&mq_url).await.is_err(), "RabbitMQ login after delete");
    match redis_conn(&redis_url).await {
        Ok(mut c) => {
            let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
            assert!(r.is_err(), "Redis login after delete");
        }
        Err(e) => assert!(
            ["WRONGPASS", "invalid", "authentication failed"]
                .iter()
                .any(|m| e.to_string().contains(m)),
            "{e}"
        ),
    }
    let still: redis::RedisResult<String> = redis::cmd("GET").arg(&data).query_async(&mut r).await;
    assert!(still.is_err(), "the open Redis connection is closed");
    common::wait_until("the open AMQP connection is closed", DEADLINE, || async {
        !conn.status().connected()
    })
    .await;
    // The other agent is untouched.
    let (other_mq, other_redis) = agent_urls(&env, &other).await;
    amqp(&other_mq)
        .await
        .expect("the other agent still logs in");
    redis_conn(&other_redis)
        .await
        .expect("the other agent still logs in to Redis");
    env.finish().await;
}

#[actix_rt::test]
async fn a_container_made_anew_gets_a_new_password_and_the_old_one_stops_working() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("rotate");
    env.create_running(&id).await;
    let (old_mq, old_redis) = agent_urls(&env, &id).await;
    amqp(&old_mq).await.expect("the first password works");
    // A config change replaces the container.
    let mid = env
        .command("agent.update", &id, json!({"config": {"symbol": "ETH"}}))
        .await;
    let updated = env.answer(&mid, "agent.updated").await;
    assert_eq!(updated.details["replaced"], true);
    let (new_mq, new_redis) = agent_urls(&env, &id).await;
    assert_ne!(password_of(&new_mq), password_of(&old_mq));
    assert!(amqp(&old_mq).await.is_err(), "the old RabbitMQ password");
    assert!(
        redis_conn(&old_redis).await.is_err(),
        "the old Redis password"
    );
    amqp(&new_mq).await.expect("the new RabbitMQ password");
    redis_conn(&new_redis)
        .await
        .expect("the new Redis password");
    env.finish().await;
}

/// When the agent's container last started (a restart changes it).
async fn started_at(env: &TestEnv, agent_id: &str) -> String {
    let container = env.inspect(agent_id).await.expect("container");
    container
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default()
}

/// The broker's management API as the manager's own user.
fn management_api(env: &TestEnv) -> agent_manager::broker::management::Management {
    agent_manager::broker::management::Management::new(
        &env.config.rabbitmq.management_url(),
        None,
        Duration::from_secs(10),
    )
    .expect("the management API's URL")
}

#[actix_rt::test]
async fn a_start_puts_back_lost_users_without_a_restart_and_removes_orphans() {
    let mut env = TestEnv::start(&[]).await;
    let id = env.agent_id("survivor");
    env.create_running(&id).await;
    let before = started_at(&env, &id).await;
    let (mq_url, redis_url) = agent_urls(&env, &id).await;
    let management = management_api(&env);
    // While no manager runs: Redis and RabbitMQ lose the agent's users (restarted
    // without their data), and users are left of an agent that no longer exists.
    let user = format!("agent-{id}");
    let ghost = env.agent_id("ghost");
    let config = env.config.clone();
    let (m, u, g) = (management.clone(), user.clone(), ghost.clone());
    let mut redis = env.redis.clone();
    env.restart_manager_with(|| async move {
        let _: i64 = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&u)
            .query_async(&mut redis)
            .await
            .expect("deluser");
        m.delete_user(&u).await.expect("delete the RabbitMQ user");
        let store = agent_manager::store::Store::connect(&config.redis)
            .await
            .unwrap();
        let identities = agent_manager::identity::Identities::new(&config, store).unwrap();
        use agent_manager::ports::CredentialIssuer;
        let pw = agent_manager::credentials::Password::generate().unwrap();
        identities.issue(&g, &pw).await.expect("an orphan's users");
    })
    .await;
    // Back, with the container's own password, and the container never restarted.
    amqp(&mq_url)
        .await
        .expect("RabbitMQ login with the container's password");
    redis_conn(&redis_url)
        .await
        .expect("Redis login with the container's password");
    let after = started_at(&env, &id).await;
    assert_eq!(before, after, "the container was not restarted");
    let users = management.users().await.unwrap();
    assert!(!users.iter().any(|u| u.name == format!("agent-{ghost}")));
    let acl: Vec<String> = env.redis_query(redis::cmd("ACL").arg("USERS")).await;
    assert!(!acl.contains(&format!("agent-{ghost}")));
    assert!(acl.contains(&user));
    env.finish().await;
}

#[actix_rt::test]
async fn users_lost_while_the_manager_runs_are_put_back_by_its_audit() {
    let env = TestEnv::start(&[("CREDENTIALS_AUDIT_INTERVAL_S", "1")]).await;
    let id = env.agent_id("audited");
    env.create_running(&id).await;
    let before = started_at(&env, &id).await;
    let (mq_url, redis_url) = agent_urls(&env, &id).await;
    let management = management_api(&env);
    // Both services lose the agent's users while the manager runs.
    let user = format!("agent-{id}");
    let removed: i64 = env
        .redis_query(redis::cmd("ACL").arg("DELUSER").arg(&user))
        .await;
    assert_eq!(removed, 1, "the Redis user was there and is gone");
    management
        .delete_user(&user)
        .await
        .expect("delete the RabbitMQ user");
    // Back within a few audits, with the container's own password.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let back = amqp(&mq_url).await.is_ok() && redis_conn(&redis_url).await.is_ok();
        if back {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent's users were not made again within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = started_at(&env, &id).await;
    assert_eq!(before, after, "the container was not restarted");
    env.finish().await;
}

#[actix_rt::test]
async fn containers_made_with_shared_credentials_are_replaced_by_a_per_agent_start() {
    let mut env = TestEnv::start(&[("AGENT_CREDENTIALS", "shared")]).await;
    let id = env.agent_id("legacy");
    env.create_running(&id).await;
    let (shared_mq, _) = agent_urls(&env, &id).await;
    assert_eq!(
        shared_mq,
        common::agent_rabbitmq_url(),
        "shared: the URL as given"
    );
    let old = env
        .inspect(&id)
        .await
        .and_then(|c| c.id)
        .expect("container");
    env.config.agents.credentials = agent_manager::config::CredentialMode::PerAgent;
    env.restart_manager().await;
    let deadline = DEADLINE;
    let id2 = id.clone();
    env.wait_event(
        "the agent back with a container of its own",
        deadline,
        move |e| e.agent_id == id2 && e.event.routing_key() == "agent.restarted",
    )
    .await;
    common::wait_until("a new running container", DEADLINE, || async {
        env.inspect(&id)
            .await
            .and_then(|c| c.id)
            .is_some_and(|c| c != old)
            && env.running(&id).await
    })
    .await;
    let (mq_url, redis_url) = agent_urls(&env, &id).await;
    assert!(mq_url.contains(&format!("agent-{id}:")));
    amqp(&mq_url).await.expect("its own RabbitMQ login");
    redis_conn(&redis_url).await.expect("its own Redis login");
    env.finish().await;
}

/// Settings for the kill -9 rounds: no HEALTHCHECK execs competing on two cores.
const FAST: &[(&str, &str)] = &[
    ("CONTAINER_HEALTHCHECK", "NONE"),
    ("HEALTH_CHECK_INTERVAL_S", "1"),
    ("RESTART_BACKOFF_BASE_MS", "100"),
    ("RESTART_BACKOFF_MAX_MS", "1000"),
];

#[actix_rt::test]
async fn kill_9_at_any_step_leaves_no_orphan_user_and_no_agent_without_a_working_login() {
    use agent_manager::ports::CredentialIssuer;
    let env = TestEnv::client_only(FAST).await;
    let vars = common::test_env_vars(&env.id, FAST);
    let mut manager = common::ManagerProcess::spawn(&vars);
    let mut alive: Vec<String> = Vec::new();
    // Rounds whose kill came before every command of the burst was answered.
    let mut cut_short = 0;
    for round in 0..5u64 {
        // New agents, a config change (a new container, a new password) for half of the
        // ones alive, a delete for the other half, all at once.
        let fresh: Vec<String> = (0..6)
            .map(|i| env.agent_id(&format!("k{round}x{i}")))
            .collect();
        let mut expect = Vec::new();
        for id in &fresh {
            let mut body = env.create_body(id);
            body["resources"] = json!({"memory_mb": 32, "cpus": 0.1});
            expect.push((env.send("agent.create", body).await, "agent.started"));
        }
        for (i, id) in alive.iter().enumerate() {
            if i % 2 == 0 {
                let mid = env.command("agent.delete", id, json!({})).await;
                expect.push((mid, "agent.deleted"));
            } else {
                let config = json!({"config": {"round": round}});
                let mid = env.command("agent.update", id, config).await;
                expect.push((mid, "agent.updated"));
            }
        }
        // Killed while the burst is applied: once its first answer is out, then a
        // little later each round, so that the kill lands on other steps (users made,
        // container not yet; container gone, users not yet; ...).
        let first = expect[0].0.clone();
        env.wait_event("the burst under way", DEADLINE, move |e| {
            e.correlation_id.as_deref() == Some(first.as_str())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(53 * round)).await;
        manager.kill9();
        let finished = expect
            .iter()
            .filter(|(mid, answer)| {
                env.answers(mid)
                    .iter()
                    .any(|e| e.event.routing_key() == *answer)
            })
            .count();
        if finished < expect.len() {
            cut_short += 1;
        }
        manager = common::ManagerProcess::spawn(&vars);
        for (mid, answer) in &expect {
            env.answer(mid, answer).await;
        }
        alive = alive
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, id)| id.clone())
            .chain(fresh)
            .collect();
    }
    assert!(cut_short > 0, "no kill landed in the middle of a burst");
    // Every agent runs with a login that works, and only they have users.
    for id in &alive {
        common::wait_until(&format!("{id} running"), DEADLINE, || async {
            env.running(id).await
        })
        .await;
        let (mq, redis) = agent_urls(&env, id).await;
        amqp(&mq)
            .await
            .unwrap_or_else(|e| panic!("{id}: RabbitMQ login: {e}"));
        redis_conn(&redis)
            .await
            .unwrap_or_else(|e| panic!("{id}: Redis login: {e}"));
    }
    let store = agent_manager::store::Store::connect(&env.config.redis)
        .await
        .expect("redis");
    let census = agent_manager::identity::Identities::new(&env.config, store)
        .expect("identities")
        .census()
        .await
        .expect("census");
    let alive: std::collections::HashSet<String> = alive.into_iter().collect();
    assert_eq!(
        census.owned, alive,
        "users exactly for the agents that exist"
    );
    assert_eq!(census.complete, alive, "and complete");
    drop(manager);
    env.finish().await;
}

/// The manager makes the agent's inbox with its users (contract section 8's queue, bound
/// to its task key): a task published right after `agent.created`, before the agent
/// ever connects, waits in it; `agent.delete` removes it with the tasks left in it.
#[actix_rt::test]
async fn the_inbox_is_made_with_the_users_and_removed_by_delete() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("inboxed");
    let body = env.create_body(&id);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;
    let task = json!({"task_id": "t-early", "task": "before the agent listens"});
    env.publish_raw(
        &agent_manager::protocol::task::task_key(&id),
        task.to_string().as_bytes(),
        None,
    )
    .await;
    let inbox = agent_manager::protocol::task::inbox_queue(&id);
    let conn = Connection::connect(common::RABBITMQ_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let waiting = passive_count(&conn, &inbox)
        .await
        .expect("the inbox exists after agent.created");
    assert_eq!(waiting, 1, "the early task waits in the inbox");
    let delete = env.command("agent.delete", &id, json!({})).await;
    env.answer(&delete, "agent.deleted").await;
    let gone = passive_count(&conn, &inbox).await;
    assert!(
        gone.is_err(),
        "agent.delete removes the inbox: {gone:?} messages left"
    );
    env.finish().await;
}

/// The messages in `queue` (a passive declare on a channel of its own); an error when the
/// queue does not exist.
async fn passive_count(conn: &Connection, queue: &str) -> lapin::Result<u32> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
}

/// Issue 27: removing a user makes the broker close its connections by itself, and the
/// close the revoke sends right after can meet one already closing (the management API
/// then answered 500). Twenty users, each with an open connection of its own, revoked
/// at once: every revoke succeeds and every connection is closed.
#[actix_rt::test]
async fn a_revoke_that_races_the_broker_s_own_close_succeeds_and_closes_every_connection() {
    use agent_manager::ports::CredentialIssuer;
    let env = TestEnv::start(&[]).await;
    let store = agent_manager::store::Store::connect(&env.config.redis)
        .await
        .expect("Redis");
    let identities = agent_manager::identity::Identities::new(&env.config, store)
        .expect("the management API's URL");
    let base = env.config.agent_rabbitmq_url().to_string();
    let mut held = Vec::new();
    for n in 0..20 {
        let id = env.agent_id(&format!("racer{n}"));
        let password = agent_manager::credentials::Password::generate().expect("a password");
        identities.issue(&id, &password).await.expect("issue");
        let url = agent_manager::credentials::url_with_login(
            &base,
            &agent_manager::credentials::user_name(&id),
            &password,
        )
        .expect("the agent's URL");
        let conn = amqp(&url).await.expect("the agent's own login");
        held.push((id, conn));
    }
    let revokes = held.iter().map(|(id, _)| identities.revoke(id));
    for (n, result) in futures_util::future::join_all(revokes)
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|e| panic!("revoke of user {n} failed: {e}"));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for (id, conn) in &held {
        while conn.status().connected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}'s connection still open after its revoke"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    env.finish().await;
}
