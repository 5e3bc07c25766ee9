//! What dive computes from an image's layers, as data: its efficiency
//! score and wasted bytes, and per layer what it adds, modifies, removes
//! and hides.
//!
//! Everything is computed from the layers' diffs ([`super::layers`]), never
//! from their trees: a registered layer's diff is its tar's headers, so an
//! analysis reads no file of the image.
//!
//! # dive's numbers
//!
//! [`dive_efficiency`] follows wagoodman/dive `dive/filetree/efficiency.go`
//! (`Efficiency`) and `dive/image/analysis.go` (`Analyze`), at d6c6919:
//!
//! - each layer is a tree of its tar's entries (`AddPath` of every
//!   header's cleaned name: parents it does not list become empty nodes —
//!   size 0, not a directory; `.wh..wh.*` names are dropped; a whiteout
//!   `.wh.NAME` is a node of its own);
//! - every leaf of every layer's tree (a node with no children in that
//!   layer) counts for its path: its header size, or for a whiteout the
//!   size of what it removes — the sum of every node under the path in the
//!   stack of the layers below when that is a directory there, else 0 (a
//!   deleted file counts 0 at its deletion, so its minimum is 0 and all its
//!   bytes are waste);
//! - per path: `cumulative` = sum of its counted sizes, `minimum` = the
//!   smallest; a path counted in two or more layers is an inefficiency;
//! - efficiency = Σ minimum / Σ cumulative over all paths (1 when nothing
//!   is counted); wasted bytes = Σ cumulative over the inefficiencies;
//!   size = Σ layer sizes (header sizes); user size = the same without the
//!   base layer; user wasted percent = wasted / user size (as a ratio).
//!
//! The stack dive looks a whiteout up in is dive's own (`FileTree.Stack`):
//! a put replaces a node's payload and keeps its children, opaque markers
//! are ignored. One difference: dive stops counting a layer at a whiteout
//! of a path its stack does not have (the visitor returns an error); here
//! that whiteout counts 0 and the layer's other leaves still count.
//!
//! # lamina's per-layer account
//!
//! [`replay`] applies the diffs in order the way an apply does (whiteouts
//! and opaque markers of a layer first, against the layers below, then its
//! entries; a non-directory replacing a directory takes its children): a
//! path a layer puts is *added* if the layers below do not have it, else
//! *modified*; a path it removes (or that an opaque directory hides) is
//! *removed*, reported at its topmost path, with the bytes of the regular
//! files of the subtree; directories the apply makes to hold a put entry
//! are added. That is the naive diff of the layer's tree against its
//! parent's ([`crate::changes`]). A layer's *hidden* bytes are those of the
//! regular files it puts that the top layer's view does not show from it
//! (overwritten or removed later): bytes the image carries for nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::entry::EntryKind;
use super::layers::{ancestors, parent, LayerDiff, Op};
use crate::error::Result;
use crate::graph::Layer;

/// One path in a layer's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// `/a/b`.
    pub path: Vec<u8>,
    /// What it is (for a removed path, what it was).
    pub kind: EntryKind,
    /// Bytes of the regular files it is (or, removed, was) — a whole
    /// subtree for a removed directory; 0 for a hard link.
    pub bytes: u64,
}

/// What one layer does, against the layers below it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerReport {
    /// The layer's id.
    pub id: String,
    /// Its size as dive counts it: the sum of its tar's header sizes.
    pub size: u64,
    /// Paths it adds, sorted.
    pub added: Vec<PathChange>,
    /// Paths it modifies, sorted.
    pub modified: Vec<PathChange>,
    /// Paths it removes (topmost only), sorted.
    pub removed: Vec<PathChange>,
    /// Bytes of the regular files it adds.
    pub added_bytes: u64,
    /// Bytes of the regular files it modifies (their new size).
    pub modified_bytes: u64,
    /// Bytes of the regular files it removes.
    pub removed_bytes: u64,
    /// Bytes of the regular files it puts that a later layer of the chain
    /// overwrites or removes.
    pub hidden_bytes: u64,
}

/// A path dive counts more than once: its bytes are wasted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inefficiency {
    /// `/a/b`.
    pub path: Vec<u8>,
    /// How many layers count it.
    pub count: u32,
    /// dive's cumulative size: its bytes in every layer that counts it.
    pub bytes: u64,
    /// The indexes (base first) of the layers that count it.
    pub layers: Vec<usize>,
}

/// An analysis of a chain of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per layer, base first.
    pub layers: Vec<LayerReport>,
    /// dive's efficiency score, 0 to 1.
    pub efficiency: f64,
    /// dive's wasted bytes: the sum of the inefficiencies' bytes.
    pub wasted_bytes: u64,
    /// dive's `WastedUserPercent`: wasted bytes / user size, as a ratio (0
    /// when nothing is wasted; infinite when the layers above the base add
    /// no bytes but some are wasted, as dive's division gives).
    pub user_wasted_percent: f64,
    /// Sum of the layers' sizes.
    pub size_bytes: u64,
    /// The same without the base layer.
    pub user_size_bytes: u64,
    /// Paths counted in more than one layer, largest first (ties by path).
    pub inefficiencies: Vec<Inefficiency>,
}

/// Analyse `layer`'s chain (its diffs read as [`super::View::of`] reads
/// them).
pub fn analyze(layer: &Layer) -> Result<Report> {
    let diffs: Vec<Arc<LayerDiff>> = layer
        .chain()?
        .iter()
        .map(LayerDiff::of)
        .collect::<Result<_>>()?;
    Ok(report(&diffs))
}

/// The report of a chain of diffs, base first.
pub fn report(diffs: &[Arc<LayerDiff>]) -> Report {
    let mut layers = replay(diffs);
    let dive = dive_efficiency(diffs);
    for (l, d) in layers.iter_mut().zip(diffs) {
        l.size = d.size;
    }
    let size_bytes: u64 = diffs.iter().map(|d| d.size).sum();
    let user_size_bytes: u64 = diffs.iter().skip(1).map(|d| d.size).sum();
    let wasted_bytes: u64 = dive.inefficiencies.iter().map(|i| i.bytes).sum();
    let user_wasted_percent = if wasted_bytes == 0 {
        0.0
    } else {
        wasted_bytes as f64 / user_size_bytes as f64
    };
    Report {
        layers: std::mem::take(&mut layers),
        efficiency: dive.score,
        wasted_bytes,
        user_wasted_percent,
        size_bytes,
        user_size_bytes,
        inefficiencies: dive.inefficiencies,
    }
}

/// A path of the replayed view.
#[derive(Debug, Clone, Copy)]
struct Node {
    kind: EntryKind,
    size: u64,
    layer: usize,
}

fn file_bytes(kind: EntryKind, size: u64) -> u64 {
    if kind == EntryKind::File {
        size
    } else {
        0
    }
}

/// Keys of `map` strictly under `dir` (`/` for the root).
fn under<V>(map: &BTreeMap<Vec<u8>, V>, dir: &[u8]) -> Vec<Vec<u8>> {
    let lo = subtree_prefix(dir);
    map.range(lo.clone()..)
        .take_while(|(k, _)| k.starts_with(&lo))
        .filter(|(k, _)| k.as_slice() != dir)
        .map(|(k, _)| k.clone())
        .collect()
}

/// The prefix every path strictly under `dir` starts with.
fn subtree_prefix(dir: &[u8]) -> Vec<u8> {
    let mut lo = dir.to_vec();
    if lo != b"/" {
        lo.push(b'/');
    }
    lo
}

/// One layer applied to the replayed view, in the diff's order (as
/// [`crate::archive::apply`] applies a tar): what it put, and what every
/// path it touched was before it.
struct Step<'s> {
    state: &'s mut BTreeMap<Vec<u8>, Node>,
    layer: usize,
    /// Paths touched, and what each was below this layer (`None`: absent).
    before: BTreeMap<Vec<u8>, Option<Node>>,
    /// Directories replaced by a non-directory: their old children go
    /// unlisted (the naive diff's rule).
    silent: Vec<Vec<u8>>,
}

impl Step<'_> {
    fn touch(&mut self, path: &[u8]) {
        if !self.before.contains_key(path) {
            let was = self.state.get(path).copied();
            self.before.insert(path.to_vec(), was);
        }
    }

    /// Remove `path`'s subtree (`path` itself too with `itself`); with
    /// `lower_only`, only what the layers below put (an opaque marker).
    fn remove(&mut self, path: &[u8], itself: bool, lower_only: bool) {
        let mut keys = under(self.state, path);
        if itself && self.state.contains_key(path) {
            keys.push(path.to_vec());
        }
        for k in keys {
            if lower_only && self.state[&k].layer == self.layer {
                continue;
            }
            self.touch(&k);
            self.state.remove(&k);
        }
    }

    fn put(&mut self, path: &[u8], node: Node) {
        for a in ancestors(path) {
            if self.state.get(a).is_some_and(|n| n.kind == EntryKind::Dir) {
                continue;
            }
            // Made by the apply to hold the entry.
            self.touch(a);
            let dir = Node {
                kind: EntryKind::Dir,
                size: 0,
                layer: self.layer,
            };
            self.state.insert(a.to_vec(), dir);
        }
        if node.kind != EntryKind::Dir
            && self
                .state
                .get(path)
                .is_some_and(|n| n.kind == EntryKind::Dir)
        {
            self.remove(path, false, false);
            self.silent.push(path.to_vec());
        }
        self.touch(path);
        self.state.insert(path.to_vec(), node);
    }

    /// The layer's account against what it found.
    fn report(self, id: &str) -> LayerReport {
        let mut r = LayerReport {
            id: id.to_owned(),
            ..Default::default()
        };
        let silenced = |q: &[u8]| {
            self.silent
                .iter()
                .any(|s| q.len() > s.len() && q.starts_with(s) && q[s.len()] == b'/')
        };
        for (q, was) in &self.before {
            if q == b"/" {
                continue;
            }
            let now = self.state.get(q);
            match (was, now) {
                (None, Some(n)) => {
                    r.added_bytes += n.size;
                    r.added.push(PathChange {
                        path: q.clone(),
                        kind: n.kind,
                        bytes: n.size,
                    });
                }
                (Some(_), Some(n)) => {
                    r.modified_bytes += n.size;
                    r.modified.push(PathChange {
                        path: q.clone(),
                        kind: n.kind,
                        bytes: n.size,
                    });
                }
                (Some(old), None) => {
                    let up = parent(q).unwrap_or(b"/");
                    if silenced(q) || (up != b"/" && !self.state.contains_key(up)) {
                        continue;
                    }
                    // Its subtree as it was: every path of it was touched.
                    let mut bytes = old.size;
                    for c in under(&self.before, q) {
                        bytes += self.before[&c].map_or(0, |n| n.size);
                    }
                    r.removed_bytes += bytes;
                    r.removed.push(PathChange {
                        path: q.clone(),
                        kind: old.kind,
                        bytes,
                    });
                }
                (None, None) => {}
            }
        }
        // moby's rule: a directory is modified when anything below it
        // changed, listed in the diff or not (its mtime moved; a tar
        // carries it so that the mtime survives).
        let listed: std::collections::HashSet<&[u8]> = r
            .added
            .iter()
            .chain(&r.modified)
            .map(|c| c.path.as_slice())
            .collect();
        let mut above: std::collections::BTreeSet<Vec<u8>> = Default::default();
        for c in r.added.iter().chain(&r.modified).chain(&r.removed) {
            for a in ancestors(&c.path) {
                if a != b"/" && !listed.contains(a) {
                    above.insert(a.to_vec());
                }
            }
        }
        for a in above {
            if self.state.get(&a).is_some_and(|n| n.kind == EntryKind::Dir) {
                r.modified.push(PathChange {
                    path: a,
                    kind: EntryKind::Dir,
                    bytes: 0,
                });
            }
        }
        r.modified.sort_by(|a, b| a.path.cmp(&b.path));
        r
    }
}

/// Each layer's account (see the module docs); `size` left 0.
pub fn replay(diffs: &[Arc<LayerDiff>]) -> Vec<LayerReport> {
    let mut state: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    let mut out = Vec::with_capacity(diffs.len());
    for (k, d) in diffs.iter().enumerate() {
        let mut step = Step {
            state: &mut state,
            layer: k,
            before: BTreeMap::new(),
            silent: Vec::new(),
        };
        for e in &d.entries {
            match &e.op {
                Op::Remove => step.remove(&e.path, true, false),
                Op::Opaque => step.remove(&e.path, false, true),
                Op::Put(m) => step.put(
                    &e.path,
                    Node {
                        kind: m.kind,
                        size: file_bytes(m.kind, m.size),
                        layer: k,
                    },
                ),
            }
        }
        out.push(step.report(&d.id));
    }
    // Hidden: bytes a layer puts that the final view does not show from
    // it (overwritten or removed later, or within the layer itself).
    for (k, d) in diffs.iter().enumerate() {
        let mut last: HashMap<&[u8], usize> = HashMap::new();
        for (i, e) in d.entries.iter().enumerate() {
            if matches!(e.op, Op::Put(_)) {
                last.insert(&e.path, i);
            }
        }
        out[k].hidden_bytes = d
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.op {
                Op::Put(m) if m.kind == EntryKind::File => {
                    let shown = last[e.path.as_slice()] == i
                        && state.get(&e.path).is_some_and(|n| n.layer == k);
                    (!shown).then_some(m.size)
                }
                _ => None,
            })
            .sum();
    }
    out
}

/// dive's efficiency score and inefficiencies.
#[derive(Debug, Clone, PartialEq)]
pub struct DiveEfficiency {
    /// Σ minimum / Σ cumulative.
    pub score: f64,
    /// Paths counted in two or more layers, largest first.
    pub inefficiencies: Vec<Inefficiency>,
}

/// A node of one of dive's trees: a header's size and whether it is a
/// directory (parents a tar does not list are neither sized nor
/// directories).
#[derive(Debug, Clone, Copy)]
struct DiveNode {
    size: u64,
    is_dir: bool,
}

/// One layer's tree as dive builds it: its nodes, and its whiteouts (by
/// the path they remove).
struct DiveTree {
    nodes: BTreeMap<Vec<u8>, DiveNode>,
    whiteouts: BTreeMap<Vec<u8>, ()>,
}

fn dive_tree(d: &LayerDiff) -> DiveTree {
    let mut t = DiveTree {
        nodes: BTreeMap::new(),
        whiteouts: BTreeMap::new(),
    };
    fn parents(nodes: &mut BTreeMap<Vec<u8>, DiveNode>, path: &[u8]) {
        for a in ancestors(path).into_iter().filter(|a| *a != b"/") {
            nodes.entry(a.to_vec()).or_insert(DiveNode {
                size: 0,
                is_dir: false,
            });
        }
    }
    for e in &d.entries {
        if e.path == b"/" {
            // dive skips ".".
            continue;
        }
        match &e.op {
            Op::Put(m) => {
                parents(&mut t.nodes, &e.path);
                t.nodes.insert(
                    e.path.clone(),
                    DiveNode {
                        size: m.size,
                        is_dir: m.kind == EntryKind::Dir,
                    },
                );
            }
            Op::Remove => {
                parents(&mut t.nodes, &e.path);
                t.whiteouts.insert(e.path.clone(), ());
            }
            Op::Opaque => {
                // `AddPath` makes the parents of `.wh..wh..opq`, then drops
                // the marker itself.
                parents(&mut t.nodes, &e.path);
                t.nodes.entry(e.path.clone()).or_insert(DiveNode {
                    size: 0,
                    is_dir: false,
                });
            }
        }
    }
    t
}

fn has_under<V>(map: &BTreeMap<Vec<u8>, V>, dir: &[u8]) -> bool {
    let lo = subtree_prefix(dir);
    map.range(lo.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&lo))
}

/// The size dive gives a whiteout of `path`: the sum of the subtree when
/// `stack` has a directory there, else 0.
fn whiteout_size(stack: &BTreeMap<Vec<u8>, DiveNode>, path: &[u8]) -> u64 {
    match stack.get(path) {
        Some(n) if n.is_dir => {
            n.size
                + under(stack, path)
                    .iter()
                    .map(|k| stack[k].size)
                    .sum::<u64>()
        }
        _ => 0,
    }
}

/// dive's `Efficiency` over a chain of diffs (see the module docs).
pub fn dive_efficiency(diffs: &[Arc<LayerDiff>]) -> DiveEfficiency {
    struct Data {
        cumulative: u64,
        minimum: u64,
        count: u32,
        layers: Vec<usize>,
    }
    let mut data: HashMap<Vec<u8>, Data> = HashMap::new();
    let mut count = |path: &[u8], size: u64, layer: usize| {
        let d = data.entry(path.to_vec()).or_insert(Data {
            cumulative: 0,
            minimum: u64::MAX,
            count: 0,
            layers: Vec::new(),
        });
        d.cumulative += size;
        d.minimum = d.minimum.min(size);
        d.count += 1;
        d.layers.push(layer);
    };
    // dive's stack of the layers below the one being counted.
    let mut stack: BTreeMap<Vec<u8>, DiveNode> = BTreeMap::new();
    for (k, d) in diffs.iter().enumerate() {
        let t = dive_tree(d);
        for (path, n) in &t.nodes {
            if !has_under(&t.nodes, path) && !has_under(&t.whiteouts, path) {
                count(path, n.size, k);
            }
        }
        // The base layer's whiteouts are looked up in its own tree
        // (`StackTreeRange(trees, 0, -1)` is a copy of the first tree).
        let below = if k == 0 { &t.nodes } else { &stack };
        for path in t.whiteouts.keys() {
            let size = whiteout_size(below, path);
            count(path, size, k);
        }
        // `FileTree.Stack`: whiteouts remove, every other node replaces
        // its payload (children kept).
        for path in t.whiteouts.keys() {
            if stack.contains_key(path) {
                for c in under(&stack, path) {
                    stack.remove(&c);
                }
                stack.remove(path);
            }
        }
        for (path, n) in t.nodes {
            stack.insert(path, n);
        }
    }
    let (mut minimum, mut discovered) = (0u64, 0u64);
    let mut inefficiencies = Vec::new();
    for (path, d) in data {
        minimum += d.minimum;
        discovered += d.cumulative;
        if d.count >= 2 {
            inefficiencies.push(Inefficiency {
                path,
                count: d.count,
                bytes: d.cumulative,
                layers: d.layers,
            });
        }
    }
    inefficiencies.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    let score = if discovered == 0 {
        1.0
    } else {
        minimum as f64 / discovered as f64
    };
    DiveEfficiency {
        score,
        inefficiencies,
    }
}
