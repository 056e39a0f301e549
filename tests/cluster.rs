//! Swarm mode on a real multi-node cluster (`scripts/cluster.sh`: namespaced dockerd
//! nodes on this machine, images from the cluster's registry): agents spread over the
//! nodes, placement rules from the config, the node in each record, logs and heartbeats
//! from every node, node loss and drain, GPUs (docker mode on a node with fake GPUs, and
//! Swarm's generic resources), and deploy/stack.yml's manager adopting the agents when
//! Swarm restarts it.
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
    // From the cluster's registry (pinned by digest), or loaded on every node.
    let image = cluster.image(common::agent_image());
    let mut overrides = vec![
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_HOST", cluster.docker_host.as_str()),
        ("DOCKER_NETWORK", network.as_str()),
        ("AGENT_IMAGE", image.as_str()),
        ("SWARM_RESTART_DELAY_S", "1"),
    ];
    overrides.extend_from_slice(extra);
    TestEnv::start_changed(&overrides, change).await
}

/// Creates `ids` (with `agent_type`) and waits for each `agent.started`. Agents
/// heartbeat (through the cluster's uplink) only where `heartbeat`.
async fn create_all(env: &TestEnv, ids: &[String], agent_type: &str, heartbeat: bool) {
    let mut mids = Vec::new();
    for id in ids {
        let mut body = env.create_body(id);
        body["agent_type"] = json!(agent_type);
        body["config"] = json!({"heartbeat": heartbeat});
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

/// The swarm's tasks that match `filters` (Docker's task filters), bounded.
async fn list_tasks(cluster: &Cluster, filters: &[(&str, &str)]) -> Vec<Task> {
    let mut by_name: HashMap<&str, Vec<String>> = HashMap::new();
    for (k, v) in filters {
        by_name.entry(k).or_default().push(v.to_string());
    }
    let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
        .filters(&by_name)
        .build();
    tokio::time::timeout(
        Duration::from_secs(20),
        cluster.docker.list_tasks(Some(options)),
    )
    .await
    .expect("list tasks in time")
    .expect("list tasks")
}

fn is_running(t: &Task) -> bool {
    t.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.to_string())
        == Some("running".into())
}

/// Tasks of the service that run and are meant to, on nodes Swarm sees.
async fn running_tasks(cluster: &Cluster, service: &str, ready: &HashSet<String>) -> usize {
    list_tasks(cluster, &[("service", service)])
        .await
        .iter()
        .filter(|t| {
            is_running(t)
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
    create_all(&env, &trading, "trading", false).await;
    create_all(&env, &analysis, "analysis", true).await;

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
    if let Some(registry) = &cluster.registry {
        // The image came from the registry, and every node runs the same digest.
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        assert!(
            image.starts_with(&format!("{registry}/")) && image.contains("@sha256:"),
            "the service is pinned to the registry's digest: {image}"
        );
    }
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
    // Agents on other nodes reach this machine's Redis (the cluster's uplink): their
    // heartbeat arrives with their own credentials.
    let key = env.key(&format!("agent:{remote}:data:heartbeat"));
    common::wait_until("the remote agent's heartbeat", common::DEADLINE, || {
        let key = key.clone();
        let env = &env;
        async move {
            let beat: Option<String> = env.redis_query(redis::cmd("GET").arg(&key)).await;
            beat.is_some_and(|b| b.contains("\"ok\""))
        }
    })
    .await;

    // The operator's `agents logs` reads it too, wherever the task runs.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_agent-manager"));
    for (var, _) in agent_manager::config::ENV_VARS {
        cli.env_remove(var);
    }
    cli.envs(common::config_env(&env.config))
        .env("DEPLOYMENT_MODE", "swarm")
        .env("DOCKER_HOST", &cluster.docker_host)
        .args(["agents", "logs", "--tail", "50", &remote]);
    let out = common::run_bounded(cli, Duration::from_secs(30), "agent-manager agents logs");
    assert_eq!(out.code, 0, "agents logs {remote}: {}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("agent {remote}: heartbeating to")),
        "the remote agent's own output: {:?}",
        out.stdout
    );
    assert!(
        !out.stdout
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "no framing bytes: {:?}",
        out.stdout
    );
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
    create_all(&env, &ids, "analysis", false).await;
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
    create_all(&env, &fresh, "analysis", false).await;
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

/// A halt in swarm mode (contract section 10): the agent's service scaled to 0, so no
/// node runs it: not Swarm's own restart policy, not a node that is lost and comes
/// back. `halt.release` scales it back to 1.
#[actix_rt::test]
async fn a_halted_swarm_agent_stays_out_through_a_node_loss_until_released() {
    let cluster = Cluster::up(3, "", "");
    let env = start_manager(
        &cluster,
        &[("SWARM_CONSTRAINTS", "node.role==worker")],
        |_| {},
    )
    .await;
    let ids: Vec<String> = (0..4).map(|i| env.agent_id(&format!("hs{i}"))).collect();
    create_all(&env, &ids, "trading", false).await;
    let mut target = None;
    for id in &ids {
        if node_of(&env, id).await == "amc3" {
            target = Some(id.clone());
            break;
        }
    }
    let target = target.expect("Swarm spread the agents over both workers");
    let halt_id = format!("hs-{}", env.id);
    let mid = env
        .send(
            "halt.engage",
            json!({"halt_id": halt_id, "customer_id": env.customer(),
                   "scope": {"agent_ids": [target]}, "reason": "swarm test",
                   "requested_by": "ops-test"}),
        )
        .await;
    let engaged = env.answer(&mid, "halt.engaged").await;
    assert_eq!(engaged.details["failed"], json!([]), "{}", engaged.details);
    let service = format!("agent-{target}");
    let svc = cluster
        .docker
        .inspect_service(
            &service,
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await
        .expect("the service");
    assert_eq!(
        agent_manager::runtime::swarm::service::replicas(&svc.spec.unwrap_or_default()),
        0,
        "scaled to 0"
    );
    let (ready, _) = nodes(&cluster).await;
    assert_eq!(running_tasks(&cluster, &service, &ready).await, 0);
    assert_eq!(env.record(&target).await["status"], "halted");
    // The node is lost (Swarm sees it down), then comes back: nothing brings the agent
    // back meanwhile.
    cluster.node("kill-node", 3);
    let lost = Instant::now();
    while node_ready(&cluster, "amc3").await {
        assert!(
            lost.elapsed() < Duration::from_secs(60),
            "Swarm never saw amc3 down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ready, _) = nodes(&cluster).await;
    assert_eq!(
        running_tasks(&cluster, &service, &ready).await,
        0,
        "not moved elsewhere"
    );
    cluster.node("start-node", 3);
    let back = Instant::now();
    while !node_ready(&cluster, "amc3").await {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "amc3 did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ready, _) = nodes(&cluster).await;
    assert_eq!(
        running_tasks(&cluster, &service, &ready).await,
        0,
        "still out"
    );
    assert_eq!(env.record(&target).await["status"], "halted");
    let mid = env
        .send(
            "halt.release",
            json!({"halt_id": halt_id, "customer_id": env.customer(),
                   "reason": "done", "requested_by": "ops-test"}),
        )
        .await;
    env.answer(&mid, "halt.released").await;
    let released = Instant::now();
    loop {
        let (ready, _) = nodes(&cluster).await;
        if running_tasks(&cluster, &service, &ready).await == 1 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(90),
            "not running again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

    // A stop gives the GPU back: the refused agent's create now gets exactly that one,
    // and the stopped agent cannot start while no GPU is free.
    let freed = visible_devices(&host, &started[0]);
    let mid = env.command("agent.stop", &started[0], json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let mut body = env.create_body(&refused[0]);
    body["resources"]["gpus"] = json!(1);
    body["config"] = json!({"heartbeat": false});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    assert_eq!(
        visible_devices(&host, &refused[0]),
        freed,
        "the stopped agent's GPU"
    );
    let mid = env.command("agent.start", &started[0], json!({})).await;
    let e = env.answer(&mid, "agent.error").await;
    assert_eq!(e.details["code"], "gpu_unavailable", "{}", e.details);

    // Delete gives one back: the stopped agent now starts, with the deleted one's GPU.
    let freed = visible_devices(&host, &started[1]);
    let mid = env.command("agent.delete", &started[1], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let mid = env.command("agent.start", &started[0], json!({})).await;
    env.answer(&mid, "agent.started").await;
    assert_eq!(
        visible_devices(&host, &started[0]),
        freed,
        "the deleted agent's GPU"
    );
    env.finish().await;
}

/// The GPUs Swarm gave the agent's running task, and its node's hostname. The ids are
/// read from Docker's own JSON (`GenericResources` of the task: the API description,
/// and so bollard, calls the field `AssignedGenericResources`, which Docker never sends).
async fn swarm_gpus(cluster: &Cluster, agent_id: &str) -> (String, Vec<String>) {
    let (_, names) = nodes(cluster).await;
    let service = format!("agent-{agent_id}");
    let tasks = list_tasks(
        cluster,
        &[("service", &service), ("desired-state", "running")],
    )
    .await;
    let task = tasks
        .iter()
        .find(|t| is_running(t))
        .unwrap_or_else(|| panic!("agent {agent_id} has a running task: {tasks:?}"));
    let node = task.node_id.clone().unwrap_or_default();
    let host = names
        .iter()
        .find(|(_, id)| **id == node)
        .map(|(h, _)| h.clone())
        .unwrap_or(node);
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["-H", &cluster.docker_host, "inspect"])
        .arg(task.id.clone().unwrap_or_default());
    let out = common::run_bounded(cmd, Duration::from_secs(20), "docker inspect task");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("task JSON");
    let gpus = json[0]["GenericResources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["NamedResourceSpec"]["Kind"] == "NVIDIA-GPU")
        .filter_map(|r| r["NamedResourceSpec"]["Value"].as_str().map(str::to_string))
        .collect();
    (host, gpus)
}

/// Sends a create of `id` asking one GPU; the answer (`agent.started` or `agent.error`).
async fn create_gpu_agent(env: &TestEnv, id: &str) -> agent_manager::protocol::Event {
    let mut body = env.create_body(id);
    body["resources"]["gpus"] = json!(1);
    body["config"] = json!({"heartbeat": false});
    let mid = env.send("agent.create", body).await;
    env.wait_event("an answer", common::DEADLINE, move |e| {
        e.correlation_id.as_deref() == Some(mid.as_str())
            && matches!(e.event.routing_key(), "agent.started" | "agent.error")
    })
    .await
}

#[actix_rt::test]
async fn swarm_gpu_agents_land_on_gpu_nodes_and_are_refused_when_none_has_room() {
    // amc1 (manager) has no GPU, amc2 two, amc3 one.
    let cluster = Cluster::up(3, "2:2,3:1", "");
    let env = start_manager(&cluster, &[], |_| {}).await;
    let ids: Vec<String> = (0..3).map(|i| env.agent_id(&format!("g{i}"))).collect();
    for id in &ids {
        let e = create_gpu_agent(&env, id).await;
        assert_eq!(
            e.event.routing_key(),
            "agent.started",
            "{id}: {}",
            e.details
        );
    }
    let mut held = HashSet::new();
    for id in &ids {
        let (node, gpus) = swarm_gpus(&cluster, id).await;
        assert!(
            node == "amc2" || node == "amc3",
            "{id} on a GPU node, not {node}"
        );
        assert_eq!(gpus.len(), 1, "{id}: {gpus:?}");
        assert!(
            gpus[0].starts_with(&format!("GPU-{node}-")),
            "{id}: {gpus:?} on {node}"
        );
        held.insert(gpus[0].clone());
    }
    assert_eq!(held.len(), 3, "three distinct GPUs: {held:?}");

    // No node has a free GPU: refused at once, nothing made.
    let late = env.agent_id("late");
    let e = create_gpu_agent(&env, &late).await;
    assert_eq!(e.event.routing_key(), "agent.error", "{}", e.details);
    assert_eq!(e.details["code"], "gpu_unavailable", "{}", e.details);
    let gone = cluster
        .docker
        .inspect_service(
            &format!("agent-{late}"),
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await;
    assert!(gone.is_err(), "no service left behind: {gone:?}");

    // A stop gives its GPU back: the late agent gets exactly that one.
    let (_, freed) = swarm_gpus(&cluster, &ids[0]).await;
    let mid = env.command("agent.stop", &ids[0], json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let e = create_gpu_agent(&env, &late).await;
    assert_eq!(e.event.routing_key(), "agent.started", "{}", e.details);
    assert_eq!(
        swarm_gpus(&cluster, &late).await.1,
        freed,
        "the stopped agent's GPU"
    );

    // The stopped agent cannot start again while every GPU is taken: answered, and its
    // service is not left waiting to take one later.
    let mid = env.command("agent.start", &ids[0], json!({})).await;
    let e = env.answer(&mid, "agent.error").await;
    assert_eq!(e.details["code"], "gpu_unavailable", "{}", e.details);
    let svc = cluster
        .docker
        .inspect_service(
            &format!("agent-{}", ids[0]),
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await
        .expect("the stopped agent's service stays");
    assert_eq!(
        agent_manager::runtime::swarm::service::replicas(&svc.spec.unwrap_or_default()),
        0,
        "scaled back to 0"
    );

    // A delete gives one back: now it starts.
    let mid = env.command("agent.delete", &ids[1], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let mid = env.command("agent.start", &ids[0], json!({})).await;
    env.answer(&mid, "agent.started").await;
    env.finish().await;
}

/// A RabbitMQ user for a manager that is not on this machine's loopback (`guest` logs
/// in from loopback only); removed in Drop.
struct BrokerUser(String);

impl BrokerUser {
    fn add(name: &str, password: &str) -> BrokerUser {
        let user = BrokerUser(name.to_string());
        for args in [
            vec!["add_user", name, password],
            vec!["set_user_tags", name, "administrator"],
            vec!["set_permissions", "-p", "/", name, ".*", ".*", ".*"],
        ] {
            let mut cmd = std::process::Command::new("rabbitmqctl");
            cmd.args(&args);
            let out = common::run_bounded(cmd, Duration::from_secs(60), "rabbitmqctl");
            assert_eq!(out.code, 0, "rabbitmqctl {}: {}", args[0], out.stderr);
        }
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new("rabbitmqctl");
        cmd.args(["delete_user", &self.0]);
        let _ = common::run_bounded(cmd, Duration::from_secs(60), "rabbitmqctl delete_user");
    }
}

/// A directory of the test's files, removed in Drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `docker -H <node 1> ARGS` (bounded); panics with its output when it fails.
fn on_manager_node(cluster: &Cluster, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["-H", &cluster.docker_host])
        .args(args)
        .envs(envs.iter().copied());
    let out = common::run_bounded(cmd, Duration::from_secs(120), "docker");
    assert_eq!(
        out.code, 0,
        "docker {args:?}: {}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The running container of the stack's manager on node 1, if any.
fn manager_task_container(cluster: &Cluster, service: &str) -> Option<String> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    on_manager_node(cluster, &["ps", "-q", "--filter", &filter], &[])
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// deploy/stack.yml, deployed as README says on the cluster's manager node: the manager
/// runs as a Swarm service, Swarm restarts it when its container dies, and the new one
/// adopts the agents on every node (answers for them; nothing duplicated).
#[actix_rt::test]
async fn the_stack_file_s_manager_adopts_every_agent_when_swarm_restarts_it() {
    let cluster = Cluster::up(3, "", "");
    let image = common::manager_image::manager_image();
    // The manager's image on the manager node (not in the cluster's registry).
    let saved = std::env::temp_dir().join(format!("manager-image-{}.tar", short_id()));
    common::manager_image::docker(
        &["save", "-o", saved.to_str().unwrap(), &image],
        Duration::from_secs(120),
    );
    on_manager_node(
        &cluster,
        &["load", "-q", "-i", saved.to_str().unwrap()],
        &[],
    );
    let _ = std::fs::remove_file(&saved);

    let network = format!("autogen-cluster-{}", short_id());
    let agent_image = cluster.image(common::agent_image());
    let overrides = [
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_HOST", cluster.docker_host.as_str()),
        ("DOCKER_NETWORK", network.as_str()),
        ("AGENT_IMAGE", agent_image.as_str()),
        // The broker's management API listens on this machine's loopback only.
        ("AGENT_CREDENTIALS", "shared"),
        ("SWARM_RESTART_DELAY_S", "1"),
    ];
    let env = TestEnv::client_only(&overrides).await;
    let gateway = common::agent_gateway().expect("the agents' network of scripts/services.sh");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let _user = BrokerUser::add(&format!("test-{}-manager", env.id), &password);

    // The env file and the two secrets, as deploy/agent-manager.env.example says.
    let dir = TempDir(std::env::temp_dir().join(format!("stack-{}", env.id)));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let mut settings = String::new();
    for (k, v) in common::test_env_vars(&env.id, &overrides) {
        if !matches!(
            k.as_str(),
            "RABBITMQ_URL" | "REDIS_URL" | "ADMIN_LISTEN" | "DOCKER_HOST" | "DEPLOYMENT_MODE"
        ) {
            settings.push_str(&format!("{k}={v}\n"));
        }
    }
    let env_file = dir.0.join("agent-manager.env");
    std::fs::write(&env_file, settings).expect("env file");
    let secrets = [
        (
            "rabbitmq_url",
            format!(
                "amqp://test-{}-manager:{password}@{gateway}:5672/%2f",
                env.id
            ),
        ),
        ("redis_url", format!("redis://{gateway}:6379/0")),
    ];
    for (name, value) in &secrets {
        let file = dir.0.join(name);
        std::fs::write(&file, value).expect("secret file");
        on_manager_node(
            &cluster,
            &["secret", "create", name, file.to_str().unwrap()],
            &[],
        );
    }
    let socket = cluster
        .docker_host
        .trim_start_matches("unix://")
        .to_string();
    let stack_file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/stack.yml");
    on_manager_node(
        &cluster,
        &["stack", "deploy", "-c", stack_file, "amtest"],
        &[
            ("AGENT_MANAGER_IMAGE", image.as_str()),
            ("AGENT_MANAGER_ENV_FILE", env_file.to_str().unwrap()),
            ("DOCKER_SOCKET", socket.as_str()),
        ],
    );
    let service = "amtest_agent-manager";
    let manager_logs = || {
        let mut cmd = std::process::Command::new("docker");
        cmd.args([
            "-H",
            &cluster.docker_host,
            "service",
            "logs",
            "--tail",
            "30",
            service,
        ]);
        let out = common::run_bounded(cmd, Duration::from_secs(30), "service logs");
        format!("{}{}", out.stdout, out.stderr)
    };
    let until = Instant::now() + common::DEADLINE;
    while manager_task_container(&cluster, service).is_none() {
        assert!(
            Instant::now() < until,
            "the manager's task never ran: {}",
            manager_logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Agents through the manager in the swarm, heartbeating from their nodes.
    let ids: Vec<String> = (0..3).map(|i| env.agent_id(&format!("s{i}"))).collect();
    create_all(&env, &ids, "analysis", true).await;
    let mut on = HashSet::new();
    for id in &ids {
        on.insert(node_of(&env, id).await);
    }
    assert!(on.len() >= 2, "agents on several nodes: {on:?}");

    // The manager's container dies; Swarm starts another.
    let old = manager_task_container(&cluster, service).expect("the manager runs");
    on_manager_node(&cluster, &["kill", &old], &[]);
    let until = Instant::now() + common::DEADLINE;
    loop {
        match manager_task_container(&cluster, service) {
            Some(new) if new != old => break,
            _ => {}
        }
        assert!(
            Instant::now() < until,
            "Swarm did not restart the manager: {}",
            manager_logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The new manager answers for every agent, wherever it runs, and made no other.
    for id in &ids {
        let mid = env.command("agent.stop", id, json!({})).await;
        env.answer(&mid, "agent.stopped").await;
    }
    let mid = env.command("agent.start", &ids[0], json!({})).await;
    env.answer(&mid, "agent.started").await;
    let filter = format!("label=autogen.manager-instance={}", env.config.instance);
    let services = on_manager_node(&cluster, &["service", "ls", "-q", "--filter", &filter], &[]);
    assert_eq!(
        services.split_whitespace().count(),
        3,
        "one service per agent"
    );
    on_manager_node(&cluster, &["stack", "rm", "amtest"], &[]);
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
    create_all(&env, &ids, "analysis", false).await;
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
