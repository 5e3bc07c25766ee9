//! A reader that checks a blob against its descriptor while it streams:
//! never more than `size` bytes are read from the source, and at the end
//! the count and the SHA-256 must be the descriptor's (umoci's
//! `hardening.VerifiedReadCloser` does the same). A failure is an
//! [`Error::Archive`] naming the blob, raised from `read` itself, so it
//! reaches whoever reads — through a decompressor and the apply pipeline,
//! whose pump thread unwraps it ([`crate::archive::reader::SourceError`]).
//!
//! A layer blob whose digest is also its diff ID (an uncompressed layer)
//! is hashed once: [`Verified::new_layer`] leaves the SHA-256 to the apply,
//! whose diff ID the caller compares with the image config's, when the
//! blob's first bytes show it is not compressed (the apply then hashes
//! exactly these bytes, to their end). Its size is still checked here.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::archive::compression::{detect, Compression};
use crate::archive::digest::hex_id;
use crate::archive::reader::SourceError;
use crate::error::Error;

/// See the module docs.
pub struct Verified<R> {
    inner: R,
    label: String,
    digest: String,
    size: u64,
    seen: u64,
    hasher: Sha256,
    checked: bool,
    hashing: Hashing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hashing {
    Here,
    /// Decided on the first read: here, or by the apply.
    Undecided,
    ByTheApply,
}

impl<R: Read> Verified<R> {
    /// `inner`, which must give exactly `size` bytes with SHA-256 `digest`
    /// (`sha256:<hex>`); `label` names the blob in errors.
    pub fn new(inner: R, label: &str, digest: &str, size: u64) -> Self {
        Verified {
            inner,
            label: label.to_owned(),
            digest: digest.to_owned(),
            size,
            seen: 0,
            hasher: Sha256::new(),
            checked: false,
            hashing: Hashing::Here,
        }
    }

    /// [`Self::new`] for a layer blob with diff ID `diff_id` (as the
    /// image config says): where that is `digest` and the blob is not
    /// compressed, its hash is the apply's diff ID, which the caller must
    /// check against `diff_id`; this reader then checks only the size.
    pub fn new_layer(inner: R, label: &str, digest: &str, size: u64, diff_id: &str) -> Self {
        let mut v = Self::new(inner, label, digest, size);
        if digest == diff_id {
            v.hashing = Hashing::Undecided;
        }
        v
    }

    fn fail(&self, what: String) -> io::Error {
        io::Error::other(SourceError(Error::Archive(format!(
            "{}: {what}",
            self.label
        ))))
    }

    fn check_end(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        if self.seen != self.size {
            return Err(self.fail(format!(
                "the blob has {} bytes, its descriptor says {} (truncated?)",
                self.seen, self.size
            )));
        }
        if self.hashing == Hashing::ByTheApply {
            self.checked = true;
            return Ok(());
        }
        let got = hex_id(&std::mem::take(&mut self.hasher).finalize());
        if got != self.digest {
            return Err(self.fail(format!(
                "digest mismatch: the blob's bytes hash to {got}, its descriptor says {}",
                self.digest
            )));
        }
        self.checked = true;
        Ok(())
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past the size is enough to tell a blob that is too long.
        let room = (self.size + 1).saturating_sub(self.seen);
        let want = buf.len().min(room.try_into().unwrap_or(usize::MAX));
        let n = if want == 0 {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        if n == 0 {
            self.check_end()?;
            return Ok(0);
        }
        if self.hashing == Hashing::Undecided {
            // Four bytes tell gzip and zstd; a stream the apply takes as
            // plain tar is these very bytes. (An xz magic cut short here is
            // refused by the apply's own look at the first 18 bytes.)
            let plain =
                self.seen == 0 && n >= 4 && matches!(detect(&buf[..n]), Ok(Compression::None));
            self.hashing = if plain {
                Hashing::ByTheApply
            } else {
                Hashing::Here
            };
        }
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(self.fail(format!(
                "the blob is longer than the {} bytes its descriptor says",
                self.size
            )));
        }
        if self.hashing != Hashing::ByTheApply {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::sha256_digest;

    fn read_all(r: impl Read) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut r = r;
        r.read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn checks_size_and_digest() {
        let data = b"layer bytes".repeat(100);
        let d = sha256_digest(&data);
        let n = data.len() as u64;
        assert_eq!(
            read_all(Verified::new(&data[..], "b", &d, n)).unwrap(),
            data
        );
        let short = read_all(Verified::new(&data[..10], "b", &d, n)).unwrap_err();
        assert!(short.contains("truncated"), "{short}");
        let long = read_all(Verified::new(&data[..], "b", &d, n - 1)).unwrap_err();
        assert!(long.contains("longer"), "{long}");
        let mut bad = data.clone();
        bad[5] ^= 1;
        let m = read_all(Verified::new(&bad[..], "blobs/sha256/x", &d, n)).unwrap_err();
        assert!(
            m.contains("digest mismatch") && m.contains("blobs/sha256/x"),
            "{m}"
        );
    }

    #[test]
    fn a_plain_layer_whose_digest_is_its_diff_id_leaves_the_hash_to_the_apply() {
        let data = b"plain tar bytes".repeat(100);
        let d = sha256_digest(&data);
        let n = data.len() as u64;
        let mut bad = data.clone();
        bad[5] ^= 1;
        // Plain: only the size is checked here (the caller compares the
        // apply's diff ID, the hash of these very bytes).
        let r = Verified::new_layer(&bad[..], "b", &d, n, &d);
        assert_eq!(read_all(r).unwrap(), bad);
        let short = read_all(Verified::new_layer(&data[..10], "b", &d, n, &d)).unwrap_err();
        assert!(short.contains("truncated"), "{short}");
        // A digest that is not the diff ID (a compressed layer's): hashed.
        let m = read_all(Verified::new_layer(&bad[..], "b", &d, n, "sha256:other")).unwrap_err();
        assert!(m.contains("digest mismatch"), "{m}");
        // Compressed bytes under a digest equal to the diff ID: hashed here
        // too, since the apply hashes what they decompress to.
        let mut gz = vec![0x1f, 0x8b];
        gz.extend_from_slice(&bad);
        let m = read_all(Verified::new_layer(&gz[..], "b", &d, gz.len() as u64, &d)).unwrap_err();
        assert!(m.contains("digest mismatch"), "{m}");
        // Too few bytes in the first read to tell: hashed here.
        let one = Verified::new_layer(OneByte(&bad[..]), "b", &d, n, &d);
        assert!(read_all(one).unwrap_err().contains("digest mismatch"));
    }

    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
