//! A layer of a [`Graph`]: its record, its place in the chain, its mounts
//! and its diff.

use std::io::Write;
use std::path::PathBuf;

use crate::driver::Change;
use crate::error::Result;
use crate::graph::graph::{Graph, Metadata};
use crate::graph::record::LayerRecord;
use crate::graph::time::Timestamp;

/// One layer, as read from the store when it was looked up (its record
/// does not change afterwards; its mount count does, and is read live).
#[derive(Debug, Clone)]
pub struct Layer {
    graph: Graph,
    rec: LayerRecord,
}

impl Layer {
    pub(crate) fn new(graph: Graph, rec: LayerRecord) -> Layer {
        Layer { graph, rec }
    }

    /// The graph the layer belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The layer's record (`layer.json`).
    pub fn record(&self) -> &LayerRecord {
        &self.rec
    }

    /// The layer id.
    pub fn id(&self) -> &str {
        &self.rec.id
    }

    /// The parent's id; `None` for a base layer.
    pub fn parent_id(&self) -> Option<&str> {
        self.rec.parent.as_deref()
    }

    /// The parent layer.
    pub fn parent(&self) -> Result<Option<Layer>> {
        self.rec
            .parent
            .as_deref()
            .map(|p| self.graph.layer(p))
            .transpose()
    }

    /// The layers from the base to this one.
    pub fn chain(&self) -> Result<Vec<Layer>> {
        let mut out = vec![self.clone()];
        while let Some(p) = out.last().expect("non-empty").parent()? {
            if out.len() > 10_000 || out.iter().any(|l| l.id() == p.id()) {
                return Err(crate::Error::corrupt(
                    self.graph.root().join("layers").join(self.id()),
                    "the parent chain loops",
                ));
            }
            out.push(p);
        }
        out.reverse();
        Ok(out)
    }

    /// Whether this is a writable (container) layer.
    pub fn writable(&self) -> bool {
        self.rec.writable
    }

    /// When the layer was made.
    pub fn created(&self) -> Timestamp {
        self.rec.created
    }

    /// The manifest digest of the image this container was made from.
    pub fn image_digest(&self) -> Option<&str> {
        self.rec.image.as_deref()
    }

    /// The user's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.rec.metadata
    }

    /// The seed's layer size: the content bytes of the tar's entries (the
    /// sum of their header sizes); 0 for a layer made by `create`.
    pub fn size(&self) -> u64 {
        self.rec.size
    }

    /// Bytes of the uncompressed tar the layer was registered from; `None`
    /// for a layer made by `create`.
    pub fn tar_size(&self) -> Option<u64> {
        self.rec.tar_size
    }

    /// `sha256:<hex>` of the layer's uncompressed tar (registered layers).
    pub fn diff_id(&self) -> Option<&str> {
        self.rec.diff_id.as_deref()
    }

    /// The OCI chain id (registered layers).
    pub fn chain_id(&self) -> Option<&str> {
        self.rec.chain_id.as_deref()
    }

    /// Mount the layer (writable layers read-write, others read-only) and
    /// return the directory of its merged view. The reference is given
    /// back by [`Layer::unmount`] or by closing the graph, unless
    /// `persist`: then it outlives this process until an unmount.
    pub fn mount(&self, persist: bool) -> Result<PathBuf> {
        self.graph.mount(self, self.writable(), persist)
    }

    /// Give back one mount reference; the last one unmounts. Returns the
    /// references left.
    pub fn unmount(&self) -> Result<u32> {
        self.graph.unmount(self.id())
    }

    /// Live mount references, from every process.
    pub fn mount_count(&self) -> Result<u32> {
        self.graph.mount_count(self.id())
    }

    /// Write the layer's tar to `out`: for a registered layer, the exact
    /// bytes it was registered from; for others, computed by the driver
    /// (a writable overlay layer's from its `upper/` alone). Returns the
    /// bytes written.
    pub fn diff(&self, out: &mut dyn Write) -> Result<u64> {
        self.graph.diff(self, out)
    }

    /// [`Layer::diff`], with the `sha256:<hex>` the bytes were checked
    /// against as they were written: a registered layer's diff ID (its tar
    /// is reassembled and hashed), `None` for a driver's diff.
    pub fn diff_checked(&self, out: &mut dyn Write) -> Result<(u64, Option<String>)> {
        self.graph.diff_checked(self, out)
    }

    /// Whether [`Layer::diff_checked`] checks the bytes (the layer has a
    /// tar-split record).
    pub fn diff_is_checked(&self) -> bool {
        self.graph.diff_is_checked(self)
    }

    /// [`Layer::diff`], the bytes written counted into `progress` as one
    /// layer (the total is the layer's `tar_size`, where it has one).
    /// Cancelled, it stops at its next write.
    pub fn diff_with(
        &self,
        out: &mut dyn Write,
        progress: Option<&crate::graph::Progress<'_>>,
    ) -> Result<u64> {
        use crate::graph::Progress;
        if let Some(p) = progress {
            p.add_total(self.tar_size().unwrap_or(0), 1);
        }
        let mut w = crate::graph::chain::Counted::new(out, progress);
        let n = self
            .graph
            .diff(self, &mut w)
            .map_err(|e| Progress::or_cancelled(progress, e))?;
        if let Some(p) = progress {
            p.layer_done();
        }
        Ok(n)
    }

    /// The paths the layer changes against its parent, parents first.
    pub fn changes(&self) -> Result<Vec<Change>> {
        self.graph.changes(self)
    }

    /// Bytes of file content the layer adds or changes against its parent.
    pub fn diff_size(&self) -> Result<u64> {
        self.graph.diff_size(self)
    }
}
