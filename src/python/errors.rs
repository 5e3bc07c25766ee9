//! Map the core's [`crate::Error`] to the exception hierarchy (the README's
//! "Errors"). The classes live in Python (`lamina/errors.py`) because several of
//! them have two bases (`LayerNotFound(LaminaError, KeyError)`), which a
//! native exception type cannot have.
//!
//! One core variant, one exception: OS errors (and the OS errors of one tar
//! entry) become `OSError(errno, "op: strerror", filename)`, which Python
//! turns into the matching subclass; mount failures become `DriverError`
//! with the same three fields; lookups carry what was looked up.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use pyo3::IntoPyObjectExt;

use crate::Error;

fn lamina_exc<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = py.import("lamina.errors")?;
    Ok(module.getattr(name)?.cast_into::<PyType>()?)
}

/// `name(*args)` from `lamina.errors`, with `attrs` set on the instance.
fn raise_in<'py>(
    py: Python<'py>,
    name: &'static str,
    args: Bound<'py, PyTuple>,
    attrs: &[(&str, Bound<'py, PyAny>)],
) -> PyErr {
    let made = lamina_exc(py, name).and_then(|ty| {
        let exc = ty.call1(args)?;
        for (k, v) in attrs {
            exc.setattr(*k, v)?;
        }
        Ok(PyErr::from_value(exc))
    });
    made.unwrap_or_else(|e| e)
}

/// `v` as a Python object (`None` should the conversion fail).
fn any<'py>(py: Python<'py>, v: impl IntoPyObjectExt<'py>) -> Bound<'py, PyAny> {
    v.into_bound_py_any(py)
        .unwrap_or_else(|_| py.None().into_bound(py))
}

/// A tuple of exception arguments.
fn args<'py>(py: Python<'py>, items: Vec<Bound<'py, PyAny>>) -> Bound<'py, PyTuple> {
    PyTuple::new(py, items).expect("a tuple of objects")
}

/// `strerror` of an OS error, without Rust's " (os error N)" tail.
fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    s.rsplit_once(" (os error")
        .map(|(s, _)| s.to_string())
        .unwrap_or(s)
}

/// The Python exception for a core error.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    Python::attach(|py| to_py_err_in(py, err))
}

fn to_py_err_in(py: Python<'_>, err: Error) -> PyErr {
    match err {
        Error::Io { op, path, source } => match source.raw_os_error() {
            // filename is a str (surrogate-escaped where not UTF-8), as
            // Python's own OSErrors.
            Some(errno) => PyOSError::new_err((
                errno,
                format!("{op}: {}", strerror(errno)),
                path.into_os_string(),
            )),
            None => PyOSError::new_err(format!("{op} {}: {source}", path.display())),
        },
        Error::Run { what, source } => match source.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, format!("{what}: {}", strerror(errno)))),
            None => PyOSError::new_err(format!("{what}: {source}")),
        },
        Error::Entry { entry, source } => match *source {
            Error::Io { op, path, source } if source.raw_os_error().is_some() => {
                let errno = source.raw_os_error().unwrap_or_default();
                PyOSError::new_err((
                    errno,
                    format!(
                        "{op}: {} (tar entry '{}')",
                        strerror(errno),
                        entry.escape_debug()
                    ),
                    path.into_os_string(),
                ))
            }
            inner => to_py_err_in(py, inner),
        },
        Error::InLayer { layer, source } => match *source {
            Error::Io { op, path, source } if source.raw_os_error().is_some() => {
                let errno = source.raw_os_error().unwrap_or_default();
                PyOSError::new_err((
                    errno,
                    format!("{op}: {} (in layer {layer})", strerror(errno)),
                    path.into_os_string(),
                ))
            }
            Error::InvalidArgument(m) => PyValueError::new_err(format!("layer {layer}: {m}")),
            inner => to_py_err_in(py, inner),
        },
        e @ (Error::LayerNotFound { .. } | Error::AmbiguousLayer { .. }) => {
            let msg = e.to_string();
            let (reference, root, candidates) = match e {
                Error::LayerNotFound { reference, root } => (reference, root, Vec::new()),
                Error::AmbiguousLayer {
                    reference,
                    root,
                    candidates,
                } => (reference, root, candidates),
                _ => unreachable!("matched above"),
            };
            let attrs = [
                ("reference", any(py, reference)),
                ("root", any(py, root.into_os_string())),
                ("candidates", any(py, candidates)),
            ];
            raise_in(py, "LayerNotFound", args(py, vec![any(py, msg)]), &attrs)
        }
        e @ Error::ImageNotFound { .. } => {
            let msg = e.to_string();
            let Error::ImageNotFound { name, root } = e else {
                unreachable!("matched above")
            };
            let attrs = [
                ("name", any(py, name)),
                ("root", any(py, root.into_os_string())),
            ];
            raise_in(py, "ImageNotFound", args(py, vec![any(py, msg)]), &attrs)
        }
        Error::LayerExists(id) => {
            let msg = format!("layer {id} already exists");
            let attrs = [("id", any(py, id))];
            raise_in(py, "LayerExists", args(py, vec![any(py, msg)]), &attrs)
        }
        e @ Error::LayerInUse { .. } => {
            let msg = e.to_string();
            let Error::LayerInUse { id, .. } = e else {
                unreachable!("matched above")
            };
            let attrs = [("id", any(py, id))];
            raise_in(py, "LayerInUse", args(py, vec![any(py, msg)]), &attrs)
        }
        Error::Archive(m) => raise_in(py, "ArchiveError", args(py, vec![any(py, m)]), &[]),
        Error::UnsafeArchive(m) => raise_in(py, "UnsafeArchive", args(py, vec![any(py, m)]), &[]),
        Error::Mount { op, target, source } => {
            let errno = source.raw_os_error().unwrap_or_default();
            let a = vec![
                any(py, errno),
                any(py, format!("{op}: {}", strerror(errno))),
                any(py, target.into_os_string()),
            ];
            raise_in(py, "DriverError", args(py, a), &[])
        }
        Error::Driver(m) => raise_in(py, "DriverError", args(py, vec![any(py, m)]), &[]),
        e @ Error::Corrupt { .. } => {
            let msg = e.to_string();
            let Error::Corrupt { path, .. } = e else {
                unreachable!("matched above")
            };
            let attrs = [("path", any(py, path.into_os_string()))];
            raise_in(py, "CorruptStore", args(py, vec![any(py, msg)]), &attrs)
        }
        e @ Error::LimitExceeded { .. } => {
            let msg = e.to_string();
            raise_in(py, "LimitExceeded", args(py, vec![any(py, msg)]), &[])
        }
        e @ Error::NotMounted { .. } => {
            let msg = e.to_string();
            let Error::NotMounted { id } = e else {
                unreachable!("matched above")
            };
            let attrs = [("id", any(py, id))];
            raise_in(py, "NotMounted", args(py, vec![any(py, msg)]), &attrs)
        }
        Error::Registry(m) => raise_in(py, "RegistryError", args(py, vec![any(py, m)]), &[]),
        Error::RegistryAuth(m) => {
            raise_in(py, "AuthenticationError", args(py, vec![any(py, m)]), &[])
        }
        Error::RegistryNotFound(m) => {
            raise_in(py, "ManifestUnknown", args(py, vec![any(py, m)]), &[])
        }
        Error::UnsupportedManifest(m) => {
            raise_in(py, "UnsupportedManifest", args(py, vec![any(py, m)]), &[])
        }
        Error::Cancelled => pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
        Error::Internal(m) => raise_in(
            py,
            "LaminaError",
            args(py, vec![any(py, format!("internal error: {m}"))]),
            &[],
        ),
        e @ (Error::UnknownDriver { .. } | Error::Closed | Error::InvalidArgument(_)) => {
            let msg = match e {
                Error::InvalidArgument(m) => m,
                e => e.to_string(),
            };
            PyValueError::new_err(msg)
        }
    }
}
