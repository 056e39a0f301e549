//! The teams in Redis (contract section 9): the `team:<team_id>` hash (`team_id`,
//! `customer_id`, `agent_ids` and `orchestrator_config` as JSON, `created_at`, and
//! `updated_at`), its membership of `customer:<customer_id>:teams` and of the manager's
//! own index `teams`, and the mapping between [`TeamRecord`] and the hash's fields. A
//! save or delete also writes the command's processed marker in the same transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use super::processed::Processed;
use super::Store;
use crate::error::StoreError;
use crate::protocol::rfc3339;
use crate::record::team::TeamRecord;

impl TeamRecord {
    /// The hash fields of `team:<team_id>`.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("team_id", self.team_id.clone()),
            ("customer_id", self.customer_id.clone()),
            (
                "agent_ids",
                serde_json::to_string(&self.agent_ids).unwrap_or_else(|_| "[]".into()),
            ),
            (
                "orchestrator_config",
                serde_json::to_string(&self.orchestrator_config).unwrap_or_else(|_| "{}".into()),
            ),
            ("created_at", rfc3339(self.created_at)),
            ("updated_at", rfc3339(self.updated_at)),
        ]
    }

    /// Reads a team back from its hash fields.
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
        let time = |name: &str| -> Result<DateTime<Utc>, StoreError> {
            DateTime::parse_from_rfc3339(&get(name)?)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| corrupt(format!("field '{name}': {e}")))
        };
        let agent_ids: Vec<String> = serde_json::from_str(&get("agent_ids")?)
            .map_err(|e| corrupt(format!("field 'agent_ids': {e}")))?;
        let orchestrator_config = serde_json::from_str(&get("orchestrator_config")?)
            .map_err(|e| corrupt(format!("field 'orchestrator_config': {e}")))?;
        let created_at = time("created_at")?;
        Ok(TeamRecord {
            team_id: get("team_id")?,
            customer_id: get("customer_id")?,
            agent_ids,
            orchestrator_config,
            created_at,
            updated_at: time("updated_at").unwrap_or(created_at),
        })
    }
}

impl Store {
    /// Writes the team, its set memberships and, when given, the processed marker: one
    /// atomic transaction. The hash is replaced, not merged.
    pub async fn save_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let key = k.team(&team.team_id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&key).ignore();
        pipe.hset_multiple(&key, &team.to_fields()).ignore();
        pipe.sadd(k.customer_teams(&team.customer_id), &team.team_id)
            .ignore();
        pipe.sadd(k.teams(), &team.team_id).ignore();
        self.push_processed(&mut pipe, processed);
        self.run_pipe("save team", pipe).await
    }

    /// Removes the team and its set memberships, with the processed marker, atomically.
    pub async fn delete_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(k.team(&team.team_id)).ignore();
        pipe.srem(k.customer_teams(&team.customer_id), &team.team_id)
            .ignore();
        pipe.srem(k.teams(), &team.team_id).ignore();
        self.push_processed(&mut pipe, processed);
        self.run_pipe("delete team", pipe).await
    }

    /// The team's record; `None` when there is no such team.
    pub async fn load_team(&self, team_id: &str) -> Result<Option<TeamRecord>, StoreError> {
        let key = self.keys.team(team_id);
        let fields = self.hash("hgetall team", &key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        TeamRecord::from_fields(&key, &fields).map(Some)
    }

    /// Team ids, sorted: every team (`teams`), or one customer's
    /// (`customer:<customer_id>:teams`).
    pub async fn team_ids(&self, customer_id: Option<&str>) -> Result<Vec<String>, StoreError> {
        let set = match customer_id {
            Some(c) => self.keys.customer_teams(c),
            None => self.keys.teams(),
        };
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = self
            .run("smembers teams", async move { conn.smembers(set).await })
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// The teams in `ids` that exist, in the order given (one pipelined read per 200);
    /// a corrupt record is skipped with a warning.
    pub async fn load_teams(&self, ids: &[String]) -> Result<Vec<TeamRecord>, StoreError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.team(id)).collect();
        let rows = self.hashes("hgetall teams", &keys).await?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, key), fields) in ids.iter().zip(&keys).zip(rows) {
            if fields.is_empty() {
                continue;
            }
            match TeamRecord::from_fields(key, &fields) {
                Ok(team) => out.push(team),
                Err(e) => tracing::warn!(team_id = %id, error = %e, "corrupt team record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_team_round_trips_through_its_hash_fields() {
        let t = TeamRecord::new("t1", "c1", vec!["a".into(), "b".into()], json!({"k": [1]}));
        let fields: HashMap<String, String> = t
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for f in [
            "team_id",
            "customer_id",
            "agent_ids",
            "orchestrator_config",
            "created_at",
        ] {
            assert!(fields.contains_key(f), "{f}: the contract's field");
        }
        assert_eq!(fields["agent_ids"], r#"["a","b"]"#);
        let back = TeamRecord::from_fields("team:t1", &fields).unwrap();
        assert_eq!(back.agent_ids, t.agent_ids);
        assert_eq!(back.orchestrator_config, t.orchestrator_config);
        assert_eq!(back.customer_id, "c1");
        let mut broken = fields.clone();
        broken.insert("agent_ids".into(), "not json".into());
        assert!(TeamRecord::from_fields("team:t1", &broken).is_err());
    }
}
