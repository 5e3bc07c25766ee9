//! The on-disk layout of a store (docs/store.md) and the two ways anything
//! is written into it: one file atomically, or one whole layer directory
//! staged under `tmp/` and renamed into place.
//!
//! ```text
//! <root>/lamina.json          format version + driver name
//! <root>/lock                 the writer lock (fs::lock)
//! <root>/layers/<id>/         layer.json (0600) + the driver's dirs
//! <root>/driver/              the driver's home: its mount reference
//!                             counts (driver::mount) and store-wide state
//! <root>/tmp/                 staging; garbage unless a live writer holds it
//! ```
//!
//! A layer directory appears under `layers/` only by `rename(2)` of a
//! complete, synced staging directory (containerd's snapshotter and moby's
//! layer store do the same), and leaves it by a rename back into `tmp/`
//! before it is removed, so a crash never leaves a half layer under
//! `layers/`.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, RenameFlags, CWD};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::fs::lock::LockGuard;
use crate::graph::record::LayerRecord;
use crate::ids::{self, LayerId};

pub use crate::fs::private::{fsync_dir, write_atomic, write_replace, DIR_MODE, FILE_MODE};
/// A layer's metadata file inside its directory.
pub const LAYER_JSON: &str = "layer.json";
/// The tar-split record of a registered layer, in its directory.
pub const TAR_SPLIT: &str = "tar-split.zst";

/// The paths of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the store at `root` (nothing is touched).
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/lamina.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("lamina.json")
    }

    /// `<root>/lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `<root>/layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `<root>/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<root>/driver`: the driver's own home (see [`crate::driver`]).
    pub fn driver_home(&self) -> PathBuf {
        self.root.join("driver")
    }

    /// Where stores before the driver had a home kept mount records.
    fn legacy_mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// Move the mount records of a store made before the driver had a home
    /// (`<root>/mounts`) to `<root>/driver/mounts`; idempotent.
    pub fn move_legacy_mounts(&self, held: &LockGuard<'_>) -> Result<()> {
        held.ensure_exclusive()?;
        let (old, new) = (self.legacy_mounts_dir(), self.driver_home().join("mounts"));
        if old.symlink_metadata().is_err() || new.symlink_metadata().is_ok() {
            return Ok(());
        }
        std::fs::rename(&old, &new).at("rename", &old)?;
        fsync_dir(self.root())
    }

    /// [`Error::LayerNotFound`] for `id` in this store.
    pub fn not_found(&self, id: &str) -> Error {
        Error::LayerNotFound {
            reference: id.to_owned(),
            root: self.root.clone(),
        }
    }

    /// `<root>/layers/<id>`: only a checked id becomes a path.
    pub fn dir_of(&self, id: &LayerId) -> PathBuf {
        self.layers_dir().join(id)
    }

    /// `<root>/layers/<id>`, after checking `id`.
    pub fn layer_dir(&self, id: &str) -> Result<PathBuf> {
        Ok(self.dir_of(&LayerId::new(id)?))
    }

    /// Make the root (and its missing parents) and its directories (mode
    /// 0700) where missing.
    pub fn create_dirs(&self) -> Result<()> {
        // Missing parents too, as `mkdir -p` (moby's MkdirAll of its root):
        // a default root like `$XDG_DATA_HOME/lamina` may have none yet.
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at("mkdir", parent)?;
        }
        for d in [
            self.root.clone(),
            self.layers_dir(),
            self.tmp_dir(),
            self.driver_home(),
        ] {
            make_dir(&d)?;
        }
        Ok(())
    }

    /// Check that the store's own directories are what lamina made: real
    /// directories (a symlink in their place would send clean-ups,
    /// layers and mount records outside the store), owned by the caller,
    /// writable by no one else. Anything else is [`Error::Corrupt`] naming it.
    pub fn check_dirs(&self) -> Result<()> {
        let me = rustix::process::geteuid().as_raw();
        for d in [self.layers_dir(), self.tmp_dir(), self.driver_home()] {
            let m = d.symlink_metadata().at("lstat", &d)?;
            use std::os::unix::fs::MetadataExt;
            let what = if m.file_type().is_symlink() {
                "is a symlink, not the store's own directory"
            } else if !m.is_dir() {
                "is not a directory"
            } else if m.uid() != me {
                "is owned by another user"
            } else if m.mode() & 0o022 != 0 {
                "is writable by other users"
            } else {
                continue;
            };
            return Err(Error::corrupt(&d, what));
        }
        Ok(())
    }

    /// Ids of the layers in the store, sorted: directories under `layers/`
    /// with a valid id as name and a `layer.json` inside.
    pub fn layer_ids(&self) -> Result<Vec<String>> {
        let dir = self.layers_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).at("readdir", &dir)? {
            let entry = entry.at("readdir", &dir)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if ids::is_valid_id(&name) && entry.path().join(LAYER_JSON).exists() {
                out.push(name);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Whether layer `id` is in the store.
    pub fn has_layer(&self, id: &str) -> Result<bool> {
        Ok(self.layer_dir(id)?.join(LAYER_JSON).exists())
    }

    /// Read layer `id`'s record; [`Error::LayerNotFound`] if it is not there.
    pub fn read_layer(&self, id: &str) -> Result<LayerRecord> {
        let path = self.layer_dir(id)?.join(LAYER_JSON);
        match crate::fs::private::read(&path)? {
            Some(data) => LayerRecord::from_json(id, &data).map_err(|e| match e {
                Error::Corrupt { what, .. } => Error::corrupt(&path, what),
                e => e,
            }),
            None => Err(self.not_found(id)),
        }
    }

    /// Replace the record of an existing layer atomically (metadata updates).
    pub fn write_layer(&self, rec: &LayerRecord) -> Result<()> {
        rec.validate()?;
        let dir = self.layer_dir(&rec.id)?;
        if !dir.join(LAYER_JSON).exists() {
            return Err(self.not_found(&rec.id));
        }
        write_atomic(&dir, LAYER_JSON, &rec.to_json()?, FILE_MODE)
    }

    /// A fresh staging directory under `tmp/`, named after `purpose`.
    ///
    /// The guard is proof that the store lock is held (either mode): the
    /// staging directory is flocked before the store lock can be released,
    /// and [`Layout::clean_tmp`] runs only under the exclusive lock, so it
    /// never sees a live staging directory unlocked.
    pub fn stage(&self, _held: &LockGuard<'_>, purpose: &str) -> Result<Staging> {
        if !purpose
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::InvalidArgument(format!(
                "bad staging name {purpose:?}"
            )));
        }
        let tmp = self.tmp_dir();
        loop {
            let path = tmp.join(unique_name(purpose));
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(DIR_MODE))
                        .at("chmod", &path)?;
                    let lock = lock_dir(&path, true)?.expect("blocking flock");
                    crate::crashpoint::hit();
                    return Ok(Staging {
                        path,
                        _lock: lock,
                        done: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("mkdir", &path, e)),
            }
        }
    }

    /// Remove what is in `tmp/` and not held by a live [`Staging`]: the
    /// leftovers of writers that crashed. Returns how many entries went.
    pub fn clean_tmp(&self, held: &LockGuard<'_>) -> Result<usize> {
        held.ensure_exclusive()?;
        let tmp = self.tmp_dir();
        let mut removed = 0;
        for entry in std::fs::read_dir(&tmp).at("readdir", &tmp)? {
            let path = entry.at("readdir", &tmp)?.path();
            // Owners remove their own staging dirs without the store lock,
            // so any entry may vanish under us: that is not an error.
            let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
            let is_dir = match path.symlink_metadata() {
                Ok(m) => m.is_dir(),
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(Error::io("lstat", &path, e)),
            };
            if is_dir {
                // A staging dir is flocked by its owner from birth to death.
                match lock_dir(&path, false) {
                    // What cannot be removed (an immutable file, a mount
                    // point inside) stays where it is: garbage under tmp/
                    // must never keep the store from opening.
                    Ok(Some(_lock)) => {
                        if remove_tree(&path).is_err() {
                            continue;
                        }
                    }
                    Ok(None) => continue,
                    Err(Error::Io { source, .. }) if gone(&source) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(Error::io("unlink", &path, e)),
                }
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// What is in `tmp/` and held by no live [`Staging`]: what a clean-up
    /// would remove (and, where it could not, what is stuck there).
    pub fn tmp_leftovers(&self) -> Result<Vec<PathBuf>> {
        let tmp = self.tmp_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&tmp).at("readdir", &tmp)? {
            let path = entry.at("readdir", &tmp)?.path();
            let is_dir = match path.symlink_metadata() {
                Ok(m) => m.is_dir(),
                Err(_) => continue,
            };
            if !is_dir || matches!(lock_dir(&path, false), Ok(Some(_))) {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Take layer `id` out of the store: rename its directory into `tmp/`
    /// (so the layer is gone at once, atomically), then remove the tree.
    /// A crash during the removal leaves only garbage in `tmp/`.
    pub fn remove_layer(&self, held: &LockGuard<'_>, id: &str) -> Result<()> {
        held.ensure_exclusive()?;
        let dir = self.layer_dir(id)?;
        let gone = self.stage(held, "rm")?;
        crate::crashpoint::hit();
        std::fs::rename(&dir, gone.path().join("layer")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => self.not_found(id),
            _ => Error::io("rename", &dir, e),
        })?;
        crate::crashpoint::hit();
        fsync_dir(&self.layers_dir())?;
        gone.remove()
    }
}

/// A directory being filled under `tmp/`; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    _lock: File,
    done: bool,
}

impl Staging {
    /// The staging directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a layer's `layer.json` into the staging directory.
    pub fn write_record(&self, rec: &LayerRecord) -> Result<()> {
        rec.validate()?;
        write_atomic(&self.path, LAYER_JSON, &rec.to_json()?, FILE_MODE)
    }

    /// Make the staged directory layer `id`: sync it, rename it to
    /// `layers/<id>` (never over an existing layer: [`Error::LayerExists`]),
    /// sync `layers/`. Returns the layer's directory.
    ///
    /// One `syncfs` flushes the whole staged tree; an fsync per file would
    /// cost a journal commit per file on a layer of 100,000 files.
    ///
    /// The guard is proof that the store lock is held (either mode), so
    /// that a parent checked under it cannot be deleted (which needs the
    /// lock exclusive) before its child lands.
    pub fn commit(mut self, _held: &LockGuard<'_>, layout: &Layout, id: &str) -> Result<PathBuf> {
        let dest = layout.layer_dir(id)?;
        let dir = File::open(&self.path).at("open", &self.path)?;
        crate::crashpoint::hit();
        rustix::fs::syncfs(&dir).at("syncfs", &self.path)?;
        crate::crashpoint::hit();
        rename_noreplace(&self.path, &dest).map_err(|e| match e {
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                Error::LayerExists(id.to_owned())
            }
            e => e,
        })?;
        self.done = true;
        crate::crashpoint::hit();
        fsync_dir(&layout.layers_dir())?;
        Ok(dest)
    }

    /// Remove the staging directory now, reporting failure (drop only tries).
    pub fn remove(mut self) -> Result<()> {
        self.done = true;
        remove_tree(&self.path)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: whatever stays is swept by the next clean_tmp.
            let _ = remove_tree(&self.path);
        }
    }
}

fn unique_name(purpose: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{purpose}-{}-{n}-{nanos:08x}", std::process::id())
}

fn make_dir(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
            .at("chmod", path),
        // What stands there is checked by `check_dirs`.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

/// flock a directory exclusive; `Ok(None)` if `wait` is false and someone
/// else holds it. The lock lives as long as the returned file.
fn lock_dir(path: &Path, wait: bool) -> Result<Option<File>> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .at("open", path)?;
    let op = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    loop {
        match rustix::fs::flock(&dir, op) {
            Ok(()) => return Ok(Some(dir)),
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) if !wait => return Ok(None),
            Err(e) => return Err(e).at("flock", path),
        }
    }
}

/// Remove a tree the store owns: never across a mount point, never
/// through a symlink, opening up directories left without write permission
/// (see [`crate::fs::remove`]).
fn remove_tree(path: &Path) -> Result<()> {
    crate::fs::remove::remove_path(path)
}

/// `renameat2(RENAME_NOREPLACE)`, or a checked plain rename where the
/// filesystem lacks the flag.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            // Without the flag a directory would replace an empty one; the
            // store lock keeps the check and the rename together.
            if to.symlink_metadata().is_ok() {
                return Err(Error::io(
                    "rename",
                    to,
                    std::io::Error::from_raw_os_error(libc::EEXIST),
                ));
            }
            std::fs::rename(from, to).at("rename", to)
        }
        Err(e) => Err(e).at("rename", to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::lock::StoreLock;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        p.symlink_metadata().unwrap().mode() & 0o7777
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "f.json", b"one", 0o600).unwrap();
        write_atomic(tmp.path(), "f.json", b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("f.json")).unwrap(), b"two");
        assert_eq!(mode(&tmp.path().join("f.json")), 0o600);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert!(write_atomic(tmp.path(), "../x", b"", 0o600).is_err());
    }

    #[test]
    fn stage_commit_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path().join("store"));
        layout.create_dirs().unwrap();
        for d in [
            layout.root().to_owned(),
            layout.layers_dir(),
            layout.tmp_dir(),
        ] {
            assert_eq!(mode(&d), 0o700);
        }
        let lock = StoreLock::open(&layout.lock_path()).unwrap();
        let g = lock.write().unwrap();
        let id = "ab".repeat(32);

        let st = layout.stage(&g, "layer").unwrap();
        std::fs::create_dir(st.path().join("root")).unwrap();
        st.write_record(&LayerRecord::new(&id, None, false))
            .unwrap();
        assert_eq!(mode(&st.path().join(LAYER_JSON)), 0o600);
        assert!(layout.layer_ids().unwrap().is_empty());
        let dir = st.commit(&g, &layout, &id).unwrap();
        assert!(dir.join("root").is_dir());
        assert_eq!(layout.layer_ids().unwrap(), vec![id.clone()]);
        assert_eq!(layout.read_layer(&id).unwrap().id, id);

        // The same id again is LayerExists, and the loser's staging goes.
        let st = layout.stage(&g, "layer").unwrap();
        st.write_record(&LayerRecord::new(&id, None, false))
            .unwrap();
        assert!(matches!(
            st.commit(&g, &layout, &id),
            Err(Error::LayerExists(_))
        ));
        assert_eq!(std::fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);

        let mut rec = layout.read_layer(&id).unwrap();
        rec.metadata.insert("a".into(), 1.into());
        layout.write_layer(&rec).unwrap();
        assert_eq!(layout.read_layer(&id).unwrap().metadata["a"], 1);

        // A 0500 dir inside (like a read-only layer dir) does not stop removal.
        std::fs::create_dir(dir.join("root/ro")).unwrap();
        std::fs::write(dir.join("root/ro/f"), "").unwrap();
        std::fs::set_permissions(dir.join("root/ro"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        layout.remove_layer(&g, &id).unwrap();
        assert!(layout.layer_ids().unwrap().is_empty());
        assert!(matches!(
            layout.read_layer(&id),
            Err(Error::LayerNotFound { .. })
        ));
        assert!(matches!(
            layout.remove_layer(&g, &id),
            Err(Error::LayerNotFound { .. })
        ));
        assert_eq!(std::fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
        assert!(layout.layer_dir("../x").is_err());
    }

    #[test]
    fn clean_tmp_spares_live_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.create_dirs().unwrap();
        let lock = StoreLock::open(&layout.lock_path()).unwrap();
        let r = lock.read().unwrap();
        let live = layout.stage(&r, "layer").unwrap();
        assert!(layout.clean_tmp(&r).is_err(), "needs the exclusive lock");
        drop(r);
        std::fs::create_dir_all(layout.tmp_dir().join("crashed/deep")).unwrap();
        std::fs::write(layout.tmp_dir().join("stray"), "").unwrap();
        let w = lock.write().unwrap();
        assert_eq!(layout.clean_tmp(&w).unwrap(), 2);
        assert!(live.path().is_dir());
        let names: Vec<_> = std::fs::read_dir(layout.tmp_dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
        drop(live);
        assert_eq!(std::fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
    }
}
