//! A local multi-node swarm for one test at a time: [`Cluster::up`] takes a file lock
//! (tests in any binary or process wait for it), runs `scripts/cluster.sh up N` and
//! hands out the manager node's `DOCKER_HOST`; `Drop` removes the test's services and
//! runs `scripts/cluster.sh down`, whether the test passed or not.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::exclusive::{exclusive, Exclusive};

use bollard::Docker;

const LOCK_FILE: &str = "/tmp/agent-manager-cluster-tests.lock";
const SCRIPT: &str = "scripts/cluster.sh";
static IN_PROCESS: Mutex<()> = Mutex::new(());

/// The cluster of one test.
pub struct Cluster {
    /// The manager node's endpoint, `unix:///run/amc1.sock`.
    pub docker_host: String,
    /// A client of the manager node.
    pub docker: Docker,
    pub nodes: usize,
    /// The cluster's registry (`10.213.0.1:5000`) when `docker-registry` is installed:
    /// the images are there, not on the worker nodes.
    pub registry: Option<String>,
    _lock: Exclusive,
}

fn script() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"));
    cmd
}

impl Cluster {
    /// `nodes` nodes; `gpus` as CLUSTER_GPUS (`3:2`), `labels` as CLUSTER_LABELS.
    pub fn up(nodes: usize, gpus: &str, labels: &str) -> Cluster {
        let lock = exclusive(LOCK_FILE, &IN_PROCESS);
        // A cluster a killed test left behind is not this test's: start clean.
        let _ = super::run_bounded(
            {
                let mut c = script();
                c.arg("down");
                c
            },
            Duration::from_secs(120),
            "cluster.sh down",
        );
        let mut cmd = script();
        cmd.args(["up", &nodes.to_string()])
            .env("CLUSTER_GPUS", gpus)
            .env("CLUSTER_LABELS", labels)
            // Only the test agent (2 MB) the tests run, not the 235 MB reference agent.
            .env("CLUSTER_IMAGES", super::agent_image());
        let out = super::run_bounded(cmd, Duration::from_secs(180), "cluster.sh up");
        let docker_host = out
            .stdout
            .lines()
            .last()
            .map(str::trim)
            .filter(|l| l.starts_with("unix://"))
            .unwrap_or_else(|| {
                panic!(
                    "`bash {SCRIPT} up {nodes}` failed (it needs root, iproute2, util-linux \
                     (nsenter, unshare), docker.io and the agent image from \
                     scripts/services.sh): {}\n{}",
                    out.stdout, out.stderr
                )
            })
            .to_string();
        let socket = docker_host.trim_start_matches("unix://");
        let docker = Docker::connect_with_unix(socket, 60, bollard::API_DEFAULT_VERSION)
            .unwrap_or_else(|e| panic!("Docker client for {docker_host}: {e}"));
        let registry = {
            let mut cmd = script();
            cmd.arg("registry");
            let out = super::run_bounded(cmd, Duration::from_secs(20), "cluster.sh registry");
            (out.code == 0).then(|| out.stdout.trim().to_string())
        };
        Cluster {
            docker_host,
            docker,
            nodes,
            registry,
            _lock: lock,
        }
    }

    /// `image` as the nodes reach it: from the registry when there is one.
    pub fn image(&self, image: &str) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{image}"),
            None => image.to_string(),
        }
    }

    /// The `DOCKER_HOST` of node `index` (1 is the manager node).
    pub fn node_host(&self, index: usize) -> String {
        self.docker_host.replace("1.sock", &format!("{index}.sock"))
    }

    /// Runs `scripts/cluster.sh <action> <node>` (stop-node, kill-node, start-node).
    pub fn node(&self, action: &str, index: usize) {
        let mut cmd = script();
        cmd.args([action, &index.to_string()]);
        let out = super::run_bounded(cmd, Duration::from_secs(120), action);
        assert!(
            out.code == 0,
            "{SCRIPT} {action} {index}: {}\n{}",
            out.stdout,
            out.stderr
        );
    }

    /// Removes the services of manager instance `instance` (before the cluster goes).
    pub fn remove_services(&self, instance: &str) {
        let out = Command::new("docker")
            .args(["-H", &self.docker_host, "service", "ls", "-q", "--filter"])
            .arg(format!("label=autogen.manager-instance={instance}"))
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["-H", &self.docker_host, "service", "rm"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut cmd = script();
        cmd.arg("down");
        let out = super::run_bounded(cmd, Duration::from_secs(120), "cluster.sh down");
        if out.code != 0 {
            eprintln!("{SCRIPT} down: {}\n{}", out.stdout, out.stderr);
        }
    }
}
