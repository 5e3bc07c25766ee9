//! Mounting layers, and the references this graph took: given back by
//! `close()` (and when the last clone of the graph is dropped), so an
//! interpreter that exits leaves nothing mounted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::driver::mounter::Mounter;
use crate::driver::LayerDir;
use crate::error::{Error, Result};
use crate::graph::graph::{Graph, Inner};
use crate::graph::layer::Layer;

impl Graph {
    pub(crate) fn mine(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.inner.mine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mount `layer`; a reference not `persist`ed is given back by
    /// [`Graph::close`].
    pub(crate) fn mount(&self, layer: &Layer, writable: bool, persist: bool) -> Result<PathBuf> {
        self.check_open()?;
        let id = layer.id();
        // Under the store lock, shared: a delete (which takes it
        // exclusive) cannot take the layer away between the check that it
        // is there and the reference the driver records.
        let _shared = self.inner.store.read_lock()?;
        if !self.inner.store.layout().has_layer(id)? {
            return Err(self.inner.store.layout().not_found(id));
        }
        let path = self.with_layer(layer, |l, parents| {
            self.inner.driver.get(l, parents, writable, persist)
        })?;
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
}

impl Inner {
    pub(crate) fn release_mine(&self) -> Result<()> {
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
                match self.driver.put(LayerDir { id: &id, dir: &dir }) {
                    Ok(_) => {}
                    // Gone already (unmounted behind our back, or with a
                    // rootless helper that died): the state close wants.
                    Err(Error::NotMounted { .. }) => break,
                    Err(Error::Driver(m)) if m.contains("rootless mount helper") => break,
                    Err(e) => {
                        first.get_or_insert(e);
                        break;
                    }
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

/// Unmount what a writer killed mid-way left mounted under `tmp/` (an init
/// layer is filled through a mount of its staging directory), so that the
/// sweep of `tmp/` can remove it. A staging directory is flocked by its
/// writer for as long as that writer lives, so a mount under a directory
/// whose lock can be taken belongs to no one.
pub(crate) fn sweep_tmp_mounts(tmp: &Path, mounter: &dyn Mounter) -> Result<()> {
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
