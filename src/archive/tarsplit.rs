//! Exact reassembly: the bytes of a layer's tar that are not in the tree.
//!
//! tar-split's idea (vbatts/tar-split, used by Docker since 1.10 for
//! `TarLayer`): while applying, keep every header, padding and trailer byte
//! as it was, and for each file payload only its size and a checksum; the
//! payloads themselves are read back from the applied tree.
//!
//! # Record format (version 1)
//!
//! A zstd stream whose content is:
//!
//! ```text
//! "LAMINA-TARSPLIT\x01"                         16-byte magic + version
//! then records, each a tag byte:
//!   'R' varint(len) bytes                       raw archive bytes (the varint
//!                                               may be padded with 0x80 bytes)
//!   'F' varint(size) u32le(crc32) varint(len) name
//!                                               a payload of `size` bytes,
//!                                               found at `name` in the tree
//!   'E' varint(total) sha256[32]                end: stream size and digest
//! ```
//!
//! Binary rather than JSON lines: raw headers are binary, and base64 would
//! grow the largest part of the record by a third before compression.
//!
//! The payload checksum is CRC-32 (IEEE, `crc32fast`, SIMD): it runs at
//! memory speed on the applying thread, and it is not the integrity
//! guarantee — that is the SHA-256 of the whole stream, which [`reassemble`]
//! recomputes and compares with the recorded diff ID at the end. The CRC's
//! job is to name the changed file early, before its bytes are written out.
//!
//! Payloads of entries that do not stay in the tree — files replaced or
//! whited out later in the same tar — cannot be read back: reassembly
//! fails with an error naming the file (the CRC or size no longer matches).
//! The payloads of AUFS hard-link staging files (`/.wh..wh.plnk/*`, removed
//! after the apply) are kept in the record as raw bytes instead.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use super::digest::{hex_id, HashingWriter};
use super::reader::{show, Record};
use crate::error::{Error, IoContext, Result};
use crate::fs::root::Root;

const MAGIC: &[u8; 16] = b"LAMINA-TARSPLIT\x01";
/// Record bytes are gathered up to this size before the encoder sees them.
const RAW_FLUSH: usize = 1 << 20;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a tar-split record while an apply runs.
///
/// Records are gathered in one buffer and handed to the zstd encoder in
/// large pieces: one small encoder call per header costs more than the
/// compression itself on a layer of many small files.
pub struct Recorder<W: Write> {
    enc: zstd::stream::write::Encoder<'static, W>,
    buf: Vec<u8>,
    /// Where the open raw record's length placeholder starts in `buf`, and
    /// where its bytes start.
    raw_at: Option<(usize, usize)>,
}

fn werr(e: io::Error) -> Error {
    Error::io("write", "<tar-split record>", e)
}

/// Bytes a raw record's length is written in (a padded varint), so the
/// record can be opened before its length is known.
const RAW_LEN_BYTES: usize = 4;

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out`.
    pub fn new(out: W) -> Result<Self> {
        // Level 1: the record is mostly headers, which compress well at any
        // level, and this runs on the applying thread.
        let mut enc = zstd::stream::write::Encoder::new(out, 1).map_err(werr)?;
        enc.write_all(MAGIC).map_err(werr)?;
        Ok(Recorder {
            enc,
            buf: Vec::with_capacity(RAW_FLUSH * 2),
            raw_at: None,
        })
    }

    /// Close the open raw record: write its length into the placeholder as
    /// a varint padded with continuation bytes.
    fn close_raw(&mut self) {
        if let Some((at, start)) = self.raw_at.take() {
            let mut n = (self.buf.len() - start) as u64;
            for i in 0..RAW_LEN_BYTES {
                let last = i == RAW_LEN_BYTES - 1;
                self.buf[at + i] = (n as u8 & 0x7f) | if last { 0 } else { 0x80 };
                n >>= 7;
            }
        }
    }

    fn drain(&mut self) -> Result<()> {
        self.close_raw();
        self.enc.write_all(&self.buf).map_err(werr)?;
        self.buf.clear();
        Ok(())
    }

    /// Write the end record and finish the zstd stream.
    pub fn finish(mut self, size: u64, diff_id: &str) -> Result<W> {
        self.close_raw();
        self.buf.push(b'E');
        put_varint(&mut self.buf, size);
        let hex = diff_id.trim_start_matches("sha256:");
        for i in 0..32 {
            let b = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::InvalidArgument("bad diff id".into()))?;
            self.buf.push(b);
        }
        self.drain()?;
        self.enc.finish().map_err(werr)
    }
}

impl<W: Write> Record for Recorder<W> {
    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        // 2^28 is what RAW_LEN_BYTES varint bytes can hold.
        for piece in bytes.chunks(1 << 27) {
            if let Some((_, start)) = self.raw_at {
                if self.buf.len() - start + piece.len() >= 1 << 28 {
                    self.close_raw();
                }
            }
            if self.raw_at.is_none() {
                self.buf.push(b'R');
                let at = self.buf.len();
                self.buf.extend_from_slice(&[0; RAW_LEN_BYTES]);
                self.raw_at = Some((at, self.buf.len()));
            }
            self.buf.extend_from_slice(piece);
            if self.buf.len() >= RAW_FLUSH {
                self.drain()?;
            }
        }
        Ok(())
    }

    fn file(&mut self, name: &[u8], size: u64, crc: u32) -> Result<()> {
        self.close_raw();
        self.buf.push(b'F');
        put_varint(&mut self.buf, size);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        put_varint(&mut self.buf, name.len() as u64);
        self.buf.extend_from_slice(name);
        if self.buf.len() >= RAW_FLUSH {
            self.drain()?;
        }
        Ok(())
    }
}

/// The path a damaged record is reported under; the graph, which knows
/// the record's file, puts that in its place.
pub const RECORD: &str = "<tar-split record>";

fn corrupt(msg: &str) -> Error {
    Error::corrupt(RECORD, format!("tar-split record: {msg}"))
}

fn rerr(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        corrupt("truncated")
    } else if e.raw_os_error().is_none() {
        // Not the OS: the zstd decoder refusing what it reads.
        corrupt(&e.to_string())
    } else {
        Error::io("read", RECORD, e)
    }
}

fn get_varint(r: &mut impl Read) -> Result<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b).map_err(rerr)?;
        v |= ((b[0] & 0x7f) as u64) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

/// Write the original tar to `out` from a tar-split `record` and the tree
/// at `root` the layer was applied to. Returns the bytes written.
///
/// Each payload is read from the tree (resolved inside `root`, never
/// following a final symlink) and checked against its recorded size and
/// CRC before it is written; a changed file is an [`Error::Archive`] naming
/// it. At the end the SHA-256 of everything written is compared with the
/// recorded diff ID.
pub fn reassemble(record: impl Read, root: &Path, out: impl Write) -> Result<u64> {
    reassemble_checked(record, root, out).map(|(n, _)| n)
}

/// [`reassemble`], also returning the `sha256:<hex>` the bytes written were
/// checked against (the recorded diff ID): a caller that needs their digest
/// has it without hashing them again.
pub fn reassemble_checked(
    record: impl Read,
    root: &Path,
    out: impl Write,
) -> Result<(u64, String)> {
    let root = Root::open(root)?;
    let dec = zstd::stream::read::Decoder::new(record).map_err(rerr)?;
    let mut rec = BufReader::with_capacity(256 * 1024, dec);
    let mut magic = [0u8; 16];
    rec.read_exact(&mut magic).map_err(rerr)?;
    if &magic != MAGIC {
        return Err(corrupt(
            "bad magic (not a lamina tar-split record, or another version)",
        ));
    }
    let mut out = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        size: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut tag = [0u8];
        rec.read_exact(&mut tag).map_err(rerr)?;
        match tag[0] {
            b'R' => {
                let mut n = get_varint(&mut rec)?;
                while n > 0 {
                    let avail = rec.fill_buf().map_err(rerr)?;
                    if avail.is_empty() {
                        return Err(corrupt("truncated raw record"));
                    }
                    let k = (avail.len() as u64).min(n) as usize;
                    out.write_all(&avail[..k]).map_err(werr)?;
                    rec.consume(k);
                    n -= k as u64;
                }
            }
            b'F' => {
                let size = get_varint(&mut rec)?;
                let mut crc = [0u8; 4];
                rec.read_exact(&mut crc).map_err(rerr)?;
                let crc = u32::from_le_bytes(crc);
                let len = get_varint(&mut rec)?;
                if len > 4096 {
                    return Err(corrupt("name too long"));
                }
                let mut name = vec![0u8; len as usize];
                rec.read_exact(&mut name).map_err(rerr)?;
                copy_payload(&root, &name, size, crc, &mut out, &mut buf)?;
            }
            b'E' => {
                let size = get_varint(&mut rec)?;
                let mut digest = [0u8; 32];
                rec.read_exact(&mut digest).map_err(rerr)?;
                out.flush().map_err(werr)?;
                let got = out.hasher.finalize_reset();
                if out.size != size || got[..] != digest[..] {
                    return Err(Error::corrupt(
                        root.path(),
                        format!(
                            "reassembled tar does not match the layer: {} bytes {} instead of {size} bytes {}",
                            out.size,
                            hex_id(&got),
                            hex_id(&digest)
                        ),
                    ));
                }
                return Ok((out.size, hex_id(&digest)));
            }
            _ => return Err(corrupt("unknown record tag")),
        }
    }
}

fn copy_payload(
    root: &Root,
    name: &[u8],
    size: u64,
    crc: u32,
    out: &mut impl Write,
    buf: &mut [u8],
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let rel = Path::new(std::ffi::OsStr::from_bytes(name));
    let shown = root.display_path(rel);
    let changed = |why: String| {
        Error::corrupt(
            &shown,
            format!(
                "cannot reassemble the layer: {} {why} since it was applied \
                 (or was replaced later in the same layer)",
                show(name)
            ),
        )
    };
    // An O_PATH handle first: a FIFO or device put in the file's place must
    // not be opened (a FIFO blocks, a device open has side effects).
    let fd = match root.open_in(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Err(changed("was removed".into())),
        Err(e) => return Err(e).at("open", &shown),
    };
    let st = rustix::fs::fstat(&fd).at("stat", &shown)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(changed("is no longer a regular file".into()));
    }
    if st.st_size as u64 != size {
        return Err(changed(format!(
            "changed size ({} bytes, recorded {size})",
            st.st_size
        )));
    }
    let fd = rustix::fs::open(
        crate::fs::proc_path(&fd, std::ffi::OsStr::new("")),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", &shown)?;
    // Check the whole payload before writing any of it when it fits the
    // buffer (the common case); larger payloads are checked as they stream
    // and a mismatch still fails before the stream's end.
    let mut f = std::fs::File::from(fd);
    let mut hasher = crc32fast::Hasher::new();
    let mut left = size;
    if size <= buf.len() as u64 {
        let b = &mut buf[..size as usize];
        f.read_exact(b).at("read", &shown)?;
        hasher.update(b);
        if hasher.finalize() != crc {
            return Err(changed("changed content".into()));
        }
        return out.write_all(b).map_err(werr);
    }
    while left > 0 {
        let k = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..k]).at("read", &shown)?;
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(werr)?;
        left -= k as u64;
    }
    if hasher.finalize() != crc {
        return Err(changed("changed content".into()));
    }
    Ok(())
}

/// The layer tar a record describes, with every payload read as zeros: all
/// of the archive's structure (headers, meta headers, padding, trailer)
/// without the tree, for what can be learnt from the headers alone.
struct Skeleton<R: BufRead> {
    rec: R,
    /// Raw bytes or zero bytes left in the current record.
    left: u64,
    zeros: bool,
    ended: bool,
}

impl<R: BufRead> Read for Skeleton<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
        while self.left == 0 {
            if self.ended {
                return Ok(0);
            }
            let mut tag = [0u8];
            self.rec.read_exact(&mut tag)?;
            let varint = |r: &mut R| get_varint(r).map_err(|_| bad("bad varint"));
            match tag[0] {
                b'R' => {
                    self.left = varint(&mut self.rec)?;
                    self.zeros = false;
                }
                b'F' => {
                    self.left = varint(&mut self.rec)?;
                    self.zeros = true;
                    let mut crc = [0u8; 4];
                    self.rec.read_exact(&mut crc)?;
                    let len = varint(&mut self.rec)?;
                    io::copy(&mut (&mut self.rec).take(len), &mut io::sink())?;
                }
                b'E' => self.ended = true,
                _ => return Err(bad("unknown record tag")),
            }
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = if self.zeros {
            buf[..want].fill(0);
            want
        } else {
            self.rec.read(&mut buf[..want])?
        };
        if n == 0 && want > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Call `f` with the header of every entry of the layer a record
/// describes, in archive order, from the record alone (no tree is read):
/// what a layer's tar says it adds, changes and whites out.
pub fn for_each_header(
    record: impl Read,
    mut f: impl FnMut(&super::reader::Header) -> Result<()>,
) -> Result<()> {
    let dec = zstd::stream::read::Decoder::new(record).map_err(rerr)?;
    let mut rec = BufReader::with_capacity(64 * 1024, dec);
    let mut magic = [0u8; 16];
    rec.read_exact(&mut magic).map_err(rerr)?;
    if &magic != MAGIC {
        return Err(corrupt(
            "bad magic (not a lamina tar-split record, or another version)",
        ));
    }
    let skeleton = Skeleton {
        rec,
        left: 0,
        zeros: false,
        ended: false,
    };
    let mut none = super::reader::NoRecord;
    let mut tar = super::reader::TarReader::new(BufReader::new(skeleton), &mut none);
    while let Some(h) = tar
        .next_entry()
        .map_err(|e| corrupt(&format!("its tar does not parse: {e}")))?
    {
        f(&h)?;
    }
    Ok(())
}

/// The seed's size of the layer a record describes: the sum of its
/// entries' header sizes (see `ApplyReport::content_bytes`), read from the
/// record alone.
pub fn content_bytes(record: impl Read) -> Result<u64> {
    let dec = zstd::stream::read::Decoder::new(record).map_err(rerr)?;
    let mut rec = BufReader::with_capacity(64 * 1024, dec);
    let mut magic = [0u8; 16];
    rec.read_exact(&mut magic).map_err(rerr)?;
    if &magic != MAGIC {
        return Err(corrupt(
            "bad magic (not a lamina tar-split record, or another version)",
        ));
    }
    let skeleton = Skeleton {
        rec,
        left: 0,
        zeros: false,
        ended: false,
    };
    let mut none = super::reader::NoRecord;
    let mut tar = super::reader::TarReader::new(BufReader::new(skeleton), &mut none);
    let mut total = 0;
    while let Some(h) = tar
        .next_entry()
        .map_err(|e| corrupt(&format!("its tar does not parse: {e}")))?
    {
        total += h.size;
    }
    Ok(total)
}
