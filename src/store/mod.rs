//! Redis: the agents' records for operators (contract section 5) and the manager's own
//! bookkeeping. The one place that knows the key layout, the record's field names and
//! the Lua scripts; every call goes through [`Store`]'s bounded `run` (the Redis
//! timeout), and whatever must change together is one MULTI/EXEC pipeline or one script.
//!
//! | file | holds | keys (names in [`Keys`]) |
//! | --- | --- | --- |
//! | `mod.rs` | [`Store`]: connect, the bounded `run`, ping, SCAN | — |
//! | `keys.rs` | [`Keys`]: every key name behind the prefix | all |
//! | `records.rs` | the record: save, delete, load, list; [`AgentRecord`] ⇄ hash fields, [`record_json`] | `agent:<id>`, `agents`, `customer:<id>:agents` |
//! | `streams.rs` | event streams: append, read back ([`StreamEntry`]) | `agent:<id>:events` |
//! | `heartbeats.rs` | the agents' heartbeats, all in one round trip ([`HeartbeatBatch`]) | `agent:<id>:data:heartbeat` |
//! | `processed.rs` | processed markers ([`Processed`]) | `processed:<message_id>` |
//! | `outbox.rs` | events waiting for RabbitMQ | `outbox` |
//! | `teams.rs` | team records (section 9): save, delete, load, list; [`TeamRecord`] ⇄ hash fields | `team:<id>`, `customer:<id>:teams`, `teams` |
//! | `gpu.rs` | GPU mode's allocations (Lua scripts) | `gpu:allocations` |
//! | `quota.rs` | per-customer quota accounting (Lua scripts; the policy is [`crate::quota`]) | `customer:<id>:usage`, `customer:<id>:reservations` |
//! | `leader.rs` | the leader's lease (section 12): acquire, renew, release (Lua scripts on Redis' clock) | `manager:<instance>:leader` |
//! | `fence.rs` | fenced writes: once leading, every write carries the term and Redis refuses it after a newer one (section 12) | `manager:<instance>:leader` (read) |
//! | `acl.rs` | the agents' own Redis users (`ACL SETUSER`/`DELUSER`/`LIST`; the rules are [`crate::credentials`]'s) | — |

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::RedisConfig;
use crate::error::StoreError;
pub use crate::record::team::TeamRecord;
pub use crate::record::AgentRecord;

mod acl;
mod fence;
mod gpu;
mod halts;
mod heartbeats;
mod keys;
mod leader;
mod outbox;
mod processed;
mod quota;
mod records;
mod streams;
mod teams;

pub use halts::HALT_EVENTS_KEPT;
pub use heartbeats::HeartbeatBatch;
pub use keys::Keys;
pub use leader::{Acquired, Candidate};
pub use processed::Processed;
pub use quota::{QuotaRefusal, QuotaReply, QUOTA_FIELDS};
pub use records::record_json;
pub use streams::StreamEntry;

/// The agents' state in Redis. Cheap to clone (one shared multiplexed connection).
#[derive(Clone)]
pub struct Store {
    /// The one multiplexed connection (reconnects by itself), shared by every clone.
    conn: ConnectionManager,
    keys: Keys,
    /// Bounds every call (`run`) and, doubled, the connect.
    timeout: Duration,
    /// `MAXLEN` of each agent's event stream.
    stream_max_len: u64,
    /// How long a processed marker is kept (seconds).
    processed_ttl_s: u64,
    /// The leader term every write carries once this manager leads ([`fence`]).
    fence: fence::Fence,
}

/// The Redis client of `cfg`: `redis://`, or `rediss://` (TLS) checking the server's
/// certificate against the system's roots and `tls_ca_file`, presenting
/// `tls_cert_file`/`tls_key_file` when set.
pub fn client(cfg: &RedisConfig) -> Result<redis::Client, StoreError> {
    crate::tls::install_provider();
    let open = |source| StoreError::Redis { op: "open", source };
    if cfg.tls_ca_file().is_none() && cfg.tls_client().is_none() {
        return redis::Client::open(cfg.url.as_str()).map_err(open);
    }
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| StoreError::Tls {
            message: format!("cannot read {path}: {e}"),
        })
    };
    let root_cert = cfg.tls_ca_file().map(read).transpose()?;
    let client_tls = match cfg.tls_client() {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        None => None,
    };
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(cfg.url.as_str(), certificates).map_err(open)
}

impl Store {
    /// Connects (bounded by the configured timeout).
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = client(cfg)?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            timeout * 2,
            client.get_connection_manager_with_config(manager_cfg),
        )
        .await
        .map_err(|_| StoreError::Timeout { op: "connect" })?
        .map_err(|source| StoreError::Redis {
            op: "connect",
            source,
        })?;
        Ok(Store {
            conn,
            keys: Keys::new(&cfg.prefix),
            timeout,
            stream_max_len: cfg.event_stream_max_len,
            processed_ttl_s: cfg.processed_ttl_s,
            fence: fence::Fence::default(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Awaits one Redis call, bounded by the Redis timeout; `op` names it in errors.
    async fn run<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout { op })?
            .map_err(|source| StoreError::Redis { op, source })
    }

    /// Runs `pipe` (a write, its replies ignored) as `op`, fenced once this manager
    /// leads ([`fence`]).
    async fn run_pipe(&self, op: &'static str, pipe: redis::Pipeline) -> Result<(), StoreError> {
        self.write(op, pipe).await
    }

    /// The hashes at `keys` (each empty when there is none), in order, read as `op` in
    /// one pipelined round trip per 200 keys.
    async fn hashes(
        &self,
        op: &'static str,
        keys: &[String],
    ) -> Result<Vec<std::collections::HashMap<String, String>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(200) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.hgetall(key);
            }
            let mut conn = self.conn.clone();
            let rows: Vec<std::collections::HashMap<String, String>> = self
                .run(op, async move { pipe.query_async(&mut conn).await })
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The hash at `key` (empty when there is none), read as `op`.
    async fn hash(
        &self,
        op: &'static str,
        key: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        let key = key.to_string();
        self.run(op, async move {
            redis::AsyncCommands::hgetall(&mut conn, key).await
        })
        .await
    }

    /// Whether Redis answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run("ping", async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// Every key matching `pattern` (SCAN, each step bounded by the Redis timeout).
    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let mut conn = self.conn.clone();
            let (next, batch): (u64, Vec<String>) = self
                .run("scan", async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
