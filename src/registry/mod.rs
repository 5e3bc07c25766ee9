//! Registries: images pulled over the OCI distribution API.
//!
//! - `reference`: image references as Docker parses them;
//! - `blobsums`: which blobs a layer is known as, and where (for push);
//! - `client`: one registry's HTTP (scheme, TLS roots, auth, retries);
//! - `credentials`: credentials from the caller or Docker's config file;
//! - `pull`: [`crate::Graph::pull`];
//! - `push`: [`crate::Graph::push`];
//! - `resume`: a blob's body resumed with `Range` where the connection breaks.

pub mod blobsums;
pub mod client;
pub mod credentials;
pub mod pull;
pub mod push;
pub mod reference;
pub mod resume;

pub use client::login;
pub use credentials::Credentials;
pub use pull::PullOptions;
pub use push::{ManifestFormat, PushOptions};
pub use reference::Reference;
