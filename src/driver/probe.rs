//! What the host offers a layer store: overlayfs, d_type, mount rights, the
//! backing filesystem, kernel and overlay module features. `auto` driver
//! selection and `Graph.status()` are built from this.
//!
//! moby refuses overlay on a backing filesystem without d_type
//! (`fsutils.SupportsDType`): overlayfs needs it to see whiteouts and
//! opaque dirs, and without it deleted files silently reappear. It also
//! checks `/proc/filesystems` (`supportsOverlay`), and containers/storage
//! and moby both finish with a real test mount, the only check that
//! catches an unusable upper (overlayfs or NFS as backing filesystem).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use crate::driver::mounter::{lowerdir_plus, LinuxMounter, MountSpec, Mounter};
use crate::error::{Error, IoContext, Result};

/// `CAP_SYS_ADMIN`, the capability `mount(2)` checks (capability(7)).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether the running kernel knows overlayfs (`/proc/filesystems`; or a
/// loaded `overlay` module, which registers it).
pub fn kernel_has_overlay() -> bool {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    listed || Path::new("/sys/module/overlay").is_dir()
}

/// Whether the filesystem holding `dir` reports file types in `readdir`
/// (d_type): one file is created in `dir`, listed, and removed.
pub fn supports_d_type(dir: &Path) -> Result<bool> {
    let name = format!(".lamina-dtype-{}-{:x}", std::process::id(), probe_nonce());
    let probe = dir.join(&name);
    std::fs::File::create(&probe).at("create", &probe)?;
    let result = (|| {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", dir)?;
        let mut entries = rustix::fs::Dir::read_from(&fd).at("readdir", dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry.at("readdir", dir)?;
            if entry.file_name().to_bytes() == name.as_bytes() {
                return Ok(entry.file_type() != FileType::Unknown);
            }
        }
        Err(Error::Driver(format!(
            "{}: probe file not listed",
            dir.display()
        )))
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

fn probe_nonce() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Whether this process holds `CAP_SYS_ADMIN` in its user namespace (root,
/// or a user namespace of its own), which mounting overlayfs and bind mounts
/// needs (an unprivileged user namespace may mount overlayfs since 5.11).
pub fn can_mount() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether this process is in a user namespace other than the initial one
/// (overlayfs then needs `userxattr`, as containerd's `NeedsUserXAttr`
/// decides, because `trusted.*` xattrs are out of reach).
pub fn in_user_namespace() -> bool {
    // The initial namespace maps the whole 32-bit range onto itself.
    crate::fs::meta::uid_map().is_some_and(|m| m != [[0, 0, 4_294_967_295]])
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `(major, minor)` of a kernel release like `6.1.0-18-amd64`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The overlay module's parameters (`index`, `metacopy`, `redirect_dir`,
/// `xino_auto`, ...) from `/sys/module/overlay/parameters`; empty if the
/// module is not loaded.
pub fn overlay_parameters() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/sys/module/overlay/parameters") {
        for e in dir.flatten() {
            if let (Some(k), Ok(v)) = (e.file_name().to_str(), std::fs::read_to_string(e.path())) {
                out.insert(k.to_owned(), v.trim().to_owned());
            }
        }
    }
    out
}

/// [`HostProbe::native_diff_blockers`] from the overlay module's
/// parameters (as [`overlay_parameters`] reads them).
pub fn native_diff_blockers(parameters: &BTreeMap<String, String>) -> Vec<String> {
    ["redirect_dir", "metacopy"]
        .into_iter()
        .filter(|k| parameters.get(*k).is_some_and(|v| v == "Y" || v == "on"))
        .map(|k| format!("{k}=on"))
        .collect()
}

/// The name of the filesystem holding `path`, from its `statfs` magic.
pub fn backing_fs(path: &Path) -> Result<String> {
    let st = rustix::fs::statfs(path).at("statfs", path)?;
    Ok(fs_name(st.f_type as i64 as u32 as u64))
}

/// The name for a `statfs` `f_type` magic number (linux/magic.h).
pub fn fs_name(magic: u64) -> String {
    let name = match magic {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x858458F6 => "ramfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        0x6573_5546 => "fuse",
        0x7371_7368 => "squashfs",
        0xE0F5_E1E2 => "erofs",
        0xCA45_1A4E => "bcachefs",
        0x0102_1997 => "9p",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x00C3_6400 => "ceph",
        0xF15F => "ecryptfs",
        0x5265_4973 => "reiserfs",
        0x6175_6673 => "aufs",
        0x4d44 => "vfat",
        _ => return format!("0x{magic:x}"),
    };
    name.to_owned()
}

/// Mount an overlay of two lowers and an upper for real in a scratch
/// directory under `scratch` and take it down again: the test
/// containers/storage and moby run before choosing overlay (moby's
/// overlay2 also needs more than one lower, as `auto`'s choice does).
pub fn overlay_mounts(scratch: &Path) -> Result<()> {
    overlay_mounts_with(scratch, &LinuxMounter, vec![])
}

/// [`overlay_mounts`] through `mounter`, with extra mount `options`.
pub fn overlay_mounts_with(
    scratch: &Path,
    mounter: &dyn Mounter,
    options: Vec<String>,
) -> Result<()> {
    let base = scratch.join(format!(
        ".lamina-overlay-probe-{}-{:x}",
        std::process::id(),
        probe_nonce()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&base)
        .at("mkdir", &base)?;
    let result = (|| {
        let sub: Vec<PathBuf> = ["lower", "upper", "work", "merged", "lower2"]
            .iter()
            .map(|d| base.join(d))
            .collect();
        for d in &sub {
            std::fs::create_dir(d).at("mkdir", d)?;
        }
        let spec = MountSpec::Overlay {
            lower: vec![sub[0].clone(), sub[4].clone()],
            upper: Some(sub[1].clone()),
            work: Some(sub[2].clone()),
            options,
            relative: None,
        };
        mounter.mount(&spec, &sub[3])?;
        mounter.unmount(&sub[3])
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// What the host offers, probed once for a store directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// Backing filesystem of the store (`extfs`, `xfs`, `tmpfs`, ...).
    pub backing_fs: String,
    /// Whether the backing filesystem reports d_type.
    pub d_type: bool,
    /// Kernel release.
    pub kernel: String,
    /// Whether the kernel has overlayfs.
    pub overlay: bool,
    /// Whether this process may mount.
    pub can_mount: bool,
    /// Whether a real overlay mount on the store's filesystem worked
    /// (`None`: not tried, because one of the above is missing).
    pub overlay_mounts: Option<std::result::Result<(), String>>,
    /// Whether overlay mounts need `userxattr` (in a user namespace).
    pub userxattr: bool,
    /// The overlay module's parameters.
    pub overlay_parameters: BTreeMap<String, String>,
    /// Whether overlay lowers can be passed one at a time
    /// ([`crate::driver::mounter::lowerdir_plus`], Linux 6.8).
    pub lowerdir_plus: bool,
}

impl HostProbe {
    /// Probe the host for a store whose scratch directory is `scratch`
    /// (normally `<root>/tmp`, on the same filesystem as the layers),
    /// including a test overlay mount.
    pub fn run(scratch: &Path) -> Result<HostProbe> {
        HostProbe::run_with(scratch, true)
    }

    /// [`HostProbe::run`] for a store that mounts through `mounter`: where
    /// that is lamina's rootless helper ([`Mounter::private_namespace`]),
    /// the test mount is made by the helper, with `userxattr`, so that
    /// `auto` picks overlay2 wherever rootless overlay works (containers/
    /// storage's rootless "native overlay" check does the same).
    pub fn run_for(scratch: &Path, mounter: &dyn Mounter) -> Result<HostProbe> {
        if !mounter.private_namespace() {
            return HostProbe::run(scratch);
        }
        let mut p = HostProbe::run_with(scratch, false)?;
        p.can_mount = true;
        p.userxattr = true;
        // The helper's mounts are the ones that count (this process, with
        // no CAP_SYS_ADMIN, cannot open a filesystem context to probe).
        p.lowerdir_plus = mounter.has_lowerdir_plus();
        if p.overlay && p.d_type {
            p.overlay_mounts = Some(
                overlay_mounts_with(scratch, mounter, vec!["userxattr".to_owned()])
                    .map_err(|e| e.to_string()),
            );
        }
        Ok(p)
    }

    /// [`HostProbe::run`], with the test mount only if `test_mount`.
    pub fn run_with(scratch: &Path, test_mount: bool) -> Result<HostProbe> {
        let overlay = kernel_has_overlay();
        let d_type = supports_d_type(scratch)?;
        let can_mount = can_mount();
        let overlay_mounts = (test_mount && overlay && d_type && can_mount)
            .then(|| overlay_mounts(scratch).map_err(|e| e.to_string()));
        Ok(HostProbe {
            backing_fs: backing_fs(scratch)?,
            d_type,
            kernel: kernel_release(),
            overlay,
            can_mount,
            overlay_mounts,
            userxattr: in_user_namespace(),
            overlay_parameters: overlay_parameters(),
            lowerdir_plus: lowerdir_plus(),
        })
    }

    /// What `auto` picks: `overlay2` where an overlay of several lowers
    /// mounts on this store's filesystem, else `vfs`. (The seed's
    /// `overlay` is never picked: it copies every image layer in full.)
    pub fn auto_driver(&self) -> &'static str {
        match self.overlay_mounts {
            Some(Ok(())) => "overlay2",
            _ => "vfs",
        }
    }

    /// The overlay features that are on by default in this kernel and
    /// write what an upper dir alone cannot show (moby's
    /// `doesSupportNativeDiff`): a renamed directory becomes a
    /// `redirect` xattr pointing into the lowers (`redirect_dir`), a
    /// chown-ed file a metadata-only copy whose data stays below
    /// (`metacopy`). Where any is on, overlay2 diffs naively.
    pub fn native_diff_blockers(&self) -> Vec<String> {
        native_diff_blockers(&self.overlay_parameters)
    }

    /// Why `auto` would not pick overlay, or `None` if it would.
    pub fn overlay_unavailable_reason(&self) -> Option<String> {
        if !self.overlay {
            Some("the kernel has no overlayfs".into())
        } else if !self.d_type {
            Some(format!(
                "the backing filesystem ({}) does not support d_type",
                self.backing_fs
            ))
        } else if !self.can_mount {
            Some("this process may not mount (no CAP_SYS_ADMIN)".into())
        } else {
            match &self.overlay_mounts {
                Some(Err(e)) => Some(format!("a test overlay mount failed: {e}")),
                _ => None,
            }
        }
    }

    /// The probe as `(key, value)` pairs for `status()`.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("backing_filesystem".to_owned(), self.backing_fs.clone()),
            ("supports_d_type".to_owned(), self.d_type.to_string()),
            ("kernel".to_owned(), self.kernel.clone()),
            ("kernel_overlay".to_owned(), self.overlay.to_string()),
            ("can_mount".to_owned(), self.can_mount.to_string()),
            ("userxattr".to_owned(), self.userxattr.to_string()),
            (
                "overlay_lowerdir_plus".to_owned(),
                self.lowerdir_plus.to_string(),
            ),
        ];
        if let Some(why) = self.overlay_unavailable_reason() {
            out.push(("overlay_unavailable".to_owned(), why));
        }
        for (k, v) in &self.overlay_parameters {
            out.push((format!("overlay.{k}"), v.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_this_host() {
        let tmp = tempfile::tempdir().unwrap();
        // No test mount here: it would happen in the host's mount namespace
        // (tests/mounts.rs runs the full probe inside its own).
        let p = HostProbe::run_with(tmp.path(), false).unwrap();
        assert!(!p.kernel.is_empty());
        assert!(parse_kernel_version(&p.kernel).is_some());
        assert!(
            !p.backing_fs.starts_with("0x"),
            "unknown fs {}",
            p.backing_fs
        );
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let pairs = p.to_pairs();
        assert!(pairs.iter().any(|(k, _)| k == "backing_filesystem"));
        assert_eq!(p.overlay_mounts, None);
        assert_eq!(p.auto_driver(), "vfs");
        println!("{pairs:?} -> {}", p.auto_driver());
    }

    #[test]
    fn names_and_versions() {
        assert_eq!(fs_name(0xEF53), "extfs");
        assert_eq!(fs_name(0x794C7630), "overlayfs");
        assert_eq!(fs_name(0x1234), "0x1234");
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.11"), Some((5, 11)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }
}
