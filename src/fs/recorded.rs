//! Rootless: what an unprivileged writer cannot give an inode is recorded
//! on it, not dropped.
//!
//! A user without root (and without a user namespace) cannot chown to
//! another id, make device nodes, or write `trusted.*` and most
//! `security.*` xattrs; and an inode a user cannot read or search
//! (mode 0000, a 0555 directory) stops every later copy, diff and removal.
//! So an unprivileged apply ([`crate::archive::ApplyOptions::rootless`])
//! gives each entry what the user can (its own ids, its data, a mode with
//! owner read and write — and search for a directory — and no setuid,
//! setgid or sticky bit on disk) and records the rest in user xattrs, the
//! scheme containers/storage and fuse-overlayfs share:
//!
//! - `user.containers.override_stat` = `uid:gid:mode[:type]`: the owner and
//!   the full mode (octal, setuid/setgid/sticky included), and for what is
//!   stored as something else its type: a device node is an empty regular
//!   file with `char<major>:<minor>` or `block<major>:<minor>`. fuse-overlayfs
//!   reads it (the `type` field from 1.15) when the layer root carries the
//!   xattr, so a fuse mount shows the recorded owners; lamina's own diff,
//!   export and merged view read it always.
//! - `user.containers.<name>` holds a `trusted.*` or `security.*` xattr
//!   (file capabilities included) that could not be set (fuse-overlayfs
//!   1.14's prefix for the same).
//!
//! Owners are recorded relative to root: in a tree a rootless apply wrote
//! (its root carries an override), the writer's own ids read as root's
//! ([`Ids`]), so the common case — root's files — needs no record. Kernel
//! rule: user xattrs cannot be set on symlinks or FIFOs, so theirs cannot
//! be recorded: they read as root's whatever the tar said. A registered
//! layer's `diff()` is exact regardless (tar-split keeps the original
//! headers).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Stat};

use crate::error::{IoContext, Result};
use crate::fs::xattr;

/// The xattr that records owner, mode and type.
pub const OVERRIDE_STAT: &str = "user.containers.override_stat";
/// The prefix under which an xattr that could not be set is recorded.
pub const PREFIX: &[u8] = b"user.containers.";

/// What [`OVERRIDE_STAT`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// The file type, when it is not the inode's own (a device stored as
    /// a regular file); `None` for "as on disk".
    pub kind: Option<FileType>,
    /// Device numbers of a recorded device.
    pub rdev: (u32, u32),
}

impl Override {
    /// The xattr value.
    pub fn encode(&self) -> String {
        let mut s = format!("{}:{}:{:o}", self.uid, self.gid, self.mode & 0o7777);
        match self.kind {
            Some(FileType::CharacterDevice) => {
                s.push_str(&format!(":char{}:{}", self.rdev.0, self.rdev.1))
            }
            Some(FileType::BlockDevice) => {
                s.push_str(&format!(":block{}:{}", self.rdev.0, self.rdev.1))
            }
            Some(FileType::Directory) => s.push_str(":dir"),
            Some(FileType::RegularFile) => s.push_str(":file"),
            Some(FileType::Symlink) => s.push_str(":symlink"),
            Some(FileType::Fifo) => s.push_str(":pipe"),
            Some(FileType::Socket) => s.push_str(":socket"),
            _ => {}
        }
        s
    }

    /// Parse a value; `None` if it is not one (then it is ignored, as
    /// fuse-overlayfs ignores it).
    pub fn decode(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?;
        let mut parts = s.splitn(4, ':');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        if mode > 0o7777 {
            return None;
        }
        let (kind, rdev) = match parts.next() {
            None => (None, (0, 0)),
            Some(t) => {
                let dev = |rest: &str| -> Option<(u32, u32)> {
                    let (a, b) = rest.split_once(':')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                };
                if let Some(rest) = t.strip_prefix("char") {
                    (Some(FileType::CharacterDevice), dev(rest)?)
                } else if let Some(rest) = t.strip_prefix("block") {
                    (Some(FileType::BlockDevice), dev(rest)?)
                } else {
                    let k = match t {
                        "dir" => FileType::Directory,
                        "file" => FileType::RegularFile,
                        "symlink" => FileType::Symlink,
                        "pipe" => FileType::Fifo,
                        "socket" => FileType::Socket,
                        _ => return None,
                    };
                    (Some(k), (0, 0))
                }
            }
        };
        Some(Override {
            uid,
            gid,
            mode,
            kind,
            rdev,
        })
    }

    /// `st` as recorded: owner, mode, and type and device numbers where
    /// the record has them.
    pub fn apply(&self, st: &Stat) -> Stat {
        let mut out = *st;
        out.st_uid = self.uid;
        out.st_gid = self.gid;
        let kind = self
            .kind
            .map_or(st.st_mode & libc::S_IFMT, |k| k.as_raw_mode());
        out.st_mode = kind | (self.mode & 0o7777);
        if matches!(
            self.kind,
            Some(FileType::CharacterDevice) | Some(FileType::BlockDevice)
        ) {
            out.st_rdev = rustix::fs::makedev(self.rdev.0, self.rdev.1);
            out.st_size = 0;
        }
        out
    }
}

/// The mode an unprivileged writer gives an inode of type `kind` whose
/// true mode is `mode`: owner read and write (and search for a directory)
/// always, so that later copies, diffs and removals can read and remove
/// it; never setuid, setgid or sticky.
pub fn disk_mode(kind: FileType, mode: u32) -> u32 {
    let own = if kind == FileType::Directory {
        0o700
    } else {
        0o600
    };
    (mode & 0o777) | own
}

/// How the inodes of one tree read: as they are, or — in a tree a
/// rootless apply wrote, known by the override on its root — as recorded.
///
/// In such a tree the writer's own ids stand for root's, as the owner's
/// ids do in a rootless container's user namespace: an inode without a
/// record that the writer owns reads as root's. That covers what no record
/// can be set on (symlinks and FIFOs, which the kernel gives no user
/// xattrs: an image's are root's) and what a container of the tree makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids {
    /// The writer's uid and gid, in a rootless tree.
    writer: Option<(u32, u32)>,
}

impl Ids {
    /// How the tree whose root is open as `root` reads.
    pub fn of_root(root: BorrowedFd<'_>, shown: &Path) -> Result<Ids> {
        let key = OsStr::new(OVERRIDE_STAT);
        if xattr::get(root, OsStr::new(""), key, shown)?.is_none() {
            return Ok(Ids::default());
        }
        let st = rustix::fs::fstat(root).at("stat", shown)?;
        // A tree root owns was applied with privilege, whatever xattrs its
        // layers carried: they are data there, not records. Root of a user
        // namespace sees its own (rootless) trees as owned by 0 too.
        if crate::fs::meta::is_host_root(st.st_uid) {
            return Ok(Ids::default());
        }
        Ok(Ids {
            writer: Some((st.st_uid, st.st_gid)),
        })
    }

    /// How the tree at `root` reads.
    pub fn of_tree(root: &Path) -> Result<Ids> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", root)?;
        Ids::of_root(fd.as_fd(), root)
    }

    /// `st` as the tree says, given the inode's xattrs (by name).
    pub fn stat(&self, st: &Stat, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Stat {
        if self.writer.is_none() {
            return *st;
        }
        let found = xattrs
            .iter()
            .find(|(k, _)| k == OVERRIDE_STAT.as_bytes())
            .and_then(|(_, v)| Override::decode(v));
        self.resolve(st, found)
    }

    /// [`Ids::stat`] for xattrs named by `OsString`.
    pub fn stat_os(&self, st: &Stat, xattrs: &[(OsString, Vec<u8>)]) -> Stat {
        if self.writer.is_none() {
            return *st;
        }
        let found = xattrs
            .iter()
            .find(|(k, _)| k.as_bytes() == OVERRIDE_STAT.as_bytes())
            .and_then(|(_, v)| Override::decode(v));
        self.resolve(st, found)
    }

    /// The name an xattr found on an inode has in a layer tar: in a
    /// rootless tree a recorded `user.containers.trusted.x` is `trusted.x`
    /// and the override record is none (`None`); elsewhere every name is
    /// its own (a tar may carry `user.containers.*` as it is).
    pub fn exported_name<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        if self.writer.is_none() {
            return Some(key);
        }
        if key == OVERRIDE_STAT.as_bytes() {
            return None;
        }
        match key.strip_prefix(PREFIX) {
            Some(inner) if inner.starts_with(b"trusted.") || inner.starts_with(b"security.") => {
                Some(inner)
            }
            _ => Some(key),
        }
    }

    fn resolve(&self, st: &Stat, found: Option<Override>) -> Stat {
        if let Some(o) = found {
            return o.apply(st);
        }
        let mut out = *st;
        if let Some((uid, gid)) = self.writer {
            if out.st_uid == uid {
                out.st_uid = 0;
            }
            if out.st_gid == gid {
                out.st_gid = 0;
            }
        }
        out
    }
}

/// Whether an xattr that failed with `err` is one an unprivileged writer
/// records rather than drops: a `trusted.*` or `security.*` one refused
/// for want of privilege.
pub fn is_recordable(key: &OsStr, err: rustix::io::Errno) -> bool {
    let k = key.as_bytes();
    (err == rustix::io::Errno::PERM || err == rustix::io::Errno::ACCESS)
        && (k.starts_with(b"trusted.") || k.starts_with(b"security."))
}

/// Whether an unprivileged writer records `key` without trying to set it.
/// A file capability set by the root of a user namespace (`lamina
/// unshare`) is stored for that namespace only (revision 3, naming the
/// namespace root's host uid) and reads otherwise outside it, so a layer
/// applied inside would export other bytes than one applied outside.
fn is_always_recorded(key: &OsStr) -> bool {
    key.as_bytes() == b"security.capability"
}

/// Give an inode the xattr `key` through `set` (which takes the name to
/// write): a `rootless` writer records under [`recorded_name`] what it may
/// not set, and what [`xattr::is_skippable`] allows is dropped.
pub fn set_xattr(
    key: &OsStr,
    rootless: bool,
    privileged: bool,
    mut set: impl FnMut(&OsStr) -> rustix::io::Result<()>,
) -> rustix::io::Result<()> {
    if rootless && is_always_recorded(key) {
        return set(&recorded_name(key));
    }
    match set(key) {
        Err(e) if rootless && is_recordable(key, e) => set(&recorded_name(key)),
        Err(e) if xattr::is_skippable(key, e, privileged) => Ok(()),
        other => other,
    }
}

/// The name under which an xattr that could not be set is recorded.
pub fn recorded_name(key: &OsStr) -> OsString {
    let mut n = OsString::from(OsStr::from_bytes(PREFIX));
    n.push(key);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_fuse_overlayfs_format() {
        for (v, o) in [
            (
                "1000:1000:755",
                Override {
                    uid: 1000,
                    gid: 1000,
                    mode: 0o755,
                    kind: None,
                    rdev: (0, 0),
                },
            ),
            (
                "0:6:666:char1:3",
                Override {
                    uid: 0,
                    gid: 6,
                    mode: 0o666,
                    kind: Some(FileType::CharacterDevice),
                    rdev: (1, 3),
                },
            ),
            (
                "0:0:4755",
                Override {
                    uid: 0,
                    gid: 0,
                    mode: 0o4755,
                    kind: None,
                    rdev: (0, 0),
                },
            ),
        ] {
            assert_eq!(Override::decode(v.as_bytes()), Some(o), "{v}");
            assert_eq!(o.encode(), v);
        }
        for bad in [
            "",
            "1:2",
            "a:b:c",
            "0:0:99999",
            "0:0:755:weird",
            "0:0:755:char1",
        ] {
            assert_eq!(Override::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn exported_names() {
        let rootless = Ids {
            writer: Some((1, 1)),
        };
        let exported_name = |k| rootless.exported_name(k);
        assert_eq!(exported_name(OVERRIDE_STAT.as_bytes()), None);
        assert_eq!(
            exported_name(b"user.containers.security.capability"),
            Some(&b"security.capability"[..])
        );
        assert_eq!(exported_name(b"user.mine"), Some(&b"user.mine"[..]));
        let plain = Ids::default();
        assert_eq!(
            plain.exported_name(OVERRIDE_STAT.as_bytes()),
            Some(OVERRIDE_STAT.as_bytes())
        );
    }

    #[test]
    fn a_rootless_trees_writer_reads_as_root() {
        let mut st: Stat = unsafe { std::mem::zeroed() };
        st.st_uid = 1000;
        st.st_gid = 1000;
        st.st_mode = libc::S_IFLNK | 0o777;
        let plain = Ids::default();
        assert_eq!(plain.stat(&st, &[]).st_uid, 1000);
        let rootless = Ids {
            writer: Some((1000, 1000)),
        };
        let got = rootless.stat(&st, &[]);
        assert_eq!((got.st_uid, got.st_gid), (0, 0));
        // Someone else's inode keeps its ids; a record wins over both.
        st.st_uid = 7;
        assert_eq!(rootless.stat(&st, &[]).st_uid, 7);
        let rec = vec![(OVERRIDE_STAT.as_bytes().to_vec(), b"5:6:4755".to_vec())];
        let got = rootless.stat(&st, &rec);
        assert_eq!(
            (got.st_uid, got.st_gid, got.st_mode & 0o7777),
            (5, 6, 0o4755)
        );
        // Outside a rootless tree a stray record is not read.
        assert_eq!(plain.stat(&st, &rec).st_uid, 7);
    }
}
