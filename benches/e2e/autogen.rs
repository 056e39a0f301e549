//! The `autogen` scenario: the reference AutoGen agent (`autogen-agent:ref-<hash>`,
//! which scripts/services.sh builds) under a manager process, its two-agent example
//! team on the replay model client: `agent.create` → first task answered, for
//! AUTOGEN_AGENTS agents one after another (the task is published right after the
//! create, into an inbox the bench declared as the Core Engine may); then AUTOGEN_TASKS
//! tasks one at a time to one agent, publish → result (round trip); then the agent's
//! idle memory and CPU from its cgroup over AUTOGEN_IDLE_S.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, TestEnv};
use crate::support::manager::{spawn_manager, wait_ready};
use crate::support::report::{dist, load, ms, write_result};
use crate::support::sizes::Sizes;

/// The reference agent, its example team on the replay client: create → first answer,
/// task round trips, idle cost.
pub async fn autogen(s: &Sizes) {
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
