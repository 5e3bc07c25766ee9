//! Path resolution scoped to a layer root.
//!
//! All lookups go through `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel
//! treats the root fd as `/`, so `..` cannot climb above it and absolute
//! symlinks inside the layer (`/var/run -> /run`) resolve inside it, as they
//! would inside the container. Magic links (`/proc/self/root`) are refused.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

const SCOPED: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// A directory that every path is resolved inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Open `path` as a root. The path itself is trusted (the caller named it).
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", path)?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's own fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path the root was opened with (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `rel` for error messages; never used to open anything.
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.path.join(relative(rel))
    }

    /// Open `rel` inside the root with `flags`, following symlinks inside it.
    pub fn open_in(&self, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        let rel = relative(rel);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        loop {
            match rustix::fs::openat2(&self.fd, rel, flags | OFlags::CLOEXEC, mode, SCOPED) {
                // openat2 returns EAGAIN when a concurrent rename raced the walk.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                r => return r,
            }
        }
    }

    /// Open the directory `rel` (as an `O_PATH` fd).
    pub fn open_dir(&self, rel: &Path) -> Result<OwnedFd> {
        self.open_in(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .at("open", &self.display_path(rel))
    }

    /// Open the directory `rel`, creating it and any missing parents with
    /// `mode` (umask does not apply). Existing directories are left as they
    /// are. A non-directory in the way is an error (`ENOTDIR`).
    pub fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        match self.open_in(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).at("open", &self.display_path(rel)),
        }
        let (parent, name) = split(rel)?;
        let pfd = self.mkdir_all(&parent, mode)?;
        match rustix::fs::mkdirat(&pfd, &name, Mode::from_raw_mode(mode)) {
            Ok(()) => {
                rustix::fs::chmodat(
                    &pfd,
                    &name,
                    Mode::from_raw_mode(mode),
                    rustix::fs::AtFlags::empty(),
                )
                .at("chmod", &self.display_path(rel))?;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e).at("mkdir", &self.display_path(rel)),
        }
        let fd = rustix::fs::openat(
            &pfd,
            &name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match fd {
            Ok(fd) => Ok(fd),
            // The name is a symlink to a directory: resolve it inside the root.
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => self.open_dir(rel),
            Err(e) => Err(e).at("open", &self.display_path(rel)),
        }
    }

    /// The parent directory of `rel` (resolved inside the root) and the last
    /// component, which is not resolved: the caller acts on it with a
    /// no-follow call.
    pub fn parent_of(&self, rel: &Path) -> Result<(OwnedFd, OsString)> {
        let (parent, name) = split(rel)?;
        Ok((self.open_dir(&parent)?, name))
    }
}

/// `rel` without a leading `/`, so it joins under a root.
pub fn relative(rel: &Path) -> &Path {
    rel.strip_prefix("/").unwrap_or(rel)
}

/// Split `rel` into its parent and its last plain component. `..`, `.` and
/// an empty name have no last component to act on, and are refused.
pub fn split(rel: &Path) -> Result<(PathBuf, OsString)> {
    let mut comps: Vec<&OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::InvalidArgument(format!(
                    "path {} has a '..' component",
                    rel.display()
                )))
            }
            Component::Prefix(_) => unreachable!("no path prefixes on unix"),
        }
    }
    let name = comps
        .pop()
        .ok_or_else(|| Error::InvalidArgument(format!("path {:?} names the root itself", rel)))?;
    Ok((comps.iter().collect(), name.to_os_string()))
}
