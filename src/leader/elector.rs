//! The election loop (contract section 12): a standby tries to take the lease every
//! `retry_every`; the leader renews it every `renew_every` and, the moment its own
//! deadline ([`super::lease::Timing::acting_until`]) passes without a renewal, says
//! [`Role::Deposed`] and never leads again in this process (the app exits and is
//! started again as a standby: the way kube's controller managers end a lost
//! leadership, and the only stop that is immediate whatever the acting part is doing).
//!
//! It runs on a thread of its own, with its own runtime and its own Redis connection,
//! so a busy actor thread or a long pipeline on the shared connection never delays a
//! renewal, and a deposition ends the process at once whatever the rest is doing.
//!
//! A hand-over (`SIGTERM`): the app stops acting first, then calls
//! [`Elector::release`], which ends the lease at once so a standby takes it on its next
//! try instead of waiting for the lease to run out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::lease::{next, Next, Timing};
use crate::error::StoreError;
use crate::retry::Backoff;
use crate::store::{Acquired, Candidate, Store};

/// Where the lease lives (Redis: [`RedisLease`]; a fake in the unit tests).
#[async_trait]
pub trait LeaseBackend: Send + Sync + 'static {
    async fn acquire(&self) -> Result<Acquired, StoreError>;
    async fn renew(&self, term: u64) -> Result<bool, StoreError>;
    async fn release(&self, term: u64) -> Result<bool, StoreError>;
}

/// The lease of `instance`'s managers in Redis, over a connection of its own (made on
/// the elector's thread, so its I/O runs there).
pub struct RedisLease {
    pub store: Store,
    pub instance: String,
    pub me: Candidate,
    /// When this manager started (RFC 3339): the hash's `since` when it takes over.
    pub since: String,
    pub lease_ms: u64,
    /// How long a missing hash is held by a marker before it may be taken.
    pub marker_ms: u64,
}

/// What the elector's thread needs to make its [`RedisLease`].
#[derive(Clone)]
pub struct RedisLeaseSpec {
    pub redis: crate::config::RedisConfig,
    pub instance: String,
    pub me: Candidate,
    pub since: String,
    pub lease_ms: u64,
    pub marker_ms: u64,
}

/// Where the elector gets its lease from.
pub enum Backend {
    /// Made already (the unit tests' fakes).
    Ready(Arc<dyn LeaseBackend>),
    /// Connected on the elector's own thread (Redis).
    Redis(Box<RedisLeaseSpec>),
}

impl Backend {
    /// The backend, connecting first when needed: retried with backoff until it works
    /// or the election is released (`None`).
    async fn open(self, release: &mut oneshot::Receiver<()>) -> Option<Arc<dyn LeaseBackend>> {
        let spec = match self {
            Backend::Ready(b) => return Some(b),
            Backend::Redis(spec) => *spec,
        };
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            match Store::connect(&spec.redis).await {
                Ok(store) => {
                    return Some(Arc::new(RedisLease {
                        store,
                        instance: spec.instance,
                        me: spec.me,
                        since: spec.since,
                        lease_ms: spec.lease_ms,
                        marker_ms: spec.marker_ms,
                    }))
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the election cannot reach Redis");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut *release => return None,
                    }
                }
            }
        }
    }
}

#[async_trait]
impl LeaseBackend for RedisLease {
    async fn acquire(&self) -> Result<Acquired, StoreError> {
        self.store
            .acquire_lease(
                &self.instance,
                &self.me,
                &self.since,
                self.lease_ms,
                self.marker_ms,
            )
            .await
    }
    async fn renew(&self, term: u64) -> Result<bool, StoreError> {
        self.store
            .renew_lease(&self.instance, &self.me, &self.since, term, self.lease_ms)
            .await
    }
    async fn release(&self, term: u64) -> Result<bool, StoreError> {
        self.store
            .release_lease(&self.instance, &self.me.id, term)
            .await
    }
}

/// This manager's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Warm, not acting: waits for the lease.
    Standby,
    /// Holds the lease of `term`: acts.
    Leader { term: u64 },
    /// Held the lease of `term` and could not renew it in time: must have stopped
    /// acting already, and never acts again in this process.
    Deposed { term: u64 },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Leader { .. } => "leader",
            Role::Deposed { .. } => "deposed",
        }
    }

    pub fn term(&self) -> Option<u64> {
        match self {
            Role::Standby => None,
            Role::Leader { term } | Role::Deposed { term } => Some(*term),
        }
    }
}

/// The running election: its role, and the hand-over.
pub struct Elector {
    role: watch::Receiver<Role>,
    release: Option<oneshot::Sender<()>>,
    /// Resolves when the elector's thread is done.
    done: Option<oneshot::Receiver<()>>,
}

/// What the elector does itself the moment its leader is deposed, before anything else
/// can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeposed {
    /// Exit the process with [`EXIT_DEPOSED`] from the elector's own thread: nothing
    /// more reaches Docker, Redis or RabbitMQ; the restart policy brings it back as a
    /// standby. The daemon.
    Exit,
    /// Only say [`Role::Deposed`]: the app stops acting (in-process managers: tests).
    Say,
}

/// The exit code of a manager whose lease ended without a hand-over.
pub const EXIT_DEPOSED: u8 = 75;

impl Elector {
    /// Starts electing over `backend` on a thread of its own.
    pub fn start(backend: Backend, timing: Timing, on_deposed: OnDeposed) -> Elector {
        let (role_tx, role) = watch::channel(Role::Standby);
        let (release, release_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("leader-election".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(backend, timing, role_tx, release_rx, on_deposed)),
                    Err(e) => tracing::error!(error = %e, "the election's runtime could not start"),
                }
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the election's thread could not start");
        }
        Elector {
            role,
            release: Some(release),
            done: Some(done),
        }
    }

    /// The role as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Ends the lease now if this manager holds it (after it stopped acting), and stops
    /// electing. Bounded by `limit`.
    pub async fn release(mut self, limit: Duration) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(limit, done).await;
        }
    }
}

/// Says the role to the app and to `/metrics`.
fn say(role: &watch::Sender<Role>, now: Role) {
    crate::metrics::emit(crate::metrics::events::RoleChanged {
        role: now.name(),
        term: now.term(),
    });
    let _ = role.send(now);
}

/// The loop: standby until the lease is ours, then leader until it is not (deposed) or
/// until released.
async fn run(
    backend: Backend,
    timing: Timing,
    role: watch::Sender<Role>,
    mut release: oneshot::Receiver<()>,
    on_deposed: OnDeposed,
) {
    say(&role, Role::Standby);
    let Some(backend) = backend.open(&mut release).await else {
        return;
    };
    let deposed = |term: u64, why: &str| {
        say(&role, Role::Deposed { term });
        tracing::error!(term, "{why}: this manager stops acting");
        if on_deposed == OnDeposed::Exit {
            // From this thread, at once: the actors' thread may be busy.
            std::process::exit(i32::from(EXIT_DEPOSED));
        }
    };
    let Some((term, mut acting_until, mut last_sent)) =
        stand_by(&*backend, &timing, &mut release).await
    else {
        return;
    };
    say(&role, Role::Leader { term });
    tracing::info!(term, "this manager leads");
    loop {
        let (at, answer_by) = match next(&timing, Instant::now(), last_sent, acting_until) {
            Next::Stop => {
                deposed(
                    term,
                    "the leader lease could not be renewed before this manager's deadline",
                );
                return;
            }
            Next::Renew { at, answer_by } => (at, answer_by),
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = &mut release => {
                match tokio::time::timeout(timing.lease, backend.release(term)).await {
                    Ok(Ok(true)) => tracing::info!(term, "leader lease released: a standby takes over"),
                    Ok(Ok(false)) => tracing::warn!(term, "the leader lease was no longer ours to release"),
                    Ok(Err(e)) => tracing::warn!(term, error = %e, "could not release the leader lease: a standby takes over when it runs out"),
                    Err(_) => tracing::warn!(term, "releasing the leader lease timed out: a standby takes over when it runs out"),
                }
                say(&role, Role::Standby);
                return;
            }
        }
        let sent = Instant::now();
        let limit = answer_by.saturating_duration_since(sent);
        match tokio::time::timeout(limit, backend.renew(term)).await {
            Ok(Ok(true)) => {
                last_sent = sent;
                acting_until = timing.acting_until(sent);
            }
            Ok(Ok(false)) => {
                deposed(term, "the leader lease is another manager's now");
                return;
            }
            Ok(Err(e)) => {
                last_sent = sent;
                tracing::warn!(term, error = %e, "could not renew the leader lease; trying again until the deadline");
            }
            Err(_) => {
                last_sent = sent;
                tracing::warn!(
                    term,
                    waited_ms = limit.as_millis() as u64,
                    "Redis did not answer the leader lease's renewal in time; trying again until the deadline"
                );
            }
        }
    }
}

/// Tries to take the lease until it is ours (its term, until when it may act, when the
/// winning request was sent) or until released (`None`).
async fn stand_by(
    backend: &dyn LeaseBackend,
    timing: &Timing,
    release: &mut oneshot::Receiver<()>,
) -> Option<(u64, Instant, Instant)> {
    let mut backoff = Backoff::new(Duration::from_secs(2));
    let mut last_holder = String::new();
    loop {
        let sent = Instant::now();
        let wait = match tokio::time::timeout(timing.lease, backend.acquire()).await {
            Ok(Ok(Acquired::Leader { term })) => {
                return Some((term, timing.acting_until(sent), sent));
            }
            Ok(Ok(Acquired::Held { holder, term, .. })) => {
                backoff.reset();
                if holder != last_holder {
                    tracing::info!(%holder, term, "standing by: another manager leads");
                    last_holder = holder;
                }
                timing.retry_every
            }
            Ok(Err(e)) => {
                let wait = backoff.next_delay().max(timing.retry_every);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "could not ask for the leader lease");
                wait
            }
            Err(_) => backoff.next_delay().max(timing.retry_every),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut *release => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A lease in memory: `holder` and `term`; renewals answer as `renewals` says.
    #[derive(Default)]
    struct Fake {
        state: Mutex<(Option<u64>, u64)>,
        /// `Some(false)`: renewals say "not yours"; `None`: they hang.
        renew_answer: Mutex<Option<bool>>,
        released: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl LeaseBackend for Fake {
        async fn acquire(&self) -> Result<Acquired, StoreError> {
            let mut s = self.state.lock().expect("lock");
            if s.0.is_some() {
                return Ok(Acquired::Held {
                    holder: "other".into(),
                    term: s.1,
                    remaining_ms: 100,
                });
            }
            s.1 += 1;
            s.0 = Some(s.1);
            Ok(Acquired::Leader { term: s.1 })
        }
        async fn renew(&self, _term: u64) -> Result<bool, StoreError> {
            let answer = *self.renew_answer.lock().expect("lock");
            match answer {
                Some(a) => Ok(a),
                None => std::future::pending().await,
            }
        }
        async fn release(&self, term: u64) -> Result<bool, StoreError> {
            self.released.lock().expect("lock").push(term);
            self.state.lock().expect("lock").0 = None;
            Ok(true)
        }
    }

    const FAST: Timing = Timing {
        lease: Duration::from_millis(400),
        renew_every: Duration::from_millis(100),
        retry_every: Duration::from_millis(50),
    };

    async fn wait_for(role: &mut watch::Receiver<Role>, want: impl Fn(&Role) -> bool) -> Role {
        let r = tokio::time::timeout(Duration::from_secs(5), role.wait_for(want))
            .await
            .expect("the role within 5 s")
            .expect("the elector runs");
        *r
    }

    #[actix_rt::test]
    async fn a_free_lease_is_taken_kept_and_released_on_hand_over() {
        let fake = Arc::new(Fake::default());
        *fake.renew_answer.lock().expect("lock") = Some(true);
        let elector = Elector::start(Backend::Ready(fake.clone()), FAST, OnDeposed::Say);
        let mut role = elector.role();
        assert_eq!(
            wait_for(&mut role, |r| matches!(r, Role::Leader { .. })).await,
            Role::Leader { term: 1 }
        );
        // Several leases' worth of renewals later it still leads.
        tokio::time::sleep(FAST.lease * 3).await;
        assert_eq!(*role.borrow(), Role::Leader { term: 1 });
        elector.release(Duration::from_secs(1)).await;
        assert_eq!(*fake.released.lock().expect("lock"), vec![1]);
    }

    #[actix_rt::test]
    async fn a_leader_whose_renewals_hang_is_deposed_before_its_lease_ends() {
        let fake = Arc::new(Fake::default());
        let elector = Elector::start(Backend::Ready(fake.clone()), FAST, OnDeposed::Say);
        let mut role = elector.role();
        wait_for(&mut role, |r| matches!(r, Role::Leader { .. })).await;
        let led = Instant::now();
        let deposed = wait_for(&mut role, |r| matches!(r, Role::Deposed { .. })).await;
        assert_eq!(deposed, Role::Deposed { term: 1 });
        // Three quarters of the lease from the winning request, never the whole lease.
        assert!(led.elapsed() < FAST.lease, "{:?}", led.elapsed());
    }

    #[actix_rt::test]
    async fn a_leader_told_the_lease_is_another_s_is_deposed_at_once() {
        let fake = Arc::new(Fake::default());
        *fake.renew_answer.lock().expect("lock") = Some(false);
        let elector = Elector::start(Backend::Ready(fake.clone()), FAST, OnDeposed::Say);
        let mut role = elector.role();
        assert_eq!(
            wait_for(&mut role, |r| matches!(r, Role::Deposed { .. })).await,
            Role::Deposed { term: 1 }
        );
    }

    #[actix_rt::test]
    async fn a_standby_waits_for_the_holder_and_takes_over_when_it_lets_go() {
        let fake = Arc::new(Fake::default());
        *fake.state.lock().expect("lock") = (Some(4), 4);
        *fake.renew_answer.lock().expect("lock") = Some(true);
        let elector = Elector::start(Backend::Ready(fake.clone()), FAST, OnDeposed::Say);
        let mut role = elector.role();
        tokio::time::sleep(FAST.retry_every * 3).await;
        assert_eq!(*role.borrow(), Role::Standby);
        fake.state.lock().expect("lock").0 = None;
        assert_eq!(
            wait_for(&mut role, |r| matches!(r, Role::Leader { .. })).await,
            Role::Leader { term: 5 }
        );
        elector.release(Duration::from_secs(1)).await;
    }
}
