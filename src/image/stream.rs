//! A tar stream read lazily, in order, as the load asks for its files.
//!
//! A stream cannot seek, so a file is found by reading on until it comes:
//! what passes on the way is kept — small files in memory, large ones
//! spooled to the store's `tmp/` (hashed later, as they are read back) — and the
//! file asked for, when it is a layer being opened, is handed out straight
//! from the stream, never copied. So an archive whose metadata comes first
//! (what `Graph::save` writes) applies each layer as it arrives, and one
//! whose metadata comes last (`docker save`) is spooled while the loader
//! looks for its `index.json` or `manifest.json`, then applied from the
//! spool (see the module docs of [`super`]).
//!
//! One reader at a time: while a layer streams out, the state is lent to
//! its reader, and a second `open` waits until that reader is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::sync::{Arc, Condvar, Mutex};

use crate::archive::reader::{Header, Kind, NoRecord, SourceError, TarReader};
use crate::error::{Error, IoContext, Result};
use crate::graph::chain::source_error;
use crate::graph::Staging;
use crate::image::files::{
    clean, create_private, not_a_tar, resolve_link, too_many, Data, Entry, ENTRIES_MAX, LINK_HOPS,
    SMALL, SMALL_TOTAL,
};

/// See the module docs.
pub struct Stream<'s> {
    state: Mutex<Option<Box<State<'s>>>>,
    back: Condvar,
    what: String,
}

struct State<'s> {
    src: BufReader<Box<dyn Read + Send + 's>>,
    /// Bytes of the current entry (payload and padding) not read yet.
    skip: u64,
    entries: HashMap<String, Entry>,
    in_memory: u64,
    spooled: usize,
    /// Payload bytes kept (in memory or spooled).
    kept: u64,
    spool: Staging,
    done: bool,
}

/// Where a file asked for is.
pub enum Found {
    /// Kept already.
    Data(Data),
    /// Next in the stream: a payload of this many bytes.
    Here(u64),
    /// Not in the archive.
    Missing,
}

/// A lookup in what was kept so far.
enum Seen {
    Data(Data),
    /// Not seen yet: this path (the end of a chain of links).
    Not(String),
}

impl<'s> State<'s> {
    fn read_err(&self, what: &str) -> impl Fn(Error) -> Error + '_ {
        let what = what.to_owned();
        move |e| match e {
            Error::Io { source, .. } => source_error(source),
            e => not_a_tar(&what, e),
        }
    }

    /// Read and drop what is left of the current entry.
    fn skip_rest(&mut self, what: &str) -> Result<()> {
        let n = std::io::copy(&mut (&mut self.src).take(self.skip), &mut std::io::sink())
            .map_err(source_error)?;
        if n < self.skip {
            return Err(Error::Archive(format!(
                "{what}: truncated archive: unexpected end of data"
            )));
        }
        self.skip = 0;
        Ok(())
    }

    /// The next entry's clean path and header; `None` at the end.
    fn next(&mut self, what: &str) -> Result<Option<(String, Header)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            self.skip_rest(what)?;
            let header = {
                let mut rec = NoRecord;
                let mut tr = TarReader::new(&mut self.src, &mut rec);
                tr.next_entry()
            };
            let Some(h) = header.map_err(self.read_err(what))? else {
                self.done = true;
                return Ok(None);
            };
            self.skip = h.size.div_ceil(512) * 512;
            match clean(&String::from_utf8_lossy(&h.path)) {
                Some(p) => return Ok(Some((p, h))),
                None => continue,
            }
        }
    }

    /// Keep the current entry (see the module docs).
    fn store(&mut self, path: String, h: Header, what: &str) -> Result<()> {
        if h.kind == Kind::File {
            self.kept += h.size;
        }
        let entry = match h.kind {
            Kind::File if h.size <= SMALL && self.in_memory + h.size <= SMALL_TOTAL => {
                self.in_memory += h.size;
                let mut data = Vec::with_capacity(h.size as usize);
                self.payload(h.size, what, &mut |b| {
                    data.extend_from_slice(b);
                    Ok(())
                })?;
                Entry::Data(Data::Mem(Arc::new(data)))
            }
            Kind::File => {
                self.spooled += 1;
                let at = self.spool.path().join(format!("{}", self.spooled));
                let mut w = std::io::BufWriter::with_capacity(1 << 20, create_private(&at)?);
                // Not hashed here: the blob's check (or, for an uncompressed
                // layer, the apply's diff ID) hashes it as it is read back.
                self.payload(h.size, what, &mut |b| w.write_all(b).at("write", &at))?;
                w.flush().at("write", &at)?;
                Entry::Data(Data::Range {
                    file: Arc::new(File::open(&at).at("open", &at)?),
                    offset: 0,
                    len: h.size,
                })
            }
            Kind::Hardlink => match clean(&String::from_utf8_lossy(&h.linkname)) {
                Some(t) => Entry::Link(t),
                None => return Ok(()),
            },
            Kind::Symlink => match resolve_link(&path, &String::from_utf8_lossy(&h.linkname)) {
                Some(t) => Entry::Link(t),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        self.entries.insert(path, entry);
        if self.entries.len() > ENTRIES_MAX {
            return Err(too_many(what));
        }
        Ok(())
    }

    /// The current entry's `size` payload bytes, in pieces, to `f`.
    fn payload(
        &mut self,
        size: u64,
        what: &str,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut left = size;
        let mut buf = vec![0u8; (64 * 1024).min(size as usize).max(1)];
        while left > 0 {
            let want = buf.len().min(left.try_into().unwrap_or(usize::MAX));
            let n = self.src.read(&mut buf[..want]).map_err(source_error)?;
            if n == 0 {
                return Err(Error::Archive(format!(
                    "{what}: truncated archive: a payload ends early"
                )));
            }
            f(&buf[..n])?;
            left -= n as u64;
            self.skip -= n as u64;
        }
        Ok(())
    }

    fn seen(&self, path: &str) -> Seen {
        let mut at = path.to_owned();
        for _ in 0..LINK_HOPS {
            match self.entries.get(&at) {
                Some(Entry::Data(d)) => return Seen::Data(d.clone()),
                Some(Entry::Link(t)) => at = t.clone(),
                None => return Seen::Not(at),
            }
        }
        Seen::Not(String::new())
    }

    /// Read on until `path` comes; with `hand_out`, stop at its payload.
    fn find(&mut self, path: &str, hand_out: bool, what: &str) -> Result<Found> {
        loop {
            let want = match self.seen(path) {
                Seen::Data(d) => return Ok(Found::Data(d)),
                Seen::Not(w) => w,
            };
            let Some((p, h)) = self.next(what)? else {
                return Ok(Found::Missing);
            };
            if hand_out && p == want && h.kind == Kind::File {
                return Ok(Found::Here(h.size));
            }
            self.store(p, h, what)?;
        }
    }
}

impl<'s> Stream<'s> {
    /// The tar stream `src`; large files it passes go to `spool`.
    pub fn new(src: Box<dyn Read + Send + 's>, spool: Staging, what: &str) -> Stream<'s> {
        Stream {
            state: Mutex::new(Some(Box::new(State {
                src: BufReader::with_capacity(1 << 20, src),
                skip: 0,
                entries: HashMap::new(),
                in_memory: 0,
                spooled: 0,
                kept: 0,
                spool,
                done: false,
            }))),
            back: Condvar::new(),
            what: what.to_owned(),
        }
    }

    fn take(&self) -> Box<State<'s>> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = g.take() {
                return s;
            }
            g = self.back.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, s: Box<State<'s>>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        self.back.notify_all();
    }

    /// Where `path` is, reading on as far as needed. A file handed out
    /// (`Found::Here`) is read through the returned reader.
    pub fn find<'a>(
        &'a self,
        path: &str,
        hand_out: bool,
    ) -> Result<(Found, Option<EntryReader<'a, 's>>)> {
        let mut s = self.take();
        match s.find(path, hand_out, &self.what) {
            Ok(Found::Here(size)) => Ok((
                Found::Here(size),
                Some(EntryReader {
                    home: self,
                    state: Some(s),
                    left: size,
                }),
            )),
            other => {
                self.give_back(s);
                other.map(|f| (f, None))
            }
        }
    }

    /// Payload bytes kept so far (in memory or spooled).
    #[cfg(test)]
    pub fn kept(&self) -> u64 {
        let s = self.take();
        let n = s.kept;
        self.give_back(s);
        n
    }

    /// Read the stream to its end (a truncated tail is an error, and the
    /// writer of a pipe is not left blocked).
    pub fn finish(&self) -> Result<()> {
        let mut s = self.take();
        let r = (|| {
            while s.next(&self.what)?.is_some() {}
            Ok(())
        })();
        self.give_back(s);
        r
    }
}

/// A file's payload, read straight from the stream.
pub struct EntryReader<'a, 's> {
    home: &'a Stream<'s>,
    state: Option<Box<State<'s>>>,
    left: u64,
}

impl Read for EntryReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let s = self.state.as_mut().expect("held until drop");
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        let n = s.src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(SourceError(Error::Archive(format!(
                "{}: truncated archive: a payload ends early",
                self.home.what
            )))));
        }
        self.left -= n as u64;
        s.skip -= n as u64;
        Ok(n)
    }
}

impl Drop for EntryReader<'_, '_> {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            self.home.give_back(s);
        }
    }
}
