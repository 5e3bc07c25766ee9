//! The store under the graph: the on-disk layout, layer records, and
//! opening a store (layer ids and the writer lock are below it, in
//! [`crate::ids`] and [`crate::fs::lock`], shared with the drivers).
//!
//! [`Graph`] and [`Layer`] (Python's `lamina.Graph` and `lamina.Layer`) are
//! built on these.

mod ancestry;
pub mod chain;
mod chain_lock;
pub mod check;
mod diffs;
#[allow(clippy::module_inception)]
pub mod graph;
pub mod images;
pub mod layer;
pub mod layout;
mod make;
mod mounts;
pub mod record;
mod remove;
pub mod store;
pub mod time;

pub use crate::fs::lock::{LockGuard, LockMode, StoreLock};
pub use crate::ids::{chain_id, chain_ids, random_id, resolve_prefix, validate_id};
pub use chain::{ChainLayer, Progress, ProgressInfo};
pub use check::{CheckReport, Finding};
pub use graph::{Graph, Metadata};
pub use images::{Image, ImageRecord};
pub use layer::Layer;
pub use layout::{Layout, Staging};
pub use record::LayerRecord;
pub use store::{Store, StoreConfig};
pub use time::Timestamp;
