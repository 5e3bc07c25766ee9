//! Bindings for [`crate::graph::Layer`]: the `lamina.Layer` class.

use std::io::{self, Write};
use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::export::{to_py, PyChange};
use super::file_object::PyWriter;
use super::IntoPy;
use crate::graph::Layer;

/// A layer of a `Graph`.
#[pyclass(frozen, name = "Layer", module = "lamina")]
pub(crate) struct PyLayer {
    inner: Layer,
}

impl PyLayer {
    pub(crate) fn new(l: Layer) -> PyLayer {
        PyLayer { inner: l }
    }

    /// The layer, while its graph is open: after `Graph.close()` every call
    /// on a layer is a `ValueError`, as on a closed file.
    pub(crate) fn layer(&self) -> crate::Result<&Layer> {
        self.inner.graph().check_open()?;
        Ok(&self.inner)
    }

    fn l(&self) -> crate::Result<&Layer> {
        self.layer()
    }
}

#[pymethods]
impl PyLayer {
    #[getter]
    fn id(&self) -> PyResult<&str> {
        Ok(self.l()?.id())
    }

    #[getter]
    fn parent(&self, py: Python<'_>) -> PyResult<Option<PyLayer>> {
        Ok(py.detach(|| self.l()?.parent()).py_err()?.map(PyLayer::new))
    }

    #[getter]
    fn chain(&self, py: Python<'_>) -> PyResult<Vec<PyLayer>> {
        Ok(py
            .detach(|| self.l()?.chain())
            .py_err()?
            .into_iter()
            .map(PyLayer::new)
            .collect())
    }

    #[getter]
    fn writable(&self) -> PyResult<bool> {
        Ok(self.l()?.writable())
    }

    #[getter]
    fn created<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = self.l()?.created();
        let dt = py.import("datetime")?;
        let utc = dt.getattr("timezone")?.getattr("utc")?;
        dt.getattr("datetime")?
            .call_method1("fromtimestamp", (t.secs, utc))?
            .call_method(
                "replace",
                (),
                Some(&[("microsecond", t.nanos / 1000)].into_py_dict(py)?),
            )
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(self.l()?.metadata())
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (text,))
    }

    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.l()?.size())
    }

    #[getter]
    fn tar_size(&self) -> PyResult<Option<u64>> {
        Ok(self.l()?.tar_size())
    }

    #[getter]
    fn diff_id(&self) -> PyResult<Option<&str>> {
        Ok(self.l()?.diff_id())
    }

    #[getter]
    fn chain_id(&self) -> PyResult<Option<&str>> {
        Ok(self.l()?.chain_id())
    }

    #[getter]
    fn mount_count(&self, py: Python<'_>) -> PyResult<u32> {
        py.detach(|| self.l()?.mount_count()).py_err()
    }

    /// Mount the layer; returns the path of its merged view.
    #[pyo3(signature = (*, persist = false))]
    fn mount(&self, py: Python<'_>, persist: bool) -> PyResult<String> {
        let p = py.detach(|| self.l()?.mount(persist)).py_err()?;
        Ok(p.display().to_string())
    }

    fn unmount(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.l()?.unmount()).py_err().map(|_| ())
    }

    /// A context manager: mounted inside the block, its path bound by `as`.
    fn mounted(slf: Py<Self>) -> Mounted {
        Mounted { layer: slf }
    }

    /// The layer's tar: bytes, or written to `dst` (a path or a binary
    /// file object), returning the bytes written.
    #[pyo3(signature = (dst = None, *, progress = None))]
    fn diff<'py>(
        &self,
        py: Python<'py>,
        dst: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use super::progress::with_progress;
        let Some(dst) = dst.filter(|d| !d.is_none()) else {
            let mut buf = Vec::new();
            with_progress(py, progress, |p| self.l()?.diff_with(&mut buf, Some(p)))?;
            return Ok(PyBytes::new(py, &buf).into_any());
        };
        if dst.hasattr("write")? {
            let mut w = PyWriter::new(dst);
            let r = with_progress(py, progress, |p| {
                let mut b = io::BufWriter::with_capacity(1 << 20, &mut w);
                let n = self.l()?.diff_with(&mut b, Some(p))?;
                b.flush()
                    .map_err(|e| crate::Error::io("write", "<file object>", e))?;
                Ok(n)
            });
            if let Some(e) = w.take_err() {
                return Err(e);
            }
            return Ok(r?.into_pyobject(py)?.into_any());
        }
        let path: PathBuf = dst.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "dst is None, a path, or a binary file object, not {}",
                super::metadata::type_name(dst)
            ))
        })?;
        let n = with_progress(py, progress, |p| {
            let f =
                std::fs::File::create(&path).map_err(|e| crate::Error::io("create", &path, e))?;
            let mut b = io::BufWriter::with_capacity(1 << 20, f);
            let n = self.l()?.diff_with(&mut b, Some(p))?;
            b.flush().map_err(|e| crate::Error::io("write", &path, e))?;
            Ok(n)
        })?;
        Ok(n.into_pyobject(py)?.into_any())
    }

    /// The paths the layer changes against its parent, parents first (a
    /// `list` whose `_repr_html_` draws them as a tree).
    fn changes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list: Vec<PyChange> = to_py(py.detach(|| self.l()?.changes()).py_err()?);
        py.import("lamina.display")?
            .getattr("ChangeList")?
            .call1((list,))
    }

    /// Bytes of file content the layer adds or changes against its parent.
    fn diff_size(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.l()?.diff_size()).py_err()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyLayer>()
            .map(|o| {
                let o = o.get();
                o.inner.id() == self.inner.id()
                    && o.inner.graph().root() == self.inner.graph().root()
            })
            .unwrap_or(false)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.id().hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        let kind = if self.inner.writable() { "rw" } else { "ro" };
        let parent = self
            .inner
            .parent_id()
            .map(|p| format!(" parent={}", short(p)))
            .unwrap_or_default();
        format!(
            "<Layer {} {kind}{parent} size={}>",
            short(self.inner.id()),
            self.inner.size()
        )
    }
}

use pyo3::types::IntoPyDict;

/// What `Layer.mounted()` returns.
#[pyclass(frozen, name = "_Mounted", module = "lamina")]
pub(crate) struct Mounted {
    layer: Py<PyLayer>,
}

#[pymethods]
impl Mounted {
    fn __enter__(&self, py: Python<'_>) -> PyResult<String> {
        self.layer.get().mount(py, false)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.layer.get().unmount(py)?;
        Ok(())
    }
}

/// The 12-character short form of an id (`-init` kept).
fn short(id: &str) -> String {
    match id.strip_suffix(crate::ids::INIT_SUFFIX) {
        Some(base) => format!("{}{}", &base[..12.min(base.len())], crate::ids::INIT_SUFFIX),
        None => id[..12.min(id.len())].to_owned(),
    }
}
