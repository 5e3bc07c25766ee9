//! The `overlay2` driver: layers that stack instead of copying (moby's
//! `daemon/graphdriver/overlay2`, 23e5c94cfb; containers/storage's
//! overlay driver).
//!
//! Who owns what:
//!
//! ```text
//! <home>/l/<short>          symlink to a layer's diff/ (moby's short names), made
//!                           when a mount needs it on a kernel without lowerdir+
//! <home>/empty/             the lower of a layer with nothing below it
//! layers/<id>/diff/         this layer's own changes in overlay form: whiteouts
//!                           are 0/0 character devices, opaque directories carry
//!                           overlay.opaque=y; a writable layer's upperdir
//! layers/<id>/work/         overlayfs's work dir (writable layers)
//! layers/<id>/merged/       the mount point
//! layers/<id>/link          the layer's short name (26 characters)
//! layers/<id>/committed     a read-only layer (registered or -init): only ever a
//!                           lower, never an upper again
//! ```
//!
//! Registering applies the tar straight into `diff/` (whiteouts written in
//! overlay form by [`crate::archive::apply_layer`]): the cost is that of
//! this layer, whatever the depth, and nothing of the parents is read, so
//! an image's layers may be applied in parallel
//! ([`Driver::layers_apply_independently`]). A mount stacks the `diff/` of
//! every layer of the ancestry as lowers: a read-only layer's own `diff/`
//! on top and no upper (moby's `committed` layers; a read-only overlay
//! needs two lowers, so a base layer gets `empty/` under it), a writable
//! layer's `diff/` as upperdir. Lowers go to the kernel one at a time
//! where it has `lowerdir+` (up to its limit of
//! [`OVERLAY_MAX_LOWERS`]), else as short names relative to `l/` (about
//! 140 fit the page `mount(2)` takes); see [`crate::driver::mounter`].
//!
//! The `-init` layer is written through a mount of itself over its parent,
//! as moby does: overlayfs copies up `/etc` and `/dev` with the image's
//! owner, mode and times, and `setup_init_layer` sees the image's files
//! (an image's own `/etc/hosts` is kept, not replaced). Written straight
//! into `diff/`, those directories would be new ones with default
//! metadata, and would hide the image's in the merged view.
//!
//! Diffs and change lists are native: only `diff/` is walked, and each
//! path it holds is compared with the parent's view, mounted read-only, so
//! the cost is O(changes) ([`crate::archive::upper`]). Where the kernel
//! turns on `redirect_dir` or `metacopy` by default, an upper dir alone no
//! longer says what changed (a renamed directory points into the lowers, a
//! chown-ed file keeps its data below), and the driver diffs naively
//! instead: the parent's and the layer's views mounted and compared, as
//! moby's `naiveDiff`. `status()` says which and why.
//!
//! What overlay2 does not do that the full-tree drivers do (as moby's
//! overlay2 and containerd's overlay snapshotter do not): a layer tar's
//! parent directories that the tar does not list are made 0755 in
//! `diff/` and shadow the lower's in the merged view; an entry under a
//! symlink that only a lower layer has lands in a new directory of that
//! name; a hard link to a file of a lower layer is a malformed layer.
//! Layers made by Docker, buildkit or `lamina` never do any of these.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::archive::changes::{changes, ChangesOptions};
use crate::archive::export::{export_diff, ExportOptions};
use crate::archive::upper::{upper_changes, write_upper_diff};
use crate::archive::{apply_layer_with_record, ApplyOptions, ApplyReport, WhiteoutMode};
use crate::driver::mount::MountRefs;
use crate::driver::mounter::{MountSpec, Mounter, Relative, MAX_MOUNT_DATA, OVERLAY_MAX_LOWERS};
use crate::driver::probe::{self, HostProbe};
use crate::driver::vfs::make_root;
use crate::driver::{check_mount_point, content_size, mkdir, Change, Driver, LayerDir};
use crate::error::{Error, IoContext, Result};

/// A layer's own changes, in overlay form.
pub const DIFF: &str = "diff";
/// overlayfs's work directory.
pub const WORK: &str = "work";
/// Where a layer is mounted.
pub const MERGED: &str = "merged";
/// The file holding a layer's short name.
pub const LINK: &str = "link";
/// The marker of a read-only layer.
pub const COMMITTED: &str = "committed";
/// The directory of short-name symlinks in the driver's home.
pub const SHORT_DIR: &str = "l";
/// The empty lower in the driver's home.
pub const EMPTY: &str = "empty";

/// Length of a short name (moby's `idLength`).
const SHORT_LEN: usize = 26;

/// The `overlay2` driver; see the module docs.
pub struct Overlay2 {
    refs: MountRefs<Arc<dyn Mounter>>,
    home: PathBuf,
    options: Vec<String>,
    userxattr: bool,
    /// Kernel features on that make the native diff wrong; empty: native.
    naive_because: Vec<String>,
    probe: Option<HostProbe>,
}

impl std::fmt::Debug for Overlay2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay2")
            .field("home", &self.home)
            .field("options", &self.options)
            .field("naive_because", &self.naive_because)
            .finish()
    }
}

impl Overlay2 {
    /// The overlay2 driver whose home is `home` (mount records in
    /// `home/mounts`, short names in `home/l`), mounting through `mounter`.
    /// Mount options and the diff method come from `probe` (probed here
    /// when `None`): `userxattr` in a user namespace (containerd's
    /// `NeedsUserXAttr`); `index=off` where the kernel has the index
    /// feature (moby 8422d85087: a lower shared by many mounts must not be
    /// tied to one upper); a naive diff where `redirect_dir` or `metacopy`
    /// is on.
    pub fn new(
        home: &Path,
        mounter: Arc<dyn Mounter>,
        probe: Option<HostProbe>,
    ) -> Result<Overlay2> {
        let refs = MountRefs::open(&home.join("mounts"), mounter)?;
        for d in [SHORT_DIR, EMPTY] {
            match std::fs::symlink_metadata(home.join(d)) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::corrupt(
                        home.join(d),
                        "not the driver's own directory",
                    ))
                }
                Err(_) => mkdir(&home.join(d), 0o700)?,
            }
        }
        let (userxattr, params) = match &probe {
            Some(p) => (p.userxattr, p.overlay_parameters.clone()),
            None => (probe::in_user_namespace(), probe::overlay_parameters()),
        };
        let mut options = Vec::new();
        if userxattr {
            options.push("userxattr".to_owned());
        }
        if params.contains_key("index") {
            options.push("index=off".to_owned());
        }
        let naive_because = probe::native_diff_blockers(&params);
        Ok(Overlay2 {
            refs,
            home: home.to_owned(),
            options,
            userxattr,
            naive_because,
            probe,
        })
    }

    /// The mount reference counts (a store reconciles them when opened).
    pub fn refs(&self) -> &MountRefs<Arc<dyn Mounter>> {
        &self.refs
    }

    /// Whether diffs and change lists compare mounted views (see the
    /// module docs) rather than walk `diff/`.
    pub fn naive_diff(&self) -> bool {
        !self.naive_because.is_empty()
    }

    fn empty(&self) -> PathBuf {
        self.home.join(EMPTY)
    }

    fn short_dir(&self) -> PathBuf {
        self.home.join(SHORT_DIR)
    }

    /// What to mount for `layer`: read-write with its `diff/` as upper, or
    /// read-only with its `diff/` as the top lower.
    fn spec(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        writable: bool,
    ) -> Result<MountSpec> {
        let mut stack: Vec<LayerDir<'_>> = Vec::with_capacity(parents.len() + 1);
        if !writable {
            stack.push(layer);
        }
        stack.extend(parents.iter().rev().copied());
        // One lower at least; two without an upper (overlayfs refuses a
        // read-only mount of one: "at least 2 lowerdir are needed").
        let padding = usize::from(stack.len() < if writable { 1 } else { 2 });
        let count = stack.len() + padding;
        if count > OVERLAY_MAX_LOWERS {
            return Err(Error::Driver(format!(
                "layer {} stacks {count} lower layers ({} ancestors{}): overlayfs mounts at \
                 most {OVERLAY_MAX_LOWERS} (the kernel's OVL_MAX_STACK)",
                layer.id,
                parents.len(),
                if writable { "" } else { " and itself" },
            )));
        }
        let mut lower: Vec<PathBuf> = stack.iter().map(|l| l.dir.join(DIFF)).collect();
        if padding == 1 {
            lower.push(self.empty());
        }
        let (upper, work) = if writable {
            (Some(layer.dir.join(DIFF)), Some(layer.dir.join(WORK)))
        } else {
            (None, None)
        };
        let relative = if self.refs.mounter().has_lowerdir_plus() {
            None
        } else {
            let from = self.short_dir();
            let mut names = Vec::with_capacity(count);
            for l in &stack {
                names.push(PathBuf::from(self.short_link(*l)?));
            }
            if padding == 1 {
                names.push(relative_path(&from, &self.empty()));
            }
            Some(Relative {
                lower: names,
                upper: upper.as_deref().map(|u| relative_path(&from, u)),
                work: work.as_deref().map(|w| relative_path(&from, w)),
                dir: from,
            })
        };
        Ok(MountSpec::Overlay {
            lower,
            upper,
            work,
            options: self.options.clone(),
            relative,
        })
    }

    /// The short name of `layer`, with its `l/` symlink made or mended.
    fn short_link(&self, layer: LayerDir<'_>) -> Result<String> {
        let name = read_short_name(layer.dir)?;
        let link = self.short_dir().join(&name);
        let want = relative_path(&self.short_dir(), &layer.dir.join(DIFF));
        for _ in 0..3 {
            match std::fs::read_link(&link) {
                Ok(t) if t == want => return Ok(name),
                // Another layer's (impossible but for a copied store) or a
                // stale one: the layer's own file says whose name it is.
                Ok(_) => match std::fs::remove_file(&link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("unlink", &link, e)),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match std::os::unix::fs::symlink(&want, &link) {
                        Ok(()) => return Ok(name),
                        // Made by a concurrent mount: read it again.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("symlink", &link, e)),
                    }
                }
                Err(e) => return Err(Error::io("readlink", &link, e)),
            }
        }
        Err(Error::Driver(format!(
            "{}: short name keeps changing under concurrent mounts",
            link.display()
        )))
    }

    fn is_committed(layer: LayerDir<'_>) -> bool {
        layer.dir.join(COMMITTED).exists()
    }

    /// `diff/`, `merged/` and `link` of a new layer in `dir`. (No fsync:
    /// the graph syncs a staging directory whole before it lands.)
    fn make_layer(dir: &Path, diff_like: Option<&Path>) -> Result<()> {
        make_diff(&dir.join(DIFF), diff_like)?;
        mkdir(&dir.join(MERGED), 0o700)?;
        let short = crate::ids::random_id()?[..SHORT_LEN].to_ascii_uppercase();
        crate::fs::private::write_replace(dir, LINK, short.as_bytes(), 0o600, false)
    }

    fn commit_marker(dir: &Path) -> Result<()> {
        crate::fs::private::write_replace(dir, COMMITTED, b"", 0o600, false)
    }

    /// A parent must be a read-only layer: a writable one's `diff/` changes
    /// under its children.
    fn check_parent(parents: &[LayerDir<'_>]) -> Result<()> {
        match parents.last() {
            Some(p) if !Self::is_committed(*p) => Err(Error::InvalidArgument(format!(
                "layer {} is writable and cannot be a parent; commit it first",
                p.id
            ))),
            _ => Ok(()),
        }
    }

    /// Run `f` with the parent's view (mounted read-only for the time of
    /// `f`), or `empty/` for a base layer.
    fn with_parent_view<T>(
        &self,
        parents: &[LayerDir<'_>],
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        match parents.split_last() {
            None => f(&self.empty()),
            Some((p, above)) => self.with_view(*p, above, f),
        }
    }

    /// Run `f` with `layer`'s view, mounted (as its mode says) for the
    /// time of `f`; an existing mount is shared through its count.
    fn with_view<T>(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        super::with_mounted(self, layer, parents, !Self::is_committed(layer), f)
    }

    /// The naive diff's two views: the parent's (`None` for a base layer)
    /// and the layer's.
    fn with_views<T>(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        f: impl FnOnce(Option<&Path>, &Path) -> Result<T>,
    ) -> Result<T> {
        match parents.split_last() {
            None => self.with_view(layer, parents, |new| f(None, new)),
            Some((p, above)) => self.with_view(*p, above, |old| {
                self.with_view(layer, parents, |new| f(Some(old), new))
            }),
        }
    }
}

/// `to` relative to the directory `from`; both absolute and free of `..`
/// (a store's paths are, its root having been resolved once).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component<'_>> = from.components().collect();
    let t: Vec<Component<'_>> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// The short name in `<dir>/link`: it becomes a path under `l/`, so it
/// must be one plain name.
fn read_short_name(dir: &Path) -> Result<String> {
    let path = dir.join(LINK);
    let data = crate::fs::private::read(&path)?
        .ok_or_else(|| Error::corrupt(&path, "the layer has no short name"))?;
    match String::from_utf8(data) {
        Ok(s) if s.len() == SHORT_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok(s),
        _ => Err(Error::corrupt(&path, "not a short name")),
    }
}

/// A new `diff/`: a copy of `like`'s owner, mode and times (a container's
/// upper dir is the `/` of its merged view, which should stay the image's
/// until the container changes it), else an empty 0755 root.
fn make_diff(diff: &Path, like: Option<&Path>) -> Result<()> {
    let Some(like) = like else {
        return make_root(diff);
    };
    let m = like.symlink_metadata().at("lstat", like)?;
    mkdir(diff, m.mode() & 0o7777)?;
    // A rootless tree is known by the owner record on its root
    // (recorded::Ids): a container's upper is one when its image's is, so
    // that what the namespace's root writes there reads as root's.
    let key = crate::fs::recorded::OVERRIDE_STAT;
    let mut buf = [0u8; 256];
    if let Ok(n) = rustix::fs::lgetxattr(like, key, &mut buf) {
        rustix::fs::lsetxattr(diff, key, &buf[..n], rustix::fs::XattrFlags::empty())
            .map_err(|e| Error::errno("setxattr", diff, e.raw_os_error()))?;
    }
    if m.uid() != rustix::process::geteuid().as_raw()
        || m.gid() != rustix::process::getegid().as_raw()
    {
        std::os::unix::fs::lchown(diff, Some(m.uid()), Some(m.gid())).at("lchown", diff)?;
        // chown clears setuid/setgid bits on some filesystems.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(diff, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .at("chmod", diff)?;
    }
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(m.atime(), m.atime_nsec()),
        last_modification: ts(m.mtime(), m.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        diff,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at("utimensat", diff)
}

impl Driver for Overlay2 {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    fn create(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        Self::check_parent(parents)?;
        let like = parents.last().map(|p| p.dir.join(DIFF));
        Self::make_layer(layer.dir, like.as_deref())?;
        mkdir(&layer.dir.join(WORK), 0o700)
    }

    fn create_init(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<()> {
        self.create(layer, parents)?;
        // Written through a mount, as moby does (see the module docs); the
        // mount is the staging directory's own, not counted: no one else
        // can see the layer yet.
        let merged = layer.dir.join(MERGED);
        check_mount_point(&merged)?;
        let spec = self.spec(layer, parents, true)?;
        let m = self.refs.mounter();
        m.mount(&spec, &merged)?;
        let r = crate::init_layer::setup_init_layer(&m.visible_path(&merged));
        let u = m.unmount(&merged);
        r?;
        u?;
        // From here on the layer is only ever a lower: its work dir is
        // scratch space (overlayfs's work/work, mode 000), and one left
        // behind by a failed removal is only that.
        let _ = crate::fs::remove::remove_path(&layer.dir.join(WORK));
        Self::commit_marker(layer.dir)
    }

    fn apply_diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        diff: &mut (dyn Read + Send),
        record: &mut dyn Write,
    ) -> Result<ApplyReport> {
        // Nothing of the parents is read (layers_apply_independently): a
        // parent may still be being applied.
        let _ = parents;
        Self::make_layer(layer.dir, None)?;
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            rootless_overlay: self.userxattr,
            // Without root: owners, devices and modes go to records.
            rootless: true,
            ..ApplyOptions::default()
        };
        let report = apply_layer_with_record(&layer.dir.join(DIFF), diff, &opts, record)?;
        Self::commit_marker(layer.dir)?;
        Ok(report)
    }

    fn layers_apply_independently(&self) -> bool {
        true
    }

    fn tree(&self, layer: LayerDir<'_>) -> Option<PathBuf> {
        // The tar's files are all in diff/ (whiteouts there are 0/0
        // devices, which a tar-split record never reads).
        let diff = layer.dir.join(DIFF);
        (Self::is_committed(layer) && diff.is_dir()).then_some(diff)
    }

    fn stack(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Vec<PathBuf> {
        std::iter::once(layer)
            .chain(parents.iter().rev().copied())
            .map(|l| l.dir.join(DIFF))
            .collect()
    }

    fn remove(
        &self,
        layer: LayerDir<'_>,
        remove_dir: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let txn = self.refs.transaction()?;
        txn.release(layer.id, &layer.dir.join(MERGED))?;
        super::refuse_mounts_inside(layer)?;
        let short = read_short_name(layer.dir).ok();
        remove_dir()?;
        if let Some(s) = short {
            let link = self.short_dir().join(s);
            match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("unlink", &link, e)),
            }
        }
        Ok(())
    }

    fn exists(&self, layer: LayerDir<'_>) -> bool {
        layer.dir.join(DIFF).is_dir() && layer.dir.join(MERGED).is_dir()
    }

    fn get(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        writable: bool,
        persist: bool,
    ) -> Result<PathBuf> {
        let merged = layer.dir.join(MERGED);
        check_mount_point(&merged)?;
        if writable && Self::is_committed(layer) {
            return Err(Error::InvalidArgument(format!(
                "layer {} is read-only: its diff/ is a lower of other layers",
                layer.id
            )));
        }
        let spec = self.spec(layer, parents, writable)?;
        self.refs.get(layer.id, &merged, &spec, persist)?;
        Ok(self.refs.mounter().visible_path(&merged))
    }

    fn put(&self, layer: LayerDir<'_>) -> Result<u32> {
        self.refs
            .put_mount(layer.id, &layer.dir.join(MERGED))?
            .ok_or_else(|| super::not_mounted(layer))
    }

    fn reconcile_mounts(&self) -> Result<Vec<String>> {
        self.refs.reconcile()
    }

    fn mount_count(&self, layer: LayerDir<'_>) -> Result<u32> {
        self.refs.count(layer.id)
    }

    fn diff(
        &self,
        layer: LayerDir<'_>,
        parents: &[LayerDir<'_>],
        out: &mut dyn Write,
    ) -> Result<u64> {
        let opts = ExportOptions::default();
        if self.naive_diff() {
            return self.with_views(layer, parents, |old, new| {
                Ok(export_diff(old, new, &mut *out, &opts)?.bytes)
            });
        }
        self.with_parent_view(parents, |lower| {
            let r = write_upper_diff(&layer.dir.join(DIFF), lower, &mut *out, &opts)?;
            Ok(r.bytes)
        })
    }

    fn changes(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<Vec<Change>> {
        if self.naive_diff() {
            let empty = self.empty();
            return self.with_views(layer, parents, |old, new| {
                changes(old.unwrap_or(&empty), new, &ChangesOptions::default())
            });
        }
        self.with_parent_view(parents, |lower| upper_changes(&layer.dir.join(DIFF), lower))
    }

    fn diff_size(&self, layer: LayerDir<'_>, parents: &[LayerDir<'_>]) -> Result<u64> {
        let c = self.changes(layer, parents)?;
        if self.naive_diff() {
            // A metacopy upper file has no data of its own: sizes come
            // from the view.
            return self.with_view(layer, parents, |view| content_size(&c, view));
        }
        content_size(&c, &layer.dir.join(DIFF))
    }

    fn namespace_holder(&self) -> Option<u32> {
        self.refs.mounter().namespace_holder()
    }

    fn shutdown(&self) {
        self.refs.mounter().shutdown();
    }

    fn status(&self) -> Vec<(String, String)> {
        let mut out = self
            .probe
            .as_ref()
            .map(HostProbe::to_pairs)
            .unwrap_or_default();
        out.push(("mount_options".to_owned(), self.options.join(",")));
        let plus = self.refs.mounter().has_lowerdir_plus();
        out.push((
            "mount_api".to_owned(),
            if plus {
                "fsconfig lowerdir+ (one lower at a time)".to_owned()
            } else {
                "mount(2) with short names (l/)".to_owned()
            },
        ));
        // Each short name costs its 26 characters and a ':'; the rest of a
        // page goes to upperdir, workdir and options.
        let max = if plus {
            OVERLAY_MAX_LOWERS.to_string()
        } else {
            format!(
                "about {} (a page of short names)",
                (MAX_MOUNT_DATA - 300) / (SHORT_LEN + 1)
            )
        };
        out.push(("max_lowers".to_owned(), max));
        out.push(("native_diff".to_owned(), (!self.naive_diff()).to_string()));
        if self.naive_diff() {
            out.push((
                "native_diff_disabled_by".to_owned(),
                self.naive_because.join(","),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mounter::{MountCall, RecordingMounter};
    use crate::graph::{Graph, Metadata};
    use crate::testutil::tar_of;

    struct Fixture {
        _tmp: tempfile::TempDir,
        g: Graph,
        m: Arc<RecordingMounter>,
    }

    fn fixture(lowerdir_plus: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let m = Arc::new(RecordingMounter::new());
        m.set_lowerdir_plus(lowerdir_plus);
        let g = Graph::open_with(&tmp.path().join("s"), "overlay2", m.clone()).unwrap();
        Fixture { _tmp: tmp, g, m }
    }

    fn chain(g: &Graph, n: usize) -> Vec<crate::graph::Layer> {
        let mut out: Vec<crate::graph::Layer> = Vec::new();
        for i in 0..n {
            let tar = tar_of(&[(&format!("f{i}"), "x")]);
            let parent = out.last().map(|l| l.id().to_owned());
            out.push(
                g.register(&mut &tar[..], parent.as_deref(), None, Metadata::new())
                    .unwrap(),
            );
        }
        out
    }

    fn last_spec(m: &RecordingMounter) -> MountSpec {
        match m.calls().into_iter().rev().find_map(|c| match c {
            MountCall::Mount(s, _) => Some(s),
            _ => None,
        }) {
            Some(s) => s,
            None => panic!("no mount"),
        }
    }

    /// What a mount stacks: a read-only layer's own diff/ on top of its
    /// ancestors' (an empty lower under a base layer), a writable layer's
    /// diff/ as upper.
    #[test]
    fn mounts_stack_the_ancestry() {
        let f = fixture(true);
        let layers = chain(&f.g, 3);
        let root = f.g.root().to_owned();
        let diff = |l: &crate::graph::Layer| root.join("layers").join(l.id()).join(DIFF);
        layers[0].mount(false).unwrap();
        match last_spec(&f.m) {
            MountSpec::Overlay {
                lower,
                upper: None,
                relative: None,
                ..
            } => assert_eq!(lower, [diff(&layers[0]), root.join("driver/empty")]),
            s => panic!("{s:?}"),
        }
        layers[2].mount(false).unwrap();
        match last_spec(&f.m) {
            MountSpec::Overlay {
                lower, upper: None, ..
            } => assert_eq!(lower, layers.iter().rev().map(diff).collect::<Vec<_>>()),
            s => panic!("{s:?}"),
        }
        let c =
            f.g.create(Some(layers[2].id()), None, false, Metadata::new())
                .unwrap();
        c.mount(false).unwrap();
        match last_spec(&f.m) {
            MountSpec::Overlay {
                lower,
                upper: Some(u),
                work: Some(w),
                ..
            } => {
                assert_eq!(lower, layers.iter().rev().map(diff).collect::<Vec<_>>());
                assert_eq!(u, diff(&c));
                assert_eq!(w, root.join("layers").join(c.id()).join(WORK));
            }
            s => panic!("{s:?}"),
        }
        // A read-only layer is never an upper.
        let ro = LayerDir {
            id: layers[1].id(),
            dir: &root.join("layers").join(layers[1].id()),
        };
        let d = crate::driver::open("overlay2", &root.join("driver"), f.m.clone(), None).unwrap();
        assert!(matches!(
            d.get(ro, &[], true, false),
            Err(Error::InvalidArgument(_))
        ));
        // A userspace view reads the same stack, the layer's own on top.
        let cdir = root.join("layers").join(c.id());
        let dirs: Vec<PathBuf> = layers
            .iter()
            .map(|l| root.join("layers").join(l.id()))
            .collect();
        let parents: Vec<LayerDir<'_>> = layers
            .iter()
            .zip(&dirs)
            .map(|(l, dir)| LayerDir { id: l.id(), dir })
            .collect();
        let me = LayerDir {
            id: c.id(),
            dir: &cdir,
        };
        let mut want = vec![diff(&c)];
        want.extend(layers.iter().rev().map(diff));
        assert_eq!(d.stack(me, &parents), want);
        assert!(d.layers_apply_independently());
        f.g.close().unwrap();
    }

    /// Without lowerdir+, every lower also gets its short name, a symlink
    /// in l/ made at mount time, relative so a moved store keeps working;
    /// deleting the layer removes it.
    #[test]
    fn short_names_without_lowerdir_plus() {
        let f = fixture(false);
        let layers = chain(&f.g, 2);
        let root = f.g.root().to_owned();
        let c =
            f.g.create(Some(layers[1].id()), None, false, Metadata::new())
                .unwrap();
        c.mount(false).unwrap();
        let MountSpec::Overlay {
            relative: Some(r), ..
        } = last_spec(&f.m)
        else {
            panic!("no short names");
        };
        assert_eq!(r.dir, root.join("driver/l"));
        assert_eq!(
            r.upper.unwrap(),
            Path::new("../../layers").join(c.id()).join(DIFF)
        );
        for (name, l) in r.lower.iter().zip(layers.iter().rev()) {
            assert_eq!(name.as_os_str().len(), SHORT_LEN);
            let dir = root.join("layers").join(l.id());
            assert_eq!(read_short_name(&dir).unwrap(), name.to_str().unwrap());
            let target = std::fs::read_link(r.dir.join(name)).unwrap();
            assert_eq!(target, Path::new("../../layers").join(l.id()).join(DIFF));
            assert_eq!(
                std::fs::canonicalize(r.dir.join(name)).unwrap(),
                dir.join(DIFF)
            );
        }
        c.unmount().unwrap();
        let top = r.dir.join(&r.lower[0]);
        f.g.delete(c.id()).unwrap();
        f.g.delete(layers[1].id()).unwrap();
        assert!(top.symlink_metadata().is_err(), "short name left behind");
        f.g.close().unwrap();
    }

    #[test]
    fn a_too_deep_stack_names_the_limit() {
        let f = fixture(true);
        let layers = chain(&f.g, 2);
        let root = f.g.root().to_owned();
        let d = crate::driver::open("overlay2", &root.join("driver"), f.m.clone(), None).unwrap();
        let dir = root.join("layers").join(layers[1].id());
        let pdir = root.join("layers").join(layers[0].id());
        let me = LayerDir {
            id: layers[1].id(),
            dir: &dir,
        };
        let parent = LayerDir {
            id: layers[0].id(),
            dir: &pdir,
        };
        let parents = vec![parent; OVERLAY_MAX_LOWERS];
        let e = d.get(me, &parents, false, false).unwrap_err();
        assert!(matches!(e, Error::Driver(_)));
        let m = e.to_string();
        assert!(
            m.contains("501 lower layers") && m.contains("at most 500"),
            "{m}"
        );
        assert_eq!(f.m.mount_calls(), 0);
    }

    /// Registering reads nothing of the parents: a layer applies while its
    /// parent's directory does not even exist yet.
    #[test]
    fn apply_reads_no_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("driver");
        std::fs::create_dir(&home).unwrap();
        let m = Arc::new(RecordingMounter::new());
        let d = crate::driver::open("overlay2", &home, m, None).unwrap();
        let dir = tmp.path().join("layer");
        std::fs::create_dir(&dir).unwrap();
        let missing = tmp.path().join("not-yet");
        let parent = LayerDir {
            id: "parent",
            dir: &missing,
        };
        let tar = tar_of(&[("etc/hosts", "h")]);
        let mut record = Vec::new();
        let me = LayerDir {
            id: "me",
            dir: &dir,
        };
        d.apply_diff(me, &[parent], &mut &tar[..], &mut record)
            .unwrap();
        assert_eq!(std::fs::read(dir.join("diff/etc/hosts")).unwrap(), b"h");
        assert!(dir.join(COMMITTED).exists() && d.exists(me));
        assert_eq!(d.tree(me), Some(dir.join(DIFF)));
    }

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            r("/s/driver/l", "/s/layers/ab/diff"),
            Path::new("../../layers/ab/diff")
        );
        assert_eq!(r("/s/driver/l", "/s/driver/empty"), Path::new("../empty"));
        assert_eq!(r("/s/driver/l", "/s/driver/l/x"), Path::new("x"));
        assert_eq!(r("/a", "/b/c"), Path::new("../b/c"));
    }
}
