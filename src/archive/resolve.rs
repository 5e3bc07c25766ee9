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
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
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
    pub(crate) cache: Option<(Vec<u8>, Rc<Parent>)>,
    umask: u32,
}

impl Resolver {
    pub(crate) fn new(root: Root, umask: u32) -> Self {
        Resolver {
            root,
            cache: None,
            umask,
        }
    }

    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.root.display_path(Path::new(os(rel)))
    }

    /// The directory `rel` (a clean path) inside the root, as an fd.
    /// Missing directories are created 0755 when `create` is set.
    pub(crate) fn parent(&mut self, rel: &[u8], create: bool) -> Result<Rc<Parent>> {
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
        let fd = Rc::new(Parent {
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
    /// that climbs out), the path is checked for a symlink that escapes
    /// (an [`Error::UnsafeArchive`], as `EXDEV`) and then resolved with
    /// `RESOLVE_IN_ROOT`, where absolute targets land inside the root.
    pub(crate) fn resolve(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        let p: &Path = if rel.is_empty() {
            Path::new(".")
        } else {
            Path::new(os(rel))
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        loop {
            match rustix::fs::openat2(self.root.fd(), p, flags, Mode::empty(), beneath) {
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(Errno::XDEV) => break,
                r => return r,
            }
        }
        if self.escapes(rel)? {
            return Err(Errno::XDEV);
        }
        self.root.open_in(p, flags, Mode::empty())
    }

    /// Whether resolving `rel` from the root, following symlinks the way a
    /// naive extractor on the host would, climbs above the root with `..`.
    /// Absolute targets restart at the root (they resolve inside it).
    fn escapes(&self, rel: &[u8]) -> rustix::io::Result<bool> {
        let mut todo: Vec<Vec<u8>> = rel
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    if done.pop().is_none() {
                        return Ok(true);
                    }
                    continue;
                }
                _ => {}
            }
            let at = done.join(&b'/');
            let dir = self.root.open_in(
                Path::new(if at.is_empty() {
                    OsStr::new(".")
                } else {
                    os(&at)
                }),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )?;
            match rustix::fs::readlinkat(&dir, os(&c), Vec::new()) {
                Ok(target) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Errno::LOOP);
                    }
                    let t = target.as_bytes();
                    if t.starts_with(b"/") {
                        done.clear();
                    }
                    todo.extend(t.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                Err(Errno::INVAL) | Err(Errno::NOENT) => done.push(c),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Create the missing directories of `rel` (0755, umask not applied),
    /// walking from the root one component at a time with no-follow opens;
    /// a symlink on the way is resolved by [`Self::resolve`].
    fn mkdir_parents(&mut self, rel: &[u8]) -> Result<OwnedFd> {
        let mut cur = self.resolve(b"").map_err(|e| self.resolve_error(b"", e))?;
        let mut end = 0;
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        for c in comps {
            end += c.len() + usize::from(end > 0);
            let prefix = &rel[..end];
            let name = os(c);
            let open = |d: &OwnedFd| {
                rustix::fs::openat(
                    d,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            cur = match open(&cur) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e).at("mkdir", &self.shown(prefix)),
                    }
                    if self.umask & 0o755 != 0 {
                        rustix::fs::chmodat(
                            &cur,
                            name,
                            Mode::from_raw_mode(0o755),
                            AtFlags::empty(),
                        )
                        .at("chmod", &self.shown(prefix))?;
                    }
                    open(&cur).at("open", &self.shown(prefix))?
                }
                // A symlink (or a non-directory) on the way.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => self
                    .resolve(prefix)
                    .map_err(|e| self.resolve_error(prefix, e))?,
                Err(e) => return Err(e).at("open", &self.shown(prefix)),
            };
        }
        Ok(cur)
    }
}
