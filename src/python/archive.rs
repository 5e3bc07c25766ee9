//! Bindings for [`crate::archive`]: `apply_layer` and `_reassemble`.
//!
//! A layer source is a path, a bytes-like object or a binary file object.
//! File objects are read through their `.read()` with the GIL taken only
//! for each chunk, so other Python threads run while the layer applies.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes};

use super::metadata::type_name;
use super::{to_py_err, IntoPy};
use crate::archive::{ApplyOptions, WhiteoutMode};

/// A Python binary file object as a [`Read`]. A Python exception raised by
/// `.read()` is kept aside and re-raised as itself once the apply unwinds.
pub(crate) struct PyReader {
    obj: Py<PyAny>,
    err: Arc<Mutex<Option<PyErr>>>,
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Python::attach(|py| {
            let r = self
                .obj
                .bind(py)
                .call_method1("read", (buf.len(),))
                .and_then(|chunk| {
                    if let Ok(b) = chunk.cast::<PyBytes>() {
                        let b = b.as_bytes();
                        if b.len() > buf.len() {
                            return Err(PyValueError::new_err(
                                "read() returned more bytes than asked for",
                            ));
                        }
                        buf[..b.len()].copy_from_slice(b);
                        Ok(b.len())
                    } else if chunk.is_none() {
                        // A non-blocking stream with nothing ready; treat as EOF.
                        Ok(0)
                    } else {
                        let b: Vec<u8> = chunk.extract().map_err(|_| {
                            PyTypeError::new_err(format!(
                                "the layer file object's read() must return bytes, not {}",
                                type_name(&chunk)
                            ))
                        })?;
                        if b.len() > buf.len() {
                            return Err(PyValueError::new_err(
                                "read() returned more bytes than asked for",
                            ));
                        }
                        buf[..b.len()].copy_from_slice(&b);
                        Ok(b.len())
                    }
                });
            r.map_err(|e| {
                *self.err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                io::Error::other("the layer file object's read() raised")
            })
        })
    }
}

pub(crate) enum Source {
    Path(PathBuf),
    Bytes(PyBackedBytes),
    File(PyReader),
}

impl Source {
    /// How messages name the source.
    pub(crate) fn label(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes(_) => "<bytes>".into(),
            Source::File(_) => "<file object>".into(),
        }
    }
}

pub(crate) fn source_from_py(
    obj: &Bound<'_, PyAny>,
    err: &Arc<Mutex<Option<PyErr>>>,
) -> PyResult<Source> {
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        return Ok(Source::Bytes(obj.extract()?));
    }
    if obj.hasattr("read")? {
        return Ok(Source::File(PyReader {
            obj: obj.clone().unbind(),
            err: err.clone(),
        }));
    }
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(Source::Path(p));
    }
    Err(PyTypeError::new_err(format!(
        "a layer source is a path, bytes, or a binary file object, not {}",
        type_name(obj)
    )))
}

fn options(
    whiteouts: &str,
    rootless_overlay: bool,
    tar_split: Option<PathBuf>,
    memory_limit: Option<u64>,
    zstd_window_log_max: Option<u32>,
    rootless: bool,
) -> PyResult<ApplyOptions> {
    let whiteouts = match whiteouts {
        "apply" => WhiteoutMode::Apply,
        "overlay" => WhiteoutMode::Overlay,
        other => {
            return Err(PyValueError::new_err(format!(
                "whiteouts is 'apply' or 'overlay', not {other:?}"
            )))
        }
    };
    Ok(ApplyOptions {
        whiteouts,
        rootless_overlay,
        tar_split,
        memory_limit,
        zstd_window_log_max,
        rootless,
    })
}

/// Apply a layer tar onto `dst`; returns the bytes of uncompressed tar.
#[pyfunction]
#[pyo3(signature = (
    dst, source, *, whiteouts="apply", rootless_overlay=false, tar_split=None,
    memory_limit=None, zstd_window_log_max=None, rootless=false,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_layer(
    py: Python<'_>,
    dst: PathBuf,
    source: &Bound<'_, PyAny>,
    whiteouts: &str,
    rootless_overlay: bool,
    tar_split: Option<PathBuf>,
    memory_limit: Option<u64>,
    zstd_window_log_max: Option<u32>,
    rootless: bool,
) -> PyResult<u64> {
    let opts = options(
        whiteouts,
        rootless_overlay,
        tar_split,
        memory_limit,
        zstd_window_log_max,
        rootless,
    )?;
    Ok(apply(py, dst, source, opts)?.0)
}

/// `apply_layer` returning `(bytes, diff_id, entries)`.
#[pyfunction]
#[pyo3(signature = (dst, source, *, whiteouts="apply", rootless_overlay=false, tar_split=None))]
pub(crate) fn _apply_layer_report(
    py: Python<'_>,
    dst: PathBuf,
    source: &Bound<'_, PyAny>,
    whiteouts: &str,
    rootless_overlay: bool,
    tar_split: Option<PathBuf>,
) -> PyResult<(u64, String, u64)> {
    let opts = options(whiteouts, rootless_overlay, tar_split, None, None, false)?;
    apply(py, dst, source, opts)
}

fn apply(
    py: Python<'_>,
    dst: PathBuf,
    source: &Bound<'_, PyAny>,
    opts: ApplyOptions,
) -> PyResult<(u64, String, u64)> {
    let err = Arc::new(Mutex::new(None));
    let src = source_from_py(source, &err)?;
    let label = src.label();
    let r = py.detach(|| match src {
        Source::Path(p) => {
            let f = std::fs::File::open(&p).map_err(|e| crate::Error::io("open", &p, e))?;
            crate::archive::apply_layer(&dst, f, &opts)
        }
        Source::Bytes(b) => crate::archive::apply_layer(&dst, &b[..], &opts),
        Source::File(r) => crate::archive::apply_layer(&dst, r, &opts),
    });
    if let Some(e) = err.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let rep = r.map_err(|e| to_py_err(e.in_source(&label)))?;
    Ok((rep.bytes, rep.diff_id, rep.entries))
}

/// Write the original tar of a layer applied at `root` to `out`, from its
/// tar-split record; returns the bytes written.
#[pyfunction]
pub(crate) fn _reassemble(
    py: Python<'_>,
    record: PathBuf,
    root: PathBuf,
    out: PathBuf,
) -> PyResult<u64> {
    py.detach(|| {
        let rec = std::fs::File::open(&record).map_err(|e| crate::Error::io("open", &record, e))?;
        let o = std::fs::File::create(&out).map_err(|e| crate::Error::io("open", &out, e))?;
        let mut w = io::BufWriter::with_capacity(1 << 20, o);
        let n = crate::archive::reassemble(rec, &root, &mut w)?;
        io::Write::flush(&mut w).map_err(|e| crate::Error::io("write", &out, e))?;
        Ok(n)
    })
    .py_err()
}
