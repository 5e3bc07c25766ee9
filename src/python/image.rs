//! Bindings for [`crate::image`] and [`crate::graph::images`]: the
//! `lamina.Image` class and the image methods of `lamina.Graph` (which
//! `graph.rs` forwards here).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::archive::{source_from_py, Source};
use super::file_object::PyWriter;
use super::layer::PyLayer;
use super::IntoPy;
use crate::archive::compression::Compression;
use crate::graph::chain::{Progress, ProgressInfo};
use crate::graph::{Graph, Image, Timestamp};
use crate::image::{LoadSource, SaveFormat, SaveTarget};

/// An image of a `Graph`: a name for a chain of layers, with its config.
#[pyclass(frozen, name = "Image", module = "lamina")]
pub(crate) struct PyImage {
    inner: Image,
}

pub(crate) fn datetime<'py>(py: Python<'py>, t: Timestamp) -> PyResult<Bound<'py, PyAny>> {
    let dt = py.import("datetime")?;
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    let kw = pyo3::types::PyDict::new(py);
    kw.set_item("microsecond", t.nanos / 1000)?;
    dt.getattr("datetime")?
        .call_method1("fromtimestamp", (t.secs, utc))?
        .call_method("replace", (), Some(&kw))
}

impl PyImage {
    pub(crate) fn new(img: Image) -> PyImage {
        PyImage { inner: img }
    }

    /// The image, while its graph is open (else `ValueError`).
    pub(crate) fn img(&self) -> crate::Result<&Image> {
        self.inner.graph().check_open()?;
        Ok(&self.inner)
    }
}

#[pymethods]
impl PyImage {
    /// The name, e.g. ``"app:1"``.
    #[getter]
    fn name(&self) -> PyResult<&str> {
        Ok(self.img()?.name())
    }

    /// The manifest digest, ``"sha256:<hex>"``.
    #[getter]
    fn digest(&self) -> PyResult<&str> {
        Ok(self.img()?.digest())
    }

    /// The top layer.
    #[getter]
    fn layer(&self, py: Python<'_>) -> PyResult<PyLayer> {
        Ok(PyLayer::new(py.detach(|| self.img()?.layer()).py_err()?))
    }

    /// dive's analysis of the image's layers, named by the image (a
    /// `lamina.analysis.Report`).
    fn analyze<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let layer = slf.get().layer(py)?;
        let kw = pyo3::types::PyDict::new(py);
        kw.set_item("name", slf.get().img()?.name())?;
        py.import("lamina.analysis")?
            .getattr("analyze")?
            .call((layer,), Some(&kw))
    }

    /// The layers, base first.
    #[getter]
    fn layers(&self, py: Python<'_>) -> PyResult<Vec<PyLayer>> {
        let ls = py.detach(|| self.img()?.layers()).py_err()?;
        Ok(ls.into_iter().map(PyLayer::new).collect())
    }

    /// The image config (a dict).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (self.img()?.record().config.as_str(),))
    }

    /// The manifest (a dict).
    #[getter]
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (self.img()?.record().manifest.as_str(),))
    }

    /// When the image was made (its config's ``created``), aware UTC.
    #[getter]
    fn created<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime(py, self.img()?.created())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyImage>().is_ok_and(|o| {
            let o = &o.get().inner;
            o.name() == self.inner.name()
                && o.digest() == self.inner.digest()
                && o.record().layers == self.inner.record().layers
        })
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.inner.name(), self.inner.digest()).hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        let top = self.inner.record().layers.last().map_or("", |s| &s[..12]);
        format!(
            "<Image {} {} layers={} top={top}>",
            self.inner.name(),
            &self.inner.digest()[..19.min(self.inner.digest().len())],
            self.inner.record().layers.len()
        )
    }
}

/// A Python progress callback, called with (bytes, total_bytes, layers,
/// total_layers); the first exception it raises is kept and re-raised
/// when the call ends, it is not called again, and the call is cancelled
/// (`call` returns false), so it stops as after Ctrl-C.
pub(crate) struct PyProgress {
    pub(crate) callback: Option<Py<PyAny>>,
    err: Mutex<Option<PyErr>>,
}

impl PyProgress {
    pub(crate) fn call(&self, i: ProgressInfo) -> bool {
        let Some(cb) = &self.callback else {
            return true;
        };
        let mut err = self.err.lock().unwrap_or_else(|e| e.into_inner());
        if err.is_some() {
            return false;
        }
        Python::attach(|py| {
            let r = cb
                .bind(py)
                .call1((i.bytes, i.total_bytes, i.layers, i.total_layers));
            if let Err(e) = r {
                *err = Some(e);
            }
        });
        err.is_none()
    }

    pub(crate) fn take_err(&self) -> Option<PyErr> {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

pub(crate) fn progress_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<PyProgress> {
    let callback = match obj.filter(|o| !o.is_none()) {
        Some(o) if o.is_callable() => Some(o.clone().unbind()),
        Some(o) => {
            return Err(PyTypeError::new_err(format!(
                "progress is a callable or None, not {}",
                super::metadata::type_name(o)
            )))
        }
        None => None,
    };
    Ok(PyProgress {
        callback,
        err: Mutex::new(None),
    })
}

/// A regular file behind a Python file object positioned at its start, as
/// a `File` of our own (so it is read in place, not streamed).
fn regular_file(obj: &Bound<'_, PyAny>) -> Option<std::fs::File> {
    let fd: i32 = obj.call_method0("fileno").ok()?.extract().ok()?;
    let at: u64 = obj.call_method0("tell").ok()?.extract().ok()?;
    if at != 0 {
        return None;
    }
    let st = obj
        .py()
        .import("os")
        .ok()?
        .call_method1("fstat", (fd,))
        .ok()?;
    let mode: u32 = st.getattr("st_mode").ok()?.extract().ok()?;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    // The same file, opened again: ours to read with pread and close.
    let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// What `load` reads: a file of our own, or what Python gave.
enum In {
    File(std::fs::File),
    Py(Source),
}

pub(crate) fn load(
    g: &Graph,
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyImage>> {
    let pp = progress_from(progress)?;
    let err = Arc::new(Mutex::new(None));
    let file = if source.hasattr("read")? {
        regular_file(source)
    } else {
        None
    };
    let src = match file {
        Some(f) => In::File(f),
        None => In::Py(source_from_py(source, &err)?),
    };
    let cb = |i: ProgressInfo| pp.call(i);
    let p = Progress::new(&cb);
    // Ctrl-C stops a load at its next read, leaving the store as it was.
    let r = super::interrupt::interruptible(py, &p, || {
        let p = Some(&p);
        match src {
            In::File(f) => g.load(LoadSource::File(f), p),
            In::Py(Source::Path(path)) => g.load(LoadSource::Path(&path), p),
            In::Py(Source::Bytes(b)) => g.load(LoadSource::NamedStream(&mut &b[..], "<bytes>"), p),
            In::Py(Source::File(mut r)) => {
                g.load(LoadSource::NamedStream(&mut r, "<file object>"), p)
            }
        }
    });
    if let Some(e) = err.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    if let Some(e) = pp.take_err() {
        return Err(e);
    }
    Ok(r?.into_iter().map(|img| PyImage { inner: img }).collect())
}

/// An `Image` or an image name (`str`), as a name.
/// `compression=`: `"gzip"`, `"zstd"` or `None`.
pub(crate) fn compression_from(c: Option<&str>) -> PyResult<Compression> {
    match c {
        None => Ok(Compression::None),
        Some("gzip") => Ok(Compression::Gzip),
        Some("zstd") => Ok(Compression::Zstd),
        Some(other) => Err(PyValueError::new_err(format!(
            "compression is 'gzip', 'zstd' or None, not {other:?}"
        ))),
    }
}

pub(crate) fn image_name(o: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(i) = o.cast::<PyImage>() {
        return Ok(i.get().img()?.name().to_owned());
    }
    o.extract::<String>().map_err(|_| {
        PyTypeError::new_err(format!(
            "an image reference is an Image or a name (str), not {}",
            o.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

fn image_names(refs: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let one = image_name;
    if refs.is_instance_of::<pyo3::types::PyString>() || refs.cast::<PyImage>().is_ok() {
        return Ok(vec![one(refs)?]);
    }
    refs.try_iter()?.map(|o| one(&o?)).collect()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn save(
    g: &Graph,
    py: Python<'_>,
    refs: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    format: &str,
    compression: Option<&str>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let names = image_names(refs)?;
    let format = match format {
        "oci" => SaveFormat::Oci,
        "docker-archive" => SaveFormat::DockerArchive,
        other => {
            return Err(PyValueError::new_err(format!(
                "format is 'oci' or 'docker-archive', not {other:?}"
            )))
        }
    };
    let compression = compression_from(compression)?;
    let pp = progress_from(progress)?;
    let cb = |i: ProgressInfo| pp.call(i);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = Progress::new(&cb);
    // Ctrl-C stops a save at its next write; a path gets nothing.
    let r = if dst.hasattr("write")? {
        let mut w = PyWriter::new(dst);
        let r = super::interrupt::interruptible(py, &p, || {
            let mut b = io::BufWriter::with_capacity(1 << 20, &mut w);
            g.save(
                &names,
                SaveTarget::Writer(&mut b),
                format,
                compression,
                Some(&p),
            )?;
            b.flush()
                .map_err(|e| crate::Error::io("write", "<file object>", e))
        });
        if let Some(e) = w.take_err() {
            return Err(e);
        }
        r
    } else {
        let path: PathBuf = dst.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "dst is a path or a binary file object, not {}",
                super::metadata::type_name(dst)
            ))
        })?;
        super::interrupt::interruptible(py, &p, || {
            g.save(
                &names,
                SaveTarget::Path(&path),
                format,
                compression,
                Some(&p),
            )
        })
    };
    if let Some(e) = pp.take_err() {
        return Err(e);
    }
    r
}

pub(crate) fn tag(
    g: &Graph,
    py: Python<'_>,
    layer: String,
    name: String,
    config: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyImage> {
    // Converted as layer metadata is, so what would not read back exactly
    // (an int past 2**53, a non-str key, a tuple) is refused naming where.
    let config = match config.filter(|c| !c.is_none()) {
        None => None,
        Some(c) => {
            let d = c.cast::<pyo3::types::PyDict>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "config is a dict, not {}",
                    super::metadata::type_name(c)
                ))
            })?;
            Some(serde_json::Value::Object(
                super::metadata::json_object_from_py(d, "config")?,
            ))
        }
    };
    let img = py.detach(|| g.tag(&layer, &name, config)).py_err()?;
    Ok(PyImage { inner: img })
}

pub(crate) fn untag(g: &Graph, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<()> {
    let n = image_names(name)?.pop().unwrap_or_default();
    py.detach(|| g.untag(&n)).py_err()
}

pub(crate) fn images(g: &Graph, py: Python<'_>) -> PyResult<Vec<PyImage>> {
    let all = py.detach(|| g.images()).py_err()?;
    Ok(all.into_iter().map(|img| PyImage { inner: img }).collect())
}

pub(crate) fn image(g: &Graph, py: Python<'_>, name: &str) -> PyResult<PyImage> {
    let img = py.detach(|| g.image(name)).py_err()?;
    Ok(PyImage { inner: img })
}
