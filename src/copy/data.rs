//! The data of a regular file: reflink where the filesystem can, else
//! `copy_file_range`, else `read`/`write`; holes in sparse files stay holes.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{SeekFrom, Stat};
use rustix::io::Errno;

/// What the copier learned about the filesystems it copies between.
pub(super) struct DataCopier {
    /// Cleared the first time `FICLONE` says the filesystem cannot share
    /// extents (ext4, tmpfs) or the two files are on different mounts, so
    /// a 100,000-file copy pays for that answer once, not 100,000 times.
    clone_ok: AtomicBool,
}

/// One `copy_file_range` call moves at most this much, so a huge file is
/// never one uninterruptible syscall.
const CHUNK: u64 = 1 << 30;

impl DataCopier {
    pub(super) fn new() -> Self {
        DataCopier {
            clone_ok: AtomicBool::new(true),
        }
    }

    /// Copy the data of `src` (whose stat is `st`) into the new, empty `dst`.
    /// Returns the bytes of data moved (a clone counts its whole size).
    pub(super) fn copy(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        st: &Stat,
    ) -> rustix::io::Result<u64> {
        let size = st.st_size as u64;
        if size == 0 {
            return Ok(0);
        }
        if self.clone_ok.load(Ordering::Relaxed) {
            match rustix::fs::ioctl_ficlone(dst, src) {
                Ok(()) => return Ok(size),
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::NOTTY | Errno::NOSYS) => {
                    self.clone_ok.store(false, Ordering::Relaxed);
                }
                // EINVAL is per file on some filesystems (e.g. alignment);
                // fall back for this file only.
                Err(Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
        // Fewer allocated bytes than the size: there are holes to keep.
        // Otherwise SEEK_DATA/SEEK_HOLE would cost two syscalls for nothing.
        if (st.st_blocks as u64).saturating_mul(512) < size {
            return copy_sparse(src, dst, size);
        }
        copy_range(src, dst, 0, size)?;
        Ok(size)
    }
}

/// Copy only the data extents of `src`, then set the size, so holes stay
/// holes (the trailing one included).
fn copy_sparse(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> rustix::io::Result<u64> {
    let mut off = 0;
    let mut moved = 0;
    while off < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => d,
            // No data after `off`: the rest is one hole.
            Err(Errno::NXIO) => break,
            // No SEEK_DATA here: copy everything.
            Err(Errno::INVAL) => {
                copy_range(src, dst, off, size)?;
                moved += size - off;
                break;
            }
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(size);
        copy_range(src, dst, data, hole)?;
        moved += hole - data;
        off = hole;
    }
    rustix::fs::ftruncate(dst, size)?;
    Ok(moved)
}

/// Copy bytes `[start, end)` of `src` to the same offsets of `dst`.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
) -> rustix::io::Result<()> {
    let mut off = start;
    while off < end {
        let (mut off_in, mut off_out) = (off, off);
        let len = (end - off).min(CHUNK) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len) {
            // The source shrank under us: what is there is copied.
            Ok(0) => return Ok(()),
            Ok(n) => off += n as u64,
            Err(Errno::INTR) => {}
            // Kernels before 5.3 refuse cross-filesystem copies, and some
            // filesystems (procfs-like, FUSE) refuse it altogether.
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => {
                return read_write(src, dst, off, end);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
) -> rustix::io::Result<()> {
    let mut buf = vec![0u8; (end - start).min(256 * 1024) as usize];
    let mut off = start;
    while off < end {
        let want = ((end - off) as usize).min(buf.len());
        let n = match rustix::io::pread(src, &mut buf[..want], off) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        let mut done = 0;
        while done < n {
            match rustix::io::pwrite(dst, &buf[done..n], off + done as u64) {
                Ok(w) => done += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        off += n as u64;
    }
    Ok(())
}
