//! Long calls that Ctrl-C stops: the core call runs on a worker thread
//! while the calling thread, without the GIL, wakes every 50 ms to let
//! Python run its signal handlers. An exception from one (the
//! `KeyboardInterrupt` of SIGINT) cancels the call through its
//! [`Progress`] (its next read, or its wait for another process's layer
//! lock, fails with `Error::Cancelled`), the core undoes what it did as
//! after any failure, and the exception is what the call raises.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

use super::IntoPy;
use crate::graph::Progress;

const POLL: Duration = Duration::from_millis(50);

/// Run `f` (which reads through `progress`) so that a signal stops it.
pub(crate) fn interruptible<T: Send>(
    py: Python<'_>,
    progress: &Progress<'_>,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let (r, raised) = py.detach(|| {
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let worker = s.spawn(move || {
                let _ = tx.send(f());
            });
            let mut raised: Option<PyErr> = None;
            let r = loop {
                match rx.recv_timeout(POLL) {
                    Ok(r) => break r,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if raised.is_none() {
                            if let Err(e) = Python::attach(|py| py.check_signals()) {
                                progress.cancel();
                                raised = Some(e);
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        break Err(crate::Error::Internal(
                            "a worker thread of lamina panicked".into(),
                        ))
                    }
                }
            };
            let _ = worker.join();
            (r, raised)
        })
    });
    match raised {
        Some(e) => Err(e),
        None => r.py_err(),
    }
}
