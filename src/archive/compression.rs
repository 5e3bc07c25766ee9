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

/// `src`, decompressed according to its magic bytes.
pub fn decompress<'a, R: Read + Send + 'a>(mut src: R) -> Result<Box<dyn Read + Send + 'a>> {
    let mut head = [0u8; 6];
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
    Ok(match detect(&head[..got])? {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(stream)
                .map_err(|e| Error::io("zstd", "<layer>", e))?,
        ),
    })
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
