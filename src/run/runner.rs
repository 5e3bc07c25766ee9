//! The runner: the process between the caller and the command (run as
//! `python -m lamina._helper run SPEC`, single-threaded, which is what
//! `unshare(CLONE_NEWUSER)` and `setns` into a user namespace require).
//!
//! ```text
//! caller ── runner ── pid 1 of the new pid namespace = the command
//!           │ user ns: inherit / join the mount helper's / new
//!           │ unshare(mount, pid, ipc, uts[, net])
//!           └ fork ─ sets up the tree (container.rs), drops to the user,
//!                    execs; failures go to the caller's error pipe
//! ```
//!
//! On SIGTERM the runner SIGKILLs its child and waits for it: a pid
//! namespace's pid 1 is reaped only once every process in it is gone.
//! The runner waits for its child and ends the way it ended (the same exit
//! code, or killed by the same signal), so the caller's `subprocess` sees
//! the command's status. Killing the runner kills everything: its child
//! has `PR_SET_PDEATHSIG(SIGKILL)`, and when a pid namespace's pid 1 dies
//! the kernel kills every process in it, however it daemonized.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::error::{Error, Result};
use crate::run::container::{self, SetupError};
use crate::run::spec::{Network, RunSpec, Userns};
use crate::run::user;

/// The command's pid 1, for the SIGTERM handler (0 until forked).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_term(_: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn errno_now() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn report(fd: i32, e: &SetupError) {
    let msg = format!("{} {}", e.errno, e.what.replace('\n', " "));
    // SAFETY: writing a buffer to an fd we were given.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
    }
}

fn write_file(path: &str, text: &str) -> std::result::Result<(), SetupError> {
    std::fs::write(path, text).map_err(|e| SetupError {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        what: format!("write {path}"),
    })
}

fn step<T>(r: rustix::io::Result<T>, what: &str) -> std::result::Result<T, SetupError> {
    r.map_err(|e| SetupError {
        errno: e.raw_os_error(),
        what: what.to_owned(),
    })
}

/// Enter the user namespace the spec names, then the command's new ones.
fn namespaces(spec: &RunSpec) -> std::result::Result<(), SetupError> {
    match spec.userns {
        Userns::Inherit => {}
        Userns::Join(pid) => {
            for (ns, kind) in [
                ("user", LinkNameSpaceType::User),
                ("mnt", LinkNameSpaceType::Mount),
            ] {
                let p = format!("/proc/{pid}/ns/{ns}");
                let fd = step(
                    rustix::fs::open(
                        p.as_str(),
                        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    ),
                    &format!("open {p} (the rootless mount helper's namespace)"),
                )?;
                step(
                    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(kind)),
                    &format!("setns {p}"),
                )?;
            }
        }
        Userns::New => {
            let uid = rustix::process::getuid().as_raw();
            let gid = rustix::process::getgid().as_raw();
            // SAFETY: the runner has one thread.
            step(
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) },
                "unshare(CLONE_NEWUSER)",
            )?;
            write_file("/proc/self/setgroups", "deny")?;
            write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
            write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
        }
    }
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    // SAFETY: the runner has one thread.
    step(
        unsafe { rustix::thread::unshare_unsafe(flags) },
        "unshare(mount, pid, ipc, uts, net)",
    )?;
    step(
        rustix::mount::mount_change(
            "/",
            rustix::mount::MountPropagationFlags::PRIVATE
                | rustix::mount::MountPropagationFlags::REC,
        ),
        "make / private",
    )
}

/// The runner's main (never returns): see the module docs.
pub fn main(spec_json: &str) -> Result<std::convert::Infallible> {
    let spec: RunSpec = serde_json::from_str(spec_json)
        .map_err(|e| Error::InvalidArgument(format!("run spec: {e}")))?;
    // SAFETY: prctl/signal with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // The caller handles Ctrl-C (it kills the runner); the runner must
        // outlive the terminal's SIGINT long enough to be killed cleanly.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        // SIGTERM: kill the command's pid namespace and wait for its end,
        // so that when the runner is gone nothing of the container runs
        // and its mounts are down (the caller's way to stop a run).
        let handler: extern "C" fn(libc::c_int) = on_term;
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    if std::os::unix::process::parent_id() != spec.parent {
        std::process::exit(137);
    }
    if let Err(e) = namespaces(&spec) {
        report(spec.error_fd, &e);
        std::process::exit(127);
    }
    // A pipe the child polls once its death signal is armed: end of file
    // means the runner died before (a fresh pid 1's getppid() is 0).
    let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::errno("pipe", "/", e.raw_os_error()))?;
    // SAFETY: the runner is single-threaded, so the child may do anything.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report(
            spec.error_fd,
            &SetupError {
                errno: errno_now(),
                what: "fork".into(),
            },
        );
        std::process::exit(127);
    }
    if pid == 0 {
        drop(alive_w);
        let e = child(&spec, alive_r).unwrap_err();
        report(spec.error_fd, &e);
        // SAFETY: leaving the forked child without running the parent's atexit.
        unsafe { libc::_exit(127) }
    }
    drop(alive_r);
    CHILD.store(pid, Ordering::Relaxed);
    let mut status = 0;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno_now() != libc::EINTR {
            std::process::exit(127);
        }
    }
    drop(alive_w);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: plain libc calls ending this process by the child's signal.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Pid 1: set up, drop privileges, exec. Returns only on failure.
fn child(
    spec: &RunSpec,
    alive: OwnedFd,
) -> std::result::Result<std::convert::Infallible, SetupError> {
    // SAFETY: integer-argument prctl; poll on our own pipe.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let mut p = libc::pollfd {
            fd: alive.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLHUP != 0 {
            libc::_exit(137);
        }
    }
    drop(alive);
    // SAFETY: the fd was passed to us; a failed exec reports through it and
    // a successful one closes it.
    unsafe {
        libc::fcntl(spec.error_fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    step(
        rustix::system::sethostname(spec.hostname.as_bytes()),
        "sethostname",
    )?;
    if spec.network == Network::None {
        container::loopback_up()?;
    }
    container::enter(spec)?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    // errno 0: a bad argument, not an OS failure (the caller's ValueError).
    let id = user::resolve(spec.user.as_deref(), &passwd, &group).map_err(|e| SetupError {
        errno: 0,
        what: match e {
            Error::InvalidArgument(m) => m,
            e => e.to_string(),
        },
    })?;
    let env = user::complete_env(&spec.env, &spec.hostname, &id.home);
    container::make_dirs(Path::new(&spec.cwd))?;
    step(
        rustix::process::chdir(spec.cwd.as_str()),
        &format!("chdir {}", spec.cwd),
    )?;
    drop_privileges(&id)?;
    let prog = container::find_executable(&spec.argv[0], user::path_of(&env))?;
    let cstrings = |v: &[String]| -> std::result::Result<Vec<CString>, SetupError> {
        v.iter()
            .map(|s| {
                CString::new(s.as_str()).map_err(|_| SetupError {
                    errno: libc::EINVAL,
                    what: format!("{s:?} holds a NUL"),
                })
            })
            .collect()
    };
    let argv = cstrings(&spec.argv)?;
    let envp = cstrings(&env)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: plain libc calls on prepared, NUL-terminated arrays; the
    // interpreter's ignored signals and mask must not reach the command
    // (what subprocess's restore_signals does).
    unsafe {
        for sig in [
            libc::SIGPIPE,
            libc::SIGXFSZ,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            4u32, /* CLOSE_RANGE_CLOEXEC */
        );
        libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
    }
    let errno = errno_now();
    Err(SetupError {
        errno,
        what: format!("exec {}", prog.to_string_lossy()),
    })
}

fn drop_privileges(id: &user::Identity) -> std::result::Result<(), SetupError> {
    let fail = |what: String| SetupError {
        errno: errno_now(),
        what,
    };
    // SAFETY: plain libc calls in a single-threaded process.
    unsafe {
        let groups: Vec<libc::gid_t> = id.groups.clone();
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            // A user namespace made with setgroups "deny" allows none: fine
            // when none were asked for.
            if !(groups.is_empty() && errno_now() == libc::EPERM) {
                return Err(fail(format!("setgroups {groups:?}")));
            }
        }
        if libc::setgid(id.gid) != 0 {
            return Err(fail(format!(
                "setgid {} (is the gid mapped in this namespace?)",
                id.gid
            )));
        }
        if libc::setuid(id.uid) != 0 {
            return Err(fail(format!(
                "setuid {} (is the uid mapped in this namespace?)",
                id.uid
            )));
        }
    }
    Ok(())
}
