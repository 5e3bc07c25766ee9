//! Decompression chosen by magic bytes, as a stream.
//!
//! Layers come as plain tar, gzip (`application/vnd.oci.image.layer.v1.tar+gzip`)
//! or zstd (`+zstd`); the media type is not always at hand (a `docker save`
//! archive, a file on disk), so the first bytes decide, as containerd's
//! `compression.DecompressStream` does.

use std::io::{self, Chain, Cursor, Read};

use crate::error::{Error, Result};

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip (RFC 1952), possibly multi-member.
    Gzip,
    /// zstd (RFC 8878), possibly multi-frame.
    Zstd,
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BZIP2: &[u8] = b"BZh";

/// Sniff `head` (the stream's first bytes).
pub fn detect(head: &[u8]) -> Result<Compression> {
    if head.starts_with(GZIP) {
        Ok(Compression::Gzip)
    } else if head.starts_with(ZSTD) {
        Ok(Compression::Zstd)
    } else if head.starts_with(XZ) || head.starts_with(BZIP2) {
        Err(Error::Archive(
            "xz and bzip2 layers are not supported (only plain, gzip and zstd)".into(),
        ))
    } else {
        Ok(Compression::None)
    }
}

/// The largest zstd window lamina decodes unless asked for more, as a
/// power of two: 32 MiB. The decoder allocates the window up front, so a
/// small layer asking for a 2 GiB window would take 2 GiB (zstd's own
/// default limit is 128 MiB, which a 30 KiB layer fills). Every standard
/// compression level (1-19: at most 8 MiB) and `--long` up to 25 fit.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// `src`, decompressed according to its magic bytes.
pub fn decompress<'a, R: Read + Send + 'a>(src: R) -> Result<Box<dyn Read + Send + 'a>> {
    decompress_with(src, None)
}

/// [`decompress`], with a zstd window limit other than
/// [`ZSTD_WINDOW_LOG_MAX`] (as a power of two, at most 31).
pub fn decompress_with<'a, R: Read + Send + 'a>(
    src: R,
    zstd_window_log_max: Option<u32>,
) -> Result<Box<dyn Read + Send + 'a>> {
    decompress_detected(src, zstd_window_log_max).map(|(_, r)| r)
}

/// [`decompress_with`], also saying which compression the magic bytes
/// chose.
pub fn decompress_detected<'a, R: Read + Send + 'a>(
    mut src: R,
    zstd_window_log_max: Option<u32>,
) -> Result<(Compression, Box<dyn Read + Send + 'a>)> {
    // Enough for gzip's and xz's magic, and for a zstd frame header up to
    // its window size.
    let mut head = [0u8; 18];
    let mut got = 0;
    while got < head.len() {
        match src.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", "<layer>", e)),
        }
    }
    let stream: Chain<Cursor<Vec<u8>>, R> = Cursor::new(head[..got].to_vec()).chain(src);
    let kind = detect(&head[..got])?;
    let reader: Box<dyn Read + Send + 'a> = match kind {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => {
            let log = zstd_window_log_max.unwrap_or(ZSTD_WINDOW_LOG_MAX);
            // Refused before the decoder allocates it (the decoder refuses
            // later frames past the limit itself, as a corrupt layer).
            if zstd_window(&head[..got]).is_some_and(|w| w > 1u64 << log) {
                return Err(Error::LimitExceeded {
                    what: "the zstd window the layer asks for".into(),
                    limit: 1 << log,
                });
            }
            let mut d = zstd::stream::read::Decoder::new(stream)
                .map_err(|e| Error::io("zstd", "<layer>", e))?;
            d.window_log_max(log)
                .map_err(|e| Error::InvalidArgument(format!("zstd window limit 2^{log}: {e}")))?;
            Box::new(d)
        }
    };
    Ok((kind, reader))
}

/// The window a zstd frame asks for, from its header (RFC 8878 §3.1.1.1):
/// the window descriptor, or for a single-segment frame its content size.
/// `None` where `head` is too short to tell.
fn zstd_window(head: &[u8]) -> Option<u64> {
    let fhd = *head.get(4)?;
    let single = fhd & 0x20 != 0;
    if !single {
        let wd = *head.get(5)?;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = [1, 2, 4, 8][usize::from(fhd >> 6)];
    let at = 5 + dict;
    let field = head.get(at..at + fcs)?;
    let mut v = 0u64;
    for (i, b) in field.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(if fcs == 2 { v + 256 } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = b"hello layer".repeat(1000);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &data).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for input in [data.clone(), gz, zs] {
            let mut out = Vec::new();
            decompress(&input[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
        assert!(decompress(&b"BZh91AY"[..]).is_err());
        let mut out = Vec::new();
        decompress(&b"ab"[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
    }
}
