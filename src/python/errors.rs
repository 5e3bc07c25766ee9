//! Map the core's [`crate::Error`] to the exception hierarchy of DESIGN.md
//! §4. The classes live in Python (`lamina/errors.py`) because several of
//! them have two bases (`LayerNotFound(LaminaError, KeyError)`), which a
//! native exception type cannot have.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::Error;

fn lamina_exc<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = py.import("lamina.errors")?;
    Ok(module.getattr(name)?.cast_into::<PyType>()?)
}

fn raise(name: &'static str, msg: String) -> PyErr {
    Python::attach(|py| match lamina_exc(py, name) {
        Ok(ty) => PyErr::from_type(ty, (msg,)),
        Err(e) => e,
    })
}

/// The Python exception for a core error. OS errors become
/// `OSError(errno, "op: strerror", filename)`, which Python turns into the
/// matching subclass (`FileNotFoundError`, `PermissionError`, ...).
pub(crate) fn to_py_err(err: Error) -> PyErr {
    match err {
        Error::Io { op, path, source } => match source.raw_os_error() {
            Some(errno) => {
                let strerror = std::io::Error::from_raw_os_error(errno).to_string();
                let strerror = strerror
                    .rsplit_once(" (os error")
                    .map(|(s, _)| s.to_string())
                    .unwrap_or(strerror);
                // filename is a str (surrogate-escaped where not UTF-8), as Python's own OSErrors.
                PyOSError::new_err((errno, format!("{op}: {strerror}"), path.into_os_string()))
            }
            None => PyOSError::new_err(format!("{op} {}: {source}", path.display())),
        },
        Error::LayerNotFound(m) => raise("LayerNotFound", m),
        Error::LayerExists(m) => raise("LayerExists", m),
        Error::LayerInUse(m) => raise("LayerInUse", m),
        Error::Archive(m) => raise("ArchiveError", m),
        Error::UnsafeArchive(m) => raise("UnsafeArchive", m),
        Error::Driver(m) => raise("DriverError", m),
        Error::InvalidArgument(m) => PyValueError::new_err(m),
    }
}
