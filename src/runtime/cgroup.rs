//! Resource samples read straight from a container's cgroup files, as cAdvisor does,
//! instead of asking dockerd (whose stats API reads the same files and then builds a
//! JSON document per call): CPU time, memory in use (page cache excluded, Docker's and
//! cAdvisor's "working set") and its limit, OOM kills and pids, for cgroup v1 and v2,
//! with the cgroupfs and the systemd cgroup drivers' layouts. Network counters come
//! from `/proc/<pid>/net/dev` of one of the container's processes, when the host's
//! /proc is visible. Only for a Docker host this machine is (or whose files are
//! mounted): [`super::docker::DockerRuntime`] uses it when it may and falls back to
//! Docker's stats API for a container whose files it does not find.
//!
//! | figure | cgroup v1 | cgroup v2 |
//! | --- | --- | --- |
//! | CPU time (ns) | `cpuacct/…/cpuacct.usage` | `cpu.stat` `usage_usec` × 1000 |
//! | memory in use | `memory.usage_in_bytes` − `total_inactive_file` | `memory.current` − `inactive_file` |
//! | memory limit | `memory.limit_in_bytes` (huge: none) | `memory.max` (`max`: none) |
//! | OOM kills | `memory.oom_control` `oom_kill` | `memory.events` `oom_kill` |
//! | pids | `pids/…/pids.current` | `pids.current` |
//!
//! where `…` is `docker/<id>` (cgroupfs driver) or `system.slice/docker-<id>.scope`
//! (systemd driver). The host's CPU time (`system_ns`, for CPU %) is `/proc/stat`'s, as
//! Docker computes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{NetworkBytes, Stats, StatsOrigin};

/// Linux's USER_HZ: /proc/stat counts in these ticks per second.
const CLOCK_TICKS_PER_S: u64 = 100;

/// A v1 memory limit at or above this is "no limit" (the kernel's page-rounded
/// `LONG_MAX`).
const V1_NO_LIMIT: u64 = 1 << 62;

/// Which cgroup hierarchy the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (`memory/`, `cpuacct/`, `pids/` under the root).
    V1,
    /// The unified hierarchy (`cgroup.controllers` at the root).
    V2,
}

/// Where one container's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    V1 {
        memory: PathBuf,
        cpuacct: PathBuf,
        pids: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
    },
}

/// Reads containers' cgroup files under one root. Cheap to share (the located
/// directories are cached per container).
#[derive(Debug)]
pub struct CgroupReader {
    root: PathBuf,
    proc_root: PathBuf,
    version: Version,
    /// Container id → where its files are, found once.
    located: Mutex<HashMap<String, Located>>,
}

impl CgroupReader {
    /// A reader of the cgroup filesystem at `root` (network counters from
    /// `proc_root`); `None` when `root` is neither a v1 nor a v2 hierarchy.
    pub fn new(root: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> Option<Self> {
        let root = root.into();
        let version = if root.join("cgroup.controllers").is_file() {
            Version::V2
        } else if root.join("memory").is_dir() {
            Version::V1
        } else {
            return None;
        };
        Some(CgroupReader {
            root,
            proc_root: proc_root.into(),
            version,
            located: Mutex::new(HashMap::new()),
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One sample of container `id` (the full id); `None` when its files are not found
    /// (not running, removed, or a layout this reader does not know).
    pub fn sample(&self, id: &str) -> Option<Stats> {
        let located = self.locate(id)?;
        let sample = self.read(&located, id);
        if sample.is_none() {
            // Gone (stopped or removed): find it afresh next time.
            self.lock().remove(id);
        }
        sample
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Located>> {
        self.located
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locate(&self, id: &str) -> Option<Located> {
        if let Some(found) = self.lock().get(id) {
            return Some(found.clone());
        }
        // A full container id only: anything else could name another directory.
        if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let candidates = [
            format!("docker/{id}"),
            format!("system.slice/docker-{id}.scope"),
        ];
        let found = candidates.iter().find_map(|rel| match self.version {
            Version::V2 => {
                let dir = self.root.join(rel);
                dir.join("memory.current")
                    .is_file()
                    .then_some(Located::V2 { dir })
            }
            Version::V1 => {
                let memory = self.root.join("memory").join(rel);
                if !memory.join("memory.usage_in_bytes").is_file() {
                    return None;
                }
                let cpuacct = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
                    .iter()
                    .map(|c| self.root.join(c).join(rel))
                    .find(|d| d.join("cpuacct.usage").is_file())?;
                let pids = Some(self.root.join("pids").join(rel))
                    .filter(|d| d.join("pids.current").is_file());
                Some(Located::V1 {
                    memory,
                    cpuacct,
                    pids,
                })
            }
        })?;
        self.lock().insert(id.to_string(), found.clone());
        Some(found)
    }

    fn read(&self, located: &Located, id: &str) -> Option<Stats> {
        let (cpu_total_ns, usage, inactive, limit, oom_kills, pids, procs) = match located {
            Located::V1 {
                memory,
                cpuacct,
                pids,
            } => {
                let stat = keyed(&read(&memory.join("memory.stat"))?);
                let inactive = stat
                    .get("total_inactive_file")
                    .or_else(|| stat.get("inactive_file"))
                    .copied()
                    .unwrap_or(0);
                let limit = number(&read(&memory.join("memory.limit_in_bytes"))?)
                    .filter(|l| *l < V1_NO_LIMIT);
                let oom = read(&memory.join("memory.oom_control"))
                    .and_then(|t| keyed(&t).get("oom_kill").copied());
                let pids = pids
                    .as_ref()
                    .and_then(|d| read(&d.join("pids.current")))
                    .and_then(|t| number(&t));
                (
                    number(&read(&cpuacct.join("cpuacct.usage"))?)?,
                    number(&read(&memory.join("memory.usage_in_bytes"))?)?,
                    inactive,
                    limit,
                    oom,
                    pids,
                    memory.join("cgroup.procs"),
                )
            }
            Located::V2 { dir } => {
                let cpu = keyed(&read(&dir.join("cpu.stat"))?);
                let stat = keyed(&read(&dir.join("memory.stat"))?);
                let oom = read(&dir.join("memory.events"))
                    .and_then(|t| keyed(&t).get("oom_kill").copied());
                (
                    cpu.get("usage_usec")?.saturating_mul(1000),
                    number(&read(&dir.join("memory.current"))?)?,
                    stat.get("inactive_file").copied().unwrap_or(0),
                    number(&read(&dir.join("memory.max"))?),
                    oom,
                    read(&dir.join("pids.current")).and_then(|t| number(&t)),
                    dir.join("cgroup.procs"),
                )
            }
        };
        let host = read(&self.proc_root.join("stat")).and_then(|t| host_cpu(&t));
        let (system_ns, online_cpus) = host.unwrap_or((0, 1));
        Some(Stats {
            cpu_total_ns,
            system_ns,
            online_cpus,
            memory_bytes: usage.saturating_sub(inactive),
            memory_limit_bytes: limit.unwrap_or(0),
            pids: pids.unwrap_or(0),
            network: self.network(&procs, id),
            oom_kills,
            origin: StatsOrigin::Cgroup,
        })
    }

    /// The container's network counters, from one of its processes' view of
    /// `/proc/<pid>/net/dev` (only when that process is the container's: in a manager
    /// with a /proc of its own the pid may name another process).
    fn network(&self, procs: &Path, id: &str) -> Option<NetworkBytes> {
        let pid: u32 = read(procs)?.lines().next()?.trim().parse().ok()?;
        let dir = self.proc_root.join(pid.to_string());
        if !read(&dir.join("cgroup"))?.contains(id) {
            return None;
        }
        net_dev(&read(&dir.join("net").join("dev"))?)
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A file holding one number; `None` for `max` (no limit) or anything else.
fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`).
fn keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// The host's CPU time in ns (the `cpu` line's first seven fields: user to softirq,
/// steal left out, as Docker's `system_cpu_usage`) and the CPUs online (`cpuN` lines),
/// from `/proc/stat`.
fn host_cpu(stat: &str) -> Option<(u64, u32)> {
    let mut total = None;
    let mut cpus = 0u32;
    for line in stat.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                let ticks: u64 = words.take(7).filter_map(|w| w.parse::<u64>().ok()).sum();
                total = Some(ticks.saturating_mul(1_000_000_000 / CLOCK_TICKS_PER_S));
            }
            Some(w) if w.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    Some((total?, cpus.max(1)))
}

/// Bytes received and sent over every interface but loopback, from `/proc/<pid>/net/dev`.
fn net_dev(text: &str) -> Option<NetworkBytes> {
    let mut seen = false;
    let mut bytes = NetworkBytes::default();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let (Some(rx), Some(tx)) = (fields.first(), fields.get(8)) {
            bytes.rx_bytes += rx;
            bytes.tx_bytes += tx;
            seen = true;
        }
    }
    seen.then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The container id of the fixtures.
    const ID: &str = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";

    fn fixtures(version: &str) -> (PathBuf, PathBuf) {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        (base.join("cgroup").join(version), base.join("proc"))
    }

    #[test]
    fn cgroup_v1_files_of_the_cgroupfs_driver() {
        let (root, proc_root) = fixtures("v1");
        let reader = CgroupReader::new(root, proc_root).expect("a v1 hierarchy");
        assert_eq!(reader.version(), Version::V1);
        let s = reader.sample(ID).expect("the container's files");
        assert_eq!(s.origin, StatsOrigin::Cgroup);
        assert_eq!(s.cpu_total_ns, 52_993_012);
        // usage_in_bytes − total_inactive_file
        assert_eq!(s.memory_bytes, 1_200_128 - 86_016);
        assert_eq!(s.memory_limit_bytes, 64 * 1024 * 1024);
        assert_eq!(s.oom_kills, Some(0));
        assert_eq!(s.pids, 2);
        // /proc/stat: 2 CPUs; the cpu line's first 7 fields, in ns.
        assert_eq!(s.online_cpus, 2);
        assert_eq!(s.system_ns, 2_000_000 * 10_000_000);
        assert_eq!(
            s.network,
            Some(NetworkBytes {
                rx_bytes: 5_180,
                tx_bytes: 1_042
            }),
            "eth0 only, loopback left out"
        );
    }

    #[test]
    fn cgroup_v2_files_of_the_systemd_driver() {
        let (root, proc_root) = fixtures("v2");
        let reader = CgroupReader::new(root, proc_root).expect("a v2 hierarchy");
        assert_eq!(reader.version(), Version::V2);
        let s = reader.sample(ID).expect("the container's files");
        assert_eq!(s.cpu_total_ns, 48_211_000, "usage_usec in ns");
        assert_eq!(s.memory_bytes, 2_347_008 - 135_168);
        assert_eq!(s.memory_limit_bytes, 0, "memory.max is 'max': no limit");
        assert_eq!(s.oom_kills, Some(3));
        assert_eq!(s.pids, 5);
        // The fixture's pid belongs to another cgroup: no counters rather than wrong ones.
        assert_eq!(s.network, None);
    }

    #[test]
    fn unknown_containers_and_roots_give_nothing() {
        let (root, proc_root) = fixtures("v1");
        let reader = CgroupReader::new(root, &proc_root).expect("v1");
        assert!(
            reader.sample(&ID.replace('4', "0")).is_none(),
            "no such container"
        );
        assert!(reader.sample("../../etc").is_none(), "not an id");
        assert!(
            CgroupReader::new(proc_root, "/proc").is_none(),
            "not a cgroup fs"
        );
    }

    #[test]
    fn files_are_read_as_the_kernel_writes_them() {
        assert_eq!(number("max\n"), None);
        assert_eq!(number("4096\n"), Some(4096));
        let k = keyed("usage_usec 10\nuser_usec 7\nbroken\n");
        assert_eq!((k["usage_usec"], k["user_usec"], k.len()), (10, 7, 2));
        let (ns, cpus) = host_cpu("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1\ncpu1 1\nintr 5\n").unwrap();
        assert_eq!((ns, cpus), (28 * 10_000_000, 2), "steal (8) left out");
        assert!(net_dev("Inter-|\n face |\n").is_none());
    }
}
