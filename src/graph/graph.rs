//! The graph: a store of layers (docs/store.md), its lookups and its
//! lifecycle. What it does to layers lives beside it, one job a file:
//!
//! - `make`: register, create, commit — every layer staged under `tmp/`
//!   and landed whole;
//! - `remove`: delete;
//! - `mounts`: mounts and the references this graph took;
//! - `diffs`: a layer's tar (tar-split or the driver's diff) and changes;
//! - `ancestry`: a layer's ancestors as the driver is handed them.
//!
//! Every layer is made the same way: a staging directory under `tmp/`
//! (taken under the store lock, shared), the slow work (copy, apply, hash)
//! done without the lock, then — under the lock, shared, after checking
//! that the parent is still there — renamed into `layers/<id>`. Removing a
//! layer takes the lock exclusive, so a parent checked under the shared
//! lock cannot vanish before its child lands, and many writers run at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::driver::mounter::{LinuxMounter, Mounter};
use crate::driver::probe::HostProbe;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::graph::layer::Layer;
use crate::graph::layout::Layout;
use crate::graph::mounts::sweep_tmp_mounts;
use crate::graph::store::Store;
use crate::ids;

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
    pub(crate) mine: Mutex<HashMap<String, u32>>,
    pub(crate) closed: AtomicBool,
    /// What `status()["mount"]` says.
    pub(crate) mechanism: String,
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
    /// Open (or make) the store at `root` with `driver` (`"overlay2"`,
    /// `"overlay"`, `"vfs"` or `"auto"`; a store keeps the driver it was
    /// made with).
    ///
    /// Mount counts are reconciled with the kernel's mount table: counts of
    /// processes that are gone are dropped, so a crash never blocks delete.
    pub fn open(root: &Path, driver: &str) -> Result<Graph> {
        // Without CAP_SYS_ADMIN, overlay mounts go through lamina's own
        // user namespace (driver::userns) where the kernel allows one.
        let mounter: Arc<dyn Mounter> =
            if !crate::driver::probe::can_mount() && crate::driver::userns::available().is_ok() {
                Arc::new(crate::driver::userns::UsernsMounter::new())
            } else {
                Arc::new(LinuxMounter)
            };
        Graph::open_with(root, driver, mounter)
    }

    /// [`Graph::open`] mounting through `mounter`.
    pub fn open_with(root: &Path, driver: &str, mounter: Arc<dyn Mounter>) -> Result<Graph> {
        let root = &Store::prepare(root, driver)?;
        sweep_tmp_mounts(&Layout::new(root).tmp_dir(), &*mounter)?;
        let mut probed: Option<HostProbe> = None;
        let mut store = Store::open(root, driver, || {
            let (name, p) = crate::driver::auto(&Layout::new(root).tmp_dir(), &*mounter)?;
            probed = Some(p);
            Ok(name.to_owned())
        })?;
        // In a user namespace of its own (`lamina unshare`) overlayfs
        // mounts with userxattr, as through the rootless helper.
        store.check_overlay_xattrs(
            if mounter.private_namespace() || crate::driver::probe::in_user_namespace() {
                "user"
            } else {
                "trusted"
            },
        )?;
        let layout = store.layout();
        // Facts for status() and mount options: a full probe was run for a
        // new store with "auto"; otherwise one without a test mount.
        let mut probe = probed.or_else(|| HostProbe::run_with(&layout.tmp_dir(), false).ok());
        let mechanism = mount_mechanism(&store.config().driver, &*mounter, probe.as_mut());
        let driver = crate::driver::open(
            &store.config().driver,
            &layout.driver_home(),
            mounter,
            probe,
        )
        .map_err(|e| match e {
            Error::UnknownDriver { name } => Error::corrupt(
                layout.config_path(),
                format!("the store names an unknown storage driver {name:?}"),
            ),
            e => e,
        })?;
        Ok(Graph {
            inner: Arc::new(Inner {
                store,
                driver,
                mine: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                mechanism,
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

    pub(crate) fn check_open(&self) -> Result<()> {
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
            // A full id names that layer only: it is also a prefix of its
            // `-init` layer's id, which a container deleted a moment ago
            // (before its init layer) must not make it find.
            return self.layer(reference);
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
        out.push(("mount".to_owned(), self.inner.mechanism.clone()));
        out.extend(self.inner.driver.status());
        Ok(out)
    }

    /// Unmount what this graph (and its clones) mounted; later mounts and
    /// changes fail. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let r = self.inner.release_mine();
        self.inner.driver.shutdown();
        r
    }
}
/// How the store's layers are mounted, for `status()["mount"]`; a
/// rootless mounter makes the overlay drivers use `userxattr`.
fn mount_mechanism(driver: &str, mounter: &dyn Mounter, probe: Option<&mut HostProbe>) -> String {
    let rootless = mounter.private_namespace();
    // Why a new store's `auto` fell back to vfs, if a test mount said so.
    let mut refused = None;
    if let Some(p) = probe {
        if let Some(Err(e)) = &p.overlay_mounts {
            refused = Some(format!("a test overlay mount failed: {e}"));
        }
        if rootless {
            p.userxattr = true;
            p.can_mount = true;
        }
    }
    if driver == "vfs" {
        let why = if let Some(r) = refused {
            r
        } else if crate::driver::probe::can_mount() || rootless {
            "the store's driver".to_owned()
        } else {
            crate::driver::userns::available()
                .err()
                .unwrap_or_else(|| "the store's driver".to_owned())
        };
        return format!("vfs: plain directories, no mounts ({why})");
    }
    if rootless {
        "kernel overlay in a user namespace (rootless helper)".to_owned()
    } else if crate::driver::probe::in_user_namespace() {
        "kernel overlay in this process's user namespace".to_owned()
    } else {
        "kernel overlay as root".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tar_of;

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
        // A full id never finds its `-init` layer (a delete removes the
        // container first, its init layer a moment later).
        let gone = g
            .create(Some(base.id()), None, true, Metadata::new())
            .unwrap();
        g.delete_id(gone.id()).unwrap();
        assert!(matches!(g.get(gone.id()), Err(Error::LayerNotFound { .. })));
        g.delete(&format!("{}-init", gone.id())).unwrap();
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
