//! Bindings for [`crate::copy`].

use std::path::PathBuf;

use pyo3::prelude::*;

use super::IntoPy;
use crate::copy::{copy_dir as core_copy_dir, CopyOptions};

/// Copy the tree at `src` to `dst` losslessly (see the stub for the contract).
#[pyfunction]
#[pyo3(signature = (src, dst, *, hardlink=false))]
pub(crate) fn copy_dir(py: Python<'_>, src: PathBuf, dst: PathBuf, hardlink: bool) -> PyResult<()> {
    let opts = CopyOptions::new().hardlink(hardlink);
    py.detach(|| core_copy_dir(&src, &dst, &opts))
        .py_err()
        .map(drop)
}
