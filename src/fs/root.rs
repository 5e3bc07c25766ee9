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
        openat2(&self.fd, rel, flags | OFlags::CLOEXEC, mode, SCOPED)
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

/// How many times an `openat2` that a concurrent rename raced (`EAGAIN`) is
/// tried again before the caller falls back to a walk of its own: a process
/// renaming files in a loop kept unbounded retries spinning, slowing an
/// apply 144-806 fold on paths with many `..`.
pub const OPENAT2_TRIES: usize = 8;

/// `openat2(2)`, tried again on `EINTR` always and on `EAGAIN` (a
/// concurrent rename raced the kernel's walk) up to [`OPENAT2_TRIES`] times;
/// then the `EAGAIN` is the caller's.
pub fn openat2(
    dir: impl AsFd,
    path: &Path,
    flags: OFlags,
    mode: Mode,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, how) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if tries + 1 < OPENAT2_TRIES => tries += 1,
            r => return r,
        }
    }
}

/// Open the directory `rel` (clean components, no `..`) below `dir`, no
/// component a symlink and never above `dir`: `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or, when renames keep racing
/// it, one `O_NOFOLLOW` component at a time, which no rename can make
/// retry.
pub fn open_dir_beneath(dir: impl AsFd, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir.as_fd();
    let r = rel.strip_prefix(b"/").unwrap_or(rel);
    let p: &Path = if r.is_empty() {
        Path::new(".")
    } else {
        Path::new(OsStr::from_bytes(r))
    };
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match openat2(dir, p, flags | OFlags::DIRECTORY, Mode::empty(), how) {
        Err(Errno::AGAIN) => {}
        r => return r,
    }
    let mut cur = rustix::fs::openat(
        dir,
        ".",
        flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in r
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        if c == b".." {
            return Err(Errno::XDEV);
        }
        cur = rustix::fs::openat(
            &cur,
            OsStr::from_bytes(c),
            flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(cur)
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
