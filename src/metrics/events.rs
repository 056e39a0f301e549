//! What the code tells the registry, as typed internal events (vector's
//! `internal_events`): a call site says what happened, with named fields, and the
//! event's [`InternalEvent::emit`] records it under its [`Metric`]. The label values of
//! each metric are given here, in its declared label order, and nowhere else.

use std::collections::BTreeMap;
use std::time::Duration;

use super::catalog::Metric;
use super::registry;

/// Something that happened, recorded by the registry.
pub trait InternalEvent {
    fn emit(self);
}

/// Records `event` (`metrics::emit(CommandHandled { .. })`).
pub fn emit(event: impl InternalEvent) {
    event.emit();
}

/// A command was handled (or refused, dead-lettered, handed back for a retry):
/// `agent_manager_commands_total`.
pub struct CommandHandled<'a> {
    /// Its routing key, or `unknown`.
    pub command: &'a str,
    /// `ok`, the `agent.error` code answered, `dead_lettered` or `retry`.
    pub outcome: &'a str,
}

impl InternalEvent for CommandHandled<'_> {
    fn emit(self) {
        registry::inc(Metric::CommandsTotal, [self.command, self.outcome]);
    }
}

/// A command was acknowledged, `took` after its delivery:
/// `agent_manager_command_duration_seconds`.
pub struct CommandAcknowledged<'a> {
    pub command: &'a str,
    pub took: Duration,
}

impl InternalEvent for CommandAcknowledged<'_> {
    fn emit(self) {
        registry::observe(Metric::CommandDurationSeconds, [self.command], self.took);
    }
}

/// An event was made durable (confirmed, or kept in the outbox):
/// `agent_manager_events_published_total`.
pub struct EventPublished<'a> {
    /// Its routing key.
    pub event: &'a str,
}

impl InternalEvent for EventPublished<'_> {
    fn emit(self) {
        registry::inc(Metric::EventsPublishedTotal, [self.event]);
    }
}

/// The outbox was found to hold `events`: `agent_manager_outbox_events`.
pub struct OutboxLength {
    pub events: u64,
}

impl InternalEvent for OutboxLength {
    fn emit(self) {
        registry::set(Metric::OutboxEvents, [], self.events as f64);
    }
}

/// The manager restarted an agent by itself: `agent_manager_restarts_total`.
pub struct AgentHealed<'a> {
    /// Why (`Reason::as_str`).
    pub reason: &'a str,
}

impl InternalEvent for AgentHealed<'_> {
    fn emit(self) {
        registry::inc(Metric::RestartsTotal, [self.reason]);
    }
}

/// A Docker API call returned (or timed out) after `took`:
/// `agent_manager_docker_call_duration_seconds`.
pub struct DockerCallTimed<'a> {
    pub op: &'a str,
    pub took: Duration,
}

impl InternalEvent for DockerCallTimed<'_> {
    fn emit(self) {
        registry::observe(Metric::DockerCallDurationSeconds, [self.op], self.took);
    }
}

/// One of the credential issuer's operations (both services) took `took`:
/// `agent_manager_credential_call_duration_seconds`.
pub struct CredentialCallTimed<'a> {
    pub op: &'a str,
    pub took: Duration,
}

impl InternalEvent for CredentialCallTimed<'_> {
    fn emit(self) {
        registry::observe(Metric::CredentialCallDurationSeconds, [self.op], self.took);
    }
}

/// A connection to `service` was lost and is being made again:
/// `agent_manager_reconnects_total`.
pub struct Reconnecting<'a> {
    /// `docker_events`, `rabbitmq_consumer` or `rabbitmq_publisher`.
    pub service: &'a str,
}

impl InternalEvent for Reconnecting<'_> {
    fn emit(self) {
        registry::inc(Metric::ReconnectsTotal, [self.service]);
    }
}

/// Whether the manager takes commands, as a scrape finds it: `agent_manager_ready`.
pub struct Readiness {
    pub ready: bool,
}

impl InternalEvent for Readiness {
    fn emit(self) {
        registry::set(Metric::Ready, [], if self.ready { 1.0 } else { 0.0 });
    }
}

/// The agents counted by (status, type), as a scrape reads the records:
/// `agent_manager_agents` (a pair not given has no series any more).
pub struct AgentsCounted {
    pub by_status_and_type: BTreeMap<(String, String), f64>,
}

impl InternalEvent for AgentsCounted {
    fn emit(self) {
        registry::set_all(
            Metric::Agents,
            self.by_status_and_type
                .into_iter()
                .map(|((status, kind), n)| (vec![status, kind], n))
                .collect(),
        );
    }
}

/// A halt was engaged (section 10): `agent_manager_halts_engaged_total`.
pub struct HaltEngaged {
    /// Engaged by the manager itself (a publishing rate over the limit).
    pub automatic: bool,
}

impl InternalEvent for HaltEngaged {
    fn emit(self) {
        let kind = if self.automatic {
            "automatic"
        } else {
            "command"
        };
        registry::inc(Metric::HaltsEngagedTotal, [kind]);
    }
}

/// What the halts hold now: `agent_manager_halts` and `agent_manager_halted_agents`.
pub struct HaltsHeld {
    pub halts: usize,
    pub agents: usize,
}

impl InternalEvent for HaltsHeld {
    fn emit(self) {
        registry::set(Metric::Halts, [], self.halts as f64);
        registry::set(Metric::HaltedAgents, [], self.agents as f64);
    }
}

/// This manager's part in the election changed (contract section 12):
/// `agent_manager_leader{role}` and `agent_manager_leader_term`.
pub struct RoleChanged {
    /// `leader`, `standby` or `deposed`.
    pub role: &'static str,
    pub term: Option<u64>,
}

impl InternalEvent for RoleChanged {
    fn emit(self) {
        for role in ["leader", "standby", "deposed"] {
            registry::set(
                Metric::LeaderRole,
                [role],
                f64::from(u8::from(role == self.role)),
            );
        }
        if let Some(term) = self.term {
            registry::set(Metric::LeaderTerm, [], term as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event lands under its metric with the declared label names (the values
    /// are this test's own, so tests running alongside do not disturb it).
    #[test]
    fn every_event_records_its_metric_with_its_declared_labels() {
        let took = Duration::from_millis(2);
        emit(CommandHandled {
            command: "agent.ev-test",
            outcome: "ok",
        });
        emit(CommandAcknowledged {
            command: "agent.ev-test",
            took,
        });
        emit(EventPublished {
            event: "agent.ev-test",
        });
        emit(OutboxLength { events: 0 });
        emit(AgentHealed { reason: "ev-test" });
        emit(DockerCallTimed {
            op: "ev-test",
            took,
        });
        emit(CredentialCallTimed {
            op: "ev-test",
            took,
        });
        emit(Reconnecting { service: "ev-test" });
        emit(Readiness { ready: true });
        emit(AgentsCounted {
            by_status_and_type: BTreeMap::from([(("running".into(), "ev-test".into()), 2.0)]),
        });
        let text = super::registry::render();
        let has = |line: &str| text.lines().any(|l| l.starts_with(line));
        for line in [
            "agent_manager_commands_total{command=\"agent.ev-test\",outcome=\"ok\"} ",
            "agent_manager_command_duration_seconds_count{command=\"agent.ev-test\"} ",
            "agent_manager_events_published_total{event=\"agent.ev-test\"} ",
            "agent_manager_outbox_events ",
            "agent_manager_restarts_total{reason=\"ev-test\"} ",
            "agent_manager_docker_call_duration_seconds_sum{op=\"ev-test\"} ",
            "agent_manager_credential_call_duration_seconds_bucket{op=\"ev-test\",le=\"+Inf\"} ",
            "agent_manager_reconnects_total{service=\"ev-test\"} ",
            "agent_manager_ready ",
            "agent_manager_agents{status=\"running\",type=\"ev-test\"} 2",
        ] {
            assert!(has(line), "no {line} in:\n{text}");
        }
    }
}
