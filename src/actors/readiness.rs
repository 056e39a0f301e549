//! Watches the services the manager cannot work without (Redis, Docker). While either
//! is unreachable the consumer stops taking commands (they wait in RabbitMQ) instead of
//! failing them; logs say so, and readiness reports it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::store::Store;

/// How often Redis and Docker are pinged.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Pings Redis and Docker every [`PROBE_INTERVAL`] and publishes whether both answer.
pub async fn watch_dependencies(
    store: Store,
    runtime: Arc<dyn Runtime>,
    ok: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let redis = store.ping().await;
        let docker = runtime.ping().await;
        let up = redis.is_ok() && docker.is_ok();
        if up != *ok.borrow() {
            match (&redis, &docker) {
                (Ok(()), Ok(())) => {
                    tracing::info!("Redis and Docker are reachable again; taking commands")
                }
                (Err(e), _) => tracing::warn!(error = %e, "Redis is unreachable"),
                (_, Err(e)) => tracing::warn!(error = %e, "Docker is unreachable"),
            }
            let _ = ok.send(up);
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
