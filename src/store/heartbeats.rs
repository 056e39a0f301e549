//! Reading the agents' heartbeats (`agent:<id>:data:heartbeat`, written by the agents
//! themselves): every agent's in one pipelined round trip, whatever their number, plus
//! the server's `run_id`, so the reader can tell a Redis that restarted (and lost every
//! key) from agents that stopped writing.

use redis::Value;

use super::Store;
use crate::error::StoreError;
/// What one read gives ([`crate::ports::RecordStore::heartbeats`]).
pub use crate::ports::HeartbeatBatch;

/// Keys per `MGET` in the one pipeline: bounds each command's reply, not the round trips.
const MGET_CHUNK: usize = 500;

impl Store {
    /// The heartbeat of each of `agent_ids`: one pipeline (`INFO server` and one `MGET`
    /// per [`MGET_CHUNK`] keys), one round trip, bounded by the Redis timeout.
    pub async fn heartbeats(&self, agent_ids: &[String]) -> Result<HeartbeatBatch, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server");
        for chunk in agent_ids.chunks(MGET_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.heartbeat(id)).collect();
            pipe.cmd("MGET").arg(keys);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = self
            .run("read heartbeats", async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        let bad = |source: redis::ParsingError| StoreError::Redis {
            op: "read heartbeats",
            source: source.into(),
        };
        let mut replies = replies.into_iter();
        let info: String = match replies.next() {
            Some(v) => redis::from_redis_value(v).map_err(bad)?,
            None => String::new(),
        };
        let mut values = Vec::with_capacity(agent_ids.len());
        for reply in replies {
            let chunk: Vec<Option<String>> = redis::from_redis_value(reply).map_err(bad)?;
            values.extend(chunk);
        }
        // A short reply would misalign ids and values: pad as "no key".
        values.resize(agent_ids.len(), None);
        Ok(HeartbeatBatch {
            server_run_id: run_id_of(&info).unwrap_or_default().to_string(),
            values,
        })
    }
}

/// `run_id` from the text of `INFO server`.
fn run_id_of(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:2f5e0c1d\r\ntcp_port:6379\r\n";
        assert_eq!(run_id_of(info), Some("2f5e0c1d"));
        assert_eq!(run_id_of("# Server\r\n"), None);
    }
}
