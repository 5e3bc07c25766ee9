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
    assert_eq!(
        probe.auto_driver(),
        if overlay { "overlay2" } else { "vfs" }
    );

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
        relative: None,
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

/// A layer tar: `dir/` is a directory, `name` with `Some(data)` a file
/// (`.wh.` names are whiteouts, empty files).
fn layer_tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    use lamina::archive::tar_writer::{EntryType, Header, TarWriter};
    let mut w = TarWriter::new(Vec::new());
    for (name, data) in entries {
        let dir = data.is_none();
        let body = data.unwrap_or("").as_bytes();
        w.write_header(&Header {
            path: name.as_bytes().to_vec(),
            kind: if dir { EntryType::Dir } else { EntryType::File },
            mode: if dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: body.len() as u64,
            mtime: (1_700_000_000, 0),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        })
        .unwrap();
        if !dir {
            w.write_payload(&mut &body[..], body.len() as u64, &mut [0u8; 4096])
                .unwrap();
        }
    }
    w.finish().unwrap()
}

/// Layer `i` of a deep image: adds `keep/k<i>`, rewrites `top`, adds
/// `gone<i>` and deletes `gone<i-1>`.
fn deep_layer(i: usize) -> Vec<u8> {
    let (k, gone, wh) = (
        format!("keep/k{i}"),
        format!("gone{i}"),
        format!(".wh.gone{}", i.wrapping_sub(1)),
    );
    let text = i.to_string();
    let mut e: Vec<(&str, Option<&str>)> = vec![
        ("keep/", None),
        (&k, Some("k")),
        ("top", Some(&text)),
        (&gone, Some("g")),
    ];
    if i > 0 {
        e.push((&wh, Some("")));
    }
    layer_tar(&e)
}

/// What the merged view of layer `i` of [`deep_layer`]s must show.
fn check_deep_view(view: &Path, i: usize) {
    assert_eq!(std::fs::read_dir(view.join("keep")).unwrap().count(), i + 1);
    assert_eq!(
        std::fs::read_to_string(view.join("top")).unwrap(),
        i.to_string()
    );
    assert!(view.join(format!("gone{i}")).exists());
    if i > 0 {
        assert!(!view.join(format!("gone{}", i - 1)).exists());
    }
}

/// overlay2 stacks every layer's diff/ as a lower: 128 everywhere (mount(2)
/// with short names, `ClassicMounter`), more where the kernel takes them
/// one at a time; past a page without lowerdir+, an error that says so.
#[test]
fn overlay2_stacks_past_a_page() {
    use lamina::driver::mounter::{lowerdir_plus, ClassicMounter};
    use lamina::graph::{Graph, Metadata};
    use std::sync::Arc;
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        if !is_root() {
            println!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        run_isolated("overlay2_stacks_past_a_page", &dir);
        return;
    };
    if HostProbe::run(&dir).unwrap().overlay_mounts != Some(Ok(())) {
        println!("skipped: overlayfs does not mount here");
        return;
    }
    let initial = mountinfo::read().unwrap();
    // More short names than a page holds (27 bytes each).
    let deep = 160;
    let mut mounters: Vec<(&str, Arc<dyn Mounter>)> = vec![("classic", Arc::new(ClassicMounter))];
    if lowerdir_plus() {
        mounters.push(("lowerdir+", Arc::new(LinuxMounter)));
    } else {
        println!("note: no lowerdir+ on this kernel; only mount(2) is tested");
    }
    for (name, mounter) in mounters {
        let g = Graph::open_with(&dir.join(name), "overlay2", mounter).unwrap();
        let mut layers: Vec<lamina::Layer> = Vec::new();
        for i in 0..deep {
            let tar = deep_layer(i);
            let parent = layers.last().map(|l| l.id().to_owned());
            let l = g
                .register(&mut &tar[..], parent.as_deref(), None, Metadata::new())
                .unwrap();
            layers.push(l);
        }
        // 128 lowers: the layer itself and 127 ancestors.
        let view = layers[127].mount(false).unwrap();
        check_deep_view(&view, 127);
        let err = std::fs::write(view.join("x"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{name}");
        // A container on it: 128 lowers and an upper.
        let c = g
            .create(Some(layers[127].id()), None, false, Metadata::new())
            .unwrap();
        let root = c.mount(false).unwrap();
        std::fs::write(root.join("top"), "container").unwrap();
        std::fs::remove_file(root.join("keep/k0")).unwrap();
        c.unmount().unwrap();
        let changes: Vec<String> = c
            .changes()
            .unwrap()
            .into_iter()
            .map(|ch| format!("{} {}", ch.kind.code(), ch.path.display()))
            .collect();
        assert_eq!(changes, ["C /keep", "D /keep/k0", "C /top"], "{name}");
        assert_eq!(std::fs::read_to_string(view.join("top")).unwrap(), "127");
        layers[127].unmount().unwrap();

        let top = &layers[deep - 1];
        match (name, top.mount(false)) {
            ("classic", Err(e @ Error::Driver(_))) => {
                let m = e.to_string();
                assert!(m.contains("160 lower layers") && m.contains("4095"), "{m}");
            }
            ("classic", other) => panic!("{deep} short names fit a page? {other:?}"),
            (_, Ok(view)) => {
                check_deep_view(&view, deep - 1);
                top.unmount().unwrap();
            }
            (_, Err(e)) => panic!("{name}: {e}"),
        }
        let status = g.status().unwrap();
        let get = |k: &str| {
            status
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("native_diff").as_deref(), Some("true"));
        println!("{name}: {:?}", get("mount_api"));
        g.close().unwrap();
    }
    assert_eq!(mountinfo::read().unwrap(), initial);
}

/// Where redirect_dir or metacopy is on, overlay2 compares mounted views
/// (moby's naiveDiff); both ways give the same change list, and diffs that
/// rebuild the same trees.
#[test]
fn overlay2_naive_diff_equals_native() {
    use lamina::driver::{open, LayerDir};
    use lamina::{changes, ChangesOptions};
    use std::sync::Arc;
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        if !is_root() {
            println!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        run_isolated("overlay2_naive_diff_equals_native", &dir);
        return;
    };
    let probe = HostProbe::run(&dir).unwrap();
    if probe.overlay_mounts != Some(Ok(())) {
        println!("skipped: overlayfs does not mount here");
        return;
    }
    let initial = mountinfo::read().unwrap();
    let mut redirect = probe.clone();
    redirect
        .overlay_parameters
        .insert("redirect_dir".into(), "Y".into());
    let mut plain = probe.clone();
    plain.overlay_parameters.remove("redirect_dir");
    plain.overlay_parameters.remove("metacopy");
    for home in ["native", "naive"] {
        std::fs::create_dir(dir.join(home)).unwrap();
    }
    let native = open(
        "overlay2",
        &dir.join("native"),
        Arc::new(LinuxMounter),
        Some(plain),
    )
    .unwrap();
    let naive = open(
        "overlay2",
        &dir.join("naive"),
        Arc::new(LinuxMounter),
        Some(redirect),
    )
    .unwrap();
    let status = naive.status();
    assert!(
        status.contains(&("native_diff".into(), "false".into())),
        "{status:?}"
    );
    assert!(
        status.contains(&("native_diff_disabled_by".into(), "redirect_dir=on".into())),
        "{status:?}"
    );

    let ids: Vec<String> = (1..=4).map(id).collect();
    let dirs: Vec<PathBuf> = ids.iter().map(|i| dir.join("layers").join(i)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let ld = |n: usize| LayerDir {
        id: &ids[n],
        dir: &dirs[n],
    };
    let base = layer_tar(&[
        ("etc/", None),
        ("etc/hosts", Some("hosts")),
        ("etc/passwd", Some("root")),
        ("opt/", None),
        ("opt/a", Some("a")),
        ("opt/sub/", None),
        ("opt/sub/b", Some("b")),
        ("var/", None),
        ("var/log", Some("log")),
    ]);
    let mid = layer_tar(&[
        ("etc/", None),
        ("etc/.wh.hosts", Some("")),
        ("opt/", None),
        ("opt/.wh..wh..opq", Some("")),
        ("opt/fresh", Some("fresh")),
        ("var/", None),
        ("var/log", Some("more log")),
    ]);
    let mut sink = Vec::new();
    native
        .apply_diff(ld(0), &[], &mut &base[..], &mut sink)
        .unwrap();
    native
        .apply_diff(ld(1), &[ld(0)], &mut &mid[..], &mut Vec::new())
        .unwrap();
    // A container on an -init layer, changed through its mount.
    native.create_init(ld(2), &[ld(0), ld(1)]).unwrap();
    let chain = [ld(0), ld(1), ld(2)];
    native.create(ld(3), &chain).unwrap();
    let root = native.get(ld(3), &chain, true, false).unwrap();
    std::fs::write(root.join("etc/passwd"), "root\nuser").unwrap();
    std::fs::remove_file(root.join("var/log")).unwrap();
    std::fs::create_dir(root.join("srv")).unwrap();
    std::fs::write(root.join("srv/new"), "new").unwrap();
    std::fs::hard_link(root.join("opt/fresh"), root.join("opt/fresh-link")).unwrap();
    assert!(root.join(".dockerenv").exists() && !root.join("opt/a").exists());
    native.put(ld(3)).unwrap();

    let views = dir.join("views");
    std::fs::create_dir(&views).unwrap();
    for (n, parents) in [(1, &chain[..1]), (2, &chain[..2]), (3, &chain[..])] {
        let a = native.changes(ld(n), parents).unwrap();
        let b = naive.changes(ld(n), parents).unwrap();
        assert_eq!(a, b, "layer {n}");
        assert!(!a.is_empty());
        assert_eq!(
            native.diff_size(ld(n), parents).unwrap(),
            naive.diff_size(ld(n), parents).unwrap()
        );
        // Each diff, applied onto a copy of the parent's view, gives the
        // layer's view. (The two drivers share the layers but not their
        // mount counts: one mounts at a time.)
        let (pl, above) = parents.split_last().unwrap();
        let copy = |l: LayerDir<'_>, ls: &[LayerDir<'_>], rw: bool, to: &Path| {
            let view = native.get(l, ls, rw, false).unwrap();
            lamina::copy_dir(&view, to, &lamina::CopyOptions::new()).unwrap();
            native.put(l).unwrap();
        };
        let want = views.join(format!("want{n}"));
        copy(ld(n), parents, n == 3, &want);
        for (how, d) in [("native", &native), ("naive", &naive)] {
            let mut tar = Vec::new();
            d.diff(ld(n), parents, &mut tar).unwrap();
            let got = views.join(format!("{how}{n}"));
            copy(*pl, above, false, &got);
            lamina::apply_layer(&got, &tar[..], &lamina::ApplyOptions::default()).unwrap();
            let left = changes(&want, &got, &ChangesOptions { content: true }).unwrap();
            let left: Vec<_> = left
                .into_iter()
                .filter(|c| c.path != Path::new("/"))
                .collect();
            assert!(left.is_empty(), "layer {n}, {how} diff: {left:?}");
        }
    }
    assert_eq!(mountinfo::read().unwrap(), initial);
}
