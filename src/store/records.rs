//! The agent's record in Redis (contract section 5): the `agent:<agent_id>` hash, its
//! memberships of `agents` and `customer:<customer_id>:agents`, and the mapping between
//! [`AgentRecord`] and the hash's fields ([`AgentRecord::to_fields`],
//! [`AgentRecord::from_fields`]); [`record_json`] shows a stored hash to scripts.
//! A save or delete also writes the agent's events and the command's processed marker in
//! the same transaction ([`super::streams`], [`super::processed`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use super::processed::Processed;
use super::Store;
use crate::error::StoreError;
use crate::protocol::{rfc3339, AgentSpec, AgentStatus, AgentType, DesiredState, Event, Resources};
use crate::record::status::{transition, Cause};
use crate::record::{AgentRecord, PendingCommand};

impl AgentRecord {
    /// The hash fields of `agent:<agent_id>`.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let json = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
        vec![
            ("agent_id", self.agent_id.clone()),
            ("customer_id", self.spec.customer_id.clone()),
            ("agent_type", self.spec.agent_type.as_str().into()),
            ("name", self.spec.name.clone()),
            ("status", self.status().as_str().into()),
            ("desired_state", self.desired_state.as_str().into()),
            ("container_id", self.workload_id.clone().unwrap_or_default()),
            ("image", self.spec.image.clone()),
            ("config", json(&self.spec.config)),
            ("autogen_config", json(&self.spec.autogen_config)),
            (
                "resources",
                serde_json::to_string(&self.spec.resources).unwrap_or_else(|_| "{}".into()),
            ),
            (
                "egress",
                serde_json::to_string(&self.spec.egress).unwrap_or_else(|_| "[]".into()),
            ),
            ("health", self.health.clone()),
            ("cpu_percent", format!("{:.2}", self.cpu_percent)),
            ("memory_bytes", self.memory_bytes.to_string()),
            ("restart_count", self.restart_count.to_string()),
            ("last_error", self.last_error.clone().unwrap_or_default()),
            ("stopped_by", self.stopped_by.clone().unwrap_or_default()),
            ("stop_reason", self.stop_reason.clone().unwrap_or_default()),
            (
                "last_logs",
                serde_json::to_string(&self.last_logs).unwrap_or_else(|_| "[]".into()),
            ),
            (
                "pending_command",
                self.pending
                    .as_ref()
                    .map(|p| p.command.clone())
                    .unwrap_or_default(),
            ),
            (
                "pending_message_id",
                self.pending
                    .as_ref()
                    .map(|p| p.message_id.clone())
                    .unwrap_or_default(),
            ),
            ("generation", self.generation.to_string()),
            ("created_at", rfc3339(self.created_at)),
            ("updated_at", rfc3339(self.updated_at)),
            (
                "last_health_at",
                self.last_health_at.map(rfc3339).unwrap_or_default(),
            ),
            (
                "last_heartbeat_at",
                self.last_heartbeat_at.map(rfc3339).unwrap_or_default(),
            ),
            ("node", self.node.clone().unwrap_or_default()),
            (
                "halt_ids",
                serde_json::to_string(&self.halt_ids).unwrap_or_else(|_| "[]".into()),
            ),
            ("halted_by", self.halted_by.clone().unwrap_or_default()),
            ("halt_reason", self.halt_reason.clone().unwrap_or_default()),
            ("halted_at", self.halted_at.map(rfc3339).unwrap_or_default()),
        ]
    }

    /// Reads a record back from its hash fields.
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
        let json = |name: &str| -> Result<serde_json::Value, StoreError> {
            serde_json::from_str(&get(name)?).map_err(|e| corrupt(format!("field '{name}': {e}")))
        };
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            let raw = f.get(name).cloned().unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| corrupt(format!("field '{name}': {e}")))
        };
        let resources: Resources = serde_json::from_str(&get("resources")?)
            .map_err(|e| corrupt(format!("field 'resources': {e}")))?;
        let agent_type = AgentType::parse(&get("agent_type")?)
            .ok_or_else(|| corrupt("field 'agent_type' is unknown".into()))?;
        let status = AgentStatus::parse(&get("status")?)
            .ok_or_else(|| corrupt("field 'status' is unknown".into()))?;
        let desired_state = DesiredState::parse(&get("desired_state")?)
            .ok_or_else(|| corrupt("field 'desired_state' is unknown".into()))?;
        let non_empty = |name: &str| f.get(name).filter(|s| !s.is_empty()).cloned();
        let spec = AgentSpec {
            customer_id: get("customer_id")?,
            agent_type,
            name: get("name")?,
            config: json("config")?,
            autogen_config: json("autogen_config")?,
            resources,
            image: get("image")?,
            // Records from before egress lists have none.
            egress: match f.get("egress").filter(|s| !s.is_empty()) {
                None => Vec::new(),
                Some(raw) => serde_json::from_str(raw)
                    .map_err(|e| corrupt(format!("field 'egress': {e}")))?,
            },
        };
        let mut record = AgentRecord::new(&get("agent_id")?, spec, desired_state);
        transition(&mut record, Cause::Restored(status));
        record.workload_id = non_empty("container_id");
        record.health = f.get("health").cloned().unwrap_or_else(|| "none".into());
        record.cpu_percent = parsed(f, "cpu_percent").unwrap_or(0.0);
        record.memory_bytes = parsed(f, "memory_bytes").unwrap_or(0);
        record.restart_count = parsed(f, "restart_count").unwrap_or(0);
        record.last_error = non_empty("last_error");
        record.stopped_by = non_empty("stopped_by");
        record.stop_reason = non_empty("stop_reason");
        record.last_logs = f
            .get("last_logs")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        record.pending = non_empty("pending_message_id").map(|message_id| PendingCommand {
            command: f.get("pending_command").cloned().unwrap_or_default(),
            message_id,
        });
        record.generation = parsed(f, "generation").unwrap_or(0);
        if let Some(at) = time("created_at")? {
            record.created_at = at;
        }
        if let Some(at) = time("updated_at")? {
            record.updated_at = at;
        }
        record.last_health_at = time("last_health_at")?;
        record.last_heartbeat_at = time("last_heartbeat_at")?;
        record.node = non_empty("node");
        record.halt_ids = f
            .get("halt_ids")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        record.halted_by = non_empty("halted_by");
        record.halt_reason = non_empty("halt_reason");
        record.halted_at = time("halted_at")?;
        Ok(record)
    }
}

/// Field `name` of a stored hash as a number; `None` when missing or not one.
fn parsed<T: std::str::FromStr>(f: &HashMap<String, String>, name: &str) -> Option<T> {
    f.get(name).and_then(|s| s.parse().ok())
}

impl Store {
    /// The `resources` of each of `agent_ids`' records (one pipelined read), in order;
    /// `None` where there is no record or it does not read.
    pub async fn resources_of(
        &self,
        agent_ids: &[String],
    ) -> Result<Vec<Option<Resources>>, StoreError> {
        if agent_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in agent_ids {
            pipe.hget(self.keys.agent(id), "resources");
        }
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = self
            .run("hget resources", async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(raw
            .into_iter()
            .map(|r| r.and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }

    /// Writes the record, its set memberships, `events` to its stream and, when given,
    /// the processed marker: one atomic transaction.
    pub async fn save(
        &self,
        record: &AgentRecord,
        events: &[Event],
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hset_multiple(k.agent(&record.agent_id), &record.to_fields())
            .ignore();
        pipe.sadd(k.agents(), &record.agent_id).ignore();
        pipe.sadd(
            k.customer_agents(&record.spec.customer_id),
            &record.agent_id,
        )
        .ignore();
        for event in events {
            self.push_event(&mut pipe, event);
        }
        self.push_processed(&mut pipe, processed);
        self.write("save", pipe).await
    }

    /// Removes every key of the agent: first what the agent wrote itself
    /// (`agent:<id>:data:*`, found by SCAN: its workload and users are gone by now, so
    /// nothing writes more), then, atomically, its record, stream and set memberships
    /// with the processed marker. Contract section 5: after `agent.delete` the agent's
    /// keys are gone, and a new agent of the same id finds none of the old one's data.
    pub async fn delete(
        &self,
        record: &AgentRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let data = self
            .scan_keys(&k.agent_data_pattern(&record.agent_id))
            .await?;
        for chunk in data.chunks(500) {
            let mut pipe = redis::pipe();
            pipe.cmd("UNLINK").arg(chunk).ignore();
            self.run_pipe("delete", pipe).await?;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(k.agent(&record.agent_id)).ignore();
        pipe.del(k.events(&record.agent_id)).ignore();
        pipe.srem(k.agents(), &record.agent_id).ignore();
        pipe.srem(
            k.customer_agents(&record.spec.customer_id),
            &record.agent_id,
        )
        .ignore();
        self.push_processed(&mut pipe, processed);
        self.run_pipe("delete", pipe).await
    }

    /// The agent's record; `None` when it has none.
    pub async fn load(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let key = self.keys.agent(agent_id);
        let fields = self.hash("hgetall", &key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        AgentRecord::from_fields(&key, &fields).map(Some)
    }

    /// Every agent record (ids from the `agents` set); corrupt ones are returned as
    /// errors beside their id so the caller can repair them.
    pub async fn load_all(
        &self,
    ) -> Result<Vec<(String, Result<AgentRecord, StoreError>)>, StoreError> {
        let ids = self.list_ids(None).await?;
        Ok(self
            .load_fields(&ids)
            .await?
            .into_iter()
            .map(|(id, fields)| {
                let record = AgentRecord::from_fields(&self.keys.agent(&id), &fields);
                (id, record)
            })
            .collect())
    }

    // ---- Reads for operators' tools (the `agent-manager agents` CLI) ----

    /// Agent ids, sorted: every agent (`agents`), or one customer's
    /// (`customer:<customer_id>:agents`).
    pub async fn list_ids(&self, customer_id: Option<&str>) -> Result<Vec<String>, StoreError> {
        let set = match customer_id {
            Some(c) => self.keys.customer_agents(c),
            None => self.keys.agents(),
        };
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = self
            .run("smembers", async move { conn.smembers(set).await })
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// The hash of each agent in `ids`, as stored (every field, including ones this
    /// build does not know), in the order given; ids whose record is gone are left out.
    pub async fn load_fields(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, HashMap<String, String>)>, StoreError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.agent(id)).collect();
        let rows = self.hashes("hgetall many", &keys).await?;
        Ok(ids
            .iter()
            .cloned()
            .zip(rows)
            .filter(|(_, fields)| !fields.is_empty())
            .collect())
    }
}

/// A stored record as a JSON object for scripts: every field as stored, with the
/// JSON-valued fields (`config`, `autogen_config`, `resources`, `egress`) decoded and the numeric
/// ones (`cpu_percent`, `memory_bytes`, `restart_count`) as numbers. A value that does
/// not decode stays a string.
pub fn record_json(fields: &HashMap<String, String>) -> serde_json::Value {
    use serde_json::Value;
    let map = fields
        .iter()
        .map(|(name, raw)| {
            let decoded = match name.as_str() {
                "config" | "autogen_config" | "resources" | "egress" => {
                    serde_json::from_str(raw).ok()
                }
                "memory_bytes" | "restart_count" => raw.parse::<u64>().ok().map(Value::from),
                "cpu_percent" => raw.parse::<f64>().ok().map(Value::from),
                _ => None,
            };
            (
                name.clone(),
                decoded.unwrap_or_else(|| Value::String(raw.clone())),
            )
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AgentRecord {
        AgentRecord::new("a1", crate::protocol::sample_spec(), DesiredState::Running)
    }

    #[test]
    fn record_round_trips_through_hash_fields() {
        let mut r = record();
        r.workload_id = Some("abc".into());
        transition(&mut r, Cause::Restored(AgentStatus::Running));
        r.last_health_at = Some(Utc::now());
        r.last_heartbeat_at = DateTime::from_timestamp_millis(1_700_000_000_123);
        r.generation = 7;
        r.stopped_by = Some("ops-alice".into());
        r.stop_reason = Some("runaway loop".into());
        r.pending = Some(PendingCommand {
            command: "agent.create".into(),
            message_id: "m-1".into(),
        });
        let fields: HashMap<String, String> = r
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let back = AgentRecord::from_fields("agent:a1", &fields).unwrap();
        assert_eq!(back.spec, r.spec);
        assert_eq!(back.status(), r.status());
        assert_eq!(back.workload_id, r.workload_id);
        assert_eq!(back.desired_state, r.desired_state);
        assert_eq!(back.generation, 7);
        assert_eq!(back.last_heartbeat_at, r.last_heartbeat_at, "ms kept");
        assert_eq!(back.pending, r.pending);
        assert_eq!(back.stopped_by, r.stopped_by);
        assert_eq!(back.stop_reason, r.stop_reason);
        // A paused agent reads back paused.
        transition(&mut r, Cause::Paused);
        let fields: HashMap<String, String> = r
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let back = AgentRecord::from_fields("agent:a1", &fields).unwrap();
        assert_eq!(back.status(), AgentStatus::Paused);
    }

    #[test]
    fn record_has_every_contract_field() {
        let names: Vec<&str> = record().to_fields().into_iter().map(|(k, _)| k).collect();
        for f in [
            "agent_id",
            "customer_id",
            "agent_type",
            "name",
            "status",
            "desired_state",
            "container_id",
            "image",
            "config",
            "autogen_config",
            "resources",
            "egress",
            "health",
            "cpu_percent",
            "memory_bytes",
            "restart_count",
            "last_error",
            "stopped_by",
            "stop_reason",
            "created_at",
            "updated_at",
            "last_health_at",
        ] {
            assert!(names.contains(&f), "{f}");
        }
    }
}
