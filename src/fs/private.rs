//! The store's own files (configuration, layer records, tar-split records,
//! mount records), opened so that a tampered store cannot hang lamina or
//! send it elsewhere: `O_NOFOLLOW` (a symlink in a record's place, say to
//! `/dev/zero`, is refused rather than followed), `O_NONBLOCK` (a FIFO in
//! its place does not block the open) and checked to be a regular file.
//! Anything else is [`Error::Corrupt`] naming the file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// The largest store file [`read`] takes in memory (records are small;
/// tar-split records are streamed, never read whole).
pub const READ_MAX: u64 = 16 << 20;

/// Open the store file `path` for reading; `None` if there is none.
pub fn open(path: &Path) -> Result<Option<File>> {
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(Error::corrupt(path, "is a symlink")),
        Err(e) => return Err(e).at("open", path),
    };
    let st = rustix::fs::fstat(&fd).at("stat", path)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::corrupt(path, "is not a regular file"));
    }
    // Reads of a regular file never block; clear the flag all the same.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).at("fcntl", path)?;
    Ok(Some(File::from(fd)))
}

/// The bytes of the store file `path` (at most [`READ_MAX`]); `None` if
/// there is none.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    let Some(f) = open(path)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    f.take(READ_MAX + 1)
        .read_to_end(&mut data)
        .at("read", path)?;
    if data.len() as u64 > READ_MAX {
        return Err(Error::corrupt(
            path,
            "is larger than any record lamina writes",
        ));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, fifo.as_path(), Mode::from_raw_mode(0o600)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for p in [&fifo, &link] {
            assert!(matches!(read(p), Err(Error::Corrupt { .. })), "{p:?}");
        }
        assert!(read(&t.path().join("none")).unwrap().is_none());
        std::fs::write(t.path().join("ok"), "x").unwrap();
        assert_eq!(read(&t.path().join("ok")).unwrap().unwrap(), b"x");
    }
}
