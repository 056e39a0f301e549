//! The admin endpoint of a running manager: liveness, readiness and Prometheus
//! metrics that move with real commands; the status page's data and its token; the
//! alert rules and the dashboard in deploy/ (promtool, and the series they name served).

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
    // What the alert rules and the dashboard ask for is what the manager serves.
    let served = served_names(&text);
    for (file, exprs) in [
        (RULES, rule_exprs()),
        (
            DASHBOARD,
            dashboard_exprs().into_iter().map(|(_, e)| e).collect(),
        ),
    ] {
        for expr in exprs {
            for name in metric_names(&expr) {
                assert!(
                    served.contains(&name),
                    "{file} asks for {name}, which /metrics does not serve (in {expr})"
                );
            }
        }
    }

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

const RULES: &str = "deploy/prometheus/agent-manager.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/agent-manager.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/agent-manager.json";

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool ARGS` (Debian's `prometheus` package): (exit code, output).
fn promtool(args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("exec promtool \"$@\"")
        .arg("sh")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = common::run_bounded(cmd, common::DEADLINE, "promtool");
    assert_ne!(
        out.code, 127,
        "no promtool (package prometheus): run `bash scripts/services.sh`"
    );
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// Every metric name a scrape serves: its samples', and each histogram's `_bucket`,
/// `_sum` and `_count` (a `# TYPE` line is there even before the first sample).
fn served_names(text: &str) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_string());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The manager's metric names in a PromQL expression (`up` and functions are not).
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(?:agent_manager|container|process)_[a-z_]+").expect("regex");
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// The alert rules' expressions.
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file(RULES)).expect("the rules file");
    let rules: serde_json::Value = serde_norway::from_str(&text).expect("the rules are YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

/// Every query of the dashboard: (panel title, expression with the dashboard's
/// variables given values, as Grafana would).
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file(DASHBOARD)).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("a target's expr")
                .replace("$job", "agent-manager")
                .replace("$instance", ".*")
                .replace("$customer", ".*")
                .replace("$agent", ".*");
            exprs.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    exprs
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (code, out) = promtool(&["check", "rules", RULES]);
    assert_eq!(code, 0, "promtool check rules {RULES}:\n{out}");
    let (code, out) = promtool(&["test", "rules", RULE_TESTS]);
    assert_eq!(code, 0, "promtool test rules {RULE_TESTS}:\n{out}");
    // Every alert the rules hold is exercised by the unit tests.
    let tests = std::fs::read_to_string(repo_file(RULE_TESTS)).expect("the rule tests");
    let rules = std::fs::read_to_string(repo_file(RULES)).expect("the rules");
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {alert}")),
                "{RULE_TESTS} does not test {alert}"
            );
        }
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses the expressions of a rules file: the dashboard's, as recording rules.
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(expr).expect("a string")
        ));
    }
    let file = std::env::temp_dir().join(format!(
        "agent-manager-dashboard-{}.rules.yml",
        std::process::id()
    ));
    std::fs::write(&file, &rules).expect("write the rules");
    let (code, out) = promtool(&["check", "rules", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{DASHBOARD}'s queries:\n{out}\n{rules}");
}

const TOKEN: &str = "status-page-test-token-0123456789";

/// GET `path` from the admin endpoint at `addr` with `headers`: (status, head, body).
async fn fetch(
    addr: std::net::SocketAddr,
    path: String,
    headers: Vec<String>,
) -> (u16, String, String) {
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    common::http_get_with(addr, &path, &headers, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[actix_rt::test]
async fn the_status_page_and_its_data_ask_for_the_token_and_never_show_secrets() {
    let env = TestEnv::start(&[("ADMIN_TOKEN", TOKEN)]).await;
    let addr = env.admin_addr();
    let get = |path: String, headers: Vec<String>| fetch(addr, path, headers);
    // Probes stay open; everything else asks for the token.
    assert_eq!(get("/healthz".into(), vec![]).await.0, 200);
    assert_eq!(get("/readyz".into(), vec![]).await.0, 200);
    for path in ["/", "/status.js", "/metrics", "/api/agents"] {
        let (status, head, _) = get(path.into(), vec![]).await;
        assert_eq!(status, 401, "{path} without the token");
        assert!(
            head.to_lowercase().contains("www-authenticate: bearer"),
            "{head}"
        );
        let wrong = vec!["Authorization: Bearer not-the-token-at-all".to_string()];
        assert_eq!(
            get(path.into(), wrong).await.0,
            401,
            "{path} with another token"
        );
    }
    assert_eq!(
        get("/?token=not-the-token-at-all".into(), vec![]).await.0,
        401
    );
    // A browser: the token in the address once, then a cookie.
    let (status, head, _) = get(format!("/?token={TOKEN}"), vec![]).await;
    assert_eq!(status, 303, "{head}");
    let lower = head.to_lowercase();
    assert!(lower.contains("location: /\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "set-cookie: agent_manager_token={}",
            TOKEN.to_lowercase()
        )) && lower.contains("httponly")
            && lower.contains("samesite=strict"),
        "{head}"
    );
    let cookie = vec![format!("Cookie: agent_manager_token={TOKEN}")];
    let (status, head, page) = get("/".into(), cookie.clone()).await;
    assert_eq!(status, 200, "{head}");
    assert!(page.contains("<script src=\"/status.js\""), "{page}");
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert_eq!(get("/status.js".into(), cookie.clone()).await.0, 200);
    let bearer = vec![format!("Authorization: Bearer {TOKEN}")];
    assert_eq!(get("/metrics".into(), bearer.clone()).await.0, 200);

    // An agent whose config carries a secret; the page's data never shows it.
    let id = env.agent_id("paged");
    let secret = "sk-status-page-secret-4242";
    let mut body = env.create_body(&id);
    body["config"] = serde_json::json!({"api_key": secret});
    body["autogen_config"] = serde_json::json!({"llm": {"api_key": secret}});
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;

    let list_path = format!("/api/agents?customer={}", env.customer());
    let (status, _, list) = get(list_path.clone(), bearer.clone()).await;
    assert_eq!(status, 200, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list["ready"], true, "{list}");
    let agents = list["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{list}");
    assert_eq!(agents[0]["agent_id"], id.as_str());
    assert_eq!(agents[0]["status"], "running");
    assert_eq!(agents[0]["image"], common::agent_image());
    assert!(list["customers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == env.customer().as_str())));
    let (_, _, none) = get(format!("{list_path}&status=stopped"), bearer.clone()).await;
    assert!(none.contains("\"agents\":[]"), "filtered by status: {none}");

    // Its last hour fills from the samples the manager takes (every second here).
    let detail_path = format!("/api/agents/{id}");
    let until = std::time::Instant::now() + common::DEADLINE;
    let detail = loop {
        let (status, _, body) = get(detail_path.clone(), bearer.clone()).await;
        assert_eq!(status, 200, "{body}");
        let detail: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if detail["points"].as_array().is_some_and(|p| p.len() >= 2) {
            break body;
        }
        assert!(
            std::time::Instant::now() < until,
            "fewer than 2 samples of {id} within {:?}: {body}",
            common::DEADLINE
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let parsed: serde_json::Value = serde_json::from_str(&detail).expect("JSON");
    let point = &parsed["points"][0];
    assert!(point[2].as_u64().is_some_and(|m| m > 0), "memory: {detail}");
    assert!(
        parsed["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == "agent.started")),
        "{detail}"
    );
    let (status, _, _) = get("/api/agents/no-such-agent".into(), bearer.clone()).await;
    assert_eq!(status, 404);
    // Only agent ids: not another of the agent's keys.
    let (status, _, body) = get(format!("{detail_path}:events"), bearer.clone()).await;
    assert_eq!(status, 404, "{body}");
    for shown in [&detail, &serde_json::to_string(&list).expect("JSON")] {
        assert!(
            !shown.contains(secret),
            "a secret on the status page: {shown}"
        );
        assert!(
            !shown.contains("RABBITMQ_URL") && !shown.contains("redis://"),
            "{shown}"
        );
    }
    env.finish().await;
}

/// `agent-manager check --ready --quiet --timeout-s 2` (the image's HEALTHCHECK) with
/// `ADMIN_LISTEN=listen`.
fn check_ready(listen: &str) -> common::CommandOut {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-manager"));
    cmd.args(["check", "--ready", "--quiet", "--timeout-s", "2"])
        .env("ADMIN_LISTEN", listen)
        .env_remove("ADMIN_TOKEN");
    common::run_bounded(cmd, common::DEADLINE, "agent-manager check --ready")
}

#[actix_rt::test]
async fn the_health_check_asks_the_managers_own_readyz_and_fails_a_hung_one() {
    let env = TestEnv::start(&[]).await;
    // Ready: exit 0, nothing printed (--quiet). An address on every interface is asked
    // on loopback, as in the image.
    let port = env.admin_addr().port();
    for listen in [env.admin_addr().to_string(), format!("0.0.0.0:{port}")] {
        let out = tokio::task::spawn_blocking(move || check_ready(&listen))
            .await
            .expect("check");
        assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:#?}");
    }
    // Nothing listening: exit 1, and it says so.
    let nobody = format!("127.0.0.1:{}", common::free_port());
    let out = tokio::task::spawn_blocking(move || check_ready(&nobody))
        .await
        .expect("check");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("not running"), "{out:#?}");
    // Hung: a listener that takes the connection and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let listen = hung.local_addr().expect("its address").to_string();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || check_ready(&listen))
        .await
        .expect("check");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("no answer within 2 s"), "{out:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(hung);
    env.finish().await;
}

/// POST `body` to `path` at `addr` with `headers`: (status, head, body).
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[String],
    body: &str,
) -> (u16, String, String) {
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    common::http_request(
        addr,
        "POST",
        path,
        &headers,
        Some(body),
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// The headers of a write as the status page sends it, with `token`.
fn write_headers(token: &str) -> Vec<String> {
    vec![
        format!("Authorization: Bearer {token}"),
        "Content-Type: application/json".to_string(),
        "X-Agent-Manager: 1".to_string(),
    ]
}

#[actix_rt::test]
async fn without_an_admin_token_the_page_reads_but_every_write_is_refused_403() {
    let env = TestEnv::start(&[]).await;
    let addr = env.admin_addr();
    let (status, list) = env.admin_get("/api/agents").await;
    assert_eq!(status, 200, "reads stay open: {list}");
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list["writes"], false, "{list}");
    let engage = format!(
        r#"{{"scope": {{"customer_id": "{}"}}, "reason": "test"}}"#,
        env.customer()
    );
    for path in ["/api/halts", "/api/halts/some-halt/release"] {
        let (status, _, body) = post(addr, path, &write_headers("anything"), &engage).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("set ADMIN_TOKEN to allow writes from the status page"),
            "{path}: {body}"
        );
    }
    let halts: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("halts")))
        .await;
    assert!(halts.is_empty(), "nothing engaged: {halts:?}");
    env.finish().await;
}

#[actix_rt::test]
async fn a_halt_write_needs_the_token_json_and_the_page_header_and_goes_through_the_broker() {
    let env = TestEnv::start(&[("ADMIN_TOKEN", TOKEN)]).await;
    let addr = env.admin_addr();
    let customer = env.customer();
    let engage = format!(
        r#"{{"scope": {{"customer_id": "{customer}"}}, "reason": "admin write test", "requested_by": "ops-test"}}"#
    );
    let ok = write_headers(TOKEN);
    let without = |name: &str| -> Vec<String> {
        ok.iter()
            .filter(|h| !h.to_lowercase().starts_with(&name.to_lowercase()))
            .cloned()
            .collect()
    };
    // The token: missing or another, 401.
    let (status, head, body) = post(addr, "/api/halts", &without("Authorization"), &engage).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, body) =
        post(addr, "/api/halts", &write_headers("not-the-token"), &engage).await;
    assert_eq!(status, 401, "{body}");
    // What a cross-site form or script cannot send: refused.
    let mut form = without("Content-Type");
    form.push("Content-Type: application/x-www-form-urlencoded".into());
    let (status, _, body) = post(addr, "/api/halts", &form, &engage).await;
    assert_eq!(status, 415, "{body}");
    let (status, _, body) = post(addr, "/api/halts", &without("Content-Type"), &engage).await;
    assert_eq!(status, 415, "{body}");
    let (status, _, body) = post(addr, "/api/halts", &without("X-Agent-Manager"), &engage).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("x-agent-manager: 1"), "{body}");
    let mut elsewhere = ok.clone();
    elsewhere.push("Origin: https://evil.example".into());
    let (status, _, body) = post(addr, "/api/halts", &elsewhere, &engage).await;
    assert_eq!(status, 403, "{body}");
    let halts: Vec<String> = env
        .redis_query(redis::cmd("SMEMBERS").arg(env.key("halts")))
        .await;
    assert!(
        halts.is_empty(),
        "nothing engaged by a refused write: {halts:?}"
    );

    // What the body must say: a reason, a scope the decoder takes, known agents, the
    // scope's own customer.
    let (status, _, body) = post(addr, "/api/halts", &ok, r#"{"scope": {"platform": true}}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = post(
        addr,
        "/api/halts",
        &ok,
        r#"{"scope": {"platform": true}, "reason": "  "}"#,
    )
    .await;
    assert!(
        status == 400 && body.contains("reason is required"),
        "{body}"
    );
    let (status, _, body) = post(
        addr,
        "/api/halts",
        &ok,
        r#"{"scope": {"agent_ids": ["no-such-agent-here"]}, "reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let foreign = format!(
        r#"{{"scope": {{"customer_id": "{customer}"}}, "customer_id": "someone-else", "reason": "r"}}"#
    );
    let (status, _, body) = post(addr, "/api/halts", &ok, &foreign).await;
    assert_eq!(status, 400, "{body}");

    // A valid write: halt.engage over the broker, answered halt.engaged, recorded with
    // its audit entry, shown on the page; then released the same way.
    let (status, _, body) = post(addr, "/api/halts", &ok, &engage).await;
    assert_eq!(status, 200, "{body}");
    let engaged: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(engaged["answer"], "halt.engaged", "{engaged}");
    assert_eq!(engaged["customer_id"], customer.as_str(), "{engaged}");
    let halt_id = engaged["halt_id"].as_str().expect("halt_id").to_string();
    assert!(
        engaged["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("halt.engaged {halt_id}"))),
        "{engaged}"
    );
    let halt = env.hash(&format!("halt:{halt_id}")).await;
    assert_eq!(
        halt.get("requested_by").map(String::as_str),
        Some("ops-test")
    );
    assert_eq!(
        halt.get("reason").map(String::as_str),
        Some("admin write test")
    );
    assert_eq!(halt.get("customer_id"), Some(&customer));
    assert!(
        env.all_events()
            .iter()
            .any(|e| e.halt_id.as_deref() == Some(halt_id.as_str())
                && e.routing_key() == "halt.engaged"),
        "halt.engaged published on the exchange"
    );
    let bearer = vec![format!("Authorization: Bearer {TOKEN}")];
    let (_, _, list) = fetch(addr, "/api/agents".into(), bearer.clone()).await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list["writes"], true, "{list}");
    let shown = list["halts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["halt_id"] == halt_id.as_str()))
        .unwrap_or_else(|| panic!("the halt on the page: {list}"));
    assert_eq!(shown["scope"], format!("customer {customer}"));
    assert_eq!(shown["requested_by"], "ops-test");
    assert_eq!(shown["automatic"], false);

    let (status, _, body) = post(
        addr,
        "/api/halts/no-such-halt/release",
        &ok,
        r#"{"reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let release = format!("/api/halts/{halt_id}/release");
    let (status, _, body) = post(
        addr,
        &release,
        &without("X-Agent-Manager"),
        r#"{"reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = post(addr, &release, &ok, r#"{"reason": "over"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"answer\":\"halt.released\""), "{body}");
    assert!(env.hash(&format!("halt:{halt_id}")).await.is_empty());
    let trail: Vec<(String, Vec<(String, String)>)> = env
        .redis_query(
            redis::cmd("XRANGE")
                .arg(env.key("halts:events"))
                .arg("-")
                .arg("+"),
        )
        .await;
    let kinds: Vec<&str> = trail
        .iter()
        .filter(|(_, f)| f.contains(&("halt_id".to_string(), halt_id.clone())))
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "kind").map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(kinds, ["engaged", "released"], "{trail:?}");
    env.finish().await;
}
