//! The `vfs` driver: every layer is a full, independent copy of its tree.
//!
//! moby's `vfs` graphdriver, for hosts where overlayfs does not work (no
//! kernel support, no d_type, no mount rights). A layer is `root/`: the
//! parent's tree copied in full (data shared by reflink where the
//! filesystem can, see [`crate::copy`]), then the diff applied. Nothing is
//! ever shared between layers, so nothing needs mounting: "mounting" a
//! layer returns its `root/` (writable or not, it is the caller's copy).
//!
//! Mount references are counted per open graph, in memory: with no kernel
//! mount there is nothing another process could see or leak, so `delete`
//! is refused only while the graph that deletes holds a reference.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::archive::changes::{changes, ChangesOptions};
use crate::archive::export::{export_diff, ExportOptions};
use crate::archive::{apply_layer_with_record, ApplyOptions, ApplyReport};
use crate::copy::{copy_dir, CopyOptions};
use crate::driver::{content_size, empty_dir, probe::HostProbe, Change, Driver, LayerDir};
use crate::error::{Error, IoContext, Result};

/// The directory of a layer's tree.
pub const ROOT: &str = "root";

/// The `vfs` driver; see the module docs.
#[derive(Debug)]
pub struct Vfs {
    refs: Mutex<HashMap<String, u32>>,
    probe: Option<HostProbe>,
}

impl Vfs {
    /// A vfs driver; `probe` (if any) is reported by `status()`.
    pub fn new(probe: Option<HostProbe>) -> Vfs {
        Vfs {
            refs: Mutex::new(HashMap::new()),
            probe,
        }
    }

    fn refs(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.refs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `dst` as a full copy of `parent`'s tree, or an empty 0755 directory for
/// a base layer.
fn copy_parent(dst: &Path, parent: Option<LayerDir<'_>>) -> Result<()> {
    match parent {
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

    fn create(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<()> {
        copy_parent(&layer.dir.join(ROOT), parent)
    }

    fn create_init(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<()> {
        let root = layer.dir.join(ROOT);
        copy_parent(&root, parent)?;
        crate::init_layer::setup_init_layer(&root)
    }

    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parent: Option<LayerDir<'_>>,
        diff: &mut (dyn Read + Send),
        record: &mut dyn Write,
    ) -> Result<ApplyReport> {
        let root = layer.dir.join(ROOT);
        copy_parent(&root, parent)?;
        apply_layer_with_record(&root, diff, &ApplyOptions::default(), record)
    }

    fn tree(&self, layer: LayerDir<'_>) -> Option<PathBuf> {
        Some(layer.dir.join(ROOT))
    }

    fn remove(
        &self,
        layer: LayerDir<'_>,
        remove_dir: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let refs = self.refs();
        if let Some(n) = refs.get(layer.id).filter(|n| **n > 0) {
            return Err(Error::LayerInUse(format!(
                "{} is mounted {n} time(s)",
                layer.id
            )));
        }
        remove_dir()
    }

    fn exists(&self, layer: LayerDir<'_>) -> bool {
        layer.dir.join(ROOT).is_dir()
    }

    fn get(&self, layer: LayerDir<'_>, _writable: bool) -> Result<PathBuf> {
        let root = layer.dir.join(ROOT);
        if !root.is_dir() {
            return Err(Error::Driver(format!("layer {} has no tree", layer.id)));
        }
        *self.refs().entry(layer.id.to_owned()).or_insert(0) += 1;
        Ok(root)
    }

    fn put(&self, layer: LayerDir<'_>) -> Result<u32> {
        let mut refs = self.refs();
        match refs.get_mut(layer.id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                let left = *n;
                if left == 0 {
                    refs.remove(layer.id);
                }
                Ok(left)
            }
            // Nothing to give back: vfs never mounts, so a layer "mounted"
            // by a process that is gone is not mounted at all.
            _ => Ok(0),
        }
    }

    fn mount_count(&self, layer: LayerDir<'_>) -> Result<u32> {
        Ok(self.refs().get(layer.id).copied().unwrap_or(0))
    }

    fn diff(
        &self,
        layer: LayerDir<'_>,
        parent: Option<LayerDir<'_>>,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let old = parent.map(|p| p.dir.join(ROOT));
        let r = export_diff(
            old.as_deref(),
            &layer.dir.join(ROOT),
            out,
            &ExportOptions::default(),
        )?;
        Ok(r.bytes)
    }

    fn changes(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<Vec<Change>> {
        let old = match parent {
            Some(p) => p.dir.join(ROOT),
            None => empty_dir(layer.dir)?,
        };
        changes(&old, &layer.dir.join(ROOT), &ChangesOptions::default())
    }

    fn diff_size(&self, layer: LayerDir<'_>, parent: Option<LayerDir<'_>>) -> Result<u64> {
        content_size(&self.changes(layer, parent)?, &layer.dir.join(ROOT))
    }

    fn status(&self) -> Vec<(String, String)> {
        self.probe
            .as_ref()
            .map(HostProbe::to_pairs)
            .unwrap_or_default()
    }
}
