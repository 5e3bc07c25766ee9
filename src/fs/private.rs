//! The store's own files (configuration, layer records, tar-split records,
//! mount records), opened so that a tampered store cannot hang lamina or
//! send it elsewhere: `O_NOFOLLOW` (a symlink in a record's place, say to
//! `/dev/zero`, is refused rather than followed), `O_NONBLOCK` (a FIFO in
//! its place does not block the open) and checked to be a regular file.
//! Anything else is [`Error::Corrupt`] naming the file.
//!
//! Written the other way round: whole, by rename ([`write_atomic`]), so a
//! reader sees the old content or the new, never a mix.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

/// Mode of every directory the store makes.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the store's files (the seed writes image json 0600).
pub const FILE_MODE: u32 = 0o600;

/// fsync a directory, making the renames and creations in it durable.
pub fn fsync_dir(path: &Path) -> Result<()> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .at("open", path)?;
    dir.sync_all().at("fsync", path)
}

/// Write `name` in `dir` atomically with `mode`: a temp file in the same
/// directory, fsync, rename over `name`, fsync the directory. Readers see
/// the old content or the new, never a mix; a crash leaves at most a
/// `.<name>.tmp-*` file.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<()> {
    write_replace(dir, name, data, mode, true)
}

/// [`write_atomic`], with the fsyncs only if `durable`: for state that is
/// void after a reboot anyway (mount counts), atomicity is all that matters.
pub fn write_replace(dir: &Path, name: &str, data: &[u8], mode: u32, durable: bool) -> Result<()> {
    if !crate::fs::is_single_component(name.as_ref()) {
        return Err(Error::InvalidArgument(format!("bad file name {name:?}")));
    }
    let tmp = dir.join(format!(".{}", tmp_name(name)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)
            .at("create", &tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .at("chmod", &tmp)?;
        crate::crashpoint::hit();
        f.write_all(data).at("write", &tmp)?;
        if durable {
            f.sync_all().at("fsync", &tmp)?;
        }
        crate::crashpoint::hit();
        let dest = dir.join(name);
        std::fs::rename(&tmp, &dest).at("rename", &dest)?;
        crate::crashpoint::hit();
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A name for a temporary file next to `name`, unique in this process and
/// unlikely across processes.
fn tmp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{name}.tmp-{}-{n}", std::process::id())
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
