//! The files of an image layout or archive, by their path inside it.
//!
//! Three ways in, one way out ([`Files::open`]):
//!
//! - a directory (an OCI image layout): files are opened inside it with
//!   `openat2(RESOLVE_IN_ROOT)`, so no path in a manifest, and no symlink
//!   in the layout, reaches outside;
//! - a seekable tar (a file on disk): one pass over the headers only,
//!   seeking over every payload, gives each file's offset and size; layer
//!   blobs are then read in place with `pread`, several at once, and
//!   nothing is copied;
//! - a tar stream (a pipe): read in order, as far as the load asks, what
//!   passes on the way kept (see [`super::stream`]).
//!
//! Paths are cleaned (`./` and empty components dropped) before lookup;
//! a path with `..` or a leading `/` is refused, never resolved. Links in
//! a tar (docker save writes a layer shared by two images once and links
//! the second name to it) are followed inside the archive only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};

use crate::archive::reader::{Kind, NoRecord, TarReader};
use crate::error::{Error, IoContext, Result};
use crate::fs::root::Root;
use crate::graph::chain::source_error;
use crate::graph::Staging;
use crate::image::stream::{Found, Stream};

/// Files up to this size are kept in memory when a tar is streamed.
pub(super) const SMALL: u64 = 1 << 20;
/// The most bytes kept in memory for small files of one stream.
pub(super) const SMALL_TOTAL: u64 = 64 << 20;
/// The largest metadata file (index, manifest, config) read.
pub const METADATA_MAX: u64 = 16 << 20;
/// Links followed in a row inside an archive.
pub(super) const LINK_HOPS: usize = 16;
/// The most entries an image archive may have: a docker save of 100
/// images of 100 layers has 30,000; what grows past this is a bomb.
pub(super) const ENTRIES_MAX: usize = 100_000;

pub(super) fn too_many(what: &str) -> Error {
    Error::LimitExceeded {
        what: format!("{what}: the archive's entries (more than {ENTRIES_MAX})"),
        limit: ENTRIES_MAX as u64,
    }
}

/// Where one file's bytes are.
#[derive(Clone)]
pub(super) enum Data {
    Mem(Arc<Vec<u8>>),
    Range {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

#[derive(Clone)]
pub(super) enum Entry {
    Data(Data),
    /// A hard or symbolic link, to this (clean) path in the archive.
    Link(String),
}

/// The files of a layout or archive (see the module docs).
pub struct Files<'s> {
    kind: Kinds<'s>,
    /// What the source is, for messages.
    what: String,
}

enum Kinds<'s> {
    Dir(Root),
    /// A stream, read as far as the load asked.
    Stream(Stream<'s>),
    Tar {
        entries: HashMap<String, Entry>,
    },
}

/// A file opened for reading: its bytes, its size, and its SHA-256 where
/// it is known already.
pub struct Opened<'a> {
    /// The bytes.
    pub reader: Box<dyn Read + Send + 'a>,
    /// How many.
    pub size: u64,
}

/// `path` without `./`, empty components or a leading `/`; `None` when it
/// has a `..` component.
pub(super) fn clean(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// A symlink's target, seen from the link at `at`, as a clean archive
/// path; `None` where it climbs above the archive's root.
pub(super) fn resolve_link(at: &str, target: &str) -> Option<String> {
    let mut out: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut v: Vec<&str> = at.split('/').collect();
        v.pop();
        v
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

pub(super) fn not_a_tar(what: &str, e: Error) -> Error {
    match e {
        Error::Archive(m) => Error::Archive(format!(
            "{what} is not an image archive (a tar of an OCI layout, or what docker save \
             writes): {m}"
        )),
        e => e,
    }
}

/// A reader of `len` bytes of `file` from `offset`, by `pread`.
struct RangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(left.try_into().unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive shrank while it was read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<'s> Files<'s> {
    /// The files of the OCI image layout directory `path`.
    pub fn open_dir(path: &Path) -> Result<Files<'s>> {
        Ok(Files {
            kind: Kinds::Dir(Root::open(path)?),
            what: path.display().to_string(),
        })
    }

    /// The files of the tar `file`, which can seek: its headers are read
    /// and its payloads skipped. `what` names it in messages.
    pub fn index_tar(file: File, what: &str) -> Result<Files<'s>> {
        let shown = Path::new(what);
        let len = file.metadata().at("stat", shown)?.len();
        let file = Arc::new(file);
        let mut entries = HashMap::new();
        let mut rdr = BufReader::with_capacity(16 * 1024, &*file);
        let mut off = 0u64;
        loop {
            rdr.seek(SeekFrom::Start(off)).at("seek", shown)?;
            let header = {
                let mut rec = NoRecord;
                let mut tr = TarReader::new(&mut rdr, &mut rec);
                tr.next_entry().map_err(|e| not_a_tar(what, e))?
            };
            let Some(h) = header else { break };
            let data_at = rdr.stream_position().at("seek", shown)?;
            let end = data_at
                .checked_add(h.size)
                .filter(|&e| e <= len)
                .ok_or_else(|| {
                    Error::Archive(format!(
                        "{what}: truncated archive: '{}' ends past the end of the file",
                        String::from_utf8_lossy(&h.path)
                    ))
                })?;
            off = end.div_ceil(512) * 512;
            let name = String::from_utf8_lossy(&h.path).into_owned();
            let Some(path) = clean(&name) else { continue };
            let entry = match h.kind {
                Kind::File => Entry::Data(Data::Range {
                    file: file.clone(),
                    offset: data_at,
                    len: h.size,
                }),
                Kind::Hardlink => match clean(&String::from_utf8_lossy(&h.linkname)) {
                    Some(t) => Entry::Link(t),
                    None => continue,
                },
                Kind::Symlink => match resolve_link(&path, &String::from_utf8_lossy(&h.linkname)) {
                    Some(t) => Entry::Link(t),
                    None => continue,
                },
                _ => continue,
            };
            entries.insert(path, entry);
            if entries.len() > ENTRIES_MAX {
                return Err(too_many(what));
            }
        }
        Ok(Files {
            kind: Kinds::Tar { entries },
            what: what.to_owned(),
        })
    }

    /// The files of the tar stream `src`, read as far as they are asked
    /// for (see [`super::stream`]); what passes is spooled into `spool` (a
    /// staging directory under the store's `tmp/`, removed with the
    /// returned value).
    pub fn stream_tar(src: Box<dyn Read + Send + 's>, spool: Staging, what: &str) -> Files<'s> {
        Files {
            kind: Kinds::Stream(Stream::new(src, spool, what)),
            what: what.to_owned(),
        }
    }

    /// Payload bytes a stream kept so far.
    #[cfg(test)]
    pub fn kept(&self) -> u64 {
        match &self.kind {
            Kinds::Stream(s) => s.kept(),
            _ => 0,
        }
    }

    /// Read a stream to its end; nothing for the other kinds.
    pub fn finish(&self) -> Result<()> {
        match &self.kind {
            Kinds::Stream(s) => s.finish(),
            _ => Ok(()),
        }
    }

    /// What the files come from, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    fn missing(&self, path: &str) -> Error {
        Error::Archive(format!("{}: missing {path}", self.what))
    }

    /// The clean form of `path`, or an error saying it points outside.
    pub fn clean_path(&self, path: &str, named_by: &str) -> Result<String> {
        clean(path).filter(|p| !p.is_empty()).ok_or_else(|| {
            Error::UnsafeArchive(format!(
                "{}: {named_by} names {path:?}, a path outside the archive",
                self.what
            ))
        })
    }

    /// Whether `path` is there (a stream is read on until it comes).
    pub fn exists(&self, path: &str) -> bool {
        match &self.kind {
            Kinds::Dir(_) => self.open(path).is_ok(),
            Kinds::Tar { .. } => self.find(path).is_some(),
            Kinds::Stream(s) => matches!(s.find(path, false), Ok((Found::Data(_), _))),
        }
    }

    fn find(&self, path: &str) -> Option<Data> {
        let Kinds::Tar { entries, .. } = &self.kind else {
            return None;
        };
        let mut at = clean(path)?;
        for _ in 0..LINK_HOPS {
            match entries.get(&at)? {
                Entry::Data(d) => return Some(d.clone()),
                Entry::Link(t) => at = t.clone(),
            }
        }
        None
    }

    fn open_data(&self, d: Data) -> Opened<'_> {
        match d {
            Data::Mem(v) => Opened {
                size: v.len() as u64,
                reader: Box::new(std::io::Cursor::new(MemBytes(v))),
            },
            Data::Range { file, offset, len } => Opened {
                reader: Box::new(RangeReader {
                    file,
                    pos: offset,
                    end: offset + len,
                }),
                size: len,
            },
        }
    }

    /// Open the file at `path` (a clean path: see [`Files::clean_path`]).
    pub fn open(&self, path: &str) -> Result<Opened<'_>> {
        match &self.kind {
            Kinds::Dir(root) => {
                let rel = clean(path).ok_or_else(|| self.missing(path))?;
                let fd = match root.open_in(
                    Path::new(&rel),
                    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => return Err(self.missing(path)),
                    Err(e) => return Err(e).at("open", &root.display_path(Path::new(&rel))),
                };
                let shown = root.display_path(Path::new(&rel));
                let st = rustix::fs::fstat(&fd).at("stat", &shown)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(Error::Archive(format!(
                        "{}: {path} is not a regular file",
                        self.what
                    )));
                }
                rustix::fs::fcntl_setfl(&fd, OFlags::empty()).at("fcntl", &shown)?;
                Ok(Opened {
                    reader: Box::new(File::from(fd)),
                    size: st.st_size as u64,
                })
            }
            Kinds::Tar { .. } => {
                let d = self.find(path).ok_or_else(|| self.missing(path))?;
                Ok(self.open_data(d))
            }
            Kinds::Stream(s) => {
                let p = clean(path).ok_or_else(|| self.missing(path))?;
                match s.find(&p, true)? {
                    (Found::Data(d), _) => Ok(self.open_data(d)),
                    (Found::Here(size), Some(r)) => Ok(Opened {
                        reader: Box::new(r),
                        size,
                    }),
                    _ => Err(self.missing(path)),
                }
            }
        }
    }

    /// The bytes of a metadata file (at most [`METADATA_MAX`]).
    pub fn read_small(&self, path: &str) -> Result<Vec<u8>> {
        let o = self.open(path)?;
        if o.size > METADATA_MAX {
            return Err(Error::Archive(format!(
                "{}: {path} is {} bytes, more than any image metadata file ({METADATA_MAX})",
                self.what, o.size
            )));
        }
        let mut data = Vec::with_capacity(o.size as usize);
        o.reader
            .take(METADATA_MAX + 1)
            .read_to_end(&mut data)
            .map_err(source_error)?;
        Ok(data)
    }
}

/// Shared bytes as a `Cursor`'s buffer.
struct MemBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for MemBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A new file only its owner reads (a spooled blob).
pub(super) fn create_private(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .at("create", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_links_stay_inside() {
        assert_eq!(
            clean("./blobs//sha256/./ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("/manifest.json").as_deref(), Some("manifest.json"));
        assert_eq!(clean("a/../b"), None);
        assert_eq!(clean("../x"), None);
        assert_eq!(
            resolve_link("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(
            resolve_link("abc/layer.tar", "/def/x").as_deref(),
            Some("def/x")
        );
        assert_eq!(resolve_link("abc/layer.tar", "../../x"), None);
    }
}
