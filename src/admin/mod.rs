//! The admin HTTP endpoint (loopback by default): `/healthz` (the process answers),
//! `/readyz` (RabbitMQ consumed, Redis and Docker reachable, reconciliation done),
//! `/metrics` (Prometheus text format: the registry's series, and per agent, per
//! customer and of the process itself from [`scrape`]), and the status page at `/`
//! (its files in `page/`, compiled in; its data from [`status`] under `/api/`). With
//! `ADMIN_TOKEN` set, everything but `/healthz` and `/readyz` asks for it ([`auth`]).
//! The page's only writes, engaging and releasing halts (`POST /api/halts`,
//! `POST /api/halts/{id}/release`), are [`halts`]: refused unless `ADMIN_TOKEN` is set,
//! guarded against cross-site requests, and sent as `halt.engage`/`halt.release` commands
//! through the broker like any other.

pub mod auth;
pub mod halts;
pub mod scrape;
pub mod status;

use std::net::SocketAddr;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::watch;

use crate::config::RabbitConfig;

pub use scrape::MetricsSource;

/// What `/readyz` reports.
#[derive(Clone)]
pub struct Readiness {
    /// The consumer holds a live channel (RabbitMQ reachable, reconciliation done).
    pub consuming: watch::Receiver<bool>,
    /// Redis and Docker answer.
    pub dependencies: watch::Receiver<bool>,
    /// Leader, standby or deposed (contract section 12): only a leader is ready.
    pub role: watch::Receiver<crate::leader::Role>,
    /// The installation (`MANAGER_INSTANCE`): whose leader the page shows.
    pub instance: String,
}

impl Readiness {
    fn checks(&self) -> (bool, serde_json::Value) {
        let consuming = *self.consuming.borrow();
        let deps = *self.dependencies.borrow();
        let role = *self.role.borrow();
        let leads = matches!(role, crate::leader::Role::Leader { .. });
        (
            leads && consuming && deps,
            serde_json::json!({
                "role": role.name(),
                "term": role.term(),
                "rabbitmq_consuming": consuming,
                "redis_and_docker": deps,
                "reconciled": leads && consuming,
            }),
        )
    }
}

struct State {
    readiness: Readiness,
    metrics: MetricsSource,
    /// `ADMIN_TOKEN`; `None`: nothing is guarded, and nothing may be written.
    token: Option<String>,
    /// Where the page's writes go: the installation's command exchange.
    rabbit: RabbitConfig,
}

impl State {
    /// `None` when `req` may go on, else the refusal.
    fn deny(&self, req: &HttpRequest) -> Option<HttpResponse> {
        match auth::check(req, self.token.as_deref()) {
            auth::Access::Granted => None,
            auth::Access::Denied => Some(
                HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"agent-manager\""))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .content_type("text/plain; charset=utf-8")
                    .body(
                        "401: this endpoint asks for ADMIN_TOKEN: send `Authorization: Bearer <token>`, \
                         or open /?token=<token> once in a browser (it keeps a cookie).\n",
                    ),
            ),
        }
    }
}

/// The status page's files, compiled in: (path, content type, body).
const PAGE: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "/status.js",
        "text/javascript; charset=utf-8",
        include_str!("page/status.js"),
    ),
    (
        "/status.css",
        "text/css; charset=utf-8",
        include_str!("page/status.css"),
    ),
];

/// Headers of every page answer: nothing from elsewhere may load or frame it, and
/// nothing is cached (the data changes, and may be guarded).
fn page_headers(mut resp: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    resp.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((header::CACHE_CONTROL, "no-store"));
    resp
}

/// `/?token=…`: the token given in the address, and where to send the browser on to:
/// `/` with the other parameters (the filter, the agent shown), without the token.
fn token_in_address(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "token" {
            token = Some(v.into_owned());
        } else {
            rest.append_pair(&k, &v);
        }
    }
    let rest = rest.finish();
    let next = if rest.is_empty() {
        "/".to_string()
    } else {
        format!("/?{rest}")
    };
    token.map(|t| (t, next))
}

async fn page(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let path = req.path();
    let Some((_, kind, body)) = PAGE.iter().find(|(p, _, _)| *p == path) else {
        return HttpResponse::NotFound().finish();
    };
    // `/?token=…`: the cookie, then the page without the token in its address.
    if path == "/" {
        if let Some((given, next)) = token_in_address(req.query_string()) {
            let token = state.token.as_deref();
            if !auth::is_token(&given, token) {
                return state.deny(&req).unwrap_or_else(|| {
                    HttpResponse::SeeOther()
                        .insert_header((header::LOCATION, next))
                        .finish()
                });
            }
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, next))
                .insert_header((header::SET_COOKIE, auth::set_cookie(token.unwrap_or(""))))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish();
        }
    }
    if let Some(denied) = state.deny(&req) {
        return denied;
    }
    page_headers(HttpResponse::Ok())
        .content_type(*kind)
        .body(*body)
}

async fn api_agents(
    req: HttpRequest,
    state: web::Data<State>,
    filter: web::Query<status::Filter>,
) -> HttpResponse {
    if let Some(denied) = state.deny(&req) {
        return denied;
    }
    let (ready, checks) = state.readiness.checks();
    let (records, error) = match state.metrics.store.load_all().await {
        Ok(all) => (all.into_iter().filter_map(|(_, r)| r.ok()).collect(), None),
        Err(e) => (Vec::new(), Some(format!("agents not read from Redis: {e}"))),
    };
    let (agents, customers) = status::list(&records, &filter);
    let (customer_rows, platform) = status::customer_rows(&records);
    let (halts, halts_error) = match state.metrics.store.load_halts().await {
        Ok(halts) => (status::halt_rows(&halts), None),
        Err(e) => (Vec::new(), Some(format!("halts not read from Redis: {e}"))),
    };
    // Redis' clock would be exact; the host's is close enough to say "live" on a page.
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let leader = state
        .metrics
        .store
        .leader_record(&state.readiness.instance)
        .await
        .ok()
        .and_then(|h| status::leader_row(&h, now_ms));
    let body = status::AgentList {
        agents,
        customers,
        statuses: status::statuses(),
        customer_rows,
        platform,
        halts,
        halts_error,
        writes: state.token.is_some(),
        total: records.len(),
        ready,
        checks,
        leader,
        error,
        now: chrono::Utc::now().to_rfc3339(),
    };
    page_headers(HttpResponse::Ok()).json(body)
}

async fn api_agent(
    req: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(denied) = state.deny(&req) {
        return denied;
    }
    if !crate::protocol::valid_agent_id(&id) {
        return page_headers(HttpResponse::NotFound())
            .json(serde_json::json!({"error": "not an agent id"}));
    }
    let store = &state.metrics.store;
    let record = match store.load(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return page_headers(HttpResponse::NotFound())
                .json(serde_json::json!({"error": "no such agent"}))
        }
        Err(e) => {
            return page_headers(HttpResponse::ServiceUnavailable())
                .json(serde_json::json!({"error": format!("agent not read from Redis: {e}")}))
        }
    };
    let events = store
        .last_events(&record.agent_id, status::EVENTS_SHOWN)
        .await;
    page_headers(HttpResponse::Ok()).json(status::detail(&record, events))
}

/// A write refused before anything was sent ([`halts::may_write`]): plain text.
fn refused(r: halts::Refusal) -> HttpResponse {
    let mut resp = HttpResponse::build(r.status);
    if r.status == actix_web::http::StatusCode::UNAUTHORIZED {
        resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"agent-manager\""));
    }
    resp.insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{}: {}\n", r.status.as_u16(), r.text))
}

fn replied(r: halts::Reply) -> HttpResponse {
    page_headers(HttpResponse::build(r.status)).json(r.body)
}

fn bad_request(text: String) -> HttpResponse {
    page_headers(HttpResponse::BadRequest()).json(serde_json::json!({ "error": text }))
}

/// `POST /api/halts`: engage a halt ([`halts`]).
async fn api_halt_engage(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = halts::may_write(&req, state.token.as_deref()) {
        return refused(r);
    }
    match halts::engage_of(&body) {
        Ok(e) => replied(halts::engage(&state.metrics.store, &state.rabbit, e).await),
        Err(text) => bad_request(text),
    }
}

/// `POST /api/halts/{id}/release`: release a halt ([`halts`]).
async fn api_halt_release(
    req: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = halts::may_write(&req, state.token.as_deref()) {
        return refused(r);
    }
    match halts::release_of(&id, &body) {
        Ok(r) => replied(halts::release(&state.metrics.store, &state.rabbit, r).await),
        Err(text) => bad_request(text),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let (ready, checks) = state.readiness.checks();
    let body = serde_json::json!({"ready": ready, "checks": checks});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(denied) = state.deny(&req) {
        return denied;
    }
    let (ready, _) = state.readiness.checks();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(scrape::render(&state.metrics, ready).await)
}

/// Binds `listen` and serves until the returned server is stopped. Returns the bound
/// address (useful with port 0). `token`: `ADMIN_TOKEN`, asked for on everything but
/// `/healthz` and `/readyz`, and without which nothing may be written. `rabbit`: where
/// the page's halt commands go.
pub fn serve(
    listen: &str,
    readiness: Readiness,
    metrics: MetricsSource,
    token: Option<String>,
    rabbit: RabbitConfig,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let state = web::Data::new(State {
        readiness,
        metrics,
        token,
        rabbit,
    });
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
            .route("/api/agents", web::get().to(api_agents))
            .route("/api/agents/{id}", web::get().to(api_agent))
            .route("/api/halts", web::post().to(api_halt_engage))
            .route("/api/halts/{id}/release", web::post().to(api_halt_release));
        for (path, _, _) in PAGE {
            app = app.route(path, web::get().to(page));
        }
        app
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), addr))
}

#[cfg(test)]
mod tests {
    use super::token_in_address;

    #[test]
    fn the_token_leaves_the_address_and_the_rest_stays() {
        assert_eq!(token_in_address(""), None);
        assert_eq!(token_in_address("customer=acme"), None);
        assert_eq!(
            token_in_address("token=abc"),
            Some(("abc".into(), "/".into()))
        );
        assert_eq!(
            token_in_address("customer=a%26b&token=x%2By&agent=t-1"),
            Some(("x+y".into(), "/?customer=a%26b&agent=t-1".into()))
        );
    }
}
