//! What the agent actors share: the runtime, the store, the publisher and the
//! configuration. Lives below every module that uses it, so none of them imports
//! another to reach it.

use std::sync::Arc;

use crate::broker::publisher::EventPublisher;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::store::Store;

/// What every agent actor shares.
#[derive(Clone)]
pub struct Deps {
    pub runtime: Arc<dyn Runtime>,
    pub store: Store,
    pub publisher: EventPublisher,
    pub config: Arc<Config>,
}
