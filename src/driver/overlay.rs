//! The `overlay` driver: the seed's design (Docker's 2014 overlayfs driver,
//! `daemon/graphdriver/overlayfs`), with its flaws fixed.
//!
//! ```text
//! read-only layer   root/            the full tree: the parent's root/
//!                   merged/          hard-link-copied, the diff applied
//!                                    (mount point of a read-only bind)
//! writable layer    upper/ work/ merged/ [empty/]
//!                   (the one lowerdir is the root/ of the nearest
//!                   read-only ancestor, found in the ancestry the graph
//!                   hands in; without one, the layer's own empty/)
//! ```
//!
//! Layers made before this driver was handed its ancestry also carry a
//! `lower-id` file; it is no longer read (the ancestry says the same).
//!
//! A read-only layer shares file data with its parent through hard links,
//! so nothing may ever write through them: the apply code never writes
//! into an existing inode ([`crate::archive::apply`]), and a read-only
//! layer is only ever mounted read-only (a bind mount), since a write
//! through it would change every layer linked to the inode.
//!
//! A writable layer on a `root/` parent starts with an empty `upper/`
//! (owner and mode of the parent's root, so the merged `/` keeps them); on
//! an overlay parent (a container on its `-init` layer) it has the
//! parent's lower and starts as a full copy of the parent's `upper/`,
//! exactly as the seed's `Create` does.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::changes::{changes, ChangesOptions};
use crate::archive::export::{export_diff, ExportOptions};
use crate::archive::upper::{upper_changes, write_upper_diff};
use crate::archive::{apply_layer_with_record, ApplyOptions, ApplyReport};
use crate::copy::{copy_dir, CopyOptions};
use crate::driver::mount::MountRefs;
use crate::driver::mounter::{MountSpec, Mounter};
use crate::driver::probe::HostProbe;
use crate::driver::vfs::make_root;
use crate::driver::{check_mount_point, content_size, empty_dir, mkdir, Change, Driver, LayerDir};
use crate::error::{Error, IoContext, Result};

/// A read-only layer's full tree.
pub const ROOT: &str = "root";
/// A writable layer's upper directory.
pub const UPPER: &str = "upper";
/// overlayfs's work directory.
pub const WORK: &str = "work";
/// Where a layer is mounted.
pub const MERGED: &str = "merged";
/// The lower of a writable layer with no read-only layer under it.
pub const EMPTY: &str = "empty";

/// The `overlay` driver; see the module docs.
pub struct Overlay {
    refs: MountRefs<Arc<dyn Mounter>>,
    options: Vec<String>,
    probe: Option<HostProbe>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("options", &self.options)
            .finish()
    }
}

impl Overlay {
    /// The overlay driver keeping its mount records in `mounts`, mounting
    /// through `mounter`, with mount options chosen from `probe`
    /// (`userxattr` in a user namespace; `index=off` where the kernel has
    /// the index feature, as moby's overlay2 does since 8422d85087, because
    /// a copied `upper/` carries origin xattrs that an index would reject).
    pub fn new(
        mounts: &Path,
        mounter: Arc<dyn Mounter>,
        probe: Option<HostProbe>,
    ) -> Result<Overlay> {
        let refs = MountRefs::open(mounts, mounter)?;
        let mut options = Vec::new();
        if let Some(p) = &probe {
            if p.userxattr {
                options.push("userxattr".to_owned());
            }
            if p.overlay_parameters.contains_key("index") {
                options.push("index=off".to_owned());
            }
        }
        Ok(Overlay {
            refs,
            options,
            probe,
        })
    }

    /// The mount reference counts (a store reconciles them when opened).
    pub fn refs(&self) -> &MountRefs<Arc<dyn Mounter>> {
        &self.refs
    }

    /// The lowerdir of a writable layer: the `root/` of its nearest
    /// read-only ancestor, or its own `empty/`.
    fn lower_of(dir: &Path, parents: &[LayerDir<'_>]) -> PathBuf {
        parents
            .iter()
            .rev()
            .map(|p| p.dir.join(ROOT))
            .find(|r| r.is_dir())
            .unwrap_or_else(|| dir.join(EMPTY))
    }

    /// The mount of a writable-form layer: read-write with `upper/`, or
    /// read-only with `upper/` as a second lower.
    fn overlay_spec(&self, dir: &Path, parents: &[LayerDir<'_>], writable: bool) -> MountSpec {
        let lower = Self::lower_of(dir, parents);
        let upper = dir.join(UPPER);
        if writable {
            MountSpec::Overlay {
                lower: vec![lower],
                upper: Some(upper),
                work: Some(dir.join(WORK)),
                options: self.options.clone(),
                relative: None,
            }
        } else {
            MountSpec::Overlay {
                lower: vec![upper, lower],
                upper: None,
                work: None,
                options: self.options.clone(),
                relative: None,
            }
        }
    }
}

impl Overlay {
    /// Run `f` with the tree a writable-form layer's `upper/` is compared
    /// with: its parent's view. That is the lower itself when the parent is
    /// a read-only layer; a container on its `-init` layer, whose `upper/`
    /// started as a copy of the init layer's, is compared with the init
    /// layer's merged view, mounted read-only for the time of `f`, so the
    /// init layer's files (equal to what they shadow there) are not the
    /// container's changes and only the paths of the container's `upper/`
    /// are looked at.
    fn with_lower_view<T>(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        match parents.split_last() {
            Some((p, above)) if p.dir.join(UPPER).is_dir() => {
                super::with_mounted(self, *p, above, false, f)
            }
            _ => f(&Self::lower_of(layer.dir, parents)),
        }
    }
}

/// `upper/` with the owner and mode of `like` (the lower's root), so the
/// merged view's `/` is the image's.
fn make_upper(upper: &Path, like: &Path) -> Result<()> {
    let m = like.symlink_metadata().at("lstat", like)?;
    mkdir(upper, m.mode() & 0o7777)?;
    if m.uid() != rustix::process::getuid().as_raw()
        || m.gid() != rustix::process::getgid().as_raw()
    {
        std::os::unix::fs::lchown(upper, Some(m.uid()), Some(m.gid())).at("lchown", upper)?;
        // chown clears setuid/setgid bits on some filesystems.
        std::fs::set_permissions(upper, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .at("chmod", upper)?;
    }
    Ok(())
}

impl Driver for Overlay {
    fn namespace_holder(&self) -> Option<u32> {
        self.refs.mounter().namespace_holder()
    }

    fn name(&self) -> &'static str {
        "overlay"
    }

    fn create(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        let dir = layer.dir;
        let upper = dir.join(UPPER);
        let lower = Self::lower_of(dir, parents);
        if lower.starts_with(dir) {
            // No read-only layer below: an empty lower of its own.
            make_root(&lower)?;
        }
        match parents.last() {
            Some(p) if p.dir.join(UPPER).is_dir() => {
                // The seed: the parent's lower, and a copy of its upper. A
                // full copy: this upper is written in place by overlayfs.
                copy_dir(&p.dir.join(UPPER), &upper, &CopyOptions::new())?;
            }
            Some(p) if !p.dir.join(ROOT).is_dir() => {
                return Err(Error::Driver(format!(
                    "layer {} has neither root/ nor upper/",
                    p.id
                )))
            }
            _ => make_upper(&upper, &lower)?,
        }
        mkdir(&dir.join(WORK), 0o700)?;
        mkdir(&dir.join(MERGED), 0o700)
    }

    fn create_init(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        self.create(layer, parents)?;
        // Written through a mount, as Docker does, so that overlayfs copies
        // up each parent directory with the lower's owner and mode.
        let merged = layer.dir.join(MERGED);
        check_mount_point(&merged)?;
        let spec = self.overlay_spec(layer.dir, parents, true);
        let m = self.refs.mounter();
        m.mount(&spec, &merged)?;
        let r = crate::init_layer::setup_init_layer(&merged);
        let u = m.unmount(&merged);
        r?;
        u?;
        // overlayfs leaves its scratch dir in work/; drop it so that a copy
        // of this layer starts clean.
        let _ = std::fs::remove_dir_all(layer.dir.join(WORK).join("work"));
        Ok(())
    }

    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        diff: &mut (dyn Read + Send),
        record: &mut dyn Write,
    ) -> Result<ApplyReport> {
        let root = layer.dir.join(ROOT);
        match parents.last() {
            Some(p) => {
                let proot = p.dir.join(ROOT);
                if !proot.is_dir() {
                    return Err(Error::InvalidArgument(format!(
                        "layer {} is not a read-only layer with a full tree; \
                         a layer can be registered only on one",
                        p.id
                    )));
                }
                // The seed's ApplyDiff: hard-link-copy, then apply on top.
                copy_dir(&proot, &root, &CopyOptions::new().hardlink(true))?;
            }
            None => make_root(&root)?,
        }
        let report = apply_layer_with_record(&root, diff, &ApplyOptions::default(), record)?;
        mkdir(&layer.dir.join(MERGED), 0o700)?;
        Ok(report)
    }

    fn tree(&self, layer: LayerDir<'_>) -> Option<PathBuf> {
        let root = layer.dir.join(ROOT);
        root.is_dir().then_some(root)
    }

    fn stack(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Vec<PathBuf> {
        match self.tree(layer) {
            Some(root) => vec![root],
            None => vec![layer.dir.join(UPPER), Self::lower_of(layer.dir, parents)],
        }
    }

    fn remove(
        &self,
        layer: LayerDir<'_>,
        remove_dir: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let txn = self.refs.transaction()?;
        txn.release(layer.id, &layer.dir.join(MERGED))?;
        super::refuse_mounts_inside(layer)?;
        remove_dir()
    }

    fn exists(&self, layer: LayerDir<'_>) -> bool {
        let d = layer.dir;
        d.join(ROOT).is_dir()
            || (d.join(UPPER).is_dir() && d.join(WORK).is_dir() && d.join(MERGED).is_dir())
    }

    fn get(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        writable: bool,
        persist: bool,
    ) -> Result<PathBuf> {
        let merged = layer.dir.join(MERGED);
        check_mount_point(&merged)?;
        let root = layer.dir.join(ROOT);
        let spec = if root.is_dir() {
            if writable {
                return Err(Error::InvalidArgument(format!(
                    "layer {} is read-only: its files are shared with other layers",
                    layer.id
                )));
            }
            MountSpec::ReadOnlyBind { source: root }
        } else {
            self.overlay_spec(layer.dir, parents, writable)
        };
        self.refs.get(layer.id, &merged, &spec, persist)?;
        Ok(merged)
    }

    fn put(&self, layer: LayerDir<'_>) -> Result<u32> {
        self.refs
            .put_mount(layer.id, &layer.dir.join(MERGED))?
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
        let root = layer.dir.join(ROOT);
        if root.is_dir() {
            let old = parents.last().map(|p| p.dir.join(ROOT));
            let r = export_diff(old.as_deref(), &root, out, &ExportOptions::default())?;
            return Ok(r.bytes);
        }
        self.with_lower_view(layer, parents, |lower| {
            let upper = layer.dir.join(UPPER);
            let r = write_upper_diff(&upper, lower, &mut *out, &ExportOptions::default())?;
            Ok(r.bytes)
        })
    }

    fn changes(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<Vec<Change>> {
        let root = layer.dir.join(ROOT);
        if root.is_dir() {
            let old = match parents.last() {
                Some(p) => p.dir.join(ROOT),
                None => empty_dir(layer.dir)?,
            };
            return changes(&old, &root, &ChangesOptions::default());
        }
        self.with_lower_view(layer, parents, |lower| {
            upper_changes(&layer.dir.join(UPPER), lower)
        })
    }

    fn diff_size(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<u64> {
        let c = self.changes(layer, parents)?;
        let root = layer.dir.join(ROOT);
        let tree = if root.is_dir() {
            root
        } else {
            layer.dir.join(UPPER)
        };
        content_size(&c, &tree)
    }

    fn status(&self) -> Vec<(String, String)> {
        let mut out = self
            .probe
            .as_ref()
            .map(HostProbe::to_pairs)
            .unwrap_or_default();
        out.push(("mount_options".to_owned(), self.options.join(",")));
        out
    }
}
