//! What the fuzz targets share: a sandbox with a sentinel beside each
//! destination, the containment check run after every input, and a tree
//! manifest for differential targets.
//!
//! The containment check is the property the adversarial corpus proves case
//! by case (tests/unit/test_adversarial.py): whatever the archive, nothing
//! outside the destination changes — the sentinel directory beside it keeps
//! its entries, their inodes, sizes, modes and times, and the sandbox holds
//! nothing but the destination and the sentinel.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory that holds one destination at a time and a sentinel.
pub struct Sandbox {
    _tmp: tempfile_free::Dir,
    pub root: PathBuf,
    sentinel: PathBuf,
    snapshot: Vec<(PathBuf, u64, u64, u32, i64)>,
}

/// A small self-made temporary directory (no extra crate in the fuzz build).
mod tempfile_free {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let base = std::env::var_os("LAMINA_FUZZ_TMP")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let p = base.join(format!("lamina-fuzz-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("sandbox");
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u64, u32, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let m = fs::symlink_metadata(&d).expect("sentinel");
        out.push((
            d.clone(),
            m.ino(),
            m.size(),
            m.mode(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
        ));
        if m.is_dir() {
            let mut names: Vec<PathBuf> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            todo.extend(names);
        }
    }
    out
}

impl Sandbox {
    /// A sandbox with a sentinel holding a secret file and a subdirectory.
    pub fn new(tag: &str) -> Sandbox {
        let tmp = tempfile_free::Dir::new(tag);
        let root = tmp.0.clone();
        let sentinel = root.join("sentinel");
        fs::create_dir(&sentinel).unwrap();
        fs::write(sentinel.join("secret"), b"sentinel secret").unwrap();
        fs::create_dir(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("sub/file"), b"sentinel file").unwrap();
        let snapshot = snapshot(&sentinel);
        Sandbox {
            _tmp: tmp,
            root,
            sentinel,
            snapshot,
        }
    }

    /// A fresh, empty destination (the previous one is removed).
    pub fn dst(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        remove(&d);
        fs::create_dir(&d).unwrap();
        d
    }

    /// Panic if anything outside the destinations `allowed` changed.
    pub fn check_contained(&self, allowed: &[&str]) {
        assert_eq!(
            snapshot(&self.sentinel),
            self.snapshot,
            "the sentinel changed"
        );
        for e in fs::read_dir(&self.root).unwrap() {
            let n = e.unwrap().file_name();
            let n = n.to_string_lossy();
            assert!(
                n == "sentinel" || allowed.contains(&n.as_ref()),
                "{n} appeared beside the destination"
            );
        }
    }
}

/// Remove a tree the fuzzer made (it may be deep, or hold 0500 dirs).
pub fn remove(p: &Path) {
    if fs::symlink_metadata(p).is_err() {
        return;
    }
    let parent = p.parent().unwrap();
    let dir = rustix_free_open(parent);
    let _ =
        lamina::fs::remove::remove_all(std::os::fd::AsFd::as_fd(&dir), p.file_name().unwrap(), p);
}

fn rustix_free_open(p: &Path) -> fs::File {
    fs::File::open(p).unwrap()
}

/// One entry of a tree, as a differential target compares them.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: u32,
    pub mode: u32,
    pub size: u64,
    pub link: Option<PathBuf>,
    pub data: Vec<u8>,
}

/// Path -> entry, for the whole tree under `root` (bounded, for fuzzing).
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let p = root.join(&rel);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let kind = m.mode() & 0o170000;
        let link = m
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(&p).unwrap());
        let mut data = Vec::new();
        if m.is_file() {
            if let Ok(mut f) = fs::File::open(&p) {
                let _ = f.by_ref().take(1 << 20).read_to_end(&mut data);
            }
        }
        let dir_mtime_free_mode = m.mode() & 0o7777;
        out.insert(
            rel.clone(),
            Node {
                kind,
                mode: dir_mtime_free_mode,
                size: if m.is_dir() { 0 } else { m.size() },
                link,
                data,
            },
        );
        if m.is_dir() && out.len() < 10_000 {
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    todo.push(rel.join(e.file_name()));
                }
            }
        }
    }
    out
}
