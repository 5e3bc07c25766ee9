//! Bindings for registries: `Graph.pull`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::graph::PyGraph;
use super::image::{progress_from, PyImage};
use super::IntoPy;
use crate::graph::{Progress, ProgressInfo};
use crate::registry::{Credentials, PullOptions};

/// `auth=`: `(user, password)` or `{"username": ..., "password": ...}`.
fn auth_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Credentials>> {
    let Some(o) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if let Ok(t) = o.cast::<PyTuple>() {
        if t.len() == 2 {
            return Ok(Some(Credentials {
                user: t.get_item(0)?.extract()?,
                password: t.get_item(1)?.extract()?,
            }));
        }
    }
    if let Ok(d) = o.cast::<PyDict>() {
        let get = |k: &str| -> PyResult<Option<String>> {
            d.get_item(k)?.map(|v| v.extract()).transpose()
        };
        if let Some(token) = get("identitytoken")? {
            return Ok(Some(Credentials {
                user: "<token>".into(),
                password: token,
            }));
        }
        if let (Some(user), Some(password)) = (get("username")?, get("password")?) {
            return Ok(Some(Credentials { user, password }));
        }
    }
    Err(PyTypeError::new_err(format!(
        "auth is (username, password) or a dict with username and password, not {}",
        o.get_type().name()?
    )))
}

#[pymethods]
impl PyGraph {
    /// Pull an image from a registry (OCI distribution API).
    #[pyo3(signature = (reference, *, platform = None, auth = None, insecure = false, progress = None))]
    fn pull(
        &self,
        py: Python<'_>,
        reference: String,
        platform: Option<String>,
        auth: Option<&Bound<'_, PyAny>>,
        insecure: bool,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyImage> {
        let g = self.graph()?;
        let opts = PullOptions {
            platform,
            auth: auth_from_py(auth)?,
            insecure,
        };
        let pp = progress_from(progress)?;
        let cb = |i: ProgressInfo| pp.call(i);
        let r = py.detach(|| {
            let p = Progress::new(&cb);
            let p = pp.callback.as_ref().map(|_| &p);
            g.pull(&reference, &opts, p)
        });
        if let Some(e) = pp.take_err() {
            return Err(e);
        }
        Ok(PyImage::new(r.py_err()?))
    }
}
