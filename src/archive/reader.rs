//! A streaming tar reader that keeps every byte it does not hand out.
//!
//! The `tar` crate does not expose the raw header blocks, and exact
//! reassembly (tar-split) needs them, so lamina parses tar itself: 512-byte
//! blocks, ustar, GNU (`L`/`K` long names, base-256 numbers) and PAX (`x`
//! local headers; `g` global headers are kept as raw bytes and otherwise
//! ignored, as Docker and containerd do).
//!
//! Every byte that is not a file payload the caller streams out — header
//! blocks, meta headers and their data, padding, the end-of-archive blocks
//! and any trailing data — goes to a [`Record`] in stream order, so the
//! record plus the payloads is the archive, byte for byte.
//!
//! Everything is bounded: meta-header data (`L`, `K`, `x`) has a size cap,
//! names are held to the kernel's `PATH_MAX`/`NAME_MAX`, xattrs to the
//! kernel's `XATTR_NAME_MAX`/`XATTR_SIZE_MAX` and a count, so a hostile
//! archive can cost neither unbounded memory nor a panic.

use std::io::BufRead;

use crate::error::{Error, Result};

/// The tar block size.
pub const BLOCK: usize = 512;
/// Linux `PATH_MAX`, terminating NUL included.
pub const PATH_MAX: usize = 4096;
/// Linux `NAME_MAX`: the longest path component.
pub const NAME_MAX: usize = 255;
/// The most PAX extended-header data one entry may carry. Large enough for
/// many xattrs (file capabilities, SELinux labels); a bomb stops here.
pub const PAX_MAX: u64 = 1 << 20;
/// Linux `XATTR_NAME_MAX`.
pub const XATTR_NAME_MAX: usize = 255;
/// Linux `XATTR_SIZE_MAX`.
pub const XATTR_SIZE_MAX: usize = 65536;
/// The most xattrs one entry may carry.
pub const XATTR_COUNT_MAX: usize = 256;
/// The most meta headers (`x`, `g`, `L`, `K`) before one real entry.
const META_MAX: usize = 16;
/// The largest size field accepted: a file up to 2^62 bytes is plausible; a
/// larger one (or a negative one) is parser confusion.
const SIZE_MAX: u64 = 1 << 62;
/// Kernel `dev_t` limits (12-bit major, 20-bit minor, `new_valid_dev`).
const MAJOR_MAX: u64 = (1 << 12) - 1;
const MINOR_MAX: u64 = (1 << 20) - 1;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (`0`, `\0`, `7`).
    File,
    /// A directory (`5`).
    Dir,
    /// A symbolic link (`2`).
    Symlink,
    /// A hard link to an earlier entry (`1`).
    Hardlink,
    /// A character device (`3`).
    Char,
    /// A block device (`4`).
    Block,
    /// A FIFO (`6`).
    Fifo,
}

/// One entry's header, meta headers folded in.
#[derive(Debug, Clone)]
pub struct Header {
    /// What the entry is.
    pub kind: Kind,
    /// The name as written in the archive (no NUL, at most `PATH_MAX`).
    pub path: Vec<u8>,
    /// Symlink target or hard-link target.
    pub linkname: Vec<u8>,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Payload size (0 for everything but regular files).
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Access time where the archive has one (PAX `atime`).
    pub atime: Option<(i64, u32)>,
    /// Device numbers of character and block devices.
    pub dev: (u32, u32),
    /// Extended attributes (PAX `SCHILY.xattr.*`), in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where the bytes the reader does not hand out go (see [`super::tarsplit`]).
pub trait Record {
    /// Raw archive bytes: headers, meta data, padding, trailer.
    fn raw(&mut self, bytes: &[u8]) -> Result<()>;
    /// A payload of `size` bytes with CRC-32 `crc`, found in the applied
    /// tree at `name`.
    fn file(&mut self, name: &[u8], size: u64, crc: u32) -> Result<()>;
}

/// A [`Record`] that keeps nothing.
pub struct NoRecord;

impl Record for NoRecord {
    fn raw(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &[u8], _: u64, _: u32) -> Result<()> {
        Ok(())
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Archive(msg.into())
}

/// PAX values gathered from `x` headers, applied to the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    devmajor: Option<u32>,
    devminor: Option<u32>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The streaming reader.
pub struct TarReader<'r, R: BufRead> {
    src: R,
    rec: &'r mut dyn Record,
    /// Payload bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current payload.
    pad: usize,
    done: bool,
    /// A block was read.
    started: bool,
    /// Bytes of the tar consumed so far.
    pos: u64,
    /// Where the current entry's first header block (meta headers
    /// included) starts, for messages.
    entry_at: u64,
}

impl<'r, R: BufRead> TarReader<'r, R> {
    /// A reader of `src` that sends raw bytes to `rec`.
    pub fn new(src: R, rec: &'r mut dyn Record) -> Self {
        TarReader {
            src,
            rec,
            remaining: 0,
            pad: 0,
            done: false,
            started: false,
            pos: 0,
            entry_at: 0,
        }
    }

    /// The record the reader writes to.
    pub fn record(&mut self) -> &mut dyn Record {
        self.rec
    }

    /// Payload bytes of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The byte offset in the tar of the current entry's first header
    /// block (of the one being read, when [`Self::next_entry`] failed).
    pub fn entry_offset(&self) -> u64 {
        self.entry_at
    }

    /// Read exactly `buf.len()` bytes, or fail as a truncated archive.
    /// Returns `false` on a clean EOF before the first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let avail = self.src.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                if got == 0 {
                    return Ok(false);
                }
                return Err(bad("truncated archive: unexpected end of data"));
            }
            let n = avail.len().min(buf.len() - got);
            buf[got..got + n].copy_from_slice(&avail[..n]);
            self.src.consume(n);
            self.pos += n as u64;
            got += n;
        }
        Ok(true)
    }

    /// Send `n` bytes of the stream to the record unchanged.
    fn pass_raw(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let avail = self.src.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                return Err(bad("truncated archive: unexpected end of data"));
            }
            let k = (avail.len() as u64).min(n) as usize;
            self.rec.raw(&avail[..k])?;
            self.src.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Read meta-header data (`size` bytes plus padding) into memory,
    /// recording it raw.
    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > PAX_MAX {
            return Err(bad(format!(
                "{what} header of {size} bytes is over the {PAX_MAX}-byte limit"
            )));
        }
        let padded = (size as usize).div_ceil(BLOCK) * BLOCK;
        let mut data = vec![0u8; padded];
        if !self.read_block(&mut data)? {
            return Err(bad("truncated archive: unexpected end of data"));
        }
        self.rec.raw(&data)?;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Finish the current entry: payload the caller left unread goes to the
    /// record raw, then the padding.
    fn finish_entry(&mut self) -> Result<()> {
        let left = std::mem::take(&mut self.remaining);
        self.pass_raw(left)?;
        let pad = std::mem::take(&mut self.pad);
        self.pass_raw(pad as u64)
    }

    /// The next entry's header, or `None` at the end of the archive (after
    /// the trailer and any trailing data were recorded).
    pub fn next_entry(&mut self) -> Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        self.finish_entry()?;
        self.entry_at = self.pos;
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut metas = 0;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                // EOF without the end-of-archive blocks: accepted (as Go's
                // archive/tar and GNU tar do), unless a meta header is dangling.
                if metas > 0 {
                    return Err(bad("truncated archive: meta header without an entry"));
                }
                // Not one byte: not a layer (an empty layer is 1024 zero
                // bytes); `lamina register /dev/null` must not make one.
                if !self.started {
                    return Err(bad("empty stream: not a tar archive"));
                }
                self.done = true;
                return Ok(None);
            }
            self.started = true;
            self.rec.raw(&block)?;
            if block.iter().all(|&b| b == 0) {
                if metas > 0 {
                    return Err(bad("meta header followed by the end of the archive"));
                }
                self.trailer()?;
                return Ok(None);
            }
            verify_checksum(&block)?;
            let flag = block[156];
            let size = parse_number(&block[124..136], "size")?;
            if size > SIZE_MAX {
                return Err(bad(format!("entry size {size} is out of range")));
            }
            if matches!(flag, b'x' | b'g' | b'L' | b'K' | b'X') {
                metas += 1;
                if metas > META_MAX {
                    return Err(bad("too many meta headers before one entry"));
                }
            }
            match flag {
                b'x' | b'X' => {
                    let data = self.read_meta(size, "PAX")?;
                    parse_pax(&data, &mut pax)?;
                }
                b'g' => {
                    // Global headers are ignored (Docker, containerd), but
                    // still bounded and still kept for reassembly.
                    self.read_meta(size, "PAX global")?;
                }
                b'L' | b'K' => {
                    if size > PATH_MAX as u64 + 1 {
                        return Err(bad(format!(
                            "GNU long name of {size} bytes is over PATH_MAX"
                        )));
                    }
                    let mut data = self.read_meta(size, "GNU long name")?;
                    if let Some(end) = data.iter().position(|&b| b == 0) {
                        if data[end..].iter().any(|&b| b != 0) {
                            return Err(bad("NUL byte inside a GNU long name"));
                        }
                        data.truncate(end);
                    }
                    if flag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                _ => {
                    let h = self.build(&block, flag, size, pax, long_name, long_link)?;
                    self.remaining = h.size;
                    self.pad = ((BLOCK as u64 - h.size % BLOCK as u64) % BLOCK as u64) as usize;
                    return Ok(Some(h));
                }
            }
        }
    }

    /// The end-of-archive marker: a second zero block (tolerated missing,
    /// as GNU tar does) and any trailing data, all recorded raw.
    fn trailer(&mut self) -> Result<()> {
        self.done = true;
        loop {
            let avail = self.src.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                return Ok(());
            }
            let n = avail.len();
            self.rec.raw(avail)?;
            self.src.consume(n);
            self.pos += n as u64;
        }
    }

    fn build(
        &self,
        b: &[u8; BLOCK],
        flag: u8,
        size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Header> {
        let kind = match flag {
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'S' => return Err(bad("GNU sparse files are not supported")),
            other => {
                return Err(bad(format!(
                    "unsupported tar entry type {:?}",
                    char::from(other)
                )))
            }
        };
        let ustar = &b[257..263] == b"ustar\0";
        let mut path = match (pax.path, long_name) {
            (Some(p), _) => p,
            (None, Some(l)) => l,
            (None, None) => {
                let name = cstr(&b[0..100]);
                let prefix = if ustar { cstr(&b[345..500]) } else { &[][..] };
                let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
                if !prefix.is_empty() {
                    p.extend_from_slice(prefix);
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            }
        };
        // Old tars mark directories only by a trailing slash on a NUL-typed
        // entry (read so by Go's archive/tar, tarfile and GNU tar).
        let kind = if kind == Kind::File && flag == 0 && path.ends_with(b"/") {
            Kind::Dir
        } else {
            kind
        };
        let linkname = match (pax.linkpath, long_link) {
            (Some(p), _) => p,
            (None, Some(l)) => l,
            (None, None) => cstr(&b[157..257]).to_vec(),
        };
        check_name(&path, "name")?;
        if matches!(kind, Kind::Symlink | Kind::Hardlink) {
            if linkname.is_empty() {
                return Err(bad(format!("link {} has an empty target", show(&path))));
            }
            check_name(&linkname, "link target")?;
        }
        let size = match pax.size {
            None => size,
            Some(p) if p == size => p,
            // Writers put 0 or the largest octal value in the header when the
            // real size only fits in PAX (Go, Python tarfile, star).
            Some(p) if size == 0 || size == 0o77777777777 => p,
            Some(p) => {
                return Err(bad(format!(
                    "{}: PAX size {p} disagrees with header size {size}",
                    show(&path)
                )))
            }
        };
        if size > SIZE_MAX {
            return Err(bad(format!("entry size {size} is out of range")));
        }
        if kind != Kind::File && size != 0 {
            // A parser that skips this payload and one that reads it as
            // headers would see different archives (tar smuggling).
            return Err(bad(format!(
                "{}: a non-file entry with a {size}-byte payload",
                show(&path)
            )));
        }
        let mode = parse_number(&b[100..108], "mode")?;
        if mode > 0o7777_7777 {
            return Err(bad("mode out of range"));
        }
        let uid = match pax.uid {
            Some(u) => u,
            None => id(parse_number(&b[108..116], "uid")?)?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => id(parse_number(&b[116..124], "gid")?)?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => {
                let t = parse_number(&b[136..148], "mtime")?;
                (i64::try_from(t).map_err(|_| bad("mtime out of range"))?, 0)
            }
        };
        let dev = if matches!(kind, Kind::Char | Kind::Block) {
            let major = match pax.devmajor {
                Some(m) => m as u64,
                None => parse_number(&b[329..337], "devmajor")?,
            };
            let minor = match pax.devminor {
                Some(m) => m as u64,
                None => parse_number(&b[337..345], "devminor")?,
            };
            if major > MAJOR_MAX || minor > MINOR_MAX {
                return Err(bad(format!(
                    "{}: device number {major}:{minor} is out of range",
                    show(&path)
                )));
            }
            (major as u32, minor as u32)
        } else {
            (0, 0)
        };
        if path.len() > 1 && path.ends_with(b"/") && kind == Kind::Dir {
            while path.len() > 1 && path.ends_with(b"/") {
                path.pop();
            }
        }
        Ok(Header {
            kind,
            path,
            linkname,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            size,
            mtime,
            atime: pax.atime,
            dev,
            xattrs: pax.xattrs,
        })
    }

    /// Read payload bytes of the current entry into `buf`.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let avail = self.src.fill_buf().map_err(read_err)?;
        if avail.is_empty() {
            return Err(bad("truncated archive: payload ends early"));
        }
        let n = avail
            .len()
            .min(buf.len())
            .min(self.remaining.min(usize::MAX as u64) as usize);
        buf[..n].copy_from_slice(&avail[..n]);
        self.src.consume(n);
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Hand the next slice of payload to `f` without copying it (the
    /// buffer's own bytes). Returns `false` when the payload is finished.
    pub fn with_payload(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        let avail = self.src.fill_buf().map_err(read_err)?;
        if avail.is_empty() {
            return Err(bad("truncated archive: payload ends early"));
        }
        let n = (avail.len() as u64).min(self.remaining) as usize;
        f(&avail[..n])?;
        self.src.consume(n);
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(true)
    }
}

fn read_err(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<SourceError>()) {
        Some(_) => {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<SourceError>() {
                Ok(s) => s.0,
                Err(other) => Error::io("read", "<layer>", std::io::Error::other(other)),
            }
        }
        None => Error::io("read", "<layer>", e),
    }
}

/// A core error travelling through an `io::Error` (from the decompressing
/// thread or a Python file object), unwrapped again by the reader.
#[derive(Debug)]
pub struct SourceError(pub Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// A name as it is shown in messages.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

fn id(v: u64) -> Result<u32> {
    // u32::MAX is (uid_t)-1, which chown reads as "leave unchanged".
    if v >= u32::MAX as u64 {
        return Err(bad(format!("owner id {v} is out of range")));
    }
    Ok(v as u32)
}

fn check_name(p: &[u8], what: &str) -> Result<()> {
    if p.is_empty() {
        return Err(bad(format!("empty {what}")));
    }
    if p.contains(&0) {
        return Err(bad(format!("NUL byte in {what} {:?}", show(p))));
    }
    if p.len() >= PATH_MAX {
        return Err(bad(format!("{what} of {} bytes is over PATH_MAX", p.len())));
    }
    if p.split(|&c| c == b'/').any(|c| c.len() > NAME_MAX) {
        return Err(bad(format!(
            "a component of {what} {:?} is over NAME_MAX",
            show(&p[..64.min(p.len())])
        )));
    }
    Ok(())
}

fn verify_checksum(b: &[u8; BLOCK]) -> Result<()> {
    let stored = parse_number(&b[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as u64;
        signed += (c as i8) as i64;
    }
    // Some old writers summed signed chars; GNU tar accepts both.
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(bad(
            "header checksum mismatch (not a tar archive, or corrupt)",
        ))
    }
}

/// A numeric header field: octal (space/NUL padded) or GNU base-256.
pub fn parse_number(f: &[u8], what: &str) -> Result<u64> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(bad(format!("negative {what}")));
            }
            let mut v: u64 = (first & 0x7f) as u64;
            for &c in &f[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(c as u64))
                    .ok_or_else(|| bad(format!("{what} out of range")))?;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &c in f {
        match c {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add((c - b'0') as u64))
                    .ok_or_else(|| bad(format!("{what} out of range")))?;
                seen = true;
            }
            b' ' if !seen => {}
            b' ' | 0 => break,
            _ => return Err(bad(format!("invalid {what} field"))),
        }
    }
    Ok(v)
}

fn parse_decimal(v: &[u8], what: &str) -> Result<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad(format!("invalid PAX {what}")));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("PAX {what} out of range")))
}

/// A PAX time: `[-]seconds[.fraction]`, nanoseconds kept.
fn parse_time(v: &[u8]) -> Result<(i64, u32)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&c| c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    let s = parse_decimal(secs, "time")?;
    let s = i64::try_from(s).map_err(|_| bad("PAX time out of range"))?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad("invalid PAX time"));
    }
    let mut ns: u32 = 0;
    for i in 0..9 {
        ns = ns * 10 + frac.get(i).map_or(0, |c| (c - b'0') as u32);
    }
    if !neg {
        return Ok((s, ns));
    }
    // -1.25 is 1.25 s before the epoch: (-2, 0.75 s).
    if ns == 0 {
        Ok((-s, 0))
    } else {
        Ok((-s - 1, 1_000_000_000 - ns))
    }
}

fn parse_pax(data: &[u8], pax: &mut Pax) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        // "%d %s=%s\n", the length counting the whole record.
        let sp = rest
            .iter()
            .take(21)
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("malformed PAX record"))?;
        let len = parse_decimal(&rest[..sp], "record length")? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed PAX record length"));
        }
        let rec = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(bad("NUL byte or empty key in a PAX record"));
        }
        let text = |v: &[u8]| -> Result<Option<Vec<u8>>> {
            if v.contains(&0) {
                return Err(bad(format!("NUL byte in PAX {}", show(key))));
            }
            // An empty value restores the header's own field (POSIX pax).
            Ok(if v.is_empty() { None } else { Some(v.to_vec()) })
        };
        match key {
            b"path" => pax.path = text(value)?,
            b"linkpath" => pax.linkpath = text(value)?,
            b"size" => pax.size = Some(parse_decimal(value, "size")?),
            b"uid" => pax.uid = Some(id(parse_decimal(value, "uid")?)?),
            b"gid" => pax.gid = Some(id(parse_decimal(value, "gid")?)?),
            b"mtime" => pax.mtime = Some(parse_time(value)?),
            b"atime" => pax.atime = Some(parse_time(value)?),
            b"SCHILY.devmajor" => pax.devmajor = Some(dev_part(value)?),
            b"SCHILY.devminor" => pax.devminor = Some(dev_part(value)?),
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(bad("GNU sparse files are not supported"));
            }
            k if k.starts_with(b"SCHILY.xattr.") => {
                let name = &k[b"SCHILY.xattr.".len()..];
                if name.is_empty() || name.len() > XATTR_NAME_MAX {
                    return Err(bad("xattr name length out of range"));
                }
                if value.len() > XATTR_SIZE_MAX {
                    return Err(bad(format!(
                        "xattr {} value over XATTR_SIZE_MAX",
                        show(name)
                    )));
                }
                pax.xattrs.retain(|(n, _)| n != name);
                if pax.xattrs.len() >= XATTR_COUNT_MAX {
                    return Err(bad("too many xattrs on one entry"));
                }
                pax.xattrs.push((name.to_vec(), value.to_vec()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn dev_part(v: &[u8]) -> Result<u32> {
    let n = parse_decimal(v, "device number")?;
    u32::try_from(n).map_err(|_| bad("device number out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256() {
        assert_eq!(parse_number(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(parse_number(b"  17 \0", "m").unwrap(), 0o17);
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 1, 0], "s").unwrap(),
            256
        );
        assert!(parse_number(&[0xff; 8], "s").is_err());
        assert!(parse_number(
            &[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "s"
        )
        .is_err());
        assert!(parse_number(b"12x", "m").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_time(b"1.5").unwrap(), (1, 500_000_000));
        assert_eq!(parse_time(b"-1.25").unwrap(), (-2, 750_000_000));
        assert_eq!(parse_time(b"7").unwrap(), (7, 0));
        assert!(parse_time(b"1.x").is_err());
        assert!(parse_time(b"99999999999999999999999").is_err());
    }

    #[test]
    fn pax_records_are_bounded() {
        let mut p = Pax::default();
        assert!(parse_pax(b"9999 path=x\n", &mut p).is_err());
        assert!(parse_pax(b"3 x\n", &mut p).is_err());
        assert!(parse_pax(b"11 pa\0h=x\n", &mut p).is_err());
        assert!(parse_pax(b"12 path=a\0b\n", &mut p).is_err());
        parse_pax(b"11 path=ab\n", &mut p).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"ab"[..]));
    }
}
