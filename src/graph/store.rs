//! Opening a store: its directories, its lock, `lamina.json`, and the
//! sweep of what a crashed writer left behind.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fs::lock::{LockGuard, StoreLock};
use crate::graph::layout::{self, Layout};

/// The on-disk format this code reads and writes.
///
/// 2: a layer's `size` is the seed's (the content bytes of its tar's
/// entries) and `tar_size` the tar's length; format 1 kept the tar's length
/// in `size`. A format-1 store is migrated when opened.
pub const FORMAT_VERSION: u32 = 2;

/// What `lamina.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// The store's on-disk format version.
    pub format: u32,
    /// The storage driver the store was made with.
    pub driver: String,
    /// For the overlay drivers: whose overlay xattrs and whiteouts the
    /// layers carry, `"trusted"` (made as root: `trusted.overlay.*`) or
    /// `"user"` (made rootless, mounted with `userxattr`: `user.overlay.*`).
    /// Absent in stores made before it was recorded, which were made as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_xattrs: Option<String>,
}

/// An open store: its layout, its lock and its configuration. The graph
/// sits on top of it; drivers are handed directories, never the store.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    lock: StoreLock,
    config: StoreConfig,
}

impl Store {
    /// Open the store at `root`, making it if there is none.
    ///
    /// `driver` is a driver name or `"auto"`. A new store is made with
    /// `driver`, or with what `probe` answers for `"auto"`. An existing
    /// store keeps its driver: `"auto"` means it, any other name must equal
    /// it (a store's layer directories only make sense to the driver that
    /// wrote them; moby refuses to switch drivers over existing state the
    /// same way).
    ///
    /// Under the exclusive lock, leftovers of crashed writers in `tmp/` are
    /// removed.
    pub fn open(
        root: &Path,
        driver: &str,
        probe: impl FnOnce() -> Result<String>,
    ) -> Result<Store> {
        let root = &Self::prepare(root, driver)?;
        let layout = Layout::new(root);
        layout.check_dirs()?;
        let lock = StoreLock::open(&layout.lock_path())?;
        let config = {
            let g = lock.write()?;
            let config = match read_config(&layout)? {
                Some(mut c) if c.format < FORMAT_VERSION => {
                    check_driver(root, driver, &c)?;
                    migrate_sizes(&layout)?;
                    c.format = FORMAT_VERSION;
                    write_config(&layout, &c)?;
                    c
                }
                Some(c) => {
                    check_driver(root, driver, &c)?;
                    c
                }
                None => {
                    let name = if driver == "auto" {
                        probe()?
                    } else {
                        driver.to_owned()
                    };
                    let c = StoreConfig {
                        format: FORMAT_VERSION,
                        driver: name,
                        overlay_xattrs: None,
                    };
                    write_config(&layout, &c)?;
                    c
                }
            };
            layout.move_legacy_mounts(&g)?;
            layout.clean_tmp(&g)?;
            config
        };
        Ok(Store {
            layout,
            lock,
            config,
        })
    }

    /// Check `driver` and make the store's directories where missing;
    /// returns the root as one canonical path.
    ///
    /// The name is checked before anything is written: a store made with a
    /// name that is not a driver could never be opened again. The root is
    /// resolved once (`realpath`), so that a root given through a symlink
    /// (`/var/lib/lamina` on another disk), with `..`, or relative names
    /// its mounts as the kernel's mount table does.
    pub fn prepare(root: &Path, driver: &str) -> Result<std::path::PathBuf> {
        crate::driver::validate_name(driver)?;
        Layout::new(root).create_dirs()?;
        std::fs::canonicalize(root).at("realpath", root)
    }

    /// The store's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Check that the overlay xattrs this process would read and write
    /// (`want`: `"user"` when mounting rootless, else `"trusted"`) are the
    /// ones the store's layers carry, recording them for a store that has
    /// no layer yet. A store made as root and opened rootless (or the
    /// reverse) is refused, naming both: its opaque directories would read
    /// as plain ones, never an error but a wrong tree.
    pub fn check_overlay_xattrs(&mut self, want: &str) -> Result<()> {
        if !self.config.driver.starts_with("overlay") {
            return Ok(());
        }
        let g = self.lock.write()?;
        let mut c = read_config(&self.layout)?.unwrap_or_else(|| self.config.clone());
        let have = match c.overlay_xattrs.clone() {
            Some(h) => h,
            None if self.layout.layer_ids()?.is_empty() => {
                c.overlay_xattrs = Some(want.to_owned());
                write_config(&self.layout, &c)?;
                self.config = c;
                drop(g);
                return Ok(());
            }
            None => "trusted".to_owned(),
        };
        drop(g);
        if have == want {
            self.config = c;
            return Ok(());
        }
        let made = |x: &str| {
            if x == "user" {
                "rootless (user.overlay.* xattrs, mounted with userxattr)"
            } else {
                "as root (trusted.overlay.* xattrs)"
            }
        };
        Err(Error::Driver(format!(
            "store {}: its {} layers were made {}, and this process would read them {}: \
             open it the way it was made, or use another store",
            self.layout.root().display(),
            c.driver,
            made(&have),
            made(want)
        )))
    }

    /// What `lamina.json` says.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The store lock, shared: for work that must not see a layer vanish.
    pub fn read_lock(&self) -> Result<LockGuard<'_>> {
        self.lock.read()
    }

    /// The store lock, exclusive: for adding, changing and removing layers.
    pub fn write_lock(&self) -> Result<LockGuard<'_>> {
        self.lock.write()
    }
}

fn check_driver(root: &Path, driver: &str, c: &StoreConfig) -> Result<()> {
    if driver != "auto" && driver != c.driver {
        return Err(Error::InvalidArgument(format!(
            "the store at {} uses the {:?} driver; it cannot be opened with {driver:?} \
             (use \"auto\" or {:?})",
            root.display(),
            c.driver,
            c.driver
        )));
    }
    Ok(())
}

/// Format 1 → 2: the tar's length moves from `size` to `tar_size`, and
/// `size` becomes the seed's, read from the layer's tar-split record.
/// Idempotent, so a crash half-way is finished by the next open.
fn migrate_sizes(layout: &Layout) -> Result<()> {
    for id in layout.layer_ids()? {
        let mut rec = layout.read_layer(&id)?;
        if rec.diff_id.is_none() || rec.tar_size.is_some() {
            continue;
        }
        let split = layout.layer_dir(&id)?.join(layout::TAR_SPLIT);
        let f = crate::fs::private::open(&split)?
            .ok_or_else(|| Error::corrupt(&split, "missing: a registered layer has one"))?;
        let content = crate::archive::tarsplit::content_bytes(std::io::BufReader::new(f)).map_err(
            |e| match e {
                Error::Corrupt { what, .. } => Error::corrupt(&split, what),
                e => e,
            },
        )?;
        rec.tar_size = Some(rec.size);
        rec.size = content;
        layout.write_layer(&rec)?;
    }
    Ok(())
}

fn read_config(layout: &Layout) -> Result<Option<StoreConfig>> {
    let path = layout.config_path();
    let Some(data) = crate::fs::private::read(&path)? else {
        return Ok(None);
    };
    let c: StoreConfig = serde_json::from_slice(&data)
        .map_err(|e| Error::corrupt(&path, format!("unparsable store configuration: {e}")))?;
    if c.format > FORMAT_VERSION {
        return Err(Error::corrupt(
            &path,
            format!(
                "store format {} is newer than this lamina reads ({FORMAT_VERSION})",
                c.format
            ),
        ));
    }
    Ok(Some(c))
}

fn write_config(layout: &Layout, c: &StoreConfig) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(c).expect("a StoreConfig always encodes");
    data.push(b'\n');
    layout::write_atomic(layout.root(), "lamina.json", &data, layout::FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_its_driver() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        let s = Store::open(&root, "auto", || Ok("vfs".into())).unwrap();
        assert_eq!(s.config().driver, "vfs");
        assert_eq!(s.config().format, FORMAT_VERSION);
        drop(s);
        let probe_unused = || -> Result<String> { panic!("an existing store is not probed") };
        assert_eq!(
            Store::open(&root, "auto", probe_unused)
                .unwrap()
                .config()
                .driver,
            "vfs"
        );
        assert_eq!(
            Store::open(&root, "vfs", probe_unused)
                .unwrap()
                .config()
                .driver,
            "vfs"
        );
        match Store::open(&root, "overlay", probe_unused) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("\"vfs\" driver"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(
            root.join("lamina.json"),
            r#"{"format": 99, "driver": "vfs"}"#,
        )
        .unwrap();
        assert!(matches!(
            Store::open(&root, "vfs", probe_unused),
            Err(Error::Corrupt { .. })
        ));
    }

    /// A name that is no driver is refused before anything is written: a
    /// store made with it could never be opened again.
    #[test]
    fn unknown_driver_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        for bad in ["overlay3", "", "VFS", "../x"] {
            match Store::open(&root, bad, || unreachable!()) {
                Err(e @ Error::UnknownDriver { .. }) => {
                    let m = e.to_string();
                    assert!(m.contains("this build has overlay, overlay2, vfs"), "{m}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(!root.exists(), "{bad:?} wrote the store");
        }
        let s = Store::open(&root, "auto", || Ok("vfs".into())).unwrap();
        assert_eq!(s.config().driver, "vfs");
    }

    /// A format-1 store (size = the tar's length) is migrated when opened.
    #[test]
    fn format_1_sizes_are_migrated() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let s = Store::open(root, "vfs", || unreachable!()).unwrap();
        let layout = s.layout().clone();
        // A layer whose tar has a 5-byte and a 3-byte file.
        let tar = {
            let src = tmp.path().join("src");
            std::fs::create_dir(&src).unwrap();
            std::fs::write(src.join("a"), "12345").unwrap();
            std::fs::write(src.join("b"), "678").unwrap();
            let mut out = Vec::new();
            crate::archive::export::export_diff(None, &src, &mut out, &Default::default()).unwrap();
            out
        };
        let id = "ef".repeat(32);
        {
            let g = s.write_lock().unwrap();
            let st = layout.stage(&g, "layer").unwrap();
            std::fs::create_dir(st.path().join("root")).unwrap();
            let rec_file = std::fs::File::create(st.path().join(layout::TAR_SPLIT)).unwrap();
            let rep = crate::archive::apply_layer_with_record(
                &st.path().join("root"),
                &tar[..],
                &Default::default(),
                rec_file,
            )
            .unwrap();
            assert_eq!(rep.content_bytes, 8);
            let mut rec = crate::graph::LayerRecord::new(&id, None, false);
            rec.diff_id = Some(rep.diff_id);
            rec.size = rep.bytes;
            st.write_record(&rec).unwrap();
            st.commit(&g, &layout, &id).unwrap();
        }
        drop(s);
        std::fs::write(layout.config_path(), r#"{"format": 1, "driver": "vfs"}"#).unwrap();
        let s = Store::open(root, "auto", || unreachable!()).unwrap();
        assert_eq!(s.config().format, FORMAT_VERSION);
        let rec = s.layout().read_layer(&id).unwrap();
        assert_eq!((rec.size, rec.tar_size), (8, Some(tar.len() as u64)));
        // Idempotent: a second open changes nothing.
        drop(s);
        let s = Store::open(root, "auto", || unreachable!()).unwrap();
        assert_eq!(s.layout().read_layer(&id).unwrap().size, 8);
    }

    #[test]
    fn open_sweeps_tmp() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "vfs", || unreachable!()).unwrap();
        std::fs::create_dir_all(s.layout().tmp_dir().join("layer-1-2-3/root")).unwrap();
        let s2 = Store::open(tmp.path(), "vfs", || unreachable!()).unwrap();
        assert_eq!(std::fs::read_dir(s2.layout().tmp_dir()).unwrap().count(), 0);
        let g = s.read_lock().unwrap();
        let st = s.layout().stage(&g, "x").unwrap();
        drop(g);
        // Another open (as by a second process) leaves a live staging dir.
        Store::open(tmp.path(), "vfs", || unreachable!()).unwrap();
        assert!(st.path().is_dir());
    }

    const CRASH_ENV: &str = "LAMINA_TEST_CRASH_STORE";

    /// A writer killed mid-staging (SIGKILL, no unwinding, no Drop) leaves
    /// a store that opens cleanly, with the half layer swept from `tmp/`
    /// and nothing under `layers/`.
    #[test]
    fn killed_writer_leaves_an_openable_store() {
        if let Ok(root) = std::env::var(CRASH_ENV) {
            let s = Store::open(Path::new(&root), "vfs", || unreachable!()).unwrap();
            let g = s.write_lock().unwrap();
            let st = s.layout().stage(&g, "layer").unwrap();
            std::fs::create_dir_all(st.path().join("root/etc")).unwrap();
            std::fs::write(st.path().join("root/etc/passwd"), "root:x:0:0").unwrap();
            std::fs::write(Path::new(&root).join("staged"), "").unwrap();
            // Hold everything (store lock, staging flock) until killed.
            std::thread::sleep(std::time::Duration::from_secs(60));
            unreachable!("should have been killed");
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let id = "cd".repeat(32);
        let s = Store::open(root, "vfs", || unreachable!()).unwrap();
        {
            let g = s.write_lock().unwrap();
            let st = s.layout().stage(&g, "layer").unwrap();
            st.write_record(&crate::graph::LayerRecord::new(&id, None, false))
                .unwrap();
            st.commit(&g, s.layout(), &id).unwrap();
        }
        drop(s);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "graph::store::tests::killed_writer_leaves_an_openable_store",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, root)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !root.join("staged").exists() {
            assert!(start.elapsed().as_secs() < 30, "child never staged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 1);
        let s = Store::open(root, "auto", || unreachable!()).unwrap();
        assert_eq!(std::fs::read_dir(s.layout().tmp_dir()).unwrap().count(), 0);
        assert_eq!(s.layout().layer_ids().unwrap(), vec![id.clone()]);
        assert_eq!(s.layout().read_layer(&id).unwrap().id, id);
    }

    const HAMMER_ENV: &str = "LAMINA_TEST_HAMMER_STORE";

    /// 4 threads: stage without the store lock, commit under it shared,
    /// delete every third layer under it exclusive, and reopen the store
    /// (sweeping `tmp/`) every tenth step, while other writers stage.
    fn hammer(root: &Path, tag: u8) {
        let s = std::sync::Arc::new(Store::open(root, "vfs", || unreachable!()).unwrap());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (s, root) = (s.clone(), root.to_owned());
                std::thread::spawn(move || {
                    for i in 0..30u16 {
                        let id = format!("{tag:02x}{t:02x}{i:04x}{}", "0".repeat(56));
                        let st = s.layout().stage(&s.read_lock().unwrap(), "layer").unwrap();
                        std::fs::create_dir(st.path().join("root")).unwrap();
                        std::fs::write(st.path().join("root/f"), &id).unwrap();
                        st.write_record(&crate::graph::LayerRecord::new(&id, None, false))
                            .unwrap();
                        st.commit(&s.read_lock().unwrap(), s.layout(), &id).unwrap();
                        if i % 3 == 0 {
                            s.layout()
                                .remove_layer(&s.write_lock().unwrap(), &id)
                                .unwrap();
                        }
                        if i % 10 == 5 {
                            Store::open(&root, "auto", || unreachable!()).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn threads_and_processes_share_a_store() {
        if let Ok(root) = std::env::var(HAMMER_ENV) {
            hammer(Path::new(&root), 1);
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        Store::open(root, "vfs", || unreachable!()).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "graph::store::tests::threads_and_processes_share_a_store",
                "--test-threads=1",
            ])
            .env(HAMMER_ENV, root)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        hammer(root, 0);
        assert!(child.wait().unwrap().success());
        let s = Store::open(root, "vfs", || unreachable!()).unwrap();
        let ids = s.layout().layer_ids().unwrap();
        assert_eq!(ids.len(), 2 * 4 * 20);
        for id in &ids {
            assert_eq!(s.layout().read_layer(id).unwrap().id, *id);
            let dir = s.layout().layer_dir(id).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("root/f")).unwrap(), *id);
        }
        assert_eq!(std::fs::read_dir(s.layout().tmp_dir()).unwrap().count(), 0);
    }
}
