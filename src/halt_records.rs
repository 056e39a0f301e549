//! The halts kept outside the manager (the real [`HaltStore`], contract section 10):
//! Redis, for operators (`halt:<halt_id>`, `halts`, the `halts:events` audit trail,
//! [`crate::store`]), and RabbitMQ, as one global runtime parameter per halt
//! (`autogen-halt.<MANAGER_INSTANCE>.<halt_id>`, through the management API), so that a
//! Redis `FLUSHALL` or a Redis without persistence loses no halt and `halt.release`
//! still works. The broker's copy is written first on engage and removed last on
//! release: it is the one a wiped Redis is rebuilt from.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::broker::management::Management;
use crate::error::AgentError;
use crate::ports::{HaltStore, Processed};
use crate::record::halt::{HaltEntry, HaltRecord};
use crate::store::Store;

/// The halts in Redis and RabbitMQ.
#[derive(Clone)]
pub struct HaltRecords {
    store: Store,
    /// The management API; `None` when the manager may not use it
    /// (`AGENT_CREDENTIALS=shared` without one): then Redis alone keeps the halts.
    management: Option<Management>,
    /// `autogen-halt.<instance>.`: this installation's parameters.
    prefix: String,
}

impl HaltRecords {
    pub fn new(store: Store, management: Option<Management>, instance: &str) -> Self {
        HaltRecords {
            store,
            management,
            prefix: format!("autogen-halt.{instance}."),
        }
    }

    fn parameter(&self, halt_id: &str) -> String {
        format!("{}{halt_id}", self.prefix)
    }
}

#[async_trait]
impl HaltStore for HaltRecords {
    async fn save_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError> {
        if let Some(m) = &self.management {
            m.put_global_parameter(&self.parameter(&halt.halt_id), &halt.to_json())
                .await?;
        }
        Ok(self.store.save_halt(halt, entry, processed).await?)
    }

    async fn delete_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError> {
        self.store.delete_halt(halt, entry, processed).await?;
        if let Some(m) = &self.management {
            m.delete_global_parameter(&self.parameter(&halt.halt_id))
                .await?;
        }
        Ok(())
    }

    async fn load_halts(&self) -> Result<Vec<HaltRecord>, AgentError> {
        let mut all: BTreeMap<String, HaltRecord> = BTreeMap::new();
        let in_redis = self.store.load_halts().await?;
        let mut in_broker = Vec::new();
        if let Some(m) = &self.management {
            for (name, value) in m.global_parameters(&self.prefix).await? {
                match serde_json::from_value::<HaltRecord>(value) {
                    Ok(h) => in_broker.push(h),
                    Err(e) => {
                        tracing::warn!(parameter = %name, error = %e, "skipping a halt parameter that does not read")
                    }
                }
            }
        }
        let redis_ids: Vec<String> = in_redis.iter().map(|h| h.halt_id.clone()).collect();
        let broker_ids: Vec<String> = in_broker.iter().map(|h| h.halt_id.clone()).collect();
        for h in in_broker.into_iter().chain(in_redis) {
            all.entry(h.halt_id.clone()).or_insert(h);
        }
        // Each copy gets what it lost (a wiped Redis, a reset broker).
        for halt in all.values() {
            if !redis_ids.contains(&halt.halt_id) {
                tracing::warn!(halt_id = %halt.halt_id, "a halt missing from Redis is written back from RabbitMQ's copy");
                self.store.save_halt(halt, None, None).await?;
            }
            if !broker_ids.contains(&halt.halt_id) {
                if let Some(m) = &self.management {
                    m.put_global_parameter(&self.parameter(&halt.halt_id), &halt.to_json())
                        .await?;
                }
            }
        }
        Ok(all.into_values().collect())
    }
}
