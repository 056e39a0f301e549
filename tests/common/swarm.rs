//! The Docker node in a swarm for one test (or bench) at a time: [`Swarm::join`] runs
//! `docker swarm init --advertise-addr 127.0.0.1` when the node is in none, and `docker
//! swarm leave --force` afterwards only if it did the init. Users hold a [`SwarmLock`] (a
//! mutex within the process, a file lock across processes), so swarm tests and benches
//! run one at a time; test binaries using plain containers may run meanwhile: swarm
//! init and leave do not touch bridge networks. Each user gets an overlay network name
//! of its own, removed in `Drop`.

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::exclusive::{exclusive, Exclusive};

const START_HINT: &str = "start the services with `bash scripts/services.sh`";
const LOCK_FILE: &str = "/tmp/agent-manager-swarm-tests.lock";
static IN_PROCESS: Mutex<()> = Mutex::new(());

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}; {START_HINT}"))
}

pub fn swarm_state() -> String {
    let out = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert!(
        out.status.success(),
        "Docker is not reachable: {}; {START_HINT}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Exclusive use of the node's swarm membership by this test.
pub struct SwarmLock(Exclusive);

impl SwarmLock {
    pub fn acquire() -> SwarmLock {
        SwarmLock(exclusive(LOCK_FILE, &IN_PROCESS))
    }
}

/// The node in a swarm for one test, and the test's overlay network name.
pub struct Swarm {
    /// True when this test ran `docker swarm init` (and so leaves in Drop).
    initialized: bool,
    /// Whether Docker's `docker_gwbridge` existed before (Swarm creates it, leave keeps it).
    gwbridge_existed: bool,
    pub network: String,
    _lock: SwarmLock,
}

impl Swarm {
    pub fn join(lock: SwarmLock) -> Swarm {
        let gwbridge_existed = docker(&["network", "inspect", "docker_gwbridge"])
            .status
            .success();
        let initialized = match swarm_state().as_str() {
            "active" => false,
            "inactive" => {
                let out = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                assert!(
                    out.status.success(),
                    "docker swarm init failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                true
            }
            other => {
                panic!("the Docker node's swarm state is '{other}'; leave or repair the swarm")
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        Swarm {
            initialized,
            gwbridge_existed,
            network: format!("autogen-swarm-test-{id}"),
            _lock: lock,
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // The test's network and the per-customer ones named after it. A network stays
        // busy until Swarm has removed the tasks' containers.
        let listed = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.network),
        ]);
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let until = Instant::now() + Duration::from_secs(30);
        for id in ids {
            loop {
                let out = docker(&["network", "rm", &id]);
                let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
                if out.status.success() || stderr.contains("not found") || Instant::now() > until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        if self.initialized {
            let _ = docker(&["swarm", "leave", "--force"]);
            if !self.gwbridge_existed {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}
