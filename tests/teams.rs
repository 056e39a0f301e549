//! Teams (contract section 9) on the real services: `team.orchestrate` keeps the team
//! in Redis, tells each member on `agent:<agent_id>:team` and answers
//! `team.orchestrated`; every refusal (unknown, foreign, not running, too few, too many
//! members; another customer's team) sends nothing and keeps nothing; `team.disband`;
//! a deleted member leaves its teams; teams whose members vanished while the manager
//! was down are reconciled at start.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::{TestEnv, DEADLINE, RABBITMQ_URL};
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

/// The team messages the members are sent, as an agent bound to its own
/// `agent:<agent_id>:team` key would receive them.
#[derive(Clone, Default)]
struct Inboxes(Arc<Mutex<HashMap<String, Vec<Value>>>>);

impl Inboxes {
    /// Binds a queue of the test's own to `agent:<id>:team` for each of `agent_ids`.
    async fn listen(env: &TestEnv, agent_ids: &[String]) -> (Inboxes, Connection) {
        let conn = Connection::connect(RABBITMQ_URL, ConnectionProperties::default())
            .await
            .expect("connect");
        let queue = format!(
            "test-{}.team-inbox-{}",
            env.id,
            uuid::Uuid::new_v4().simple()
        );
        let keys: Vec<String> = agent_ids
            .iter()
            .map(|id| format!("agent:{id}:team"))
            .collect();
        let channel =
            common::bound_exclusive_queue(&conn, &queue, &env.config.rabbitmq.exchange, &keys)
                .await;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "team-inbox".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let inboxes = Inboxes::default();
        let seen = inboxes.clone();
        actix_rt::spawn(async move {
            let _keep = channel;
            while let Some(Ok(d)) = consumer.next().await {
                assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
                let body: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                seen.0
                    .lock()
                    .unwrap()
                    .entry(d.routing_key.as_str().to_string())
                    .or_default()
                    .push(body);
            }
        });
        (inboxes, conn)
    }

    fn of(&self, agent_id: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .get(&format!("agent:{agent_id}:team"))
            .cloned()
            .unwrap_or_default()
    }

    fn total(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }

    async fn wait(&self, agent_id: &str, n: usize) -> Vec<Value> {
        let inboxes = self.clone();
        let id = agent_id.to_string();
        common::wait_until(&format!("{n} team message(s) for {id}"), DEADLINE, || {
            let got = inboxes.of(&id).len();
            async move { got >= n }
        })
        .await;
        self.of(agent_id)
    }
}

async fn orchestrate(env: &TestEnv, team_id: &str, members: &[String], customer: &str) -> String {
    env.send(
        "team.orchestrate",
        json!({"team_id": team_id, "customer_id": customer, "agent_ids": members,
               "orchestrator_config": {"mode": "round_robin", "max_turns": 4}}),
    )
    .await
}

fn team_id(env: &TestEnv, name: &str) -> String {
    format!("{name}-{}", env.id)
}

async fn team_keys(env: &TestEnv, team: &str) -> (HashMap<String, String>, bool) {
    let hash = env.hash(&format!("team:{team}")).await;
    let member: bool = env
        .redis_query(
            redis::cmd("SISMEMBER")
                .arg(env.key(&format!("customer:{}:teams", env.customer())))
                .arg(team),
        )
        .await;
    (hash, member)
}

#[actix_rt::test]
async fn orchestrate_keeps_the_team_tells_each_member_and_disband_ends_it() {
    let env = TestEnv::start(&[]).await;
    let members: Vec<String> = ["m1", "m2", "m3"].iter().map(|n| env.agent_id(n)).collect();
    for id in &members {
        env.create_running(id).await;
    }
    let (inbox, _conn) = Inboxes::listen(&env, &members).await;
    let team = team_id(&env, "desk");
    let mid = orchestrate(&env, &team, &members, &env.customer()).await;
    let e = env.answer(&mid, "team.orchestrated").await;
    assert_eq!(e.team_id.as_deref(), Some(team.as_str()));
    assert_eq!(e.agent_ids.as_ref(), Some(&members));
    assert_eq!(e.customer_id, env.customer());
    for id in &members {
        let got = inbox.wait(id, 1).await;
        assert_eq!(got[0]["team_id"], team.as_str());
        assert_eq!(got[0]["members"], json!(members));
        assert_eq!(got[0]["orchestrator_config"]["mode"], "round_robin");
    }
    let (hash, listed) = team_keys(&env, &team).await;
    assert!(listed, "customer:<c>:teams lists it");
    assert_eq!(hash["team_id"], team);
    assert_eq!(hash["customer_id"], env.customer());
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&hash["agent_ids"]).unwrap(),
        members
    );
    assert_eq!(
        serde_json::from_str::<Value>(&hash["orchestrator_config"]).unwrap()["max_turns"],
        4
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&hash["created_at"]).is_ok());

    // The same command again (a new message id): answered again.
    let again = orchestrate(&env, &team, &members, &env.customer()).await;
    assert_eq!(
        env.answer(&again, "team.orchestrated").await.details["existing"],
        true
    );

    let mid = env
        .send(
            "team.disband",
            json!({"team_id": team, "customer_id": env.customer()}),
        )
        .await;
    let e = env.answer(&mid, "team.disbanded").await;
    assert_eq!(e.team_id.as_deref(), Some(team.as_str()));
    let (hash, listed) = team_keys(&env, &team).await;
    assert!(hash.is_empty() && !listed, "the team's keys are gone");
    let last = inbox.wait(&members[0], 3).await;
    assert_eq!(last[2]["disbanded"], true);
    // Disbanded twice: not found.
    let mid = env
        .send(
            "team.disband",
            json!({"team_id": team, "customer_id": env.customer()}),
        )
        .await;
    assert_eq!(env.error_code(&mid).await.0, "not_found");
    env.finish().await;
}

#[actix_rt::test]
async fn every_refusal_names_the_members_and_sends_and_keeps_nothing() {
    let env = TestEnv::start(&[]).await;
    let up: Vec<String> = ["up1", "up2"].iter().map(|n| env.agent_id(n)).collect();
    for id in &up {
        env.create_running(id).await;
    }
    let idle = env.agent_id("idle");
    let mut body = env.create_body(&idle);
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;
    // Another customer's running agent.
    let theirs = env.agent_id("theirs");
    let mut body = env.create_body(&theirs);
    body["customer_id"] = json!("other-customer");
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    let ghost = env.agent_id("ghost");

    let mut everyone = up.clone();
    everyone.extend([idle.clone(), theirs.clone(), ghost.clone()]);
    let (inbox, _conn) = Inboxes::listen(&env, &everyone).await;
    let team = team_id(&env, "refused");
    let cases: Vec<(&str, Vec<String>, &str, Vec<&String>)> = vec![
        (
            "unknown member",
            vec![up[0].clone(), ghost.clone()],
            "not_found",
            vec![&ghost],
        ),
        (
            "foreign member",
            vec![up[0].clone(), theirs.clone()],
            "forbidden",
            vec![&theirs],
        ),
        (
            "member not running",
            vec![up[0].clone(), idle.clone()],
            "validation_failed",
            vec![&idle],
        ),
        (
            "all of them",
            vec![up[0].clone(), idle.clone(), ghost.clone(), theirs.clone()],
            "forbidden",
            vec![&idle, &ghost, &theirs],
        ),
    ];
    for (case, members, code, named) in cases {
        let mid = orchestrate(&env, &team, &members, &env.customer()).await;
        let (got, e) = env.error_code(&mid).await;
        assert_eq!(got, code, "{case}");
        assert_eq!(e.details["command"], "team.orchestrate");
        let message = e.details["message"].as_str().unwrap();
        for id in &named {
            assert!(
                message.contains(id.as_str()),
                "{case}: names {id}: {message}"
            );
            assert!(e.details["members"].get(id.as_str()).is_some(), "{case}");
        }
        assert!(
            !message.contains(&up[0]),
            "{case}: only the unfit: {message}"
        );
    }
    // Too few, too many.
    for n in [1, 33] {
        let members: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
        let mid = orchestrate(&env, &team, &members, &env.customer()).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "validation_failed", "{n} members");
        assert!(e.details["message"].as_str().unwrap().contains("agent_ids"));
    }
    // A fence: a team that is formed. Its messages leave the manager's channel after
    // anything the refusals could have sent, so once they are in, nothing else is.
    let fence = team_id(&env, "fence");
    let mid = orchestrate(&env, &fence, &up, &env.customer()).await;
    env.answer(&mid, "team.orchestrated").await;
    for id in &up {
        inbox.wait(id, 1).await;
    }
    assert_eq!(inbox.total(), up.len(), "nothing was sent but the fence's");
    let (hash, listed) = team_keys(&env, &team).await;
    assert!(hash.is_empty() && !listed, "nothing was kept");
    env.finish().await;
}

#[actix_rt::test]
async fn another_customers_team_is_forbidden_and_learns_nothing() {
    let env = TestEnv::start(&[]).await;
    let members: Vec<String> = ["o1", "o2"].iter().map(|n| env.agent_id(n)).collect();
    for id in &members {
        env.create_running(id).await;
    }
    let team = team_id(&env, "owned");
    let mid = orchestrate(&env, &team, &members, &env.customer()).await;
    env.answer(&mid, "team.orchestrated").await;
    let before = team_keys(&env, &team).await;

    let mid = orchestrate(&env, &team, &members, "intruder").await;
    let (code, e) = env.error_code(&mid).await;
    assert_eq!(code, "forbidden");
    assert_eq!(e.customer_id, "intruder");
    assert!(e.agent_ids.is_none());
    assert!(!e.details.to_string().contains("round_robin"));
    let mid = env
        .send(
            "team.disband",
            json!({"team_id": team, "customer_id": "intruder"}),
        )
        .await;
    assert_eq!(env.error_code(&mid).await.0, "forbidden");
    assert_eq!(team_keys(&env, &team).await, before, "the team as it was");
    env.finish().await;
}

#[actix_rt::test]
async fn a_deleted_member_leaves_its_teams_and_a_team_of_one_ends() {
    let env = TestEnv::start(&[]).await;
    let members: Vec<String> = ["d1", "d2", "d3"].iter().map(|n| env.agent_id(n)).collect();
    for id in &members {
        env.create_running(id).await;
    }
    let (inbox, _conn) = Inboxes::listen(&env, &members).await;
    let trio = team_id(&env, "trio");
    let pair = team_id(&env, "pair");
    let mid = orchestrate(&env, &trio, &members, &env.customer()).await;
    env.answer(&mid, "team.orchestrated").await;
    let mid = orchestrate(&env, &pair, &members[..2], &env.customer()).await;
    env.answer(&mid, "team.orchestrated").await;

    let mid = env.command("agent.delete", &members[0], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let ended = pair.clone();
    let e = env
        .wait_event("team.disbanded of the pair", DEADLINE, move |e| {
            e.event.routing_key() == "team.disbanded"
                && e.team_id.as_deref() == Some(ended.as_str())
        })
        .await;
    assert_eq!(e.details["reason"], "too_few_members");
    assert!(e.correlation_id.is_none());
    let (env_ref, team_ref) = (&env, &trio);
    common::wait_until(
        "the trio loses the deleted member",
        DEADLINE,
        move || async move {
            let (hash, _) = team_keys(env_ref, team_ref).await;
            hash.get("agent_ids")
                .and_then(|a| serde_json::from_str::<Vec<String>>(a).ok())
                .is_some_and(|a| a.len() == 2)
        },
    )
    .await;
    let (hash, _) = team_keys(&env, &trio).await;
    let left: Vec<String> = serde_json::from_str(&hash["agent_ids"]).unwrap();
    assert_eq!(left, members[1..].to_vec());
    assert!(team_keys(&env, &pair).await.0.is_empty());
    // The others were told: the trio as it is now, the pair ended.
    let told = inbox.wait(&members[2], 2).await;
    assert_eq!(told.last().unwrap()["members"], json!(members[1..]));
    let told = inbox.wait(&members[1], 4).await;
    let kinds: HashSet<String> = told
        .iter()
        .map(|m| format!("{}:{}", m["team_id"].as_str().unwrap(), m["disbanded"]))
        .collect();
    assert!(kinds.contains(&format!("{pair}:true")), "{told:?}");
    env.finish().await;
}

#[actix_rt::test]
async fn teams_lose_the_members_that_vanished_while_the_manager_was_down() {
    let mut env = TestEnv::start(&[]).await;
    let members: Vec<String> = ["r1", "r2", "r3"].iter().map(|n| env.agent_id(n)).collect();
    for id in &members {
        env.create_running(id).await;
    }
    let team = team_id(&env, "recon");
    let mid = orchestrate(&env, &team, &members, &env.customer()).await;
    env.answer(&mid, "team.orchestrated").await;

    // While the manager is down, one member goes entirely: record and container.
    let gone = members[0].clone();
    let record_key = env.key(&format!("agent:{gone}"));
    let sets = [
        env.key("agents"),
        env.key(&format!("customer:{}:agents", env.customer())),
    ];
    let mut redis = env.redis.clone();
    env.restart_manager_with(|| async move {
        let _: () = redis::cmd("DEL")
            .arg(&record_key)
            .query_async(&mut redis)
            .await
            .unwrap();
        for set in sets {
            let _: () = redis::cmd("SREM")
                .arg(&set)
                .arg(&gone)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &format!("agent-{gone}")])
            .output();
    })
    .await;
    let (hash, listed) = team_keys(&env, &team).await;
    assert!(listed);
    let left: Vec<String> = serde_json::from_str(&hash["agent_ids"]).unwrap();
    assert_eq!(
        left,
        members[1..].to_vec(),
        "reconciled before commands are taken"
    );
    env.finish().await;
}
