//! The one error type of the core.
//!
//! Every failure of the crate is an [`Error`]. OS failures keep the
//! [`std::io::Error`] as their source together with the operation and the
//! path they failed on, so that the Python bindings can raise the matching
//! `OSError` subclass with `errno` and `filename` set.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in lamina.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation that failed, e.g. `"lchown"`.
        op: &'static str,
        /// The path it failed on (as the caller named it, not a /proc path).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No layer has this id (or no id starts with this prefix).
    #[error("layer not found: {0}")]
    LayerNotFound(String),
    /// A layer with this id already exists.
    #[error("layer already exists: {0}")]
    LayerExists(String),
    /// The layer is mounted or has children.
    #[error("layer in use: {0}")]
    LayerInUse(String),
    /// A malformed tar archive.
    #[error("malformed archive: {0}")]
    Archive(String),
    /// A tar archive that tries to reach outside the layer it is applied to.
    #[error("unsafe archive: {0}")]
    UnsafeArchive(String),
    /// A mount or storage-driver failure.
    #[error("driver error: {0}")]
    Driver(String),
    /// A caller passed a value the API cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error number, where this error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attach the operation and path to an OS error.
pub trait IoContext<T> {
    /// Turn an `io::Error` (or errno) into [`Error::Io`] naming `op` and `path`.
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, io::Error::from_raw_os_error(e.raw_os_error())))
    }
}
