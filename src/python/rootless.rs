//! Bindings for [`crate::driver::userns`]: where the rootless mount helper
//! comes from, and its main loop (run by `python -m lamina._helper`).

use std::ffi::OsString;

use pyo3::prelude::*;

use super::IntoPy;

/// Set the command that starts the rootless mount helper (the package does
/// it on import: this interpreter, `-m lamina._helper`).
#[pyfunction]
pub fn _set_mount_helper(argv: Vec<OsString>) {
    crate::driver::userns::set_helper_command(argv);
}

/// The rootless mount helper's main loop; `parent` is the pid of the
/// process it serves. Returns when the parent goes.
#[pyfunction]
pub fn _mount_helper_main(py: Python<'_>, parent: u32) -> PyResult<()> {
    let _ = py;
    crate::driver::userns::serve(parent).py_err()
}
