//! A layer's tar and its changes: a registered layer's exact bytes come
//! from its tar-split record (as Docker's `TarLayer`); anything else is
//! the driver's diff against the layer's ancestry.

use std::io::Write;
use std::path::Path;

use crate::driver::{Change, LayerDir};
use crate::error::{Error, Result};
use crate::graph::graph::{Graph, TAR_SPLIT};
use crate::graph::layer::Layer;

impl Graph {
    /// Write the layer's tar to `out`: for a registered layer the exact
    /// bytes it was registered from (reassembled from its tar-split record,
    /// as Docker's `TarLayer`); otherwise the driver's diff.
    pub(crate) fn diff(&self, layer: &Layer, out: &mut dyn Write) -> Result<u64> {
        self.diff_of(layer, out)
            .map_err(|e| self.gone_or(Some(layer), e))
    }

    fn diff_of(&self, layer: &Layer, out: &mut dyn Write) -> Result<u64> {
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
            None => self.with_layer(layer, |l, p| self.inner.driver.diff(l, p, out)),
        }
    }

    /// The paths the layer changes against its parent.
    pub(crate) fn changes(&self, layer: &Layer) -> Result<Vec<Change>> {
        self.with_layer(layer, |l, p| self.inner.driver.changes(l, p))
    }

    /// Bytes of file content the layer adds or changes.
    pub(crate) fn diff_size(&self, layer: &Layer) -> Result<u64> {
        self.with_layer(layer, |l, p| self.inner.driver.diff_size(l, p))
    }
}
