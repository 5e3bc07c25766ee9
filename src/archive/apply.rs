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

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::reader::{show, Header, Kind, NoRecord, Record, TarReader};
use super::tarsplit::Recorder;
use super::whiteout::{self, Whiteout};
use super::{compression, digest};
use crate::error::{Error, IoContext, Result};
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

use std::os::unix::fs::OpenOptionsExt;

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
    std::thread::scope(|s| {
        let (tx, pool, chunks) = digest::pipeline();
        let pump = s.spawn(move || match compression::decompress(source) {
            Ok(r) => digest::pump(r, tx, pool),
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        });
        let (jobs, queue) = sync_channel(JOBS);
        let worker = s.spawn(move || writer(queue));
        ap.jobs = Some(jobs);
        let parsed = (|| {
            let mut rdr = TarReader::new(chunks, rec);
            let mut n = 0u64;
            while let Some(h) = rdr.next_entry()? {
                ap.entry(&mut rdr, h)?;
                n += 1;
            }
            Ok::<u64, Error>(n)
        })();
        // Every file is complete before directory times are set.
        ap.jobs = None;
        let written = worker
            .join()
            .map_err(|_| Error::Archive("writer thread panicked".into()))?;
        let applied = match (parsed, written) {
            (Err(Error::Archive(m)), Err(w)) if m == WRITER_GONE => Err(w),
            (Err(e), _) => Err(e),
            (Ok(_), Err(w)) => Err(w),
            (Ok(n), Ok(())) => ap.finish().map(|()| n),
        };
        let digest = pump
            .join()
            .map_err(|_| Error::Archive("decompression thread panicked".into()))?;
        let entries = applied?;
        let d = digest.ok_or_else(|| Error::Archive("layer stream ended abnormally".into()))?;
        Ok(ApplyReport {
            bytes: d.size,
            diff_id: d.diff_id,
            entries,
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
fn needs_chmod(umask: u32, mode: u32, existed: bool) -> bool {
    existed || mode & 0o7000 != 0 || mode & 0o777 & umask != 0
}

/// Symlinks followed while checking a path, as the kernel's MAXSYMLINKS.
const MAX_HOPS: usize = 40;

/// Files up to this size are finished by the writer thread.
const JOB_MAX: u64 = 1 << 20;
/// Jobs queued for the writer thread (bounds memory at `JOBS * JOB_MAX`).
const JOBS: usize = 16;
const WRITER_GONE: &str = "the file writer thread stopped";

/// What is left to do to a created regular file once its payload is in:
/// chown, xattrs, chmod, times, in that order (chown clears setuid).
struct FileMeta {
    chown: Option<(u32, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    chmod: Option<u32>,
    times: Timestamps,
    privileged: bool,
    root: Arc<PathBuf>,
    path: Vec<u8>,
}

impl FileMeta {
    fn shown(&self) -> PathBuf {
        self.root.join(os(&self.path))
    }

    fn apply(self, file: std::fs::File) -> Result<()> {
        let fd = file.as_fd();
        if let Some((uid, gid)) = self.chown {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .at("chown", &self.shown())?;
        }
        for (k, v) in &self.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, os(k), v, rustix::fs::XattrFlags::empty()) {
                if !xattr::is_skippable(os(k), e, self.privileged) {
                    return Err(e).at("setxattr", &self.shown());
                }
            }
        }
        if let Some(mode) = self.chmod {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).at("chmod", &self.shown())?;
        }
        rustix::fs::futimens(fd, &self.times).at("utimensat", &self.shown())
    }
}

/// A small file for the writer thread: its open fd, payload and metadata.
struct Job {
    file: std::fs::File,
    data: Vec<u8>,
    meta: FileMeta,
}

/// The writer thread: payload, metadata and close of small files, so that
/// the kernel's per-file cost runs on both cores. It only ever touches fds
/// the applying thread created, never a path.
fn writer(jobs: Receiver<Job>) -> Result<()> {
    for mut job in jobs {
        job.file
            .write_all(&job.data)
            .map_err(|e| Error::io("write", job.meta.shown(), e))?;
        job.meta.apply(job.file)?;
    }
    Ok(())
}

/// A resolved parent directory.
struct Parent {
    fd: OwnedFd,
    /// New entries inherit the directory's group (so need a chown).
    setgid: bool,
}

impl AsFd for Parent {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::ops::Deref for Parent {
    type Target = OwnedFd;
    fn deref(&self) -> &OwnedFd {
        &self.fd
    }
}

struct Applier<'o> {
    root: Root,
    root_path: Arc<PathBuf>,
    /// The writer thread's queue, while it runs.
    jobs: Option<SyncSender<Job>>,
    opts: &'o ApplyOptions,
    privileged: bool,
    umask: u32,
    /// The last parent directory resolved, by its clean path.
    cache: Option<(Vec<u8>, Rc<Parent>)>,
    euid: u32,
    egid: u32,
    /// Directory times, set after the whole layer (children change them).
    /// With the mode to set last, for a directory an unprivileged caller
    /// could not write into (GNU tar's delayed_set_stat does the same).
    dir_times: Vec<(Vec<u8>, Timestamps, Option<u32>)>,
    /// Paths this layer wrote, and their ancestors: what an opaque marker
    /// keeps. Only kept in [`WhiteoutMode::Apply`].
    added: HashSet<Vec<u8>>,
    added_parents: HashSet<Vec<u8>>,
    plnk: bool,
    buf: Vec<u8>,
}

impl<'o> Applier<'o> {
    fn new(dst: &Path, opts: &'o ApplyOptions) -> Result<Self> {
        Ok(Applier {
            root: Root::open(dst)?,
            root_path: Arc::new(dst.to_path_buf()),
            jobs: None,
            opts,
            privileged: meta::is_privileged(),
            umask: current_umask(),
            cache: None,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            dir_times: Vec::new(),
            added: HashSet::new(),
            added_parents: HashSet::new(),
            plnk: false,
            buf: Vec::new(),
        })
    }

    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.root.display_path(Path::new(os(rel)))
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
            Whiteout::Remove(target) => return self.whiteout(parent, target),
            Whiteout::Opaque => return self.opaque(parent),
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
        let pfd = self.parent(parent, true)?;
        let name = os(name);
        match h.kind {
            Kind::File => self.file(rdr, &pfd, name, &path, &h, staged)?,
            Kind::Dir => self.dir(&pfd, name, &path, &h)?,
            Kind::Symlink => {
                self.create(&pfd, name, &path, |d, n| {
                    rustix::fs::symlinkat(os(&h.linkname), d, n)
                })?;
                self.meta(&pfd, name, &path, &h, false)?;
            }
            Kind::Hardlink => self.hardlink(&pfd, name, &path, &h)?,
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
                self.meta(&pfd, name, &path, &h, true)?;
            }
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.mark_added(&path);
        }
        Ok(())
    }

    fn mark_added(&mut self, path: &[u8]) {
        let mut p = path;
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if !self.added_parents.insert(p.to_vec()) {
                break;
            }
        }
        self.added.insert(path.to_vec());
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
                Ok(()) => return Ok(()),
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
            self.cache = None;
        }
        whiteout::remove_all(dir.as_fd(), name).at("remove", &self.shown(path))
    }

    fn file<R: BufRead>(
        &mut self,
        rdr: &mut TarReader<'_, R>,
        dir: &Parent,
        name: &OsStr,
        path: &[u8],
        h: &Header,
        staged: bool,
    ) -> Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(h.mode & 0o777);
        let mut fd = None;
        for _ in 0..3 {
            match rustix::fs::openat(dir, name, flags, mode) {
                Ok(f) => {
                    fd = Some(f);
                    break;
                }
                Err(Errno::EXIST) => self.make_room(dir, name, path)?,
                Err(e) => return Err(e).at("create", &self.shown(path)),
            }
        }
        let fd = fd.ok_or_else(|| {
            Error::io(
                "create",
                self.shown(path),
                std::io::Error::from_raw_os_error(libc::EEXIST),
            )
        })?;
        let mut file = std::fs::File::from(fd);
        // A new file already has our ids unless its directory is setgid;
        // skipping the chown then saves a syscall per file.
        let owned = h.uid == self.euid && h.gid == self.egid && !dir.setgid;
        let meta = FileMeta {
            chown: (self.privileged && !owned).then_some((h.uid, h.gid)),
            xattrs: h.xattrs.clone(),
            chmod: needs_chmod(self.umask, h.mode, false).then_some(h.mode & 0o7777),
            times: Timestamps {
                last_access: ts(h.atime.unwrap_or(h.mtime)),
                last_modification: ts(h.mtime),
            },
            privileged: self.privileged,
            root: self.root_path.clone(),
            path: path.to_vec(),
        };
        if staged {
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
        if let Some(jobs) = self.jobs.as_ref().filter(|_| h.size <= JOB_MAX) {
            // Small files: the payload and the rest of the file's syscalls go
            // to the writer thread; this one goes on parsing and creating.
            let mut data = Vec::with_capacity(h.size as usize);
            while rdr.with_payload(&mut |b| {
                crc.update(b);
                data.extend_from_slice(b);
                Ok(())
            })? {}
            rdr.record().file(path, h.size, crc.finalize())?;
            return jobs
                .send(Job { file, data, meta })
                .map_err(|_| Error::Archive(WRITER_GONE.into()));
        }
        let mut werr = None;
        while rdr.with_payload(&mut |b| {
            crc.update(b);
            if let Err(e) = file.write_all(b) {
                werr = Some(e);
                return Err(Error::Archive(String::new()));
            }
            Ok(())
        })? {}
        if let Some(e) = werr {
            return Err(Error::io("write", meta.shown(), e));
        }
        rdr.record().file(path, h.size, crc.finalize())?;
        meta.apply(file)
    }

    fn needs_chmod(&self, mode: u32, existed: bool) -> bool {
        needs_chmod(self.umask, mode, existed)
    }

    /// The mode to give a directory now and the one to set after the
    /// layer: without CAP_DAC_OVERRIDE a 0555 directory could not be
    /// filled, so it stays owner-writable until the end.
    fn dir_modes(&self, mode: u32) -> (u32, Option<u32>) {
        if self.privileged || mode & 0o300 == 0o300 {
            (mode, None)
        } else {
            (mode | 0o300, Some(mode))
        }
    }

    fn dir(&mut self, pdir: &OwnedFd, name: &OsStr, path: &[u8], h: &Header) -> Result<()> {
        let (now, later) = self.dir_modes(h.mode);
        let mode = Mode::from_raw_mode(now & 0o777);
        let mut existed = false;
        for _ in 0..3 {
            match rustix::fs::mkdirat(pdir, name, mode) {
                Ok(()) => break,
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
        self.owner_xattrs(pdir, name, path, h)?;
        if self.needs_chmod(now, existed) {
            rustix::fs::chmodat(
                pdir,
                name,
                Mode::from_raw_mode(now & 0o7777),
                AtFlags::empty(),
            )
            .at("chmod", &self.shown(path))?;
        }
        self.dir_times.push((path.to_vec(), self.times(h), later));
        Ok(())
    }

    fn times(&self, h: &Header) -> Timestamps {
        Timestamps {
            last_access: ts(h.atime.unwrap_or(h.mtime)),
            last_modification: ts(h.mtime),
        }
    }

    fn root_dir(&mut self, h: &Header) -> Result<()> {
        let fd = self.root.open_dir(Path::new(""))?;
        let shown = self.root.path().to_path_buf();
        if self.privileged {
            meta::chown(&fd, OsStr::new(""), h.uid, h.gid, &shown)?;
        }
        for (k, v) in &h.xattrs {
            if let Err(e) = xattr::set(&fd, OsStr::new(""), os(k), v, &shown) {
                if !xattr::is_skippable(os(k), e, self.privileged) {
                    return Err(e).at("setxattr", &shown);
                }
            }
        }
        let (now, later) = self.dir_modes(h.mode);
        meta::chmod(&fd, OsStr::new(""), now, &shown)?;
        self.dir_times.push((Vec::new(), self.times(h), later));
        Ok(())
    }

    fn owner_xattrs(&self, dir: &OwnedFd, name: &OsStr, path: &[u8], h: &Header) -> Result<()> {
        if self.privileged {
            meta::chown(dir, name, h.uid, h.gid, &self.shown(path))?;
        }
        for (k, v) in &h.xattrs {
            if let Err(e) = xattr::set(dir, name, os(k), v, &self.shown(path)) {
                if !xattr::is_skippable(os(k), e, self.privileged) {
                    return Err(e).at("setxattr", &self.shown(path));
                }
            }
        }
        Ok(())
    }

    /// lchown, xattrs, chmod (not for symlinks), times, for entries created
    /// by name (symlinks, devices, FIFOs).
    fn meta(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &[u8],
        h: &Header,
        chmod: bool,
    ) -> Result<()> {
        self.owner_xattrs(dir, name, path, h)?;
        if chmod && self.needs_chmod(h.mode, false) {
            rustix::fs::chmodat(
                dir,
                name,
                Mode::from_raw_mode(h.mode & 0o7777),
                AtFlags::empty(),
            )
            .at("chmod", &self.shown(path))?;
        }
        rustix::fs::utimensat(dir, name, &self.times(h), AtFlags::SYMLINK_NOFOLLOW)
            .at("utimensat", &self.shown(path))
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
        let tdir = match self.parent(tparent, false) {
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
            let dir = self.parent(parent, true)?;
            let dev = rustix::fs::makedev(0, 0);
            return self.create(&dir, os(target), &path, |d, n| {
                rustix::fs::mknodat(d, n, FileType::CharacterDevice, Mode::empty(), dev)
            });
        }
        let dir = match self.parent(parent, false) {
            Ok(fd) => fd,
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        self.cache = None;
        whiteout::remove_all(dir.as_fd(), os(target)).at("remove", &self.shown(&path))
    }

    fn opaque(&mut self, dir_path: &[u8]) -> Result<()> {
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            let dir = self.parent(dir_path, true)?;
            let key: &[u8] = if self.opts.rootless_overlay {
                b"user.overlay.opaque"
            } else {
                b"trusted.overlay.opaque"
            };
            return xattr::set(&*dir, OsStr::new(""), os(key), b"y", &self.shown(dir_path))
                .at("setxattr", &self.shown(dir_path));
        }
        self.cache = None;
        // Everything below dir_path that this layer did not write goes. The
        // marker's directory is resolved like any parent (an escaping
        // symlink is unsafe); below it nothing is followed.
        let top = match self.resolve(dir_path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.resolve_error(dir_path, e)),
        };
        let mut todo = vec![(top, dir_path.to_vec())];
        while let Some((fd, d)) = todo.pop() {
            let mut names = Vec::new();
            // An O_PATH fd cannot be read; "." through it gives a readable one.
            let rd = rustix::fs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at("open", &self.shown(&d))?;
            for ent in rustix::fs::Dir::read_from(&rd).at("readdir", &self.shown(&d))? {
                let ent = ent.at("readdir", &self.shown(&d))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            for n in names {
                let mut child = d.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&n);
                if self.added.contains(&child) || self.added_parents.contains(&child) {
                    match rustix::fs::openat(
                        &fd,
                        os(&n),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(sub) => todo.push((sub, child)),
                        Err(Errno::NOTDIR) | Err(Errno::LOOP) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(e).at("open", &self.shown(&child)),
                    }
                } else {
                    whiteout::remove_all(fd.as_fd(), os(&n)).at("remove", &self.shown(&child))?;
                }
            }
        }
        Ok(())
    }

    /// The directory `rel` (a clean path) inside the root, as an fd.
    /// Missing directories are created 0755 when `create` is set.
    fn parent(&mut self, rel: &[u8], create: bool) -> Result<Rc<Parent>> {
        if let Some((p, fd)) = &self.cache {
            if p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = match self.resolve(rel) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => self.mkdir_parents(rel)?,
            Err(e) => return Err(self.resolve_error(rel, e)),
        };
        let st = rustix::fs::fstat(&fd).at("stat", &self.shown(rel))?;
        let fd = Rc::new(Parent {
            fd,
            setgid: st.st_mode & libc::S_ISGID != 0,
        });
        self.cache = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn resolve_error(&self, rel: &[u8], e: Errno) -> Error {
        if e == Errno::LOOP {
            Error::Archive(format!("{}: too many levels of symbolic links", show(rel)))
        } else if e == Errno::XDEV {
            unsafe_archive(format!("{} leads outside the layer", show(rel)))
        } else {
            Error::io(
                "open",
                self.shown(rel),
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        }
    }

    /// Open directory `rel` inside the root. The fast path is
    /// `RESOLVE_BENEATH`; when it refuses (an absolute symlink, or a `..`
    /// that climbs out), the path is checked for a symlink that escapes
    /// (an [`Error::UnsafeArchive`], as `EXDEV`) and then resolved with
    /// `RESOLVE_IN_ROOT`, where absolute targets land inside the root.
    fn resolve(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        let p: &Path = if rel.is_empty() {
            Path::new(".")
        } else {
            Path::new(os(rel))
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        loop {
            match rustix::fs::openat2(self.root.fd(), p, flags, Mode::empty(), beneath) {
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(Errno::XDEV) => break,
                r => return r,
            }
        }
        if self.escapes(rel)? {
            return Err(Errno::XDEV);
        }
        self.root.open_in(p, flags, Mode::empty())
    }

    /// Whether resolving `rel` from the root, following symlinks the way a
    /// naive extractor on the host would, climbs above the root with `..`.
    /// Absolute targets restart at the root (they resolve inside it).
    fn escapes(&self, rel: &[u8]) -> rustix::io::Result<bool> {
        let mut todo: Vec<Vec<u8>> = rel
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    if done.pop().is_none() {
                        return Ok(true);
                    }
                    continue;
                }
                _ => {}
            }
            let at = done.join(&b'/');
            let dir = self.root.open_in(
                Path::new(if at.is_empty() {
                    OsStr::new(".")
                } else {
                    os(&at)
                }),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )?;
            match rustix::fs::readlinkat(&dir, os(&c), Vec::new()) {
                Ok(target) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Errno::LOOP);
                    }
                    let t = target.as_bytes();
                    if t.starts_with(b"/") {
                        done.clear();
                    }
                    todo.extend(t.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                Err(Errno::INVAL) | Err(Errno::NOENT) => done.push(c),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Create the missing directories of `rel` (0755, umask not applied),
    /// walking from the root one component at a time with no-follow opens;
    /// a symlink on the way is resolved by [`Self::resolve`].
    fn mkdir_parents(&mut self, rel: &[u8]) -> Result<OwnedFd> {
        let mut cur = self.resolve(b"").map_err(|e| self.resolve_error(b"", e))?;
        let mut end = 0;
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        for c in comps {
            end += c.len() + usize::from(end > 0);
            let prefix = &rel[..end];
            let name = os(c);
            let open = |d: &OwnedFd| {
                rustix::fs::openat(
                    d,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            cur = match open(&cur) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e).at("mkdir", &self.shown(prefix)),
                    }
                    if self.umask & 0o755 != 0 {
                        rustix::fs::chmodat(
                            &cur,
                            name,
                            Mode::from_raw_mode(0o755),
                            AtFlags::empty(),
                        )
                        .at("chmod", &self.shown(prefix))?;
                    }
                    open(&cur).at("open", &self.shown(prefix))?
                }
                // A symlink (or a non-directory) on the way.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => self
                    .resolve(prefix)
                    .map_err(|e| self.resolve_error(prefix, e))?,
                Err(e) => return Err(e).at("open", &self.shown(prefix)),
            };
        }
        Ok(cur)
    }

    fn finish(&mut self) -> Result<()> {
        self.cache = None;
        if self.plnk {
            whiteout::remove_all(self.root.fd(), os(whiteout::PLNK))
                .at("remove", &self.shown(whiteout::PLNK))?;
        }
        let times = std::mem::take(&mut self.dir_times);
        for (path, t, mode) in times.iter().rev() {
            if path.is_empty() {
                if let Some(m) = mode {
                    let fd = self.root.open_dir(Path::new(""))?;
                    meta::chmod(&fd, OsStr::new(""), *m, self.root.path())?;
                }
                rustix::fs::utimensat(self.root.fd(), "", t, AtFlags::EMPTY_PATH)
                    .at("utimensat", self.root.path())?;
                continue;
            }
            let (parent, name) = split_last(path);
            let dir = match self.resolve(parent) {
                Ok(fd) => fd,
                Err(_) => continue, // removed later in the layer
            };
            match rustix::fs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    if let Some(m) = mode {
                        rustix::fs::chmodat(
                            &dir,
                            os(name),
                            Mode::from_raw_mode(m & 0o7777),
                            AtFlags::empty(),
                        )
                        .at("chmod", &self.shown(path))?;
                    }
                    rustix::fs::utimensat(&dir, os(name), t, AtFlags::SYMLINK_NOFOLLOW)
                        .at("utimensat", &self.shown(path))?;
                }
                _ => {}
            }
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
