//! `_diff_images`, what `Graph.diff_images` (`lamina.compose`) calls:
//! [`crate::view::diff_images`] with `progress=` and Ctrl-C.

use pyo3::prelude::*;

use super::export::{to_py, PyChange};
use super::image::PyImage;

/// The changes from `a`'s merged tree to `b`'s (images of one graph).
#[pyfunction]
#[pyo3(signature = (a, b, *, progress = None))]
pub(crate) fn _diff_images(
    py: Python<'_>,
    a: PyRef<'_, PyImage>,
    b: PyRef<'_, PyImage>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<PyChange>> {
    let (a, b) = (a.img()?, b.img()?);
    if a.graph().root() != b.graph().root() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "the two images are of different graphs",
        ));
    }
    let list =
        super::progress::with_progress(py, progress, |p| crate::view::diff_images(a, b, Some(p)))?;
    Ok(to_py(list))
}
