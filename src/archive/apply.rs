//! Apply a layer's tar onto a directory, safely, in one streaming pass.
//!
//! Safety comes from where paths are resolved, not from string checks:
//! every parent directory is opened by the kernel inside `dst`
//! (`openat2` with `RESOLVE_BENEATH`, then `RESOLVE_IN_ROOT` for absolute
//! symlinks such as `/var/run -> /run`), and the last component is acted on
//! with a no-follow `*at` call on that parent fd. A name with `..`, a
//! symlink whose target climbs above `dst`, a hard link to a directory, a
//! malformed whiteout or overlay metadata is an [`Error::UnsafeArchive`].
//!
//! Shared inodes: `dst` may be a hard-link copy of a parent layer (the seed's
//! overlay design), so nothing is ever written through an existing inode. A
//! file entry unlinks and creates (`O_EXCL`), never truncates; every other
//! non-directory entry does the same; hard-link entries only add a name.
//! The only existing inodes whose metadata an apply changes are
//! directories, which a hard-link copy never shares.
//!
//! Overlay metadata: `trusted.overlay.*` / `user.overlay.*` xattrs and 0/0
//! character devices in a layer are refused in both whiteout modes. The
//! input is always an image layer, whose whiteouts are the AUFS `.wh.`
//! names (OCI image-spec); a 0/0 device in it is never a declared
//! whiteout, and would act as one the moment the tree becomes an overlay
//! lower or upper dir.
//!
//! Threads: one decompresses and one hashes ([`super::digest`]), this one
//! parses and creates every name, and a writer (`archive/writer.rs`)
//! finishes small files through the fds it is handed. A small file whose name cannot exist
//! yet (new in this layer, in a directory this apply made) is created by
//! the writer too: the create is most of a small file's kernel time. An
//! entry that could meet such a file (the same name again, a path through
//! it, a hard link, a whiteout) first waits until the writer made it.

use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::reader::{show, Header, Kind, NoRecord, Record, TarReader};
use super::resolve::{Parent, Resolver};
use super::tarsplit::Recorder;
use super::whiteout::{self, Whiteout};
use super::writer::{
    run_batch, writer, Batch, Done, FileMeta, Job, Target, BATCH_BYTES, BATCH_JOBS, JOBS, JOB_MAX,
    WRITER_GONE,
};
use super::written::{self, Marked, Written};
use super::{compression, digest};
use crate::error::{Error, IoContext, Result};
use crate::fs::handle::Handle;
use crate::fs::race;
use crate::fs::recorded;
use crate::fs::remove::remove_all;
use crate::fs::root::Root;
use crate::fs::{meta, xattr};

/// How whiteouts are written into `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// `dst` is a full tree (a copy of the parent, or empty): whiteouts
    /// remove what they name, opaque markers remove the lower content of
    /// their directory.
    #[default]
    Apply,
    /// `dst` is an overlayfs upper dir: whiteouts become 0/0 character
    /// devices, opaque markers set the `overlay.opaque` xattr.
    Overlay,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How whiteouts are written.
    pub whiteouts: WhiteoutMode,
    /// In [`WhiteoutMode::Overlay`], mark opaque dirs with
    /// `user.overlay.opaque` (a rootless `userxattr` overlay mount) instead
    /// of `trusted.overlay.opaque`.
    pub rootless_overlay: bool,
    /// Write the tar-split record (see [`super::tarsplit`]) to this file,
    /// created with mode 0600 (replaced if it exists).
    pub tar_split: Option<PathBuf>,
    /// The most memory the apply may keep about the layer's paths
    /// (default [`written::DEFAULT_LIMIT`], 512 MiB); past it the apply
    /// fails with [`Error::LimitExceeded`].
    pub memory_limit: Option<u64>,
    /// For a caller without root: record what cannot be applied (owners,
    /// device nodes, privileged xattrs, modes that would lock the owner
    /// out) in user xattrs instead of dropping it ([`crate::fs::recorded`]).
    /// Ignored for a privileged caller, who applies everything.
    pub rootless: bool,
    /// The largest zstd window a layer may ask for, as a power of two
    /// (default [`compression::ZSTD_WINDOW_LOG_MAX`], 32 MiB): the decoder
    /// allocates the window up front.
    pub zstd_window_log_max: Option<u32>,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Bytes of uncompressed tar (trailing data included).
    pub bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar: the layer's diff ID.
    pub diff_id: String,
    /// Entries in the tar (meta headers not counted).
    pub entries: u64,
    /// The sum of every entry's header size: the content bytes of the
    /// layer's files, what the seed's `UnpackLayer` returned and Docker
    /// 1.8 saved as the image's size.
    pub content_bytes: u64,
}

/// Apply the layer tar `source` (plain, gzip or zstd) onto `dst`.
///
/// Decompression and hashing run on a second thread; the layer streams
/// through in constant memory whatever its size.
pub fn apply_layer(
    dst: &Path,
    source: impl Read + Send,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    match &opts.tar_split {
        None => run(dst, source, opts, &mut NoRecord),
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .at("open", path)?;
            let report = apply_layer_with_record(dst, source, opts, std::io::BufWriter::new(file))?;
            Ok(report)
        }
    }
}

/// [`apply_layer`], writing the tar-split record to `record` (the
/// `tar_split` option is ignored).
pub fn apply_layer_with_record(
    dst: &Path,
    source: impl Read + Send,
    opts: &ApplyOptions,
    record: impl Write,
) -> Result<ApplyReport> {
    let mut rec = Recorder::new(record)?;
    let report = run(dst, source, opts, &mut rec)?;
    let mut out = rec.finish(report.bytes, &report.diff_id)?;
    out.flush()
        .map_err(|e| Error::io("write", "<tar-split record>", e))?;
    Ok(report)
}

fn run(
    dst: &Path,
    source: impl Read + Send,
    opts: &ApplyOptions,
    rec: &mut dyn Record,
) -> Result<ApplyReport> {
    let mut ap = Applier::new(dst, opts)?;
    // Set before the pump sends its first chunk, so before any error the
    // parser can meet.
    let compressed = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, pool, chunks) = digest::pipeline();
        let window = opts.zstd_window_log_max;
        let pump = s.spawn(
            move || match compression::decompress_detected(source, window) {
                Ok((kind, r)) => {
                    compressed.store(kind != compression::Compression::None, Ordering::Relaxed);
                    digest::pump(r, tx, pool)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            },
        );
        let (jobs, queue) = sync_channel(JOBS);
        let (spare_tx, spares) = sync_channel(JOBS + 1);
        let done = ap.done.clone();
        let worker = s.spawn(move || writer(queue, spare_tx, &done));
        ap.jobs = Some(jobs);
        ap.spares = Some(spares);
        let parsed = (|| {
            let mut rdr = TarReader::new(chunks, rec);
            let (mut n, mut content) = (0u64, 0u64);
            loop {
                let h = match rdr.next_entry() {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => {
                        let packed = compressed.load(Ordering::Relaxed);
                        return Err(e.at_tar(None, rdr.entry_offset(), packed));
                    }
                };
                content += h.size;
                let name = h.path.clone();
                ap.entry(&mut rdr, h).map_err(|e| {
                    let packed = compressed.load(Ordering::Relaxed);
                    e.at_tar(Some(&name), rdr.entry_offset(), packed)
                })?;
                crate::crashpoint::hit();
                n += 1;
            }
            Ok::<(u64, u64), Error>((n, content))
        })();
        // The last batch goes too after a failure: the writer's own error,
        // if it has one, is the one to report (see below).
        let flushed = ap.flush_jobs();
        let parsed = parsed.and_then(|n| flushed.map(|()| n));
        // Every file is complete before directory times are set.
        ap.jobs = None;
        let written = worker
            .join()
            .map_err(|p| crate::error::panic_message("the file writer thread", p))?;
        let applied = match (parsed, written) {
            // The writer stopped on an error of its own, and the parser
            // failed to hand it more work: the writer's error is the cause.
            (Err(_), Err(w)) if ap.writer_gone => Err(w),
            (Err(e), _) => Err(e),
            (Ok(_), Err(w)) => Err(w),
            (Ok(n), Ok(())) => ap.finish().map(|()| n),
        };
        let digest = pump
            .join()
            .map_err(|p| crate::error::panic_message("the decompression thread", p))?;
        let (entries, content_bytes) = applied?;
        let d = digest.ok_or_else(|| Error::Archive("layer stream ended abnormally".into()))?;
        Ok(ApplyReport {
            bytes: d.size,
            diff_id: d.diff_id,
            entries,
            content_bytes,
        })
    })
}

fn unsafe_archive(msg: String) -> Error {
    Error::UnsafeArchive(msg)
}

/// `path` as clean components joined by `/`, without a leading `/`; `.`
/// and empty components dropped. `..` anywhere is unsafe (CVE-2007-4131,
/// and every extractor since).
fn clean(path: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(unsafe_archive(format!(
                    "name {:?} has a '..' component",
                    show(path)
                )))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// `a` + `/` + `b`, either possibly empty.
fn join_path(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut p = a.to_vec();
    if !p.is_empty() && !b.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(b);
    p
}

/// Open the directory `sub` below `dir` for reading, no component a
/// symlink, never above `dir`.
fn open_beneath(dir: &OwnedFd, sub: &[u8]) -> rustix::io::Result<OwnedFd> {
    crate::fs::root::open_dir_beneath(dir, sub, OFlags::RDONLY)
}

/// Whether the directory `fd` has no entries.
fn is_empty_dir(fd: BorrowedFd<'_>, shown: &Path) -> Result<bool> {
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", shown)?;
    for ent in rustix::fs::Dir::read_from(&dir).at("readdir", shown)? {
        let n = ent.at("readdir", shown)?;
        let n = n.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[][..], p),
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn ts((s, ns): (i64, u32)) -> Timespec {
    Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    }
}

/// The process umask, read without changing it (umask(2) would race other
/// threads of the host process); `/proc/self/status` has it since 4.7.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Whether the mode a create call made (`mode & 0777 & ~umask`) differs
/// from the entry's (setuid/setgid/sticky, or bits the umask took), or the
/// inode existed before.
/// ACLs a new inode inherited from its directory's default ACL.
#[derive(Clone, Copy)]
enum Inherited {
    None,
    /// A file, device or FIFO: an access ACL.
    Access,
    /// A directory: an access ACL and the default ACL itself.
    AccessAndDefault,
}

impl Inherited {
    fn new(parent: &Parent, is_dir: bool) -> Self {
        match (parent.default_acl, is_dir) {
            (false, _) => Inherited::None,
            (true, false) => Inherited::Access,
            (true, true) => Inherited::AccessAndDefault,
        }
    }

    fn keys(self) -> &'static [&'static [u8]] {
        match self {
            Inherited::None => &[],
            Inherited::Access => &[xattr::ACL_ACCESS],
            Inherited::AccessAndDefault => &[xattr::ACL_ACCESS, xattr::ACL_DEFAULT],
        }
    }
}

fn needs_chmod(umask: u32, mode: u32, existed: bool) -> bool {
    existed || mode & 0o7000 != 0 || mode & 0o777 & umask != 0
}

struct Applier<'o> {
    res: Resolver,
    root_path: Arc<PathBuf>,
    /// The writer thread's queue, while it runs.
    jobs: Option<SyncSender<Batch>>,
    /// Jobs not yet sent to the writer thread, and their payload bytes.
    batch: Batch,
    /// Emptied batches back from the writer thread.
    spares: Option<Receiver<Batch>>,
    /// The writer thread stopped taking jobs (it failed on one).
    writer_gone: bool,
    batch_bytes: usize,
    /// Batches sent to the writer thread, and how many it finished.
    sent: u64,
    done: Arc<Done>,
    /// Whether a directory this apply made is still known to hold only
    /// names the layer wrote: false once any directory or symlink was
    /// removed (a path may then lead somewhere else).
    fresh_ok: bool,
    opts: &'o ApplyOptions,
    privileged: bool,
    /// Record what cannot be applied (see [`ApplyOptions::rootless`]).
    rootless: bool,
    umask: u32,
    euid: u32,
    egid: u32,
    /// Paths this layer wrote (what an opaque marker keeps; only marked in
    /// [`WhiteoutMode::Apply`]), and directory times, set after the whole
    /// layer (children change them), with the mode to set last for a
    /// directory an unprivileged caller could not write into (GNU tar's
    /// delayed_set_stat does the same).
    written: Written,
    plnk: bool,
    buf: Vec<u8>,
}

impl<'o> Applier<'o> {
    fn new(dst: &Path, opts: &'o ApplyOptions) -> Result<Self> {
        let umask = current_umask();
        let root = Root::open(dst)?;
        let mut written = Written::new(opts.memory_limit.unwrap_or(written::DEFAULT_LIMIT));
        if is_empty_dir(root.fd(), dst)? {
            written.set_fresh(written::ROOT);
        }
        Ok(Applier {
            res: Resolver::new(root, umask),
            root_path: Arc::new(dst.to_path_buf()),
            jobs: None,
            batch: Batch::default(),
            spares: None,
            writer_gone: false,
            batch_bytes: 0,
            sent: 0,
            done: Arc::new(Done::default()),
            fresh_ok: true,
            opts,
            privileged: meta::is_privileged(),
            rootless: opts.rootless && !meta::is_privileged(),
            umask,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            written,
            plnk: false,
            buf: Vec::new(),
        })
    }

    /// Send the pending batch of small files to the writer thread, or run
    /// it here if the writer's queue is full.
    fn flush_jobs(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let spare = match self.spares.as_ref().map(|s| s.try_recv()) {
            Some(Ok(b)) => b,
            _ => Batch::default(),
        };
        let batch = std::mem::replace(&mut self.batch, spare);
        self.batch_bytes = 0;
        let Some(jobs) = &self.jobs else {
            return self.gone();
        };
        match jobs.try_send(batch) {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(TrySendError::Full(batch)) => {
                let ran = run_batch(batch)?;
                if self.batch.data.capacity() < ran.data.capacity() {
                    self.batch = ran;
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => self.gone(),
        }
    }

    fn gone(&mut self) -> Result<()> {
        self.writer_gone = true;
        Err(Error::Internal(WRITER_GONE.into()))
    }

    /// Whether a file handed to the writer may not exist yet.
    fn pending(&self) -> bool {
        !self.batch.is_empty() || self.done.batches() < self.sent
    }

    /// Wait until every file handed to the writer exists: before an entry
    /// that names one of them, or a path through one, or removes things.
    fn sync_jobs(&mut self) -> Result<()> {
        if !self.pending() {
            return Ok(());
        }
        self.flush_jobs()?;
        if self.done.wait_for(self.sent) {
            Ok(())
        } else {
            self.gone()
        }
    }

    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.res.root.display_path(Path::new(os(rel)))
    }

    fn entry<R: BufRead>(&mut self, rdr: &mut TarReader<'_, R>, h: Header) -> Result<()> {
        let path = clean(&h.path)?;
        for (k, _) in &h.xattrs {
            if whiteout::is_overlay_xattr(k) {
                return Err(unsafe_archive(format!(
                    "{}: overlay metadata xattr {:?} in a layer",
                    show(&h.path),
                    show(k)
                )));
            }
        }
        if h.kind == Kind::Char && h.dev == (0, 0) {
            // A 0/0 device is an overlayfs whiteout; in an image layer it
            // would hide lower content when the tree is used as a lower dir.
            return Err(unsafe_archive(format!(
                "{}: a 0/0 character device (overlay whiteout) in a layer",
                show(&h.path)
            )));
        }
        if path.is_empty() {
            if h.kind != Kind::Dir {
                return Err(unsafe_archive(format!(
                    "entry {:?} would replace the layer root with a non-directory",
                    show(&h.path)
                )));
            }
            return self.root_dir(&h);
        }
        let (parent, name) = split_last(&path);
        match whiteout::classify(name)? {
            Whiteout::No => {}
            Whiteout::Remove(target) => {
                self.sync_jobs()?;
                return self.whiteout(parent, target);
            }
            Whiteout::Opaque => {
                self.sync_jobs()?;
                return self.opaque(parent);
            }
            Whiteout::Meta => {
                if parent.is_empty() && name == whiteout::PLNK && h.kind == Kind::Dir {
                    self.plnk = true;
                } else {
                    // Other AUFS metadata (.wh..wh.aufs, .wh..wh.orph) is
                    // dropped, as moby's UnpackLayer does; its bytes stay in
                    // the record.
                    return Ok(());
                }
            }
        }
        let staged =
            path.starts_with(whiteout::PLNK) && path.get(whiteout::PLNK.len()) == Some(&b'/');
        let marked = self.written.mark_entry(&path)?;
        if marked.seen || marked.deferred_above || h.kind == Kind::Hardlink {
            // The name, a directory on its way, or a link's target may be a
            // file the writer has not created yet.
            self.sync_jobs()?;
        }
        let pfd = self.res.parent(parent, true)?;
        let name = os(name);
        match h.kind {
            Kind::File => self.file(rdr, &pfd, name, &path, &h, staged, marked)?,
            Kind::Dir => {
                if self.dir(&pfd, name, &path, &h)? {
                    self.written.set_fresh(marked.node);
                }
            }
            Kind::Symlink => {
                self.create(&pfd, name, &path, |d, n| {
                    rustix::fs::symlinkat(os(&h.linkname), d, n)
                })?;
                self.meta(&pfd, name, &path, &h, FileType::Symlink)?;
            }
            Kind::Hardlink => self.hardlink(&pfd, name, &path, &h)?,
            Kind::Char | Kind::Block if self.rootless => {
                // No mknod without CAP_MKNOD: an empty file, and the device
                // recorded on it.
                self.create(&pfd, name, &path, |d, n| {
                    rustix::fs::openat(
                        d,
                        n,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o600),
                    )
                    .map(drop)
                })?;
                self.meta(&pfd, name, &path, &h, FileType::RegularFile)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (ft, dev) = match h.kind {
                    Kind::Char => (
                        FileType::CharacterDevice,
                        rustix::fs::makedev(h.dev.0, h.dev.1),
                    ),
                    Kind::Block => (FileType::BlockDevice, rustix::fs::makedev(h.dev.0, h.dev.1)),
                    _ => (FileType::Fifo, 0),
                };
                let mode = Mode::from_raw_mode(h.mode & 0o777);
                self.create(&pfd, name, &path, |d, n| {
                    rustix::fs::mknodat(d, n, ft, mode, dev)
                })?;
                self.meta(&pfd, name, &path, &h, ft)?;
            }
        }
        Ok(())
    }

    /// Create `dir/name` with `make`, replacing whatever non-directory (or,
    /// for non-directory entries, directory) stands there.
    fn create(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &[u8],
        make: impl Fn(BorrowedFd<'_>, &OsStr) -> rustix::io::Result<()>,
    ) -> Result<()> {
        for _ in 0..3 {
            match make(dir.as_fd(), name) {
                Ok(()) => {
                    race::created(dir.as_fd(), name);
                    return Ok(());
                }
                Err(Errno::EXIST) => self.make_room(dir, name, path)?,
                Err(e) => return Err(e).at("create", &self.shown(path)),
            }
        }
        Err(Error::io(
            "create",
            self.shown(path),
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    /// Remove `dir/name` so that a new entry can take its place (the old
    /// inode may be shared with a parent layer: unlink, never write).
    fn make_room(&mut self, dir: &OwnedFd, name: &OsStr, path: &[u8]) -> Result<()> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).at("stat", &self.shown(path)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory || ft == FileType::Symlink {
            // The cached parent may have been reached through it.
            self.res.cache = None;
            self.fresh_ok = false;
        }
        remove_all(dir.as_fd(), name, &self.shown(path))
    }

    #[allow(clippy::too_many_arguments)]
    fn file<R: BufRead>(
        &mut self,
        rdr: &mut TarReader<'_, R>,
        dir: &Arc<Parent>,
        name: &OsStr,
        path: &[u8],
        h: &Header,
        staged: bool,
        marked: Marked,
    ) -> Result<()> {
        // Rootless: the owner keeps read and write; the true mode recorded.
        let true_mode = h.mode & 0o7777;
        let disk = if self.rootless {
            recorded::disk_mode(FileType::RegularFile, h.mode)
        } else {
            true_mode
        };
        // A small file whose name no entry made before, in a directory this
        // apply made, cannot collide with anything: the writer creates it.
        let hand_over = self.jobs.is_some()
            && h.size <= JOB_MAX
            && !staged
            && self.fresh_ok
            && marked.fresh_parent
            && !marked.seen
            && !marked.deferred_above;
        let target = if hand_over {
            self.written.set_deferred(marked.node);
            Target::Create {
                dir: dir.clone(),
                name: name.as_bytes().to_vec(),
                mode: disk & 0o777,
            }
        } else {
            Target::Open(self.create_file(dir, name, path, disk)?)
        };
        // A new file already has our ids unless its directory is setgid;
        // skipping the chown then saves a syscall per file.
        let owned = h.uid == self.euid && h.gid == self.egid && !dir.setgid;
        // Rootless, the writer's ids read as root's (recorded::Ids).
        let as_root = (h.uid, h.gid) == (0, 0);
        let record = (self.rootless && (!as_root || disk != true_mode)).then(|| {
            recorded::Override {
                uid: h.uid,
                gid: h.gid,
                mode: true_mode,
                kind: None,
                rdev: (0, 0),
            }
            .encode()
        });
        let meta = FileMeta {
            chown: (self.privileged && !owned).then_some((h.uid, h.gid)),
            xattrs: h.xattrs.clone(),
            // An inherited ACL set the mode without the umask: always chmod.
            chmod: (dir.default_acl || needs_chmod(self.umask, disk, false)).then_some(disk),
            record,
            rootless: self.rootless,
            drop_inherited_acl: dir.default_acl,
            times: Timestamps {
                last_access: ts(h.atime.unwrap_or(h.mtime)),
                last_modification: ts(h.mtime),
            },
            privileged: self.privileged,
            root: self.root_path.clone(),
            path: path.to_vec(),
        };
        if staged {
            let Target::Open(mut file) = target else {
                unreachable!("staged files are created here")
            };
            // AUFS hard-link staging files are removed after the apply, so
            // their payload goes into the record itself.
            if self.buf.len() < 64 * 1024 {
                self.buf.resize(64 * 1024, 0);
            }
            loop {
                let n = rdr.read_payload(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&self.buf[..n]).at("write", &meta.shown())?;
                rdr.record().raw(&self.buf[..n])?;
            }
            return meta.apply(file);
        }
        let mut crc = crc32fast::Hasher::new();
        if self.jobs.is_some() && h.size <= JOB_MAX {
            // Small files: the payload and the rest of the file's syscalls go
            // to the writer thread; this one goes on parsing and creating.
            let data = &mut self.batch.data;
            let start = data.len();
            while rdr.with_payload(&mut |b| {
                crc.update(b);
                data.extend_from_slice(b);
                Ok(())
            })? {}
            rdr.record().file(path, h.size, crc.finalize())?;
            let len = self.batch.data.len() - start;
            self.batch_bytes += len;
            self.batch.jobs.push(Job { target, len, meta });
            if self.batch.jobs.len() >= BATCH_JOBS || self.batch_bytes >= BATCH_BYTES {
                return self.flush_jobs();
            }
            return Ok(());
        }
        let Target::Open(mut file) = target else {
            unreachable!("only files for the writer are handed over")
        };
        let shown = meta.shown();
        while rdr.with_payload(&mut |b| {
            crc.update(b);
            file.write_all(b).at("write", &shown)
        })? {}
        rdr.record().file(path, h.size, crc.finalize())?;
        meta.apply(file)
    }

    /// Create the regular file `dir/name`, replacing what stands there.
    fn create_file(
        &mut self,
        dir: &Parent,
        name: &OsStr,
        path: &[u8],
        disk: u32,
    ) -> Result<std::fs::File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(disk & 0o777);
        for _ in 0..3 {
            match rustix::fs::openat(dir, name, flags, mode) {
                Ok(f) => {
                    race::created(dir.as_fd(), name);
                    return Ok(std::fs::File::from(f));
                }
                Err(Errno::EXIST) => self.make_room(dir, name, path)?,
                Err(e) => return Err(e).at("create", &self.shown(path)),
            }
        }
        Err(Error::io(
            "create",
            self.shown(path),
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    fn needs_chmod(&self, mode: u32, existed: bool) -> bool {
        needs_chmod(self.umask, mode, existed)
    }

    /// The mode to give a directory now and the one to set after the
    /// layer: without CAP_DAC_OVERRIDE a 0555 directory could not be
    /// filled, so it stays owner-writable until the end.
    fn dir_modes(&self, mode: u32) -> (u32, Option<u32>) {
        if self.rootless {
            // The true mode is recorded; on disk the owner keeps access.
            return (recorded::disk_mode(FileType::Directory, mode), None);
        }
        if self.privileged || mode & 0o300 == 0o300 {
            (mode, None)
        } else {
            (mode | 0o300, Some(mode))
        }
    }

    /// Make the directory `pdir/name` (or merge onto the one there); true
    /// if it is new.
    fn dir(&mut self, pdir: &Parent, name: &OsStr, path: &[u8], h: &Header) -> Result<bool> {
        let (now, later) = self.dir_modes(h.mode);
        let mode = Mode::from_raw_mode(now & 0o777);
        let mut existed = false;
        let mut made = false;
        for _ in 0..3 {
            match rustix::fs::mkdirat(pdir, name, mode) {
                Ok(()) => {
                    race::created(pdir.as_fd(), name);
                    made = true;
                    break;
                }
                Err(Errno::EXIST) => {
                    let st = rustix::fs::statat(pdir, name, AtFlags::SYMLINK_NOFOLLOW)
                        .at("stat", &self.shown(path))?;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        // Dir onto dir merges; the entry's metadata wins.
                        existed = true;
                        break;
                    }
                    self.make_room(pdir, name, path)?;
                }
                Err(e) => return Err(e).at("mkdir", &self.shown(path)),
            }
        }
        let shown = self.shown(path);
        let dir = Handle::open(pdir, name, FileType::Directory, &shown)?;
        self.owner_xattrs(&dir, path, h, Inherited::new(pdir, true))?;
        if let Some((cached, _)) = &self.res.cache {
            // Its default ACL may have changed, and the cache knows the old one.
            if cached == path {
                self.res.cache = None;
            }
        }
        if self.needs_chmod(now, existed) || pdir.default_acl {
            dir.chmod(now).at("chmod", &shown)?;
        }
        if self.rootless {
            self.record(&dir, path, h, FileType::Directory, now)?;
        }
        self.written.push_time(path, self.times(h), later)?;
        Ok(made)
    }

    fn times(&self, h: &Header) -> Timestamps {
        Timestamps {
            last_access: ts(h.atime.unwrap_or(h.mtime)),
            last_modification: ts(h.mtime),
        }
    }

    fn root_dir(&mut self, h: &Header) -> Result<()> {
        let root = Handle::from_path_fd(self.res.root.open_dir(Path::new(""))?);
        self.owner_xattrs(&root, b"", h, Inherited::None)?;
        let (now, later) = self.dir_modes(h.mode);
        root.chmod(now).at("chmod", self.res.root.path())?;
        if self.rootless {
            self.record(&root, b"", h, FileType::Directory, now)?;
        }
        self.written.push_time(b"", self.times(h), later)?;
        Ok(())
    }

    /// Owner, then xattrs (dropping the ACLs the inode inherited from its
    /// directory that the entry does not carry), through the handle.
    fn owner_xattrs(
        &self,
        obj: &Handle,
        path: &[u8],
        h: &Header,
        inherited: Inherited,
    ) -> Result<()> {
        if self.privileged {
            obj.chown(h.uid, h.gid).at("lchown", &self.shown(path))?;
        }
        // What the parent's default ACL gave the new inode is not the
        // layer's: the tar entry lists every ACL the inode should have.
        for key in inherited.keys() {
            if !h.xattrs.iter().any(|(k, _)| k == key) {
                obj.remove_xattr(os(key))
                    .at("removexattr", &self.shown(path))?;
            }
        }
        for (k, v) in &h.xattrs {
            recorded::set_xattr(os(k), self.rootless, self.privileged, |name| {
                obj.set_xattr(name, v)
            })
            .at("setxattr", &self.shown(path))?;
        }
        Ok(())
    }

    /// Rootless: the layer root carries an override, which marks the tree
    /// as one whose writer's ids read as root's (recorded::Ids) and is how
    /// fuse-overlayfs knows to read a layer's overrides: an image's `/` is
    /// root's, with its mode on disk, unless the layer said otherwise.
    fn mark_root(&mut self) -> Result<()> {
        let root = Handle::from_path_fd(self.res.root.open_dir(Path::new(""))?);
        let shown = self.res.root.path();
        let key = OsStr::new(recorded::OVERRIDE_STAT);
        if xattr::get(root.inode().as_fd(), OsStr::new(""), key, shown)?.is_some() {
            return Ok(());
        }
        let st = rustix::fs::fstat(root.inode().as_fd()).at("stat", shown)?;
        let o = recorded::Override {
            uid: 0,
            gid: 0,
            mode: st.st_mode & 0o7777,
            kind: None,
            rdev: (0, 0),
        };
        root.set_xattr(key, o.encode().as_bytes())
            .at("setxattr", shown)
    }

    /// Rootless: record on `obj` (stored as `stored`, with `disk` as its
    /// mode on disk) the owner and mode of `h`, and its type when it is
    /// stored as another, where they differ from what the inode has.
    fn record(
        &mut self,
        obj: &Handle,
        path: &[u8],
        h: &Header,
        stored: FileType,
        disk: u32,
    ) -> Result<()> {
        let kind = match h.kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            Kind::Dir => FileType::Directory,
            Kind::Fifo => FileType::Fifo,
            Kind::Symlink => FileType::Symlink,
            Kind::File | Kind::Hardlink => FileType::RegularFile,
        };
        let o = recorded::Override {
            uid: h.uid,
            gid: h.gid,
            mode: h.mode & 0o7777,
            kind: (kind != stored).then_some(kind),
            rdev: h.dev,
        };
        // The writer's ids read as root's (recorded::Ids).
        let same = o.kind.is_none() && (h.uid, h.gid) == (0, 0) && disk == h.mode & 0o7777;
        if same {
            return Ok(());
        }
        obj.set_xattr(OsStr::new(recorded::OVERRIDE_STAT), o.encode().as_bytes())
            .at("setxattr", &self.shown(path))
    }

    /// Owner, xattrs, mode (not for symlinks), times of an entry created by
    /// name (symlinks, devices, FIFOs), through a handle opened without
    /// following it, so a symlink swapped in meanwhile is never followed.
    fn meta(
        &mut self,
        dir: &Parent,
        name: &OsStr,
        path: &[u8],
        h: &Header,
        kind: FileType,
    ) -> Result<()> {
        let shown = self.shown(path);
        let obj = Handle::open(dir, name, kind, &shown)?;
        let symlink = kind == FileType::Symlink;
        // Symlinks have no ACLs and no mode.
        let inherited = if symlink {
            Inherited::None
        } else {
            Inherited::new(dir, false)
        };
        self.owner_xattrs(&obj, path, h, inherited)?;
        if self.rootless && kind == FileType::RegularFile {
            // A device stored as a file: its type, owner and mode recorded.
            let disk = recorded::disk_mode(kind, h.mode);
            obj.chmod(disk).at("chmod", &shown)?;
            self.record(&obj, path, h, kind, disk)?;
        } else if !symlink && (self.needs_chmod(h.mode, false) || dir.default_acl) {
            // Rootless, a FIFO keeps no setuid bits (and reads as root's:
            // a user xattr cannot be set on one).
            let mode = if self.rootless {
                h.mode & 0o777
            } else {
                h.mode
            };
            obj.chmod(mode).at("chmod", &shown)?;
        }
        obj.set_times(&self.times(h)).at("utimensat", &shown)
    }

    fn hardlink(&mut self, dir: &OwnedFd, name: &OsStr, path: &[u8], h: &Header) -> Result<()> {
        let target = clean(&h.linkname)?;
        if target.is_empty() {
            return Err(unsafe_archive(format!(
                "hard link {} to the layer root",
                show(&h.path)
            )));
        }
        if target == path {
            // A link to itself: the file is already what it names.
            return Ok(());
        }
        let (tparent, tname) = split_last(&target);
        let tdir = match self.res.parent(tparent, false) {
            Ok(fd) => fd,
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Err(Error::Archive(format!(
                    "hard link {} to {}, which does not exist",
                    show(&h.path),
                    show(&h.linkname)
                )))
            }
            Err(e) => return Err(e),
        };
        let tname = os(tname);
        match rustix::fs::statat(&*tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(unsafe_archive(format!(
                    "hard link {} to the directory {}",
                    show(&h.path),
                    show(&h.linkname)
                )))
            }
            Ok(_) => {}
            Err(Errno::NOENT) => {
                return Err(Error::Archive(format!(
                    "hard link {} to {}, which does not exist",
                    show(&h.path),
                    show(&h.linkname)
                )))
            }
            Err(e) => return Err(e).at("stat", &self.shown(&target)),
        }
        self.create(dir, name, path, |d, n| {
            rustix::fs::linkat(&*tdir, tname, d, n, AtFlags::empty())
        })
    }

    fn whiteout(&mut self, parent: &[u8], target: &[u8]) -> Result<()> {
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(target);
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            let dir = self.res.parent(parent, true)?;
            let dev = rustix::fs::makedev(0, 0);
            return self.create(&dir, os(target), &path, |d, n| {
                rustix::fs::mknodat(d, n, FileType::CharacterDevice, Mode::empty(), dev)
            });
        }
        let dir = match self.res.parent(parent, false) {
            Ok(fd) => fd,
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        self.res.cache = None;
        if rustix::fs::statat(&*dir, os(target), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            let ft = FileType::from_raw_mode(st.st_mode);
            ft == FileType::Directory || ft == FileType::Symlink
        }) {
            self.fresh_ok = false;
        }
        remove_all(dir.as_fd(), os(target), &self.shown(&path))
    }

    fn opaque(&mut self, dir_path: &[u8]) -> Result<()> {
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            let dir = self.res.parent(dir_path, true)?;
            let key: &[u8] = if self.opts.rootless_overlay {
                b"user.overlay.opaque"
            } else {
                b"trusted.overlay.opaque"
            };
            return xattr::set(&*dir, OsStr::new(""), os(key), b"y", &self.shown(dir_path))
                .at("setxattr", &self.shown(dir_path));
        }
        self.res.cache = None;
        self.fresh_ok = false;
        // Everything below dir_path that this layer did not write goes. The
        // marker's directory is resolved like any parent (an escaping
        // symlink is unsafe); below it nothing is followed.
        let top = match self.res.resolve(dir_path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.res.resolve_error(dir_path, e)),
        };
        // Below the marker's directory: by path from it, never following
        // a symlink, one directory open at a time.
        let mut todo: Vec<(Option<u32>, Vec<u8>)> = vec![(self.written.find(dir_path), Vec::new())];
        while let Some((node, sub)) = todo.pop() {
            let at = join_path(dir_path, &sub);
            let fd = match open_beneath(&top, &sub) {
                Ok(fd) => fd,
                // Replaced meanwhile by what this layer wrote later: kept.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(e).at("open", &self.shown(&at)),
            };
            let mut names = Vec::new();
            for ent in rustix::fs::Dir::read_from(&fd).at("readdir", &self.shown(&at))? {
                let ent = ent.at("readdir", &self.shown(&at))?;
                let n = ent.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                let is_dir = match ent.file_type() {
                    FileType::Unknown => rustix::fs::statat(&fd, os(n), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
                    t => t == FileType::Directory,
                };
                names.push((n.to_vec(), is_dir));
            }
            for (n, is_dir) in names {
                let child = node.and_then(|p| self.written.child(p, &n));
                match child {
                    Some(c) if self.written.kept(c) => {
                        if is_dir {
                            todo.push((Some(c), join_path(&sub, &n)));
                        }
                    }
                    _ => remove_all(fd.as_fd(), os(&n), &self.shown(&join_path(&at, &n)))?,
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.res.cache = None;
        if self.plnk {
            remove_all(
                self.res.root.fd(),
                os(whiteout::PLNK),
                &self.shown(whiteout::PLNK),
            )?;
        }
        if self.rootless {
            self.mark_root()?;
        }
        let times = self.written.take_times();
        for (node, t, mode) in times.iter().rev() {
            let path = self.written.path(*node);
            if path.is_empty() {
                if let Some(m) = mode {
                    let root = Handle::from_path_fd(self.res.root.open_dir(Path::new(""))?);
                    root.chmod(*m).at("chmod", self.res.root.path())?;
                }
                rustix::fs::utimensat(self.res.root.fd(), "", t, AtFlags::EMPTY_PATH)
                    .at("utimensat", self.res.root.path())?;
                continue;
            }
            let (parent, name) = split_last(&path);
            let dir = match self.res.resolve(parent) {
                Ok(fd) => fd,
                Err(_) => continue, // removed later in the layer
            };
            let shown = self.shown(&path);
            let obj = match Handle::open(&dir, os(name), FileType::Directory, &shown) {
                Ok(obj) => obj,
                // Replaced by a non-directory or removed later in the layer.
                Err(e) if e.is_errno(libc::ENOTDIR) || e.is_errno(libc::ELOOP) => continue,
                Err(e) if e.is_errno(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if let Some(m) = mode {
                obj.chmod(*m).at("chmod", &shown)?;
            }
            obj.set_times(t).at("utimensat", &shown)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(clean(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(clean(b"/usr/bin/x").unwrap(), b"usr/bin/x");
        assert_eq!(clean(b"./").unwrap(), b"");
        assert!(matches!(clean(b"a/../../b"), Err(Error::UnsafeArchive(_))));
    }
}
