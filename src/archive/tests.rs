//! Tests across the archive modules: hand-built tars, a mutation fuzz of
//! the reader and of apply (no panic, bounded work), reassembly.

use std::io::Cursor;

use super::reader::{Kind, NoRecord, TarReader};
use super::{apply_layer, apply_layer_with_record, reassemble, ApplyOptions};
use crate::Error;

fn header(name: &[u8], flag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn entry(name: &[u8], flag: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut v = header(name, flag, data.len() as u64, link);
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn sample() -> Vec<u8> {
    let pax_data = b"30 mtime=1600000000.123456789\n20 path=dir/paxname\n";
    let mut t = Vec::new();
    t.extend(entry(b"dir/", b'5', b"", b""));
    t.extend(entry(b"dir/file", b'0', &b"hello world".repeat(100), b""));
    t.extend(entry(b"././@PaxHeader", b'x', pax_data, b""));
    t.extend(entry(b"ignored", b'0', b"pax named", b""));
    t.extend(entry(b"dir/link", b'2', b"", b"file"));
    t.extend(entry(b"dir/hard", b'1', b"", b"dir/file"));
    t.extend(entry(b"dir/.wh.gone", b'0', b"", b""));
    t.extend([0u8; 1024]);
    t
}

#[test]
fn reads_entries() {
    let tar = sample();
    let mut rec = NoRecord;
    let mut r = TarReader::new(Cursor::new(&tar), &mut rec);
    let mut names = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        if h.path == b"dir/paxname" {
            assert_eq!(h.mtime, (1_600_000_000, 123_456_789));
        }
        names.push((String::from_utf8(h.path).unwrap(), h.kind));
    }
    assert_eq!(names[0], ("dir".into(), Kind::Dir));
    assert_eq!(names[2].0, "dir/paxname");
    assert_eq!(names.len(), 6);
}

#[test]
fn applies_and_reassembles() {
    let tar = sample();
    let t = tempfile::tempdir().unwrap();
    let mut rec = Vec::new();
    let rep =
        apply_layer_with_record(t.path(), &tar[..], &ApplyOptions::default(), &mut rec).unwrap();
    assert_eq!(rep.bytes, tar.len() as u64);
    assert_eq!(
        std::fs::read_link(t.path().join("dir/link"))
            .unwrap()
            .to_str(),
        Some("file")
    );
    let mut out = Vec::new();
    reassemble(&rec[..], t.path(), &mut out).unwrap();
    assert!(out == tar, "reassembled tar differs");
}

/// A tiny deterministic generator, so a failure reproduces.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn mutated_archives_never_panic() {
    let tar = sample();
    let mut rng = Lcg(7);
    for round in 0..3000 {
        let mut m = tar.clone();
        for _ in 0..1 + round % 4 {
            let i = (rng.next() as usize) % m.len();
            m[i] = match rng.next() % 4 {
                0 => 0,
                1 => 0xff,
                2 => b'/',
                _ => rng.next() as u8,
            };
        }
        if round % 5 == 0 {
            m.truncate((rng.next() as usize) % m.len());
        }
        let mut rec = NoRecord;
        let mut r = TarReader::new(Cursor::new(&m), &mut rec);
        let mut buf = [0u8; 300];
        for _ in 0..64 {
            match r.next_entry() {
                Ok(Some(_)) => while matches!(r.read_payload(&mut buf), Ok(n) if n > 0) {},
                _ => break,
            }
        }
        if round % 10 == 0 {
            let t = tempfile::tempdir().unwrap();
            let _ = apply_layer(t.path(), &m[..], &ApplyOptions::default());
        }
    }
}

#[test]
fn escapes_are_unsafe() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut tar = entry(b"l", b'2', b"", b"../..");
    tar.extend(entry(b"l/escaped", b'0', b"x", b""));
    tar.extend([0u8; 1024]);
    let r = apply_layer(&dst, &tar[..], &ApplyOptions::default());
    assert!(matches!(r, Err(Error::UnsafeArchive(_))), "{r:?}");
    assert!(!t.path().join("escaped").exists());
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut t: Vec<u8> = entries.concat();
    t.extend([0u8; 1024]);
    t
}

/// moby's chrooted `UnpackLayer` and containerd's `RootPath` + mkparent
/// create missing parents behind an in-root symlink inside the layer; so
/// does lamina, and nothing outside is touched.
#[test]
fn parents_behind_in_root_symlinks_are_made_inside() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let base = tar_of(&[
        entry(b"var/", b'5', b"", b""),
        entry(b"var/run", b'2', b"", b"/run"),
        entry(b"rel", b'2', b"", b"not/yet"),
        entry(b"dangling", b'2', b"", b"/nowhere/deep"),
        entry(b"up", b'2', b"", b"var/../gone"),
    ]);
    apply_layer(&dst, &base[..], &ApplyOptions::default()).unwrap();
    let layer = tar_of(&[
        entry(b"var/run/a/b/file", b'0', b"one", b""),
        entry(b"rel/x/file", b'0', b"two", b""),
        entry(b"dangling/file", b'0', b"three", b""),
        entry(b"up/file", b'0', b"four", b""),
    ]);
    let rep = apply_layer(&dst, &layer[..], &ApplyOptions::default()).unwrap();
    assert_eq!(rep.content_bytes, 3 + 3 + 5 + 4);
    let read = |p: &str| std::fs::read_to_string(dst.join(p)).unwrap();
    assert_eq!(read("run/a/b/file"), "one");
    assert_eq!(read("not/yet/x/file"), "two");
    assert_eq!(read("nowhere/deep/file"), "three");
    assert_eq!(read("gone/file"), "four");
    for made in ["run/a/b", "not/yet", "nowhere/deep"] {
        let m = std::fs::symlink_metadata(dst.join(made)).unwrap();
        assert!(m.is_dir(), "{made}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(m.permissions().mode() & 0o7777, 0o755, "{made}");
    }
    let outside: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(outside.len(), 1, "only dst in the parent directory");
}

/// A symlink chain that climbs out is still unsafe when it meets a
/// missing directory first.
#[test]
fn made_parents_never_climb_out() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let tar = tar_of(&[
        entry(b"l", b'2', b"", b"missing/../../outside"),
        entry(b"l/file", b'0', b"x", b""),
    ]);
    let r = apply_layer(&dst, &tar[..], &ApplyOptions::default());
    assert!(matches!(r, Err(Error::UnsafeArchive(_))), "{r:?}");
    assert!(!t.path().join("outside").exists());
}

/// An OS failure applying an entry names the entry and the file.
#[test]
fn entry_failures_name_the_entry() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("file"), "").unwrap();
    let tar = tar_of(&[entry(b"file/below", b'0', b"x", b"")]);
    let e = apply_layer(&dst, &tar[..], &ApplyOptions::default()).unwrap_err();
    match &e {
        Error::Entry { entry, source } => {
            assert_eq!(entry, "file/below");
            assert!(source.is_errno(libc::ENOTDIR), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("tar entry 'file/below'"), "{e}");
}

/// What an apply keeps about its paths is bounded: past the ceiling a
/// typed error, not an abort.
#[test]
fn path_memory_has_a_ceiling() {
    let t = tempfile::tempdir().unwrap();
    let long = "n".repeat(90);
    let mut entries = vec![entry(b"d/", b'5', b"", b"")];
    for i in 0..2000 {
        let name = format!("d/{long}{i}");
        entries.push(entry(name.as_bytes(), b'0', b"", b""));
    }
    let tar = tar_of(&entries);
    let opts = ApplyOptions {
        memory_limit: Some(64 << 10),
        ..Default::default()
    };
    let r = apply_layer(t.path(), &tar[..], &opts);
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    let t2 = tempfile::tempdir().unwrap();
    apply_layer(t2.path(), &tar[..], &ApplyOptions::default()).unwrap();
}

/// A zstd layer asking for a window over the limit is refused before the
/// decoder allocates it; asked for, it is taken.
#[test]
fn zstd_window_has_a_ceiling() {
    let tar = tar_of(&[entry(b"f", b'0', &b"x".repeat(100_000), b"")]);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(27).unwrap();
    enc.long_distance_matching(true).unwrap();
    std::io::Write::write_all(&mut enc, &tar).unwrap();
    let z = enc.finish().unwrap();
    let t = tempfile::tempdir().unwrap();
    let r = apply_layer(t.path(), &z[..], &ApplyOptions::default());
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    let opts = ApplyOptions {
        zstd_window_log_max: Some(27),
        ..Default::default()
    };
    apply_layer(t.path(), &z[..], &opts).unwrap();
}

/// Found by the `whiteouts` fuzz target: a whiteout behind an absolute
/// symlink. Applied as a tree it removes nothing (the symlink's target is
/// missing); in overlay form the whiteout device goes where the symlink
/// leads inside the layer, in directories made for it — and, both ways,
/// nothing outside the layer.
#[test]
fn whiteout_behind_an_absolute_symlink() {
    use super::WhiteoutMode;
    let t = tempfile::tempdir().unwrap();
    let tar = tar_of(&[
        entry(b"l", b'2', b"", b"/tmp/sentinel"),
        entry(b"l/.wh.secret", b'0', b"", b""),
    ]);
    let (tree, upper) = (t.path().join("tree"), t.path().join("upper"));
    std::fs::create_dir(&tree).unwrap();
    std::fs::create_dir(&upper).unwrap();
    apply_layer(&tree, &tar[..], &ApplyOptions::default()).unwrap();
    assert_eq!(std::fs::read_dir(&tree).unwrap().count(), 1);
    let overlay = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..Default::default()
    };
    apply_layer(&upper, &tar[..], &overlay).unwrap();
    use std::os::unix::fs::FileTypeExt;
    let w = std::fs::symlink_metadata(upper.join("tmp/sentinel/secret")).unwrap();
    assert!(w.file_type().is_char_device());
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(names.len(), 2);
}

/// A malformed tar's error says where: the entry (once its header was
/// read) and the byte offset of its header; the apply loop formats this
/// only on failure.
#[test]
fn archive_errors_name_the_entry_and_its_offset() {
    let t = tempfile::tempdir().unwrap();
    let good = entry(b"a", b'0', &[b'x'; 100], b"");
    let second = entry(b"b", b'0', &[b'y'; 3000], b"");
    let mut truncated = good.clone();
    truncated.extend_from_slice(&second[..512 + 100]);
    let e = apply_layer(t.path(), &truncated[..], &ApplyOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Archive(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("tar entry 'b' at byte 1024: truncated"),
        "{e}"
    );

    let mut bad_sum = good.clone();
    bad_sum.extend_from_slice(&second);
    bad_sum[1024 + 148] ^= 1;
    let e = apply_layer(t.path(), &bad_sum[..], &ApplyOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("tar header at byte 1024: header checksum"),
        "{e}"
    );

    let mut unsafe_tar = good;
    unsafe_tar.extend(entry(b"../x", b'0', b"", b""));
    let e = apply_layer(t.path(), &unsafe_tar[..], &ApplyOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::UnsafeArchive(_)), "{e:?}");
    assert!(
        e.to_string().contains("tar entry '../x' at byte 1024: "),
        "{e}"
    );
}

/// Entries whose parents are reached through a `..`-heavy symlink
/// (`a/b/up -> ../../a/b/../b/../b`, i.e. `a/b`), each parent new so the
/// resolver's cache never answers.
fn behind_dotdot_symlink(n: usize) -> Vec<u8> {
    let mut entries = vec![
        entry(b"a/", b'5', b"", b""),
        entry(b"a/b/", b'5', b"", b""),
        entry(b"a/b/up", b'2', b"", b"../../a/b/../b/../b"),
    ];
    for i in 0..n {
        entries.push(entry(format!("a/b/up/d{i}/").as_bytes(), b'5', b"", b""));
        entries.push(entry(format!("a/b/up/d{i}/f").as_bytes(), b'0', b"f", b""));
    }
    tar_of(&entries)
}

/// When every scoped walk fails as a rename racing it would (`EAGAIN`,
/// forced on this thread, the one that resolves parents), no `openat2`
/// is tried more than [`OPENAT2_TRIES`] times, every lookup then falls
/// back to the fd-relative walk, and the apply lands every file: counted,
/// not timed. Unbounded retries would spin here (the hook fails the
/// lookups past 100,000 calls).
///
/// [`OPENAT2_TRIES`]: crate::fs::root::OPENAT2_TRIES
#[test]
fn apply_through_a_dotdot_symlink_when_every_walk_races() {
    use crate::fs::root::{test_hook, OPENAT2_TRIES};
    let t = tempfile::tempdir().unwrap();
    let tar = behind_dotdot_symlink(50);
    test_hook::reset();
    test_hook::force(Some(rustix::io::Errno::AGAIN));
    let r = apply_layer(t.path(), &tar[..], &ApplyOptions::default());
    test_hook::force(None);
    let (most, gave_up) = test_hook::most_tries_and_gave_up();
    r.unwrap();
    for i in 0..50 {
        assert_eq!(
            std::fs::read(t.path().join(format!("a/b/d{i}/f"))).unwrap(),
            b"f"
        );
    }
    assert_eq!(most, OPENAT2_TRIES);
    // Each of the 100 entries behind the symlink was resolved by the walk.
    assert!(gave_up >= 100, "{gave_up} lookups gave up");
}
