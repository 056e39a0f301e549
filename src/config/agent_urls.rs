//! The URLs agents are given (contract section 7: `RABBITMQ_URL`, `REDIS_URL`) when
//! `AGENT_RABBITMQ_URL` / `AGENT_REDIS_URL` are not set. The manager's own URLs usually
//! name 127.0.0.1, which inside an agent's container is the container itself; in docker
//! and gpu mode the host is reached from the agents' network at that network's gateway
//! (the host's side of the bridge), so the manager offers the agents the same URL with
//! the gateway as its host, once it has seen the service answer there
//! ([`crate::runtime::agent_urls`] looks). Pure: which URLs to derive, and how.

use std::net::IpAddr;

use super::{is_loopback_host, url_host, Config, DeploymentMode};
use crate::redact;

/// A service agents are given a URL of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentService {
    RabbitMq,
    Redis,
}

impl AgentService {
    /// The setting that names the agents' URL of this service.
    pub fn setting(self) -> &'static str {
        match self {
            AgentService::RabbitMq => "AGENT_RABBITMQ_URL",
            AgentService::Redis => "AGENT_REDIS_URL",
        }
    }

    /// The service's name for people.
    pub fn name(self) -> &'static str {
        match self {
            AgentService::RabbitMq => "RabbitMQ",
            AgentService::Redis => "Redis",
        }
    }
}

/// Why the agents' URL of a service is not derived from their network's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDerived {
    /// Swarm mode: agents run on other nodes, where no gateway leads to this host.
    Swarm,
    /// Each customer's agents are on a network of their own, each with its own gateway.
    NetworkPerCustomer,
}

impl NotDerived {
    /// Why, for a person.
    pub fn reason(&self) -> &'static str {
        match self {
            NotDerived::Swarm => "in swarm mode agents run on other nodes",
            NotDerived::NetworkPerCustomer => {
                "with NETWORK_PER_CUSTOMER each customer's network has a gateway of its own"
            }
        }
    }
}

/// A service whose agents' URL would be the manager's own on loopback: what to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub service: AgentService,
    /// The manager's own URL (with its credentials: never shown unredacted).
    pub url: String,
    /// The port the service listens on (the URL's, or its scheme's default).
    pub port: u16,
}

impl Candidate {
    /// The URL the agents would get with `gateway` as its host; `None` when it cannot be
    /// rewritten (not a URL with a host).
    pub fn with_host(&self, gateway: IpAddr) -> Option<String> {
        with_host(&self.url, gateway)
    }

    /// The URL redacted, for messages.
    pub fn shown(&self) -> String {
        redact::url(&self.url)
    }
}

impl Config {
    /// The services whose agents' URL is not set and whose manager URL is on loopback:
    /// as given, agents could not reach them. `Err` when this mode cannot derive them.
    pub fn agent_urls_to_derive(&self) -> Result<Vec<Candidate>, (NotDerived, Vec<Candidate>)> {
        let candidates: Vec<Candidate> = [
            (
                AgentService::RabbitMq,
                self.agents.rabbitmq_url(),
                &self.rabbitmq.url,
            ),
            (
                AgentService::Redis,
                self.agents.redis_url(),
                &self.redis.url,
            ),
        ]
        .into_iter()
        .filter(|(_, given, _)| given.is_none())
        .filter(|(_, _, own)| url_host(own).is_some_and(is_loopback_host))
        .filter_map(|(service, _, own)| {
            Some(Candidate {
                service,
                url: own.to_string(),
                port: port_of(own)?,
            })
        })
        .collect();
        if candidates.is_empty() {
            return Ok(candidates);
        }
        if self.deployment_mode == DeploymentMode::Swarm {
            return Err((NotDerived::Swarm, candidates));
        }
        if self.docker.network_per_customer {
            return Err((NotDerived::NetworkPerCustomer, candidates));
        }
        Ok(candidates)
    }

    /// Gives agents `url` for `service` (a derived URL: as if AGENT_*_URL named it).
    pub fn set_agent_url(&mut self, service: AgentService, url: String) {
        match service {
            AgentService::RabbitMq => self.agents.rabbitmq_url = url,
            AgentService::Redis => self.agents.redis_url = url,
        }
    }
}

/// The port of `url`: its own, or its scheme's default (AMQP 5672, AMQPS 5671, Redis
/// 6379).
fn port_of(url: &str) -> Option<u16> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.port().or(match parsed.scheme() {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "redis" | "rediss" => Some(6379),
        _ => None,
    })
}

/// `url` with `host` in place of its host; credentials, port, path and query kept.
pub fn with_host(url: &str, host: IpAddr) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    parsed.host_str()?;
    parsed.set_ip_host(host).ok()?;
    Some(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testing::with_env;
    use super::*;

    const GATEWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 18, 0, 1));

    #[test]
    fn the_defaults_derive_both_with_their_ports() {
        let c = Config::defaults();
        let got = c.agent_urls_to_derive().expect("docker mode derives");
        assert_eq!(
            got.iter().map(|c| (c.service, c.port)).collect::<Vec<_>>(),
            vec![(AgentService::RabbitMq, 5672), (AgentService::Redis, 6379)]
        );
        assert_eq!(
            got[0].with_host(GATEWAY).as_deref(),
            Some("amqp://guest:guest@172.18.0.1:5672/%2f")
        );
        assert_eq!(
            got[1].with_host(GATEWAY).as_deref(),
            Some("redis://172.18.0.1:6379/0")
        );
    }

    #[test]
    fn given_or_reachable_urls_are_left_alone() {
        let c = with_env(&[
            ("AGENT_RABBITMQ_URL", "amqp://u:p@10.0.0.5/%2f"),
            ("REDIS_URL", "redis://:secret@redis.internal:6380/2"),
        ])
        .unwrap();
        assert_eq!(c.agent_urls_to_derive(), Ok(vec![]));
        let c = with_env(&[("REDIS_URL", "rediss://:secret@localhost/3")]).unwrap();
        let got = c.agent_urls_to_derive().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].port, 6379);
        assert_eq!(got[1].shown(), "rediss://:***@localhost/3");
        assert_eq!(
            got[1].with_host(GATEWAY).as_deref(),
            Some("rediss://:secret@172.18.0.1/3")
        );
    }

    #[test]
    fn swarm_and_per_customer_networks_do_not_derive() {
        let c = with_env(&[("DEPLOYMENT_MODE", "swarm")]).unwrap();
        assert!(matches!(
            c.agent_urls_to_derive(),
            Err((NotDerived::Swarm, v)) if v.len() == 2
        ));
        let c = with_env(&[("NETWORK_PER_CUSTOMER", "true")]).unwrap();
        assert!(matches!(
            c.agent_urls_to_derive(),
            Err((NotDerived::NetworkPerCustomer, _))
        ));
    }

    #[test]
    fn a_derived_url_is_what_agents_get() {
        let mut c = Config::defaults();
        c.set_agent_url(AgentService::Redis, "redis://172.18.0.1:6379/0".into());
        assert_eq!(c.agent_redis_url(), "redis://172.18.0.1:6379/0");
        assert_eq!(c.agent_urls_to_derive().unwrap().len(), 1);
        assert_eq!(
            with_host("amqp://[::1]:5672/%2f", GATEWAY).as_deref(),
            Some("amqp://172.18.0.1:5672/%2f")
        );
        assert_eq!(with_host("not a url", GATEWAY), None);
    }
}
