//! What each layer of a chain says it changes: its diff, entry by entry,
//! without its files.
//!
//! A registered layer's diff is read from its tar-split record, which keeps
//! every header of the tar it was registered from
//! ([`crate::archive::tarsplit::for_each_header`]): no tree is walked, no
//! file is read, whatever the driver. A layer made by `create` (a
//! container, an `-init` layer) has no tar; its diff is its driver's
//! change list ([`crate::Layer::changes`]: O(changes) for an overlay upper
//! dir), each added or changed path stat-ed in the layer's own merged view.
//!
//! From those diffs come "which layer provides this entry" (the view's
//! `Entry.layer`, see [`provider`]) and the analysis ([`super::analysis`]).
//! Diffs of registered layers never change, so they are kept in a small
//! process-wide cache keyed by their record file's identity.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::BufReader;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::archive::reader::Header;
use crate::archive::whiteout::{classify, Whiteout, META_PREFIX};
use crate::driver::ChangeKind;
use crate::error::{IoContext, Result};
use crate::graph::layout::TAR_SPLIT;
use crate::graph::Layer;
use crate::view::entry::EntryKind;

/// What a put entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Its kind (`Hardlink` for a tar's link entry).
    pub kind: EntryKind,
    /// Its payload bytes as the tar header says (0 but for regular files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Symlink target or hard-link target.
    pub linkname: Vec<u8>,
}

/// What one entry of a diff does to its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds or replaces the entry.
    Put(Meta),
    /// Removes the path from the layers below (an AUFS whiteout `.wh.NAME`,
    /// or a change list's `D`).
    Remove,
    /// Hides everything the layers below hold under the directory
    /// (`.wh..wh..opq`).
    Opaque,
}

/// One entry of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// `/a/b`; `/` for the root.
    pub path: Vec<u8>,
    /// What it does.
    pub op: Op,
}

/// One layer's diff.
#[derive(Debug)]
pub struct LayerDiff {
    /// The layer's id.
    pub id: String,
    /// The sum of its entries' header sizes (the seed's size, dive's layer
    /// size).
    pub size: u64,
    /// Its entries, in diff order.
    pub entries: Vec<DiffEntry>,
    index: Index,
}

/// The paths a diff names, for [`provider`].
#[derive(Debug, Default)]
struct Index {
    /// Put paths, and whether each is a directory.
    puts: HashMap<Vec<u8>, bool>,
    removes: HashSet<Vec<u8>>,
    opaques: HashSet<Vec<u8>>,
    /// Proper ancestors of put paths: directories the apply makes when
    /// missing.
    implied: HashSet<Vec<u8>>,
}

/// `/a/b` of a tar name (`./a/b/`, `a//b`, `/a/b`); `/` for the root; a
/// `..` drops the component before it, as Go's `path.Clean` (which dive
/// uses) does.
pub fn clean(name: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let mut p = Vec::with_capacity(name.len() + 1);
    for c in comps {
        p.push(b'/');
        p.extend_from_slice(c);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

/// The parent of a clean path (`/` for `/a`); `None` for `/`.
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    if path == b"/" {
        return None;
    }
    let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
    Some(if cut == 0 { b"/" } else { &path[..cut] })
}

/// The proper ancestors of a clean path, root first.
pub fn ancestors(path: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some(up) = parent(p) {
        out.push(up);
        p = up;
    }
    out.reverse();
    out
}

/// The entry a tar header stands for; `None` for AUFS metadata
/// (`.wh..wh.plnk` and what is under it).
pub fn entry_of_header(h: &Header) -> Option<DiffEntry> {
    let path = clean(&h.path);
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let Some((last, above)) = comps.split_last() else {
        return Some(DiffEntry {
            path,
            op: Op::Put(meta_of(h)),
        });
    };
    if above.iter().any(|c| c.starts_with(META_PREFIX)) {
        return None;
    }
    let dir = parent(&path).unwrap_or(b"/").to_vec();
    match classify(last) {
        Ok(Whiteout::No) => Some(DiffEntry {
            path,
            op: Op::Put(meta_of(h)),
        }),
        Ok(Whiteout::Remove(target)) => Some(DiffEntry {
            path: super::stack::join(&dir, target),
            op: Op::Remove,
        }),
        Ok(Whiteout::Opaque) => Some(DiffEntry {
            path: dir,
            op: Op::Opaque,
        }),
        // A registered layer's tar was applied, which refuses malformed
        // whiteouts; AUFS metadata is not a change.
        Ok(Whiteout::Meta) | Err(_) => None,
    }
}

fn meta_of(h: &Header) -> Meta {
    Meta {
        kind: EntryKind::of_tar(h.kind),
        size: h.size,
        mode: h.mode & 0o7777,
        uid: h.uid,
        gid: h.gid,
        linkname: h.linkname.clone(),
    }
}

impl LayerDiff {
    /// A diff of `entries`, `size` header bytes, for layer `id`.
    pub fn new(id: &str, size: u64, entries: Vec<DiffEntry>) -> LayerDiff {
        let mut index = Index::default();
        for e in &entries {
            match &e.op {
                Op::Put(m) => {
                    index.puts.insert(e.path.clone(), m.kind == EntryKind::Dir);
                    for a in ancestors(&e.path) {
                        index.implied.insert(a.to_vec());
                    }
                }
                Op::Remove => {
                    index.removes.insert(e.path.clone());
                }
                Op::Opaque => {
                    index.opaques.insert(e.path.clone());
                }
            }
        }
        LayerDiff {
            id: id.to_owned(),
            size,
            entries,
            index,
        }
    }

    /// The diff a tar-split record describes.
    pub fn from_record(id: &str, record: impl std::io::Read) -> Result<LayerDiff> {
        let mut size = 0;
        let mut entries = Vec::new();
        crate::archive::tarsplit::for_each_header(record, |h| {
            size += h.size;
            entries.extend(entry_of_header(h));
            Ok(())
        })?;
        Ok(LayerDiff::new(id, size, entries))
    }

    /// The diff of `layer`: from its tar-split record (cached), or from its
    /// driver's change list.
    pub fn of(layer: &Layer) -> Result<Arc<LayerDiff>> {
        let dir = layer.graph().layer_dir(layer.id())?;
        let split = dir.join(TAR_SPLIT);
        match crate::fs::private::open(&split)? {
            Some(f) => {
                let m = f.metadata().at("stat", &split)?;
                let key = Key {
                    dev: m.dev(),
                    ino: m.ino(),
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                };
                if let Some(d) = cache_get(&key) {
                    return Ok(d);
                }
                let d = Arc::new(
                    LayerDiff::from_record(layer.id(), BufReader::new(f)).map_err(|e| match e {
                        crate::Error::Corrupt { what, .. } => crate::Error::corrupt(&split, what),
                        e => e,
                    })?,
                );
                cache_put(key, d.clone());
                Ok(d)
            }
            None => Ok(Arc::new(from_changes(layer)?)),
        }
    }
}

/// The diff of a layer without a tar: its change list, each added or
/// changed path stat-ed in its own merged view. The second and later names
/// of a hard-link group among them are hard links, as a tar has them.
fn from_changes(layer: &Layer) -> Result<LayerDiff> {
    let changes = layer.changes()?;
    let view = super::View::bare(layer)?;
    let mut seen: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut entries = Vec::with_capacity(changes.len());
    let mut size = 0;
    for c in changes {
        let path = c.path.as_os_str().as_bytes().to_vec();
        if c.kind == ChangeKind::Deleted {
            entries.push(DiffEntry {
                path,
                op: Op::Remove,
            });
            continue;
        }
        let loc = match view.stack.resolve(&path, false) {
            Ok(l) => l,
            // Gone since the list was made (a running container).
            Err(e) if e.is_errno(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut e = view.entry_of(&loc)?;
        let st = &loc.found.stat;
        if e.kind == EntryKind::File && st.st_nlink > 1 {
            match seen.get(&(st.st_dev, st.st_ino)) {
                Some(first) => {
                    e.kind = EntryKind::Hardlink;
                    e.linkname = Some(Path::new(OsStr::from_bytes(first)).to_path_buf());
                    e.size = 0;
                }
                None => {
                    seen.insert((st.st_dev, st.st_ino), path.clone());
                }
            }
        }
        size += e.size;
        entries.push(DiffEntry {
            path,
            op: Op::Put(Meta {
                kind: e.kind,
                size: if e.kind == EntryKind::File { e.size } else { 0 },
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                linkname: e
                    .linkname
                    .map(|l| l.into_os_string().into_vec())
                    .unwrap_or_default(),
            }),
        });
    }
    Ok(LayerDiff::new(layer.id(), size, entries))
}

/// The index of the layer of `chain` (base first) that provides `path` in
/// the top layer's merged view: the topmost layer whose diff puts it; or,
/// for a directory no diff names but that an apply made to hold what a
/// diff put below it, the lowest layer that did so since the path was last
/// removed. `None` when no diff accounts for it.
///
/// Costs O(layers × depth) lookups, never a walk.
pub fn provider(chain: &[Arc<LayerDiff>], path: &[u8]) -> Option<usize> {
    let above = ancestors(path);
    let implied_from =
        |from: usize| (from..chain.len()).find(|&j| chain[j].index.implied.contains(path));
    for k in (0..chain.len()).rev() {
        let ix = &chain[k].index;
        if ix.puts.contains_key(path) {
            return Some(k);
        }
        // Everything the layers below had here was cut off at layer k: a
        // later layer made it, by implication.
        let cut = ix.removes.contains(path)
            || above.iter().any(|a| {
                ix.removes.contains(*a)
                    || ix.opaques.contains(*a)
                    || ix.puts.get(*a) == Some(&false)
            });
        if cut {
            return implied_from(k + 1);
        }
    }
    implied_from(0)
}

/// A record file's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

/// Diffs kept, counted in entries: about 100 MB of the largest layers.
const CACHE_ENTRIES: usize = 1_000_000;

static CACHE: Mutex<Vec<(Key, Arc<LayerDiff>)>> = Mutex::new(Vec::new());

fn cache_get(key: &Key) -> Option<Arc<LayerDiff>> {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let i = c.iter().position(|(k, _)| k == key)?;
    let hit = c.remove(i);
    let d = hit.1.clone();
    c.push(hit);
    Some(d)
}

fn cache_put(key: Key, d: Arc<LayerDiff>) {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(k, _)| k != &key);
    c.push((key, d));
    let mut total: usize = c.iter().map(|(_, d)| d.entries.len()).sum();
    while total > CACHE_ENTRIES && c.len() > 1 {
        total -= c.remove(0).1.entries.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &str, dir: bool) -> DiffEntry {
        DiffEntry {
            path: p.as_bytes().to_vec(),
            op: Op::Put(Meta {
                kind: if dir { EntryKind::Dir } else { EntryKind::File },
                size: 0,
                mode: 0o644,
                uid: 0,
                gid: 0,
                linkname: Vec::new(),
            }),
        }
    }

    fn op(p: &str, op: Op) -> DiffEntry {
        DiffEntry {
            path: p.as_bytes().to_vec(),
            op,
        }
    }

    #[test]
    fn cleans_names() {
        for (name, want) in [
            ("./", "/"),
            (".", "/"),
            ("a/b/", "/a/b"),
            ("./a//b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
        ] {
            assert_eq!(clean(name.as_bytes()), want.as_bytes(), "{name}");
        }
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(ancestors(b"/a/b/c"), [&b"/"[..], b"/a", b"/a/b"]);
    }

    #[test]
    fn providers_follow_puts_removals_and_implied_dirs() {
        let chain = vec![
            Arc::new(LayerDiff::new(
                "l0",
                0,
                vec![
                    put("/", true),
                    put("/a", true),
                    put("/a/x", false),
                    put("/b", false),
                ],
            )),
            Arc::new(LayerDiff::new(
                "l1",
                0,
                vec![put("/a", true), op("/a", Op::Opaque), put("/a/y", false)],
            )),
            Arc::new(LayerDiff::new("l2", 0, vec![op("/a", Op::Remove)])),
            // Puts /a/z/w without listing /a or /a/z: the apply makes them.
            Arc::new(LayerDiff::new("l3", 0, vec![put("/a/z/w", false)])),
        ];
        let p = |path: &str| provider(&chain, path.as_bytes());
        assert_eq!(p("/"), Some(0));
        assert_eq!(p("/b"), Some(0));
        assert_eq!(p("/a"), Some(3));
        assert_eq!(p("/a/z"), Some(3));
        assert_eq!(p("/a/z/w"), Some(3));
        assert_eq!(p("/nowhere"), None);
        assert_eq!(provider(&chain[..2], b"/a/y"), Some(1));
        assert_eq!(provider(&chain[..2], b"/a"), Some(1));
    }
}
