//! The admin HTTP endpoint (loopback by default): `/healthz` (the process answers),
//! `/readyz` (RabbitMQ consumed, Redis and Docker reachable, reconciliation done) and
//! `/metrics` (Prometheus text format: the registry's series, and per agent, per
//! customer and of the process itself from [`scrape`]).

pub mod scrape;

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};
use tokio::sync::watch;

pub use scrape::MetricsSource;

/// What `/readyz` reports.
#[derive(Clone)]
pub struct Readiness {
    /// The consumer holds a live channel (RabbitMQ reachable, reconciliation done).
    pub consuming: watch::Receiver<bool>,
    /// Redis and Docker answer.
    pub dependencies: watch::Receiver<bool>,
}

impl Readiness {
    fn checks(&self) -> (bool, serde_json::Value) {
        let consuming = *self.consuming.borrow();
        let deps = *self.dependencies.borrow();
        (
            consuming && deps,
            serde_json::json!({
                "rabbitmq_consuming": consuming,
                "redis_and_docker": deps,
                "reconciled": true,
            }),
        )
    }
}

struct State {
    readiness: Readiness,
    metrics: MetricsSource,
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

async fn metrics_text(state: web::Data<State>) -> HttpResponse {
    let (ready, _) = state.readiness.checks();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(scrape::render(&state.metrics, ready).await)
}

/// Binds `listen` and serves until the returned server is stopped. Returns the bound
/// address (useful with port 0).
pub fn serve(
    listen: &str,
    readiness: Readiness,
    metrics: MetricsSource,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let state = web::Data::new(State { readiness, metrics });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
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
