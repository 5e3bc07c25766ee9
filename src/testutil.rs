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

/// A layer tar of a small tree of `files` (path, content), made by the
/// export writer.
pub(crate) fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = t.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let mut out = Vec::new();
    crate::archive::export::export_diff(None, t.path(), &mut out, &Default::default()).unwrap();
    out
}

/// `cp -a from to`, the oracle copy.
pub(crate) fn cp_a(from: &std::path::Path, to: &std::path::Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}
