//! Wiring: connects to Docker, Redis and RabbitMQ and starts the admin endpoint and the
//! leader election ([`Standby`]); once leading, reconciles, starts the supervisor, the
//! watches and the consumer ([`Manager`]), and shuts them down in order, handing the
//! lease over last.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use thiserror::Error;
use tokio::sync::watch;

use crate::actors::readiness;
use crate::actors::reconcile;
use crate::actors::supervisor::Supervisor;
use crate::broker::consumer::{consumer_name, CommandConsumer, CONSUMER_NAME_PREFIX};
use crate::broker::publisher::EventPublisher;
use crate::config::{Config, CredentialMode, DeploymentMode};
use crate::context::Deps;
use crate::error::RuntimeError;
use crate::leader::{Backend, Elector, RedisLeaseSpec, Role};
pub use crate::leader::{OnDeposed, EXIT_DEPOSED};
use crate::redact;
use crate::runtime::agent_urls::{self, AgentUrl};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::gpu::GpuRuntime;
use crate::runtime::swarm::SwarmRuntime;
use crate::runtime::watcher::DockerWatcher;
use crate::runtime::Runtime;
use crate::store::{Candidate, Store};

/// Where to look when a service is down.
const START_SERVICES: &str = "start it with scripts/services.sh";

#[derive(Debug, Error)]
pub enum StartError {
    #[error("Docker is not usable ({host}): {message}; {START_SERVICES}")]
    Docker { host: String, message: String },
    #[error("Redis is not reachable at {url}: {message}; {START_SERVICES}")]
    Redis { url: String, message: String },
    #[error("RabbitMQ is not reachable at {url}: {message}; {START_SERVICES}")]
    RabbitMq { url: String, message: String },
    #[error("reconciliation failed: {0}")]
    Reconcile(String),
    /// Per-agent credentials cannot be managed (the management API or Redis ACLs).
    #[error(
        "the agents' own credentials cannot be managed ({endpoint}): {message}; enable the \
             rabbitmq_management plugin (scripts/services.sh does), check RABBITMQ_MANAGEMENT_URL \
             and that its user has the administrator tag and the Redis user may run ACL, or set \
             AGENT_CREDENTIALS=shared"
    )]
    Credentials { endpoint: String, message: String },
    #[error("leader election: {0}")]
    Leader(String),
    #[error("egress (contract section 11): {0} (set EGRESS_MODE)")]
    Egress(String),
    #[error("admin endpoint cannot listen on {listen}: {message} (set ADMIN_LISTEN)")]
    Admin { listen: String, message: String },
    #[error("{} mode cannot start: {message}", mode.as_str())]
    Mode {
        mode: DeploymentMode,
        message: String,
    },
}

/// Warns at start about what weakens the contract's promises: agents sharing one set
/// of credentials, the Docker API without TLS.
fn warn_about_transport(config: &Config) {
    if config.agents.credentials == CredentialMode::Shared {
        tracing::warn!(
            rabbitmq = %redact::url(config.agent_rabbitmq_url()),
            redis = %redact::url(config.agent_redis_url()),
            "AGENT_CREDENTIALS=shared: every agent gets the same RabbitMQ and Redis credentials; \
             a compromised agent can use them to reach other agents' queues and records \
             (docs/SECURITY.md)"
        );
    }
    if let Some(host) = config.docker.host() {
        if (host.starts_with("tcp://") || host.starts_with("http://")) && !config.docker.uses_tls()
        {
            tracing::warn!(
                docker_host = host,
                "the Docker API is spoken to without TLS: whoever can reach it is root on the \
                 Docker host; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"
            );
        }
    }
}

/// Gives agents URLs they can use when AGENT_RABBITMQ_URL / AGENT_REDIS_URL are not set
/// and the manager's own name loopback (the gateway of their network, where the service
/// answers there), and says at start what they get or why they cannot.
async fn derive_agent_urls(config: &mut Config, docker: &bollard::Docker) {
    let timeout = Duration::from_secs(config.docker.timeout_s.clamp(1, 5));
    let urls = agent_urls::resolve(config, docker, timeout).await;
    for u in &urls {
        match u {
            AgentUrl::Derived {
                service,
                shown,
                gateway,
                ..
            } => tracing::info!(
                url = %shown,
                %gateway,
                network = %config.docker.network,
                "agents reach {} at the gateway of their network ({} not set)",
                service.name(),
                service.setting()
            ),
            AgentUrl::Unreachable {
                service,
                shown,
                why,
            } => tracing::warn!(
                url = %shown,
                "agents are given a {} URL on loopback, which inside their containers is the \
                 container itself: they cannot reach it (no heartbeat arrives): {why}; {}",
                service.name(),
                u.fix().unwrap_or_default()
            ),
        }
    }
    agent_urls::apply(config, &urls);
}

/// A manager connected to Docker, Redis and RabbitMQ, its admin endpoint up, electing
/// (contract section 12); it acts once [`Standby::lead`] returns.
pub struct Standby {
    config: Arc<Config>,
    store: Store,
    docker: bollard::Docker,
    publisher: EventPublisher,
    deps: Deps,
    elector: Elector,
    me: Candidate,
    shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    deps_ok: watch::Receiver<bool>,
    consuming_tx: watch::Sender<bool>,
    admin: Option<(actix_web::dev::ServerHandle, std::net::SocketAddr)>,
}

/// A running manager: the leader, acting.
pub struct Manager {
    supervisor: Addr<Supervisor>,
    shutdown: watch::Sender<bool>,
    consumer: actix_rt::task::JoinHandle<()>,
    /// Publishes the outbox; flushed last at shutdown.
    drainer: actix_rt::task::JoinHandle<()>,
    /// The admin HTTP server and the address it listens on.
    admin: Option<(actix_web::dev::ServerHandle, std::net::SocketAddr)>,
    elector: Elector,
    term: u64,
}

/// This manager's id in the leader hash: unique per process.
fn candidate() -> Candidate {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    let pid = std::process::id();
    let short = uuid::Uuid::new_v4().simple().to_string();
    Candidate {
        id: format!("{host}-{pid}-{}", &short[..8]),
        host,
        pid,
    }
}

impl Standby {
    /// Connects to Docker, Redis and RabbitMQ, starts the admin endpoint and the
    /// election. Must run inside an actix system.
    ///
    /// `on_deposed`: what the election itself does when this manager's leadership ends
    /// without a hand-over (the daemon exits at once; an in-process manager stops).
    pub async fn prepare(mut config: Config, on_deposed: OnDeposed) -> Result<Standby, StartError> {
        let docker_host = config.docker.host().unwrap_or("local socket").to_string();
        let docker_err = |message: String| StartError::Docker {
            host: docker_host.clone(),
            message,
        };
        crate::tls::install_provider();
        let runtime = DockerRuntime::connect(&config).map_err(|e| docker_err(e.to_string()))?;
        let docker = runtime.client().clone();

        let store = Store::connect(&config.redis)
            .await
            .map_err(|e| StartError::Redis {
                url: redact::url(&config.redis.url),
                message: e.to_string(),
            })?;
        store.ping().await.map_err(|e| StartError::Redis {
            url: redact::url(&config.redis.url),
            message: e.to_string(),
        })?;

        // One trait, one backend per mode: the actors never know which.
        let mut gpu_inventory = None;
        let runtime: Arc<dyn Runtime> = match config.deployment_mode {
            DeploymentMode::Docker => Arc::new(runtime),
            DeploymentMode::Swarm => Arc::new(SwarmRuntime::new(runtime, &config)),
            DeploymentMode::Gpu => {
                let gpu = GpuRuntime::new(runtime, store.clone(), &config).await;
                gpu_inventory = Some(gpu.inventory().len() as u64);
                Arc::new(gpu)
            }
        };
        runtime.prepare().await.map_err(|e| match e {
            RuntimeError::Setup(message) => StartError::Mode {
                mode: config.deployment_mode,
                message,
            },
            RuntimeError::Store(e) => StartError::Redis {
                url: redact::url(&config.redis.url),
                message: e.to_string(),
            },
            e => docker_err(e.to_string()),
        })?;

        derive_agent_urls(&mut config, &docker).await;
        warn_about_transport(&config);
        let egress = crate::egress::build(&mut config, &docker)
            .await
            .map_err(StartError::Egress)?;
        let config = Arc::new(config);

        let publisher = EventPublisher::with_outbox(config.rabbitmq.clone(), store.clone());
        publisher
            .connect()
            .await
            .map_err(|e| StartError::RabbitMq {
                url: redact::url(&config.rabbitmq.url),
                message: e.to_string(),
            })?;

        let endpoint = redact::url(&config.rabbitmq.management_url());
        let deps = Deps::new(
            runtime.clone(),
            store.clone(),
            publisher.clone(),
            config.clone(),
            egress.filter,
        )
        .map_err(|e| StartError::Credentials {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        if let Some(listener) = egress.proxy {
            // Every manager serves it, leader or standby: it only reads records.
            actix_rt::spawn(crate::egress::proxy::serve(
                listener,
                config.instance.clone(),
                config.egress.clone(),
                store.clone(),
                shutdown_rx.clone(),
            ));
        }
        let (deps_ok_tx, deps_ok) = watch::channel(true);
        actix_rt::spawn(readiness::watch_dependencies(
            store.clone(),
            runtime.clone(),
            deps_ok_tx,
            shutdown_rx.clone(),
        ));

        let me = candidate();
        let timing = config.leader.timing();
        let elector = Elector::start(
            Backend::Redis(Box::new(RedisLeaseSpec {
                redis: config.redis.clone(),
                instance: config.instance.clone(),
                me: me.clone(),
                since: crate::protocol::rfc3339(chrono::Utc::now()),
                lease_ms: timing.lease.as_millis() as u64,
                marker_ms: (timing.renew_every * 2).as_millis() as u64,
            })),
            timing,
            on_deposed,
        );

        let (consuming_tx, consuming) = watch::channel(false);
        let admin = if let Some(listen) = config.admin_listen() {
            let readiness = crate::admin::Readiness {
                consuming,
                dependencies: deps_ok.clone(),
                role: elector.role(),
                instance: config.instance.clone(),
            };
            let source = crate::admin::MetricsSource {
                store: store.clone(),
                gpu_inventory,
                quotas: config.quotas.clone(),
                egress: deps.egress.clone(),
            };
            let (server, addr) = crate::admin::serve(
                listen,
                readiness,
                source,
                config.admin_token().map(str::to_string),
                config.rabbitmq.clone(),
            )
            .map_err(|e| StartError::Admin {
                listen: listen.to_string(),
                message: e.to_string(),
            })?;
            let handle = server.handle();
            actix_rt::spawn(server);
            tracing::info!(
                %addr,
                token = config.admin_token().is_some(),
                "admin endpoint: / (status page) /healthz /readyz /metrics"
            );
            Some((handle, addr))
        } else {
            None
        };
        tracing::info!(id = %me.id, instance = %config.instance, "standing by for the leader lease");
        Ok(Standby {
            config,
            store,
            docker,
            publisher,
            deps,
            elector,
            me,
            shutdown,
            shutdown_rx,
            deps_ok,
            consuming_tx,
            admin,
        })
    }

    /// Where the admin endpoint listens (when on).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Waits for the lease, then takes over: the same reconciliation as a start (adopt,
    /// finish half-done commands, hold the halts), then consumes. Returns once serving.
    pub async fn lead(self) -> Result<Manager, StartError> {
        let mut role = self.elector.role();
        let term = match role.wait_for(|r| !matches!(r, Role::Standby)).await {
            Ok(r) => match *r {
                Role::Leader { term } => term,
                other => {
                    return Err(StartError::Leader(format!(
                        "the election ended as {} before leading",
                        other.name()
                    )))
                }
            },
            Err(_) => return Err(StartError::Leader("the election stopped".into())),
        };
        stop_when_deposed(role, self.shutdown.clone());
        let previous = self
            .store
            .leader_record(&self.config.instance)
            .await
            .ok()
            .and_then(|h| h.get("previous").cloned())
            .unwrap_or_default();
        self.act(term, previous).await
    }

    /// The acting part: adoption, the supervisor, the outbox, the watches, the consumer.
    async fn act(self, term: u64, previous: String) -> Result<Manager, StartError> {
        let Standby {
            config,
            store,
            docker,
            publisher,
            deps,
            elector,
            me,
            shutdown,
            shutdown_rx,
            deps_ok,
            consuming_tx,
            admin,
        } = self;
        // Every write from here on carries the term: refused once a successor leads.
        store.fence_with(&config.instance, term);
        let endpoint = redact::url(&config.rabbitmq.management_url());
        let adoption = reconcile::adopt(&deps).await.map_err(|e| match e {
            crate::error::AgentError::Credentials(e) => StartError::Credentials {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            },
            e => StartError::Reconcile(e.to_string()),
        })?;
        actix_rt::spawn(reconcile::reap_orphans(deps.clone(), adoption.orphans));
        let adopted = adoption.agents;
        let supervisor = Supervisor::create(|ctx| {
            ctx.set_mailbox_capacity(crate::actors::supervisor::MAILBOX_CAPACITY);
            Supervisor::new(deps, adopted)
        });

        let drainer = actix_rt::spawn(publisher.clone().drain_outbox(shutdown_rx.clone()));
        // The automatic halt (section 10): with per-agent credentials (an agent is known
        // by its own user) and a limit above 0.
        if config.agents.credentials == CredentialMode::PerAgent
            && config.halt.max_messages_per_s > 0.0
        {
            if let Ok(management) =
                crate::broker::management::Management::for_config(&config.rabbitmq)
            {
                actix_rt::spawn(crate::actors::rate_watch::run(
                    management,
                    store.clone(),
                    config.halt.max_messages_per_s,
                    Duration::from_secs(config.halt.window_s),
                    Duration::from_millis(config.halt.watch_interval_ms),
                    supervisor.clone().recipient(),
                    shutdown_rx.clone(),
                ));
            }
        }
        let watcher = DockerWatcher::new(
            docker,
            config.instance.clone(),
            Duration::from_secs(config.health.relist_interval_s),
            supervisor.clone().recipient(),
            supervisor.clone().recipient(),
        );
        actix_rt::spawn(watcher.run(shutdown_rx.clone()));
        let (ready_tx, mut ready) = watch::channel(false);
        let consumer = CommandConsumer::new(
            config.rabbitmq.clone(),
            config.agent_policy(),
            supervisor.clone().recipient(),
            supervisor.clone().recipient(),
            supervisor.clone().recipient(),
            publisher.clone(),
            deps_ok,
        )
        .named(consumer_name(&config.instance, &me.id));
        let consumer = actix_rt::spawn(consumer.run(shutdown_rx.clone(), ready_tx));
        let limit = Duration::from_secs(config.rabbitmq.timeout_s * 2);
        let serving = tokio::time::timeout(limit, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        if !serving {
            let _ = shutdown.send(true);
            return Err(StartError::RabbitMq {
                url: redact::url(&config.rabbitmq.url),
                message: "could not start consuming the command queue".into(),
            });
        }
        // Ours is consuming: a deposed leader's consumer is closed once the broker lists ours.
        actix_rt::spawn(fence_old_consumers(
            config.clone(),
            me.id.clone(),
            shutdown_rx,
        ));
        // `/readyz` follows the consumer from now on.
        actix_rt::spawn(async move {
            loop {
                let now = *ready.borrow_and_update();
                if consuming_tx.send(now).is_err() || ready.changed().await.is_err() {
                    let _ = consuming_tx.send(false);
                    return;
                }
            }
        });
        let event = crate::protocol::Event::for_manager(
            crate::protocol::EventKind::ManagerLeader,
            serde_json::json!({"id": me.id, "host": me.host, "pid": me.pid, "term": term, "previous": previous}),
        );
        if let Err(e) = crate::ports::EventSink::publish(&publisher, &[event]).await {
            tracing::warn!(error = %e, "could not publish manager.leader");
        }
        tracing::info!(
            mode = ?config.deployment_mode,
            instance = %config.instance,
            exchange = %config.rabbitmq.exchange,
            queue = %config.rabbitmq.command_queue,
            term,
            "agent-manager serving (leader)"
        );
        Ok(Manager {
            supervisor,
            shutdown,
            consumer,
            drainer,
            admin,
            elector,
            term,
        })
    }

    /// Stops standing by: the election ends (nothing was held), the admin endpoint stops.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some((admin, _)) = &self.admin {
            admin.stop(true).await;
        }
        self.elector.release(Duration::from_secs(5)).await;
        tracing::info!("agent-manager stopped (standby)");
    }
}

/// Closes this installation's command consumers that are not ours (a deposed leader's,
/// frozen or cut off): RabbitMQ gives what they held unacked back to the queue, for us,
/// and a thawed one receives nothing more. Needs the management API; without it a
/// frozen leader's unacked commands come back when the broker's heartbeat gives up on
/// its connection.
///
/// The management API lists a connection only once the broker's statistics collector
/// has seen it (`collect_statistics_interval`, 5 s by default): a listing without our
/// own consumer is older than it and may miss a frozen leader's younger one too, so it
/// is read again until ours is in it (every older connection then is), within
/// [`FENCE_LIMIT`].
async fn fence_old_consumers(config: Arc<Config>, me: String, shutdown: watch::Receiver<bool>) {
    let management = match crate::broker::management::Management::for_config(&config.rabbitmq) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "no management API: a previous leader's consumer is not closed");
            return;
        }
    };
    let prefix = format!("{CONSUMER_NAME_PREFIX} {} ", config.instance);
    let ours = consumer_name(&config.instance, &me);
    let deadline = tokio::time::Instant::now() + FENCE_LIMIT;
    let mut backoff = crate::retry::Backoff::new(Duration::from_secs(1));
    let listed = loop {
        if *shutdown.borrow() {
            return;
        }
        match management.connections_named(&prefix).await {
            Ok(listed) if listed.iter().any(|(_, given)| *given == ours) => break listed,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not list the command consumers"),
        }
        let pause = backoff.next_delay();
        if tokio::time::Instant::now() + pause >= deadline {
            tracing::warn!(
                limit_s = FENCE_LIMIT.as_secs(),
                "the broker did not list this manager's consumer: a previous leader's consumer, if any, is not closed"
            );
            return;
        }
        tokio::time::sleep(pause).await;
    };
    for (name, given) in listed.into_iter().filter(|(_, g)| *g != ours) {
        match management.close_connection(&name).await {
            Ok(()) => {
                tracing::info!(connection = %given, "closed a previous leader's command consumer")
            }
            Err(e) => {
                tracing::warn!(connection = %given, error = %e, "could not close a previous leader's command consumer")
            }
        }
    }
}

/// How long a new leader waits for the broker to list its consumer before it gives up
/// closing a previous leader's (several of RabbitMQ's default statistics intervals).
const FENCE_LIMIT: Duration = Duration::from_secs(30);

/// On [`Role::Deposed`], stop acting (the daemon's election has exited the process
/// already; an in-process manager stops consuming and its watches end).
fn stop_when_deposed(mut role: watch::Receiver<Role>, shutdown: watch::Sender<bool>) {
    actix_rt::spawn(async move {
        let Ok(r) = role.wait_for(|r| matches!(r, Role::Deposed { .. })).await else {
            return;
        };
        tracing::error!(
            term = r.term().unwrap_or_default(),
            "leadership lost: this manager stops acting"
        );
        let _ = shutdown.send(true);
    });
}

impl Manager {
    /// Connects, waits for the leader lease (at once when no other manager of this
    /// installation holds it) and acts; returns once the consumer is serving commands.
    /// Must run inside an actix system.
    pub async fn start(config: Config) -> Result<Manager, StartError> {
        Standby::prepare(config, OnDeposed::Say).await?.lead().await
    }

    pub fn supervisor(&self) -> &Addr<Supervisor> {
        &self.supervisor
    }

    /// Where the admin endpoint listens (when on).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// The lease term this manager leads in.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Stops consuming, lets in-flight commands finish and settle, then hands the lease
    /// over, and returns. Agent containers keep running.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some((admin, _)) = &self.admin {
            admin.stop(true).await;
        }
        if tokio::time::timeout(Duration::from_secs(60), self.consumer)
            .await
            .is_err()
        {
            tracing::warn!("consumer did not stop within 60 s");
        }
        // In-flight commands are settled: the agent actors retire, so their health
        // timers and self-healing stop acting on agents this manager lets go of.
        let retired = tokio::time::timeout(
            Duration::from_secs(15),
            self.supervisor.send(crate::actors::supervisor::Shutdown),
        )
        .await;
        if !matches!(retired, Ok(Ok(()))) {
            tracing::warn!("agent actors did not retire within 15 s");
        }
        // The outbox gets one last flush.
        if tokio::time::timeout(Duration::from_secs(15), self.drainer)
            .await
            .is_err()
        {
            tracing::warn!("events left in the Redis outbox; the next start publishes them");
        }
        // Nothing acts any more: a standby may take over at once.
        self.elector.release(Duration::from_secs(5)).await;
        tracing::info!("agent-manager stopped");
    }
}
