//! The parallel tree walk behind [`super::copy_dir`].
//!
//! Work items are directories to open and batches of a directory's
//! non-directory entries, taken last-in first-out by a few workers (depth
//! first, so the fds held open stay proportional to depth, not width). Each
//! directory node counts its unfinished work: its own listing, each batch
//! and each subdirectory. The worker that finishes the last of it gives the
//! copy its owner, xattrs, mode and times, so a directory's times are set
//! after every child is written, then tells the parent.
//!
//! Everything is fd-relative: each source and destination directory is
//! opened from its parent's fd with `O_NOFOLLOW`, and entries are named by
//! (directory fd, one component). Paths are joined only for messages.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use super::attrs::{self, Created, Names, Obj, Policy, XattrBufs};
use super::data::DataCopier;
use super::links::{Added, Links};
use super::CopyStats;
use crate::error::{Error, IoContext, Result};
use crate::fs::handle::{Handle, Inode};
use crate::fs::proc_path;
use crate::fs::race;

/// Non-directory entries handed to a worker at once: big enough that most
/// directories are filled by one worker (two creating in one directory
/// contend for its inode lock), small enough that a wide directory still
/// spreads over every worker.
const BATCH: usize = 256;

/// A directory being copied. Its two fds stay open until it is finished.
pub(super) struct Node {
    parent: Option<Arc<Node>>,
    src: OwnedFd,
    dst: OwnedFd,
    /// Path below both roots, for messages only.
    rel: PathBuf,
    stat: Stat,
    /// Group of the destination directory as created: with setgid or the
    /// `grpid` mount option, new children take it instead of the caller's.
    dst_gid: u32,
    /// Unfinished work in this directory (see the module docs).
    pending: AtomicUsize,
}

impl Node {
    pub(super) fn root(src: OwnedFd, dst: OwnedFd, stat: Stat, dst_gid: u32) -> Arc<Node> {
        Arc::new(Node {
            parent: None,
            src,
            dst,
            rel: PathBuf::new(),
            stat,
            dst_gid,
            pending: AtomicUsize::new(1),
        })
    }
}

/// One work item.
pub(super) enum Task {
    /// List a directory whose fds are open (the root).
    List(Arc<Node>),
    /// Create, open and list the subdirectory `name` of `parent`.
    Subdir(Arc<Node>, CString, Stat),
    /// Copy these non-directory entries of a directory (stat'ed if known).
    Entries(Arc<Node>, Vec<(CString, Option<Stat>)>),
}

struct Queue {
    tasks: Vec<Task>,
    active: usize,
}

/// What every worker shares.
pub(super) struct Walk<'a> {
    src: &'a Path,
    dst: &'a Path,
    hardlink: bool,
    policy: Policy,
    data: DataCopier,
    /// (dev, ino) of the destination root: met inside the source, it means
    /// the destination is inside the source and the walk would never end.
    dst_root: (u64, u64),
    links: Links,
    queue: Mutex<Queue>,
    wake: Condvar,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
}

/// Per-worker state.
pub(super) struct Local {
    bufs: XattrBufs,
    pub(super) stats: CopyStats,
    link_buf: Vec<u8>,
}

impl Local {
    pub(super) fn new() -> Self {
        Local {
            bufs: XattrBufs::new(),
            stats: CopyStats::default(),
            link_buf: Vec::new(),
        }
    }
}

// The field types of `Stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn id(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        src: &'a Path,
        dst: &'a Path,
        hardlink: bool,
        privileged: bool,
        dst_root: (u64, u64),
    ) -> Self {
        Walk {
            src,
            dst,
            hardlink,
            policy: Policy::current(privileged),
            data: DataCopier::new(),
            dst_root,
            links: Links::default(),
            queue: Mutex::new(Queue {
                tasks: Vec::new(),
                active: 0,
            }),
            wake: Condvar::new(),
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// The first error any worker met, if one did.
    pub(super) fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn push(&self, task: Task) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tasks
            .push(task);
        self.wake.notify_one();
    }

    fn fail(&self, err: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
        drop(slot);
        self.abort.store(true, Ordering::Relaxed);
        let _q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Take tasks until there are none left and no worker can make more.
    pub(super) fn work(&self, local: &mut Local) {
        // A panicking worker would leave the others waiting for its task
        // forever: make them stop, and let the scope carry the panic.
        struct Unwind<'w, 'a>(&'w Walk<'a>);
        impl Drop for Unwind<'_, '_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.abort.store(true, Ordering::Relaxed);
                    let _q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
                    self.0.wake.notify_all();
                }
            }
        }
        let _unwind = Unwind(self);
        loop {
            let task = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if self.abort.load(Ordering::Relaxed) {
                        q.tasks.clear();
                        self.wake.notify_all();
                        return;
                    }
                    if let Some(t) = q.tasks.pop() {
                        q.active += 1;
                        break t;
                    }
                    if q.active == 0 {
                        self.wake.notify_all();
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            if let Err(e) = self.run(task, local) {
                self.fail(e);
            }
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.active -= 1;
            if q.active == 0 && q.tasks.is_empty() {
                self.wake.notify_all();
            }
        }
    }

    fn run(&self, task: Task, local: &mut Local) -> Result<()> {
        match task {
            Task::List(node) => self.list(node, local),
            Task::Subdir(parent, name, st) => {
                let node = self.open_subdir(parent, &name, st)?;
                local.stats.dirs += 1;
                self.list(node, local)
            }
            Task::Entries(node, entries) => {
                for (name, st) in &entries {
                    if self.abort.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    self.entry(&node, name, st.as_ref(), local)?;
                }
                self.done(node, local)
            }
        }
    }

    fn src_path(&self, node: &Node, name: Option<&CStr>) -> PathBuf {
        attrs::shown(self.src, &node.rel, name)
    }

    fn dst_path(&self, node: &Node, name: Option<&CStr>) -> PathBuf {
        attrs::shown(self.dst, &node.rel, name)
    }

    fn open_subdir(&self, parent: Arc<Node>, name: &CStr, st: Stat) -> Result<Arc<Node>> {
        if id(&st) == self.dst_root {
            return Err(Error::InvalidArgument(format!(
                "cannot copy {} into itself ({} is inside it)",
                self.src.display(),
                self.dst.display()
            )));
        }
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // The source first: a directory we may not read leaves nothing behind.
        let src = open_src(&parent.src, name, dir_flags)
            .at("open", &self.src_path(&parent, Some(name)))?;
        // 0700 until finished: writable for the children whatever its final
        // mode, and private while it is incomplete.
        rustix::fs::mkdirat(&parent.dst, name, Mode::RWXU)
            .at("mkdir", &self.dst_path(&parent, Some(name)))?;
        race::created(parent.dst.as_fd(), OsStr::from_bytes(name.to_bytes()));
        let dst = rustix::fs::openat(&parent.dst, name, dir_flags, Mode::empty())
            .at("open", &self.dst_path(&parent, Some(name)))?;
        let dst_gid = rustix::fs::fstat(&dst)
            .at("stat", &self.dst_path(&parent, Some(name)))?
            .st_gid;
        let rel = parent.rel.join(OsStr::from_bytes(name.to_bytes()));
        Ok(Arc::new(Node {
            parent: Some(parent),
            src,
            dst,
            rel,
            stat: st,
            dst_gid,
            pending: AtomicUsize::new(1),
        }))
    }

    /// Read `node`'s entries: subdirectories become tasks at once, other
    /// entries go out in batches.
    fn list(&self, node: Arc<Node>, local: &mut Local) -> Result<()> {
        // A dup, not Dir::read_from's reopen of ".": one syscall, no lookup.
        // The shared file offset is only ever used by this listing.
        let dup =
            rustix::io::fcntl_dupfd_cloexec(&node.src, 0).at("dup", &self.src_path(&node, None))?;
        let mut dir = Dir::new(dup).at("opendir", &self.src_path(&node, None))?;
        let mut batch = Vec::new();
        while let Some(entry) = dir.read() {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let entry = entry.at("readdir", &self.src_path(&node, None))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let known = entry.file_type();
            let st = if known == FileType::Directory || known == FileType::Unknown {
                let st = rustix::fs::statat(&node.src, name, AtFlags::SYMLINK_NOFOLLOW)
                    .at("stat", &self.src_path(&node, Some(name)))?;
                if file_type(&st) == FileType::Directory {
                    node.pending.fetch_add(1, Ordering::Relaxed);
                    self.push(Task::Subdir(node.clone(), name.to_owned(), st));
                    continue;
                }
                Some(st)
            } else {
                None
            };
            batch.push((name.to_owned(), st));
            if batch.len() == BATCH {
                node.pending.fetch_add(1, Ordering::Relaxed);
                self.push(Task::Entries(node.clone(), std::mem::take(&mut batch)));
            }
        }
        drop(dir);
        // The last batch is ours to copy: no queue round trip.
        for (name, st) in &batch {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.entry(&node, name, st.as_ref(), local)?;
        }
        self.done(node, local)
    }

    /// One unit of `node`'s work is finished; finish the directory (and
    /// then its parents) when it was the last.
    fn done(&self, node: Arc<Node>, local: &mut Local) -> Result<()> {
        let mut cur = node;
        loop {
            if cur.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return Ok(());
            }
            attrs::apply(
                &self.policy,
                &cur.stat,
                Obj::Fd(cur.src.as_fd()),
                Inode::fd(cur.dst.as_fd()),
                Created::UNKNOWN,
                &mut local.bufs,
                Names {
                    src: &|| self.src_path(&cur, None),
                    dst: &|| self.dst_path(&cur, None),
                },
            )?;
            match cur.parent.clone() {
                Some(parent) => cur = parent,
                None => return Ok(()),
            }
        }
    }

    /// Copy one non-directory entry.
    fn entry(&self, node: &Node, name: &CStr, st: Option<&Stat>, local: &mut Local) -> Result<()> {
        let st = match st {
            Some(st) => *st,
            None => rustix::fs::statat(&node.src, name, AtFlags::SYMLINK_NOFOLLOW)
                .at("stat", &self.src_path(node, Some(name)))?,
        };
        let kind = file_type(&st);
        if kind == FileType::RegularFile && self.hardlink {
            rustix::fs::linkat(&node.src, name, &node.dst, name, AtFlags::empty())
                .at("link", &self.dst_path(node, Some(name)))?;
            local.stats.links += 1;
            return Ok(());
        }
        if st.st_nlink > 1 {
            return self.linked(node, name, &st, kind, local);
        }
        self.create(node, name, &st, kind, local).map(drop)
    }

    /// An inode with several links: see `links.rs`.
    #[allow(clippy::unnecessary_cast)] // st_nlink's type differs by architecture
    fn linked(
        &self,
        node: &Node,
        name: &CStr,
        st: &Stat,
        kind: FileType,
        local: &mut Local,
    ) -> Result<()> {
        let linked = self.links.add(
            id(st),
            st.st_nlink as u64,
            || self.create(node, name, st, kind, local),
            |first| {
                // linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH;
                // the /proc magic link with AT_SYMLINK_FOLLOW is the
                // unprivileged form of the same call (linkat(2)).
                rustix::fs::linkat(
                    CWD,
                    proc_path(first, "".as_ref()),
                    &node.dst,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                )
                .at("link", &self.dst_path(node, Some(name)))
            },
        )?;
        if let Added::Linked = linked {
            local.stats.links += 1;
        }
        Ok(())
    }

    /// Make a new inode for a non-directory entry, with all its attributes.
    /// Returns an fd on the copy where the copy may gain more links.
    fn create(
        &self,
        node: &Node,
        name: &CStr,
        st: &Stat,
        kind: FileType,
        local: &mut Local,
    ) -> Result<Option<OwnedFd>> {
        let dst_shown = || self.dst_path(node, Some(name));
        if kind == FileType::RegularFile {
            let fd = self.copy_file(node, name, st, local)?;
            local.stats.files += 1;
            return Ok(if st.st_nlink > 1 { Some(fd) } else { None });
        }
        match kind {
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(&node.src, name, std::mem::take(&mut local.link_buf))
                        .at("readlink", &self.src_path(node, Some(name)))?;
                let made = rustix::fs::symlinkat(&target, &node.dst, name);
                local.link_buf = target.into_bytes();
                made.at("symlink", &dst_shown())?;
                race::created(node.dst.as_fd(), OsStr::from_bytes(name.to_bytes()));
                local.stats.symlinks += 1;
            }
            FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice => {
                // A socket is made as a socket (the seed made a FIFO).
                // Devices need CAP_MKNOD: without it this fails rather than
                // dropping the node silently.
                rustix::fs::mknodat(
                    &node.dst,
                    name,
                    kind,
                    Mode::RUSR | Mode::WUSR,
                    st.st_rdev as _,
                )
                .at("mknod", &dst_shown())?;
                race::created(node.dst.as_fd(), OsStr::from_bytes(name.to_bytes()));
                local.stats.specials += 1;
            }
            _ => {
                return Err(Error::io(
                    "copy",
                    self.src_path(node, Some(name)),
                    std::io::Error::from_raw_os_error(Errno::INVAL.raw_os_error()),
                ))
            }
        }
        // Through a handle on what was made: a symlink swapped in under the
        // name meanwhile is never followed.
        let applied = Handle::open(
            &node.dst,
            OsStr::from_bytes(name.to_bytes()),
            kind,
            &dst_shown(),
        )
        .and_then(|copy| {
            attrs::apply(
                &self.policy,
                st,
                Obj::At(node.src.as_fd(), name),
                copy.inode(),
                Created::UNKNOWN,
                &mut local.bufs,
                Names {
                    src: &|| self.src_path(node, Some(name)),
                    dst: &dst_shown,
                },
            )?;
            Ok(copy)
        });
        match applied {
            Ok(copy) if st.st_nlink > 1 => Ok(Some(copy.into_fd())),
            Ok(_) => Ok(None),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&node.dst, name, AtFlags::empty());
                Err(e)
            }
        }
    }

    /// The mode to create a regular file's copy with, and what that leaves
    /// already right. The copy is created with its final permission bits
    /// where that is safe: always for root, and for a user only when the
    /// owner may write it (the kernel checks `user.*` xattr writes against
    /// the mode even for the owner). The data is written through the fd
    /// opened at creation, which the mode does not restrict.
    fn create_mode(&self, node: &Node, st: &Stat) -> (u32, Created) {
        let p = &self.policy;
        #[allow(clippy::unnecessary_cast)] // st_mode's type differs by architecture
        let perm = (st.st_mode & 0o777) as u32;
        let create = if p.privileged || perm & 0o200 != 0 {
            perm
        } else {
            0o600
        };
        let special = st.st_mode & 0o7000 != 0;
        let created = Created {
            // New inodes get the caller's uid, and its gid or (setgid,
            // grpid) the directory's: either way egid when they agree.
            owner: st.st_uid == p.euid && st.st_gid == p.egid && node.dst_gid == p.egid,
            mode: !special && p.umask.is_some_and(|m| create & !m == perm),
        };
        (create, created)
    }

    /// A full copy of one regular file. On any failure the new file is
    /// removed, so no half-written file is left under its final name.
    fn copy_file(&self, node: &Node, name: &CStr, st: &Stat, local: &mut Local) -> Result<OwnedFd> {
        // O_NONBLOCK, and checked to be the inode listed: a FIFO swapped in
        // since must neither block the copy nor be read as the file.
        let src = open_src(
            &node.src,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        )
        .at("open", &self.src_path(node, Some(name)))?;
        let now = rustix::fs::fstat(&src).at("stat", &self.src_path(node, Some(name)))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
            || file_type(&now) != FileType::RegularFile
        {
            return Err(Error::errno(
                "open (replaced during the copy)",
                self.src_path(node, Some(name)),
                libc::ESTALE,
            ));
        }
        let (create_mode, created) = self.create_mode(node, st);
        let dst = rustix::fs::openat(
            &node.dst,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(create_mode as _),
        )
        .at("open", &self.dst_path(node, Some(name)))?;
        race::created(node.dst.as_fd(), OsStr::from_bytes(name.to_bytes()));
        crate::crashpoint::hit();
        let written = (|| {
            let moved = self
                .data
                .copy(src.as_fd(), dst.as_fd(), st)
                .at("copy", &self.dst_path(node, Some(name)))?;
            local.stats.bytes += moved;
            attrs::apply(
                &self.policy,
                st,
                Obj::Fd(src.as_fd()),
                Inode::fd(dst.as_fd()),
                created,
                &mut local.bufs,
                Names {
                    src: &|| self.src_path(node, Some(name)),
                    dst: &|| self.dst_path(node, Some(name)),
                },
            )
        })();
        if let Err(e) = written {
            drop(dst);
            let _ = rustix::fs::unlinkat(&node.dst, name, AtFlags::empty());
            return Err(e);
        }
        Ok(dst)
    }
}

/// Open an entry of the source for reading without moving its atime, so
/// the source is left exactly as it was (relatime would otherwise stamp
/// every file read and every directory listed). `O_NOATIME` is allowed only
/// to the owner or CAP_FOWNER; elsewhere the open goes ahead without it.
pub(super) fn open_src(dir: impl AsFd, name: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat(&dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(&dir, name, flags, Mode::empty()),
        r => r,
    }
}
