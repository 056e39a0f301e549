//! Security on real containers (docs/SECURITY.md): every hardening point as Docker
//! reports it and as seen from inside the container; per-customer networks that keep
//! customers apart; quotas under concurrent commands; and refused foreign commands
//! that change nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use common::{TestEnv, DEADLINE};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Runs `cmd` in the agent's container; returns (exit code, stdout + stderr).
async fn exec(env: &TestEnv, agent_id: &str, cmd: &[&str]) -> (i64, String) {
    let container = format!("agent-{agent_id}");
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        env.docker.create_exec(
            &container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("create exec timed out")
    .expect("create exec");
    let mut text = String::new();
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        env.docker.start_exec(&created.id, None::<StartExecOptions>),
    )
    .await
    .expect("start exec timed out")
    .expect("start exec");
    if let StartExecResults::Attached { mut output, .. } = started {
        let collect = async {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&chunk.to_string());
            }
        };
        tokio::time::timeout(Duration::from_secs(20), collect)
            .await
            .expect("exec output timed out");
    }
    let inspect = tokio::time::timeout(
        Duration::from_secs(10),
        env.docker.inspect_exec(&created.id),
    )
    .await
    .expect("inspect exec timed out")
    .expect("inspect exec");
    (inspect.exit_code.unwrap_or(-1), text)
}

/// Starts `cmd` in the agent's container and returns at once.
async fn exec_detached(env: &TestEnv, agent_id: &str, cmd: &[&str]) {
    let limit = Duration::from_secs(10);
    let created = tokio::time::timeout(
        limit,
        env.docker.create_exec(
            &format!("agent-{agent_id}"),
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("create exec timed out")
    .expect("create exec");
    tokio::time::timeout(
        limit,
        env.docker.start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        ),
    )
    .await
    .expect("start exec timed out")
    .expect("start exec");
}

/// Removes Docker networks made for a test, after the containers of its manager
/// instance (which TestEnv's own Drop would remove too, maybe later).
struct Networks {
    instance: String,
    names: Vec<String>,
}

impl Drop for Networks {
    fn drop(&mut self) {
        let label = format!("label=autogen.manager-instance={}", self.instance);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        for name in &self.names {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", name])
                .output();
        }
    }
}

/// Removes a host directory made for a test.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[actix_rt::test]
async fn agent_container_is_hardened() {
    let modules = TempDir(
        std::env::temp_dir().join(format!("agent-modules-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&modules.0).unwrap();
    std::fs::write(modules.0.join("module.py"), "x = 1\n").unwrap();
    let mount = format!("{}:/opt/modules", modules.0.display());
    let env = TestEnv::start(&[("MODULE_MOUNTS", mount.as_str())]).await;
    let id = env.agent_id("hard");
    env.create_running(&id).await;
    let c = env.inspect(&id).await.expect("container");
    let cfg = c.config.clone().unwrap();
    let host = c.host_config.clone().unwrap();

    // Never privileged; all capabilities dropped, none added (CIS 5.3, 5.4).
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(host.cap_add.as_ref().is_none_or(|c| c.is_empty()));
    // no-new-privileges, confinement never switched off (CIS 5.21, 5.25).
    let opts = host.security_opt.clone().unwrap_or_default();
    assert!(
        opts.contains(&"no-new-privileges:true".to_string()),
        "{opts:?}"
    );
    assert!(
        opts.iter()
            .all(|o| !o.contains("unconfined") && !o.contains("disable")),
        "{opts:?}"
    );
    // Read-only root, size-capped noexec,nosuid /tmp (CIS 5.12).
    assert_eq!(host.readonly_rootfs, Some(true));
    let tmp = &host.tmpfs.as_ref().unwrap()["/tmp"];
    for flag in ["noexec", "nosuid", "nodev", "size=64m"] {
        assert!(
            tmp.split(',').any(|f| f == flag),
            "/tmp lacks {flag}: {tmp}"
        );
    }
    // A non-root numeric user; an init process.
    assert_eq!(cfg.user.as_deref(), Some("65534:65534"));
    assert_eq!(host.init, Some(true));
    // Limits: pids, memory with swap equal to it, CPU, nofile (CIS 5.10, 5.11, 5.18, 5.28).
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.memory_swap, host.memory);
    assert_eq!(host.nano_cpus, Some(500_000_000));
    let nofile = host
        .ulimits
        .as_ref()
        .and_then(|u| u.iter().find(|l| l.name.as_deref() == Some("nofile")))
        .expect("nofile ulimit");
    assert_eq!((nofile.soft, nofile.hard), (Some(4096), Some(4096)));
    // Capped json-file logs.
    let log = host.log_config.clone().unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let log_opts = log.config.unwrap_or_default();
    assert_eq!(log_opts.get("max-size").map(String::as_str), Some("10m"));
    assert_eq!(log_opts.get("max-file").map(String::as_str), Some("3"));
    // No host namespaces (CIS 5.9, 5.15, 5.16, 5.20, 5.30).
    assert_eq!(host.network_mode.as_deref(), Some("autogen-network"));
    let nets: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(nets, vec!["autogen-network".to_string()]);
    assert_eq!(host.ipc_mode.as_deref(), Some("private"));
    for (what, mode) in [
        ("pid", host.pid_mode.clone()),
        ("uts", host.uts_mode.clone()),
        ("userns", host.userns_mode.clone()),
        ("cgroup parent", host.cgroup_parent.clone()),
    ] {
        assert!(
            mode.as_deref().unwrap_or("").is_empty(),
            "{what} mode {mode:?}"
        );
    }
    // No devices, no host ports (CIS 5.7, 5.13, 5.17).
    assert!(host.devices.as_ref().is_none_or(|d| d.is_empty()));
    assert!(host.device_requests.as_ref().is_none_or(|d| d.is_empty()));
    assert!(host
        .device_cgroup_rules
        .as_ref()
        .is_none_or(|d| d.is_empty()));
    assert!(host.port_bindings.as_ref().is_none_or(|p| p.is_empty()));
    assert_ne!(host.publish_all_ports, Some(true));
    // The only host path is the module mount, read-only; never the Docker socket (CIS 5.5, 5.31).
    assert_eq!(
        host.binds.clone().unwrap_or_default(),
        vec![format!("{mount}:ro")]
    );
    let mounts = c.mounts.clone().unwrap_or_default();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].destination.as_deref(), Some("/opt/modules"));
    assert_eq!(mounts[0].rw, Some(false));
    let everything = format!("{c:?}");
    assert!(!everything.contains("docker.sock"));

    // From inside: who it runs as, what it may do.
    let (_, status) = exec(&env, &id, &["cat", "/proc/self/status"]).await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
            .to_string()
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(
        field("Seccomp"),
        "2",
        "Docker's default seccomp filter applies"
    );
    assert!(field("Uid").split_whitespace().all(|u| u == "65534"));
    assert!(field("Gid").split_whitespace().all(|g| g == "65534"));
    let (_, comm) = exec(&env, &id, &["cat", "/proc/1/comm"]).await;
    assert_eq!(comm.trim(), "docker-init", "an init process is PID 1");
    let (code, _) = exec(&env, &id, &["touch", "/rootfs-write"]).await;
    assert_ne!(code, 0, "root filesystem is read-only");
    let (code, out) = exec(&env, &id, &["touch", "/tmp/ok"]).await;
    assert_eq!(code, 0, "/tmp is writable: {out}");
    let (code, _) = exec(&env, &id, &["touch", "/opt/modules/x"]).await;
    assert_ne!(code, 0, "module mount is read-only");
    let (code, out) = exec(&env, &id, &["cat", "/opt/modules/module.py"]).await;
    assert_eq!((code, out.as_str()), (0, "x = 1\n"));
    let (code, out) = exec(
        &env,
        &id,
        &["sh", "-c", "cp /bin/busybox /tmp/bb && /tmp/bb true"],
    )
    .await;
    assert_ne!(code, 0, "/tmp is noexec: {out}");
    let (code, _) = exec(&env, &id, &["ls", "/var/run/docker.sock"]).await;
    assert_ne!(code, 0, "no Docker socket inside");
    let (code, out) = exec(&env, &id, &["sh", "-c", "ulimit -n"]).await;
    assert_eq!((code, out.trim()), (0, "4096"));
    env.finish().await;
}

#[actix_rt::test]
async fn configured_capabilities_and_user_are_applied() {
    let env = TestEnv::start(&[
        ("AGENT_CAP_ADD", "net_bind_service"),
        ("AGENT_USER", "1000:1000"),
        ("AGENT_NOFILE", "1024"),
    ])
    .await;
    let id = env.agent_id("caps");
    env.create_running(&id).await;
    let c = env.inspect(&id).await.unwrap();
    let host = c.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_string()]));
    assert_eq!(c.config.unwrap().user.as_deref(), Some("1000:1000"));
    assert_eq!(host.ulimits.unwrap()[0].hard, Some(1024));
    let (_, out) = exec(&env, &id, &["id", "-u"]).await;
    assert_eq!(out.trim(), "1000");
    env.finish().await;
}

#[actix_rt::test]
async fn customers_on_their_own_networks_cannot_reach_each_other() {
    let env = TestEnv::start(&[("NETWORK_PER_CUSTOMER", "true")]).await;
    let own_net = format!("autogen-network-{}", env.customer());
    let other_customer = format!("other-{}", env.id);
    let other_net = format!("autogen-network-{other_customer}");
    let _networks = Networks {
        instance: env.config.instance.clone(),
        names: vec![own_net.clone(), other_net.clone()],
    };

    let server = env.agent_id("server");
    let neighbour = env.agent_id("neighbour");
    let stranger = env.agent_id("stranger");
    env.create_running(&server).await;
    env.create_running(&neighbour).await;
    let mut body = env.create_body(&stranger);
    body["customer_id"] = json!(other_customer);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;

    // Each agent is on its customer's network only; the network is labelled.
    let networks_of = |c: &bollard::models::ContainerInspectResponse| -> HashMap<String, String> {
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
            .collect()
    };
    let server_nets = networks_of(&env.inspect(&server).await.unwrap());
    assert_eq!(server_nets.keys().collect::<Vec<_>>(), vec![&own_net]);
    let neighbour_nets = networks_of(&env.inspect(&neighbour).await.unwrap());
    assert_eq!(neighbour_nets.keys().collect::<Vec<_>>(), vec![&own_net]);
    let stranger_nets = networks_of(&env.inspect(&stranger).await.unwrap());
    assert_eq!(stranger_nets.keys().collect::<Vec<_>>(), vec![&other_net]);
    let net = env
        .docker
        .inspect_network(
            &own_net,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("customer network exists");
    let labels = net.labels.unwrap_or_default();
    assert_eq!(labels["autogen.managed-by"], "agent-manager");
    assert_eq!(labels["autogen.customer-id"], env.customer());
    assert_eq!(net.driver.as_deref(), Some("bridge"));

    // The server listens on 8080; a neighbour reaches it, a stranger does not.
    let ip = server_nets[&own_net].clone();
    exec_detached(
        &env,
        &server,
        &[
            "busybox",
            "nc",
            "-ll",
            "-p",
            "8080",
            "-e",
            "/bin/busybox",
            "echo",
            "hello-from-server",
        ],
    )
    .await;
    // Egress (section 11) refuses other agents unless listed: both are allowed the
    // server, so what keeps the stranger out below is the network alone.
    let allow_server = json!([format!("{ip}:8080")]);
    let mid = env
        .command("agent.update", &neighbour, json!({"egress": allow_server}))
        .await;
    env.answer(&mid, "agent.updated").await;
    let mid = env
        .send(
            "agent.update",
            json!({"agent_id": stranger, "customer_id": other_customer, "egress": allow_server}),
        )
        .await;
    env.answer(&mid, "agent.updated").await;
    let connect = ["sh", "-c", &format!("echo | nc -w 2 {ip} 8080")];
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = exec(&env, &neighbour, &connect).await;
        if code == 0 && out.contains("hello-from-server") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the same customer's agent cannot reach the server: {code} {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out) = exec(&env, &stranger, &connect).await;
    assert!(
        code != 0 && !out.contains("hello-from-server"),
        "another customer's agent reached the server: {code} {out}"
    );
    // Still reachable for its own customer afterwards (the listener did not just die).
    let (code, out) = exec(&env, &neighbour, &connect).await;
    assert!(
        code == 0 && out.contains("hello-from-server"),
        "{code} {out}"
    );

    // Deleting a customer's agents leaves the others alone.
    let mid = env.command("agent.delete", &neighbour, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert!(env.running(&server).await && env.running(&stranger).await);
    env.finish().await;
}

/// The customer's quota usage hash.
async fn usage(env: &TestEnv, customer: &str) -> HashMap<String, i64> {
    env.redis_query(redis::cmd("HGETALL").arg(env.key(&format!("customer:{customer}:usage"))))
        .await
}

#[actix_rt::test]
async fn agent_quota_holds_under_concurrent_creates_and_deletes_free_it() {
    let mut env = TestEnv::start(&[("QUOTA_MAX_AGENTS", "3")]).await;
    let cust = env.customer();
    let ids: Vec<String> = (0..8).map(|i| env.agent_id(&format!("q{i}"))).collect();
    // Sent back to back: commands for different agents run concurrently.
    let mut mids = Vec::new();
    for id in &ids {
        let mut body = env.create_body(id);
        body["auto_start"] = json!(false);
        mids.push(env.send("agent.create", body).await);
    }
    let mut created = Vec::new();
    let mut refused = 0;
    for (id, mid) in ids.iter().zip(&mids) {
        let e = env
            .wait_event("an answer", DEADLINE, |e| {
                e.correlation_id.as_deref() == Some(mid.as_str())
            })
            .await;
        match (e.event.routing_key(), e.details["code"].as_str()) {
            ("agent.created", _) => created.push(id.clone()),
            ("agent.error", Some("quota_exceeded")) => {
                refused += 1;
                assert!(e.details["message"]
                    .as_str()
                    .unwrap()
                    .contains("QUOTA_MAX_AGENTS"));
                assert!(env.record(id).await.is_empty(), "nothing left of {id}");
            }
            other => panic!("unexpected answer {other:?}: {}", e.details),
        }
    }
    assert_eq!((created.len(), refused), (3, 5));
    assert_eq!(env.containers().await.len(), 3);
    let u = usage(&env, &cust).await;
    assert_eq!(u["agents"], 3);
    assert_eq!(u["memory_mb"], 3 * 64);
    assert_eq!(u["cpus_milli"], 3 * 500);

    // A delete frees its share; a create then fits again.
    let mid = env.command("agent.delete", &created[0], json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert_eq!(usage(&env, &cust).await["agents"], 2);
    let late = env.agent_id("late");
    env.create_running(&late).await;
    assert_eq!(usage(&env, &cust).await["agents"], 3);
    // Over quota again.
    let mid = env
        .send("agent.create", env.create_body(&env.agent_id("over")))
        .await;
    assert_eq!(env.error_code(&mid).await.0, "quota_exceeded");

    // A manager restart recomputes usage from the records, whatever Redis says.
    let _: () = env
        .redis_query(
            redis::cmd("HSET")
                .arg(env.key(&format!("customer:{cust}:usage")))
                .arg("agents")
                .arg(99),
        )
        .await;
    let _: () = env
        .redis_query(
            redis::cmd("HSET")
                .arg(env.key("customer:ghost-customer:reservations"))
                .arg("ghost")
                .arg("1 1 0"),
        )
        .await;
    env.restart_manager().await;
    assert_eq!(usage(&env, &cust).await["agents"], 3);
    let ghost: i64 = env
        .redis_query(redis::cmd("EXISTS").arg(env.key("customer:ghost-customer:reservations")))
        .await;
    assert_eq!(ghost, 0, "usage of customers without agents is cleared");
    env.finish().await;
}

#[actix_rt::test]
async fn memory_and_cpu_quotas_cover_updates_and_failed_creates() {
    let env = TestEnv::start(&[("QUOTA_MAX_MEMORY_MB", "256"), ("QUOTA_MAX_CPUS", "1.5")]).await;
    let cust = env.customer();
    let a = env.agent_id("qa");
    let b = env.agent_id("qb");
    env.create_running(&a).await; // 64 MiB, 0.5 CPU
    env.create_running(&b).await;

    // Growing one agent within the quota works; past it, nothing changes.
    let mid = env
        .command("agent.update", &a, json!({"resources": {"memory_mb": 128}}))
        .await;
    env.answer(&mid, "agent.updated").await;
    let before = env.inspect(&b).await.unwrap();
    let mid = env
        .command("agent.update", &b, json!({"resources": {"memory_mb": 150}}))
        .await;
    let (code, e) = env.error_code(&mid).await;
    assert_eq!(code, "quota_exceeded");
    assert!(e.details["message"]
        .as_str()
        .unwrap()
        .contains("QUOTA_MAX_MEMORY_MB"));
    let after = env.inspect(&b).await.unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.host_config.unwrap().memory, Some(64 * 1024 * 1024));
    let res: Value = serde_json::from_str(&env.record(&b).await["resources"]).unwrap();
    assert_eq!(res["memory_mb"], 64);
    let u = usage(&env, &cust).await;
    assert_eq!((u["memory_mb"], u["cpus_milli"]), (192, 1000));

    // CPUs: 0.5 + 0.5 + 0.6 > 1.5.
    let mut body = env.create_body(&env.agent_id("qc"));
    body["resources"] = json!({"memory_mb": 16, "cpus": 0.6});
    let mid = env.send("agent.create", body).await;
    let (code, e) = env.error_code(&mid).await;
    assert_eq!(code, "quota_exceeded", "{}", e.details);
    assert!(e.details["message"]
        .as_str()
        .unwrap()
        .contains("QUOTA_MAX_CPUS"));
    // Shrinking is always allowed.
    let mid = env
        .command(
            "agent.update",
            &a,
            json!({"resources": {"memory_mb": 32, "cpus": 0.25}}),
        )
        .await;
    env.answer(&mid, "agent.updated").await;
    let u = usage(&env, &cust).await;
    assert_eq!((u["memory_mb"], u["cpus_milli"]), (96, 750));

    // A create that fails after its reservation gives it back.
    let mut body = env.create_body(&env.agent_id("noimage"));
    body["image"] = json!("autogen-agent:does-not-exist");
    let mid = env.send("agent.create", body).await;
    assert_eq!(env.error_code(&mid).await.0, "image_not_found");
    let u = usage(&env, &cust).await;
    assert_eq!((u["agents"], u["memory_mb"]), (2, 96));

    // Deleting everything leaves no usage behind.
    for id in [&a, &b] {
        let mid = env.command("agent.delete", id, json!({})).await;
        env.answer(&mid, "agent.deleted").await;
    }
    assert!(usage(&env, &cust).await.is_empty());
    env.finish().await;
}

#[actix_rt::test]
async fn foreign_customer_commands_are_forbidden_and_change_nothing() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("mine");
    env.create_running(&id).await;
    let intruder = format!("intruder-{}", env.id);
    // Fields that change while nobody commands the agent.
    let volatile = [
        "health",
        "cpu_percent",
        "memory_bytes",
        "last_health_at",
        "updated_at",
    ];
    let snapshot = |r: HashMap<String, String>| -> HashMap<String, String> {
        r.into_iter()
            .filter(|(k, _)| !volatile.contains(&k.as_str()))
            .collect()
    };
    let record_before = snapshot(env.record(&id).await);
    let container_before = env.inspect(&id).await.unwrap();
    let usage_before = usage(&env, &env.customer()).await;

    let mut create = env.create_body(&id);
    create["customer_id"] = json!(intruder);
    let commands = [
        ("agent.create", create),
        (
            "agent.update",
            json!({"agent_id": id, "customer_id": intruder, "name": "pwned",
                   "resources": {"memory_mb": 512}, "config": {"evil": true}}),
        ),
        (
            "agent.start",
            json!({"agent_id": id, "customer_id": intruder}),
        ),
        (
            "agent.stop",
            json!({"agent_id": id, "customer_id": intruder, "timeout_s": 0}),
        ),
        (
            "agent.restart",
            json!({"agent_id": id, "customer_id": intruder}),
        ),
        (
            "agent.delete",
            json!({"agent_id": id, "customer_id": intruder}),
        ),
    ];
    for (rk, body) in commands {
        let mid = env.send(rk, body).await;
        let (code, e) = env.error_code(&mid).await;
        assert_eq!(code, "forbidden", "{rk}: {}", e.details);
        assert_eq!(e.details["command"], rk);
        assert_eq!(
            env.answers(&mid).len(),
            1,
            "{rk} is answered by one agent.error and nothing else"
        );
    }
    // The answers tell the intruder nothing about the agent.
    for e in env.events_of(&id) {
        if e.event.routing_key() == "agent.error" {
            assert_eq!(e.customer_id, intruder);
            assert_eq!(e.status, "failed");
            assert!(e.container_id.is_none());
        }
    }
    // Not even the agent's event stream has a trace of them.
    let stream: Vec<(String, Vec<(String, String)>)> = env
        .redis_query(
            redis::cmd("XRANGE")
                .arg(env.key(&format!("agent:{id}:events")))
                .arg("-")
                .arg("+"),
        )
        .await;
    assert!(
        stream
            .iter()
            .all(|(_, fields)| fields.iter().all(|(_, v)| !v.contains(&intruder))),
        "{stream:?}"
    );
    assert_eq!(snapshot(env.record(&id).await), record_before);
    let container_after = env.inspect(&id).await.unwrap();
    assert_eq!(container_after.id, container_before.id);
    assert_eq!(
        container_after.state.as_ref().unwrap().started_at,
        container_before.state.as_ref().unwrap().started_at,
        "not restarted"
    );
    assert!(container_after.state.unwrap().running.unwrap());
    assert_eq!(usage(&env, &env.customer()).await, usage_before);
    assert!(usage(&env, &intruder).await.is_empty());
    let intruder_set: i64 = env
        .redis_query(redis::cmd("EXISTS").arg(env.key(&format!("customer:{intruder}:agents"))))
        .await;
    assert_eq!(intruder_set, 0);
    env.finish().await;
}
