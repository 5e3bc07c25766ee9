//! Crash points: places where a writer may die, numbered as they are
//! passed, so a test can kill a process at exactly the n-th one
//! (`LAMINA_CRASH_AT=n`) and reproduce it from that number.
//!
//! The crash is `SIGKILL` sent to the process itself: no unwinding, no
//! destructor, no buffered write flushed — what a power cut or the OOM
//! killer leaves. With `LAMINA_CRASH_COUNT=path`, the number of points
//! passed is written to `path` at every point, so a harness learns how many
//! a run has. Unset (the rule), a point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 0: disabled; otherwise the point to die at.
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static PASSED: AtomicU64 = AtomicU64::new(0);
static COUNT_FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

fn init() -> u64 {
    let target = std::env::var("LAMINA_CRASH_AT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    COUNT_FILE.get_or_init(|| std::env::var_os("LAMINA_CRASH_COUNT").map(Into::into));
    TARGET.store(target, Ordering::Relaxed);
    target
}

/// A point where a crash must leave the store whole (see the module docs).
#[inline]
pub fn hit() {
    let mut target = TARGET.load(Ordering::Relaxed);
    if target == u64::MAX {
        target = init();
    }
    if target == 0 && COUNT_FILE.get().map_or(true, |f| f.is_none()) {
        return;
    }
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(Some(path)) = COUNT_FILE.get() {
        let _ = std::fs::write(path, n.to_string());
    }
    if n == target {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL is not deliverable late; never go on past the point.
        std::process::abort();
    }
}
