//! Test harness: one manager per test, started in-process against the real RabbitMQ,
//! Redis and Docker that `scripts/services.sh` brings up, with names of its own
//! (exchange, queues, Redis prefix, manager instance label) so tests run side by side.
//! Everything the test made is removed in `Drop`.

#![allow(dead_code)]

pub mod cluster;
pub mod exclusive;
pub mod manager_image;
pub mod swarm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_manager::protocol::Event;
use agent_manager::{Config, Manager};
use bollard::models::ContainerInspectResponse;
use bollard::Docker;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const START_HINT: &str = "start the services with `bash scripts/services.sh`";

/// The agents' network: `scripts/services.sh` makes Redis and RabbitMQ listen on its
/// gateway address too.
pub const AGENT_NETWORK: &str = "autogen-network";

/// The gateway address of [`AGENT_NETWORK`] (`None` when Docker or the network is not
/// there; the tests that need it fail on that anyway).
pub fn agent_gateway() -> Option<&'static str> {
    static GATEWAY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    GATEWAY
        .get_or_init(|| {
            let out = std::process::Command::new("docker")
                .args([
                    "network",
                    "inspect",
                    "-f",
                    "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
                    AGENT_NETWORK,
                ])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.split_whitespace().next().map(str::to_string)
        })
        .as_deref()
}

/// The image the tests' agents run: this checkout's test agent,
/// `autogen-agent:src-<hash of scripts/agent-image>` (scripts/agent-image-tag.sh), which
/// `scripts/services.sh` builds. `autogen-agent:busybox` is whichever checkout sharing
/// this dockerd built last; it is used only when the tag cannot be worked out.
pub fn agent_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/agent-image-tag.sh");
        let tag = std::process::Command::new("timeout")
            .args(["10", "bash", script])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| t.starts_with("autogen-agent:src-"));
        let Some(tag) = tag else {
            return "autogen-agent:busybox".to_string();
        };
        assert!(
            image_present(&tag),
            "the test agent image {tag} is missing (its sources changed?): {START_HINT}"
        );
        tag
    })
}

/// Whether this machine's dockerd has image `tag` (bounded).
pub fn image_present(tag: &str) -> bool {
    std::process::Command::new("timeout")
        .args(["10", "docker", "image", "inspect", "-f", "{{.Id}}", tag])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The reference AutoGen agent's tag for this checkout (`images/autogen-agent/build.sh
/// --tag`), which `scripts/services.sh` builds; fails, naming the script, when missing.
pub fn reference_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/images/autogen-agent/build.sh");
        let out = std::process::Command::new("timeout")
            .args(["30", "bash", script, "--tag"])
            .output()
            .expect("run images/autogen-agent/build.sh --tag");
        assert!(out.status.success(), "build.sh --tag: {out:?}");
        let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            image_present(&tag),
            "the reference agent image {tag} is missing (its sources changed?): run \
             `bash scripts/services.sh` (it builds it; ~7 min the first time)"
        );
        tag
    })
}

/// `REDIS_URL` as the tests' agents get it: the same Redis, at an address their
/// containers reach (127.0.0.1 in a container is the container itself).
pub fn agent_redis_url() -> String {
    match agent_gateway() {
        Some(gw) => format!("redis://{gw}:6379/0"),
        None => REDIS_URL.to_string(),
    }
}

/// `RABBITMQ_URL` as the tests' agents get it. `guest` logs in from loopback only: the
/// test agent never logs in to RabbitMQ; the address is one it can reach.
pub fn agent_rabbitmq_url() -> String {
    match agent_gateway() {
        Some(gw) => format!("amqp://guest:guest@{gw}:5672/%2f"),
        None => RABBITMQ_URL.to_string(),
    }
}

/// Default deadline for an answer that involves Docker work.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct TestEnv {
    /// Unique per test; in every name the test uses.
    pub id: String,
    pub config: Config,
    manager: Option<Manager>,
    conn: Connection,
    channel: Channel,
    events: Arc<Mutex<Vec<Event>>>,
    arrived: Arc<Notify>,
    /// Contract breaches seen in events' AMQP properties; checked by `finish`.
    violations: Arc<Mutex<Vec<String>>>,
    pub redis: redis::aio::MultiplexedConnection,
    pub docker: Docker,
}

/// Fails at once, naming the script, when a service is down.
async fn require_services() -> (Connection, redis::aio::MultiplexedConnection, Docker) {
    let docker = Docker::connect_with_local_defaults()
        .unwrap_or_else(|e| panic!("Docker client: {e}; {START_HINT}"));
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => {}
        other => panic!("Docker is not reachable ({other:?}); {START_HINT}"),
    }
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let redis = match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!("Redis is not reachable at {REDIS_URL} ({other:?}); {START_HINT}"),
    };
    let conn = match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(RABBITMQ_URL, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("RabbitMQ is not reachable at {RABBITMQ_URL} ({e}); {START_HINT}"),
        Err(_) => panic!("RabbitMQ did not answer at {RABBITMQ_URL} within 5 s; {START_HINT}"),
    };
    (conn, redis, docker)
}

impl TestEnv {
    /// Starts a manager with this test's names and `overrides` (environment names).
    pub async fn start(overrides: &[(&str, &str)]) -> TestEnv {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let config = test_config(&id, overrides);
        Self::start_with(id, config).await
    }

    /// Everything but the manager: for a manager run as a separate process (benches).
    /// The topology is declared here, so commands sent before it starts are kept.
    pub async fn client_only(overrides: &[(&str, &str)]) -> TestEnv {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let config = test_config(&id, overrides);
        let (conn, _, _) = require_services().await;
        agent_manager::broker::topology::declare(&conn, &config.rabbitmq)
            .await
            .expect("declare topology");
        let _ = conn.close(200, "declared".into()).await;
        Self::start_inner(id, config, false).await
    }

    /// Like `start`, with the config changed by `change` first (settings that have no
    /// environment variable: tables such as `swarm.constraints_by_type`).
    pub async fn start_changed(
        overrides: &[(&str, &str)],
        change: impl FnOnce(&mut Config),
    ) -> TestEnv {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let mut config = test_config(&id, overrides);
        change(&mut config);
        Self::start_with(id, config).await
    }

    async fn start_with(id: String, config: Config) -> TestEnv {
        Self::start_inner(id, config, true).await
    }

    async fn start_inner(id: String, config: Config, with_manager: bool) -> TestEnv {
        let (conn, redis, docker) = require_services().await;
        let manager = if with_manager {
            Some(
                Manager::start(config.clone())
                    .await
                    .unwrap_or_else(|e| panic!("manager failed to start: {e}")),
            )
        } else {
            None
        };
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        // Our own queue for the events, bound to every event routing key.
        let (consume_ch, mut consumer) = consume_all_events(
            &conn,
            &format!("test-{id}.events"),
            &config.rabbitmq.exchange,
            "test-events",
        )
        .await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (ev, notify, bad) = (events.clone(), arrived.clone(), violations.clone());
        actix_rt::spawn(async move {
            let _keep = consume_ch;
            while let Some(Ok(delivery)) = consumer.next().await {
                let props = &delivery.properties;
                let event: Event = match serde_json::from_slice(&delivery.data) {
                    Ok(e) => e,
                    Err(e) => {
                        bad.lock()
                            .unwrap()
                            .push(format!("event is not contract JSON: {e}"));
                        continue;
                    }
                };
                // Contract section 3: AMQP properties mirror the body.
                let checks = [
                    (props.delivery_mode() == &Some(2), "delivery mode 2"),
                    (
                        props.content_type().as_ref().map(|s| s.as_str())
                            == Some("application/json"),
                        "content_type application/json",
                    ),
                    (
                        props.message_id().as_ref().map(|s| s.to_string())
                            == Some(event.event_id.clone()),
                        "message_id = event_id",
                    ),
                    (
                        props.correlation_id().as_ref().map(|s| s.to_string())
                            == event.correlation_id,
                        "correlation_id property = body",
                    ),
                    (
                        delivery.routing_key.as_str() == event.event.routing_key(),
                        "routing key = event",
                    ),
                    (
                        chrono::DateTime::parse_from_rfc3339(&event.timestamp).is_ok(),
                        "timestamp is RFC 3339",
                    ),
                    (
                        uuid::Uuid::parse_str(&event.event_id)
                            .is_ok_and(|u| u.get_version_num() == 4),
                        "event_id is a UUID v4",
                    ),
                ];
                for (ok, what) in checks {
                    if !ok {
                        bad.lock().unwrap().push(format!("{what}: {event:?}"));
                    }
                }
                ev.lock().unwrap().push(event);
                notify.notify_waiters();
            }
        });
        TestEnv {
            id,
            config,
            manager,
            conn,
            channel,
            events,
            arrived,
            violations,
            redis,
            docker,
        }
    }

    /// Stops the manager (agents keep running) and starts a new one with the same config.
    pub async fn restart_manager(&mut self) {
        self.restart_manager_with(|| async {}).await
    }

    /// Like `restart_manager`, running `between` while no manager runs.
    pub async fn restart_manager_with<F, Fut>(&mut self, between: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if let Some(m) = self.manager.take() {
            m.shutdown().await;
        }
        between().await;
        self.manager = Some(
            Manager::start(self.config.clone())
                .await
                .unwrap_or_else(|e| panic!("manager failed to restart: {e}")),
        );
    }

    /// Checks the events' envelopes and shuts the manager down gracefully (cleanup
    /// happens in Drop).
    pub async fn finish(mut self) {
        if let Some(m) = self.manager.take() {
            m.shutdown().await;
        }
        let bad = self.violations.lock().unwrap().clone();
        assert!(bad.is_empty(), "events broke the contract: {bad:#?}");
    }

    /// A unique agent id for this test.
    pub fn agent_id(&self, name: &str) -> String {
        format!("{name}-{}", self.id)
    }

    /// Publishes raw bytes to the exchange with `routing_key`.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.to_string().into());
        }
        self.channel
            .basic_publish(
                self.config.rabbitmq.exchange.clone().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Declares a durable queue as the broker's administrator (the test); the broker
    /// removes it a minute after its last use, should the test not get to it.
    pub async fn declare_queue(&self, name: &str) {
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                expiring_queue(),
            )
            .await
            .expect("declare a queue");
    }

    /// Deletes a queue, if it is there.
    pub async fn delete_queue(&self, name: &str) {
        let ch = self.conn.create_channel().await.expect("channel");
        let _ = ch
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "done".into()).await;
    }

    /// Publishes to the default exchange, straight into the command queue.
    pub async fn publish_to_queue(&self, body: &Value) {
        self.channel
            .basic_publish(
                "".into(),
                self.config.rabbitmq.command_queue.clone().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Sends a command; gives it a fresh message_id unless it has one. Returns the id.
    pub async fn send(&self, routing_key: &str, mut body: Value) -> String {
        if body.get("message_id").is_none() {
            body["message_id"] = json!(uuid::Uuid::new_v4().to_string());
        }
        let id = body["message_id"].as_str().unwrap_or_default().to_string();
        self.publish_raw(routing_key, body.to_string().as_bytes(), None)
            .await;
        id
    }

    /// A create body for `agent_id` owned by customer `cust-<test>`.
    pub fn create_body(&self, agent_id: &str) -> Value {
        json!({
            "agent_id": agent_id,
            "customer_id": self.customer(),
            "agent_type": "trading",
            "name": format!("Agent {agent_id}"),
            "config": {"symbol": "BTC-USD"},
            "autogen_config": {"model": "gpt-test"},
            "resources": {"memory_mb": 64, "cpus": 0.5},
        })
    }

    pub fn customer(&self) -> String {
        format!("cust-{}", self.id)
    }

    /// Sends `command` for `agent_id` with the test's customer and `extra` fields.
    pub async fn command(&self, routing_key: &str, agent_id: &str, extra: Value) -> String {
        let mut body = json!({"agent_id": agent_id, "customer_id": self.customer()});
        if let Value::Object(map) = extra {
            for (k, v) in map {
                body[k] = v;
            }
        }
        self.send(routing_key, body).await
    }

    /// Waits for the first event matching `pred`.
    pub async fn wait_event(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            if let Some(e) = self.events.lock().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                let seen: Vec<String> = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} {:?} {}",
                            e.event.routing_key(),
                            e.agent_id,
                            e.correlation_id,
                            e.details
                        )
                    })
                    .collect();
                panic!("no {what} within {deadline:?}; events seen: {seen:#?}");
            }
        }
    }

    /// Waits for the answer `event` (routing key) to the command `message_id`.
    pub async fn answer(&self, message_id: &str, event: &str) -> Event {
        let mid = message_id.to_string();
        let ev = event.to_string();
        let e = self
            .wait_event(
                &format!("{event} answering {message_id}"),
                DEADLINE,
                move |e| {
                    e.correlation_id.as_deref() == Some(mid.as_str())
                        && (e.event.routing_key() == ev || e.event.routing_key() == "agent.error")
                },
            )
            .await;
        assert_eq!(
            e.event.routing_key(),
            event,
            "command {message_id} was answered with {} {}",
            e.event.routing_key(),
            e.details
        );
        e
    }

    /// Waits for an `agent.error` answering `message_id` and returns its code.
    pub async fn error_code(&self, message_id: &str) -> (String, Event) {
        let e = self.answer(message_id, "agent.error").await;
        let code = e.details["code"].as_str().unwrap_or_default().to_string();
        (code, e)
    }

    /// Every event answering `message_id` so far.
    pub fn answers(&self, message_id: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.correlation_id.as_deref() == Some(message_id))
            .cloned()
            .collect()
    }

    /// Where the in-process manager's admin endpoint listens.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.manager
            .as_ref()
            .and_then(|m| m.admin_addr())
            .expect("the manager serves the admin endpoint")
    }

    /// GET `path` from the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr(), path, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("admin endpoint {path}: {e}"))
    }

    /// Every event seen so far.
    pub fn all_events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Forgets the events seen so far.
    pub fn clear_events(&self) {
        self.events.lock().unwrap().clear();
    }

    /// Every event seen so far for `agent_id`.
    pub fn events_of(&self, agent_id: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.agent_id == agent_id)
            .cloned()
            .collect()
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.config.redis.prefix)
    }

    /// The agent's Redis hash.
    pub async fn record(&self, agent_id: &str) -> HashMap<String, String> {
        let mut c = self.redis.clone();
        redis::cmd("HGETALL")
            .arg(self.key(&format!("agent:{agent_id}")))
            .query_async(&mut c)
            .await
            .expect("hgetall")
    }

    pub async fn redis_query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let mut c = self.redis.clone();
        cmd.query_async(&mut c).await.expect("redis")
    }

    /// A hash in Redis (under the test's prefix).
    pub async fn hash(&self, suffix: &str) -> HashMap<String, String> {
        self.redis_query(redis::cmd("HGETALL").arg(self.key(suffix)))
            .await
    }

    /// Docker's view of the agent's container (`None` when there is none).
    pub async fn inspect(&self, agent_id: &str) -> Option<ContainerInspectResponse> {
        self.docker
            .inspect_container(
                &format!("agent-{agent_id}"),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
    }

    pub async fn running(&self, agent_id: &str) -> bool {
        self.inspect(agent_id)
            .await
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    /// Every container carrying this test's instance label.
    pub async fn containers(&self) -> Vec<String> {
        let filters = HashMap::from([(
            "label",
            vec![format!("autogen.manager-instance={}", self.config.instance)],
        )]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .expect("list")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// Creates an agent and waits until it runs.
    pub async fn create_running(&self, agent_id: &str) -> Event {
        let mid = self.send("agent.create", self.create_body(agent_id)).await;
        self.answer(&mid, "agent.created").await;
        self.answer(&mid, "agent.started").await
    }

    /// Reads one message from the test's dead-letter queue, waiting up to `deadline`.
    pub async fn dead_letter(&self, deadline: Duration) -> Option<Vec<u8>> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let got = self
                .channel
                .basic_get(
                    self.config.rabbitmq.dead_letter_queue.clone().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic_get");
            if let Some(msg) = got {
                return Some(msg.delivery.data.clone());
            }
            if tokio::time::Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks that an agent's environment (`KEY=value` strings) carries its own login
/// (contract section 7) to the services the tests run: `RABBITMQ_URL` and `REDIS_URL`
/// as [`RABBITMQ_URL`] and [`REDIS_URL`] with user `agent-<agent_id>` and one password,
/// which it returns.
pub fn own_login(agent_id: &str, vars: &[String]) -> String {
    let var = |name: &str| {
        vars.iter()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in the agent's environment"))
            .to_string()
    };
    let (mq, redis) = (var("RABBITMQ_URL"), var("REDIS_URL"));
    let password =
        agent_manager::credentials::own_password(agent_id, &mq, &redis).unwrap_or_else(|| {
            panic!(
                "no login of its own: {} {}",
                agent_manager::redact::url(&mq),
                agent_manager::redact::url(&redis)
            )
        });
    let pw = password.expose().to_string();
    // The address the agents reach (their network's gateway), with their own login.
    let login = format!("agent-{agent_id}:{pw}@");
    let (mq_host, redis_host) = (agent_rabbitmq_url(), agent_redis_url());
    let mq_host = mq_host.split_once('@').map_or(mq_host.as_str(), |(_, h)| h);
    let redis_host = redis_host.trim_start_matches("redis://");
    assert_eq!(mq, format!("amqp://{login}{mq_host}"));
    assert_eq!(redis, format!("redis://{login}{redis_host}"));
    pw
}

/// The config of a test: the defaults with this test's names and `overrides`.
pub fn test_config(id: &str, overrides: &[(&str, &str)]) -> Config {
    let env = test_env_vars(id, overrides);
    Config::from_sources(None, |k| env.get(k).cloned()).expect("test config")
}

/// The environment variables that configure a manager for test `id` (also given to a
/// manager started as a separate process).
pub fn test_env_vars(id: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::from([
        ("RABBITMQ_URL".into(), RABBITMQ_URL.into()),
        ("REDIS_URL".into(), REDIS_URL.into()),
        ("RABBITMQ_EXCHANGE".into(), format!("autogen.test-{id}")),
        (
            "COMMAND_QUEUE".into(),
            format!("agent-manager.commands.test-{id}"),
        ),
        (
            "DEAD_LETTER_EXCHANGE".into(),
            format!("autogen.dlx.test-{id}"),
        ),
        (
            "DEAD_LETTER_QUEUE".into(),
            format!("agent-manager.commands.dead.test-{id}"),
        ),
        ("REDIS_PREFIX".into(), format!("test-{id}:")),
        ("MANAGER_INSTANCE".into(), format!("test-{id}")),
        ("HEALTH_CHECK_INTERVAL_S".into(), "1".into()),
        ("ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("AGENT_IMAGE".into(), agent_image().into()),
        ("AGENT_REDIS_URL".into(), agent_redis_url()),
        ("AGENT_RABBITMQ_URL".into(), agent_rabbitmq_url()),
        // Managers of other tests run beside this one: an egress proxy on the shared
        // port would answer for installations it does not know (tests/egress.rs gives
        // its own a port of its own).
        ("EGRESS_PROXY_LISTEN".into(), String::new()),
    ]);
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        cleanup_test_resources(&self.config);
    }
}

/// A queue of the test's own (exclusive, auto-delete) bound to every event routing key
/// on `exchange`, consumed without acks. Keep the channel as long as the consumer.
pub async fn consume_all_events(
    conn: &Connection,
    queue: &str,
    exchange: &str,
    tag: &str,
) -> (Channel, lapin::Consumer) {
    let keys: Vec<String> = agent_manager::protocol::EventKind::ALL
        .iter()
        .map(|kind| kind.routing_key().to_string())
        .collect();
    let channel = bound_exclusive_queue(conn, queue, exchange, &keys).await;
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume events");
    (channel, consumer)
}

/// Declares agent `agent_id`'s inbox on `channel` as contract section 8 says (durable,
/// no arguments: the very queue the manager makes), and returns its name.
pub async fn declare_inbox(channel: &Channel, agent_id: &str) -> String {
    let inbox = format!("agent:{agent_id}:inbox");
    channel
        .queue_declare(
            inbox.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declare {inbox}: {e}"));
    inbox
}

/// Declares `queue` (exclusive, auto-delete) on a new channel of `conn` and binds it to
/// `exchange` with each of `routing_keys`; returns the channel.
pub async fn bound_exclusive_queue(
    conn: &Connection,
    queue: &str,
    exchange: &str,
    routing_keys: &[String],
) -> Channel {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
    for key in routing_keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("bind {queue} to {key}: {e}"));
    }
    channel
}

/// Queue arguments for queues a test makes: gone a minute after their last use.
pub fn expiring_queue() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), lapin::types::AMQPValue::LongInt(60_000));
    args
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + deadline;
    while !check().await {
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The manager binary run as a separate process (for kill -9 and signals), configured
/// like the test's in-process one. Killed in Drop.
pub struct ManagerProcess {
    pub child: std::process::Child,
}

impl ManagerProcess {
    /// With `MANAGER_WRAPPER` set (e.g. `heaptrack -o /tmp/ht`), the manager runs under
    /// that command for profiling; pid-based figures then describe the wrapper.
    pub fn spawn(vars: &HashMap<String, String>) -> Self {
        let bin = env!("CARGO_BIN_EXE_agent-manager");
        let wrapper = std::env::var("MANAGER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = std::process::Command::new(program);
                c.args(words).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        let child = command
            .arg("run")
            .envs(vars)
            .env(
                "RUST_LOG",
                std::env::var("MANAGER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The manager logs to stdout; kept in MANAGER_LOG_DIR when set.
            .stdout(match std::env::var_os("MANAGER_LOG_DIR") {
                Some(dir) => std::fs::File::create(
                    std::path::Path::new(&dir)
                        .join(format!("manager-{}.log", uuid::Uuid::new_v4().simple())),
                )
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
                None => std::process::Stdio::null(),
            })
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn agent-manager");
        ManagerProcess { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `deadline` for the exit status.
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// The environment variables (`config::ENV_VARS` names) that give another process —
/// the CLI, a manager in a container — this test's names: URLs, exchange, queues,
/// Redis prefix, instance label.
pub fn config_env(config: &Config) -> Vec<(&'static str, String)> {
    let r = &config.rabbitmq;
    vec![
        ("RABBITMQ_URL", r.url.clone()),
        ("RABBITMQ_EXCHANGE", r.exchange.clone()),
        ("COMMAND_QUEUE", r.command_queue.clone()),
        ("DEAD_LETTER_EXCHANGE", r.dead_letter_exchange.clone()),
        ("DEAD_LETTER_QUEUE", r.dead_letter_queue.clone()),
        ("REDIS_URL", config.redis.url.clone()),
        ("REDIS_PREFIX", config.redis.prefix.clone()),
        ("MANAGER_INSTANCE", config.instance.clone()),
        ("DOCKER_NETWORK", config.docker.network.clone()),
        ("AGENT_IMAGE", config.agents.image.clone()),
        (
            "HEALTH_CHECK_INTERVAL_S",
            config.health.check_interval_s.to_string(),
        ),
    ]
}

/// The built CLI (`agent-manager`) with `args`, configured for `config` (its names,
/// [`config_env`]) plus `overrides` (environment names), and nothing from the
/// developer's environment that would change its configuration.
pub fn cli_command(
    config: &Config,
    args: &[&str],
    overrides: &[(&str, &str)],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-manager"));
    for (var, _) in agent_manager::config::ENV_VARS {
        cmd.env_remove(var);
    }
    for var in ["AGENT_MANAGER_CONFIG", "RUST_LOG", "COLUMNS", "LOG_JSON"] {
        cmd.env_remove(var);
    }
    for (k, v) in config_env(config) {
        cmd.env(k, v);
    }
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    cmd.args(args);
    cmd
}

/// Removes what a test with `config` left behind: its containers (instance label), its
/// Redis keys (prefix), its queues and exchanges, its agents' own users (instance tag,
/// prefix). Blocking; for `Drop` of test fixtures that run no manager in-process.
pub fn cleanup_test_resources(config: &Config) {
    let instance = config.instance.clone();
    let prefix = config.redis.prefix.clone();
    let rabbit = config.rabbitmq.clone();
    let full = config.clone();
    let cleanup = std::thread::spawn(move || {
        // Swarm mode: services first (Swarm would replace their containers). Fails
        // harmlessly when the node is in no swarm.
        let out = std::process::Command::new("docker")
            .args([
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=autogen.manager-instance={instance}"),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["service", "rm"])
                    .args(&ids)
                    .output();
            }
        }
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=autogen.manager-instance={instance}"),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        remove_egress_rules(&instance);
        if let Ok(client) = redis::Client::open(REDIS_URL) {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(5)) {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query(&mut c)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut c);
                }
            }
        }
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async move {
                let connect = Connection::connect(RABBITMQ_URL, ConnectionProperties::default());
                let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                for q in [&rabbit.command_queue, &rabbit.dead_letter_queue] {
                    let _ = ch
                        .queue_delete(q.clone().into(), QueueDeleteOptions::default())
                        .await;
                }
                for x in [&rabbit.exchange, &rabbit.dead_letter_exchange] {
                    let _ = ch
                        .exchange_delete(x.clone().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "bye".into()).await;
                remove_agent_users(&full).await;
            });
        }
    });
    let _ = cleanup.join();
}

/// Removes the egress rules (contract section 11) of manager instance `instance`'s
/// agents, as the manager itself would remove a deleted agent's.
pub fn remove_egress_rules(instance: &str) {
    use agent_manager::egress::rules;
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-w", "5", "-S", rules::HOOK_CHAIN])
        .output()
    else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    let text: String = rules::agents_in(&listing, instance)
        .iter()
        .map(|agent| rules::forget_text(instance, agent, true))
        .collect();
    if text.is_empty() {
        return;
    }
    if let Ok(mut child) = std::process::Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(text.as_bytes());
        }
        let _ = child.wait();
    }
}

/// Removes every agent user the manager of `config` made (RabbitMQ and Redis).
pub async fn remove_agent_users(config: &Config) {
    use agent_manager::ports::CredentialIssuer;
    let Ok(Ok(store)) = tokio::time::timeout(
        Duration::from_secs(5),
        agent_manager::store::Store::connect(&config.redis),
    )
    .await
    else {
        return;
    };
    let Ok(identities) = agent_manager::identity::Identities::new(config, store) else {
        return;
    };
    if let Ok(census) = identities.census().await {
        for agent in census.owned {
            let _ = identities.revoke(&agent).await;
        }
    }
    // The halts' copies in RabbitMQ (global parameters of this instance).
    if let Ok(management) = agent_manager::broker::management::Management::new(
        &config.rabbitmq.management_url(),
        None,
        Duration::from_secs(5),
    ) {
        let prefix = format!("autogen-halt.{}.", config.instance);
        if let Ok(params) = management.global_parameters(&prefix).await {
            for (name, _) in params {
                let _ = management.delete_global_parameter(&name).await;
            }
        }
    }
}

/// What a finished process left.
#[derive(Debug)]
pub struct CommandOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end with its output captured; kills it and fails the test (naming
/// `what`) when it runs longer than `limit`. Blocking: from async tests, call it in
/// `spawn_blocking`.
pub fn run_bounded(cmd: std::process::Command, limit: Duration, what: &str) -> CommandOut {
    run_bounded_with_stdin(cmd, std::process::Stdio::null(), limit, what)
}

/// [`run_bounded`] with `stdin` as the process's standard input (e.g. a file).
pub fn run_bounded_with_stdin(
    mut cmd: std::process::Command,
    stdin: std::process::Stdio,
    limit: Duration,
    what: &str,
) -> CommandOut {
    use std::io::Read;
    use std::process::Stdio;
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let until = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CommandOut {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Events as a second consumer of the test's exchange sees them, with the instant each
/// arrived, indexed by correlation id (for benches: thousands of events, no scans).
#[derive(Default)]
pub struct TapState {
    /// correlation id → (routing key, arrival) of every event answering it.
    pub answers: HashMap<String, Vec<(String, std::time::Instant)>>,
    /// routing key → events seen.
    pub counts: HashMap<String, usize>,
    /// Every `agent.health`, in arrival order.
    pub health: Vec<HealthSeen>,
}

/// One `agent.health` as the tap saw it arrive.
#[derive(Debug, Clone)]
pub struct HealthSeen {
    pub agent_id: String,
    /// `details.health`.
    pub health: String,
    /// `details.heartbeat.status` (empty when the event has none).
    pub heartbeat: String,
    pub at: std::time::Instant,
}

#[derive(Clone)]
pub struct EventTap {
    pub state: Arc<Mutex<TapState>>,
    arrived: Arc<Notify>,
}

impl EventTap {
    /// Events with `routing_key` seen so far.
    pub fn count(&self, routing_key: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .counts
            .get(routing_key)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` events with `routing_key` have arrived; false after `deadline`.
    pub async fn wait_count(&self, routing_key: &str, n: usize, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            if self.count(routing_key) >= n {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.count(routing_key) >= n;
            }
        }
    }

    /// When the first `routing_key` event answering `message_id` arrived.
    pub fn answered_at(&self, message_id: &str, routing_key: &str) -> Option<std::time::Instant> {
        self.state
            .lock()
            .unwrap()
            .answers
            .get(message_id)?
            .iter()
            .find(|(k, _)| k == routing_key)
            .map(|(_, t)| *t)
    }

    /// Every event (routing keys) answering `message_id`.
    pub fn answers(&self, message_id: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .answers
            .get(message_id)
            .map(|v| v.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    /// Waits for the first event answering `message_id`: (routing key, arrival).
    pub async fn wait_any_answer(
        &self,
        message_id: &str,
        deadline: Duration,
    ) -> Option<(String, std::time::Instant)> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            let first = self
                .state
                .lock()
                .unwrap()
                .answers
                .get(message_id)
                .and_then(|v| v.first().cloned());
            if first.is_some() {
                return first;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until `message_id` is answered with `routing_key`; panics on `agent.error`.
    pub async fn wait_answer(
        &self,
        message_id: &str,
        routing_key: &str,
        deadline: Duration,
    ) -> Option<std::time::Instant> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            if let Some(t) = self.answered_at(message_id, routing_key) {
                return Some(t);
            }
            if self.answered_at(message_id, "agent.error").is_some() {
                panic!(
                    "{message_id} was answered with agent.error: {:?}",
                    self.answers(message_id)
                );
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl TestEnv {
    /// A second consumer of every event on the test's exchange, timestamping arrivals.
    pub async fn tap(&self) -> EventTap {
        let queue = format!("test-{}.tap-{}", self.id, uuid::Uuid::new_v4().simple());
        let (channel, mut consumer) = consume_all_events(
            &self.conn,
            &queue,
            &self.config.rabbitmq.exchange,
            "test-tap",
        )
        .await;
        let tap = EventTap {
            state: Default::default(),
            arrived: Arc::new(Notify::new()),
        };
        let (state, arrived) = (tap.state.clone(), tap.arrived.clone());
        actix_rt::spawn(async move {
            let _keep = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let at = std::time::Instant::now();
                let key = delivery.routing_key.as_str().to_string();
                let correlation = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.to_string());
                let health = (key == "agent.health")
                    .then(|| serde_json::from_slice::<Value>(&delivery.data).ok())
                    .flatten()
                    .map(|e| {
                        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                        HealthSeen {
                            agent_id: text(&e["agent_id"]),
                            health: text(&e["details"]["health"]),
                            heartbeat: text(&e["details"]["heartbeat"]["status"]),
                            at,
                        }
                    });
                {
                    let mut s = state.lock().unwrap();
                    *s.counts.entry(key.clone()).or_default() += 1;
                    if let Some(c) = correlation {
                        s.answers.entry(c).or_default().push((key, at));
                    }
                    s.health.extend(health);
                }
                arrived.notify_waiters();
            }
        });
        tap
    }

    /// Publishes every `(routing key, body)` without waiting for each confirm (a fresh
    /// `message_id` unless the body has one), then waits for all confirms. Returns each
    /// command's message id and the instant it was handed to the broker.
    pub async fn send_many(
        &self,
        commands: Vec<(&str, Value)>,
    ) -> Vec<(String, std::time::Instant)> {
        let mut sent = Vec::with_capacity(commands.len());
        let mut confirms = Vec::with_capacity(commands.len());
        for (routing_key, mut body) in commands {
            if body.get("message_id").is_none() {
                body["message_id"] = json!(uuid::Uuid::new_v4().to_string());
            }
            let id = body["message_id"].as_str().unwrap_or_default().to_string();
            let at = std::time::Instant::now();
            let confirm = self
                .channel
                .basic_publish(
                    self.config.rabbitmq.exchange.clone().into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body.to_string().as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
            sent.push((id, at));
        }
        for confirm in confirms {
            confirm.await.expect("confirm");
        }
        sent
    }

    /// Stops the test's own event queue (its consumer ends): for benches that read
    /// events through [`TestEnv::tap`] alone, so RabbitMQ routes each event once.
    /// `wait_event`, `answer` and friends see nothing afterwards.
    pub async fn mute_events(&self) {
        let ch = self.conn.create_channel().await.expect("channel");
        ch.queue_delete(
            format!("test-{}.events", self.id).into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the test's event queue");
        let _ = ch.close(200, "done".into()).await;
    }

    /// Messages ready in the command queue (not counting deliveries not yet acked).
    pub async fn command_queue_ready(&self) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                self.config.rabbitmq.command_queue.clone().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare of the command queue");
        let n = q.message_count();
        let _ = ch.close(200, "done".into()).await;
        n
    }
}

/// A TCP port on loopback that was free a moment ago (for `ADMIN_LISTEN` of a manager
/// process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET `path` from `addr`: (status, body); `Err` when nothing answers (yet).
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, String), String> {
    http_get_with(addr, path, &[], limit)
        .await
        .map(|(status, _, body)| (status, body))
}

/// GET `path` from `addr` with `headers` (`Name: value` lines): (status, the answer's
/// headers as they came, body); `Err` when nothing answers (yet).
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[&str],
    limit: Duration,
) -> Result<(u16, String, String), String> {
    http_request(addr, "GET", path, headers, None, limit).await
}

/// `method` `path` at `addr` with `headers` (`Name: value` lines) and `body` (sent with
/// its `Content-Length`): (status, the answer's headers as they came, body); `Err` when
/// nothing answers (yet).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
    limit: Duration,
) -> Result<(u16, String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    if let Some(body) = body {
        extra.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n{}",
            body.unwrap_or("")
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))??;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    Ok((status, head, body))
}
