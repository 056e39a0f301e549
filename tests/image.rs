//! The container image, built from the Dockerfile and run the way README "Deploy" says:
//! non-root, the Docker socket mounted and its group added, configured through the
//! environment, against the local RabbitMQ and Redis (host network). It must serve an
//! `agent.create` from RabbitMQ, start the agent's container, pass its HEALTHCHECK, and
//! stop cleanly on SIGTERM.
//!
//! No registry is reachable here, so the build is the offline recipe: a local base image
//! from `scripts/base-image.sh host` (busybox + this host's glibc) as both base images,
//! and the test's own binary (stripped) as `PREBUILT`. The image is tagged with a hash
//! of everything that goes in, so a rerun with nothing changed builds nothing.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_manager::Config;
use common::manager_image::{docker, manager_image};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

const SOCKET: &str = "/var/run/docker.sock";
const START_HINT: &str = "start the services with `bash scripts/services.sh`";
const DEADLINE: Duration = Duration::from_secs(60);

/// The manager's container and everything its test made; removed in Drop.
struct Deployed {
    config: Config,
    container: String,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        // The manager first, so that nothing recreates what the cleanup removes.
        let mut cmd = Command::new("docker");
        cmd.args(["rm", "-f", "-v", &self.container]);
        let _ = std::thread::spawn(move || cmd.output()).join();
        common::cleanup_test_resources(&self.config);
    }
}

impl Deployed {
    fn logs(&self) -> String {
        let out = docker(
            &["logs", "--tail", "40", &self.container],
            Duration::from_secs(30),
        );
        format!("{}{}", out.stdout, out.stderr)
    }

    fn inspect(&self, format: &str) -> String {
        docker(
            &["inspect", "-f", format, &self.container],
            Duration::from_secs(30),
        )
        .stdout
        .trim()
        .to_string()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn rabbit() -> Connection {
    match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(common::RABBITMQ_URL, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!(
            "RabbitMQ is not reachable at {} ({:?}); {START_HINT}",
            common::RABBITMQ_URL,
            other.map(|r| r.map(|_| ()))
        ),
    }
}

#[actix_rt::test]
async fn the_image_serves_commands_as_a_non_root_container() {
    let info = blocking(|| {
        docker(
            &["info", "-f", "{{.ServerVersion}}"],
            Duration::from_secs(10),
        )
    })
    .await;
    assert_eq!(
        info.code, 0,
        "Docker is not reachable ({}); {START_HINT}",
        info.stderr
    );
    let conn = rabbit().await;

    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let config = common::test_config(&id, &[]);
    let deployed = Deployed {
        config: config.clone(),
        container: format!("agent-manager-test-{id}"),
    };
    let image = blocking(manager_image).await;

    // Without the socket's group the unprivileged process cannot use Docker, and the
    // check says what to do.
    let denied = {
        let image = image.clone();
        blocking(move || {
            docker(
                &[
                    "run",
                    "--rm",
                    "--network",
                    "host",
                    "-v",
                    &format!("{SOCKET}:{SOCKET}"),
                    &image,
                    "check",
                    "--services-only",
                ],
                Duration::from_secs(60),
            )
        })
        .await
    };
    assert_eq!(denied.code, 1, "{denied:#?}");
    assert!(
        denied.stdout.contains("no permission") && denied.stdout.contains("--group-add"),
        "{denied:#?}"
    );

    // Run it as README "Deploy" says, checking its health every second.
    let gid = std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| panic!("{SOCKET}: {e}; {START_HINT}"))
        .gid()
        .to_string();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &deployed.container,
        "--network",
        "host",
        "-v",
        &format!("{SOCKET}:{SOCKET}"),
        "--group-add",
        &gid,
        "--health-interval",
        "1s",
        "--health-start-period",
        "0s",
        "--label",
        &format!("autogen.manager-instance={}", config.instance),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // On the host's network the image's own ADMIN_LISTEN (0.0.0.0:9464) would be the
    // host's every interface, and a port other checkouts may hold: a free loopback port,
    // where the HEALTHCHECK (`check --ready`) asks it.
    let admin = format!("127.0.0.1:{}", common::free_port());
    for (k, v) in common::config_env(&config)
        .into_iter()
        .chain([("ADMIN_LISTEN", admin.clone())])
    {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(image.clone());
    let run = blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args, Duration::from_secs(60))
    })
    .await;
    assert_eq!(run.code, 0, "docker run failed: {run:#?}");
    assert_eq!(deployed.inspect("{{.Config.User}}"), "10001:10001");
    // The image listens on every interface of its container, and says on which port.
    let image_config = blocking({
        let image = image.clone();
        move || {
            docker(
                &[
                    "image",
                    "inspect",
                    "-f",
                    "{{json .Config.ExposedPorts}} {{json .Config.Healthcheck.Test}}",
                    &image,
                ],
                Duration::from_secs(30),
            )
        }
    })
    .await;
    assert!(
        image_config.stdout.contains("\"9464/tcp\"") && image_config.stdout.contains("--ready"),
        "{image_config:#?}"
    );

    // Serving: its consumer is on the command queue.
    let queue = config.rabbitmq.command_queue.clone();
    let until = Instant::now() + DEADLINE;
    loop {
        let ch = conn.create_channel().await.expect("channel");
        let declared = ch
            .queue_declare(
                queue.clone().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if declared.is_ok_and(|q| q.consumer_count() > 0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the manager in the container did not start consuming {queue} within {DEADLINE:?}; \
             state {}; logs:\n{}",
            deployed.inspect("{{.State.Status}} {{.State.ExitCode}}"),
            deployed.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Our own queue for its events.
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let (_events_ch, mut consumer) = common::consume_all_events(
        &conn,
        &format!("test-{id}.image-events"),
        &config.rabbitmq.exchange,
        "image-test",
    )
    .await;

    // agent.create through RabbitMQ → agent.started, and the agent's container runs.
    let agent_id = format!("img-{id}");
    let message_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "message_id": message_id,
        "agent_id": agent_id,
        "customer_id": format!("cust-{id}"),
        "agent_type": "analysis",
        "name": "Image test agent",
        "resources": {"memory_mb": 64, "cpus": 0.5},
    });
    ch.basic_publish(
        config.rabbitmq.exchange.clone().into(),
        "agent.create".into(),
        BasicPublishOptions::default(),
        body.to_string().as_bytes(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let started = loop {
        let delivery = match tokio::time::timeout_at(until, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            other => panic!(
                "no agent.started within {DEADLINE:?} ({:?}); events: {seen:#?}; manager logs:\n{}",
                other.map(|o| o.map(|r| r.map(|_| ()))),
                deployed.logs()
            ),
        };
        let event: Value = serde_json::from_slice(&delivery.data).expect("event JSON");
        if event["correlation_id"] == message_id.as_str() {
            assert_ne!(event["event"], "agent.error", "{event}");
            if event["event"] == "agent.started" {
                break event;
            }
        }
        seen.push(event);
    };
    assert_eq!(started["agent_id"], agent_id.as_str());
    assert_eq!(started["status"], "running");
    let agent = blocking({
        let name = format!("agent-{agent_id}");
        move || {
            docker(
                &[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{index .Config.Labels \"autogen.manager-instance\"}}",
                    &name,
                ],
                Duration::from_secs(30),
            )
        }
    })
    .await;
    assert_eq!(
        agent.stdout.trim(),
        format!("true {}", config.instance),
        "{agent:#?}"
    );

    // The HEALTHCHECK (`check --ready --quiet` as uid 10001: the manager's own /readyz)
    // passes.
    let until = Instant::now() + DEADLINE;
    loop {
        match deployed.inspect("{{.State.Health.Status}}").as_str() {
            "healthy" => break,
            status => assert!(
                Instant::now() < until,
                "not healthy within {DEADLINE:?} ({status}): {}",
                deployed.inspect("{{json .State.Health}}")
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The operator's CLI inside the container sees the agent.
    let listed = blocking({
        let container = deployed.container.clone();
        move || {
            docker(
                &[
                    "exec",
                    &container,
                    "agent-manager",
                    "agents",
                    "list",
                    "-o",
                    "json",
                ],
                Duration::from_secs(30),
            )
        }
    })
    .await;
    assert_eq!(listed.code, 0, "{listed:#?}");
    let records: Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    assert_eq!(records[0]["agent_id"], agent_id.as_str(), "{records}");

    // SIGTERM (docker stop): a clean exit, and the agent keeps running.
    let stopped = blocking({
        let container = deployed.container.clone();
        move || docker(&["stop", "-t", "30", &container], Duration::from_secs(60))
    })
    .await;
    assert_eq!(stopped.code, 0, "{stopped:#?}");
    assert_eq!(
        deployed.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        deployed.logs()
    );
    let _ = conn.close(200, "bye".into()).await;
    drop(deployed);
}
