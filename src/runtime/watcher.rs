//! The DockerWatcher: one Docker events stream for this instance's containers (die,
//! oom, kill, health_status, start, stop, pause, unpause), each sent on as a [`ContainerEvent`] to
//! whoever holds the agents (the supervisor, which routes it to the owning agent actor)
//! so a crash is seen in milliseconds. The stream is resubscribed with `since` = the
//! last event's time after any break, so nothing is missed; a periodic relist
//! ([`LookAtAll`]) asks every actor to look at its container anyway.
//!
//! The two messages are defined here, with what produces them, so the runtime layer
//! does not depend on the actors that handle them.

use std::time::Duration;

use actix::{Message, Recipient};
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::spec::{self, LABEL_AGENT_ID};
use crate::metrics::events::Reconnecting;
use crate::retry::Backoff;

/// Container events that can change an agent's state.
pub const WATCHED_EVENTS: [&str; 8] = [
    "die",
    "oom",
    "kill",
    "health_status",
    "start",
    "stop",
    "pause",
    "unpause",
];

/// A Docker event about an agent's container (from the DockerWatcher).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ContainerEvent {
    pub agent_id: String,
    /// Docker's action: die, oom, kill, health_status: ..., start, stop, pause, unpause.
    pub action: String,
    /// The exit code a `die` event carries.
    pub exit_code: Option<i64>,
    /// When Docker says it happened.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every agent looks at its container (the watcher's periodic relist, and after the
/// events stream broke).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LookAtAll;

pub struct DockerWatcher {
    docker: Docker,
    instance: String,
    relist: Duration,
    /// Where each container event goes.
    events: Recipient<ContainerEvent>,
    /// Where the relist goes.
    look_at_all: Recipient<LookAtAll>,
}

impl DockerWatcher {
    pub fn new(
        docker: Docker,
        instance: String,
        relist: Duration,
        events: Recipient<ContainerEvent>,
        look_at_all: Recipient<LookAtAll>,
    ) -> Self {
        DockerWatcher {
            docker,
            instance,
            relist,
            events,
            look_at_all,
        }
    }

    /// Watches until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Events from the moment the manager started (reconciliation saw before that).
        let mut since = chrono::Utc::now().timestamp().to_string();
        let mut backoff = Backoff::new(Duration::from_secs(10));
        let mut relist = tokio::time::interval(self.relist);
        relist.tick().await;
        loop {
            let mut filters = spec::managed_filters(&self.instance);
            filters.insert("type", vec!["container".to_string()]);
            filters.insert(
                "event",
                WATCHED_EVENTS.iter().map(|e| e.to_string()).collect(),
            );
            let options = EventsOptionsBuilder::new()
                .since(&since)
                .filters(&filters)
                .build();
            let mut stream = self.docker.events(Some(options));
            tracing::debug!(%since, "watching Docker events");
            let broke = loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(event)) => {
                            backoff.reset();
                            let at = event
                                .time_nano
                                .map(chrono::DateTime::from_timestamp_nanos)
                                .or_else(|| event.time.and_then(|s| chrono::DateTime::from_timestamp(s, 0)));
                            if let Some(nanos) = event.time_nano {
                                since = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
                            } else if let Some(secs) = event.time {
                                since = secs.to_string();
                            }
                            let action = event.action.unwrap_or_default();
                            let mut attrs = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                            let exit_code = attrs.get("exitCode").and_then(|c| c.parse().ok());
                            if let Some(agent_id) = attrs.remove(LABEL_AGENT_ID) {
                                tracing::debug!(%agent_id, %action, ?exit_code, "container event");
                                self.events.do_send(ContainerEvent { agent_id, action, exit_code, at });
                            }
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "the events stream ended".to_string(),
                    },
                    _ = relist.tick() => self.look_at_all.do_send(LookAtAll),
                    _ = shutdown.changed() => return,
                }
            };
            crate::metrics::emit(Reconnecting {
                service: "docker_events",
            });
            let delay = backoff.next_delay();
            tracing::warn!(error = %broke, retry_in_ms = delay.as_millis() as u64, "Docker events stream broke; resubscribing");
            // Whatever happened while the stream was down is looked at now.
            self.look_at_all.do_send(LookAtAll);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
