//! Making layers: register a tar, create a writable layer (with its
//! `-init` layer), commit a writable one. Every layer is staged under
//! `tmp/` and lands whole as `layers/<id>` (see [`super::graph`]).

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::driver::LayerDir;
use crate::error::{Error, IoContext, Result};
use crate::graph::chain::{Counted, Progress};
use crate::graph::graph::{Graph, Metadata, TAR_SPLIT};
use crate::graph::layer::Layer;
use crate::graph::record::LayerRecord;
use crate::ids;

impl Graph {
    /// A parent for a new layer: it must exist and not be writable (a
    /// writable layer changes under its children; commit it first).
    pub(super) fn parent_for_child(&self, reference: Option<&str>) -> Result<Option<Layer>> {
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
        self.register_with(source, parent, id, metadata, None)
    }

    /// [`Graph::register`], the bytes read of `source` counted into
    /// `progress` as one layer (the caller adds the source's size to the
    /// total, where it knows it). Cancelled, it stops at its next read or
    /// before the layer lands, leaving nothing.
    pub fn register_with(
        &self,
        source: &mut (dyn Read + Send),
        parent: Option<&str>,
        id: Option<&str>,
        metadata: Metadata,
        progress: Option<&Progress<'_>>,
    ) -> Result<Layer> {
        if let Some(p) = progress {
            p.add_total(0, 1);
        }
        self.register_counted(source, parent, id, metadata, progress)
    }

    /// [`Graph::register_with`] for a layer already counted in the total.
    fn register_counted(
        &self,
        source: &mut (dyn Read + Send),
        parent: Option<&str>,
        id: Option<&str>,
        metadata: Metadata,
        progress: Option<&Progress<'_>>,
    ) -> Result<Layer> {
        self.check_open()?;
        super::record::check_metadata(&metadata)?;
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
        let made = self.stage_layer("register", parent.as_ref(), |dir, parents| {
            let split = dir.join(TAR_SPLIT);
            let f = create_private(&split)?;
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            let me = LayerDir {
                id: id.unwrap_or("(new layer)"),
                dir,
            };
            let mut source = Counted::new(source, progress);
            let report = self
                .inner
                .driver
                .apply_diff(me, parents, &mut source, &mut w)
                .map_err(|e| Progress::or_cancelled(progress, e))?;
            w.flush().at("write", &split)?;
            if let Some(p) = progress {
                p.layer_done();
            }
            // Stopped at the last report: the layer has not landed yet.
            Progress::check(progress)?;
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
        build: impl FnOnce(&Path, &[LayerDir<'_>]) -> Result<LayerRecord>,
    ) -> Result<Layer> {
        let layout = self.inner.store.layout();
        let st = layout.stage(&self.inner.store.read_lock()?, purpose)?;
        let rec = self
            .ancestry(parent)
            .and_then(|a| build(st.path(), &a.dirs()))
            .map_err(|e| self.gone_or(parent, e))?;
        st.write_record(&rec)?;
        self.land(st, parent, &rec.id)?;
        Ok(Layer::new(self.clone(), rec))
    }

    /// `e`, or [`Error::LayerNotFound`] when `layer` was deleted meanwhile
    /// (by another process): what failed on its vanished files is not
    /// the cause.
    pub(crate) fn gone_or(&self, layer: Option<&Layer>, e: Error) -> Error {
        match layer {
            Some(l) if matches!(self.inner.store.layout().has_layer(l.id()), Ok(false)) => {
                self.inner.store.layout().not_found(l.id())
            }
            _ => e,
        }
    }

    /// Rename a staged layer into place, under the store lock (shared)
    /// after checking its parent is still there.
    pub(super) fn land(
        &self,
        st: crate::graph::Staging,
        parent: Option<&Layer>,
        id: &str,
    ) -> Result<()> {
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
        self.create_with(parent, id, init, metadata, None)
    }

    /// [`Graph::create`] on `image`'s top layer; the container remembers
    /// the image, whose config [`Graph::commit_image`] inherits.
    pub fn create_from_image(
        &self,
        image: &super::Image,
        id: Option<&str>,
        init: bool,
        metadata: Metadata,
    ) -> Result<Layer> {
        let top = image.layer()?;
        self.create_with(
            Some(top.id()),
            id,
            init,
            metadata,
            Some(image.digest().to_owned()),
        )
    }

    fn create_with(
        &self,
        parent: Option<&str>,
        id: Option<&str>,
        init: bool,
        metadata: Metadata,
        image: Option<String>,
    ) -> Result<Layer> {
        self.check_open()?;
        super::record::check_metadata(&metadata)?;
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
            let made = self.stage_layer("init", under.as_ref(), |dir, parents| {
                let me = LayerDir { id: &iid, dir };
                self.inner.driver.create_init(me, parents)?;
                Ok(LayerRecord::new(&iid, parents.last().map(|p| p.id), false))
            })?;
            under = Some(made);
        }
        let made = self.stage_layer("create", under.as_ref(), |dir, parents| {
            self.inner
                .driver
                .create(LayerDir { id: &id, dir }, parents)?;
            let mut rec = LayerRecord::new(&id, parents.last().map(|p| p.id), true);
            rec.metadata = metadata;
            rec.image = image;
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

    /// The image layer a commit of the writable `layer` goes on: its parent,
    /// or its init layer's parent.
    pub(crate) fn commit_target(&self, layer: &Layer) -> Result<Option<String>> {
        let mut target = layer.parent_id().map(str::to_owned);
        if let Some(p) = &target {
            if ids::init_id(layer.id()).ok().as_deref() == Some(p.as_str()) {
                target = self.layer(p)?.parent_id().map(str::to_owned);
            }
        }
        Ok(target)
    }

    /// Make the changes of the writable `layer` a new read-only layer on
    /// the same image layer (what `docker commit` does: a container's
    /// `-init` layer is not part of the image), with its own diff id.
    pub fn commit(&self, layer: &Layer, metadata: Metadata) -> Result<Layer> {
        self.commit_with(layer, metadata, None)
    }

    /// [`Graph::commit`], counted into `progress` as one layer in two
    /// phases, as a load from a stream: the bytes of the layer's tar as it
    /// is written out (the total not known), then, from 0 again, as it is
    /// applied (the total known). Cancelled, it stops at its next read or
    /// write, leaving nothing.
    pub fn commit_with(
        &self,
        layer: &Layer,
        metadata: Metadata,
        progress: Option<&Progress<'_>>,
    ) -> Result<Layer> {
        self.check_open()?;
        super::record::check_metadata(&metadata)?;
        if !layer.writable() {
            return Err(Error::InvalidArgument(format!(
                "layer {} is read-only; only a writable layer can be committed",
                layer.id()
            )));
        }
        let target = self.commit_target(layer)?;
        let layout = self.inner.store.layout();
        let st = layout.stage(&self.inner.store.read_lock()?, "commit")?;
        let path = st.path().join("diff.tar");
        if let Some(p) = progress {
            p.add_total(0, 1);
        }
        {
            let f = create_private(&path)?;
            let mut w = Counted::new(BufWriter::with_capacity(1 << 20, f), progress);
            self.diff(layer, &mut w)
                .map_err(|e| Progress::or_cancelled(progress, self.gone_or(Some(layer), e)))?;
            w.flush().at("write", &path)?;
        }
        let mut f = std::fs::File::open(&path).at("open", &path)?;
        if let Some(p) = progress {
            p.start_applying();
            p.add_total(f.metadata().at("stat", &path)?.len(), 0);
        }
        let made = self.register_counted(&mut f, target.as_deref(), None, metadata, progress)?;
        st.remove()?;
        Ok(made)
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

pub(super) fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::graph::layout::FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .at("create", path)
}
