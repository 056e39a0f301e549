//! Processed markers (`processed:<message_id>`, with a TTL): the events that answered an
//! applied command, so a redelivered command is answered again and applies nothing twice.
//! Written alone ([`Store::save_processed`]) or inside a record's transaction.

use redis::AsyncCommands;

use super::Store;
use crate::error::StoreError;
/// The lifecycle's word for an applied command's answer ([`crate::ports`]).
pub use crate::ports::Processed;
use crate::protocol::Event;

impl Store {
    /// Queues the processed marker, when given, in `pipe`.
    pub(super) fn push_processed(
        &self,
        pipe: &mut redis::Pipeline,
        processed: Option<Processed<'_>>,
    ) {
        if let Some(p) = processed {
            let answer = serde_json::to_string(p.answer).unwrap_or_else(|_| "[]".into());
            pipe.cmd("SET")
                .arg(self.keys.processed(p.message_id))
                .arg(answer)
                .arg("EX")
                .arg(self.processed_ttl_s)
                .ignore();
        }
    }

    /// Records that a command was applied (for commands that leave no agent behind).
    pub async fn save_processed(&self, processed: Processed<'_>) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        self.push_processed(&mut pipe, Some(processed));
        self.write("set processed", pipe).await
    }

    /// The events that answered `message_id`, if that command was already applied.
    pub async fn processed(&self, message_id: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let key = self.keys.processed(message_id);
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .run("get processed", async move { conn.get(key).await })
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }
}
