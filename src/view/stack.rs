//! A stack of directories read the way overlayfs reads its layers, in
//! userspace: no mount, no privilege, nothing written.
//!
//! The directories are the ones [`crate::driver::Driver::stack`] gives,
//! uppermost first, each in overlay form (a full tree is a stack of one),
//! and the rules are the kernel's (`fs/overlayfs/namei.c` `ovl_lookup`,
//! `readdir.c` `ovl_dir_read_merged`):
//!
//! - a name is looked up from the top directory down; the first directory
//!   that has it decides what it is, and a 0/0 character device (a
//!   whiteout) means it is not there;
//! - a directory found that way is merged with the directories of the same
//!   name below it, down to the first that is opaque
//!   (`trusted.overlay.opaque=y`, or the `userxattr` form
//!   `user.overlay.opaque=y`), a non-directory or a whiteout — as
//!   `ovl_lookup_layer` stops there;
//! - a directory's entries are the union of its merged directories' names,
//!   the upper one winning, whiteouts hiding the names below them;
//! - the root of the stack merges every directory (the kernel does not look
//!   at an opaque mark on the root).
//!
//! Every lookup is relative to an open directory fd and never follows a
//! symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`); symlinks are resolved by
//! [`Stack::resolve`] itself, inside the merged view, the way `openat2`'s
//! `RESOLVE_IN_ROOT` resolves them inside one tree ([`crate::fs::root`]):
//! absolute targets start again at the view's root, `..` stops at it. A
//! directory or file on another mount than its stack directory (a volume
//! bind-mounted into a container's tree) is not the layer's: a directory
//! there reads as empty, a file there is refused, so reading a layer never
//! reads a host file.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::archive::changes::{is_dir, list_dir, lstat_at, open_dir};
use crate::archive::resolve::push_components;
use crate::error::{Error, IoContext, Result};
use crate::fs::recorded::{self, Ids};
use crate::fs::remove::{mount_of, MountOf};
use crate::fs::xattr;

/// Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS.
pub const MAX_HOPS: usize = 40;

/// One directory of the stack.
struct Level {
    path: PathBuf,
    fd: OwnedFd,
    mount: MountOf,
    /// How its inodes read: as they are, or as a rootless apply recorded
    /// them ([`crate::fs::recorded`]).
    ids: Ids,
}

/// An opened stack of directories; see the module docs.
pub(crate) struct Stack {
    /// Top first.
    levels: Vec<Level>,
}

/// One directory of the merged view: the stack's directories of that name
/// that make it, top first (`(level, fd)`).
pub(crate) struct MergedDir {
    parts: Vec<(usize, OwnedFd)>,
}

impl MergedDir {
    /// The fds the directory holds.
    pub(crate) fn fds(&self) -> usize {
        self.parts.len()
    }
}

/// A name of a merged directory, as the view shows it: where it was found
/// (an index into the directory's parts) and its metadata there.
#[derive(Clone, Copy)]
pub(crate) struct Found {
    part: usize,
    pub(crate) stat: Stat,
}

impl Found {
    pub(crate) fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }

    pub(crate) fn is_symlink(&self) -> bool {
        FileType::from_raw_mode(self.stat.st_mode) == FileType::Symlink
    }
}

/// A path resolved in the merged view.
pub(crate) struct Located {
    /// Its own path in the view (symlinks on the way resolved): `/a/b`.
    pub(crate) path: Vec<u8>,
    /// What it is.
    pub(crate) found: Found,
    /// The directory holding it and its name there; `None` for the root.
    pub(crate) parent: Option<(MergedDir, OsString)>,
    /// The merged directory itself, when the walk ended on one already
    /// open (the root, or a path ending in `..`).
    pub(crate) own: Option<MergedDir>,
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// `/a/b` + `c` = `/a/b/c`.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

pub(crate) fn shown(path: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(path))
}

fn open_self(fd: &OwnedFd) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

impl Stack {
    /// Open the stack `dirs` (uppermost first, as
    /// [`crate::driver::Driver::stack`] gives them).
    pub(crate) fn open(dirs: &[PathBuf]) -> Result<Stack> {
        if dirs.is_empty() {
            return Err(Error::InvalidArgument(
                "a merged view needs at least one directory".into(),
            ));
        }
        let mut levels = Vec::with_capacity(dirs.len());
        for d in dirs {
            let fd = crate::archive::changes::open_root(d)?;
            let mount = mount_of(fd.as_fd()).at("statx", d)?;
            let ids = Ids::of_root(fd.as_fd(), d)?;
            levels.push(Level {
                path: d.clone(),
                fd,
                mount,
                ids,
            });
        }
        Ok(Stack { levels })
    }

    /// The root of the view: every directory of the stack.
    pub(crate) fn root(&self) -> Result<MergedDir> {
        let mut parts = Vec::new();
        for (i, l) in self.levels.iter().enumerate() {
            parts.push((i, open_self(&l.fd).at("open", &l.path)?));
        }
        Ok(MergedDir { parts })
    }

    /// The root's own metadata: the top directory's.
    pub(crate) fn root_found(&self) -> Result<Found> {
        let top = &self.levels[0];
        let stat = rustix::fs::fstat(&top.fd).at("stat", &top.path)?;
        Ok(Found { part: 0, stat })
    }

    /// The metadata the view shows for `name` of `dir` (the root for
    /// `None`), found as `found`: the inode's own, or in a tree a rootless
    /// apply wrote, what it recorded (owner, full mode, a device stored as
    /// an empty file). Navigation uses the inode's own (`found.stat`).
    pub(crate) fn shown_stat(
        &self,
        dir: Option<(&MergedDir, &OsStr)>,
        found: &Found,
        at: &[u8],
    ) -> Result<Stat> {
        let (level, fd, name) = match dir {
            Some((d, name)) => {
                let (level, fd) = &d.parts[found.part];
                (*level, fd, name)
            }
            None => (0, &self.levels[0].fd, OsStr::new("")),
        };
        let ids = &self.levels[level].ids;
        if *ids == Ids::default() {
            return Ok(found.stat);
        }
        let key = OsStr::new(recorded::OVERRIDE_STAT);
        let record = xattr::get(fd, name, key, &shown(at))?
            .map(|v| vec![(key.as_bytes().to_vec(), v)])
            .unwrap_or_default();
        Ok(ids.stat(&found.stat, &record))
    }

    /// What `name` is in `dir`; `None` when no directory has it or the
    /// first that does whites it out. `at` names `dir/name` in messages.
    pub(crate) fn lookup(&self, dir: &MergedDir, name: &OsStr, at: &[u8]) -> Result<Option<Found>> {
        for (part, (_, fd)) in dir.parts.iter().enumerate() {
            match lstat_at(fd, name) {
                Ok(stat) => {
                    if is_whiteout(&stat) {
                        return Ok(None);
                    }
                    return Ok(Some(Found { part, stat }));
                }
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e).at("lstat", &shown(at)),
            }
        }
        Ok(None)
    }

    /// Whether the directory `fd` is opaque;
    /// renamed directories (`redirect`) cannot be read without the lower
    /// tree they point into, and are refused as in [`crate::archive::upper`].
    fn opaque(&self, fd: &OwnedFd, at: &[u8]) -> Result<bool> {
        let e = OsStr::new("");
        let mut opaque = false;
        for key in xattr::list(fd, e, &shown(at))? {
            let k = key.as_bytes();
            let Some(rest) = crate::archive::whiteout::overlay_name(k) else {
                continue;
            };
            match rest {
                b"redirect" => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: renamed directory (overlay redirect_dir) in an overlay-form layer",
                        shown(at).display()
                    )))
                }
                b"opaque" => {
                    opaque |= xattr::get(fd, e, &key, &shown(at))?.as_deref() == Some(b"y");
                }
                _ => {}
            }
        }
        Ok(opaque)
    }

    /// Open one level's directory `name` in `parent`; `None` when it is
    /// on another mount than the level (read as empty).
    fn open_part(
        &self,
        level: usize,
        parent: &OwnedFd,
        name: &OsStr,
        at: &[u8],
    ) -> Result<Option<OwnedFd>> {
        let fd = open_dir(parent, name).at("open", &shown(at))?;
        let m = mount_of(fd.as_fd()).at("statx", &shown(at))?;
        Ok((m == self.levels[level].mount).then_some(fd))
    }

    /// The merged directory `name` of `dir`, found as `found` (a directory).
    pub(crate) fn open_dir(
        &self,
        dir: &MergedDir,
        name: &OsStr,
        found: &Found,
        at: &[u8],
    ) -> Result<MergedDir> {
        let mut parts = Vec::new();
        let (level, pfd) = &dir.parts[found.part];
        let Some(fd) = self.open_part(*level, pfd, name, at)? else {
            return Ok(MergedDir { parts });
        };
        let stop = self.opaque(&fd, at)?;
        parts.push((*level, fd));
        if stop {
            return Ok(MergedDir { parts });
        }
        for (level, pfd) in &dir.parts[found.part + 1..] {
            match lstat_at(pfd, name) {
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e).at("lstat", &shown(at)),
                Ok(st) if !is_dir(&st) => break,
                Ok(_) => {}
            }
            let Some(fd) = self.open_part(*level, pfd, name, at)? else {
                break;
            };
            let stop = self.opaque(&fd, at)?;
            parts.push((*level, fd));
            if stop {
                break;
            }
        }
        Ok(MergedDir { parts })
    }

    /// The entries of `dir`, sorted by name bytes. `at` is its path.
    pub(crate) fn list(&self, dir: &MergedDir, at: &[u8]) -> Result<Vec<(OsString, Found)>> {
        let mut seen: BTreeMap<OsString, Option<Found>> = BTreeMap::new();
        for (part, (_, fd)) in dir.parts.iter().enumerate() {
            for name in list_dir(fd, &shown(at))? {
                if seen.contains_key(&name) {
                    continue;
                }
                let stat = match lstat_at(fd, &name) {
                    Ok(s) => s,
                    // Removed since it was listed.
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e).at("lstat", &shown(&join(at, name.as_bytes()))),
                };
                let v = (!is_whiteout(&stat)).then_some(Found { part, stat });
                seen.insert(name, v);
            }
        }
        Ok(seen
            .into_iter()
            .filter_map(|(n, f)| f.map(|f| (n, f)))
            .collect())
    }

    /// The xattrs of `name` of `dir` that describe the file itself, as
    /// the view shows them, sorted by name: overlay bookkeeping left out
    /// and, in a tree a rootless apply wrote, names as recorded (its
    /// override record is the shown stat, not an xattr).
    pub(crate) fn xattrs(
        &self,
        dir: &MergedDir,
        name: &OsStr,
        found: &Found,
        at: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (level, fd) = &dir.parts[found.part];
        let ids = &self.levels[*level].ids;
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = xattr::get_all(fd, name, &shown(at))?
            .into_iter()
            .filter(|(k, _)| !crate::archive::whiteout::is_overlay_xattr(k.as_bytes()))
            .filter_map(|(k, v)| ids.exported_name(k.as_bytes()).map(|n| (n.to_vec(), v)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The target of the symlink `name` of `dir`.
    pub(crate) fn readlink(
        &self,
        dir: &MergedDir,
        name: &OsStr,
        found: &Found,
        at: &[u8],
    ) -> Result<Vec<u8>> {
        let (_, fd) = &dir.parts[found.part];
        let t = rustix::fs::readlinkat(fd, name, Vec::new()).at("readlink", &shown(at))?;
        Ok(t.into_bytes())
    }

    /// Open the regular file `name` of `dir` for reading: an `O_PATH`
    /// handle first, checked to be a regular file of the level's own mount
    /// (a FIFO must not be opened, a device open has side effects), then
    /// reopened through it.
    pub(crate) fn open_file(
        &self,
        dir: &MergedDir,
        name: &OsStr,
        found: &Found,
        at: &[u8],
    ) -> Result<File> {
        let shown = shown(at);
        let (level, pfd) = &dir.parts[found.part];
        let fd = rustix::fs::openat(
            pfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", &shown)?;
        let st = rustix::fs::fstat(&fd).at("stat", &shown)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(Error::errno("open", shown, libc::EISDIR)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{}: not a regular file ({other:?})",
                    shown.display()
                )))
            }
        }
        if mount_of(fd.as_fd()).at("statx", &shown)? != self.levels[*level].mount {
            return Err(Error::errno("open", shown, libc::EXDEV));
        }
        let meta = xattr::list(&fd, OsStr::new(""), &shown)?
            .into_iter()
            .any(|k| {
                k.as_bytes() == b"trusted.overlay.metacopy"
                    || k.as_bytes() == b"user.overlay.metacopy"
            });
        if meta {
            return Err(Error::InvalidArgument(format!(
                "{}: metadata-only copy-up (overlay metacopy) in an overlay-form layer",
                shown.display()
            )));
        }
        let file = rustix::fs::open(
            crate::fs::proc_path(&fd, OsStr::new("")),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", &shown)?;
        Ok(File::from(file))
    }

    /// Resolve `path` in the merged view: every symlink on the way is
    /// followed inside the view, the last one only with `follow_last`.
    /// Missing paths are `ENOENT`, a non-directory on the way `ENOTDIR`,
    /// more than [`MAX_HOPS`] symlinks `ELOOP`, all naming `path`.
    pub(crate) fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Located> {
        let asked = shown(path);
        let mut todo: Vec<Vec<u8>> = Vec::new();
        push_components(&mut todo, path);
        // The directories on the way down: (name, dir, what it is).
        let mut dirs: Vec<(Vec<u8>, MergedDir, Found)> =
            vec![(Vec::new(), self.root()?, self.root_found()?)];
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                if dirs.len() > 1 {
                    dirs.pop();
                }
                continue;
            }
            let last = todo.is_empty();
            let here = path_of(&dirs);
            let at = join(&here, &c);
            let cur = &dirs.last().expect("the root stays").1;
            let name = OsStr::from_bytes(&c);
            let Some(found) = self.lookup(cur, name, &at)? else {
                return Err(Error::errno("stat", asked, libc::ENOENT));
            };
            if found.is_symlink() && (!last || follow_last) {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Error::errno("stat", asked, libc::ELOOP));
                }
                let target = self.readlink(cur, name, &found, &at)?;
                if target.starts_with(b"/") {
                    dirs.truncate(1);
                }
                push_components(&mut todo, &target);
                continue;
            }
            if last {
                let (_, dir, _) = dirs.pop().expect("the root stays");
                return Ok(Located {
                    path: at,
                    found,
                    parent: Some((dir, name.to_os_string())),
                    own: None,
                });
            }
            if !found.is_dir() {
                return Err(Error::errno("stat", asked, libc::ENOTDIR));
            }
            let child = self.open_dir(cur, name, &found, &at)?;
            dirs.push((c, child, found));
        }
        // Ended on a directory already open: the root, or after `..`.
        let path = path_of(&dirs);
        let (name, own, found) = dirs.pop().expect("the root stays");
        let parent = dirs
            .pop()
            .map(|(_, d, _)| (d, OsStr::from_bytes(&name).to_os_string()));
        Ok(Located {
            path,
            found,
            parent,
            own: Some(own),
        })
    }

    /// The merged directory a resolved directory is.
    pub(crate) fn dir_of(&self, loc: Located) -> Result<MergedDir> {
        match (loc.own, loc.parent) {
            (Some(own), _) => Ok(own),
            (None, Some((parent, name))) => self.open_dir(&parent, &name, &loc.found, &loc.path),
            (None, None) => self.root(),
        }
    }
}

/// `/a/b` of a resolution's directories.
fn path_of(dirs: &[(Vec<u8>, MergedDir, Found)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (name, ..) in &dirs[1..] {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}
