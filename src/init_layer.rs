//! The `-init` layer every container gets: the seed's `SetupInitLayer`
//! (Docker 1.8 `graph/graph_unix.go`; moby `daemon/initlayer`).
//!
//! Like the seed, whatever non-directory stands on a component of an entry's
//! path is unlinked first, so an image's `/etc -> /somewhere` symlink is
//! replaced rather than followed out of the layer. Unlike the seed, the walk
//! is fd-relative (each component opened with `O_NOFOLLOW` from its parent),
//! modes are exact (umask does not apply), and an entry already in the right
//! shape is left alone, so running it twice changes nothing.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::fs::handle::Handle;

/// What an init-layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitKind {
    /// A directory, mode 0755.
    Dir,
    /// An empty regular file, mode 0755 (the seed's mode).
    File,
    /// A symlink with this target.
    Symlink(PathBuf),
}

/// One entry of an init layer: an absolute path inside the layer and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitEntry {
    /// Absolute path inside the layer, e.g. `/etc/hosts`.
    pub path: PathBuf,
    /// What to create there.
    pub kind: InitKind,
}

impl InitEntry {
    pub(crate) fn new(path: &str, kind: InitKind) -> Self {
        InitEntry {
            path: PathBuf::from(path),
            kind,
        }
    }
}

/// The seed's entries, in the seed's order.
pub fn default_entries() -> Vec<InitEntry> {
    use InitKind::*;
    vec![
        InitEntry::new("/dev/pts", Dir),
        InitEntry::new("/dev/shm", Dir),
        InitEntry::new("/proc", Dir),
        InitEntry::new("/sys", Dir),
        InitEntry::new("/.dockerinit", File),
        InitEntry::new("/.dockerenv", File),
        InitEntry::new("/etc/resolv.conf", File),
        InitEntry::new("/etc/hosts", File),
        InitEntry::new("/etc/hostname", File),
        InitEntry::new("/dev/console", File),
        InitEntry::new("/etc/mtab", Symlink(PathBuf::from("/proc/mounts"))),
    ]
}

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o755;

/// Create the seed's init-layer entries under `layer`.
pub fn setup_init_layer(layer: &Path) -> Result<()> {
    setup_init_layer_with(layer, &default_entries())
}

/// Create `entries` under `layer`.
pub fn setup_init_layer_with(layer: &Path, entries: &[InitEntry]) -> Result<()> {
    let root = rustix::fs::open(
        layer,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", layer)?;
    for e in entries {
        setup_entry(&root, layer, e)?;
    }
    Ok(())
}

fn components(path: &Path) -> Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "init-layer path {} must be absolute and without '..'",
                    path.display()
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "init-layer path {} names the layer root",
            path.display()
        )));
    }
    Ok(out)
}

/// The type of `dir/name` without following it, or `None` if absent.
fn kind_at(dir: impl AsFd, name: &OsStr, shown: &Path) -> Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).at("lstat", shown),
    }
}

fn setup_entry(root: &OwnedFd, layer: &Path, entry: &InitEntry) -> Result<()> {
    let comps = components(&entry.path)?;
    let (leaf, parents) = comps.split_last().expect("components is not empty");
    let mut shown = layer.to_path_buf();
    let mut dir: OwnedFd = root.try_clone().at("dup", layer)?;
    for comp in parents {
        shown.push(comp);
        match kind_at(&dir, comp, &shown)? {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Some(_) => {
                rustix::fs::unlinkat(&dir, *comp, AtFlags::empty()).at("unlink", &shown)?;
                make_dir(&dir, comp, &shown)?;
            }
            None => make_dir(&dir, comp, &shown)?,
        }
        dir = rustix::fs::openat(
            &dir,
            *comp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", &shown)?;
    }
    shown.push(leaf);
    let existing = kind_at(&dir, leaf, &shown)?;
    if let Some(st) = &existing {
        if already_right(&dir, leaf, st, &entry.kind, &shown)? {
            return Ok(());
        }
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            // The seed's unlink fails on a directory and leaves it; a
            // directory where a file or symlink belongs is kept the same way.
            return Ok(());
        }
        rustix::fs::unlinkat(&dir, *leaf, AtFlags::empty()).at("unlink", &shown)?;
    }
    match &entry.kind {
        InitKind::Dir => make_dir(&dir, leaf, &shown),
        InitKind::File => {
            let f = rustix::fs::openat(
                &dir,
                *leaf,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(FILE_MODE),
            )
            .at("create", &shown)?;
            crate::fs::race::created(dir.as_fd(), leaf);
            rustix::fs::fchmod(&f, Mode::from_raw_mode(FILE_MODE)).at("chmod", &shown)
        }
        InitKind::Symlink(target) => {
            rustix::fs::symlinkat(target, &dir, *leaf).at("symlink", &shown)
        }
    }
}

fn make_dir(dir: impl AsFd, name: &OsStr, shown: &Path) -> Result<()> {
    let dir = dir.as_fd();
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(DIR_MODE)).at("mkdir", shown)?;
    crate::fs::race::created(dir, name);
    // Through a handle: a symlink swapped in after the mkdir is not followed.
    Handle::open(dir, name, FileType::Directory, shown)?
        .chmod(DIR_MODE)
        .at("chmod", shown)
}

/// An entry that already has the right type (and, for files, is empty; for
/// symlinks, has the right target) is left as it is.
fn already_right(
    dir: impl AsFd,
    name: &OsStr,
    st: &rustix::fs::Stat,
    kind: &InitKind,
    shown: &Path,
) -> Result<bool> {
    let ft = FileType::from_raw_mode(st.st_mode);
    Ok(match kind {
        InitKind::Dir => ft == FileType::Directory,
        InitKind::File => ft == FileType::RegularFile && st.st_size == 0,
        InitKind::Symlink(target) => {
            ft == FileType::Symlink
                && rustix::fs::readlinkat(dir, name, Vec::new())
                    .at("readlink", shown)?
                    .as_bytes()
                    == target.as_os_str().as_encoded_bytes()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_symlinked_parent_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, layer.join("etc")).unwrap();
        setup_init_layer(&layer).unwrap();
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(layer.join("etc").symlink_metadata().unwrap().is_dir());
        assert_eq!(
            std::fs::read_link(layer.join("etc/mtab")).unwrap(),
            Path::new("/proc/mounts")
        );
        let before = std::fs::metadata(layer.join("etc/hosts")).unwrap();
        setup_init_layer(&layer).unwrap();
        let after = std::fs::metadata(layer.join("etc/hosts")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino());
        assert_eq!(after.mode() & 0o7777, 0o755);
    }

    #[test]
    fn rejects_relative_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let e = setup_init_layer_with(tmp.path(), &[InitEntry::new("/../x", InitKind::File)]);
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
    }
}
