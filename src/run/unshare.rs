//! `lamina unshare`: exec a command in a new user + mount namespace where
//! the caller's uid and gid are 0 (as `podman unshare`, `unshare -Urm`).
//! lamina run in there mounts the kernel's overlayfs itself, at the
//! ordinary paths (with `userxattr`, as its rootless helper does), and the
//! mounts last as long as the namespace's processes.

use std::ffi::CString;

use crate::error::{Error, Result};

/// Enter the namespace and exec `argv` (`argv[0]` looked up in `PATH`).
/// Must be called by a single-threaded process; returns only on failure.
pub fn main(argv: &[String]) -> Result<std::convert::Infallible> {
    use rustix::thread::UnshareFlags;
    if argv.is_empty() {
        return Err(Error::InvalidArgument("unshare: no command".into()));
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    // SAFETY: the caller is single-threaded.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(|e| Error::errno("unshare(CLONE_NEWUSER|CLONE_NEWNS)", "/", e.raw_os_error()))?;
    for (f, text) in [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(f, text).map_err(|e| Error::io("write", f, e))?;
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| Error::errno("make-rprivate", "/", e.raw_os_error()))?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidArgument("unshare: an argument holds a NUL".into()))?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in a NULL-terminated array; the
    // interpreter's ignored SIGPIPE must not reach the command.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    Err(Error::io(
        "exec",
        argv[0].as_str(),
        std::io::Error::last_os_error(),
    ))
}
