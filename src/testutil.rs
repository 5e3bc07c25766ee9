//! Helpers for the crate's own tests.

/// Run the calling test alone in a child process of the test binary, for
/// tests that measure the process (its open fds, its memory): other tests
/// run in parallel threads of the same process otherwise.
///
/// Returns true in the child, where the test body runs; in the parent it
/// runs the child, checks it passed, and returns false.
pub(crate) fn alone(test: &str) -> bool {
    const ENV: &str = "LAMINA_TEST_ALONE";
    if std::env::var(ENV).as_deref() == Ok(test) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(ENV, test)
        .output()
        .expect("run the test binary");
    assert!(
        out.status.success(),
        "{test} failed alone:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
