//! Path resolution scoped to a layer root.
//!
//! All lookups go through `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel
//! treats the root fd as `/`, so `..` cannot climb above it and absolute
//! symlinks inside the layer (`/var/run -> /run`) resolve inside it, as they
//! would inside the container. Magic links (`/proc/self/root`) are refused.
//!
//! The kernel makes such a lookup fail with `EAGAIN` when a rename anywhere
//! races its walk through `..`; the retries are bounded ([`OPENAT2_TRIES`])
//! and then the same resolution is done here, one `O_NOFOLLOW` component at
//! a time from fds ([`Root::open_in`]), which no rename can make retry: a
//! process renaming files in a loop slows a lookup by a bounded factor and
//! never makes it fail.

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

    /// Open `rel` inside the root with `flags`, following symlinks inside
    /// it (the last one too, unless `flags` has `O_NOFOLLOW`).
    pub fn open_in(&self, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        let rel = relative(rel);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match openat2(&self.fd, rel, flags | OFlags::CLOEXEC, mode, SCOPED) {
            Err(Errno::AGAIN) => self.walk_in(rel, flags, mode),
            r => r,
        }
    }

    /// `RESOLVE_IN_ROOT` done here: every component opened `O_NOFOLLOW`
    /// from the fd of the one before, a symlink read and its target walked
    /// (an absolute one from the root), `..` never above the root, at most
    /// [`MAX_SYMLINKS`] symlinks. A magic link reads as the path it shows,
    /// walked inside the root like any target, so it is never followed.
    fn walk_in(&self, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        use std::os::unix::ffi::OsStrExt;
        let mut todo: Vec<Vec<u8>> = Vec::new();
        crate::archive::resolve::push_components(&mut todo, rel.as_os_str().as_bytes());
        // The directories walked into from the root; `..` pops one.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut hops = 0;
        let follow_last = !flags.contains(OFlags::NOFOLLOW);
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        loop {
            let Some(c) = todo.pop() else {
                // Only `.` and `..` were left: the directory reached.
                let here = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
                return rustix::fs::openat(here, ".", flags | OFlags::CLOEXEC, mode);
            };
            if c == b".." {
                dirs.pop();
                continue;
            }
            let here = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
            let name = OsStr::from_bytes(&c);
            let last = todo.is_empty();
            let target = if last && !follow_last {
                None
            } else {
                match rustix::fs::readlinkat(here, name, Vec::new()) {
                    Ok(t) => Some(t),
                    // Not a symlink (or not there: the open says which).
                    Err(Errno::INVAL) | Err(Errno::NOENT) => None,
                    Err(e) => return Err(e),
                }
            };
            if let Some(t) = target {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let t = t.as_bytes();
                if t.starts_with(b"/") {
                    dirs.clear();
                }
                crate::archive::resolve::push_components(&mut todo, t);
                continue;
            }
            if last {
                // A symlink swapped in since the readlink is refused
                // (`ELOOP`), never followed.
                return rustix::fs::openat(
                    here,
                    name,
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    mode,
                );
            }
            dirs.push(rustix::fs::openat(here, name, dir_flags, Mode::empty())?);
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

/// How many times an `openat2` that a concurrent rename raced (`EAGAIN`) is
/// tried again before the caller falls back to a walk of its own: a process
/// renaming files in a loop kept unbounded retries spinning, slowing an
/// apply 144-806 fold on paths with many `..`.
pub const OPENAT2_TRIES: usize = 8;

/// Symlinks followed in one lookup, as the kernel's `MAXSYMLINKS`.
pub const MAX_SYMLINKS: usize = 40;

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
        #[cfg(test)]
        let r = match test_hook::call(path) {
            Some(e) => Err(e),
            None => rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, how),
        };
        #[cfg(not(test))]
        let r = rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, how);
        match r {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if tries + 1 < OPENAT2_TRIES => tries += 1,
            r => {
                #[cfg(test)]
                test_hook::returned(tries + 1, matches!(r, Err(Errno::AGAIN)));
                return r;
            }
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

/// Counts the `openat2` calls of this thread and can make them fail as a
/// rename racing every one of them would (`EAGAIN`), so tests prove the
/// retry bound by a count.
#[cfg(test)]
pub(crate) mod test_hook {
    use std::cell::Cell;

    use rustix::io::Errno;

    thread_local! {
        static CALLS: Cell<usize> = const { Cell::new(0) };
        static MOST_TRIES: Cell<usize> = const { Cell::new(0) };
        static GAVE_UP: Cell<usize> = const { Cell::new(0) };
        static FORCED: Cell<Option<Errno>> = const { Cell::new(None) };
    }

    /// Past this many calls under a forced error the retries are taken to
    /// be unbounded: the call fails with `ENOTRECOVERABLE` instead (a panic
    /// here would leave the apply's threads waiting for each other).
    const RUNAWAY: usize = 100_000;

    /// Make every `openat2` of this thread fail with `e` (`None`: call it).
    pub(crate) fn force(e: Option<Errno>) {
        FORCED.with(|f| f.set(e));
    }

    /// `openat2` calls made by this thread so far.
    pub(crate) fn calls() -> usize {
        CALLS.with(Cell::get)
    }

    /// The most calls one [`super::openat2`] of this thread made, and how
    /// many of them returned `EAGAIN` (the retries used up), since the
    /// last `reset`.
    pub(crate) fn most_tries_and_gave_up() -> (usize, usize) {
        (MOST_TRIES.with(Cell::get), GAVE_UP.with(Cell::get))
    }

    pub(crate) fn reset() {
        MOST_TRIES.with(|m| m.set(0));
        GAVE_UP.with(|g| g.set(0));
    }

    pub(super) fn returned(tries: usize, again: bool) {
        MOST_TRIES.with(|m| m.set(m.get().max(tries)));
        if again {
            GAVE_UP.with(|g| g.set(g.get() + 1));
        }
    }

    /// Before an `openat2` of `path`. `.` is never forced: the kernel
    /// only fails a scoped walk that steps through a `..`, and a walk
    /// starts with `.`.
    pub(super) fn call(path: &std::path::Path) -> Option<Errno> {
        let n = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let forced = FORCED
            .with(Cell::get)
            .filter(|_| path != std::path::Path::new("."));
        match forced {
            Some(_) if n >= RUNAWAY => Some(Errno::NOTRECOVERABLE),
            f => f,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The inode `r` opened, or its errno: what two resolutions are compared by.
    fn what(r: rustix::io::Result<OwnedFd>) -> std::result::Result<(u64, u64), Errno> {
        r.map(|fd| {
            let st = rustix::fs::fstat(&fd).unwrap();
            (st.st_dev, st.st_ino)
        })
    }

    /// Once `EAGAIN` has used up the retries, `open_in` resolves as the
    /// kernel's `RESOLVE_IN_ROOT` does (the oracle: the same lookups with
    /// no error forced), after exactly [`OPENAT2_TRIES`] calls, instead of
    /// handing the caller the `EAGAIN`.
    #[test]
    fn exhausted_retries_fall_back_to_the_same_resolution() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::write(r.join("a/b/c/file"), b"x").unwrap();
        symlink("../../..", r.join("a/b/up")).unwrap();
        symlink("/a/b", r.join("abs")).unwrap();
        symlink("../b/c/file", r.join("a/b/link")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("/nope", r.join("dangling")).unwrap();
        symlink("/proc/self/root", r.join("magic")).unwrap();
        let root = Root::open(r).unwrap();
        let paths = [
            "a/b/up/a/b/c/file",
            "a/b/../../../../a/b/c",
            "a/b/up/../../a/b/up/a/b/link",
            "/abs/c/file",
            "abs/c/../../../..",
            "a/b/link",
            "a/b/link/x",
            "loop1",
            "dangling",
            "magic",
            "magic/etc",
            "a/b/c/file/x",
            "missing/x",
            "",
            "..",
            "a/b/up",
        ];
        let flag_sets = [
            OFlags::PATH,
            OFlags::PATH | OFlags::NOFOLLOW,
            OFlags::PATH | OFlags::DIRECTORY,
            OFlags::RDONLY | OFlags::NONBLOCK,
        ];
        for p in paths {
            for flags in flag_sets {
                let want = what(root.open_in(Path::new(p), flags, Mode::empty()));
                test_hook::force(Some(Errno::AGAIN));
                let before = test_hook::calls();
                let got = what(root.open_in(Path::new(p), flags, Mode::empty()));
                let calls = test_hook::calls() - before;
                test_hook::force(None);
                assert_eq!(got, want, "{p:?} with {flags:?}");
                let expected = if relative(Path::new(p)).as_os_str().is_empty() {
                    1
                } else {
                    OPENAT2_TRIES
                };
                assert_eq!(calls, expected, "{p:?} with {flags:?}");
            }
        }
    }
}
