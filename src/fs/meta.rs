//! Facts about the caller that decide which metadata can be set.
//!
//! The metadata itself is set through [`super::handle::Handle`], in the
//! order that keeps every bit: chown (which clears setuid/setgid), then
//! xattrs, then chmod, then times.

/// Whether this process may do what root may: chown to any id, write
/// `trusted.*` xattrs, make device nodes.
///
/// Root of a user namespace (`lamina unshare`, `unshare -Ur`, a container
/// with a remapped root) is not: the kernel refuses it `mknod` of devices
/// and `trusted.*` xattrs, and a chown to an id its namespace does not map.
/// It applies as an unprivileged user does, recording what it cannot set,
/// so a layer applied inside and one applied outside are the same tree.
pub fn is_privileged() -> bool {
    rustix::process::geteuid().is_root() && !crate::driver::probe::in_user_namespace()
}

/// Whether `uid`, as this process sees it, is the initial user namespace's
/// root. Inside a user namespace that maps the caller's own uid to 0, an
/// inode owned by 0 is the caller's, not root's.
pub fn is_host_root(uid: u32) -> bool {
    match uid_map() {
        // Only the first id of a range can map to host 0.
        Some(map) => map
            .iter()
            .any(|&[inside, outside, _]| outside == 0 && inside == u64::from(uid)),
        None => uid == 0,
    }
}

/// This process's `/proc/self/uid_map`: `[inside, outside, length]` per
/// range; `None` where it cannot be read.
pub fn uid_map() -> Option<Vec<[u64; 3]>> {
    let text = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    text.lines()
        .map(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            f.try_into().ok()
        })
        .collect()
}
