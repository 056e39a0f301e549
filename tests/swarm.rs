//! Swarm mode end to end (DEPLOYMENT_MODE=swarm): the same commands, events and Redis
//! records as docker mode, with each agent a single-replica Swarm service.
//!
//! The tests need the Docker node in a swarm: `common::swarm::Swarm` joins one for a
//! test (and leaves it if it made it), one test at a time. Each test uses an overlay
//! network of its own (DOCKER_NETWORK), removed afterwards.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent_manager::Manager;
use bollard::models::{Service, Task};
use common::swarm::{docker, swarm_state, Swarm, SwarmLock};
use common::TestEnv;
use serde_json::json;

async fn service(env: &TestEnv, agent_id: &str) -> Option<Service> {
    env.docker
        .inspect_service(
            &format!("agent-{agent_id}"),
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await
        .ok()
}

async fn tasks(env: &TestEnv, service_id: &str) -> Vec<Task> {
    let filters = HashMap::from([("service", vec![service_id.to_string()])]);
    let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
        .filters(&filters)
        .build();
    env.docker
        .list_tasks(Some(options))
        .await
        .expect("list tasks")
        .into_iter()
        .filter(|t| t.service_id.as_deref() == Some(service_id))
        .collect()
}

fn state(t: &Task) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn live(t: &Task) -> bool {
    !matches!(
        state(t).as_str(),
        "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned"
    )
}

/// The one running task of the agent's service.
async fn running_task(env: &TestEnv, service_id: &str) -> Task {
    let all = tasks(env, service_id).await;
    let running: Vec<&Task> = all.iter().filter(|t| state(t) == "running").collect();
    assert_eq!(running.len(), 1, "one running task: {all:#?}");
    running[0].clone()
}

fn replicas(s: &Service) -> i64 {
    s.spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(-1)
}

fn force_update(s: &Service) -> u64 {
    s.spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.force_update)
        .unwrap_or(0)
}

fn task_container(t: &Task) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .expect("the task has a container")
}

#[actix_rt::test]
async fn swarm_lifecycle_services_records_and_events() {
    let swarm = Swarm::join(SwarmLock::acquire());
    let env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_NETWORK", &swarm.network),
    ])
    .await;
    let id = env.agent_id("swarm");
    let cust = env.customer();

    // create → agent.created, agent.started; the handle is the service id.
    let mid = env.send("agent.create", env.create_body(&id)).await;
    env.answer(&mid, "agent.created").await;
    let started = env.answer(&mid, "agent.started").await;
    assert_eq!(started.status, "running");
    let svc = service(&env, &id).await.expect("service agent-<id> exists");
    let sid = svc.id.clone().unwrap();
    assert_eq!(started.container_id.as_deref(), Some(sid.as_str()));
    assert_eq!(replicas(&svc), 1);

    // The service as Swarm records it: labels, env, limits, security (section 4).
    let spec = svc.spec.clone().unwrap();
    let labels = spec.labels.clone().unwrap();
    for (k, v) in [
        ("autogen.managed-by", "agent-manager"),
        ("autogen.agent-id", id.as_str()),
        ("autogen.customer-id", cust.as_str()),
        ("autogen.agent-type", "trading"),
        ("autogen.agent-name", &format!("Agent {id}")),
        ("autogen.manager-instance", &env.config.instance),
    ] {
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(v),
            "service label {k}"
        );
    }
    let template = spec.task_template.clone().unwrap();
    let cs = template.container_spec.clone().unwrap();
    assert_eq!(
        cs.labels.as_ref(),
        Some(&labels),
        "container labels = service labels"
    );
    assert_eq!(cs.image.as_deref(), Some(common::agent_image()));
    let vars = cs.env.clone().unwrap();
    for expected in [
        format!("AGENT_ID={id}"),
        format!("CUSTOMER_ID={cust}"),
        "AGENT_TYPE=trading".to_string(),
        format!("AGENT_NAME=Agent {id}"),
        "CONFIG={\"symbol\":\"BTC-USD\"}".to_string(),
        "AUTOGEN_CONFIG={\"model\":\"gpt-test\"}".to_string(),
        // Contract section 8: the heartbeat's interval and key prefix.
        format!(
            "HEARTBEAT_INTERVAL_S={}",
            env.config.health.heartbeat_interval_s
        ),
        format!("REDIS_PREFIX={}", env.config.redis.prefix),
    ] {
        assert!(
            vars.contains(&expected),
            "missing env {expected} in {vars:?}"
        );
    }
    // The service carries the agent's own login (contract section 7).
    let password = common::own_login(&id, &vars);
    assert_eq!(cs.read_only, Some(true));
    assert_eq!(cs.init, Some(true));
    assert_eq!(cs.capability_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(cs.stop_grace_period, Some(10_000_000_000));
    let limits = template.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits.memory_bytes, Some(64 * 1024 * 1024));
    assert_eq!(limits.nano_cpus, Some(500_000_000));
    assert_eq!(limits.pids, Some(256));
    let restart = template.restart_policy.clone().unwrap();
    assert_eq!(
        restart.condition.map(|c| c.to_string()).as_deref(),
        Some("on-failure")
    );
    assert_eq!(restart.max_attempts, Some(3));
    let network = env
        .docker
        .inspect_network(
            &swarm.network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the manager created the overlay network");
    assert_eq!(network.driver.as_deref(), Some("overlay"));
    assert_eq!(network.attachable, Some(true));
    let targets: Vec<String> = template
        .networks
        .unwrap()
        .into_iter()
        .filter_map(|n| n.target)
        .collect();
    assert_eq!(targets, vec![network.id.clone().unwrap()]);

    // The task's container, as Docker runs it.
    let task = running_task(&env, &sid).await;
    let container = task_container(&task);
    let c = env
        .docker
        .inspect_container(
            &container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("task container");
    let host = c.host_config.clone().unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.init, Some(true));
    assert_ne!(host.privileged, Some(true));
    let container_labels = c.config.clone().unwrap().labels.unwrap();
    assert_eq!(container_labels["autogen.agent-id"], id);
    let mounts = docker(&["exec", &container, "cat", "/proc/mounts"]);
    let mounts = String::from_utf8_lossy(&mounts.stdout);
    let tmp = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/tmp"))
        .unwrap_or_else(|| panic!("no /tmp mount in {mounts}"));
    for flag in ["tmpfs", "nosuid", "nodev", "noexec"] {
        assert!(tmp.contains(flag), "/tmp lacks {flag}: {tmp}");
    }
    let write = docker(&["exec", &container, "touch", "/written"]);
    assert!(!write.status.success(), "the root filesystem is read-only");

    // The Redis record, as in docker mode, and a health report from the task.
    let r = env.record(&id).await;
    assert_eq!(r["status"], "running");
    assert_eq!(r["desired_state"], "running");
    assert_eq!(r["container_id"], sid);
    assert_eq!(r["customer_id"], cust);
    let aid = id.clone();
    let health = env
        .wait_event(
            "agent.health of the running task",
            common::DEADLINE,
            move |e| e.agent_id == aid && e.event.routing_key() == "agent.health",
        )
        .await;
    assert_eq!(health.details["state"], "running", "{}", health.details);

    // stop → replicas 0, no task left running.
    let mid = env.command("agent.stop", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.stopped").await.status, "stopped");
    let svc = service(&env, &id).await.unwrap();
    assert_eq!(replicas(&svc), 0);
    let all = tasks(&env, &sid).await;
    assert!(!all.iter().any(live), "no live task after stop: {all:#?}");
    assert_eq!(env.record(&id).await["status"], "stopped");
    // Stopping a stopped agent answers again.
    let mid = env.command("agent.stop", &id, json!({})).await;
    env.answer(&mid, "agent.stopped").await;

    // start → replicas 1, a running task.
    let mid = env.command("agent.start", &id, json!({})).await;
    assert_eq!(env.answer(&mid, "agent.started").await.status, "running");
    assert_eq!(replicas(&service(&env, &id).await.unwrap()), 1);
    let before = running_task(&env, &sid).await;

    // restart → ForceUpdate bumped, a new task running.
    let forced = force_update(&service(&env, &id).await.unwrap());
    let mid = env
        .command("agent.restart", &id, json!({"timeout_s": 5}))
        .await;
    assert_eq!(env.answer(&mid, "agent.restarted").await.status, "running");
    let svc = service(&env, &id).await.unwrap();
    assert_eq!(force_update(&svc), forced + 1);
    let after = running_task(&env, &sid).await;
    assert_ne!(before.id, after.id, "the restart made a new task");

    // update resources → new limits on the service and its running task.
    let mid = env
        .command(
            "agent.update",
            &id,
            json!({"resources": {"memory_mb": 128, "cpus": 0.25}}),
        )
        .await;
    let updated = env.answer(&mid, "agent.updated").await;
    assert_eq!(updated.details["in_place"], true, "{}", updated.details);
    let svc = service(&env, &id).await.unwrap();
    assert_eq!(svc.id.as_deref(), Some(sid.as_str()), "same service");
    let limits = svc
        .spec
        .unwrap()
        .task_template
        .unwrap()
        .resources
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(limits.memory_bytes, Some(128 * 1024 * 1024));
    assert_eq!(limits.nano_cpus, Some(250_000_000));
    let task = running_task(&env, &sid).await;
    let c = env
        .docker
        .inspect_container(
            &task_container(&task),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(c.host_config.unwrap().memory, Some(128 * 1024 * 1024));
    // A resize keeps the task's environment, its login included.
    let vars = c.config.and_then(|c| c.env).unwrap_or_default();
    assert_eq!(common::own_login(&id, &vars), password, "the same login");

    // update name → a new service with the new labels, still running.
    let mid = env
        .command("agent.update", &id, json!({"name": "Renamed"}))
        .await;
    let updated = env.answer(&mid, "agent.updated").await;
    assert_eq!(updated.details["replaced"], true, "{}", updated.details);
    assert_eq!(updated.status, "running");
    let svc = service(&env, &id).await.unwrap();
    let new_sid = svc.id.clone().unwrap();
    assert_eq!(updated.container_id.as_deref(), Some(new_sid.as_str()));
    let labels = svc.spec.clone().unwrap().labels.unwrap();
    assert_eq!(labels["autogen.agent-name"], "Renamed");
    running_task(&env, &new_sid).await;
    assert_eq!(env.record(&id).await["name"], "Renamed");
    // A new service: a new password.
    let vars = svc
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.container_spec)
        .and_then(|c| c.env)
        .unwrap_or_default();
    assert_ne!(common::own_login(&id, &vars), password, "a new login");

    // delete → service gone, record gone, no container of the agent left.
    let mid = env.command("agent.delete", &id, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert!(service(&env, &id).await.is_none(), "service removed");
    assert!(env.record(&id).await.is_empty(), "record removed");
    assert!(env.containers().await.is_empty(), "task containers removed");
    let member: bool = env
        .redis_query(redis::cmd("SISMEMBER").arg(env.key("agents")).arg(&id))
        .await;
    assert!(!member);
    env.finish().await;
}

#[actix_rt::test]
async fn swarm_stop_honours_timeout_restarts_crashes_and_survives_manager_restart() {
    let swarm = Swarm::join(SwarmLock::acquire());
    let mut env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_NETWORK", &swarm.network),
        // Tasks are created with a long grace period; the stop below asks for 2 s.
        ("STOP_TIMEOUT_S", "30"),
        ("SWARM_RESTART_DELAY_S", "1"),
    ])
    .await;

    // An agent that ignores SIGTERM.
    let stubborn = env.agent_id("stubborn");
    let mut body = env.create_body(&stubborn);
    body["config"] = json!({"ignore_sigterm": true});
    let mid = env.send("agent.create", body).await;
    let started = env.answer(&mid, "agent.started").await;
    let sid = started.container_id.clone().unwrap();
    let task = running_task(&env, &sid).await;

    // A new manager adopts the service without touching its task.
    env.restart_manager().await;
    let mid = env.command("agent.start", &stubborn, json!({})).await;
    let again = env.answer(&mid, "agent.started").await;
    assert_eq!(again.container_id.as_deref(), Some(sid.as_str()));
    assert_eq!(running_task(&env, &sid).await.id, task.id, "not restarted");

    // stop with timeout_s 2 ends it in about 2 s, not the task's own 30 s.
    let t0 = Instant::now();
    let mid = env
        .command("agent.stop", &stubborn, json!({"timeout_s": 2}))
        .await;
    env.answer(&mid, "agent.stopped").await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "stop took {took:?}: the command's timeout was not applied"
    );
    assert!(!tasks(&env, &sid).await.iter().any(live));

    // A task that exits non-zero is restarted by Swarm's restart policy; the manager
    // reports it (restart_count in agent.health).
    let crashy = env.agent_id("crashy");
    let mut body = env.create_body(&crashy);
    body["config"] = json!({"exit_after_ms": 3000, "exit_code": 3});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    let cid = crashy.clone();
    let report = env
        .wait_event(
            "agent.health with a restart by Swarm",
            Duration::from_secs(90),
            move |e| {
                e.agent_id == cid
                    && e.event.routing_key() == "agent.health"
                    && e.details["restart_count"].as_i64().unwrap_or(0) >= 1
            },
        )
        .await;
    assert!(report.details["restart_count"].as_i64().unwrap() >= 1);

    for agent in [&stubborn, &crashy] {
        let mid = env.command("agent.delete", agent, json!({})).await;
        env.answer(&mid, "agent.deleted").await;
    }
    assert!(env.containers().await.is_empty());
    env.finish().await;
}

#[actix_rt::test]
async fn swarm_mode_refuses_what_swarm_cannot_do() {
    let lock = SwarmLock::acquire();
    // Outside a swarm, swarm mode does not start, and says why.
    if swarm_state() == "inactive" {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let config = common::test_config(&id, &[("DEPLOYMENT_MODE", "swarm")]);
        let e = Manager::start(config)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("swarm manager") && e.contains("docker swarm init"),
            "{e}"
        );
    }
    let swarm = Swarm::join(lock);

    // A bridge network of the configured name is refused with a clear message.
    let bridge = format!("{}-bridge", swarm.network);
    let out = docker(&["network", "create", "--driver", "bridge", &bridge]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let config = common::test_config(
        &id,
        &[("DEPLOYMENT_MODE", "swarm"), ("DOCKER_NETWORK", &bridge)],
    );
    let refused = Manager::start(config).await.err().map(|e| e.to_string());
    let _ = docker(&["network", "rm", &bridge]);
    let e = refused.expect("a bridge network is refused");
    assert!(
        e.contains("overlay") && e.contains("DOCKER_NETWORK") && e.contains(&bridge),
        "{e}"
    );

    // Security options a Swarm service cannot take are refused, not dropped.
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let config = common::test_config(
        &id,
        &[
            ("DEPLOYMENT_MODE", "swarm"),
            ("DOCKER_NETWORK", &swarm.network),
            ("AGENT_SECURITY_OPT", "apparmor=autogen"),
        ],
    );
    let e = Manager::start(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("AGENT_SECURITY_OPT"), "{e}");

    // GPUs cannot be given to Swarm services.
    let env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_NETWORK", &swarm.network),
    ])
    .await;
    let id = env.agent_id("gpu");
    let mut body = env.create_body(&id);
    body["resources"]["gpus"] = json!(1);
    let mid = env.send("agent.create", body).await;
    assert_eq!(env.error_code(&mid).await.0, "gpu_unavailable");
    assert!(service(&env, &id).await.is_none());

    // A missing image is image_not_found, as in docker mode.
    let id = env.agent_id("noimage");
    let mut body = env.create_body(&id);
    body["image"] = json!("autogen-agent:does-not-exist");
    let mid = env.send("agent.create", body).await;
    assert_eq!(env.error_code(&mid).await.0, "image_not_found");
    assert!(service(&env, &id).await.is_none());
    env.finish().await;

    // Per-customer networks are overlay networks in swarm mode.
    let env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "swarm"),
        ("DOCKER_NETWORK", &swarm.network),
        ("NETWORK_PER_CUSTOMER", "true"),
    ])
    .await;
    let id = env.agent_id("own-net");
    let started = env.create_running(&id).await;
    assert_eq!(started.status, "running");
    let own = format!("{}-{}", swarm.network, env.customer());
    let network = env
        .docker
        .inspect_network(
            &own,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("customer network {own}: {e}"));
    assert_eq!(network.driver.as_deref(), Some("overlay"));
    assert_eq!(
        network
            .labels
            .unwrap_or_default()
            .get("autogen.customer-id"),
        Some(&env.customer())
    );
    let svc = service(&env, &id).await.unwrap();
    let targets: Vec<String> = svc
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.target)
        .collect();
    assert_eq!(
        targets,
        vec![network.id.unwrap()],
        "the agent is on its customer's network"
    );
    let mid = env.command("agent.delete", &id, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    env.finish().await;
}
