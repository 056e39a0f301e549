//! Per-customer quota accounting in Redis: two hashes per customer,
//! `customer:<id>:reservations` (agent id → what that agent holds, `"<memory_mb>
//! <cpus_milli> <gpus>"`) and `customer:<id>:usage` (the totals, for operators), changed
//! only by the Lua scripts below so that a check and its reservation are one atomic step.
//! What to reserve, the limits and the messages are [`crate::quota`]'s.
//!
//! Amounts travel as arrays in the usage hash's field order ([`QUOTA_FIELDS`]): what one
//! agent holds is `[memory_mb, cpus_milli, gpus]`, limits and totals are `[agents,
//! memory_mb, cpus_milli, gpus]`.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::AsyncCommands;

use super::Store;
use crate::error::StoreError;

/// The usage hash's fields, in the order of the limits and totals arrays.
pub const QUOTA_FIELDS: [&str; 4] = ["agents", "memory_mb", "cpus_milli", "gpus"];

/// KEYS: usage, reservations. ARGV: agent id, memory_mb, cpus_milli, gpus, then the four
/// limits (0 = unlimited), then "1" to check or "0" to force. Replaces the agent's entry
/// and moves the totals by the difference; refuses (without writing) when a total that
/// grows would pass its limit. Returns {1} or {0, field, usage of the others, wanted,
/// limit}.
const RESERVE_LUA: &str = r#"
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
const RELEASE_LUA: &str = r#"
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
const REPLACE_LUA: &str = r#"
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

static RESERVE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE_LUA));
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE_LUA));
static REPLACE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLACE_LUA));

/// The answer to [`Store::quota_reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaReply {
    /// The agent now holds what was asked (nothing else changed when it already did).
    Granted,
    /// Nothing was written: one total would pass its limit.
    Refused(QuotaRefusal),
}

/// Which total refused a reservation, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The usage field that would pass its limit (one of [`QUOTA_FIELDS`]).
    pub field: String,
    /// What the customer's other agents hold of it.
    pub others: u64,
    /// What the agent asked for.
    pub wanted: u64,
    pub limit: u64,
}

/// A holding as the reservations hash stores it: `"<memory_mb> <cpus_milli> <gpus>"`.
fn encode_holding(holding: [u64; 3]) -> String {
    let [memory_mb, cpus_milli, gpus] = holding;
    format!("{memory_mb} {cpus_milli} {gpus}")
}

/// Reads RESERVE's answer: `{1}`, or `{0, field, others, wanted, limit}`.
fn parse_reserve_reply(reply: &[redis::Value]) -> QuotaReply {
    let number = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(n)) => *n as u64,
        _ => 0,
    };
    if number(reply.first()) == 1 {
        return QuotaReply::Granted;
    }
    let field = match reply.get(1) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => "quota".to_string(),
    };
    QuotaReply::Refused(QuotaRefusal {
        field,
        others: number(reply.get(2)),
        wanted: number(reply.get(3)),
        limit: number(reply.get(4)),
    })
}

/// The usage hash as totals in [`QUOTA_FIELDS`] order (missing or unreadable: 0).
fn totals_of(fields: &HashMap<String, String>) -> [u64; 4] {
    QUOTA_FIELDS.map(|f| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Store {
    /// The usage and reservations keys of a customer, in the scripts' KEYS order.
    fn quota_keys(&self, customer_id: &str) -> [String; 2] {
        [
            self.keys.customer_usage(customer_id),
            self.keys.customer_reservations(customer_id),
        ]
    }

    /// Atomically makes `agent_id` hold `holding` (`[memory_mb, cpus_milli, gpus]`) of
    /// `customer_id`'s quota, replacing what it held and moving the totals by the
    /// difference (so repeating it is harmless). With `check`, refuses without writing
    /// when a total that grows would pass its limit (`limits` in [`QUOTA_FIELDS`] order,
    /// 0 = unlimited); without, always grants.
    pub async fn quota_reserve(
        &self,
        customer_id: &str,
        agent_id: &str,
        holding: [u64; 3],
        limits: [u64; 4],
        check: bool,
    ) -> Result<QuotaReply, StoreError> {
        let [usage, reservations] = self.quota_keys(customer_id);
        let mut invocation = RESERVE.key(usage);
        invocation
            .key(reservations)
            .arg(agent_id)
            .arg(&holding[..])
            .arg(&limits[..])
            .arg(if check { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .run("reserve quota", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(parse_reserve_reply(&reply))
    }

    /// Atomically frees what `agent_id` held of `customer_id`'s quota (deleting both
    /// hashes when no agent is left); true when it held something.
    pub async fn quota_release(
        &self,
        customer_id: &str,
        agent_id: &str,
    ) -> Result<bool, StoreError> {
        let [usage, reservations] = self.quota_keys(customer_id);
        let mut conn = self.conn.clone();
        let held: i64 = self
            .run("release quota", async move {
                RELEASE
                    .key(usage)
                    .key(reservations)
                    .arg(agent_id)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// Atomically replaces `customer_id`'s reservations and totals with exactly
    /// `holdings` (agent id, `[memory_mb, cpus_milli, gpus]`); none deletes both hashes.
    pub async fn quota_replace(
        &self,
        customer_id: &str,
        holdings: &[(String, [u64; 3])],
    ) -> Result<(), StoreError> {
        let [usage, reservations] = self.quota_keys(customer_id);
        let mut invocation = REPLACE.key(usage);
        invocation.key(reservations);
        for (agent_id, holding) in holdings {
            invocation.arg(agent_id).arg(encode_holding(*holding));
        }
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run("rebuild quota", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// `customer_id`'s totals (`customer:<id>:usage`) in [`QUOTA_FIELDS`] order; zeros
    /// when it holds nothing.
    pub async fn quota_usage(&self, customer_id: &str) -> Result<[u64; 4], StoreError> {
        let key = self.keys.customer_usage(customer_id);
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = self
            .run("read quota", async move { conn.hgetall(key).await })
            .await?;
        Ok(totals_of(&fields))
    }

    /// Every customer with reservations (a `customer:<id>:reservations` key), each once.
    pub async fn quota_customers(&self) -> Result<Vec<String>, StoreError> {
        let keys = self
            .scan_keys(&self.keys.customer_reservations_pattern())
            .await?;
        Ok(keys
            .iter()
            .filter_map(|k| self.keys.customer_of_reservations(k).map(str::to_string))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_are_stored_as_three_numbers() {
        assert_eq!(encode_holding([512, 334, 1]), "512 334 1");
        assert_eq!(encode_holding([0, 0, 0]), "0 0 0");
    }

    #[test]
    fn a_granted_reserve_reads_as_granted() {
        assert_eq!(
            parse_reserve_reply(&[redis::Value::Int(1)]),
            QuotaReply::Granted
        );
    }

    #[test]
    fn a_refused_reserve_names_the_field_and_the_amounts() {
        let reply = [
            redis::Value::Int(0),
            redis::Value::BulkString(b"memory_mb".to_vec()),
            redis::Value::Int(768),
            redis::Value::Int(512),
            redis::Value::Int(1024),
        ];
        assert_eq!(
            parse_reserve_reply(&reply),
            QuotaReply::Refused(QuotaRefusal {
                field: "memory_mb".into(),
                others: 768,
                wanted: 512,
                limit: 1024,
            })
        );
        let simple = [
            redis::Value::Int(0),
            redis::Value::SimpleString("gpus".into()),
        ];
        match parse_reserve_reply(&simple) {
            QuotaReply::Refused(r) => assert_eq!((r.field.as_str(), r.limit), ("gpus", 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_reserve_reply_is_a_refusal() {
        assert_eq!(
            parse_reserve_reply(&[]),
            QuotaReply::Refused(QuotaRefusal {
                field: "quota".into(),
                others: 0,
                wanted: 0,
                limit: 0,
            })
        );
    }

    #[test]
    fn totals_follow_the_field_order() {
        let fields: HashMap<String, String> = [
            ("gpus", "2"),
            ("agents", "3"),
            ("memory_mb", "1536"),
            ("cpus_milli", "oops"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(totals_of(&fields), [3, 1536, 0, 2]);
        assert_eq!(totals_of(&HashMap::new()), [0; 4]);
    }
}
