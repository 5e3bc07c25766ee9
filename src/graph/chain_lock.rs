//! Locks that make two registrations of the same layers, in two processes
//! (or two threads) at once, fetch and apply each layer once.
//!
//! ```text
//! <root>/locks/                    0700, made on first use
//! <root>/locks/<chain-id hex>      empty; flock(2) exclusive while applied
//! ```
//!
//! [`crate::Graph::register_chain`] takes the lock of every layer of the
//! chain, base to top, before it looks at which layers the store already
//! has, and holds them until the layers landed. A second pull of the same
//! image waits at the first lock, then finds every layer there and fetches
//! nothing; a pull of another image on the same base waits for the shared
//! base and fetches only its own layers. Taking them base to top is what
//! keeps this free of deadlock: a chain ID names its whole prefix, so two
//! chains that share a lock share every lock below it, taken in the same
//! order. The files stay (one empty file per layer ever registered):
//! removing a lock file that another process may have open would let two
//! holders in at once.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::graph::layout::DIR_MODE;
use crate::ids;

/// Held locks of a chain; released when dropped (the files close).
#[derive(Debug)]
pub struct ChainLocks {
    _held: Vec<File>,
}

/// How often a wait for another holder looks whether it was cancelled.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Lock every chain ID of `chain` (base to top) in the store at `root`,
/// waiting for other holders; while `cancelled()` says so, the wait ends
/// with [`Error::Cancelled`] (a blocking flock could not be interrupted
/// short of a signal to this very thread).
pub fn lock_chain(
    root: &Path,
    chain: &[String],
    cancelled: &dyn Fn() -> bool,
) -> Result<ChainLocks> {
    let dir = root.join("locks");
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("mkdir", &dir, e)),
    }
    let mut held = Vec::with_capacity(chain.len());
    for c in chain {
        let path = dir.join(ids::digest_hex(c)?);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .at("open", &path)?;
        loop {
            match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    if cancelled() {
                        return Err(Error::Cancelled);
                    }
                    std::thread::sleep(CANCEL_POLL);
                }
                Err(e) => return Err(e).at("flock", &path),
            }
        }
        held.push(f);
    }
    Ok(ChainLocks { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let chain = vec![
            format!("sha256:{}", "1".repeat(64)),
            format!("sha256:{}", "2".repeat(64)),
        ];
        let first = lock_chain(tmp.path(), &chain, &|| false).unwrap();
        let got = Arc::new(AtomicBool::new(false));
        let (root, c, g) = (tmp.path().to_owned(), chain[..1].to_vec(), got.clone());
        let t = std::thread::spawn(move || {
            let _l = lock_chain(&root, &c, &|| false).unwrap();
            g.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!got.load(Ordering::SeqCst), "the lock was shared");
        drop(first);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
        assert!(lock_chain(tmp.path(), &["../x".to_owned()], &|| false).is_err());
    }

    #[test]
    fn a_cancelled_wait_ends_without_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let chain = vec![format!("sha256:{}", "3".repeat(64))];
        let _first = lock_chain(tmp.path(), &chain, &|| false).unwrap();
        let asked = std::time::Instant::now() + Duration::from_millis(100);
        let r = lock_chain(tmp.path(), &chain, &|| std::time::Instant::now() > asked);
        assert!(matches!(r, Err(Error::Cancelled)));
    }
}
