//! PyO3 bindings: thin wrappers over the core, one file per core module.
//! Nothing here touches the filesystem itself; every long call runs inside
//! `Python::detach` so other Python threads keep running.

mod archive;
mod build;
mod compose;
mod copy;
mod errors;
mod export;
mod file_object;
mod graph;
mod image;
mod image_diff;
mod init_layer;
mod interrupt;
mod layer;
mod metadata;
mod progress;
mod registry;
mod rootless;
mod run;
mod view;

use pyo3::prelude::*;

/// The native module `lamina._lamina`; the public API is `lamina`.
#[pymodule]
mod _lamina {
    #[pymodule_export]
    use super::copy::copy_dir;
    #[pymodule_export]
    use super::init_layer::setup_init_layer;

    #[pymodule_export]
    use super::archive::{_apply_layer_report, _reassemble, apply_layer};

    #[pymodule_export]
    use super::graph::{_close_all, PyGraph};

    #[pymodule_export]
    use super::layer::{Mounted, PyLayer};

    #[pymodule_export]
    use super::image::PyImage;

    #[pymodule_export]
    use super::image_diff::_diff_images;

    #[pymodule_export]
    use super::registry::_check_login;

    #[pymodule_export]
    use super::export::{changes, export_diff, export_upper_diff, upper_changes, PyChange};

    #[pymodule_export]
    use super::view::{_merged_view, PyEntry, PyView, PyWalk};

    #[pymodule_export]
    use super::rootless::{_mount_helper_main, _set_mount_helper};

    #[pymodule_export]
    use super::run::{_run_main, _unshare_command, _unshare_main, PyPreparedRun};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "DRIVERS",
            pyo3::types::PyTuple::new(m.py(), crate::driver::NAMES)?,
        )?;
        m.add(
            "INIT_LAYER_ENTRIES",
            super::init_layer::default_entries_py(m.py())?,
        )?;
        Ok(())
    }
}

pub(crate) use errors::to_py_err;

/// Convert a core result into a Python result.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

/// So `?` on a core result works in a binding: the closed-graph guards
/// (`Graph.g()`, `Layer.l()`, `Image.img()`) are used both inside
/// `Python::detach` closures (core results) and outside them.
impl From<crate::Error> for PyErr {
    fn from(e: crate::Error) -> PyErr {
        to_py_err(e)
    }
}

impl<T> IntoPy<T> for crate::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
