//! The mount system calls, behind a trait.
//!
//! As youki puts its privileged calls behind `Syscall` (a Linux
//! implementation and a recording one for tests), the refcounting above
//! ([`crate::driver::mount`]) takes a [`Mounter`], so its logic is tested
//! without root and without touching the host's mounts.
//!
//! An overlay of many lowers does not fit the one page of data `mount(2)`
//! takes. Where the kernel has the new mount API with `lowerdir+` (Linux
//! 6.8), [`LinuxMounter`] hands overlayfs one lower at a time
//! (`fsopen` + `fsconfig` + `fsmount` + `move_mount`), up to the kernel's
//! own limit of [`OVERLAY_MAX_LOWERS`]. Elsewhere it falls back to what
//! moby's overlay2 does: short names relative to a directory (its `l/`
//! symlinks, given in [`Relative`]), mounted from a thread whose working
//! directory is that directory (moby's `mountFrom`; here a thread that
//! `unshare(CLONE_FS)`s, so no other thread's working directory moves).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::driver::mountinfo;
use crate::error::{Error, IoContext, Result};

/// What to mount on a layer's mount point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountSpec {
    /// overlayfs: `lowerdir=` (top first), and `upperdir=`/`workdir=` for a
    /// writable mount, plus extra options (`userxattr`, `index=off`, ...).
    Overlay {
        /// Lower directories, uppermost first.
        lower: Vec<PathBuf>,
        /// The upper directory; `None` for a read-only overlay.
        upper: Option<PathBuf>,
        /// The work directory; required with `upper`.
        work: Option<PathBuf>,
        /// Extra mount options, each `key` or `key=value`.
        options: Vec<String>,
        /// The same directories named relative to one directory, for a
        /// `mount(2)` whose absolute names would not fit a page (`None`:
        /// absolute names only).
        relative: Option<Relative>,
    },
    /// A read-only bind mount of `source` (a read-only layer's `root/`:
    /// writes there would reach inodes shared with other layers).
    ReadOnlyBind {
        /// The directory to bind.
        source: PathBuf,
    },
    /// Nothing to mount: the target is the layer's own tree (vfs, whose
    /// counts go through [`NoMounts`]).
    Itself,
}

/// An overlay's directories named relative to `dir`: moby's short `l/`
/// names (`l/<26 characters>` symlinks to each layer's `diff/`), so that
/// 128 lowers and more fit the page of data `mount(2)` takes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Relative {
    /// The directory the names are relative to: the mount is made from a
    /// thread whose working directory it is.
    pub dir: PathBuf,
    /// Lower directories, uppermost first, relative to `dir`.
    pub lower: Vec<PathBuf>,
    /// The upper directory, relative to `dir`.
    pub upper: Option<PathBuf>,
    /// The work directory, relative to `dir`.
    pub work: Option<PathBuf>,
}

/// Linux takes mount data up to one page, NUL included; moby's overlay2
/// and containerd switch to relative paths past that.
pub const MAX_MOUNT_DATA: usize = 4095;

/// The most lower directories one overlay mount stacks: `OVL_MAX_STACK`
/// (fs/overlayfs/params.h), whichever way the lowers are passed.
pub const OVERLAY_MAX_LOWERS: usize = 500;

fn check_option_path(what: &str, p: &Path, absolute: bool) -> Result<()> {
    let b = p.as_os_str().as_bytes();
    // overlayfs splits its data at ',' and lowerdir at ':'; '\' escapes.
    if p.is_absolute() != absolute || b.is_empty() || b.iter().any(|c| b",:\\\n\0".contains(c)) {
        let how = if absolute {
            "an absolute"
        } else {
            "a relative"
        };
        return Err(Error::Driver(format!(
            "overlay {what} {} must be {how} path without ',', ':', '\\' or newlines",
            p.display()
        )));
    }
    Ok(())
}

/// `lowerdir=...[,upperdir=...,workdir=...][,options]`, every path checked.
fn join_data(
    lower: &[PathBuf],
    upper: Option<&PathBuf>,
    work: Option<&PathBuf>,
    options: &[String],
    absolute: bool,
) -> Result<String> {
    for l in lower {
        check_option_path("lowerdir", l, absolute)?;
    }
    let mut parts = vec![format!(
        "lowerdir={}",
        lower
            .iter()
            .map(|l| l.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":")
    )];
    if let (Some(u), Some(w)) = (upper, work) {
        check_option_path("upperdir", u, absolute)?;
        check_option_path("workdir", w, absolute)?;
        parts.push(format!("upperdir={}", u.to_string_lossy()));
        parts.push(format!("workdir={}", w.to_string_lossy()));
    }
    parts.extend(options.iter().cloned());
    Ok(parts.join(","))
}

impl MountSpec {
    /// Check an overlay spec's shape: at least one lower and at most
    /// [`OVERLAY_MAX_LOWERS`], `upper` and `work` together, options that
    /// are one `key` or `key=value` each.
    pub fn validate(&self) -> Result<()> {
        let MountSpec::Overlay {
            lower,
            upper,
            work,
            options,
            relative,
        } = self
        else {
            return Err(Error::InvalidArgument("not an overlay mount".into()));
        };
        if lower.is_empty() {
            return Err(Error::InvalidArgument(
                "overlay needs a lower directory".into(),
            ));
        }
        if lower.len() > OVERLAY_MAX_LOWERS {
            return Err(Error::Driver(format!(
                "an overlay of {} lower layers: overlayfs stacks at most {OVERLAY_MAX_LOWERS} \
                 (the kernel's OVL_MAX_STACK)",
                lower.len()
            )));
        }
        if upper.is_some() != work.is_some() {
            return Err(Error::InvalidArgument(
                "overlay upperdir and workdir go together".into(),
            ));
        }
        if let Some(r) = relative {
            if r.lower.len() != lower.len() || r.upper.is_some() != upper.is_some() {
                return Err(Error::InvalidArgument(
                    "relative overlay names must name the same directories".into(),
                ));
            }
        }
        for o in options {
            if o.is_empty() || o.contains([',', '\0', '\n']) || o.starts_with('=') {
                return Err(Error::InvalidArgument(format!("bad overlay option {o:?}")));
            }
        }
        Ok(())
    }

    /// The overlay mount data string (`lowerdir=...,upperdir=...`) with
    /// absolute names; longer than [`MAX_MOUNT_DATA`] is an error.
    pub fn overlay_data(&self) -> Result<String> {
        self.validate()?;
        let MountSpec::Overlay {
            lower,
            upper,
            work,
            options,
            ..
        } = self
        else {
            unreachable!("validated as an overlay");
        };
        let data = join_data(lower, upper.as_ref(), work.as_ref(), options, true)?;
        if data.len() > MAX_MOUNT_DATA {
            return Err(Error::Driver(format!(
                "overlay mount options are {} bytes, over the kernel's limit of {MAX_MOUNT_DATA}; \
                 use a store root with a shorter path",
                data.len()
            )));
        }
        Ok(data)
    }

    /// What `mount(2)` is given: the absolute data when it fits a page,
    /// else the [`Relative`] names with the directory to mount from. Past
    /// a page either way, an error naming the limit and the number of
    /// lowers that fit.
    pub fn mount_data(&self) -> Result<(Option<&Path>, String)> {
        let too_long = match self.overlay_data() {
            Ok(d) => return Ok((None, d)),
            Err(Error::Driver(m)) if m.contains("bytes, over") => m,
            Err(e) => return Err(e),
        };
        let MountSpec::Overlay {
            lower,
            options,
            relative: Some(r),
            ..
        } = self
        else {
            return Err(Error::Driver(too_long));
        };
        let data = join_data(&r.lower, r.upper.as_ref(), r.work.as_ref(), options, false)?;
        if data.len() > MAX_MOUNT_DATA {
            let per = data.len().div_ceil(lower.len());
            return Err(Error::Driver(format!(
                "an overlay of {} lower layers needs {} bytes of mount options even with \
                 short names, over the page mount(2) takes ({MAX_MOUNT_DATA} bytes, about {} \
                 lowers); this kernel has no fsconfig lowerdir+ (Linux 6.8) to pass them one \
                 at a time",
                lower.len(),
                data.len(),
                MAX_MOUNT_DATA / per.max(1)
            )));
        }
        Ok((Some(&r.dir), data))
    }
}

/// Whether the running kernel takes overlay lowers one at a time through
/// the new mount API (`fsconfig(FSCONFIG_SET_STRING, "lowerdir+")`, Linux
/// 6.8), probed once per process: a filesystem context is opened and given
/// one lower, and dropped without being mounted. `false` too where this
/// process may not open one (no `CAP_SYS_ADMIN`).
pub fn lowerdir_plus() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    *PROBED.get_or_init(|| {
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .and_then(|fs| rustix::mount::fsconfig_set_string(&fs, "lowerdir+", "/"))
            .is_ok()
    })
}

/// The mount calls the refcounting needs.
pub trait Mounter: Send + Sync {
    /// Mount `spec` on `target`.
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()>;
    /// Unmount `target`.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Every mount point in this process's mount namespace.
    fn mount_points(&self) -> Result<HashSet<PathBuf>>;
    /// Whether `target` counts as mounted, given `points` from
    /// [`Mounter::mount_points`] (one read of the mount table serves many
    /// targets when a store is reconciled).
    fn is_mounted_in(&self, points: &HashSet<PathBuf>, target: &Path) -> bool {
        points.contains(target)
    }
    /// Whether something is mounted exactly at `target`.
    fn is_mounted(&self, target: &Path) -> Result<bool> {
        Ok(self.is_mounted_in(&self.mount_points()?, target))
    }
    /// Whether overlay lowers go to the kernel one at a time (the new
    /// mount API's `lowerdir+`), so that absolute names of any length do:
    /// a driver then needs no [`Relative`] short names.
    fn has_lowerdir_plus(&self) -> bool {
        false
    }
    /// The path through which this process reaches what is mounted at
    /// `target` (a mount in another mount namespace is reached through
    /// its holder's `/proc/<pid>/root`).
    fn visible_path(&self, target: &Path) -> PathBuf {
        target.to_owned()
    }
    /// Whether mounts live in a namespace of this process's own, which
    /// other processes sharing the store cannot see (their references to
    /// a layer not mounted here are then theirs, not vanished).
    fn private_namespace(&self) -> bool {
        false
    }
    /// Stop whatever serves the mounts (a store's close): its mounts go.
    fn shutdown(&self) {}
    /// The pid of the process whose user and mount namespaces hold the
    /// mounts, where that is not this process's (the rootless helper).
    fn namespace_holder(&self) -> Option<u32> {
        None
    }
}

/// A shared mounter (one per store, used by every layer's driver calls).
impl<M: Mounter + ?Sized> Mounter for std::sync::Arc<M> {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        (**self).mount(spec, target)
    }
    fn unmount(&self, target: &Path) -> Result<()> {
        (**self).unmount(target)
    }
    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        (**self).mount_points()
    }
    fn is_mounted_in(&self, points: &HashSet<PathBuf>, target: &Path) -> bool {
        (**self).is_mounted_in(points, target)
    }
    fn has_lowerdir_plus(&self) -> bool {
        (**self).has_lowerdir_plus()
    }
    fn visible_path(&self, target: &Path) -> PathBuf {
        (**self).visible_path(target)
    }
    fn private_namespace(&self) -> bool {
        (**self).private_namespace()
    }
    fn shutdown(&self) {
        (**self).shutdown()
    }
    fn namespace_holder(&self) -> Option<u32> {
        (**self).namespace_holder()
    }
}

/// The mounter of a driver that never mounts (vfs: "mounting" a layer
/// hands out its own directory). Every target counts as mounted, so the
/// reference counts of [`crate::driver::mount`] are the whole truth: there
/// is no kernel mount that could vanish behind lamina's back or outlive its
/// process, and a reference goes only when it is put or its process dies.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMounts;

impl Mounter for NoMounts {
    fn mount(&self, _spec: &MountSpec, _target: &Path) -> Result<()> {
        Ok(())
    }
    fn unmount(&self, _target: &Path) -> Result<()> {
        Ok(())
    }
    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        Ok(HashSet::new())
    }
    fn is_mounted_in(&self, _points: &HashSet<PathBuf>, _target: &Path) -> bool {
        true
    }
}

/// The real thing: `mount(2)` and `umount2(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxMounter;

impl Mounter for LinuxMounter {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        let failed = |e: Errno, op: &'static str| Error::Mount {
            op,
            target: target.to_owned(),
            source: std::io::Error::from_raw_os_error(e.raw_os_error()),
        };
        match spec {
            MountSpec::Overlay { .. } => mount_overlay(spec, target, self.has_lowerdir_plus()),
            MountSpec::ReadOnlyBind { source } => {
                rustix::mount::mount_bind(source, target).map_err(|e| failed(e, "bind mount"))?;
                // A bind mount starts with the flags of its source; making it
                // read-only is a second, remount call. The source's nosuid/
                // nodev/noexec/atime flags must be repeated, or a remount in
                // a user namespace fails with EPERM on those locked flags.
                let keep = rustix::fs::statvfs(target)
                    .map(|s| locked_flags(s.f_flag))
                    .at("statvfs", target)?;
                if let Err(e) = rustix::mount::mount_remount(
                    target,
                    MountFlags::BIND | MountFlags::RDONLY | keep,
                    "",
                ) {
                    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                    return Err(failed(e, "remount read-only"));
                }
                Ok(())
            }
            // Only NoMounts is handed this; here it would be a count with
            // no mount behind it.
            MountSpec::Itself => Err(Error::InvalidArgument(format!(
                "nothing to mount on {}",
                target.display()
            ))),
        }
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        // MNT_DETACH as moby's overlay2 does (f65fa1f115): a shell left
        // with its cwd in the mount must not make unmount fail.
        match rustix::mount::unmount(target, UnmountFlags::DETACH) {
            Ok(()) => Ok(()),
            // EINVAL: not a mount point (any more); that is the wanted state.
            Err(Errno::INVAL) if !self.is_mounted(target)? => Ok(()),
            Err(e) => Err(Error::Mount {
                op: "unmount",
                target: target.to_owned(),
                source: std::io::Error::from_raw_os_error(e.raw_os_error()),
            }),
        }
    }

    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        Ok(mountinfo::read()?
            .into_iter()
            .map(|m| m.mount_point)
            .collect())
    }

    fn has_lowerdir_plus(&self) -> bool {
        lowerdir_plus()
    }
}

/// [`LinuxMounter`] as on a kernel without the new mount API (before
/// 6.8): overlays go through `mount(2)` alone, with [`Relative`] short
/// names past a page. What lamina does on such kernels, kept callable on
/// any kernel so that this path is tested where the new one exists.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClassicMounter;

impl Mounter for ClassicMounter {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        match spec {
            MountSpec::Overlay { .. } => mount_overlay(spec, target, false),
            _ => LinuxMounter.mount(spec, target),
        }
    }
    fn unmount(&self, target: &Path) -> Result<()> {
        LinuxMounter.unmount(target)
    }
    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        LinuxMounter.mount_points()
    }
}

/// An overlay mount: through `fsconfig` when `lowerdir_plus`, else
/// through `mount(2)`, from the [`Relative`] names' directory when the
/// absolute names pass a page.
fn mount_overlay(spec: &MountSpec, target: &Path, lowerdir_plus: bool) -> Result<()> {
    if lowerdir_plus {
        spec.validate()?;
        return mount_overlay_fsconfig(spec, target);
    }
    let (from, data) = spec.mount_data()?;
    let data =
        CString::new(data).map_err(|_| Error::InvalidArgument("NUL in overlay options".into()))?;
    match from {
        None => rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| mount_error("mount overlay", target, e)),
        Some(dir) => mount_overlay_from(dir, &data, target),
    }
}

fn mount_error(op: &'static str, at: &Path, e: Errno) -> Error {
    Error::Mount {
        op,
        target: at.to_owned(),
        source: std::io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

/// An overlay through the new mount API: every lower its own `fsconfig`
/// call (`lowerdir+`, Linux 6.8), so no page limits the stack and names
/// need no escaping; the mount is made detached (`fsmount`) and attached
/// at `target` last (`move_mount`). As with `mount(2)`, an error names the
/// mount point (the contract of `DriverError.filename`); its operation
/// says which parameter the kernel refused.
fn mount_overlay_fsconfig(spec: &MountSpec, target: &Path) -> Result<()> {
    let MountSpec::Overlay {
        lower,
        upper,
        work,
        options,
        ..
    } = spec
    else {
        return Err(Error::InvalidArgument("not an overlay mount".into()));
    };
    let failed = |op: &'static str| move |e: Errno| mount_error(op, target, e);
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(failed("fsopen overlay"))?;
    for l in lower {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l)
            .map_err(failed("mount overlay (lowerdir+)"))?;
    }
    if let (Some(u), Some(w)) = (upper, work) {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", u)
            .map_err(failed("mount overlay (upperdir)"))?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", w)
            .map_err(failed("mount overlay (workdir)"))?;
    }
    for o in options {
        match o.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v),
            None => rustix::mount::fsconfig_set_flag(&fs, o.as_str()),
        }
        .map_err(failed("mount overlay (option)"))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(failed("mount overlay"))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(failed("fsmount overlay"))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed("move_mount overlay"))
}

/// `mount(2)` of an overlay whose data names its directories relative to
/// `dir`: moby's `mountFrom` re-executes itself to `chdir` there, because
/// the working directory belongs to the whole process. Here a thread of
/// its own leaves the process's filesystem context (`unshare(CLONE_FS)`)
/// first, so its `fchdir` moves no other thread, and the kernel resolves
/// the names against it.
fn mount_overlay_from(dir: &Path, data: &CStr, target: &Path) -> Result<()> {
    if !target.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mount point {} must be absolute",
            target.display()
        )));
    }
    let dirfd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", dir)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only (cwd, root, umask): unlike CLONE_FILES
            // it leaves every fd shared, which is what `unshare_unsafe`
            // asks its callers to care about.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| mount_error("unshare(CLONE_FS)", target, e))?;
            rustix::process::fchdir(&dirfd).at("fchdir", dir)?;
            rustix::mount::mount("overlay", target, "overlay", MountFlags::empty(), data)
                .map_err(|e| mount_error("mount overlay", target, e))
        })
        .join()
        .map_err(|p| crate::error::panic_message("the mount thread", p))?
    })
}

fn locked_flags(f: StatVfsMountFlags) -> MountFlags {
    let mut out = MountFlags::empty();
    for (s, m) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

/// One call a [`RecordingMounter`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// `mount(spec, target)`.
    Mount(MountSpec, PathBuf),
    /// `unmount(target)`.
    Unmount(PathBuf),
}

/// A [`Mounter`] for tests: records calls and keeps a pretend mount table.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    state: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<MountCall>,
    mounted: HashSet<PathBuf>,
    fail_next: Option<Errno>,
    lowerdir_plus: bool,
}

impl RecordingMounter {
    /// An empty mount table.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<MountCall> {
        self.state().calls.clone()
    }

    /// How many mount calls there were.
    pub fn mount_calls(&self) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| matches!(c, MountCall::Mount(..)))
            .count()
    }

    /// Pretend `target` is mounted (a mount left by some other process).
    pub fn add_mount(&self, target: &Path) {
        self.state().mounted.insert(target.to_owned());
    }

    /// Pretend `target` was unmounted behind lamina's back.
    pub fn drop_mount(&self, target: &Path) {
        self.state().mounted.remove(target);
    }

    /// Make the next mount call fail with `errno`.
    pub fn fail_next_mount(&self, errno: Errno) {
        self.state().fail_next = Some(errno);
    }

    /// Pretend the kernel has (or lacks, the default) `lowerdir+`: an
    /// overlay spec is then checked as [`LinuxMounter`] would pass it.
    pub fn set_lowerdir_plus(&self, has: bool) {
        self.state().lowerdir_plus = has;
    }
}

impl Mounter for RecordingMounter {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        if let MountSpec::Overlay { .. } = spec {
            if self.has_lowerdir_plus() {
                spec.validate()?;
            } else {
                spec.mount_data()?;
            }
        }
        let mut st = self.state();
        st.calls
            .push(MountCall::Mount(spec.clone(), target.to_owned()));
        if let Some(e) = st.fail_next.take() {
            return Err(Error::Mount {
                op: "mount",
                target: target.to_owned(),
                source: std::io::Error::from_raw_os_error(e.raw_os_error()),
            });
        }
        if !st.mounted.insert(target.to_owned()) {
            // The refcounting must never stack a second mount on a target.
            return Err(Error::Driver(format!("{} mounted twice", target.display())));
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        let mut st = self.state();
        st.calls.push(MountCall::Unmount(target.to_owned()));
        st.mounted.remove(target);
        Ok(())
    }

    fn mount_points(&self) -> Result<HashSet<PathBuf>> {
        Ok(self.state().mounted.clone())
    }

    fn has_lowerdir_plus(&self) -> bool {
        self.state().lowerdir_plus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_data() {
        let spec = MountSpec::Overlay {
            lower: vec!["/s/layers/a/root".into()],
            upper: Some("/s/layers/b/upper".into()),
            work: Some("/s/layers/b/work".into()),
            options: vec!["index=off".into()],
            relative: None,
        };
        assert_eq!(
            spec.overlay_data().unwrap(),
            "lowerdir=/s/layers/a/root,upperdir=/s/layers/b/upper,workdir=/s/layers/b/work,index=off"
        );
        let ro = MountSpec::Overlay {
            lower: vec!["/a".into(), "/b".into()],
            upper: None,
            work: None,
            options: vec![],
            relative: None,
        };
        assert_eq!(ro.overlay_data().unwrap(), "lowerdir=/a:/b");
        for bad in ["/a,b", "/a:b", "rel", "/a\\b"] {
            let s = MountSpec::Overlay {
                lower: vec![bad.into()],
                upper: None,
                work: None,
                options: vec![],
                relative: None,
            };
            assert!(s.overlay_data().is_err(), "{bad}");
        }
        let long = MountSpec::Overlay {
            lower: vec![PathBuf::from(format!("/{}", "x".repeat(5000)))],
            upper: None,
            work: None,
            options: vec![],
            relative: None,
        };
        assert!(matches!(long.overlay_data(), Err(Error::Driver(_))));
        let half = MountSpec::Overlay {
            lower: vec!["/a".into()],
            upper: Some("/u".into()),
            work: None,
            options: vec![],
            relative: None,
        };
        assert!(half.overlay_data().is_err());
        assert!(MountSpec::ReadOnlyBind {
            source: "/a".into()
        }
        .overlay_data()
        .is_err());
    }

    /// Past a page, mount(2) is given the short names relative to their
    /// directory; past a page even so, an error that names the limit.
    #[test]
    fn mount_data_goes_relative_past_a_page() {
        let spec = |n: usize, relative: bool| {
            let lower: Vec<PathBuf> = (0..n)
                .map(|i| PathBuf::from(format!("/store/layers/{:064x}/diff", i)))
                .collect();
            MountSpec::Overlay {
                relative: relative.then(|| Relative {
                    dir: "/store/driver/l".into(),
                    lower: (0..n).map(|i| PathBuf::from(format!("{i:026X}"))).collect(),
                    upper: Some("../../layers/u/diff".into()),
                    work: Some("../../layers/u/work".into()),
                }),
                lower,
                upper: Some("/store/layers/u/diff".into()),
                work: Some("/store/layers/u/work".into()),
                options: vec!["index=off".into()],
            }
        };
        // 40 absolute names fit.
        assert_eq!(spec(40, true).mount_data().unwrap().0, None);
        // 128 do not, and go relative.
        let s = spec(128, true);
        assert!(s.overlay_data().is_err());
        let (from, data) = s.mount_data().unwrap();
        assert_eq!(from, Some(Path::new("/store/driver/l")));
        assert!(data.starts_with(&format!("lowerdir={:026X}:", 0)), "{data}");
        assert!(
            data.ends_with(",upperdir=../../layers/u/diff,workdir=../../layers/u/work,index=off")
        );
        assert!(data.len() <= MAX_MOUNT_DATA);
        // Without short names: the page limit, named.
        let m = spec(128, false).mount_data().unwrap_err().to_string();
        assert!(m.contains("4095"), "{m}");
        // Past a page even with short names.
        let m = spec(200, true).mount_data().unwrap_err().to_string();
        assert!(m.contains("200 lower layers") && m.contains("4095"), "{m}");
        assert!(m.contains("lowerdir+"), "{m}");
        // Relative names must be relative, and name as many directories.
        let mut bad = spec(128, true);
        if let MountSpec::Overlay {
            relative: Some(r), ..
        } = &mut bad
        {
            r.lower[3] = "/abs".into();
        }
        assert!(bad.mount_data().is_err());
        let mut bad = spec(128, true);
        if let MountSpec::Overlay {
            relative: Some(r), ..
        } = &mut bad
        {
            r.lower.pop();
        }
        assert!(matches!(bad.validate(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn at_most_the_kernels_stack_of_lowers() {
        let spec = |n: usize| MountSpec::Overlay {
            lower: (0..n)
                .map(|i| PathBuf::from(format!("/l/{i:040}")))
                .collect(),
            upper: None,
            work: None,
            options: vec![],
            relative: None,
        };
        spec(OVERLAY_MAX_LOWERS).validate().unwrap();
        let m = spec(OVERLAY_MAX_LOWERS + 1).validate().unwrap_err();
        assert!(matches!(m, Error::Driver(_)));
        assert!(m.to_string().contains("at most 500"), "{m}");
        // A recording mounter checks as the real one would.
        let r = RecordingMounter::new();
        r.set_lowerdir_plus(true);
        r.mount(&spec(OVERLAY_MAX_LOWERS), Path::new("/t")).unwrap();
        assert!(r
            .mount(&spec(OVERLAY_MAX_LOWERS + 1), Path::new("/u"))
            .is_err());
        r.set_lowerdir_plus(false);
        assert!(r.mount(&spec(OVERLAY_MAX_LOWERS), Path::new("/v")).is_err());
    }

    #[test]
    fn recording_mounter_refuses_double_mounts() {
        let m = RecordingMounter::new();
        let spec = MountSpec::ReadOnlyBind {
            source: "/a".into(),
        };
        m.mount(&spec, Path::new("/t")).unwrap();
        assert!(m.is_mounted(Path::new("/t")).unwrap());
        assert!(m.mount(&spec, Path::new("/t")).is_err());
        m.unmount(Path::new("/t")).unwrap();
        assert!(!m.is_mounted(Path::new("/t")).unwrap());
        m.fail_next_mount(Errno::PERM);
        assert!(m.mount(&spec, Path::new("/t")).is_err());
        assert_eq!(m.mount_calls(), 3);
    }

    #[test]
    fn no_mounts_counts_every_target_as_mounted() {
        let m = std::sync::Arc::new(NoMounts);
        assert!(m.is_mounted(Path::new("/nowhere")).unwrap());
        assert!(m.mount_points().unwrap().is_empty());
    }
}
