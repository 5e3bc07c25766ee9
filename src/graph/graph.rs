//! The graph: layers made, found and removed in a store (DESIGN.md §3–§4).
//!
//! Every layer is made the same way: a staging directory under `tmp/`
//! (taken under the store lock, shared), the slow work (copy, apply, hash)
//! done without the lock, then — under the lock, shared, after checking
//! that the parent is still there — renamed into `layers/<id>`. Removing a
//! layer takes the lock exclusive, so a parent checked under the shared
//! lock cannot vanish before its child lands, and many writers run at once.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::driver::mounter::{LinuxMounter, Mounter};
use crate::driver::overlay::Overlay;
use crate::driver::probe::HostProbe;
use crate::driver::vfs::Vfs;
use crate::driver::{Change, Driver, LayerDir};
use crate::error::{Error, IoContext, Result};
use crate::graph::ids;
use crate::graph::layer::Layer;
use crate::graph::record::LayerRecord;
use crate::graph::store::Store;

pub use crate::graph::layout::TAR_SPLIT;

/// User metadata: any JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A layer store; cheap to clone (clones share one open store) and safe to
/// share between threads.
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) driver: Box<dyn Driver>,
    /// Mount references this graph took (and gives back on close).
    mine: Mutex<HashMap<String, u32>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("root", &self.root())
            .field("driver", &self.driver_name())
            .finish()
    }
}

impl Graph {
    /// Open (or make) the store at `root` with `driver` (`"overlay"`,
    /// `"vfs"` or `"auto"`; a store keeps the driver it was made with).
    ///
    /// Mount counts are reconciled with the kernel's mount table: counts of
    /// processes that are gone are dropped, so a crash never blocks delete.
    pub fn open(root: &Path, driver: &str) -> Result<Graph> {
        Graph::open_with(root, driver, Arc::new(LinuxMounter))
    }

    /// [`Graph::open`] mounting through `mounter`.
    pub fn open_with(root: &Path, driver: &str, mounter: Arc<dyn Mounter>) -> Result<Graph> {
        let root = &Store::prepare(root, driver)?;
        sweep_tmp_mounts(
            &crate::graph::layout::Layout::new(root).tmp_dir(),
            &*mounter,
        )?;
        let mut probed: Option<HostProbe> = None;
        let store = Store::open(root, driver, || {
            let tmp = crate::graph::layout::Layout::new(root).tmp_dir();
            let p = HostProbe::run(&tmp)?;
            let name = p.auto_driver().to_owned();
            probed = Some(p);
            Ok(name)
        })?;
        let tmp = store.layout().tmp_dir();
        let name = store.config().driver.clone();
        let driver: Box<dyn Driver> = match name.as_str() {
            "vfs" => {
                let probe = match probed {
                    Some(p) => Some(p),
                    None => HostProbe::run_with(&tmp, false).ok(),
                };
                let d = Vfs::new(store.layout(), probe)?;
                d.refs().transaction()?.reconcile()?;
                Box::new(d)
            }
            "overlay" => {
                let probe = match probed {
                    Some(p) => Some(p),
                    None => HostProbe::run_with(&tmp, false).ok(),
                };
                let d = Overlay::new(store.layout().clone(), mounter, probe)?;
                d.refs().transaction()?.reconcile()?;
                Box::new(d)
            }
            other => {
                return Err(Error::corrupt(
                    store.layout().config_path(),
                    format!("the store names an unknown storage driver {other:?}"),
                ))
            }
        };
        Ok(Graph {
            inner: Arc::new(Inner {
                store,
                driver,
                mine: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.inner.store.layout().root()
    }

    /// The store's driver name.
    pub fn driver_name(&self) -> &str {
        self.inner.driver.name()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn layer_dir(&self, id: &str) -> Result<PathBuf> {
        self.inner.store.layout().layer_dir(id)
    }

    /// The layer `id` exactly (no prefix lookup).
    pub(crate) fn layer(&self, id: &str) -> Result<Layer> {
        let rec = self.inner.store.layout().read_layer(id)?;
        Ok(Layer::new(self.clone(), rec))
    }

    /// The layer named by `reference`: a full id or a unique prefix.
    pub fn get(&self, reference: &str) -> Result<Layer> {
        if ids::is_valid_id(reference) {
            if let Ok(l) = self.layer(reference) {
                return Ok(l);
            }
        }
        let layout = self.inner.store.layout();
        let all = layout.layer_ids()?;
        let id = ids::resolve_prefix(all.iter().map(String::as_str), reference, layout.root())?;
        self.layer(&id)
    }

    /// Whether `reference` names exactly one layer.
    pub fn contains(&self, reference: &str) -> Result<bool> {
        match self.get(reference) {
            Ok(_) => Ok(true),
            Err(Error::LayerNotFound { .. }) | Err(Error::AmbiguousLayer { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every layer, oldest first.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let mut out = Vec::new();
        for id in self.inner.store.layout().layer_ids()? {
            match self.layer(&id) {
                Ok(l) => out.push(l),
                // Deleted since it was listed.
                Err(Error::LayerNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.created(), a.id()).cmp(&(b.created(), b.id())));
        Ok(out)
    }

    /// The layers no other layer has as parent.
    pub fn heads(&self) -> Result<Vec<Layer>> {
        let all = self.layers()?;
        let parents: std::collections::HashSet<String> = all
            .iter()
            .filter_map(|l| l.parent_id().map(str::to_owned))
            .collect();
        Ok(all
            .into_iter()
            .filter(|l| !parents.contains(l.id()))
            .collect())
    }

    /// Number of layers.
    pub fn len(&self) -> Result<usize> {
        Ok(self.inner.store.layout().layer_ids()?.len())
    }

    /// Whether the store has no layer.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A parent for a new layer: it must exist and not be writable (a
    /// writable layer changes under its children; commit it first).
    fn parent_for_child(&self, reference: Option<&str>) -> Result<Option<Layer>> {
        let Some(r) = reference else { return Ok(None) };
        let p = self.get(r)?;
        if p.writable() {
            return Err(Error::InvalidArgument(format!(
                "layer {} is writable and cannot be a parent; commit it first",
                p.id()
            )));
        }
        Ok(Some(p))
    }

    /// Register the tar diff read from `source` (plain, gzip or zstd) as a
    /// read-only layer on `parent` (an id or prefix).
    ///
    /// The tar is applied, hashed (its diff id) and recorded for exact
    /// reassembly in one streaming pass. Without `id`, the layer's id is
    /// the hex of its chain id, so the same diff on the same parent is
    /// stored once: registering it again returns the existing layer.
    pub fn register(
        &self,
        source: &mut (dyn Read + Send),
        parent: Option<&str>,
        id: Option<&str>,
        metadata: Metadata,
    ) -> Result<Layer> {
        self.check_open()?;
        let parent = self.parent_for_child(parent)?;
        if let Some(p) = parent.as_ref().filter(|p| p.chain_id().is_none()) {
            return Err(Error::InvalidArgument(format!(
                "layer {} has no chain id (an init layer): register on an image layer",
                p.id()
            )));
        }
        if let Some(id) = id {
            user_id(id)?;
            if self.inner.store.layout().has_layer(id)? {
                return Err(Error::LayerExists(id.to_owned()));
            }
        }
        let defaulted = id.is_none();
        let made = self.stage_layer("register", parent.as_ref(), |dir, pdir| {
            let split = dir.join(TAR_SPLIT);
            let f = create_private(&split)?;
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            let me = LayerDir {
                id: id.unwrap_or("(new layer)"),
                dir,
            };
            let report = self.inner.driver.apply_diff(me, pdir, source, &mut w)?;
            w.flush().at("write", &split)?;
            let chain = ids::chain_id(parent.as_ref().and_then(|p| p.chain_id()), &report.diff_id)?;
            let id = match id {
                Some(i) => i.to_owned(),
                None => ids::digest_hex(&chain)?.to_owned(),
            };
            let mut rec = LayerRecord::new(&id, parent.as_ref().map(|p| p.id()), false);
            rec.diff_id = Some(report.diff_id);
            rec.chain_id = Some(chain);
            rec.size = report.content_bytes;
            rec.tar_size = Some(report.bytes);
            rec.metadata = metadata;
            Ok(rec)
        });
        match made {
            // The same diff on the same parent, registered before (or by a
            // concurrent writer just now): one copy is enough.
            Err(Error::LayerExists(id)) if defaulted => self.layer(&id),
            made => made,
        }
    }

    /// Make a layer: a staging directory under `tmp/` (taken under the
    /// store lock, shared) is filled by `build`, which is given it and the
    /// parent as the driver sees it and returns the layer's record; the
    /// directory then lands as `layers/<id>`.
    fn stage_layer(
        &self,
        purpose: &str,
        parent: Option<&Layer>,
        build: impl FnOnce(&Path, Option<LayerDir<'_>>) -> Result<LayerRecord>,
    ) -> Result<Layer> {
        let layout = self.inner.store.layout();
        let st = layout.stage(&self.inner.store.read_lock()?, purpose)?;
        let pdir = parent.map(|p| self.layer_dir(p.id())).transpose()?;
        let p = parent
            .zip(pdir.as_deref())
            .map(|(p, dir)| LayerDir { id: p.id(), dir });
        let rec = build(st.path(), p).map_err(|e| self.gone_or(parent, e))?;
        st.write_record(&rec)?;
        self.land(st, parent, &rec.id)?;
        Ok(Layer::new(self.clone(), rec))
    }

    /// `e`, or [`Error::LayerNotFound`] when `layer` was deleted meanwhile
    /// (by another process): what failed on its vanished files is not
    /// the cause.
    fn gone_or(&self, layer: Option<&Layer>, e: Error) -> Error {
        match layer {
            Some(l) if matches!(self.inner.store.layout().has_layer(l.id()), Ok(false)) => {
                self.inner.store.layout().not_found(l.id())
            }
            _ => e,
        }
    }

    /// Rename a staged layer into place, under the store lock (shared)
    /// after checking its parent is still there.
    fn land(&self, st: crate::graph::Staging, parent: Option<&Layer>, id: &str) -> Result<()> {
        let layout = self.inner.store.layout();
        let g = self.inner.store.read_lock()?;
        if let Some(p) = parent {
            if !layout.has_layer(p.id())? {
                // The parent was deleted meanwhile.
                return Err(layout.not_found(p.id()));
            }
        }
        st.commit(&g, layout, id)?;
        Ok(())
    }

    /// Create a writable layer on `parent` (an id or prefix). With `init`,
    /// a `<id>-init` layer made by [`crate::setup_init_layer`] sits between
    /// the parent and it, as Docker builds a container's rootfs. Without
    /// `id`, a random one.
    pub fn create(
        &self,
        parent: Option<&str>,
        id: Option<&str>,
        init: bool,
        metadata: Metadata,
    ) -> Result<Layer> {
        self.check_open()?;
        let parent = self.parent_for_child(parent)?;
        let id = match id {
            Some(i) => {
                user_id(i)?;
                i.to_owned()
            }
            None => ids::random_id()?,
        };
        let layout = self.inner.store.layout();
        if layout.has_layer(&id)? {
            return Err(Error::LayerExists(id));
        }
        let mut under = parent;
        if init {
            let iid = ids::init_id(&id)?;
            if layout.has_layer(&iid)? {
                return Err(Error::LayerExists(iid));
            }
            let made = self.stage_layer("init", under.as_ref(), |dir, pdir| {
                let me = LayerDir { id: &iid, dir };
                self.inner.driver.create_init(me, pdir)?;
                Ok(LayerRecord::new(&iid, pdir.map(|p| p.id), false))
            })?;
            under = Some(made);
        }
        let made = self.stage_layer("create", under.as_ref(), |dir, pdir| {
            self.inner.driver.create(LayerDir { id: &id, dir }, pdir)?;
            let mut rec = LayerRecord::new(&id, pdir.map(|p| p.id), true);
            rec.metadata = metadata;
            Ok(rec)
        });
        if made.is_err() && init {
            // Do not leave an init layer with no container on it.
            if let Some(u) = &under {
                let _ = self.delete_id(u.id());
            }
        }
        made
    }

    /// Delete the layer named by `reference`. Refused with
    /// [`Error::LayerInUse`] while it is mounted or has children. A
    /// container's `-init` layer goes with it.
    pub fn delete(&self, reference: &str) -> Result<()> {
        self.check_open()?;
        let layer = self.get(reference)?;
        self.delete_id(layer.id())?;
        if let Some(p) = layer.parent_id() {
            if ids::init_id(layer.id()).ok().as_deref() == Some(p) {
                match self.delete_id(p) {
                    Ok(()) | Err(Error::LayerInUse { .. }) | Err(Error::LayerNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn delete_id(&self, id: &str) -> Result<()> {
        let layout = self.inner.store.layout();
        let g = self.inner.store.write_lock()?;
        if !layout.has_layer(id)? {
            return Err(layout.not_found(id));
        }
        for other in layout.layer_ids()? {
            if other == id {
                continue;
            }
            if let Ok(r) = layout.read_layer(&other) {
                if r.parent.as_deref() == Some(id) {
                    return Err(Error::LayerInUse {
                        id: id.to_owned(),
                        why: format!("it has the child layer {other}"),
                    });
                }
            }
        }
        let dir = layout.layer_dir(id)?;
        self.inner
            .driver
            .remove(LayerDir { id, dir: &dir }, &mut || {
                layout.remove_layer(&g, id)
            })?;
        self.mine().remove(id);
        Ok(())
    }

    /// Facts about the store and the host: driver, root, layer counts,
    /// backing filesystem, d_type, kernel features.
    pub fn status(&self) -> Result<Vec<(String, String)>> {
        let layers = self.layers()?;
        let mut out = vec![
            ("driver".to_owned(), self.driver_name().to_owned()),
            ("root".to_owned(), self.root().display().to_string()),
            ("layers".to_owned(), layers.len().to_string()),
            (
                "writable_layers".to_owned(),
                layers.iter().filter(|l| l.writable()).count().to_string(),
            ),
        ];
        out.extend(self.inner.driver.status());
        Ok(out)
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.inner.mine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mount layer `id`; a reference not `persist`ed is given back by
    /// [`Graph::close`].
    pub(crate) fn mount(&self, id: &str, writable: bool, persist: bool) -> Result<PathBuf> {
        self.check_open()?;
        let dir = self.layer_dir(id)?;
        let path = self
            .inner
            .driver
            .get(LayerDir { id, dir: &dir }, writable, persist)?;
        if !persist {
            *self.mine().entry(id.to_owned()).or_insert(0) += 1;
        }
        Ok(path)
    }

    /// Give back one mount reference to layer `id`.
    pub(crate) fn unmount(&self, id: &str) -> Result<u32> {
        let dir = self.layer_dir(id)?;
        let left = self.inner.driver.put(LayerDir { id, dir: &dir })?;
        let mut mine = self.mine();
        if let Some(n) = mine.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                mine.remove(id);
            }
        }
        Ok(left)
    }

    pub(crate) fn mount_count(&self, id: &str) -> Result<u32> {
        let dir = self.layer_dir(id)?;
        self.inner.driver.mount_count(LayerDir { id, dir: &dir })
    }

    /// Unmount what this graph (and its clones) mounted; later mounts and
    /// changes fail. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.release_mine()
    }

    /// Layer `id` and its parent as the driver sees them.
    fn with_dirs<T>(
        &self,
        layer: &Layer,
        f: impl FnOnce(LayerDir<'_>, Option<LayerDir<'_>>) -> Result<T>,
    ) -> Result<T> {
        let dir = self.layer_dir(layer.id())?;
        let pdir = layer.parent_id().map(|p| self.layer_dir(p)).transpose()?;
        f(
            LayerDir {
                id: layer.id(),
                dir: &dir,
            },
            layer
                .parent_id()
                .zip(pdir.as_deref())
                .map(|(id, dir)| LayerDir { id, dir }),
        )
    }

    /// Write the layer's tar to `out`: for a registered layer the exact
    /// bytes it was registered from (reassembled from its tar-split record,
    /// as Docker's `TarLayer`); otherwise the driver's diff.
    pub(crate) fn diff(&self, layer: &Layer, out: &mut dyn Write) -> Result<u64> {
        let dir = self.layer_dir(layer.id())?;
        let split = dir.join(TAR_SPLIT);
        match crate::fs::private::open(&split)? {
            Some(f) => {
                let l = LayerDir {
                    id: layer.id(),
                    dir: &dir,
                };
                let tree = self.inner.driver.tree(l).ok_or_else(|| {
                    Error::corrupt(&dir, "a tar-split record but no tree to reassemble from")
                })?;
                crate::archive::reassemble(std::io::BufReader::new(f), &tree, out).map_err(|e| {
                    match e {
                        // The record is the store's file; say which.
                        Error::Corrupt { path, what }
                            if path == Path::new(crate::archive::tarsplit::RECORD) =>
                        {
                            Error::corrupt(&split, what)
                        }
                        e => e,
                    }
                })
            }
            None => self.with_dirs(layer, |l, p| self.inner.driver.diff(l, p, out)),
        }
    }

    /// The paths the layer changes against its parent.
    pub(crate) fn changes(&self, layer: &Layer) -> Result<Vec<Change>> {
        self.with_dirs(layer, |l, p| self.inner.driver.changes(l, p))
    }

    /// Bytes of file content the layer adds or changes.
    pub(crate) fn diff_size(&self, layer: &Layer) -> Result<u64> {
        self.with_dirs(layer, |l, p| self.inner.driver.diff_size(l, p))
    }

    /// Make the changes of the writable `layer` a new read-only layer on
    /// the same image layer (what `docker commit` does: a container's
    /// `-init` layer is not part of the image), with its own diff id.
    pub fn commit(&self, layer: &Layer, metadata: Metadata) -> Result<Layer> {
        self.check_open()?;
        if !layer.writable() {
            return Err(Error::InvalidArgument(format!(
                "layer {} is read-only; only a writable layer can be committed",
                layer.id()
            )));
        }
        let mut target = layer.parent_id().map(str::to_owned);
        if let Some(p) = &target {
            if ids::init_id(layer.id()).ok().as_deref() == Some(p.as_str()) {
                target = self.layer(p)?.parent_id().map(str::to_owned);
            }
        }
        let layout = self.inner.store.layout();
        let st = layout.stage(&self.inner.store.read_lock()?, "commit")?;
        let path = st.path().join("diff.tar");
        {
            let f = create_private(&path)?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            self.diff(layer, &mut w)
                .map_err(|e| self.gone_or(Some(layer), e))?;
            w.flush().at("write", &path)?;
        }
        let mut f = std::fs::File::open(&path).at("open", &path)?;
        let made = self.register(&mut f, target.as_deref(), None, metadata)?;
        st.remove()?;
        Ok(made)
    }
}

impl Inner {
    fn release_mine(&self) -> Result<()> {
        let taken: Vec<(String, u32)> = self
            .mine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut first = None;
        for (id, n) in taken {
            let Ok(dir) = self.store.layout().layer_dir(&id) else {
                continue;
            };
            for _ in 0..n {
                if let Err(e) = self.driver.put(LayerDir { id: &id, dir: &dir }) {
                    first.get_or_insert(e);
                    break;
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.release_mine();
    }
}

/// Check an id a caller chose for a new layer: a valid id, and not one of
/// the `<id>-init` names, which belong to the init layers `create` makes
/// (deleting a container deletes its `-init` layer with it).
fn user_id(id: &str) -> Result<()> {
    ids::validate_id(id)?;
    if ids::is_init_id(id) {
        return Err(Error::InvalidArgument(format!(
            "{id}: ids ending in -init are reserved for init layers"
        )));
    }
    Ok(())
}

fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::graph::layout::FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .at("create", path)
}

/// Unmount what a writer killed mid-way left mounted under `tmp/` (an init
/// layer is filled through a mount of its staging directory), so that the
/// sweep of `tmp/` can remove it. A staging directory is flocked by its
/// writer for as long as that writer lives, so a mount under a directory
/// whose lock can be taken belongs to no one.
fn sweep_tmp_mounts(tmp: &Path, mounter: &dyn Mounter) -> Result<()> {
    use rustix::fs::FlockOperation;
    let Ok(points) = mounter.mount_points() else {
        return Ok(());
    };
    let mut stale: Vec<PathBuf> = points
        .into_iter()
        .filter(|p| p.starts_with(tmp) && p != tmp)
        .collect();
    // Deepest first.
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in stale {
        let Ok(rel) = point.strip_prefix(tmp) else {
            continue;
        };
        let Some(first) = rel.components().next() else {
            continue;
        };
        let staging = tmp.join(first);
        let Ok(dir) = std::fs::File::open(&staging) else {
            continue;
        };
        if rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_ok() {
            mounter.unmount(&point)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar of a small tree, made by the export writer.
    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let t = tempfile::tempdir().unwrap();
        for (p, data) in files {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        let mut out = Vec::new();
        crate::archive::export::export_diff(None, t.path(), &mut out, &Default::default()).unwrap();
        out
    }

    #[test]
    fn vfs_lifecycle() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Graph::open(&tmp.path().join("store"), "vfs").unwrap();
        let base_tar = tar_of(&[("etc/hosts", "h\n"), ("bin/sh", "sh\n")]);
        let base = g
            .register(&mut &base_tar[..], None, None, Metadata::new())
            .unwrap();
        assert_eq!(base.diff_id(), Some(ids::sha256_digest(&base_tar).as_str()));
        assert_eq!(Some(base.id()), base.chain_id().map(|c| &c[7..]));
        let again = g
            .register(&mut &base_tar[..], None, None, Metadata::new())
            .unwrap();
        assert_eq!(again.id(), base.id());
        let mut out = Vec::new();
        base.diff(&mut out).unwrap();
        assert_eq!(out, base_tar);

        let c = g
            .create(Some(&base.id()[..8]), None, true, Metadata::new())
            .unwrap();
        assert_eq!(c.parent_id(), Some(ids::init_id(c.id()).unwrap().as_str()));
        let root = c.mount(false).unwrap();
        std::fs::write(root.join("new"), "n").unwrap();
        std::fs::remove_file(root.join("bin/sh")).unwrap();
        assert!(matches!(g.delete(c.id()), Err(Error::LayerInUse { .. })));
        c.unmount().unwrap();
        let kinds: Vec<_> = c
            .changes()
            .unwrap()
            .into_iter()
            .map(|ch| (ch.path.display().to_string(), ch.kind.code()))
            .collect();
        assert_eq!(
            kinds,
            [("/bin", "C"), ("/bin/sh", "D"), ("/new", "A")].map(|(p, k)| (p.to_owned(), k))
        );
        let img = g.commit(&c, Metadata::new()).unwrap();
        assert_eq!(img.parent_id(), Some(base.id()));
        assert!(matches!(g.delete(base.id()), Err(Error::LayerInUse { .. })));
        g.delete(c.id()).unwrap();
        assert_eq!(g.len().unwrap(), 2);
        assert_eq!(g.heads().unwrap().len(), 1);
        g.close().unwrap();
        assert!(g.create(None, None, false, Metadata::new()).is_err());
    }
}
