//! Small trees, checked against the source with `lstat`: no privilege needed.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};

use super::*;

fn set_times(p: &Path, sec: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// (path and link group, mode, uid, gid, size, mtime, atime, target, digest).
type Record = (
    String,
    u32,
    u32,
    u32,
    u64,
    i64,
    i64,
    Option<String>,
    Vec<u8>,
);

/// Everything a copy must keep, per relative path, plus hard-link groups.
fn manifest(root: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let mut inodes = std::collections::HashMap::new();
    fn walk(
        root: &Path,
        p: &Path,
        out: &mut Vec<Record>,
        inodes: &mut std::collections::HashMap<u64, String>,
    ) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let target = m
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(p).unwrap().display().to_string());
        // A short digest keeps failure messages readable.
        let data = if m.is_file() {
            let d = fs::read(p).unwrap();
            let h = d.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            h.to_le_bytes().to_vec()
        } else {
            Vec::new()
        };
        let group = if !m.is_dir() && m.nlink() > 1 {
            inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone()
        } else {
            String::new()
        };
        let size = if m.is_dir() { 0 } else { m.size() };
        out.push((
            format!("{rel} {group}"),
            m.mode(),
            m.uid(),
            m.gid(),
            size,
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            // atime: reading a tree moves it (relatime); the Python suite
            // compares atimes where they are stable.
            0,
            target,
            data,
        ));
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for n in names {
                walk(root, &n, out, inodes);
            }
        }
    }
    walk(root, root, &mut out, &mut inodes);
    out
}

/// A tree with every type an unprivileged caller can make.
fn sample(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/file"), b"hello").unwrap();
    fs::write(root.join("a/b/ro"), b"read only").unwrap();
    fs::set_permissions(root.join("a/b/ro"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::hard_link(root.join("a/file"), root.join("a/b/c/link")).unwrap();
    symlink("../file", root.join("a/b/sym")).unwrap();
    symlink("dangling", root.join("dangling")).unwrap();
    fs::hard_link(root.join("dangling"), root.join("a/dangling2")).unwrap();
    rustix::fs::mknodat(
        CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        root.join("sock"),
        FileType::Socket,
        Mode::from_raw_mode(0o755),
        0,
    )
    .unwrap();
    for i in 0..200 {
        fs::write(root.join(format!("a/b/c/f{i}")), format!("{i}")).unwrap();
    }
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    rustix::io::pwrite(&sparse, b"middle", 32 << 20).unwrap();
    drop(sparse);
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
    // Children first, so the directory times below are the final ones.
    for (i, p) in ["a/b/c/f1", "a/b/sym", "a/b/c", "a/b", "a", "sparse", ""]
        .iter()
        .enumerate()
    {
        set_times(
            &root.join(p),
            1_500_000_000 + i as i64,
            123_456_789 + i as i64,
        );
    }
}

fn cleanup(root: &Path) {
    // a/b is 0555: make it writable again so tempdir can remove it.
    for p in ["src/a/b", "dst/a/b", "link/a/b"] {
        let _ = fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn full_copy_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    sample(&src);
    let before = manifest(&src);
    let stats = copy_dir(&src, &dst, &CopyOptions::new()).unwrap();
    let after = manifest(&dst);
    cleanup(tmp.path());
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a, b);
    }
    assert_eq!(stats.dirs, 3);
    assert_eq!(stats.links, 2);
    assert_eq!(stats.specials, 2);
    // Holes stay holes: 64 MiB of size, a few KiB of blocks.
    assert!(fs::metadata(dst.join("sparse")).unwrap().blocks() < 1024);
}

#[test]
fn hardlink_copy_shares_inodes_and_leaves_source_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("link"));
    fs::create_dir(&src).unwrap();
    sample(&src);
    let ctimes = |root: &Path| {
        manifest(root)
            .iter()
            .map(|r| {
                let m = fs::symlink_metadata(root.join(r.0.split(' ').next().unwrap())).unwrap();
                (m.ino(), m.ctime(), m.ctime_nsec())
            })
            .collect::<Vec<_>>()
    };
    let before = ctimes(&src);
    copy_dir(&src, &dst, &CopyOptions::new().hardlink(true)).unwrap();
    let src_inode = fs::metadata(src.join("a/b/ro")).unwrap().ino();
    assert_eq!(fs::metadata(dst.join("a/b/ro")).unwrap().ino(), src_inode);
    // Links were added, so nlink (and ctime) of regular files moved; what
    // must not move is anything else: inode numbers, modes, owners.
    let after_src: Vec<_> = before.iter().map(|b| b.0).collect();
    assert_eq!(
        after_src,
        ctimes(&src).iter().map(|b| b.0).collect::<Vec<_>>()
    );
    let (a, b) = (manifest(&src), manifest(&dst));
    cleanup(tmp.path());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.0, x.1, x.4, x.5, &x.7, &x.8),
            (&y.0, y.1, y.4, y.5, &y.7, &y.8)
        );
    }
}

#[test]
fn dst_may_be_empty_but_not_full() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    fs::create_dir(&dst).unwrap();
    copy_dir(&src, &dst, &CopyOptions::new()).unwrap();
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"x");
    let err = copy_dir(&src, &dst, &CopyOptions::new()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    let err = copy_dir(&src, &src.join("inside"), &CopyOptions::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn error_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let err = copy_dir(
        &src.join("missing"),
        &tmp.path().join("dst"),
        &CopyOptions::new(),
    )
    .unwrap_err();
    match err {
        Error::Io { path, source, .. } => {
            assert_eq!(path, src.join("missing"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn many_threads_one_thread_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for d in 0..20 {
        fs::create_dir_all(src.join(format!("d{d}/e"))).unwrap();
        for f in 0..50 {
            fs::write(src.join(format!("d{d}/e/f{f}")), vec![d as u8; f * 100]).unwrap();
        }
        set_times(&src.join(format!("d{d}/e")), 1_000_000_000, 7);
        set_times(&src.join(format!("d{d}")), 1_000_000_000, 8);
    }
    let one = tmp.path().join("one");
    let four = tmp.path().join("four");
    copy_dir(&src, &one, &CopyOptions::new().threads(1)).unwrap();
    copy_dir(&src, &four, &CopyOptions::new().threads(4)).unwrap();
    assert_eq!(manifest(&one), manifest(&src));
    assert_eq!(manifest(&four), manifest(&src));
}
