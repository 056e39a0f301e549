//! Redis: the agents' records for operators (contract section 5). The one place that
//! knows the key layout and the record's field names.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::config::RedisConfig;
use crate::error::StoreError;
pub use crate::ports::Processed;
use crate::protocol::{rfc3339, AgentSpec, AgentStatus, AgentType, DesiredState, Event, Resources};
use crate::record::status::{transition, Cause};
pub use crate::record::AgentRecord;
use crate::record::PendingCommand;

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
            ("health", self.health.clone()),
            ("cpu_percent", format!("{:.2}", self.cpu_percent)),
            ("memory_bytes", self.memory_bytes.to_string()),
            ("restart_count", self.restart_count.to_string()),
            ("last_error", self.last_error.clone().unwrap_or_default()),
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
        };
        let mut record = AgentRecord::new(&get("agent_id")?, spec, desired_state);
        transition(&mut record, Cause::Restored(status));
        record.workload_id = non_empty("container_id");
        record.health = f.get("health").cloned().unwrap_or_else(|| "none".into());
        record.cpu_percent = parsed(f, "cpu_percent").unwrap_or(0.0);
        record.memory_bytes = parsed(f, "memory_bytes").unwrap_or(0);
        record.restart_count = parsed(f, "restart_count").unwrap_or(0);
        record.last_error = non_empty("last_error");
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
        Ok(record)
    }
}

/// Field `name` of a stored hash as a number; `None` when missing or not one.
fn parsed<T: std::str::FromStr>(f: &HashMap<String, String>, name: &str) -> Option<T> {
    f.get(name).and_then(|s| s.parse().ok())
}

/// Key names, all behind the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    /// `agent:<agent_id>`: the record (hash).
    pub fn agent(&self, agent_id: &str) -> String {
        format!("{}agent:{agent_id}", self.prefix)
    }
    /// `agent:<agent_id>:events`: the agent's events (stream).
    pub fn events(&self, agent_id: &str) -> String {
        format!("{}agent:{agent_id}:events", self.prefix)
    }
    /// `agents`: every agent id (set).
    pub fn agents(&self) -> String {
        format!("{}agents", self.prefix)
    }
    /// `customer:<customer_id>:agents`: one customer's agent ids (set).
    pub fn customer_agents(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:agents", self.prefix)
    }
    /// `processed:<message_id>`: events that answered an applied command (string, TTL).
    pub fn processed(&self, message_id: &str) -> String {
        format!("{}processed:{message_id}", self.prefix)
    }
    /// `gpu:allocations`: GPU mode's allocations (hash, field = device id, value = the
    /// agent id holding it).
    pub fn gpu_allocations(&self) -> String {
        format!("{}gpu:allocations", self.prefix)
    }
    /// `outbox`: events waiting for RabbitMQ, oldest first (list of event JSON).
    pub fn outbox(&self) -> String {
        format!("{}outbox", self.prefix)
    }
}

/// Claims devices for an agent only if none of them is held by another agent, and
/// releases the agent's devices it no longer needs, in one step.
/// KEYS[1]: the allocations hash. ARGV: agent id, number of devices to claim, the devices
/// to claim, then the devices to release. Returns 1 when claimed, 0 when one was taken.
const GPU_CLAIM_LUA: &str = r#"
local agent = ARGV[1]
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and holder ~= agent then return 0 end
end
for i = 3, 2 + n do
  redis.call('HSET', KEYS[1], ARGV[i], agent)
end
for i = 3 + n, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == agent then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"#;

/// Releases every device an agent holds. KEYS[1]: the allocations hash; ARGV[1]: the
/// agent id. Returns the released devices.
const GPU_RELEASE_LUA: &str = r#"
local released = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(released, all[i])
  end
end
return released
"#;

static GPU_CLAIM: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GPU_CLAIM_LUA));
static GPU_RELEASE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GPU_RELEASE_LUA));

/// The agents' state in Redis. Cheap to clone (one shared multiplexed connection).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
    stream_max_len: u64,
    processed_ttl_s: u64,
}

impl Store {
    /// Connects (bounded by the configured timeout).
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|source| StoreError::Redis { op: "open", source })?;
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
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

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

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run("ping", async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
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
        let mut conn = self.conn.clone();
        self.run(
            "save",
            async move { pipe.query_async::<()>(&mut conn).await },
        )
        .await
    }

    /// Removes every key of the agent (record, stream, set memberships) and records the
    /// processed marker, atomically.
    pub async fn delete(
        &self,
        record: &AgentRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
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
        let mut conn = self.conn.clone();
        self.run(
            "delete",
            async move { pipe.query_async::<()>(&mut conn).await },
        )
        .await
    }

    fn push_event(&self, pipe: &mut redis::Pipeline, event: &Event) {
        let json = String::from_utf8(event.to_json()).unwrap_or_default();
        pipe.cmd("XADD")
            .arg(self.keys.events(&event.agent_id))
            .arg("MAXLEN")
            .arg(self.stream_max_len)
            .arg("*")
            .arg("event")
            .arg(event.routing_key())
            .arg("event_id")
            .arg(&event.event_id)
            .arg("data")
            .arg(json)
            .ignore();
    }

    fn push_processed(&self, pipe: &mut redis::Pipeline, processed: Option<Processed<'_>>) {
        if let Some(p) = processed {
            let answer = serde_json::to_string(p.answer).unwrap_or_else(|_| "[]".into());
            pipe.cmd("SET")
                .arg(self.keys.processed(p.message_id))
                .arg(answer)
                .arg("EX")
                .arg(self.processed_ttl_s)
                .ignore();
        }
    }

    /// Records that a command was applied (for commands that leave no agent behind).
    pub async fn save_processed(&self, processed: Processed<'_>) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        self.push_processed(&mut pipe, Some(processed));
        let mut conn = self.conn.clone();
        self.run("set processed", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Appends events to their agents' streams (health reports, no record change).
    pub async fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for event in events {
            self.push_event(&mut pipe, event);
        }
        let mut conn = self.conn.clone();
        self.run(
            "xadd",
            async move { pipe.query_async::<()>(&mut conn).await },
        )
        .await
    }

    /// The events that answered `message_id`, if that command was already applied.
    pub async fn processed(&self, message_id: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let key = self.keys.processed(message_id);
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .run("get processed", async move { conn.get(key).await })
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// GPU mode: every allocated device and the agent holding it.
    pub async fn gpu_allocations(&self) -> Result<HashMap<String, String>, StoreError> {
        let key = self.keys.gpu_allocations();
        let mut conn = self.conn.clone();
        self.run(
            "hgetall gpu allocations",
            async move { conn.hgetall(key).await },
        )
        .await
    }

    /// GPU mode: atomically gives `claim` to `agent_id` (unless another agent holds one
    /// of them: then nothing changes and the answer is false) and releases the agent's
    /// devices listed in `release`.
    pub async fn gpu_claim(
        &self,
        agent_id: &str,
        claim: &[String],
        release: &[String],
    ) -> Result<bool, StoreError> {
        let key = self.keys.gpu_allocations();
        let mut conn = self.conn.clone();
        let claimed: i64 = self
            .run("claim gpus", async move {
                GPU_CLAIM
                    .key(key)
                    .arg(agent_id)
                    .arg(claim.len())
                    .arg(claim)
                    .arg(release)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(claimed == 1)
    }

    /// GPU mode: atomically releases every device `agent_id` holds; returns them.
    pub async fn gpu_release(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.keys.gpu_allocations();
        let mut conn = self.conn.clone();
        self.run("release gpus", async move {
            GPU_RELEASE
                .key(key)
                .arg(agent_id)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// GPU mode: replaces every allocation with `holdings` (device, agent) in one
    /// transaction; used at start to make Redis match the containers.
    pub async fn gpu_reset(&self, holdings: &[(String, String)]) -> Result<(), StoreError> {
        let key = self.keys.gpu_allocations();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&key).ignore();
        if !holdings.is_empty() {
            pipe.hset_multiple(&key, holdings).ignore();
        }
        let mut conn = self.conn.clone();
        self.run("reset gpu allocations", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Appends events to the outbox (RabbitMQ is away).
    pub async fn outbox_push(&self, events: &[Event]) -> Result<(), StoreError> {
        let key = self.keys.outbox();
        let items: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.to_json()).unwrap_or_default())
            .collect();
        let mut conn = self.conn.clone();
        self.run("rpush outbox", async move {
            conn.rpush::<_, _, ()>(key, items).await
        })
        .await
    }

    /// The oldest `max` entries of the outbox: how many were read, and the events among
    /// them (an unreadable entry is dropped with an error log).
    pub async fn outbox_peek(&self, max: isize) -> Result<(usize, Vec<Event>), StoreError> {
        let key = self.keys.outbox();
        let mut conn = self.conn.clone();
        let raw: Vec<String> = self
            .run("lrange outbox", async move {
                conn.lrange(key, 0, max - 1).await
            })
            .await?;
        let events = raw
            .iter()
            .filter_map(|s| match serde_json::from_str(s) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::error!(error = %err, "dropping an unreadable outbox entry");
                    None
                }
            })
            .collect();
        Ok((raw.len(), events))
    }

    /// Drops the oldest `n` events of the outbox (published); returns how many remain.
    pub async fn outbox_pop(&self, n: usize) -> Result<usize, StoreError> {
        let key = self.keys.outbox();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("LTRIM").arg(&key).arg(n).arg(-1).ignore();
        pipe.cmd("LLEN").arg(&key);
        let mut conn = self.conn.clone();
        let (left,): (usize,) = self
            .run(
                "ltrim outbox",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
        Ok(left)
    }

    pub async fn outbox_len(&self) -> Result<usize, StoreError> {
        let key = self.keys.outbox();
        let mut conn = self.conn.clone();
        self.run("llen outbox", async move { conn.llen(key).await })
            .await
    }

    pub async fn load(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let key = self.keys.agent(agent_id);
        let mut conn = self.conn.clone();
        let k2 = key.clone();
        let fields: HashMap<String, String> = self
            .run("hgetall", async move { conn.hgetall(k2).await })
            .await?;
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
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hgetall(self.keys.agent(id));
            }
            let mut conn = self.conn.clone();
            let rows: Vec<HashMap<String, String>> = self
                .run(
                    "hgetall many",
                    async move { pipe.query_async(&mut conn).await },
                )
                .await?;
            out.extend(
                chunk
                    .iter()
                    .cloned()
                    .zip(rows)
                    .filter(|(_, fields)| !fields.is_empty()),
            );
        }
        Ok(out)
    }

    /// The last `count` entries of the agent's event stream, oldest first.
    pub async fn last_events(
        &self,
        agent_id: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let key = self.keys.events(agent_id);
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = self
            .run("xrevrange", async move {
                conn.xrevrange_count(key, "+", "-", count).await
            })
            .await?;
        let mut entries: Vec<StreamEntry> = reply.ids.into_iter().map(StreamEntry::from).collect();
        entries.reverse();
        Ok(entries)
    }

    /// Entries of the agent's event stream after stream id `after` ("0" for all),
    /// waiting up to `block` (XREAD BLOCK) when there are none yet. `block` is capped
    /// at half the Redis timeout so that the call itself stays bounded; an empty answer
    /// means "nothing new yet". Blocks this store's connection meanwhile: for tools,
    /// not for the daemon.
    pub async fn events_after(
        &self,
        agent_id: &str,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let block_ms = block.min(self.timeout / 2).as_millis().max(1);
        let opts = redis::streams::StreamReadOptions::default()
            .block(usize::try_from(block_ms).unwrap_or(1))
            .count(count.max(1));
        let key = self.keys.events(agent_id);
        let after = after.to_string();
        let mut conn = self.conn.clone();
        let reply: Option<redis::streams::StreamReadReply> = self
            .run("xread", async move {
                conn.xread_options(&[key], &[after], &opts).await
            })
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(StreamEntry::from)
            .collect())
    }
}

/// One entry of an agent's event stream (`agent:<id>:events`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The stream id (`<ms>-<seq>`), for reading on after it.
    pub id: String,
    /// Field `event`: the routing key.
    pub event: String,
    /// Field `event_id`.
    pub event_id: String,
    /// Field `data`: the event as published (JSON).
    pub data: String,
}

impl From<redis::streams::StreamId> for StreamEntry {
    fn from(s: redis::streams::StreamId) -> Self {
        let field = |name: &str| -> String {
            s.map
                .get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        };
        StreamEntry {
            event: field("event"),
            event_id: field("event_id"),
            data: field("data"),
            id: s.id.clone(),
        }
    }
}

/// A stored record as a JSON object for scripts: every field as stored, with the
/// JSON-valued fields (`config`, `autogen_config`, `resources`) decoded and the numeric
/// ones (`cpu_percent`, `memory_bytes`, `restart_count`) as numbers. A value that does
/// not decode stays a string.
pub fn record_json(fields: &HashMap<String, String>) -> serde_json::Value {
    use serde_json::Value;
    let map = fields
        .iter()
        .map(|(name, raw)| {
            let decoded = match name.as_str() {
                "config" | "autogen_config" | "resources" => serde_json::from_str(raw).ok(),
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

/// Keys of the per-customer quota accounting ([`crate::quota`]).
impl Keys {
    /// `customer:<customer_id>:usage`: the customer's totals (hash: `agents`,
    /// `memory_mb`, `cpus_milli`, `gpus`).
    pub fn customer_usage(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:usage", self.prefix)
    }
    /// `customer:<customer_id>:reservations`: what each agent of the customer holds
    /// (hash: agent id → `"<memory_mb> <cpus_milli> <gpus>"`).
    pub fn customer_reservations(&self, customer_id: &str) -> String {
        format!("{}customer:{customer_id}:reservations", self.prefix)
    }
    /// A SCAN pattern matching every `customer:*:reservations` key of this prefix.
    pub fn customer_reservations_pattern(&self) -> String {
        let escaped: String = self
            .prefix
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\');
                escape.then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect();
        format!("{escaped}customer:*:reservations")
    }
    /// The customer id of a `customer:<customer_id>:reservations` key.
    pub fn customer_of_reservations<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)?
            .strip_prefix("customer:")?
            .strip_suffix(":reservations")
    }
}

/// Scripts and scans for modules whose updates must be atomic across agents (quotas).
impl Store {
    /// Runs a Lua script atomically, bounded by the Redis timeout.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        self.run(op, async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Every key matching `pattern` (SCAN, each step bounded by the Redis timeout).
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
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
        r.generation = 7;
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
        assert_eq!(back.pending, r.pending);
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
            "health",
            "cpu_percent",
            "memory_bytes",
            "restart_count",
            "last_error",
            "created_at",
            "updated_at",
            "last_health_at",
        ] {
            assert!(names.contains(&f), "{f}");
        }
    }

    #[test]
    fn keys_carry_the_prefix() {
        let k = Keys::new("t1:");
        assert_eq!(k.agent("a"), "t1:agent:a");
        assert_eq!(k.events("a"), "t1:agent:a:events");
        assert_eq!(k.agents(), "t1:agents");
        assert_eq!(k.customer_agents("c"), "t1:customer:c:agents");
        assert_eq!(k.gpu_allocations(), "t1:gpu:allocations");
        assert_eq!(Keys::new("").agent("a"), "agent:a");
        assert_eq!(k.customer_usage("c"), "t1:customer:c:usage");
        assert_eq!(k.customer_reservations("c"), "t1:customer:c:reservations");
        assert_eq!(
            k.customer_of_reservations("t1:customer:a:b:reservations"),
            Some("a:b")
        );
        assert_eq!(
            Keys::new("p*[x]:").customer_reservations_pattern(),
            "p\\*\\[x\\]:customer:*:reservations"
        );
    }
}
