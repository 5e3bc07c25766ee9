//! Hard-link groups of a full copy: the first link of a multiply-linked
//! inode met by any worker is copied, every later one becomes a hard link
//! to that copy, as it was in the source (the seed broke them into
//! separate files).
//!
//! The map is keyed by the source's (dev, ino). A slot keeps an fd on the
//! first copy until every link the source inode has was seen; links from
//! outside the copied tree keep it to the end of the copy.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::Result;

/// One inode with several links. `state` is (decided, fd of the first
/// copy): `None` after deciding means the first copy failed.
struct Slot {
    state: Mutex<(bool, Option<OwnedFd>)>,
    ready: Condvar,
    seen: AtomicU64,
}

/// Every multiply-linked source inode met so far.
#[derive(Default)]
pub(super) struct Links {
    map: Mutex<HashMap<(u64, u64), Arc<Slot>>>,
}

/// What [`Links::add`] did with one link.
pub(super) enum Added {
    /// It was the first: `create` made the copy.
    Created,
    /// It was linked to the first copy by `link`.
    Linked,
    /// The first copy failed (its worker reports why); nothing was done.
    Skipped,
}

impl Links {
    /// Add one link of the source inode `key` (which has `nlink` links):
    /// the first calls `create`, which returns an fd on the copy; the
    /// others wait until that is done, then call `link` with that fd.
    ///
    /// Waiting cannot deadlock: `create` makes one inode and never waits
    /// for another link.
    pub(super) fn add(
        &self,
        key: (u64, u64),
        nlink: u64,
        create: impl FnOnce() -> Result<Option<OwnedFd>>,
        link: impl FnOnce(BorrowedFd<'_>) -> Result<()>,
    ) -> Result<Added> {
        let (slot, first) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(slot) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(Slot {
                        state: Mutex::new((false, None)),
                        ready: Condvar::new(),
                        seen: AtomicU64::new(0),
                    });
                    map.insert(key, slot.clone());
                    (slot, true)
                }
            }
        };
        let added = if first {
            let made = create();
            let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            let result = match made {
                Ok(fd) => {
                    *state = (true, fd);
                    Ok(Added::Created)
                }
                Err(e) => {
                    *state = (true, None);
                    Err(e)
                }
            };
            slot.ready.notify_all();
            drop(state);
            result?
        } else {
            let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            while !state.0 {
                state = slot.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            match &state.1 {
                Some(fd) => {
                    use std::os::fd::AsFd;
                    link(fd.as_fd())?;
                    Added::Linked
                }
                None => return Ok(Added::Skipped),
            }
        };
        // Every link seen: the slot's fd is not needed any more.
        if slot.seen.fetch_add(1, Ordering::AcqRel) + 1 >= nlink {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        Ok(added)
    }
}
