//! What an apply remembers about the paths it wrote, kept compactly and
//! under a ceiling.
//!
//! Two facts outlive an entry: which paths this layer wrote (an opaque
//! marker `.wh..wh..opq` removes everything of its directory that the
//! layer did not write, and the marker may come after those entries), and
//! each directory's times and late mode, set after the whole layer (its
//! children change them). Kept as full paths, a 26 MiB gzip layer of
//! 400,000 hard links with 4 KiB names drove the process to 1.6 GiB and an
//! abort. Here every path is a node of a trie over interned components:
//! a node costs a few dozen bytes whatever its name's length, a component's
//! bytes are stored once however many paths share it, so the memory grows
//! with the names' distinct content (what the compressed layer must carry)
//! rather than with their expanded length. Every allocation is counted,
//! and going past the ceiling is [`Error::LimitExceeded`], never an abort.

use std::collections::HashMap;
use std::sync::Arc;

use rustix::fs::Timestamps;

use crate::error::{Error, Result};

/// The default ceiling of what an apply keeps per layer.
pub const DEFAULT_LIMIT: u64 = 512 << 20;

/// The trie's root: the layer root itself.
pub const ROOT: u32 = 0;

const WRITTEN: u8 = 1;
const ABOVE_WRITTEN: u8 = 2;
/// A directory this apply made (`mkdir` succeeded, or the layer root was
/// empty): the only names in it are ones this layer wrote.
const FRESH: u8 = 4;
/// A file whose create was handed to the writer thread and may not have
/// happened yet.
const DEFERRED: u8 = 8;

/// What [`Written::mark_entry`] found about a path before marking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// The path's node.
    pub node: u32,
    /// This layer wrote the path, or something below it, before.
    pub seen: bool,
    /// A file the writer thread may still be creating lies on the way to it.
    pub deferred_above: bool,
    /// Its parent is a directory this apply made (see [`Written::set_fresh`]).
    pub fresh_parent: bool,
}

/// Bytes a node costs: its record and its slot in the child map (a hash
/// map runs up to 7/8 full, and keeps a control byte per slot).
const NODE_COST: u64 = 12 + 16;
/// Bytes an interned component costs besides its own bytes: its `Arc`
/// header, a map slot and a vector slot.
const NAME_COST: u64 = 16 + 24 + 16;
/// Bytes a directory time costs.
const TIME_COST: u64 = 40;

#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    name: u32,
    flags: u8,
}

/// Directory times to set at the end: the node, its times, and the mode to
/// give it then (a directory kept owner-writable while it was filled).
pub type DirTime = (u32, Timestamps, Option<u32>);

/// The paths of one apply; see the module docs.
pub struct Written {
    /// Interned components, by bytes and by id (one allocation each).
    names: HashMap<Arc<[u8]>, u32>,
    by_id: Vec<Arc<[u8]>>,
    children: HashMap<(u32, u32), u32>,
    nodes: Vec<Node>,
    times: Vec<DirTime>,
    /// The parent directory of the last path made, and its node:
    /// consecutive entries mostly share it, and a path 2,000 components
    /// deep is then one lookup, not 2,000.
    last_parent: Option<(Vec<u8>, u32)>,
    used: u64,
    limit: u64,
}

impl Written {
    /// An empty set that may use up to `limit` bytes.
    pub fn new(limit: u64) -> Written {
        Written {
            names: HashMap::new(),
            by_id: Vec::new(),
            children: HashMap::new(),
            nodes: vec![Node {
                parent: ROOT,
                name: u32::MAX,
                flags: 0,
            }],
            times: Vec::new(),
            last_parent: None,
            used: NODE_COST,
            limit,
        }
    }

    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.used += bytes;
        if self.used > self.limit {
            return Err(Error::LimitExceeded {
                what: "memory for the paths of one layer".into(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn intern(&mut self, name: &[u8]) -> Result<u32> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        self.charge(NAME_COST + name.len() as u64)?;
        let id = u32::try_from(self.by_id.len()).map_err(|_| self.too_many())?;
        let shared: Arc<[u8]> = name.into();
        self.names.insert(shared.clone(), id);
        self.by_id.push(shared);
        Ok(id)
    }

    fn too_many(&self) -> Error {
        Error::LimitExceeded {
            what: "paths in one layer (2^32)".into(),
            limit: u64::from(u32::MAX),
        }
    }

    /// The node of `path` (clean, relative, `/`-separated), made with its
    /// ancestors where missing.
    pub fn node(&mut self, path: &[u8]) -> Result<u32> {
        let (parent, leaf) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let at = match &self.last_parent {
            Some((p, n)) if p == parent => *n,
            _ => {
                let n = self.walk(ROOT, parent)?;
                self.last_parent = Some((parent.to_vec(), n));
                n
            }
        };
        self.walk(at, leaf)
    }

    /// The node of `path` below `from`, made where missing.
    fn walk(&mut self, from: u32, path: &[u8]) -> Result<u32> {
        let mut at = from;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let name = self.intern(c)?;
            at = match self.children.get(&(at, name)) {
                Some(&n) => n,
                None => {
                    self.charge(NODE_COST)?;
                    let n = u32::try_from(self.nodes.len()).map_err(|_| self.too_many())?;
                    self.nodes.push(Node {
                        parent: at,
                        name,
                        flags: 0,
                    });
                    self.children.insert((at, name), n);
                    n
                }
            };
        }
        Ok(at)
    }

    /// Record that this layer wrote `path`.
    pub fn mark(&mut self, path: &[u8]) -> Result<()> {
        let n = self.node(path)?;
        self.nodes[n as usize].flags |= WRITTEN;
        let mut p = n;
        while p != ROOT {
            p = self.nodes[p as usize].parent;
            if self.nodes[p as usize].flags & ABOVE_WRITTEN != 0 {
                break;
            }
            self.nodes[p as usize].flags |= ABOVE_WRITTEN;
        }
        Ok(())
    }

    /// [`Self::mark`], reporting what was known about `path` before.
    pub fn mark_entry(&mut self, path: &[u8]) -> Result<Marked> {
        let n = self.node(path)?;
        let before = self.nodes[n as usize].flags;
        self.nodes[n as usize].flags |= WRITTEN;
        let mut deferred_above = false;
        let mut p = n;
        // Ancestors are visited up to the first already above a written
        // path; a deferred file has nothing written below it until now, so
        // any deferred ancestor is among those visited.
        while p != ROOT {
            p = self.nodes[p as usize].parent;
            let f = self.nodes[p as usize].flags;
            deferred_above |= f & DEFERRED != 0;
            if f & ABOVE_WRITTEN != 0 {
                break;
            }
            self.nodes[p as usize].flags |= ABOVE_WRITTEN;
        }
        let parent = self.nodes[n as usize].parent;
        Ok(Marked {
            node: n,
            seen: before & (WRITTEN | ABOVE_WRITTEN) != 0,
            deferred_above,
            fresh_parent: n != ROOT && self.nodes[parent as usize].flags & FRESH != 0,
        })
    }

    /// `node` is a directory this apply made.
    pub fn set_fresh(&mut self, node: u32) {
        self.nodes[node as usize].flags |= FRESH;
    }

    /// `node` is a file whose create went to the writer thread.
    pub fn set_deferred(&mut self, node: u32) {
        self.nodes[node as usize].flags |= DEFERRED;
    }

    /// The node of `path` if it has one (nothing is made).
    pub fn find(&self, path: &[u8]) -> Option<u32> {
        let mut at = ROOT;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            at = self.child(at, c)?;
        }
        Some(at)
    }

    /// The child `name` of `node`, if it has a node.
    pub fn child(&self, node: u32, name: &[u8]) -> Option<u32> {
        let id = *self.names.get(name)?;
        self.children.get(&(node, id)).copied()
    }

    /// Whether an opaque marker above `node` keeps it: this layer wrote it
    /// or something below it.
    pub fn kept(&self, node: u32) -> bool {
        self.nodes[node as usize].flags & (WRITTEN | ABOVE_WRITTEN) != 0
    }

    /// Remember the times (and late mode) to give the directory `path`.
    pub fn push_time(&mut self, path: &[u8], times: Timestamps, mode: Option<u32>) -> Result<()> {
        let n = self.node(path)?;
        self.charge(TIME_COST)?;
        self.times.push((n, times, mode));
        Ok(())
    }

    /// The directory times, in the order they were pushed.
    pub fn take_times(&mut self) -> Vec<DirTime> {
        std::mem::take(&mut self.times)
    }

    /// The path of `node` (relative, `/`-separated; empty for the root).
    pub fn path(&self, node: u32) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut n = node;
        while n != ROOT {
            let node = self.nodes[n as usize];
            parts.push(node.name);
            n = node.parent;
        }
        let mut out = Vec::new();
        for (i, id) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(&self.by_id[*id as usize]);
        }
        out
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_finds() {
        let mut w = Written::new(DEFAULT_LIMIT);
        w.mark(b"a/b/c").unwrap();
        w.mark(b"x").unwrap();
        let a = w.find(b"a").unwrap();
        assert!(w.kept(a));
        let b = w.child(a, b"b").unwrap();
        assert!(w.kept(b) && w.kept(w.child(b, b"c").unwrap()));
        assert!(w.find(b"a/zz").is_none() && w.find(b"y").is_none());
        w.node(b"a/q").unwrap();
        assert!(!w.kept(w.find(b"a/q").unwrap()));
        assert_eq!(w.path(w.find(b"a/b/c").unwrap()), b"a/b/c");
        assert_eq!(w.path(ROOT), b"");
    }

    /// 400,000 names of 4 KiB sharing their directories: a few dozen
    /// bytes each, not 4 KiB.
    #[test]
    fn long_names_cost_their_distinct_bytes() {
        let mut w = Written::new(DEFAULT_LIMIT);
        let dir: Vec<u8> = b"d/".repeat(2000);
        for i in 0..400_000u32 {
            let mut p = dir.clone();
            p.extend_from_slice(format!("f{i}").as_bytes());
            w.mark(&p).unwrap();
        }
        assert!(w.used() < 64 << 20, "{} bytes", w.used());
    }

    #[test]
    fn the_ceiling_is_a_typed_error() {
        let mut w = Written::new(1 << 20);
        let e = (0..100_000u32)
            .map(|i| w.mark(format!("{i:0200}").as_bytes()))
            .find_map(|r| r.err())
            .expect("the ceiling is reached");
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    }
}
