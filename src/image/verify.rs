//! A reader that checks a blob against its descriptor while it streams:
//! never more than `size` bytes are read from the source, and at the end
//! the count and the SHA-256 must be the descriptor's (umoci's
//! `hardening.VerifiedReadCloser` does the same). A failure is an
//! [`Error::Archive`] naming the blob, raised from `read` itself, so it
//! reaches whoever reads — through a decompressor and the apply pipeline,
//! whose pump thread unwraps it ([`crate::archive::reader::SourceError`]).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

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
        }
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
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(self.fail(format!(
                "the blob is longer than the {} bytes its descriptor says",
                self.size
            )));
        }
        self.hasher.update(&buf[..n]);
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
}
