//! Rootless overlay mounts: a helper process that holds a user + mount
//! namespace of lamina's own and mounts overlayfs there on request.
//!
//! Since Linux 5.11 overlayfs mounts inside a user namespace (with
//! `userxattr`), which is what podman's "native overlay" does rootless.
//! A process may only `unshare(CLONE_NEWUSER)` while it has one thread, and
//! a Python process with lamina loaded has many, so the namespace belongs
//! to a separate, single-threaded helper:
//!
//! - The helper is the Python interpreter running `lamina._helper`
//!   (the command is set by the bindings with [`set_helper_command`]):
//!   the extension is already installed wherever lamina is, so nothing
//!   more is shipped in the wheel, and a fresh interpreter has one thread
//!   until it serves. Its startup costs once per process, not per mount.
//! - It is started with `std::process::Command` (fork + exec, safe from a
//!   multithreaded parent), from a thread lamina keeps for the process's
//!   whole life, because `PR_SET_PDEATHSIG` fires when the thread that
//!   started the child ends.
//! - It dies with its parent twice over: `PR_SET_PDEATHSIG(SIGKILL)`, and
//!   end of file on its request pipe. Its mounts live only in its mount
//!   namespace, which dies with it: they can never leak.
//! - In the namespace the caller's uid and gid map to 0 (no `/etc/subuid`
//!   range is used yet: files of other owners show as the overflow id).
//!
//! Requests are JSON lines on the helper's stdin, answers lines on its
//! stdout (`ok`, or `err <errno> <message>`). Callers reach a mount through
//! `/proc/<helper>/root/<target>`.
//!
//! When the helper is found dead (killed), every mount it held is gone
//! with its namespace: the call that finds it reports the death once (a
//! `DriverError`) and starts a new helper; mount records then count those
//! mounts as vanished, and the next `mount()` mounts again.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};

use crate::driver::mounter::{LinuxMounter, MountSpec, Mounter};
use crate::driver::mountinfo;
use crate::error::{Error, Result};

pub(crate) static HELPER_COMMAND: OnceLock<Vec<OsString>> = OnceLock::new();

/// Set the command that runs [`serve`] (the bindings: the interpreter with
/// `-m lamina._helper`). First call wins.
pub fn set_helper_command(argv: Vec<OsString>) {
    let _ = HELPER_COMMAND.set(argv);
}

/// Whether rootless mounts are possible here: a helper command is set and
/// this kernel lets an unprivileged user make user namespaces. `Err` says
/// why not.
pub fn available() -> std::result::Result<(), String> {
    if HELPER_COMMAND.get().is_none() {
        return Err("no mount helper command (lamina's Python package sets one)".into());
    }
    for (f, what) in [
        (
            "/proc/sys/user/max_user_namespaces",
            "user.max_user_namespaces=0",
        ),
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "kernel.unprivileged_userns_clone=0",
        ),
    ] {
        if std::fs::read_to_string(f).is_ok_and(|v| v.trim() == "0") {
            return Err(format!("user namespaces are off ({what})"));
        }
    }
    Ok(())
}

struct Helper {
    pid: u32,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// A [`Mounter`] whose mounts live in the helper's namespace.
#[derive(Default)]
pub struct UsernsMounter {
    helper: Mutex<Option<Helper>>,
    restarts: Mutex<u32>,
}

impl std::fmt::Debug for UsernsMounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernsMounter").finish()
    }
}

/// Start the helper from the spawner thread (see the module docs).
fn spawn_helper() -> Result<Helper> {
    type Reply = std::result::Result<Child, std::io::Error>;
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<mpsc::Sender<Reply>>>> = OnceLock::new();
    let argv = HELPER_COMMAND
        .get()
        .ok_or_else(|| Error::Driver("no rootless mount helper command set".into()))?
        .clone();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<mpsc::Sender<Reply>>();
        let argv = argv.clone();
        std::thread::Builder::new()
            .name("lamina-userns-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the helper's parent-death
                // signal is tied to this thread.
                for reply in rx {
                    let child = Command::new(&argv[0])
                        .args(&argv[1..])
                        .arg(std::process::id().to_string())
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn();
                    let _ = reply.send(child);
                }
            })
            .expect("spawn the lamina-userns-spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(rtx)
        .map_err(|_| Error::Driver("the mount helper spawner thread is gone".into()))?;
    let mut child = rrx
        .recv()
        .map_err(|_| Error::Driver("the mount helper spawner thread is gone".into()))?
        .map_err(|e| Error::io("spawn", Path::new(&argv[0]), e))?;
    let pid = child.id();
    let stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .map_err(|e| Error::io("read", Path::new("mount helper"), e))?;
    if line.trim() != "ready" {
        return Err(Error::Driver(format!(
            "the rootless mount helper did not start: {}",
            if line.is_empty() {
                "it exited"
            } else {
                line.trim()
            }
        )));
    }
    Ok(Helper {
        pid,
        child,
        stdin,
        stdout,
    })
}

impl UsernsMounter {
    /// A mounter that starts its helper on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The helper's pid, starting it if none runs.
    pub fn helper_pid(&self) -> Result<u32> {
        let g = self.lock()?;
        Ok(g.as_ref().expect("started").pid)
    }

    /// How many times a dead helper was replaced.
    pub fn restarts(&self) -> u32 {
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live helper (started if none), or the report of one found dead.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Helper>>> {
        let mut g = self.helper.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.as_mut() {
            if !matches!(h.child.try_wait(), Ok(None)) {
                let pid = h.pid;
                *g = None;
                *self.restarts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                *g = Some(spawn_helper()?);
                return Err(Error::Driver(format!(
                    "the rootless mount helper (pid {pid}) died, and every mount it held \
                     with it; a new helper runs, mount again"
                )));
            }
        } else {
            *g = Some(spawn_helper()?);
        }
        Ok(g)
    }

    fn request(&self, req: &serde_json::Value, target: &Path) -> Result<()> {
        let mut g = self.lock()?;
        let h = g.as_mut().expect("started");
        let mut line = serde_json::to_string(req).map_err(|e| Error::Driver(e.to_string()))?;
        line.push('\n');
        let sent = h
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| h.stdin.flush());
        let mut answer = String::new();
        let got = sent.and_then(|()| h.stdout.read_line(&mut answer));
        if got.is_err() || answer.is_empty() {
            // Its pipe is closed: it is dying; make sure, then report the
            // death once and restart (lock() sees it dead).
            let _ = h.child.kill();
            let _ = h.child.wait();
            drop(g);
            drop(self.lock()?);
            return Err(Error::Driver("the rootless mount helper died".into()));
        }
        let answer = answer.trim_end();
        if answer == "ok" {
            return Ok(());
        }
        let rest = answer.strip_prefix("err ").unwrap_or(answer);
        let (errno, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        match errno.parse::<i32>() {
            Ok(n) if n > 0 => Err(Error::Mount {
                op: if req.get("unmount").is_some() {
                    "unmount (rootless helper)"
                } else {
                    "mount overlay (rootless helper)"
                },
                target: target.to_owned(),
                source: std::io::Error::from_raw_os_error(n),
            }),
            _ => Err(Error::Driver(format!("rootless mount helper: {msg}"))),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // End of file on its requests: it exits, and its mounts with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mounter for UsernsMounter {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        let req = serde_json::json!({ "mount": [spec, target] });
        self.request(&req, target)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.request(&serde_json::json!({ "unmount": target }), target)
    }

    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        let pid = self.helper_pid()?;
        let p = PathBuf::from(format!("/proc/{pid}/mountinfo"));
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                // Killed a moment ago (its namespaces go before it is a
                // zombie): wait for its end, report it (and restart).
                for _ in 0..200 {
                    drop(self.lock()?);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                return Err(Error::io("read", &p, e));
            }
        };
        Ok(mountinfo::parse(&text)?
            .into_iter()
            .map(|m| m.mount_point)
            .collect())
    }

    fn has_lowerdir_plus(&self) -> bool {
        // Probed in the helper would be exact; the kernel version decides
        // the same (6.8).
        crate::driver::probe::parse_kernel_version(&crate::driver::probe::kernel_release())
            .is_some_and(|v| v >= (6, 8))
    }

    fn visible_path(&self, target: &Path) -> PathBuf {
        match self
            .helper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(h) => {
                let rel = target.strip_prefix("/").unwrap_or(target);
                PathBuf::from(format!("/proc/{}/root", h.pid)).join(rel)
            }
            None => target.to_owned(),
        }
    }

    fn private_namespace(&self) -> bool {
        true
    }

    fn namespace_holder(&self) -> Option<u32> {
        self.helper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| h.pid)
    }

    fn shutdown(&self) {
        self.helper.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The helper's main loop (run by `python -m lamina._helper PARENT_PID`
/// as the process's only thread): enter a new user + mount namespace with
/// the caller's ids mapped to 0, tell the parent `ready`, then mount and
/// unmount on request until the parent goes.
pub fn serve(parent: u32) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    if std::os::unix::process::parent_id() != parent {
        return Ok(()); // the parent died before the signal was armed
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    if let Err(e) = enter_namespace() {
        let _ = writeln!(out, "failed: {e}");
        return Err(e);
    }
    writeln!(out, "ready").map_err(|e| Error::io("write", Path::new("stdout"), e))?;
    out.flush().ok();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match handle(&line) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!(
                "err {} {}",
                e.raw_os_error().unwrap_or(0),
                e.to_string().replace('\n', " ")
            ),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

fn handle(line: &str) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    if let Some(t) = v.get("unmount") {
        let t: PathBuf =
            serde_json::from_value(t.clone()).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        return LinuxMounter.unmount(&t);
    }
    let (spec, target): (MountSpec, PathBuf) = serde_json::from_value(v["mount"].clone())
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    crate::driver::check_mount_point(&target)?;
    LinuxMounter.mount(&spec, &target)
}

fn enter_namespace() -> Result<()> {
    use rustix::thread::UnshareFlags;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    // SAFETY: the helper has one thread and shares no fd table with anyone.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(|e| Error::errno("unshare(CLONE_NEWUSER|CLONE_NEWNS)", "/", e.raw_os_error()))?;
    for (f, text) in [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(f, text).map_err(|e| Error::io("write", Path::new(f), e))?;
    }
    // No mount of ours propagates anywhere.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| Error::errno("make-rprivate", "/", e.raw_os_error()))
}
