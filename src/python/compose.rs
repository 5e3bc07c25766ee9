//! `Graph.squash`, `Graph.diff_images`, `Layer.find`, `Image.find` and
//! `Image._repr_html_`: thin forwards to `lamina.compose` and
//! `lamina.image_display`, which compose public calls.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::graph::PyGraph;
use super::image::PyImage;
use super::layer::PyLayer;

fn compose<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("lamina.compose")?.getattr(name)
}

#[pymethods]
impl PyGraph {
    /// `image` as a one-layer image `name`: see `lamina.compose.squash`.
    #[pyo3(signature = (image, name, *, progress = None))]
    fn squash<'py>(
        slf: &Bound<'py, Self>,
        image: &Bound<'py, PyAny>,
        name: &Bound<'py, PyAny>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().graph()?;
        let kw = PyDict::new(slf.py());
        kw.set_item("progress", progress)?;
        compose(slf.py(), "squash")?.call((slf, image, name), Some(&kw))
    }

    /// What `docker diff` lists between two images' merged trees.
    #[pyo3(signature = (a, b, *, progress = None))]
    fn diff_images<'py>(
        slf: &Bound<'py, Self>,
        a: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().graph()?;
        let kw = PyDict::new(slf.py());
        kw.set_item("progress", progress)?;
        compose(slf.py(), "diff_images")?.call((slf, a, b), Some(&kw))
    }
}

#[pymethods]
impl PyLayer {
    /// The entries of the merged view whose path matches the glob.
    fn find<'py>(
        slf: &Bound<'py, Self>,
        pattern: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().layer()?;
        compose(slf.py(), "find")?.call1((slf, pattern))
    }
}

#[pymethods]
impl PyImage {
    /// Config, history and layers (notebooks).
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.get().img()?;
        slf.py()
            .import("lamina.image_display")?
            .getattr("image_html")?
            .call1((slf,))?
            .extract()
    }

    /// `Layer.find` over the image's top layer.
    fn find<'py>(
        slf: &Bound<'py, Self>,
        pattern: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let layer = slf.getattr("layer")?;
        compose(slf.py(), "find")?.call1((layer, pattern))
    }
}
