//! Finding the URLs agents reach the services at, when `AGENT_RABBITMQ_URL` /
//! `AGENT_REDIS_URL` are not set and the manager's own name loopback
//! ([`crate::config::agent_urls`] decides which): the gateway of the agents' network
//! (read from Docker), and whether the service answers there (a TCP connection from
//! this host, bounded). Used at start (the URLs agents then get) and by `check`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::query_parameters::InspectNetworkOptions;
use bollard::Docker;
use thiserror::Error;

use crate::config::agent_urls::{AgentService, Candidate, NotDerived};
use crate::config::Config;

/// What became of one service's agents' URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentUrl {
    /// Derived: the service answers at the gateway of the agents' network.
    Derived {
        service: AgentService,
        /// The URL agents get (with the manager's credentials in shared mode: never
        /// shown; see `shown`).
        url: String,
        shown: String,
        gateway: IpAddr,
    },
    /// On loopback, and no way found to it from the agents' network.
    Unreachable {
        service: AgentService,
        /// The URL agents would get, redacted.
        shown: String,
        /// Why, for a person.
        why: String,
    },
}

impl AgentUrl {
    /// The fix for an unreachable URL, naming its setting.
    pub fn fix(&self) -> Option<String> {
        match self {
            AgentUrl::Derived { .. } => None,
            AgentUrl::Unreachable { service, .. } => Some(format!(
                "set {} to an address the agents' network reaches (scripts/services.sh writes \
                 one to /tmp/agent-manager-services/agents.env and makes {} listen there; \
                 scripts/run.sh passes it on)",
                service.setting(),
                service.name()
            )),
        }
    }
}

/// Why the gateway of the agents' network could not be read (said as why the agents'
/// URLs are not derived).
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("Docker did not describe network {network} within {} s", .after.as_secs_f32())]
    Timeout { network: String, after: Duration },
    #[error("network {network}: {source}")]
    Docker {
        network: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The gateway of Docker network `network` (its first IPAM configuration's), bounded
/// by `timeout`. `Ok(None)`: the network has none (or does not exist).
pub async fn network_gateway(
    docker: &Docker,
    network: &str,
    timeout: Duration,
) -> Result<Option<IpAddr>, GatewayError> {
    let inspect = docker.inspect_network(network, None::<InspectNetworkOptions>);
    match tokio::time::timeout(timeout, inspect).await {
        Err(_) => Err(GatewayError::Timeout {
            network: network.to_string(),
            after: timeout,
        }),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(None),
        Ok(Err(source)) => Err(GatewayError::Docker {
            network: network.to_string(),
            source,
        }),
        Ok(Ok(n)) => Ok(n
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.gateway.as_deref())
            .find_map(|g| g.parse::<IpAddr>().ok())),
    }
}

/// Whether something accepts TCP connections at `addr` within `timeout`.
pub async fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The agents' URLs to derive (see [`Config::agent_urls_to_derive`]), each derived
/// where its service answers at the gateway of `DOCKER_NETWORK`, or said unreachable.
/// Nothing to derive: empty.
pub async fn resolve(config: &Config, docker: &Docker, timeout: Duration) -> Vec<AgentUrl> {
    let candidates = match config.agent_urls_to_derive() {
        Ok(c) if c.is_empty() => return Vec::new(),
        Ok(c) => c,
        Err((why, c)) => return unreachable_all(&c, &not_derived(&why)),
    };
    let network = &config.docker.network;
    let gateway = match network_gateway(docker, network, timeout).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            let why = format!("network {network} has no gateway address (or does not exist yet)");
            return unreachable_all(&candidates, &why);
        }
        Err(e) => return unreachable_all(&candidates, &e.to_string()),
    };
    let mut out = Vec::new();
    for c in candidates {
        out.push(try_gateway(&c, gateway, network, timeout).await);
    }
    out
}

async fn try_gateway(c: &Candidate, gateway: IpAddr, network: &str, timeout: Duration) -> AgentUrl {
    let unreachable = |why: String| AgentUrl::Unreachable {
        service: c.service,
        shown: c.shown(),
        why,
    };
    let Some(url) = c.with_host(gateway) else {
        return unreachable(format!("{} is not a URL with a host", c.shown()));
    };
    let addr = SocketAddr::new(gateway, c.port);
    if !answers(addr, timeout).await {
        return unreachable(format!(
            "nothing answers at {addr}, the gateway of {network} (where the agents would reach \
             this host)"
        ));
    }
    AgentUrl::Derived {
        service: c.service,
        shown: crate::redact::url(&url),
        url,
        gateway,
    }
}

fn not_derived(why: &NotDerived) -> String {
    format!(
        "{}: no address of this host is known to reach it",
        why.reason()
    )
}

fn unreachable_all(candidates: &[Candidate], why: &str) -> Vec<AgentUrl> {
    candidates
        .iter()
        .map(|c| AgentUrl::Unreachable {
            service: c.service,
            shown: c.shown(),
            why: why.to_string(),
        })
        .collect()
}

/// Gives agents the derived URLs (the others stay as they are).
pub fn apply(config: &mut Config, urls: &[AgentUrl]) {
    for u in urls {
        if let AgentUrl::Derived { service, url, .. } = u {
            config.set_agent_url(*service, url.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_answers_and_a_closed_one_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert!(answers(open, Duration::from_secs(2)).await);
        drop(listener);
        assert!(!answers(open, Duration::from_secs(2)).await);
    }

    #[test]
    fn only_derived_urls_are_applied_and_unreachable_ones_name_their_setting() {
        let mut c = Config::defaults();
        let gateway: IpAddr = "172.18.0.1".parse().unwrap();
        let urls = vec![
            AgentUrl::Derived {
                service: AgentService::Redis,
                url: "redis://172.18.0.1:6379/0".into(),
                shown: "redis://172.18.0.1:6379/0".into(),
                gateway,
            },
            AgentUrl::Unreachable {
                service: AgentService::RabbitMq,
                shown: "amqp://guest:***@127.0.0.1:5672/%2f".into(),
                why: "nothing answers".into(),
            },
        ];
        apply(&mut c, &urls);
        assert_eq!(c.agent_redis_url(), "redis://172.18.0.1:6379/0");
        assert_eq!(c.agent_rabbitmq_url(), c.rabbitmq.url);
        assert!(urls[0].fix().is_none());
        assert!(urls[1].fix().unwrap().contains("AGENT_RABBITMQ_URL"));
    }
}
