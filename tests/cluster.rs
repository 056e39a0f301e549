//! Swarm mode on a real multi-node cluster (`scripts/cluster.sh`: namespaced dockerd
//! nodes on this machine): agents spread over the nodes, placement rules from the
//! config, the node in each record, and node loss and drain.
//!
//! One cluster at a time ([`common::cluster::Cluster`] holds a file lock), taken down
//! in `Drop` whether the test passes or not. Needs root and what `scripts/cluster.sh`
//! needs (iproute2, util-linux, docker.io); the test says so when it is missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bollard::models::Task;
use common::cluster::Cluster;
use common::TestEnv;
use serde_json::json;

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

async fn start_manager(
    cluster: &Cluster,
    extra: &[(&str, &str)],
    change: impl FnOnce(&mut agent_manager::Config),
) -> TestEnv {
    let network = format!("autogen-cluster-{}", short_id());
    let mut overrides = vec![
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_HOST", cluster.docker_host.as_str()),
        ("DOCKER_NETWORK", network.as_str()),
        // Agents in the cluster cannot reach this machine's Redis: judged by their tasks.
        ("SWARM_RESTART_DELAY_S", "1"),
    ];
    overrides.extend_from_slice(extra);
    TestEnv::start_changed(&overrides, change).await
}

/// Creates `ids` (with `agent_type`) and waits for each `agent.started`.
async fn create_all(env: &TestEnv, ids: &[String], agent_type: &str) {
    let mut mids = Vec::new();
    for id in ids {
        let mut body = env.create_body(id);
        body["agent_type"] = json!(agent_type);
        body["config"] = json!({"heartbeat": false});
        mids.push(env.send("agent.create", body).await);
    }
    for mid in &mids {
        env.answer(mid, "agent.started").await;
    }
}

/// The record's node, once a look after the agent's start has written it.
async fn node_of(env: &TestEnv, id: &str) -> String {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let node = env
            .record(id)
            .await
            .get("node")
            .cloned()
            .unwrap_or_default();
        if !node.is_empty() || Instant::now() > until {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks of the service that run and are meant to, on nodes Swarm sees.
async fn running_tasks(cluster: &Cluster, service: &str, ready: &HashSet<String>) -> usize {
    let filters = HashMap::from([("service", vec![service.to_string()])]);
    let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
        .filters(&filters)
        .build();
    let tasks: Vec<Task> = tokio::time::timeout(
        Duration::from_secs(20),
        cluster.docker.list_tasks(Some(options)),
    )
    .await
    .expect("list tasks in time")
    .expect("list tasks");
    tasks
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.state)
                .map(|s| s.to_string())
                == Some("running".into())
                && t.desired_state.map(|s| s.to_string()) == Some("running".into())
                && t.node_id.as_ref().is_some_and(|n| ready.contains(n))
        })
        .count()
}

/// Ids of the nodes Swarm says are ready, and the hostname of each node id.
async fn nodes(cluster: &Cluster) -> (HashSet<String>, HashMap<String, String>) {
    let nodes = tokio::time::timeout(
        Duration::from_secs(20),
        cluster
            .docker
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>),
    )
    .await
    .expect("list nodes in time")
    .expect("list nodes");
    let mut ready = HashSet::new();
    let mut names = HashMap::new();
    for n in nodes {
        let id = n.id.clone().unwrap_or_default();
        let host = n
            .description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .unwrap_or_default();
        if n.status
            .as_ref()
            .and_then(|s| s.state)
            .map(|s| s.to_string())
            == Some("ready".into())
        {
            ready.insert(id.clone());
        }
        names.insert(host, id);
    }
    (ready, names)
}

async fn node_ready(cluster: &Cluster, host: &str) -> bool {
    let (ready, names) = nodes(cluster).await;
    names.get(host).is_some_and(|id| ready.contains(id))
}

/// Waits until every agent of `ids` runs (record `running`) on a node other than
/// `from`; returns how long each took from `since`.
async fn wait_moved(
    env: &TestEnv,
    ids: &[String],
    from: &str,
    since: Instant,
    deadline: Duration,
) -> Vec<Duration> {
    let mut took: HashMap<String, Duration> = HashMap::new();
    while took.len() < ids.len() {
        let waiting: Vec<String> = ids
            .iter()
            .filter(|id| !took.contains_key(*id))
            .cloned()
            .collect();
        for id in &waiting {
            let r = env.record(id).await;
            let node = r.get("node").cloned().unwrap_or_default();
            if r.get("status").map(String::as_str) == Some("running")
                && !node.is_empty()
                && node != from
            {
                took.insert(id.clone(), since.elapsed());
            }
        }
        assert!(
            since.elapsed() < deadline,
            "agents {ids:?} not running off {from} within {deadline:?}; moved: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ids.iter().map(|id| took[id]).collect()
}

fn p50_max(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let p50 = d[d.len() / 2].as_secs_f64();
    let max = d.last().map_or(0.0, Duration::as_secs_f64);
    (p50, max)
}

#[actix_rt::test]
async fn agents_spread_over_the_nodes_and_follow_placement_rules() {
    let cluster = Cluster::up(3, "", "2:autogen.pool=trading");
    let env = start_manager(&cluster, &[], |c| {
        c.swarm.constraints_by_type.insert(
            "trading".into(),
            vec!["node.labels.autogen.pool==trading".into()],
        );
    })
    .await;
    let trading: Vec<String> = (0..2).map(|i| env.agent_id(&format!("t{i}"))).collect();
    let analysis: Vec<String> = (0..6).map(|i| env.agent_id(&format!("a{i}"))).collect();
    create_all(&env, &trading, "trading").await;
    create_all(&env, &analysis, "analysis").await;

    for id in &trading {
        assert_eq!(
            node_of(&env, id).await,
            "amc2",
            "trading agents only on the node labelled autogen.pool=trading"
        );
    }
    // Spread: every node holds agents, none more than one above another (8 agents on
    // 3 nodes, 2 of them trading on amc2).
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for id in trading.iter().chain(&analysis) {
        let node = node_of(&env, id).await;
        assert!(
            node.starts_with("amc"),
            "the record names the node: {node:?}; record {:?}",
            env.record(id).await
        );
        *per_node.entry(node).or_default() += 1;
    }
    let counts: Vec<usize> = per_node.values().copied().collect();
    assert_eq!(counts.len(), 3, "agents on every node: {per_node:?}");
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "agents spread evenly: {per_node:?}"
    );

    // DNS round robin (no IPVS needed), and the placement as Swarm keeps it.
    let svc = cluster
        .docker
        .inspect_service(
            &format!("agent-{}", trading[0]),
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await
        .expect("service");
    let spec = svc.spec.expect("spec");
    assert_eq!(
        spec.endpoint_spec
            .and_then(|e| e.mode)
            .map(|m| m.to_string())
            .as_deref(),
        Some("dnsrr")
    );
    assert_eq!(
        spec.task_template
            .and_then(|t| t.placement)
            .and_then(|p| p.constraints),
        Some(vec!["node.labels.autogen.pool==trading".to_string()])
    );

    // An agent on another node: its logs come through the manager node (no framing).
    let remote = {
        let mut found = None;
        for id in &analysis {
            if node_of(&env, id).await != "amc1" {
                found = Some(id.clone());
                break;
            }
        }
        found.expect("an agent off the manager node")
    };
    let logs = agent_manager::runtime::engine::Engine::new(
        cluster.docker.clone(),
        Duration::from_secs(20),
        4,
    )
    .logs(
        agent_manager::runtime::engine::LogSource::Service,
        &format!("agent-{remote}"),
        20,
    )
    .await
    .expect("service logs");
    for line in &logs {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "no framing bytes in logs: {line:?}"
        );
    }
    env.finish().await;
}

#[actix_rt::test]
async fn a_lost_node_s_agents_move_and_nothing_waits_for_it() {
    let cluster = Cluster::up(3, "", "");
    // Agents on the workers only: the manager node stays up.
    let env = start_manager(
        &cluster,
        &[("SWARM_CONSTRAINTS", "node.role==worker")],
        |_| {},
    )
    .await;
    let ids: Vec<String> = (0..4).map(|i| env.agent_id(&format!("n{i}"))).collect();
    create_all(&env, &ids, "analysis").await;
    let mut on3 = Vec::new();
    for id in &ids {
        if node_of(&env, id).await == "amc3" {
            on3.push(id.clone());
        }
    }
    assert!(!on3.is_empty(), "Swarm spread the agents over both workers");

    // Host loss: every process of node 3 killed.
    env.clear_events();
    let t0 = Instant::now();
    cluster.node("kill-node", 3);
    let detect = {
        while node_ready(&cluster, "amc3").await {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "Swarm never saw amc3 down"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        t0.elapsed()
    };
    let moved = wait_moved(&env, &on3, "amc3", t0, Duration::from_secs(120)).await;
    let (p50, max) = p50_max(moved);
    eprintln!(
        "MEASURE node loss: {} agents, Swarm saw the node down after {:.1} s, every agent running elsewhere p50 {p50:.1} s max {max:.1} s",
        on3.len(),
        detect.as_secs_f64()
    );
    // Reported as it happened: an agent.health with the reason, then one naming the
    // new node.
    for id in &on3 {
        let id2 = id.clone();
        let lost = env
            .wait_event(
                "agent.health with the reason",
                Duration::from_secs(30),
                |e| {
                    e.agent_id == id2
                        && e.event.routing_key() == "agent.health"
                        && e.details.get("reason").is_some()
                },
            )
            .await;
        assert!(
            lost.details["reason"]
                .as_str()
                .is_some_and(|r| r.contains("amc3")),
            "{}",
            lost.details
        );
        let id = id.clone();
        env.wait_event(
            "agent.health on the new node",
            Duration::from_secs(30),
            |e| {
                e.agent_id == id
                    && e.event.routing_key() == "agent.health"
                    && e.details.get("node").and_then(|n| n.as_str()) == Some("amc2")
            },
        )
        .await;
    }
    // Nothing duplicated: one running task per agent on the nodes Swarm sees.
    let (ready, _) = nodes(&cluster).await;
    for id in &ids {
        assert_eq!(
            running_tasks(&cluster, &format!("agent-{id}"), &ready).await,
            1,
            "{id}: one running task"
        );
    }

    // Deleting a moved agent does not wait for its old task on the lost node.
    let t = Instant::now();
    let mid = env.command("agent.delete", &on3[0], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let delete_s = t.elapsed().as_secs_f64();
    eprintln!("MEASURE delete of a moved agent while its old node is down: {delete_s:.1} s");
    assert!(delete_s < 20.0, "delete took {delete_s:.1} s");
    assert!(env.record(&on3[0]).await.is_empty(), "record gone");

    // The node comes back and is used again.
    cluster.node("start-node", 3);
    let back = Instant::now();
    while !node_ready(&cluster, "amc3").await {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "amc3 did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh: Vec<String> = (0..2).map(|i| env.agent_id(&format!("b{i}"))).collect();
    create_all(&env, &fresh, "analysis").await;
    let mut on_back = Vec::new();
    for id in &fresh {
        if node_of(&env, id).await == "amc3" {
            on_back.push(id.clone());
        }
    }
    assert!(
        !on_back.is_empty(),
        "new agents go to the node that came back"
    );

    // Drain: the agents move the same way.
    let t1 = Instant::now();
    let out = std::process::Command::new("timeout")
        .args(["30", "docker", "-H", &cluster.docker_host, "node", "update"])
        .args(["--availability", "drain", "amc3"])
        .output()
        .expect("docker node update");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drained = wait_moved(&env, &on_back, "amc3", t1, Duration::from_secs(90)).await;
    let (p50, max) = p50_max(drained);
    eprintln!(
        "MEASURE drain: {} agents running elsewhere p50 {p50:.1} s max {max:.1} s",
        on_back.len()
    );
    env.finish().await;
}

/// What the agent's own process sees (`/proc/1/environ`): Docker's NVIDIA driver sets
/// `NVIDIA_VISIBLE_DEVICES` there from the device request.
fn visible_devices(docker_host: &str, agent_id: &str) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "docker", "-H", docker_host, "exec"])
        .arg(format!("agent-{agent_id}"))
        .args(["cat", "/proc/1/environ"])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .find_map(|kv| kv.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
        .unwrap_or_default()
        .to_string()
}

#[actix_rt::test]
async fn gpu_agents_get_distinct_gpus_and_give_them_back() {
    // One node with two fake GPUs (the stand-in hook: Docker's nvidia driver works).
    let cluster = Cluster::up(1, "1:2", "");
    let host = cluster.node_host(1);
    let mut env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "gpu"),
        ("DOCKER_HOST", host.as_str()),
        ("GPU_DEVICES", "GPU-amc1-0,GPU-amc1-1"),
    ])
    .await;
    let ids: Vec<String> = (0..3).map(|i| env.agent_id(&format!("g{i}"))).collect();
    // A burst: three creates at once for two GPUs.
    let mut mids = Vec::new();
    for id in &ids {
        let mut body = env.create_body(id);
        body["resources"]["gpus"] = json!(1);
        body["config"] = json!({"heartbeat": false});
        mids.push(env.send("agent.create", body).await);
    }
    let mut started = Vec::new();
    let mut refused = Vec::new();
    for (id, mid) in ids.iter().zip(&mids) {
        let mid2 = mid.clone();
        let e = env
            .wait_event("an answer", common::DEADLINE, move |e| {
                e.correlation_id.as_deref() == Some(mid2.as_str())
                    && matches!(e.event.routing_key(), "agent.started" | "agent.error")
            })
            .await;
        if e.event.routing_key() == "agent.started" {
            started.push(id.clone());
        } else {
            assert_eq!(e.details["code"], "gpu_unavailable", "{}", e.details);
            refused.push(id.clone());
        }
    }
    assert_eq!(
        (started.len(), refused.len()),
        (2, 1),
        "two GPUs, three asked"
    );
    let seen: HashSet<String> = started
        .iter()
        .map(|id| visible_devices(&host, id))
        .collect();
    assert_eq!(
        seen,
        HashSet::from(["GPU-amc1-0".to_string(), "GPU-amc1-1".to_string()]),
        "each running agent sees its own GPU"
    );

    // A manager restart after a Redis wipe of the allocations rebuilds them from Docker.
    let key = env.key("gpu:allocations");
    let mut redis = env.redis.clone();
    env.restart_manager_with(|| async move {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .expect("del");
    })
    .await;
    let alloc = env.hash("gpu:allocations").await;
    assert_eq!(alloc.len(), 2, "rebuilt: {alloc:?}");
    for id in &started {
        assert!(
            alloc.values().any(|a| a == id),
            "{id} holds a GPU: {alloc:?}"
        );
    }

    // Delete gives the GPU back: the refused agent's create now succeeds with it.
    let freed = visible_devices(&host, &started[0]);
    let mid = env.command("agent.delete", &started[0], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let mut body = env.create_body(&refused[0]);
    body["resources"]["gpus"] = json!(1);
    body["config"] = json!({"heartbeat": false});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    assert_eq!(visible_devices(&host, &refused[0]), freed, "the freed GPU");
    env.finish().await;
}

/// BENCHMARKS.md "Swarm on a 3-node cluster": create+start of `BENCH_AGENTS` (60)
/// agents on `BENCH_NODES` (3) nodes. `cargo test --test cluster -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore = "a benchmark, run by hand"]
async fn bench_create_and_start_on_the_cluster() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (nodes, agents) = (var("BENCH_NODES", 3), var("BENCH_AGENTS", 60));
    let cluster = Cluster::up(nodes, "", "");
    let env = start_manager(&cluster, &[], |_| {}).await;
    let ids: Vec<String> = (0..agents)
        .map(|i| env.agent_id(&format!("b{i}")))
        .collect();
    let t0 = Instant::now();
    create_all(&env, &ids, "analysis").await;
    let took = t0.elapsed().as_secs_f64();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        *per_node.entry(node_of(&env, id).await).or_default() += 1;
    }
    let mut spread: Vec<(String, usize)> = per_node.into_iter().collect();
    spread.sort();
    eprintln!(
        "MEASURE {agents} agents on {nodes} node(s): create+start {took:.1} s, {:.2} agents/s, spread {spread:?}",
        agents as f64 / took
    );
    env.finish().await;
}
