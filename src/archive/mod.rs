//! Tar layers in and out.
//!
//! - [`reader`]: a streaming tar parser that keeps the raw bytes.
//! - [`compression`]: plain / gzip / zstd by magic bytes.
//! - [`apply`]: apply a layer onto a directory, safely ([`apply_layer`]).
//! - [`whiteout`]: AUFS and overlay whiteouts.
//! - [`tarsplit`]: the record that gives back the exact tar ([`reassemble`]).
//! - [`digest`]: the diff ID, hashed on a second thread.
//! - `writer`: the thread that finishes small files.

pub mod apply;
pub mod compression;
pub mod digest;
pub mod reader;
mod resolve;
pub mod tarsplit;
pub mod whiteout;
mod writer;

pub use apply::{apply_layer, apply_layer_with_record, ApplyOptions, ApplyReport, WhiteoutMode};
pub use tarsplit::reassemble;

#[cfg(test)]
mod tests;
