//! Opening a store: its directories, its lock, `lamina.json`, and the
//! sweep of what a crashed writer left behind.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::layout::{self, Layout};
use crate::graph::lock::{LockGuard, StoreLock};

/// The on-disk format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What `lamina.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// The store's on-disk format version.
    pub format: u32,
    /// The storage driver the store was made with.
    pub driver: String,
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
        if driver.is_empty() {
            return Err(Error::InvalidArgument("empty driver name".into()));
        }
        let layout = Layout::new(root);
        layout.create_dirs()?;
        let lock = StoreLock::open(&layout.lock_path())?;
        let config = {
            let g = lock.write()?;
            let config = match read_config(&layout)? {
                Some(c) => {
                    if driver != "auto" && driver != c.driver {
                        return Err(Error::InvalidArgument(format!(
                            "the store at {} uses the {:?} driver; it cannot be opened with {driver:?} \
                             (use \"auto\" or {:?})",
                            root.display(),
                            c.driver,
                            c.driver
                        )));
                    }
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
                    };
                    write_config(&layout, &c)?;
                    c
                }
            };
            layout.clean_tmp(&g)?;
            config
        };
        Ok(Store {
            layout,
            lock,
            config,
        })
    }

    /// The store's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
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

fn read_config(layout: &Layout) -> Result<Option<StoreConfig>> {
    let path = layout.config_path();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let c: StoreConfig = serde_json::from_slice(&data).map_err(|e| {
        Error::Driver(format!(
            "{}: corrupt store configuration: {e}",
            path.display()
        ))
    })?;
    if c.format > FORMAT_VERSION {
        return Err(Error::Driver(format!(
            "{}: store format {} is newer than this lamina reads ({FORMAT_VERSION})",
            path.display(),
            c.format
        )));
    }
    Ok(Some(c))
}

fn write_config(layout: &Layout, c: &StoreConfig) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(c).map_err(|e| Error::Driver(e.to_string()))?;
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
            Err(Error::Driver(_))
        ));
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
}
