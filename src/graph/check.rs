//! Checking a store, and repairing it: containers/storage's `Check` and
//! `Repair` (`check.go`), for lamina's store.
//!
//! [`Graph::check`] looks at every layer directory and says what is wrong,
//! changing nothing: a directory that is no layer, a record that does not
//! parse, a parent that is gone, a driver's files that are missing, a layer
//! that does not mount, a registered layer whose files no longer give back
//! its tar (reassembled from its tar-split record, hashed, and compared
//! with its diff ID and chain ID), size records that are wrong, and
//! leftovers under `tmp/` that cannot be removed, and image records that
//! do not read or name a layer that is gone.
//!
//! [`Graph::repair`] then, under the store lock held exclusive, removes
//! what cannot be saved — a broken layer and every layer above it (their
//! trees or chain ids build on it) — and rebuilds what can: size records
//! (from the tar-split record), mount reference counts (reconciled with the
//! living processes and the mount table), the sweep of `tmp/`; an image
//! whose layer it removed loses its record (its other layers stay). It
//! says what it did.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::driver::LayerDir;
use crate::error::{Error, Result};
use crate::graph::chain::{Counted, Progress};
use crate::graph::graph::{Graph, TAR_SPLIT};
use crate::graph::layout::LAYER_JSON;
use crate::graph::record::LayerRecord;
use crate::ids;

/// One thing wrong, or one thing done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The layer it is about, when it is about one.
    pub layer: Option<String>,
    /// The file or directory it is about, when there is one.
    pub path: Option<PathBuf>,
    /// What is wrong (or what was done).
    pub what: String,
    /// Whether [`Graph::repair`] can fix it without removing the layer.
    pub rebuildable: bool,
}

/// What [`Graph::check`] found and [`Graph::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Layers in the store (listed ones, whole or not).
    pub layers: usize,
    /// What is wrong; empty when all is well.
    pub problems: Vec<Finding>,
    /// What repair did (empty for a check).
    pub actions: Vec<Finding>,
}

fn finding(layer: Option<&str>, path: Option<PathBuf>, what: impl Into<String>) -> Finding {
    Finding {
        layer: layer.map(str::to_owned),
        path,
        what: what.into(),
        rebuildable: false,
    }
}

/// A [`Write`] that only hashes and counts.
#[derive(Default)]
struct Hasher {
    sha: Sha256,
    bytes: u64,
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Graph {
    /// Check every layer of the store; nothing is changed. See the module
    /// docs for what is checked.
    pub fn check(&self) -> Result<CheckReport> {
        self.check_with(None)
    }

    /// [`Graph::check`], counted into `progress`: layers checked, and the
    /// bytes of their tars reassembled and hashed (a layer whose tar could
    /// not be read counts as done). Cancelled, it stops at its next write
    /// or layer.
    pub fn check_with(&self, progress: Option<&Progress<'_>>) -> Result<CheckReport> {
        self.check_open()?;
        let _shared = self.inner.store.read_lock()?;
        self.scan(progress)
    }

    /// The check itself (the caller holds the store lock).
    fn scan(&self, progress: Option<&Progress<'_>>) -> Result<CheckReport> {
        let layout = self.inner.store.layout();
        let mut report = CheckReport::default();
        let mut records: BTreeMap<String, LayerRecord> = BTreeMap::new();
        let dir = layout.layers_dir();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("readdir", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("readdir", &dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                report
                    .problems
                    .push(finding(None, Some(path), "not a layer directory (name)"));
                continue;
            };
            if !ids::is_valid_id(&name) {
                report
                    .problems
                    .push(finding(None, Some(path), "not a layer directory (name)"));
                continue;
            }
            report.layers += 1;
            match layout.read_layer(&name) {
                Ok(rec) => {
                    records.insert(name, rec);
                }
                Err(Error::LayerNotFound { .. }) => report.problems.push(finding(
                    Some(&name),
                    Some(path.join(LAYER_JSON)),
                    "incomplete: no layer.json",
                )),
                Err(e) => report.problems.push(finding(
                    Some(&name),
                    Some(path.join(LAYER_JSON)),
                    e.to_string(),
                )),
            }
        }
        let tar_bytes = |r: &LayerRecord| r.diff_id.as_ref().and(r.tar_size).unwrap_or(0);
        if let Some(p) = progress {
            p.add_total(records.values().map(tar_bytes).sum(), records.len());
        }
        for (id, rec) in &records {
            Progress::check(progress)?;
            let before = progress.map_or(0, |p| p.info().bytes);
            self.check_layer(id, rec, &records, &mut report, progress)?;
            if let Some(p) = progress {
                // The bytes counted end up the total's, whatever was read.
                let (done, want) = (p.info().bytes - before, tar_bytes(rec));
                if done < want {
                    p.bytes_done(want - done);
                } else if done > want {
                    p.add_total(done - want, 0);
                }
                p.layer_done();
            }
        }
        for (path, what) in self.broken_images()? {
            report.problems.push(Finding {
                rebuildable: true,
                ..finding(None, Some(path), what)
            });
        }
        for leftover in layout.tmp_leftovers()? {
            report.problems.push(Finding {
                rebuildable: true,
                ..finding(None, Some(leftover), "a leftover under tmp/")
            });
        }
        Ok(report)
    }

    fn check_layer(
        &self,
        id: &str,
        rec: &LayerRecord,
        records: &BTreeMap<String, LayerRecord>,
        report: &mut CheckReport,
        progress: Option<&Progress<'_>>,
    ) -> Result<()> {
        let dir = self.layer_dir(id)?;
        let problem = |what: String, path: Option<PathBuf>| finding(Some(id), path, what);
        if let Some(p) = &rec.parent {
            if !records.contains_key(p) {
                report
                    .problems
                    .push(problem(format!("its parent {p} is not in the store"), None));
                return Ok(());
            }
        }
        let me = LayerDir { id, dir: &dir };
        if !self.inner.driver.exists(me) {
            report.problems.push(problem(
                "incomplete: the driver's files are missing".into(),
                Some(dir.clone()),
            ));
            return Ok(());
        }
        let layer = self.layer(id)?;
        // Mountable: a reference taken and given back (no kernel mount is
        // left: the last reference unmounts).
        let mounted = self
            .with_layer(&layer, |l, parents| {
                self.inner.driver.get(l, parents, false, false)
            })
            .and_then(|_| self.inner.driver.put(me));
        if let Err(e) = mounted {
            report
                .problems
                .push(problem(format!("does not mount: {e}"), Some(dir.clone())));
        }
        let Some(diff_id) = &rec.diff_id else {
            return Ok(());
        };
        let split = dir.join(TAR_SPLIT);
        let mut sink = Hasher::default();
        if let Err(e) = self.diff(&layer, &mut Counted::new(&mut sink, progress)) {
            Progress::check(progress)?;
            let path = match &e {
                Error::Corrupt { path, .. } => Some(path.clone()),
                _ => Some(split.clone()),
            };
            report.problems.push(problem(
                format!("its files do not give back its tar: {e}"),
                path,
            ));
            return Ok(());
        }
        let got = format!("sha256:{}", ids::hex(&sink.sha.finalize()));
        if &got != diff_id {
            report.problems.push(problem(
                format!("its tar hashes to {got}, not its diff id {diff_id}"),
                Some(split.clone()),
            ));
            return Ok(());
        }
        let parent_chain = rec
            .parent
            .as_ref()
            .and_then(|p| records.get(p))
            .and_then(|p| p.chain_id.as_deref());
        let chain = ids::chain_id(parent_chain, diff_id)?;
        if rec.chain_id.as_deref() != Some(chain.as_str()) {
            report.problems.push(problem(
                format!("its chain id is not {chain}, what its diff id and parent give"),
                Some(dir.join(LAYER_JSON)),
            ));
        }
        let content = match crate::fs::private::open(&split)? {
            Some(f) => crate::archive::tarsplit::content_bytes(std::io::BufReader::new(f))?,
            None => 0,
        };
        if rec.size != content || rec.tar_size != Some(sink.bytes) {
            report.problems.push(Finding {
                rebuildable: true,
                ..problem(
                    format!(
                        "size records ({}, {:?}) are not its tar's ({content}, {})",
                        rec.size, rec.tar_size, sink.bytes
                    ),
                    Some(dir.join(LAYER_JSON)),
                )
            });
        }
        Ok(())
    }

    /// Check the store, then remove what cannot be saved and rebuild what
    /// can (see the module docs); returns what was found and done, with
    /// what is still wrong after.
    pub fn repair(&self) -> Result<CheckReport> {
        self.repair_with(None)
    }

    /// [`Graph::repair`], both its checks (before and after) counted into
    /// `progress` as [`Graph::check_with`] counts one. Cancelled during
    /// the first check it changes nothing; after it, what it fixed stays.
    pub fn repair_with(&self, progress: Option<&Progress<'_>>) -> Result<CheckReport> {
        self.check_open()?;
        let layout = self.inner.store.layout();
        let held = self.inner.store.write_lock()?;
        let found = self.scan(progress)?;
        let mut actions = Vec::new();
        // Layers that cannot be saved, and every layer above them.
        let mut doomed: BTreeSet<String> = found
            .problems
            .iter()
            .filter(|p| !p.rebuildable)
            .filter_map(|p| p.layer.clone())
            .collect();
        let parents: Vec<(String, Option<String>)> = layout
            .layer_ids()?
            .into_iter()
            .filter_map(|id| layout.read_layer(&id).ok().map(|r| (id, r.parent)))
            .collect();
        loop {
            let more: Vec<String> = parents
                .iter()
                .filter(|(id, p)| {
                    !doomed.contains(id) && p.as_ref().is_some_and(|p| doomed.contains(p))
                })
                .map(|(id, _)| id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        for id in &doomed {
            let dir = self.layer_dir(id)?;
            let removed = self
                .inner
                .driver
                .remove(LayerDir { id, dir: &dir }, &mut || {
                    layout.remove_layer(&held, id)
                });
            actions.push(finding(
                Some(id),
                Some(dir),
                match removed {
                    Ok(()) => "removed: it could not be saved (or its parent could not)".into(),
                    Err(e) => format!("could not be removed: {e}"),
                },
            ));
            self.mine().remove(id.as_str());
        }
        for p in found.problems.iter().filter(|p| p.rebuildable) {
            match (&p.layer, &p.path) {
                (Some(id), _) if !doomed.contains(id) => {
                    let done = self.rebuild_sizes(id);
                    actions.push(finding(
                        Some(id),
                        p.path.clone(),
                        match done {
                            Ok((size, tar)) => format!("size records rebuilt: {size}, {tar}"),
                            Err(e) => format!("size records could not be rebuilt: {e}"),
                        },
                    ));
                }
                _ => {}
            }
        }
        // An image whose layer went goes too (its layers stay).
        for (path, what) in self.broken_images()? {
            let done = self.remove_image_record(&path);
            actions.push(finding(
                None,
                Some(path),
                match done {
                    Ok(()) => format!("image record removed: {what}"),
                    Err(e) => format!("image record could not be removed ({what}): {e}"),
                },
            ));
        }
        let removed = layout.clean_tmp(&held)?;
        if removed > 0 {
            actions.push(finding(
                None,
                Some(layout.tmp_dir()),
                format!("{removed} leftover(s) removed from tmp/"),
            ));
        }
        for what in self.inner.driver.reconcile_mounts()? {
            actions.push(finding(None, None, what));
        }
        let mut after = self.scan(progress)?;
        after.actions = actions;
        Ok(after)
    }

    /// Size records of a registered layer, from its tar-split record.
    fn rebuild_sizes(&self, id: &str) -> Result<(u64, u64)> {
        let layout = self.inner.store.layout();
        let mut rec = layout.read_layer(id)?;
        let layer = self.layer(id)?;
        let mut sink = Hasher::default();
        self.diff(&layer, &mut sink)?;
        let split = self.layer_dir(id)?.join(TAR_SPLIT);
        let f = crate::fs::private::open(&split)?
            .ok_or_else(|| Error::corrupt(&split, "missing: a registered layer has one"))?;
        rec.size = crate::archive::tarsplit::content_bytes(std::io::BufReader::new(f))?;
        rec.tar_size = Some(sink.bytes);
        layout.write_layer(&rec)?;
        Ok((rec.size, sink.bytes))
    }
}
