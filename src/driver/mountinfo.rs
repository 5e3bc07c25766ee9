//! `/proc/self/mountinfo`: what is mounted where, as the kernel sees it.
//!
//! Format: proc(5) / `Documentation/filesystems/proc.rst` §3.5:
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//!
//! The kernel escapes space, tab, newline and backslash in paths as `\040`,
//! `\011`, `\012`, `\134` (`show_mountinfo` → `seq_path_root(.., " \t\n\\")`),
//! so a store under `/home/me/my layers` is still found.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount.
    pub mount_id: u32,
    /// Id of the parent mount.
    pub parent_id: u32,
    /// `st_dev` major of the mounted filesystem.
    pub major: u32,
    /// `st_dev` minor of the mounted filesystem.
    pub minor: u32,
    /// The directory of the filesystem that forms this mount's root.
    pub root: PathBuf,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, ...).
    pub mount_options: String,
    /// Optional fields (`shared:1`, `master:2`, ...).
    pub optional: Vec<String>,
    /// Filesystem type (`overlay`, `ext4`, ...).
    pub fs_type: String,
    /// Filesystem-specific source (`overlay`, `/dev/sda1`, ...).
    pub source: String,
    /// Per-superblock options (for overlay: `lowerdir=...`).
    pub super_options: String,
}

impl MountInfo {
    /// Whether the mount is read-only at the mount level.
    pub fn is_read_only(&self) -> bool {
        self.mount_options.split(',').any(|o| o == "ro")
    }
}

/// Undo the kernel's octal escapes (`\040` → space).
pub fn unescape(field: impl AsRef<[u8]>) -> Vec<u8> {
    let b = field.as_ref();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path_field(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Parse one mountinfo line (bytes: paths need not be UTF-8).
pub fn parse_line(line: impl AsRef<[u8]>) -> Result<MountInfo> {
    let line = line.as_ref();
    let bad = |why: &str| {
        Error::Driver(format!(
            "unparsable mountinfo line ({why}): {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == b"-")
        .ok_or_else(|| bad("no separator"))?;
    if sep < 6 || fields.len() < sep + 4 {
        return Err(bad("too few fields"));
    }
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    let num = |f: &[u8]| {
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| bad("bad number"))
    };
    let colon = fields[2]
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(|| bad("bad device"))?;
    Ok(MountInfo {
        mount_id: num(fields[0])?,
        parent_id: num(fields[1])?,
        major: num(&fields[2][..colon])?,
        minor: num(&fields[2][colon + 1..])?,
        root: path_field(fields[3]),
        mount_point: path_field(fields[4]),
        mount_options: text(fields[5]),
        optional: fields[6..sep].iter().map(|f| text(f)).collect(),
        fs_type: text(fields[sep + 1]),
        source: text(fields[sep + 2]),
        super_options: fields[sep + 3..]
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Parse a whole mountinfo text; blank lines are skipped.
pub fn parse(text: impl AsRef<[u8]>) -> Result<Vec<MountInfo>> {
    text.as_ref()
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(parse_line)
        .collect()
}

/// The mounts of the calling thread's mount namespace.
///
/// `/proc/thread-self`, not `/proc/self`: after `unshare(CLONE_NEWNS)` in
/// one thread, `/proc/self` still shows the thread-group leader's
/// namespace.
pub fn read() -> Result<Vec<MountInfo>> {
    let path = Path::new("/proc/thread-self/mountinfo");
    match std::fs::read(path) {
        Ok(text) => parse(text),
        // Kernels before 3.17 have no thread-self.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let path = Path::new("/proc/self/mountinfo");
            parse(std::fs::read(path).at("read", path)?)
        }
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The mounts whose mount point is exactly `target`, outermost last.
pub fn mounts_at<'a>(mounts: &'a [MountInfo], target: &Path) -> Vec<&'a MountInfo> {
    mounts.iter().filter(|m| m.mount_point == target).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_examples() {
        let m = parse_line(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!((m.mount_id, m.parent_id, m.major, m.minor), (36, 35, 98, 0));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.mount_point, Path::new("/mnt2"));
        assert_eq!(m.optional, vec!["master:1"]);
        assert_eq!(
            (m.fs_type.as_str(), m.source.as_str()),
            ("ext3", "/dev/root")
        );
        assert_eq!(m.super_options, "rw,errors=continue");
        assert!(!m.is_read_only());

        let m = parse_line(
            "120 29 0:52 / /var/lib/my\\040store/layers/a\\134b/merged ro,relatime - overlay overlay \
             rw,lowerdir=/x/root,upperdir=/x/upper,workdir=/x/work",
        )
        .unwrap();
        assert_eq!(
            m.mount_point,
            Path::new("/var/lib/my store/layers/a\\b/merged")
        );
        assert!(m.optional.is_empty());
        assert!(m.is_read_only());
        assert!(m.super_options.contains("upperdir=/x/upper"));

        assert!(parse_line("36 35 98:0 /mnt1 /mnt2 rw").is_err());
        assert!(parse_line("x 35 98:0 / / rw - ext3 /dev/root rw").is_err());
        let raw = parse_line(b"1 2 0:1 / /s/\xffx rw - tmpfs tmpfs rw").unwrap();
        assert_eq!(raw.mount_point.as_os_str().as_encoded_bytes(), b"/s/\xffx");
        assert_eq!(unescape("a\\011b\\012c\\9"), b"a\tb\nc\\9");
        assert_eq!(unescape("end\\04"), b"end\\04");
    }

    #[test]
    fn reads_own_namespace() {
        let all = read().unwrap();
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
        assert!(!mounts_at(&all, Path::new("/")).is_empty());
    }
}
