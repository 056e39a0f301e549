//! Redis ACL users (`ACL SETUSER`, `ACL DELUSER`, `ACL LIST`) on the manager's own
//! connection: the agents' own Redis users (contract section 7). What the rules say is
//! [`crate::credentials`]'s; which users are whose is [`crate::identity`]'s.

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

    /// Every user with its rules, one line each (`user <name> on #<hash> ~… +@…`).
    pub async fn acl_list(&self) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("LIST");
        let mut conn = self.conn.clone();
        self.run("acl list", async move {
            cmd.query_async::<Vec<String>>(&mut conn).await
        })
        .await
    }
}
