//! A minimal, deterministic tar writer: ustar headers, with a PAX extended
//! header in front of an entry whenever a value does not fit ustar (long
//! names, nanosecond times, large ids or sizes, xattrs).
//!
//! Every byte is a function of the [`Header`] alone — no atime, no ctime, no
//! user or group names, no pid in the PAX header's name — so the same tree
//! always gives the same archive (the seed's diffs were not reproducible).

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// The type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file with `size` bytes of payload.
    File,
    /// A hard link to an earlier entry of the same archive (`linkname`).
    HardLink,
    /// A symbolic link to `linkname`.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A directory.
    Dir,
    /// A named pipe.
    Fifo,
}

impl EntryType {
    fn flag(self) -> u8 {
        match self {
            EntryType::File => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::Char => b'3',
            EntryType::Block => b'4',
            EntryType::Dir => b'5',
            EntryType::Fifo => b'6',
        }
    }
}

/// Everything written about one entry.
#[derive(Debug, Clone)]
pub struct Header {
    /// The name inside the archive, relative, without a leading `/`;
    /// directories end with `/`.
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryType,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Payload size (regular files only; 0 otherwise).
    pub size: u64,
    /// Modification time: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Link target (symlinks and hard links).
    pub linkname: Vec<u8>,
    /// Device numbers (char and block devices).
    pub dev: (u32, u32),
    /// Extended attributes, written as `SCHILY.xattr.<key>` PAX records, in
    /// the order given.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes tar entries to any [`Write`], in constant memory.
///
/// Output goes through one 1 MiB buffer that payloads are read straight
/// into ([`Self::spare`] + [`Self::commit`]), as GNU tar reads into its
/// record buffer: no second copy, and large `write`s.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Box<[u8]>,
    pos: usize,
    written: u64,
}

const OUT_BUF: usize = 1 << 20;

/// `value` as a NUL-terminated octal field of `field.len()` bytes, or `None`
/// where it does not fit.
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

impl<W: Write> TarWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            buf: vec![0u8; OUT_BUF].into_boxed_slice(),
            pos: 0,
            written: 0,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.out.write_all(&self.buf[..self.pos])?;
            self.pos = 0;
        }
        Ok(())
    }

    /// Room for at most `max` payload bytes in the output buffer (draining
    /// it first when full); fill a prefix, then [`Self::commit`] its length.
    pub fn spare(&mut self, max: usize) -> io::Result<&mut [u8]> {
        if self.pos == self.buf.len() {
            self.drain()?;
        }
        let end = self.buf.len().min(self.pos.saturating_add(max));
        Ok(&mut self.buf[self.pos..end])
    }

    /// Count `n` bytes written into [`Self::spare`] as output.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(self.pos + n <= self.buf.len());
        self.pos += n;
        self.written += n as u64;
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Append raw payload bytes (the caller pads with [`Self::pad`]).
    pub fn put(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let room = self.spare(b.len())?;
            let n = room.len();
            room.copy_from_slice(&b[..n]);
            self.commit(n);
            b = &b[n..];
        }
        Ok(())
    }

    /// Pad a payload of `len` bytes to the next block boundary.
    pub fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// A ustar header block; returns false for each field that did not fit
    /// (the caller has put it in a PAX record instead).
    #[allow(clippy::too_many_arguments)]
    fn ustar_block(
        name: &[u8],
        flag: u8,
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        mtime: u64,
        linkname: &[u8],
        dev: (u32, u32),
    ) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let n = name.len().min(100);
        b[..n].copy_from_slice(&name[..n]);
        octal(&mut b[100..108], u64::from(mode & 0o7777));
        if !octal(&mut b[108..116], uid) {
            octal(&mut b[108..116], 0);
        }
        if !octal(&mut b[116..124], gid) {
            octal(&mut b[116..124], 0);
        }
        if !octal(&mut b[124..136], size) {
            octal(&mut b[124..136], 0);
        }
        if !octal(&mut b[136..148], mtime) {
            octal(&mut b[136..148], 0);
        }
        b[156] = flag;
        let l = linkname.len().min(100);
        b[157..157 + l].copy_from_slice(&linkname[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        if !octal(&mut b[329..337], u64::from(dev.0)) {
            octal(&mut b[329..337], 0);
        }
        if !octal(&mut b[337..345], u64::from(dev.1)) {
            octal(&mut b[337..345], 0);
        }
        // The checksum is computed with its own field as spaces.
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        b
    }

    /// Write the header of one entry (with its PAX header when needed). A
    /// regular file's payload must follow through [`Self::write_payload`].
    pub fn write_header(&mut self, h: &Header) -> io::Result<()> {
        let mut pax = Vec::new();
        // A name is only ever kept whole: ustar's prefix split is skipped so
        // the format does not depend on where a '/' happens to fall.
        if h.path.len() > 100 {
            pax_record(&mut pax, b"path", &h.path);
        }
        if h.linkname.len() > 100 {
            pax_record(&mut pax, b"linkpath", &h.linkname);
        }
        const MAX7: u64 = 0o7777777;
        if h.uid > MAX7 {
            pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
        }
        if h.gid > MAX7 {
            pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
        }
        if h.size > 0o77777777777 {
            pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
        }
        let (sec, nsec) = h.mtime;
        if nsec != 0 || !(0..=0o77777777777).contains(&sec) {
            let v = if nsec == 0 {
                sec.to_string()
            } else if sec >= 0 {
                format!("{sec}.{nsec:09}")
            } else {
                // PAX times are decimal: -1.5 is half a second before -1.
                let (s, n) = (sec + 1, 1_000_000_000 - nsec);
                if s == 0 {
                    format!("-0.{n:09}")
                } else {
                    format!("{s}.{n:09}")
                }
            };
            pax_record(&mut pax, b"mtime", v.as_bytes());
        }
        for (k, v) in &h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        let ustar_mtime = if (0..=0o77777777777).contains(&sec) {
            sec as u64
        } else {
            0
        };
        if !pax.is_empty() {
            let base = h
                .path
                .strip_suffix(b"/")
                .unwrap_or(&h.path)
                .rsplit(|&c| c == b'/')
                .next()
                .unwrap_or(b"");
            let mut name = b"PaxHeaders.0/".to_vec();
            name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
            let block = Self::ustar_block(
                &name,
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                ustar_mtime,
                b"",
                (0, 0),
            );
            self.put(&block)?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let size = if h.kind == EntryType::File { h.size } else { 0 };
        let block = Self::ustar_block(
            &h.path,
            h.kind.flag(),
            h.mode,
            h.uid,
            h.gid,
            size,
            ustar_mtime,
            &h.linkname,
            h.dev,
        );
        self.put(&block)
    }

    /// Copy exactly `size` bytes of payload from `src` in chunks through
    /// `buf`, then pad to a block. A source shorter than `size` is an error:
    /// the header already promised that many bytes.
    pub fn write_payload(
        &mut self,
        src: &mut impl Read,
        size: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left.try_into().unwrap_or(usize::MAX));
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while being read ({left} of {size} bytes missing)"),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        self.pad(size)
    }

    /// Write the end-of-archive marker (two zero blocks) and flush; gives
    /// back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        self.drain()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str) -> Header {
        Header {
            path: path.as_bytes().to_vec(),
            kind: EntryType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: (1_700_000_000, 0),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut b = Vec::new();
        pax_record(&mut b, b"path", &[b'a'; 95]);
        let s = String::from_utf8(b.clone()).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), b.len());
        let mut b = Vec::new();
        pax_record(&mut b, b"k", b"v");
        assert_eq!(b, b"6 k=v\n");
    }

    #[test]
    fn short_entry_is_plain_ustar() {
        let mut w = TarWriter::new(Vec::new());
        w.write_header(&header("a")).unwrap();
        w.write_payload(&mut &b"abc"[..], 3, &mut [0u8; 2]).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 512 * 4);
        assert_eq!(&out[..2], b"a\0");
        assert_eq!(&out[257..263], b"ustar\0");
        assert_eq!(&out[512..515], b"abc");
    }

    #[test]
    fn long_name_and_ns_time_go_to_pax() {
        let mut h = header(&"x".repeat(150));
        h.mtime = (5, 7);
        h.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        let mut w = TarWriter::new(Vec::new());
        w.write_header(&h).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out[156], b'x');
        let body = String::from_utf8_lossy(&out[512..1024]);
        assert!(body.contains("mtime=5.000000007\n"), "{body}");
        assert!(body.contains("SCHILY.xattr.user.k=v\n"));
        assert!(body.contains(&format!("path={}\n", "x".repeat(150))));
    }

    #[test]
    fn short_source_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let e = w
            .write_payload(&mut &b"ab"[..], 3, &mut [0u8; 8])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn negative_subsecond_time() {
        let mut h = header("n");
        h.mtime = (-2, 250_000_000);
        let mut w = TarWriter::new(Vec::new());
        w.write_header(&h).unwrap();
        let out = w.finish().unwrap();
        assert!(String::from_utf8_lossy(&out[512..1024]).contains("mtime=-1.750000000\n"));
    }
}
