//! The writer thread of an apply: it finishes small regular files (payload,
//! owner, xattrs, mode, times, close), so that the kernel's per-file cost
//! runs on both cores. It never resolves a path, so it cannot be steered
//! anywhere by the archive: it gets either the new file's fd, or, for a
//! file whose name cannot exist yet (see `Applier::file`), the parent
//! directory's fd and the last component, which it creates with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`. The create is most of a small file's
//! kernel time, so handing it over balances the two threads.
//!
//! A batch the writer has no room for is run by the applying thread itself
//! ([`run_batch`]), so neither thread waits on the other while both have
//! work.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{Mode, OFlags, Timestamps};

use super::resolve::Parent;
use crate::fs::race;

use crate::error::{Error, IoContext, Result};
use crate::fs::{recorded, xattr};

fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(b)
}

/// Files up to this size are finished by the writer thread. Larger ones are
/// written from the stream buffer directly: for them the copy into a job
/// costs more than the syscalls it moves.
pub const JOB_MAX: u64 = 64 << 10;
/// Batches queued for the writer thread (bounds memory at about
/// `JOBS * (BATCH_BYTES + JOB_MAX)`, and open fds at `JOBS * BATCH_JOBS`).
pub const JOBS: usize = 4;
/// Jobs go to the writer thread in batches: one job per send cost a futex
/// wake-up and a context switch per small file (as many futex calls as
/// files in `strace -c`), CPU that a 2-core machine needs for the rest.
pub const BATCH_JOBS: usize = 32;
/// A batch is sent early once its payloads reach this many bytes.
pub const BATCH_BYTES: usize = 256 << 10;
pub const WRITER_GONE: &str = "the file writer thread stopped";

/// What is left to do to a created regular file once its payload is in:
/// chown, xattrs, chmod, times, in that order (chown clears setuid).
pub struct FileMeta {
    pub chown: Option<(u32, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub chmod: Option<u32>,
    /// Rootless: the override to record (owner and mode the file could
    /// not be given), and whether xattrs that cannot be set are recorded.
    pub record: Option<String>,
    pub rootless: bool,
    /// Created in a directory with a default ACL: remove the access ACL it
    /// inherited unless the entry itself carries one.
    pub drop_inherited_acl: bool,
    pub times: Timestamps,
    pub privileged: bool,
    pub root: Arc<PathBuf>,
    pub path: Vec<u8>,
}

impl FileMeta {
    pub fn shown(&self) -> PathBuf {
        self.root.join(os(&self.path))
    }

    pub fn apply(self, file: std::fs::File) -> Result<()> {
        let fd = file.as_fd();
        if let Some((uid, gid)) = self.chown {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .at("chown", &self.shown())?;
        }
        if self.drop_inherited_acl && !self.xattrs.iter().any(|(k, _)| k == xattr::ACL_ACCESS) {
            match rustix::fs::fremovexattr(fd, os(xattr::ACL_ACCESS)) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(e).at("removexattr", &self.shown()),
            }
        }
        for (k, v) in &self.xattrs {
            recorded::set_xattr(os(k), self.rootless, self.privileged, |name| {
                rustix::fs::fsetxattr(fd, name, v, rustix::fs::XattrFlags::empty())
            })
            .at("setxattr", &self.shown())?;
        }
        if let Some(o) = &self.record {
            rustix::fs::fsetxattr(
                fd,
                recorded::OVERRIDE_STAT,
                o.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .at("setxattr", &self.shown())?;
        }
        if let Some(mode) = self.chmod {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).at("chmod", &self.shown())?;
        }
        rustix::fs::futimens(fd, &self.times).at("utimensat", &self.shown())
    }
}

/// The file a job writes.
pub enum Target {
    /// Already created by the applying thread.
    Open(std::fs::File),
    /// To create as `name` in `dir`, with `mode`: a name no entry of the
    /// layer made before, in a directory the layer made (so nothing else
    /// can stand there).
    Create {
        dir: Arc<Parent>,
        name: Vec<u8>,
        mode: u32,
    },
}

/// A small file for the writer thread: where it goes, its payload's length
/// in the batch's buffer, and metadata.
pub struct Job {
    pub target: Target,
    pub len: usize,
    pub meta: FileMeta,
}

/// Small files handed over together, their payloads back to back in one
/// buffer. Buffers go back to the applying thread for reuse: a fresh
/// allocation per file cost a page fault per few files once the allocator
/// had trimmed its heap.
#[derive(Default)]
pub struct Batch {
    pub jobs: Vec<Job>,
    pub data: Vec<u8>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// A batch ready to fill, reusing `spare`'s allocations.
    pub fn reuse(mut spare: Batch) -> Batch {
        spare.jobs.clear();
        spare.data.clear();
        spare
    }
}

impl Job {
    fn run(self, data: &[u8]) -> Result<()> {
        let mut file = match self.target {
            Target::Open(f) => f,
            Target::Create { dir, name, mode } => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&dir.fd, os(&name), flags, Mode::from_raw_mode(mode))
                    .at("create", &self.meta.shown())?;
                race::created(dir.fd.as_fd(), os(&name));
                std::fs::File::from(fd)
            }
        };
        file.write_all(data)
            .map_err(|e| Error::io("write", self.meta.shown(), e))?;
        self.meta.apply(file)
    }
}

/// Run a batch of jobs on the calling thread; its emptied buffers are
/// returned for reuse.
pub fn run_batch(mut batch: Batch) -> Result<Batch> {
    let mut at = 0;
    for job in batch.jobs.drain(..) {
        let end = at + job.len;
        job.run(&batch.data[at..end])?;
        at = end;
    }
    Ok(Batch::reuse(batch))
}

/// How far the writer thread got: batches finished, and whether it
/// stopped, so the applying thread can wait until every file it handed
/// over exists.
#[derive(Default)]
pub struct Done {
    batches: AtomicU64,
    gone: Mutex<bool>,
    changed: Condvar,
}

impl Done {
    /// Batches the writer finished.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Acquire)
    }

    /// Wait until `sent` batches are finished; false if the writer
    /// stopped first.
    pub fn wait_for(&self, sent: u64) -> bool {
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        while self.batches() < sent {
            if *gone {
                return false;
            }
            gone = self.changed.wait(gone).unwrap_or_else(|p| p.into_inner());
        }
        true
    }

    fn finished_one(&self) {
        let _held = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        self.batches.fetch_add(1, Ordering::Release);
        self.changed.notify_all();
    }

    fn stopped(&self) {
        *self.gone.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
    }
}

/// The writer thread: creates (where handed over), payload, metadata and
/// close of small files. It only ever touches fds the applying thread
/// opened, and names without a `/` below them.
pub fn writer(jobs: Receiver<Batch>, spares: SyncSender<Batch>, done: &Done) -> Result<()> {
    let result = (|| {
        for batch in jobs {
            let spare = run_batch(batch)?;
            done.finished_one();
            let _ = spares.try_send(spare);
        }
        Ok(())
    })();
    done.stopped();
    result
}
