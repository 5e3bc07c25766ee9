//! The container's filesystem, set up by its pid 1 before the command is
//! executed: the tree as `/`, then `/proc`, `/dev`, `/sys`, Docker's
//! per-container files and the caller's binds, as bubblewrap and
//! `buildah run --isolation chroot` lay them out (moby's defaults in
//! `oci/defaults.go`: `/dev` a 64 MiB tmpfs, `devpts` a new instance,
//! `/dev/shm` 64 MiB, `/dev/mqueue`, `/sys` read-only).
//!
//! Why the new mount API (`open_tree`, `fsopen`/`fsmount`, `move_mount`,
//! through rustix) rather than `mount(2)` on joined paths: every host-side
//! source (the device nodes, the binds, the files) and every new filesystem
//! is taken as a detached mount *before* the root is pivoted; the old root
//! is then dropped, and only then are they attached at their targets. A
//! target path is resolved after the pivot, where `/` and `..` are the
//! container's own root, so no symlink in an image (`/proc -> /etc`,
//! `/dev -> ../../..`) can put a mount outside the tree.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags,
    UnmountFlags,
};

use crate::run::spec::{Network, RunSpec};

/// A failed step: what was done, to what, and the errno.
#[derive(Debug)]
pub struct SetupError {
    /// The errno.
    pub errno: i32,
    /// What failed, naming its path.
    pub what: String,
}

impl SetupError {
    fn new(what: impl Into<String>, e: Errno) -> SetupError {
        SetupError {
            errno: e.raw_os_error(),
            what: what.into(),
        }
    }
}

type Step<T> = std::result::Result<T, SetupError>;

fn ctx<T>(r: rustix::io::Result<T>, what: impl FnOnce() -> String) -> Step<T> {
    r.map_err(|e| SetupError::new(what(), e))
}

/// A detached mount and where it goes.
struct Pending {
    fd: OwnedFd,
    target: String,
    kind: TargetKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Dir,
    File,
}

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn new_fs(fstype: &str, options: &[(&str, &str)], attrs: MountAttrFlags) -> Step<OwnedFd> {
    let fs = ctx(fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC), || {
        format!("fsopen {fstype}")
    })?;
    for (k, v) in options {
        ctx(fsconfig_set_string(fs.as_fd(), *k, *v), || {
            format!("{fstype}: option {k}={v}")
        })?;
    }
    ctx(fsconfig_create(fs.as_fd()), || format!("create a {fstype}"))?;
    ctx(
        fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs),
        || format!("fsmount {fstype}"),
    )
}

fn clone_tree(path: &Path, recursive: bool) -> Step<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    ctx(open_tree(CWD, path, flags), || {
        format!("bind {}", path.display())
    })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, {attr_set})`
/// (rustix has no wrapper for it).
fn set_attrs_recursive(fd: BorrowedFd<'_>, set: u64, what: &str) -> Step<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd, a NUL-terminated empty path and a struct of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(SetupError::new(
            format!("make {what} read-only"),
            Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL),
        ));
    }
    Ok(())
}

const RDONLY: u64 = 0x1; // MOUNT_ATTR_RDONLY

/// A fresh `proc` (of the new pid namespace); where the kernel refuses one
/// (a user namespace, and a host `/proc` with parts masked by overmounts),
/// the host's, bound recursively: its pids are then the outer namespace's.
fn proc_mount() -> Step<OwnedFd> {
    let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    match new_fs("proc", &[], attrs) {
        Ok(fd) => Ok(fd),
        Err(e) if e.errno == libc::EPERM => clone_tree(Path::new("/proc"), true),
        Err(e) => Err(e),
    }
}

/// `/sys`, read-only: a new sysfs where the kernel allows one (it needs the
/// network namespace to be the caller's own), else the host's bound.
fn sys_mount(network: Network) -> Step<OwnedFd> {
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let fresh = if network == Network::None || !crate::driver::probe::in_user_namespace() {
        new_fs("sysfs", &[], attrs)
    } else {
        Err(SetupError::new("sysfs", Errno::PERM))
    };
    match fresh {
        Ok(fd) => Ok(fd),
        Err(e) if e.errno == libc::EPERM => {
            let fd = clone_tree(Path::new("/sys"), true)?;
            set_attrs_recursive(fd.as_fd(), RDONLY, "/sys")?;
            Ok(fd)
        }
        Err(e) => Err(e),
    }
}

/// Set up the tree at `spec.root` as `/` with its special filesystems and
/// binds; on return the process's root and cwd are the container's `/`.
pub fn enter(spec: &RunSpec) -> Step<()> {
    let root = spec.root.as_path();
    // pivot_root needs the new root to be a mount point (a vfs directory is not).
    ctx(rustix::mount::mount_bind_recursive(root, root), || {
        format!("bind {} onto itself", root.display())
    })?;
    ctx(
        rustix::mount::mount_change(
            root,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        ),
        || format!("make {} private", root.display()),
    )?;

    // Everything from the host, detached, before the host is out of reach.
    let as_root = !crate::driver::probe::in_user_namespace();
    let mut pending = vec![Pending {
        fd: proc_mount()?,
        target: "/proc".into(),
        kind: TargetKind::Dir,
    }];
    let dev = new_fs(
        "tmpfs",
        &[("mode", "755"), ("size", "65536k")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_STRICTATIME,
    )?;
    let mut dev_nodes = Vec::new();
    for n in DEV_NODES {
        dev_nodes.push((*n, clone_tree(&Path::new("/dev").join(n), false)?));
    }
    let mut pts_options = vec![("newinstance", ""), ("ptmxmode", "0666"), ("mode", "0620")];
    if as_root {
        pts_options.push(("gid", "5"));
    }
    let pts = new_pts(&pts_options)?;
    let shm = new_fs(
        "tmpfs",
        &[("mode", "1777"), ("size", "65536k")],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let mqueue = new_fs(
        "mqueue",
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    pending.push(Pending {
        fd: sys_mount(spec.network)?,
        target: "/sys".into(),
        kind: TargetKind::Dir,
    });
    for (source, target) in &spec.files {
        pending.push(Pending {
            fd: clone_tree(source, false)?,
            target: target.clone(),
            kind: TargetKind::File,
        });
    }
    for m in &spec.mounts {
        let fd = clone_tree(&m.source, true)?;
        if m.readonly {
            set_attrs_recursive(fd.as_fd(), RDONLY, &m.source.display().to_string())?;
        }
        let is_dir = ctx(rustix::fs::stat(&m.source), || {
            format!("stat {}", m.source.display())
        })?;
        pending.push(Pending {
            fd,
            target: m.target.clone(),
            kind: if rustix::fs::FileType::from_raw_mode(is_dir.st_mode).is_dir() {
                TargetKind::Dir
            } else {
                TargetKind::File
            },
        });
    }

    // The tree becomes `/`; the old root goes.
    ctx(rustix::process::chdir(root), || {
        format!("chdir {}", root.display())
    })?;
    ctx(rustix::process::pivot_root(".", "."), || {
        format!("pivot_root {}", root.display())
    })?;
    ctx(rustix::mount::unmount(".", UnmountFlags::DETACH), || {
        "detach the old root".to_owned()
    })?;
    ctx(rustix::process::chdir("/"), || "chdir /".to_owned())?;

    // Attach, resolving targets inside the container only.
    let (proc_and_sys, rest): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|p| p.target == "/proc" || p.target == "/sys");
    for p in proc_and_sys {
        attach(p)?;
    }
    attach(Pending {
        fd: dev,
        target: "/dev".into(),
        kind: TargetKind::Dir,
    })?;
    for (n, fd) in dev_nodes {
        attach(Pending {
            fd,
            target: format!("/dev/{n}"),
            kind: TargetKind::File,
        })?;
    }
    attach(Pending {
        fd: pts,
        target: "/dev/pts".into(),
        kind: TargetKind::Dir,
    })?;
    attach(Pending {
        fd: shm,
        target: "/dev/shm".into(),
        kind: TargetKind::Dir,
    })?;
    attach(Pending {
        fd: mqueue,
        target: "/dev/mqueue".into(),
        kind: TargetKind::Dir,
    })?;
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        ctx(rustix::fs::symlink(to, link), || format!("symlink {link}"))?;
    }
    for p in rest {
        attach(p)?;
    }
    Ok(())
}

fn new_pts(options: &[(&str, &str)]) -> Step<OwnedFd> {
    let fs = ctx(fsopen("devpts", FsOpenFlags::FSOPEN_CLOEXEC), || {
        "fsopen devpts".to_owned()
    })?;
    for (k, v) in options {
        let r = if v.is_empty() {
            rustix::mount::fsconfig_set_flag(fs.as_fd(), *k)
        } else {
            fsconfig_set_string(fs.as_fd(), *k, *v)
        };
        ctx(r, || format!("devpts: option {k}"))?;
    }
    ctx(fsconfig_create(fs.as_fd()), || "create a devpts".to_owned())?;
    ctx(
        fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        ),
        || "fsmount devpts".to_owned(),
    )
}

/// Make `target` (and its parents) if missing, then move the mount onto it.
fn attach(p: Pending) -> Step<()> {
    let target = Path::new(&p.target);
    if let Some(parent) = target.parent() {
        make_dirs(parent)?;
    }
    let made = match p.kind {
        TargetKind::Dir => rustix::fs::mkdir(target, rustix::fs::Mode::from_raw_mode(0o755)),
        TargetKind::File => rustix::fs::open(
            target,
            rustix::fs::OFlags::CREATE
                | rustix::fs::OFlags::EXCL
                | rustix::fs::OFlags::WRONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(SetupError::new(format!("make {}", p.target), e)),
    }
    ctx(
        move_mount(
            p.fd.as_fd(),
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        ),
        || format!("mount on {}", p.target),
    )
}

/// `mkdir -p`, mode 0755 (inside the container: `/` is its root).
pub fn make_dirs(dir: &Path) -> Step<()> {
    let mut cur = std::path::PathBuf::from("/");
    for c in dir
        .components()
        .skip_while(|c| matches!(c, std::path::Component::RootDir))
    {
        cur.push(c);
        match rustix::fs::mkdir(&cur, rustix::fs::Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(SetupError::new(format!("mkdir {}", cur.display()), e)),
        }
    }
    Ok(())
}

/// Bring `lo` up in a new network namespace (`ip link set lo up`).
pub fn loopback_up() -> Step<()> {
    // SAFETY: a socket, two ioctls on a zeroed ifreq naming "lo", a close.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(SetupError::new(
                "socket",
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL),
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(SetupError::new(
                "bring lo up",
                Errno::from_io_error(&err).unwrap_or(Errno::INVAL),
            ));
        }
    }
    Ok(())
}

/// `argv0` as `execvp` finds it in `path` (inside the container).
pub fn find_executable(argv0: &str, path: &str) -> Step<CString> {
    let cs = |s: &str| {
        CString::new(s).map_err(|_| SetupError::new(format!("{s:?} holds a NUL"), Errno::INVAL))
    };
    if argv0.contains('/') {
        return cs(argv0);
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{argv0}");
        if rustix::fs::access(cand.as_str(), rustix::fs::Access::EXEC_OK).is_ok()
            && rustix::fs::stat(cand.as_str())
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file())
        {
            return cs(&cand);
        }
    }
    Err(SetupError::new(
        format!("exec {argv0:?} (not found in the container's $PATH)"),
        Errno::NOENT,
    ))
}
