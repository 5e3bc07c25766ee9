//! A layer's merged view, read without mounting, and what dive computes
//! from a chain of layers.
//!
//! The merged view is what `layer.mount()` shows, computed in userspace
//! from the directories the layer's driver stores
//! ([`crate::driver::Driver::stack`]): whiteouts and opaque directories
//! honoured as overlayfs honours them, symlinks resolved inside the view
//! (never outside it), nothing mounted and nothing written, so it works
//! as any user, on every driver.
//!
//! - `stack`: the overlayfs rules over a stack of directories, and path
//!   resolution inside the view.
//! - [`walk`]: an iterative walk of the view, with bounded fds.
//! - [`entry`]: [`Entry`], one entry of the view.
//! - [`image_diff`]: what differs between two images' merged trees, from
//!   the layers they do not share.
//! - [`layers`]: each layer's diff as data (from its tar-split record, or
//!   its driver's change list), and which layer provides an entry.
//! - [`analysis`]: dive's efficiency and wasted bytes, and per layer what
//!   it adds, modifies, removes and hides.
//!
//! The view depends on the graph (to find a layer's chain and directories)
//! and on the [`crate::driver::Driver`] trait; neither depends on it.
//!
//! ```no_run
//! # fn main() -> lamina::Result<()> {
//! let g = lamina::Graph::open(std::path::Path::new("/var/lib/lamina"), "auto")?;
//! let top = g.get("3f2a")?;
//! let view = lamina::view::View::of(&top)?;
//! let passwd = view.stat(std::path::Path::new("/etc/passwd"), false)?;
//! println!("{} bytes, from layer {:?}", passwd.size, passwd.layer);
//! for e in std::sync::Arc::new(view).walk(std::path::Path::new("/etc"))? {
//!     println!("{}", e?.path.display());
//! }
//! # Ok(()) }
//! ```

pub mod analysis;
pub mod entry;
pub mod image_diff;
pub mod layers;
pub(crate) mod stack;
pub mod walk;

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use analysis::{analyze, Inefficiency, LayerReport, PathChange, Report};
pub use entry::{Entry, EntryKind};
pub use image_diff::diff_images;
pub use layers::LayerDiff;
pub use walk::Walk;

use crate::error::{IoContext, Result};
use crate::graph::Layer;
use stack::{Located, Stack};

/// A layer's merged view; see the module docs. Safe to share between
/// threads.
pub struct View {
    pub(crate) stack: Stack,
    /// The chain's layers, base first; empty for a view of bare
    /// directories.
    layers: Vec<Layer>,
    /// Their diffs, for [`Entry::layer`]: read on first need only, so that
    /// `read`, `open` and `exists` never read them (a container's diff is
    /// its change list, which a vfs store computes by comparing trees).
    chain: Mutex<Option<Vec<Arc<LayerDiff>>>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// `path` as the view's byte path.
fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

impl View {
    /// The merged view of `layer` and its chain.
    pub fn of(layer: &Layer) -> Result<View> {
        let mut view = View::bare(layer)?;
        view.layers = layer.chain()?;
        Ok(view)
    }

    /// The view of `layer` without its chain's diffs (`Entry.layer` unset).
    pub(crate) fn bare(layer: &Layer) -> Result<View> {
        let g = layer.graph();
        let dirs = g.with_layer(layer, |l, parents| Ok(g.inner.driver.stack(l, parents)))?;
        View::of_stack(&dirs)
    }

    /// The merged view of directories stacked as a driver stacks them
    /// (uppermost first, each in overlay form); entries name no layer.
    pub fn of_stack(dirs: &[PathBuf]) -> Result<View> {
        Ok(View {
            stack: Stack::open(dirs)?,
            layers: Vec::new(),
            chain: Mutex::new(None),
        })
    }

    /// The ids of the chain's layers, base first (empty for a view of
    /// bare directories).
    pub fn layer_ids(&self) -> Vec<&str> {
        self.layers.iter().map(Layer::id).collect()
    }

    /// The chain's diffs, base first (read once, on first need).
    pub fn diffs(&self) -> Result<Vec<Arc<LayerDiff>>> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        if chain.is_none() {
            *chain = Some(
                self.layers
                    .iter()
                    .map(LayerDiff::of)
                    .collect::<Result<_>>()?,
            );
        }
        Ok(chain.clone().unwrap_or_default())
    }

    /// Which layer provides the entry at `path` (a clean path).
    fn provider(&self, path: &[u8]) -> Result<Option<String>> {
        if self.layers.is_empty() {
            return Ok(None);
        }
        let chain = self.diffs()?;
        Ok(layers::provider(&chain, path).map(|i| chain[i].id.clone()))
    }

    /// The entry a resolution found (symlink target read, provider named).
    pub(crate) fn entry_of(&self, loc: &Located) -> Result<Entry> {
        let dir = loc.parent.as_ref().map(|(d, n)| (d, n.as_os_str()));
        let st = self.stack.shown_stat(dir, &loc.found, &loc.path)?;
        let mut e = Entry::from_stat(&loc.path, &st);
        if loc.found.is_symlink() {
            if let Some((dir, name)) = &loc.parent {
                let t = self.stack.readlink(dir, name, &loc.found, &loc.path)?;
                e.linkname = Some(PathBuf::from(std::ffi::OsString::from_vec(t)));
            }
        }
        e.layer = self.provider(&loc.path)?;
        Ok(e)
    }

    /// The entry at `path`; with `follow_symlinks`, what a symlink there
    /// points to (inside the view). Symlinks on the way are always
    /// followed. `ENOENT`, `ENOTDIR`, `ELOOP` as [`crate::Error::Io`]
    /// naming `path`.
    pub fn stat(&self, path: &Path, follow_symlinks: bool) -> Result<Entry> {
        let loc = self.stack.resolve(bytes(path), follow_symlinks)?;
        self.entry_of(&loc)
    }

    /// Whether there is an entry at `path` (see [`View::stat`]); a path
    /// that is missing, or has a non-directory or a symlink loop on the
    /// way, is not there. Other failures (`EACCES`) are errors.
    pub fn exists(&self, path: &Path, follow_symlinks: bool) -> Result<bool> {
        match self.stack.resolve(bytes(path), follow_symlinks) {
            Ok(_) => Ok(true),
            Err(e)
                if [libc::ENOENT, libc::ENOTDIR, libc::ELOOP]
                    .iter()
                    .any(|&n| e.is_errno(n)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Open the regular file at `path` (symlinks followed inside the view)
    /// for reading.
    pub fn open(&self, path: &Path) -> Result<File> {
        let loc = self.stack.resolve(bytes(path), true)?;
        match &loc.parent {
            Some((dir, name)) if loc.own.is_none() => {
                // A device a rootless apply stored as an empty file is a
                // device.
                let st = self
                    .stack
                    .shown_stat(Some((dir, name)), &loc.found, &loc.path)?;
                let kind = EntryKind::of_stat(&st);
                if !matches!(kind, EntryKind::File | EntryKind::Dir) {
                    return Err(crate::Error::InvalidArgument(format!(
                        "{}: not a regular file ({})",
                        path.display(),
                        kind.name()
                    )));
                }
                self.stack.open_file(dir, name, &loc.found, &loc.path)
            }
            _ => Err(crate::Error::errno("open", path, libc::EISDIR)),
        }
    }

    /// The content of the regular file at `path`.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let mut f = self.open(path)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).at("read", path)?;
        Ok(out)
    }

    /// Every entry at and below `path` (symlinks followed, the last one
    /// too), parents before children, siblings sorted by name bytes.
    pub fn walk(self: Arc<Self>, path: &Path) -> Result<Walk> {
        Walk::new(self, bytes(path))
    }
}

use std::os::unix::ffi::OsStringExt;

#[cfg(test)]
mod tests;
