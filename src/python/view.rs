//! Bindings for [`crate::view`]: `Layer.walk/stat/read/exists/open`,
//! `Entry`, `Layer.analyze()`, and the notebook displays of `Layer` and
//! `Graph` (drawn by `lamina/display.py`).
//!
//! The methods are a second `#[pymethods]` block of `Layer` and `Graph`
//! (pyo3's `multiple-pymethods`), so that the view's bindings live here.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::graph::PyGraph;
use super::layer::PyLayer;
use super::IntoPy;
use crate::graph::Layer;
use crate::view::{Entry, PathChange, Report, View, Walk};

/// One entry of a layer's merged view.
#[pyclass(frozen, eq, name = "Entry", module = "lamina")]
#[derive(PartialEq)]
pub(crate) struct PyEntry {
    e: Entry,
}

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

#[pymethods]
impl PyEntry {
    /// Its path in the view: `"/etc/passwd"`.
    #[getter]
    fn path(&self) -> OsString {
        self.e.path.clone().into_os_string()
    }

    /// `"file"`, `"dir"`, `"symlink"`, `"hardlink"`, `"char"`, `"block"`,
    /// `"fifo"` or `"socket"`.
    #[getter]
    fn r#type(&self) -> &'static str {
        self.e.kind.name()
    }

    /// Permission bits, setuid, setgid and sticky included.
    #[getter]
    fn mode(&self) -> u32 {
        self.e.mode
    }

    #[getter]
    fn uid(&self) -> u32 {
        self.e.uid
    }

    #[getter]
    fn gid(&self) -> u32 {
        self.e.gid
    }

    /// Bytes of a regular file (or hard link to one) or a symlink target.
    #[getter]
    fn size(&self) -> u64 {
        self.e.size
    }

    /// Modification time, seconds since the epoch.
    #[getter]
    fn mtime(&self) -> f64 {
        self.e.mtime.0 as f64 + self.e.mtime.1 as f64 / 1e9
    }

    /// Modification time, nanoseconds since the epoch.
    #[getter]
    fn mtime_ns(&self) -> i128 {
        self.e.mtime.0 as i128 * 1_000_000_000 + self.e.mtime.1 as i128
    }

    /// A symlink's target, or the earlier name a hard link links to.
    #[getter]
    fn linkname(&self) -> Option<OsString> {
        self.e.linkname.clone().map(PathBuf::into_os_string)
    }

    /// Device major number (character and block devices).
    #[getter]
    fn devmajor(&self) -> u32 {
        self.e.rdev.0
    }

    /// Device minor number (character and block devices).
    #[getter]
    fn devminor(&self) -> u32 {
        self.e.rdev.1
    }

    /// The id of the layer of the chain that provides the entry.
    #[getter]
    fn layer(&self) -> Option<String> {
        self.e.layer.clone()
    }

    /// The entry's fields as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", self.path())?;
        d.set_item("type", self.r#type())?;
        d.set_item("mode", self.e.mode)?;
        d.set_item("uid", self.e.uid)?;
        d.set_item("gid", self.e.gid)?;
        d.set_item("size", self.e.size)?;
        d.set_item("mtime", self.mtime())?;
        d.set_item("mtime_ns", self.mtime_ns())?;
        d.set_item("linkname", self.linkname())?;
        d.set_item("devmajor", self.e.rdev.0)?;
        d.set_item("devminor", self.e.rdev.1)?;
        d.set_item("layer", self.layer())?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = self.path().into_pyobject(py)?.repr()?;
        let mut s = format!(
            "Entry({path}, type='{}', mode=0o{:o}, size={}",
            self.e.kind.name(),
            self.e.mode,
            self.e.size
        );
        if let Some(l) = &self.e.linkname {
            let l = l.clone().into_os_string().into_pyobject(py)?.repr()?;
            s.push_str(&format!(", linkname={l}"));
        }
        if let Some(l) = &self.e.layer {
            s.push_str(&format!(", layer='{}'", &l[..12.min(l.len())]));
        }
        s.push(')');
        Ok(s)
    }
}

/// Entries fetched per trip without the GIL.
const BATCH: usize = 256;

/// The iterator `walk()` returns.
#[pyclass(name = "_Walk", module = "lamina")]
pub(crate) struct PyWalk {
    state: Mutex<WalkState>,
}

struct WalkState {
    walk: Walk,
    ready: VecDeque<Entry>,
    failed: Option<crate::Error>,
    /// The layer walked, named in errors.
    layer: Option<Layer>,
}

#[pymethods]
impl PyWalk {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyEntry> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.ready.is_empty() && st.failed.is_none() {
            let st = &mut *st;
            py.detach(|| {
                for r in st.walk.by_ref().take(BATCH) {
                    match r {
                        Ok(e) => st.ready.push_back(e),
                        Err(e) => {
                            st.failed = Some(e);
                            break;
                        }
                    }
                }
            });
        }
        if let Some(e) = st.ready.pop_front() {
            return Ok(PyEntry { e });
        }
        match st.failed.take() {
            Some(e) => Err(super::to_py_err(in_layer(st.layer.as_ref(), e))),
            None => Err(PyStopIteration::new_err(())),
        }
    }
}

/// A merged view: what `Layer.walk()` and friends read. `_merged_view()`
/// makes one of bare directories (for tests and tools).
#[pyclass(frozen, name = "_View", module = "lamina")]
pub(crate) struct PyView {
    v: Arc<View>,
    /// The layer the view is of (`None` for `_merged_view`), named in
    /// errors.
    layer: Option<Layer>,
}

/// `e` naming the layer of the view it happened in: its id and the images
/// whose top it is (listed only here, on failure).
fn in_layer(layer: Option<&Layer>, e: crate::Error) -> crate::Error {
    let Some(l) = layer else { return e };
    let id = l.id();
    let names: Vec<String> = l
        .graph()
        .images()
        .map(|all| {
            all.iter()
                .filter(|i| i.record().layers.last().map(String::as_str) == Some(id))
                .map(|i| i.name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let layer = match names.is_empty() {
        true => id.to_owned(),
        false => format!("{id} (image {})", names.join(", ")),
    };
    crate::Error::InLayer {
        layer,
        source: Box::new(e),
    }
}

/// A Python binary file object (`io.BufferedReader`) owning `f`'s fd,
/// named `name`.
fn file_object<'py>(
    py: Python<'py>,
    f: std::fs::File,
    name: &std::path::Path,
) -> PyResult<Bound<'py, PyAny>> {
    let io = py.import("io")?;
    let file_io = io.getattr("FileIO")?;
    // `FileIO` takes the fd over (closefd); with a valid fd it does not fail.
    let raw = file_io.call1((f.into_raw_fd(), "rb"))?;
    raw.setattr("name", name.as_os_str())?;
    io.getattr("BufferedReader")?.call1((raw,))
}

impl PyView {
    fn named<T>(&self, r: crate::Result<T>) -> crate::Result<T> {
        r.map_err(|e| in_layer(self.layer.as_ref(), e))
    }

    fn walk(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyWalk> {
        let v = self.v.clone();
        let walk = self.named(py.detach(|| v.walk(&path))).py_err()?;
        Ok(PyWalk {
            state: Mutex::new(WalkState {
                walk,
                ready: VecDeque::new(),
                failed: None,
                layer: self.layer.clone(),
            }),
        })
    }

    fn stat(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<PyEntry> {
        let e = self
            .named(py.detach(|| self.v.stat(&path, follow_symlinks)))
            .py_err()?;
        Ok(PyEntry { e })
    }

    fn read<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.named(py.detach(|| self.v.read(&path))).py_err()?;
        Ok(PyBytes::new(py, &data))
    }

    fn exists(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<bool> {
        self.named(py.detach(|| self.v.exists(&path, follow_symlinks)))
            .py_err()
    }

    fn open<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let f = self.named(py.detach(|| self.v.open(&path))).py_err()?;
        file_object(py, f, &path)
    }
}

#[pymethods]
impl PyView {
    #[pyo3(name = "walk", signature = (path = PathBuf::from("/")))]
    fn py_walk(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyWalk> {
        self.walk(py, path)
    }

    #[pyo3(name = "stat", signature = (path, *, follow_symlinks = false))]
    fn py_stat(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<PyEntry> {
        self.stat(py, path, follow_symlinks)
    }

    #[pyo3(name = "read")]
    fn py_read<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
        self.read(py, path)
    }

    #[pyo3(name = "exists", signature = (path, *, follow_symlinks = false))]
    fn py_exists(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<bool> {
        self.exists(py, path, follow_symlinks)
    }

    #[pyo3(name = "open")]
    fn py_open<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        self.open(py, path)
    }
}

/// The merged view of bare directories, uppermost first (as overlayfs's
/// `lowerdir=` lists them), each in overlay form. Entries name no layer.
#[pyfunction]
pub(crate) fn _merged_view(py: Python<'_>, dirs: Vec<PathBuf>) -> PyResult<PyView> {
    let v = py.detach(|| View::of_stack(&dirs)).py_err()?;
    Ok(PyView {
        v: Arc::new(v),
        layer: None,
    })
}

impl PyLayer {
    fn view(&self, py: Python<'_>) -> PyResult<PyView> {
        let layer = self.layer()?;
        let v = py.detach(|| View::of(layer)).py_err()?;
        Ok(PyView {
            v: Arc::new(v),
            layer: Some(layer.clone()),
        })
    }
}

fn changes_py<'py>(py: Python<'py>, list: &[PathChange]) -> PyResult<Bound<'py, PyList>> {
    let items = list
        .iter()
        .map(|c| (os(&c.path), c.kind.name(), c.bytes))
        .collect::<Vec<_>>();
    PyList::new(py, items)
}

/// A [`Report`] as the dict `lamina.analysis.Report` is made from.
fn report_py<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let layers = PyList::empty(py);
    for l in &r.layers {
        let ld = PyDict::new(py);
        ld.set_item("id", &l.id)?;
        ld.set_item("size", l.size)?;
        ld.set_item("added", changes_py(py, &l.added)?)?;
        ld.set_item("modified", changes_py(py, &l.modified)?)?;
        ld.set_item("removed", changes_py(py, &l.removed)?)?;
        ld.set_item("added_bytes", l.added_bytes)?;
        ld.set_item("modified_bytes", l.modified_bytes)?;
        ld.set_item("removed_bytes", l.removed_bytes)?;
        ld.set_item("hidden_bytes", l.hidden_bytes)?;
        layers.append(ld)?;
    }
    d.set_item("layers", layers)?;
    d.set_item("efficiency", r.efficiency)?;
    d.set_item("wasted_bytes", r.wasted_bytes)?;
    d.set_item("user_wasted_percent", r.user_wasted_percent)?;
    d.set_item("size_bytes", r.size_bytes)?;
    d.set_item("user_size_bytes", r.user_size_bytes)?;
    let ineff = PyList::empty(py);
    for i in &r.inefficiencies {
        let x = PyDict::new(py);
        x.set_item("path", os(&i.path))?;
        x.set_item("count", i.count)?;
        x.set_item("bytes", i.bytes)?;
        let ids: Vec<&str> = i.layers.iter().map(|&k| r.layers[k].id.as_str()).collect();
        x.set_item("layers", ids)?;
        ineff.append(x)?;
    }
    d.set_item("inefficiencies", ineff)?;
    Ok(d)
}

#[pymethods]
impl PyLayer {
    /// Every entry of the merged view at and below `path`.
    #[pyo3(signature = (path = PathBuf::from("/")))]
    fn walk(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyWalk> {
        self.view(py)?.walk(py, path)
    }

    /// The entry at `path` of the merged view.
    #[pyo3(signature = (path, *, follow_symlinks = false))]
    fn stat(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<PyEntry> {
        self.view(py)?.stat(py, path, follow_symlinks)
    }

    /// The content of the regular file at `path` of the merged view.
    fn read<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
        self.view(py)?.read(py, path)
    }

    /// Whether the merged view has an entry at `path`.
    #[pyo3(signature = (path, *, follow_symlinks = false))]
    fn exists(&self, py: Python<'_>, path: PathBuf, follow_symlinks: bool) -> PyResult<bool> {
        // A layer without a view (a store of another driver) is an error,
        // not a missing path.
        self.view(py)?.exists(py, path, follow_symlinks)
    }

    /// The regular file at `path` of the merged view, opened for reading.
    fn open<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        self.view(py)?.open(py, path)
    }

    /// dive's analysis of the layer's chain (a `lamina.analysis.Report`).
    fn analyze<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = py.detach(|| crate::view::analyze(self.layer()?)).py_err()?;
        let data = report_py(py, &r)?;
        py.import("lamina.analysis")?
            .getattr("Report")?
            .call1((data,))
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py()
            .import("lamina.display")?
            .getattr("layer_html")?
            .call1((slf,))?
            .extract()
    }
}

#[pymethods]
impl PyGraph {
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py()
            .import("lamina.display")?
            .getattr("graph_html")?
            .call1((slf,))?
            .extract()
    }
}
