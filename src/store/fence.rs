//! Fenced writes (contract section 12): once a manager leads, every write that says what
//! happened to an agent (records, their event streams, processed-command marks, the
//! events outbox, teams and halts) carries its lease term and is refused by Redis itself
//! once the leader hash names another term. A deposed leader frozen mid-call (a
//! `SIGSTOP`, a long GC-like pause of the host) and thawed after a successor took over
//! therefore cannot overwrite what the successor wrote: its write fails with
//! [`StoreError::Fenced`], and its process exits on the deposition it then learns of.
//!
//! How: the write's pipeline is sent as one script that first compares the hash's
//! `term` with ours and then runs the pipeline's commands, atomically (a script is, as
//! MULTI/EXEC was). The commands are passed as arguments, so every pipeline of the
//! store is fenced the same way without a script per write. (Standalone Redis only, as
//! everything here: the keys are not declared to the script.)

use std::sync::LazyLock;
use std::sync::{Arc, OnceLock};

use super::Store;
use crate::error::StoreError;

/// KEYS[1]: the leader hash. ARGV[1]: our term; then, per command, its number of
/// arguments followed by them. Returns 1, or the error `FENCED <term in the hash>`.
///
/// Refused only when the hash names another real term: a wiped hash (missing, or the
/// holder-less marker with term 0) means nobody else can lead yet, and our next
/// renewal writes it back.
const FENCED_LUA: &str = r#"
local term = redis.call('HGET', KEYS[1], 'term')
if term and term ~= '0' and term ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. tostring(term))
end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"#;

static FENCED: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FENCED_LUA));

/// The term writes carry, set once when this manager starts leading; shared by every
/// clone of the [`Store`].
#[derive(Debug, Default, Clone)]
pub struct Fence(Arc<OnceLock<(String, u64)>>);

impl Fence {
    fn get(&self) -> Option<&(String, u64)> {
        self.0.get()
    }
}

/// The arguments of the fenced script for `pipe`'s commands: `term`, then each command
/// as its length and its arguments.
pub(super) fn script_args(term: u64, pipe: &redis::Pipeline) -> Vec<Vec<u8>> {
    let mut args = vec![term.to_string().into_bytes()];
    for cmd in pipe.cmd_iter() {
        let parts: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                // A cursor argument (SCAN's): none of our writes has one.
                _ => b"0".to_vec(),
            })
            .collect();
        args.push(parts.len().to_string().into_bytes());
        args.extend(parts);
    }
    args
}

impl Store {
    /// From now on, every write of [`Store::write`] carries `term` and is refused once
    /// the leader hash of `instance` names another. Set once; later calls change nothing.
    pub fn fence_with(&self, instance: &str, term: u64) {
        let _ = self.fence.0.set((self.keys.leader(instance), term));
    }

    /// The term writes carry, once set.
    pub fn fenced_term(&self) -> Option<u64> {
        self.fence.get().map(|(_, t)| *t)
    }

    /// Runs `pipe` (a write; its replies ignored) as `op`: as it is before this manager
    /// leads, fenced by its term after ([`Store::fence_with`]).
    pub(super) async fn write(
        &self,
        op: &'static str,
        pipe: redis::Pipeline,
    ) -> Result<(), StoreError> {
        let Some((key, term)) = self.fence.get().cloned() else {
            let mut conn = self.conn.clone();
            return self
                .run(op, async move { pipe.query_async::<()>(&mut conn).await })
                .await;
        };
        let mut call = FENCED.key(key);
        for arg in script_args(term, &pipe) {
            call.arg(arg);
        }
        let mut conn = self.conn.clone();
        let result: Result<i64, StoreError> = self
            .run(op, async move { call.invoke_async(&mut conn).await })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::Redis { source, .. }) if source.to_string().contains("FENCED") => {
                Err(StoreError::Fenced { op, term })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_becomes_the_term_then_each_command_with_its_length() {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hset("agent:a", "status", "running").ignore();
        pipe.sadd("agents", "a").ignore();
        let args: Vec<String> = script_args(7, &pipe)
            .into_iter()
            .map(|a| String::from_utf8(a).expect("utf-8"))
            .collect();
        assert_eq!(
            args,
            ["7", "4", "HSET", "agent:a", "status", "running", "3", "SADD", "agents", "a"]
        );
    }
}
