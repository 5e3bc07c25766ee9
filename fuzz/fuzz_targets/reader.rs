//! lamina's tar reader against the `tar` crate (a well-kept reader): for
//! an archive both read to the end without error, they agree on every
//! entry's path, type and size. lamina's reader is its own only because
//! tar-split needs every raw byte (src/archive/reader.rs); it must not
//! read archives differently.
#![no_main]

use lamina::archive::reader::{Kind, NoRecord, TarReader};
use libfuzzer_sys::fuzz_target;

fn ours(data: &[u8]) -> Option<Vec<(Vec<u8>, u8, u64)>> {
    let mut rec = NoRecord;
    let mut r = TarReader::new(std::io::Cursor::new(data), &mut rec);
    let mut out = Vec::new();
    while let Some(h) = r.next_entry().ok()? {
        let t = match h.kind {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        };
        out.push((h.path, t, h.size));
    }
    Some(out)
}

fn theirs(data: &[u8]) -> Option<Vec<(Vec<u8>, u8, u64)>> {
    let mut a = tar::Archive::new(std::io::Cursor::new(data));
    let mut out = Vec::new();
    for e in a.entries().ok()? {
        let mut e = e.ok()?;
        // The tar crate splits pax records on newlines; a record whose
        // value holds one (legal: its length ends it, as GNU tar, Go and
        // Python's tarfile read it) is malformed to it, and it silently
        // falls back to the ustar fields. Not comparable.
        if let Some(pax) = e.pax_extensions().ok()? {
            for x in pax {
                x.ok()?;
            }
        }
        let t = match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => b'0',
            tar::EntryType::Link => b'1',
            tar::EntryType::Symlink => b'2',
            tar::EntryType::Char => b'3',
            tar::EntryType::Block => b'4',
            tar::EntryType::Directory => b'5',
            tar::EntryType::Fifo => b'6',
            // Types lamina refuses (sparse, ...) or the tar crate passes
            // through as entries of their own: not comparable.
            _ => return None,
        };
        let mut path = e.path_bytes().into_owned();
        // A NUL-typed entry named with a trailing slash is a directory in
        // old tars (Go's archive/tar, tarfile and GNU tar read it so); the
        // tar crate reports its type byte as it stands.
        let t = if e.header().as_bytes()[156] == 0 && path.ends_with(b"/") {
            b'5'
        } else {
            t
        };
        let size = if t == b'0' { e.size() } else { 0 };
        if t == b'5' && path.ends_with(b"/") && path.len() > 1 {
            path.pop();
        }
        out.push((path, t, size));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if let (Some(a), Some(b)) = (ours(data), theirs(data)) {
        let norm = |v: Vec<(Vec<u8>, u8, u64)>| -> Vec<(Vec<u8>, u8, u64)> {
            v.into_iter()
                .map(|(mut p, t, s)| {
                    if t == b'5' && p.ends_with(b"/") && p.len() > 1 {
                        p.pop();
                    }
                    (p, t, if t == b'0' { s } else { 0 })
                })
                .collect()
        };
        assert_eq!(
            norm(a),
            norm(b),
            "lamina and the tar crate read the archive differently"
        );
    }
});
