//! The diff writer: the tar of the changes between two trees (or of a whole
//! tree, for a base layer), streamed to any [`Write`] in constant memory.
//!
//! What goes in, and why:
//! - `A`/`C` paths as full entries, parents before children (a parent
//!   directory unchanged itself is written when something below it changed,
//!   so its metadata survives the apply — moby's rule);
//! - `D` paths as `.wh.NAME` entries (AUFS form, as image layers carry
//!   them), with uid/gid 0, mode 0 and a fixed time: epoch 0, or the
//!   `source_date_epoch` (the seed stamped them with `time.Now()`, so no two
//!   diffs were alike);
//! - PAX records for long names, nanosecond mtimes and xattrs
//!   (`security.capability`, `user.*`, POSIX ACLs; overlay bookkeeping
//!   `trusted.overlay.*` never);
//! - hard links once: the second path of a (dev, inode) already in the
//!   archive is a hard-link entry to the first;
//! - hard-link groups whole: a name of a multiply-linked file that did not
//!   change itself (by the rules of [`super::changes`]) is still written,
//!   as a hard-link entry, when another name of its inode is in the diff,
//!   or the diff applied onto the old tree would leave the two names
//!   separate inodes (`ln /etc/passwd /opt/pw_link` in a container). moby's
//!   naive differ drops it; overlayfs's copy-up keeps it in the upper dir,
//!   so this is what makes every driver give one image of one container.
//!   The change list does not list it: it is not a change. When such an
//!   unchanged name comes before the first written name of its inode in
//!   walk order, it is kept pending and written right after that first
//!   name (an applier resolves a hard link's target in the tree it
//!   writes, so the target must come first), preceded by its parent
//!   directory's entry once more, so that the applier restores the
//!   directory's time after unlinking the old name. Those entries are the
//!   only ones out of sorted order;
//! - sockets are skipped with a warning in [`ExportReport::warnings`] (tar
//!   cannot carry them); devices and FIFOs are kept;
//! - a name beginning with `.wh.` is refused: it would be read back as a
//!   whiteout;
//! - reproducible: no atime, ctime, user or group names; the same tree gives
//!   the same bytes. `source_date_epoch` clamps every later mtime down to it
//!   (containerd's `WithSourceDateEpoch`).
//!
//! Memory: file data streams through one buffer; what is kept is the first
//! archive path of every multiply-linked inode written, and the pending
//! unchanged names of multiply-linked inodes none of whose names is written
//! yet — O(hard-linked files), never O(tree). An inode's pending names are
//! dropped once all its links have been seen. In a tree whose unchanged
//! files are the old tree's own inodes (hard-link copies, as the overlay
//! driver's `root/` trees) every file has other names, so the walker
//! offers no such file: a new name linked to an old inode there is written
//! as a file of its own.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use rustix::io::Errno;

use super::changes::{file_xattrs, open_dir, open_file, open_root, shown, ChangeKind, Node, Sink};
use super::tar_writer::{EntryType, Header, TarWriter};
use super::walk::walk_trees;
use crate::error::{Error, IoContext, Result};
use crate::fs::{recorded, xattr};

/// Options of the diff writers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Clamp every mtime later than this (seconds since the epoch) down to
    /// it, and stamp whiteouts with it, as `SOURCE_DATE_EPOCH` asks.
    pub source_date_epoch: Option<i64>,
    /// Compare file bytes where size and mtime agree (see
    /// [`super::changes::ChangesOptions::content`]).
    pub content: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Tar entries written (whiteouts included, PAX headers not counted).
    pub entries: u64,
    /// Bytes of tar written.
    pub bytes: u64,
    /// Things left out, one line each (sockets).
    pub warnings: Vec<String>,
}

/// Write the tar of the changes from `old` to `new` to `out`; with `old`
/// `None`, the tar of the whole of `new` (a base layer).
pub fn export_diff<W: Write>(
    old: Option<&Path>,
    new: &Path,
    out: W,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let mut sink = TarSink::new(out, opts, new)?;
    walk_trees(old, new, opts.content, &mut sink)?;
    sink.finish()
}

/// Whether an xattr belongs in a layer tar: file capabilities, user
/// attributes and POSIX ACLs. Security labels are the host's business, and
/// overlay bookkeeping would be injected into whoever applies the layer.
pub fn is_exported_xattr(key: &[u8]) -> bool {
    key == b"security.capability"
        || key.starts_with(b"user.") && !key.starts_with(b"user.overlay.")
        || key == b"system.posix_acl_access"
        || key == b"system.posix_acl_default"
}

/// The xattrs of an open regular file (overlay bookkeeping left out),
/// sorted by name.
fn fd_xattrs(fd: BorrowedFd<'_>, shown: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::read_sized(|b| rustix::fs::flistxattr(fd, b)) {
        Ok(n) => n,
        Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e).at("listxattr", shown),
    };
    let mut keys: Vec<&[u8]> = names
        .split(|&c| c == 0)
        .filter(|k| !k.is_empty() && !super::whiteout::is_overlay_xattr(k))
        .collect();
    keys.sort_unstable();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let key = OsStr::from_bytes(k);
        match xattr::read_sized(|b| rustix::fs::fgetxattr(fd, key, b)) {
            Ok(v) => out.push((k.to_vec(), v)),
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e).at("getxattr", shown),
        }
    }
    Ok(out)
}

/// Unchanged names of a multiply-linked inode none of whose names is in
/// the archive yet.
struct Partners {
    /// The inode's link count: once that many names are pending, no name of
    /// it can be in the diff.
    nlink: usize,
    /// `/a/b` and the hard-link header (without its target) of each name.
    names: Vec<(Vec<u8>, Header)>,
}

/// A [`Sink`] that writes each change as tar entries.
pub(crate) struct TarSink<W: Write> {
    tar: TarWriter<W>,
    /// First archive path of every multiply-linked inode written.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Unchanged link partners waiting for a name of their inode.
    partners: HashMap<(u64, u64), Partners>,
    epoch: Option<i64>,
    root: PathBuf,
    /// How the tree's inodes read (a rootless tree's as recorded).
    ids: recorded::Ids,
    report: ExportReport,
}

fn write_err(e: io::Error) -> Error {
    Error::io("write", "<tar output>", e)
}

/// The archive name of `rel` (`/a/b` → `a/b`; the root → `./`).
fn tar_name(rel: &[u8], dir: bool) -> Vec<u8> {
    let mut p = rel.strip_prefix(b"/").unwrap_or(rel).to_vec();
    if p.is_empty() {
        return b"./".to_vec();
    }
    if dir {
        p.push(b'/');
    }
    p
}

/// The parent of `/a/b` (`/a`; `/` for `/a`).
fn parent_rel(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(0) | None => b"/",
        Some(i) => &rel[..i],
    }
}

/// Refuse a name that an applier would read back as a whiteout.
fn refuse_whiteout_name(rel: &[u8], root: &Path) -> Result<()> {
    let base = rel.rsplit(|&c| c == b'/').next().unwrap_or(b"");
    if base.starts_with(b".wh.") {
        return Err(Error::UnsafeArchive(format!(
            "{}: a file named .wh.* would be read back as a whiteout",
            shown(root, rel).display()
        )));
    }
    Ok(())
}

fn whiteout_name(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    let mut p = Vec::with_capacity(rel.len() + name.len() + 5);
    if !rel.is_empty() {
        p.extend_from_slice(rel);
        p.push(b'/');
    }
    p.extend_from_slice(b".wh.");
    p.extend_from_slice(name);
    p
}

impl<W: Write> TarSink<W> {
    pub fn new(out: W, opts: &ExportOptions, root: &Path) -> Result<Self> {
        Ok(TarSink {
            tar: TarWriter::new(out),
            links: HashMap::new(),
            partners: HashMap::new(),
            epoch: opts.source_date_epoch,
            root: root.to_path_buf(),
            ids: recorded::Ids::of_tree(root)?,
            report: ExportReport::default(),
        })
    }

    pub fn finish(mut self) -> Result<ExportReport> {
        let tar = self.tar;
        self.report.bytes = tar.bytes_written() + 1024;
        tar.finish().map_err(write_err)?;
        Ok(self.report)
    }

    fn clamp(&self, sec: i64, nsec: u32) -> (i64, u32) {
        match self.epoch {
            Some(e) if (sec, nsec) > (e, 0) => (e, 0),
            _ => (sec, nsec),
        }
    }

    fn marker(&mut self, path: Vec<u8>) -> Result<()> {
        let h = Header {
            path,
            kind: EntryType::File,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: (self.epoch.unwrap_or(0), 0),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        self.tar.write_header(&h).map_err(write_err)?;
        self.report.entries += 1;
        Ok(())
    }

    /// Write the pending unchanged names of inode `key` as hard links to
    /// `first`, its first name in the archive, each after the entries of
    /// its parent directories (as the walk writes them before any change:
    /// an applier that starts from an empty directory needs them, and the
    /// unlink and link the apply does change the parent's time, which its
    /// entry makes the applier set back).
    fn write_partners(&mut self, key: (u64, u64), first: &[u8]) -> Result<()> {
        let Some(p) = self.partners.remove(&key) else {
            return Ok(());
        };
        let mut written: Vec<Vec<u8>> = Vec::new();
        for (rel, mut h) in p.names {
            refuse_whiteout_name(&rel, &self.root)?;
            self.dir_entries(parent_rel(&rel), &mut written)?;
            h.linkname = first.to_vec();
            self.tar.write_header(&h).map_err(write_err)?;
            self.report.entries += 1;
        }
        Ok(())
    }

    /// Write the entries of the directory `rel` of the tree and of its
    /// ancestors below the root (the root's own when `rel` is `/`), less
    /// those in `written`; each opened again from the root, no component
    /// following a symlink.
    fn dir_entries(&mut self, rel: &[u8], written: &mut Vec<Vec<u8>>) -> Result<()> {
        let mut fd = open_root(&self.root)?;
        if rel == b"/" {
            return self.dir_entry_once(&fd, rel, written);
        }
        let mut at = Vec::with_capacity(rel.len());
        for c in rel.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            at.push(b'/');
            at.extend_from_slice(c);
            fd = open_dir(&fd, OsStr::from_bytes(c)).at("open", &shown(&self.root, &at))?;
            self.dir_entry_once(&fd, &at, written)?;
        }
        Ok(())
    }

    fn dir_entry_once(
        &mut self,
        fd: &OwnedFd,
        rel: &[u8],
        written: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        if written.iter().any(|w| w == rel) {
            return Ok(());
        }
        let st = rustix::fs::fstat(fd).at("stat", &shown(&self.root, rel))?;
        let node = Node {
            rel,
            dir: fd.as_fd(),
            name: OsStr::new(""),
            stat: &st,
        };
        self.entry(&node, ChangeKind::Modified)?;
        written.push(rel.to_vec());
        Ok(())
    }

    fn copy_payload(&mut self, file: &mut File, size: u64, shown: &Path) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let room = self
                .tar
                .spare(left.try_into().unwrap_or(usize::MAX))
                .map_err(write_err)?;
            let n = match file.read(room) {
                Ok(0) => {
                    return Err(Error::io(
                        "read",
                        shown,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while it was being exported",
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).at("read", shown),
            };
            self.tar.commit(n);
            left -= n as u64;
        }
        self.tar.pad(size).map_err(write_err)
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn entry(&mut self, node: &Node<'_>, _kind: ChangeKind) -> Result<()> {
        let st = node.stat;
        let shown = shown(&self.root, node.rel);
        refuse_whiteout_name(node.rel, &self.root)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let kind = match ft {
            FileType::RegularFile => EntryType::File,
            FileType::Directory => EntryType::Dir,
            FileType::Symlink => EntryType::Symlink,
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            FileType::Fifo => EntryType::Fifo,
            _ => {
                self.report.warnings.push(format!(
                    "{}: socket skipped (a tar cannot carry one)",
                    shown.display()
                ));
                return Ok(());
            }
        };
        let key = (st.st_dev, st.st_ino);
        let linked = kind == EntryType::File && st.st_nlink > 1;
        let first = linked.then(|| self.links.get(&key).cloned()).flatten();
        // The file is opened when its payload will be written, and its
        // xattrs then read by fd (half the cost of a lookup through /proc
        // for the l*xattr calls); O_NONBLOCK and checked to be the inode
        // lstat-ed, so a FIFO swapped in meanwhile neither blocks nor is read.
        let mut file = None;
        let raw: Vec<(Vec<u8>, Vec<u8>)> = if kind == EntryType::File && first.is_none() {
            let f = open_file(node.dir, node.name, st, &shown)?;
            let x = fd_xattrs(f.as_fd(), &shown)?;
            file = Some(f);
            x
        } else {
            file_xattrs(node.dir, node.name, &shown)?
                .into_iter()
                .map(|(k, v)| (k.into_encoded_bytes(), v))
                .collect()
        };
        // What a rootless apply recorded is what the tar says: owner, mode,
        // a device stored as a file, xattrs it could not set.
        let eff = self.ids.stat(st, &raw);
        let kind = match FileType::from_raw_mode(eff.st_mode) {
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            _ => kind,
        };
        if matches!(kind, EntryType::Char | EntryType::Block) {
            file = None;
        }
        let path = tar_name(node.rel, kind == EntryType::Dir);
        let mut h = Header {
            path,
            kind,
            mode: eff.st_mode & 0o7777,
            uid: u64::from(eff.st_uid),
            gid: u64::from(eff.st_gid),
            size: 0,
            mtime: self.clamp(st.st_mtime, st.st_mtime_nsec as u32),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: raw
                .into_iter()
                .filter_map(|(k, v)| {
                    let n = self.ids.exported_name(&k)?;
                    is_exported_xattr(n).then(|| (n.to_vec(), v))
                })
                .collect(),
        };
        if let Some(first) = first {
            h.kind = EntryType::HardLink;
            h.linkname = first;
            h.xattrs.clear();
            self.tar.write_header(&h).map_err(write_err)?;
            self.report.entries += 1;
            return Ok(());
        }
        if linked {
            self.links.insert(key, h.path.clone());
        }
        match kind {
            EntryType::Symlink => {
                h.linkname = rustix::fs::readlinkat(node.dir, node.name, Vec::new())
                    .at("readlink", &shown)?
                    .into_bytes();
            }
            EntryType::Char | EntryType::Block => {
                h.dev = (
                    rustix::fs::major(eff.st_rdev),
                    rustix::fs::minor(eff.st_rdev),
                );
            }
            _ => {}
        }
        let Some(mut file) = file else {
            self.tar.write_header(&h).map_err(write_err)?;
            self.report.entries += 1;
            return Ok(());
        };
        h.size = st.st_size as u64;
        self.tar.write_header(&h).map_err(write_err)?;
        self.report.entries += 1;
        self.copy_payload(&mut file, h.size, &shown)?;
        if linked {
            self.write_partners(key, &h.path)?;
        }
        Ok(())
    }

    fn link_partner(&mut self, node: &Node<'_>) -> Result<bool> {
        let st = node.stat;
        let key = (st.st_dev, st.st_ino);
        if self.links.contains_key(&key) {
            return Ok(true);
        }
        let h = Header {
            path: tar_name(node.rel, false),
            kind: EntryType::HardLink,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: 0,
            mtime: self.clamp(st.st_mtime, st.st_mtime_nsec as u32),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        let p = self.partners.entry(key).or_insert_with(|| Partners {
            nlink: usize::try_from(st.st_nlink).unwrap_or(usize::MAX),
            names: Vec::new(),
        });
        p.names.push((node.rel.to_vec(), h));
        if p.names.len() >= p.nlink {
            // Every name of the inode seen, none of them changed.
            self.partners.remove(&key);
        }
        Ok(false)
    }

    fn deleted(&mut self, rel: &[u8]) -> Result<()> {
        let (parent, name) = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        self.marker(whiteout_name(parent, name))
    }

    fn opaque(&mut self, rel: &[u8]) -> Result<()> {
        self.marker(whiteout_name(rel, b".wh..opq"))
    }

    fn opaque_as_added(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::cp_a;
    use std::fs;

    fn names(tar: &[u8]) -> Vec<String> {
        // Walk the ustar headers (PAX headers skipped) of an archive we made.
        let mut out = Vec::new();
        let mut off = 0;
        while off + 512 <= tar.len() && tar[off] != 0 {
            let h = &tar[off..off + 512];
            let name = String::from_utf8_lossy(&h[..100])
                .trim_end_matches('\0')
                .to_string();
            let size = u64::from_str_radix(
                String::from_utf8_lossy(&h[124..135]).trim_end_matches('\0'),
                8,
            )
            .unwrap();
            if h[156] != b'x' {
                out.push(name);
            }
            off += 512 + size.div_ceil(512) as usize * 512;
        }
        out
    }

    /// (name, type flag, link target) of each entry, PAX headers skipped.
    pub(crate) fn entries(tar: &[u8]) -> Vec<(String, char, String)> {
        let field = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let mut out = Vec::new();
        let mut off = 0;
        while off + 512 <= tar.len() && tar[off] != 0 {
            let h = &tar[off..off + 512];
            let size = u64::from_str_radix(&field(&h[124..136]), 8).unwrap();
            if h[156] != b'x' {
                out.push((field(&h[..100]), h[156] as char, field(&h[157..257])));
            }
            off += 512 + size.div_ceil(512) as usize * 512;
        }
        out
    }

    fn ino(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(p).unwrap().ino()
    }

    fn mtime(p: &Path) -> std::time::SystemTime {
        fs::symlink_metadata(p).unwrap().modified().unwrap()
    }

    #[test]
    fn unchanged_link_partners_keep_their_group() {
        let t = tempfile::tempdir().unwrap();
        let (old, new) = (t.path().join("old"), t.path().join("new"));
        for d in ["etc", "opt", "z", "keep", "deep/er"] {
            fs::create_dir_all(old.join(d)).unwrap();
        }
        fs::write(old.join("etc/passwd"), "root").unwrap();
        fs::write(old.join("deep/er/f"), "f").unwrap();
        fs::write(old.join("z/x"), "x").unwrap();
        fs::write(old.join("keep/g1"), "g").unwrap();
        fs::hard_link(old.join("keep/g1"), old.join("keep/g2")).unwrap();
        cp_a(&old, &new);
        // The unchanged name before the new one in walk order...
        fs::hard_link(new.join("etc/passwd"), new.join("opt/pw_link")).unwrap();
        // ... and after it.
        fs::hard_link(new.join("z/x"), new.join("a_link")).unwrap();
        // Before it, and below directories the diff has no other reason
        // to carry.
        fs::hard_link(new.join("deep/er/f"), new.join("zz_deep")).unwrap();

        let listed: Vec<_> = crate::archive::changes::changes(&old, &new, &Default::default())
            .unwrap()
            .into_iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind.code()))
            .collect();
        assert_eq!(
            listed,
            [
                ("/a_link", "A"),
                ("/opt", "C"),
                ("/opt/pw_link", "A"),
                ("/zz_deep", "A")
            ]
            .map(|(p, k)| (p.to_owned(), k))
        );

        let mut tar = Vec::new();
        export_diff(Some(&old), &new, &mut tar, &ExportOptions::default()).unwrap();
        let e = |n: &str, f: char, l: &str| (n.to_owned(), f, l.to_owned());
        assert_eq!(
            entries(&tar),
            [
                e("./", '5', ""),
                e("a_link", '0', ""),
                e("opt/", '5', ""),
                e("opt/pw_link", '0', ""),
                // Kept pending until a name of its inode was written; its
                // directory comes again so that its time is set back.
                e("etc/", '5', ""),
                e("etc/passwd", '1', "opt/pw_link"),
                e("z/", '5', ""),
                e("z/x", '1', "a_link"),
                e("zz_deep", '0', ""),
                e("deep/", '5', ""),
                e("deep/er/", '5', ""),
                e("deep/er/f", '1', "zz_deep"),
            ]
        );

        let target = t.path().join("target");
        cp_a(&old, &target);
        crate::archive::apply_layer(&target, &tar[..], &Default::default()).unwrap();
        assert_eq!(
            ino(&target.join("etc/passwd")),
            ino(&target.join("opt/pw_link"))
        );
        assert_eq!(ino(&target.join("z/x")), ino(&target.join("a_link")));
        assert_eq!(ino(&target.join("deep/er/f")), ino(&target.join("zz_deep")));
        assert_eq!(ino(&target.join("keep/g1")), ino(&target.join("keep/g2")));
        for d in ["", "etc", "opt", "z", "keep", "deep", "deep/er"] {
            assert_eq!(mtime(&target.join(d)), mtime(&new.join(d)), "/{d}");
        }
    }

    #[test]
    fn full_export_is_sorted_and_reproducible() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("r");
        fs::create_dir_all(r.join("b/c")).unwrap();
        fs::write(r.join("a"), "a").unwrap();
        fs::write(r.join("b/c/d"), "dd").unwrap();
        fs::hard_link(r.join("a"), r.join("z")).unwrap();
        let mut one = Vec::new();
        export_diff(None, &r, &mut one, &ExportOptions::default()).unwrap();
        let mut two = Vec::new();
        export_diff(None, &r, &mut two, &ExportOptions::default()).unwrap();
        assert_eq!(one, two);
        assert_eq!(names(&one), ["./", "a", "b/", "b/c/", "b/c/d", "z"]);
        // z is a hard link to a.
        let z = one.len() - 1024 - 512;
        assert_eq!(one[z + 156], b'1');
        assert_eq!(&one[z + 157..z + 158], b"a");
    }

    #[test]
    fn whiteouts_and_epoch() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(a.join("d")).unwrap();
        fs::write(a.join("d/x"), "x").unwrap();
        fs::create_dir_all(b.join("d")).unwrap();
        let mut out = Vec::new();
        let opts = ExportOptions {
            source_date_epoch: Some(1000),
            content: false,
        };
        let rep = export_diff(Some(&a), &b, &mut out, &opts).unwrap();
        let n = names(&out);
        assert!(n.contains(&"d/".to_string()), "{n:?}");
        assert!(n.contains(&"d/.wh.x".to_string()), "{n:?}");
        assert_eq!(rep.bytes as usize, out.len());
        // Every mtime field is clamped to 1000 (octal 1750).
        let mut off = 0;
        while out[off] != 0 {
            assert_eq!(&out[off + 136..off + 147], b"00000001750");
            off += 512;
        }
    }

    #[test]
    fn refuses_whiteout_named_files() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(".wh.evil"), "").unwrap();
        let e = export_diff(None, t.path(), Vec::new(), &ExportOptions::default()).unwrap_err();
        assert!(matches!(e, Error::UnsafeArchive(_)), "{e}");
    }
}
