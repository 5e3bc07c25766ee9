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
    walk_trees(Some(old), new, opts.content, &mut sink)?;
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

/// A directory present on both sides whose own metadata is unchanged: it is
/// reported only once something below it is.
struct Pending {
    rel: Vec<u8>,
    fd: OwnedFd,
    stat: Stat,
    flushed: bool,
}

/// The shared machinery of the tree walk and the overlay upper walk.
pub(crate) struct Walker<'s, S: Sink> {
    pub sink: &'s mut S,
    pub content: bool,
    pub old_root: PathBuf,
    pub new_root: PathBuf,
    /// The new tree is (part of) an overlay upper dir: 0/0 character
    /// devices are whiteouts, and real `.wh.*` names are refused.
    pub upper: bool,
    pending: Vec<Pending>,
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

/// Whether an xattr is overlayfs bookkeeping rather than file metadata.
pub(crate) fn is_overlay_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.")
}

/// The xattrs that describe the file itself (overlay bookkeeping left out).
pub(crate) fn file_xattrs(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut all = xattr::get_all(dir, name, shown)?;
    all.retain(|(k, _)| !is_overlay_xattr(k.as_bytes()));
    Ok(all)
}

fn open_file(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .at("open", shown)?;
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

impl<'s, S: Sink> Walker<'s, S> {
    pub fn new(sink: &'s mut S, content: bool, old_root: &Path, new_root: &Path) -> Self {
        Walker {
            sink,
            content,
            old_root: old_root.to_path_buf(),
            new_root: new_root.to_path_buf(),
            pending: Vec::new(),
            upper: false,
        }
    }

    /// Report every pending ancestor (outermost first) before a change
    /// below it.
    fn flush(&mut self) -> Result<()> {
        for i in 0..self.pending.len() {
            if !self.pending[i].flushed {
                self.pending[i].flushed = true;
                let p = &self.pending[i];
                let node = Node {
                    rel: &p.rel,
                    dir: p.fd.as_fd(),
                    name: OsStr::new(""),
                    stat: &p.stat,
                };
                self.sink.entry(&node, ChangeKind::Modified)?;
            }
        }
        Ok(())
    }

    pub fn emit(&mut self, node: &Node<'_>, kind: ChangeKind) -> Result<()> {
        self.flush()?;
        self.sink.entry(node, kind)
    }

    pub fn emit_deleted(&mut self, rel: &[u8]) -> Result<()> {
        self.flush()?;
        self.sink.deleted(rel)
    }

    pub fn emit_opaque(&mut self, rel: &[u8]) -> Result<()> {
        self.flush()?;
        self.sink.opaque(rel)
    }

    pub fn push_pending(&mut self, rel: &[u8], fd: &OwnedFd, stat: Stat) -> Result<()> {
        let fd = fd
            .try_clone()
            .map_err(|e| Error::io("dup", shown(&self.new_root, rel), e))?;
        self.pending.push(Pending {
            rel: rel.to_vec(),
            fd,
            stat,
            flushed: false,
        });
        Ok(())
    }

    pub fn pop_pending(&mut self) {
        self.pending.pop();
    }

    /// A non-directory equal to its old counterpart `old`: not a change,
    /// but offered to the sink as a link partner when it is a regular file
    /// with other names. Skipped when it is the old inode itself (a tree
    /// of hard-link copies of the old one): every file of such a tree has
    /// other names, and the old tree already has this one's group.
    pub fn unchanged(&mut self, node: &Node<'_>, old: &Stat) -> Result<()> {
        let ns = node.stat;
        if FileType::from_raw_mode(ns.st_mode) != FileType::RegularFile
            || ns.st_nlink < 2
            || (old.st_dev, old.st_ino) == (ns.st_dev, ns.st_ino)
        {
            return Ok(());
        }
        if self.sink.link_partner(node)? {
            self.emit(node, ChangeKind::Modified)?;
        }
        Ok(())
    }

    /// Whether an entry present on both sides with the same type differs.
    pub fn differs(
        &self,
        (odir, oname, os): (BorrowedFd<'_>, &OsStr, &Stat),
        (ndir, nname, ns): (BorrowedFd<'_>, &OsStr, &Stat),
        rel: &[u8],
    ) -> Result<bool> {
        if os.st_mode != ns.st_mode || os.st_uid != ns.st_uid || os.st_gid != ns.st_gid {
            return Ok(true);
        }
        let ft = FileType::from_raw_mode(ns.st_mode);
        if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice)
            && os.st_rdev != ns.st_rdev
        {
            return Ok(true);
        }
        if os.st_mtime != ns.st_mtime || os.st_mtime_nsec != ns.st_mtime_nsec {
            return Ok(true);
        }
        if ft != FileType::Directory && os.st_size != ns.st_size {
            return Ok(true);
        }
        let oshown = || shown(&self.old_root, rel);
        let nshown = || shown(&self.new_root, rel);
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
        if self.content && ft == FileType::RegularFile && ns.st_size > 0 {
            let (os_, ns_) = (oshown(), nshown());
            let mut a = open_file(odir, oname, &os_)?;
            let mut b = open_file(ndir, nname, &ns_)?;
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

    /// Compare the directory `new` (at `rel`) with `old` (or with nothing),
    /// reporting what differs below it.
    pub fn walk_dir(
        &mut self,
        old: Option<&OwnedFd>,
        new: &OwnedFd,
        rel: &mut Vec<u8>,
    ) -> Result<()> {
        let new_names = list_dir(new, &shown(&self.new_root, rel))?;
        let old_names = match old {
            Some(fd) => list_dir(fd, &shown(&self.old_root, rel))?,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < old_names.len() || j < new_names.len() {
            let ord = match (old_names.get(i), new_names.get(j)) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let len = rel.len();
            match ord {
                std::cmp::Ordering::Less => {
                    join_rel(rel, &old_names[i]);
                    self.emit_deleted(rel)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let name = &new_names[j];
                    join_rel(rel, name);
                    self.visit(None, new, name, rel)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &new_names[j];
                    join_rel(rel, name);
                    self.visit(old, new, name, rel)?;
                    i += 1;
                    j += 1;
                }
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// One name of the new tree, with its old counterpart when `old` is the
    /// old parent directory.
    fn visit(
        &mut self,
        old: Option<&OwnedFd>,
        new: &OwnedFd,
        name: &OsStr,
        rel: &mut Vec<u8>,
    ) -> Result<()> {
        if self.upper && name.as_bytes().starts_with(b".wh.") {
            return Err(Error::UnsafeArchive(format!(
                "{}: a real file named .wh.* in an overlay upper dir would become a whiteout",
                shown(&self.new_root, rel).display()
            )));
        }
        let ns = lstat_at(new, name).at("lstat", &shown(&self.new_root, rel))?;
        let os = match old {
            Some(fd) => Some(lstat_at(fd, name).at("lstat", &shown(&self.old_root, rel))?),
            None => None,
        };
        if self.upper
            && FileType::from_raw_mode(ns.st_mode) == FileType::CharacterDevice
            && ns.st_rdev == 0
        {
            // A whiteout inside an opaque directory: the path is absent.
            return match os {
                Some(_) => self.emit_deleted(rel),
                None => Ok(()),
            };
        }
        let node = Node {
            rel,
            dir: new.as_fd(),
            name,
            stat: &ns,
        };
        let (Some(old), Some(os)) = (old, os) else {
            self.emit(&node, ChangeKind::Added)?;
            if is_dir(&ns) {
                let child = open_dir(new, name).at("open", &shown(&self.new_root, rel))?;
                self.walk_dir(None, &child, rel)?;
            }
            return Ok(());
        };
        let same_type = FileType::from_raw_mode(os.st_mode) == FileType::from_raw_mode(ns.st_mode);
        if !same_type {
            self.emit(&node, ChangeKind::Modified)?;
            if is_dir(&ns) {
                let child = open_dir(new, name).at("open", &shown(&self.new_root, rel))?;
                self.walk_dir(None, &child, rel)?;
            }
            return Ok(());
        }
        let own = self.differs((old.as_fd(), name, &os), (new.as_fd(), name, &ns), rel)?;
        if !is_dir(&ns) {
            return if own {
                self.emit(&node, ChangeKind::Modified)
            } else {
                self.unchanged(&node, &os)
            };
        }
        let nchild = open_dir(new, name).at("open", &shown(&self.new_root, rel))?;
        let ochild = open_dir(old, name).at("open", &shown(&self.old_root, rel))?;
        if own {
            self.emit(&node, ChangeKind::Modified)?;
            self.walk_dir(Some(&ochild), &nchild, rel)
        } else {
            self.push_pending(rel, &nchild, ns)?;
            let r = self.walk_dir(Some(&ochild), &nchild, rel);
            self.pop_pending();
            r
        }
    }
}

/// Walk `new` against `old` (or against nothing: everything is added),
/// root included, into `sink`.
pub(crate) fn walk_trees(
    old: Option<&Path>,
    new: &Path,
    content: bool,
    sink: &mut impl Sink,
) -> Result<()> {
    let nfd = open_root(new)?;
    let ns = rustix::fs::fstat(&nfd).at("stat", new)?;
    let ofd = old.map(open_root).transpose()?;
    let mut w = Walker::new(sink, content, old.unwrap_or(Path::new("")), new);
    let root = Node {
        rel: b"/",
        dir: nfd.as_fd(),
        name: OsStr::new(""),
        stat: &ns,
    };
    match &ofd {
        None => w.emit(&root, ChangeKind::Added)?,
        Some(ofd) => {
            let os = rustix::fs::fstat(ofd).at("stat", old.unwrap_or(Path::new("")))?;
            let e = OsStr::new("");
            if w.differs((ofd.as_fd(), e, &os), (nfd.as_fd(), e, &ns), b"/")? {
                w.emit(&root, ChangeKind::Modified)?;
            }
        }
    }
    let mut rel = b"/".to_vec();
    w.walk_dir(ofd.as_ref(), &nfd, &mut rel)
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
