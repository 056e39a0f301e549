//! GPU mode's allocations (`gpu:allocations`: device id → the agent holding it): reading
//! them, claiming and releasing devices atomically (Lua scripts), and resetting them at
//! start to match the containers. Which devices to ask for is [`crate::runtime::gpu`]'s.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::AsyncCommands;

use super::Store;
use crate::error::StoreError;

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

static GPU_CLAIM: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GPU_CLAIM_LUA));
static GPU_RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GPU_RELEASE_LUA));

impl Store {
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
}
