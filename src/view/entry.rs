//! One entry of a merged view (Python's `lamina.Entry`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{FileType, Stat};

use crate::archive::reader::Kind;

/// What an entry is; the names are tar's and Python `Entry.type`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Another name of a regular file met earlier (in a walk, or in a
    /// layer's tar): `linkname` is that earlier name.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
}

impl EntryKind {
    /// `"file"`, `"dir"`, `"symlink"`, `"hardlink"`, `"char"`, `"block"`,
    /// `"fifo"` or `"socket"`.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
        }
    }

    /// The kind of an inode.
    pub fn of_stat(st: &Stat) -> EntryKind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::CharacterDevice => EntryKind::Char,
            FileType::BlockDevice => EntryKind::Block,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            _ => EntryKind::File,
        }
    }

    /// The kind of a tar entry.
    pub fn of_tar(kind: Kind) -> EntryKind {
        match kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink,
            Kind::Hardlink => EntryKind::Hardlink,
            Kind::Char => EntryKind::Char,
            Kind::Block => EntryKind::Block,
            Kind::Fifo => EntryKind::Fifo,
        }
    }
}

/// One entry of a layer's merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the view, from its root: `/etc/passwd`.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes of a regular file (also of a hard link to one), or of a
    /// symlink's target; 0 for anything else.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// A symlink's target, or a hard link's earlier name.
    pub linkname: Option<PathBuf>,
    /// Device numbers (major, minor) of a character or block device.
    pub rdev: (u32, u32),
    /// The id of the layer of the chain that provides the entry (the
    /// topmost layer whose diff adds or changes it); `None` where no layer's
    /// diff names it (a view of bare directories).
    pub layer: Option<String>,
}

impl Entry {
    /// The entry at `path` whose inode metadata is `st`.
    pub(crate) fn from_stat(path: &[u8], st: &Stat) -> Entry {
        let kind = EntryKind::of_stat(st);
        let size = match kind {
            EntryKind::File | EntryKind::Symlink => st.st_size as u64,
            _ => 0,
        };
        let rdev = match kind {
            EntryKind::Char | EntryKind::Block => {
                (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))
            }
            _ => (0, 0),
        };
        Entry {
            path: PathBuf::from(OsStr::from_bytes(path)),
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            linkname: None,
            rdev,
            layer: None,
        }
    }
}
