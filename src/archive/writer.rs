//! The writer thread of an apply: it finishes small regular files (payload,
//! owner, xattrs, mode, times, close) through fds the applying thread
//! created, so that the kernel's per-file cost runs on both cores. It never
//! resolves a path, so it cannot be steered anywhere by the archive.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use rustix::fs::{Mode, Timestamps};

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
            if let Err(e) = rustix::fs::fsetxattr(fd, os(k), v, rustix::fs::XattrFlags::empty()) {
                if self.rootless && recorded::is_recordable(os(k), e) {
                    let name = recorded::recorded_name(os(k));
                    rustix::fs::fsetxattr(fd, &name, v, rustix::fs::XattrFlags::empty())
                        .at("setxattr", &self.shown())?;
                } else if !xattr::is_skippable(os(k), e, self.privileged) {
                    return Err(e).at("setxattr", &self.shown());
                }
            }
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

/// A small file for the writer thread: its open fd, payload and metadata.
pub struct Job {
    pub file: std::fs::File,
    pub data: Vec<u8>,
    pub meta: FileMeta,
}

/// The writer thread: payload, metadata and close of small files, so that
/// the kernel's per-file cost runs on both cores. It only ever touches fds
/// the applying thread created, never a path.
pub fn writer(jobs: Receiver<Vec<Job>>) -> Result<()> {
    for mut job in jobs.into_iter().flatten() {
        job.file
            .write_all(&job.data)
            .map_err(|e| Error::io("write", job.meta.shown(), e))?;
        job.meta.apply(job.file)?;
    }
    Ok(())
}
