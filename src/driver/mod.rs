//! Storage drivers.
pub mod mount;
pub mod mounter;
pub mod mountinfo;
