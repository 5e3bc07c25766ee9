//! The layer's diff ID, computed on a second thread while the first one
//! applies.
//!
//! Decompression and SHA-256 are the CPU-heavy parts of an apply that do not
//! touch the tree. A pipeline thread reads (and decompresses) fixed-size
//! chunks and hands each one, shared, both to the applying thread and to a
//! hashing thread, over bounded channels. Memory is bounded by `DEPTH`
//! chunks per consumer whatever the layer's size, and a buffer pool
//! recycles a chunk once both have dropped it, so the steady state
//! allocates nothing.
//!
//! Why the hash has a thread of its own: SHA-256 is one sequential pass
//! (1.8 GB/s with SHA-NI here), about as long as the applying thread's own
//! work on a rootfs. When the reader hashed too, each chunk waited for its
//! hash before the applier saw it: a scheduler trace showed the applier
//! blocked on the chunk channel 317 times in one rootfs apply. Now the
//! applier takes a chunk as soon as it is read, and the hash catches up
//! while the applier creates small files.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::reader::SourceError;
use crate::error::Error;

/// Bytes per chunk handed between the threads.
pub const CHUNK: usize = 256 << 10;
/// Chunks queued for the applier.
const DEPTH: usize = 8;
/// Chunks queued for the hasher (memory is bounded by `DEPTH + HASH_DEPTH`
/// chunks plus the decoder's own).
const HASH_DEPTH: usize = 32;

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

/// A chunk the applier and the hasher share; the last one to drop it
/// returns its buffer to the pool.
pub struct Chunk {
    data: Option<Arc<Vec<u8>>>,
    pool: SyncSender<Vec<u8>>,
}

impl Chunk {
    fn share(&self) -> Chunk {
        Chunk {
            data: self.data.clone(),
            pool: self.pool.clone(),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.data.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(buf) = self.data.take().and_then(Arc::into_inner) {
            let _ = self.pool.try_send(buf);
        }
    }
}

type Msg = std::result::Result<Chunk, Error>;

/// The pool's two ends: the pump takes buffers from it, a chunk's last
/// holder gives its buffer back.
pub type Pool = (SyncSender<Vec<u8>>, Receiver<Vec<u8>>);

/// Read `src` to its end in chunks and send them to `tx`, hashing them on
/// a thread of their own. Stops quietly when the receiver is gone (the
/// applying side failed).
pub fn pump(src: impl Read, tx: SyncSender<Msg>, pool: Pool) -> Option<StreamDigest> {
    let (hash_tx, hash_rx) = sync_channel::<Chunk>(HASH_DEPTH);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut hasher = Sha256::new();
            for chunk in hash_rx {
                hasher.update(chunk.bytes());
            }
            hex_id(&hasher.finalize())
        });
        let size = read_chunks(src, tx, pool, hash_tx);
        // A panicking hasher is a bug; it surfaces as an abnormal end.
        let diff_id = hasher.join().ok()?;
        size.map(|size| StreamDigest { size, diff_id })
    })
}

fn read_chunks(
    mut src: impl Read,
    tx: SyncSender<Msg>,
    (pool_tx, pool): Pool,
    hash: SyncSender<Chunk>,
) -> Option<u64> {
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
            return Some(size);
        }
        buf.truncate(got);
        size += got as u64;
        let chunk = Chunk {
            data: Some(Arc::new(buf)),
            pool: pool_tx.clone(),
        };
        if hash.send(chunk.share()).is_err() || tx.send(Ok(chunk)).is_err() {
            return None;
        }
    }
}

/// The applying side of the pipeline: a [`BufRead`] over the chunks.
pub struct ChunkReader {
    rx: Receiver<Msg>,
    cur: Option<Chunk>,
    pos: usize,
    eof: bool,
}

/// A connected (pump sender, pool, reader) triple.
pub fn pipeline() -> (SyncSender<Msg>, Pool, ChunkReader) {
    let (tx, rx) = sync_channel(DEPTH);
    // Room for every chunk in flight (both queues, and one in each
    // consumer's hands) to come back.
    let pool = sync_channel(DEPTH + HASH_DEPTH + 2);
    (
        tx,
        pool,
        ChunkReader {
            rx,
            cur: None,
            pos: 0,
            eof: false,
        },
    )
}

impl ChunkReader {
    fn cur_len(&self) -> usize {
        self.cur.as_ref().map_or(0, |c| c.bytes().len())
    }
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
        while self.pos >= self.cur_len() && !self.eof {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    self.cur = Some(next);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(io::Error::other(SourceError(e))),
                // The pump finished (EOF) and dropped its sender.
                Err(_) => self.eof = true,
            }
        }
        let bytes = self.cur.as_ref().map_or(&[][..], Chunk::bytes);
        Ok(&bytes[self.pos.min(bytes.len())..])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(len: usize) -> Vec<u8> {
        // Not a repeating pattern a chunk boundary could hide behind.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_applier_gets_every_byte_and_the_hasher_hashes_them_in_order() {
        // Longer than every queue together, so buffers come back from the
        // pool many times, and not a whole number of chunks.
        let data = stream(CHUNK * (DEPTH + HASH_DEPTH) * 3 + 12_345);
        let (tx, pool, mut rdr) = pipeline();
        let src = std::io::Cursor::new(data.clone());
        let got = std::thread::scope(|s| {
            let pump = s.spawn(move || pump(src, tx, pool));
            let mut got = Vec::new();
            let mut buf = vec![0u8; 7_001];
            loop {
                let n = rdr.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            (got, pump.join().unwrap())
        });
        assert!(got.0 == data, "the applier's bytes differ from the stream");
        let d = got.1.expect("a digest at the end");
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.diff_id, hex_id(&Sha256::digest(&data)));
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_pump_and_its_hasher() {
        let data = stream(CHUNK * (DEPTH + HASH_DEPTH) * 2);
        let (tx, pool, mut rdr) = pipeline();
        let src = std::io::Cursor::new(data);
        let ended = std::thread::scope(|s| {
            let pump = s.spawn(move || pump(src, tx, pool));
            let mut buf = vec![0u8; CHUNK];
            rdr.read_exact(&mut buf).unwrap();
            drop(rdr);
            pump.join().unwrap()
        });
        assert!(ended.is_none(), "an abandoned stream has no digest");
    }
}
