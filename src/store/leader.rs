//! The leader's lease (contract section 12): `manager:<instance>:leader`, a hash with
//! `id`, `host`, `pid`, `since`, `term` (grows with each new leader), and our own
//! `expires_ms` (the lease's end on Redis' clock) and `previous` (the leader before).
//!
//! Three scripts, each one atomic step on Redis' own clock (`TIME`), so that managers
//! whose clocks disagree still agree on when a lease ends:
//! - acquire: take the lease when nobody holds it or its holder's has ended; the term is
//!   the hash's `term` plus one (`HINCRBY`, the `INCR` of the issue: it never goes back
//!   while the hash lives);
//! - renew: extend it only for the same holder and term, and only before it ended (a
//!   leader whose lease ended must start again as a new term, never carry on);
//! - release: end it at once (a `SIGTERM` hands over without waiting for the lease).
//!
//! The hash is never expired by Redis: its `term` must outlive leaders. A `FLUSHALL`
//! loses it; the next leader starts again at term 1, and a leader of the old term is
//! refused all the same (its renewal finds no hash of its own).

use std::sync::LazyLock;

use super::Store;
use crate::error::StoreError;

/// KEYS[1]: the leader hash. ARGV: id, host, pid, since (RFC 3339), lease ms, marker
/// ms. Returns {1, term, ttl_ms} when the lease is ours (taken or already held), else
/// {0, term, remaining_ms, holder}.
///
/// A missing hash (Redis wiped, or the first manager ever) is not free at once: a
/// marker without a holder (`term` 0) is written and the lease may be taken when it
/// ends (marker ms: two renewal intervals), so a leader whose hash was wiped under it
/// renews (and writes the hash back) before any standby can take over.
const ACQUIRE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local marker = tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'id', '', 'term', 0, 'expires_ms', now + marker)
  return {0, 0, marker, ''}
end
local cur = redis.call('HMGET', KEYS[1], 'id', 'term', 'expires_ms')
local holder = cur[1]
local term = tonumber(cur[2]) or 0
local expires = tonumber(cur[3]) or 0
if expires > now then
  if holder == ARGV[1] then
    redis.call('HSET', KEYS[1], 'expires_ms', now + ttl)
    return {1, term, ttl}
  end
  return {0, term, expires - now, holder or ''}
end
term = redis.call('HINCRBY', KEYS[1], 'term', 1)
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'host', ARGV[2], 'pid', ARGV[3],
  'since', ARGV[4], 'expires_ms', now + ttl, 'previous', holder or '')
return {1, term, ttl}
"#;

/// KEYS[1]: the leader hash. ARGV: id, term, lease ms, host, pid, since. Returns 1 when
/// renewed, 0 when the lease is no longer this holder's (taken, ended or released).
/// A hash that was wiped (missing, or the holder-less marker of [`ACQUIRE_LUA`]) is
/// written back as ours: nobody can have taken the lease meanwhile, since the marker
/// keeps it for one lease.
const RENEW_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'id', 'term', 'expires_ms')
if cur[1] == false or (cur[1] == '' and cur[2] == '0') then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'term', ARGV[2], 'expires_ms', now + ttl,
    'host', ARGV[4], 'pid', ARGV[5], 'since', ARGV[6])
  return 1
end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or (tonumber(cur[3]) or 0) <= now then
  return 0
end
redis.call('HSET', KEYS[1], 'expires_ms', now + ttl)
return 1
"#;

/// KEYS[1]: the leader hash. ARGV: id, term. Ends the lease now if it is this holder's.
/// Returns 1 when it was, else 0.
const RELEASE_LUA: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'id', 'term')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires_ms', 0)
return 1
"#;

static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACQUIRE_LUA));
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW_LUA));
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE_LUA));

/// Who asks for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// This manager's id (unique per process).
    pub id: String,
    pub host: String,
    pub pid: u32,
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours, in this term, for `ttl_ms` from Redis' now.
    Leader { term: u64 },
    /// Another holds it, for `remaining_ms` more unless renewed.
    Held {
        holder: String,
        term: u64,
        remaining_ms: u64,
    },
}

impl Store {
    /// Takes the lease of `instance`'s managers for `lease_ms` if nobody holds it (or
    /// renews it if `me` already does); a missing hash is held by a marker for
    /// `marker_ms` first.
    pub async fn acquire_lease(
        &self,
        instance: &str,
        me: &Candidate,
        since: &str,
        lease_ms: u64,
        marker_ms: u64,
    ) -> Result<Acquired, StoreError> {
        let key = self.keys.leader(instance);
        let mut conn = self.conn.clone();
        let mut call = ACQUIRE.key(key);
        call.arg(&me.id)
            .arg(&me.host)
            .arg(me.pid)
            .arg(since)
            .arg(lease_ms)
            .arg(marker_ms);
        let reply: Vec<redis::Value> = self
            .run("acquire the leader lease", async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(acquired(&reply))
    }

    /// Extends `me`'s lease of `term` by `lease_ms` (writing the hash back if Redis was
    /// wiped); `false`: it is no longer ours.
    pub async fn renew_lease(
        &self,
        instance: &str,
        me: &Candidate,
        since: &str,
        term: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = self.keys.leader(instance);
        let mut conn = self.conn.clone();
        let mut call = RENEW.key(key);
        call.arg(&me.id)
            .arg(term)
            .arg(lease_ms)
            .arg(&me.host)
            .arg(me.pid)
            .arg(since);
        let renewed: i64 = self
            .run("renew the leader lease", async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Ends `me`'s lease of `term` now (a hand-over); `false`: it was not ours.
    pub async fn release_lease(
        &self,
        instance: &str,
        me: &str,
        term: u64,
    ) -> Result<bool, StoreError> {
        let key = self.keys.leader(instance);
        let mut conn = self.conn.clone();
        let mut call = RELEASE.key(key);
        call.arg(me).arg(term);
        let released: i64 = self
            .run("release the leader lease", async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(released == 1)
    }

    /// The leader hash as it stands (empty: no manager ever led, or Redis was wiped).
    pub async fn leader_record(
        &self,
        instance: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.hash("read the leader", &self.keys.leader(instance))
            .await
    }
}

/// The acquire script's reply, read.
fn acquired(reply: &[redis::Value]) -> Acquired {
    let int = |i: usize| match reply.get(i) {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    if int(0) == 1 {
        return Acquired::Leader { term: int(1) };
    }
    let holder = match reply.get(3) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    Acquired::Held {
        holder,
        term: int(1),
        remaining_ms: int(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn the_acquire_reply_is_read_either_way() {
        assert_eq!(
            acquired(&[Value::Int(1), Value::Int(7), Value::Int(2000)]),
            Acquired::Leader { term: 7 }
        );
        assert_eq!(
            acquired(&[
                Value::Int(0),
                Value::Int(7),
                Value::Int(1500),
                Value::BulkString(b"m-2".to_vec())
            ]),
            Acquired::Held {
                holder: "m-2".into(),
                term: 7,
                remaining_ms: 1500
            }
        );
        // Garbage is "held by nobody we know", never "ours".
        assert!(matches!(acquired(&[]), Acquired::Held { .. }));
    }
}
