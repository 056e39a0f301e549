//! The kernel's rules for agents' egress (contract section 11), as `iptables-restore`
//! text: pure, so every rule is unit-tested without a kernel.
//!
//! One chain, [`HOOK_CHAIN`], is jumped to first from `DOCKER-USER` (traffic the host
//! forwards: to other hosts, and between containers of one bridge, since bridge
//! netfilter is on) and from `INPUT` (the host's own ports). It returns at once for
//! packets of connections already allowed, then holds one rule per agent: its MAC
//! address (the manager chooses it, [`mac_of`], before the container exists; the agent
//! has no `NET_ADMIN` to change it) jumps to the agent's own chain ([`chain_of`]). That
//! chain returns (lets Docker's rules accept) for the platform's services and the
//! agent's `CIDR:port` entries, and refuses everything else (a TCP reset, or ICMP
//! administratively prohibited), counting what it refused. Traffic of containers
//! that are not agents of an enforcing manager matches no agent rule and is left to
//! Docker's rules, as before.

use std::net::SocketAddrV4;

use uuid::Uuid;

use crate::protocol::egress::{Destination, EgressEntry, Port};

/// The chain every agent's rule hangs from.
pub const HOOK_CHAIN: &str = "AGENT-EGRESS";
/// The built-in chains that jump to [`HOOK_CHAIN`] first.
pub const HOOKED_FROM: [&str; 2] = ["DOCKER-USER", "INPUT"];
/// Every agent chain's name starts with this.
pub const AGENT_CHAIN_PREFIX: &str = "AE-";
/// The comment of an agent's rule in [`HOOK_CHAIN`] starts with this, then the
/// instance and the agent id.
const COMMENT_PREFIX: &str = "agent-manager";

fn digest(instance: &str, agent_id: &str) -> [u8; 16] {
    let name = format!("{instance}\0{agent_id}");
    *Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).as_bytes()
}

/// The MAC address agent `agent_id` of `instance` gets: locally administered, unicast
/// (first octet `06`, never Docker's own `02:42`), the same on every start.
pub fn mac_of(instance: &str, agent_id: &str) -> String {
    let d = digest(instance, agent_id);
    format!(
        "06:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        d[0], d[1], d[2], d[3], d[4]
    )
}

/// The agent's own chain: `AE-` and 22 hex digits (iptables allows 28 characters).
pub fn chain_of(instance: &str, agent_id: &str) -> String {
    let d = digest(instance, agent_id);
    let hex: String = d[5..].iter().map(|b| format!("{b:02x}")).collect();
    format!("{AGENT_CHAIN_PREFIX}{hex}")
}

/// The comment on the agent's rule in [`HOOK_CHAIN`], which says whose it is.
pub fn comment_of(instance: &str, agent_id: &str) -> String {
    format!("{COMMENT_PREFIX} {instance} {agent_id}")
}

/// The agent's rule in [`HOOK_CHAIN`], as `iptables -S` prints it (after `-A CHAIN`).
pub fn hook_rule(instance: &str, agent_id: &str) -> String {
    format!(
        "-m mac --mac-source {} -m comment --comment \"{}\" -j {}",
        mac_of(instance, agent_id).to_ascii_uppercase(),
        comment_of(instance, agent_id),
        chain_of(instance, agent_id)
    )
}

/// The agent's rule in [`HOOK_CHAIN`] as iptables arguments (for `-C`).
pub fn hook_args(instance: &str, agent_id: &str) -> Vec<String> {
    [
        "-m",
        "mac",
        "--mac-source",
        &mac_of(instance, agent_id),
        "-m",
        "comment",
        "--comment",
        &comment_of(instance, agent_id),
        "-j",
        &chain_of(instance, agent_id),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The agent ids of `instance`'s rules in `listing` (`iptables -S AGENT-EGRESS`).
pub fn agents_in(listing: &str, instance: &str) -> Vec<String> {
    let marker = format!("--comment \"{COMMENT_PREFIX} {instance} ");
    let plain = format!("--comment {COMMENT_PREFIX} {instance} ");
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("-A {HOOK_CHAIN} ")))
        .filter_map(|l| {
            let rest = l
                .split_once(&marker)
                .map(|(_, r)| r)
                .or_else(|| l.split_once(&plain).map(|(_, r)| r))?;
            let id = rest.split(['"', ' ']).next()?;
            (!id.is_empty()).then(|| id.to_string())
        })
        .collect()
}

/// What the rules let every agent reach besides its entries: the platform's RabbitMQ and
/// Redis as the agents' URLs name them, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub services: Vec<SocketAddrV4>,
}

/// The `iptables-restore --noflush` text that makes (or remakes) agent `agent_id`'s
/// chain allow `platform` and `entries`, and hooks it when `hooked` is false. Entries
/// with host names are not the kernel's (the proxy's): they add nothing here.
pub fn allow_text(
    instance: &str,
    agent_id: &str,
    platform: &Platform,
    entries: &[EgressEntry],
    hooked: bool,
) -> String {
    let chain = chain_of(instance, agent_id);
    let mut out = format!("*filter\n:{chain} - [0:0]\n");
    for service in &platform.services {
        out.push_str(&format!(
            "-A {chain} -d {}/32 -p tcp -m tcp --dport {} -m comment --comment platform -j RETURN\n",
            service.ip(),
            service.port()
        ));
    }
    for entry in entries {
        let Destination::Network { addr, prefix } = entry.destination else {
            continue;
        };
        let comment = format!("-m comment --comment \"{entry}\"");
        match entry.port {
            Port::Any => out.push_str(&format!(
                "-A {chain} -d {addr}/{prefix} {comment} -j RETURN\n"
            )),
            Port::One(port) => {
                for proto in ["tcp", "udp"] {
                    out.push_str(&format!(
                        "-A {chain} -d {addr}/{prefix} -p {proto} -m {proto} --dport {port} {comment} -j RETURN\n"
                    ));
                }
            }
        }
    }
    out.push_str(&format!(
        "-A {chain} -p tcp -j REJECT --reject-with tcp-reset\n\
         -A {chain} -j REJECT --reject-with icmp-admin-prohibited\n"
    ));
    if !hooked {
        out.push_str(&format!(
            "-A {HOOK_CHAIN} {}\n",
            hook_rule(instance, agent_id)
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` text that removes agent `agent_id`'s rule and chain
/// (`hooked`: its rule in [`HOOK_CHAIN`] exists).
pub fn forget_text(instance: &str, agent_id: &str, hooked: bool) -> String {
    let chain = chain_of(instance, agent_id);
    let mut out = String::from("*filter\n");
    if hooked {
        out.push_str(&format!(
            "-D {HOOK_CHAIN} {}\n",
            hook_rule(instance, agent_id)
        ));
    }
    out.push_str(&format!(":{chain} - [0:0]\n-X {chain}\nCOMMIT\n"));
    out
}

/// Connections refused per agent chain, from `iptables-save -c` text: the packets its
/// `REJECT` rules counted (a refused TCP connection is usually one packet; retries add).
pub fn refused_by_chain(saved: &str) -> std::collections::HashMap<String, u64> {
    let mut refused = std::collections::HashMap::new();
    for line in saved.lines() {
        // [pkts:bytes] -A AE-... ... -j REJECT ...
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((counters, rule)) = rest.split_once("] ") else {
            continue;
        };
        let Some(chain) = rule
            .strip_prefix("-A ")
            .and_then(|r| r.split(' ').next())
            .filter(|c| c.starts_with(AGENT_CHAIN_PREFIX))
        else {
            continue;
        };
        if !rule.contains("-j REJECT") {
            continue;
        }
        let packets: u64 = counters
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        *refused.entry(chain.to_string()).or_insert(0) += packets;
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<EgressEntry> {
        list.iter()
            .map(|e| EgressEntry::parse(e).unwrap())
            .collect()
    }

    #[test]
    fn names_are_stable_distinct_and_fit_iptables() {
        assert_eq!(mac_of("i", "a1"), mac_of("i", "a1"));
        assert_ne!(mac_of("i", "a1"), mac_of("i", "a2"));
        assert_ne!(mac_of("i", "a1"), mac_of("j", "a1"));
        assert!(mac_of("i", "a1").starts_with("06:"));
        assert_eq!(mac_of("i", "a1").len(), 17);
        let chain = chain_of("i", &"x".repeat(63));
        assert!(chain.len() <= 28 && chain.starts_with("AE-"), "{chain}");
        assert_ne!(chain_of("i", "a1"), chain_of("j", "a1"));
    }

    #[test]
    fn an_agent_chain_allows_the_platform_and_its_networks_and_refuses_the_rest() {
        let platform = Platform {
            services: vec!["172.18.0.1:5672".parse().unwrap()],
        };
        let text = allow_text(
            "i",
            "a1",
            &platform,
            &entries(&["10.20.0.0/16:9878", "1.2.3.4:*", "api.example.com:443"]),
            false,
        );
        let chain = chain_of("i", "a1");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines[1], format!(":{chain} - [0:0]"));
        assert!(lines[2].contains("-d 172.18.0.1/32 -p tcp -m tcp --dport 5672"));
        assert!(lines[3].contains("-d 10.20.0.0/16 -p tcp -m tcp --dport 9878"));
        assert!(lines[4].contains("-d 10.20.0.0/16 -p udp -m udp --dport 9878"));
        assert!(lines[5].contains("-d 1.2.3.4/32 -m comment --comment \"1.2.3.4:*\" -j RETURN"));
        // The name is the proxy's: no kernel rule.
        assert!(!text.contains("example.com"));
        assert!(lines[6].ends_with("-p tcp -j REJECT --reject-with tcp-reset"));
        assert!(lines[7].ends_with("-j REJECT --reject-with icmp-admin-prohibited"));
        assert_eq!(
            lines[8],
            format!("-A AGENT-EGRESS {}", hook_rule("i", "a1"))
        );
        assert_eq!(lines[9], "COMMIT");
        let again = allow_text("i", "a1", &platform, &[], true);
        assert!(!again.contains("-A AGENT-EGRESS"));
    }

    #[test]
    fn an_instances_agents_are_read_back_from_the_listing() {
        let listing = format!(
            "-N AGENT-EGRESS\n\
             -A AGENT-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
             -A AGENT-EGRESS {}\n\
             -A AGENT-EGRESS {}\n\
             -A AGENT-EGRESS -m mac --mac-source 06:00:00:00:00:01 -m comment --comment \"agent-manager i2 b\" -j AE-x\n",
            hook_rule("i", "a1"),
            hook_rule("i", "a.2-x")
        );
        assert_eq!(agents_in(&listing, "i"), vec!["a1", "a.2-x"]);
        assert_eq!(agents_in(&listing, "i2"), vec!["b"]);
        assert!(agents_in(&listing, "j").is_empty());
    }

    #[test]
    fn forgetting_removes_the_rule_then_the_chain() {
        let text = forget_text("i", "a1", true);
        let chain = chain_of("i", "a1");
        assert_eq!(
            text,
            format!(
                "*filter\n-D AGENT-EGRESS {}\n:{chain} - [0:0]\n-X {chain}\nCOMMIT\n",
                hook_rule("i", "a1")
            )
        );
    }

    #[test]
    fn refused_connections_are_the_reject_rules_counts() {
        let saved = "*filter\n\
            :AE-abc - [0:0]\n\
            [5:300] -A AE-abc -d 172.18.0.1/32 -p tcp -m tcp --dport 5672 -j RETURN\n\
            [3:180] -A AE-abc -p tcp -j REJECT --reject-with tcp-reset\n\
            [1:84] -A AE-abc -j REJECT --reject-with icmp-admin-prohibited\n\
            [9:9] -A INPUT -j REJECT\n\
            COMMIT\n";
        let refused = refused_by_chain(saved);
        assert_eq!(refused.get("AE-abc"), Some(&4));
        assert_eq!(refused.len(), 1);
    }
}
