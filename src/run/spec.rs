//! What the runner is told: one JSON document, built by [`crate::run`]'s
//! library side and read by [`crate::run::runner`] in a fresh process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which network the command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new network namespace holding only `lo`, up (`docker run --network none`).
    None,
    /// The caller's network namespace (`--network host`).
    Host,
}

impl std::str::FromStr for Network {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Network> {
        match s {
            "none" => Ok(Network::None),
            "host" => Ok(Network::Host),
            _ => Err(crate::Error::InvalidArgument(format!(
                "network must be \"none\" or \"host\", not {s:?}"
            ))),
        }
    }
}

/// A host path bound into the container (`docker run -v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// The host path (file or directory), bound with what is mounted under it.
    pub source: PathBuf,
    /// The absolute path inside the container; made if missing.
    pub target: String,
    /// Read-only, recursively.
    pub readonly: bool,
}

/// Whose user namespace the runner works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Userns {
    /// The caller's own (root, or a caller already in a namespace of its own).
    Inherit,
    /// The rootless mount helper's (pid): its user and mount namespaces hold
    /// the container's overlay mount.
    Join(u32),
    /// A new one mapping the caller's ids to 0 (rootless, nothing mounted:
    /// the vfs driver's plain directories).
    New,
}

/// Everything the runner needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// The container's merged tree, as a path in the namespace the runner
    /// works in.
    pub root: PathBuf,
    /// The command; `argv[0]` without a `/` is looked up in the container's `PATH`.
    pub argv: Vec<String>,
    /// The environment, `KEY=value`; `PATH`, `HOSTNAME` and `HOME` are added
    /// where missing, as Docker adds them.
    pub env: Vec<String>,
    /// The working directory in the container; made if missing (as `docker run -w`).
    pub cwd: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, looked up in the container's
    /// `/etc/passwd` and `/etc/group`; `None` is root.
    pub user: Option<String>,
    /// The network.
    pub network: Network,
    /// The UTS namespace's hostname.
    pub hostname: String,
    /// Host files bound over `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`
    /// (source, container path), as Docker binds its per-container copies.
    pub files: Vec<(PathBuf, String)>,
    /// The caller's bind mounts, in order.
    pub mounts: Vec<BindMount>,
    /// The user namespace.
    pub userns: Userns,
    /// The pid the runner expects as its parent (it exits at once otherwise).
    pub parent: u32,
    /// The fd (inherited) a setup or exec failure is written to as
    /// `errno message`; closed unwritten when the command starts.
    pub error_fd: i32,
}
