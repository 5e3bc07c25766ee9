//! Registries: images pulled over the OCI distribution API.
//!
//! - `reference`: image references as Docker parses them;
//! - `client`: one registry's HTTP (scheme, TLS roots, auth, retries);
//! - `credentials`: credentials from the caller or Docker's config file;
//! - `pull`: [`crate::Graph::pull`].

pub mod client;
pub mod credentials;
pub mod pull;
pub mod reference;

pub use credentials::Credentials;
pub use pull::PullOptions;
pub use reference::Reference;
