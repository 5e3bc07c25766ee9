//! Bindings for [`crate::graph::Graph`]: the `lamina.Graph` class.
//!
//! The wrapper holds the core `Graph` (an `Arc` inside), so one Python
//! object may be used from many threads; every call that touches the disk
//! or mounts runs inside `Python::detach`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::archive::{source_from_py, Source};
use super::layer::PyLayer;
use super::metadata::metadata_from_py;
use super::IntoPy;
use crate::graph::graph::Inner;
use crate::graph::Graph;

/// Graphs still open, closed at interpreter exit (`atexit`), so what they
/// mounted is unmounted even when Python never collects them.
static OPEN: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// A layer store at `root`: read-only layers registered from tars, writable
/// layers (containers) on them, and named images, all kept under `root`
/// (`docs/store.md` describes its files). Safe to share between threads;
/// every I/O call releases the GIL.
#[pyclass(frozen, name = "Graph", module = "lamina")]
pub(crate) struct PyGraph {
    inner: Graph,
}

impl PyGraph {
    pub(crate) fn graph(&self) -> crate::Result<&Graph> {
        self.g()
    }
}

/// The layer named by a `Layer` or a str (id or prefix) in `g`.
pub(crate) fn layer_from_py(
    g: &Graph,
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<crate::graph::Layer> {
    if let Ok(l) = obj.cast::<PyLayer>() {
        return Ok(l.get().layer()?.clone());
    }
    let r = layer_ref(obj)?;
    py.detach(|| g.get(&r)).py_err()
}

/// The id named by a `Layer` or a str (id or prefix).
pub(crate) fn layer_ref(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(l) = obj.cast::<PyLayer>() {
        return Ok(l.get().layer()?.id().to_owned());
    }
    obj.extract::<String>().map_err(|_| {
        PyTypeError::new_err(format!(
            "a layer reference is a Layer or an id (str), not {}",
            super::metadata::type_name(obj)
        ))
    })
}

impl PyGraph {
    /// The graph, while open: after `close()` every call is a `ValueError`.
    fn g(&self) -> crate::Result<&Graph> {
        self.inner.check_open()?;
        Ok(&self.inner)
    }

    fn wrap(&self, l: crate::graph::Layer) -> PyLayer {
        PyLayer::new(l)
    }
}

#[pymethods]
impl PyGraph {
    #[new]
    #[pyo3(signature = (root, driver = "auto"))]
    fn new(py: Python<'_>, root: PathBuf, driver: &str) -> PyResult<Self> {
        let g = py.detach(|| Graph::open(&root, driver)).py_err()?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&g.inner));
        Ok(PyGraph { inner: g })
    }

    /// The store's root directory.
    #[getter]
    fn root(&self) -> PyResult<String> {
        Ok(self.g()?.root().display().to_string())
    }

    /// The store's driver.
    #[getter]
    fn driver(&self) -> PyResult<String> {
        Ok(self.g()?.driver_name().to_owned())
    }

    #[pyo3(signature = (source, *, parent = None, id = None, metadata = None, progress = None))]
    fn register(
        &self,
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        parent: Option<&Bound<'_, PyAny>>,
        id: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyLayer> {
        let parent = parent.filter(|p| !p.is_none()).map(layer_ref).transpose()?;
        let metadata = metadata_from_py(metadata)?;
        let err = Arc::new(Mutex::new(None));
        let src = source_from_py(source, &err)?;
        let label = src.label();
        let size = match &src {
            Source::File(_) => super::progress::remaining(source),
            _ => 0,
        };
        let g = self.g()?;
        // Ctrl-C, or an exception from `progress`, stops it at its next
        // read; nothing is left of the layer.
        let r = super::progress::with_progress(py, progress, |pr| {
            let (p, i) = (parent.as_deref(), id.as_deref());
            let reg = |src: &mut (dyn std::io::Read + Send), size: u64| {
                pr.add_total(size, 0);
                g.register_with(src, p, i, metadata, Some(pr))
            };
            let r = match src {
                Source::Path(path) => {
                    let mut f = std::fs::File::open(&path)
                        .map_err(|e| crate::Error::io("open", &path, e))?;
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    reg(&mut f, size)
                }
                Source::Bytes(b) => reg(&mut &b[..], b.len() as u64),
                Source::File(mut r) => reg(&mut r, size),
            };
            r.map_err(|e| e.in_source(&label))
        });
        if let Some(e) = err.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        Ok(self.wrap(r?))
    }

    #[pyo3(signature = (parent = None, *, id = None, init = false, metadata = None))]
    fn create(
        &self,
        py: Python<'_>,
        parent: Option<&Bound<'_, PyAny>>,
        id: Option<String>,
        init: bool,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyLayer> {
        let parent = parent.filter(|p| !p.is_none());
        let metadata = metadata_from_py(metadata)?;
        if let Some(img) = parent.and_then(|p| p.cast::<super::image::PyImage>().ok()) {
            let img = img.get().img()?;
            let l = py
                .detach(|| {
                    self.g()?
                        .create_from_image(img, id.as_deref(), init, metadata)
                })
                .py_err()?;
            return Ok(self.wrap(l));
        }
        let parent = parent.map(layer_ref).transpose()?;
        let l = py
            .detach(|| {
                self.g()?
                    .create(parent.as_deref(), id.as_deref(), init, metadata)
            })
            .py_err()?;
        Ok(self.wrap(l))
    }

    #[pyo3(signature = (layer, *, metadata = None, progress = None))]
    fn commit(
        &self,
        py: Python<'_>,
        layer: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyLayer> {
        let metadata = metadata_from_py(metadata)?;
        let l = layer_from_py(self.g()?, py, layer)?;
        let made = super::progress::with_progress(py, progress, |p| {
            self.g()?.commit_with(&l, metadata, Some(p))
        })?;
        Ok(self.wrap(made))
    }

    fn get(&self, py: Python<'_>, reference: &Bound<'_, PyAny>) -> PyResult<PyLayer> {
        let r = layer_ref(reference)?;
        Ok(self.wrap(py.detach(|| self.g()?.get(&r)).py_err()?))
    }

    fn layers(&self, py: Python<'_>) -> PyResult<Vec<PyLayer>> {
        let ls = py.detach(|| self.g()?.layers()).py_err()?;
        Ok(ls.into_iter().map(|l| self.wrap(l)).collect())
    }

    fn heads(&self, py: Python<'_>) -> PyResult<Vec<PyLayer>> {
        let ls = py.detach(|| self.g()?.heads()).py_err()?;
        Ok(ls.into_iter().map(|l| self.wrap(l)).collect())
    }

    fn delete(&self, py: Python<'_>, layer: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = layer_ref(layer)?;
        py.detach(|| self.g()?.delete(&r)).py_err()
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pairs = py.detach(|| self.g()?.status()).py_err()?;
        let d = PyDict::new(py);
        for (k, v) in pairs {
            let value: Bound<'py, PyAny> = match v.as_str() {
                "true" => true.into_pyobject(py)?.to_owned().into_any(),
                "false" => false.into_pyobject(py)?.to_owned().into_any(),
                s => match s.parse::<i64>() {
                    Ok(n) if k.ends_with("layers") => n.into_pyobject(py)?.into_any(),
                    _ => s.into_pyobject(py)?.into_any(),
                },
            };
            d.set_item(k, value)?;
        }
        Ok(d)
    }

    #[pyo3(signature = (source, *, progress = None))]
    fn load(
        &self,
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<super::image::PyImage>> {
        super::image::load(self.g()?, py, source, progress)
    }

    #[pyo3(signature = (refs, dst, *, format = "oci", compression = Some("gzip"), progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn save(
        &self,
        py: Python<'_>,
        refs: &Bound<'_, PyAny>,
        dst: &Bound<'_, PyAny>,
        format: &str,
        compression: Option<&str>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        super::image::save(self.g()?, py, refs, dst, format, compression, progress)
    }

    #[pyo3(signature = (layer, name, *, config = None))]
    fn tag(
        &self,
        py: Python<'_>,
        layer: &Bound<'_, PyAny>,
        name: String,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<super::image::PyImage> {
        super::image::tag(self.g()?, py, layer_ref(layer)?, name, config)
    }

    fn untag(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        super::image::untag(self.g()?, py, name)
    }

    fn images(&self, py: Python<'_>) -> PyResult<Vec<super::image::PyImage>> {
        super::image::images(self.g()?, py)
    }

    fn image(&self, py: Python<'_>, name: &str) -> PyResult<super::image::PyImage> {
        super::image::image(self.g()?, py, name)
    }

    /// Check every layer; nothing is changed. A dict: `layers` (how many),
    /// `problems` (each `layer`, `path`, `what`; empty when all is well).
    #[pyo3(signature = (*, progress = None))]
    fn check<'py>(
        &self,
        py: Python<'py>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let g = self.g()?;
        let r = super::progress::with_progress(py, progress, |p| g.check_with(Some(p)))?;
        report_to_py(py, &r, false)
    }

    /// Remove what cannot be saved, rebuild what can; the dict of
    /// [`check`] after it, plus `actions`, what was done.
    #[pyo3(signature = (*, progress = None))]
    fn repair<'py>(
        &self,
        py: Python<'py>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let g = self.g()?;
        let r = super::progress::with_progress(py, progress, |p| g.repair_with(Some(p)))?;
        report_to_py(py, &r, true)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py)?;
        Ok(())
    }

    fn __getitem__(&self, py: Python<'_>, reference: &Bound<'_, PyAny>) -> PyResult<PyLayer> {
        self.get(py, reference)
    }

    fn __contains__(&self, py: Python<'_>, reference: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(r) = layer_ref(reference) else {
            return Ok(false);
        };
        py.detach(|| self.g()?.contains(&r)).py_err()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.g()?.len()).py_err()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ls = self.layers(py)?;
        PyList::new(py, ls)?.try_iter().map(Bound::into_any)
    }

    fn __repr__(&self) -> String {
        format!(
            "Graph({:?}, driver={:?})",
            self.inner.root().display().to_string(),
            self.inner.driver_name()
        )
    }
}

fn findings_to_py<'py>(
    py: Python<'py>,
    items: &[crate::graph::Finding],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for f in items {
        let d = PyDict::new(py);
        d.set_item("layer", f.layer.as_deref())?;
        d.set_item(
            "path",
            f.path.as_ref().map(|p| p.as_os_str().to_os_string()),
        )?;
        d.set_item("what", &f.what)?;
        out.append(d)?;
    }
    Ok(out)
}

fn report_to_py<'py>(
    py: Python<'py>,
    r: &crate::graph::CheckReport,
    actions: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("layers", r.layers)?;
    d.set_item("problems", findings_to_py(py, &r.problems)?)?;
    if actions {
        d.set_item("actions", findings_to_py(py, &r.actions)?)?;
    }
    Ok(d)
}

/// Close every graph still open: what `atexit` runs.
#[pyfunction]
pub(crate) fn _close_all(py: Python<'_>) {
    let open: Vec<Weak<Inner>> =
        std::mem::take(&mut *OPEN.lock().unwrap_or_else(|p| p.into_inner()));
    py.detach(|| {
        for w in open {
            if let Some(inner) = w.upgrade() {
                let _ = (Graph { inner }).close();
            }
        }
    });
}
