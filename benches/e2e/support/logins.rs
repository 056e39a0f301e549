//! The agents' own logins (contract section 7) from the bench's side: each agent's
//! `RABBITMQ_URL` and `REDIS_URL` as its container has them, at the host's addresses
//! ([`own_urls`]); one login tried with them ([`amqp_login`], [`redis_login`]); and
//! connections of the agents' own users held open by the bench ([`Held`]), each
//! publishing to its agent's own result key while the probes are on, noting when the
//! broker refused it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::watch;

use crate::common::TestEnv;

/// How long one Docker, RabbitMQ or Redis call of these helpers may take.
pub const CALL_LIMIT: Duration = Duration::from_secs(30);

/// One agent's own URLs, as the bench (on the host) reaches the services.
#[derive(Debug, Clone)]
pub struct OwnUrls {
    pub agent_id: String,
    pub amqp: String,
    pub redis: String,
}

/// `url` with the host and port of `base` (the agents reach the services at their
/// network's gateway; the bench at the addresses the test config names).
pub fn from_host(url: &str, base: &str) -> String {
    let mut u = url::Url::parse(url).expect("the agent's URL parses");
    let b = url::Url::parse(base).expect("the bench's service URL parses");
    let _ = u.set_host(b.host_str());
    let _ = u.set_port(b.port());
    u.to_string()
}

/// Each agent's own URLs, read from its container's environment, `in_flight` inspects
/// at once, each bounded.
pub async fn own_urls(env: &TestEnv, ids: &[String], in_flight: usize) -> Vec<OwnUrls> {
    let docker = env.docker.clone();
    let (mq_base, redis_base) = (
        env.config.rabbitmq.url.clone(),
        env.config.redis.url.clone(),
    );
    futures_util::stream::iter(ids.iter().cloned())
        .map(|agent_id| {
            let (docker, mq_base, redis_base) =
                (docker.clone(), mq_base.clone(), redis_base.clone());
            async move {
                let inspected = tokio::time::timeout(
                    CALL_LIMIT,
                    docker.inspect_container(
                        &format!("agent-{agent_id}"),
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    ),
                )
                .await
                .unwrap_or_else(|_| panic!("inspect of agent-{agent_id} within {CALL_LIMIT:?}"))
                .unwrap_or_else(|e| panic!("inspect of agent-{agent_id}: {e}"));
                let vars = inspected.config.and_then(|c| c.env).unwrap_or_default();
                let var = |name: &str| {
                    vars.iter()
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .unwrap_or_else(|| panic!("{name} in agent-{agent_id}'s environment"))
                        .to_string()
                };
                OwnUrls {
                    amqp: from_host(&var("RABBITMQ_URL"), &mq_base),
                    redis: from_host(&var("REDIS_URL"), &redis_base),
                    agent_id,
                }
            }
        })
        .buffered(in_flight)
        .collect()
        .await
}

/// A connection to `url`, bounded: `Err` with the broker's or the socket's words.
pub async fn amqp_connect(url: &str) -> Result<Connection, String> {
    match tokio::time::timeout(
        CALL_LIMIT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from RabbitMQ within {CALL_LIMIT:?}")),
    }
}

/// One RabbitMQ login with `url`, closed at once: `Err` when refused.
pub async fn amqp_login(url: &str) -> Result<(), String> {
    let conn = amqp_connect(url).await?;
    let _ = tokio::time::timeout(CALL_LIMIT, conn.close(200, "login checked".into())).await;
    Ok(())
}

/// One Redis login with `url` and a PING: `Err` when refused.
pub async fn redis_login(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// When and why the broker refused a held connection: the first of the connection's
/// error event and a failed publish.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub at: Instant,
    pub why: String,
}

/// A connection of an agent's own user, held open by the bench, with one channel. A
/// task notes the connection's first error (the broker closing it); another publishes
/// to the agent's own result key every `probe` while the probes are on (see
/// [`Probes`]), and notes the first publish that fails.
pub struct Held {
    pub agent_id: String,
    conn: Connection,
    refused: Arc<OnceLock<Refusal>>,
    /// Publishes that went out.
    published: Arc<AtomicU64>,
}

/// Switches the held connections' publishing on and off; dropping it ends their tasks.
pub struct Probes {
    on: watch::Sender<bool>,
}

impl Probes {
    pub fn new() -> (Probes, watch::Receiver<bool>) {
        let (on, rx) = watch::channel(false);
        (Probes { on }, rx)
    }

    pub fn set(&self, on: bool) {
        let _ = self.on.send(on);
    }
}

impl Held {
    /// Logs in as the agent and opens a channel; starts the connection's two tasks.
    pub async fn open(
        own: &OwnUrls,
        exchange: &str,
        probe: Duration,
        on: watch::Receiver<bool>,
    ) -> Result<Held, String> {
        let conn = amqp_connect(&own.amqp).await?;
        let refused: Arc<OnceLock<Refusal>> = Arc::default();
        let published = Arc::new(AtomicU64::new(0));
        // Listened to before anything can go wrong: lapin drops events nobody listens to.
        let mut events = conn.events_listener();
        let noted = refused.clone();
        actix_rt::spawn(async move {
            while let Some(event) = events.next().await {
                if let lapin::Event::Error(e) = event {
                    let _ = noted.set(Refusal {
                        at: Instant::now(),
                        why: format!("closed: {e}"),
                    });
                    return;
                }
            }
        });
        let channel = tokio::time::timeout(CALL_LIMIT, conn.create_channel())
            .await
            .map_err(|_| format!("no channel within {CALL_LIMIT:?}"))?
            .map_err(|e| e.to_string())?;
        let key = agent_manager::protocol::task::result_key(&own.agent_id);
        let exchange = exchange.to_string();
        let (noted, count, status) = (refused.clone(), published.clone(), conn.status().clone());
        let mut on = on;
        actix_rt::spawn(async move {
            loop {
                // Ends when the switch is dropped.
                if on.wait_for(|on| *on).await.is_err() || noted.get().is_some() {
                    return;
                }
                let sent = tokio::time::timeout(
                    CALL_LIMIT,
                    channel.basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        b"{}",
                        BasicProperties::default(),
                    ),
                )
                .await;
                let failed = match sent {
                    Ok(Ok(_)) if status.connected() => None,
                    Ok(Ok(_)) => Some("publish: the connection is no longer open".to_string()),
                    Ok(Err(e)) => Some(format!("publish: {e}")),
                    Err(_) => Some(format!("publish: not sent within {CALL_LIMIT:?}")),
                };
                if let Some(why) = failed {
                    let _ = noted.set(Refusal {
                        at: Instant::now(),
                        why,
                    });
                    return;
                }
                count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(probe).await;
            }
        });
        Ok(Held {
            agent_id: own.agent_id.clone(),
            conn,
            refused,
            published,
        })
    }

    /// When and why the broker refused this connection, if it has.
    pub fn refused(&self) -> Option<Refusal> {
        self.refused.get().cloned()
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Closes the connection if it is still open (bounded).
    pub async fn close(&self) {
        if self.conn.status().connected() {
            let _ =
                tokio::time::timeout(CALL_LIMIT, self.conn.close(200, "bench done".into())).await;
        }
    }
}

/// Opens a held connection for each of `owns`, `in_flight` at a time.
pub async fn hold_all(
    owns: &[OwnUrls],
    exchange: &str,
    probe: Duration,
    on: &watch::Receiver<bool>,
    in_flight: usize,
) -> Vec<Held> {
    futures_util::stream::iter(owns.iter())
        .map(|own| {
            let on = on.clone();
            async move {
                Held::open(own, exchange, probe, on)
                    .await
                    .unwrap_or_else(|e| panic!("{}'s own login: {e}", own.agent_id))
            }
        })
        .buffered(in_flight)
        .collect()
        .await
}
