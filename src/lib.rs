//! # lamina — a container image layer store
//!
//! lamina does what Docker's graph and overlay graph driver do — apply tar
//! layers, stack them, mount them, diff them, export them byte for byte — as a
//! library, with no daemon. This crate is the core; the Python package
//! `lamina` wraps it through the bindings in `src/python/` (cargo feature
//! `python`).
//!
//! ```
//! # fn main() -> lamina::Result<()> {
//! let tmp = tempfile::tempdir().unwrap();
//! let layer = tmp.path().join("init");
//! std::fs::create_dir(&layer).unwrap();
//! lamina::setup_init_layer(&layer)?;
//! assert_eq!(
//!     std::fs::read_link(layer.join("etc/mtab")).unwrap(),
//!     std::path::Path::new("/proc/mounts"),
//! );
//! # Ok(()) }
//! ```
//!
//! ## Architecture
//!
//! Data flows one way: Python → bindings → graph → driver → archive / copy /
//! fs → kernel. Every write inside a layer goes through [`fs::root`]
//! (kernel-scoped resolution), never through string checks on joined paths.
//!
//! Diffs go the other way through [`archive`]: [`changes`] compares two
//! trees, [`export_diff`] streams the tar of their differences (or of a whole
//! tree), and [`upper_changes`] / [`write_upper_diff`] do the same from an
//! overlay upper dir alone, at a cost proportional to the changes.
//!
//! Images go in and out through [`image`]: OCI image layouts and docker
//! archives, loaded into the graph ([`Graph::load`], layers staged and
//! checked before any lands) and saved from it ([`Graph::save`]).
//! [`view`] reads a layer's merged view without mounting (what
//! `Layer.walk()` and friends return, on every driver, as any user) and
//! computes dive's analysis of a chain of layers from their diffs.

pub mod archive;
pub mod copy;
pub mod crashpoint;
pub mod driver;
pub mod error;
pub mod fs;
pub mod graph;
pub mod ids;
pub mod image;
pub mod init_layer;
pub mod registry;
pub mod run;
pub mod view;

#[cfg(feature = "python")]
mod python;

#[cfg(test)]
mod testutil;

pub use archive::changes::{changes, Change, ChangeKind, ChangesOptions};
pub use archive::export::{export_diff, ExportOptions, ExportReport};
pub use archive::upper::{upper_changes, write_upper_diff};
pub use archive::{apply_layer, reassemble, ApplyOptions, ApplyReport, WhiteoutMode};
pub use copy::{copy_dir, CopyOptions, CopyStats};
pub use error::{Error, Result};
pub use graph::{Graph, Image, Layer};
pub use init_layer::{
    default_entries, setup_init_layer, setup_init_layer_with, InitEntry, InitKind,
};
