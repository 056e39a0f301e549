//! Every lifecycle command end to end: RabbitMQ in, a real container, the Redis
//! record, and the answering events out (contract sections 1–5, docker mode).

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, DEADLINE};
use serde_json::{json, Value};

fn env_of(inspect: &bollard::models::ContainerInspectResponse) -> Vec<String> {
    inspect
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

#[actix_rt::test]
async fn full_lifecycle_container_record_and_events() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("life");
    let cust = env.customer();

    // create → agent.created, then agent.started
    let mid = env.send("agent.create", env.create_body(&id)).await;
    let created = env.answer(&mid, "agent.created").await;
    let started = env.answer(&mid, "agent.started").await;
    assert_eq!(created.agent_id, id);
    assert_eq!(created.customer_id, cust);
    assert_eq!(started.status, "running");
    let cid = started.container_id.clone().expect("container id");

    // The container, as Docker records it (contract section 4).
    let c = env.inspect(&id).await.expect("container exists");
    assert_eq!(c.id.as_deref(), Some(cid.as_str()));
    assert_eq!(c.name.as_deref(), Some(format!("/agent-{id}").as_str()));
    assert!(c.state.as_ref().unwrap().running.unwrap());
    let cfg = c.config.as_ref().unwrap();
    assert_eq!(cfg.image.as_deref(), Some(common::agent_image()));
    let labels = cfg.labels.as_ref().unwrap();
    assert_eq!(labels["autogen.managed-by"], "agent-manager");
    assert_eq!(labels["autogen.agent-id"], id);
    assert_eq!(labels["autogen.customer-id"], cust);
    assert_eq!(labels["autogen.agent-type"], "trading");
    assert_eq!(labels["autogen.agent-name"], format!("Agent {id}"));
    let vars = env_of(&c);
    for expected in [
        format!("AGENT_ID={id}"),
        format!("CUSTOMER_ID={cust}"),
        "AGENT_TYPE=trading".to_string(),
        format!("AGENT_NAME=Agent {id}"),
        "CONFIG={\"symbol\":\"BTC-USD\"}".to_string(),
        "AUTOGEN_CONFIG={\"model\":\"gpt-test\"}".to_string(),
        "HEARTBEAT_INTERVAL_S=10".to_string(),
        format!("REDIS_PREFIX={}", env.config.redis.prefix),
    ] {
        assert!(
            vars.contains(&expected),
            "missing env {expected} in {vars:?}"
        );
    }
    // Its own RabbitMQ and Redis login (contract section 7), never the manager's.
    common::own_login(&id, &vars);
    let host = c.host_config.as_ref().unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(
        host.memory_swap,
        Some(64 * 1024 * 1024),
        "swap equals memory"
    );
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert!(host.pids_limit.unwrap_or(0) > 0, "pids limit set");
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host.tmpfs.as_ref().unwrap().contains_key("/tmp"));
    assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(host
        .security_opt
        .as_ref()
        .unwrap()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    assert_ne!(host.privileged, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("autogen-network"));
    assert!(
        host.binds.as_ref().is_none_or(|b| b.is_empty()),
        "no host paths"
    );
    let nets = c
        .network_settings
        .as_ref()
        .unwrap()
        .networks
        .as_ref()
        .unwrap();
    assert!(nets.contains_key("autogen-network"));

    // The Redis record (contract section 5).
    let r = env.record(&id).await;
    assert_eq!(r["agent_id"], id);
    assert_eq!(r["customer_id"], cust);
    assert_eq!(r["agent_type"], "trading");
    assert_eq!(r["status"], "running");
    assert_eq!(r["desired_state"], "running");
    assert_eq!(r["container_id"], cid);
    assert_eq!(r["image"], common::agent_image());
    let res: Value = serde_json::from_str(&r["resources"]).unwrap();
    assert_eq!(res, json!({"memory_mb": 64, "cpus": 0.5, "gpus": 0}));
    let config: Value = serde_json::from_str(&r["config"]).unwrap();
    assert_eq!(config, json!({"symbol": "BTC-USD"}));
    for f in [
        "health",
        "cpu_percent",
        "memory_bytes",
        "restart_count",
        "last_error",
        "created_at",
        "updated_at",
        "last_health_at",
        "autogen_config",
        "name",
    ] {
        assert!(r.contains_key(f), "record lacks {f}");
    }
    let members: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("agents")))
        .await;
    assert!(members.contains(&id));
    let members: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key(&format!("customer:{cust}:agents"))))
        .await;
    assert_eq!(members, vec![id.clone()]);
    let stream_len: usize = env
        .redis_query(redis::cmd("XLEN").arg(env.key(&format!("agent:{id}:events"))))
        .await;
    assert!(stream_len >= 2, "created and started are in the stream");

    // stop → agent.stopped
    let mid = env.command("agent.stop", &id, json!({})).await;
    let stopped = env.answer(&mid, "agent.stopped").await;
    assert_eq!(stopped.status, "stopped");
    assert!(!env.running(&id).await);
    let r = env.record(&id).await;
    assert_eq!(
        (r["status"].as_str(), r["desired_state"].as_str()),
        ("stopped", "stopped")
    );

    // start → agent.started
    let mid = env.command("agent.start", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.started").await.status, "running");
    assert!(env.running(&id).await);
    assert_eq!(env.record(&id).await["status"], "running");

    // restart → agent.restarted, status running, a new start time
    let before = env.inspect(&id).await.unwrap().state.unwrap().started_at;
    let mid = env
        .command("agent.restart", &id, json!({"timeout_s": 5}))
        .await;
    assert_eq!(env.answer(&mid, "agent.restarted").await.status, "running");
    let after = env.inspect(&id).await.unwrap().state.unwrap();
    assert!(after.running.unwrap());
    assert_ne!(before, after.started_at, "the container was restarted");

    // What the agent wrote itself (section 7's `agent:<id>:data:*`), and a key of a
    // neighbour whose id begins with this one's, which must be left alone.
    let data = env.key(&format!("agent:{id}:data:results:t1"));
    let neighbour = env.key(&format!("agent:{id}x:data:results:t1"));
    for key in [&data, &neighbour] {
        let _: () = env.redis_query(redis::cmd("SET").arg(key).arg("{}")).await;
    }

    // delete → agent.deleted; container and keys gone
    let mid = env.command("agent.delete", &id, json!({})).await;
    let deleted = env.answer(&mid, "agent.deleted").await;
    assert_eq!(deleted.agent_id, id);
    assert!(env.inspect(&id).await.is_none(), "container removed");
    assert!(env.record(&id).await.is_empty(), "record removed");
    let exists: i64 = env
        .redis_query(redis::cmd("EXISTS").arg(env.key(&format!("agent:{id}:events"))))
        .await;
    assert_eq!(exists, 0, "event stream removed");
    let exists: i64 = env
        .redis_query(
            redis::cmd("EXISTS")
                .arg(&data)
                .arg(env.key(&format!("agent:{id}:data:heartbeat"))),
        )
        .await;
    assert_eq!(exists, 0, "the agent's own data keys removed");
    let deleted: i64 = env.redis_query(redis::cmd("DEL").arg(&neighbour)).await;
    assert_eq!(deleted, 1, "another agent's data is left alone");
    let member: bool = env
        .redis_query(redis::cmd("SISMEMBER").arg(env.key("agents")).arg(&id))
        .await;
    assert!(!member);
    let member: bool = env
        .redis_query(
            redis::cmd("SISMEMBER")
                .arg(env.key(&format!("customer:{cust}:agents")))
                .arg(&id),
        )
        .await;
    assert!(!member);

    // A command for the deleted agent is refused.
    let mid = env.command("agent.start", &id, json!({})).await;
    assert_eq!(env.error_code(&mid).await.0, "not_found");
    env.finish().await;
}

#[actix_rt::test]
async fn create_without_auto_start_then_start() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("lazy");
    let mut body = env.create_body(&id);
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    let created = env.answer(&mid, "agent.created").await;
    assert_eq!(created.status, "created");
    let c = env.inspect(&id).await.expect("container created");
    assert_eq!(c.state.unwrap().running, Some(false));
    let r = env.record(&id).await;
    assert_eq!(
        (r["status"].as_str(), r["desired_state"].as_str()),
        ("created", "stopped")
    );
    assert!(env
        .answers(&mid)
        .iter()
        .all(|e| e.event.routing_key() != "agent.started"));

    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    assert!(env.running(&id).await);
    env.finish().await;
}

#[actix_rt::test]
async fn create_without_agent_id_generates_a_uuid() {
    let env = TestEnv::start(&[]).await;
    let mut body = env.create_body("x");
    body.as_object_mut().unwrap().remove("agent_id");
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    let created = env.answer(&mid, "agent.created").await;
    let uuid = uuid::Uuid::parse_str(&created.agent_id).expect("agent id is a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert!(env.inspect(&created.agent_id).await.is_some());
    env.finish().await;
}

#[actix_rt::test]
async fn duplicate_create_is_answered_again_and_different_spec_refused() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("dup");
    env.create_running(&id).await;
    let first = env.inspect(&id).await.unwrap().id;

    let mid = env.send("agent.create", env.create_body(&id)).await;
    let again = env.answer(&mid, "agent.created").await;
    assert_eq!(again.status, "running");
    assert_eq!(env.containers().await.len(), 1, "no second container");
    assert_eq!(env.inspect(&id).await.unwrap().id, first);

    let mut other = env.create_body(&id);
    other["name"] = json!("Another name");
    let mid = env.send("agent.create", other).await;
    assert_eq!(env.error_code(&mid).await.0, "already_exists");
    assert_eq!(env.record(&id).await["name"], format!("Agent {id}"));
    env.finish().await;
}

#[actix_rt::test]
async fn repeated_message_id_is_applied_once_and_answered_again() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("once");
    env.create_running(&id).await;

    let stop_id = format!("stop-{}", env.id);
    env.command("agent.stop", &id, json!({"message_id": stop_id}))
        .await;
    let first = env.answer(&stop_id, "agent.stopped").await;
    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;

    // The same stop again: answered with the same event, and the agent keeps running.
    env.command("agent.stop", &id, json!({"message_id": stop_id}))
        .await;
    let until = Instant::now() + DEADLINE;
    while env.answers(&stop_id).len() < 2 {
        assert!(Instant::now() < until, "repeated command was not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = env.answers(&stop_id);
    assert_eq!(
        answers[1].event_id, first.event_id,
        "the answer is replayed, not recomputed"
    );
    // A later command on the same agent proves the replay has been fully handled.
    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    assert!(env.running(&id).await, "the repeated stop was not applied");
    assert_eq!(env.record(&id).await["status"], "running");

    // The AMQP message_id property is the key when the body has none.
    let body = json!({"agent_id": id, "customer_id": env.customer()}).to_string();
    let amqp_id = format!("amqp-{}", env.id);
    env.publish_raw("agent.stop", body.as_bytes(), Some(&amqp_id))
        .await;
    env.answer(&amqp_id, "agent.stopped").await;
    env.finish().await;
}

#[actix_rt::test]
async fn wrong_customer_is_forbidden_and_changes_nothing() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("owned");
    env.create_running(&id).await;
    for rk in [
        "agent.stop",
        "agent.delete",
        "agent.restart",
        "agent.update",
        "agent.start",
    ] {
        let mid = env
            .send(
                rk,
                json!({"agent_id": id, "customer_id": "intruder", "name": "pwned"}),
            )
            .await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "forbidden", "{rk}");
        assert_eq!(e.details["command"], rk);
    }
    let mut body = env.create_body(&id);
    body["customer_id"] = json!("intruder");
    let mid = env.send("agent.create", body).await;
    assert_eq!(env.error_code(&mid).await.0, "forbidden");
    assert!(env.running(&id).await);
    let r = env.record(&id).await;
    assert_eq!(r["name"], format!("Agent {id}"));
    assert_eq!(r["customer_id"], env.customer());
    env.finish().await;
}

#[actix_rt::test]
async fn invalid_commands_are_answered_and_nothing_is_created() {
    let env = TestEnv::start(&[]).await;
    let cust = env.customer();
    let id = env.agent_id("bad");
    let base = env.create_body(&id);
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        if value.is_null() {
            b.as_object_mut().unwrap().remove(field);
        } else {
            b[field] = value;
        }
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "agent.create",
            with("customer_id", Value::Null),
            "validation_failed",
        ),
        (
            "agent.create",
            with("agent_type", json!("wizard")),
            "validation_failed",
        ),
        (
            "agent.create",
            with("agent_id", json!("../etc/passwd")),
            "validation_failed",
        ),
        (
            "agent.create",
            with("agent_id", json!("a".repeat(80))),
            "validation_failed",
        ),
        ("agent.create", with("name", json!("")), "validation_failed"),
        (
            "agent.create",
            with("name", json!("line\nbreak")),
            "validation_failed",
        ),
        (
            "agent.create",
            with("config", json!("not an object")),
            "validation_failed",
        ),
        (
            "agent.create",
            with("resources", json!({"memory_mb": 1})),
            "validation_failed",
        ),
        (
            "agent.create",
            with("resources", json!({"cpus": 1000})),
            "validation_failed",
        ),
        (
            "agent.create",
            with("image", json!("evil/miner:latest")),
            "validation_failed",
        ),
        (
            "agent.create",
            with("auto_start", json!("yes")),
            "validation_failed",
        ),
        // Section 11: a malformed egress entry, a list that is not one, too many.
        (
            "agent.create",
            with("egress", json!(["api.example.com"])),
            "validation_failed",
        ),
        (
            "agent.create",
            with("egress", json!("api.example.com:443")),
            "validation_failed",
        ),
        (
            "agent.create",
            with(
                "egress",
                Value::Array(
                    (0..65)
                        .map(|i| json!(format!("h{i}.example:443")))
                        .collect(),
                ),
            ),
            "validation_failed",
        ),
        (
            "agent.stop",
            json!({"customer_id": cust}),
            "validation_failed",
        ),
        (
            "agent.stop",
            json!({"agent_id": id, "customer_id": cust, "timeout_s": "soon"}),
            "validation_failed",
        ),
        (
            "agent.launch",
            json!({"agent_id": id, "customer_id": cust}),
            "invalid_message",
        ),
        (
            "agent.start",
            json!({"agent_id": env.agent_id("ghost"), "customer_id": cust}),
            "not_found",
        ),
        (
            "agent.delete",
            json!({"agent_id": env.agent_id("ghost"), "customer_id": cust}),
            "not_found",
        ),
        (
            "agent.update",
            json!({"agent_id": env.agent_id("ghost"), "customer_id": cust}),
            "not_found",
        ),
        (
            "agent.create",
            with("resources", json!({"gpus": 1})),
            "gpu_unavailable",
        ),
    ];
    for (rk, body, code) in &cases {
        let mid = if *rk == "agent.launch" {
            // Not a command routing key, so not routed to the queue: use the default
            // exchange, which delivers it with the queue name as routing key.
            let mut b = body.clone();
            b["command"] = json!("agent.launch");
            b["message_id"] = json!(format!("launch-{}", env.id));
            env.publish_to_queue(&b).await;
            format!("launch-{}", env.id)
        } else {
            env.send(rk, body.clone()).await
        };
        let (got, e) = env.error_code(&mid).await;
        assert_eq!(&got, code, "{rk} {body}: {}", e.details);
        assert!(!e.details["message"].as_str().unwrap_or_default().is_empty());
    }
    assert!(env.containers().await.is_empty(), "nothing was created");
    let agents: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("agents")))
        .await;
    assert!(agents.is_empty());

    // Not JSON objects: dead-lettered, never answered.
    for body in [&b"{not json"[..], b"[1,2,3]", b"\"just a string\""] {
        env.publish_raw("agent.create", body, None).await;
        let dead = env
            .dead_letter(Duration::from_secs(20))
            .await
            .expect("dead-lettered");
        assert_eq!(dead, body);
    }

    // The manager still works.
    env.create_running(&id).await;
    env.finish().await;
}

#[actix_rt::test]
async fn image_that_does_not_exist_is_image_not_found() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("noimage");
    let mut body = env.create_body(&id);
    body["image"] = json!("autogen-agent:does-not-exist");
    let mid = env.send("agent.create", body).await;
    let (code, e) = env.error_code(&mid).await;
    assert_eq!(code, "image_not_found", "{}", e.details);
    assert!(
        env.record(&id).await.is_empty(),
        "nothing is left of the agent"
    );
    assert!(env.containers().await.is_empty());
    // The same id can then be created properly.
    env.create_running(&id).await;
    env.finish().await;
}

#[actix_rt::test]
async fn command_on_default_exchange_uses_body_command() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("direct");
    let mut body = env.create_body(&id);
    body["command"] = json!("agent.create");
    body["message_id"] = json!(format!("direct-{}", env.id));
    env.publish_to_queue(&body).await;
    env.answer(&format!("direct-{}", env.id), "agent.started")
        .await;
    assert!(env.running(&id).await);
    env.finish().await;
}

#[actix_rt::test]
async fn start_stop_restart_are_idempotent() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("idem");
    env.create_running(&id).await;
    let mid = env.command("agent.start", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.started").await.status, "running");
    let mid = env.command("agent.stop", &id, json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let mid = env.command("agent.stop", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.stopped").await.status, "stopped");
    assert!(!env.running(&id).await);
    // restart of a stopped agent starts it
    let mid = env.command("agent.restart", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.restarted").await.status, "running");
    assert!(env.running(&id).await);
    env.finish().await;
}

#[actix_rt::test]
async fn stop_honours_timeout_then_kills() {
    let env = TestEnv::start(&[]).await;
    let stubborn = env.agent_id("stubborn");
    let mut body = env.create_body(&stubborn);
    body["config"] = json!({"ignore_sigterm": true});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    let polite = env.agent_id("polite");
    env.create_running(&polite).await;

    let t0 = Instant::now();
    let mid = env
        .command("agent.stop", &stubborn, json!({"timeout_s": 2}))
        .await;
    env.answer(&mid, "agent.stopped").await;
    let took = t0.elapsed();
    let state = env.inspect(&stubborn).await.unwrap().state.unwrap();
    assert_eq!(state.exit_code, Some(137), "killed after the grace period");
    assert!(
        took >= Duration::from_secs(2),
        "the grace period was honoured ({took:?})"
    );

    let mid = env
        .command("agent.stop", &polite, json!({"timeout_s": 30}))
        .await;
    env.answer(&mid, "agent.stopped").await;
    let state = env.inspect(&polite).await.unwrap().state.unwrap();
    assert_eq!(state.exit_code, Some(0), "SIGTERM ended it cleanly");
    env.finish().await;
}

/// An operation that takes time shows its own status while it runs (contract section
/// 5), so operators see `stopping` during a long stop, `restarting` during a restart.
#[actix_rt::test]
async fn slow_operations_show_their_status_while_they_run() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("slow");
    let mut body = env.create_body(&id);
    body["config"] = json!({"ignore_sigterm": true});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;

    for (command, during, after) in [
        ("agent.restart", "restarting", "agent.restarted"),
        ("agent.stop", "stopping", "agent.stopped"),
    ] {
        let mid = env.command(command, &id, json!({"timeout_s": 3})).await;
        common::wait_until(&format!("the record says {during}"), DEADLINE, || async {
            env.record(&id).await.get("status").map(String::as_str) == Some(during)
        })
        .await;
        let answer = env.answer(&mid, after).await;
        assert_ne!(answer.status, during, "{command} ends in its final status");
        assert_eq!(env.record(&id).await["status"], answer.status);
    }
    env.finish().await;
}

#[actix_rt::test]
async fn update_replaces_for_env_changes_and_resizes_in_place() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("upd");
    env.create_running(&id).await;
    let first = env.inspect(&id).await.unwrap().id.unwrap();

    // resources only: same container, new limits
    let mid = env
        .command(
            "agent.update",
            &id,
            json!({"resources": {"memory_mb": 128, "cpus": 1.5}}),
        )
        .await;
    let e = env.answer(&mid, "agent.updated").await;
    assert_eq!(e.details["in_place"], true);
    let c = env.inspect(&id).await.unwrap();
    assert_eq!(c.id.as_deref(), Some(first.as_str()));
    let host = c.host_config.unwrap();
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(128 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(1_500_000_000));
    assert!(c.state.unwrap().running.unwrap());
    let res: Value = serde_json::from_str(&env.record(&id).await["resources"]).unwrap();
    assert_eq!(res["memory_mb"], 128);

    // egress only (section 11): the same container, the record keeps the new list
    let mid = env
        .command(
            "agent.update",
            &id,
            json!({"egress": ["API.example-exchange.com:443", "10.20.0.0/16:9878"]}),
        )
        .await;
    let e = env.answer(&mid, "agent.updated").await;
    assert_eq!(e.details["in_place"], true);
    assert_eq!(
        env.inspect(&id).await.unwrap().id.as_deref(),
        Some(first.as_str())
    );
    let egress: Value = serde_json::from_str(&env.record(&id).await["egress"]).unwrap();
    assert_eq!(
        egress,
        json!(["api.example-exchange.com:443", "10.20.0.0/16:9878"])
    );
    let mid = env
        .command("agent.update", &id, json!({"egress": ["x.example"]}))
        .await;
    let (code, e) = env.error_code(&mid).await;
    assert_eq!(code, "validation_failed", "{}", e.details);
    assert!(e.details["message"].as_str().unwrap().contains("egress[0]"));

    // config: a new container with the new env, still running
    let mid = env
        .command(
            "agent.update",
            &id,
            json!({"config": {"symbol": "ETH-USD"}, "name": "Renamed"}),
        )
        .await;
    let e = env.answer(&mid, "agent.updated").await;
    assert_eq!(e.details["replaced"], true);
    assert_eq!(e.status, "running");
    let c = env.inspect(&id).await.unwrap();
    let second = c.id.clone().unwrap();
    assert_ne!(second, first);
    assert!(env_of(&c).contains(&"CONFIG={\"symbol\":\"ETH-USD\"}".to_string()));
    assert!(env_of(&c).contains(&"AGENT_NAME=Renamed".to_string()));
    assert_eq!(
        c.config.unwrap().labels.unwrap()["autogen.agent-name"],
        "Renamed"
    );
    assert_eq!(
        c.host_config.unwrap().memory,
        Some(128 * 1024 * 1024),
        "resources kept"
    );
    assert!(c.state.unwrap().running.unwrap());
    let r = env.record(&id).await;
    assert_eq!(r["container_id"], second);
    assert_eq!(r["name"], "Renamed");
    assert_eq!(env.containers().await.len(), 1, "the old container is gone");

    // a stopped agent stays stopped through a replacement
    let mid = env.command("agent.stop", &id, json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let mid = env
        .command(
            "agent.update",
            &id,
            json!({"autogen_config": {"model": "other"}}),
        )
        .await;
    let e = env.answer(&mid, "agent.updated").await;
    assert_eq!(e.status, "stopped");
    assert!(!env.running(&id).await);
    let r = env.record(&id).await;
    assert_eq!(
        (r["status"].as_str(), r["desired_state"].as_str()),
        ("stopped", "stopped")
    );

    // an update with nothing new is answered without touching the container
    let before = env.inspect(&id).await.unwrap().id;
    let mid = env
        .command("agent.update", &id, json!({"name": "Renamed"}))
        .await;
    env.answer(&mid, "agent.updated").await;
    assert_eq!(env.inspect(&id).await.unwrap().id, before);
    env.finish().await;
}

#[actix_rt::test]
async fn rapid_stop_start_stop_ends_stopped_in_order() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("rapid");
    env.create_running(&id).await;
    let a = env.command("agent.stop", &id, json!({})).await;
    let b = env.command("agent.start", &id, json!({})).await;
    let c = env.command("agent.stop", &id, json!({})).await;
    let ea = env.answer(&a, "agent.stopped").await;
    let eb = env.answer(&b, "agent.started").await;
    let ec = env.answer(&c, "agent.stopped").await;
    let order: Vec<String> = env
        .events_of(&id)
        .iter()
        .map(|e| e.event_id.clone())
        .filter(|e| [&ea.event_id, &eb.event_id, &ec.event_id].contains(&e))
        .collect();
    assert_eq!(
        order,
        vec![ea.event_id, eb.event_id, ec.event_id],
        "applied in order"
    );
    assert!(!env.running(&id).await);
    assert_eq!(env.record(&id).await["status"], "stopped");
    env.finish().await;
}

#[actix_rt::test]
async fn twenty_agents_created_at_once_all_run() {
    let env = TestEnv::start(&[]).await;
    let ids: Vec<String> = (0..20).map(|i| env.agent_id(&format!("many{i}"))).collect();
    let mut mids = Vec::new();
    for id in &ids {
        mids.push(env.send("agent.create", env.create_body(id)).await);
    }
    for mid in &mids {
        env.answer(mid, "agent.started").await;
    }
    for id in &ids {
        assert!(env.running(id).await, "{id} runs");
        assert_eq!(env.record(id).await["status"], "running");
    }
    assert_eq!(env.containers().await.len(), 20);
    let agents: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("agents")))
        .await;
    assert_eq!(agents.len(), 20);
    env.finish().await;
}

#[actix_rt::test]
async fn event_stream_is_capped() {
    let env = TestEnv::start(&[("EVENT_STREAM_MAX_LEN", "3")]).await;
    let id = env.agent_id("capped");
    env.create_running(&id).await;
    for _ in 0..3 {
        let mid = env.command("agent.start", &id, json!({})).await;
        env.answer(&mid, "agent.started").await;
    }
    let len: usize = env
        .redis_query(redis::cmd("XLEN").arg(env.key(&format!("agent:{id}:events"))))
        .await;
    assert_eq!(len, 3);
    let last: Vec<(String, Vec<(String, String)>)> = env
        .redis_query(
            redis::cmd("XREVRANGE")
                .arg(env.key(&format!("agent:{id}:events")))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        )
        .await;
    let fields: std::collections::HashMap<_, _> = last[0].1.iter().cloned().collect();
    assert_eq!(fields["event"], "agent.started");
    let data: Value = serde_json::from_str(&fields["data"]).unwrap();
    assert_eq!(data["agent_id"], id);
    env.finish().await;
}

#[actix_rt::test]
async fn manager_restart_adopts_agents_without_restarting_them() {
    let mut env = TestEnv::start(&[]).await;
    let id = env.agent_id("adopt");
    env.create_running(&id).await;
    let started_at = env.inspect(&id).await.unwrap().state.unwrap().started_at;

    env.restart_manager().await;
    assert_eq!(
        env.inspect(&id).await.unwrap().state.unwrap().started_at,
        started_at
    );
    let mid = env.command("agent.stop", &id, json!({})).await;
    env.answer(&mid, "agent.stopped").await;

    // Redis loses the record: it is rebuilt from the container at the next start.
    let mut c = env.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(env.key(&format!("agent:{id}")))
        .arg(env.key("agents"))
        .query_async(&mut c)
        .await
        .unwrap();
    env.restart_manager().await;
    let r = env.record(&id).await;
    assert_eq!(r["customer_id"], env.customer());
    assert_eq!(r["agent_type"], "trading");
    assert_eq!(r["status"], "stopped");
    assert_eq!(
        serde_json::from_str::<Value>(&r["config"]).unwrap(),
        json!({"symbol": "BTC-USD"})
    );
    let mid = env.command("agent.start", &id, json!({})).await;
    env.answer(&mid, "agent.started").await;
    env.finish().await;
}
