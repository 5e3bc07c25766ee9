//! What `docker diff` lists between two images' merged trees — the naive
//! diff of [`crate::archive::changes`] run on their mounts — reading only
//! the layers the two do not share.
//!
//! Two chains share a prefix of layers; outside the paths the layers above
//! it touch, both merged trees are that prefix's. Those paths come from
//! the layers' diffs ([`super::layers`]: tar-split records, no tree
//! walked): every path an entry puts, removes or makes opaque, with its
//! ancestors (an apply makes missing parents, and a directory shows its
//! uppermost copy's metadata), and a hard link's target. Below a path a
//! layer removes, makes opaque or puts a non-directory at, every path is
//! touched: what the prefix had there is cut off on that side only. An
//! apply resolves an entry's parent directories through symlinks inside
//! the tree (`var/run/x` lands in `/run/x` where `/var/run -> /run`), so
//! each entry's path with its parent resolved in its layer's own merged
//! view is touched too. (A layer whose own tar writes through a symlink
//! and then replaces it is resolved as it ended, not as it went.)
//!
//! (Two images that share no layer have every path touched: their views
//! are compared whole, and no diff is read.)
//!
//! Only those paths are looked up in the two merged views
//! ([`super::stack`]: nothing mounted), compared by the naive diff's rules
//! (type, mode, owner, rdev, mtime, size but for directories, symlink
//! target, xattrs), its order (parents first, siblings by name bytes) and
//! its shape: a deleted directory listed alone, everything below an added
//! directory (or one that replaced a non-directory) added, a directory
//! `C` when anything below it is, the root never listed. The walk is
//! iterative with its directory fds bounded, as [`super::walk`]'s.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::{FileType, Stat};

use super::layers::{clean, parent, LayerDiff, Op};
use super::stack::{join, Found, MergedDir};
use super::View;
use crate::archive::changes::{Change, ChangeKind};
use crate::error::Result;
use crate::graph::{Image, Layer, Progress};

/// The most directory fds the comparison keeps open.
const MAX_FDS: usize = 256;

/// Entries compared between two checks for cancellation.
const CHECK_EVERY: u64 = 4096;

/// The changes that turn `a`'s merged tree into `b`'s (see the module
/// docs), the layers read counted into `progress`; cancelled, it stops
/// at its next layer or within a few thousand entries.
pub fn diff_images(a: &Image, b: &Image, progress: Option<&Progress<'_>>) -> Result<Vec<Change>> {
    let (ta, tb) = (a.layer()?, b.layer()?);
    let (ca, cb) = (ta.chain()?, tb.chain()?);
    let shared = ca
        .iter()
        .zip(&cb)
        .take_while(|(x, y)| x.id() == y.id())
        .count();
    let unshared: Vec<&Layer> = ca[shared..].iter().chain(&cb[shared..]).collect();
    if let Some(p) = progress {
        p.add_total(0, unshared.len());
    }
    // Sharing nothing, every path is touched: the views are compared
    // whole, with no diff to read.
    let mut touched = Node {
        whole: shared == 0,
        ..Node::default()
    };
    for l in unshared {
        Progress::check(progress)?;
        if !touched.whole {
            touch_layer(&mut touched, l)?;
        }
        if let Some(p) = progress {
            p.layer_done();
        }
    }
    let (va, vb) = (View::bare(&ta)?, View::bare(&tb)?);
    Compare {
        va: &va,
        vb: &vb,
        frames: Vec::new(),
        open_fds: 0,
        out: Vec::new(),
    }
    .run(&touched, progress)
}

/// The touched paths, as a tree of names.
#[derive(Default)]
struct Node {
    children: BTreeMap<Vec<u8>, Node>,
    /// Every path below is touched.
    whole: bool,
}

impl Node {
    fn touch(&mut self, path: &[u8], whole: bool) {
        let mut n = self;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if n.whole {
                return;
            }
            n = n.children.entry(c.to_vec()).or_default();
        }
        n.whole |= whole;
    }
}

/// Parent directories resolved as an apply resolves them, in one layer's
/// merged view: symlinks followed inside the view as far as the path
/// exists, the rest as it is.
struct Resolver<'v> {
    view: &'v View,
    done: HashMap<Vec<u8>, Vec<u8>>,
}

impl Resolver<'_> {
    fn dir(&mut self, dir: &[u8]) -> Result<Vec<u8>> {
        if dir == b"/" {
            return Ok(dir.to_vec());
        }
        if let Some(r) = self.done.get(dir) {
            return Ok(r.clone());
        }
        let r = match self.view.stack.resolve(dir, true) {
            Ok(loc) => loc.path,
            Err(e)
                if [libc::ENOENT, libc::ENOTDIR, libc::ELOOP]
                    .iter()
                    .any(|&n| e.is_errno(n)) =>
            {
                let up = parent(dir).unwrap_or(b"/");
                let name = &dir[dir.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1)..];
                join(&self.dir(up)?, name)
            }
            Err(e) => return Err(e),
        };
        self.done.insert(dir.to_vec(), r.clone());
        Ok(r)
    }

    /// `path` with its parent resolved.
    fn entry(&mut self, path: &[u8]) -> Result<Vec<u8>> {
        let Some(up) = parent(path) else {
            return Ok(path.to_vec());
        };
        let name = &path[path.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1)..];
        Ok(join(&self.dir(up)?, name))
    }
}

/// Touch what the layer `l`'s diff names.
fn touch_layer(t: &mut Node, l: &Layer) -> Result<()> {
    let diff = LayerDiff::of(l)?;
    let view = View::bare(l)?;
    let mut r = Resolver {
        view: &view,
        done: HashMap::new(),
    };
    for e in &diff.entries {
        let (whole, resolved) = match &e.op {
            Op::Put(m) => {
                if m.kind == super::EntryKind::Hardlink {
                    let target = clean(&m.linkname);
                    t.touch(&target, false);
                    t.touch(&r.entry(&target)?, false);
                }
                (m.kind != super::EntryKind::Dir, r.entry(&e.path)?)
            }
            Op::Remove => (true, r.entry(&e.path)?),
            Op::Opaque => (true, r.dir(&e.path)?),
        };
        t.touch(&e.path, whole);
        t.touch(&resolved, whole);
    }
    Ok(())
}

/// One name of a directory, and what it is on each side.
struct Item {
    name: OsString,
    a: Option<Found>,
    b: Option<Found>,
}

/// One directory on the way down.
struct Frame<'t> {
    path: Vec<u8>,
    node: Option<&'t Node>,
    whole: bool,
    /// The directory on each side: `None` when absent there or closed.
    a: Option<MergedDir>,
    b: Option<MergedDir>,
    /// Whether a has it (else everything below is added).
    has_a: bool,
    items: Vec<Item>,
    next: usize,
    /// Unchanged itself: reported only once something below is.
    pending: bool,
}

struct Compare<'v, 't> {
    va: &'v View,
    vb: &'v View,
    frames: Vec<Frame<'t>>,
    open_fds: usize,
    out: Vec<Change>,
}

/// What to do for one item, worked out while the top frame is borrowed.
enum Step<'t> {
    Nothing,
    Emit(ChangeKind, Option<Frame<'t>>),
    Descend(Frame<'t>),
}

fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl<'t> Compare<'_, 't> {
    fn run(mut self, root: &'t Node, progress: Option<&Progress<'_>>) -> Result<Vec<Change>> {
        let frame = Frame {
            path: b"/".to_vec(),
            node: Some(root),
            whole: root.whole,
            a: Some(self.va.stack.root()?),
            b: Some(self.vb.stack.root()?),
            has_a: true,
            items: Vec::new(),
            next: 0,
            pending: false,
        };
        self.push(frame)?;
        let mut seen = 0u64;
        loop {
            let Some(top) = self.frames.last_mut() else {
                return Ok(self.out);
            };
            if top.next == top.items.len() {
                let f = self.frames.pop().expect("a frame");
                self.open_fds -= f.a.map_or(0, |d| d.fds()) + f.b.map_or(0, |d| d.fds());
                continue;
            }
            seen += 1;
            if seen % CHECK_EVERY == 0 {
                Progress::check(progress)?;
            }
            let item = std::mem::replace(
                &mut top.items[top.next],
                Item {
                    name: OsString::new(),
                    a: None,
                    b: None,
                },
            );
            top.next += 1;
            self.reopen()?;
            let path = join(
                &self.frames.last().expect("a frame").path,
                item.name.as_bytes(),
            );
            match self.step(&item, &path)? {
                Step::Nothing => {}
                Step::Emit(kind, child) => {
                    self.emit(&path, kind);
                    if let Some(c) = child {
                        self.push(c)?;
                    }
                }
                Step::Descend(c) => self.push(c)?,
            }
        }
    }

    /// What `item` of the top directory (at `path`) is: a change, a
    /// directory to descend into, or nothing.
    fn step(&self, item: &Item, path: &[u8]) -> Result<Step<'t>> {
        let top = self.frames.last().expect("a frame");
        let name = item.name.as_os_str();
        let node = top.node.and_then(|n| n.children.get(item.name.as_bytes()));
        let whole = top.whole || node.is_some_and(|n| n.whole);
        let added = |d: &MergedDir, f: &Found| -> Result<Option<Frame<'t>>> {
            if !f.is_dir() {
                return Ok(None);
            }
            Ok(Some(Frame {
                path: path.to_vec(),
                node: None,
                whole: true,
                a: None,
                b: Some(self.vb.stack.open_dir(d, name, f, path)?),
                has_a: false,
                items: Vec::new(),
                next: 0,
                pending: false,
            }))
        };
        let (Some(db), Some(fb)) = (top.b.as_ref(), item.b) else {
            return Ok(match item.a {
                Some(_) => Step::Emit(ChangeKind::Deleted, None),
                None => Step::Nothing,
            });
        };
        let (Some(da), Some(fa)) = (top.a.as_ref(), item.a) else {
            return Ok(Step::Emit(ChangeKind::Added, added(db, &fb)?));
        };
        let sa = self.va.stack.shown_stat(Some((da, name)), &fa, path)?;
        let sb = self.vb.stack.shown_stat(Some((db, name)), &fb, path)?;
        if kind_of(&sa) != kind_of(&sb) {
            return Ok(Step::Emit(ChangeKind::Modified, added(db, &fb)?));
        }
        let own = self.differs((da, &fa, &sa), (db, &fb, &sb), name, path)?;
        if !(fa.is_dir() && fb.is_dir()) {
            return Ok(if own {
                Step::Emit(ChangeKind::Modified, None)
            } else {
                Step::Nothing
            });
        }
        let child = Frame {
            path: path.to_vec(),
            node,
            whole,
            a: Some(self.va.stack.open_dir(da, name, &fa, path)?),
            b: Some(self.vb.stack.open_dir(db, name, &fb, path)?),
            has_a: true,
            items: Vec::new(),
            next: 0,
            pending: !own,
        };
        Ok(if own {
            Step::Emit(ChangeKind::Modified, Some(child))
        } else {
            Step::Descend(child)
        })
    }

    /// Whether an entry of the same type on both sides differs, by the
    /// naive diff's rules ([`crate::archive::changes`]).
    fn differs(
        &self,
        (da, fa, sa): (&MergedDir, &Found, &Stat),
        (db, fb, sb): (&MergedDir, &Found, &Stat),
        name: &OsStr,
        path: &[u8],
    ) -> Result<bool> {
        if sa.st_mode != sb.st_mode || sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid {
            return Ok(true);
        }
        let ft = kind_of(sb);
        if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice)
            && sa.st_rdev != sb.st_rdev
        {
            return Ok(true);
        }
        if sa.st_mtime != sb.st_mtime || sa.st_mtime_nsec != sb.st_mtime_nsec {
            return Ok(true);
        }
        if ft != FileType::Directory && sa.st_size != sb.st_size {
            return Ok(true);
        }
        if ft == FileType::Symlink
            && self.va.stack.readlink(da, name, fa, path)?
                != self.vb.stack.readlink(db, name, fb, path)?
        {
            return Ok(true);
        }
        Ok(
            self.va.stack.xattrs(da, name, fa, path)?
                != self.vb.stack.xattrs(db, name, fb, path)?,
        )
    }

    /// Enter a directory: find its items, keep the fds within the budget.
    fn push(&mut self, mut f: Frame<'t>) -> Result<()> {
        let list = |v: &View, d: &Option<MergedDir>| -> Result<Vec<(OsString, Found)>> {
            match d {
                Some(d) => v.stack.list(d, &f.path),
                None => Ok(Vec::new()),
            }
        };
        f.items = if f.whole {
            merge(list(self.va, &f.a)?, list(self.vb, &f.b)?)
        } else {
            let mut items = Vec::new();
            for name in f.node.map(|n| n.children.keys()).into_iter().flatten() {
                let name = OsString::from_vec(name.clone());
                let at = join(&f.path, name.as_bytes());
                let look = |v: &View, d: &Option<MergedDir>| match d {
                    Some(d) => v.stack.lookup(d, &name, &at),
                    None => Ok(None),
                };
                let (a, b) = (look(self.va, &f.a)?, look(self.vb, &f.b)?);
                items.push(Item { name, a, b });
            }
            items
        };
        self.open_fds +=
            f.a.as_ref().map_or(0, MergedDir::fds) + f.b.as_ref().map_or(0, MergedDir::fds);
        self.frames.push(f);
        // Close the shallowest directories first; the one just entered
        // stays open.
        let last = self.frames.len() - 1;
        for fr in &mut self.frames[..last] {
            if self.open_fds <= MAX_FDS {
                break;
            }
            for d in [fr.a.take(), fr.b.take()].into_iter().flatten() {
                self.open_fds -= d.fds();
            }
        }
        Ok(())
    }

    /// The top frame's directories, opened again if they were closed.
    fn reopen(&mut self) -> Result<()> {
        let (va, vb) = (self.va, self.vb);
        let top = self.frames.last_mut().expect("a frame");
        let open = |v: &View, path: &[u8]| -> Result<MergedDir> {
            let loc = v.stack.resolve(path, false)?;
            v.stack.dir_of(loc)
        };
        if top.has_a && top.a.is_none() {
            let d = open(va, &top.path)?;
            self.open_fds += d.fds();
            top.a = Some(d);
        }
        if top.b.is_none() {
            let d = open(vb, &top.path)?;
            self.open_fds += d.fds();
            top.b = Some(d);
        }
        Ok(())
    }

    /// Report a change at `path`, after its pending ancestors.
    fn emit(&mut self, path: &[u8], kind: ChangeKind) {
        for f in &mut self.frames {
            if f.pending {
                f.pending = false;
                self.out.push(change(&f.path, ChangeKind::Modified));
            }
        }
        self.out.push(change(path, kind));
    }
}

fn change(path: &[u8], kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(OsStr::from_bytes(path)),
        kind,
    }
}

/// Two sorted listings as one, by name.
fn merge(a: Vec<(OsString, Found)>, b: Vec<(OsString, Found)>) -> Vec<Item> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.as_bytes().cmp(y.as_bytes()),
        };
        out.push(match order {
            std::cmp::Ordering::Less => {
                let (name, f) = a.next().expect("peeked");
                Item {
                    name,
                    a: Some(f),
                    b: None,
                }
            }
            std::cmp::Ordering::Greater => {
                let (name, f) = b.next().expect("peeked");
                Item {
                    name,
                    a: None,
                    b: Some(f),
                }
            }
            std::cmp::Ordering::Equal => {
                let (name, fa) = a.next().expect("peeked");
                let (_, fb) = b.next().expect("peeked");
                Item {
                    name,
                    a: Some(fa),
                    b: Some(fb),
                }
            }
        });
    }
}
