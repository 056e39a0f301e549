//! Self-healing policy for one agent: when a container that should run has exited, how
//! long to wait before restarting it, and when to give up (a crash loop). Pure: time and
//! jitter are passed in, so every behaviour has a unit test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::HealthConfig;

/// What to do about a container that exited while it should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart it after this delay.
    RestartAfter(Duration),
    /// Too many restarts in the window: stop trying until a command arrives.
    CrashLoop { restarts: usize, window: Duration },
}

#[derive(Debug, Clone)]
pub struct CrashPolicy {
    base: Duration,
    max: Duration,
    /// Running this long resets the backoff.
    stable: Duration,
    max_restarts: usize,
    window: Duration,
    /// Restarts since the agent last ran stably (the backoff exponent).
    attempt: u32,
    /// When the recent restarts happened, oldest first (for the crash-loop window).
    recent: VecDeque<Instant>,
    /// Since when the container has been seen running.
    running_since: Option<Instant>,
}

impl CrashPolicy {
    pub fn new(cfg: &HealthConfig) -> Self {
        CrashPolicy {
            base: Duration::from_millis(cfg.restart_backoff_base_ms),
            max: Duration::from_millis(cfg.restart_backoff_max_ms),
            stable: Duration::from_secs(cfg.restart_stable_s),
            max_restarts: cfg.crash_loop_max_restarts as usize,
            window: Duration::from_secs(cfg.crash_loop_window_s),
            attempt: 0,
            recent: VecDeque::new(),
            running_since: None,
        }
    }

    /// The container was seen running at `now`.
    pub fn on_running(&mut self, now: Instant) {
        let since = *self.running_since.get_or_insert(now);
        if now.duration_since(since) >= self.stable {
            self.attempt = 0;
        }
    }

    /// The container was seen exited at `now`; `jitter` in [0, 1) spreads restarts of
    /// many agents (±20 %).
    pub fn on_exit(&mut self, now: Instant, jitter: f64) -> Decision {
        if let Some(since) = self.running_since.take() {
            if now.duration_since(since) >= self.stable {
                self.attempt = 0;
            }
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max_restarts {
            return Decision::CrashLoop {
                restarts: self.recent.len(),
                window: self.window,
            };
        }
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(20)));
        let capped = exp.min(self.max);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        let delay = capped.mul_f64(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        self.recent.push_back(now);
        Decision::RestartAfter(delay)
    }

    /// A command took over: forget the history.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
        self.running_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy(base_ms: u64, max_ms: u64, max_restarts: u32, window_s: u64) -> CrashPolicy {
        let mut cfg = Config::defaults().health;
        cfg.restart_backoff_base_ms = base_ms;
        cfg.restart_backoff_max_ms = max_ms;
        cfg.crash_loop_max_restarts = max_restarts;
        cfg.crash_loop_window_s = window_s;
        cfg.restart_stable_s = 60;
        CrashPolicy::new(&cfg)
    }

    fn delay(d: Decision) -> u128 {
        match d {
            Decision::RestartAfter(d) => d.as_millis(),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_each_time_up_to_the_cap() {
        let mut p = policy(100, 1000, 100, 3600);
        let t = Instant::now();
        let seen: Vec<u128> = (0..6).map(|_| delay(p.on_exit(t, 0.5))).collect();
        assert_eq!(seen, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_spreads_within_twenty_percent() {
        let mut a = policy(1000, 60_000, 100, 3600);
        let mut b = a.clone();
        let t = Instant::now();
        assert_eq!(delay(a.on_exit(t, 0.0)), 800);
        assert_eq!(delay(b.on_exit(t, 0.999_999)), 1199);
    }

    #[test]
    fn stable_running_resets_the_backoff() {
        let mut p = policy(100, 10_000, 100, 3600);
        let t0 = Instant::now();
        p.on_exit(t0, 0.5);
        p.on_exit(t0, 0.5);
        assert_eq!(delay(p.on_exit(t0, 0.5)), 400);
        p.on_running(t0);
        let later = t0 + Duration::from_secs(61);
        p.on_running(later);
        assert_eq!(delay(p.on_exit(later, 0.5)), 100);
    }

    #[test]
    fn too_many_restarts_in_the_window_is_a_crash_loop() {
        let mut p = policy(10, 100, 3, 60);
        let t = Instant::now();
        for _ in 0..3 {
            delay(p.on_exit(t, 0.5));
        }
        assert!(matches!(
            p.on_exit(t, 0.5),
            Decision::CrashLoop { restarts: 3, .. }
        ));
        // Outside the window the old restarts no longer count.
        let later = t + Duration::from_secs(61);
        delay(p.on_exit(later, 0.5));
    }

    #[test]
    fn reset_forgets_everything() {
        let mut p = policy(10, 100, 1, 60);
        let t = Instant::now();
        delay(p.on_exit(t, 0.5));
        assert!(matches!(p.on_exit(t, 0.5), Decision::CrashLoop { .. }));
        p.reset();
        assert_eq!(delay(p.on_exit(t, 0.5)), 10);
    }
}
