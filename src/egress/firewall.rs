//! The kernel's side of egress (contract section 11) in Docker and GPU modes: the rules
//! of [`super::rules`], written with `iptables-restore --noflush` (one atomic
//! transaction per change, so an agent's chain is never half written) and read with
//! `iptables -S` / `iptables-save -c`. Every call is bounded and waits for the xtables
//! lock at most 5 s.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Mutex;

use super::rules::{self, Platform, HOOKED_FROM, HOOK_CHAIN};
use crate::config::EgressConfig;
use crate::error::RuntimeError;
use crate::ports::EgressFilter;
use crate::protocol::egress::parsed;
use crate::protocol::AgentSpec;
use crate::record::AgentRecord;

/// Bound on one iptables call (it waits up to this long for the xtables lock too).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The rules of one manager instance's agents.
pub struct Firewall {
    instance: String,
    config: EgressConfig,
    platform: Platform,
    /// One whole-instance sync at a time (the kernel's state is read for each change,
    /// never remembered: another manager of the instance may have changed it).
    changing: Arc<Mutex<()>>,
}

impl Firewall {
    /// Hooks [`HOOK_CHAIN`] first into `DOCKER-USER` and `INPUT` (idempotently) and reads
    /// which of `instance`'s agents have rules. Fails when iptables cannot be used.
    pub async fn install(
        instance: &str,
        config: EgressConfig,
        platform: Platform,
    ) -> Result<Firewall, RuntimeError> {
        // Other managers on this host may do the same at the same moment: each step is
        // checked again rather than trusted to be ours alone.
        if iptables(&["-w", "5", "-S", HOOK_CHAIN]).await.is_err() {
            if let Err(e) = iptables(&["-w", "5", "-N", HOOK_CHAIN]).await {
                iptables(&["-w", "5", "-S", HOOK_CHAIN])
                    .await
                    .map_err(|_| e)?;
            }
        }
        let established = [
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "RETURN",
        ];
        let check: Vec<&str> = ["-w", "5", "-C", HOOK_CHAIN]
            .into_iter()
            .chain(established)
            .collect();
        if iptables(&check).await.is_err() {
            let insert: Vec<&str> = ["-w", "5", "-I", HOOK_CHAIN, "1"]
                .into_iter()
                .chain(established)
                .collect();
            iptables(&insert).await?;
        }
        for from in HOOKED_FROM {
            if iptables(&["-w", "5", "-C", from, "-j", HOOK_CHAIN])
                .await
                .is_err()
            {
                iptables(&["-w", "5", "-I", from, "1", "-j", HOOK_CHAIN]).await?;
            }
        }
        Ok(Firewall {
            instance: instance.to_string(),
            config,
            platform,
            changing: Arc::default(),
        })
    }

    /// This instance's agents that have a rule in [`HOOK_CHAIN`], as the kernel says.
    async fn hooked(&self) -> Result<HashSet<String>, RuntimeError> {
        let listing = iptables(&["-w", "5", "-S", HOOK_CHAIN]).await?;
        Ok(rules::agents_in(&listing, &self.instance)
            .into_iter()
            .collect())
    }

    /// Whether agent `agent_id`'s rule is in [`HOOK_CHAIN`].
    async fn is_hooked(&self, agent_id: &str) -> bool {
        let mut args = vec!["-w".to_string(), "5".into(), "-C".into(), HOOK_CHAIN.into()];
        args.extend(rules::hook_args(&self.instance, agent_id));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        iptables(&args).await.is_ok()
    }

    fn allow_text(&self, agent_id: &str, spec: &AgentSpec, hooked: bool) -> String {
        let entries = parsed(&self.config.entries_for(spec));
        rules::allow_text(&self.instance, agent_id, &self.platform, &entries, hooked)
    }

    /// Connections each of this instance's agents had refused, by agent id.
    pub async fn refused(&self) -> Result<HashMap<String, u64>, RuntimeError> {
        let saved = run("iptables-save", &["-c", "-t", "filter"], None).await?;
        let by_chain = rules::refused_by_chain(&saved);
        let by_proxy = super::proxy::refused_by_agent();
        let hooked = self.hooked().await?;
        Ok(hooked
            .iter()
            .map(|agent| {
                let chain = rules::chain_of(&self.instance, agent);
                let kernel = by_chain.get(&chain).copied().unwrap_or(0);
                let proxy = by_proxy.get(agent).copied().unwrap_or(0);
                (agent.clone(), kernel + proxy)
            })
            .collect())
    }
}

#[async_trait]
impl EgressFilter for Firewall {
    fn enforced(&self) -> bool {
        true
    }

    // One agent's changes come one at a time already (its actor runs one command at a
    // time), and iptables-restore's transactions are atomic: different agents' go in
    // parallel, so a burst of creates does not queue behind one lock.
    async fn allow(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), RuntimeError> {
        let text = self.allow_text(agent_id, spec, self.is_hooked(agent_id).await);
        restore(&text).await.map(|_| ())
    }

    async fn forget(&self, agent_id: &str) -> Result<(), RuntimeError> {
        let text = rules::forget_text(&self.instance, agent_id, self.is_hooked(agent_id).await);
        restore(&text).await.map(|_| ())
    }

    async fn sync(&self, agents: &[AgentRecord]) -> Result<(), RuntimeError> {
        let _one = self.changing.lock().await;
        let hooked = self.hooked().await?;
        let wanted: HashSet<&str> = agents.iter().map(|r| r.agent_id.as_str()).collect();
        let mut text = String::new();
        for record in agents {
            let body = self.allow_text(
                &record.agent_id,
                &record.spec,
                hooked.contains(&record.agent_id),
            );
            text.push_str(
                body.trim_end_matches("COMMIT\n")
                    .trim_start_matches("*filter\n"),
            );
        }
        let gone: Vec<String> = hooked
            .iter()
            .filter(|a| !wanted.contains(a.as_str()))
            .cloned()
            .collect();
        for agent in &gone {
            let body = rules::forget_text(&self.instance, agent, true);
            text.push_str(
                body.trim_end_matches("COMMIT\n")
                    .trim_start_matches("*filter\n"),
            );
        }
        if text.is_empty() {
            return Ok(());
        }
        restore(&format!("*filter\n{text}COMMIT\n")).await?;
        tracing::info!(
            removed = gone.len(),
            agents = agents.len(),
            "egress rules in place for every agent"
        );
        Ok(())
    }

    async fn refused_by_agent(&self) -> Result<HashMap<String, u64>, RuntimeError> {
        self.refused().await
    }
}

/// Whether this process can change the host's iptables (it runs as root in the host's
/// network namespace, with iptables installed and Docker's `DOCKER-USER` chain there).
pub async fn usable() -> Result<(), String> {
    match iptables(&["-w", "5", "-S", "DOCKER-USER"]).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn iptables(args: &[&str]) -> Result<String, RuntimeError> {
    run("iptables", args, None).await
}

async fn restore(text: &str) -> Result<String, RuntimeError> {
    run("iptables-restore", &["-w", "5", "--noflush"], Some(text)).await
}

/// Runs `program` with `args` (and `input` on its stdin), bounded by [`CALL_TIMEOUT`].
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, RuntimeError> {
    let what = format!("{program} {}", args.join(" "));
    let failed = |message: String| RuntimeError::Setup(format!("egress rules: {what}: {message}"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(stderr.trim().chars().take(500).collect()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
