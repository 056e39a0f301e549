//! The agent's status machine: every status change has a [`Cause`], and
//! [`transition`] is the one function that writes a record's status (krustlet-style:
//! the rules are a pure function, [`next`], with a unit test per rule).
//!
//! ```text
//!  creating ──ContainerCreated──▶ created ──Begin(Start)──▶ starting ──Started──▶ running
//!                                    │                          │ Failed            │ ▲
//!                                    │                          ▼                   │ │ Observed
//!  any ──Begin(Delete)──▶ deleting   └──────────────────────▶ failed ◀──Observed────┘ ▼
//!  running ──Begin(Stop)──▶ stopping ──Stopped──▶ stopped        │            unhealthy
//!  running ──Begin(Restart)──▶ restarting ──Started──▶ running   │
//!  failed ──RestartScheduled──▶ restarting ──(automatic restart)─┘
//!  running ──Paused──▶ paused ──Resumed──▶ running      (agent.pause / agent.resume)
//!  any ──SeenPaused──▶ paused                           (Docker says it is frozen)
//! ```
//!
//! `paused` is the one status that is frozen on purpose: a look that finds the
//! container paused keeps it `paused` (never a crash, never unhealthy: see
//! `health::assess`), and one that finds it running again (unpaused behind the
//! manager's back) or gone takes the container's word as for any other status.
//!
//! `starting`, `stopping`, `restarting` and `deleting` are written while a command
//! takes its time, so operators see them; a look at the container (`Observed`) never
//! runs while a command does, so a look that finds `starting` or `stopping` means the
//! command died with its manager, and the container's state decides.

use super::AgentRecord;
use crate::protocol::{AgentStatus, DesiredState};

/// What the workload of an agent in a status is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Runs: judged by its heartbeat (a new verdict is looked at at once), its usage
    /// sampled, Docker's listing shows it running.
    Runs,
    /// Frozen on purpose (Docker pause): neither a crash nor hung; its heartbeat and
    /// Docker's probe say nothing of it while frozen (nor for a grace after a thaw); a
    /// look that finds it frozen keeps the status.
    Frozen,
    /// Not running (never started, stopped, or crashed).
    Down,
    /// Held by a halt: frozen or down, never running (a look that finds it running
    /// freezes it again).
    Held,
    /// A command is between two states: only a closer look tells.
    Unsettled,
}

/// What one status means to the rest of the code. [`row`] is the table: one line per
/// status, so adding a status is its row, the plan's arms that enter or leave it, and
/// tests; the modules that act on statuses ask the row, never match on statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub status: AgentStatus,
    /// What its workload should be (the relist compares Docker's listing with it; the
    /// heartbeat and the usage samples are read only while it `Runs`).
    pub workload: Workload,
    /// A command or a halt holds the agent: a look at the workload does not change the
    /// status (the command's redelivery or the next start finishes it; only
    /// `halt.release` ends a halt).
    pub held: bool,
    /// A team may count on it as a running member (`team.orchestrate`).
    pub serves: bool,
}

impl Row {
    /// Its heartbeat is read and judged (a new verdict is looked at at once), and its
    /// resource usage sampled.
    pub fn is_watched(&self) -> bool {
        self.workload == Workload::Runs
    }

    /// Frozen on purpose: a look that finds the workload frozen keeps the status.
    pub fn is_frozen(&self) -> bool {
        self.workload == Workload::Frozen
    }
}

/// The table: what each status means.
pub fn row(status: AgentStatus) -> Row {
    use AgentStatus::*;
    use Workload::*;
    let (workload, held, serves) = match status {
        //          workload   held   serves
        Creating => (Unsettled, true, false),
        Created => (Down, false, false),
        Starting => (Unsettled, false, false),
        Running => (Runs, false, true),
        Unhealthy => (Runs, false, true),
        Stopping => (Unsettled, false, false),
        Stopped => (Down, false, false),
        Restarting => (Unsettled, false, false),
        Failed => (Down, false, false),
        Deleting => (Unsettled, true, false),
        Paused => (Frozen, false, false),
        Halted => (Held, true, false),
    };
    Row {
        status,
        workload,
        held,
        serves,
    }
}

/// A command's step that takes time and has a status of its own while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Start,
    Stop,
    Restart,
    Delete,
}

/// Why an agent's status changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Read back from the store (or set up by a test): the status as it was saved.
    Restored(AgentStatus),
    /// A command begins an operation that takes time.
    Begin(Operation),
    /// A create made the agent's workload (not started).
    ContainerCreated,
    /// A start, restart or re-create left the workload running.
    Started,
    /// A stop left the workload stopped.
    Stopped,
    /// A runtime call failed part-way: the agent is not as asked.
    Failed,
    /// Self-healing will restart the agent after a backoff.
    RestartScheduled,
    /// A look at the workload: whether it runs, and whether Docker calls it unhealthy.
    Observed { running: bool, unhealthy: bool },
    /// Adopted at start from a container whose record was lost.
    /// (A paused container's agent is then [`Cause::SeenPaused`].)
    Adopted { running: bool },
    /// `agent.pause` froze the workload.
    Paused,
    /// `agent.resume` (or a start of a paused agent) thawed the workload.
    Resumed,
    /// A look found the workload frozen (Docker's `paused` state).
    SeenPaused,
    /// A halt took the agent out (cut, then frozen).
    Halted,
    /// `halt.release` gave it back: its workload runs again, or stays down.
    Released { running: bool },
}

/// The status after `cause`, from `current` and what the agent should be doing.
pub fn next(current: AgentStatus, desired: DesiredState, cause: Cause) -> AgentStatus {
    use AgentStatus::*;
    match cause {
        Cause::Restored(status) => status,
        Cause::Begin(Operation::Start) => Starting,
        Cause::Begin(Operation::Stop) => Stopping,
        Cause::Begin(Operation::Restart) => Restarting,
        Cause::Begin(Operation::Delete) => Deleting,
        Cause::ContainerCreated => Created,
        Cause::Started => Running,
        Cause::Stopped => Stopped,
        Cause::Failed => Failed,
        Cause::RestartScheduled => Restarting,
        Cause::Adopted { running: true } => Running,
        Cause::Adopted { running: false } => Stopped,
        Cause::Paused | Cause::SeenPaused if row(current).held => current,
        Cause::Paused | Cause::SeenPaused => Paused,
        Cause::Resumed => Running,
        Cause::Halted => Halted,
        Cause::Released { running: true } => Running,
        Cause::Released { running: false } if current == Created => Created,
        Cause::Released { running: false } => match desired {
            DesiredState::Running => Failed,
            DesiredState::Stopped => Stopped,
        },
        // A create or delete in progress is finished by its redelivery or at start.
        Cause::Observed { .. } if row(current).held => current,
        Cause::Observed {
            running: true,
            unhealthy: true,
        } => Unhealthy,
        Cause::Observed { running: true, .. } => Running,
        // Never started: still created, whatever is desired.
        Cause::Observed { running: false, .. } if current == Created => Created,
        // It should run but does not: it crashed, or its workload is gone.
        Cause::Observed { running: false, .. } => match desired {
            DesiredState::Running => Failed,
            DesiredState::Stopped => Stopped,
        },
    }
}

/// Changes `record`'s status for `cause`; returns the status it had before. While a
/// halt holds the agent its status is `halted` whatever happens, but for the commands
/// that still work on it while they run (stopping, deleting).
pub fn transition(record: &mut AgentRecord, cause: Cause) -> AgentStatus {
    let before = record.status;
    record.status = next(before, record.desired_state, cause);
    if record.is_held() && !matches!(record.status, AgentStatus::Stopping | AgentStatus::Deleting) {
        record.status = AgentStatus::Halted;
    }
    if before != record.status {
        tracing::trace!(agent_id = %record.agent_id, from = before.as_str(), to = record.status.as_str(), ?cause, "status");
    }
    before
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentStatus::*;

    const RUN: DesiredState = DesiredState::Running;
    const STOP: DesiredState = DesiredState::Stopped;

    fn seen(running: bool, unhealthy: bool) -> Cause {
        Cause::Observed { running, unhealthy }
    }

    #[test]
    fn every_status_has_its_own_row() {
        for status in AgentStatus::ALL {
            assert_eq!(row(status).status, status);
        }
        let watched: Vec<_> = AgentStatus::ALL
            .into_iter()
            .filter(|s| row(*s).is_watched())
            .collect();
        assert_eq!(watched, vec![Running, Unhealthy]);
        let frozen: Vec<_> = AgentStatus::ALL
            .into_iter()
            .filter(|s| row(*s).is_frozen())
            .collect();
        assert_eq!(frozen, vec![Paused]);
        let held: Vec<_> = AgentStatus::ALL
            .into_iter()
            .filter(|s| row(*s).held)
            .collect();
        assert_eq!(held, vec![Creating, Deleting, Halted]);
        let serving: Vec<_> = AgentStatus::ALL
            .into_iter()
            .filter(|s| row(*s).serves)
            .collect();
        assert_eq!(serving, vec![Running, Unhealthy]);
    }

    #[test]
    fn commands_and_runtime_results_set_their_status_from_any_status() {
        for current in AgentStatus::ALL {
            for desired in [RUN, STOP] {
                let at = |cause| next(current, desired, cause);
                assert_eq!(at(Cause::Begin(Operation::Start)), Starting);
                assert_eq!(at(Cause::Begin(Operation::Stop)), Stopping);
                assert_eq!(at(Cause::Begin(Operation::Restart)), Restarting);
                assert_eq!(at(Cause::Begin(Operation::Delete)), Deleting);
                assert_eq!(at(Cause::ContainerCreated), Created);
                assert_eq!(at(Cause::Started), Running);
                assert_eq!(at(Cause::Stopped), Stopped);
                assert_eq!(at(Cause::Failed), Failed);
                assert_eq!(at(Cause::RestartScheduled), Restarting);
                assert_eq!(at(Cause::Restored(current)), current);
                assert_eq!(at(Cause::Resumed), Running);
                assert_eq!(at(Cause::Adopted { running: true }), Running);
                assert_eq!(at(Cause::Adopted { running: false }), Stopped);
            }
        }
    }

    /// Paused by a command or seen paused: `paused`, except while a create or a delete
    /// is in progress (finished by its redelivery or at start).
    #[test]
    fn a_pause_or_a_frozen_container_makes_it_paused_except_while_creating_or_deleting() {
        for current in AgentStatus::ALL {
            for desired in [RUN, STOP] {
                for cause in [Cause::Paused, Cause::SeenPaused] {
                    let expected = match current {
                        Creating | Deleting | Halted => current,
                        _ => Paused,
                    };
                    assert_eq!(
                        next(current, desired, cause),
                        expected,
                        "{current:?} {cause:?}"
                    );
                }
            }
        }
    }

    /// A paused agent found running (unpaused behind the manager's back) runs; found
    /// exited (killed while frozen) it crashed, as from any other status.
    #[test]
    fn a_look_at_a_paused_agent_takes_the_containers_word() {
        assert_eq!(next(Paused, RUN, seen(true, false)), Running);
        assert_eq!(next(Paused, RUN, seen(false, false)), Failed);
        assert_eq!(next(Paused, RUN, Cause::SeenPaused), Paused);
        // Adopted from a container Docker says is running and paused.
        let adopted = next(Creating, RUN, Cause::Adopted { running: true });
        assert_eq!(next(adopted, RUN, Cause::SeenPaused), Paused);
    }

    /// Every status × every observation × every desired state.
    #[test]
    fn a_look_decides_from_the_container_except_while_creating_or_deleting() {
        for current in AgentStatus::ALL {
            for desired in [RUN, STOP] {
                let at = |running, unhealthy| next(current, desired, seen(running, unhealthy));
                if matches!(current, Creating | Deleting | Halted) {
                    for (r, u) in [(true, true), (true, false), (false, false)] {
                        assert_eq!(at(r, u), current, "{current:?} is kept");
                    }
                    continue;
                }
                assert_eq!(at(true, false), Running, "{current:?} {desired:?}");
                assert_eq!(at(true, true), Unhealthy, "{current:?} {desired:?}");
                let expected = match (current, desired) {
                    (Created, _) => Created,
                    (_, DesiredState::Running) => Failed,
                    (_, DesiredState::Stopped) => Stopped,
                };
                assert_eq!(at(false, false), expected, "{current:?} {desired:?}");
            }
        }
    }

    #[test]
    fn a_look_after_a_command_died_mid_way_takes_the_containers_word() {
        assert_eq!(next(Starting, RUN, seen(true, false)), Running);
        assert_eq!(next(Starting, RUN, seen(false, false)), Failed);
        assert_eq!(next(Stopping, STOP, seen(false, false)), Stopped);
        assert_eq!(next(Restarting, RUN, seen(true, false)), Running);
    }

    /// While a halt holds the agent it is `halted`, whatever happens, but for a stop or
    /// a delete while it runs; `Released` gives it its place back.
    #[test]
    fn a_held_agent_stays_halted_until_released() {
        let mut r = AgentRecord::new("a", crate::protocol::sample_spec(), RUN);
        transition(&mut r, Cause::Started);
        r.halt_ids.push("h1".into());
        transition(&mut r, Cause::Halted);
        assert_eq!(r.status(), Halted);
        for cause in [
            seen(true, false),
            seen(false, false),
            Cause::Started,
            Cause::SeenPaused,
            Cause::Resumed,
        ] {
            transition(&mut r, cause);
            assert_eq!(r.status(), Halted, "{cause:?}");
        }
        transition(&mut r, Cause::Begin(Operation::Stop));
        assert_eq!(r.status(), Stopping, "a stop shows while it runs");
        transition(&mut r, Cause::Stopped);
        assert_eq!(r.status(), Halted, "and the agent is still held");
        r.halt_ids.clear();
        transition(&mut r, Cause::Released { running: false });
        assert_eq!(r.status(), Failed, "desired running, not running");
        r.desired_state = STOP;
        transition(&mut r, Cause::Released { running: false });
        assert_eq!(r.status(), Stopped);
        transition(&mut r, Cause::Released { running: true });
        assert_eq!(r.status(), Running);
    }

    #[test]
    fn transition_writes_the_status_and_returns_the_old_one() {
        let mut r = AgentRecord::new("a", crate::protocol::sample_spec(), RUN);
        assert_eq!(r.status(), Creating);
        assert_eq!(transition(&mut r, Cause::ContainerCreated), Creating);
        assert_eq!(transition(&mut r, Cause::Begin(Operation::Start)), Created);
        assert_eq!(transition(&mut r, Cause::Started), Starting);
        assert_eq!(r.status(), Running);
        assert_eq!(transition(&mut r, Cause::Paused), Running);
        assert_eq!(transition(&mut r, Cause::Resumed), Paused);
        assert_eq!(r.status(), Running);
    }
}
