//! Deleting a layer: refused while it is mounted or has children; the
//! layer leaves `layers/` by one rename, then its files are removed.

use crate::driver::LayerDir;
use crate::error::{Error, Result};
use crate::graph::graph::Graph;
use crate::ids;

impl Graph {
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

    pub(crate) fn delete_id(&self, id: &str) -> Result<()> {
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
        if let Some(name) = self.image_using(id)? {
            return Err(Error::LayerInUse {
                id: id.to_owned(),
                why: format!("the image {name} uses it"),
            });
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
}
