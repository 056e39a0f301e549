//! The egress proxy (contract section 11): the way out for entries with host names
//! (`host:port`, `*.domain:port`), whose addresses change and so cannot be kernel
//! rules. Agents are given `HTTPS_PROXY`/`HTTP_PROXY`; the proxy answers HTTP `CONNECT
//! host:port` (and plain `GET http://host/...`-style requests), checks the destination
//! against the agent's entries (its own, its customer's, the installation's) and only
//! then connects.
//!
//! Who is asking: the connection's source address, turned into the MAC address the
//! kernel last saw it from (`/proc/net/arp`, fresh: the connection just arrived), which
//! is the agent's own (the manager chose it, the agent cannot change it: no
//! `NET_ADMIN`/`NET_RAW`), hence its id. The kernel rules and the proxy so know an agent
//! by the same thing.
//!
//! It runs in every manager of the installation, leader or standby (it only reads
//! records), on one port shared through `SO_REUSEPORT`. It refuses to connect to
//! loopback and link-local addresses whatever a name resolves to (no confused deputy
//! for cloud metadata), and bounds everything: the request head (8 KiB, 10 s), name
//! resolution (5 s), the connect (10 s).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::rules::mac_of;
use crate::config::EgressConfig;
use crate::protocol::egress::parsed;
use crate::store::Store;

const HEAD_LIMIT: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The MAC → agent map is read again at most this often when a MAC is unknown.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Destinations refused per agent by this process's proxy since it started.
static REFUSED: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// Requests this process's proxy refused, by agent id.
pub fn refused_by_agent() -> HashMap<String, u64> {
    REFUSED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

fn count_refusal(agent_id: &str) {
    let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
    *refused
        .get_or_insert_with(HashMap::new)
        .entry(agent_id.to_string())
        .or_default() += 1;
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `CONNECT`: a tunnel; else a plain HTTP request to forward (its head rewritten
    /// to origin form).
    pub tunnel: bool,
}

/// Reads the target of a request head (`CONNECT host:port HTTP/1.1`, or `METHOD
/// http://host[:port]/path HTTP/1.1`); the rewritten head for a plain request.
pub fn parse_head(head: &str) -> Result<(Target, Option<String>), String> {
    let first = head.lines().next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not an HTTP request".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1 request".into());
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(uri, None)?;
        return Ok((
            Target {
                host,
                port,
                tunnel: true,
            },
            None,
        ));
    }
    let Some(rest) = uri.strip_prefix("http://") else {
        return Err("only CONNECT and http:// requests go through this proxy".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(authority, Some(80))?;
    let rewritten = head.replacen(uri, path, 1);
    Ok((
        Target {
            host,
            port,
            tunnel: false,
        },
        Some(rewritten),
    ))
}

fn split_host_port(authority: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse()
                .map_err(|_| format!("bad port in '{authority}'"))?;
            Ok((host.to_ascii_lowercase(), port))
        }
        None if default.is_some() => Ok((authority.to_ascii_lowercase(), default.unwrap_or(80))),
        _ => Err(format!("'{authority}' is not host:port")),
    }
}

/// The MAC address `/proc/net/arp` gives for `ip`.
pub fn mac_in_arp(arp: &str, ip: IpAddr) -> Option<String> {
    let ip = ip.to_string();
    arp.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.first() == Some(&ip.as_str()))
            .then(|| cols.get(3).map(|m| m.to_ascii_lowercase()))
            .flatten()
            .filter(|m| m != "00:00:00:00:00:00")
    })
}

/// Knows which agent a MAC address is: every agent of the instance in Redis, mapped
/// through [`mac_of`], read again when an unknown address arrives.
struct Agents {
    instance: String,
    store: Store,
    by_mac: Mutex<(HashMap<String, String>, Option<Instant>)>,
}

impl Agents {
    async fn agent_of(&self, mac: &str) -> Option<String> {
        let stale = {
            let map = self.by_mac.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(agent) = map.0.get(mac) {
                return Some(agent.clone());
            }
            map.1.is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
        };
        if !stale {
            return None;
        }
        let ids = self.store.list_ids(None).await.ok()?;
        let fresh: HashMap<String, String> = ids
            .into_iter()
            .map(|id| (mac_of(&self.instance, &id), id))
            .collect();
        let mut map = self.by_mac.lock().unwrap_or_else(|p| p.into_inner());
        *map = (fresh, Some(Instant::now()));
        map.0.get(mac).cloned()
    }
}

/// The proxy: serves `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    instance: String,
    config: EgressConfig,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
) {
    let agents = Arc::new(Agents {
        instance,
        store: store.clone(),
        by_mac: Mutex::new((HashMap::new(), None)),
    });
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (agents, config, store) = (agents.clone(), config.clone(), store.clone());
        actix_rt::spawn(async move {
            if let Err(e) = handle(stream, peer, &agents, &config, &store).await {
                tracing::debug!(%peer, error = %e, "egress proxy: connection ended");
            }
        });
    }
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    agents: &Agents,
    config: &EgressConfig,
    store: &Store,
) -> Result<(), String> {
    let (head, rest) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client))
        .await
        .map_err(|_| "no request head within 10 s".to_string())??;
    let (target, rewritten) = match parse_head(&head) {
        Ok(t) => t,
        Err(e) => return answer(&mut client, 400, &e).await,
    };
    // A file of the kernel's in memory: read at once, never blocks on a disk.
    let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    let agent = match mac_in_arp(&arp, peer.ip()) {
        Some(mac) => agents.agent_of(&mac).await,
        None => None,
    };
    let Some(agent) = agent else {
        return answer(&mut client, 403, "not an agent of this installation").await;
    };
    let spec = match store.load(&agent).await {
        Ok(Some(record)) => record.spec,
        Ok(None) => return answer(&mut client, 403, "unknown agent").await,
        Err(e) => return answer(&mut client, 503, &format!("records unavailable: {e}")).await,
    };
    let entries = parsed(&config.entries_for(&spec));
    if !entries.iter().any(|e| e.allows(&target.host, target.port)) {
        count_refusal(&agent);
        tracing::info!(
            agent_id = %agent,
            destination = %format!("{}:{}", target.host, target.port),
            "egress proxy refused a destination not in the agent's list"
        );
        return answer(
            &mut client,
            403,
            &format!(
                "{}:{} is not in agent {agent}'s egress list",
                target.host, target.port
            ),
        )
        .await;
    }
    let mut upstream = match connect(&target).await {
        Ok(s) => s,
        Err(e) => return answer(&mut client, 502, &e).await,
    };
    match rewritten {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
        }
        Some(head) => {
            upstream
                .write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    upstream.write_all(&rest).await.map_err(|e| e.to_string())?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The request head (up to and with the blank line) and whatever came after it.
async fn read_head(client: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > HEAD_LIMIT {
            return Err("request head over 8 KiB".into());
        }
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the request head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects to the target's first usable address: never loopback or link-local,
/// whatever the name resolves to.
async fn connect(target: &Target) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| format!("resolving {} took over 5 s", target.host))?
    .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
    .filter(|a| !forbidden(a.ip()))
    .collect();
    let Some(addr) = addrs.first() else {
        return Err(format!(
            "{} has no address the proxy may connect to",
            target.host
        ));
    };
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} took over 10 s"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// Addresses the proxy never connects to for an agent: the host itself and link-local
/// ones (cloud metadata).
fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

async fn answer(client: &mut TcpStream, status: u16, why: &str) -> Result<(), String> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let body = format!("{why}\n");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client
        .write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_requests_give_their_target() {
        let (t, head) =
            parse_head("CONNECT API.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            t,
            Target {
                host: "api.example.com".into(),
                port: 443,
                tunnel: true
            }
        );
        assert!(head.is_none());
        let (t, head) =
            parse_head("GET http://h.example:8080/a?b=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
                .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tunnel),
            ("h.example", 8080, false)
        );
        assert_eq!(
            head.as_deref(),
            Some("GET /a?b=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
        );
        let (t, _) = parse_head("GET http://h.example HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(t.port, 80);
        for bad in [
            "",
            "CONNECT h.example HTTP/1.1",
            "GET /local HTTP/1.1",
            "GET https://h.example/ HTTP/1.1",
            "CONNECT h:1 SPDY/3",
        ] {
            assert!(parse_head(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_arp_table_gives_a_peers_mac() {
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                   172.18.0.5       0x1         0x2         06:AA:bb:cc:dd:ee     *        br-1\n\
                   172.18.0.6       0x1         0x0         00:00:00:00:00:00     *        br-1\n";
        assert_eq!(
            mac_in_arp(arp, "172.18.0.5".parse().unwrap()).as_deref(),
            Some("06:aa:bb:cc:dd:ee")
        );
        assert_eq!(mac_in_arp(arp, "172.18.0.6".parse().unwrap()), None);
        assert_eq!(mac_in_arp(arp, "172.18.0.7".parse().unwrap()), None);
    }

    #[test]
    fn the_host_and_metadata_are_never_connected_to() {
        for ip in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1"] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.20.0.1", "93.184.216.34", "172.18.0.1"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }
}
