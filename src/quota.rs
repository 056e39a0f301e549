//! Per-customer quotas (`[quotas]` in the configuration): how many agents a customer may
//! have and how much memory, CPU and GPU they may hold between them. Every existing agent
//! counts (running or stopped) with its configured resources.
//!
//! # Consistency
//!
//! Commands for different agents of one customer run concurrently (one actor per agent),
//! so the check and the reservation must be one atomic step: each is a Lua script that
//! Redis runs atomically, over two hashes per customer (keys in [`crate::store::Keys`]):
//! `customer:<id>:reservations` (agent id → what that agent holds) and
//! `customer:<id>:usage` (the totals, for operators). A script replaces one agent's entry
//! and adjusts the totals by the difference, so repeating it is harmless (a redelivered
//! command reserves nothing twice). Only the agent's own actor changes its entry (its
//! commands run one at a time), so no two writers race on one entry. At start,
//! [`rebuild`] recomputes both hashes from the agent records, healing anything a crash
//! between a reservation and the record left behind.
//!
//! The lifecycle reaches it through [`Quotas`], its [`QuotaLedger`]: `reserve` before a
//! create or update takes effect (refused with `quota_exceeded`), `resync` after an
//! update that failed, `release` when a delete has removed the workload and on a create
//! that failed, `rebuild` at start. Each takes only the store and the limits.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use crate::config::QuotaConfig;
use crate::error::AgentError;
use crate::ports::QuotaLedger;
use crate::protocol::{AgentSpec, ErrorCode, Resources};
use crate::record::AgentRecord;
use crate::store::Store;

/// What one agent holds of its customer's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    pub memory_mb: u64,
    /// CPUs in thousandths (integers keep the totals exact).
    pub cpus_milli: u64,
    pub gpus: u64,
}

impl Holding {
    pub fn of(resources: &Resources) -> Holding {
        Holding {
            memory_mb: resources.memory_mb,
            cpus_milli: cpus_milli(resources.cpus),
            gpus: u64::from(resources.gpus),
        }
    }

    fn encode(&self) -> String {
        format!("{} {} {}", self.memory_mb, self.cpus_milli, self.gpus)
    }
}

fn cpus_milli(cpus: f64) -> u64 {
    (cpus * 1000.0).round().max(0.0) as u64
}

/// A customer's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub agents: u64,
    pub memory_mb: u64,
    pub cpus_milli: u64,
    pub gpus: u64,
}

/// The limits as the scripts take them (0 = unlimited), in the order of the usage fields.
fn limits(q: &QuotaConfig) -> [u64; 4] {
    [
        q.max_agents,
        q.max_memory_mb,
        cpus_milli(q.max_cpus),
        q.max_gpus,
    ]
}

/// The usage hash's fields, in the scripts' order.
const FIELDS: [&str; 4] = ["agents", "memory_mb", "cpus_milli", "gpus"];

/// KEYS: usage, reservations. ARGV: agent id, memory_mb, cpus_milli, gpus, then the four
/// limits (0 = unlimited), then "1" to check or "0" to force. Replaces the agent's entry
/// and moves the totals by the difference; refuses (without writing) when a total that
/// grows would pass its limit. Returns {1} or {0, field, usage of the others, wanted,
/// limit}.
const RESERVE: &str = r#"
local old = redis.call('HGET', KEYS[2], ARGV[1])
local have = {0, 0, 0, 0}
if old then
  local i = 2
  have[1] = 1
  for n in string.gmatch(old, '%d+') do
    if i <= 4 then have[i] = tonumber(n) end
    i = i + 1
  end
end
local want = {1, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local fields = {'agents', 'memory_mb', 'cpus_milli', 'gpus'}
local totals = redis.call('HMGET', KEYS[1], unpack(fields))
if ARGV[9] == '1' then
  for i = 1, 4 do
    local limit = tonumber(ARGV[4 + i])
    local others = (tonumber(totals[i]) or 0) - have[i]
    if limit > 0 and want[i] > have[i] and others + want[i] > limit then
      return {0, fields[i], others, want[i], limit}
    end
  end
end
for i = 1, 4 do
  if want[i] ~= have[i] then
    redis.call('HINCRBY', KEYS[1], fields[i], want[i] - have[i])
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return {1}
"#;

/// KEYS: usage, reservations. ARGV: agent id. Removes the agent's entry and its share of
/// the totals; deletes both hashes when no agent is left. Returns 1 when it held one.
const RELEASE: &str = r#"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
local have = {1}
for n in string.gmatch(old, '%d+') do table.insert(have, tonumber(n)) end
local fields = {'agents', 'memory_mb', 'cpus_milli', 'gpus'}
for i = 1, 4 do
  if (have[i] or 0) ~= 0 then
    redis.call('HINCRBY', KEYS[1], fields[i], -have[i])
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
"#;

/// KEYS: usage, reservations. ARGV: pairs of agent id and encoded holding. Replaces both
/// hashes with exactly these agents (none: deletes them).
const REPLACE: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2])
local totals = {0, 0, 0, 0}
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  totals[1] = totals[1] + 1
  local j = 2
  for n in string.gmatch(ARGV[i + 1], '%d+') do
    if j <= 4 then totals[j] = totals[j] + tonumber(n) end
    j = j + 1
  end
end
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], 'agents', totals[1], 'memory_mb', totals[2],
    'cpus_milli', totals[3], 'gpus', totals[4])
end
return 1
"#;

/// The quota ledger over Redis, for the agent actors ([`QuotaLedger`]).
#[derive(Clone)]
pub struct Quotas {
    store: Store,
    limits: QuotaConfig,
}

impl Quotas {
    pub fn new(store: Store, limits: QuotaConfig) -> Self {
        Quotas { store, limits }
    }
}

#[async_trait]
impl QuotaLedger for Quotas {
    async fn reserve(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), AgentError> {
        reserve(&self.store, &self.limits, agent_id, spec).await
    }

    async fn resync(&self, record: &AgentRecord) {
        resync(&self.store, &self.limits, record).await
    }

    async fn release(&self, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
        release(&self.store, agent_id, customer_id).await
    }

    async fn rebuild(&self, records: &[AgentRecord]) -> Result<(), AgentError> {
        rebuild(&self.store, records).await
    }
}

fn keys(store: &Store, customer_id: &str) -> [String; 2] {
    [
        store.keys().customer_usage(customer_id),
        store.keys().customer_reservations(customer_id),
    ]
}

async fn set(
    store: &Store,
    quotas: &QuotaConfig,
    agent_id: &str,
    customer_id: &str,
    holding: Holding,
    check: bool,
) -> Result<(), AgentError> {
    let script = redis::Script::new(RESERVE);
    let mut args = vec![
        agent_id.to_string(),
        holding.memory_mb.to_string(),
        holding.cpus_milli.to_string(),
        holding.gpus.to_string(),
    ];
    args.extend(limits(quotas).map(|l| l.to_string()));
    args.push(if check { "1" } else { "0" }.to_string());
    let reply: Vec<redis::Value> = store
        .run_script("reserve quota", &script, &keys(store, customer_id), &args)
        .await?;
    let as_u64 = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(n)) => *n as u64,
        _ => 0,
    };
    if as_u64(reply.first()) == 1 {
        return Ok(());
    }
    let field = match reply.get(1) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => "quota".to_string(),
    };
    let (others, wanted, limit) = (
        as_u64(reply.get(2)),
        as_u64(reply.get(3)),
        as_u64(reply.get(4)),
    );
    let message = match field.as_str() {
        "agents" => format!(
            "customer {customer_id} already has {others} agent(s); the quota allows {limit} (QUOTA_MAX_AGENTS)"
        ),
        "cpus_milli" => format!(
            "customer {customer_id}'s agents would hold {} CPUs; the quota allows {} (QUOTA_MAX_CPUS)",
            (others + wanted) as f64 / 1000.0,
            limit as f64 / 1000.0
        ),
        "memory_mb" => format!(
            "customer {customer_id}'s agents would hold {} MiB of memory; the quota allows {limit} (QUOTA_MAX_MEMORY_MB)",
            others + wanted
        ),
        _ => format!(
            "customer {customer_id}'s agents would hold {} {field}; the quota allows {limit} (QUOTA_MAX_GPUS)",
            others + wanted
        ),
    };
    Err(AgentError::refused(ErrorCode::QuotaExceeded, message))
}

/// Reserves `spec`'s resources for `agent_id` (replacing what it held), or refuses with
/// `quota_exceeded` and changes nothing. Shrinking is never refused.
pub async fn reserve(
    store: &Store,
    quotas: &QuotaConfig,
    agent_id: &str,
    spec: &AgentSpec,
) -> Result<(), AgentError> {
    set(
        store,
        quotas,
        agent_id,
        &spec.customer_id,
        Holding::of(&spec.resources),
        true,
    )
    .await
}

/// After a command that failed part-way: makes the agent hold exactly what its record
/// says (no check: the record is what exists). Failures are logged; the next start's
/// [`rebuild`] heals them.
pub async fn resync(store: &Store, quotas: &QuotaConfig, record: &AgentRecord) {
    let holding = Holding::of(&record.spec.resources);
    if let Err(e) = set(
        store,
        quotas,
        &record.agent_id,
        &record.spec.customer_id,
        holding,
        false,
    )
    .await
    {
        tracing::warn!(agent_id = %record.agent_id, error = %e, "could not resync the agent's quota");
    }
}

/// Frees what `agent_id` held of `customer_id`'s quota. Harmless when it held nothing.
pub async fn release(store: &Store, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
    let script = redis::Script::new(RELEASE);
    let _: i64 = store
        .run_script(
            "release quota",
            &script,
            &keys(store, customer_id),
            &[agent_id.to_string()],
        )
        .await?;
    Ok(())
}

/// Recomputes every customer's reservations and totals from `records` (at start, before
/// any command is consumed), and removes those of customers without agents.
pub async fn rebuild(store: &Store, records: &[AgentRecord]) -> Result<(), AgentError> {
    let mut by_customer: BTreeMap<&str, Vec<&AgentRecord>> = BTreeMap::new();
    for record in records {
        by_customer
            .entry(record.spec.customer_id.as_str())
            .or_default()
            .push(record);
    }
    let stale: Vec<String> = store
        .scan_keys(&store.keys().customer_reservations_pattern())
        .await?
        .iter()
        .filter_map(|k| store.keys().customer_of_reservations(k).map(str::to_string))
        .filter(|c| !by_customer.contains_key(c.as_str()))
        .collect();
    let script = redis::Script::new(REPLACE);
    for customer in &stale {
        let _: i64 = store
            .run_script("rebuild quota", &script, &keys(store, customer), &[])
            .await?;
    }
    for (customer, agents) in &by_customer {
        let args: Vec<String> = agents
            .iter()
            .flat_map(|r| [r.agent_id.clone(), Holding::of(&r.spec.resources).encode()])
            .collect();
        let _: i64 = store
            .run_script("rebuild quota", &script, &keys(store, customer), &args)
            .await?;
    }
    tracing::info!(
        customers = by_customer.len(),
        cleared = stale.len(),
        "quota usage recomputed from the agent records"
    );
    Ok(())
}

/// A customer's current totals (for operators and tests).
pub async fn usage(store: &Store, customer_id: &str) -> Result<Usage, AgentError> {
    let script = redis::Script::new("return redis.call('HGETALL', KEYS[1])");
    let [usage_key, _] = keys(store, customer_id);
    let flat: Vec<String> = store
        .run_script("read quota", &script, &[usage_key], &[])
        .await?;
    let map: HashMap<&str, u64> = flat
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.as_str(), v.parse().unwrap_or(0))),
            _ => None,
        })
        .collect();
    let get = |f: &str| map.get(f).copied().unwrap_or(0);
    Ok(Usage {
        agents: get(FIELDS[0]),
        memory_mb: get(FIELDS[1]),
        cpus_milli: get(FIELDS[2]),
        gpus: get(FIELDS[3]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_are_whole_numbers() {
        let h = Holding::of(&Resources {
            memory_mb: 512,
            cpus: 0.333_7,
            gpus: 1,
        });
        assert_eq!(h.cpus_milli, 334);
        assert_eq!(h.encode(), "512 334 1");
        let q = QuotaConfig {
            max_agents: 3,
            max_memory_mb: 0,
            max_cpus: 2.5,
            max_gpus: 0,
        };
        assert_eq!(limits(&q), [3, 0, 2500, 0]);
    }
}
