//! The one error type of the core.
//!
//! Every failure of the crate is an [`Error`], one variant per kind of
//! failure, so that a caller tells them apart by matching, never by reading
//! a message. OS failures keep the [`std::io::Error`] (and so the errno) as
//! their source together with the operation and the path they failed on,
//! so that the Python bindings can raise the matching `OSError` subclass
//! with `errno` and `filename` set; mount failures keep theirs the same way.

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
    /// Applying one entry of a layer tar failed with an OS error; `source`
    /// names the file it failed on, `entry` the entry's name in the archive.
    #[error("tar entry '{}': {source}", entry.escape_debug())]
    Entry {
        /// The entry's path as the archive spells it (lossy UTF-8).
        entry: String,
        /// What failed ([`Error::Io`]).
        #[source]
        source: Box<Error>,
    },
    /// A lookup in a layer's merged view failed; `layer` names the layer
    /// (its id, and the images whose top it is), `source` the path.
    #[error("layer {layer}: {source}")]
    InLayer {
        /// The layer's id, with the names of images on it.
        layer: String,
        /// What failed (an [`Error::Io`] naming the path, mostly).
        #[source]
        source: Box<Error>,
    },
    /// No layer has this id, or no id starts with this prefix.
    #[error("no layer '{}' in {}", reference.escape_debug(), root.display())]
    LayerNotFound {
        /// What was looked up: an id or a prefix.
        reference: String,
        /// The store's root directory.
        root: PathBuf,
    },
    /// A prefix names more than one layer.
    #[error(
        "layer prefix '{}' is ambiguous in {}: {} layers match ({}{})",
        reference.escape_debug(),
        root.display(),
        candidates.len(),
        candidates.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        if candidates.len() > 5 { ", ..." } else { "" }
    )]
    AmbiguousLayer {
        /// The prefix looked up.
        reference: String,
        /// The store's root directory.
        root: PathBuf,
        /// Every id it matches, sorted.
        candidates: Vec<String>,
    },
    /// No image has this name.
    #[error("no image '{}' in {}", name.escape_debug(), root.display())]
    ImageNotFound {
        /// The name looked up (normalized: `app` is `app:latest`).
        name: String,
        /// The store's root directory.
        root: PathBuf,
    },
    /// A layer with this id already exists.
    #[error("layer {0} already exists")]
    LayerExists(String),
    /// The layer is mounted or has children.
    #[error("layer {id} is in use: {why}")]
    LayerInUse {
        /// The layer.
        id: String,
        /// What holds it (a mount by some process, a child layer).
        why: String,
    },
    /// A malformed tar archive.
    #[error("malformed archive: {0}")]
    Archive(String),
    /// A tar archive that tries to reach outside the layer it is applied to.
    #[error("unsafe archive: {0}")]
    UnsafeArchive(String),
    /// A mount or unmount call failed.
    #[error("{op} {}: {source}", target.display())]
    Mount {
        /// `"mount overlay"`, `"bind mount"`, `"unmount"`, ...
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The OS error of the call.
        #[source]
        source: io::Error,
    },
    /// A storage-driver failure that is not an OS error.
    #[error("driver error: {0}")]
    Driver(String),
    /// The store's own files are not what lamina wrote: unparsable, of a
    /// newer format, or inconsistent.
    #[error("corrupt store: {}: {what}", path.display())]
    Corrupt {
        /// The file or directory that is wrong.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A storage driver this build does not have.
    #[error(
        "unknown storage driver {name:?}: this build has {} (or \"auto\")",
        crate::driver::NAMES.join(", ")
    )]
    UnknownDriver {
        /// The name asked for.
        name: String,
    },
    /// A limit that protects the process was reached (memory kept for a
    /// layer's paths, a zstd window): the input needs more than allowed.
    #[error("limit exceeded: {what} needs more than {limit} bytes")]
    LimitExceeded {
        /// What needed more.
        what: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A registry failed or refused a request (the message names the
    /// reference and the blob).
    #[error("{0}")]
    Registry(String),
    /// A registry refused the credentials, or asked for some and there were
    /// none.
    #[error("{0}")]
    RegistryAuth(String),
    /// The registry has no such manifest (or none for the platform asked).
    #[error("{0}")]
    RegistryNotFound(String),
    /// A manifest lamina does not pull (Docker schema 1, an unknown media
    /// type).
    #[error("{0}")]
    UnsupportedManifest(String),
    /// An unmount of a layer this process has not mounted (more unmounts
    /// than mounts).
    #[error("layer {id} is not mounted")]
    NotMounted {
        /// The layer's id.
        id: String,
    },
    /// The caller asked a long call to stop (Ctrl-C in Python); what it
    /// had done is undone as after any other failure.
    #[error("interrupted")]
    Cancelled,
    /// The graph was closed; nothing more can be done through it.
    #[error("the graph is closed")]
    Closed,
    /// Setting up or starting a command in a container failed (reported
    /// by the runner: the step, naming its path, and the OS error).
    #[error("run: {what}: {source}")]
    Run {
        /// The step that failed, e.g. `exec /bin/true` or `mount on /proc`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A worker thread of lamina panicked: a bug in lamina.
    #[error("internal error: {0}")]
    Internal(String),
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

    /// An [`Error::Io`] for `op` on `path` from a raw errno.
    pub fn errno(op: &'static str, path: impl Into<PathBuf>, errno: i32) -> Self {
        Error::io(op, path, io::Error::from_raw_os_error(errno))
    }

    /// An [`Error::Corrupt`] for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }

    /// The OS error number, where this error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Mount { source, .. } => source.raw_os_error(),
            Error::Entry { source, .. } | Error::InLayer { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether this is an OS error with `errno`.
    pub fn is_errno(&self, errno: i32) -> bool {
        self.raw_os_error() == Some(errno)
    }

    /// The error with the tar entry it happened on named, where it is an
    /// OS error (archive errors name their entry in their message already).
    pub fn in_entry(self, entry: &[u8]) -> Error {
        match self {
            e @ Error::Io { .. } => Error::Entry {
                entry: String::from_utf8_lossy(entry).into_owned(),
                source: Box::new(e),
            },
            e => e,
        }
    }

    /// The error with where in the tar it happened named: an OS error is
    /// wrapped as by [`Self::in_entry`]; an archive error gets the entry's
    /// name (`None` where its header could not be read) and the byte
    /// offset of its header in its message. The offset counts bytes of
    /// the tar, so for a compressed layer (`compressed`) the message says
    /// it is the decompressed stream's. Only called on failure, so the
    /// apply loop formats nothing.
    pub fn at_tar(self, entry: Option<&[u8]>, offset: u64, compressed: bool) -> Error {
        let of = if compressed {
            " of the decompressed tar"
        } else {
            ""
        };
        let place = || match entry {
            Some(e) => format!(
                "tar entry '{}' at byte {offset}{of}",
                String::from_utf8_lossy(e).escape_debug()
            ),
            None => format!("tar header at byte {offset}{of}"),
        };
        match self {
            Error::Archive(m) => Error::Archive(format!("{}: {m}", place())),
            Error::UnsafeArchive(m) => Error::UnsafeArchive(format!("{}: {m}", place())),
            Error::Io { .. } => match entry {
                Some(e) => self.in_entry(e),
                None => self,
            },
            e => e,
        }
    }

    /// An archive error with the archive it was read from (a path,
    /// `<bytes>`, `<file object>`) named first, where it is not already.
    pub fn in_source(self, what: &str) -> Error {
        match self {
            Error::Archive(m) if !m.starts_with(what) => Error::Archive(format!("{what}: {m}")),
            Error::UnsafeArchive(m) if !m.starts_with(what) => {
                Error::UnsafeArchive(format!("{what}: {m}"))
            }
            e => e,
        }
    }

    /// The error under any [`Error::Entry`] wrapping.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Entry { source, .. } | Error::InLayer { source, .. } => source.root_cause(),
            e => e,
        }
    }
}

/// The message of a panic payload, for an [`Error::Internal`].
pub fn panic_message(what: &str, payload: Box<dyn std::any::Any + Send>) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    Error::Internal(format!("{what} panicked: {msg}"))
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
