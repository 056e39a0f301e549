//! The agents' own users (contract section 7) in both services: a RabbitMQ user through
//! the management API ([`crate::broker::management`]) and a Redis ACL user on the
//! manager's own connection ([`crate::store`]), with exactly the grants of
//! [`crate::credentials`]. [`Identities`] is the real [`CredentialIssuer`].
//!
//! Whose users are whose: a RabbitMQ user made here carries the tag
//! `autogen-instance:<MANAGER_INSTANCE>`, and a Redis user's record pattern names this
//! manager's key prefix (`%R~<REDIS_PREFIX>agent:<id>`), so reconciliation never touches
//! the users of another installation sharing the broker or Redis.

use std::collections::HashSet;

use async_trait::async_trait;

use crate::broker::management::Management;
use crate::config::Config;
use crate::credentials::{
    agent_of_user, redis_db, redis_record_pattern, redis_rules, user_name, LoginCensus, Password,
    RabbitGrants,
};
use crate::error::{CredentialError, LoginError};
use crate::metrics::events::CredentialCallTimed;
use crate::ports::CredentialIssuer;
use crate::protocol::task;
use crate::redact;
use crate::store::Store;

/// The tag on the RabbitMQ users of manager installation `instance`.
pub fn instance_tag(instance: &str) -> String {
    format!("autogen-instance:{instance}")
}

/// The agents' users of one manager installation.
#[derive(Clone)]
pub struct Identities {
    /// RabbitMQ's management API.
    management: Management,
    /// Redis, for `ACL SETUSER`/`DELUSER`/`USERS`/`GETUSER`.
    store: Store,
    /// The vhost of the agents' RabbitMQ URL: where their permissions apply.
    vhost: String,
    /// The exchange their topic permissions apply to.
    exchange: String,
    /// The Redis key prefix their key patterns start with.
    prefix: String,
    /// The database of the agents' Redis URL.
    redis_db: i64,
    /// Marks this installation's RabbitMQ users.
    tag: String,
    /// Redis users named like agents' that belong to another installation (asked once).
    foreign: std::sync::Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Identities {
    /// The users of `config`'s agents, made through `store`'s connection and the
    /// management API (`RABBITMQ_MANAGEMENT_URL`, else derived from `RABBITMQ_URL`).
    pub fn new(config: &Config, store: Store) -> Result<Identities, CredentialError> {
        let agent_mq = config.agent_rabbitmq_url();
        let uri: lapin::uri::AMQPUri = agent_mq.parse().map_err(|e| LoginError::Url {
            url: redact::url(agent_mq),
            message: format!("not an AMQP URL: {e}"),
        })?;
        let management = Management::for_config(&config.rabbitmq)?;
        Ok(Identities {
            management,
            store,
            vhost: uri.vhost,
            exchange: config.rabbitmq.exchange.clone(),
            prefix: config.redis.prefix.clone(),
            redis_db: redis_db(config.agent_redis_url()),
            tag: instance_tag(&config.instance),
            foreign: Default::default(),
        })
    }

    async fn issue_rabbitmq(
        &self,
        agent_id: &str,
        password: &Password,
    ) -> Result<(), CredentialError> {
        let user = user_name(agent_id);
        let grants = RabbitGrants::of(agent_id, &self.vhost, &self.exchange);
        // In this order: the topic permission, made last, marks a complete user (and
        // one with its inbox: a task sent right after `agent.created` waits in it).
        self.management
            .put_user(&user, &password.rabbitmq_hash()?, &self.tag)
            .await?;
        self.management.put_permissions(&user, &grants).await?;
        let inbox = task::inbox_queue(agent_id);
        self.management.put_queue(&self.vhost, &inbox).await?;
        self.management
            .bind_queue(
                &self.vhost,
                &self.exchange,
                &inbox,
                &task::task_key(agent_id),
            )
            .await?;
        self.management.put_topic_permissions(&user, &grants).await
    }

    async fn issue_redis(
        &self,
        agent_id: &str,
        password: &Password,
    ) -> Result<(), CredentialError> {
        let rules = redis_rules(
            agent_id,
            &self.prefix,
            self.redis_db,
            &password.redis_hash(),
        );
        Ok(self.store.acl_setuser(&user_name(agent_id), &rules).await?)
    }

    async fn revoke_rabbitmq(&self, agent_id: &str) -> Result<(), CredentialError> {
        let user = user_name(agent_id);
        // No new logins first, then the ones already open go, then the inbox with the
        // tasks no one will take.
        self.management.delete_user(&user).await?;
        self.management.close_connections(&user).await?;
        self.management
            .delete_queue(&self.vhost, &task::inbox_queue(agent_id))
            .await
    }

    /// The agents whose RabbitMQ users this installation made, and those of them with
    /// their topic permission (the last part made).
    async fn rabbitmq_census(&self) -> Result<(HashSet<String>, HashSet<String>), CredentialError> {
        let owned: HashSet<String> = self
            .management
            .users()
            .await?
            .into_iter()
            .filter(|u| u.has_tag(&self.tag))
            .filter_map(|u| agent_of_user(&u.name).map(str::to_string))
            .collect();
        let complete = self
            .management
            .topic_permissions(&self.vhost)
            .await?
            .into_iter()
            .filter(|p| p.exchange == self.exchange)
            .filter_map(|p| agent_of_user(&p.user).map(str::to_string))
            .filter(|id| owned.contains(id))
            .collect();
        Ok((owned, complete))
    }

    /// The agents whose Redis users this installation made: named `agent-<id>`, and
    /// either an agent whose RabbitMQ user carries this installation's tag (`mq_owned`:
    /// the two are made together) or one whose record pattern names this manager's key
    /// prefix (asked with `ACL GETUSER`, only for those; another installation's users are
    /// remembered as such and not asked again).
    async fn redis_census(
        &self,
        names: Vec<String>,
        mq_owned: &HashSet<String>,
    ) -> Result<HashSet<String>, CredentialError> {
        let named: Vec<(String, String)> = names
            .into_iter()
            .filter_map(|n| Some((agent_of_user(&n)?.to_string(), n)))
            .collect();
        let mut owned: HashSet<String> = HashSet::new();
        let mut unexplained: Vec<(String, String)> = Vec::new();
        {
            let mut foreign = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
            // Only users still listed are remembered: the cache never outgrows the list.
            let listed: HashSet<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
            foreign.retain(|name| listed.contains(name.as_str()));
            for (agent, name) in named {
                if mq_owned.contains(&agent) {
                    owned.insert(agent);
                } else if !foreign.contains(&name) {
                    unexplained.push((agent, name));
                }
            }
        }
        if unexplained.is_empty() {
            return Ok(owned);
        }
        let asked: Vec<String> = unexplained.iter().map(|(_, n)| n.clone()).collect();
        let patterns = self.store.acl_key_patterns(&asked).await?;
        let mut foreign = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        for ((agent, name), keys) in unexplained.into_iter().zip(patterns) {
            let Some(keys) = keys else { continue };
            if owns(&keys, &agent, &self.prefix) {
                owned.insert(agent);
            } else {
                foreign.insert(name);
            }
        }
        Ok(owned)
    }
}

/// Whether key patterns `keys` (as `ACL GETUSER` gives them) carry the record pattern of
/// `agent` under `prefix`.
fn owns(keys: &str, agent: &str, prefix: &str) -> bool {
    let mark = redis_record_pattern(agent, prefix);
    keys.split_whitespace().any(|w| w == mark)
}

/// Runs `op` for every agent, 16 at a time: the agents it failed for, with why.
async fn each<F, Fut>(agent_ids: &[String], op: F) -> Vec<(String, CredentialError)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), CredentialError>>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(agent_ids.iter().cloned())
        .map(|id| {
            let run = op(id.clone());
            async move { (id, run.await) }
        })
        .buffer_unordered(16)
        .filter_map(|(id, r)| async move { r.err().map(|e| (id, e)) })
        .collect()
        .await
}

/// Runs one of the issuer's operations and records how long it took
/// (`agent_manager_credential_call_duration_seconds`, both services together, by `op`:
/// what a create pays for its agent's own login).
async fn timed<T>(op: &'static str, call: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = call.await;
    crate::metrics::emit(CredentialCallTimed {
        op,
        took: started.elapsed(),
    });
    out
}

#[async_trait]
impl CredentialIssuer for Identities {
    async fn issue(&self, agent_id: &str, password: &Password) -> Result<(), CredentialError> {
        let (rabbitmq, redis) = timed("issue", async {
            tokio::join!(
                self.issue_rabbitmq(agent_id, password),
                self.issue_redis(agent_id, password)
            )
        })
        .await;
        rabbitmq.and(redis)
    }

    async fn revoke(&self, agent_id: &str) -> Result<(), CredentialError> {
        let redis =
            async { Ok::<_, CredentialError>(self.store.acl_deluser(&user_name(agent_id)).await?) };
        let (rabbitmq, redis) = timed("revoke", async {
            tokio::join!(self.revoke_rabbitmq(agent_id), redis)
        })
        .await;
        rabbitmq.and(redis)
    }

    async fn cut(&self, agent_ids: &[String]) -> Vec<(String, CredentialError)> {
        let users: Vec<String> = agent_ids.iter().map(|a| user_name(a)).collect();
        let (rabbitmq, redis) = timed("cut", async {
            tokio::join!(
                self.management.bulk_delete_users(&users),
                self.store.acl_deluser_many(&users)
            )
        })
        .await;
        let mut failed = Vec::new();
        if let Err(e) = rabbitmq {
            tracing::warn!(error = %e, agents = agent_ids.len(), "cutting RabbitMQ users at once failed; one by one");
            failed.extend(
                each(agent_ids, |id: String| async move {
                    self.management.delete_user(&user_name(&id)).await
                })
                .await,
            );
        }
        if let Err(e) = redis {
            tracing::warn!(error = %e, agents = agent_ids.len(), "cutting Redis users at once failed; one by one");
            failed.extend(
                each(agent_ids, |id: String| async move {
                    Ok(self.store.acl_deluser(&user_name(&id)).await?)
                })
                .await,
            );
        }
        failed
    }

    async fn census(&self) -> Result<LoginCensus, CredentialError> {
        let listed = timed("census", async {
            let (rabbitmq, names) = tokio::join!(self.rabbitmq_census(), self.store.acl_users());
            let (mq_owned, mq_complete) = rabbitmq?;
            let redis_owned = self.redis_census(names?, &mq_owned).await?;
            Ok::<_, CredentialError>((mq_owned, mq_complete, redis_owned))
        })
        .await;
        let (mq_owned, mq_complete, redis_owned) = listed?;
        Ok(LoginCensus {
            complete: mq_complete.intersection(&redis_owned).cloned().collect(),
            owned: mq_owned.union(&redis_owned).cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_users_are_ours_by_their_key_prefix() {
        let a1 = "%R~p:agent:a1 %R~p:agent:a1:events ~p:agent:a1:data:*";
        assert!(owns(a1, "a1", "p:"));
        assert!(!owns(a1, "a1", "q:"));
        assert!(!owns(a1, "a1", ""));
        assert!(!owns("%R~p:agent:other", "a3", "p:"));
        assert!(owns("%R~q:agent:a2 ~q:agent:a2:data:*", "a2", "q:"));
        assert_eq!(instance_tag("blue"), "autogen-instance:blue");
    }
}
