//! The last hour of each agent's CPU and memory, for the status page's charts: the
//! samples the agent actors already take (every `HEALTH_CHECK_INTERVAL_S`), kept in a
//! bounded ring per agent. Nothing is sampled for it.
//!
//! **Bounded.** A ring holds at most [`CAPACITY`] points of [`Point`] (12 bytes each):
//! 181 × 12 B ≈ 2.1 KiB per agent, allocated once, whatever the check interval; 200
//! agents ≈ 0.4 MiB. Points are kept at least [`SPACING_S`] apart (the newest replaces
//! the last one while it is closer), so the ring spans an hour at any check interval;
//! points older than [`WINDOW_S`] are not shown. An agent's ring goes when its actor
//! ends (the agent was deleted, or the manager let go of it); a stopped agent keeps its
//! last hour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// What the charts show.
pub const WINDOW_S: u32 = 3600;
/// Least time between two kept points (but the newest), in seconds.
pub const SPACING_S: u32 = 20;
/// Points per agent: an hour at [`SPACING_S`], and the newest.
pub const CAPACITY: usize = (WINDOW_S / SPACING_S) as usize + 1;

/// One sample as the charts draw it: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When it was taken, Unix seconds.
    pub at_s: u32,
    /// CPU % since the sample before (100 = one core).
    pub cpu_percent: f32,
    /// Memory in use, page cache excluded, KiB (up to 4 TiB).
    pub memory_kib: u32,
}

impl Point {
    /// `memory_bytes` rounded to KiB (and capped).
    pub fn memory_kib_of(memory_bytes: u64) -> u32 {
        u32::try_from(memory_bytes.div_ceil(1024)).unwrap_or(u32::MAX)
    }
}

/// One agent's points, oldest first, never more than [`CAPACITY`].
#[derive(Debug, Default)]
pub struct Ring {
    points: VecDeque<Point>,
}

impl Ring {
    /// Keeps `p`: the newest point, replacing the last one when that one is less than
    /// [`SPACING_S`] after the one before it.
    pub fn push(&mut self, p: Point) {
        if self.points.capacity() == 0 {
            self.points.reserve_exact(CAPACITY);
        }
        let n = self.points.len();
        if let Some(last) = self.points.back() {
            if p.at_s < last.at_s {
                return; // a clock step back: keep the order
            }
        }
        if n >= 2 && p.at_s.saturating_sub(self.points[n - 2].at_s) < SPACING_S {
            self.points[n - 1] = p;
            return;
        }
        if self.points.len() == CAPACITY {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    /// The points taken within [`WINDOW_S`] before `now_s`, oldest first.
    pub fn recent(&self, now_s: u32) -> Vec<Point> {
        let since = now_s.saturating_sub(WINDOW_S);
        self.points
            .iter()
            .filter(|p| p.at_s >= since)
            .copied()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

fn rings() -> &'static Mutex<HashMap<String, Ring>> {
    static RINGS: OnceLock<Mutex<HashMap<String, Ring>>> = OnceLock::new();
    RINGS.get_or_init(Default::default)
}

fn with<T>(f: impl FnOnce(&mut HashMap<String, Ring>) -> T) -> T {
    let mut guard = rings()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

/// Now, in Unix seconds (as [`Point::at_s`]).
pub fn now_s() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX)
}

/// Keeps one sample of the agent.
pub fn record(agent_id: &str, p: Point) {
    with(|r| match r.get_mut(agent_id) {
        Some(ring) => ring.push(p),
        None => {
            let mut ring = Ring::default();
            ring.push(p);
            r.insert(agent_id.to_string(), ring);
        }
    });
}

/// Drops the agent's ring (its actor ended).
pub fn forget(agent_id: &str) {
    with(|r| {
        r.remove(agent_id);
    });
}

/// The agent's last hour, oldest first (empty when none was kept).
pub fn of(agent_id: &str) -> Vec<Point> {
    let now = now_s();
    with(|r| {
        r.get(agent_id)
            .map(|ring| ring.recent(now))
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_s: u32) -> Point {
        Point {
            at_s,
            cpu_percent: 1.0,
            memory_kib: at_s,
        }
    }

    #[test]
    fn a_point_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Point>(), 12);
        assert_eq!(Point::memory_kib_of(1025), 2);
        assert_eq!(Point::memory_kib_of(u64::MAX), u32::MAX);
    }

    #[test]
    fn the_ring_never_holds_more_than_its_capacity_and_keeps_the_newest() {
        let mut ring = Ring::default();
        for s in 0..(CAPACITY as u32 * 3) {
            ring.push(p(1_000 + s * SPACING_S));
        }
        assert_eq!(ring.len(), CAPACITY);
        assert_eq!(ring.points.capacity(), CAPACITY, "allocated once, exactly");
        let last = 1_000 + (CAPACITY as u32 * 3 - 1) * SPACING_S;
        assert_eq!(ring.points.back().map(|x| x.at_s), Some(last));
        assert_eq!(ring.recent(last).len(), CAPACITY, "an hour and the newest");
    }

    #[test]
    fn samples_closer_than_the_spacing_replace_the_newest_point() {
        let mut ring = Ring::default();
        for s in 0..=25 {
            ring.push(p(100 + s)); // every second
        }
        let at: Vec<u32> = ring.points.iter().map(|x| x.at_s).collect();
        // At least SPACING_S apart, but the newest, which is always the last sample.
        assert_eq!(at.first(), Some(&100));
        assert_eq!(at.last(), Some(&125));
        for w in at[..at.len() - 1].windows(2) {
            assert!(w[1] - w[0] >= SPACING_S - 1, "{at:?}");
        }
        assert!(at.len() <= 4, "{at:?}");
    }

    #[test]
    fn points_older_than_the_window_are_not_shown_and_forget_drops_the_ring() {
        let mut ring = Ring::default();
        ring.push(p(10));
        ring.push(p(10 + WINDOW_S + 5));
        assert_eq!(ring.recent(10 + WINDOW_S + 5).len(), 1);
        ring.push(p(3)); // earlier than the newest: ignored
        assert_eq!(ring.len(), 2);

        record("history-test-a", p(now_s()));
        assert_eq!(of("history-test-a").len(), 1);
        forget("history-test-a");
        assert!(of("history-test-a").is_empty());
    }
}
