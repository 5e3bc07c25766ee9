//! The view and the analysis against oracles: a stack of overlay-form
//! diffs must read as the same diffs applied one after the other onto one
//! tree (containerd's snapshotter test suite compares a layer chain with a
//! flat directory the same way); dive's own test cases give dive's numbers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::analysis::{dive_efficiency, replay};
use super::entry::EntryKind;
use super::layers::{DiffEntry, LayerDiff, Meta, Op};
use super::View;
use crate::archive::{apply_layer, ApplyOptions, WhiteoutMode};
use crate::export_diff;

/// The view of `dirs`, uppermost first.
fn tree(dirs: &[&Path]) -> Arc<View> {
    let dirs: Vec<PathBuf> = dirs.iter().map(|p| p.to_path_buf()).collect();
    Arc::new(View::of_stack(&dirs).unwrap())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// (path, kind, mode, size, mtime, linkname, content) of every entry of a
/// walk.
type Row = (
    String,
    &'static str,
    u32,
    u64,
    (i64, u32),
    Option<PathBuf>,
    Vec<u8>,
);

fn walked(view: &Arc<View>) -> Vec<Row> {
    view.clone()
        .walk(Path::new("/"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let data = if e.kind == EntryKind::File {
                view.read(&e.path).unwrap()
            } else {
                Vec::new()
            };
            (
                e.path.display().to_string(),
                e.kind.name(),
                e.mode,
                e.size,
                e.mtime,
                e.linkname,
                data,
            )
        })
        .collect()
}

#[test]
fn a_tree_resolves_symlinks_inside_itself() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::create_dir_all(r.join("usr/lib")).unwrap();
    fs::write(r.join("etc/passwd"), "root:x:0:0\n").unwrap();
    fs::write(r.join("usr/lib/libc"), "elf").unwrap();
    fs::hard_link(r.join("usr/lib/libc"), r.join("usr/lib/libc-link")).unwrap();
    symlink("usr/lib", r.join("lib")).unwrap();
    symlink("/etc", r.join("abs")).unwrap();
    symlink("../../../../etc/passwd", r.join("usr/up")).unwrap();
    symlink("loop", r.join("loop")).unwrap();
    fs::write(r.join("file"), "f").unwrap();
    // Outside the tree: a symlink may name it, never reach it.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "no").unwrap();
    symlink(outside.path().join("secret"), r.join("escape")).unwrap();

    let v = tree(&[r]);
    assert_eq!(v.read(Path::new("/lib/libc")).unwrap(), b"elf");
    assert_eq!(v.read(Path::new("abs/passwd")).unwrap(), b"root:x:0:0\n");
    assert_eq!(v.read(Path::new("/usr/up")).unwrap(), b"root:x:0:0\n");
    let e = v.stat(Path::new("/lib/libc"), false).unwrap();
    assert_eq!(e.path, Path::new("/usr/lib/libc"));
    let e = v.stat(Path::new("/abs"), false).unwrap();
    assert_eq!(
        (e.kind, e.linkname),
        (EntryKind::Symlink, Some("/etc".into()))
    );
    assert_eq!(
        v.stat(Path::new("/abs"), true).unwrap().path,
        Path::new("/etc")
    );
    assert_eq!(
        v.stat(Path::new("/lib/.."), true).unwrap().path,
        Path::new("/usr")
    );
    for (p, errno) in [
        ("/escape", libc::ENOENT),
        ("/nope", libc::ENOENT),
        ("/file/x", libc::ENOTDIR),
        ("/loop", libc::ELOOP),
    ] {
        let err = v.read(Path::new(p)).unwrap_err();
        assert!(err.is_errno(errno), "{p}: {err}");
        assert!(!v.exists(Path::new(p), true).unwrap(), "{p}");
    }
    assert!(v.exists(Path::new("/escape"), false).unwrap());
    assert!(v
        .read(Path::new("/etc"))
        .unwrap_err()
        .is_errno(libc::EISDIR));

    let rows = walked(&v);
    let names: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "/",
            "/abs",
            "/escape",
            "/etc",
            "/etc/passwd",
            "/file",
            "/lib",
            "/loop",
            "/usr",
            "/usr/lib",
            "/usr/lib/libc",
            "/usr/lib/libc-link",
            "/usr/up"
        ]
    );
    let link = rows.iter().find(|r| r.0 == "/usr/lib/libc-link").unwrap();
    assert_eq!(
        (link.1, link.5.clone()),
        ("hardlink", Some("/usr/lib/libc".into()))
    );
    // Walking a symlink walks what it points to.
    let sub: Vec<_> = v
        .clone()
        .walk(Path::new("/lib"))
        .unwrap()
        .map(|e| e.unwrap().path.display().to_string())
        .collect();
    assert_eq!(sub[0], "/usr/lib");
}

/// Trees to stack: each a dict of path -> content (`/` suffix: a dir,
/// `->` prefix: a symlink).
fn make(root: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(root).unwrap();
    for (p, data) in files {
        let path = root.join(p.trim_end_matches('/'));
        if p.ends_with('/') {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            match data.strip_prefix("->") {
                Some(t) => symlink(t, &path).unwrap(),
                None => fs::write(&path, data).unwrap(),
            }
        }
    }
}

#[test]
fn overlay_diffs_stack_as_their_flat_apply() {
    if !is_root() {
        // Overlay-form whiteouts are 0/0 devices: mknod needs CAP_MKNOD.
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = |n: &str| t.path().join(n);
    // Three full trees; the diffs between them carry whiteouts, a
    // directory replaced by a file and a file by a directory.
    make(
        &s("t0"),
        &[
            ("etc/passwd", "root\n"),
            ("etc/group", "wheel\n"),
            ("data/sub/a", "a"),
            ("data/sub/b", "b"),
            ("data/keep", "k"),
            ("gone/x", "x"),
            ("swap", "file"),
            ("lib", "->usr/lib"),
            ("usr/lib/libc", "c"),
        ],
    );
    make(
        &s("t1"),
        &[
            ("etc/passwd", "root\nuser\n"),
            ("data/sub/a", "A"),
            ("data/keep", "k"),
            ("swap/inner", "now a dir"),
            ("lib", "->usr/lib"),
            ("usr/lib/libc", "c"),
            ("usr/lib/new", "n"),
        ],
    );
    make(
        &s("t2"),
        &[
            ("etc/passwd", "root\nuser\n"),
            ("data", "now a file"),
            ("gone/x", "back"),
            ("swap/inner", "now a dir"),
            ("lib", "->usr/lib"),
            ("usr/lib/libc", "c2"),
        ],
    );
    let trees = [s("t0"), s("t1"), s("t2")];
    let flat = s("flat");
    fs::create_dir(&flat).unwrap();
    let mut dirs = Vec::new();
    for (i, new) in trees.iter().enumerate() {
        let mut tar = Vec::new();
        let old = (i > 0).then(|| trees[i - 1].clone());
        export_diff(old.as_deref(), new, &mut tar, &Default::default()).unwrap();
        apply_layer(&flat, &tar[..], &ApplyOptions::default()).unwrap();
        let d = s(&format!("diff{i}"));
        fs::create_dir(&d).unwrap();
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            ..Default::default()
        };
        apply_layer(&d, &tar[..], &opts).unwrap();
        dirs.push(d);
    }
    let stacked: Vec<_> = dirs.iter().rev().map(PathBuf::as_path).collect();
    let mut got = walked(&tree(&stacked));
    let mut want = walked(&tree(&[flat.as_path()]));
    // The root's time is when each directory was made.
    got[0].4 = (0, 0);
    want[0].4 = (0, 0);
    assert_eq!(got, want);
    assert!(got.iter().any(|r| r.0 == "/data" && r.1 == "file"));
    assert!(!got.iter().any(|r| r.0.starts_with("/data/")));

    // An opaque directory hides what is below it; without the mark the
    // directories merge.
    let (low, up) = (s("low"), s("up"));
    make(&low, &[("d/old", "o"), ("m/old", "o")]);
    make(&up, &[("d/new", "n"), ("m/new", "n")]);
    let upfd = rustix::fs::open(&up, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
    crate::fs::xattr::set(
        std::os::fd::AsFd::as_fd(&upfd),
        OsStr::new("d"),
        OsStr::new("trusted.overlay.opaque"),
        b"y",
        &up,
    )
    .unwrap();
    let v = tree(&[&up, &low]);
    let names: Vec<_> = walked(&v).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["/", "/d", "/d/new", "/m", "/m/new", "/m/old"]);
}

#[test]
fn deep_trees_walk_with_bounded_fds() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    // 400 levels in two stacked dirs: 800 directory fds if all were kept.
    let mut rel = PathBuf::new();
    for i in 0..400 {
        rel.push("d");
        if i % 100 == 0 {
            fs::create_dir_all(a.join(&rel)).unwrap();
            fs::write(a.join(&rel).join("sibling"), "s").unwrap();
        }
    }
    fs::create_dir_all(a.join(&rel)).unwrap();
    fs::create_dir_all(b.join(&rel)).unwrap();
    fs::write(b.join(&rel).join("leaf"), "l").unwrap();
    fs::create_dir(a.join("z")).unwrap();
    let v = tree(&[&b, &a]);
    let n = v.clone().walk(Path::new("/")).unwrap().count();
    assert_eq!(n, 1 + 400 + 4 + 1 + 1);
    let fds = fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(fds < 200, "{fds} fds open after the walk");
}

fn meta(kind: EntryKind, size: u64) -> Meta {
    Meta {
        kind,
        size,
        mode: 0o644,
        uid: 0,
        gid: 0,
        linkname: Vec::new(),
    }
}

fn diff(id: &str, entries: &[(&str, Option<u64>)]) -> Arc<LayerDiff> {
    // Some(n): a file of n bytes; None: a whiteout. Paths ending in `/`
    // are directories; `!` marks an opaque directory.
    let e = entries
        .iter()
        .map(|(p, size)| {
            let (path, op) = match (p.strip_suffix('!'), p.strip_suffix('/'), size) {
                _ if *p == "/" => ("/", Op::Put(meta(EntryKind::Dir, 0))),
                (Some(d), ..) => (d, Op::Opaque),
                (_, Some(d), _) => (d, Op::Put(meta(EntryKind::Dir, 0))),
                (_, _, Some(n)) => (*p, Op::Put(meta(EntryKind::File, *n))),
                (_, _, None) => (*p, Op::Remove),
            };
            DiffEntry {
                path: path.as_bytes().to_vec(),
                op,
            }
        })
        .collect();
    let size = entries.iter().filter_map(|(_, s)| *s).sum();
    Arc::new(LayerDiff::new(id, size, e))
}

/// dive's `TestEfficiency` and `TestEfficiency_ScratchImage`
/// (dive/filetree/efficiency_test.go): parents are unlisted there, so
/// they are not directories and the whiteout of one counts 0.
#[test]
fn dive_test_cases() {
    let chain = [
        diff(
            "0",
            &[
                ("/etc/nginx/nginx.conf", Some(2000)),
                ("/etc/nginx/public", Some(3000)),
            ],
        ),
        diff(
            "1",
            &[
                ("/etc/nginx/nginx.conf", Some(5000)),
                ("/etc/athing", Some(10000)),
            ],
        ),
        diff("2", &[("/etc/nginx", None)]),
    ];
    let d = dive_efficiency(&chain);
    assert_eq!(d.score, 0.75);
    assert_eq!(d.inefficiencies.len(), 1);
    assert_eq!(d.inefficiencies[0].path, b"/etc/nginx/nginx.conf");
    assert_eq!(d.inefficiencies[0].bytes, 7000);

    let scratch = [
        diff("0", &[("/nothing", Some(0))]),
        diff("1", &[]),
        diff("2", &[]),
    ];
    let d = dive_efficiency(&scratch);
    assert_eq!((d.score, d.inefficiencies.len()), (1.0, 0));

    // A listed directory whited out counts its whole subtree.
    let listed = [
        diff(
            "0",
            &[
                ("/etc/", Some(0)),
                ("/etc/nginx/", Some(0)),
                ("/etc/nginx/a", Some(30)),
            ],
        ),
        diff("1", &[("/etc/", Some(0)), ("/etc/nginx", None)]),
    ];
    let d = dive_efficiency(&listed);
    assert_eq!(d.score, 1.0, "the directory path counts its subtree once");
}

#[test]
fn replay_accounts_each_layer() {
    let chain = [
        diff(
            "0",
            &[
                ("/", Some(0)),
                ("/a/", Some(0)),
                ("/a/x", Some(10)),
                ("/a/sub/", Some(0)),
                ("/a/sub/y", Some(20)),
                ("/b", Some(5)),
                ("/dir/", Some(0)),
                ("/dir/c", Some(7)),
            ],
        ),
        diff(
            "1",
            &[
                ("/a/", Some(0)),
                ("/a!", None),
                ("/a/x", Some(11)),
                ("/b", None),
                ("/dir", Some(3)),
                ("/new/deep/f", Some(1)),
            ],
        ),
    ];
    let r = replay(&chain);
    let paths = |v: &[super::PathChange]| -> BTreeMap<String, u64> {
        v.iter()
            .map(|c| (String::from_utf8(c.path.clone()).unwrap(), c.bytes))
            .collect()
    };
    assert_eq!(r[0].added.len(), 7);
    assert_eq!(r[0].added_bytes, 42);
    let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    };
    assert_eq!(
        paths(&r[1].added),
        m(&[("/new", 0), ("/new/deep", 0), ("/new/deep/f", 1)])
    );
    assert_eq!(
        paths(&r[1].modified),
        m(&[("/a", 0), ("/a/x", 11), ("/dir", 3)])
    );
    // The directory replaced by a file takes /dir/c unlisted.
    assert_eq!(paths(&r[1].removed), m(&[("/a/sub", 20), ("/b", 5)]));
    assert_eq!(r[0].hidden_bytes, 10 + 20 + 5 + 7);
    assert_eq!(r[1].hidden_bytes, 0);
}

#[test]
fn entries_carry_their_metadata() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::write(r.join("f"), "12345").unwrap();
    let m = fs::metadata(r.join("f")).unwrap();
    let v = tree(&[r]);
    let e = v.stat(Path::new("/f"), false).unwrap();
    assert_eq!(e.size, 5);
    assert_eq!(e.mode, m.mode() & 0o7777);
    assert_eq!((e.uid, e.gid), (m.uid(), m.gid()));
    assert_eq!(e.mtime, (m.mtime(), m.mtime_nsec() as u32));
    assert_eq!(e.layer, None);
    assert_eq!(e.path.as_os_str().as_bytes(), b"/f");
}
