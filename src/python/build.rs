//! Bindings for building images: `Graph.commit_image` and the typed read
//! views of an image's config (`Image.env`, `cmd`, ...).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;

use super::graph::PyGraph;
use super::image::PyImage;
use super::metadata::json_object_from_py;
use super::IntoPy;
use crate::image::{CommitImage, ConfigChange};

/// `changes=`: an iterable of instructions (a single str is one), or a dict
/// of config keys.
fn changes_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Vec<ConfigChange>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![ConfigChange::Instruction(s.to_cow()?.into_owned())]);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(vec![ConfigChange::Set(json_object_from_py(d, "changes")?)]);
    }
    let Ok(items) = obj.try_iter() else {
        return Err(PyTypeError::new_err(format!(
            "changes is an iterable of str or a dict, not {}",
            obj.get_type().name()?
        )));
    };
    let mut out = Vec::new();
    for item in items {
        let item = item?;
        if let Ok(d) = item.cast::<PyDict>() {
            out.push(ConfigChange::Set(json_object_from_py(d, "changes")?));
            continue;
        }
        let s = item.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "a change is a str such as 'ENV A=1' (or a dict), not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        out.push(ConfigChange::Instruction(s.to_cow()?.into_owned()));
    }
    Ok(out)
}

#[pymethods]
impl PyGraph {
    /// `docker commit`: the container's changes as a new layer on its
    /// image, and an image `name` with the inherited config changed.
    // Python's keyword arguments, one Rust parameter each.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (container, name, *, changes = None, created_by = None, author = None, comment = None, progress = None))]
    fn commit_image(
        &self,
        py: Python<'_>,
        container: &Bound<'_, PyAny>,
        name: String,
        changes: Option<&Bound<'_, PyAny>>,
        created_by: Option<String>,
        author: Option<String>,
        comment: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyImage> {
        let g = self.graph()?;
        let box_ = super::graph::layer_from_py(g, py, container)?;
        let opts = CommitImage {
            changes: match changes.filter(|c| !c.is_none()) {
                Some(c) => changes_from_py(c)?,
                None => Vec::new(),
            },
            created_by,
            author,
            comment,
        };
        let img = super::progress::with_progress(py, progress, |p| {
            g.commit_image_with(&box_, &name, &opts, Some(p))
        })?;
        Ok(PyImage::new(img))
    }
}

impl PyImage {
    /// `config.<key>` of the image config, `None` where absent.
    fn runtime<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let cfg = self.img()?.config().py_err()?;
        let v = cfg
            .get("config")
            .and_then(|c| c.get(key))
            .unwrap_or(&Value::Null);
        to_py(py, v)
    }
}

fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v).expect("a JSON value encodes");
    py.import("json")?.call_method1("loads", (text,))
}

#[pymethods]
impl PyImage {
    /// The environment, ``{"PATH": "/usr/bin", ...}`` (``config.Env``).
    #[getter]
    fn env<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cfg = self.img()?.config().py_err()?;
        let d = PyDict::new(py);
        let list = cfg
            .get("config")
            .and_then(|c| c.get("Env"))
            .and_then(Value::as_array);
        for e in list.into_iter().flatten().filter_map(Value::as_str) {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// ``config.Cmd`` (a list of str) or ``None``.
    #[getter]
    fn cmd<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.runtime(py, "Cmd")
    }

    /// ``config.Entrypoint`` (a list of str) or ``None``.
    #[getter]
    fn entrypoint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.runtime(py, "Entrypoint")
    }

    /// ``config.Labels`` (a dict, empty when there are none).
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.runtime(py, "Labels")?;
        if v.is_none() {
            return Ok(PyDict::new(py).into_any());
        }
        Ok(v)
    }

    /// ``config.WorkingDir`` (``""`` when unset, as Docker shows it).
    #[getter]
    fn workdir<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.runtime(py, "WorkingDir")?;
        if v.is_none() {
            return Ok(PyString::new(py, "").into_any());
        }
        Ok(v)
    }

    /// ``config.User`` (``""`` when unset).
    #[getter]
    fn user<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.runtime(py, "User")?;
        if v.is_none() {
            return Ok(PyString::new(py, "").into_any());
        }
        Ok(v)
    }

    /// The config's ``history``, base first: dicts with ``created``,
    /// ``created_by`` and, where set, ``author``, ``comment``,
    /// ``empty_layer``.
    #[getter]
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cfg = self.img()?.config().py_err()?;
        match cfg.get("history") {
            Some(h @ Value::Array(_)) => to_py(py, h),
            _ => to_py(py, &Value::Array(Vec::new())),
        }
    }
}
