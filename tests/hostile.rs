//! Hostile input against a running manager: thousands of malformed, oversized and
//! malicious commands (garbage, invalid UTF-8, JSON bombs, 10 MB bodies, control
//! characters, path tricks, foreign customers, huge numbers, wrong types, unknown
//! commands, disallowed images). The manager stays up, answers every one (agent.error
//! or dead letter, each accounted for and as expected), creates nothing, and serves a
//! valid command afterwards.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestEnv, RABBITMQ_URL};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// How a hostile message must be answered.
#[derive(Debug, Clone)]
enum Expect {
    /// Rejected to the dead-letter queue, never answered.
    Dead,
    /// One `agent.error` with one of these codes.
    Error(&'static [&'static str]),
}

const VALIDATION: Expect = Expect::Error(&["validation_failed"]);
const NOT_FOUND_OR_VALIDATION: Expect = Expect::Error(&["not_found", "validation_failed"]);

struct Hostile {
    /// Published to the default exchange straight into the command queue (else to the
    /// commands exchange with `routing_key`).
    direct: bool,
    routing_key: String,
    body: Vec<u8>,
    expect: Expect,
    what: &'static str,
}

const COMMANDS: [&str; 6] = [
    "agent.create",
    "agent.update",
    "agent.start",
    "agent.stop",
    "agent.delete",
    "agent.restart",
];

fn control_char(rng: &mut fastrand::Rng) -> char {
    let c = match rng.u8(0..3) {
        0 => rng.u32(0..0x20),
        1 => 0x7f,
        _ => rng.u32(0x80..0xa0),
    };
    char::from_u32(c).unwrap_or('\u{0}')
}

fn printable_garbage(rng: &mut fastrand::Rng, len: usize) -> String {
    // Starts with 'x', so never valid JSON.
    std::iter::once('x')
        .chain((0..len).map(|_| rng.char(' '..='~')))
        .collect()
}

/// Thousands of hostile messages, each with its expected answer.
fn hostile_messages(env: &TestEnv, rng: &mut fastrand::Rng) -> Vec<Hostile> {
    let cust = env.customer();
    let mut out: Vec<Hostile> = Vec::new();
    let mut n = 0usize;
    let mut ghost = move || {
        n += 1;
        format!("ghost{n}-{}", rng_free_suffix())
    };
    let create = |agent_id: &str| {
        json!({"agent_id": agent_id, "customer_id": cust, "agent_type": "trading",
               "name": "hostile", "resources": {"memory_mb": 64, "cpus": 0.5}})
    };
    let mut push = |rk: &str, body: Vec<u8>, expect: Expect, what: &'static str| {
        out.push(Hostile {
            direct: false,
            routing_key: rk.to_string(),
            body,
            expect,
            what,
        })
    };
    let pick = |rng: &mut fastrand::Rng| COMMANDS[rng.usize(0..COMMANDS.len())];

    // Garbage: random bytes (invalid UTF-8 or not JSON) and printable junk.
    for _ in 0..400 {
        let len = rng.usize(0..512);
        let mut body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        body.insert(0, 0xff);
        push(pick(rng), body, Expect::Dead, "random bytes");
    }
    for _ in 0..200 {
        let len = rng.usize(0..300);
        push(
            pick(rng),
            printable_garbage(rng, len).into_bytes(),
            Expect::Dead,
            "printable junk",
        );
    }
    // Invalid UTF-8 inside an otherwise fine object.
    for _ in 0..100 {
        let mut body = br#"{"agent_id": "a"#.to_vec();
        body.extend([0xc3, 0x28, rng.u8(0x80..=0xff)]);
        body.extend(format!(r#"", "customer_id": "{cust}"}}"#).as_bytes());
        push(pick(rng), body, Expect::Dead, "invalid UTF-8 in a string");
    }
    // JSON that is not an object.
    for i in 0..100 {
        let body = match i % 6 {
            0 => "[]".to_string(),
            1 => format!("[{}]", "1,".repeat(rng.usize(1..5000)) + "1"),
            2 => rng.i64(..).to_string(),
            3 => format!("\"{}\"", "s".repeat(rng.usize(0..1000))),
            4 => "null".to_string(),
            _ => "true".to_string(),
        };
        push(
            pick(rng),
            body.into_bytes(),
            Expect::Dead,
            "JSON, not an object",
        );
    }
    // JSON bombs: deep nesting as the whole body, in a field, or left unclosed.
    for _ in 0..40 {
        let depth = rng.usize(200..100_000);
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        push(
            pick(rng),
            body.into_bytes(),
            Expect::Dead,
            "deep array body",
        );
    }
    for _ in 0..40 {
        let depth = rng.usize(200..100_000);
        let body = format!("{}0{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        push(pick(rng), body.into_bytes(), VALIDATION, "deep object body");
    }
    for _ in 0..100 {
        let depth = rng.usize(33..50_000);
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let id = ghost();
        let body = match rng.u8(0..3) {
            0 => format!(
                r#"{{"agent_id":"{id}","customer_id":"{cust}","agent_type":"trading","name":"n","config":{{"a":{deep}}}}}"#
            ),
            1 => format!(
                r#"{{"agent_id":"{id}","customer_id":"{cust}","autogen_config":{{"a":{deep}}}}}"#
            ),
            _ => format!(r#"{{"agent_id":{deep},"customer_id":"{cust}"}}"#),
        };
        let rk = if body.contains("agent_type") {
            "agent.create"
        } else {
            "agent.update"
        };
        push(rk, body.into_bytes(), NOT_FOUND_OR_VALIDATION, "deep field");
    }
    for _ in 0..30 {
        let depth = rng.usize(10..50_000);
        let body = format!(r#"{{"customer_id":"{cust}","x":{}"#, "[".repeat(depth));
        push(
            pick(rng),
            body.into_bytes(),
            Expect::Dead,
            "unclosed nesting",
        );
    }
    // Wide: big arrays and many keys within the body limit.
    for _ in 0..30 {
        let mut body = create(&ghost());
        body["config"] = json!({"wide": vec![0; rng.usize(40_000..200_000)]});
        push(
            "agent.create",
            body.to_string().into_bytes(),
            VALIDATION,
            "wide config",
        );
    }
    for _ in 0..10 {
        let keys: serde_json::Map<String, Value> =
            (0..40_000).map(|i| (format!("k{i}"), json!(i))).collect();
        let mut body = create(&ghost());
        body["agent_type"] = json!("wizard");
        body["x_extra"] = Value::Object(keys);
        push(
            "agent.create",
            body.to_string().into_bytes(),
            VALIDATION,
            "many unknown keys",
        );
    }
    // Oversized: 10 MB (and 2 MB) bodies.
    for (size, object) in [
        (10 << 20, true),
        (10 << 20, true),
        (10 << 20, false),
        (2 << 20, true),
        (2 << 20, false),
    ] {
        let body = if object {
            let mut b = create(&ghost());
            b["config"] = json!({"blob": "x".repeat(size)});
            b.to_string()
        } else {
            printable_garbage(rng, size)
        };
        let expect = if object { VALIDATION } else { Expect::Dead };
        push("agent.create", body.into_bytes(), expect, "oversized");
    }
    // Control characters in every string field.
    for _ in 0..300 {
        let c = control_char(rng);
        let mut body = create(&ghost());
        let field = [
            "agent_id",
            "customer_id",
            "agent_type",
            "name",
            "image",
            "message_id",
        ][rng.usize(0..6)];
        let base = body[field].as_str().unwrap_or("x").to_string();
        let cut = rng.usize(0..=base.len());
        body[field] = json!(format!("{}{c}{}", &base[..cut], &base[cut..]));
        push(
            "agent.create",
            body.to_string().into_bytes(),
            VALIDATION,
            "control character",
        );
    }
    // Path tricks.
    let paths = [
        "../../etc/passwd",
        "..",
        ".",
        "/etc/passwd",
        "a/../../b",
        "..%2f..%2fetc",
        "\\..\\..\\windows",
        "agent-..",
        "../../var/run/docker.sock",
    ];
    for _ in 0..200 {
        let path = paths[rng.usize(0..paths.len())];
        let (rk, body, expect) = match rng.u8(0..4) {
            // Not a create: "agent-.." is a valid agent id.
            0 => (
                COMMANDS[rng.usize(1..COMMANDS.len())],
                json!({"agent_id": path, "customer_id": cust, "agent_type": "trading", "name": "n"}),
                NOT_FOUND_OR_VALIDATION,
            ),
            1 => {
                let mut b = create(&ghost());
                b["image"] = json!(format!("{path}:latest"));
                ("agent.create", b, VALIDATION)
            }
            2 => (
                "agent.start",
                json!({"agent_id": ghost(), "customer_id": path}),
                NOT_FOUND_OR_VALIDATION,
            ),
            _ => {
                let mut b = create(&ghost());
                b["image"] = json!(format!("autogen-agent:{path}"));
                // "agent-.." is a valid tag: allowed, but no such image.
                (
                    "agent.create",
                    b,
                    Expect::Error(&["validation_failed", "image_not_found"]),
                )
            }
        };
        push(rk, body.to_string().into_bytes(), expect, "path trick");
    }
    // Foreign and odd customers for agents that do not exist.
    for _ in 0..200 {
        let len = rng.usize(1..200);
        let customer: String = (0..len).map(|_| rng.char(' '..='\u{2fff}')).collect();
        let rk = [
            "agent.start",
            "agent.stop",
            "agent.delete",
            "agent.restart",
            "agent.update",
        ][rng.usize(0..5)];
        push(
            rk,
            json!({"agent_id": ghost(), "customer_id": customer})
                .to_string()
                .into_bytes(),
            NOT_FOUND_OR_VALIDATION,
            "foreign customer",
        );
    }
    // Huge, negative and fractional numbers.
    let numbers = [
        "1e308",
        "18446744073709551616",
        "99999999999999999999999999999",
        "-1",
        "0",
        "1.5",
        "1e400",
        "-1e400",
        "4294967296",
        "1e-300",
        "-0.0",
    ];
    for _ in 0..300 {
        let num = numbers[rng.usize(0..numbers.len())];
        let id = ghost();
        let (rk, body) = match rng.u8(0..4) {
            0 => (
                "agent.create",
                format!(
                    r#"{{"agent_id":"{id}","customer_id":"{cust}","agent_type":"trading","name":"n","resources":{{"memory_mb":{num}}}}}"#
                ),
            ),
            1 => (
                "agent.create",
                format!(
                    r#"{{"agent_id":"{id}","customer_id":"{cust}","agent_type":"trading","name":"n","resources":{{"cpus":{num},"memory_mb":1}}}}"#
                ),
            ),
            2 => (
                "agent.create",
                format!(
                    r#"{{"agent_id":"{id}","customer_id":"{cust}","agent_type":"trading","name":"n","resources":{{"gpus":{num},"cpus":0}}}}"#
                ),
            ),
            _ => (
                "agent.stop",
                format!(r#"{{"agent_id":"{id}","customer_id":"{cust}","timeout_s":{num}}}"#),
            ),
        };
        // A stop's timeout in range reaches the agent (not found); all else is invalid.
        let expect = if rk == "agent.stop" {
            NOT_FOUND_OR_VALIDATION
        } else {
            VALIDATION
        };
        push(rk, body.into_bytes(), expect, "huge number");
    }
    // Wrong types for each field a command reads (never the right type by chance).
    let wrong = |field: &str, rng: &mut fastrand::Rng| -> Value {
        let choices: [Value; 5] = match field {
            "config" | "autogen_config" | "resources" => {
                [json!(1), json!(true), json!([]), json!("s"), json!(2.5)]
            }
            "auto_start" => [json!(1), json!("true"), json!([]), json!({}), json!(2.5)],
            "timeout_s" => [json!(true), json!([]), json!({}), json!(2.5), json!("3")],
            _ => [json!(1), json!(true), json!([]), json!({}), json!(2.5)],
        };
        choices[rng.usize(0..choices.len())].clone()
    };
    let create_fields = [
        "agent_id",
        "customer_id",
        "agent_type",
        "name",
        "config",
        "autogen_config",
        "resources",
        "image",
        "auto_start",
        "message_id",
    ];
    for _ in 0..400 {
        let (rk, body) = match rng.u8(0..3) {
            0 => {
                let field = create_fields[rng.usize(0..create_fields.len())];
                let mut body = create(&ghost());
                body[field] = wrong(field, rng);
                ("agent.create", body)
            }
            1 => {
                let field = ["name", "config", "resources", "image", "message_id"][rng.usize(0..5)];
                let mut body = json!({"agent_id": ghost(), "customer_id": cust});
                body[field] = wrong(field, rng);
                ("agent.update", body)
            }
            _ => {
                let mut body = json!({"agent_id": ghost(), "customer_id": cust});
                body["timeout_s"] = wrong("timeout_s", rng);
                (
                    ["agent.stop", "agent.delete", "agent.restart"][rng.usize(0..3)],
                    body,
                )
            }
        };
        push(rk, body.to_string().into_bytes(), VALIDATION, "wrong type");
    }
    // Images outside the allowlist or the reference grammar.
    let digest = "0123456789abcdef".repeat(4);
    let images = [
        "evil/miner:latest".to_string(),
        "docker.io/library/autogen-agent:latest".to_string(),
        "AUTOGEN-AGENT:latest".to_string(),
        "autogen-agent:latest\n".to_string(),
        "autogen-agent@sha256:short".to_string(),
        "autogen-agent-evil:latest".to_string(),
        "autogen-agent :latest".to_string(),
        format!("other@sha256:{digest}"),
        format!("autogen-agent@sha256:{}", digest.to_uppercase()),
        String::new(),
    ];
    for _ in 0..200 {
        let mut body = create(&ghost());
        body["image"] = json!(images[rng.usize(0..images.len())]);
        let rk = if rng.bool() {
            "agent.create"
        } else {
            "agent.update"
        };
        push(
            rk,
            body.to_string().into_bytes(),
            VALIDATION,
            "disallowed image",
        );
    }
    // Duplicate keys: the last one counts, and it is bad.
    for _ in 0..50 {
        let id = ghost();
        let body = format!(
            r#"{{"agent_id":"{id}","customer_id":"{cust}","agent_type":"trading","name":"n","agent_id":"../{id}"}}"#
        );
        push(
            "agent.create",
            body.into_bytes(),
            VALIDATION,
            "duplicate keys",
        );
    }
    // GPUs outside GPU mode: refused before anything is made.
    for _ in 0..50 {
        let mut body = create(&ghost());
        body["resources"] = json!({"gpus": rng.u32(1..=8)});
        push(
            "agent.create",
            body.to_string().into_bytes(),
            Expect::Error(&["gpu_unavailable"]),
            "gpus",
        );
    }
    // Well-formed commands for agents that do not exist.
    for _ in 0..200 {
        let rk = [
            "agent.start",
            "agent.stop",
            "agent.delete",
            "agent.restart",
            "agent.update",
        ][rng.usize(0..5)];
        push(
            rk,
            json!({"agent_id": ghost(), "customer_id": cust, "name": "x"})
                .to_string()
                .into_bytes(),
            Expect::Error(&["not_found"]),
            "unknown agent",
        );
    }
    // Unknown or malformed commands sent straight to the queue.
    let bad_commands = [
        json!("agent.explode"),
        json!("AGENT.CREATE"),
        json!(123),
        json!(null),
    ];
    for _ in 0..100 {
        let mut body = create(&ghost());
        body["command"] = bad_commands[rng.usize(0..bad_commands.len())].clone();
        out.push(Hostile {
            direct: true,
            routing_key: env.config.rabbitmq.command_queue.clone(),
            body: body.to_string().into_bytes(),
            expect: Expect::Error(&["invalid_message"]),
            what: "unknown command",
        });
    }
    out
}

fn rng_free_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

#[actix_rt::test]
async fn thousands_of_hostile_commands_are_all_answered_and_change_nothing() {
    let env = TestEnv::start(&[]).await;
    let seed = fastrand::u64(..);
    println!("hostile seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let messages = hostile_messages(&env, &mut rng);
    let total = messages.len();
    assert!(total > 3000, "{total}");
    let expected: HashMap<String, (Expect, &'static str)> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("h-{i}-{}", env.id), (m.expect.clone(), m.what)))
        .collect();

    // Our own connection: a consumer on the dead-letter queue, and a publisher.
    let conn = Connection::connect(RABBITMQ_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ (start it with `bash scripts/services.sh`)");
    let dead: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let dead_ch = conn.create_channel().await.expect("channel");
    let mut dead_consumer = dead_ch
        .basic_consume(
            env.config.rabbitmq.dead_letter_queue.clone().into(),
            "hostile-dead".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume dead letters");
    let seen = dead.clone();
    actix_rt::spawn(async move {
        let _keep = dead_ch;
        while let Some(Ok(d)) = dead_consumer.next().await {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            seen.lock().unwrap().push(id);
        }
    });
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");

    let started = std::time::Instant::now();
    let mut confirms = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let exchange = if m.direct {
            String::new()
        } else {
            env.config.rabbitmq.exchange.clone()
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("h-{i}-{}", env.id).into());
        let confirm = ch
            .basic_publish(
                exchange.into(),
                m.routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &m.body,
                props,
            )
            .await
            .expect("publish");
        confirms.push(confirm);
        if confirms.len() >= 200 {
            for c in confirms.drain(..) {
                let c = c.await.expect("confirm");
                assert!(
                    c.is_ack() && c.take_message().is_none(),
                    "routed and confirmed"
                );
            }
        }
    }
    for c in confirms.drain(..) {
        let c = c.await.expect("confirm");
        assert!(
            c.is_ack() && c.take_message().is_none(),
            "routed and confirmed"
        );
    }
    let published = started.elapsed();

    // Every message is accounted for: one agent.error or one dead letter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let tag = format!("-{}", env.id);
    let answered = loop {
        let answered: HashMap<String, Vec<agent_manager::protocol::Event>> = env
            .all_events()
            .into_iter()
            .filter(|e| {
                e.correlation_id
                    .as_deref()
                    .is_some_and(|c| c.ends_with(&tag))
            })
            .fold(HashMap::new(), |mut m, e| {
                m.entry(e.correlation_id.clone().unwrap_or_default())
                    .or_default()
                    .push(e);
                m
            });
        let dead_count = dead.lock().unwrap().len();
        if answered.len() + dead_count >= total {
            break answered;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} answered and {dead_count} dead-lettered of {total} within 120 s",
            answered.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let handled = started.elapsed();
    let dead: HashSet<String> = {
        let d = dead.lock().unwrap();
        let set: HashSet<String> = d.iter().cloned().collect();
        assert_eq!(set.len(), d.len(), "a message was dead-lettered twice");
        set
    };
    let mut by_what: HashMap<&str, usize> = HashMap::new();
    for (id, (expect, what)) in &expected {
        *by_what.entry(what).or_default() += 1;
        match (expect, answered.get(id), dead.contains(id)) {
            (Expect::Dead, None, true) => {}
            (Expect::Error(codes), Some(events), false) => {
                assert_eq!(
                    events.len(),
                    1,
                    "{what} {id} answered {} times",
                    events.len()
                );
                let e = &events[0];
                assert_eq!(e.event.routing_key(), "agent.error", "{what} {id}: {e:?}");
                let code = e.details["code"].as_str().unwrap_or_default();
                assert!(
                    codes.contains(&code),
                    "{what} {id}: {code} not in {codes:?}: {}",
                    e.details
                );
                assert!(!e.details["message"].as_str().unwrap_or_default().is_empty());
            }
            (expect, events, was_dead) => {
                panic!("{what} {id}: expected {expect:?}, got events {events:?}, dead-lettered {was_dead}")
            }
        }
    }
    assert!(answered.keys().all(|id| expected.contains_key(id)));
    println!(
        "{total} hostile messages ({} answered, {} dead-lettered) published in {published:?}, all handled after {handled:?}; {by_what:?}",
        answered.len(),
        dead.len()
    );

    // Nothing was created: no container, no agent key (only processed-message markers,
    // and the manager's own leader lease, contract section 12).
    assert!(env.containers().await.is_empty(), "a container was created");
    let keys: Vec<String> = env.redis_query(redis::cmd("KEYS").arg(env.key("*"))).await;
    let processed = env.key("processed:");
    let lease = env.key(&format!("manager:{}:leader", env.config.instance));
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with(&processed) && **k != lease)
        .collect();
    assert!(stray.is_empty(), "keys left behind: {stray:?}");

    // The manager still serves a valid command...
    let id = env.agent_id("survivor");
    env.create_running(&id).await;
    let record_before = env.record(&id).await;
    let container_before = env.inspect(&id).await.unwrap().id;

    // ...and refuses a barrage of other customers' commands for it, changing nothing.
    let mut mids = Vec::new();
    for i in 0..60 {
        let rk = COMMANDS[i % COMMANDS.len()];
        let mut body = env.create_body(&id);
        body["customer_id"] = json!(format!("intruder-{i}"));
        body["name"] = json!("pwned");
        mids.push(env.send(rk, body).await);
    }
    for mid in &mids {
        assert_eq!(env.error_code(mid).await.0, "forbidden");
    }
    let record_after = env.record(&id).await;
    for field in [
        "name",
        "customer_id",
        "status",
        "container_id",
        "config",
        "resources",
    ] {
        assert_eq!(record_after[field], record_before[field], "{field}");
    }
    assert_eq!(env.inspect(&id).await.unwrap().id, container_before);
    assert!(env.running(&id).await);
    assert_eq!(env.containers().await.len(), 1);
    // No message was answered twice meanwhile.
    let again = env
        .all_events()
        .into_iter()
        .filter(|e| {
            e.correlation_id
                .as_deref()
                .is_some_and(|c| c.ends_with(&tag))
        })
        .count();
    assert_eq!(again, answered.len());
    let _ = conn.close(200, "done".into()).await;
    env.finish().await;
}
