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
    overlay_name(name).is_some()
}

/// The overlay name of an xattr (`opaque` for `trusted.overlay.opaque`,
/// or for `user.overlay.opaque`, the form of a `userxattr` mount); `None`
/// for any other xattr.
pub fn overlay_name(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(b"trusted.overlay.")
        .or_else(|| key.strip_prefix(b"user.overlay."))
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
}
