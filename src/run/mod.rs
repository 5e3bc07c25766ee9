//! Run a command with a layer's merged tree as its root (`Layer.run`,
//! `lamina run`): new mount, pid, ipc and uts namespaces (and network,
//! unless the host's is asked for), `/proc`, `/dev` and `/sys` as
//! bubblewrap and `buildah run --isolation chroot` set them up, Docker's
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` bound over the
//! init layer's empty files, the exit status returned.
//!
//! The split, and why:
//!
//! - [`prepare`] (here, in the caller's process): mounts the layer, writes
//!   the per-container files into a staging directory under the store's
//!   `tmp/`, and says which user namespace the runner must work in: the
//!   caller's (root), the rootless mount helper's (whose mount namespace
//!   holds the overlay, [`crate::driver::userns`]), or a new one (rootless
//!   vfs, nothing mounted). The caller then starts the runner with the
//!   stdio it wants (Python's `subprocess.Popen`, so `PIPE`, files,
//!   `input=` and `timeout=` behave exactly as in `subprocess.run`) and
//!   calls [`Prepared::finish`] when it has ended.
//! - [`runner`] (a separate, single-threaded process, `python -m
//!   lamina._helper run SPEC`): a process with lamina loaded has many
//!   threads, and neither `unshare(CLONE_NEWUSER)` nor `setns` into a user
//!   namespace is allowed to one; forking a multithreaded process and then
//!   allocating is undefined behaviour. The runner forks the pid 1 that
//!   sets the tree up ([`container`]) and execs the command.
//! - [`user`]: `docker run -u` and Docker's added environment.
//! - [`unshare`]: `lamina unshare`, a shell in a user namespace of its own.
//!
//! Killing the runner (a timeout, Ctrl-C) kills the whole process tree:
//! see [`runner`].

pub mod container;
pub mod runner;
pub mod spec;
pub mod unshare;
pub mod user;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use spec::{BindMount, Network, RunSpec, Userns};

use crate::error::{Error, IoContext, Result};
use crate::graph::layout::Staging;
use crate::graph::Layer;

/// What to run, and how (the runner's [`RunSpec`] less what [`prepare`] decides).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The command.
    pub argv: Vec<String>,
    /// `KEY=value` pairs (Docker adds `PATH`, `HOSTNAME`, `HOME` where missing).
    pub env: Vec<String>,
    /// The working directory in the container.
    pub cwd: String,
    /// `docker run -u`'s user spec; `None` is root.
    pub user: Option<String>,
    /// The network.
    pub network: Network,
    /// Binds from the host.
    pub mounts: Vec<BindMount>,
    /// The hostname; `None`: the layer id's first 12 characters (Docker's
    /// container id), or the host's with the host network.
    pub hostname: Option<String>,
}

/// A layer mounted and ready for the runner; [`Prepared::finish`] (or
/// drop) gives the mount back and removes the per-container files.
#[derive(Debug)]
pub struct Prepared {
    layer: Layer,
    spec: RunSpec,
    staging: Option<Staging>,
    mounted: bool,
}

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn check_options(o: &RunOptions) -> Result<()> {
    if o.argv.is_empty() {
        return Err(Error::InvalidArgument("run: argv is empty".into()));
    }
    let absolute = |what: &str, p: &str| {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "run: {what} must be an absolute path in the container, not {p:?}"
            )))
        }
    };
    absolute("cwd", &o.cwd)?;
    for m in &o.mounts {
        absolute("a mount's target", &m.target)?;
        if !m.source.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "run: a mount's source must be an absolute host path, not {}",
                m.source.display()
            )));
        }
        std::fs::symlink_metadata(&m.source).at("stat", &m.source)?;
    }
    for e in &o.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(Error::InvalidArgument(format!(
                "run: environment entries are KEY=value, not {e:?}"
            )));
        }
    }
    if let Some(h) = &o.hostname {
        if h.is_empty() || h.len() > 64 {
            return Err(Error::InvalidArgument(format!("run: bad hostname {h:?}")));
        }
    }
    Ok(())
}

/// Mount `layer` and write its per-container files: everything the runner
/// needs but the stdio and the error pipe.
pub fn prepare(layer: &Layer, opts: RunOptions) -> Result<Prepared> {
    check_options(&opts)?;
    let graph = layer.graph();
    graph.check_open()?;
    let hostname = match (&opts.hostname, opts.network) {
        (Some(h), _) => h.clone(),
        (None, Network::Host) => host_name(),
        (None, Network::None) => layer.id().chars().take(12).collect(),
    };
    let layout = graph.inner.store.layout();
    let staging = layout.stage(&graph.inner.store.read_lock()?, "run")?;
    let dir = staging.path().to_owned();
    let hosts = match opts.network {
        Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS.into()),
        Network::None => HOSTS.to_owned(),
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut files = Vec::new();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).at("write", &p)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .at("chmod", &p)?;
        files.push((p, format!("/etc/{name}")));
    }
    let visible = layer.mount(false)?;
    let holder = graph.inner.driver.namespace_holder();
    let (root, userns) = match holder {
        Some(pid) => {
            let prefix = PathBuf::from(format!("/proc/{pid}/root"));
            let inside = visible
                .strip_prefix(&prefix)
                .map(|p| Path::new("/").join(p))
                .unwrap_or_else(|_| visible.clone());
            (inside, Userns::Join(pid))
        }
        None if crate::driver::probe::can_mount() => (visible, Userns::Inherit),
        None => (visible, Userns::New),
    };
    Ok(Prepared {
        layer: layer.clone(),
        spec: RunSpec {
            root,
            argv: opts.argv,
            env: opts.env,
            cwd: opts.cwd,
            user: opts.user,
            network: opts.network,
            hostname,
            files,
            mounts: opts.mounts,
            userns,
            parent: 0,
            error_fd: -1,
        },
        staging: Some(staging),
        mounted: true,
    })
}

impl Prepared {
    /// The runner's command line, for a runner whose parent is `parent`
    /// and which inherits `error_fd` (the write end of a pipe the caller
    /// reads after the runner ends: empty, or `errno message`).
    pub fn runner_argv(&self, parent: u32, error_fd: i32) -> Result<Vec<OsString>> {
        let helper = helper_command()?;
        let mut spec = self.spec.clone();
        spec.parent = parent;
        spec.error_fd = error_fd;
        let json = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let mut argv = helper.clone();
        argv.push("run".into());
        argv.push(json.into());
        Ok(argv)
    }

    /// The spec the runner gets.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Give the mount back and remove the per-container files.
    pub fn finish(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        let unmounted = if std::mem::take(&mut self.mounted) {
            self.layer.unmount().map(drop)
        } else {
            Ok(())
        };
        let removed = match self.staging.take() {
            Some(s) => s.remove(),
            None => Ok(()),
        };
        unmounted.and(removed)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// The command that runs lamina's helper interpreter (its first argument
/// picks the runner: `run SPEC`, `unshare CMD...`).
pub fn helper_command() -> Result<&'static Vec<OsString>> {
    crate::driver::userns::HELPER_COMMAND
        .get()
        .ok_or_else(|| Error::Driver("no runner command (lamina's Python package sets one)".into()))
}

/// A setup or exec failure the runner wrote to the error pipe
/// (`errno message`), as an error; `None` for an empty report.
pub fn parse_failure(report: &[u8]) -> Option<Error> {
    let text = String::from_utf8_lossy(report);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (errno, what) = text.split_once(' ').unwrap_or((text, ""));
    let errno = errno.parse::<i32>().unwrap_or(libc::EIO);
    if errno == 0 {
        return Some(Error::InvalidArgument(format!("run: {what}")));
    }
    Some(Error::Run {
        what: what.to_owned(),
        source: std::io::Error::from_raw_os_error(errno),
    })
}
