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
        self.diff_checked(layer, out).map(|(n, _)| n)
    }

    /// [`Self::diff`], with the `sha256:<hex>` the bytes were checked
    /// against as they were written (a registered layer's diff ID); `None`
    /// for the driver's diff, which nothing checks.
    pub(crate) fn diff_checked(
        &self,
        layer: &Layer,
        out: &mut dyn Write,
    ) -> Result<(u64, Option<String>)> {
        self.diff_of(layer, out)
            .map_err(|e| self.gone_or(Some(layer), e))
    }

    /// Whether [`Self::diff_checked`] checks the layer's bytes: it has a
    /// tar-split record.
    pub(crate) fn diff_is_checked(&self, layer: &Layer) -> bool {
        self.layer_dir(layer.id())
            .is_ok_and(|d| d.join(TAR_SPLIT).is_file())
    }

    fn diff_of(&self, layer: &Layer, out: &mut dyn Write) -> Result<(u64, Option<String>)> {
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
                let f = std::io::BufReader::new(f);
                let (n, digest) = crate::archive::tarsplit::reassemble_checked(f, &tree, out)
                    .map_err(|e| match e {
                        // The record is the store's file; say which.
                        Error::Corrupt { path, what }
                            if path == Path::new(crate::archive::tarsplit::RECORD) =>
                        {
                            Error::corrupt(&split, what)
                        }
                        e => e,
                    })?;
                Ok((n, Some(digest)))
            }
            None => self
                .with_layer(layer, |l, p| self.inner.driver.diff(l, p, out))
                .map(|n| (n, None)),
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
