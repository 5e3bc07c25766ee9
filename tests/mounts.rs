//! Real mounts through `LinuxMounter` and the persisted refcounts.
//!
//! Runs only as root, and never in the caller's mount namespace: the test
//! re-runs itself (this test binary, filtered to one test) as a child that
//! `unshare(CLONE_NEWNS)`s and makes `/` recursively private before `exec`,
//! so no mount, even one leaked by a failing assertion, can reach the host.
//! The parent then checks that its own mount table gained nothing.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lamina::driver::mount::{MountRefs, Owner};
use lamina::driver::mounter::{LinuxMounter, MountSpec, Mounter};
use lamina::driver::mountinfo;
use lamina::driver::probe::HostProbe;
use lamina::Error;

const CHILD_ENV: &str = "LAMINA_TEST_MOUNTS_DIR";

fn host_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Run `name` from this test binary as a child in its own private mount
/// namespace, with `dir` passed down; assert it passed and leaked nothing.
fn run_isolated(name: &str, dir: &Path) {
    let before = host_mounts();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir);
    // SAFETY: between fork and exec only async-signal-safe calls (two raw
    // syscalls) run, touching no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "isolated child {name} failed: {status}");
    let after = host_mounts();
    let needle = dir.to_string_lossy().into_owned();
    let leaked: Vec<&String> = after
        .difference(&before)
        .filter(|l| l.contains(&needle))
        .collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:?}");
    let other: Vec<&String> = after.symmetric_difference(&before).collect();
    if !other.is_empty() {
        // Other processes on the host may mount meanwhile; only ours count.
        println!("note: host mount table changed by someone else: {other:?}");
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn mounted_at(target: &Path) -> Vec<mountinfo::MountInfo> {
    mountinfo::read()
        .unwrap()
        .into_iter()
        .filter(|m| m.mount_point == target)
        .collect()
}

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[test]
fn overlay_and_readonly_bind_refcounted() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        if !is_root() {
            println!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // The kernel reports canonical mount points.
        let dir = tmp.path().canonicalize().unwrap();
        run_isolated("overlay_and_readonly_bind_refcounted", &dir);
        return;
    };
    let initial = mountinfo::read().unwrap();

    let probe = HostProbe::run(&dir).unwrap();
    println!("probe: {:?} -> {}", probe.to_pairs(), probe.auto_driver());
    let overlay = probe.overlay_mounts == Some(Ok(()));
    assert_eq!(probe.auto_driver(), if overlay { "overlay" } else { "vfs" });

    let [lower, upper, work, merged, ro] =
        ["lower", "upper", "work", "merged", "ro"].map(|d| dir.join(d));
    for d in [&lower, &upper, &work, &merged, &ro] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(lower.join("a"), "from lower").unwrap();
    let refs = MountRefs::open(&dir.join("mounts"), LinuxMounter).unwrap();

    // A read-only bind: shows the tree, refuses writes (EROFS).
    let (rid, bind) = (
        id(1),
        MountSpec::ReadOnlyBind {
            source: lower.clone(),
        },
    );
    assert_eq!(refs.get(&rid, &ro, &bind, false).unwrap(), 1);
    assert_eq!(refs.get(&rid, &ro, &bind, false).unwrap(), 2);
    let m = mounted_at(&ro);
    assert_eq!(m.len(), 1, "mounted twice: {m:?}");
    assert!(m[0].is_read_only());
    assert_eq!(std::fs::read_to_string(ro.join("a")).unwrap(), "from lower");
    let err = std::fs::write(ro.join("b"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(refs.put(&rid, &ro).unwrap(), Some(1));
    assert_eq!(mounted_at(&ro).len(), 1);
    assert_eq!(refs.put(&rid, &ro).unwrap(), Some(0));
    assert!(mounted_at(&ro).is_empty());

    if !overlay {
        println!(
            "skipped overlay part: {:?}",
            probe.overlay_unavailable_reason()
        );
        assert_eq!(mountinfo::read().unwrap(), initial);
        return;
    }

    // A writable overlay: writes land in upper/, never in lower/.
    let oid = id(2);
    let spec = MountSpec::Overlay {
        lower: vec![lower.clone()],
        upper: Some(upper.clone()),
        work: Some(work.clone()),
        options: vec![],
    };
    assert_eq!(refs.get(&oid, &merged, &spec, false).unwrap(), 1);
    let m = mounted_at(&merged);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].fs_type, "overlay");
    assert_eq!(
        std::fs::read_to_string(merged.join("a")).unwrap(),
        "from lower"
    );
    std::fs::write(merged.join("b"), "new").unwrap();
    assert!(upper.join("b").exists() && !lower.join("b").exists());

    // A process that dies holding a reference: its count does not block
    // release, and its mount is reused rather than stacked.
    let ghost = Owner {
        pid: refs.owner().unwrap().pid,
        start_time: refs.owner().unwrap().start_time + 1,
    };
    let crashed = MountRefs::open(&dir.join("mounts"), LinuxMounter)
        .unwrap()
        .with_owner(ghost);
    assert_eq!(crashed.get(&oid, &merged, &spec, false).unwrap(), 2);
    assert_eq!(
        refs.put(&oid, &merged).unwrap(),
        Some(0),
        "the ghost's reference is not live"
    );
    assert!(mounted_at(&merged).is_empty());

    assert_eq!(crashed.get(&oid, &merged, &spec, false).unwrap(), 1);
    let report = refs.transaction().unwrap().reconcile().unwrap();
    assert_eq!(report.dead_refs, 1);
    assert_eq!(report.orphaned, vec![oid.clone()]);
    assert_eq!(refs.get(&oid, &merged, &spec, false).unwrap(), 1);
    assert_eq!(mounted_at(&merged).len(), 1, "leftover mount stacked");
    match crashed.transaction().unwrap().release(&oid, &merged) {
        Err(Error::LayerInUse { .. }) => {}
        other => panic!("release of a live mount: {other:?}"),
    }

    // Unmounted behind lamina's back: the count goes at the next open.
    LinuxMounter.unmount(&merged).unwrap();
    let report = refs.transaction().unwrap().reconcile().unwrap();
    assert_eq!(report.vanished, vec![oid.clone()]);
    assert_eq!(refs.count(&oid).unwrap(), 0);

    // A leftover mount with no record at all is released before delete.
    LinuxMounter.mount(&spec, &merged).unwrap();
    refs.transaction().unwrap().release(&oid, &merged).unwrap();
    assert!(mounted_at(&merged).is_empty());

    assert_eq!(mountinfo::read().unwrap(), initial);
}
