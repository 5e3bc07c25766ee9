//! The store under the graph: layer ids, the writer lock, the on-disk
//! layout, layer records, and opening a store.
//!
//! The `Graph` and `Layer` types of DESIGN.md §4 are built on these once
//! the drivers can apply, copy and diff layers.

pub mod ids;
pub mod layout;
pub mod lock;
pub mod record;
pub mod store;
pub mod time;

pub use ids::{chain_id, chain_ids, random_id, resolve_prefix, validate_id};
pub use layout::{Layout, Staging};
pub use lock::{LockGuard, LockMode, StoreLock};
pub use record::LayerRecord;
pub use store::{Store, StoreConfig};
pub use time::Timestamp;
