//! Removing a tree: never across a mount point, never through a symlink,
//! with open file descriptors bounded whatever the depth.
//!
//! `rm -rf` style removal (`std::fs::remove_dir_all`, the seed's
//! `os.RemoveAll`) descends into whatever is mounted below the tree and
//! empties it before the final `rmdir` fails with `EBUSY`: a volume
//! bind-mounted into a container's tree is wiped by deleting the container.
//! Here every directory's mount id (`statx` `STATX_MNT_ID`, or its device
//! where the kernel lacks it) is compared with the tree's before anything in
//! it is touched, and a mount point is refused with `EBUSY` naming it —
//! nothing below it, and nothing after it, is removed.
//!
//! The walk is iterative. Only the last [`KEEP_FDS`] directories on the way
//! down stay open; a parent whose fd was closed is opened again through
//! `..` of its child and checked to be the same inode (device and inode
//! number), so a tree 15,000 levels deep needs no more fds than a shallow
//! one and a directory moved meanwhile is an error, not a walk elsewhere.
//!
//! Files that cannot be unlinked stop the removal with the error naming the
//! file (an immutable file is `EPERM`). A directory its owner left without
//! write or search permission (an overlay `work/work`, a read-only layer's
//! 0500 directory) is opened up first.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use super::handle::Inode;
use crate::error::{Error, IoContext, Result};

/// Directory fds kept open on the way down.
pub const KEEP_FDS: usize = 64;

/// Which filesystem mount a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountOf {
    /// `stx_mnt_id`, or 0 where the kernel does not report it.
    id: u64,
    /// The device; bind mounts of one filesystem share it, so it is only
    /// the fallback.
    dev: u64,
}

/// The mount and device of what `fd` refers to.
pub fn mount_of(fd: BorrowedFd<'_>) -> rustix::io::Result<MountOf> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    let id = if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        st.stx_mnt_id
    } else {
        0
    };
    let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
    Ok(MountOf { id, dev })
}

struct Level {
    name: OsString,
    /// Device and inode, to check a directory opened again through `..`.
    id: (u64, u64),
    fd: Option<OwnedFd>,
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn ident(fd: BorrowedFd<'_>) -> rustix::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Give the owner write and search permission on `dir/name` (a directory),
/// through a handle on it, so its entries can be removed.
fn open_up(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Inode::path_fd(fd.as_fd()).chmod(0o700)
}

/// Remove `dir/name` and everything below it. A missing name is not an
/// error. See the module docs for what is refused.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        // EPERM: a directory on some filesystems, or an immutable file.
        Err(Errno::PERM) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            _ => return Err(Error::errno("unlink", shown, libc::EPERM)),
        },
        Err(e) => return Err(e).at("unlink", shown),
    }
    let mount = mount_of(dir).at("statx", shown)?;
    let top = match open_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ACCESS) => {
            open_up(dir, name).at("chmod", shown)?;
            open_dir(dir, name).at("open", shown)?
        }
        Err(e) => return Err(e).at("open", shown),
    };
    Walk {
        shown,
        mount,
        stack: Vec::new(),
    }
    .run(dir, name, top)
}

/// Remove the tree at `path` (see [`remove_all`]); its parent is trusted.
pub fn remove_path(path: &Path) -> Result<()> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "cannot remove {}",
                path.display()
            )))
        }
    };
    let dir = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).at("open", parent),
    };
    remove_all(dir.as_fd(), name, path)
}

struct Walk<'a> {
    shown: &'a Path,
    mount: MountOf,
    stack: Vec<Level>,
}

impl Walk<'_> {
    /// The path of the directory at the top of the stack, for messages.
    fn path(&self) -> PathBuf {
        let mut p = self.shown.to_path_buf();
        for l in self.stack.iter().skip(1) {
            p.push(&l.name);
        }
        p
    }

    fn check_mount(&self, fd: BorrowedFd<'_>, at: &Path) -> Result<()> {
        let m = mount_of(fd).at("statx", at)?;
        let crosses = if m.id != 0 && self.mount.id != 0 {
            m.id != self.mount.id
        } else {
            m.dev != self.mount.dev
        };
        if crosses {
            return Err(Error::io(
                "refusing to remove a mount point",
                at,
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        Ok(())
    }

    fn run(mut self, dir: BorrowedFd<'_>, name: &OsStr, top: OwnedFd) -> Result<()> {
        self.check_mount(top.as_fd(), self.shown)?;
        self.stack.push(Level {
            name: name.to_os_string(),
            id: ident(top.as_fd()).at("stat", self.shown)?,
            fd: Some(top),
        });
        while let Some(cur) = self.stack.last() {
            let fd = cur.fd.as_ref().expect("the top level is open").as_fd();
            match self.empty_or_subdir(fd)? {
                Some(sub) => self.descend(sub)?,
                None => self.ascend(dir)?,
            }
        }
        Ok(())
    }

    /// Unlink every non-directory in `fd`; the first subdirectory found
    /// (by name), or `None` when the directory is empty.
    fn empty_or_subdir(&self, fd: BorrowedFd<'_>) -> Result<Option<OsString>> {
        let here = self.path();
        let mut opened_up = false;
        loop {
            let mut retry = false;
            for ent in rustix::fs::Dir::read_from(fd).at("opendir", &here)? {
                let ent = ent.at("readdir", &here)?;
                let n = ent.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                let n = OsStr::from_bytes(n);
                if ent.file_type() == FileType::Directory {
                    return Ok(Some(n.to_os_string()));
                }
                match rustix::fs::unlinkat(fd, n, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) => return Ok(Some(n.to_os_string())),
                    Err(Errno::ACCESS) if !opened_up => {
                        // Our own directory without write permission.
                        Inode::fd(fd).chmod(0o700).at("chmod", &here)?;
                        opened_up = true;
                        retry = true;
                        break;
                    }
                    Err(Errno::PERM) => {
                        match rustix::fs::statat(fd, n, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st)
                                if FileType::from_raw_mode(st.st_mode) == FileType::Directory =>
                            {
                                return Ok(Some(n.to_os_string()))
                            }
                            // An immutable or append-only file.
                            _ => return Err(Error::errno("unlink", here.join(n), libc::EPERM)),
                        }
                    }
                    Err(e) => return Err(e).at("unlink", &here.join(n)),
                }
            }
            if !retry {
                return Ok(None);
            }
        }
    }

    fn descend(&mut self, name: OsString) -> Result<()> {
        let at = self.path().join(&name);
        let parent = self.stack.last().and_then(|l| l.fd.as_ref()).expect("open");
        let fd = match open_dir(parent.as_fd(), &name) {
            Ok(fd) => fd,
            Err(Errno::ACCESS) => {
                open_up(parent.as_fd(), &name).at("chmod", &at)?;
                open_dir(parent.as_fd(), &name).at("open", &at)?
            }
            Err(e) => return Err(e).at("open", &at),
        };
        self.check_mount(fd.as_fd(), &at)?;
        let id = ident(fd.as_fd()).at("stat", &at)?;
        self.stack.push(Level {
            name,
            id,
            fd: Some(fd),
        });
        if self.stack.len() > KEEP_FDS {
            let i = self.stack.len() - 1 - KEEP_FDS;
            self.stack[i].fd = None;
        }
        Ok(())
    }

    /// The top directory is empty: remove it from its parent (opened again
    /// through `..` if its fd was closed) and make the parent the top.
    fn ascend(&mut self, dir: BorrowedFd<'_>) -> Result<()> {
        let at = self.path();
        let done = self.stack.pop().expect("non-empty");
        let Some(parent) = self.stack.last_mut() else {
            return match rustix::fs::unlinkat(dir, &done.name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e).at("rmdir", &at),
            };
        };
        if parent.fd.is_none() {
            let child = done.fd.as_ref().expect("the top level is open");
            let up = open_dir(child.as_fd(), OsStr::new("..")).at("open", &at)?;
            if ident(up.as_fd()).at("stat", &at)? != parent.id {
                return Err(Error::io(
                    "removal: the tree moved meanwhile",
                    &at,
                    std::io::Error::from_raw_os_error(libc::ESTALE),
                ));
            }
            parent.fd = Some(up);
        }
        let pfd = parent.fd.as_ref().expect("just opened");
        crate::crashpoint::hit();
        match rustix::fs::unlinkat(pfd, &done.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).at("rmdir", &at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn removes_deep_trees_with_few_fds() {
        if !crate::testutil::alone("fs::remove::tests::removes_deep_trees_with_few_fds") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("x");
        // Deeper than PATH_MAX allows in one path: build it fd by fd.
        std::fs::create_dir(&top).unwrap();
        let mut fd =
            rustix::fs::open(&top, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for i in 0..3000 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            if i % 100 == 0 {
                let _file = std::fs::File::from(
                    rustix::fs::openat(
                        &fd,
                        "f",
                        OFlags::CREATE | OFlags::WRONLY,
                        Mode::from_raw_mode(0o644),
                    )
                    .unwrap(),
                );
            }
            fd = rustix::fs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .unwrap();
        }
        drop(fd);
        let before = fds();
        let peak = std::thread::scope(|s| {
            let h = s.spawn(|| remove_path(&top));
            let mut peak = 0;
            while !h.is_finished() {
                peak = peak.max(fds());
            }
            h.join().unwrap().unwrap();
            peak
        });
        assert!(!top.exists());
        assert!(
            peak <= before + KEEP_FDS + 8,
            "{peak} fds open (started at {before})"
        );
        remove_path(&top).unwrap();
    }

    #[test]
    fn symlinks_are_removed_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let keep = t.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("f"), "k").unwrap();
        let x = t.path().join("x");
        std::fs::create_dir_all(x.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&keep, x.join("a/b/l")).unwrap();
        std::os::unix::fs::symlink(&keep, x.join("l")).unwrap();
        remove_path(&x).unwrap();
        assert!(!x.exists());
        assert_eq!(std::fs::read_to_string(keep.join("f")).unwrap(), "k");
    }

    #[test]
    fn read_only_directories_of_the_owner_go() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let x = t.path().join("x");
        std::fs::create_dir_all(x.join("ro/sub")).unwrap();
        std::fs::write(x.join("ro/sub/f"), "").unwrap();
        for (p, m) in [("ro/sub", 0o500), ("ro", 0o000)] {
            std::fs::set_permissions(x.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        remove_path(&x).unwrap();
        assert!(!x.exists());
    }
}
