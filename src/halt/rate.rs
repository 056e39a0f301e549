//! The publishing rate of each agent (contract section 10's automatic halt), from the
//! broker's per-channel publish counters, without per-agent polling: one listing of
//! every channel per interval ([`RateWatch::observe`]). Pure: readings and time are
//! given.
//!
//! A channel's counter only grows while the channel lives; what a channel published
//! between two readings is the difference of its counters, and a channel first seen
//! after the first reading counts from zero (it was opened since). The first reading
//! is only a baseline: what channels published before the watch began is not held
//! against anyone. An agent's rate is what its channels published within the last
//! window, divided by the window (so a watch younger than its window, or one that
//! missed readings, errs low, never high).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One channel as a listing shows it: whose agent (its user's) and its publish count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCount {
    pub agent_id: String,
    pub published: u64,
}

/// The rates of every agent's channels, over a sliding window.
#[derive(Debug, Clone)]
pub struct RateWatch {
    window: Duration,
    /// The last reading, by channel name; `None` before the first.
    last: Option<HashMap<String, ChannelCount>>,
    /// What each agent published between readings, newest last, within the window.
    steps: VecDeque<(Instant, HashMap<String, u64>)>,
}

impl RateWatch {
    pub fn new(window: Duration) -> Self {
        RateWatch {
            window,
            last: None,
            steps: VecDeque::new(),
        }
    }

    /// Takes the reading `channels` (by channel name) made at `at`; returns each
    /// agent's rate (messages per second) averaged over the window.
    pub fn observe(
        &mut self,
        at: Instant,
        channels: HashMap<String, ChannelCount>,
    ) -> HashMap<String, f64> {
        let mut step: HashMap<String, u64> = HashMap::new();
        if let Some(last) = &self.last {
            for (name, now) in &channels {
                let before = last
                    .get(name)
                    .filter(|b| b.agent_id == now.agent_id)
                    .map_or(0, |b| b.published);
                let grew = now.published.saturating_sub(before);
                if grew > 0 {
                    *step.entry(now.agent_id.clone()).or_default() += grew;
                }
            }
        }
        self.last = Some(channels);
        self.steps.push_back((at, step));
        while self
            .steps
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= self.window)
        {
            self.steps.pop_front();
        }
        let mut totals: HashMap<String, u64> = HashMap::new();
        for (_, step) in &self.steps {
            for (agent, n) in step {
                *totals.entry(agent.clone()).or_default() += n;
            }
        }
        let secs = self.window.as_secs_f64().max(0.001);
        totals
            .into_iter()
            .map(|(agent, n)| (agent, n as f64 / secs))
            .collect()
    }
}

/// The agents whose rate is over their limit (`limit_of`: `None` for no limit), with
/// the rate and the limit, by agent id.
pub fn over_limit(
    rates: &HashMap<String, f64>,
    limit_of: impl Fn(&str) -> Option<f64>,
) -> Vec<(String, f64, f64)> {
    let mut over: Vec<(String, f64, f64)> = rates
        .iter()
        .filter_map(|(agent, rate)| {
            let limit = limit_of(agent)?;
            (*rate > limit).then(|| (agent.clone(), *rate, limit))
        })
        .collect();
    over.sort_by(|a, b| a.0.cmp(&b.0));
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(entries: &[(&str, &str, u64)]) -> HashMap<String, ChannelCount> {
        entries
            .iter()
            .map(|(ch, agent, n)| {
                (
                    ch.to_string(),
                    ChannelCount {
                        agent_id: agent.to_string(),
                        published: *n,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_first_reading_is_a_baseline_and_rates_are_averaged_over_the_window() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(10));
        assert!(w.observe(t, reading(&[("c1", "a", 1_000_000)])).is_empty());
        // 100 messages a second for 2 s: 200 within a 10 s window is 20/s.
        w.observe(t + s(1), reading(&[("c1", "a", 1_000_100)]));
        let rates = w.observe(t + s(2), reading(&[("c1", "a", 1_000_200)]));
        assert!((rates["a"] - 20.0).abs() < 1e-9, "{rates:?}");
        // A new channel counts from zero; two channels of one agent add up.
        let rates = w.observe(
            t + s(3),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 50)]),
        );
        assert!((rates["a"] - 35.0).abs() < 1e-9, "{rates:?}");
        // Steps older than the window fall out.
        let rates = w.observe(
            t + s(14),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 50)]),
        );
        assert!(rates.get("a").is_none_or(|r| *r == 0.0), "{rates:?}");
    }

    #[test]
    fn closed_channels_and_reused_names_never_count_negative() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(10));
        w.observe(t, reading(&[("c1", "a", 500)]));
        // c1 closed and its name reused by agent b's new channel.
        let rates = w.observe(t + s(1), reading(&[("c1", "b", 30)]));
        assert_eq!(rates.get("a"), None);
        assert!((rates["b"] - 3.0).abs() < 1e-9);
        let over = over_limit(&rates, |agent| (agent == "b").then_some(2.0));
        assert_eq!(over, vec![("b".to_string(), 3.0, 2.0)]);
        assert!(over_limit(&rates, |_| None).is_empty());
    }
}
