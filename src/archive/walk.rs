//! The walk under every diff: two trees compared (the naive diff of
//! [`super::changes`]), or an overlay upper dir over its lower tree (the
//! native diff of [`super::upper`]), reporting to a [`Sink`] in order.
//!
//! Iterative, with an explicit stack of directories, so a tree of any depth
//! costs heap, not stack (a 76 KiB tar builds a tree 15,920 levels deep;
//! one recursion per level overflows the stack near 5,000). Only the last
//! [`KEEP_OPEN`] directories on the way down keep their fds; a directory
//! whose fd was closed is opened again from its tree's root by its path
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), so the fds a
//! walk holds are bounded whatever the depth. A path longer than `PATH_MAX`
//! cannot be named in a layer tar (lamina's own reader refuses one) nor
//! opened by path: the walk stops there with `ENAMETOOLONG` naming it.
//!
//! A directory of the new tree on another mount than the tree's root (a
//! volume bind-mounted into a container's tree) is not descended into: its
//! contents are not the layer's, and a diff must never carry a host
//! directory into an image (moby's naive differ should do the same).
//!
//! Every name is looked up relative to an open directory fd without
//! following a symlink; files read for a content comparison are opened
//! `O_NONBLOCK` and checked to be the inode that was `lstat`-ed, so a FIFO
//! swapped in meanwhile neither blocks the walk nor is read.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags, Stat};

use super::changes::{differs, is_dir, join_rel, list_dir, lstat_at, open_dir, shown};
use super::changes::{ChangeKind, Node, Sink};
use super::upper;
use crate::error::{Error, IoContext, Result};
use crate::fs::remove::{mount_of, MountOf};

/// Directories on the way down whose fds stay open.
pub const KEEP_OPEN: usize = 32;

/// `PATH_MAX`: the longest path a layer tar can name and `openat2` open.
const PATH_MAX: usize = 4096;

/// How a directory's entries are found and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Every name of either tree.
    Trees,
    /// The names of an overlay upper dir; the lower tree is looked at only
    /// where the upper dir has a name.
    Upper,
}

/// One name to visit, and on which side it is (in `Upper` mode the lower
/// side is found out at the visit).
struct Name {
    name: OsString,
    old: bool,
    new: bool,
}

/// One directory on the way down.
struct Level {
    /// Length of the walker's `rel` for this directory.
    rel_len: usize,
    /// The directory in the new tree; `None` while closed.
    new: Option<OwnedFd>,
    /// The directory in the old (lower) tree, when there is one.
    old: Option<OwnedFd>,
    has_old: bool,
    mode: Listing,
    names: Vec<Name>,
    next: usize,
    /// Its own metadata is unchanged: it is reported (with this stat) only
    /// once something below it is, and then only once.
    pending: Option<(Stat, bool)>,
}

/// A directory to descend into, as found by a visit.
pub(crate) struct Child {
    pub new: OwnedFd,
    pub old: Option<OwnedFd>,
    pub mode: Listing,
    /// Unchanged itself: report it only when something below changes.
    pub pending: Option<Stat>,
}

/// The walk; see the module docs.
pub(crate) struct Walker<'s, S: Sink> {
    pub sink: &'s mut S,
    /// Compare the bytes of regular files whose metadata agrees.
    pub content: bool,
    pub old_root: PathBuf,
    pub new_root: PathBuf,
    /// The new tree is an overlay upper dir: 0/0 character devices are
    /// whiteouts, and real `.wh.*` names are refused.
    pub upper: bool,
    new_root_fd: OwnedFd,
    old_root_fd: Option<OwnedFd>,
    new_mount: MountOf,
    stack: Vec<Level>,
    /// `/a/b` of the entry being visited.
    rel: Vec<u8>,
}

fn reopen(root: &OwnedFd, rel: &[u8], shown_root: &Path) -> Result<OwnedFd> {
    let fd = crate::fs::root::open_dir_beneath(root, rel, OFlags::RDONLY)
        .at("open", &shown(shown_root, rel))?;
    // The walk never went past a mount point; neither does a reopen.
    let (a, b) = (
        mount_of(root.as_fd()).at("statx", shown_root)?,
        mount_of(fd.as_fd()).at("statx", &shown(shown_root, rel))?,
    );
    if a != b {
        return Err(Error::errno("open", shown(shown_root, rel), libc::EXDEV));
    }
    Ok(fd)
}

impl<'s, S: Sink> Walker<'s, S> {
    /// A walk of `new` against `old` (`None`: everything is added).
    pub fn open(sink: &'s mut S, content: bool, old: Option<&Path>, new: &Path) -> Result<Self> {
        let new_root_fd = super::changes::open_root(new)?;
        let old_root_fd = old.map(super::changes::open_root).transpose()?;
        let new_mount = mount_of(new_root_fd.as_fd()).at("statx", new)?;
        Ok(Walker {
            sink,
            content,
            old_root: old.unwrap_or(Path::new("")).to_path_buf(),
            new_root: new.to_path_buf(),
            upper: false,
            new_root_fd,
            old_root_fd,
            new_mount,
            stack: Vec::new(),
            rel: b"/".to_vec(),
        })
    }

    /// The roots' fds (new, old).
    pub fn roots(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        (
            self.new_root_fd.as_fd(),
            self.old_root_fd.as_ref().map(|f| f.as_fd()),
        )
    }

    /// Walk everything below the root (whose own entry the caller
    /// reports), in `mode`.
    pub fn run(&mut self, mode: Listing) -> Result<()> {
        let new = self
            .new_root_fd
            .try_clone()
            .at("dup", &self.new_root.clone())?;
        let old = match &self.old_root_fd {
            Some(fd) => Some(fd.try_clone().at("dup", &self.old_root.clone())?),
            None => None,
        };
        self.push(Child {
            new,
            old,
            mode,
            pending: None,
        })?;
        while let Some(top) = self.stack.last_mut() {
            if top.next >= top.names.len() {
                self.stack.pop();
                continue;
            }
            let n = std::mem::replace(
                &mut top.names[top.next],
                Name {
                    name: OsString::new(),
                    old: false,
                    new: false,
                },
            );
            top.next += 1;
            let (rel_len, mode) = (top.rel_len, top.mode);
            self.rel.truncate(rel_len);
            join_rel(&mut self.rel, &n.name);
            if self.rel.len() >= PATH_MAX {
                return Err(Error::errno(
                    "lstat",
                    shown(&self.new_root, &self.rel),
                    libc::ENAMETOOLONG,
                ));
            }
            self.ensure_open()?;
            let child = match mode {
                Listing::Trees => self.visit_trees(&n)?,
                Listing::Upper => upper::visit(self, &n.name)?,
            };
            if let Some(child) = child {
                self.push(child)?;
            }
        }
        Ok(())
    }

    /// The top level's fds, opened again if the window closed them.
    fn ensure_open(&mut self) -> Result<()> {
        let Some(i) = self.stack.len().checked_sub(1) else {
            return Ok(());
        };
        let rel = self.rel[..self.stack[i].rel_len].to_vec();
        if self.stack[i].new.is_none() {
            let fd = reopen(&self.new_root_fd, &rel, &self.new_root)?;
            self.stack[i].new = Some(fd);
        }
        if self.stack[i].has_old && self.stack[i].old.is_none() {
            if let Some(root) = &self.old_root_fd {
                let fd = reopen(root, &rel, &self.old_root)?;
                self.stack[i].old = Some(fd);
            }
        }
        Ok(())
    }

    /// The directory at the top of the stack (new tree, old tree).
    pub fn dirs(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        let top = self.stack.last().expect("visiting inside a directory");
        (
            top.new.as_ref().expect("opened by ensure_open").as_fd(),
            top.old.as_ref().map(|f| f.as_fd()),
        )
    }

    /// The path of the entry being visited (`/a/b`).
    pub fn rel(&self) -> &[u8] {
        &self.rel
    }

    fn push(&mut self, child: Child) -> Result<()> {
        let rel_len = self.rel.len();
        let here = shown(&self.new_root, &self.rel);
        let names = match child.mode {
            Listing::Trees => {
                let new_names = list_dir(&child.new, &here)?;
                let old_names = match &child.old {
                    Some(fd) => list_dir(fd, &shown(&self.old_root, &self.rel))?,
                    None => Vec::new(),
                };
                merge(old_names, new_names)
            }
            Listing::Upper => list_dir(&child.new, &here)?
                .into_iter()
                .map(|name| Name {
                    name,
                    old: false,
                    new: true,
                })
                .collect(),
        };
        self.stack.push(Level {
            rel_len,
            has_old: child.old.is_some(),
            new: Some(child.new),
            old: child.old,
            mode: child.mode,
            names,
            next: 0,
            pending: child.pending.map(|st| (st, false)),
        });
        if self.stack.len() > KEEP_OPEN {
            let i = self.stack.len() - 1 - KEEP_OPEN;
            self.stack[i].new = None;
            self.stack[i].old = None;
        }
        Ok(())
    }

    /// Whether the directory `dir/name` of the new tree is on the tree's
    /// own mount (else it is a mount point, not descended into).
    pub fn same_mount(&self, fd: BorrowedFd<'_>) -> Result<bool> {
        let m = mount_of(fd).at("statx", &shown(&self.new_root, &self.rel))?;
        Ok(m == self.new_mount)
    }

    /// Report every pending ancestor (outermost first) before a change
    /// below it.
    fn flush(&mut self) -> Result<()> {
        for i in 0..self.stack.len() {
            let Some((st, false)) = self.stack[i].pending else {
                continue;
            };
            self.stack[i].pending = Some((st, true));
            let rel = self.rel[..self.stack[i].rel_len].to_vec();
            let reopened;
            let fd = match &self.stack[i].new {
                Some(fd) => fd.as_fd(),
                None => {
                    reopened = reopen(&self.new_root_fd, &rel, &self.new_root)?;
                    reopened.as_fd()
                }
            };
            let node = Node {
                rel: &rel,
                dir: fd,
                name: OsStr::new(""),
                stat: &st,
            };
            self.sink.entry(&node, ChangeKind::Modified)?;
        }
        Ok(())
    }

    /// Report the entry being visited (`name` in the top directory of the
    /// new tree, with `stat`), after its pending ancestors.
    pub fn emit(&mut self, name: &OsStr, stat: &Stat, kind: ChangeKind) -> Result<()> {
        self.flush()?;
        let top = self.stack.last().expect("visiting inside a directory");
        let node = Node {
            rel: &self.rel,
            dir: top.new.as_ref().expect("opened by ensure_open").as_fd(),
            name,
            stat,
        };
        self.sink.entry(&node, kind)
    }

    /// Report the root itself (before [`Walker::run`]).
    pub fn emit_root(&mut self, stat: &Stat, kind: ChangeKind) -> Result<()> {
        let node = Node {
            rel: b"/",
            dir: self.new_root_fd.as_fd(),
            name: OsStr::new(""),
            stat,
        };
        self.sink.entry(&node, kind)
    }

    /// Report the path being visited as deleted.
    pub fn emit_deleted(&mut self) -> Result<()> {
        self.flush()?;
        self.sink.deleted(&self.rel)
    }

    /// Report the directory being visited as opaque (after its entry).
    pub fn emit_opaque(&mut self) -> Result<()> {
        self.flush()?;
        self.sink.opaque(&self.rel)
    }

    /// A non-directory equal to its old counterpart `old`: not a change,
    /// but offered to the sink as a link partner when it is a regular file
    /// with other names. Skipped when it is the old inode itself (a tree
    /// of hard-link copies of the old one): every file of such a tree has
    /// other names, and the old tree already has this one's group.
    pub fn unchanged(&mut self, name: &OsStr, ns: &Stat, old: &Stat) -> Result<()> {
        if FileType::from_raw_mode(ns.st_mode) != FileType::RegularFile
            || ns.st_nlink < 2
            || (old.st_dev, old.st_ino) == (ns.st_dev, ns.st_ino)
        {
            return Ok(());
        }
        let wanted = {
            let top = self.stack.last().expect("visiting inside a directory");
            let node = Node {
                rel: &self.rel,
                dir: top.new.as_ref().expect("opened by ensure_open").as_fd(),
                name,
                stat: ns,
            };
            self.sink.link_partner(&node)?
        };
        if wanted {
            self.emit(name, ns, ChangeKind::Modified)?;
        }
        Ok(())
    }

    /// Whether the entry `name` present on both sides (stats `os`, `ns`)
    /// differs, by the rules of [`super::changes`].
    pub fn differs(&self, name: &OsStr, os: &Stat, ns: &Stat) -> Result<bool> {
        let (new, old) = self.dirs();
        let old = old.expect("compared only where the old tree has the directory");
        differs(
            self.content,
            (&self.old_root, &self.new_root, &self.rel),
            (old, name, os),
            (new, name, ns),
        )
    }

    /// One name of the two trees.
    fn visit_trees(&mut self, n: &Name) -> Result<Option<Child>> {
        let name = n.name.as_os_str();
        if !n.new {
            self.emit_deleted()?;
            return Ok(None);
        }
        if self.upper && name.as_bytes().starts_with(b".wh.") {
            return Err(Error::UnsafeArchive(format!(
                "{}: a real file named .wh.* in an overlay upper dir would become a whiteout",
                shown(&self.new_root, &self.rel).display()
            )));
        }
        let (new, old) = self.dirs();
        let ns = lstat_at(new, name).at("lstat", &shown(&self.new_root, &self.rel))?;
        let os = match (n.old, old) {
            (true, Some(fd)) => {
                Some(lstat_at(fd, name).at("lstat", &shown(&self.old_root, &self.rel))?)
            }
            _ => None,
        };
        if self.upper && upper::is_whiteout(&ns) {
            // A whiteout inside an opaque directory: the path is absent.
            if os.is_some() {
                self.emit_deleted()?;
            }
            return Ok(None);
        }
        let Some(os) = os else {
            self.emit(name, &ns, ChangeKind::Added)?;
            return self.added_dir(name, &ns);
        };
        if FileType::from_raw_mode(os.st_mode) != FileType::from_raw_mode(ns.st_mode) {
            self.emit(name, &ns, ChangeKind::Modified)?;
            return self.added_dir(name, &ns);
        }
        let own = self.differs(name, &os, &ns)?;
        if !is_dir(&ns) {
            if own {
                self.emit(name, &ns, ChangeKind::Modified)?;
            } else {
                self.unchanged(name, &ns, &os)?;
            }
            return Ok(None);
        }
        let Some(nchild) = self.open_new_dir(name)? else {
            // A mount point: its own entry, nothing below it.
            if own {
                self.emit(name, &ns, ChangeKind::Modified)?;
            }
            return Ok(None);
        };
        let (_, old) = self.dirs();
        let old = old.expect("the old tree has the entry");
        let ochild = open_dir(old, name).at("open", &shown(&self.old_root, &self.rel))?;
        if own {
            self.emit(name, &ns, ChangeKind::Modified)?;
        }
        Ok(Some(Child {
            new: nchild,
            old: Some(ochild),
            mode: Listing::Trees,
            pending: (!own).then_some(ns),
        }))
    }

    /// The directory `name` of the new tree (already reported), descended
    /// into with nothing to compare it with; a non-directory or a mount
    /// point is not descended into.
    fn added_dir(&mut self, name: &OsStr, ns: &Stat) -> Result<Option<Child>> {
        if !is_dir(ns) {
            return Ok(None);
        }
        Ok(self.open_new_dir(name)?.map(|new| Child {
            new,
            old: None,
            mode: Listing::Trees,
            pending: None,
        }))
    }

    /// Open the directory `name` of the new tree's top directory; `None`
    /// where it is a mount point.
    pub fn open_new_dir(&self, name: &OsStr) -> Result<Option<OwnedFd>> {
        let (new, _) = self.dirs();
        let fd = open_dir(new, name).at("open", &shown(&self.new_root, &self.rel))?;
        Ok(self.same_mount(fd.as_fd())?.then_some(fd))
    }
}

/// The names of both sides, sorted by bytes, each with where it is.
fn merge(old: Vec<OsString>, new: Vec<OsString>) -> Vec<Name> {
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    let (mut o, mut n) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        let ord = match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return out,
        };
        out.push(match ord {
            std::cmp::Ordering::Less => Name {
                name: o.next().expect("peeked"),
                old: true,
                new: false,
            },
            std::cmp::Ordering::Greater => Name {
                name: n.next().expect("peeked"),
                old: false,
                new: true,
            },
            std::cmp::Ordering::Equal => {
                o.next();
                Name {
                    name: n.next().expect("peeked"),
                    old: true,
                    new: true,
                }
            }
        });
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
    let mut w = Walker::open(sink, content, old, new)?;
    let (nfd, ofd) = w.roots();
    let ns = rustix::fs::fstat(nfd).at("stat", new)?;
    match ofd {
        None => w.emit_root(&ns, ChangeKind::Added)?,
        Some(ofd) => {
            let os = rustix::fs::fstat(ofd).at("stat", &w.old_root)?;
            let e = OsStr::new("");
            let (old_root, new_root) = (w.old_root.clone(), w.new_root.clone());
            if differs(
                content,
                (&old_root, &new_root, b"/"),
                (ofd, e, &os),
                (nfd, e, &ns),
            )? {
                w.emit_root(&ns, ChangeKind::Modified)?;
            }
        }
    }
    w.run(Listing::Trees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::Mode;

    fn deep(root: &Path, depth: usize) {
        std::fs::create_dir(root).unwrap();
        let mut fd =
            rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .unwrap();
        }
    }

    fn fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// 3,000 levels (over PATH_MAX: the walk stops, typed, at the first
    /// path too long to name) in a thread with a small stack, with the fds
    /// bounded.
    #[test]
    fn deep_trees_stop_typed_with_bounded_fds() {
        if !crate::testutil::alone("archive::walk::tests::deep_trees_stop_typed_with_bounded_fds") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        deep(&a, 10);
        deep(&b, 3000);
        let before = fds();
        let r = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let list = super::super::changes::changes(&a, &b, &Default::default());
                let peak = fds();
                (list, peak)
            })
            .unwrap()
            .join()
            .unwrap();
        match r.0 {
            Err(e) => assert!(e.is_errno(libc::ENAMETOOLONG), "{e:?}"),
            Ok(l) => panic!("{} changes listed past PATH_MAX", l.len()),
        }
        assert!(r.1 <= before + 2 * KEEP_OPEN + 8, "{} fds", r.1);
    }

    /// Deep, but within PATH_MAX: every level listed, fds bounded.
    #[test]
    fn deep_trees_within_path_max_are_walked() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        deep(&a, 0);
        deep(&b, 1500);
        let list = super::super::changes::changes(&a, &b, &Default::default()).unwrap();
        assert_eq!(list.len(), 1500);
        assert!(list.iter().all(|c| c.kind == ChangeKind::Added));
        let mut tar = Vec::new();
        super::super::export::export_diff(Some(&a), &b, &mut tar, &Default::default()).unwrap();
        let entries = super::super::export::tests::entries(&tar);
        assert_eq!(entries.iter().filter(|(n, ..)| n != "./").count(), 1500);
    }
}
