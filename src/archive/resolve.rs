//! Parent directories of a layer's entries, resolved inside the layer root.
//!
//! The fast path is one `openat2` with `RESOLVE_BENEATH`. When the kernel
//! refuses it (`EXDEV`: an absolute symlink on the way, or a `..` that
//! climbs out), the path is walked to see whether a symlink would take a
//! naive extractor above the root (an [`Error::UnsafeArchive`]: the
//! symlink-then-write attack of CVE-2018-20990 / CVE-2021-38511), and
//! otherwise resolved with `RESOLVE_IN_ROOT`, where absolute targets land
//! inside the root as they do inside the container (`/var/run -> /run`).
//! The last directory resolved is cached: consecutive entries mostly share
//! their parent.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::reader::show;
use crate::error::{Error, IoContext, Result};
use crate::fs::root::Root;
use crate::fs::xattr;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Symlinks followed while checking a path, as the kernel's MAXSYMLINKS.
const MAX_HOPS: usize = 40;

/// A resolved parent directory.
pub(crate) struct Parent {
    pub(crate) fd: OwnedFd,
    /// New entries inherit the directory's group (so need a chown).
    pub(crate) setgid: bool,
    /// The directory has a default ACL, so new entries inherit ACLs (and a
    /// mode the umask did not shape) that their tar entry may not have.
    pub(crate) default_acl: bool,
}

impl AsFd for Parent {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::ops::Deref for Parent {
    type Target = OwnedFd;
    fn deref(&self) -> &OwnedFd {
        &self.fd
    }
}

/// Resolves entry parents inside one root.
pub(crate) struct Resolver {
    pub(crate) root: Root,
    /// The last parent directory resolved, by its clean path.
    pub(crate) cache: Option<(Vec<u8>, Arc<Parent>)>,
    umask: u32,
    /// Components the slow walk looked at (tests check it is linear).
    #[cfg(test)]
    steps: std::cell::Cell<usize>,
}

impl Resolver {
    pub(crate) fn new(root: Root, umask: u32) -> Self {
        Resolver {
            root,
            cache: None,
            umask,
            #[cfg(test)]
            steps: std::cell::Cell::new(0),
        }
    }

    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.root.display_path(Path::new(os(rel)))
    }

    /// The directory `rel` (a clean path) inside the root, as an fd.
    /// Missing directories are created 0755 when `create` is set.
    pub(crate) fn parent(&mut self, rel: &[u8], create: bool) -> Result<Arc<Parent>> {
        if let Some((p, fd)) = &self.cache {
            if p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = match self.resolve(rel) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => self.mkdir_parents(rel)?,
            Err(e) => return Err(self.resolve_error(rel, e)),
        };
        let st = rustix::fs::fstat(&fd).at("stat", &self.shown(rel))?;
        let default_acl = xattr::get(
            &fd,
            OsStr::new(""),
            os(xattr::ACL_DEFAULT),
            &self.shown(rel),
        )?
        .is_some();
        let fd = Arc::new(Parent {
            fd,
            setgid: st.st_mode & libc::S_ISGID != 0,
            default_acl,
        });
        self.cache = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    pub(crate) fn resolve_error(&self, rel: &[u8], e: Errno) -> Error {
        if e == Errno::LOOP {
            Error::Archive(format!("{}: too many levels of symbolic links", show(rel)))
        } else if e == Errno::XDEV {
            Error::UnsafeArchive(format!("{} leads outside the layer", show(rel)))
        } else {
            Error::io(
                "open",
                self.shown(rel),
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        }
    }

    /// Open directory `rel` inside the root. The fast path is
    /// `RESOLVE_BENEATH`; when it refuses (an absolute symlink, or a `..`
    /// that climbs out), the path is walked by [`Self::walk`], which fails
    /// with `EXDEV` where a symlink would take a naive extractor above the
    /// root and otherwise resolves absolute targets inside the root.
    pub(crate) fn resolve(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        match self.beneath(rel) {
            // EAGAIN: renames keep racing the kernel's walk; ours is
            // fd-relative and cannot be made to retry.
            Err(Errno::XDEV) | Err(Errno::AGAIN) => self.walk(rel, false),
            r => r,
        }
    }

    fn beneath(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        let p: &Path = if rel.is_empty() {
            Path::new(".")
        } else {
            Path::new(os(rel))
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        crate::fs::root::openat2(self.root.fd(), p, flags, Mode::empty(), beneath)
    }

    /// Walk `rel` from the root one component at a time, as a naive
    /// extractor on the host would, except that absolute symlink targets
    /// restart at the root (they resolve inside it, as in the container).
    ///
    /// - a `..` that climbs above the root is `EXDEV` (unsafe: CVE-2018-20990
    ///   and CVE-2021-38511 write through exactly such links);
    /// - more than [`MAX_HOPS`] symlinks is `ELOOP`;
    /// - with `create`, a missing directory is made (0755, umask not
    ///   applied) wherever the walk meets one, also behind a symlink whose
    ///   target does not exist yet (`var/run -> /run` before `/run`, or a
    ///   dangling relative link): the parents land inside the root, where
    ///   moby's chrooted `UnpackLayer` and containerd's `RootPath` + mkparent
    ///   put them.
    ///
    /// Every component is opened `O_NOFOLLOW` relative to the one before, so
    /// the cost is linear in the path (and its symlink targets) and a
    /// symlink is only ever followed the way this function reads it.
    fn walk(&self, rel: &[u8], create: bool) -> rustix::io::Result<OwnedFd> {
        let mut todo: Vec<Vec<u8>> = Vec::new();
        push_components(&mut todo, rel);
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut cur = self.beneath(b"")?;
        let mut hops = 0;
        // Looks at one name, bounding the retries when someone keeps
        // swapping a name we created.
        let mut looks = 0;
        while let Some(c) = todo.pop() {
            #[cfg(test)]
            self.steps.set(self.steps.get() + 1);
            if c == b".." {
                if done.pop().is_none() {
                    return Err(Errno::XDEV);
                }
                // `done` holds no symlink, so it reopens exactly and never
                // above the root, whatever was renamed meanwhile.
                cur = self.real_dir(&done)?;
                continue;
            }
            let name = os(&c);
            let opened = rustix::fs::openat(
                &cur,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            match opened {
                Ok(fd) => {
                    cur = fd;
                    done.push(c);
                    looks = 0;
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    let target = match rustix::fs::readlinkat(&cur, name, Vec::new()) {
                        Ok(t) => t,
                        // Not a symlink: a file where a directory should be.
                        Err(Errno::INVAL) => return Err(Errno::NOTDIR),
                        // Swapped meanwhile: look again.
                        Err(Errno::NOENT) if looks < MAX_HOPS => {
                            looks += 1;
                            todo.push(c);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    looks = 0;
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Errno::LOOP);
                    }
                    let t = target.as_bytes();
                    if t.starts_with(b"/") {
                        done.clear();
                        cur = self.beneath(b"")?;
                    }
                    push_components(&mut todo, t);
                }
                Err(Errno::NOENT) if create && looks < MAX_HOPS => {
                    looks += 1;
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            crate::fs::race::created(cur.as_fd(), name);
                            self.fix_new_dir_mode(&cur, name)?
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    // Opened (and checked) like any component.
                    todo.push(c);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// The directory at `path`, a list of components without symlinks.
    fn real_dir(&self, path: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
        crate::fs::root::open_dir_beneath(self.root.fd(), &path.join(&b'/'), OFlags::PATH)
    }

    /// A directory this walk made has mode `0755 & ~umask`; give it 0755,
    /// through a handle of the directory itself so that a symlink swapped
    /// in meanwhile is never followed.
    fn fix_new_dir_mode(&self, dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
        if self.umask & 0o755 == 0 {
            return Ok(());
        }
        let fd = match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Swapped for a non-directory: the walk looks at it again.
            Err(Errno::NOTDIR) | Err(Errno::LOOP) | Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
    }

    /// Create the missing directories of `rel` (0755, umask not applied),
    /// including behind symlinks whose targets do not exist yet.
    fn mkdir_parents(&mut self, rel: &[u8]) -> Result<OwnedFd> {
        self.walk(rel, true).map_err(|e| self.resolve_error(rel, e))
    }
}

/// Push the components of `path` onto `todo` so that they pop in order;
/// empty and `.` components are dropped.
pub(crate) fn push_components(todo: &mut Vec<Vec<u8>>, path: &[u8]) {
    todo.extend(
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .rev()
            .map(<[u8]>::to_vec),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an absolute symlink (`s -> /`) the kernel's fast path refuses
    /// and the walk takes over: one step per component (the escape check
    /// it replaced reopened the whole prefix per component, O(depth^2):
    /// 0.22 s per entry 2,020 levels deep).
    #[test]
    fn the_slow_path_is_linear_in_the_path() {
        let t = tempfile::tempdir().unwrap();
        let depth = 1500;
        let mut fd =
            rustix::fs::open(t.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .unwrap();
        }
        std::os::unix::fs::symlink("/", t.path().join("s")).unwrap();
        let r = Resolver::new(Root::open(t.path()).unwrap(), 0o022);
        let mut rel = b"s".to_vec();
        for _ in 0..depth {
            rel.extend_from_slice(b"/d");
        }
        let got = r.resolve(&rel).unwrap();
        let st = rustix::fs::fstat(&got).unwrap();
        assert_eq!(st.st_ino, rustix::fs::fstat(&fd).unwrap().st_ino);
        assert!(r.steps.get() <= depth + 2, "{} steps", r.steps.get());
    }
}
