//! The attributes of a copied inode: owner, extended attributes, mode, times.
//!
//! Order matters, and is the one that keeps every bit:
//!
//! 1. owner first, because `chown` clears setuid/setgid and
//!    `security.capability` (the kernel's `ATTR_KILL_PRIV`);
//! 2. extended attributes next, while the copy still has the writable mode
//!    it was created with: the kernel checks `user.*` writes against the
//!    inode's write bit even for its owner, so an unprivileged copy of a
//!    0444 file or a 0555 directory could not take them after `chmod`; and
//!    writing a POSIX ACL may clear setgid for a caller outside the group;
//! 3. mode after both, so setuid/setgid survive (`chmod` kills neither
//!    capabilities nor ACLs; the ACL mask and the group bits agree because
//!    they agreed on the source);
//! 4. atime and mtime last, since every step above moves ctime only, but
//!    writing data or children would move mtime.
//!
//! Symlinks are never `chmod`-ed (Linux has no symlink modes); nothing here
//! follows a symlink. The copy is always named by a handle on its inode
//! ([`Inode`]), never by a name someone could swap for a symlink meanwhile.

use std::ffi::{CStr, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Gid, Stat, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::error::{IoContext, Result};
use crate::fs::handle::Inode;
use crate::fs::{proc_path, xattr::is_skippable};

/// An inode named either by an fd open on it or by (directory fd, name).
#[derive(Clone, Copy)]
pub(super) enum Obj<'a> {
    /// An fd open on the inode itself (regular files and directories).
    Fd(BorrowedFd<'a>),
    /// A name in a directory: symlinks, devices, FIFOs and sockets, which
    /// are never opened (a FIFO blocks, a device may have side effects).
    At(BorrowedFd<'a>, &'a CStr),
}

/// The form the `*xattr` calls take: an fd, or a no-follow `/proc` path.
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Path(PathBuf),
}

impl<'a> Obj<'a> {
    fn xattr_target(self) -> XattrTarget<'a> {
        match self {
            Obj::Fd(fd) => XattrTarget::Fd(fd),
            Obj::At(dir, name) => {
                XattrTarget::Path(proc_path(dir, OsStr::from_bytes(name.to_bytes())))
            }
        }
    }
}

/// Largest xattr name list and value Linux allows (`XATTR_LIST_MAX`,
/// `XATTR_SIZE_MAX`); one buffer of each per worker means one syscall per
/// list and per value, never a size probe first.
const XATTR_MAX: usize = 64 * 1024;

/// Per-worker scratch buffers for copying extended attributes.
pub(super) struct XattrBufs {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBufs {
    pub(super) fn new() -> Self {
        XattrBufs {
            names: vec![0; XATTR_MAX],
            value: vec![0; XATTR_MAX],
        }
    }
}

/// Retry a sized read with a bigger buffer on ERANGE (a filesystem with a
/// larger limit than Linux's generic one).
fn read_grow(
    buf: &mut Vec<u8>,
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<usize> {
    loop {
        match call(buf) {
            Err(Errno::RANGE) if buf.len() < (16 << 20) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            r => return r,
        }
    }
}

fn list(t: &XattrTarget<'_>, buf: &mut Vec<u8>) -> rustix::io::Result<usize> {
    read_grow(buf, |b| match t {
        XattrTarget::Fd(fd) => rustix::fs::flistxattr(fd, b),
        XattrTarget::Path(p) => rustix::fs::llistxattr(p, b),
    })
}

fn get(t: &XattrTarget<'_>, key: &OsStr, buf: &mut Vec<u8>) -> rustix::io::Result<usize> {
    read_grow(buf, |b| match t {
        XattrTarget::Fd(fd) => rustix::fs::fgetxattr(fd, key, b),
        XattrTarget::Path(p) => rustix::fs::lgetxattr(p, key, b),
    })
}

/// What [`apply`] needs to know besides the two inodes.
pub(super) struct Policy {
    /// Whether the caller may chown to any id and write `trusted.*`.
    pub privileged: bool,
    /// The ids new inodes are created with.
    pub euid: u32,
    /// See `euid`.
    pub egid: u32,
    /// The process umask, where /proc tells it.
    pub umask: Option<u32>,
}

impl Policy {
    pub(super) fn current(privileged: bool) -> Self {
        Policy {
            privileged,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: read_umask(),
        }
    }
}

/// The umask from /proc/self/status: `umask(2)` can only be read by
/// setting it, which would race with other threads of the caller.
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// The owner and mode a just-created inode is known to have already, so
/// [`apply`] can leave out a `chown` or `chmod` that would change nothing
/// (two of the ten syscalls a small file costs).
#[derive(Clone, Copy)]
pub(super) struct Created {
    /// Owner and group are the source's already.
    pub owner: bool,
    /// Permission bits are the source's already (never with setuid,
    /// setgid or sticky bits, which always get an explicit chmod).
    pub mode: bool,
}

impl Created {
    /// Nothing known: chown and chmod always.
    pub(super) const UNKNOWN: Created = Created {
        owner: false,
        mode: false,
    };
}

/// How to name the source and the copy in an error message; only called
/// on failure, so the paths are joined only then.
#[derive(Clone, Copy)]
pub(super) struct Names<'a> {
    /// The source path.
    pub src: &'a dyn Fn() -> PathBuf,
    /// The destination path.
    pub dst: &'a dyn Fn() -> PathBuf,
}

/// Give `dst` the owner, xattrs, mode and times of `src` (whose stat is
/// `st`). `src_shown` and `dst_shown` name the two for error messages.
pub(super) fn apply(
    policy: &Policy,
    st: &Stat,
    src: Obj<'_>,
    dst: Inode<'_>,
    created: Created,
    bufs: &mut XattrBufs,
    names: Names<'_>,
) -> Result<()> {
    let (src_shown, dst_shown) = (names.src, names.dst);
    let is_symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
    let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
    let chowned = if created.owner {
        Ok(())
    } else {
        dst.chown(uid.as_raw(), gid.as_raw())
    };
    // Like `cp -a` run by a user: ownership that only root may give is not
    // given, and then neither is setuid/setgid (else a user could mint a
    // setuid binary of someone else's file owned by themselves).
    let owned = match chowned {
        Ok(()) => true,
        Err(Errno::PERM) if !policy.privileged => false,
        Err(e) => return Err(e).at("lchown", &dst_shown()),
    };

    copy_xattrs(policy, src, dst, bufs, src_shown, dst_shown)?;

    if !is_symlink && !created.mode {
        let mut bits = st.st_mode & 0o7777;
        if !owned {
            bits &= !0o6000;
        }
        dst.chmod(bits).at("chmod", &dst_shown())?;
    }

    dst.set_times(&times(st)).at("utimensat", &dst_shown())
}

/// Copy every extended attribute of `src` to `dst`, skipping only the
/// refusals [`is_skippable`] lists as expected.
fn copy_xattrs(
    policy: &Policy,
    src: Obj<'_>,
    dst: Inode<'_>,
    bufs: &mut XattrBufs,
    src_shown: &dyn Fn() -> PathBuf,
    dst_shown: &dyn Fn() -> PathBuf,
) -> Result<()> {
    let from = src.xattr_target();
    let n = match list(&from, &mut bufs.names) {
        Ok(n) => n,
        Err(Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e).at("listxattr", &src_shown()),
    };
    if n == 0 {
        return Ok(());
    }
    let names = std::mem::take(&mut bufs.names);
    let result = (|| {
        for key in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
            let key = OsStr::from_bytes(key);
            let len = match get(&from, key, &mut bufs.value) {
                Ok(len) => len,
                // Removed between list and get: nothing to copy.
                Err(Errno::NODATA) => continue,
                Err(e) => return Err(e).at("getxattr", &src_shown()),
            };
            match dst.set_xattr(key, &bufs.value[..len]) {
                Ok(()) => {}
                Err(e) if is_skippable(key, e, policy.privileged) => {}
                Err(e) => return Err(e).at("setxattr", &dst_shown()),
            }
        }
        Ok(())
    })();
    bufs.names = names;
    result
}

/// The source's atime and mtime, to the nanosecond.
fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// `dir/name` for messages, where `rel` may be empty (the root itself).
pub(super) fn shown(root: &Path, rel: &Path, name: Option<&CStr>) -> PathBuf {
    let mut p = root.to_path_buf();
    if !rel.as_os_str().is_empty() {
        p.push(rel);
    }
    if let Some(name) = name {
        p.push(OsStr::from_bytes(name.to_bytes()));
    }
    p
}
