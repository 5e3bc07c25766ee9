//! A blob's body that survives a cut connection.
//!
//! A registry that drops the connection mid-blob (a proxy's idle timeout, a
//! restarted load balancer) leaves the reader with an error or an early end
//! of stream before the size the manifest gave. [`Resuming`] then asks again
//! for the rest, `Range: bytes=<done>-`, as containerd's and Docker's
//! resumable fetchers do: a `206` answer carries on where the stream broke;
//! a `200` (the registry ignores ranges) sends the blob again from its
//! start, and the bytes already delivered are read and dropped. Either way
//! the consumer (digest check, decompression, apply) sees one unbroken
//! stream, so nothing already applied is redone, and the blob's digest is
//! still checked over every byte. Bounded: [`RESUMES`] reconnections, each itself retried as every
//! request is ([`Client::send`]).

use std::io::{self, Read};
use std::time::Duration;

use super::client::Client;
use crate::error::{Error, Result};

/// Most reconnections for one blob.
pub const RESUMES: u32 = 3;
const WAIT_FIRST: Duration = Duration::from_millis(200);

/// The body of `GET <repo>/blobs/<digest>`, resumed where it breaks.
pub struct Resuming<'a> {
    client: &'a Client,
    path: String,
    scope: String,
    label: String,
    size: u64,
    done: u64,
    inner: Box<dyn Read + Send + 'a>,
    resumes: u32,
}

impl<'a> Resuming<'a> {
    /// Wrap `inner`, the body of a first `200` answer for `path`.
    pub fn new(
        client: &'a Client,
        path: String,
        scope: String,
        label: String,
        size: u64,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Self {
        Resuming {
            client,
            path,
            scope,
            label,
            size,
            done: 0,
            inner,
            resumes: 0,
        }
    }

    /// Ask for the rest of the blob; an error ends the blob.
    fn reopen(&mut self) -> Result<()> {
        let url = self.client.url(&self.path);
        let range = [("Range", format!("bytes={}-", self.done))];
        let resp = self.client.send("GET", &url, &range, None, &self.scope)?;
        let status = resp.status().as_u16();
        let from = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body: Box<dyn Read + Send + 'a> = Box::new(resp.into_body().into_reader());
        match status {
            206 if from.starts_with(&format!("bytes {}-", self.done)) => {}
            200 => {
                // The whole blob again: skip what was already delivered.
                let skipped = io::copy(&mut (&mut body).take(self.done), &mut io::sink())
                    .map_err(|e| Error::Registry(format!("{}: {e}", self.label)))?;
                if skipped != self.done {
                    return Err(Error::Registry(format!(
                        "{}: the blob came back shorter ({skipped} bytes) than before",
                        self.label
                    )));
                }
            }
            s => {
                return Err(Error::Registry(format!(
                    "{}: resuming at byte {}: HTTP {s} {from}",
                    self.label, self.done
                )))
            }
        }
        self.inner = body;
        Ok(())
    }
}

impl Read for Resuming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut wait = WAIT_FIRST;
        loop {
            let cut = match self.inner.read(buf) {
                Ok(0) if self.done < self.size => "the connection closed early".to_owned(),
                Ok(n) => {
                    self.done += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e.to_string(),
            };
            if self.resumes >= RESUMES {
                return Err(io::Error::other(format!(
                    "{}: cut at byte {} of {} ({cut}); gave up after {RESUMES} resumes",
                    self.label, self.done, self.size
                )));
            }
            self.resumes += 1;
            std::thread::sleep(wait);
            wait *= 2;
            if let Err(e) = self.reopen() {
                return Err(io::Error::other(format!(
                    "{} (cut at byte {}: {cut})",
                    e, self.done
                )));
            }
        }
    }
}
