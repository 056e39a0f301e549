//! `agent-manager check --ready`: asks the running manager's own `/readyz` (at
//! `ADMIN_LISTEN`; an address on every interface is asked on loopback), as the
//! container's HEALTHCHECK does. Unlike the service checks it fails when the manager
//! itself is hung or not consuming, not only when RabbitMQ, Redis or Docker are away.
//! One plain HTTP/1.1 GET, bounded by the check's timeout; `/readyz` is never behind
//! `ADMIN_TOKEN`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

/// The most of an answer read (`/readyz`'s is a few hundred bytes).
const MAX_ANSWER: u64 = 64 * 1024;

/// Where to ask: `listen`, with an unspecified address (`0.0.0.0`, `::`) replaced by
/// loopback.
pub fn probe_address(listen: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = listen.parse().ok()?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    Some(addr)
}

/// GET `path` from `addr`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// What `/readyz` said: `Ok(what was found)`, or `Err((what is wrong, what to do))`.
pub type Answer = Result<String, (String, String)>;

/// The `ready` check.
pub async fn check(config: &Config, timeout: Duration) -> Answer {
    let Some(listen) = config.admin_listen() else {
        return Err((
            "the admin endpoint is off (ADMIN_LISTEN is empty)".into(),
            "set ADMIN_LISTEN (the image sets 0.0.0.0:9464), or check the services instead: \
             `agent-manager check --services-only`"
                .into(),
        ));
    };
    let Some(addr) = probe_address(listen) else {
        return Err((
            format!("ADMIN_LISTEN '{listen}' is not host:port"),
            "fix ADMIN_LISTEN".into(),
        ));
    };
    match tokio::time::timeout(timeout, get(addr, "/readyz")).await {
        Ok(Ok((200, _))) => Ok(format!("http://{addr}/readyz: ready (leader)")),
        Ok(Ok((_, body))) if healthy_standby(&body) => Ok(format!(
            "http://{addr}/readyz: standby (another manager of this installation leads; \
             this one takes over when its lease ends)"
        )),
        Ok(Ok((status, body))) => Err((
            format!("http://{addr}/readyz answered {status}: {body}"),
            "the JSON names the failing check: role (deposed: it lost its lease and \
             exits), rabbitmq_consuming (the broker, or the manager still starting), \
             redis_and_docker (`agent-manager check` says which)"
                .into(),
        )),
        Ok(Err(e)) => Err((
            format!("http://{addr}/readyz: {e}"),
            "the manager is not running (or not yet listening) here: look at its log".into(),
        )),
        Err(_) => Err((
            format!(
                "http://{addr}/readyz: no answer within {} s",
                timeout.as_secs_f32()
            ),
            "the manager is hung or overloaded: look at its log; a restart adopts the \
             running agents"
                .into(),
        )),
    }
}

/// A standby (contract section 12) is healthy, not ready to act: the container's health
/// check passes for it while Redis and Docker answer.
fn healthy_standby(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v["role"] == "standby" && v["redis_and_docker"] == serde_json::Value::Bool(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_healthy_but_a_deposed_leader_or_a_blind_standby_is_not() {
        assert!(healthy_standby(
            r#"{"role":"standby","term":null,"rabbitmq_consuming":false,"redis_and_docker":true}"#
        ));
        assert!(!healthy_standby(
            r#"{"role":"standby","redis_and_docker":false}"#
        ));
        assert!(!healthy_standby(
            r#"{"role":"deposed","redis_and_docker":true}"#
        ));
        assert!(!healthy_standby("not json"));
    }

    #[test]
    fn every_interface_is_asked_on_loopback() {
        assert_eq!(
            probe_address("0.0.0.0:9464"),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            probe_address("[::]:9464"),
            Some("[::1]:9464".parse().unwrap())
        );
        assert_eq!(
            probe_address("10.1.2.3:80"),
            Some("10.1.2.3:80".parse().unwrap())
        );
        assert_eq!(probe_address("nonsense"), None);
    }
}
