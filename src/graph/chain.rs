//! Registering a chain of layers at once: what loading an image does.
//!
//! [`Graph::register_chain`] takes the layers of an image, base first,
//! each with the diff ID the image's config says it has, and:
//!
//! 1. skips the layers already in the store: a layer's default id is the
//!    hex of its chain id, and the chain ids follow from the diff IDs
//!    alone, so what is there is known before any blob is opened;
//! 2. stages every missing layer under `tmp/` and applies its tar there —
//!    on up to two workers when the driver's layers apply independently
//!    ([`crate::driver::Driver::layers_apply_independently`], overlay2),
//!    one after the other when each needs its parent's tree (the seed's
//!    overlay and vfs, where the apply itself already keeps both cores
//!    busy: decompression and hashing run beside the tree writes);
//! 3. checks each layer's diff ID against the expected one as its apply
//!    ends, and drains its source to the end, so that a reader that checks
//!    a blob's digest and size (see `image::blobs`) has seen every byte;
//! 4. only when every layer is staged and checked, lands them base first,
//!    each under the store lock after checking its parent is there.
//!
//! A failure anywhere before step 4 leaves nothing: the staging
//! directories go, no layer was landed. A crash during step 4 leaves
//! complete layers only (the ones landed so far), which no image names.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::driver::LayerDir;
use crate::error::{Error, IoContext, Result};
use crate::graph::graph::{Graph, TAR_SPLIT};
use crate::graph::layer::Layer;
use crate::graph::layout::Staging;
use crate::graph::make::create_private;
use crate::graph::record::LayerRecord;
use crate::ids;

/// Workers that apply layers at once when the driver allows it.
pub const APPLY_WORKERS: usize = 2;

/// Opens one layer's tar (plain, gzip or zstd); called at most once, and
/// not at all for a layer already in the store.
pub type OpenLayer<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + Send + 'a>> + Send + 'a>;

/// One layer of a chain to register.
pub struct ChainLayer<'a> {
    /// Where its tar comes from.
    pub open: OpenLayer<'a>,
    /// The diff ID it must have (`sha256:<hex>` of the uncompressed tar),
    /// as the image config's `rootfs.diff_ids` says.
    pub diff_id: String,
    /// What to call it in messages: its blob's digest or path.
    pub label: String,
    /// Bytes its source gives (compressed), where known: for progress.
    pub size: Option<u64>,
}

/// What a progress callback is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressInfo {
    /// Bytes read so far (compressed, as stored in the archive).
    pub bytes: u64,
    /// Bytes to read in all, where known (0: not known yet).
    pub total_bytes: u64,
    /// Layers done (applied, or found already in the store).
    pub layers: usize,
    /// Layers in all, where known.
    pub total_layers: usize,
}

/// Progress of a long operation (load, save, register, commit, a layer's
/// tar, check), reported to a callback at most every [`Progress::STEP`]
/// bytes and at every layer, from any thread. The callback returns whether
/// to go on: `false` cancels the operation as [`Progress::cancel`] does
/// (a Python callback that raises stops the call that way).
pub struct Progress<'a> {
    bytes: AtomicU64,
    total_bytes: AtomicU64,
    layers: AtomicUsize,
    total_layers: AtomicUsize,
    /// Reading a source whole before applying (see `start_applying`).
    reading: AtomicBool,
    /// Set by [`Progress::cancel`]: readers counted into this progress and
    /// the chain-lock wait then fail with [`Error::Cancelled`].
    cancelled: AtomicBool,
    callback: &'a (dyn Fn(ProgressInfo) -> bool + Sync),
}

impl<'a> Progress<'a> {
    /// Bytes between two reports.
    pub const STEP: u64 = 4 << 20;

    /// Progress reported to `callback`.
    pub fn new(callback: &'a (dyn Fn(ProgressInfo) -> bool + Sync)) -> Self {
        Progress {
            bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            layers: AtomicUsize::new(0),
            total_layers: AtomicUsize::new(0),
            reading: AtomicBool::new(true),
            cancelled: AtomicBool::new(false),
            callback,
        }
    }

    /// Ask the operation to stop (from any thread): its next read fails.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Progress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// What has been done so far.
    pub fn info(&self) -> ProgressInfo {
        ProgressInfo {
            bytes: self.bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            layers: self.layers.load(Ordering::Relaxed),
            total_layers: self.total_layers.load(Ordering::Relaxed),
        }
    }

    fn report(&self) {
        if !(self.callback)(self.info()) {
            self.cancel();
        }
    }

    /// `Err(Error::Cancelled)` once the operation was cancelled: what a
    /// step that does not read through [`Counted`] checks before it
    /// changes anything.
    pub fn check(progress: Option<&Progress<'_>>) -> Result<()> {
        if progress.is_some_and(Progress::is_cancelled) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// `e`, or [`Error::Cancelled`] when the operation was cancelled (a
    /// read or write that failed because of it says nothing else).
    pub fn or_cancelled(progress: Option<&Progress<'_>>, e: Error) -> Error {
        if progress.is_some_and(Progress::is_cancelled) {
            Error::Cancelled
        } else {
            e
        }
    }

    /// More work to do: `bytes` and `layers` added to the totals.
    pub fn add_total(&self, bytes: u64, layers: usize) {
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.total_layers.fetch_add(layers, Ordering::Relaxed);
        self.report();
    }

    /// A new phase: bytes done and to do start again from 0 (loading a
    /// stream reads it whole first, then applies what it spooled).
    pub fn start_applying(&self) {
        self.reading.store(false, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.total_bytes.store(0, Ordering::Relaxed);
    }

    /// `n` more bytes done.
    pub fn bytes_done(&self, n: u64) {
        let before = self.bytes.fetch_add(n, Ordering::Relaxed);
        if before / Self::STEP != (before + n) / Self::STEP {
            self.report();
        }
    }

    /// One more layer done.
    pub fn layer_done(&self) {
        self.layers.fetch_add(1, Ordering::Relaxed);
        self.report();
    }
}

/// A reader (or writer) that counts what passes through it into a
/// [`Progress`], and fails once the operation is cancelled.
pub struct Counted<'p, R> {
    inner: R,
    progress: Option<&'p Progress<'p>>,
    /// Counted only until the applying starts (a whole source being read:
    /// what the apply reads of it is counted by the apply).
    source: bool,
}

impl<'p, R> Counted<'p, R> {
    /// `inner`, counted into `progress` (if any).
    pub fn new(inner: R, progress: Option<&'p Progress<'p>>) -> Self {
        Counted {
            inner,
            progress,
            source: false,
        }
    }

    /// The reader or writer inside.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// `inner`, a whole source, counted into `progress` until
    /// [`Progress::start_applying`].
    pub fn source(inner: R, progress: Option<&'p Progress<'p>>) -> Self {
        Counted {
            inner,
            progress,
            source: true,
        }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.progress.is_some_and(Progress::is_cancelled) {
            return Err(std::io::Error::other(crate::archive::reader::SourceError(
                Error::Cancelled,
            )));
        }
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            if !self.source || p.reading.load(Ordering::Relaxed) {
                p.bytes_done(n as u64);
            }
        }
        Ok(n)
    }
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.progress.is_some_and(Progress::is_cancelled) {
            // Not ErrorKind::Interrupted: write_all would retry it.
            return Err(std::io::Error::other(crate::archive::reader::SourceError(
                Error::Cancelled,
            )));
        }
        let n = self.inner.write(buf)?;
        if let Some(p) = self.progress {
            p.bytes_done(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The core error inside an `io::Error` from a layer source (a digest
/// check, a Python file object), or the `io::Error` itself.
pub(crate) fn source_error(e: std::io::Error) -> Error {
    if e.get_ref()
        .is_some_and(|i| i.is::<crate::archive::reader::SourceError>())
    {
        if let Some(Ok(s)) = e
            .into_inner()
            .map(|i| i.downcast::<crate::archive::reader::SourceError>())
        {
            return s.0;
        }
        return Error::Internal("lost a source error".into());
    }
    Error::io("read", "<layer>", e)
}

/// Read `src` to its end, so that a checking reader sees every byte.
fn drain(src: &mut dyn Read) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(source_error(e)),
        }
    }
}

/// A layer applied in its staging directory, and its record.
type Applied = (Staging, LayerRecord);

/// One layer of the chain that is not in the store yet.
struct Pending<'a> {
    index: usize,
    id: String,
    chain_id: String,
    layer: ChainLayer<'a>,
    staging: Staging,
}

/// `f(0)`, `f(1)`, ... `f(n - 1)` on up to `workers` threads, taken in
/// index order; after a failure no new index is started. The results in
/// index order, or the first failure in index order (a later index may
/// have failed only because the run was stopped).
pub(crate) fn in_order<T: Send>(
    n: usize,
    workers: usize,
    what: &str,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let results: Vec<Mutex<Option<Result<T>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || loop {
        if failed.load(Ordering::Acquire) {
            return;
        }
        let k = next.fetch_add(1, Ordering::AcqRel);
        if k >= n {
            return;
        }
        let r = f(k);
        if r.is_err() {
            failed.store(true, Ordering::Release);
        }
        *results[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    let workers = workers.clamp(1, n.max(1));
    if workers > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
            for h in handles {
                h.join().map_err(|p| crate::error::panic_message(what, p))?;
            }
            Ok::<(), Error>(())
        })?;
    } else {
        work();
    }
    let mut out = Vec::with_capacity(n);
    for r in results {
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(x)) => out.push(x),
            Some(Err(e)) => return Err(e),
            None => return Err(Error::Internal(format!("{what}: an item was never run"))),
        }
    }
    Ok(out)
}

impl Graph {
    /// Register the layers of one image, base first, on `parent` (an id or
    /// prefix; `None` for a base). Each layer's default id is the hex of
    /// its chain id; the layers already in the store are not applied
    /// again (their sources are never opened). Each layer's diff ID must
    /// be the one given, or nothing is registered. See the module docs for
    /// the order of the work. Returns the whole chain, base first.
    pub fn register_chain(
        &self,
        parent: Option<&str>,
        layers: Vec<ChainLayer<'_>>,
        progress: Option<&Progress<'_>>,
    ) -> Result<Vec<Layer>> {
        self.check_open()?;
        let parent = self.parent_for_child(parent)?;
        let parent_chain = match &parent {
            Some(p) => Some(p.chain_id().map(str::to_owned).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "layer {} has no chain id (an init layer): register on an image layer",
                    p.id()
                ))
            })?),
            None => None,
        };
        let mut chain_ids = Vec::with_capacity(layers.len());
        for l in &layers {
            let c = ids::chain_id(
                chain_ids
                    .last()
                    .or(parent_chain.as_ref())
                    .map(|s: &String| s.as_str()),
                &l.diff_id,
            )
            .map_err(|e| Error::Archive(format!("{}: {e}", l.label)))?;
            chain_ids.push(c);
        }
        if let Some(p) = progress {
            p.add_total(0, layers.len());
        }
        // Another registration of these layers (another process pulling
        // the same image) finishes first; then they are found below.
        let cancelled = || progress.is_some_and(Progress::is_cancelled);
        let _locks = super::chain_lock::lock_chain(self.root(), &chain_ids, &cancelled)?;

        // What is there already: a prefix of the chain (a layer's parent
        // stays while it has children).
        let mut have: Vec<Layer> = Vec::new();
        let mut todo: Vec<(usize, String, String, ChainLayer<'_>)> = Vec::new();
        for (i, (l, chain)) in layers.into_iter().zip(chain_ids).enumerate() {
            let id = ids::digest_hex(&chain)?.to_owned();
            if todo.is_empty() {
                match self.layer(&id) {
                    Ok(found) if found.chain_id() == Some(chain.as_str()) => {
                        have.push(found);
                        if let Some(p) = progress {
                            p.layer_done();
                        }
                        continue;
                    }
                    Ok(_) => return Err(Error::LayerExists(id)),
                    Err(Error::LayerNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            todo.push((i, id, chain, l));
        }
        if todo.is_empty() {
            return Ok(have);
        }
        if let Some(p) = progress {
            p.add_total(todo.iter().filter_map(|t| t.3.size).sum(), 0);
        }
        let base = have.last().cloned().or(parent);

        let layout = self.inner.store.layout();
        let pending: Vec<Pending<'_>> = {
            let g = self.inner.store.read_lock()?;
            let mut out = Vec::with_capacity(todo.len());
            for (index, id, chain_id, layer) in todo {
                let staging = layout.stage(&g, "load")?;
                out.push(Pending {
                    index,
                    id,
                    chain_id,
                    layer,
                    staging,
                });
            }
            out
        };
        let mut ancestry: Vec<(String, PathBuf)> = Vec::new();
        if let Some(b) = &base {
            for l in b.chain()? {
                let dir = self.layer_dir(l.id())?;
                ancestry.push((l.id().to_owned(), dir));
            }
        }
        for p in &pending {
            ancestry.push((p.id.clone(), p.staging.path().to_owned()));
        }
        let below = ancestry.len() - pending.len();
        let parent_id = |k: usize| -> Option<String> {
            (below + k).checked_sub(1).map(|j| ancestry[j].0.clone())
        };

        let records = self.apply_pending(pending, &ancestry, below, progress, &parent_id)?;
        // A callback that stopped the load at its last report: nothing
        // has landed yet.
        Progress::check(progress)?;

        // Land base first.
        let mut prev = base;
        let mut out = have;
        for (staging, rec) in records {
            let id = rec.id.clone();
            staging.write_record(&rec)?;
            match self.land(staging, prev.as_ref(), &id) {
                Ok(()) => {}
                // A concurrent load of the same image landed it first.
                Err(Error::LayerExists(_)) => {}
                Err(e) => return Err(e),
            }
            let l = self.layer(&id)?;
            if l.chain_id() != rec.chain_id.as_deref() {
                return Err(Error::LayerExists(id));
            }
            prev = Some(l.clone());
            out.push(l);
        }
        Ok(out)
    }

    /// Apply every pending layer into its staging directory; their
    /// records, in chain order.
    fn apply_pending<'a>(
        &self,
        pending: Vec<Pending<'a>>,
        ancestry: &[(String, PathBuf)],
        below: usize,
        progress: Option<&Progress<'_>>,
        parent_id: &(dyn Fn(usize) -> Option<String> + Sync),
    ) -> Result<Vec<Applied>> {
        let n = pending.len();
        let workers = if self.inner.driver.layers_apply_independently() {
            APPLY_WORKERS.min(n)
        } else {
            1
        };
        let slots: Vec<Mutex<Option<Pending<'a>>>> =
            pending.into_iter().map(|p| Mutex::new(Some(p))).collect();
        in_order(n, workers, "a layer apply worker", |k| {
            let p = slots[k]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("each slot is taken once");
            let parents: Vec<LayerDir<'_>> = ancestry[..below + k]
                .iter()
                .map(|(id, dir)| LayerDir { id, dir })
                .collect();
            self.apply_one(p, &parents, parent_id(k), progress)
        })
    }

    /// Apply one layer into its staging directory and check it.
    fn apply_one(
        &self,
        p: Pending<'_>,
        parents: &[LayerDir<'_>],
        parent_id: Option<String>,
        progress: Option<&Progress<'_>>,
    ) -> Result<(Staging, LayerRecord)> {
        let dir = p.staging.path().to_owned();
        let label = p.layer.label.clone();
        let named = |e: Error| match e {
            Error::Archive(m) if !m.contains(&label) => Error::Archive(format!("{label}: {m}")),
            Error::UnsafeArchive(m) if !m.contains(&label) => {
                Error::UnsafeArchive(format!("{label}: {m}"))
            }
            e => e,
        };
        let src = (p.layer.open)()?;
        let mut src = Counted::new(src, progress);
        let split = dir.join(TAR_SPLIT);
        let mut w = BufWriter::with_capacity(256 * 1024, create_private(&split)?);
        let me = LayerDir {
            id: &p.id,
            dir: &dir,
        };
        let applied = self.inner.driver.apply_diff(me, parents, &mut src, &mut w);
        let report = match applied {
            Ok(r) => r,
            Err(e) => {
                // A blob that fails its digest or size check often breaks
                // the tar or its compression first: say what is wrong with
                // the blob rather than with the tar it turned into.
                return Err(match drain(&mut src) {
                    Err(d @ Error::Archive(_)) => named(d),
                    _ => named(e),
                });
            }
        };
        drain(&mut src).map_err(named)?;
        w.flush().at("write", &split)?;
        if report.diff_id != p.layer.diff_id {
            return Err(Error::Archive(format!(
                "{label}: the layer's diff ID is {}, but the image config says {} \
                 (rootfs.diff_ids[{}])",
                report.diff_id, p.layer.diff_id, p.index
            )));
        }
        let mut rec = LayerRecord::new(&p.id, parent_id.as_deref(), false);
        rec.diff_id = Some(report.diff_id);
        rec.chain_id = Some(p.chain_id);
        rec.size = report.content_bytes;
        rec.tar_size = Some(report.bytes);
        if let Some(pr) = progress {
            pr.layer_done();
        }
        Ok((p.staging, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_keeps_order_and_stops_at_the_first_failure() {
        for workers in [1, 2, 3] {
            let got = in_order(7, workers, "t", |k| Ok(k * 10)).unwrap();
            assert_eq!(got, [0, 10, 20, 30, 40, 50, 60]);
            let started = AtomicUsize::new(0);
            let e = in_order(50, workers, "t", |k| {
                started.fetch_add(1, Ordering::Relaxed);
                if k >= 3 {
                    Err(Error::Archive(format!("item {k}")))
                } else {
                    Ok(k)
                }
            })
            .unwrap_err();
            assert_eq!(e.to_string(), "malformed archive: item 3");
            // Workers stop taking items once one failed.
            assert!(started.load(Ordering::Relaxed) <= 3 + workers, "{workers}");
        }
        assert!(in_order(0, 2, "t", |_| Ok(())).unwrap().is_empty());
    }
}
