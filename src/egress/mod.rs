//! Egress (contract section 11): what an agent may reach outside the platform.
//!
//! - [`rules`]: the kernel's rules as `iptables-restore` text (pure): one chain per
//!   agent, keyed by the MAC address the manager gives its container.
//! - [`firewall`]: [`Firewall`], which writes and reads them, the
//!   [`crate::ports::EgressFilter`] of Docker and GPU modes.
//! - [`proxy`]: the egress proxy for entries with host names (HTTP `CONNECT`), which
//!   knows an agent by the same MAC address.
//! - [`Unfiltered`]: the filter where nothing is enforced (`EGRESS_MODE=off`, Swarm
//!   mode, a Docker host that is not this machine, or no iptables in `auto` mode).
//!
//! [`build`] chooses one at start. The entries themselves (parsing, canonical form,
//! what each allows) are the contract's: [`crate::protocol::egress`].

pub mod firewall;
pub mod proxy;
pub mod rules;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use firewall::Firewall;
use rules::Platform;

use crate::config::{Config, DeploymentMode, EgressMode};
use crate::error::RuntimeError;
use crate::ports::EgressFilter;
use crate::protocol::AgentSpec;
use crate::record::AgentRecord;

/// The filter where nothing is enforced: every call succeeds and changes nothing.
pub struct Unfiltered;

#[async_trait]
impl EgressFilter for Unfiltered {
    fn enforced(&self) -> bool {
        false
    }
    async fn allow(&self, _agent_id: &str, _spec: &AgentSpec) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn forget(&self, _agent_id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn sync(&self, _agents: &[AgentRecord]) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn refused_by_agent(&self) -> Result<HashMap<String, u64>, RuntimeError> {
        Ok(HashMap::new())
    }
}

/// Whether agents' containers get the MAC address their rules are keyed on: Docker and
/// GPU modes on a local Docker socket, unless `EGRESS_MODE=off`.
pub fn keyed_by_mac(config: &Config) -> bool {
    config.egress.mode != EgressMode::Off
        && config.deployment_mode != DeploymentMode::Swarm
        && local_socket(config).is_some()
}

/// The local Docker socket's path, when the Docker host is this machine's socket.
pub fn local_socket(config: &Config) -> Option<String> {
    match config.docker.host() {
        None => Some("/var/run/docker.sock".to_string()),
        Some(host) => host.strip_prefix("unix://").map(str::to_string),
    }
}

/// What [`build`] made: the filter, and the egress proxy's listener when there is one
/// (serve it with [`proxy::serve`]).
pub struct Egress {
    pub filter: Arc<dyn EgressFilter>,
    pub proxy: Option<tokio::net::TcpListener>,
}

/// The filter for `config`: the kernel's rules where they can be written, else
/// [`Unfiltered`] with a warning (`auto`) or an error that names the fix (`iptables`).
/// Where rules are written, the egress proxy listens too (unless
/// `EGRESS_PROXY_LISTEN` is empty), and `config` learns its URL for the agents.
pub async fn build(config: &mut Config, docker: &bollard::Docker) -> Result<Egress, String> {
    let unfiltered = || Egress {
        filter: Arc::new(Unfiltered),
        proxy: None,
    };
    let mode = config.egress.mode;
    if mode == EgressMode::Off {
        tracing::warn!("EGRESS_MODE=off: agents may connect anywhere their network routes to");
        return Ok(unfiltered());
    }
    let why_not = if config.deployment_mode == DeploymentMode::Swarm {
        Some("Swarm mode does not enforce egress yet (agents' overlay network and proxy are the next step)".to_string())
    } else if !keyed_by_mac(config) {
        Some("the Docker host is not this machine's socket, so this machine's iptables do not see the agents".to_string())
    } else {
        firewall::usable().await.err().map(|e| {
            format!(
                "this process cannot change the host's iptables ({e}); run it as root in the \
                 host's network namespace (a container: --network host --cap-add NET_ADMIN)"
            )
        })
    };
    if let Some(why) = why_not {
        if mode == EgressMode::Iptables {
            return Err(format!("EGRESS_MODE=iptables, but {why}"));
        }
        tracing::warn!(
            reason = %why,
            "egress NOT enforced (EGRESS_MODE=auto): agents may connect anywhere their network routes to; set EGRESS_MODE=iptables to refuse to start instead"
        );
        return Ok(unfiltered());
    }
    let mut platform = platform(config).await?;
    let proxy = match proxy_address(config, docker).await? {
        None => None,
        Some(addr) => match listen_shared(addr) {
            Ok(listener) => {
                if !platform.services.contains(&addr) {
                    platform.services.push(addr);
                }
                config.egress.proxy_url = Some(format!("http://{addr}"));
                tracing::info!(listen = %addr, "egress proxy listening");
                Some(listener)
            }
            Err(e) => {
                tracing::warn!(listen = %addr, error = %e, "the egress proxy cannot listen: entries with host names are refused (set EGRESS_PROXY_LISTEN)");
                None
            }
        },
    };
    let fw = Firewall::install(&config.instance, config.egress.clone(), platform.clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        platform = ?platform.services,
        "egress enforced: agents reach the platform's services and their lists only"
    );
    Ok(Egress {
        filter: Arc::new(fw),
        proxy,
    })
}

/// Port of the proxy when `EGRESS_PROXY_LISTEN=auto`.
pub const PROXY_PORT: u16 = 3128;

/// Where the proxy listens: `EGRESS_PROXY_LISTEN`, `auto` being the agents' network's
/// gateway; `None`: no proxy.
async fn proxy_address(
    config: &Config,
    docker: &bollard::Docker,
) -> Result<Option<SocketAddrV4>, String> {
    let listen = config.egress.proxy_listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    if listen != "auto" {
        return listen
            .parse()
            .map(Some)
            .map_err(|_| format!("EGRESS_PROXY_LISTEN '{listen}' is not IPv4 host:port"));
    }
    let network = &config.docker.network;
    match crate::runtime::agent_urls::network_gateway(docker, network, Duration::from_secs(5)).await
    {
        Ok(Some(std::net::IpAddr::V4(gw))) => Ok(Some(SocketAddrV4::new(gw, PROXY_PORT))),
        Ok(_) => {
            tracing::warn!(%network, "the agents' network has no IPv4 gateway: no egress proxy (set EGRESS_PROXY_LISTEN)");
            Ok(None)
        }
        Err(e) => Err(format!("egress proxy: {e}")),
    }
}

/// A listener on `addr` that the installation's other managers on this host can share
/// (`SO_REUSEPORT`): whichever runs answers.
fn listen_shared(addr: SocketAddrV4) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(SocketAddr::V4(addr))?;
    socket.listen(1024)
}

/// The platform's services as agents reach them: the host and port of the agents'
/// RabbitMQ and Redis URLs, resolved.
async fn platform(config: &Config) -> Result<Platform, String> {
    let mut services = Vec::new();
    for (what, url, default_port) in [
        ("AGENT_RABBITMQ_URL", config.agent_rabbitmq_url(), 5672),
        ("AGENT_REDIS_URL", config.agent_redis_url(), 6379),
    ] {
        let (host, port) =
            host_port(url, default_port).ok_or_else(|| format!("egress: {what} names no host"))?;
        let lookup = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("egress: resolving {host} ({what}) took over 5 s"))?
        .map_err(|e| format!("egress: cannot resolve {host} ({what}): {e}"))?;
        let v4: Vec<SocketAddrV4> = lookup
            .filter_map(|a| match a {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .collect();
        if v4.is_empty() {
            return Err(format!("egress: {host} ({what}) has no IPv4 address"));
        }
        for a in v4 {
            if !services.contains(&a) {
                services.push(a);
            }
        }
    }
    Ok(Platform { services })
}

/// The host and port of a `scheme://[user[:pass]@]host[:port][/...]` URL.
pub fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.is_empty() {
        return None;
    }
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port.unwrap_or(default_port)));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((hostport.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_host_and_port_come_from_its_url() {
        assert_eq!(
            host_port("amqp://u:p@172.18.0.1:5672/%2f", 5672),
            Some(("172.18.0.1".into(), 5672))
        );
        assert_eq!(
            host_port("redis://u:p%40x@redis/0", 6379),
            Some(("redis".into(), 6379))
        );
        assert_eq!(
            host_port("rediss://[::1]:6380", 6379),
            Some(("::1".into(), 6380))
        );
        assert_eq!(host_port("amqp://", 5672), None);
    }

    #[test]
    fn only_a_local_docker_socket_outside_swarm_keys_agents_by_mac() {
        let mut c = Config::defaults();
        assert!(keyed_by_mac(&c));
        c.egress.mode = EgressMode::Off;
        assert!(!keyed_by_mac(&c));
        c.egress.mode = EgressMode::Auto;
        c.deployment_mode = DeploymentMode::Swarm;
        assert!(!keyed_by_mac(&c));
        c.deployment_mode = DeploymentMode::Gpu;
        assert!(keyed_by_mac(&c));
        c.docker.host = "tcp://10.0.0.1:2376".into();
        assert!(!keyed_by_mac(&c));
    }
}
