//! Bindings for [`crate::run`]: `Layer._prepare_run` (the Python side,
//! `lamina.run`, starts the runner with `subprocess.Popen`) and the
//! runner's main.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::layer::PyLayer;
use super::IntoPy;
use crate::run::{BindMount, Prepared, RunOptions};

/// A layer mounted for one run (made by `Layer._prepare_run`).
#[pyclass(frozen, name = "_PreparedRun", module = "lamina")]
pub(crate) struct PyPreparedRun {
    inner: Mutex<Option<Prepared>>,
}

#[pymethods]
impl PyPreparedRun {
    /// The runner's command line (`parent`: the pid that starts it;
    /// `error_fd`: the inherited write end of the failure pipe).
    fn runner_argv(&self, parent: u32, error_fd: i32) -> PyResult<Vec<OsString>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let p = g
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("this run has finished"))?;
        p.runner_argv(parent, error_fd).py_err()
    }

    /// Unmount and remove the per-container files (once; later calls do nothing).
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        match p {
            Some(p) => py.detach(|| p.finish()).py_err(),
            None => Ok(()),
        }
    }

    /// Raise what the runner reported on the failure pipe, if anything.
    #[staticmethod]
    fn raise_failure(report: &[u8]) -> PyResult<()> {
        match crate::run::parse_failure(report) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl PyLayer {
    /// Run a command in the layer's merged tree: see `lamina.run.run`.
    #[pyo3(signature = (argv, *, env = None, cwd = "/".to_owned(), user = None, network = "none".to_owned(), mounts = None, hostname = None, stdin = None, stdout = None, stderr = None, input = None, capture_output = false, text = None, encoding = None, errors = None, timeout = None, check = false))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        slf: &Bound<'py, Self>,
        argv: &Bound<'py, PyAny>,
        env: Option<&Bound<'py, PyAny>>,
        cwd: String,
        user: Option<&Bound<'py, PyAny>>,
        network: String,
        mounts: Option<&Bound<'py, PyAny>>,
        hostname: Option<String>,
        stdin: Option<&Bound<'py, PyAny>>,
        stdout: Option<&Bound<'py, PyAny>>,
        stderr: Option<&Bound<'py, PyAny>>,
        input: Option<&Bound<'py, PyAny>>,
        capture_output: bool,
        text: Option<bool>,
        encoding: Option<String>,
        errors: Option<String>,
        timeout: Option<f64>,
        check: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.get().layer()?;
        let py = slf.py();
        let kw = PyDict::new(py);
        kw.set_item("env", env)?;
        kw.set_item("cwd", cwd)?;
        kw.set_item("user", user)?;
        kw.set_item("network", network)?;
        match mounts {
            Some(m) => kw.set_item("mounts", m)?,
            None => kw.set_item("mounts", pyo3::types::PyTuple::empty(py))?,
        }
        kw.set_item("hostname", hostname)?;
        kw.set_item("stdin", stdin)?;
        kw.set_item("stdout", stdout)?;
        kw.set_item("stderr", stderr)?;
        kw.set_item("input", input)?;
        kw.set_item("capture_output", capture_output)?;
        kw.set_item("text", text)?;
        kw.set_item("encoding", encoding)?;
        kw.set_item("errors", errors)?;
        kw.set_item("timeout", timeout)?;
        kw.set_item("check", check)?;
        py.import("lamina.run")?
            .getattr("run")?
            .call((slf, argv), Some(&kw))
    }

    /// Mount the layer for `Layer.run` (see `lamina.run`).
    #[pyo3(signature = (argv, env, cwd, user, network, mounts, hostname))]
    #[allow(clippy::too_many_arguments)]
    fn _prepare_run(
        &self,
        py: Python<'_>,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: String,
        user: Option<String>,
        network: &str,
        mounts: Vec<(PathBuf, String, bool)>,
        hostname: Option<String>,
    ) -> PyResult<PyPreparedRun> {
        let layer = self.layer()?.clone();
        let opts = RunOptions {
            argv,
            env,
            cwd,
            user,
            network: network.parse().py_err()?,
            mounts: mounts
                .into_iter()
                .map(|(source, target, readonly)| BindMount {
                    source,
                    target,
                    readonly,
                })
                .collect(),
            hostname,
        };
        let p = py.detach(|| crate::run::prepare(&layer, opts)).py_err()?;
        Ok(PyPreparedRun {
            inner: Mutex::new(Some(p)),
        })
    }
}

/// The runner's main (`python -m lamina._helper run SPEC`); never returns
/// unless the spec is unreadable.
#[pyfunction]
pub fn _run_main(spec: &str) -> PyResult<()> {
    crate::run::runner::main(spec).py_err().map(|_| ())
}

/// `lamina unshare`'s main (`python -m lamina._helper unshare CMD...`).
#[pyfunction]
pub fn _unshare_main(argv: Vec<String>) -> PyResult<()> {
    crate::run::unshare::main(&argv).py_err().map(|_| ())
}

/// The helper interpreter's command line (for `lamina unshare`).
#[pyfunction]
pub fn _unshare_command() -> PyResult<Vec<OsString>> {
    Ok(crate::run::helper_command().py_err()?.clone())
}
