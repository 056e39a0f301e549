//! `agent-manager check`: can the manager work here? Docker reachable (and the socket
//! usable by this user), the agent image present, the agent network there, RabbitMQ and
//! Redis answering, and with per-agent credentials the management API and Redis ACLs
//! that make the agents' own users. One line per check; each failure comes with what
//! to do about it. With `services_only` only Docker, RabbitMQ and Redis are checked:
//! the image may legitimately be pulled later, and the manager creates the network
//! itself. With `ready` (the container's HEALTHCHECK) only the running manager's own
//! `/readyz` is asked ([`super::ready`]).

use std::time::Duration;

use bollard::query_parameters::InspectNetworkOptions;
use serde::Serialize;

use super::error_chain;
use crate::config::{Config, CredentialMode};
use crate::redact;
use crate::runtime::agent_urls::{self, AgentUrl};
use crate::runtime::engine::connect_docker;

/// Where bollard connects when `DOCKER_HOST` is empty.
const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// What to check and how long to wait for each answer.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Only the services (Docker, RabbitMQ, Redis), not the image and the network.
    pub services_only: bool,
    /// Only the running manager's own `/readyz` ([`super::ready`]): the container's
    /// HEALTHCHECK.
    pub ready: bool,
    /// Bound on each check (each connects and asks once).
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    /// Not run because a check it depends on failed.
    Skip,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub check: &'static str,
    pub status: Status,
    /// What was found (OK) or what is wrong (FAIL). Never holds a password.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl CheckResult {
    fn ok(check: &'static str, detail: String) -> Self {
        CheckResult {
            check,
            status: Status::Ok,
            detail,
            fix: None,
        }
    }
    fn fail(check: &'static str, detail: String, fix: String) -> Self {
        CheckResult {
            check,
            status: Status::Fail,
            detail,
            fix: Some(fix),
        }
    }
    fn skip(check: &'static str, detail: String) -> Self {
        CheckResult {
            check,
            status: Status::Skip,
            detail,
            fix: None,
        }
    }
}

/// Runs the checks (Docker's one after another, the services side by side).
pub async fn run(config: &Config, opts: &CheckOptions) -> Vec<CheckResult> {
    if opts.ready {
        return vec![match super::ready::check(config, opts.timeout).await {
            Ok(detail) => CheckResult::ok("ready", detail),
            Err((detail, fix)) => CheckResult::fail("ready", detail, fix),
        }];
    }
    let (mut results, rabbit, redis) = tokio::join!(
        docker_checks(config, opts),
        rabbitmq_check(config, opts.timeout),
        redis_check(config, opts.timeout),
    );
    results.push(rabbit);
    results.push(redis);
    if !opts.services_only && config.agents.credentials == CredentialMode::PerAgent {
        results.push(credentials_check(config, opts.timeout).await);
    }
    if !opts.services_only {
        results.push(egress_check(config).await);
    }
    results
}

/// Whether agents' egress (contract section 11) will be enforced by a manager run with
/// this configuration, from this place.
async fn egress_check(config: &Config) -> CheckResult {
    use crate::config::{DeploymentMode, EgressMode};
    let mode = config.egress.mode;
    if mode == EgressMode::Off {
        return CheckResult::skip(
            "egress",
            "EGRESS_MODE=off: agents may connect anywhere their network routes to".into(),
        );
    }
    if config.deployment_mode == DeploymentMode::Swarm {
        return CheckResult::skip(
            "egress",
            "not enforced in swarm mode yet: agents may connect anywhere their network routes to"
                .into(),
        );
    }
    let unfiltered = |detail: String, fix: &str| {
        CheckResult::fail(
            "egress",
            format!("not enforced (EGRESS_MODE={}): {detail}", mode.as_str()),
            format!("{fix}; or set EGRESS_MODE=off to run agents unfiltered knowingly"),
        )
    };
    if !crate::egress::keyed_by_mac(config) {
        return unfiltered(
            "the Docker host is not this machine's socket".into(),
            "run the manager on the Docker host, with its local socket",
        );
    }
    match crate::egress::firewall::usable().await {
        Ok(()) => CheckResult::ok(
            "egress",
            "iptables usable: agents reach the platform and their lists only".into(),
        ),
        Err(e) => unfiltered(
            format!("iptables cannot be changed here ({e})"),
            "run the manager as root in the host's network namespace (a container: \
             --network host --cap-add NET_ADMIN, as root)",
        ),
    }
}

/// With per-agent credentials: the management API and Redis' ACLs answer the manager
/// (it lists the agents' users there, as it does at every start).
async fn credentials_check(config: &Config, timeout: Duration) -> CheckResult {
    use crate::ports::CredentialIssuer;
    let management = config.rabbitmq.management_url();
    let shown = redact::url(&management);
    let fix = |e: &str| {
        if is_certificate_problem(&e.to_lowercase()) {
            return "the management API's TLS certificate was not accepted: set \
                    RABBITMQ_MANAGEMENT_CA_FILE to the CA (PEM) that signed it, or fix the host \
                    name in RABBITMQ_MANAGEMENT_URL"
                .to_string();
        }
        "enable the rabbitmq_management plugin (`rabbitmq-plugins enable rabbitmq_management`; \
         scripts/services.sh does), point RABBITMQ_MANAGEMENT_URL at it with a user tagged \
         administrator, let the manager's Redis user run ACL, or set AGENT_CREDENTIALS=shared"
            .to_string()
    };
    let fail = |e: String| {
        let detail = redact::secret_of_url_in(
            &redact::secret_of_url_in(&e, &management),
            &config.redis.url,
        );
        CheckResult::fail("logins", detail, fix(&e))
    };
    let census = async {
        let store = crate::store::Store::connect(&config.redis).await?;
        let identities = crate::identity::Identities::new(config, store)?;
        identities.census().await
    };
    match tokio::time::timeout(timeout, census).await {
        Ok(Ok(census)) => CheckResult::ok(
            "logins",
            format!(
                "agents' own users: management API {shown} and Redis ACLs answer ({} agent(s) have users)",
                census.owned.len()
            ),
        ),
        Ok(Err(e)) => fail(error_chain(&e)),
        Err(_) => fail(format!("{shown}: no answer within {} s", timeout.as_secs_f32())),
    }
}

/// True when nothing failed.
pub fn passed(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.status != Status::Fail)
}

/// One line per check (`OK`, `FAIL` with a `fix:` line, `SKIP`) and a summary; with
/// `quiet`, only the failures.
pub fn render(results: &[CheckResult], quiet: bool) -> String {
    let mut out = String::new();
    for r in results {
        let tag = match r.status {
            Status::Ok => "OK",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        if quiet && r.status != Status::Fail {
            continue;
        }
        out.push_str(&format!("{tag:<5} {:<9} {}\n", r.check, r.detail));
        if let Some(fix) = &r.fix {
            out.push_str(&format!("{:<15} fix: {fix}\n", ""));
        }
    }
    if !quiet {
        let failed = results.iter().filter(|r| r.status == Status::Fail).count();
        if failed == 0 {
            out.push_str(&format!("all {} checks passed\n", results.len()));
        } else {
            out.push_str(&format!("{failed} of {} checks failed\n", results.len()));
        }
    }
    out
}

fn docker_endpoint(config: &Config) -> String {
    config
        .docker
        .host()
        .unwrap_or(DEFAULT_DOCKER_SOCKET)
        .to_string()
}

async fn docker_checks(config: &Config, opts: &CheckOptions) -> Vec<CheckResult> {
    let endpoint = docker_endpoint(config);
    let t = opts.timeout;
    let docker = match connect_docker(&config.docker, config.agents.max_stop_timeout_s) {
        Ok(d) => d,
        Err(e) => {
            let (detail, fix) = docker_problem(&e.to_string(), &endpoint);
            let mut results = vec![CheckResult::fail("docker", detail, fix)];
            if !opts.services_only {
                results.extend(unreachable(config));
            }
            return results;
        }
    };
    let docker_result = match tokio::time::timeout(t, docker.version()).await {
        Ok(Ok(v)) => CheckResult::ok(
            "docker",
            format!(
                "Docker {} (API {}) at {endpoint}",
                v.version.unwrap_or_else(|| "?".into()),
                v.api_version.unwrap_or_else(|| "?".into())
            ),
        ),
        Ok(Err(e)) => {
            let (detail, fix) = docker_problem(&error_chain(&e), &endpoint);
            CheckResult::fail("docker", detail, fix)
        }
        Err(_) => CheckResult::fail(
            "docker",
            format!("{endpoint}: no answer within {} s", t.as_secs_f32()),
            "dockerd is stuck or overloaded: `docker info` should answer; look at its log \
             (scripts/services.sh keeps it in /tmp/agent-manager-services/dockerd.log)"
                .into(),
        ),
    };
    let reachable = docker_result.status == Status::Ok;
    let mut results = vec![docker_result];
    if opts.services_only {
        return results;
    }
    let image = &config.agents.image;
    let network = &config.docker.network;
    if !reachable {
        results.extend(unreachable(config));
        return results;
    }
    let (image_r, network_r) = tokio::join!(
        tokio::time::timeout(t, docker.inspect_image(image)),
        tokio::time::timeout(
            t,
            docker.inspect_network(network, None::<InspectNetworkOptions>)
        ),
    );
    results.push(match image_r {
        Ok(Ok(i)) => {
            let id = i.id.unwrap_or_default();
            let short = id.get(..19).unwrap_or(&id);
            CheckResult::ok("image", format!("{image} present ({short})"))
        }
        Ok(Err(e)) if is_404(&e) => CheckResult::fail(
            "image",
            format!("{image} is not on the Docker host"),
            format!(
                "build or load it (`bash scripts/services.sh` builds autogen-agent:latest \
                 from scripts/agent-image; elsewhere `docker pull {image}` or `docker load`), \
                 or set AGENT_IMAGE; the manager also tries to pull it at the first create"
            ),
        ),
        Ok(Err(e)) => CheckResult::fail(
            "image",
            format!("{image}: {}", error_chain(&e)),
            "see the docker check; `docker image inspect` should answer".into(),
        ),
        Err(_) => CheckResult::fail(
            "image",
            format!("{image}: no answer within {} s", t.as_secs_f32()),
            "dockerd is slow or stuck: `docker info` should answer".into(),
        ),
    });
    results.push(match network_r {
        Ok(Ok(n)) => CheckResult::ok(
            "network",
            format!("{network} ({})", n.driver.unwrap_or_else(|| "?".into())),
        ),
        Ok(Err(e)) if is_404(&e) => CheckResult::fail(
            "network",
            format!("{network} does not exist"),
            format!(
                "`docker network create {network}`, or just start the manager \
                 (`agent-manager run` creates it)"
            ),
        ),
        Ok(Err(e)) => CheckResult::fail(
            "network",
            format!("{network}: {}", error_chain(&e)),
            "see the docker check; `docker network inspect` should answer".into(),
        ),
        Err(_) => CheckResult::fail(
            "network",
            format!("{network}: no answer within {} s", t.as_secs_f32()),
            "dockerd is slow or stuck: `docker info` should answer".into(),
        ),
    });
    results.push(agents_check(config, &docker, t).await);
    results
}

/// Can agents reach RabbitMQ and Redis at the URLs they are given? As the manager
/// does at start: URLs on loopback are derived from the agents' network's gateway where
/// the services answer there ([`crate::runtime::agent_urls`]); a URL on loopback that
/// cannot be derived fails, naming the setting to fix.
async fn agents_check(config: &Config, docker: &bollard::Docker, timeout: Duration) -> CheckResult {
    let urls = agent_urls::resolve(config, docker, timeout).await;
    let first_unreachable = urls.iter().find_map(|u| match u {
        AgentUrl::Unreachable {
            service,
            shown,
            why,
        } => Some((u, service, shown, why)),
        AgentUrl::Derived { .. } => None,
    });
    if let Some((bad, service, shown, why)) = first_unreachable {
        return CheckResult::fail(
            "agents",
            format!(
                "agents would be given {} URL {shown}, on loopback (inside their containers: \
                 the container itself), and {why}",
                service.name()
            ),
            bad.fix().unwrap_or_default(),
        );
    }
    let mut derived = config.clone();
    agent_urls::apply(&mut derived, &urls);
    let how = if urls.is_empty() {
        "as set".to_string()
    } else {
        format!(
            "{} derived from the gateway of {}",
            urls.len(),
            config.docker.network
        )
    };
    CheckResult::ok(
        "agents",
        format!(
            "agents reach RabbitMQ at {} and Redis at {} ({how})",
            redact::url(derived.agent_rabbitmq_url()),
            redact::url(derived.agent_redis_url())
        ),
    )
}

/// The checks that need Docker, skipped.
fn unreachable(config: &Config) -> [CheckResult; 3] {
    [
        CheckResult::skip(
            "image",
            format!("{}: Docker is not reachable", config.agents.image),
        ),
        CheckResult::skip(
            "network",
            format!("{}: Docker is not reachable", config.docker.network),
        ),
        CheckResult::skip("agents", "Docker is not reachable".into()),
    ]
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// What is wrong with Docker, from the error's text, and the fix.
pub fn docker_problem(message: &str, endpoint: &str) -> (String, String) {
    let lower = message.to_lowercase();
    let socket = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if lower.contains("permission denied") {
        (
            format!("no permission to use the Docker socket {socket} ({message})"),
            format!(
                "add this user to the socket's group (`sudo usermod -aG docker $USER`, then log \
                 in again); in a container, run with `--group-add $(stat -c %g {socket})` \
                 (compose: group_add)"
            ),
        )
    } else if lower.contains("no such file")
        || lower.contains("socket not found")
        || lower.contains("connection refused")
        || lower.contains("entity not found")
    {
        (
            format!("the Docker daemon is not running at {endpoint} ({message})"),
            format!(
                "start dockerd (`bash scripts/services.sh` on a dev machine, `sudo systemctl start \
                 docker` elsewhere); in a container, mount the socket \
                 (`-v {socket}:{socket}`); or point DOCKER_HOST at the daemon"
            ),
        )
    } else {
        (
            format!("{endpoint}: {message}"),
            "check DOCKER_HOST and that `docker info` works for this user".into(),
        )
    }
}

async fn rabbitmq_check(config: &Config, timeout: Duration) -> CheckResult {
    let url = &config.rabbitmq.url;
    let shown = redact::url(url);
    let mut cfg = config.rabbitmq.clone();
    cfg.timeout_s = timeout.as_secs().max(1);
    match crate::broker::connect(&cfg, "agent-manager.check").await {
        Ok(conn) => {
            let _ = tokio::time::timeout(timeout, conn.close(200, "check done".into())).await;
            CheckResult::ok("rabbitmq", shown)
        }
        Err(e) => {
            let message = redact::secret_of_url_in(&error_chain(&e), url);
            let fix = rabbitmq_fix(&message);
            CheckResult::fail("rabbitmq", message, fix)
        }
    }
}

/// Whether a failure's text says a TLS certificate was not accepted (rustls'
/// `invalid peer certificate: UnknownIssuer`, `NotValidForName`, `Expired`, …).
fn is_certificate_problem(lower: &str) -> bool {
    lower.contains("certificate") || lower.contains("unknownissuer")
}

/// The fix for a RabbitMQ failure, from its text.
pub fn rabbitmq_fix(message: &str) -> String {
    let lower = message.to_lowercase();
    if is_certificate_problem(&lower) {
        "the broker's TLS certificate was not accepted: add the CA that signed it to this \
         machine's trust store (`update-ca-certificates`), or fix the host name in RABBITMQ_URL \
         to one the certificate names"
            .into()
    } else if lower.contains("access_refused")
        || lower.contains("access refused")
        || lower.contains("login")
    {
        "the broker refused the user or password in RABBITMQ_URL: fix them \
         (`rabbitmqctl list_users`; the guest user only logs in from localhost)"
            .into()
    } else if lower.contains("vhost") || lower.contains("not_allowed") {
        "the virtual host in RABBITMQ_URL does not exist or the user may not use it \
         (`rabbitmqctl list_vhosts`, `rabbitmqctl set_permissions`)"
            .into()
    } else {
        "RabbitMQ is down or RABBITMQ_URL points elsewhere: start it (`bash scripts/services.sh` \
         on a dev machine, the rabbitmq service or container elsewhere), or fix RABBITMQ_URL"
            .into()
    }
}

async fn redis_check(config: &Config, timeout: Duration) -> CheckResult {
    let url = &config.redis.url;
    let shown = redact::url(url);
    let fail = |e: String| {
        let message = redact::secret_of_url_in(&format!("{shown}: {e}"), url);
        let fix = redis_fix(&message);
        CheckResult::fail("redis", message, fix)
    };
    let client = match crate::store::client(&config.redis) {
        Ok(c) => c,
        Err(e) => return fail(error_chain(&e)),
    };
    let conn_cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let ask = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&conn_cfg)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(info)) => {
            let version = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| format!(" (Redis {})", v.trim()))
                .unwrap_or_default();
            CheckResult::ok("redis", format!("{shown}{version}"))
        }
        Ok(Err(e)) => fail(error_chain(&e)),
        Err(_) => fail(format!("no answer within {} s", timeout.as_secs_f32())),
    }
}

/// The fix for a Redis failure, from its text.
pub fn redis_fix(message: &str) -> String {
    let lower = message.to_lowercase();
    if is_certificate_problem(&lower) {
        "Redis' TLS certificate was not accepted: set REDIS_TLS_CA_FILE to the CA (PEM) that \
         signed it, or fix the host name in REDIS_URL to one the certificate names"
            .into()
    } else if lower.contains("noauth")
        || lower.contains("wrongpass")
        || lower.contains("invalid password")
        || lower.contains("authentication")
    {
        "Redis wants a (different) password: put it in REDIS_URL, \
         redis://:PASSWORD@host:6379/0 (or redis://USER:PASSWORD@… with ACLs)"
            .into()
    } else {
        "Redis is down or REDIS_URL points elsewhere: start it (`bash scripts/services.sh` on a \
         dev machine, the redis service or container elsewhere), or fix REDIS_URL"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_permission_problem_says_group() {
        let (detail, fix) = docker_problem(
            "error trying to connect: Permission denied (os error 13)",
            "unix:///var/run/docker.sock",
        );
        assert!(detail.contains("no permission"), "{detail}");
        assert!(fix.contains("--group-add"), "{fix}");
        assert!(fix.contains("usermod -aG docker"), "{fix}");
    }

    #[test]
    fn a_missing_daemon_says_start_it() {
        for message in [
            "client error (Connect): No such file or directory (os error 2)",
            "Connection refused (os error 111)",
            "Docker call 'connect' failed: Socket not found: /var/run/docker.sock",
        ] {
            let (detail, fix) = docker_problem(message, "unix:///var/run/docker.sock");
            assert!(detail.contains("not running"), "{detail}");
            assert!(fix.contains("scripts/services.sh"), "{fix}");
            assert!(
                fix.contains("-v /var/run/docker.sock:/var/run/docker.sock"),
                "{fix}"
            );
        }
    }

    #[test]
    fn broker_and_redis_fixes_follow_the_cause() {
        assert!(rabbitmq_fix("ACCESS_REFUSED - Login was refused").contains("user or password"));
        assert!(rabbitmq_fix("IO error: Connection refused").contains("scripts/services.sh"));
        assert!(redis_fix("NOAUTH Authentication required.").contains("password"));
        assert!(redis_fix("Connection refused (os error 111)").contains("REDIS_URL"));
        let untrusted = "rediss://127.0.0.1:6390/0: invalid peer certificate: UnknownIssuer";
        assert!(
            redis_fix(untrusted).contains("REDIS_TLS_CA_FILE"),
            "{}",
            redis_fix(untrusted)
        );
        assert!(rabbitmq_fix("invalid peer certificate: UnknownIssuer").contains("trust store"));
    }

    #[test]
    fn render_shows_fixes_and_quiet_shows_only_failures() {
        let results = vec![
            CheckResult::ok("docker", "Docker 20.10".into()),
            CheckResult::fail("redis", "down".into(), "start it".into()),
            CheckResult::skip("image", "x".into()),
        ];
        let text = render(&results, false);
        assert_eq!(
            text,
            "OK    docker    Docker 20.10\n\
             FAIL  redis     down\n                fix: start it\n\
             SKIP  image     x\n\
             1 of 3 checks failed\n"
        );
        assert_eq!(
            render(&results, true),
            "FAIL  redis     down\n                fix: start it\n"
        );
        assert!(!passed(&results));
        assert!(passed(&results[..1]));
        assert_eq!(render(&results[..1], true), "");
    }
}
