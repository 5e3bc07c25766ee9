//! What changed between two trees: the naive diff of moby's
//! `pkg/archive/changes.go` (kept by containers/storage), fd-relative and
//! stricter.
//!
//! Both trees are walked together, one directory at a time, every lookup
//! relative to an open directory fd and never following a symlink. Entries
//! come out depth first, siblings sorted by name bytes — so a parent always
//! comes before its children, which is the order a tar of the changes needs.
//!
//! Rules (moby's, with the reasons for where we differ):
//! - a path only in the new tree is `A`, and so is everything below an added
//!   directory; a path only in the old tree is `D`, and a deleted directory is
//!   reported alone, not its children (one whiteout removes them all);
//! - a path in both is `C` when its type, mode, owner, rdev, symlink target or
//!   xattrs differ, or (not for directories) its size or mtime to the
//!   nanosecond — and, with [`ChangesOptions::content`], its bytes when size
//!   and mtime agree (moby misses such content-only changes);
//! - a directory in both is also `C` when anything below it changed (moby's
//!   rule: the tar must carry the directory so its metadata survives), and —
//!   unlike moby, which ignores directory times (moby#9874) — when its own
//!   mtime changed, so that a diff applied onto the old tree reproduces the
//!   new one exactly;
//! - a directory replaced by a non-directory is one `C`: the old children are
//!   not listed (applying the new entry removes the directory);
//! - the root itself is never listed (as in moby).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{Error, IoContext, Result};
use crate::fs::xattr;

/// The kind of a [`Change`], as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `A`: the path is new.
    Added,
    /// `C`: the path exists on both sides and differs (or, for a directory,
    /// something below it changed).
    Modified,
    /// `D`: the path is gone.
    Deleted,
}

impl ChangeKind {
    /// The one-letter code: `"A"`, `"C"` or `"D"`.
    pub fn code(self) -> &'static str {
        match self {
            ChangeKind::Added => "A",
            ChangeKind::Modified => "C",
            ChangeKind::Deleted => "D",
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Absolute inside the tree: `/etc/passwd`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// Options of [`changes`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangesOptions {
    /// Compare the bytes of regular files whose size and mtime agree.
    pub content: bool,
}

/// The changes that turn `old` into `new`, parents before children,
/// siblings sorted by name.
pub fn changes(old: &Path, new: &Path, opts: &ChangesOptions) -> Result<Vec<Change>> {
    let mut sink = ListSink::default();
    super::walk::walk_trees(Some(old), new, opts.content, &mut sink)?;
    Ok(sink.changes)
}

/// One entry of the new tree, as a [`Sink`] sees it: `name` inside the
/// directory `dir`, or the directory `dir` itself when `name` is empty.
pub(crate) struct Node<'a> {
    /// `/a/b`; `/` for the root.
    pub rel: &'a [u8],
    pub dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
    pub stat: &'a Stat,
}

/// Receives the changes of a walk in order.
pub(crate) trait Sink {
    /// An added or modified entry (the root comes as `rel == "/"`).
    fn entry(&mut self, node: &Node<'_>, kind: ChangeKind) -> Result<()>;
    /// A deleted path.
    fn deleted(&mut self, rel: &[u8]) -> Result<()>;
    /// An opaque directory (only from an overlay upper dir), right after the
    /// directory's own entry.
    fn opaque(&mut self, _rel: &[u8]) -> Result<()> {
        Ok(())
    }
    /// Whether an opaque directory's contents should come as all added (a
    /// tar) rather than compared with the lower tree (a change list).
    fn opaque_as_added(&self) -> bool {
        false
    }
    /// An unchanged regular file with more than one link. Not a change, but
    /// a tar must carry it when another name of its inode is in the diff,
    /// or the apply splits the hard-link group (see [`super::export`]).
    /// Returns true to have it written now: the walker then reports its
    /// pending parents and passes it to [`Sink::entry`] (as `Modified`).
    fn link_partner(&mut self, _node: &Node<'_>) -> Result<bool> {
        Ok(false)
    }
}

/// Collects a public change list; the root is left out.
#[derive(Default)]
pub(crate) struct ListSink {
    pub changes: Vec<Change>,
}

impl Sink for ListSink {
    fn entry(&mut self, node: &Node<'_>, kind: ChangeKind) -> Result<()> {
        if node.rel != b"/" {
            self.changes.push(Change {
                path: PathBuf::from(OsStr::from_bytes(node.rel)),
                kind,
            });
        }
        Ok(())
    }
    fn deleted(&mut self, rel: &[u8]) -> Result<()> {
        self.changes.push(Change {
            path: PathBuf::from(OsStr::from_bytes(rel)),
            kind: ChangeKind::Deleted,
        });
        Ok(())
    }
}

/// `rel` + `/` + `name`, without doubling the root's slash.
pub(crate) fn join_rel(rel: &mut Vec<u8>, name: &OsStr) {
    if rel != b"/" {
        rel.push(b'/');
    }
    rel.extend_from_slice(name.as_bytes());
}

pub(crate) fn shown(root: &Path, rel: &[u8]) -> PathBuf {
    let r = OsStr::from_bytes(rel.strip_prefix(b"/").unwrap_or(rel));
    if r.is_empty() {
        root.to_path_buf()
    } else {
        root.join(r)
    }
}

/// Open a directory without following a symlink.
pub(crate) fn open_dir(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn open_root(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", path)
}

pub(crate) fn lstat_at(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<Stat> {
    if name.is_empty() {
        rustix::fs::fstat(dir)
    } else {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
    }
}

/// The names in a directory, sorted by bytes.
pub(crate) fn list_dir(fd: &OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    let dir = rustix::fs::Dir::read_from(fd).at("opendir", shown)?;
    let mut names = Vec::new();
    for e in dir {
        let e = e.at("readdir", shown)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort_unstable();
    Ok(names)
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// The xattrs that describe the file itself (overlay bookkeeping left out).
pub(crate) fn file_xattrs(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut all = xattr::get_all(dir, name, shown)?;
    all.retain(|(k, _)| !super::whiteout::is_overlay_xattr(k.as_bytes()));
    Ok(all)
}

/// Open the regular file `dir/name` for reading: `O_NONBLOCK` (a FIFO
/// swapped in since the `lstat` must not block the walk) and checked to be
/// the inode `st` describes (else the file changed under the walk:
/// `ESTALE`).
pub(crate) fn open_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    shown: &Path,
) -> Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .at("open", shown)?;
    let now = rustix::fs::fstat(&fd).at("stat", shown)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
        || FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
    {
        return Err(Error::errno(
            "open (replaced during the walk)",
            shown,
            libc::ESTALE,
        ));
    }
    Ok(File::from(fd))
}

/// Read as much as possible into `buf` (short only at end of file).
fn read_full(f: &mut File, buf: &mut [u8], shown: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).at("read", shown),
        }
    }
    Ok(n)
}

/// Whether an entry present on both sides with the same type differs
/// (`roots` are the old and new trees' paths and `rel` the entry's, for
/// messages); see the module docs for the rules. With `content`, regular
/// files whose metadata agrees are compared byte for byte.
pub(crate) fn differs(
    content: bool,
    (old_root, new_root, rel): (&Path, &Path, &[u8]),
    (odir, oname, os): (BorrowedFd<'_>, &OsStr, &Stat),
    (ndir, nname, ns): (BorrowedFd<'_>, &OsStr, &Stat),
) -> Result<bool> {
    if os.st_mode != ns.st_mode || os.st_uid != ns.st_uid || os.st_gid != ns.st_gid {
        return Ok(true);
    }
    let ft = FileType::from_raw_mode(ns.st_mode);
    if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) && os.st_rdev != ns.st_rdev {
        return Ok(true);
    }
    if os.st_mtime != ns.st_mtime || os.st_mtime_nsec != ns.st_mtime_nsec {
        return Ok(true);
    }
    if ft != FileType::Directory && os.st_size != ns.st_size {
        return Ok(true);
    }
    let oshown = || shown(old_root, rel);
    let nshown = || shown(new_root, rel);
    if ft == FileType::Symlink {
        let a = rustix::fs::readlinkat(odir, oname, Vec::new()).at("readlink", &oshown())?;
        let b = rustix::fs::readlinkat(ndir, nname, Vec::new()).at("readlink", &nshown())?;
        if a != b {
            return Ok(true);
        }
    }
    if file_xattrs(odir, oname, &oshown())? != file_xattrs(ndir, nname, &nshown())? {
        return Ok(true);
    }
    if content && ft == FileType::RegularFile && ns.st_size > 0 {
        let (os_, ns_) = (oshown(), nshown());
        let mut a = open_file(odir, oname, os, &os_)?;
        let mut b = open_file(ndir, nname, ns, &ns_)?;
        let mut ba = vec![0u8; 128 * 1024];
        let mut bb = vec![0u8; 128 * 1024];
        loop {
            let na = read_full(&mut a, &mut ba, &os_)?;
            let nb = read_full(&mut b, &mut bb, &ns_)?;
            if ba[..na] != bb[..nb] {
                return Ok(true);
            }
            if na < ba.len() {
                break;
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn list(old: &Path, new: &Path, content: bool) -> Vec<(String, &'static str)> {
        changes(old, new, &ChangesOptions { content })
            .unwrap()
            .into_iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind.code()))
            .collect()
    }

    fn copy_times(from: &Path, to: &Path) {
        let m = fs::symlink_metadata(from).unwrap();
        let f = fs::File::options().write(true).open(to).unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
    }

    #[test]
    fn added_modified_deleted_with_parents() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("etc/sub")).unwrap();
            fs::create_dir_all(d.join("keep")).unwrap();
            fs::write(d.join("etc/passwd"), "root").unwrap();
            fs::write(d.join("keep/x"), "x").unwrap();
        }
        fs::create_dir_all(a.join("gone/deep")).unwrap();
        fs::write(a.join("gone/deep/f"), "f").unwrap();
        for p in ["etc/passwd", "keep/x"] {
            copy_times(&a.join(p), &b.join(p));
        }
        fs::write(b.join("etc/passwd"), "root:x").unwrap();
        fs::create_dir(b.join("new")).unwrap();
        fs::write(b.join("new/f"), "n").unwrap();
        symlink("../etc", b.join("new/l")).unwrap();
        // Directory times follow the children; make the untouched ones equal.
        for d in ["etc/sub", "keep", "etc"] {
            let m = fs::metadata(a.join(d)).unwrap();
            fs::File::open(b.join(d))
                .unwrap()
                .set_modified(m.modified().unwrap())
                .unwrap();
        }
        let got = list(&a, &b, false);
        assert_eq!(
            got,
            vec![
                ("/etc".into(), "C"),
                ("/etc/passwd".into(), "C"),
                ("/gone".into(), "D"),
                ("/new".into(), "A"),
                ("/new/f".into(), "A"),
                ("/new/l".into(), "A"),
            ]
        );
    }

    #[test]
    fn content_only_change_needs_content_option() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("f"), "aaaa").unwrap();
        fs::write(b.join("f"), "bbbb").unwrap();
        copy_times(&a.join("f"), &b.join("f"));
        fs::set_permissions(
            b.join("f"),
            fs::metadata(a.join("f")).unwrap().permissions(),
        )
        .unwrap();
        assert!(list(&a, &b, false).is_empty());
        assert_eq!(list(&a, &b, true), vec![("/f".into(), "C")]);
    }

    #[test]
    fn type_change_hides_old_children() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(a.join("d")).unwrap();
        fs::write(a.join("d/child"), "").unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(b.join("d"), "now a file").unwrap();
        fs::set_permissions(b.join("d"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(list(&a, &b, false), vec![("/d".into(), "C")]);
    }
}

#[cfg(test)]
mod xattr_tests {
    use super::*;

    #[test]
    fn xattr_change_is_a_change() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("f"), "x").unwrap();
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .unwrap();
        let big = vec![b'v'; 3000];
        rustix::fs::setxattr(
            b.join("f").as_path(),
            "user.k",
            &big,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let got = changes(&a, &b, &ChangesOptions::default()).unwrap();
        assert_eq!(got.len(), 1);
        let fd = open_root(&b).unwrap();
        let x = file_xattrs(fd.as_fd(), OsStr::new("f"), &b).unwrap();
        assert_eq!(x, vec![(OsString::from("user.k"), big)]);
    }
}
