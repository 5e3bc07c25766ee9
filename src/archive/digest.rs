//! The layer's diff ID, computed on a second thread while the first one
//! applies.
//!
//! Decompression and SHA-256 are the CPU-heavy parts of an apply that do not
//! touch the tree; a pipeline thread does both and hands fixed-size chunks
//! to the applying thread over a bounded channel. Memory is bounded by
//! `DEPTH` chunks whatever the layer's size, and a buffer pool recycles the
//! chunks, so the steady state allocates nothing.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::reader::SourceError;
use crate::error::Error;

/// Bytes per chunk handed between the threads.
pub const CHUNK: usize = 256 << 10;
/// Chunks in flight (bounds memory at `DEPTH * CHUNK` plus the decoder's own).
const DEPTH: usize = 8;

/// What the pipeline thread found at the end: the uncompressed size and the
/// SHA-256 of the uncompressed stream.
#[derive(Debug, Clone)]
pub struct StreamDigest {
    /// Bytes of uncompressed stream.
    pub size: u64,
    /// `sha256:<hex>`.
    pub diff_id: String,
}

/// `sha256:<hex>` of a digest.
pub fn hex_id(d: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

type Msg = std::result::Result<Vec<u8>, Error>;

/// Read `src` to its end in chunks, hashing, and send the chunks to `tx`.
/// Stops quietly when the receiver is gone (the applying side failed).
pub fn pump(
    mut src: impl Read,
    tx: SyncSender<Msg>,
    pool: Receiver<Vec<u8>>,
) -> Option<StreamDigest> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let mut buf = pool.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        buf.resize(CHUNK, 0);
        let mut got = 0;
        while got < CHUNK {
            match src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An OS error is the source's; anything else comes from
                    // the decompressor and means a corrupt stream.
                    let err = if e.raw_os_error().is_some() {
                        Error::io("read", "<layer>", e)
                    } else {
                        match e.into_inner().map(|i| i.downcast::<SourceError>()) {
                            Some(Ok(s)) => s.0,
                            Some(Err(other)) => {
                                Error::Archive(format!("corrupt compressed layer: {other}"))
                            }
                            None => Error::Archive("corrupt compressed layer".into()),
                        }
                    };
                    let _ = tx.send(Err(err));
                    return None;
                }
            }
        }
        if got == 0 {
            return Some(StreamDigest {
                size,
                diff_id: hex_id(&hasher.finalize()),
            });
        }
        buf.truncate(got);
        hasher.update(&buf);
        size += got as u64;
        if tx.send(Ok(buf)).is_err() {
            return None;
        }
    }
}

/// The applying side of the pipeline: a [`BufRead`] over the chunks.
pub struct ChunkReader {
    rx: Receiver<Msg>,
    pool: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

/// A connected (pump sender, pool receiver, reader) triple.
pub fn pipeline() -> (SyncSender<Msg>, Receiver<Vec<u8>>, ChunkReader) {
    let (tx, rx) = sync_channel(DEPTH);
    let (ptx, prx) = sync_channel(DEPTH + 2);
    (
        tx,
        prx,
        ChunkReader {
            rx,
            pool: ptx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
        },
    )
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() && !self.eof {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.pool.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(io::Error::other(SourceError(e))),
                // The pump finished (EOF) and dropped its sender.
                Err(_) => self.eof = true,
            }
        }
        Ok(&self.cur[self.pos.min(self.cur.len())..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A writer that hashes what passes through it (reassembly checks its
/// output against the recorded diff ID).
pub struct HashingWriter<W> {
    /// The wrapped writer.
    pub inner: W,
    /// Running SHA-256.
    pub hasher: Sha256,
    /// Bytes written.
    pub size: u64,
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
