//! Whiteouts: how a layer says "this path from the layers below is gone".
//!
//! Image layers use the AUFS form (OCI image-spec `layer.md`): an entry
//! `DIR/.wh.NAME` removes `DIR/NAME`; `DIR/.wh..wh..opq` makes `DIR` opaque
//! (nothing from lower layers shows through). Other `.wh..wh.*` names are
//! AUFS metadata (`.wh..wh.plnk` holds hard-link targets) that never appear
//! in the applied tree.
//!
//! Overlayfs spells the same facts differently in an upper dir: a whiteout
//! is a 0/0 character device, an opaque dir carries `trusted.overlay.opaque=y`
//! (or `user.overlay.opaque=y` for a rootless `userxattr` mount).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::reader::show;
use crate::error::{Error, Result};

/// The AUFS whiteout prefix.
pub const PREFIX: &[u8] = b".wh.";
/// The prefix of AUFS metadata names.
pub const META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
/// The AUFS hard-link staging directory at the layer root.
pub const PLNK: &[u8] = b".wh..wh.plnk";

/// What a name that starts with `.wh.` means.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// Not a whiteout name.
    No,
    /// Remove this sibling.
    Remove(&'a [u8]),
    /// The directory is opaque.
    Opaque,
    /// AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
    Meta,
}

/// Classify one path component. A whiteout whose target is empty, `.` or
/// `..` (`.wh.`, `.wh..`, `.wh...`) would remove the directory itself or
/// its parent: an [`Error::UnsafeArchive`] (umoci CVE-2021-29136 was a
/// whiteout reaching outside the rootfs this way).
pub fn classify(name: &[u8]) -> Result<Whiteout<'_>> {
    if !name.starts_with(PREFIX) {
        return Ok(Whiteout::No);
    }
    if name == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    let target = &name[PREFIX.len()..];
    if target.is_empty() || target == b"." || target == b".." {
        return Err(Error::UnsafeArchive(format!(
            "malformed whiteout {:?} names no sibling",
            show(name)
        )));
    }
    Ok(Whiteout::Remove(target))
}

/// Whether an xattr is overlayfs metadata, which a layer must never carry:
/// set in a lower or upper dir it would redirect lookups or hide lower
/// content (`trusted.overlay.redirect`, `.opaque`, `.metacopy`, ...).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Remove `dir/name` and everything below it, never following a symlink.
/// A missing name is not an error.
///
/// Iterative (an explicit stack of open directories), so a deep tree cannot
/// overflow the stack.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let open = |d: BorrowedFd<'_>, n: &OsStr| {
        rustix::fs::openat(
            d,
            n,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let first = match open(dir, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(first, name.as_bytes().to_vec())];
    'outer: while let Some((top, _)) = stack.last() {
        let mut sub: Option<Vec<u8>> = None;
        for ent in rustix::fs::Dir::read_from(top)? {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let n = OsStr::from_bytes(n);
            match rustix::fs::unlinkat(top, n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) | Err(Errno::PERM) => {
                    sub = Some(n.as_bytes().to_vec());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(n) = sub {
            let fd = open(top.as_fd(), OsStr::from_bytes(&n))?;
            stack.push((fd, n));
            continue 'outer;
        }
        let (_, n) = stack.pop().expect("non-empty");
        let parent = match stack.last() {
            Some((p, _)) => p.as_fd(),
            None => dir,
        };
        match rustix::fs::unlinkat(parent, OsStr::from_bytes(&n), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b"foo").unwrap(), Whiteout::No);
        assert_eq!(classify(b".wh.foo").unwrap(), Whiteout::Remove(b"foo"));
        assert_eq!(classify(b".wh..wh..opq").unwrap(), Whiteout::Opaque);
        assert_eq!(classify(b".wh..wh.plnk").unwrap(), Whiteout::Meta);
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert!(matches!(classify(bad), Err(Error::UnsafeArchive(_))));
        }
    }

    #[test]
    fn removes_deep_trees() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().join("x");
        for _ in 0..200 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/", t.path().join("x/d/link")).unwrap();
        let dir =
            rustix::fs::open(t.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_all(dir.as_fd(), OsStr::new("x")).unwrap();
        assert!(!t.path().join("x").exists());
        remove_all(dir.as_fd(), OsStr::new("x")).unwrap();
    }
}
