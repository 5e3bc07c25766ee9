//! Bindings for registries: `Graph.pull`, `Graph.push`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::graph::PyGraph;
use super::image::{compression_from, image_name, progress_from, PyImage};
use super::IntoPy;
use crate::graph::{Progress, ProgressInfo};
use crate::registry::{Credentials, ManifestFormat, PullOptions, PushOptions};

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

/// Check credentials against a registry (`lamina login`); raises
/// `AuthenticationError` when they are refused.
#[pyfunction]
#[pyo3(signature = (host, username, password, *, insecure = false))]
pub fn _check_login(
    py: Python<'_>,
    host: String,
    username: String,
    password: String,
    insecure: bool,
) -> PyResult<()> {
    let creds = Credentials {
        user: username,
        password,
    };
    py.detach(|| crate::registry::login(&host, creds, insecure))
        .py_err()
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
        let p = Progress::new(&cb);
        // Ctrl-C stops a pull (and its wait for another puller's layers),
        // leaving the store as it was.
        let r = super::interrupt::interruptible(py, &p, || g.pull(&reference, &opts, Some(&p)));
        if let Some(e) = pp.take_err() {
            return Err(e);
        }
        Ok(PyImage::new(r?))
    }

    /// Push an image to a registry; the pushed manifest's digest.
    #[pyo3(signature = (image, reference = None, *, auth = None, insecure = false, compression = Some("gzip".to_owned()), format = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        reference: Option<String>,
        auth: Option<&Bound<'_, PyAny>>,
        insecure: bool,
        compression: Option<String>,
        format: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let g = self.graph()?;
        let name = image_name(image)?;
        let compression = compression_from(compression.as_deref())?;
        let format = match format.as_deref() {
            None => None,
            Some("oci") => Some(ManifestFormat::Oci),
            Some("docker") => Some(ManifestFormat::Docker),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "format is 'oci', 'docker' or None, not {other:?}"
                )))
            }
        };
        let opts = PushOptions {
            auth: auth_from_py(auth)?,
            insecure,
            compression,
            format,
        };
        let pp = progress_from(progress)?;
        let cb = |i: ProgressInfo| pp.call(i);
        let p = Progress::new(&cb);
        // Ctrl-C stops a push at the next write of the layer being
        // uploaded; no manifest is written, so the target is unchanged.
        let r = super::interrupt::interruptible(py, &p, || {
            g.push(&name, reference.as_deref(), &opts, Some(&p))
        });
        if let Some(e) = pp.take_err() {
            return Err(e);
        }
        r
    }
}
