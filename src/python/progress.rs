//! `progress=` for the long calls that take none of a stream's own: the
//! core call runs with a [`Progress`] reporting to the Python callback
//! (`PyProgress`: `(bytes, total_bytes, layers, total_layers)`), on a
//! worker thread so that Ctrl-C stops it ([`super::interrupt`]). An
//! exception from the callback cancels the call the same way and is what
//! it raises; the core undoes what it did as after any failure.

use pyo3::prelude::*;

use super::image::progress_from;
use crate::graph::{Progress, ProgressInfo};

/// Run `f` with a progress reporting to `callback` (a callable or None).
pub(crate) fn with_progress<T: Send>(
    py: Python<'_>,
    callback: Option<&Bound<'_, PyAny>>,
    f: impl FnOnce(&Progress<'_>) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let pp = progress_from(callback)?;
    let cb = |i: ProgressInfo| pp.call(i);
    let p = Progress::new(&cb);
    let r = super::interrupt::interruptible(py, &p, || f(&p));
    if let Some(e) = pp.take_err() {
        return Err(e);
    }
    r
}

/// Bytes left to read in a binary file object on a regular file (its size
/// less its position); 0 (not known) for anything else.
pub(crate) fn remaining(obj: &Bound<'_, PyAny>) -> u64 {
    let left = || -> PyResult<u64> {
        let fd: i32 = obj.call_method0("fileno")?.extract()?;
        let st = obj.py().import("os")?.call_method1("fstat", (fd,))?;
        let mode: u32 = st.getattr("st_mode")?.extract()?;
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(0);
        }
        let size: u64 = st.getattr("st_size")?.extract()?;
        let at: u64 = obj.call_method0("tell")?.extract()?;
        Ok(size.saturating_sub(at))
    };
    left().unwrap_or(0)
}
