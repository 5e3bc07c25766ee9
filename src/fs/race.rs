//! A test hook at the moment a new entry has just been made, so that tests
//! can play the process that swaps it for a symlink before lamina sets its
//! metadata (see [`super::handle`]). Outside `cfg(test)` it is an empty
//! inline function.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

#[cfg(test)]
mod hook {
    use std::ffi::OsStr;
    use std::os::fd::BorrowedFd;
    use std::sync::{Mutex, MutexGuard, RwLock};

    type Hook = Box<dyn Fn(BorrowedFd<'_>, &OsStr) + Send + Sync>;

    static HOOK: RwLock<Option<Hook>> = RwLock::new(None);
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// The hook is installed while this lives; one test at a time.
    pub(crate) struct Installed(#[allow(dead_code)] MutexGuard<'static, ()>);

    impl Drop for Installed {
        fn drop(&mut self) {
            *HOOK.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Call `f(dir, name)` right after every entry lamina creates, until the
    /// returned guard is dropped.
    pub(crate) fn install(f: impl Fn(BorrowedFd<'_>, &OsStr) + Send + Sync + 'static) -> Installed {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        *HOOK.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
        Installed(guard)
    }

    pub(super) fn run(dir: BorrowedFd<'_>, name: &OsStr) {
        if let Some(h) = HOOK.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            h(dir, name);
        }
    }
}

#[cfg(test)]
pub(crate) use hook::install;

/// `dir/name` was just created.
#[inline(always)]
pub(crate) fn created(dir: BorrowedFd<'_>, name: &OsStr) {
    #[cfg(test)]
    hook::run(dir, name);
    #[cfg(not(test))]
    let _ = (dir, name);
}

/// The racer of issue 8 §1: every entry lamina makes is exchanged
/// (`renameat2(RENAME_EXCHANGE)`) for a symlink to a sentinel outside the
/// tree the moment after it is made, for apply, copy (both modes) and the
/// init layer. The sentinel's mode, owner, times and xattrs must not move:
/// its ctime, which any metadata change bumps, is compared too.
#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::fd::BorrowedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustix::fs::{RenameFlags, Timespec, Timestamps, CWD};

    use super::install;
    use crate::archive::{apply_layer, ApplyOptions};
    use crate::copy::{copy_dir, CopyOptions};
    use crate::init_layer::{setup_init_layer_with, InitEntry, InitKind};

    /// mode, uid, gid, mtime, ctime (s, ns), xattrs of the sentinel.
    type Snapshot = (u32, u32, u32, i64, (i64, i64), Vec<(String, Vec<u8>)>);

    struct Sentinels {
        _tmp: tempfile::TempDir,
        file: PathBuf,
        dir: PathBuf,
        work: PathBuf,
    }

    impl Sentinels {
        fn new() -> Sentinels {
            let tmp = tempfile::tempdir().unwrap();
            let file = tmp.path().join("sentinel");
            let dir = tmp.path().join("sentinel-dir");
            std::fs::write(&file, "secret").unwrap();
            std::fs::create_dir(&dir).unwrap();
            for (p, mode) in [(&file, 0o600), (&dir, 0o700)] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
                rustix::fs::setxattr(
                    p.as_path(),
                    "user.sentinel",
                    b"1",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
                let t = Timespec {
                    tv_sec: 1000,
                    tv_nsec: 0,
                };
                let ts = Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(CWD, p.as_path(), &ts, rustix::fs::AtFlags::empty()).unwrap();
            }
            let work = tmp.path().join("work");
            std::fs::create_dir(&work).unwrap();
            Sentinels {
                _tmp: tmp,
                file,
                dir,
                work,
            }
        }

        fn snapshot(p: &Path) -> Snapshot {
            let m = std::fs::symlink_metadata(p).unwrap();
            let mut x: Vec<(String, Vec<u8>)> = crate::fs::xattr::get_all(
                rustix::fs::open(
                    p.parent().unwrap(),
                    rustix::fs::OFlags::PATH,
                    rustix::fs::Mode::empty(),
                )
                .unwrap(),
                p.file_name().unwrap(),
                p,
            )
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v))
            .collect();
            x.sort();
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                (m.ctime(), m.ctime_nsec()),
                x,
            )
        }

        fn snapshots(&self) -> [Snapshot; 2] {
            [Self::snapshot(&self.file), Self::snapshot(&self.dir)]
        }

        /// Swap every new entry named `race*` for a symlink to a sentinel
        /// (the directory sentinel for names with `-d`); counts the swaps.
        fn race(&self) -> (super::hook::Installed, Arc<AtomicUsize>) {
            let swaps = Arc::new(AtomicUsize::new(0));
            let n = swaps.clone();
            let (file, dir) = (self.file.clone(), self.dir.clone());
            let guard = install(move |at: BorrowedFd<'_>, name: &OsStr| {
                let b = name.as_bytes();
                if !b.starts_with(b"race") || b.ends_with(b".swap") {
                    return;
                }
                let target = if b.windows(2).any(|w| w == b"-d") {
                    &dir
                } else {
                    &file
                };
                let mut swap = name.to_os_string();
                swap.push(".swap");
                rustix::fs::symlinkat(target.as_path(), at, swap.as_os_str()).unwrap();
                rustix::fs::renameat_with(at, swap.as_os_str(), at, name, RenameFlags::EXCHANGE)
                    .unwrap();
                n.fetch_add(1, Ordering::SeqCst);
            });
            (guard, swaps)
        }
    }

    fn tar_entry(name: &str, flag: u8, mode: u32, data: &[u8], link: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.extend_from_slice(data);
        h.resize(h.len().div_ceil(512) * 512, 0);
        h
    }

    #[test]
    fn apply_never_follows_a_swapped_entry() {
        let s = Sentinels::new();
        let before = s.snapshots();
        let cases = [
            tar_entry("race-d", b'5', 0o6777, b"", ""),
            tar_entry("race-p", b'6', 0o6777, b"", ""),
            tar_entry("race-f", b'0', 0o6777, b"data", ""),
            tar_entry("race-s", b'2', 0o777, b"", "somewhere"),
            // A missing parent made on the way.
            tar_entry("race-dp/f", b'0', 0o644, b"x", ""),
        ];
        let (_guard, swaps) = s.race();
        for (i, case) in cases.iter().enumerate() {
            let dst = s.work.join(format!("apply{i}"));
            std::fs::create_dir(&dst).unwrap();
            let mut tar = case.clone();
            tar.extend([0u8; 1024]);
            // Refused (a symlink where the new entry was) or applied to the
            // entry itself: either way the sentinels stay as they were.
            let _ = apply_layer(&dst, &tar[..], &ApplyOptions::default());
            assert_eq!(s.snapshots(), before, "case {i}");
        }
        assert!(swaps.load(Ordering::SeqCst) >= cases.len());
    }

    fn source_tree(root: &Path) {
        std::fs::create_dir(root).unwrap();
        std::fs::create_dir(root.join("race-d")).unwrap();
        std::fs::set_permissions(root.join("race-d"), std::fs::Permissions::from_mode(0o6777))
            .unwrap();
        rustix::fs::mkfifoat(CWD, root.join("race-p").as_path(), 0o600.into()).unwrap();
        std::fs::set_permissions(root.join("race-p"), std::fs::Permissions::from_mode(0o6777))
            .unwrap();
        std::fs::write(root.join("race-f"), "data").unwrap();
        std::os::unix::fs::symlink("somewhere", root.join("race-s")).unwrap();
    }

    #[test]
    fn copy_never_follows_a_swapped_entry() {
        let s = Sentinels::new();
        let before = s.snapshots();
        let src = s.work.join("src");
        source_tree(&src);
        let (_guard, swaps) = s.race();
        for hardlink in [false, true] {
            for threads in [1, 4] {
                let dst = s.work.join(format!("copy-{hardlink}-{threads}"));
                let opts = CopyOptions { hardlink, threads };
                let _ = copy_dir(&src, &dst, &opts);
                assert_eq!(
                    s.snapshots(),
                    before,
                    "hardlink={hardlink} threads={threads}"
                );
            }
        }
        assert!(swaps.load(Ordering::SeqCst) >= 4);
    }

    #[test]
    fn init_layer_never_follows_a_swapped_entry() {
        let s = Sentinels::new();
        let before = s.snapshots();
        let (_guard, swaps) = s.race();
        for (i, kind) in [InitKind::Dir, InitKind::File].into_iter().enumerate() {
            let layer = s.work.join(format!("init{i}"));
            std::fs::create_dir(&layer).unwrap();
            let name = if kind == InitKind::Dir {
                "/race-d"
            } else {
                "/race-f"
            };
            let _ = setup_init_layer_with(&layer, &[InitEntry::new(name, kind)]);
            assert_eq!(s.snapshots(), before, "{name}");
        }
        assert_eq!(swaps.load(Ordering::SeqCst), 2);
    }
}
