//! Redis ACL users (`ACL SETUSER`, `ACL DELUSER`, `ACL USERS`, `ACL GETUSER`) on the
//! manager's own connection: the agents' own Redis users (contract section 7). What the
//! rules say is [`crate::credentials`]'s; which users are whose is [`crate::identity`]'s.
//!
//! No `ACL LIST`: Redis describes every user's rules for it, and the first description
//! after a user's rules were set is dear (here 0.2 to 0.5 ms a user on an idle machine):
//! after a thousand agents were made, one `ACL LIST` held Redis for 1.65 s, every other
//! client waiting, the leader's lease renewals too. `ACL USERS` (names only, 3 ms for a
//! thousand) and `ACL GETUSER` of the few users a name does not explain, a few at a
//! time, hold it for milliseconds.

use super::Store;
use crate::error::StoreError;

impl Store {
    /// Makes user `user`, or replaces every rule it had, with `rules` (applied by Redis
    /// all at once or not at all).
    pub async fn acl_setuser(&self, user: &str, rules: &[String]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(user).arg(rules);
        let mut conn = self.conn.clone();
        self.run("acl setuser", async move {
            cmd.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Removes user `user` (Redis closes its connections); a missing user is fine.
    pub async fn acl_deluser(&self, user: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DELUSER").arg(user);
        let mut conn = self.conn.clone();
        self.run("acl deluser", async move {
            cmd.query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// Removes every user of `users` in one command (Redis closes their connections);
    /// missing users are fine.
    pub async fn acl_deluser_many(&self, users: &[String]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DELUSER").arg(users);
        let mut conn = self.conn.clone();
        self.run("acl deluser", async move {
            cmd.query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// Every user's name.
    pub async fn acl_users(&self) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("USERS");
        let mut conn = self.conn.clone();
        self.run("acl users", async move {
            cmd.query_async::<Vec<String>>(&mut conn).await
        })
        .await
    }

    /// The key patterns of each of `users` (`ACL GETUSER`'s `keys`, e.g.
    /// `%R~p:agent:a1 ~p:agent:a1:data:*`), in order; `None` for a user that is gone.
    /// [`GETUSER_BATCH`] users a round trip, so Redis serves other clients in between.
    pub async fn acl_key_patterns(
        &self,
        users: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(GETUSER_BATCH) {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.cmd("ACL").arg("GETUSER").arg(user);
            }
            let mut conn = self.conn.clone();
            let replies: Vec<redis::Value> = self
                .run(
                    "acl getuser",
                    async move { pipe.query_async(&mut conn).await },
                )
                .await?;
            out.extend(replies.iter().map(key_patterns));
        }
        Ok(out)
    }
}

/// Users described a round trip by [`Store::acl_key_patterns`].
const GETUSER_BATCH: usize = 32;

/// The `keys` field of one `ACL GETUSER` reply (a flat list of field and value in RESP2,
/// a map in RESP3); `None` when the user does not exist.
fn key_patterns(reply: &redis::Value) -> Option<String> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    let keys = pairs
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some("keys"))
        .map(|(_, v)| v)?;
    match keys {
        // Redis 6 lists the patterns one by one.
        Value::Array(patterns) => Some(
            patterns
                .iter()
                .filter_map(text)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => text(other).or_else(|| Some(String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_key_patterns_of_a_getuser_reply() {
        let reply = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk("ab")]),
            bulk("commands"),
            bulk("+@all -@dangerous"),
            bulk("keys"),
            bulk("%R~p:agent:a1 ~p:agent:a1:data:*"),
            bulk("channels"),
            bulk("&p:agent:a1:*"),
        ]);
        assert_eq!(
            key_patterns(&reply).as_deref(),
            Some("%R~p:agent:a1 ~p:agent:a1:data:*")
        );
        let redis6 = Value::Array(vec![
            bulk("keys"),
            Value::Array(vec![bulk("%R~p:agent:a1"), bulk("~x")]),
        ]);
        assert_eq!(key_patterns(&redis6).as_deref(), Some("%R~p:agent:a1 ~x"));
        assert_eq!(key_patterns(&Value::Nil), None);
    }
}
