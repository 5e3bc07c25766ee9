//! Storage drivers: how a layer's files are laid out on disk and mounted.
//!
//! Who owns what (the whole layout: docs/store.md):
//!
//! ```text
//! <root>/lamina.json, lock, tmp/        the graph (graph::store, graph::layout)
//! <root>/layers/<id>/layer.json         the graph: the layer's record
//! <root>/layers/<id>/tar-split.zst      the graph: exact reassembly
//! <root>/layers/<id>/<anything else>    the driver: root/, upper/, work/, merged/, diff/, ...
//! <root>/driver/                        the driver's home: mount records (mounts/),
//!                                       and whatever else a driver keeps store-wide
//!                                       (overlay2: short names in l/, an empty/ lower)
//! ```
//!
//! The graph makes a layer's directory (a staging directory under `tmp/`
//! while the layer is made, renamed to `layers/<id>/` once complete) and
//! hands it to the driver together with the layer's ancestry, base first,
//! as the graph found it ([`LayerDir`]s): a driver never builds a path from
//! an id, never reads `layer.json`, and never imports the graph. This is
//! the cut moby makes (`graphdriver.Init(home, ...)`, the driver owns its
//! home) and containerd's snapshotters make (parents passed in, not looked
//! up). The graph in turn knows no concrete driver: [`open`] builds one by
//! name.
//!
//! A driver depends on [`crate::archive`], [`crate::copy`], [`crate::fs`],
//! [`crate::error`] and the leaves [`crate::ids`] and [`crate::init_layer`];
//! the graph depends on the [`Driver`] trait, [`open`] and [`auto`].
//!
//! The trait follows moby's `graphdriver.Driver` + `DiffDriver` (Create,
//! Remove, Exists, Get, Put, ApplyDiff, Diff, Changes, DiffSize, Status),
//! with the mount refcounts of [`mount`] behind `get`/`put` instead of
//! moby's in-memory `RefCounter`; moby's Cleanup is the graph's `close`,
//! which puts back what it got.
//!
//! - [`mountinfo`]: the kernel's mount table.
//! - [`mounter`]: mount calls behind a trait (real and recording).
//! - [`mount`]: persisted per-process mount reference counts.
//! - [`probe`]: what the host offers; the `auto` choice.
//! - [`overlay`]: the seed's overlay driver (full `root/` trees + one-lower overlays).
//! - [`overlay2`]: moby's overlay2 (each layer's own `diff/`, stacked as
//!   lowers; `auto`'s choice where overlayfs works).
//! - [`vfs`]: plain full copies, no mounts.
//! - [`userns`]: rootless overlay mounts through a helper holding a user namespace.
//!
//! [`Driver::stack`] tells [`crate::view`] how a layer's files are stored
//! (a stack of directories in overlay form), so that a layer's merged view
//! is read without mounting.

pub mod mount;
pub mod mounter;
pub mod mountinfo;
pub mod overlay;
pub mod overlay2;
pub mod probe;
pub mod userns;
pub mod vfs;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::ApplyReport;
use crate::error::{Error, Result};

/// The storage drivers this build has, by the name a store records.
pub const NAMES: &[&str] = &["overlay", "overlay2", "vfs"];

/// Check a driver name a caller asked for: one of [`NAMES`], or `"auto"`
/// (the store's own driver, or for a new store the host's best).
pub fn validate_name(name: &str) -> Result<()> {
    if name == "auto" || NAMES.contains(&name) {
        Ok(())
    } else {
        Err(Error::UnknownDriver {
            name: name.to_owned(),
        })
    }
}

/// A layer as a driver sees it: its id (for messages and mount records)
/// and the directory that holds it. A layer's ancestry is a slice of these,
/// base first, its parent last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDir<'a> {
    /// The layer's id, already validated by the graph.
    pub id: &'a str,
    /// The layer's directory: `tmp/<staging>` while the layer is being
    /// made, `layers/<id>` once it is in the store.
    pub dir: &'a Path,
}

pub use crate::archive::changes::{Change, ChangeKind};

/// A storage driver; see the module docs for who owns what.
///
/// Every method may be called from many threads at once; the graph
/// serializes calls that change the same layer.
pub trait Driver: Send + Sync {
    /// The driver's name as stored in `lamina.json` (one of [`NAMES`]).
    fn name(&self) -> &'static str;

    /// Make an empty writable layer in `layer.dir` (a fresh staging
    /// directory) on `parent`, with what the driver needs to be written
    /// through a mount (overlay: `upper/`, `work/`, `merged/`, `lower-id`;
    /// on an overlay parent, a copy of the parent's `upper/`).
    fn create(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()>;

    /// Make `layer.dir` (a fresh staging directory) a container's `-init`
    /// layer on `parent`: [`crate::setup_init_layer`] over the parent's
    /// tree, stored the way the driver's writable layers are, so that the
    /// container made on it by [`Driver::create`] starts from it.
    fn create_init(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()>;

    /// Make `layer.dir` (a fresh staging directory) a read-only layer from
    /// the tar diff read from `diff` (plain, gzip or zstd): the parent's
    /// tree plus the diff, whiteouts applied (overlay, vfs), or the diff
    /// alone in overlay form (overlay2); its tar-split record written to
    /// `record`. Never changes an inode of the parent.
    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        diff: &mut (dyn Read + Send),
        record: &mut dyn Write,
    ) -> Result<ApplyReport>;

    /// Whether [`Driver::apply_diff`] reads nothing of `parents` but
    /// their place in the chain, so that an image's layers may be applied
    /// in parallel, each into its own staging directory, while (or
    /// before) its parents are, and landed in order afterwards. `false`
    /// for drivers that start a layer from a copy of its parent's tree.
    fn layers_apply_independently(&self) -> bool {
        false
    }

    /// The directory a read-only layer's tar was applied to, where it has
    /// one: the tree its tar-split record is reassembled from (the full
    /// tree for overlay and vfs, the layer's own `diff/` for overlay2).
    fn tree(&self, layer: LayerDir<'_>) -> Option<PathBuf>;

    /// The directories whose overlay union is the layer's view, uppermost
    /// first: what reads the view without mounting it. Each is in overlay
    /// form (a 0/0 character device hides the path in the directories
    /// below, `overlay.opaque=y` a directory's content below); a full tree
    /// (overlay's `root/`, vfs) is a stack of one.
    fn stack(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Vec<PathBuf>;

    /// Remove the layer: fails with [`crate::Error::LayerInUse`] while a
    /// live process has it mounted; otherwise unmounts what is left mounted
    /// and calls `remove_dir` (which takes the directory out of the store)
    /// with the mount bookkeeping locked, so no mount slips in between.
    fn remove(&self, layer: LayerDir<'_>, remove_dir: &mut dyn FnMut() -> Result<()>)
        -> Result<()>;

    /// Whether the driver's own files for the layer are all there.
    fn exists(&self, layer: LayerDir<'_>) -> bool;

    /// Mount the layer (refcounted across threads and processes) and
    /// return the directory that shows its merged view, writable only if
    /// `writable`. Where the driver does not mount (vfs) the layer's own
    /// tree is returned. A `persist` reference belongs to no process: it
    /// stands until an unmount from any process gives it back.
    fn get(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        writable: bool,
        persist: bool,
    ) -> Result<PathBuf>;

    /// Give back one reference taken by [`Driver::get`] in this process, or
    /// when it has none a persistent one; the last one unmounts. With
    /// neither, a mount left by a process that is gone is taken down;
    /// with nothing mounted at all, an error. Returns the references left.
    fn put(&self, layer: LayerDir<'_>) -> Result<u32>;

    /// Bring the mount reference counts in line with the living processes
    /// and the kernel's mount table (what a store does when it opens, and
    /// what a repair does); returns what changed, a line each.
    fn reconcile_mounts(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Live mount references to the layer, from every process.
    fn mount_count(&self, layer: LayerDir<'_>) -> Result<u32>;

    /// Write the tar of the layer's changes against `parent` to `out`
    /// (PAX, whiteouts, reproducible); returns the bytes written. For a
    /// writable overlay layer only `upper/` is walked. (A registered
    /// layer's exact bytes come from its tar-split record, which the graph
    /// owns.)
    fn diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        out: &mut dyn Write,
    ) -> Result<u64>;

    /// The paths the layer changes against `parent`, parents first. For a
    /// writable overlay layer this walks `upper/` only: O(changes), not
    /// O(image).
    fn changes(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<Vec<Change>>;

    /// Bytes of regular-file content the layer adds or changes against
    /// `parent` (moby's `DiffSize`).
    fn diff_size(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<u64>;

    /// Facts for `Graph.status()`: backing filesystem, d_type, kernel
    /// features, ... (see [`probe::HostProbe::to_pairs`]).
    fn status(&self) -> Vec<(String, String)>;

    /// After the store's close put back every reference: stop what serves
    /// mounts (the rootless helper), so nothing of the store runs on.
    fn shutdown(&self) {}

    /// The pid whose user and mount namespaces hold this driver's mounts,
    /// where they are not the caller's (rootless overlay); `None` otherwise.
    fn namespace_holder(&self) -> Option<u32> {
        None
    }
}

/// Build the storage driver `name` (one of [`NAMES`]) of a store whose
/// driver home is `home` (made if missing), mounting through `mounter`;
/// `probe` is what `status()` reports and what mount options are chosen
/// from. Mount counts are reconciled with the living processes and the
/// kernel's mount table before it is returned.
pub fn open(
    name: &str,
    home: &Path,
    mounter: std::sync::Arc<dyn mounter::Mounter>,
    probe: Option<probe::HostProbe>,
) -> Result<Box<dyn Driver>> {
    validate_name(name)?;
    let mounts = home.join("mounts");
    let driver = match name {
        "vfs" => Box::new(vfs::Vfs::new(&mounts, probe)?) as Box<dyn Driver>,
        "overlay" => Box::new(overlay::Overlay::new(&mounts, mounter, probe)?),
        "overlay2" => Box::new(overlay2::Overlay2::new(home, mounter, probe)?),
        other => {
            return Err(Error::UnknownDriver {
                name: other.to_owned(),
            })
        }
    };
    driver.reconcile_mounts()?;
    Ok(driver)
}

/// The driver `auto` picks for a new store on this host, with what the
/// probe found; `scratch` is a directory on the store's filesystem where
/// the probe may make and mount test directories, through `mounter` (the
/// store's: the rootless helper's test mount decides for a rootless store).
pub fn auto(
    scratch: &Path,
    mounter: &dyn mounter::Mounter,
) -> Result<(&'static str, probe::HostProbe)> {
    let p = probe::HostProbe::run_for(scratch, mounter)?;
    Ok((p.auto_driver(), p))
}

/// Run `f` on `layer`'s view, got from `d` for the time of `f` (an
/// existing mount is shared through its count) and put back after it;
/// `f`'s error wins over the put's.
pub(crate) fn with_mounted<T, D: Driver + ?Sized>(
    d: &D,
    layer: LayerDir<'_>,
    parents: &[LayerDir<'_>],
    writable: bool,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let view = d.get(layer, parents, writable, false)?;
    let r = f(&view);
    let put = d.put(layer);
    let v = r?;
    put?;
    Ok(v)
}

/// The error of an unmount with nothing to give back.
pub(crate) fn not_mounted(layer: LayerDir<'_>) -> Error {
    Error::NotMounted {
        id: layer.id.to_owned(),
    }
}

/// Refuse to remove a layer while a filesystem is mounted inside its
/// directory (a volume bind-mounted into a container's tree): removal
/// would stop at the mount point anyway ([`crate::fs::remove`]), but only
/// after taking the layer out of the store half-removed. Call it after the
/// driver took its own mount down.
pub(crate) fn refuse_mounts_inside(layer: LayerDir<'_>) -> Result<()> {
    let inside = mountinfo::read()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(layer.dir))
        .min();
    match inside {
        Some(p) => Err(Error::LayerInUse {
            id: layer.id.to_owned(),
            why: format!("a filesystem is mounted at {} inside it", p.display()),
        }),
        None => Ok(()),
    }
}

/// A layer's mount point must be the store's own directory: `mount(2)`
/// follows a symlink put in its place, and would mount over whatever it
/// points to outside the store.
pub(crate) fn check_mount_point(merged: &Path) -> Result<()> {
    use crate::error::IoContext;
    let m = merged.symlink_metadata().at("lstat", merged)?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(Error::corrupt(
            merged,
            "the mount point is not the store's own directory",
        ));
    }
    Ok(())
}

/// A new directory with exactly `mode` (the umask does not decide it).
pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<()> {
    use crate::error::IoContext;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .at("mkdir", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at("chmod", path)
}

/// Bytes of the regular files among `changes` (added or modified), as found
/// in `tree`: what [`Driver::diff_size`] reports.
pub(crate) fn content_size(changes: &[Change], tree: &Path) -> Result<u64> {
    use crate::error::IoContext;
    let mut total = 0;
    for c in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        let p = tree.join(c.path.strip_prefix("/").unwrap_or(&c.path));
        let m = p.symlink_metadata().at("lstat", &p)?;
        if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

/// `<dir>/empty`, an empty directory to compare a base layer with (made on
/// first use).
pub(crate) fn empty_dir(dir: &Path) -> Result<PathBuf> {
    use crate::error::IoContext;
    let p = dir.join("empty");
    match std::fs::create_dir(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).at("mkdir", &p),
    }
    Ok(p)
}
