//! A Python binary file object as a [`Write`], shared by every binding
//! that streams bytes out (`export_diff`, `Layer.diff`, `Graph.save`).

use std::io::{self, Write};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The GIL is taken only for each `write()` call, so callers write in large
/// chunks. A Python exception raised by `.write()` is kept aside: the core
/// sees an io error and unwinds, and the binding re-raises the exception
/// itself ([`PyWriter::take_err`]).
pub(crate) struct PyWriter {
    obj: Py<PyAny>,
    err: Option<PyErr>,
}

impl PyWriter {
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> Self {
        PyWriter {
            obj: obj.clone().unbind(),
            err: None,
        }
    }

    /// The exception `.write()` raised, if it did.
    pub(crate) fn take_err(&mut self) -> Option<PyErr> {
        self.err.take()
    }
}

impl Write for PyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let r = Python::attach(|py| -> PyResult<()> {
            let mut off = 0;
            while off < data.len() {
                let b = PyBytes::new(py, &data[off..]);
                let n = self.obj.call_method1(py, "write", (b,))?;
                // Raw files may write less than asked; buffered ones return
                // None or the full length.
                off += match n.extract::<Option<usize>>(py)? {
                    Some(0) => return Err(PyValueError::new_err("write() accepted no bytes")),
                    Some(n) => n.min(data.len() - off),
                    None => data.len() - off,
                };
            }
            Ok(())
        });
        r.map_err(|e| {
            self.err = Some(e);
            io::Error::other("the file object's write() raised")
        })?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
