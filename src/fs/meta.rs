//! Owner, mode and times, fd-relative and without following symlinks.
//!
//! The order callers use is the one that keeps every bit: create, then
//! [`chown`] (which clears setuid/setgid), then xattrs, then [`chmod`], then
//! [`set_times`]. Symlinks are never chmod-ed (Linux has no symlink modes).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid};

use crate::error::{IoContext, Result};

fn at_name(name: &OsStr) -> (&OsStr, AtFlags) {
    if name.is_empty() {
        (
            OsStr::new(""),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )
    } else {
        (name, AtFlags::SYMLINK_NOFOLLOW)
    }
}

/// `lchown` of `dir/name` (or of `dir` itself when `name` is empty).
pub fn chown(dir: impl AsFd, name: &OsStr, uid: u32, gid: u32, shown: &Path) -> Result<()> {
    let (n, flags) = at_name(name);
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::fs::chownat(dir, n, Some(u), Some(g), flags).at("lchown", shown)
}

/// `chmod` of `dir/name`, which must not be a symlink.
pub fn chmod(dir: impl AsFd, name: &OsStr, mode: u32, shown: &Path) -> Result<()> {
    let mode = Mode::from_raw_mode(mode & 0o7777);
    if name.is_empty() {
        // An O_PATH fd cannot be fchmod-ed; chmod the inode through /proc.
        let p = super::proc_path(dir, OsStr::new(""));
        return rustix::fs::chmod(&p, mode).at("chmod", shown);
    }
    rustix::fs::chmodat(dir, name, mode, AtFlags::empty()).at("chmod", shown)
}

/// Set atime and mtime (seconds, nanoseconds) of `dir/name` without
/// following a symlink.
pub fn set_times(
    dir: impl AsFd,
    name: &OsStr,
    atime: (i64, i64),
    mtime: (i64, i64),
    shown: &Path,
) -> Result<()> {
    let (n, flags) = at_name(name);
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1 as _,
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1 as _,
        },
    };
    rustix::fs::utimensat(dir, n, &ts, flags).at("utimensat", shown)
}

/// Whether this process may do what root may: chown to any id, write
/// `trusted.*` xattrs, make device nodes.
pub fn is_privileged() -> bool {
    rustix::process::geteuid().is_root()
}
