//! The halts in Redis (contract section 10): the `halt:<halt_id>` hash (`halt_id`,
//! `customer_id`, `scope` JSON, `reason`, `requested_by`, `engaged_at`, `agent_ids`
//! JSON; also `automatic`), its membership of `halts`, and the `halts:events` stream:
//! every engage, release and automatic halt, trimmed at the earliest beyond
//! [`HALT_EVENTS_KEPT`] entries. A save or delete also writes the command's processed
//! marker and its stream entry in the same transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use super::processed::Processed;
use super::Store;
use crate::error::StoreError;
use crate::protocol::rfc3339;
use crate::record::halt::{HaltEntry, HaltRecord};

/// Entries `halts:events` keeps at least (section 10: never trimmed below 10,000).
pub const HALT_EVENTS_KEPT: usize = 10_000;

impl HaltRecord {
    /// The hash fields of `halt:<halt_id>`.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("halt_id", self.halt_id.clone()),
            ("customer_id", self.customer_id.clone()),
            ("scope", self.scope.to_json().to_string()),
            ("reason", self.reason.clone()),
            ("requested_by", self.requested_by.clone()),
            ("engaged_at", rfc3339(self.engaged_at)),
            (
                "agent_ids",
                serde_json::to_string(&self.agent_ids).unwrap_or_else(|_| "[]".into()),
            ),
            ("automatic", self.automatic.to_string()),
        ]
    }

    /// Reads a halt back from its hash fields.
    pub fn from_fields(key: &str, f: &HashMap<String, String>) -> Result<Self, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt {
            key: key.to_string(),
            message,
        };
        let get = |name: &str| {
            f.get(name)
                .cloned()
                .ok_or_else(|| corrupt(format!("field '{name}' is missing")))
        };
        let scope = crate::protocol::halt_scope_from_json(
            &serde_json::from_str(&get("scope")?)
                .map_err(|e| corrupt(format!("field 'scope': {e}")))?,
        )
        .map_err(|e| corrupt(format!("field 'scope': {e}")))?;
        let agent_ids = serde_json::from_str(&get("agent_ids")?)
            .map_err(|e| corrupt(format!("field 'agent_ids': {e}")))?;
        let engaged_at = DateTime::parse_from_rfc3339(&get("engaged_at")?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(format!("field 'engaged_at': {e}")))?;
        Ok(HaltRecord {
            halt_id: get("halt_id")?,
            customer_id: get("customer_id")?,
            scope,
            reason: get("reason")?,
            requested_by: get("requested_by")?,
            engaged_at,
            agent_ids,
            automatic: f.get("automatic").is_some_and(|a| a == "true"),
        })
    }
}

impl Store {
    /// Writes the halt, its membership of `halts`, its `halts:events` entry (when given)
    /// and the processed marker (when given): one atomic transaction.
    pub async fn save_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let key = k.halt(&halt.halt_id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&key).ignore();
        pipe.hset_multiple(&key, &halt.to_fields()).ignore();
        pipe.sadd(k.halts(), &halt.halt_id).ignore();
        if let Some(entry) = entry {
            self.push_halt_entry(&mut pipe, &entry);
        }
        self.push_processed(&mut pipe, processed);
        self.run_pipe("save halt", pipe).await
    }

    /// Removes the halt and its membership of `halts`, with its `halts:events` entry and
    /// the processed marker, atomically.
    pub async fn delete_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(k.halt(&halt.halt_id)).ignore();
        pipe.srem(k.halts(), &halt.halt_id).ignore();
        if let Some(entry) = entry {
            self.push_halt_entry(&mut pipe, &entry);
        }
        self.push_processed(&mut pipe, processed);
        self.run_pipe("delete halt", pipe).await
    }

    /// Every engaged halt Redis knows, by id; a corrupt one is skipped with a warning.
    pub async fn load_halts(&self) -> Result<Vec<HaltRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let set = self.keys.halts();
        let mut ids: Vec<String> = self
            .run("smembers halts", async move { conn.smembers(set).await })
            .await?;
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.keys.halt(id)).collect();
        let rows = self.hashes("hgetall halts", &keys).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (key, fields) in keys.iter().zip(rows) {
            if fields.is_empty() {
                continue;
            }
            match HaltRecord::from_fields(key, &fields) {
                Ok(h) => out.push(h),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "skipping a halt record that does not read")
                }
            }
        }
        Ok(out)
    }

    /// Halt `halt_id` as Redis keeps it; `None` when it is not engaged.
    pub async fn load_halt(&self, halt_id: &str) -> Result<Option<HaltRecord>, StoreError> {
        let key = self.keys.halt(halt_id);
        let fields = self.hash("hgetall halt", &key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        HaltRecord::from_fields(&key, &fields).map(Some)
    }

    /// Up to `count` entries of `halts:events` older than the entry `before` (all when
    /// `None`), newest first, as JSON objects (`id`, `kind`, `halt_id`, `customer_id`,
    /// `requested_by`, `reason`, `at`, `halt`): fewer than `count` means the stream
    /// ends there. Pass the last entry's `id` to read on.
    pub async fn halt_events(
        &self,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = self
            .stream_before(&self.keys.halt_events(), before, count)
            .await?;
        Ok(rows
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> String {
                    entry
                        .map
                        .get(name)
                        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                        .unwrap_or_default()
                };
                serde_json::json!({
                    "id": entry.id,
                    "kind": field("kind"),
                    "halt_id": field("halt_id"),
                    "customer_id": field("customer_id"),
                    "requested_by": field("requested_by"),
                    "reason": field("reason"),
                    "at": field("at"),
                    "halt": serde_json::from_str::<serde_json::Value>(&field("halt")).unwrap_or_default(),
                })
            })
            .collect())
    }

    fn push_halt_entry(&self, pipe: &mut redis::Pipeline, entry: &HaltEntry<'_>) {
        pipe.cmd("XADD")
            .arg(self.keys.halt_events())
            .arg("MAXLEN")
            .arg("~")
            .arg(HALT_EVENTS_KEPT)
            .arg("*")
            .arg("kind")
            .arg(entry.kind.as_str())
            .arg("halt_id")
            .arg(&entry.halt.halt_id)
            .arg("customer_id")
            .arg(&entry.halt.customer_id)
            .arg("requested_by")
            .arg(entry.requested_by)
            .arg("reason")
            .arg(entry.reason)
            .arg("at")
            .arg(rfc3339(Utc::now()))
            .arg("halt")
            .arg(entry.halt.to_json().to_string())
            .ignore();
    }
}
