//! Tar in and out of layers.
//!
//! Export half: [`changes`] compares two trees, [`export`] writes the tar of
//! their differences, [`upper`] does both for an overlay upper dir by walking
//! only the upper dir, and [`tar_writer`] is the deterministic PAX writer
//! under them.

pub mod changes;
pub mod export;
pub mod tar_writer;
pub mod upper;
