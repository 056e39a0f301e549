//! Egress entries (contract section 11): what an agent may reach outside the platform.
//! An entry is `"host:port"`, `"*.domain:port"` or `"CIDR:port"`, where `port` is a
//! number or `*`; a bare IPv4 address is the CIDR of that one address. Entries are kept
//! in their canonical text (lower case, a CIDR's host bits clear), so two lists that
//! allow the same are equal and the record shows what is enforced.

use std::fmt;
use std::net::Ipv4Addr;

/// At most this many entries in one agent's list (section 11).
pub const MAX_EGRESS_ENTRIES: usize = 64;

/// Where an entry lets the agent go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An IPv4 network (`prefix` 32: one address).
    Network { addr: Ipv4Addr, prefix: u8 },
    /// One host name, as the agent asks for it (through the egress proxy).
    Host(String),
    /// Any name under this domain (`*.example.com`: `api.example.com`, not
    /// `example.com` itself).
    Subdomains(String),
}

/// Which port of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    Any,
    One(u16),
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressEntry {
    pub destination: Destination,
    pub port: Port,
}

impl EgressEntry {
    /// Parses one entry; the error says, for a person, what is wrong with it.
    pub fn parse(text: &str) -> Result<EgressEntry, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty; expected host:port, *.domain:port or CIDR:port".into());
        }
        if text.contains('[') || text.matches(':').count() > 1 {
            return Err(format!(
                "'{}': IPv6 destinations are not supported; give an IPv4 CIDR or a host name",
                printable(text)
            ));
        }
        let Some((dest, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "'{}' has no port; write host:port (port a number or *)",
                printable(text)
            ));
        };
        let port = parse_port(port).map_err(|e| format!("'{}': {e}", printable(text)))?;
        let destination =
            parse_destination(dest).map_err(|e| format!("'{}': {e}", printable(text)))?;
        Ok(EgressEntry { destination, port })
    }

    /// Whether this entry allows `host` (a name or an IPv4 address, as a client asked
    /// for it) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if let Port::One(p) = self.port {
            if p != port {
                return false;
            }
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match &self.destination {
            Destination::Network { addr, prefix } => match host.parse::<Ipv4Addr>() {
                Ok(ip) => in_network(ip, *addr, *prefix),
                Err(_) => false,
            },
            Destination::Host(name) => *name == host,
            Destination::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for EgressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            Destination::Network { addr, prefix: 32 } => write!(f, "{addr}")?,
            Destination::Network { addr, prefix } => write!(f, "{addr}/{prefix}")?,
            Destination::Host(name) => f.write_str(name)?,
            Destination::Subdomains(domain) => write!(f, "*.{domain}")?,
        }
        match self.port {
            Port::Any => f.write_str(":*"),
            Port::One(p) => write!(f, ":{p}"),
        }
    }
}

/// Parses a list of entries into their canonical texts, in order, each once. The error
/// names the entry by its index (`egress[3]`) and says what is wrong.
pub fn canonical_list<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, (usize, String)> {
    let mut out: Vec<String> = Vec::new();
    for (i, text) in entries.into_iter().enumerate() {
        let entry = EgressEntry::parse(text).map_err(|e| (i, e))?;
        let canonical = entry.to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// The parsed entries of `texts`, skipping (and logging) any that do not parse: lists
/// are checked when they arrive, so this only meets what was already canonical.
pub fn parsed(texts: &[String]) -> Vec<EgressEntry> {
    texts
        .iter()
        .filter_map(|t| match EgressEntry::parse(t) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(entry = %printable(t), error = %e, "egress entry skipped");
                None
            }
        })
        .collect()
}

fn parse_port(port: &str) -> Result<Port, String> {
    if port == "*" {
        return Ok(Port::Any);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => Ok(Port::One(p)),
        _ => Err(format!("port '{}' must be 1-65535 or *", printable(port))),
    }
}

fn parse_destination(dest: &str) -> Result<Destination, String> {
    if dest.is_empty() {
        return Err("has no host".into());
    }
    if let Some((addr, prefix)) = dest.split_once('/') {
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("'{}' is not an IPv4 address", printable(addr)))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix '/{}' must be 0-32", printable(prefix)))?;
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        if network != addr {
            return Err(format!(
                "{addr}/{prefix} has host bits set; the network is {network}/{prefix}"
            ));
        }
        return Ok(Destination::Network { addr, prefix });
    }
    if let Ok(addr) = dest.parse::<Ipv4Addr>() {
        return Ok(Destination::Network { addr, prefix: 32 });
    }
    let lower = dest.trim_end_matches('.').to_ascii_lowercase();
    if let Some(domain) = lower.strip_prefix("*.") {
        check_name(domain)?;
        return Ok(Destination::Subdomains(domain.to_string()));
    }
    check_name(&lower)?;
    if lower
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("'{}' is not an IPv4 address", printable(dest)));
    }
    Ok(Destination::Host(lower))
}

/// A DNS name: labels of 1-63 letters, digits and hyphens (not first or last), 253
/// characters at most.
fn check_name(name: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "'{}' is not a host name (letters, digits, hyphens and dots; * only as the \
             first label, as in *.example.com)",
            printable(name)
        )
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn in_network(ip: Ipv4Addr, addr: Ipv4Addr, prefix: u8) -> bool {
    u32::from(ip) & mask(prefix) == u32::from(addr)
}

/// At most 80 printable characters of `s`, safe to echo in an error.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        EgressEntry::parse(s).unwrap().to_string()
    }

    #[test]
    fn the_three_forms_parse_to_their_canonical_text() {
        assert_eq!(
            canon("api.example-exchange.com:443"),
            "api.example-exchange.com:443"
        );
        assert_eq!(canon("API.Example.COM.:443"), "api.example.com:443");
        assert_eq!(canon("*.example.com:*"), "*.example.com:*");
        assert_eq!(canon("10.20.0.0/16:9878"), "10.20.0.0/16:9878");
        assert_eq!(canon("10.20.0.7:9878"), "10.20.0.7:9878");
        assert_eq!(canon("10.20.0.7/32:9878"), "10.20.0.7:9878");
        assert_eq!(canon("0.0.0.0/0:443"), "0.0.0.0/0:443");
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("example.com", "no port"),
            ("example.com:0", "1-65535"),
            ("example.com:65536", "1-65535"),
            ("example.com:+1", "1-65535"),
            ("example.com:http", "1-65535"),
            (":443", "no host"),
            ("10.20.1.0/16:1", "host bits"),
            ("10.20.0.0/33:1", "0-32"),
            ("300.1.1.1/8:1", "IPv4"),
            ("1.2.3:80", "IPv4"),
            ("[::1]:443", "IPv6"),
            ("fe80::1:443", "IPv6"),
            ("a_b.com:1", "host name"),
            ("-a.com:1", "host name"),
            ("*.:1", "host name"),
            ("a.*.com:1", "host name"),
            ("**.a.com:1", "host name"),
        ] {
            let e = EgressEntry::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let long = format!("{}.com:1", "a".repeat(64));
        assert!(EgressEntry::parse(&long).is_err());
    }

    #[test]
    fn a_list_is_canonical_once_each_and_names_the_bad_index() {
        let list = canonical_list(["A.com:1", "a.com:1", "10.0.0.0/8:*"]).unwrap();
        assert_eq!(list, vec!["a.com:1", "10.0.0.0/8:*"]);
        let (i, e) = canonical_list(["a.com:1", "b.com"]).unwrap_err();
        assert_eq!(i, 1);
        assert!(e.contains("no port"));
    }

    #[test]
    fn an_entry_allows_its_hosts_and_ports_only() {
        let e = EgressEntry::parse("*.example.com:443").unwrap();
        assert!(e.allows("api.example.com", 443));
        assert!(e.allows("a.b.example.com.", 443));
        assert!(!e.allows("example.com", 443));
        assert!(!e.allows("evilexample.com", 443));
        assert!(!e.allows("api.example.com", 80));
        let e = EgressEntry::parse("10.20.0.0/16:*").unwrap();
        assert!(e.allows("10.20.255.1", 1));
        assert!(!e.allows("10.21.0.1", 1));
        assert!(!e.allows("ten.example", 1));
        let e = EgressEntry::parse("Api.Example.com:443").unwrap();
        assert!(e.allows("API.example.com", 443));
        assert!(!e.allows("x.api.example.com", 443));
    }
}
