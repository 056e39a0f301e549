//! The Supervisor: the registry `agent_id → AgentActor`. It routes each command to its
//! agent's actor (spawning one for a create), answers commands for unknown agents, and
//! retires an actor once its agent is deleted and it has nothing left to do. Each check
//! interval it reads every agent's heartbeat in one Redis round trip and hands each
//! actor its own ([`Beat`]); the agents waiting for their first heartbeat
//! ([`AwaitingFirstBeat`]: starting, their image promises one) have their keys read
//! every second besides, in one `MGET` for all of them (nothing when none waits), so
//! each turns healthy within a second of writing it. Team commands go to the [`TeamActor`] it owns, with the
//! would-be members' states asked of their actors at once (so in command order); a
//! deleted agent's teams are told. With per-agent credentials it audits the agents'
//! users every `CREDENTIALS_AUDIT_INTERVAL_S` and as soon as a heartbeat read meets a
//! restarted Redis: each agent whose users are missing is told to make them again
//! ([`RestoreLogin`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::agent::{
    AgentActor, Apply, AwaitingFirstBeat, Beat, Describe, Listed, Look, RestoreLogin, Retire,
};
use crate::actors::halt::{HaltActor, HaltMemberGone, RunHalt};
pub use crate::actors::rate_watch::AutoHalt;
use crate::actors::team::{MemberGone, RunTeamCommand, TeamActor};
/// What the CommandConsumer sends, handled here.
pub use crate::broker::consumer::{Dispatch, DispatchHalt, DispatchTeam};
use crate::context::Deps;
use crate::error::AgentError;
use crate::health::{BeatRead, BeatTrust};
use crate::lifecycle;
use crate::protocol::{heartbeat, CommandKind, ErrorCode};
use crate::record::AgentRecord;
use crate::runtime::spec::LABEL_AGENT_ID;
/// What the DockerWatcher sends, handled here.
pub use crate::runtime::watcher::{ContainerEvent, LookAtAll};
use crate::team::MemberView;

/// Mailbox bound of the supervisor and the agent actors. Deliveries in flight are
/// already bounded by the RabbitMQ prefetch; a full actix mailbox would instead defer
/// a `send` and could reorder one agent's commands, so the bound is never reached.
pub const MAILBOX_CAPACITY: usize = 1 << 20;

/// The time over which the first looks of the agents adopted at start are spread.
const ADOPTION_LOOK_SPREAD: Duration = Duration::from_secs(1);

/// How often the keys of agents waiting for their first heartbeat are read (when the
/// check interval is longer: otherwise the regular read is as quick).
pub const FIRST_BEAT_READ_EVERY: Duration = Duration::from_secs(1);

/// How many agents the supervisor holds (for readiness and tests).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountAgents;

/// The manager is shutting down: every agent actor retires (its timers and pending
/// restarts with it) and so does the supervisor, so nothing keeps acting on agents a
/// stopped manager let go of (a new manager in the same process adopts them).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

struct Entry {
    addr: Addr<AgentActor>,
    /// Whose agent it is and of what type, once known (a record, or a create's spec):
    /// what a halt's scope is resolved against.
    owner: Option<(String, crate::protocol::AgentType)>,
    /// Commands sent to the actor and not yet finished.
    inflight: usize,
}

pub struct Supervisor {
    agents: HashMap<String, Entry>,
    deps: Deps,
    /// Agents adopted at start, spawned when the actor starts.
    adopted: Vec<AgentRecord>,
    /// A heartbeat read is in flight (the next tick skips rather than piles up).
    reading_beats: bool,
    /// Whether the last read's missing heartbeat keys can be believed.
    beat_trust: BeatTrust,
    /// The one writer of team records; started with the supervisor.
    teams: Option<Addr<TeamActor>>,
    /// The one writer of halts; started with the supervisor.
    halts: Option<Addr<HaltActor>>,
    /// A users audit is in flight.
    auditing_logins: bool,
    /// Agents waiting for their first heartbeat, and until when their keys are read
    /// every [`FIRST_BEAT_READ_EVERY`] (what is left of their start period).
    first_beats: HashMap<String, Instant>,
    /// A first-beat read is in flight (the next tick skips).
    reading_first_beats: bool,
}

impl Supervisor {
    pub fn new(deps: Deps, adopted: Vec<AgentRecord>) -> Self {
        // After Redis was away, agents get an interval (and a second) to write again.
        let grace = Duration::from_secs(deps.config.health.heartbeat_interval_s + 1);
        Supervisor {
            agents: HashMap::new(),
            deps,
            adopted,
            reading_beats: false,
            beat_trust: BeatTrust::new(grace),
            teams: None,
            halts: None,
            auditing_logins: false,
            first_beats: HashMap::new(),
            reading_first_beats: false,
        }
    }

    /// The team actor (started with the supervisor; started here if asked earlier).
    fn halts(&mut self) -> Addr<HaltActor> {
        let deps = &self.deps;
        self.halts
            .get_or_insert_with(|| {
                HaltActor::create(|ctx| {
                    ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                    HaltActor::new(deps.clone())
                })
            })
            .clone()
    }

    fn teams(&mut self) -> Addr<TeamActor> {
        let deps = &self.deps;
        self.teams
            .get_or_insert_with(|| {
                TeamActor::create(|ctx| {
                    ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                    TeamActor::new(deps.clone())
                })
            })
            .clone()
    }

    /// Reads every agent's heartbeat key (one pipelined round trip) and hands each
    /// actor its own. A missing key is passed on only when it can be believed
    /// ([`BeatTrust`]); otherwise the actor keeps what it last heard.
    fn read_heartbeats(&mut self, ctx: &mut Context<Self>) {
        if self.reading_beats || self.agents.is_empty() {
            return;
        }
        self.reading_beats = true;
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        let records = self.deps.records.clone();
        let read = async move {
            let batch = records.heartbeats(&ids).await?;
            let parsed: Vec<Option<_>> = batch
                .values
                .iter()
                .map(|v| v.as_deref().map(heartbeat::parse))
                .collect();
            Ok::<_, crate::error::StoreError>((ids, batch.server_run_id, parsed))
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            act.reading_beats = false;
            let (ids, server, parsed) = match result {
                Ok(read) => read,
                Err(e) => {
                    act.beat_trust.on_failure();
                    tracing::warn!(error = %e, "reading the agents' heartbeats failed");
                    return;
                }
            };
            if act.beat_trust.restarted(&server) {
                tracing::info!("Redis restarted; checking that the agents' users survived");
                act.audit_logins(ctx);
            }
            let trusted = act.beat_trust.on_read(&server, Instant::now());
            for (id, value) in ids.into_iter().zip(parsed) {
                let Some(entry) = act.agents.get(&id) else {
                    continue;
                };
                let read = match value {
                    Some(beat) => BeatRead::Present(beat),
                    None if trusted => BeatRead::Missing,
                    None => continue,
                };
                entry.addr.do_send(Beat(read));
            }
        }));
    }

    /// Reads the keys of the agents waiting for their first heartbeat (one round trip;
    /// nothing when none waits, or while the last read is in flight) and hands each key
    /// found to its actor. A missing key is no news to an agent that has not written one
    /// yet: the regular read, with [`BeatTrust`], passes those on.
    fn read_first_beats(&mut self, ctx: &mut Context<Self>) {
        if self.reading_first_beats {
            return;
        }
        let ids = first_beat_ids(&mut self.first_beats, Instant::now());
        if ids.is_empty() {
            return;
        }
        self.reading_first_beats = true;
        let records = self.deps.records.clone();
        let read = async move {
            let batch = records.heartbeats(&ids).await?;
            Ok::<_, crate::error::StoreError>((ids, batch.values))
        };
        ctx.spawn(read.into_actor(self).map(|result, act, _| {
            act.reading_first_beats = false;
            let (ids, values) = match result {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the starting agents' heartbeats failed; the next tick tries again");
                    return;
                }
            };
            for (id, value) in ids.into_iter().zip(values) {
                let (Some(raw), Some(entry)) = (value, act.agents.get(&id)) else {
                    continue;
                };
                entry
                    .addr
                    .do_send(Beat(BeatRead::Present(heartbeat::parse(&raw))));
            }
        }));
    }

    /// Lists the agents' users (one census of RabbitMQ and Redis) and tells each agent
    /// whose users are missing or incomplete to make them again.
    fn audit_logins(&mut self, ctx: &mut Context<Self>) {
        let Some(issuer) = self.deps.credentials.clone() else {
            return;
        };
        if self.auditing_logins || self.agents.is_empty() {
            return;
        }
        self.auditing_logins = true;
        let census = async move { issuer.census().await };
        ctx.spawn(census.into_actor(self).map(|result, act, _| {
            act.auditing_logins = false;
            let census = match result {
                Ok(census) => census,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the agents' users; the next audit tries again");
                    return;
                }
            };
            // Those without a workload (none made yet, failed, being deleted) have no
            // users to keep and let the message go; the others log what they restore.
            let mut lost = 0;
            for (id, entry) in &act.agents {
                // A halted agent's users are gone on purpose (section 10).
                if !census.complete.contains(id) && !act.deps.holds.is_held(id) {
                    entry.addr.do_send(RestoreLogin);
                    lost += 1;
                }
            }
            tracing::debug!(agents = lost, "users audit: agents without complete users");
        }));
    }

    fn spawn_agent(
        &mut self,
        ctx: &mut Context<Self>,
        agent_id: &str,
        record: Option<AgentRecord>,
        first_look_after: Duration,
    ) -> &mut Entry {
        let deps = self.deps.clone();
        let id = agent_id.to_string();
        let first_beats = ctx.address().recipient();
        let owner = record
            .as_ref()
            .map(|r| (r.spec.customer_id.clone(), r.spec.agent_type));
        self.agents.entry(id.clone()).or_insert_with(|| Entry {
            owner,
            addr: AgentActor::create(|ctx| {
                ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                AgentActor::new(id, record, deps)
                    .first_look_after(first_look_after)
                    .first_beats_to(first_beats)
            }),
            inflight: 0,
        })
    }

    fn finished(&mut self, agent_id: &str, exists: bool) {
        let Some(entry) = self.agents.get_mut(agent_id) else {
            return;
        };
        entry.inflight = entry.inflight.saturating_sub(1);
        if entry.inflight == 0 && !exists {
            self.first_beats.remove(agent_id);
            if let Some(entry) = self.agents.remove(agent_id) {
                entry.addr.do_send(Retire);
            }
        }
    }
}

/// The agents whose keys the first-beat read reads at `now`: those still waiting, after
/// forgetting those whose wait is over (an actor that stopped waiting says so; this
/// bounds the reads even if one never does).
pub fn first_beat_ids(waiting: &mut HashMap<String, Instant>, now: Instant) -> Vec<String> {
    waiting.retain(|_, until| *until > now);
    waiting.keys().cloned().collect()
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_secs(self.deps.config.health.check_interval_s);
        ctx.run_interval(every, |act, ctx| act.read_heartbeats(ctx));
        if every > FIRST_BEAT_READ_EVERY {
            ctx.run_interval(FIRST_BEAT_READ_EVERY, |act, ctx| act.read_first_beats(ctx));
        }
        let audit = self.deps.config.agents.credentials_audit_interval_s;
        if self.deps.credentials.is_some() && audit > 0 {
            ctx.run_interval(Duration::from_secs(audit), |act, ctx| act.audit_logins(ctx));
        }
        self.teams();
        self.halts();
        // Adopted agents' first looks are spread evenly over ADOPTION_LOOK_SPREAD (or
        // the check interval, if shorter).
        let adopted = std::mem::take(&mut self.adopted);
        let interval = Duration::from_secs(self.deps.config.health.check_interval_s);
        let step = ADOPTION_LOOK_SPREAD.min(interval) / (adopted.len().max(1) as u32);
        for (i, record) in adopted.into_iter().enumerate() {
            let id = record.agent_id.clone();
            self.spawn_agent(ctx, &id, Some(record), step * i as u32);
        }
        self.read_heartbeats(ctx);
        tracing::info!(agents = self.agents.len(), "supervisor started");
    }
}

impl Handler<Dispatch> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), AgentError>>;

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) -> Self::Result {
        let cmd = msg.0;
        let agent_id = cmd.agent_id.clone();
        tracing::debug!(%agent_id, message_id = %cmd.message_id, command = %cmd.kind, "routing command");
        if !self.agents.contains_key(&agent_id) && cmd.kind != CommandKind::Create {
            // Unknown agent: answered here (not_found, or a replay of a delete that
            // already happened) without spawning an actor.
            let deps = self.deps.clone();
            return Box::pin(
                async move { lifecycle::answer_unknown(&deps, &cmd).await }.into_actor(self),
            );
        }
        let entry = self.spawn_agent(ctx, &agent_id, None, Duration::ZERO);
        entry.inflight += 1;
        if let (None, crate::protocol::Action::Create { spec, .. }) = (&entry.owner, &cmd.action) {
            entry.owner = Some((spec.customer_id.clone(), spec.agent_type));
        }
        // A deleted agent leaves its teams (once the delete is done).
        let deleted_of = (cmd.kind == CommandKind::Delete).then(|| cmd.customer_id.clone());
        // `send` enqueues now, so commands reach the actor in the order received.
        let request = entry.addr.send(Apply(cmd));
        Box::pin(
            request
                .into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(Ok(applied)) => {
                        act.finished(&agent_id, applied.exists);
                        if let (Some(customer_id), false) = (deleted_of, applied.exists) {
                            act.halts().do_send(HaltMemberGone {
                                agent_id: agent_id.clone(),
                            });
                            act.teams().do_send(MemberGone {
                                agent_id,
                                customer_id,
                                attempt: 0,
                            });
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        let exists = act.agents.contains_key(&agent_id);
                        act.finished(&agent_id, exists);
                        Err(e)
                    }
                    Err(mailbox) => {
                        act.finished(&agent_id, true);
                        Err(AgentError::refused(
                            ErrorCode::Internal,
                            format!("agent actor unavailable: {mailbox}"),
                        ))
                    }
                }),
        )
    }
}

impl Handler<DispatchHalt> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), AgentError>>;

    /// Hands the halt command to the halt actor now, with every agent this supervisor
    /// knows (owner, type, actor): the halt's orders to each agent then queue behind
    /// the commands that agent was sent before.
    fn handle(&mut self, msg: DispatchHalt, _ctx: &mut Self::Context) -> Self::Result {
        let arrived = Instant::now();
        let cmd = msg.0;
        tracing::debug!(halt_id = %cmd.halt_id, message_id = %cmd.message_id, command = %cmd.kind, "routing halt command");
        let (known, actors) = self.directory();
        let request = self.halts().send(RunHalt {
            cmd,
            known,
            actors,
            arrived,
            automatic: false,
        });
        Box::pin(
            async move {
                request.await.unwrap_or_else(|mailbox| {
                    Err(AgentError::refused(
                        ErrorCode::Internal,
                        format!("halt actor unavailable: {mailbox}"),
                    ))
                })
            }
            .into_actor(self),
        )
    }
}

impl Supervisor {
    /// Every agent it knows with its owner, and their actors (a halt's view).
    fn directory(&self) -> (Vec<crate::halt::Known>, HashMap<String, Addr<AgentActor>>) {
        let known = self
            .agents
            .iter()
            .filter_map(|(id, e)| {
                let (customer_id, agent_type) = e.owner.clone()?;
                Some(crate::halt::Known {
                    agent_id: id.clone(),
                    customer_id,
                    agent_type,
                })
            })
            .collect();
        let actors = self
            .agents
            .iter()
            .map(|(id, e)| (id.clone(), e.addr.clone()))
            .collect();
        (known, actors)
    }
}

impl Handler<AutoHalt> for Supervisor {
    type Result = ();

    /// The manager halts an agent over its publishing limit itself (section 10):
    /// `auto-<agent_id>-<unix ms>`, requested by `agent-manager`, the measured rate in
    /// the reason. An agent already held, or unknown, is left alone.
    fn handle(&mut self, msg: AutoHalt, _ctx: &mut Self::Context) {
        if self.deps.holds.is_held(&msg.agent_id) {
            return;
        }
        let Some((customer_id, _)) = self.agents.get(&msg.agent_id).and_then(|e| e.owner.clone())
        else {
            return;
        };
        let now = chrono::Utc::now();
        let halt_id = format!("auto-{}-{}", msg.agent_id, now.timestamp_millis());
        let cmd = crate::protocol::HaltCommand {
            message_id: uuid::Uuid::new_v4().to_string(),
            message_id_given: false,
            kind: crate::protocol::HaltCommandKind::Engage,
            halt_id,
            customer_id,
            action: crate::protocol::HaltAction::Engage {
                scope: crate::protocol::HaltScope {
                    target: crate::protocol::HaltTarget::AgentIds(vec![msg.agent_id.clone()]),
                    agent_types: None,
                },
                reason: format!(
                    "published {:.1} messages/s averaged over {} s, more than its limit of {} \
                     (max_messages_per_s)",
                    msg.rate, msg.window_s, msg.limit
                ),
                requested_by: "agent-manager".into(),
            },
        };
        let (known, actors) = self.directory();
        let request = self.halts().send(RunHalt {
            cmd,
            known,
            actors,
            arrived: Instant::now(),
            automatic: true,
        });
        let agent_id = msg.agent_id;
        actix_rt::spawn(async move {
            match request.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%agent_id, error = %e, "the automatic halt failed; the watch tries again")
                }
                Err(e) => tracing::warn!(%agent_id, error = %e, "halt actor unavailable"),
            }
        });
    }
}

impl Handler<DispatchTeam> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), AgentError>>;

    /// Asks each would-be member's actor for its state now (behind the commands it was
    /// sent before), and hands the command to the team actor now too, so team commands
    /// keep their order and each sees its members as they stand at its turn.
    fn handle(&mut self, msg: DispatchTeam, _ctx: &mut Self::Context) -> Self::Result {
        let cmd = msg.0;
        tracing::debug!(team_id = %cmd.team_id, message_id = %cmd.message_id, command = %cmd.kind, "routing team command");
        let asked: Vec<(String, Option<_>)> = match &cmd.action {
            crate::protocol::TeamAction::Orchestrate { agent_ids, .. } => agent_ids
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        self.agents.get(id).map(|e| e.addr.send(Describe)),
                    )
                })
                .collect(),
            crate::protocol::TeamAction::Disband => Vec::new(),
        };
        let (views_tx, views_rx) = oneshot::channel();
        actix_rt::spawn(async move {
            let mut views = Vec::with_capacity(asked.len());
            for (agent_id, request) in asked {
                let state = match request {
                    Some(request) => request.await.ok().flatten(),
                    None => None,
                };
                views.push(MemberView { agent_id, state });
            }
            let _ = views_tx.send(views);
        });
        let request = self.teams().send(RunTeamCommand {
            cmd,
            members: views_rx,
        });
        Box::pin(
            async move {
                request.await.unwrap_or_else(|mailbox| {
                    Err(AgentError::refused(
                        ErrorCode::Internal,
                        format!("team actor unavailable: {mailbox}"),
                    ))
                })
            }
            .into_actor(self),
        )
    }
}

impl Handler<ContainerEvent> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ContainerEvent, _ctx: &mut Self::Context) {
        match self.agents.get(&msg.agent_id) {
            Some(entry) => entry.addr.do_send(Look {
                trigger: msg.action,
                exit_code: msg.exit_code,
                listed: None,
                at: msg.at,
            }),
            None => {
                tracing::debug!(agent_id = %msg.agent_id, action = %msg.action, "event for an agent this manager does not hold")
            }
        }
    }
}

impl Handler<LookAtAll> for Supervisor {
    type Result = ();

    /// One listing of every container (as kubelet's relist), compared by each actor with
    /// its record: only the agents whose container is not as recorded are inspected,
    /// instead of hundreds of inspections at once every relist.
    fn handle(&mut self, _: LookAtAll, ctx: &mut Self::Context) {
        let runtime = self.deps.runtime.clone();
        let listing = async move { runtime.list_managed_brief().await };
        ctx.spawn(listing.into_actor(self).map(|listing, act, _| {
            // `None`: the listing failed and every agent looks for itself.
            let mut listed: Option<HashMap<String, Listed>> = match listing {
                Ok(all) => Some(
                    all.into_iter()
                        .filter_map(|o| {
                            let id = o.labels.get(LABEL_AGENT_ID)?.clone();
                            let present = Listed::Present {
                                id: o.id,
                                running: o.running,
                                paused: o.paused,
                            };
                            Some((id, present))
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "relist: listing the containers failed; every agent looks for itself");
                    None
                }
            };
            for (agent_id, entry) in &act.agents {
                entry.addr.do_send(Look {
                    trigger: "relist".into(),
                    exit_code: None,
                    at: None,
                    listed: listed
                        .as_mut()
                        .map(|l| l.remove(agent_id).unwrap_or(Listed::Missing)),
                });
            }
        }));
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let retiring: Vec<_> = self
            .agents
            .drain()
            .map(|(_, entry)| entry.addr.send(Retire))
            .collect();
        // The team actor stops once the last address of it is gone.
        self.teams = None;
        self.first_beats.clear();
        ctx.stop();
        Box::pin(async move {
            futures_util::future::join_all(retiring).await;
        })
    }
}

impl Handler<AwaitingFirstBeat> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: AwaitingFirstBeat, _ctx: &mut Self::Context) {
        match msg.within {
            Some(left) if self.agents.contains_key(&msg.agent_id) => {
                self.first_beats.insert(msg.agent_id, Instant::now() + left);
            }
            _ => {
                self.first_beats.remove(&msg.agent_id);
            }
        }
    }
}

impl Handler<CountAgents> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _: CountAgents, _ctx: &mut Self::Context) -> usize {
        self.agents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agents_still_waiting_for_their_first_heartbeat_are_read() {
        let t = Instant::now();
        let mut waiting = HashMap::new();
        assert!(
            first_beat_ids(&mut waiting, t).is_empty(),
            "none waits: nothing read"
        );
        waiting.insert("a".to_string(), t + Duration::from_secs(30));
        waiting.insert("b".to_string(), t + Duration::from_secs(2));
        let mut ids = first_beat_ids(&mut waiting, t);
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        // b's start period is over: forgotten, even if its actor never says so.
        assert_eq!(
            first_beat_ids(&mut waiting, t + Duration::from_secs(2)),
            ["a"]
        );
        assert_eq!(waiting.len(), 1);
        assert!(first_beat_ids(&mut waiting, t + Duration::from_secs(31)).is_empty());
    }
}
