//! Bindings for [`crate::archive::changes`]: `lamina.changes` and the
//! `Change` class that `Layer.changes()` returns too.

use std::path::PathBuf;

use pyo3::prelude::*;

use super::IntoPy;
use crate::archive::changes::{ChangeKind, ChangesOptions};

/// One changed path: `path` ("/etc/passwd") and `kind` ("A", "C" or "D").
#[pyclass(frozen, name = "Change", module = "lamina")]
pub(crate) struct PyChange {
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    kind: &'static str,
}

impl PyChange {
    pub(crate) fn from_core(c: &crate::archive::changes::Change) -> PyChange {
        PyChange {
            path: c.path.to_string_lossy().into_owned(),
            kind: c.kind.code(),
        }
    }
}

#[pymethods]
impl PyChange {
    #[new]
    fn new(path: String, kind: &str) -> PyResult<Self> {
        let kind = match kind {
            "A" => ChangeKind::Added,
            "C" => ChangeKind::Modified,
            "D" => ChangeKind::Deleted,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "kind is 'A', 'C' or 'D', not {other:?}"
                )))
            }
        };
        Ok(PyChange {
            path,
            kind: kind.code(),
        })
    }

    fn __repr__(&self) -> String {
        format!("Change({:?}, {:?})", self.path, self.kind)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyChange>()
            .map(|o| o.get().path == self.path && o.get().kind == self.kind)
            .unwrap_or(false)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.path, self.kind).hash(&mut h);
        h.finish()
    }
}

/// The changes that turn the tree `old_dir` into `new_dir`, parents first.
#[pyfunction]
pub(crate) fn changes(
    py: Python<'_>,
    old_dir: PathBuf,
    new_dir: PathBuf,
) -> PyResult<Vec<PyChange>> {
    let c = py
        .detach(|| crate::archive::changes::changes(&old_dir, &new_dir, &ChangesOptions::default()))
        .py_err()?;
    Ok(c.iter().map(PyChange::from_core).collect())
}
