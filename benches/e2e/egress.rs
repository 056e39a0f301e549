//! The `egress` scenario (contract section 11): what the kernel's rules and the egress
//! proxy cost.
//!
//! - Create throughput: EGRESS_AGENTS agents created and started through a manager with
//!   `EGRESS_MODE=iptables` beside as many through one with `EGRESS_MODE=off`, in
//!   batches of EGRESS_BATCH rotating which goes first (as `lifecycle` does).
//! - Rules at scale: EGRESS_RULE_AGENTS agents' chains written in one transaction (what
//!   a start's reconciliation does), one agent's rewritten with them all present (an
//!   update), their size, and their removal.
//! - A new connection's cost with those rules present, the agent's own rule last in the
//!   chain (the worst case), beside the same agent with them gone: EGRESS_REQUESTS TCP
//!   connects to the platform's Redis from inside the agent's network namespace.
//! - The proxy: EGRESS_REQUESTS round trips (connect, read the answer) through the proxy's
//!   `CONNECT` beside straight to the same listener, from inside the agent; the
//!   manager's RSS before and after.
//!
//! The client runs as the agent by entering its network namespace (`nsenter`), so the
//! kernel and the proxy see the agent's own MAC address: Python's `perf_counter` times
//! each request (busybox's `date` has no nanoseconds).

use std::time::{Duration, Instant};

use agent_manager::config::EgressConfig;
use agent_manager::egress::rules::Platform;
use agent_manager::egress::Firewall;
use agent_manager::ports::EgressFilter;
use agent_manager::protocol::{AgentSpec, AgentType, DesiredState, Resources};
use agent_manager::record::AgentRecord;
use serde_json::json;

use crate::common::{self, agent_gateway, TestEnv};
use crate::lifecycle::{manager_path, LIFECYCLE_OVERRIDES};
use crate::support::manager::{small_agent, spawn_manager, wait_ready};
use crate::support::probe::rss_kb;
use crate::support::report::{dist, load, write_result};
use crate::support::sizes::Sizes;

/// Per-request milliseconds of `n` requests made inside container `container`'s network
/// namespace: to `target` straight, or through the proxy at `proxy` with `CONNECT`;
/// each reads the line the target writes (`read_line`), or only connects.
fn timed_requests(
    container: &str,
    target: &str,
    proxy: Option<&str>,
    read_line: bool,
    n: usize,
) -> Vec<f64> {
    let pid = String::from_utf8_lossy(
        &std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", container])
            .output()
            .expect("docker inspect")
            .stdout,
    )
    .trim()
    .to_string();
    let (host, port) = target.rsplit_once(':').expect("host:port");
    let (via_host, via_port, connect) = match proxy {
        Some(p) => {
            let (h, port) = p.rsplit_once(':').expect("host:port");
            (h.to_string(), port.to_string(), "True")
        }
        None => (host.to_string(), port.to_string(), "False"),
    };
    let read_line = if read_line { "True" } else { "False" };
    let script = format!(
        "import socket, time, json\n\
         out = []\n\
         for _ in range({n}):\n\
         \x20   t = time.perf_counter()\n\
         \x20   s = socket.create_connection(('{via_host}', {via_port}), timeout=5)\n\
         \x20   if {connect}:\n\
         \x20       s.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\n\
         \x20       head = b''\n\
         \x20       while b'\\r\\n\\r\\n' not in head:\n\
         \x20           chunk = s.recv(1024)\n\
         \x20           if not chunk: raise SystemExit('proxy closed: ' + repr(head))\n\
         \x20           head += chunk\n\
         \x20       assert head.startswith(b'HTTP/1.1 200'), head\n\
         \x20       rest = head.split(b'\\r\\n\\r\\n', 1)[1]\n\
         \x20   else:\n\
         \x20       rest = b''\n\
         \x20   while {read_line} and b'\\n' not in rest:\n\
         \x20       chunk = s.recv(1024)\n\
         \x20       if not chunk: break\n\
         \x20       rest += chunk\n\
         \x20   s.close()\n\
         \x20   out.append((time.perf_counter() - t) * 1000)\n\
         print(json.dumps(out))\n"
    );
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-c", &script])
        .output()
        .expect("nsenter python3");
    assert!(
        out.status.success(),
        "requests from {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("timings")
}

/// A listener on `addr` that writes a line to every connection and closes it.
fn line_server(addr: (&str, u16)) {
    let listener = std::net::TcpListener::bind(addr).expect("bind the bench's listener");
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            use std::io::Write;
            let mut c = c;
            let _ = c.write_all(b"hi\n");
        }
    });
}

fn spec(i: usize) -> AgentSpec {
    AgentSpec {
        customer_id: "bench".into(),
        agent_type: AgentType::Trading,
        name: format!("Rule {i}"),
        config: json!({}),
        autogen_config: json!({}),
        resources: Resources {
            memory_mb: 32,
            cpus: 0.1,
            gpus: 0,
            max_messages_per_s: None,
        },
        image: "autogen-agent:latest".into(),
        egress: vec![
            "10.20.0.0/16:9878".into(),
            format!("10.30.{}.0/24:443", i % 250),
            "*.example-exchange.com:443".into(),
        ],
    }
}

fn saved_size() -> (usize, usize) {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", "filter"])
        .output()
        .expect("iptables-save");
    let text = String::from_utf8_lossy(&out.stdout);
    (text.lines().count(), text.len())
}

pub async fn egress(s: &Sizes) {
    let load_before = load();
    let gateway = agent_gateway().expect("the agents' network has a gateway");
    let listen_port = common::free_port();
    line_server((gateway, listen_port));
    let proxy = format!("{gateway}:{}", common::free_port());

    // Create throughput, rules on beside rules off.
    let on_overrides = [
        LIFECYCLE_OVERRIDES[0],
        LIFECYCLE_OVERRIDES[1],
        ("EGRESS_MODE", "iptables"),
        ("EGRESS_PROXY_LISTEN", proxy.as_str()),
    ];
    let off_overrides = [
        LIFECYCLE_OVERRIDES[0],
        LIFECYCLE_OVERRIDES[1],
        ("EGRESS_MODE", "off"),
    ];
    let on = TestEnv::client_only(&on_overrides).await;
    let off = TestEnv::client_only(&off_overrides).await;
    let (mut on_manager, on_admin, _) = spawn_manager(&on, &on_overrides);
    let (mut off_manager, off_admin, _) = spawn_manager(&off, &off_overrides);
    wait_ready(&mut on_manager, on_admin, Duration::from_secs(60)).await;
    wait_ready(&mut off_manager, off_admin, Duration::from_secs(60)).await;
    let (on_tap, off_tap) = (on.tap().await, off.tap().await);
    on.mute_events().await;
    off.mute_events().await;
    let n = s.egress.agents;
    let batch = s.egress.batch.clamp(1, n.max(1));
    let mut totals = [Duration::ZERO; 2];
    let mut latency: [Vec<f64>; 2] = Default::default();
    let (mut done, mut b) = (0, 0);
    while done < n {
        let size = batch.min(n - done);
        for step in 0..2 {
            let which = (b + step) % 2;
            let (env, tap) = if which == 0 {
                (&on, &on_tap)
            } else {
                (&off, &off_tap)
            };
            let r = manager_path(env, tap, size, &format!("e{b}")).await;
            totals[which] += r.total;
            latency[which].extend(r.latency);
        }
        done += size;
        b += 1;
    }
    let rate = |i: usize| n as f64 / totals[i].as_secs_f64();

    // Rules at scale, written beside the real agents' (another instance's chains).
    let platform = Platform {
        services: vec![
            format!("{gateway}:5672").parse().expect("address"),
            format!("{gateway}:6379").parse().expect("address"),
        ],
    };
    let instance = format!("bench-egress-{}", on.id);
    let config = EgressConfig {
        mode: agent_manager::config::EgressMode::Iptables,
        allow: Vec::new(),
        customers: Default::default(),
        proxy_listen: String::new(),
        proxy_url: None,
    };
    let fw = Firewall::install(&instance, config, platform)
        .await
        .expect("iptables (run as root)");
    // Removes the synthetic agents' rules even when the scenario fails half way.
    struct RulesGone(String);
    impl Drop for RulesGone {
        fn drop(&mut self) {
            common::remove_egress_rules(&self.0);
        }
    }
    let _rules_gone = RulesGone(instance.clone());
    let (lines_before, bytes_before) = saved_size();
    let records: Vec<AgentRecord> = (0..s.egress.rule_agents)
        .map(|i| AgentRecord::new(&format!("r{i}"), spec(i), DesiredState::Running))
        .collect();
    let t = Instant::now();
    fw.sync(&records).await.expect("sync");
    let sync_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (lines_after, bytes_after) = saved_size();
    let mut update_ms = Vec::new();
    for i in 0..s.egress.updates {
        let mut changed = spec(i + 1);
        changed.egress.push(format!("10.40.{}.0/24:*", i % 250));
        let t = Instant::now();
        fw.allow(&format!("r{i}"), &changed).await.expect("allow");
        update_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // A new connection from an agent whose rule comes after all of them, then with
    // them gone.
    let last = on.agent_id("last");
    let mut body = small_agent(&on, &last);
    body["egress"] = json!([format!("{gateway}/32:{listen_port}")]);
    let mid = on.send("agent.create", body).await;
    on_tap
        .wait_answer(&mid, "agent.started", Duration::from_secs(120))
        .await
        .expect("the last agent started");
    let container = format!("agent-{last}");
    let redis = format!("{gateway}:6379");
    let requests = s.egress.requests;
    let mut with_rules = timed_requests(&container, &redis, None, false, requests);
    let t = Instant::now();
    fw.sync(&[]).await.expect("remove");
    let remove_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut without_rules = timed_requests(&container, &redis, None, false, requests);

    // The proxy beside straight to the same listener.
    let target = format!("{gateway}:{listen_port}");
    let rss_before = rss_kb(on_manager.pid());
    let mut direct = timed_requests(&container, &target, None, true, requests);
    let mut proxied = timed_requests(&container, &target, Some(&proxy), true, requests);
    let rss_after = rss_kb(on_manager.pid());
    write_result(
        "egress",
        &json!({
            "quick": s.quick,
            "agents_per_path": n,
            "batch": batch,
            "create_agents_per_s_rules_on": rate(0),
            "create_agents_per_s_rules_off": rate(1),
            "ratio_on_over_off": rate(0) / rate(1),
            "create_latency_ms_rules_on": dist(&mut latency[0]),
            "create_latency_ms_rules_off": dist(&mut latency[1]),
            "rule_agents": s.egress.rule_agents,
            "sync_ms": sync_ms,
            "update_one_ms": dist(&mut update_ms),
            "remove_all_ms": remove_ms,
            "iptables_save_lines": {"before": lines_before, "with_rules": lines_after},
            "iptables_save_bytes": {"before": bytes_before, "with_rules": bytes_after},
            "connect_ms_rule_last_of_many": dist(&mut with_rules),
            "connect_ms_rules_gone": dist(&mut without_rules),
            "request_ms_direct": dist(&mut direct),
            "request_ms_through_proxy": dist(&mut proxied),
            "manager_rss_kb": {"before_proxy": rss_before, "after_proxy": rss_after},
            "load_before": load_before,
            "load_after": load(),
        }),
    );
    drop(on_manager);
    drop(off_manager);
    off.finish().await;
    on.finish().await;
}
