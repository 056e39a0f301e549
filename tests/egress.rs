//! Egress (contract section 11) against the real kernel and Docker: a test host in a
//! network namespace of the test's own (one allowed port, one not, and a second
//! address), agents on the agents' network, and a plain container beside them that no
//! manager filters, which shows every destination answers: a refusal seen from an agent
//! is the firewall's, not a missing listener.

mod common;

use std::time::{Duration, Instant};

use common::{agent_gateway, TestEnv, AGENT_NETWORK, DEADLINE};
use serde_json::{json, Value};

const START_HINT: &str = "start the services with scripts/services.sh (run as root)";

/// Runs `args` as a command; panics when it cannot run at all.
fn sh(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}; {START_HINT}"))
}

fn must(program: &str, args: &[&str]) {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host outside the platform: a network namespace with two addresses, reached through
/// the host (which routes for it), and TCP listeners the test starts there.
struct OutsideHost {
    ns: String,
    veth: String,
    /// The first and second address of the namespace.
    addrs: [String; 2],
    listeners: Vec<std::process::Child>,
}

impl OutsideHost {
    fn new(tag: &str) -> OutsideHost {
        // A /29 of 10.251.0.0/16 chosen from the tag: distinct per test run.
        let n = u32::from_str_radix(&tag[..4], 16).unwrap_or(1) % 8000 + 8;
        let base = 10u32 << 24 | 251 << 16 | (n * 8);
        let ip = |i: u32| std::net::Ipv4Addr::from(base + i).to_string();
        let ns = format!("egress-{}", &tag[..8]);
        let veth = format!("eg{}", &tag[..8]);
        let peer = format!("ep{}", &tag[..8]);
        let host = OutsideHost {
            ns: ns.clone(),
            veth: veth.clone(),
            addrs: [ip(2), ip(3)],
            listeners: Vec::new(),
        };
        must("ip", &["netns", "add", &ns]);
        must(
            "ip",
            &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        );
        must("ip", &["link", "set", &peer, "netns", &ns]);
        must(
            "ip",
            &["addr", "add", &format!("{}/29", ip(1)), "dev", &veth],
        );
        must("ip", &["link", "set", &veth, "up"]);
        for args in [
            vec!["addr", "add", &format!("{}/29", ip(2)), "dev", &peer],
            vec!["addr", "add", &format!("{}/29", ip(3)), "dev", &peer],
            vec!["link", "set", &peer, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &ip(1)],
        ] {
            let mut full = vec!["netns", "exec", &ns, "ip"];
            full.extend(args.iter().map(|s| &**s));
            must("ip", &full);
        }
        host
    }

    /// A listener on every address of the namespace at `port` that answers "hi".
    fn listen(&mut self, port: u16) {
        let script = format!(
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port})); s.listen(64)\n\
             while True:\n    c, _ = s.accept(); c.sendall(b'hi\\n'); c.close()\n"
        );
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", &script])
            .spawn()
            .expect("python3 listener");
        self.listeners.push(child);
        let deadline = Instant::now() + DEADLINE;
        let addr = format!("{}:{port}", self.addrs[0]);
        while std::net::TcpStream::connect_timeout(
            &addr.parse().expect("address"),
            Duration::from_millis(200),
        )
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "listener on {addr} never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        for l in &mut self.listeners {
            let _ = l.kill();
            let _ = l.wait();
        }
        let _ = sh("ip", &["link", "del", &self.veth]);
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

/// Whether a TCP connection from container `container` to `host:port` is answered
/// ("hi" read back) within 3 s.
async fn reaches(container: &str, host: &str, port: u16) -> bool {
    let out = tokio::process::Command::new("docker")
        .args([
            "exec",
            container,
            "sh",
            "-c",
            &format!("nc -w 3 {host} {port} </dev/null"),
        ])
        .output()
        .await
        .expect("docker exec");
    out.status.success()
}

/// Whether the connection is refused at once (a reset, not a timeout).
async fn refused(container: &str, host: &str, port: u16) -> bool {
    let started = Instant::now();
    let answered = reaches(container, host, port).await;
    !answered && started.elapsed() < Duration::from_millis(2500)
}

/// A plain container on the agents' network that no manager filters.
struct Bystander(String);

impl Bystander {
    fn start(tag: &str) -> Bystander {
        let name = format!("egress-bystander-{tag}");
        must(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                AGENT_NETWORK,
                common::agent_image(),
                "sleep",
                "600",
            ],
        );
        Bystander(name)
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = sh("docker", &["rm", "-f", &self.0]);
    }
}

fn ip_of(container: &str) -> String {
    let out = sh(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn agent_chain_exists(env: &TestEnv, agent_id: &str) -> bool {
    let chain = agent_manager::egress::rules::chain_of(&env.config.instance, agent_id);
    sh("iptables", &["-w", "5", "-S", &chain]).status.success()
}

/// A name for the outside host, in /etc/hosts while the test runs (the proxy resolves
/// names with the host's resolver).
struct HostsEntry(String);

impl HostsEntry {
    fn add(name: &str, ip: &str) -> HostsEntry {
        let line = format!("{ip} {name}");
        let hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
        std::fs::write("/etc/hosts", format!("{hosts}{line}\n")).expect("write /etc/hosts");
        HostsEntry(line)
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = hosts
                .lines()
                .filter(|l| *l != self.0)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// What the egress proxy at `proxy` answers agent `container`'s `CONNECT target`: its
/// status line and what the tunnel then carried.
async fn through_proxy(container: &str, proxy: &str, target: &str) -> String {
    let (host, port) = proxy.rsplit_once(':').expect("host:port");
    let request = format!("CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n");
    let out = tokio::process::Command::new("docker")
        .args([
            "exec",
            container,
            "sh",
            "-c",
            &format!("printf '{request}' | nc -w 3 {host} {port}"),
        ])
        .output()
        .await
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[actix_rt::test]
async fn an_agent_reaches_the_platform_and_its_list_and_nothing_else() {
    let gateway = agent_gateway().expect("the agents' network has a gateway");
    let proxy = format!("{gateway}:{}", common::free_port());
    // iptables: the manager refuses to start rather than run agents unfiltered.
    let mut env =
        TestEnv::start(&[("EGRESS_MODE", "iptables"), ("EGRESS_PROXY_LISTEN", &proxy)]).await;
    let mut outside = OutsideHost::new(&env.id);
    outside.listen(18080);
    outside.listen(18081);
    let [allowed_host, other_host] = outside.addrs.clone();
    let name = format!("exchange-{}.egress.test", env.id);
    let _hosts = HostsEntry::add(&name, &allowed_host);
    // A port of the host's own that is no platform service.
    let host_port = common::free_port();
    let host_listener = std::net::TcpListener::bind((gateway, host_port)).expect("bind");
    std::thread::spawn(move || {
        for c in host_listener.incoming().flatten() {
            use std::io::Write;
            let mut c = c;
            let _ = c.write_all(b"hi\n");
        }
    });

    let a = env.agent_id("ega");
    let b = env.agent_id("egb");
    let mut body = env.create_body(&a);
    body["egress"] = json!([format!("{allowed_host}:18080"), "*.egress.test:18081"]);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    env.create_running(&b).await;
    let (ca, cb) = (format!("agent-{a}"), format!("agent-{b}"));
    // Agent b listens, so another agent has something to be refused from.
    must(
        "docker",
        &[
            "exec",
            "-d",
            &cb,
            "sh",
            "-c",
            "while true; do echo hi | nc -l -p 9000; done",
        ],
    );
    let b_ip = ip_of(&cb);

    // Everything answers a container no manager filters.
    let bystander = Bystander::start(&env.id);
    let by = bystander.0.as_str();
    let deadline = Instant::now() + DEADLINE;
    while !reaches(by, &b_ip, 9000).await {
        assert!(
            Instant::now() < deadline,
            "agent b's listener never answered"
        );
    }
    for (host, port) in [
        (allowed_host.as_str(), 18080),
        (allowed_host.as_str(), 18081),
        (other_host.as_str(), 18080),
        (gateway, host_port),
    ] {
        assert!(reaches(by, host, port).await, "bystander to {host}:{port}");
    }

    // The agent: its entry, and the platform's Redis (its URL's address).
    assert!(
        reaches(&ca, &allowed_host, 18080).await,
        "the allowed entry"
    );
    let redis = tokio::process::Command::new("docker")
        .args([
            "exec",
            &ca,
            "sh",
            "-c",
            &format!("echo PING | nc -w 3 {gateway} 6379"),
        ])
        .output()
        .await
        .expect("docker exec");
    assert!(
        String::from_utf8_lossy(&redis.stdout).contains("PONG")
            || String::from_utf8_lossy(&redis.stdout).contains("NOAUTH"),
        "the platform's Redis: {redis:?}"
    );
    // Everything else is refused, at once.
    for (host, port, what) in [
        (
            allowed_host.as_str(),
            18081,
            "another port of the allowed host",
        ),
        (other_host.as_str(), 18080, "another host"),
        (b_ip.as_str(), 9000, "another agent"),
        (
            gateway,
            host_port,
            "the host's own port that is no platform service",
        ),
        ("169.254.169.254", 80, "cloud metadata"),
    ] {
        assert!(refused(&ca, host, port).await, "{what} ({host}:{port})");
    }
    let refused_count = || {
        let out = sh("iptables-save", &["-c", "-t", "filter"]);
        let saved = String::from_utf8_lossy(&out.stdout).to_string();
        let chain = agent_manager::egress::rules::chain_of(&env.config.instance, &a);
        agent_manager::egress::rules::refused_by_chain(&saved)
            .get(&chain)
            .copied()
            .unwrap_or(0)
    };
    assert!(
        refused_count() >= 5,
        "refusals counted: {}",
        refused_count()
    );

    // Names go through the egress proxy, which checks the agent's list: it was given
    // the proxy, an allowed name is tunnelled, another port or a name outside the list
    // is refused, and the proxy never connects to metadata for it.
    let inspect = env.inspect(&a).await.expect("agent a");
    let agent_env = inspect.config.and_then(|c| c.env).unwrap_or_default();
    assert!(
        agent_env.contains(&format!("HTTPS_PROXY=http://{proxy}")),
        "{agent_env:?}"
    );
    let tunnel = through_proxy(&ca, &proxy, &format!("{name}:18081")).await;
    assert!(
        tunnel.starts_with("HTTP/1.1 200") && tunnel.contains("hi"),
        "an allowed name: {tunnel:?}"
    );
    for target in [
        format!("{name}:18080"),
        format!("other-{}.example:18081", env.id),
        "169.254.169.254:80".to_string(),
    ] {
        let answer = through_proxy(&ca, &proxy, &target).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer:?}");
    }
    // A name in the list that resolves to cloud metadata: the proxy will not go there.
    let metadata = format!("meta-{}.egress.test", env.id);
    let _metadata = HostsEntry::add(&metadata, "169.254.169.254");
    let answer = through_proxy(&ca, &proxy, &format!("{metadata}:18081")).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "metadata: {answer:?}");
    // Agent b has no such entry.
    let answer = through_proxy(&cb, &proxy, &format!("{name}:18081")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "agent b: {answer:?}");

    // /metrics counts what egress refused each agent (kernel and proxy).
    let (status, metrics) = env.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let refused_a: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "agent_manager_agent_egress_refused_total{{agent=\"{a}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refusals series for {a}: {metrics}"));
    assert!(refused_a >= 8.0, "kernel and proxy refusals: {refused_a}");

    // An update opens and closes destinations on the running agent, same container.
    let before = env.inspect(&a).await.and_then(|c| c.id);
    let mid = env
        .command(
            "agent.update",
            &a,
            json!({"egress": [format!("{allowed_host}/32:18081"), format!("{other_host}:*")]}),
        )
        .await;
    let e = env.answer(&mid, "agent.updated").await;
    assert_eq!(e.details["in_place"], true);
    assert_eq!(env.inspect(&a).await.and_then(|c| c.id), before);
    assert!(
        refused(&ca, &allowed_host, 18080).await,
        "closed by the update"
    );
    assert!(
        reaches(&ca, &allowed_host, 18081).await,
        "opened by the update"
    );
    assert!(
        reaches(&ca, &other_host, 18080).await,
        "any port of the other host"
    );
    let record: Value = serde_json::from_str(&env.record(&a).await["egress"]).expect("egress");
    assert_eq!(
        record,
        json!([format!("{allowed_host}:18081"), format!("{other_host}:*")])
    );

    // A manager restart leaves every rule in place, and they hold while none runs.
    env.restart_manager_with(|| async {
        assert!(
            refused(&ca, &allowed_host, 18080).await,
            "while no manager runs"
        );
    })
    .await;
    assert!(
        refused(&ca, &allowed_host, 18080).await,
        "after the restart"
    );
    assert!(
        reaches(&ca, &allowed_host, 18081).await,
        "after the restart"
    );

    // A deleted agent's rules go; the other's stay.
    assert!(agent_chain_exists(&env, &b));
    let mid = env.command("agent.delete", &b, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert!(
        !agent_chain_exists(&env, &b),
        "a deleted agent's chain is removed"
    );
    assert!(agent_chain_exists(&env, &a));
    drop(bystander);
    drop(outside);
    env.finish().await;
}
