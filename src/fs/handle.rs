//! A handle on an inode that lamina just made, for the metadata calls that
//! follow its creation: owner, extended attributes, mode, times.
//!
//! By-name calls act on whatever is at the name when they run. A process
//! that can write into the destination (the container itself, when a layer
//! is applied or copied into a live tree) can exchange the new entry for a
//! symlink (`renameat2(RENAME_EXCHANGE)`) between the creation and the call,
//! and `chmodat` follows it: a tar's `06777` for a directory lands on a
//! root-owned file outside. So the new entry is opened once, `O_NOFOLLOW`,
//! its type checked against what was created, and every later call goes
//! through that handle, which stays on the inode whatever is renamed.
//!
//! Directories are opened for reading (so `fchmod` and `fsetxattr` work on
//! them); everything else that cannot be opened for reading without side
//! effects (a FIFO open blocks, a device open talks to a driver, a symlink
//! cannot be opened at all) is opened `O_PATH`. `fchmod` and `fsetxattr`
//! refuse `O_PATH` fds, so for those the mode and the xattrs go through
//! `/proc/self/fd/N`: `chmod` and `setxattr` follow that magic link to the
//! handle's own inode and no further (a symlink's own inode answers `chmod`
//! with `EOPNOTSUPP`; it is never chmod-ed anyway). `fchmodat2` with
//! `AT_EMPTY_PATH` would do the same without `/proc`, but only from Linux 6.6
//! and not through rustix; owner and times take `AT_EMPTY_PATH` on every
//! kernel lamina supports.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::proc_path;
use crate::error::{Error, IoContext, Result};

/// An open handle on one inode; see the module docs.
#[derive(Debug)]
pub struct Handle {
    fd: OwnedFd,
    /// Opened `O_PATH`: mode and xattrs go through `/proc/self/fd/N`.
    path_only: bool,
}

impl Handle {
    /// Open `dir/name`, which the caller just created as a `kind`, without
    /// following it. Anything else found there (a symlink swapped in, a
    /// directory where a FIFO was made) is `ELOOP` ("a symlink where the
    /// created object should be") or `ENOTDIR`, naming `shown`.
    pub fn open(dir: impl AsFd, name: &OsStr, kind: FileType, shown: &Path) -> Result<Handle> {
        let dir = dir.as_fd();
        if kind == FileType::Directory {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at("open", shown)?;
            return Ok(Handle {
                fd,
                path_only: false,
            });
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", shown)?;
        let st = rustix::fs::fstat(&fd).at("stat", shown)?;
        let found = FileType::from_raw_mode(st.st_mode);
        if found != kind {
            let errno = if found == FileType::Symlink {
                libc::ELOOP
            } else {
                libc::EEXIST
            };
            return Err(Error::errno("open", shown, errno));
        }
        Ok(Handle {
            fd,
            path_only: true,
        })
    }

    /// A handle on an fd opened for reading or writing (a regular file
    /// created with `O_EXCL`, a directory).
    pub fn from_fd(fd: OwnedFd) -> Handle {
        Handle {
            fd,
            path_only: false,
        }
    }

    /// A handle on an `O_PATH` fd the caller already holds on the right
    /// inode (a layer root it opened itself).
    pub fn from_path_fd(fd: OwnedFd) -> Handle {
        Handle {
            fd,
            path_only: true,
        }
    }

    /// The fd, for keeping after the metadata is set.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The handle, borrowed.
    pub fn inode(&self) -> Inode<'_> {
        Inode {
            fd: self.fd.as_fd(),
            path_only: self.path_only,
        }
    }

    /// Set owner and group (clears setuid/setgid: chown before chmod).
    pub fn chown(&self, uid: u32, gid: u32) -> rustix::io::Result<()> {
        self.inode().chown(uid, gid)
    }

    /// Set the permission bits (with setuid, setgid, sticky).
    pub fn chmod(&self, mode: u32) -> rustix::io::Result<()> {
        self.inode().chmod(mode)
    }

    /// Set the extended attribute `key`.
    pub fn set_xattr(&self, key: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        self.inode().set_xattr(key, value)
    }

    /// Remove the extended attribute `key` (see [`Inode::remove_xattr`]).
    pub fn remove_xattr(&self, key: &OsStr) -> rustix::io::Result<()> {
        self.inode().remove_xattr(key)
    }

    /// Set atime and mtime.
    pub fn set_times(&self, times: &Timestamps) -> rustix::io::Result<()> {
        self.inode().set_times(times)
    }
}

/// A borrowed fd on one inode, with the metadata calls of [`Handle`].
#[derive(Debug, Clone, Copy)]
pub struct Inode<'a> {
    fd: BorrowedFd<'a>,
    path_only: bool,
}

impl<'a> Inode<'a> {
    /// An fd opened for reading or writing.
    pub fn fd(fd: BorrowedFd<'a>) -> Self {
        Inode {
            fd,
            path_only: false,
        }
    }

    /// An `O_PATH` fd.
    pub fn path_fd(fd: BorrowedFd<'a>) -> Self {
        Inode {
            fd,
            path_only: true,
        }
    }

    /// The fd.
    pub fn as_fd(&self) -> BorrowedFd<'a> {
        self.fd
    }

    /// Set owner and group (clears setuid/setgid: chown before chmod).
    pub fn chown(&self, uid: u32, gid: u32) -> rustix::io::Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        if self.path_only {
            rustix::fs::chownat(self.fd, "", u, g, AtFlags::EMPTY_PATH)
        } else {
            rustix::fs::fchown(self.fd, u, g)
        }
    }

    /// Set the permission bits (with setuid, setgid, sticky).
    pub fn chmod(&self, mode: u32) -> rustix::io::Result<()> {
        let mode = Mode::from_raw_mode(mode & 0o7777);
        if self.path_only {
            rustix::fs::chmod(proc_path(self.fd, OsStr::new("")), mode)
        } else {
            rustix::fs::fchmod(self.fd, mode)
        }
    }

    /// Set the extended attribute `key`.
    pub fn set_xattr(&self, key: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        if self.path_only {
            rustix::fs::setxattr(
                proc_path(self.fd, OsStr::new("")),
                key,
                value,
                XattrFlags::empty(),
            )
        } else {
            rustix::fs::fsetxattr(self.fd, key, value, XattrFlags::empty())
        }
    }

    /// Remove the extended attribute `key`; one that is not there, or a
    /// filesystem without xattrs, is no error.
    pub fn remove_xattr(&self, key: &OsStr) -> rustix::io::Result<()> {
        let r = if self.path_only {
            rustix::fs::removexattr(proc_path(self.fd, OsStr::new("")), key)
        } else {
            rustix::fs::fremovexattr(self.fd, key)
        };
        match r {
            Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => Ok(()),
            r => r,
        }
    }

    /// Set atime and mtime.
    pub fn set_times(&self, times: &Timestamps) -> rustix::io::Result<()> {
        if self.path_only {
            rustix::fs::utimensat(self.fd, "", times, AtFlags::EMPTY_PATH)
        } else {
            rustix::fs::futimens(self.fd, times)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn dir_fd(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn acts_on_the_inode_not_the_name() {
        let t = tempfile::tempdir().unwrap();
        let d = dir_fd(t.path());
        rustix::fs::mknodat(&d, "p", FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let h = Handle::open(&d, OsStr::new("p"), FileType::Fifo, Path::new("p")).unwrap();
        // Swap the name for a symlink to a sentinel: the handle stays put.
        std::fs::write(t.path().join("sentinel"), "s").unwrap();
        std::fs::set_permissions(
            t.path().join("sentinel"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::rename(t.path().join("p"), t.path().join("p-moved")).unwrap();
        std::os::unix::fs::symlink("sentinel", t.path().join("p")).unwrap();
        h.chmod(0o4755).unwrap();
        h.set_times(&Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 7,
                tv_nsec: 0,
            },
        })
        .unwrap();
        let moved = std::fs::symlink_metadata(t.path().join("p-moved")).unwrap();
        assert_eq!(moved.mode() & 0o7777, 0o4755);
        assert_eq!(moved.mtime(), 7);
        let s = std::fs::metadata(t.path().join("sentinel")).unwrap();
        assert_eq!(s.mode() & 0o7777, 0o600);
        assert_ne!(s.mtime(), 7);
    }

    #[test]
    fn refuses_what_was_not_created() {
        let t = tempfile::tempdir().unwrap();
        let d = dir_fd(t.path());
        std::os::unix::fs::symlink("/", t.path().join("l")).unwrap();
        for kind in [FileType::Directory, FileType::Fifo] {
            let e = Handle::open(&d, OsStr::new("l"), kind, Path::new("l")).unwrap_err();
            assert!(
                e.is_errno(libc::ELOOP) || e.is_errno(libc::ENOTDIR),
                "{kind:?}: {e:?}"
            );
        }
        assert!(Handle::open(&d, OsStr::new("l"), FileType::Symlink, Path::new("l")).is_ok());
    }
}
