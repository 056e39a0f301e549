//! The AgentActor: owns one agent. Its mailbox orders that agent's commands (each runs
//! to completion before the next starts, so they never interleave). Between commands it
//! looks at its agent on four triggers — its timer, a Docker event, the watcher's
//! relist, and a heartbeat read that changes what the heartbeat says — and heals what
//! it finds: a crashed agent is restarted with backoff, one that stays unhealthy (or
//! hung) is restarted, a crash loop is reported and left alone. While its agent waits
//! for its first heartbeat (`starting`), it asks the supervisor to read its key every
//! second ([`AwaitingFirstBeat`]), so it turns healthy as soon as the agent writes one.

use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use crate::context::Deps;
use crate::error::AgentError;
use crate::health::{self, BeatRead, Heal, Healing, Reason, Watch};
use crate::lifecycle;
use crate::protocol::Command;
use crate::record::{status, AgentRecord};
use crate::team::MemberState;

/// Applies one command; answers whether the agent still exists afterwards.
#[derive(Message)]
#[rtype(result = "Result<Applied, AgentError>")]
pub struct Apply(pub Command);

/// The outcome of [`Apply`] for the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// False once the agent is deleted (or its create failed): the actor can retire.
    pub exists: bool,
}

/// Look at the container now (a Docker event or the relist).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Look {
    /// What prompted the look: a Docker action (`die`, `oom`, ...) or `relist`.
    pub trigger: String,
    /// The exit code of a `die` event.
    pub exit_code: Option<i64>,
    /// When Docker says the event happened (`None`: not an event).
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The relist's one listing of every container saw this of the agent's; the actor
    /// looks only when it disagrees with its record. `None`: look regardless.
    pub listed: Option<Listed>,
}

/// What a container listing says about one agent's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// No container of the agent is listed.
    Missing,
    /// The agent's container, by id, whether it runs and whether it is paused (Docker
    /// lists a frozen container as `paused`, not running).
    Present {
        id: String,
        running: bool,
        paused: bool,
    },
}

/// Whether `listed` is what `record` expects, so the relist needs no closer look.
pub fn listing_agrees(record: &AgentRecord, listed: &Listed) -> bool {
    use status::Workload;
    match listed {
        Listed::Missing => record.workload_id.is_none(),
        Listed::Present {
            id,
            running,
            paused,
        } => {
            // (runs, frozen) as the record expects them.
            let expected = match status::row(record.status()).workload {
                Workload::Runs => (true, false),
                Workload::Frozen => (false, true),
                Workload::Down => (false, false),
                // Frozen or down, as long as it does not run.
                Workload::Held => (false, *paused),
                // In between: a closer look settles it.
                Workload::Unsettled => return false,
            };
            record.workload_id.as_deref() == Some(id.as_str()) && (*running, *paused) == expected
        }
    }
}

/// The agent's heartbeat key, as the supervisor's batched read of every agent's found
/// it (each check interval). A read that changes what the heartbeat says (an expiry, an
/// `unhealthy`, a first heartbeat) is looked at at once; others wait for the timer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Beat(pub BeatRead);

/// Sent to the supervisor when the agent starts or stops waiting for its first
/// heartbeat of this run (its image promises one, and its start period is not over):
/// `within: Some(left)` asks for its key to be read every second for at most `left`
/// (each read that finds it comes back as a [`Beat`]); `None` asks for no more.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct AwaitingFirstBeat {
    pub agent_id: String,
    pub within: Option<Duration>,
}

/// Whether the supervisor must be told again: it was told to read until `told`, and the
/// agent now waits until `wants` (`None`: not waiting). A new wait differs by more than
/// a read's period from the one told (another run of the container).
pub fn retell_first_beat(told: Option<Instant>, wants: Option<Instant>) -> bool {
    match (told, wants) {
        (None, None) => false,
        (Some(t), Some(w)) => t.max(w) - t.min(w) > Duration::from_secs(1),
        _ => true,
    }
}
/// The agent's owner and status, as they stand after every command the actor received
/// before (a team's membership check: `None` when the agent does not exist).
#[derive(Message)]
#[rtype(result = "Option<MemberState>")]
pub struct Describe;

/// The supervisor's audit found the agent's users missing or incomplete (Redis or
/// RabbitMQ lost them): make them again with the password its workload holds, between
/// commands (a busy actor does it once it is free).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestoreLogin;

/// Stops the actor (sent by the supervisor once the agent is gone and idle).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

pub struct AgentActor {
    /// The agent's id, fixed for the actor's life.
    agent_id: String,
    /// The agent's record; `None` before a create and after a delete.
    record: Option<AgentRecord>,
    deps: Deps,
    /// Health reports and self-healing state between looks.
    watch: Watch,
    /// The scheduled automatic restart, cancelled when a command arrives.
    pending_restart: Option<SpawnHandle>,
    /// A stats sample is being taken.
    sampling: bool,
    /// A look asked for while busy is scheduled.
    look_scheduled: bool,
    /// Docker reported an OOM kill; the `die` event that follows carries it.
    oom_seen: bool,
    /// A command, look or restart is in progress. actix can poll a timer right after a
    /// handler started a `wait` (before it takes effect), so timers check this too.
    busy: bool,
    /// When an adopted agent's first look is due after the actor starts.
    first_look_after: Duration,
    /// When the last command finished. A Docker event from before then (the `die` of a
    /// restart's or an update's own stop, queued behind the command) is no news: the
    /// command's outcome stands, and a look checks the container instead of trusting
    /// the event.
    commanded_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Who reads the keys of agents waiting for their first heartbeat (the supervisor);
    /// `None`: nobody, the regular read alone.
    first_beats: Option<Recipient<AwaitingFirstBeat>>,
    /// Until when that reader was last told to read this agent's key (`None`: not).
    first_beat_told: Option<Instant>,
}

impl AgentActor {
    pub fn new(agent_id: String, record: Option<AgentRecord>, deps: Deps) -> Self {
        let watch = Watch::new(&deps.config.health);
        AgentActor {
            agent_id,
            record,
            deps,
            watch,
            pending_restart: None,
            sampling: false,
            look_scheduled: false,
            oom_seen: false,
            busy: false,
            first_look_after: Duration::ZERO,
            commanded_until: None,
            first_beats: None,
            first_beat_told: None,
        }
    }

    /// Tells `reader` when the agent waits for its first heartbeat (see
    /// [`AwaitingFirstBeat`]).
    pub fn first_beats_to(mut self, reader: Recipient<AwaitingFirstBeat>) -> Self {
        self.first_beats = Some(reader);
        self
    }

    /// Tells the first-beat reader whether the agent waits for its first heartbeat now
    /// (after every look, command and heal), when that changed.
    fn tell_first_beat_wait(&mut self) {
        let Some(reader) = &self.first_beats else {
            return;
        };
        let within = self
            .record
            .as_ref()
            .filter(|r| status::row(r.status()).is_watched())
            .and_then(|_| {
                health::first_beat_wait(&self.watch, &self.deps.config.health, chrono::Utc::now())
            });
        let now = Instant::now();
        let wants = within.map(|left| now + left);
        if !retell_first_beat(self.first_beat_told, wants) {
            return;
        }
        self.first_beat_told = wants;
        reader.do_send(AwaitingFirstBeat {
            agent_id: self.agent_id.clone(),
            within,
        });
    }

    /// Delays an adopted agent's first look, so that a manager adopting hundreds of
    /// agents spreads their inspections instead of asking Docker for all at once.
    pub fn first_look_after(mut self, delay: Duration) -> Self {
        self.first_look_after = delay;
        self
    }

    /// Looks at the agent; runs in `wait` so no command interleaves with it. `inspect`:
    /// ask Docker even where the heartbeat answers (an event or the relist saw news).
    fn look(&mut self, ctx: &mut Context<Self>, exit: Option<health::Exit>, inspect: bool) {
        if self.busy {
            return; // the next timer tick or event looks again
        }
        let Some(record) = self.record.clone() else {
            return;
        };
        self.busy = true;
        let deps = self.deps.clone();
        let watch = self.watch.clone();
        let fut = async move { health::check(&deps, record, watch, exit, inspect).await };
        ctx.wait(fut.into_actor(self).map(|(record, watch, result), act, ctx| {
            act.busy = false;
            if act.record.is_none() {
                return;
            }
            // No command can have run meanwhile (wait), so these are current.
            act.record = Some(record);
            act.watch = watch;
            act.tell_first_beat_wait();
            match result {
                Ok(Heal::Nothing) | Ok(Heal::CrashLoop { .. }) => {}
                Ok(Heal::RestartAfter(delay)) => {
                    tracing::info!(agent_id = %act.agent_id, delay_ms = delay.as_millis() as u64, "agent exited; restarting it after backoff");
                    let generation = act.record.as_ref().map(|r| r.generation);
                    let handle = ctx.run_later(delay, move |act, ctx| {
                        act.pending_restart = None;
                        // A command since then owns the agent: this restart is stale.
                        if act.record.as_ref().map(|r| r.generation) == generation {
                            act.heal(ctx, Reason::Crashed);
                        }
                    });
                    act.pending_restart = Some(handle);
                }
                Ok(Heal::RestartNow(reason)) => act.heal(ctx, reason),
                Ok(Heal::Refreeze) => act.refreeze(ctx),
                Err(e) => tracing::warn!(agent_id = %act.agent_id, error = %e, "look at the container failed"),
            }
        }));
    }

    /// A halted agent was found running: frozen again (its halt already on the record).
    fn refreeze(&mut self, ctx: &mut Context<Self>) {
        let Some(record) = &self.record else {
            return;
        };
        let Some(halt_id) = record.halt_ids.first().cloned() else {
            return;
        };
        tracing::warn!(agent_id = %self.agent_id, %halt_id, "a halted agent runs (thawed behind the manager's back?); freezing it again");
        let order = lifecycle::HoldOrder {
            halt_id,
            reason: record.halt_reason.clone().unwrap_or_default(),
            requested_by: record.halted_by.clone().unwrap_or_default(),
            arrived: Instant::now(),
            cut_ms: 0,
        };
        let work = self.run_halt_work(ctx, lifecycle::Automatic::Hold(order));
        ctx.wait(work.map(|_, _, _| ()));
    }

    /// Looks as soon as the agent is not busy (a heartbeat's news must not wait for the
    /// next timer tick: a hung agent is reported within the check interval).
    fn look_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.busy {
            self.look(ctx, None, false);
            return;
        }
        if !self.look_scheduled {
            self.look_scheduled = true;
            ctx.run_later(Duration::from_millis(50), |act, ctx| {
                act.look_scheduled = false;
                act.look_soon(ctx);
            });
        }
    }

    /// Writes the record as it stands (no Docker call); runs in `wait` so no command's
    /// newer record can be overwritten by this copy.
    fn rewrite_record(&mut self, ctx: &mut Context<Self>) {
        let Some(record) = self.record.clone() else {
            return;
        };
        if self.busy {
            return;
        }
        self.busy = true;
        let records = self.deps.records.clone();
        let fut = async move { records.save(&record, &[], None).await };
        ctx.wait(fut.into_actor(self).map(|result, act, _| {
            act.busy = false;
            if let Err(e) = result {
                tracing::debug!(agent_id = %act.agent_id, error = %e, "rewriting the record failed");
            }
        }));
    }

    /// Samples stats beside (not inside) the agent's work; the numbers go out with the
    /// next look.
    fn sample_stats(&mut self, ctx: &mut Context<Self>) {
        let running = self
            .record
            .as_ref()
            .is_some_and(|r| status::row(r.status()).is_watched());
        let Some(id) = self.record.as_ref().and_then(|r| r.workload_id.clone()) else {
            return;
        };
        if self.sampling || !running {
            return;
        }
        self.sampling = true;
        let runtime = self.deps.runtime.clone();
        let fut = async move { runtime.stats(&id).await };
        ctx.spawn(fut.into_actor(self).map(|sample, act, _| {
            act.sampling = false;
            match (sample, act.record.as_mut()) {
                (Ok(Some(sample)), Some(record)) => {
                    health::apply_stats(record, &mut act.watch, Some(sample))
                }
                (Err(e), _) => {
                    tracing::debug!(agent_id = %act.agent_id, error = %e, "stats failed")
                }
                _ => {}
            }
        }));
    }

    /// Restarts the agent by itself (self-healing).
    fn heal(&mut self, ctx: &mut Context<Self>, reason: Reason) {
        if self.busy {
            let handle = ctx.run_later(Duration::from_millis(50), move |act, ctx| {
                act.pending_restart = None;
                act.heal(ctx, reason);
            });
            self.pending_restart = Some(handle);
            return;
        }
        let Some(record) = self.record.clone() else {
            return;
        };
        self.busy = true;
        let deps = self.deps.clone();
        let fut = async move { lifecycle::heal(&deps, record, reason).await };
        ctx.wait(fut.into_actor(self).map(|(record, result), act, ctx| {
            act.busy = false;
            if act.record.is_none() {
                return;
            }
            act.watch.healing = Healing::Watching;
            act.watch.last.status = Some(record.status());
            // A new container run: the next look inspects it (its start time judges
            // which heartbeats are its own).
            act.watch.observed = None;
            act.record = Some(record);
            if let Err(e) = result {
                tracing::warn!(agent_id = %act.agent_id, error = %e, "automatic restart failed");
            }
            act.after_a_new_run(ctx);
        }));
    }

    /// After a command or a heal: a running agent may run a new container, which the
    /// watch knows nothing of yet. It is looked at now (not at the next tick), so it
    /// reads `starting` at once and, while it waits for its first heartbeat, its key is
    /// read every second from the start; other agents only tell the reader they no
    /// longer wait.
    fn after_a_new_run(&mut self, ctx: &mut Context<Self>) {
        let running = self
            .record
            .as_ref()
            .is_some_and(|r| status::row(r.status()).is_watched());
        if running {
            self.look_soon(ctx);
        } else {
            self.tell_first_beat_wait();
        }
    }

    fn cancel_pending_restart(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.pending_restart.take() {
            ctx.cancel_future(handle);
        }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_secs(self.deps.config.health.check_interval_s);
        ctx.run_interval(every, |act, ctx| {
            // An agent stopped on purpose has nothing for Docker to report: a start behind
            // our back comes as a Docker event, and the relist's listing catches a missed
            // one. Its record is still written, so a Redis that lost it has it back.
            if act.record.as_ref().is_some_and(AgentRecord::is_resting) {
                act.rewrite_record(ctx);
                return;
            }
            act.sample_stats(ctx);
            act.look(ctx, None, false);
        });
        // An adopted agent is looked at right away (or at its turn in the spread).
        if self.record.is_some() {
            if self.first_look_after.is_zero() {
                self.look(ctx, None, true);
            } else {
                ctx.run_later(self.first_look_after, |act, ctx| act.look(ctx, None, true));
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Deleted (or the manager stops): its usage series and last hour go with it.
        crate::metrics::usage::forget(&self.agent_id);
        crate::metrics::history::forget(&self.agent_id);
    }
}

impl Handler<Apply> for AgentActor {
    type Result = AtomicResponse<Self, Result<Applied, AgentError>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) -> Self::Result {
        tracing::debug!(agent_id = %self.agent_id, message_id = %msg.0.message_id, busy = self.busy, "applying command");
        // A command takes over from self-healing.
        self.cancel_pending_restart(ctx);
        self.busy = true;
        let deps = self.deps.clone();
        let record = self.record.clone();
        let cmd = msg.0;
        let span = tracing::info_span!("command", agent_id = %cmd.agent_id, message_id = %cmd.message_id, command = %cmd.kind);
        let fut = async move { lifecycle::run_command(&deps, record, &cmd).await }.instrument(span);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(record, result), act, ctx| {
                act.busy = false;
                act.commanded_until = Some(chrono::Utc::now());
                act.record = record;
                // The events of the command told everyone the new status.
                act.watch
                    .reset(act.record.as_ref().map(AgentRecord::status), Instant::now());
                act.after_a_new_run(ctx);
                result.map(|()| Applied {
                    exists: act.record.is_some(),
                })
            },
        )))
    }
}

/// A halt takes the agent out (section 10): its logins are cut already; the actor
/// freezes it, marks it `halted` and reports `agent.halted`, after the commands it
/// received before (in mailbox order). Answers what became of it.
#[derive(Message)]
#[rtype(result = "HaltOutcome")]
pub struct HoldAgent(pub lifecycle::HoldOrder);

/// `halt.release` of this halt: when no other halt holds the agent, its login comes back
/// and it returns to its desired state (`agent.released`).
#[derive(Message)]
#[rtype(result = "HaltOutcome")]
pub struct ReleaseAgent {
    pub halt_id: String,
    pub reason: String,
    pub requested_by: String,
}

/// What a halt's order did to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaltOutcome {
    /// Done; `frozen_ms`: since the halt command arrived (a hold), `None` for a release.
    Done { frozen_ms: Option<u64> },
    /// The agent has no record (never made, or deleted meanwhile): nothing to do.
    Gone,
    /// It failed for this agent (the others go on): why.
    Failed(String),
}

impl AgentActor {
    /// Runs the manager's own `work` on the agent between its commands (as a command
    /// runs), answering what became of it.
    fn run_halt_work(
        &mut self,
        ctx: &mut Context<Self>,
        work: lifecycle::Automatic,
    ) -> ResponseActFuture<Self, HaltOutcome> {
        let Some(record) = self.record.clone() else {
            return Box::pin(actix::fut::ready(HaltOutcome::Gone));
        };
        self.cancel_pending_restart(ctx);
        self.busy = true;
        let deps = self.deps.clone();
        let arrived = match &work {
            lifecycle::Automatic::Hold(order) => Some(order.arrived),
            _ => None,
        };
        let span = tracing::info_span!("halt", agent_id = %self.agent_id);
        let fut =
            async move { lifecycle::run_automatic(&deps, record, work).await }.instrument(span);
        Box::pin(fut.into_actor(self).map(move |(record, result), act, ctx| {
            act.busy = false;
            act.commanded_until = Some(chrono::Utc::now());
            if record.is_some() {
                act.record = record;
            }
            act.watch
                .reset(act.record.as_ref().map(AgentRecord::status), Instant::now());
            act.after_a_new_run(ctx);
            match result {
                Err(e) => HaltOutcome::Failed(e.to_string()),
                Ok(events) => match events
                    .iter()
                    .find(|e| e.event == crate::protocol::EventKind::Error)
                {
                    Some(error) => HaltOutcome::Failed(
                        error.details["message"]
                            .as_str()
                            .unwrap_or("failed")
                            .to_string(),
                    ),
                    None => HaltOutcome::Done {
                        frozen_ms: arrived.map(|a| a.elapsed().as_millis() as u64),
                    },
                },
            }
        }))
    }
}

impl Handler<HoldAgent> for AgentActor {
    type Result = AtomicResponse<Self, HaltOutcome>;

    fn handle(&mut self, msg: HoldAgent, ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.run_halt_work(ctx, lifecycle::Automatic::Hold(msg.0)))
    }
}

impl Handler<ReleaseAgent> for AgentActor {
    type Result = AtomicResponse<Self, HaltOutcome>;

    fn handle(&mut self, msg: ReleaseAgent, ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.run_halt_work(
            ctx,
            lifecycle::Automatic::Release {
                halt_id: msg.halt_id,
                reason: msg.reason,
                requested_by: msg.requested_by,
            },
        ))
    }
}

impl Handler<Look> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Look, ctx: &mut Self::Context) {
        tracing::trace!(agent_id = %self.agent_id, trigger = %msg.trigger, "looking at the container");
        if let (Some(listed), Some(record)) = (&msg.listed, &self.record) {
            if listing_agrees(record, listed) {
                return;
            }
            tracing::debug!(agent_id = %self.agent_id, ?listed, status = record.status().as_str(), "the relist disagrees with the record; looking");
        }
        let during_a_command =
            matches!((msg.at, self.commanded_until), (Some(at), Some(until)) if at <= until);
        if during_a_command {
            tracing::debug!(agent_id = %self.agent_id, trigger = %msg.trigger, "event from before the last command finished; looking instead of trusting it");
            if msg.trigger == "die" {
                self.look(ctx, None, true);
            }
            return;
        }
        match (msg.trigger.as_str(), msg.exit_code) {
            // The die event follows with the exit code; a look now would only wait for
            // dockerd to finish the exit.
            ("oom", _) => self.oom_seen = true,
            ("kill", _) | ("stop", _) => {}
            ("die", Some(exit_code)) => {
                let exit = health::Exit {
                    exit_code,
                    oom_killed: std::mem::take(&mut self.oom_seen),
                };
                self.look(ctx, Some(exit), true);
            }
            _ => self.look(ctx, None, true),
        }
    }
}

impl Handler<Beat> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Beat, ctx: &mut Self::Context) {
        let Some(record) = &self.record else {
            return;
        };
        let cfg = &self.deps.config.health;
        let news = self
            .watch
            .verdict_with(record, Some(&msg.0), cfg, chrono::Utc::now())
            != self.watch.verdict;
        let watching = status::row(record.status()).is_watched();
        self.watch.beat = Some(msg.0);
        if news && watching {
            tracing::debug!(agent_id = %self.agent_id, "the heartbeat says something new; looking");
            self.look_soon(ctx);
        }
    }
}

impl Handler<Describe> for AgentActor {
    type Result = Option<MemberState>;

    /// Commands and looks run in `wait`, so this answers only once the ones received
    /// before it are done.
    fn handle(&mut self, _: Describe, _ctx: &mut Self::Context) -> Option<MemberState> {
        self.record.as_ref().map(|r| MemberState {
            customer_id: r.spec.customer_id.clone(),
            status: r.status(),
        })
    }
}

impl Handler<RestoreLogin> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: RestoreLogin, ctx: &mut Self::Context) {
        let workload = self.record.as_ref().and_then(|r| r.workload_id.clone());
        let (Some(workload), Some(issuer)) = (workload, self.deps.credentials.clone()) else {
            return;
        };
        if self.busy {
            // After the command or look in hand: a Redis restart's audit comes once.
            ctx.notify_later(RestoreLogin, Duration::from_millis(100));
            return;
        }
        self.busy = true;
        let deps = self.deps.clone();
        let agent_id = self.agent_id.clone();
        let fut = async move {
            crate::actors::reconcile::reissue(&deps, issuer.as_ref(), &agent_id, &workload).await
        };
        ctx.wait(fut.into_actor(self).map(|result, act, _| {
            act.busy = false;
            match result {
                Ok(crate::actors::reconcile::Reissued::Restored) => {}
                Ok(found) => {
                    tracing::debug!(agent_id = %act.agent_id, ?found, "no login to restore")
                }
                Err(e) => {
                    tracing::warn!(agent_id = %act.agent_id, error = %e, "could not make the agent's lost users again; the next audit tries again")
                }
            }
        }));
    }
}

impl Handler<Retire> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{sample_spec, AgentStatus, DesiredState};
    use crate::record::status::{transition, Cause};

    fn record(status: AgentStatus, container: Option<&str>) -> AgentRecord {
        let mut r = AgentRecord::new("a-1", sample_spec(), DesiredState::Running);
        transition(&mut r, Cause::Restored(status));
        r.workload_id = container.map(str::to_string);
        r
    }

    fn present(id: &str, running: bool) -> Listed {
        Listed::Present {
            id: id.into(),
            running,
            paused: false,
        }
    }

    fn frozen(id: &str) -> Listed {
        Listed::Present {
            id: id.into(),
            running: false,
            paused: true,
        }
    }

    #[test]
    fn the_first_beat_reader_is_told_only_what_changed() {
        let t = Instant::now();
        let s = Duration::from_secs;
        assert!(!retell_first_beat(None, None), "not waiting, and it knows");
        assert!(retell_first_beat(None, Some(t + s(60))), "starts waiting");
        assert!(retell_first_beat(Some(t + s(60)), None), "no longer waits");
        assert!(
            !retell_first_beat(
                Some(t + s(60)),
                Some(t + s(60) + Duration::from_millis(300))
            ),
            "the same wait, looked at again"
        );
        assert!(
            retell_first_beat(Some(t + s(20)), Some(t + s(60))),
            "a new run of the container: a new wait"
        );
    }

    #[test]
    fn the_relist_looks_closer_only_where_the_listing_disagrees() {
        let running = record(AgentStatus::Running, Some("c1"));
        assert!(listing_agrees(&running, &present("c1", true)));
        assert!(!listing_agrees(&running, &present("c1", false)), "died");
        assert!(!listing_agrees(&running, &present("c2", true)), "replaced");
        assert!(!listing_agrees(&running, &Listed::Missing), "removed");

        let stopped = record(AgentStatus::Stopped, Some("c1"));
        assert!(listing_agrees(&stopped, &present("c1", false)));
        assert!(
            !listing_agrees(&stopped, &present("c1", true)),
            "started behind our back"
        );

        let unhealthy = record(AgentStatus::Unhealthy, Some("c1"));
        assert!(listing_agrees(&unhealthy, &present("c1", true)));
        let restarting = record(AgentStatus::Restarting, Some("c1"));
        assert!(!listing_agrees(&restarting, &present("c1", true)));

        let mut stopped = record(AgentStatus::Stopped, Some("c1"));
        assert!(!stopped.is_resting(), "desired running: a look is due");
        stopped.desired_state = DesiredState::Stopped;
        assert!(stopped.is_resting());
        transition(&mut stopped, Cause::Restored(AgentStatus::Running));
        assert!(!stopped.is_resting());

        let paused = record(AgentStatus::Paused, Some("c1"));
        assert!(listing_agrees(&paused, &frozen("c1")), "left alone");
        assert!(!listing_agrees(&paused, &present("c1", true)), "thawed");
        assert!(!listing_agrees(&paused, &present("c1", false)), "killed");
        assert!(
            !listing_agrees(&running, &frozen("c1")),
            "paused behind our back"
        );

        let gone = record(AgentStatus::Failed, None);
        assert!(listing_agrees(&gone, &Listed::Missing));
        assert!(!listing_agrees(&gone, &present("c9", false)));
    }
}
