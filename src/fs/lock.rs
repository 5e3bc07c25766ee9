//! The store's writer lock: one lock file, shared or exclusive, across
//! processes and across threads.
//!
//! Across processes it is `flock(2)` on `<root>/lock`. flock locks belong to
//! the open file description, not to the process, so (unlike the POSIX
//! `fcntl(F_SETLK)` locks containers/storage's `pkg/lockfile` uses) closing
//! some other descriptor of the same file elsewhere in the process never
//! drops the lock, and two [`StoreLock`]s opened on one store in one process
//! exclude each other like two processes do.
//!
//! flock does not order the threads sharing one descriptor, so each
//! [`StoreLock`] also keeps an in-process reader/writer state, as
//! containers/storage pairs its file lock with a `sync.RWMutex`: the first
//! shared holder takes the file lock shared and the last one releases it;
//! an exclusive holder has it alone.
//!
//! A child made by `fork` shares its parent's open file descriptions, and
//! so any flock they hold: it must open its own [`StoreLock`] rather than
//! use one inherited from the parent.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// Whether a holder may share the lock with other readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once; no exclusive holder.
    Shared,
    /// One holder, in every process and thread.
    Exclusive,
}

#[derive(Debug, Default)]
struct State {
    readers: usize,
    writer: bool,
}

/// A lock file plus the in-process state that orders threads; see the
/// module docs.
#[derive(Debug)]
pub struct StoreLock {
    path: PathBuf,
    file: File,
    state: Mutex<State>,
    released: Condvar,
}

/// Holds a [`StoreLock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a StoreLock,
    mode: LockMode,
}

impl StoreLock {
    /// Open (creating it, mode 0600) the lock file at `path`.
    pub fn open(path: &Path) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .at("open", path)?;
        Ok(StoreLock {
            path: path.to_owned(),
            file,
            state: Mutex::new(State::default()),
            released: Condvar::new(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait for the lock shared.
    pub fn read(&self) -> Result<LockGuard<'_>> {
        self.acquire(LockMode::Shared, true)
            .map(|g| g.expect("blocking acquire"))
    }

    /// Wait for the lock exclusive.
    pub fn write(&self) -> Result<LockGuard<'_>> {
        self.acquire(LockMode::Exclusive, true)
            .map(|g| g.expect("blocking acquire"))
    }

    /// Take the lock shared if no one holds it exclusive right now.
    pub fn try_read(&self) -> Result<Option<LockGuard<'_>>> {
        self.acquire(LockMode::Shared, false)
    }

    /// Take the lock exclusive if no one holds it at all right now.
    pub fn try_write(&self) -> Result<Option<LockGuard<'_>>> {
        self.acquire(LockMode::Exclusive, false)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the state mutex leaves counts that are still
        // right (they change only after the file lock call succeeded).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self, mode: LockMode, wait: bool) -> Result<Option<LockGuard<'_>>> {
        let mut st = self.lock_state();
        loop {
            let free = match mode {
                LockMode::Shared => !st.writer,
                LockMode::Exclusive => !st.writer && st.readers == 0,
            };
            if free {
                break;
            }
            if !wait {
                return Ok(None);
            }
            st = self.released.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        // No thread of this lock holds the file lock unless we join readers.
        // The file lock is taken while the state mutex is held: other threads
        // that want it wait here, and none of them can be a holder that needs
        // the mutex to release.
        let need_file = mode == LockMode::Exclusive || st.readers == 0;
        if need_file && !self.flock(mode, wait)? {
            return Ok(None);
        }
        match mode {
            LockMode::Shared => st.readers += 1,
            LockMode::Exclusive => st.writer = true,
        }
        Ok(Some(LockGuard { lock: self, mode }))
    }

    /// `Ok(false)`: would block and `wait` is false.
    fn flock(&self, mode: LockMode, wait: bool) -> Result<bool> {
        let op = match (mode, wait) {
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        };
        loop {
            match rustix::fs::flock(&self.file, op) {
                Ok(()) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) if !wait => return Ok(false),
                Err(e) => return Err(e).at("flock", &self.path),
            }
        }
    }

    fn release(&self, mode: LockMode) {
        let mut st = self.lock_state();
        let last = match mode {
            LockMode::Shared => {
                st.readers -= 1;
                st.readers == 0
            }
            LockMode::Exclusive => {
                st.writer = false;
                true
            }
        };
        if last {
            // Unlocking a held flock cannot fail on a valid descriptor; were
            // it to, closing the file at drop of the StoreLock releases it.
            let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
        }
        drop(st);
        self.released.notify_all();
    }
}

impl LockGuard<'_> {
    /// How this guard holds the lock.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &StoreLock {
        self.lock
    }

    /// Fail unless this guard holds the lock exclusive; for functions that
    /// take a guard as proof that they may write.
    pub fn ensure_exclusive(&self) -> Result<()> {
        if self.mode == LockMode::Exclusive {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{} must be held exclusive for this operation",
                self.lock.path.display()
            )))
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.mode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    #[test]
    fn threads_serialize_writers_and_share_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = Arc::new(StoreLock::open(&tmp.path().join("lock")).unwrap());
        let counter = tmp.path().join("counter");
        std::fs::write(&counter, "0").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, counter) = (lock.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let _g = lock.write().unwrap();
                        let n: u32 = std::fs::read_to_string(&counter).unwrap().parse().unwrap();
                        std::thread::yield_now();
                        std::fs::write(&counter, (n + 1).to_string()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "100");

        // Two readers at once; a writer waits for both.
        let barrier = Arc::new(Barrier::new(2));
        let r1 = lock.read().unwrap();
        let t = {
            let (lock, barrier) = (lock.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _r2 = lock.read().unwrap();
                barrier.wait();
                assert!(lock.try_write().unwrap().is_none());
                barrier.wait();
            })
        };
        barrier.wait();
        barrier.wait();
        t.join().unwrap();
        assert!(lock.try_write().unwrap().is_none());
        drop(r1);
        let w = lock.try_write().unwrap().expect("free after readers left");
        assert!(lock.try_read().unwrap().is_none());
        assert_eq!(w.mode(), LockMode::Exclusive);
    }

    #[test]
    fn two_locks_on_one_file_exclude_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let a = StoreLock::open(&tmp.path().join("lock")).unwrap();
        let b = StoreLock::open(&tmp.path().join("lock")).unwrap();
        let ga = a.read().unwrap();
        assert!(b.try_read().unwrap().is_some());
        assert!(b.try_write().unwrap().is_none());
        assert!(ga.ensure_exclusive().is_err());
        drop(ga);
        let gb = b.write().unwrap();
        assert!(gb.ensure_exclusive().is_ok());
        assert!(a.try_read().unwrap().is_none());
    }

    const CHILD_ENV: &str = "LAMINA_TEST_LOCK_CHILD";

    /// Runs twice: as the test, and as the child process the test starts
    /// (this same test binary, filtered to this test, with `CHILD_ENV` set).
    #[test]
    fn processes_exclude_each_other() {
        if let Ok(dir) = std::env::var(CHILD_ENV) {
            let dir = PathBuf::from(dir);
            let lock = StoreLock::open(&dir.join("lock")).unwrap();
            let g = lock.write().unwrap();
            std::fs::write(dir.join("child-locked"), "").unwrap();
            std::thread::sleep(Duration::from_millis(400));
            std::fs::write(dir.join("child-releasing"), "").unwrap();
            drop(g);
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fs::lock::tests::processes_exclude_each_other",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !dir.join("child-locked").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "child never locked"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let lock = StoreLock::open(&dir.join("lock")).unwrap();
        assert!(lock.try_write().unwrap().is_none());
        assert!(lock.try_read().unwrap().is_none());
        let _g = lock.write().unwrap();
        assert!(
            dir.join("child-releasing").exists(),
            "got the lock while the child held it"
        );
        assert!(child.wait().unwrap().success());
    }
}
