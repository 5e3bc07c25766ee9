//! The store under the graph: layer ids, the writer lock, the on-disk
//! layout, layer records, and opening a store.
//!
//! [`Graph`] and [`Layer`] (DESIGN.md §4) are built on these.

#[allow(clippy::module_inception)]
pub mod graph;
pub mod ids;
pub mod layer;
pub mod layout;
pub mod lock;
pub mod record;
pub mod store;
pub mod time;

pub use graph::{Graph, Metadata};
pub use ids::{chain_id, chain_ids, random_id, resolve_prefix, validate_id};
pub use layer::Layer;
pub use layout::{Layout, Staging};
pub use lock::{LockGuard, LockMode, StoreLock};
pub use record::LayerRecord;
pub use store::{Store, StoreConfig};
pub use time::Timestamp;
