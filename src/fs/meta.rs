//! Facts about the caller that decide which metadata can be set.
//!
//! The metadata itself is set through [`super::handle::Handle`], in the
//! order that keeps every bit: chown (which clears setuid/setgid), then
//! xattrs, then chmod, then times.

/// Whether this process may do what root may: chown to any id, write
/// `trusted.*` xattrs, make device nodes.
pub fn is_privileged() -> bool {
    rustix::process::geteuid().is_root()
}
