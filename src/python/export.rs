//! Bindings for [`crate::archive::changes`], [`crate::archive::export`] and
//! [`crate::archive::upper`].

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyRuntimeWarning, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::file_object::PyWriter;
use super::IntoPy;
use crate::archive::changes::{self as core_changes, ChangesOptions};
use crate::archive::export::{self, ExportOptions, ExportReport};
use crate::archive::upper;

/// One changed path: `.path` (`"/etc/passwd"`) and `.kind` (`"A"`, `"C"` or
/// `"D"`).
#[pyclass(frozen, eq, ord, hash, module = "lamina", name = "Change")]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PyChange {
    path: OsString,
    kind: &'static str,
}

#[pymethods]
impl PyChange {
    #[new]
    fn new(path: OsString, kind: &str) -> PyResult<Self> {
        let kind = match kind {
            "A" => "A",
            "C" => "C",
            "D" => "D",
            _ => {
                return Err(PyValueError::new_err(format!(
                    "kind is 'A', 'C' or 'D', not {kind:?}"
                )))
            }
        };
        Ok(PyChange { path, kind })
    }

    /// The path inside the tree, starting with `/`.
    #[getter]
    fn path(&self) -> OsString {
        self.path.clone()
    }

    /// `"A"` (added), `"C"` (changed) or `"D"` (deleted).
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = self.path.clone().into_pyobject(py)?.repr()?;
        Ok(format!("Change({path}, '{}')", self.kind))
    }
}

pub(crate) fn to_py(list: Vec<core_changes::Change>) -> Vec<PyChange> {
    list.into_iter()
        .map(|c| PyChange {
            path: c.path.into_os_string(),
            kind: c.kind.code(),
        })
        .collect()
}

/// The changes that turn `old_dir` into `new_dir`.
#[pyfunction]
#[pyo3(signature = (old_dir, new_dir, *, content=false))]
pub(crate) fn changes(
    py: Python<'_>,
    old_dir: PathBuf,
    new_dir: PathBuf,
    content: bool,
) -> PyResult<Vec<PyChange>> {
    let opts = ChangesOptions { content };
    let list = py
        .detach(|| core_changes::changes(&old_dir, &new_dir, &opts))
        .py_err()?;
    Ok(to_py(list))
}

/// The changes an overlay upper dir makes over its lower tree.
#[pyfunction]
pub(crate) fn upper_changes(
    py: Python<'_>,
    upper: PathBuf,
    lower: PathBuf,
) -> PyResult<Vec<PyChange>> {
    let list = py
        .detach(|| upper::upper_changes(&upper, &lower))
        .py_err()?;
    Ok(to_py(list))
}

/// Where a tar goes: memory, a path, or a Python file object.
enum Dst {
    Bytes,
    Path(PathBuf),
    File(Py<PyAny>),
}

fn dst_of(dst: Option<&Bound<'_, PyAny>>) -> PyResult<Dst> {
    let Some(d) = dst else { return Ok(Dst::Bytes) };
    if d.hasattr("write")? {
        return Ok(Dst::File(d.clone().unbind()));
    }
    match d.extract::<PathBuf>() {
        Ok(p) => Ok(Dst::Path(p)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "dst is a path (str or os.PathLike) or a binary file object with write(), not {}",
            super::metadata::type_name(d)
        ))),
    }
}

/// Run `export` into `dst` with the GIL released; bytes when `dst` is None.
fn run_export<F>(
    py: Python<'_>,
    dst: Option<&Bound<'_, PyAny>>,
    export: F,
) -> PyResult<Option<Py<PyBytes>>>
where
    F: Fn(&mut dyn Write) -> crate::Result<ExportReport> + Send + Sync,
{
    let (report, bytes) = match dst_of(dst)? {
        Dst::Bytes => {
            let (r, out) = py
                .detach(|| {
                    let mut out = Vec::new();
                    export(&mut out).map(|r| (r, out))
                })
                .py_err()?;
            (r, Some(PyBytes::new(py, &out).unbind()))
        }
        Dst::Path(p) => {
            let r = py.detach(|| {
                // No BufWriter: the tar writer already writes 1 MiB at a time.
                let mut f = File::create(&p).map_err(|e| crate::Error::io("create", &p, e))?;
                let r = export(&mut f)?;
                // Durability is the caller's choice (as with `tar -cf`): no fsync.
                Ok(r)
            });
            (r.py_err()?, None)
        }
        Dst::File(obj) => {
            let mut w = PyWriter::new(obj.bind(py));
            let r = py.detach(|| export(&mut w));
            match (r, w.take_err()) {
                (Err(_), Some(e)) => return Err(e),
                (r, _) => (r.py_err()?, None),
            }
        }
    };
    let category = py.get_type::<PyRuntimeWarning>();
    for msg in &report.warnings {
        let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        PyErr::warn(py, category.as_any(), &msg, 2)?;
    }
    Ok(bytes)
}

fn opts(source_date_epoch: Option<i64>, content: bool) -> ExportOptions {
    ExportOptions {
        source_date_epoch,
        content,
    }
}

/// The tar of the changes from `old_dir` (None: nothing) to `new_dir`.
#[pyfunction]
#[pyo3(signature = (old_dir, new_dir, dst=None, *, source_date_epoch=None, content=false))]
pub(crate) fn export_diff(
    py: Python<'_>,
    old_dir: Option<PathBuf>,
    new_dir: PathBuf,
    dst: Option<Bound<'_, PyAny>>,
    source_date_epoch: Option<i64>,
    content: bool,
) -> PyResult<Option<Py<PyBytes>>> {
    let o = opts(source_date_epoch, content);
    run_export(py, dst.as_ref(), |w| {
        export::export_diff(old_dir.as_deref(), Path::new(&new_dir), w, &o)
    })
}

/// The tar of the changes an overlay upper dir makes over its lower tree.
#[pyfunction]
#[pyo3(signature = (upper, lower, dst=None, *, source_date_epoch=None))]
pub(crate) fn export_upper_diff(
    py: Python<'_>,
    upper: PathBuf,
    lower: PathBuf,
    dst: Option<Bound<'_, PyAny>>,
    source_date_epoch: Option<i64>,
) -> PyResult<Option<Py<PyBytes>>> {
    let o = opts(source_date_epoch, false);
    run_export(py, dst.as_ref(), |w| {
        upper::write_upper_diff(&upper, &lower, w, &o)
    })
}
