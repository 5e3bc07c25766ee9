//! Extended attributes, read and written without following symlinks.
//!
//! Objects are named as (directory fd, one component). An empty name means
//! the directory fd's own inode. Symlinks, devices, FIFOs and sockets are
//! never opened (opening a FIFO blocks, a device may have side effects), so
//! attributes go through [`super::proc_path`] and the `l*xattr` calls.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use super::proc_path;
use crate::error::{IoContext, Result};

fn target(dir: impl AsFd, name: &OsStr) -> (PathBuf, bool) {
    // The directory itself: follow the magic link, which lands on the inode.
    (proc_path(dir, name), name.is_empty())
}

/// Read a sized value into a buffer that grows on ERANGE, up to the
/// kernel's 64 KiB limit for values and lists.
///
/// No size probe with an empty buffer: rustix's `*xattr` calls answer an
/// empty buffer with 0, not with the size (it has separate `*_query`
/// functions for that), and one call is cheaper than two for the small
/// values that are the rule.
pub fn read_sized(
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if size < 64 * 1024 => size *= 4,
            Err(e) => return Err(e),
        }
    }
}

/// The names of every extended attribute of `dir/name`. A filesystem without
/// xattr support gives an empty list.
pub fn list(dir: impl AsFd, name: &OsStr, shown: &Path) -> Result<Vec<OsString>> {
    let (p, follow) = target(dir, name);
    let raw = read_sized(|buf| {
        if follow {
            rustix::fs::listxattr(&p, buf)
        } else {
            rustix::fs::llistxattr(&p, buf)
        }
    });
    let raw = match raw {
        Ok(raw) => raw,
        Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e).at("listxattr", shown),
    };
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsStr::from_bytes(n).to_os_string())
        .collect())
}

/// The value of `key` on `dir/name`, or `None` where it is not set.
pub fn get(dir: impl AsFd, name: &OsStr, key: &OsStr, shown: &Path) -> Result<Option<Vec<u8>>> {
    let (p, follow) = target(dir, name);
    let r = read_sized(|buf| {
        if follow {
            rustix::fs::getxattr(&p, key, buf)
        } else {
            rustix::fs::lgetxattr(&p, key, buf)
        }
    });
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => Ok(None),
        Err(e) => Err(e).at("getxattr", shown),
    }
}

/// Set `key` to `value` on `dir/name`.
pub fn set(
    dir: impl AsFd,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
    shown: &Path,
) -> rustix::io::Result<()> {
    let _ = shown;
    let (p, follow) = target(dir, name);
    if follow {
        rustix::fs::setxattr(&p, key, value, XattrFlags::empty())
    } else {
        rustix::fs::lsetxattr(&p, key, value, XattrFlags::empty())
    }
}

/// POSIX ACLs as the kernel stores them, in the `system.` namespace.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL of a directory: what new entries in it inherit.
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Remove `key` from `dir/name`; a key that is not there is no error.
pub fn remove(dir: impl AsFd, name: &OsStr, key: &OsStr) -> rustix::io::Result<()> {
    let (p, follow) = target(dir, name);
    let r = if follow {
        rustix::fs::removexattr(&p, key)
    } else {
        rustix::fs::lremovexattr(&p, key)
    };
    match r {
        Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => Ok(()),
        r => r,
    }
}

/// Every (name, value) pair on `dir/name`, sorted by name.
pub fn get_all(dir: impl AsFd, name: &OsStr, shown: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let dir = dir.as_fd();
    let mut keys = list(dir, name, shown)?;
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        // A key can vanish between list and get; that is not an error.
        if let Some(v) = get(dir, name, &k, shown)? {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Whether a failure to write an xattr in this namespace is expected for an
/// unprivileged caller or a filesystem that lacks it, and so may be skipped.
///
/// `trusted.*` needs CAP_SYS_ADMIN; `security.*` other than capabilities may
/// be refused by the LSM; any namespace may be unsupported (EOPNOTSUPP, as
/// moby 2b6761fd3e tolerates). `user.*` on a symlink or device is EPERM by
/// kernel rule. A `security.capability` or `user.*` failure on a regular file
/// or directory as root is a real error and is not skipped.
pub fn is_skippable(key: &OsStr, err: Errno, privileged: bool) -> bool {
    let k = key.as_bytes();
    if err == Errno::OPNOTSUPP {
        return true;
    }
    if err != Errno::PERM && err != Errno::ACCESS {
        return false;
    }
    if k.starts_with(b"trusted.") {
        return !privileged;
    }
    if k == b"security.capability" {
        return !privileged;
    }
    if k.starts_with(b"security.") {
        return true;
    }
    // user.* is refused on symlinks and special files by the kernel.
    k.starts_with(b"user.")
}
