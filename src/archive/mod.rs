//! Tar layers in and out.
//!
//! In:
//! - [`reader`]: a streaming tar parser that keeps the raw bytes.
//! - [`compression`]: plain / gzip / zstd by magic bytes.
//! - [`apply`]: apply a layer onto a directory, safely ([`apply_layer`]).
//! - [`whiteout`]: AUFS and overlay whiteouts.
//! - [`tarsplit`]: the record that gives back the exact tar ([`reassemble`]).
//! - [`digest`]: the diff ID, hashed on a second thread.
//! - `writer`: the thread that finishes small files.
//!
//! Out: `walk` is the iterative walk under every diff; [`changes`] compares two trees, [`export`] writes the tar of their
//! differences, [`upper`] does both for an overlay upper dir by walking only
//! the upper dir, and [`tar_writer`] is the deterministic PAX writer under
//! them.

pub mod apply;
pub mod changes;
pub mod compression;
pub mod digest;
pub mod export;
pub(crate) mod gzip_writer;
pub mod reader;
pub(crate) mod resolve;
pub mod tar_writer;
pub mod tarsplit;
pub mod upper;
mod walk;
pub mod whiteout;
mod writer;
pub mod written;

pub use apply::{apply_layer, apply_layer_with_record, ApplyOptions, ApplyReport, WhiteoutMode};
pub use tarsplit::reassemble;

#[cfg(test)]
mod tests;
