//! Storage drivers: how a layer's files are laid out on disk and mounted.
//!
//! The graph owns ids, metadata, locking and staging; a driver is handed
//! layer directories (a staging directory under `tmp/` while a layer is
//! being made, `layers/<id>/` after) and never builds a path from an id or
//! reads `layer.json` (DESIGN.md §2). The trait follows moby's
//! `graphdriver.Driver` + `DiffDriver` (Create, Remove, Exists, Get, Put,
//! ApplyDiff, Diff, Changes, DiffSize, Status, Cleanup), with the mount
//! refcounts of [`mount`] behind `get`/`put` instead of moby's in-memory
//! `RefCounter`.
//!
//! - [`mountinfo`]: the kernel's mount table.
//! - [`mounter`]: mount calls behind a trait (real and recording).
//! - [`mount`]: persisted per-process mount reference counts.
//! - [`probe`]: what the host offers; the `auto` choice.

pub mod mount;
pub mod mounter;
pub mod mountinfo;
pub mod probe;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::Result;

/// A layer as a driver sees it: its id (for messages and mount records)
/// and the directory that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDir<'a> {
    /// The layer's id, already validated by the graph.
    pub id: &'a str,
    /// The layer's directory: `tmp/<staging>` while the layer is being
    /// made, `layers/<id>` once it is in the store.
    pub dir: &'a Path,
}

/// What kind of change a path underwent between a layer and its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The path is new (`"A"`).
    Added,
    /// The path exists in both and differs (`"C"`).
    Modified,
    /// The path is gone (`"D"`).
    Deleted,
}

/// One changed path, as `docker diff` and moby's `archive.Change` report it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Absolute path inside the layer, e.g. `/etc/passwd`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// A storage driver; see the module docs for who owns what.
///
/// Every method may be called from many threads at once; the graph
/// serializes calls that change the same layer.
pub trait Driver: Send + Sync {
    /// The driver's name as stored in `lamina.json` (`"overlay"`, `"vfs"`).
    fn name(&self) -> &'static str;

    /// Make an empty layer in `layer.dir` (a fresh staging directory) on
    /// `parent`. A writable layer gets what the driver needs to be written
    /// through a mount (overlay: `upper/`, `work/`, `merged/`, `lower-id`;
    /// on an overlay parent, a copy of the parent's `upper/`). A read-only
    /// layer is made by [`Driver::apply_diff`] instead.
    fn create(
        &self,
        layer: LayerDir<'_>,
        parent: Option<LayerDir<'_>>,
        writable: bool,
    ) -> Result<()>;

    /// Make `layer.dir` (a fresh staging directory) a read-only layer: the
    /// parent's tree plus the tar diff read from `diff` (uncompressed),
    /// whiteouts applied. Returns the bytes of file content applied (the
    /// layer's size). Never changes an inode of the parent.
    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parent: Option<LayerDir<'_>>,
        diff: &mut dyn Read,
    ) -> Result<u64>;

    /// Free what the driver holds for a layer about to be removed (the
    /// graph then renames the directory away and deletes it). Fails with
    /// [`crate::Error::LayerInUse`] while a live process has it mounted.
    fn remove(&self, layer: LayerDir<'_>) -> Result<()>;

    /// Whether the driver's own files for the layer are all there.
    fn exists(&self, layer: LayerDir<'_>) -> bool;

    /// Mount the layer (refcounted across threads and processes) and
    /// return the directory that shows its merged view. A read-only layer
    /// is mounted read-only; where mounting is impossible (vfs without
    /// mount rights) the layer's own directory is returned.
    fn get(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<PathBuf>;

    /// Give back one reference taken by [`Driver::get`]; the last one
    /// unmounts. Returns the references left.
    fn put(&self, layer: LayerDir<'_>) -> Result<u32>;

    /// Live mount references to the layer, from every process.
    fn mount_count(&self, layer: LayerDir<'_>) -> Result<u32>;

    /// Write the layer's changes against `parent` as an uncompressed tar
    /// to `out`; returns the bytes written. (A registered layer's exact
    /// bytes come from its tar-split record, which the graph owns.)
    fn diff(
        &self,
        layer: LayerDir<'_>,
        parent: Option<LayerDir<'_>>,
        out: &mut dyn Write,
    ) -> Result<u64>;

    /// The paths the layer changes against `parent`. For a writable overlay
    /// layer this walks `upper/` only: O(changes), not O(image).
    fn changes(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<Vec<Change>>;

    /// Bytes of file content the layer adds or changes against `parent`.
    fn diff_size(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<u64>;

    /// Facts for `Graph.status()`: backing filesystem, d_type, kernel
    /// features, ... (see [`probe::HostProbe::to_pairs`]).
    fn status(&self) -> Vec<(String, String)>;

    /// Unmount what this driver mounted and release its resources (store
    /// close and interpreter exit).
    fn cleanup(&self) -> Result<()>;
}
