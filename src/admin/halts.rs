//! The status page's writes (contract section 10, for the operator): `POST /api/halts`
//! engages a halt, `POST /api/halts/{id}/release` releases one.
//!
//! # Who may write
//! Reading may be open (no `ADMIN_TOKEN`), writing never is:
//! - no `ADMIN_TOKEN` configured: every write is refused, 403, "set ADMIN_TOKEN to allow
//!   writes from the status page";
//! - a token configured and the request does not carry it ([`super::auth`]: bearer
//!   header or the page's cookie): 401.
//!
//! # Cross-site requests (CSRF)
//! The page's cookie is `SameSite=Strict` already; on top, a write must carry both
//! - `Content-Type: application/json` (else 415): a form of another site can send only
//!   `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`;
//! - the header [`WRITE_HEADER`]` : 1` (else 403): another site's script can set it only
//!   through CORS, whose preflight this server never allows;
//!
//! and, when the browser says where the request comes from, it must be this server:
//! `Origin` (its `host:port` must be the request's `Host`) and `Sec-Fetch-Site`
//! (`same-origin`), else 403. All of this is [`may_write`], a pure function.
//!
//! # The path of a write
//! The handler publishes `halt.engage` / `halt.release` to the installation's command
//! exchange exactly as `agent-manager halt engage|release` does
//! ([`crate::cli::act::round_trip`]: persistent, mandatory, confirmed, its answer queue
//! bound before it goes) and waits up to [`ANSWER_WAIT`] for the answer. Why not hand the
//! command to the HaltActor in-process: through the broker the write is *the same*
//! command a Core Engine or the CLI sends, with nothing of its own to keep in step —
//! the same decoding and validation, the same order behind the commands already
//! queued, the same de-duplication by `message_id`, the same HaltActor, the same
//! events (`halt.engaged`, `agent.halted`) and the same `halts:events` audit entry. A
//! write is a person clicking, so its own short-lived connection costs nothing worth
//! saving.
//!
//! What the command carries: a new `halt_id` ([`crate::cli::halt::new_halt_id`]);
//! `requested_by` the operator's name when the request gives a valid one, else
//! [`STATUS_PAGE`]; the customer it is sent as ([`sender`]): the agents' owner (from
//! their records), the customer of a customer scope, the team's owner, or for a
//! platform halt the request's `customer_id` else [`STATUS_PAGE`] (the CLI asks for
//! `--customer-id` there; any sender may release a platform halt, so the name only
//! records where it came from). A release is sent as the customer that engaged the halt
//! (`halt:<id>`), as the CLI does.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth;
use crate::cli::act::{refusal, round_trip, Outgoing};
use crate::cli::halt::{
    engage_body, engaged_text, new_halt_id, owner_of_agents, release_body, released_text,
};
use crate::cli::CliError;
use crate::config::RabbitConfig;
use crate::protocol::{
    halt_scope_from_json, valid_agent_id, Event, EventKind, HaltCommandKind, HaltScope, HaltTarget,
    HALT_REASON_MAX_CHARS,
};
use crate::store::Store;

/// The header a write must carry (value `1`): a cross-site form cannot send it.
pub const WRITE_HEADER: &str = "x-agent-manager";

/// `requested_by` (and the platform halt's sender) when the operator gives no name.
pub const STATUS_PAGE: &str = "status-page";

/// How long a write waits for the manager's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The most characters of `requested_by` (as the decoder bounds it).
const REQUESTED_BY_MAX_CHARS: usize = 128;

/// Why a write is refused before anything is sent: the HTTP status and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub text: String,
}

impl Refusal {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Refusal {
            status,
            text: text.into(),
        }
    }
}

/// The refusal of every write while no `ADMIN_TOKEN` is configured.
pub const WRITES_OFF: &str = "set ADMIN_TOKEN to allow writes from the status page \
     (reading stays open without it; halting and releasing never do)";

/// Whether `req` may write, `token` being `ADMIN_TOKEN` (see the module's doc).
pub fn may_write(req: &HttpRequest, token: Option<&str>) -> Result<(), Refusal> {
    if token.is_none() {
        return Err(Refusal::new(StatusCode::FORBIDDEN, WRITES_OFF));
    }
    if auth::check(req, token) == auth::Access::Denied {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "a write asks for ADMIN_TOKEN: send `Authorization: Bearer <token>`, or open \
             /?token=<token> once in a browser (it keeps a cookie)",
        ));
    }
    let headers = req.headers();
    let text = |name: &header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let json = text(&header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a write is JSON: send `Content-Type: application/json`",
        ));
    }
    let marked = headers
        .get(WRITE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1");
    if !marked {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("a write carries the header `{WRITE_HEADER}: 1` (a cross-site form cannot)"),
        ));
    }
    if let Some(origin) = text(&header::ORIGIN) {
        let host = text(&header::HOST).unwrap_or("");
        let from = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|rest| rest.trim_end_matches('/'));
        if host.is_empty() || from.is_none_or(|f| !f.eq_ignore_ascii_case(host)) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("a write comes from this server's own page, not from {origin}"),
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("a write comes from this server's own page (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    Ok(())
}

/// `POST /api/halts`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngageRequest {
    /// As the contract writes it: `{"agent_ids": [...]}`, `{"customer_id": ".."}`,
    /// `{"team_id": ".."}` or `{"platform": true}`, with an optional `agent_types`.
    pub scope: Value,
    pub reason: String,
    /// The operator's name; `None` or empty: [`STATUS_PAGE`].
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The customer a platform halt is sent as; `None`: [`STATUS_PAGE`].
    #[serde(default)]
    pub customer_id: Option<String>,
}

/// `POST /api/halts/{id}/release`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reason: String,
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// An engage request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Engage {
    pub scope: HaltScope,
    pub reason: String,
    pub requested_by: String,
    pub customer_id: Option<String>,
}

/// A release request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub halt_id: String,
    pub reason: String,
    pub requested_by: String,
}

/// The reason as the contract bounds it: 1 to 500 printable characters, not blank.
fn checked_reason(reason: &str) -> Result<String, String> {
    let chars = reason.chars().count();
    if reason.trim().is_empty()
        || chars > HALT_REASON_MAX_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(format!(
            "a reason is required: 1-{HALT_REASON_MAX_CHARS} printable characters (it has {chars})"
        ));
    }
    Ok(reason.to_string())
}

/// Who asks: the name given when there is one (1-128 printable characters), else
/// [`STATUS_PAGE`].
fn checked_requested_by(name: Option<&str>) -> Result<String, String> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(STATUS_PAGE.to_string());
    };
    if name.chars().count() > REQUESTED_BY_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "requested_by must be 1-{REQUESTED_BY_MAX_CHARS} printable characters"
        ));
    }
    Ok(name.to_string())
}

/// `body` read as `T`, for a 400 naming what is wrong.
fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body does not read: {e}"))
}

/// `POST /api/halts`'s body, checked: the scope by the command decoder's own rules.
pub fn engage_of(body: &[u8]) -> Result<Engage, String> {
    let req: EngageRequest = read(body)?;
    let scope = halt_scope_from_json(&req.scope).map_err(|e| format!("scope: {e}"))?;
    let customer_id = match req.customer_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if c.chars().count() > 128 || c.chars().any(char::is_control) => {
            return Err("customer_id must be 1-128 printable characters".into())
        }
        Some(c) => Some(c.to_string()),
    };
    Ok(Engage {
        scope,
        reason: checked_reason(&req.reason)?,
        requested_by: checked_requested_by(req.requested_by.as_deref())?,
        customer_id,
    })
}

/// `POST /api/halts/{halt_id}/release`'s body, checked.
pub fn release_of(halt_id: &str, body: &[u8]) -> Result<Release, String> {
    if !valid_agent_id(halt_id) {
        return Err(format!("'{halt_id}' is not a halt id"));
    }
    let req: ReleaseRequest = read(body)?;
    Ok(Release {
        halt_id: halt_id.to_string(),
        reason: checked_reason(&req.reason)?,
        requested_by: checked_requested_by(req.requested_by.as_deref())?,
    })
}

/// The customer `halt.engage` is sent as: the agents' one owner (`owners`: each found
/// agent's), the customer of a customer scope, the team's owner (`team_owner`), or for
/// the platform `given` else [`STATUS_PAGE`]. `given` may only repeat the scope's owner.
pub fn sender(
    target: &HaltTarget,
    given: Option<&str>,
    owners: &HashMap<String, String>,
    team_owner: Option<&str>,
) -> Result<String, CliError> {
    match target {
        HaltTarget::AgentIds(ids) => owner_of_agents(ids, owners, given, ""),
        HaltTarget::CustomerId(c) | HaltTarget::TeamId(c) => {
            let owner = match target {
                HaltTarget::TeamId(_) => {
                    team_owner.ok_or_else(|| CliError::NotFound(format!("team {c} not found")))?
                }
                _ => c.as_str(),
            };
            match given {
                Some(g) if g != owner => Err(CliError::Usage(format!(
                    "customer_id {g} is not the scope's owner ({owner}): a customer may halt only its own agents"
                ))),
                _ => Ok(owner.to_string()),
            }
        }
        HaltTarget::Platform => Ok(given.unwrap_or(STATUS_PAGE).to_string()),
    }
}

/// What a write answers: its HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    fn error(status: StatusCode, text: impl Into<String>) -> Self {
        Reply {
            status,
            body: json!({ "error": text.into() }),
        }
    }
}

/// The HTTP status of a failed write.
pub fn status_of(e: &CliError) -> StatusCode {
    match e {
        CliError::Usage(_) => StatusCode::BAD_REQUEST,
        CliError::NotFound(_) => StatusCode::NOT_FOUND,
        CliError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CliError::NotAnswered(_) => StatusCode::ACCEPTED,
        CliError::Refused { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `e` as the page shows it, for halt `halt_id`.
fn failed(halt_id: &str, e: &CliError) -> Reply {
    let mut body = json!({ "halt_id": halt_id, "error": e.to_string() });
    match e {
        CliError::Refused { code, message } => {
            body["code"] = json!(code);
            body["message"] = json!(message);
        }
        CliError::NotAnswered(_) => body["pending"] = json!(true),
        _ => {}
    }
    Reply {
        status: status_of(e),
        body,
    }
}

/// The answer event as the page shows it: its figures and the CLI's text.
fn answered(halt_id: &str, customer_id: &str, event: &Event) -> Reply {
    let text = if event.event == EventKind::HaltReleased {
        released_text(event)
    } else {
        engaged_text(event)
    };
    let d = &event.details;
    Reply {
        status: StatusCode::OK,
        body: json!({
            "halt_id": halt_id,
            "customer_id": customer_id,
            "answer": event.routing_key(),
            "agent_ids": event.agent_ids.clone().unwrap_or_default(),
            "cut_ms": d["cut_ms"],
            "frozen_ms": d["frozen_ms"],
            "failed": d.get("failed").cloned().unwrap_or_else(|| json!([])),
            "still_held": d.get("still_held").cloned().unwrap_or_else(|| json!([])),
            "again": d["again"] == json!(true),
            "text": text.trim_end(),
        }),
    }
}

/// Sends `command` and waits for its answer: the reply.
async fn send(
    rabbit: &RabbitConfig,
    command: &Outgoing<'_>,
    halt_id: &str,
    customer_id: &str,
    answer: EventKind,
) -> Reply {
    let got = round_trip(rabbit, command, Some(ANSWER_WAIT), |e| e.event == answer).await;
    match got {
        Ok(Some(event)) => match refusal(&event) {
            Some(refused) => failed(halt_id, &refused),
            None => answered(halt_id, customer_id, &event),
        },
        Ok(None) => failed(
            halt_id,
            &CliError::NotAnswered(format!("{} was sent", command.what)),
        ),
        Err(e) => failed(halt_id, &e),
    }
}

/// Engages `e`: the sender read from Redis, the command sent, its answer awaited.
pub async fn engage(store: &Store, rabbit: &RabbitConfig, e: Engage) -> Reply {
    let redis_down = |e: crate::error::StoreError| {
        Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis: {e}; nothing was sent"),
        )
    };
    let mut owners = HashMap::new();
    let mut team_owner = None;
    match &e.scope.target {
        HaltTarget::AgentIds(ids) => match store.load_fields(ids).await {
            Ok(found) => {
                owners = found
                    .into_iter()
                    .map(|(id, f)| (id, f.get("customer_id").cloned().unwrap_or_default()))
                    .collect()
            }
            Err(err) => return redis_down(err),
        },
        HaltTarget::TeamId(team_id) => match store.load_team(team_id).await {
            Ok(team) => team_owner = team.map(|t| t.customer_id),
            Err(err) => return redis_down(err),
        },
        HaltTarget::CustomerId(_) | HaltTarget::Platform => {}
    }
    let customer_id = match sender(
        &e.scope.target,
        e.customer_id.as_deref(),
        &owners,
        team_owner.as_deref(),
    ) {
        Ok(c) => c,
        Err(err) => return Reply::error(status_of(&err), err.to_string()),
    };
    let halt_id = new_halt_id(Utc::now(), fastrand::u16(..));
    let message_id = uuid::Uuid::new_v4().to_string();
    let command = Outgoing {
        routing_key: HaltCommandKind::Engage.routing_key(),
        body: engage_body(
            &message_id,
            &halt_id,
            &customer_id,
            &e.scope,
            &e.reason,
            &e.requested_by,
        ),
        message_id: &message_id,
        answers: vec![EventKind::HaltEngaged],
        what: format!("halt.engage of halt {halt_id}"),
    };
    tracing::info!(%halt_id, %customer_id, requested_by = %e.requested_by, "status page: engaging a halt");
    send(
        rabbit,
        &command,
        &halt_id,
        &customer_id,
        EventKind::HaltEngaged,
    )
    .await
}

/// Releases `r`: sent as the customer that engaged the halt, its answer awaited.
pub async fn release(store: &Store, rabbit: &RabbitConfig, r: Release) -> Reply {
    let halt = match store.load_halt(&r.halt_id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Reply::error(
                StatusCode::NOT_FOUND,
                format!("halt {} is not engaged", r.halt_id),
            )
        }
        Err(e) => {
            return Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Redis: {e}; nothing was sent"),
            )
        }
    };
    let message_id = uuid::Uuid::new_v4().to_string();
    let command = Outgoing {
        routing_key: HaltCommandKind::Release.routing_key(),
        body: release_body(
            &message_id,
            &r.halt_id,
            &halt.customer_id,
            &r.reason,
            &r.requested_by,
        ),
        message_id: &message_id,
        answers: vec![EventKind::HaltReleased],
        what: format!("halt.release of halt {}", r.halt_id),
    };
    tracing::info!(halt_id = %r.halt_id, requested_by = %r.requested_by, "status page: releasing a halt");
    send(
        rabbit,
        &command,
        &r.halt_id,
        &halt.customer_id,
        EventKind::HaltReleased,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const TOKEN: &str = "write-test-token-0123456789";

    /// A write as the page sends it, with `drop` left out.
    fn write(drop: &str) -> TestRequest {
        let mut req = TestRequest::post().uri("/api/halts");
        let headers = [
            ("authorization", format!("Bearer {TOKEN}")),
            ("content-type", "application/json".to_string()),
            (WRITE_HEADER, "1".to_string()),
            ("host", "127.0.0.1:9000".to_string()),
            ("origin", "http://127.0.0.1:9000".to_string()),
            ("sec-fetch-site", "same-origin".to_string()),
        ];
        for (name, value) in headers {
            if name != drop {
                req = req.insert_header((name, value));
            }
        }
        req
    }

    fn status(req: TestRequest, token: Option<&str>) -> Option<StatusCode> {
        may_write(&req.to_http_request(), token)
            .err()
            .map(|r| r.status)
    }

    #[test]
    fn without_a_configured_token_every_write_is_refused_403() {
        let refused = may_write(&write("").to_http_request(), None).expect_err("refused");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused
            .text
            .starts_with("set ADMIN_TOKEN to allow writes from the status page"));
    }

    #[test]
    fn with_a_token_a_write_without_it_or_with_another_is_401_and_with_it_passes() {
        assert_eq!(status(write(""), Some(TOKEN)), None);
        assert_eq!(
            status(write("authorization"), Some(TOKEN)),
            Some(StatusCode::UNAUTHORIZED)
        );
        let other = write("authorization").insert_header(("authorization", "Bearer nope"));
        assert_eq!(status(other, Some(TOKEN)), Some(StatusCode::UNAUTHORIZED));
        let cookie =
            write("authorization").insert_header(("cookie", format!("{}={TOKEN}", auth::COOKIE)));
        assert_eq!(status(cookie, Some(TOKEN)), None);
    }

    #[test]
    fn a_cross_site_request_is_refused() {
        assert_eq!(
            status(write("content-type"), Some(TOKEN)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let form = write("content-type")
            .insert_header(("content-type", "application/x-www-form-urlencoded"));
        assert_eq!(
            status(form, Some(TOKEN)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let charset = write("content-type")
            .insert_header(("content-type", "application/json; charset=utf-8"));
        assert_eq!(status(charset, Some(TOKEN)), None);
        assert_eq!(
            status(write(WRITE_HEADER), Some(TOKEN)),
            Some(StatusCode::FORBIDDEN)
        );
        let elsewhere = write("origin").insert_header(("origin", "https://evil.example"));
        assert_eq!(status(elsewhere, Some(TOKEN)), Some(StatusCode::FORBIDDEN));
        let null = write("origin").insert_header(("origin", "null"));
        assert_eq!(status(null, Some(TOKEN)), Some(StatusCode::FORBIDDEN));
        let site = write("sec-fetch-site").insert_header(("sec-fetch-site", "cross-site"));
        assert_eq!(status(site, Some(TOKEN)), Some(StatusCode::FORBIDDEN));
        // curl and scripts send neither Origin nor Sec-Fetch-Site.
        let script = write("origin");
        assert_eq!(status(script, Some(TOKEN)), None);
    }

    #[test]
    fn an_engage_names_a_scope_and_a_reason_and_who_asks_defaults_to_the_page() {
        let e =
            engage_of(br#"{"scope": {"agent_ids": ["a1"]}, "reason": "runaway"}"#).expect("valid");
        assert_eq!(e.scope.target, HaltTarget::AgentIds(vec!["a1".into()]));
        assert_eq!(e.requested_by, STATUS_PAGE);
        assert_eq!(e.reason, "runaway");
        let e = engage_of(
            br#"{"scope": {"platform": true, "agent_types": ["trading"]}, "reason": "r", "requested_by": " alice "}"#,
        )
        .expect("valid");
        assert_eq!(e.scope.target, HaltTarget::Platform);
        assert_eq!(e.requested_by, "alice");
        assert!(e.scope.agent_types.is_some());
        for (body, says) in [
            (
                &br#"{"scope": {"agent_ids": ["a1"]}, "reason": "  "}"#[..],
                "reason is required",
            ),
            (br#"{"scope": {"agent_ids": ["a1"]}}"#, "reason"),
            (br#"{"scope": {}, "reason": "r"}"#, "scope"),
            (
                br#"{"scope": {"agent_ids": ["bad id"]}, "reason": "r"}"#,
                "must match",
            ),
            (
                br#"{"scope": {"platform": true, "team_id": "t"}, "reason": "r"}"#,
                "one target",
            ),
            (
                br#"{"scope": {"platform": true}, "reason": "r", "force": true}"#,
                "unknown field",
            ),
            (
                br#"{"scope": {"platform": true}, "reason": "r", "requested_by": "a\nb"}"#,
                "requested_by",
            ),
            (b"scope=platform", "does not read"),
        ] {
            let e = engage_of(body).expect_err(&String::from_utf8_lossy(body));
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(body));
        }
        let long = format!(
            r#"{{"scope": {{"platform": true}}, "reason": "{}"}}"#,
            "x".repeat(501)
        );
        assert!(engage_of(long.as_bytes()).is_err());
        let r = release_of("h-1", br#"{"reason": "fixed"}"#).expect("valid");
        assert_eq!(
            (r.requested_by.as_str(), r.reason.as_str()),
            (STATUS_PAGE, "fixed")
        );
        assert!(release_of("h-1", br#"{}"#).is_err());
        assert!(release_of("no such/halt", br#"{"reason": "x"}"#).is_err());
    }

    #[test]
    fn the_sender_is_the_scopes_owner_and_the_platforms_is_the_page() {
        let owners: HashMap<String, String> = [("a1", "c1"), ("a2", "c1"), ("b1", "c2")]
            .into_iter()
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .collect();
        let ids = |v: &[&str]| HaltTarget::AgentIds(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            sender(&ids(&["a1", "a2"]), None, &owners, None).ok(),
            Some("c1".into())
        );
        assert!(matches!(
            sender(&ids(&["a1", "b1"]), None, &owners, None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            sender(&ids(&["zz"]), None, &owners, None),
            Err(CliError::NotFound(_))
        ));
        let customer = HaltTarget::CustomerId("c1".into());
        assert_eq!(
            sender(&customer, None, &owners, None).ok(),
            Some("c1".into())
        );
        assert!(sender(&customer, Some("c2"), &owners, None).is_err());
        let team = HaltTarget::TeamId("t1".into());
        assert_eq!(
            sender(&team, None, &owners, Some("c2")).ok(),
            Some("c2".into())
        );
        assert!(matches!(
            sender(&team, None, &owners, None),
            Err(CliError::NotFound(_))
        ));
        assert_eq!(
            sender(&HaltTarget::Platform, None, &owners, None).ok(),
            Some(STATUS_PAGE.into())
        );
        assert_eq!(
            sender(&HaltTarget::Platform, Some("ops"), &owners, None).ok(),
            Some("ops".into())
        );
        assert_eq!(
            status_of(&CliError::Refused {
                code: "forbidden".into(),
                message: "m".into()
            }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status_of(&CliError::NotAnswered("x".into())),
            StatusCode::ACCEPTED
        );
    }
}
