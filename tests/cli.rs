//! The operator's CLI as a user runs it: the built binary, its configuration from the
//! environment (`config::ENV_VARS` names), against Redis records, event streams and
//! containers made by a real manager (the harness's, in-process) from commands sent
//! through RabbitMQ.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_manager::Config;
use common::{run_bounded, CommandOut as Out, TestEnv, DEADLINE};
use serde_json::{json, Value};

/// Bound on one CLI run that should end by itself.
const CLI_DEADLINE: Duration = Duration::from_secs(30);
const START_HINT: &str = "start the services with `bash scripts/services.sh`";

/// The CLI with `args`, configured for `config` plus `overrides` (and nothing from the
/// developer's environment that would change its configuration), its output piped.
fn command(config: &Config, args: &[&str], overrides: &[(&str, &str)]) -> Command {
    let mut cmd = common::cli_command(config, args, overrides);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the CLI to its end (bounded), off the test's async thread so that the manager
/// keeps working meanwhile.
async fn cli(config: &Config, args: &[&str], overrides: &[(&str, &str)]) -> Out {
    let cmd = command(config, args, overrides);
    let what = args.join(" ");
    tokio::task::spawn_blocking(move || {
        run_bounded(cmd, CLI_DEADLINE, &format!("agent-manager {what}"))
    })
    .await
    .expect("cli thread")
}

/// A CLI run that keeps going (`--follow`): its stdout line by line; killed in Drop.
struct Follow {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Follow {
    fn spawn(config: &Config, args: &[&str]) -> Follow {
        let mut child = command(config, args, &[])
            .spawn()
            .expect("spawn agent-manager");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(until, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "output ended before a line with {needle:?}: {:#?}",
                    self.seen
                ),
                Err(_) => panic!(
                    "no line with {needle:?} within {DEADLINE:?}: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the process to end by itself; its exit code.
    async fn exit_code(&mut self) -> i32 {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "still running after {DEADLINE:?}; output: {:#?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_of(out: &Out) -> Value {
    assert_eq!(out.code, 0, "{out:#?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:#?}"))
}

fn ids_of(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("an array of records")
        .iter()
        .map(|r| r["agent_id"].as_str().expect("agent_id").to_string())
        .collect();
    ids.sort();
    ids
}

#[actix_rt::test]
async fn agents_list_show_events_and_logs_read_the_real_state() {
    let env = TestEnv::start(&[]).await;
    let cfg = env.config.clone();
    let running = env.agent_id("cli-run");
    let idle = env.agent_id("cli-idle");
    let foreign = env.agent_id("cli-other");
    let other_customer = format!("other-{}", env.id);

    env.create_running(&running).await;
    let mut body = env.create_body(&idle);
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;
    let mut body = env.create_body(&foreign);
    body["customer_id"] = json!(other_customer);
    body["auto_start"] = json!(false);
    let mid = env.send("agent.create", body).await;
    env.answer(&mid, "agent.created").await;

    // list: every agent of this prefix; filters by customer and status.
    let all = json_of(&cli(&cfg, &["agents", "list", "-o", "json"], &[]).await);
    let mut expected = vec![running.clone(), idle.clone(), foreign.clone()];
    expected.sort();
    assert_eq!(ids_of(&all), expected);
    let record = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent_id"] == running.as_str())
        .unwrap();
    assert_eq!(record["status"], "running");
    assert_eq!(record["customer_id"], env.customer());
    assert_eq!(record["resources"]["memory_mb"], 64, "resources decoded");
    assert_eq!(record["config"]["symbol"], "BTC-USD", "config decoded");
    assert!(record["restart_count"].is_u64(), "numbers are numbers");

    let mine = json_of(
        &cli(
            &cfg,
            &[
                "agents",
                "list",
                "--customer",
                &env.customer(),
                "-o",
                "json",
            ],
            &[],
        )
        .await,
    );
    let mut expected = vec![running.clone(), idle.clone()];
    expected.sort();
    assert_eq!(ids_of(&mine), expected);
    let theirs = json_of(
        &cli(
            &cfg,
            &[
                "agents",
                "list",
                "--customer",
                &other_customer,
                "-o",
                "json",
            ],
            &[],
        )
        .await,
    );
    assert_eq!(ids_of(&theirs), vec![foreign.clone()]);
    let up = json_of(
        &cli(
            &cfg,
            &["agents", "list", "--status", "running", "-o", "json"],
            &[],
        )
        .await,
    );
    assert_eq!(ids_of(&up), vec![running.clone()]);
    let created = json_of(
        &cli(
            &cfg,
            &["agents", "list", "--status", "created", "-o", "json"],
            &[],
        )
        .await,
    );
    let mut expected = vec![idle.clone(), foreign.clone()];
    expected.sort();
    assert_eq!(ids_of(&created), expected);
    let nobody = json_of(
        &cli(
            &cfg,
            &[
                "agents",
                "list",
                "--customer",
                "nobody-at-all",
                "-o",
                "json",
            ],
            &[],
        )
        .await,
    );
    assert_eq!(nobody, json!([]));

    // The table: a header and one line per agent, within 120 columns (not a terminal,
    // no COLUMNS), or what COLUMNS says.
    let table = cli(&cfg, &["agents", "list"], &[]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("AGENT ID"), "{}", table.stdout);
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(
        lines.iter().all(|l| l.chars().count() <= 120),
        "{}",
        table.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("running") && l.contains("trading")),
        "{}",
        table.stdout
    );
    let narrow = cli(&cfg, &["agents", "list"], &[("COLUMNS", "80")]).await;
    assert!(
        narrow.stdout.lines().all(|l| l.chars().count() <= 80),
        "{}",
        narrow.stdout
    );
    let bad = cli(&cfg, &["agents", "list", "--status", "sleepy"], &[]).await;
    assert_eq!(bad.code, 2, "unknown status is a usage error: {bad:#?}");
    assert!(bad.stderr.contains("running"), "{bad:#?}");

    // show: the whole record, as JSON and for people.
    let shown = json_of(&cli(&cfg, &["agents", "show", &running, "-o", "json"], &[]).await);
    for field in [
        "agent_id",
        "customer_id",
        "agent_type",
        "name",
        "status",
        "desired_state",
        "container_id",
        "image",
        "config",
        "autogen_config",
        "resources",
        "health",
        "created_at",
        "updated_at",
    ] {
        assert!(shown.get(field).is_some(), "show lacks {field}: {shown}");
    }
    assert_eq!(shown["desired_state"], "running");
    let text = cli(&cfg, &["agents", "show", &running], &[]).await;
    assert_eq!(text.code, 0, "{text:#?}");
    assert!(text.stdout.lines().next().unwrap().starts_with("agent_id "));
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("status") && l.ends_with("running")),
        "{}",
        text.stdout
    );

    // events: the stream holds the create's answers, oldest first.
    let events = cli(&cfg, &["agents", "events", &running, "-o", "json"], &[]).await;
    assert_eq!(events.code, 0, "{events:#?}");
    let kinds: Vec<String> = events
        .stdout
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).expect("one event per line");
            assert_eq!(e["agent_id"], running.as_str());
            e["event"].as_str().unwrap().to_string()
        })
        .collect();
    let created_at = kinds.iter().position(|k| k == "agent.created");
    let started_at = kinds.iter().position(|k| k == "agent.started");
    assert!(
        matches!((created_at, started_at), (Some(c), Some(s)) if c < s),
        "{kinds:?}"
    );
    let last_one = cli(
        &cfg,
        &["agents", "events", &running, "--count", "1", "-o", "json"],
        &[],
    )
    .await;
    assert_eq!(last_one.stdout.lines().count(), 1, "{last_one:#?}");
    let table = cli(&cfg, &["agents", "events", &running], &[]).await;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("agent.started") && l.contains("running")),
        "{table:#?}"
    );

    // logs: the agent's own output, through Docker (it prints as it starts, so wait).
    let needle = format!("agent {running}: started");
    let until = Instant::now() + DEADLINE;
    loop {
        let logs = cli(&cfg, &["agents", "logs", &running, "--tail", "5"], &[]).await;
        assert_eq!(logs.code, 0, "{logs:#?}");
        assert!(logs.stdout.lines().count() <= 5, "{logs:#?}");
        if logs.stdout.contains(&needle) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no {needle:?} in the logs: {logs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An unknown agent: exit 1 with a message, for every command that takes an id.
    let ghost = env.agent_id("ghost");
    for args in [
        vec!["agents", "show", ghost.as_str()],
        vec!["agents", "events", ghost.as_str()],
        vec!["agents", "logs", ghost.as_str()],
    ] {
        let out = cli(&cfg, &args, &[]).await;
        assert_eq!(out.code, 1, "{args:?}: {out:#?}");
        assert!(out.stderr.contains("not found") || out.stderr.contains("no container"));
        assert!(out.stdout.is_empty(), "{out:#?}");
    }
    let bad_id = cli(&cfg, &["agents", "show", "../etc"], &[]).await;
    assert_eq!(bad_id.code, 2, "{bad_id:#?}");
    env.finish().await;
}

#[actix_rt::test]
async fn events_and_logs_follow_until_the_agent_goes() {
    let env = TestEnv::start(&[]).await;
    let cfg = env.config.clone();
    let id = env.agent_id("cli-follow");
    env.create_running(&id).await;

    let mut events = Follow::spawn(&cfg, &["agents", "events", &id, "--follow"]);
    events.line_with("agent.started").await;
    let mut logs = Follow::spawn(&cfg, &["agents", "logs", &id, "--follow"]);
    logs.line_with(&format!("agent {id}: started")).await;

    // A stop shows up in the event stream, and ends the log stream with the container.
    let mid = env.command("agent.stop", &id, json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    events.line_with("agent.stopped").await;
    logs.line_with("received SIGTERM").await;
    assert_eq!(
        logs.exit_code().await,
        0,
        "logs --follow ends with the container"
    );

    // A delete removes the stream: the follower notices and ends by itself.
    let mid = env.command("agent.delete", &id, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert_eq!(
        events.exit_code().await,
        0,
        "events --follow ends at delete"
    );
    env.finish().await;
}

#[actix_rt::test]
async fn check_passes_with_everything_up_and_names_the_fix_otherwise() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let cfg = common::test_config(&id, &[]);

    let ok = cli(&cfg, &["check"], &[]).await;
    assert_eq!(
        ok.code, 0,
        "check failed with the services up? {START_HINT}\n{}{}",
        ok.stdout, ok.stderr
    );
    for name in [
        "docker", "image", "network", "agents", "rabbitmq", "redis", "logins", "egress",
    ] {
        assert!(
            ok.stdout
                .lines()
                .any(|l| l.starts_with("OK") && l.contains(name)),
            "{name}: {}",
            ok.stdout
        );
    }
    let quiet = cli(&cfg, &["check", "--quiet"], &[]).await;
    assert_eq!((quiet.code, quiet.stdout.as_str()), (0, ""), "{quiet:#?}");

    // Egress that cannot be enforced from where the manager would run fails, naming
    // the way out (a Docker host that is not this machine's socket).
    let remote = cli(
        &cfg,
        &["check"],
        &[
            ("DOCKER_HOST", "tcp://127.0.0.1:1"),
            ("EGRESS_MODE", "iptables"),
        ],
    )
    .await;
    assert!(
        remote
            .stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("egress") && l.contains("not enforced")),
        "{remote:#?}"
    );
    assert!(remote.stdout.contains("EGRESS_MODE=off"), "{remote:#?}");

    // Redis on a closed port: exit 1, the failing check named, with its fix.
    let started = Instant::now();
    let down = cli(
        &cfg,
        &["check", "--services-only"],
        &[("REDIS_URL", "redis://127.0.0.1:1/0")],
    )
    .await;
    assert_eq!(down.code, 1, "{down:#?}");
    let fail = down
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line: {down:#?}"));
    assert!(
        fail.contains("redis") && fail.contains("127.0.0.1:1"),
        "{fail}"
    );
    assert!(
        down.stdout.contains("fix: Redis is down or REDIS_URL"),
        "{down:#?}"
    );
    assert!(down.stdout.contains("1 of 3 checks failed"), "{down:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a closed port fails fast"
    );

    // A wrong password: refused, and the password printed nowhere.
    let secret = format!("s3cret-{id}");
    let refused = cli(
        &cfg,
        &["check", "--services-only", "-o", "json"],
        &[(
            "RABBITMQ_URL",
            &format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"),
        )],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(!refused.stdout.contains(&secret) && !refused.stderr.contains(&secret));
    let results: Value = serde_json::from_str(&refused.stdout).expect("JSON results");
    let rabbit = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "rabbitmq")
        .expect("rabbitmq result");
    assert_eq!(rabbit["status"], "fail");
    assert!(
        rabbit["fix"].as_str().unwrap().contains("user or password"),
        "{rabbit}"
    );

    // Missing image and network: their own fixes.
    let missing = cli(
        &cfg,
        &["check"],
        &[
            ("AGENT_IMAGE", &format!("autogen-agent:absent-{id}")),
            ("DOCKER_NETWORK", &format!("absent-{id}")),
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(
        missing
            .stdout
            .contains(&format!("fix: `docker network create absent-{id}`")),
        "{}",
        missing.stdout
    );
    assert!(
        missing.stdout.contains("scripts/services.sh"),
        "{}",
        missing.stdout
    );

    // Issue 27: a plain configuration (no AGENT_*_URL, the manager's own on loopback):
    // the agents' URLs are derived from their network's gateway where the services
    // answer, as `run` does; a service that answers on loopback only fails, naming the
    // setting.
    let gateway = common::agent_gateway().expect("autogen-network's gateway");
    let plain = [("AGENT_REDIS_URL", ""), ("AGENT_RABBITMQ_URL", "")];
    let derived = cli(&cfg, &["check"], &plain).await;
    assert_eq!(derived.code, 0, "{derived:#?}");
    let agents = derived
        .stdout
        .lines()
        .find(|l| l.starts_with("OK") && l.contains("agents"))
        .unwrap_or_else(|| panic!("no OK agents line: {derived:#?}"));
    assert!(
        agents.contains(&format!("redis://{gateway}:6379")) && agents.contains("derived"),
        "{agents}"
    );
    let loopback_only = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = loopback_only.local_addr().expect("its address").port();
    let unreachable = cli(
        &cfg,
        &["check"],
        &[
            plain[0],
            plain[1],
            ("REDIS_URL", &format!("redis://127.0.0.1:{port}/0")),
        ],
    )
    .await;
    assert_eq!(unreachable.code, 1, "{unreachable:#?}");
    let fail = unreachable
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("agents"))
        .unwrap_or_else(|| panic!("no FAIL agents line: {unreachable:#?}"));
    assert!(fail.contains(&format!("{gateway}:{port}")), "{fail}");
    assert!(
        unreachable.stdout.contains("fix: set AGENT_REDIS_URL"),
        "{}",
        unreachable.stdout
    );
    drop(loopback_only);

    // A configuration error is exit 2.
    let bad = cli(&cfg, &["check"], &[("REDIS_TIMEOUT_MS", "soon")]).await;
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("REDIS_TIMEOUT_MS"), "{bad:#?}");
}

/// A file for `-f`, removed when dropped.
struct SpecFile(std::path::PathBuf);

impl SpecFile {
    fn write(name: &str, text: &str) -> SpecFile {
        let path = std::env::temp_dir().join(format!("agent-manager-cli-{name}"));
        std::fs::write(&path, text).expect("write the spec file");
        SpecFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[actix_rt::test]
async fn the_cli_creates_updates_starts_stops_restarts_and_deletes() {
    let env = TestEnv::start(&[]).await;
    let cfg = env.config.clone();
    let id = env.agent_id("cli-act");
    let spec = SpecFile::write(
        &format!("{id}.yaml"),
        &format!(
            "agent_id: {id}\ncustomer_id: {}\nagent_type: trading\nname: Act {id}\n\
             config: {{symbol: BTC-USD}}\nresources:\n  memory_mb: 64\n  cpus: 0.5\n",
            env.customer()
        ),
    );

    // create -f SPEC.yaml --wait: done when the agent runs.
    let created = cli(&cfg, &["agents", "create", "-f", spec.arg(), "--wait"], &[]).await;
    assert_eq!(created.code, 0, "{created:#?}");
    assert!(
        created.stdout.contains("agent.started") && created.stdout.contains(&id),
        "{created:#?}"
    );
    assert!(env.running(&id).await, "the container runs");

    // The same spec again is a no-op the manager answers again.
    let again = cli(
        &cfg,
        &[
            "agents",
            "create",
            "-f",
            spec.arg(),
            "--wait",
            "--timeout",
            "30s",
        ],
        &[],
    )
    .await;
    assert_eq!(again.code, 0, "{again:#?}");

    // update ID -f PATCH.json: the record takes the new name.
    let patch = SpecFile::write(&format!("{id}-patch.json"), r#"{"name": "Renamed"}"#);
    let updated = cli(
        &cfg,
        &[
            "agents",
            "update",
            &id,
            "-f",
            patch.arg(),
            "--wait",
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    let answer = json_of(&updated);
    assert_eq!(answer["event"], "agent.updated", "{answer}");
    assert_eq!(env.record(&id).await["name"], "Renamed");

    // stop, start, restart: each waits for its event.
    for (verb, event, status) in [
        ("stop", "agent.stopped", "stopped"),
        ("start", "agent.started", "running"),
        ("restart", "agent.restarted", "running"),
    ] {
        let out = cli(
            &cfg,
            &["agents", verb, &id, "--wait", "--grace-period", "2"],
            &[],
        )
        .await;
        if verb == "start" {
            // start takes no grace period: clap says so, exit 2.
            assert_eq!(out.code, 2, "{out:#?}");
            let out = cli(&cfg, &["agents", verb, &id, "--wait"], &[]).await;
            assert_eq!(out.code, 0, "{verb}: {out:#?}");
            assert!(out.stdout.contains(event), "{verb}: {out:#?}");
            continue;
        }
        assert_eq!(out.code, 0, "{verb}: {out:#?}");
        assert!(
            out.stdout.contains(event) && out.stdout.contains(status),
            "{verb}: {out:#?}"
        );
    }

    // Without --wait (stdout is no terminal here): sent, confirmed, not waited for.
    let sent = cli(&cfg, &["agents", "stop", &id], &[]).await;
    assert_eq!(sent.code, 0, "{sent:#?}");
    assert!(sent.stdout.starts_with("sent agent.stop"), "{sent:#?}");
    let sent_mid = sent
        .stdout
        .split("message_id ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("no message_id: {sent:#?}"))
        .to_string();
    env.answer(&sent_mid, "agent.stopped").await;

    // An error answer: exit 1 with its code and message.
    let bad = SpecFile::write(
        &format!("{id}-bad.json"),
        r#"{"resources": {"memory_mb": 1}}"#,
    );
    let refused = cli(
        &cfg,
        &["agents", "update", &id, "-f", bad.arg(), "--wait"],
        &[],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("agent.error validation_failed: "),
        "{refused:#?}"
    );

    // delete: gone, and then every acting command finds no such agent.
    let deleted = cli(
        &cfg,
        &["agents", "delete", &id, "--wait", "--grace-period", "1"],
        &[],
    )
    .await;
    assert_eq!(deleted.code, 0, "{deleted:#?}");
    assert!(deleted.stdout.contains("agent.deleted"), "{deleted:#?}");
    assert!(env.inspect(&id).await.is_none(), "the container is gone");
    for verb in ["start", "stop", "restart", "delete"] {
        let out = cli(&cfg, &["agents", verb, &id, "--wait"], &[]).await;
        assert_eq!(out.code, 1, "{verb}: {out:#?}");
        assert!(out.stderr.contains("not found"), "{verb}: {out:#?}");
    }

    // Files that cannot be commands: usage errors before anything is sent.
    let no_owner = SpecFile::write(&format!("{id}-noowner.yaml"), "agent_type: trading\n");
    let list = SpecFile::write(&format!("{id}-list.json"), "[1, 2]");
    for args in [
        vec!["agents", "create", "-f", no_owner.arg()],
        vec!["agents", "create", "-f", list.arg()],
        vec!["agents", "create", "-f", "/nonexistent/spec.json"],
        vec!["agents", "stop", &id, "--timeout", "0"],
    ] {
        let out = cli(&cfg, &args, &[]).await;
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
    }
    env.finish().await;
}

#[actix_rt::test]
async fn version_completions_and_help_need_no_services() {
    let cfg = common::test_config("offline", &[]);
    let version = cli(&cfg, &["--version"], &[]).await;
    assert_eq!(version.code, 0, "{version:#?}");
    let commit = version
        .stdout
        .trim()
        .strip_prefix(&format!(
            "agent-manager {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version:#?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );

    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef agent-manager"),
        ("fish", "complete -c agent-manager"),
    ] {
        let out = cli(
            &cfg,
            &["completions", shell],
            &[("REDIS_TIMEOUT_MS", "soon")],
        )
        .await;
        assert_eq!(out.code, 0, "{shell}: {out:#?}");
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("restart"),
            "{shell} completes subcommands"
        );
    }

    let help = cli(&cfg, &["agents", "create", "--help"], &[]).await;
    assert_eq!(help.code, 0, "{help:#?}");
    assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
}

#[actix_rt::test]
async fn list_shows_health_and_restarts_watches_and_describe_tells_the_story() {
    let env = TestEnv::start(&[]).await;
    let cfg = env.config.clone();
    let id = env.agent_id("cli-desc");
    env.create_running(&id).await;

    let table = cli(&cfg, &["agents", "list"], &[]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in ["STATUS", "HEALTH", "RESTARTS", "AGE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(!header.contains("IMAGE"), "{header}");

    let wide = cli(
        &cfg,
        &["agents", "list", "-o", "wide", "--no-trunc", "--no-headers"],
        &[],
    )
    .await;
    assert_eq!(wide.code, 0, "{wide:#?}");
    let lines: Vec<&str> = wide.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "no header, one agent: {}", wide.stdout);
    assert!(lines[0].starts_with(&id), "{}", wide.stdout);
    assert!(lines[0].contains(common::agent_image()), "{}", wide.stdout);
    assert!(!lines[0].contains('…'), "{}", wide.stdout);

    let yaml = cli(&cfg, &["agents", "list", "-o", "yaml"], &[]).await;
    assert_eq!(yaml.code, 0, "{yaml:#?}");
    let records: Value = serde_norway::from_str(&yaml.stdout).expect("YAML");
    assert_eq!(records[0]["agent_id"], id.as_str(), "{}", yaml.stdout);
    assert_eq!(records[0]["resources"]["memory_mb"], 64);

    // describe: the record, the container as Docker sees it, the last events.
    let described = cli(&cfg, &["agents", "describe", &id], &[]).await;
    assert_eq!(described.code, 0, "{described:#?}");
    let text = &described.stdout;
    for needle in [
        format!("Name:              {id}"),
        "Status:            running (desired: running)".to_string(),
        "Container:".to_string(),
        "  State:           running".to_string(),
        "Events:".to_string(),
        "agent.started".to_string(),
    ] {
        assert!(text.contains(&needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("gpt-test"),
        "autogen_config stays hidden:\n{text}"
    );
    let ghost = cli(&cfg, &["agents", "describe", &env.agent_id("ghost")], &[]).await;
    assert_eq!(ghost.code, 1, "{ghost:#?}");

    // --watch: the table, then a row per change, and `deleted` when it goes.
    let mut watch = Follow::spawn(&cfg, &["agents", "list", "--watch", "--no-headers"]);
    let first = watch.line_with(&id).await;
    assert!(first.contains("running"), "{first}");
    let mid = env
        .command("agent.stop", &id, json!({"timeout_s": 1}))
        .await;
    env.answer(&mid, "agent.stopped").await;
    let stopped = watch.line_with("stopped").await;
    assert!(stopped.starts_with(&id), "{stopped}");
    let mid = env.command("agent.delete", &id, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    let deleted = watch.line_with("deleted").await;
    assert!(deleted.starts_with(&id), "{deleted}");
    drop(watch);
    env.finish().await;
}

#[actix_rt::test]
async fn config_as_toml_loads_back() {
    let cfg = common::test_config("toml", &[]);
    let printed = cli(&cfg, &["config", "-o", "toml", "--show-secrets"], &[]).await;
    assert_eq!(printed.code, 0, "{printed:#?}");
    let file = SpecFile::write(
        &format!("config-{}.toml", std::process::id()),
        &printed.stdout,
    );
    let loaded = cli(
        &cfg,
        &[
            "--config",
            file.arg(),
            "config",
            "-o",
            "toml",
            "--show-secrets",
        ],
        &[],
    )
    .await;
    assert_eq!(loaded.code, 0, "{loaded:#?}");
    assert_eq!(loaded.stdout, printed.stdout);
    assert!(printed
        .stdout
        .contains(&format!("prefix = \"{}\"", cfg.redis.prefix)));

    let redacted = cli(&cfg, &["config", "-o", "toml"], &[]).await;
    assert_eq!(redacted.code, 0, "{redacted:#?}");
    assert!(
        !redacted.stdout.contains("guest:guest@"),
        "{}",
        redacted.stdout
    );
}
