//! Bindings for [`crate::init_layer`].

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::IntoPy;
use crate::init_layer::{default_entries, InitEntry, InitKind};

fn entry_from_py(item: &Bound<'_, PyAny>) -> PyResult<InitEntry> {
    let t = item.cast::<PyTuple>().map_err(|_| {
        PyValueError::new_err(
            "an init-layer entry is a tuple: (kind, path) or ('symlink', path, target)",
        )
    })?;
    let kind: String = t.get_item(0)?.extract()?;
    let path: PathBuf = t.get_item(1)?.extract()?;
    let kind = match (kind.as_str(), t.len()) {
        ("dir", 2) => InitKind::Dir,
        ("file", 2) => InitKind::File,
        ("symlink", 3) => InitKind::Symlink(t.get_item(2)?.extract()?),
        _ => {
            return Err(PyValueError::new_err(format!(
                "bad init-layer entry {t}: kind is 'dir', 'file' or 'symlink' (with a target)"
            )))
        }
    };
    Ok(InitEntry { path, kind })
}

fn entry_to_py<'py>(py: Python<'py>, e: &InitEntry) -> PyResult<Bound<'py, PyTuple>> {
    let path = e.path.to_string_lossy().into_owned();
    match &e.kind {
        InitKind::Dir => PyTuple::new(py, ["dir", &path]),
        InitKind::File => PyTuple::new(py, ["file", &path]),
        InitKind::Symlink(t) => PyTuple::new(py, ["symlink", &path, &t.to_string_lossy()]),
    }
}

/// The seed's entries as a tuple of tuples, exported as `INIT_LAYER_ENTRIES`.
pub(crate) fn default_entries_py(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let items = default_entries()
        .iter()
        .map(|e| entry_to_py(py, e))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

/// Create the entries of a container's `-init` layer under `path`.
#[pyfunction]
#[pyo3(signature = (path, entries=None))]
pub(crate) fn setup_init_layer(
    py: Python<'_>,
    path: PathBuf,
    entries: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let entries = match entries {
        None => default_entries(),
        Some(items) => items
            .try_iter()?
            .map(|i| entry_from_py(&i?))
            .collect::<PyResult<Vec<_>>>()?,
    };
    py.detach(|| crate::init_layer::setup_init_layer_with(&path, &entries))
        .py_err()
}
