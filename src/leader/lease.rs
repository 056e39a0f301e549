//! The lease's clock, pure: when to renew, when a standby tries again, and the leader's
//! own deadline, which ends its leadership before the lease can have ended anywhere.
//!
//! A renewal extends the lease to `lease` from the moment Redis runs the script, which
//! is after we sent it; so the lease lasts at least `lease` from the send. The leader
//! counts its own leadership from the send too, but only for `lease - margin`: the
//! margin covers the two clocks running at slightly different rates and the time between
//! "the deadline passed" and "nothing more is done" (a few milliseconds: the acting part
//! is told at once, and the process exits). What a margin cannot cover (a leader frozen
//! mid-call, past its deadline) the terms on its writes do (docs/RELIABILITY.md).

use std::time::{Duration, Instant};

/// The lease's settings (`[leader]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts from a renewal (`LEADER_LEASE_MS`).
    pub lease: Duration,
    /// How often the leader renews (`LEADER_RENEW_MS`).
    pub renew_every: Duration,
    /// How often a standby tries to take the lease (`LEADER_RETRY_MS`).
    pub retry_every: Duration,
}

impl Timing {
    /// The defaults: a 2 s lease renewed every 500 ms, a standby trying every 250 ms.
    pub const DEFAULT: Timing = Timing {
        lease: Duration::from_millis(2000),
        renew_every: Duration::from_millis(500),
        retry_every: Duration::from_millis(250),
    };

    /// The part of the lease the leader never counts on: a quarter of it.
    pub fn margin(&self) -> Duration {
        self.lease / 4
    }

    /// Until when a renewal (or acquisition) sent at `sent` lets the leader act.
    pub fn acting_until(&self, sent: Instant) -> Instant {
        sent + self.lease.saturating_sub(self.margin())
    }

    /// Why these settings cannot work, if they cannot: a renewal must fit, at least
    /// twice, into the time a leader may act (one failed renewal is not a lost lease).
    pub fn problem(&self) -> Option<String> {
        let acting = self.lease.saturating_sub(self.margin());
        if self.lease < Duration::from_millis(200) {
            return Some(format!(
                "LEADER_LEASE_MS {} is below 200 ms",
                self.lease.as_millis()
            ));
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > acting {
            return Some(format!(
                "LEADER_RENEW_MS {} must be above 0 and at most half of three quarters of LEADER_LEASE_MS {} ({} ms)",
                self.renew_every.as_millis(),
                self.lease.as_millis(),
                (acting / 2).as_millis()
            ));
        }
        if self.retry_every.is_zero() || self.retry_every > self.lease {
            return Some(format!(
                "LEADER_RETRY_MS {} must be above 0 and at most LEADER_LEASE_MS {}",
                self.retry_every.as_millis(),
                self.lease.as_millis()
            ));
        }
        None
    }
}

/// What a leader does next, given when it may act until and when it last renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Its deadline passed: stop acting now.
    Stop,
    /// Renew at this instant, waiting at most until the deadline for the answer.
    Renew { at: Instant, answer_by: Instant },
}

/// The leader's next step at `now`.
pub fn next(timing: &Timing, now: Instant, last_sent: Instant, acting_until: Instant) -> Next {
    if now >= acting_until {
        return Next::Stop;
    }
    Next::Renew {
        at: (last_sent + timing.renew_every).min(acting_until),
        answer_by: acting_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_work_and_bad_settings_are_named() {
        assert_eq!(Timing::DEFAULT.problem(), None);
        let t = Timing {
            renew_every: Duration::from_millis(1000),
            ..Timing::DEFAULT
        };
        let p = t.problem().expect("renewing too rarely");
        assert!(p.contains("LEADER_RENEW_MS 1000"), "{p}");
        let t = Timing {
            retry_every: Duration::ZERO,
            ..Timing::DEFAULT
        };
        assert!(t.problem().expect("zero").contains("LEADER_RETRY_MS"));
    }

    #[test]
    fn a_leader_acts_for_three_quarters_of_the_lease_from_the_send() {
        let t = Timing::DEFAULT;
        let sent = Instant::now();
        assert_eq!(t.acting_until(sent), sent + Duration::from_millis(1500));
    }

    #[test]
    fn a_leader_renews_on_time_and_stops_at_its_deadline() {
        let t = Timing::DEFAULT;
        let sent = Instant::now();
        let until = t.acting_until(sent);
        assert_eq!(
            next(&t, sent, sent, until),
            Next::Renew {
                at: sent + Duration::from_millis(500),
                answer_by: until
            }
        );
        // Renewals that failed: it keeps trying, never past the deadline.
        let late = sent + Duration::from_millis(1400);
        let Next::Renew { at, answer_by } = next(&t, late, late, until) else {
            panic!("still before the deadline");
        };
        assert_eq!(at, until);
        assert_eq!(answer_by, until);
        assert_eq!(next(&t, until, late, until), Next::Stop);
    }
}
