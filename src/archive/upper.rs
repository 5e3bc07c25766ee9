//! The native diff of an overlayfs upper dir: walk only the upper dir, so
//! the cost is O(changes), not O(image) (moby/buildkit
//! `util/overlay/overlay_linux.go`, containers/storage `OverlayChanges`).
//!
//! How the upper dir reads:
//! - a 0/0 character device is a whiteout: `D` (a `.wh.NAME` entry), when
//!   the lower tree has the path;
//! - a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`,
//!   the rootless form) hides the lower one: the tar carries `.wh..wh..opq`
//!   and the whole upper subtree as added; the change list compares it with
//!   the lower directory, so it equals the naive diff of the merged view;
//! - a path the lower tree does not have is `A`;
//! - a path the lower tree has is compared with what it shadows, by the
//!   rules of the naive diff ([`super::changes`]: type, mode, owner, rdev,
//!   size, mtime, xattrs less overlay bookkeeping, symlink target), and is
//!   `C` only when they differ. overlayfs copies a file up for much that
//!   changes nothing: opening it for writing, a chmod undone, a hard link
//!   made to it (`ln /etc/passwd /opt/pw_link`); `docker diff` lists none
//!   of those, and neither does the naive diff of the merged view. A
//!   directory copied up is `C` only when its own metadata or something
//!   below it changed. The tar is more careful than the list: a copied-up
//!   file whose metadata all agrees is also compared byte for byte before
//!   it is left out (the upper dir holds only what was copied up, so this
//!   stays O(changes)), and an unchanged one with other names in the diff
//!   is written as a hard link, so the link group survives
//!   ([`super::export`]). The lower tree is only ever stat-ed at the paths
//!   the upper dir has.
//!
//! The lower tree is what the upper dir was made over: the lower dir
//! itself, or — for an upper dir that started as a copy of another layer's
//! (the seed's container on its `-init` layer) — that layer's merged view,
//! so that the copied entries, equal to what they shadow there, are not
//! the container's changes.
//!
//! Refused: a real file named `.wh.*` in the upper dir (it would turn into a
//! whiteout on apply), `redirect` xattrs (renamed directories, whose content
//! lives elsewhere in the lower tree — buildkit refuses them too) and
//! `metacopy` files (their data is in the lower tree).

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use super::changes::{
    differs, is_dir, lstat_at, open_dir, shown, Change, ChangeKind, ListSink, Sink,
};
use super::export::{ExportOptions, ExportReport, TarSink};
use super::walk::{Child, Listing, Walker};
use crate::error::{Error, IoContext, Result};
use crate::fs::xattr;

/// The changes an overlay upper dir makes over `lower` (the merged lower
/// tree), in the order and with the rules of [`super::changes::changes`].
pub fn upper_changes(upper: &Path, lower: &Path) -> Result<Vec<Change>> {
    let mut sink = ListSink::default();
    walk_upper(upper, lower, &mut sink, false)?;
    Ok(sink.changes)
}

/// Write the tar of the changes an overlay upper dir makes over `lower`
/// (copied-up files compared byte for byte; see the module docs).
pub fn write_upper_diff<W: Write>(
    upper: &Path,
    lower: &Path,
    out: W,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let mut sink = TarSink::new(out, opts, upper)?;
    walk_upper(upper, lower, &mut sink, true)?;
    sink.finish()
}

/// With `content`, files whose metadata agrees with the lower's are also
/// compared byte for byte.
fn walk_upper(upper: &Path, lower: &Path, sink: &mut impl Sink, content: bool) -> Result<()> {
    let mut w = Walker::open(sink, content, Some(lower), upper)?;
    w.upper = true;
    let (ufd, lfd) = w.roots();
    let lfd = lfd.expect("opened with a lower tree");
    let us = rustix::fs::fstat(ufd).at("stat", upper)?;
    let ls = rustix::fs::fstat(lfd).at("stat", lower)?;
    let e = OsStr::new("");
    check_xattrs(ufd, e, upper, &us)?;
    if differs(content, (lower, upper, b"/"), (lfd, e, &ls), (ufd, e, &us))? {
        w.emit_root(&us, ChangeKind::Modified)?;
    }
    w.run(Listing::Upper)
}

/// Refuse what cannot be exported from the upper dir alone; tell whether a
/// directory is opaque.
fn check_xattrs(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path, st: &Stat) -> Result<bool> {
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::Directory && ft != FileType::RegularFile {
        return Ok(false);
    }
    let mut opaque = false;
    for key in xattr::list(dir, name, shown)? {
        let k = key.as_bytes();
        let Some(rest) = super::whiteout::overlay_name(k) else {
            continue;
        };
        match rest {
            b"redirect" => {
                return Err(Error::InvalidArgument(format!(
                    "{}: renamed directory (overlay redirect_dir) in the upper dir; mount with redirect_dir=off",
                    shown.display()
                )))
            }
            b"metacopy" => {
                return Err(Error::InvalidArgument(format!(
                    "{}: metadata-only copy-up (overlay metacopy) in the upper dir; mount with metacopy=off",
                    shown.display()
                )))
            }
            b"opaque" => opaque = xattr::get(dir, name, &key, shown)?.as_deref() == Some(b"y"),
            _ => {}
        }
    }
    Ok(opaque)
}

/// lstat in the lower tree; absent (or under a non-directory) is `None`.
fn lower_stat(lower: Option<BorrowedFd<'_>>, name: &OsStr, shown: &Path) -> Result<Option<Stat>> {
    let Some(l) = lower else { return Ok(None) };
    match lstat_at(l, name) {
        Ok(s) => Ok(Some(s)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e).at("lstat", shown),
    }
}

/// Whether an upper-dir entry is an overlay whiteout (a 0/0 char device).
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// One name of the upper dir being walked; the directory to descend into,
/// if any.
pub(crate) fn visit<S: Sink>(w: &mut Walker<'_, S>, name: &OsStr) -> Result<Option<Child>> {
    let ushown = shown(&w.new_root, w.rel());
    if name.as_bytes().starts_with(b".wh.") {
        return Err(Error::UnsafeArchive(format!(
            "{}: a real file named .wh.* in an overlay upper dir would become a whiteout",
            ushown.display()
        )));
    }
    let (upper, lower) = w.dirs();
    let us = lstat_at(upper, name).at("lstat", &ushown)?;
    let ls = lower_stat(lower, name, &shown(&w.old_root, w.rel()))?;
    if is_whiteout(&us) {
        if ls.is_some() {
            w.emit_deleted()?;
        }
        return Ok(None);
    }
    let opaque = check_xattrs(upper, name, &ushown, &us)?;
    let kind = if ls.is_some() {
        ChangeKind::Modified
    } else {
        ChangeKind::Added
    };
    if !is_dir(&us) {
        if let Some(s) = &ls {
            if !w.differs(name, s, &us)? {
                // Copied up, not changed.
                return w.unchanged(name, &us, s).map(|()| None);
            }
        }
        return w.emit(name, &us, kind).map(|()| None);
    }
    let Some(uchild) = w.open_new_dir(name)? else {
        // A mount point inside the upper dir: its entry, nothing below.
        return w.emit(name, &us, kind).map(|()| None);
    };
    let lchild = match (lower, &ls) {
        (Some(l), Some(s)) if is_dir(s) => {
            Some(open_dir(l, name).at("open", &shown(&w.old_root, w.rel()))?)
        }
        _ => None,
    };
    if opaque {
        w.emit(name, &us, kind)?;
        w.emit_opaque()?;
        // The tar needs every entry (the marker removed the lower ones); the
        // change list is the naive diff of what the marker hid.
        let old = if w.sink.opaque_as_added() {
            None
        } else {
            lchild
        };
        return Ok(Some(Child {
            new: uchild,
            old,
            mode: Listing::Trees,
            pending: None,
        }));
    }
    match (lchild, &ls) {
        (Some(l), Some(s)) => {
            let own = differs(
                w.content,
                (&w.old_root, &w.new_root, w.rel()),
                (l.as_fd(), OsStr::new(""), s),
                (uchild.as_fd(), OsStr::new(""), &us),
            )?;
            if own {
                w.emit(name, &us, kind)?;
            }
            Ok(Some(Child {
                new: uchild,
                old: Some(l),
                mode: Listing::Upper,
                pending: (!own).then_some(us),
            }))
        }
        _ => {
            w.emit(name, &us, kind)?;
            Ok(Some(Child {
                new: uchild,
                old: None,
                mode: Listing::Upper,
                pending: None,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::cp_a;
    use std::fs;

    #[test]
    fn whiteout_named_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let (u, l) = (t.path().join("u"), t.path().join("l"));
        fs::create_dir_all(&u).unwrap();
        fs::create_dir_all(&l).unwrap();
        fs::write(u.join(".wh.x"), "").unwrap();
        assert!(matches!(
            upper_changes(&u, &l),
            Err(Error::UnsafeArchive(_))
        ));
    }

    fn same_time(from: &Path, to: &Path) {
        let m = fs::symlink_metadata(from).unwrap().modified().unwrap();
        fs::File::open(to).unwrap().set_modified(m).unwrap();
    }

    fn listed(u: &Path, l: &Path) -> Vec<(String, &'static str)> {
        upper_changes(u, l)
            .unwrap()
            .into_iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind.code()))
            .collect()
    }

    #[test]
    fn copied_up_entries_equal_to_the_lower_are_not_changes() {
        let t = tempfile::tempdir().unwrap();
        let (u, l) = (t.path().join("u"), t.path().join("l"));
        fs::create_dir_all(l.join("etc")).unwrap();
        fs::create_dir_all(l.join("usr/bin")).unwrap();
        fs::write(l.join("etc/passwd"), "root").unwrap();
        fs::write(l.join("etc/group"), "wheel").unwrap();
        fs::write(l.join("usr/bin/tool"), "tool").unwrap();
        // What copy-up leaves for `open(O_WRONLY)` + close or a chmod
        // undone: the lower's entries, metadata and all.
        fs::create_dir(&u).unwrap();
        cp_a(&l.join("etc"), &u.join("etc"));
        same_time(&l, &u);
        assert_eq!(listed(&u, &l), []);
        let mut tar = Vec::new();
        write_upper_diff(&u, &l, &mut tar, &ExportOptions::default()).unwrap();
        assert_eq!(super::super::export::tests::entries(&tar), []);

        // `ln /etc/passwd /pw_link`: only the new name is a change; the tar
        // carries the copied-up name too, as a link, so the group survives.
        fs::hard_link(u.join("etc/passwd"), u.join("pw_link")).unwrap();
        same_time(&l, &u);
        assert_eq!(listed(&u, &l), [("/pw_link".to_owned(), "A")]);
        let mut tar = Vec::new();
        write_upper_diff(&u, &l, &mut tar, &ExportOptions::default()).unwrap();
        let e = |n: &str, f: char, t: &str| (n.to_owned(), f, t.to_owned());
        assert_eq!(
            super::super::export::tests::entries(&tar),
            [
                e("pw_link", '0', ""),
                e("etc/", '5', ""),
                e("etc/passwd", '1', "pw_link")
            ]
        );

        // Same size and time, other bytes: not a change by the naive rules,
        // but the tar does not drop it.
        let m = fs::metadata(u.join("etc/group")).unwrap();
        fs::write(u.join("etc/group"), "WHEEL").unwrap();
        fs::File::options()
            .write(true)
            .open(u.join("etc/group"))
            .unwrap()
            .set_modified(m.modified().unwrap())
            .unwrap();
        same_time(&l.join("etc"), &u.join("etc"));
        assert_eq!(listed(&u, &l), [("/pw_link".to_owned(), "A")]);
        let mut tar = Vec::new();
        write_upper_diff(&u, &l, &mut tar, &ExportOptions::default()).unwrap();
        let names: Vec<_> = super::super::export::tests::entries(&tar)
            .into_iter()
            .map(|(n, ..)| n)
            .collect();
        assert_eq!(
            names,
            ["etc/", "etc/group", "pw_link", "etc/", "etc/passwd"]
        );
    }

    #[test]
    fn upper_entries_are_added_or_changed() {
        let t = tempfile::tempdir().unwrap();
        let (u, l) = (t.path().join("u"), t.path().join("l"));
        fs::create_dir_all(l.join("etc")).unwrap();
        fs::write(l.join("etc/a"), "a").unwrap();
        fs::create_dir_all(u.join("etc")).unwrap();
        // Another size: the same size within one timestamp tick would be
        // no change by the naive rules.
        fs::write(u.join("etc/a"), "AA").unwrap();
        fs::write(u.join("etc/b"), "b").unwrap();
        let got: Vec<_> = upper_changes(&u, &l)
            .unwrap()
            .into_iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind.code()))
            .collect();
        assert_eq!(got[1..], [("/etc/a".into(), "C"), ("/etc/b".into(), "A")]);
        assert_eq!(got[0].0, "/etc");
    }
}
