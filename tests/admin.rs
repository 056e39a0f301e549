//! The admin endpoint of a running manager: liveness, readiness and Prometheus
//! metrics that move with real commands.

mod common;

use common::TestEnv;

#[actix_rt::test]
async fn healthz_readyz_and_metrics_follow_real_work() {
    let env = TestEnv::start(&[]).await;
    let (status, body) = env.admin_get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let (status, body) = env.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["rabbitmq_consuming"], true);
    assert_eq!(ready["checks"]["redis_and_docker"], true);

    let id = env.agent_id("metered");
    env.create_running(&id).await;
    let mid = env.command("agent.stop", &id, serde_json::json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let mid = env
        .command("agent.stop", "no-such-agent-x", serde_json::json!({}))
        .await;
    env.error_code(&mid).await;

    let (status, text) = env.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE agent_manager_commands_total counter",
        "agent_manager_commands_total{command=\"agent.create\",outcome=\"ok\"}",
        "agent_manager_commands_total{command=\"agent.stop\",outcome=\"not_found\"}",
        "agent_manager_command_duration_seconds_bucket{command=\"agent.create\",le=\"+Inf\"}",
        "agent_manager_events_published_total{event=\"agent.started\"}",
        "agent_manager_docker_call_duration_seconds_count{op=\"create container\"}",
        "agent_manager_agents{status=\"stopped\",type=\"trading\"} 1",
        "agent_manager_ready 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let (status, _) = env.admin_get("/nope").await;
    assert_eq!(status, 404);
    env.finish().await;
}

/// `promtool check metrics` on `text` (Debian's `prometheus` package, which
/// `scripts/services.sh` installs): its complaints, empty when none.
fn promtool_complaints(text: &str, name: &str) -> String {
    let file = std::env::temp_dir().join(format!("agent-manager-metrics-{name}.txt"));
    std::fs::write(&file, text).expect("write the scrape");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("promtool check metrics < \"$1\"")
        .arg("sh")
        .arg(&file);
    let out = common::run_bounded(cmd, common::DEADLINE, "promtool check metrics");
    let _ = std::fs::remove_file(&file);
    assert_ne!(
        out.code, 127,
        "no promtool (package prometheus): run `bash scripts/services.sh`"
    );
    format!("{}{}", out.stdout, out.stderr).trim().to_string()
}

#[actix_rt::test]
async fn per_agent_series_come_and_go_with_the_agent_and_pass_promtool() {
    let env = TestEnv::start(&[("QUOTA_MAX_AGENTS", "5")]).await;
    let id = env.agent_id("per-agent");
    env.create_running(&id).await;
    let agent = format!("agent=\"{id}\"");

    // The first usage sample comes within a check interval or two.
    let until = std::time::Instant::now() + common::DEADLINE;
    let text = loop {
        let (_, body) = env.admin_get("/metrics").await;
        let sampled = body
            .lines()
            .any(|l| l.starts_with("container_memory_working_set_bytes{") && l.contains(&agent));
        if sampled {
            break body;
        }
        assert!(
            std::time::Instant::now() < until,
            "no usage sample of {id} within {:?}:\n{body}",
            common::DEADLINE
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for needle in [
        format!(
            "agent_manager_agent_info{{agent=\"{id}\",customer=\"{}\",type=\"trading\",image=\"{}\"}} 1",
            env.customer(),
            common::agent_image()
        ),
        format!("agent_manager_agent_status{{{agent},status=\"running\"}} 1"),
        format!("agent_manager_agent_restarts_total{{{agent}}} 0"),
        format!("container_spec_memory_limit_bytes{{{agent},name=\"agent-{id}\"}} 67108864"),
        format!(
            "agent_manager_customer_resourcequota{{customer=\"{}\",resource=\"agents\",type=\"hard\"}} 5",
            env.customer()
        ),
        "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        "# TYPE process_resident_memory_bytes gauge".to_string(),
        "agent_manager_build_info{".to_string(),
    ] {
        assert!(text.contains(&needle), "metrics lack {needle}:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("agent_manager_agent_health{") && l.contains(&agent)),
        "{text}"
    );
    assert_eq!(promtool_complaints(&text, &id), "", "promtool on:\n{text}");

    // Deleted: every series naming the agent goes.
    let mid = env
        .command("agent.delete", &id, serde_json::json!({}))
        .await;
    env.answer(&mid, "agent.deleted").await;
    let (_, text) = env.admin_get("/metrics").await;
    let left: Vec<&str> = text.lines().filter(|l| l.contains(&agent)).collect();
    assert!(left.is_empty(), "series of a deleted agent: {left:#?}");
    env.finish().await;
}

/// A Prometheus server (Debian's `prometheus`) scraping one target every second, with
/// its own port and data folder, killed and removed in Drop.
struct PrometheusServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl PrometheusServer {
    fn start(target: std::net::SocketAddr, name: &str) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!("agent-manager-prometheus-{name}"));
        std::fs::create_dir_all(&dir).expect("prometheus folder");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent-manager\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .expect("an address");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (package prometheus: run `bash scripts/services.sh`)");
        PrometheusServer { child, dir, addr }
    }

    /// Waits until the instant query `query` (URL-encoded) returns a result whose text
    /// holds `needle`.
    async fn wait_for(&self, query: &str, needle: &str) -> String {
        let until = std::time::Instant::now() + common::DEADLINE;
        let path = format!("/api/v1/query?query={query}");
        loop {
            let got = common::http_get(self.addr, &path, std::time::Duration::from_secs(2)).await;
            if let Ok((200, body)) = &got {
                if body.contains(needle) {
                    return body.clone();
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "Prometheus has no {needle} for {query} within {:?}: {got:?}",
                common::DEADLINE
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_rt::test]
async fn a_real_prometheus_scrapes_the_per_agent_series() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("scraped");
    env.create_running(&id).await;
    let prometheus = PrometheusServer::start(env.admin_addr(), &env.id);
    let agent = format!("\"agent\":\"{id}\"");
    let info = prometheus
        .wait_for("agent_manager_agent_info", &agent)
        .await;
    assert!(
        info.contains(&format!("\"customer\":\"{}\"", env.customer())),
        "{info}"
    );
    prometheus
        .wait_for("container_memory_working_set_bytes", &agent)
        .await;
    prometheus.wait_for("up", "\"job\":\"agent-manager\"").await;
    drop(prometheus);
    env.finish().await;
}
