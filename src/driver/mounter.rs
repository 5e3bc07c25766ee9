//! The mount system calls, behind a trait.
//!
//! As youki puts its privileged calls behind `Syscall` (a Linux
//! implementation and a recording one for tests), the refcounting above
//! ([`crate::driver::mount`]) takes a [`Mounter`], so its logic is tested
//! without root and without touching the host's mounts.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::StatVfsMountFlags;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::driver::mountinfo;
use crate::error::{Error, IoContext, Result};

/// What to mount on a layer's mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Linux takes mount data up to one page, NUL included; moby's overlay2
/// and containerd switch to relative paths past that, lamina's single
/// lower keeps well under it unless the store root itself is very long.
const MAX_MOUNT_DATA: usize = 4095;

fn check_option_path(what: &str, p: &Path) -> Result<()> {
    let b = p.as_os_str().as_bytes();
    // overlayfs splits its data at ',' and lowerdir at ':'; '\' escapes.
    if !p.is_absolute() || b.iter().any(|c| b",:\\\n\0".contains(c)) {
        return Err(Error::Driver(format!(
            "overlay {what} {} must be an absolute path without ',', ':', '\\' or newlines",
            p.display()
        )));
    }
    Ok(())
}

impl MountSpec {
    /// The overlay mount data string (`lowerdir=...,upperdir=...`).
    pub fn overlay_data(&self) -> Result<String> {
        let MountSpec::Overlay {
            lower,
            upper,
            work,
            options,
        } = self
        else {
            return Err(Error::InvalidArgument("not an overlay mount".into()));
        };
        if lower.is_empty() {
            return Err(Error::InvalidArgument(
                "overlay needs a lower directory".into(),
            ));
        }
        if upper.is_some() != work.is_some() {
            return Err(Error::InvalidArgument(
                "overlay upperdir and workdir go together".into(),
            ));
        }
        let mut parts = Vec::new();
        for l in lower {
            check_option_path("lowerdir", l)?;
        }
        parts.push(format!(
            "lowerdir={}",
            lower
                .iter()
                .map(|l| l.to_string_lossy())
                .collect::<Vec<_>>()
                .join(":")
        ));
        if let (Some(u), Some(w)) = (upper, work) {
            check_option_path("upperdir", u)?;
            check_option_path("workdir", w)?;
            parts.push(format!("upperdir={}", u.to_string_lossy()));
            parts.push(format!("workdir={}", w.to_string_lossy()));
        }
        for o in options {
            if o.is_empty() || o.contains([',', '\0', '\n']) {
                return Err(Error::InvalidArgument(format!("bad overlay option {o:?}")));
            }
            parts.push(o.clone());
        }
        let data = parts.join(",");
        if data.len() > MAX_MOUNT_DATA {
            return Err(Error::Driver(format!(
                "overlay mount options are {} bytes, over the kernel's limit of {MAX_MOUNT_DATA}; \
                 use a store root with a shorter path",
                data.len()
            )));
        }
        Ok(data)
    }
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
            MountSpec::Overlay { .. } => {
                let data = CString::new(spec.overlay_data()?)
                    .map_err(|_| Error::InvalidArgument("NUL in overlay options".into()))?;
                rustix::mount::mount(
                    "overlay",
                    target,
                    "overlay",
                    MountFlags::empty(),
                    data.as_c_str(),
                )
                .map_err(|e| failed(e, "mount overlay"))
            }
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
}

impl Mounter for RecordingMounter {
    fn mount(&self, spec: &MountSpec, target: &Path) -> Result<()> {
        if let MountSpec::Overlay { .. } = spec {
            spec.overlay_data()?;
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
        };
        assert_eq!(ro.overlay_data().unwrap(), "lowerdir=/a:/b");
        for bad in ["/a,b", "/a:b", "rel", "/a\\b"] {
            let s = MountSpec::Overlay {
                lower: vec![bad.into()],
                upper: None,
                work: None,
                options: vec![],
            };
            assert!(s.overlay_data().is_err(), "{bad}");
        }
        let long = MountSpec::Overlay {
            lower: vec![PathBuf::from(format!("/{}", "x".repeat(5000)))],
            upper: None,
            work: None,
            options: vec![],
        };
        assert!(matches!(long.overlay_data(), Err(Error::Driver(_))));
        let half = MountSpec::Overlay {
            lower: vec!["/a".into()],
            upper: Some("/u".into()),
            work: None,
            options: vec![],
        };
        assert!(half.overlay_data().is_err());
        assert!(MountSpec::ReadOnlyBind {
            source: "/a".into()
        }
        .overlay_data()
        .is_err());
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
