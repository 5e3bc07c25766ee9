//! Images in and out: OCI image layouts and docker archives.
//!
//! [`Graph::load`](crate::Graph::load) takes the images of
//!
//! - an OCI image layout (image-spec `image-layout.md`: `oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>`), as a directory or a tar of one
//!   (skopeo's `oci:` and `oci-archive:`, umoci, buildah, buildkit);
//! - a docker archive, what `docker save` writes: the legacy form
//!   (`manifest.json`, `<id>/layer.tar`, `<config digest>.json`) and the
//!   OCI-style form of Docker 25 and later (an OCI layout plus a
//!   `manifest.json`);
//!
//! from a path, an open file, or a stream (`docker save app | lamina load
//! -`), plain, gzip or zstd. Every blob is checked against its descriptor
//! (digest and size) while it streams and every layer's diff ID against
//! the config; layers apply through
//! [`Graph::register_chain`](crate::Graph::register_chain), so a failure
//! leaves nothing, layers already in the store are not applied again, and
//! layers apply in parallel where the driver allows it.
//!
//! # The metadata comes last
//!
//! A docker archive (both forms) puts `manifest.json` after the layers,
//! and an OCI layout tar is written in whatever order its writer walked
//! (skopeo: blobs first, `index.json` last). Until the metadata is read,
//! a layer blob is bytes with a name: its place in an image, its parent
//! and what its diff ID should be are unknown. Under the seed's overlay
//! and vfs drivers a layer's tree is made from its parent's, so a layer
//! cannot be applied before its parent is known. What lamina does:
//!
//! - from a path or a regular file it does not read ahead at all: one pass
//!   over the tar's headers, seeking over every payload (milliseconds for
//!   any size), finds the metadata and where each blob sits; then the
//!   layers are read in place (`pread`), several at once, nothing copied;
//! - from a stream it cannot seek, so it reads on as far as the load asks
//!   (`stream`): looking for `index.json` or `manifest.json`, what passes
//!   is kept — small files (metadata) in memory, large ones (layer blobs)
//!   spooled to the store's `tmp/`, checked against its descriptor as it
//!   is read back into its apply (no hash on the way in, which a legacy
//!   docker archive's layer, with no descriptor, never needed) — and a layer
//!   blob that comes when its layer is the next one to apply is applied
//!   straight from the stream, never kept. A `docker save` stream is thus
//!   spooled whole (the copy `docker load` makes too: it untars the whole
//!   archive into a temp directory first; here one sequential write of the
//!   bytes as they came, removed when the load ends), and an archive whose
//!   metadata comes first and layers base first — what `Graph::save`
//!   writes — is not copied at all: `lamina save app - | lamina load -`
//!   applies each layer as it arrives.
//!
//! [`Graph::save`](crate::Graph::save) writes both formats (see `save`).
//!
//! - `files`: the files of a layout or archive, by path (directory, seekable
//!   tar, stream).
//! - `stream`: a tar stream read lazily, spooling only what passes early.
//! - `verify`: a reader that checks a blob's size and digest as it streams.
//! - `parse`: the images a layout or archive holds.
//! - `load`, `save`: the two directions.

mod changes;
mod commit;
mod files;
mod load;
mod parse;
pub(crate) mod save;
mod stream;
pub(crate) mod verify;

#[cfg(test)]
mod tests;

pub use changes::{apply_changes, ConfigChange};
pub use commit::CommitImage;
pub use load::LoadSource;
pub use save::{SaveFormat, SaveTarget};
