//! `copy_dir`: the seed's `copy.go` (Docker's overlayfs driver), done right.
//!
//! A lossless tree copy, the way a layer store needs it: a *full* copy (new
//! inodes, data shared by reflink where the filesystem can) or a *hard-link*
//! copy (every regular file a new link to the source's inode, what the seed's
//! overlay driver does to stack a layer on a `root/` parent).
//!
//! What the seed got wrong and this module does not:
//!
//! - directory times are set after the directory's children are written;
//! - sockets are made as sockets (`mknod(S_IFSOCK)`), not FIFOs;
//! - hard links inside the source stay hard links in a full copy;
//! - every extended attribute the caller may write is copied (not only two);
//! - in hard-link mode no chown, chmod, xattr or utimes call touches a
//!   linked inode: it is the source's, shared with every layer linking it.
//!
//! The walk is fd-relative and parallel; see `walk.rs`. The order in which
//! an inode gets its attributes is explained in `attrs.rs`.

mod attrs;
mod data;
mod links;
mod walk;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Dir, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::fs::meta::is_privileged;
use walk::{Local, Node, Task, Walk};

/// How [`copy_dir`] copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Make each regular file a hard link to the source's inode instead of
    /// copying it. Everything else (directories, symlinks, special files)
    /// is still created anew, with its attributes.
    pub hardlink: bool,
    /// Worker threads; 0 picks one per CPU, at most 4.
    pub threads: usize,
}

impl CopyOptions {
    /// A full copy (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy where regular files are hard links to the source's.
    pub fn hardlink(mut self, hardlink: bool) -> Self {
        self.hardlink = hardlink;
        self
    }

    /// Use `threads` worker threads (0: automatic).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// What [`copy_dir`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Directories created, the destination root not counted.
    pub dirs: u64,
    /// Regular files copied (new inodes).
    pub files: u64,
    /// Hard links made: every file in hard-link mode, and every link after
    /// the first of a multiply-linked inode in a full copy.
    pub links: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes created.
    pub specials: u64,
    /// Bytes of file data copied or reflinked (holes not counted).
    pub bytes: u64,
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, o: Self) {
        self.dirs += o.dirs;
        self.files += o.files;
        self.links += o.links;
        self.symlinks += o.symlinks;
        self.specials += o.specials;
        self.bytes += o.bytes;
    }
}

/// Copy the tree at `src` to `dst`, losslessly.
///
/// `dst` must not exist (its parent must) or be an empty directory; the
/// source root's owner, xattrs, mode and times are given to it. A non-empty
/// `dst` fails with `ENOTEMPTY`, so a copy never merges into a tree.
///
/// Every entry keeps its type (directory, regular file, symlink with its
/// target unchanged, FIFO, socket, character or block device), owner,
/// mode (setuid, setgid and sticky included), every extended attribute
/// (`security.capability`, POSIX ACLs, `trusted.*`, `user.*`,
/// `security.selinux` where the LSM allows), and atime and mtime to the
/// nanosecond; hard-link groups stay groups. A full copy shares data by
/// reflink (`FICLONE`) where the filesystem can, else uses
/// `copy_file_range`, and keeps the holes of sparse files. With
/// [`CopyOptions::hardlink`], each regular file is a new link to the
/// source's inode, which is never written, chowned, chmodded or touched in
/// any other way (source and destination must be on one filesystem).
/// Mount points inside `src` are crossed, as `cp -a` does.
///
/// # Unprivileged callers
///
/// Like `cp -a` run by a user, a caller that may not `chown` to the
/// source's owner keeps the ids it can and does not fail for that; the
/// setuid and setgid bits are then dropped (a user must not mint a setuid
/// file of another owner's binary). `trusted.*` xattrs and
/// `security.capability` are skipped for the same reason, and xattrs a
/// filesystem does not support at all (`EOPNOTSUPP`) are skipped too (see
/// [`crate::fs::xattr::is_skippable`]). Nothing else is dropped: a device
/// node the caller may not create (no `CAP_MKNOD`), a file it may not read,
/// a `user.*` xattr it may not write all fail the copy.
///
/// # Errors
///
/// The first failure stops the copy and is returned as [`Error::Io`] naming
/// the source or destination path it happened on. The file being written
/// then is removed, so every file left in `dst` is complete, but `dst` as a
/// whole is partial: callers stage copies (as the store does in `tmp/`) and
/// remove them on error. A `dst` inside `src` is refused with
/// [`Error::InvalidArgument`].
///
/// ```
/// # fn main() -> lamina::Result<()> {
/// use std::os::unix::fs::MetadataExt;
/// use lamina::{copy_dir, CopyOptions};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let (src, full, linked) = (tmp.path().join("src"), tmp.path().join("full"), tmp.path().join("linked"));
/// std::fs::create_dir(&src).unwrap();
/// std::fs::write(src.join("file"), b"data").unwrap();
///
/// copy_dir(&src, &full, &CopyOptions::new())?;
/// let stats = copy_dir(&src, &linked, &CopyOptions::new().hardlink(true))?;
/// assert_eq!(stats.links, 1);
/// let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
/// assert_ne!(ino(&full.join("file")), ino(&src.join("file")));
/// assert_eq!(ino(&linked.join("file")), ino(&src.join("file")));
/// # Ok(()) }
/// ```
pub fn copy_dir(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<CopyStats> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // Both roots are the caller's own paths, so they may be symlinks; below
    // them nothing is followed.
    let src_fd = walk::open_src(rustix::fs::CWD, &path_cstr(src)?, dir_flags).at("open", src)?;
    let src_st = rustix::fs::fstat(&src_fd).at("stat", src)?;
    let dst_fd = prepare_dst(dst)?;
    let dst_st = rustix::fs::fstat(&dst_fd).at("stat", dst)?;

    let threads = match opts.threads {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4),
        n => n,
    };
    let walk = Walk::new(
        src,
        dst,
        opts.hardlink,
        is_privileged(),
        #[allow(clippy::unnecessary_cast)] // the field types differ by architecture
        (dst_st.st_dev as u64, dst_st.st_ino as u64),
    );
    walk.push(Task::List(Node::root(
        src_fd,
        dst_fd,
        src_st,
        dst_st.st_gid,
    )));

    let mut stats = CopyStats::default();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut local = Local::new();
                    walk.work(&mut local);
                    local.stats
                })
            })
            .collect();
        let mut local = Local::new();
        walk.work(&mut local);
        stats += local.stats;
        for h in helpers {
            // A panicking worker is a bug; carry the panic to the caller.
            stats += h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    match walk.take_error() {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

fn path_cstr(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path contains a NUL byte: {}", p.display())))
}

/// Create `dst`, or check that the directory already there is empty, and
/// open it.
fn prepare_dst(dst: &Path) -> Result<std::os::fd::OwnedFd> {
    let created = match rustix::fs::mkdir(dst, Mode::RWXU) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(e).at("mkdir", dst),
    };
    let fd = rustix::fs::open(
        dst,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", dst)?;
    if !created {
        let mut dir = Dir::read_from(&fd).at("opendir", dst)?;
        while let Some(entry) = dir.read() {
            let entry = entry.at("readdir", dst)?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                return Err(Error::io(
                    "copy_dir",
                    dst,
                    std::io::Error::from_raw_os_error(Errno::NOTEMPTY.raw_os_error()),
                ));
            }
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests;
