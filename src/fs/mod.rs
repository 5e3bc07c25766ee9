//! Filesystem primitives every writer in lamina goes through.
//!
//! - [`root`]: resolve paths *inside* a layer root by the kernel
//!   (`openat2` with `RESOLVE_IN_ROOT`), never by string checks.
//! - [`xattr`]: list, read and write extended attributes without following
//!   symlinks, on a directory fd plus one name.
//! - [`meta`]: whether the caller is privileged.
//! - [`lock`]: the flock lock shared and exclusive across processes and
//!   threads (the store's writer lock, the mount records' lock).
//! - [`private`]: the store's own files, opened so that a tampered store
//!   cannot hang or redirect lamina.
//! - [`recorded`]: rootless — what an unprivileged writer cannot apply,
//!   recorded in user xattrs (fuse-overlayfs's scheme).
//! - [`remove`]: removing a tree, never across a mount point, with fds
//!   bounded whatever its depth.
//! - [`handle`]: a handle on an inode just made, through which its metadata
//!   is set, so that a symlink swapped in after the creation is never
//!   followed.

pub mod handle;
pub mod lock;
pub mod meta;
pub mod private;
pub(crate) mod race;
pub mod recorded;
pub mod remove;
pub mod root;
pub mod xattr;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `/proc/self/fd/<dirfd>/<name>`: a path that reaches `name` inside the
/// directory `dirfd` refers to.
///
/// Used for the calls Linux only offers by path with a no-follow variant
/// (`lsetxattr`, `lgetxattr`, ...). The walk through the magic link lands in
/// the directory itself and `name` is a single component, so the only lookup
/// the kernel does is `name` in that directory, without following it.
pub fn proc_path(dir: impl AsFd, name: &OsStr) -> PathBuf {
    // Empty: the directory itself (an O_PATH fd cannot be fchmod-ed).
    debug_assert!(name.is_empty() || is_single_component(name));
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

/// Whether `name` is one plain path component: not empty, not `.` or `..`,
/// no `/` and no NUL.
pub fn is_single_component(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}
