//! Credentials in RABBITMQ_URL, REDIS_URL and the agents' URLs, and each agent's own
//! password (contract section 7), never appear in the manager's logs (captured here),
//! events, Redis records, start-up errors or the binary's output (`config`, `agents
//! list|show|events`); agents get their own credentials, never the manager's nor the
//! configured agents' ones.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_manager::Manager;
use common::{TestEnv, DEADLINE};
use serde_json::json;

/// Everything every test in this binary logs, through one global subscriber.
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture(Arc::new(Mutex::new(Vec::new())));
        let writer = capture.clone();
        // Our code at its most verbose; the libraries at debug.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,agent_manager=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        capture
    })
    .clone()
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().0.lock().unwrap()).to_string()
}

/// Every value under the test's Redis prefix, as text.
async fn dump_redis(env: &TestEnv) -> String {
    let keys: Vec<String> = env
        .redis_query(redis::cmd("KEYS").arg(format!("{}*", env.config.redis.prefix)))
        .await;
    let mut out = String::new();
    for key in keys {
        let kind: String = env.redis_query(redis::cmd("TYPE").arg(&key)).await;
        let value = match kind.as_str() {
            "hash" => format!(
                "{:?}",
                env.redis_query::<Vec<String>>(redis::cmd("HGETALL").arg(&key))
                    .await
            ),
            "set" => format!(
                "{:?}",
                env.redis_query::<Vec<String>>(redis::cmd("SMEMBERS").arg(&key))
                    .await
            ),
            "string" => env.redis_query::<String>(redis::cmd("GET").arg(&key)).await,
            "stream" => format!(
                "{:?}",
                env.redis_query::<Vec<(String, Vec<(String, String)>)>>(
                    redis::cmd("XRANGE").arg(&key).arg("-").arg("+")
                )
                .await
            ),
            other => format!("<{other}>"),
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

#[actix_rt::test]
async fn credentials_never_reach_logs_events_or_records() {
    let _ = captured_logs();
    let nonce = || uuid::Uuid::new_v4().simple().to_string();
    let redis_secret = format!("pw1-{}", nonce());
    let agent_mq_secret = format!("pw2-{}", nonce());
    let agent_redis_secret = format!("pw3-{}", nonce());
    // A secret an agent prints in its log (its command's config carries it, so only the
    // config field of its record may hold it).
    let log_secret = format!("pw4-{}", nonce());
    // The default Redis user has no password, so any password is accepted: the URL
    // carries a secret the manager must keep to itself.
    let redis_url = format!("redis://default:{redis_secret}@127.0.0.1:6379/0");
    let agent_mq = format!("amqp://agent:{agent_mq_secret}@127.0.0.1:5672/%2f");
    let agent_redis = format!("redis://agent:{agent_redis_secret}@127.0.0.1:6379/0");
    let env = TestEnv::start(&[
        ("REDIS_URL", redis_url.as_str()),
        ("AGENT_RABBITMQ_URL", agent_mq.as_str()),
        ("AGENT_REDIS_URL", agent_redis.as_str()),
        ("RESTART_BACKOFF_BASE_MS", "100"),
        ("RESTART_BACKOFF_MAX_MS", "200"),
        ("CRASH_LOOP_MAX_RESTARTS", "2"),
    ])
    .await;

    // A normal agent; one that prints its broker URL and crashes (its log lines go into
    // events and the record); refused commands of each kind.
    let calm = env.agent_id("calm");
    env.create_running(&calm).await;
    let leaky = env.agent_id("leaky");
    let mut body = env.create_body(&leaky);
    body["config"] = json!({
        "log_secret": format!("amqp://agent:{log_secret}@mq:5672/%2f"),
        "exit_after_ms": 300,
        "exit_code": 3,
    });
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.started").await;
    let id = leaky.clone();
    env.wait_event("the leaky agent's crash loop", DEADLINE, move |e| {
        e.agent_id == id && e.details["code"] == "crash_loop"
    })
    .await;
    let mid = env
        .send(
            "agent.stop",
            json!({"agent_id": calm, "customer_id": "intruder"}),
        )
        .await;
    env.error_code(&mid).await;
    let mid = env
        .send(
            "agent.create",
            json!({"customer_id": env.customer(), "agent_type": "x"}),
        )
        .await;
    env.error_code(&mid).await;
    let mut body = env.create_body(&env.agent_id("noimage"));
    body["image"] = json!("autogen-agent:does-not-exist");
    let mid = env.send("agent.create", body).await;
    env.error_code(&mid).await;
    let mid = env.command("agent.restart", &calm, json!({})).await;
    env.answer(&mid, "agent.restarted").await;

    // Agents get credentials of their own: the configured agents' URLs give only the
    // host, port and vhost or database.
    let mut agent_passwords = Vec::new();
    for id in [&calm, &leaky] {
        let c = env.inspect(id).await.unwrap();
        let vars = c.config.unwrap().env.unwrap_or_default();
        let var = |name: &str| {
            vars.iter()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_string()
        };
        let (mq, redis) = (var("RABBITMQ_URL"), var("REDIS_URL"));
        let own = agent_manager::credentials::own_password(id, &mq, &redis)
            .expect("the agent's own login");
        assert!(
            mq.ends_with("@127.0.0.1:5672/%2f"),
            "{}",
            agent_manager::redact::url(&mq)
        );
        assert!(redis.ends_with("@127.0.0.1:6379/0"));
        for secret in [&redis_secret, &agent_mq_secret, &agent_redis_secret] {
            assert!(vars.iter().all(|v| !v.contains(secret.as_str())));
        }
        agent_passwords.push(own.expose().to_string());
    }

    let events = serde_json::to_string(&env.all_events()).unwrap();
    let leaked_logs = env
        .all_events()
        .iter()
        .any(|e| e.details["logs"].to_string().contains("password=***"));
    assert!(
        leaked_logs,
        "the crash's log lines reached events, redacted"
    );
    let records = dump_redis(&env).await;
    assert!(records.contains("password=***"), "and the record");
    let logs = logs_text();
    assert!(logs.contains(&calm), "logs were captured");
    // The operator's commands print records and events, never a password.
    let cli = cli_output(&env, &[&calm, &leaky]);
    assert!(cli.contains(&calm), "the CLI ran: {cli}");
    for secret in
        agent_passwords
            .iter()
            .chain([&redis_secret, &agent_mq_secret, &agent_redis_secret])
    {
        assert!(
            !cli.contains(secret.as_str()),
            "a password in the CLI's output"
        );
    }
    // Redis and RabbitMQ themselves only hold hashes of the agents' passwords.
    let acl: Vec<String> = env.redis_query(redis::cmd("ACL").arg("LIST")).await;
    for password in &agent_passwords {
        assert!(
            !events.contains(password.as_str()),
            "an agent's password in events"
        );
        assert!(
            !records.contains(password.as_str()),
            "an agent's password in Redis"
        );
        assert!(
            !logs.contains(password.as_str()),
            "an agent's password in logs"
        );
        assert!(
            !acl.iter().any(|l| l.contains(password.as_str())),
            "in Redis' ACLs"
        );
    }
    for secret in [&redis_secret, &agent_mq_secret, &agent_redis_secret] {
        assert!(!events.contains(secret.as_str()), "{secret} in events");
        assert!(!records.contains(secret.as_str()), "{secret} in Redis");
        assert!(!logs.contains(secret.as_str()), "{secret} in logs");
    }
    assert!(!events.contains(&log_secret), "a logged secret in events");
    assert!(
        !logs.contains(&log_secret),
        "a logged secret in the manager's logs"
    );
    let mut record = env.record(&leaky).await;
    assert!(record["last_logs"].contains("password=***"), "{record:?}");
    record.remove("config");
    assert!(!format!("{record:?}").contains(&log_secret), "{record:?}");
    env.finish().await;
    assert!(!logs_text().contains(&redis_secret));
}

/// Everything the operator's commands print about `agents` (stdout and stderr).
fn cli_output(env: &TestEnv, agents: &[&String]) -> String {
    let bin = env!("CARGO_BIN_EXE_agent-manager");
    let vars = common::test_env_vars(&env.id, &[]);
    let mut out = String::new();
    let mut runs: Vec<Vec<String>> = vec![
        vec!["config".into()],
        vec!["agents".into(), "list".into(), "-o".into(), "json".into()],
        vec!["agents".into(), "list".into()],
    ];
    for id in agents {
        for args in [
            vec!["agents", "show", id.as_str(), "-o", "json"],
            vec!["agents", "show", id.as_str()],
            vec!["agents", "events", id.as_str(), "-n", "100", "-o", "json"],
            vec!["agents", "logs", id.as_str(), "--tail", "50"],
        ] {
            runs.push(args.into_iter().map(str::to_string).collect());
        }
    }
    for args in runs {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(&args).env_remove("AGENT_MANAGER_CONFIG");
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let done = common::run_bounded(cmd, Duration::from_secs(60), &args.join(" "));
        out.push_str(&done.stdout);
        out.push_str(&done.stderr);
    }
    out
}

#[actix_rt::test]
async fn start_up_errors_hide_credentials() {
    let _ = captured_logs();
    let secret = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    for (var, url) in [
        (
            "REDIS_URL",
            format!("redis://default:{secret}@127.0.0.1:1/0"),
        ),
        (
            "RABBITMQ_URL",
            format!("amqp://guest:{secret}@127.0.0.1:1/%2f"),
        ),
        // Reachable, wrong password.
        (
            "RABBITMQ_URL",
            format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"),
        ),
    ] {
        let config = common::test_config(
            &id,
            &[
                (var, url.as_str()),
                ("REDIS_TIMEOUT_MS", "500"),
                ("RABBITMQ_TIMEOUT_S", "3"),
            ],
        );
        let err = match tokio::time::timeout(Duration::from_secs(30), Manager::start(config)).await
        {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("{var}={url} started"),
            Err(_) => panic!("start with {var} did not fail within 30 s"),
        };
        assert!(!err.contains(&secret), "{err}");
        assert!(err.contains("***"), "the URL is shown redacted: {err}");
    }
    assert!(!logs_text().contains(&secret));
}

#[test]
fn the_binary_never_prints_credentials() {
    let secret = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let bin = env!("CARGO_BIN_EXE_agent-manager");
    let run = |args: &[&str], vars: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args).env_remove("AGENT_MANAGER_CONFIG");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run agent-manager");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let urls = [
        (
            "RABBITMQ_URL",
            format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"),
        ),
        (
            "REDIS_URL",
            format!("redis://default:{secret}@127.0.0.1:6379/0"),
        ),
        (
            "AGENT_RABBITMQ_URL",
            format!("amqp://a:{secret}@mq:5672/%2f"),
        ),
        ("AGENT_REDIS_URL", format!("redis://a:{secret}@r:6379/0")),
    ];
    let (code, out) = run(&["config"], &urls);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("***") && !out.contains(&secret), "{out}");
    // A bad URL is named, redacted.
    let (code, out) = run(
        &["config"],
        &[("RABBITMQ_URL", format!("http://guest:{secret}@x/"))],
    );
    assert_eq!(code, Some(2));
    assert!(
        out.contains("RABBITMQ_URL") && !out.contains(&secret),
        "{out}"
    );
    // Secrets from files (Docker and Swarm secrets): read, and shown redacted.
    let dir = std::env::temp_dir().join(format!("am-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("redis_url");
    std::fs::write(
        &file,
        format!("redis://default:{secret}@127.0.0.1:6380/0\n"),
    )
    .expect("write");
    let (code, out) = run(
        &["config"],
        &[("REDIS_URL_FILE", file.display().to_string())],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("redis://default:***@127.0.0.1:6380/0"),
        "{out}"
    );
    assert!(!out.contains(&secret), "{out}");
    // The daemon failing to reach Redis logs and prints the URL redacted.
    let (code, out) = run(
        &["run"],
        &[
            (
                "REDIS_URL",
                format!("redis://default:{secret}@127.0.0.1:1/0"),
            ),
            ("REDIS_TIMEOUT_MS", "300".into()),
            ("RUST_LOG", "trace".into()),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("***") && !out.contains(&secret), "{out}");
}
