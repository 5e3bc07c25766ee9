//! A layer's ancestors as the driver is handed them: the one place where a
//! chain of layer records becomes a chain of directories ([`LayerDir`]s,
//! base first), so that no driver ever builds a path from an id.

use std::path::PathBuf;

use crate::driver::LayerDir;
use crate::error::Result;
use crate::graph::graph::Graph;
use crate::graph::layer::Layer;

/// Ids and directories of a chain of layers, base first.
pub(crate) struct Ancestry {
    layers: Vec<(String, PathBuf)>,
}

impl Ancestry {
    /// The chain as the driver sees it.
    pub(crate) fn dirs(&self) -> Vec<LayerDir<'_>> {
        self.layers
            .iter()
            .map(|(id, dir)| LayerDir { id, dir })
            .collect()
    }
}

impl Graph {
    /// `top` and its ancestors, base first (empty for `None`).
    pub(crate) fn ancestry(&self, top: Option<&Layer>) -> Result<Ancestry> {
        let chain = match top {
            Some(l) => l.chain()?,
            None => Vec::new(),
        };
        let layers = chain
            .iter()
            .map(|l| Ok((l.id().to_owned(), self.layer_dir(l.id())?)))
            .collect::<Result<_>>()?;
        Ok(Ancestry { layers })
    }

    /// Run `f` with `layer` and its ancestors (its parent last) as the
    /// driver sees them.
    pub(crate) fn with_layer<T>(
        &self,
        layer: &Layer,
        f: impl FnOnce(LayerDir<'_>, &[LayerDir<'_>]) -> Result<T>,
    ) -> Result<T> {
        let dir = self.layer_dir(layer.id())?;
        let run = || {
            let parents = self.ancestry(layer.parent()?.as_ref())?;
            f(
                LayerDir {
                    id: layer.id(),
                    dir: &dir,
                },
                &parents.dirs(),
            )
        };
        // A layer deleted meanwhile (by another thread or process) is not
        // found; what failed on its vanished files is not the cause.
        run().map_err(|e| self.gone_or(Some(layer), e))
    }
}
