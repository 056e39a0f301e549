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
//! (systemd driver). CPU % is over wall time: `system_ns` is the time since the reader
//! was made times the CPUs online (what `/proc/stat`'s total grows by, steal included),
//! so no sample reads `/proc/stat`. A sample reads six small files and `net/dev`; where
//! the files are, and which process's `net/dev` is the container's, is found once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::{NetworkBytes, Stats, StatsOrigin};

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

/// What is known of one container's files.
#[derive(Debug, Clone)]
struct Entry {
    located: Located,
    /// A process of the container whose `/proc/<pid>/net/dev` was checked to be its
    /// (`None`: not found yet, or none to be seen).
    net_pid: Option<u32>,
}

/// Reads containers' cgroup files under one root. Cheap to share (the located
/// directories are cached per container).
#[derive(Debug)]
pub struct CgroupReader {
    root: PathBuf,
    proc_root: PathBuf,
    version: Version,
    /// The start of `system_ns`.
    epoch: Instant,
    /// CPUs online (the `cpuN` lines of `/proc/stat` when the reader was made).
    online_cpus: u32,
    /// Container id → where its files are, found once.
    located: Mutex<HashMap<String, Entry>>,
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
        let proc_root = proc_root.into();
        let online_cpus = read(&proc_root.join("stat"))
            .and_then(|t| online_cpus(&t))
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.get() as u32)
            })
            .unwrap_or(1);
        Some(CgroupReader {
            root,
            proc_root,
            version,
            epoch: Instant::now(),
            online_cpus,
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
        let mut entry = self.locate(id)?;
        let Some(mut sample) = self.read(&entry.located) else {
            // Gone (stopped or removed): find it afresh next time.
            self.lock().remove(id);
            return None;
        };
        let counters = entry
            .net_pid
            .and_then(|pid| self.net_dev_of(pid))
            .or_else(|| {
                // The process is gone (or none was found yet): find another.
                entry.net_pid = self.container_pid(&entry.located, id);
                if let Some(known) = self.lock().get_mut(id) {
                    known.net_pid = entry.net_pid;
                }
                entry.net_pid.and_then(|pid| self.net_dev_of(pid))
            });
        sample.network = counters;
        Some(sample)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.located
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locate(&self, id: &str) -> Option<Entry> {
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
        let entry = Entry {
            located: found,
            net_pid: None,
        };
        self.lock().insert(id.to_string(), entry.clone());
        Some(entry)
    }

    /// Everything but the network counters.
    fn read(&self, located: &Located) -> Option<Stats> {
        let (cpu_total_ns, usage, inactive, limit, oom_kills, pids) = match located {
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
                )
            }
        };
        let elapsed_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Some(Stats {
            cpu_total_ns,
            system_ns: elapsed_ns.saturating_mul(u64::from(self.online_cpus)),
            online_cpus: self.online_cpus,
            memory_bytes: usage.saturating_sub(inactive),
            memory_limit_bytes: limit.unwrap_or(0),
            pids: pids.unwrap_or(0),
            network: None,
            oom_kills,
            origin: StatsOrigin::Cgroup,
        })
    }

    /// A process of the container whose `/proc/<pid>` is this reader's to see: the
    /// first of `cgroup.procs`, if `/proc/<pid>/cgroup` names the container (in a
    /// manager with a /proc of its own the pid may name another process).
    fn container_pid(&self, located: &Located, id: &str) -> Option<u32> {
        let procs = match located {
            Located::V1 { memory, .. } => memory.join("cgroup.procs"),
            Located::V2 { dir } => dir.join("cgroup.procs"),
        };
        let pid: u32 = read(&procs)?.lines().next()?.trim().parse().ok()?;
        let cgroup = read(&self.proc_root.join(pid.to_string()).join("cgroup"))?;
        cgroup.contains(id).then_some(pid)
    }

    /// Bytes over the interfaces of process `pid`'s network namespace.
    fn net_dev_of(&self, pid: u32) -> Option<NetworkBytes> {
        let path = self.proc_root.join(pid.to_string()).join("net").join("dev");
        net_dev(&read(&path)?)
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

/// The CPUs online: the `cpuN` lines of `/proc/stat`.
fn online_cpus(stat: &str) -> Option<u32> {
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    u32::try_from(cpus).ok().filter(|n| *n > 0)
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
        // /proc/stat: 2 CPUs; wall time since the reader was made, times 2.
        assert_eq!(s.online_cpus, 2);
        assert!(s.system_ns > 0 && s.system_ns.is_multiple_of(2));
        let later = reader.sample(ID).expect("again");
        assert!(later.system_ns > s.system_ns, "the clock moves");
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
        assert_eq!(online_cpus("cpu  1 2 3\ncpu0 1\ncpu1 1\nintr 5\n"), Some(2));
        assert_eq!(online_cpus("intr 5\n"), None);
        assert!(net_dev("Inter-|\n face |\n").is_none());
    }
}
