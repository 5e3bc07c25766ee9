//! The `vfs` driver: every layer is a full, independent copy of its tree.
//! It is the driver of a user without root: a layer applied by one records
//! what it cannot apply ([`crate::fs::recorded`]).
//!
//! moby's `vfs` graphdriver, for hosts where overlayfs does not work (no
//! kernel support, no d_type, no mount rights). A layer is `root/`: the
//! parent's tree copied in full (data shared by reflink where the
//! filesystem can, see [`crate::copy`]), then the diff applied. Nothing is
//! ever shared between layers, so nothing needs mounting: "mounting" a
//! layer returns its `root/` (writable or not, it is the caller's copy).
//!
//! Mount references are persisted and shared by every process using the
//! store, as the overlay driver's are ([`crate::driver::mount`]): a tree
//! handed out to another process is in use just as a mount is, so `delete`
//! is refused while any live process holds one. There is no kernel mount,
//! so the counts go through [`NoMounts`]: a reference ends when it is put
//! or its process dies, never for being absent from the mount table.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::archive::changes::{changes, ChangesOptions};
use crate::archive::export::{export_diff, ExportOptions};
use crate::archive::{apply_layer_with_record, ApplyOptions, ApplyReport};
use crate::copy::{copy_dir, CopyOptions};
use crate::driver::mount::MountRefs;
use crate::driver::mounter::{MountSpec, NoMounts};
use crate::driver::{content_size, empty_dir, probe::HostProbe, Change, Driver, LayerDir};
use crate::error::{Error, IoContext, Result};

/// The directory of a layer's tree.
pub const ROOT: &str = "root";

/// The `vfs` driver; see the module docs.
#[derive(Debug)]
pub struct Vfs {
    refs: MountRefs<NoMounts>,
    probe: Option<HostProbe>,
}

impl Vfs {
    /// The vfs driver keeping its mount records in `mounts`; `probe` (if
    /// any) is reported by `status()`.
    pub fn new(mounts: &Path, probe: Option<HostProbe>) -> Result<Vfs> {
        Ok(Vfs {
            refs: MountRefs::open(mounts, NoMounts)?,
            probe,
        })
    }

    /// The mount reference counts (a store reconciles them when opened).
    pub fn refs(&self) -> &MountRefs<NoMounts> {
        &self.refs
    }
}

/// `dst` as a full copy of the parent's tree (the last of `parents`), or
/// an empty 0755 directory for a base layer.
fn copy_parent(dst: &Path, parents: &[LayerDir<'_>]) -> Result<()> {
    match parents.last() {
        Some(p) => {
            copy_dir(&p.dir.join(ROOT), dst, &CopyOptions::new())?;
        }
        None => make_root(dst)?,
    }
    Ok(())
}

/// An empty layer tree, mode 0755 as an image's `/` is.
pub(crate) fn make_root(dst: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dst)
        .at("mkdir", dst)?;
    // The umask must not decide the mode of `/` in every container.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).at("chmod", dst)
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn create(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        copy_parent(&layer.dir.join(ROOT), parents)
    }

    fn create_init(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        let root = layer.dir.join(ROOT);
        copy_parent(&root, parents)?;
        crate::init_layer::setup_init_layer(&root)
    }

    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        diff: &mut (dyn Read + Send),
        record: &mut dyn Write,
    ) -> Result<ApplyReport> {
        let root = layer.dir.join(ROOT);
        copy_parent(&root, parents)?;
        // Without root, what cannot be applied is recorded, so that the
        // layer's diffs and its merged view still say what the tar said.
        let opts = ApplyOptions {
            rootless: true,
            ..Default::default()
        };
        apply_layer_with_record(&root, diff, &opts, record)
    }

    fn tree(&self, layer: LayerDir<'_>) -> Option<PathBuf> {
        Some(layer.dir.join(ROOT))
    }

    fn stack(&self, layer: LayerDir<'_>, _parents: &[LayerDir<'_>]) -> Vec<PathBuf> {
        vec![layer.dir.join(ROOT)]
    }

    fn remove(
        &self,
        layer: LayerDir<'_>,
        remove_dir: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let txn = self.refs.transaction()?;
        txn.release(layer.id, &layer.dir.join(ROOT))?;
        super::refuse_mounts_inside(layer)?;
        remove_dir()
    }

    fn exists(&self, layer: LayerDir<'_>) -> bool {
        layer.dir.join(ROOT).is_dir()
    }

    fn get(
        &self,
        layer: LayerDir<'_>,
        _parents: &[LayerDir<'_>],
        _writable: bool,
        persist: bool,
    ) -> Result<PathBuf> {
        let root = layer.dir.join(ROOT);
        if !root.is_dir() {
            return Err(Error::Driver(format!("layer {} has no tree", layer.id)));
        }
        self.refs
            .get(layer.id, &root, &MountSpec::Itself, persist)?;
        Ok(root)
    }

    fn put(&self, layer: LayerDir<'_>) -> Result<u32> {
        let root = layer.dir.join(ROOT);
        // Nothing is ever left mounted: the references of processes that
        // are gone are dropped by the count itself.
        self.refs
            .put(layer.id, &root)?
            .ok_or_else(|| super::not_mounted(layer))
    }

    fn reconcile_mounts(&self) -> Result<Vec<String>> {
        self.refs.reconcile()
    }

    fn mount_count(&self, layer: LayerDir<'_>) -> Result<u32> {
        self.refs.count(layer.id)
    }

    fn diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        out: &mut dyn Write,
    ) -> Result<u64> {
        let old = parents.last().map(|p| p.dir.join(ROOT));
        let r = export_diff(
            old.as_deref(),
            &layer.dir.join(ROOT),
            out,
            &ExportOptions::default(),
        )?;
        Ok(r.bytes)
    }

    fn changes(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<Vec<Change>> {
        let old = match parents.last() {
            Some(p) => p.dir.join(ROOT),
            None => empty_dir(layer.dir)?,
        };
        changes(&old, &layer.dir.join(ROOT), &ChangesOptions::default())
    }

    fn diff_size(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<u64> {
        content_size(&self.changes(layer, parents)?, &layer.dir.join(ROOT))
    }

    fn status(&self) -> Vec<(String, String)> {
        let mut out = self
            .probe
            .as_ref()
            .map(HostProbe::to_pairs)
            .unwrap_or_default();
        // What `mount()` hands out: the tree itself. Not a fuse-overlayfs
        // mount for a user without root: this distribution's (1.10) fails
        // every lookup of a file without its own override record (ENODATA)
        // and records under its own name, so it cannot show these trees.
        out.push(("mount".to_owned(), "directory".to_owned()));
        out
    }
}
