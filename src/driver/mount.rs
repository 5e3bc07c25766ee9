//! Mount reference counts per layer, shared by the threads and processes
//! that use one store, and surviving crashes.
//!
//! moby's overlay2 keeps its `RefCounter` in memory, so a daemon restart
//! loses every count.
//! containers/storage persists `MountCount` in `mountpoints.json` under its
//! own `mountpoints.lock` and re-checks it against the mount table. lamina
//! does the same and goes one step further: a reference is recorded per
//! owning process (pid + start time, so a recycled pid is not mistaken for
//! the owner), so the references of a process that died are dropped as soon
//! as anyone looks, and a crash never leaves a count that blocks delete.
//!
//! On disk: `<root>/mounts/lock` (a [`StoreLock`], taken exclusive around
//! every change and around the mount call itself, so a layer is never
//! mounted twice) and `<root>/mounts/<id>.json`:
//!
//! ```json
//! {"boot_id": "…", "target": "/store/layers/<id>/merged",
//!  "refs": [{"pid": 4242, "start_time": 171717, "count": 2}]}
//! ```
//!
//! The file exists only while someone holds a reference. A record from
//! another boot is void (every mount of that boot is gone). Mount tables
//! are per mount namespace and pids per pid namespace: processes sharing a
//! store must share both (a reference written from another pid namespace
//! looks dead and is dropped).
//!
//! Lock order: the store lock (if any) before the mounts lock, never the
//! other way round.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::mounter::{MountSpec, Mounter};
use crate::error::{Error, IoContext, Result};
use crate::fs::lock::{LockGuard, StoreLock};
use crate::fs::private as layout;
use crate::ids;

/// A process, told apart from a later one that reuses its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Process id (in the pid namespace of whoever wrote it).
    pub pid: u32,
    /// `starttime` from `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
}

impl Owner {
    /// The owner of a persistent reference (`mount(persist=True)`, `lamina
    /// mount`): no process, alive until some process gives it back with an
    /// unmount. A count that outlives its process is what `lamina mount`
    /// asks for; a delete is refused while it stands.
    pub const PERSISTENT: Owner = Owner {
        pid: 0,
        start_time: 0,
    };

    /// The calling process.
    pub fn current() -> Result<Owner> {
        let pid = std::process::id();
        match Owner::of(pid)? {
            Some(o) => Ok(o),
            None => Err(Error::errno("read", "/proc/self/stat", libc::ENOENT)),
        }
    }

    /// The live process `pid`, or `None` if there is none (a zombie
    /// counts as dead: it will never call put).
    pub fn of(pid: u32) -> Result<Option<Owner>> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses,
        // so fields are counted after the last ')'. starttime is field 22,
        // the 20th after comm.
        let after = text.rfind(')').map(|i| &text[i + 1..]).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
            return Ok(None);
        }
        let start_time = fields
            .get(19)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::io("parse", &path, std::io::ErrorKind::InvalidData.into()))?;
        Ok(Some(Owner { pid, start_time }))
    }

    /// Whether this process still runs.
    pub fn is_alive(&self) -> bool {
        if *self == Owner::PERSISTENT {
            return true;
        }
        // Unreadable /proc: assume alive, so a reference is never dropped
        // for a process that may still use the mount.
        Owner::of(self.pid).map_or(true, |o| o == Some(*self))
    }
}

/// One owner's references to a mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The process holding them.
    #[serde(flatten)]
    pub owner: Owner,
    /// How many get calls it has not yet put.
    pub count: u32,
}

/// `mounts/<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// `/proc/sys/kernel/random/boot_id` when written.
    pub boot_id: String,
    /// Where the layer is mounted.
    pub target: PathBuf,
    /// References per owner.
    pub refs: Vec<Reference>,
}

impl MountRecord {
    /// The sum of all references.
    pub fn total(&self) -> u32 {
        self.refs.iter().map(|r| r.count).sum()
    }

    fn count_of(&self, owner: &Owner) -> u32 {
        self.refs
            .iter()
            .find(|r| r.owner == *owner)
            .map_or(0, |r| r.count)
    }
}

/// What [`MountTxn::reconcile`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// References dropped because their process is gone (or from another boot).
    pub dead_refs: u32,
    /// Layers whose counts were dropped because their mount is gone.
    pub vanished: Vec<String>,
    /// Layers that were still mounted with no live reference: unmounted.
    /// With [`crate::driver::mounter::NoMounts`], layers whose every owner
    /// is gone: their record is dropped, there is nothing to unmount.
    pub orphaned: Vec<String>,
}

impl Reconciled {
    /// What changed, a line each.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.dead_refs > 0 {
            out.push(format!(
                "{} mount reference(s) of processes that are gone dropped",
                self.dead_refs
            ));
        }
        for id in &self.vanished {
            out.push(format!("layer {id}: counts dropped, its mount is gone"));
        }
        for id in &self.orphaned {
            out.push(format!("layer {id}: unmounted, no live process held it"));
        }
        out
    }
}

/// The mount reference counts of one store.
#[derive(Debug)]
pub struct MountRefs<M: Mounter> {
    dir: PathBuf,
    lock: StoreLock,
    mounter: M,
    /// Set by [`MountRefs::with_owner`]; otherwise the caller, looked up
    /// per transaction, so a child forked after open counts as itself.
    fixed_owner: Option<Owner>,
    boot_id: String,
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl<M: Mounter> MountRefs<M> {
    /// The counts kept in `dir` (normally `<root>/mounts`, made if missing),
    /// mounting through `mounter`, on behalf of the calling process.
    pub fn open(dir: &Path, mounter: M) -> Result<Self> {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(layout::DIR_MODE))
                    .at("chmod", dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("mkdir", dir, e)),
        }
        Ok(MountRefs {
            lock: StoreLock::open(&dir.join("lock"))?,
            dir: dir.to_owned(),
            mounter,
            fixed_owner: None,
            boot_id: read_boot_id(),
        })
    }

    /// Act as `owner` instead of the calling process (tests simulate other
    /// processes this way).
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.fixed_owner = Some(owner);
        self
    }

    /// The process references are taken for.
    pub fn owner(&self) -> Result<Owner> {
        match self.fixed_owner {
            Some(o) => Ok(o),
            None => Owner::current(),
        }
    }

    /// The mounter underneath.
    pub fn mounter(&self) -> &M {
        &self.mounter
    }

    /// Take the mounts lock for a sequence of operations.
    pub fn transaction(&self) -> Result<MountTxn<'_, M>> {
        let guard = self.lock.write()?;
        Ok(MountTxn {
            refs: self,
            me: self.owner()?,
            _guard: guard,
        })
    }

    /// [`MountTxn::get`] in a transaction of its own.
    pub fn get(&self, id: &str, target: &Path, spec: &MountSpec, persist: bool) -> Result<u32> {
        self.transaction()?.get(id, target, spec, persist)
    }

    /// [`MountTxn::put`] in a transaction of its own.
    pub fn put(&self, id: &str, target: &Path) -> Result<Option<u32>> {
        self.transaction()?.put(id, target)
    }

    /// [`MountTxn::count`] in a transaction of its own.
    pub fn count(&self, id: &str) -> Result<u32> {
        self.transaction()?.count(id)
    }

    /// [`MountTxn::put`] for a kernel mount: when no reference is left to
    /// give back but `target` is still mounted (every process that held it
    /// died), the mount is released unless a live process holds it, and the
    /// answer is `Some(0)`. `None`: nothing was mounted.
    pub fn put_mount(&self, id: &str, target: &Path) -> Result<Option<u32>> {
        let txn = self.transaction()?;
        if let Some(left) = txn.put(id, target)? {
            return Ok(Some(left));
        }
        if !self.mounter.is_mounted(target)? {
            return Ok(None);
        }
        txn.release(id, target)?;
        Ok(Some(0))
    }

    /// [`MountTxn::reconcile`] in a transaction of its own, described.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        Ok(self.transaction()?.reconcile()?.describe())
    }
}

/// The mounts lock held: read and change counts, mount and unmount.
#[derive(Debug)]
pub struct MountTxn<'a, M: Mounter> {
    refs: &'a MountRefs<M>,
    me: Owner,
    _guard: LockGuard<'a>,
}

impl<M: Mounter> MountTxn<'_, M> {
    fn file(&self, id: &str) -> Result<PathBuf> {
        let id = ids::LayerId::new(id)?;
        Ok(self.refs.dir.join(format!("{id}.json")))
    }

    fn load(&self, id: &str) -> Result<Option<MountRecord>> {
        let path = self.file(id)?;
        // A record that is not a regular file counts as none, as one that
        // does not parse (below): dropped, rather than wedging the layer.
        let data = match crate::fs::private::read(&path) {
            Ok(Some(d)) => d,
            Ok(None) | Err(Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Records are replaced by rename, so a running system never sees a
        // torn one; after a power loss one may be empty (no fsync), but it
        // is then from another boot and void anyway. Whatever does not
        // parse counts as no record rather than wedging the layer.
        Ok(serde_json::from_slice(&data).ok())
    }

    fn store(&self, id: &str, rec: &MountRecord) -> Result<()> {
        let path = self.file(id)?;
        if rec.refs.is_empty() {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("unlink", &path, e)),
            };
        }
        let data = serde_json::to_vec(rec).expect("a MountRecord always encodes");
        layout::write_replace(
            &self.refs.dir,
            &format!("{id}.json"),
            &data,
            layout::FILE_MODE,
            false,
        )
    }

    /// Drop references of other boots and dead processes; returns how many.
    fn prune(&self, rec: &mut MountRecord) -> u32 {
        let before = rec.total();
        if rec.boot_id != self.refs.boot_id {
            rec.refs.clear();
        }
        let me = self.me;
        rec.refs
            .retain(|r| r.count > 0 && (r.owner == me || r.owner.is_alive()));
        before - rec.total()
    }

    /// The layer's live record (dead references pruned; empty if its mount
    /// is gone).
    fn live(&self, id: &str, target: &Path) -> Result<(MountRecord, bool)> {
        let mut rec = self.load(id)?.unwrap_or_default();
        self.prune(&mut rec);
        let mounted = self.refs.mounter.is_mounted(target)?;
        if !mounted && self.refs.mounter.private_namespace() {
            // Another live process's rootless mount, in its own namespace:
            // a second overlay on the same upper would corrupt it.
            if let Some(o) = rec
                .refs
                .iter()
                .find(|r| r.owner.pid != 0 && r.owner != self.me)
            {
                return Err(Error::LayerInUse {
                    id: id.to_owned(),
                    why: format!(
                        "mounted by pid {} in its own rootless namespace",
                        o.owner.pid
                    ),
                });
            }
        }
        if !mounted {
            rec.refs.clear();
        }
        rec.boot_id = self.refs.boot_id.clone();
        rec.target = target.to_owned();
        Ok((rec, mounted))
    }

    /// Take a reference to layer `id` mounted at `target`, mounting `spec`
    /// there if nothing is (a mount left by a dead process is reused): this
    /// process's, or with `persist` a [`Owner::PERSISTENT`] one. Returns the
    /// number of live references after.
    pub fn get(&self, id: &str, target: &Path, spec: &MountSpec, persist: bool) -> Result<u32> {
        let (mut rec, mounted) = self.live(id, target)?;
        if !mounted {
            self.refs.mounter.mount(spec, target)?;
            crate::crashpoint::hit();
        }
        let me = if persist { Owner::PERSISTENT } else { self.me };
        match rec.refs.iter_mut().find(|r| r.owner == me) {
            Some(r) => r.count += 1,
            None => rec.refs.push(Reference {
                owner: me,
                count: 1,
            }),
        }
        if let Err(e) = self.store(id, &rec) {
            if !mounted {
                let _ = self.refs.mounter.unmount(target);
            }
            return Err(e);
        }
        Ok(rec.total())
    }

    /// Give back one of this process's references to layer `id`, or when
    /// it has none a persistent one; the last reference unmounts `target`.
    /// Returns the live references left, or `None` when there was nothing
    /// to give back.
    pub fn put(&self, id: &str, target: &Path) -> Result<Option<u32>> {
        let (mut rec, mounted) = self.live(id, target)?;
        let me = self.me;
        let pos = rec
            .refs
            .iter()
            .position(|r| r.owner == me)
            .or_else(|| rec.refs.iter().position(|r| r.owner == Owner::PERSISTENT));
        let Some(pos) = pos else {
            // Nothing to give back: already unmounted, or unmounted behind
            // our back. Store the pruned record so stale counts disappear.
            self.store(id, &rec)?;
            return Ok(None);
        };
        rec.refs[pos].count -= 1;
        if rec.refs[pos].count == 0 {
            rec.refs.remove(pos);
        }
        if rec.refs.is_empty() && mounted {
            self.refs.mounter.unmount(target)?;
            crate::crashpoint::hit();
        }
        self.store(id, &rec)?;
        Ok(Some(rec.total()))
    }

    /// Live references to layer `id` (all processes).
    pub fn count(&self, id: &str) -> Result<u32> {
        let Some(mut rec) = self.load(id)? else {
            return Ok(0);
        };
        self.prune(&mut rec);
        if !self.refs.mounter.is_mounted(&rec.target)? {
            return Ok(0);
        }
        Ok(rec.total())
    }

    /// This process's references to layer `id`.
    pub fn own_count(&self, id: &str) -> Result<u32> {
        let Some(rec) = self.load(id)? else {
            return Ok(0);
        };
        if rec.boot_id != self.refs.boot_id || !self.refs.mounter.is_mounted(&rec.target)? {
            return Ok(0);
        }
        Ok(rec.count_of(&self.me))
    }

    /// Before deleting layer `id`: fail with [`Error::LayerInUse`] while a
    /// live process holds a reference; otherwise unmount what is still
    /// mounted at `target` (a mount that outlived its process) and forget
    /// the counts. Keep the transaction until the layer is gone, so no get
    /// slips in between.
    pub fn release(&self, id: &str, target: &Path) -> Result<()> {
        let (rec, mounted) = self.live(id, target)?;
        if !rec.refs.is_empty() {
            let by: Vec<String> = rec
                .refs
                .iter()
                .map(|r| match r.owner {
                    Owner::PERSISTENT => "a persistent mount (lamina umount)".to_owned(),
                    o => format!("pid {}", o.pid),
                })
                .collect();
            return Err(Error::LayerInUse {
                id: id.to_owned(),
                why: format!("mounted {} time(s) ({})", rec.total(), by.join(", ")),
            });
        }
        if mounted {
            self.refs.mounter.unmount(target)?;
        }
        self.store(id, &rec)
    }

    /// Bring every record in line with the processes and mounts that exist:
    /// what a store does when it is opened.
    pub fn reconcile(&self) -> Result<Reconciled> {
        let mut out = Reconciled::default();
        let points = self.refs.mounter.mount_points()?;
        let dir = &self.refs.dir;
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(dir).at("readdir", dir)? {
            let name = entry.at("readdir", dir)?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                if ids::is_valid_id(id) {
                    names.push(id.to_owned());
                }
            }
        }
        names.sort_unstable();
        for id in names {
            let Some(mut rec) = self.load(&id)? else {
                // Unreadable: nothing in it can be trusted.
                self.store(&id, &MountRecord::default())?;
                continue;
            };
            out.dead_refs += self.prune(&mut rec);
            let foreign = self.refs.mounter.private_namespace()
                && rec
                    .refs
                    .iter()
                    .any(|r| r.owner.pid != 0 && r.owner != self.me);
            if foreign {
                // Mounted in another live process's rootless namespace.
            } else if !self.refs.mounter.is_mounted_in(&points, &rec.target) {
                if !rec.refs.is_empty() {
                    out.vanished.push(id.clone());
                }
                rec.refs.clear();
            } else if rec.refs.is_empty() {
                // Mounted by processes that are gone: a crashed writer must
                // leave no mount behind once the store is opened again.
                self.refs.mounter.unmount(&rec.target)?;
                out.orphaned.push(id.clone());
            }
            rec.boot_id = self.refs.boot_id.clone();
            self.store(&id, &rec)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mounter::{MountCall, RecordingMounter};
    use std::sync::Arc;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn spec() -> MountSpec {
        MountSpec::ReadOnlyBind {
            source: "/src".into(),
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        m: Arc<RecordingMounter>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("mounts");
            Fixture {
                _tmp: tmp,
                dir,
                m: Arc::new(RecordingMounter::new()),
            }
        }
        fn refs(&self) -> MountRefs<Arc<RecordingMounter>> {
            MountRefs::open(&self.dir, self.m.clone()).unwrap()
        }
    }

    #[test]
    fn counts_mount_once_and_unmount_at_zero() {
        let f = Fixture::new();
        let r = f.refs();
        let (a, t) = (id(1), PathBuf::from("/t/a"));
        assert_eq!(r.get(&a, &t, &spec(), false).unwrap(), 1);
        assert_eq!(r.get(&a, &t, &spec(), false).unwrap(), 2);
        assert_eq!(f.m.mount_calls(), 1);
        assert_eq!(r.count(&a).unwrap(), 2);
        assert_eq!(r.transaction().unwrap().own_count(&a).unwrap(), 2);
        assert_eq!(r.put(&a, &t).unwrap(), Some(1));
        assert!(f.m.is_mounted(&t).unwrap());
        assert_eq!(r.put(&a, &t).unwrap(), Some(0));
        assert!(!f.m.is_mounted(&t).unwrap());
        assert!(!f.dir.join(format!("{a}.json")).exists());
        assert_eq!(r.put(&a, &t).unwrap(), None);
        assert_eq!(
            f.m.calls(),
            vec![
                MountCall::Mount(spec(), t.clone()),
                MountCall::Unmount(t.clone())
            ]
        );
        assert!(r.get("../x", &t, &spec(), false).is_err());
    }

    #[test]
    fn processes_share_a_mount() {
        let f = Fixture::new();
        let me = f.refs();
        // Our parent process is alive for as long as this test runs.
        let parent = Owner::of(rustix::process::getppid().unwrap().as_raw_nonzero().get() as u32)
            .unwrap()
            .unwrap();
        let other = f.refs().with_owner(parent);
        let (a, t) = (id(2), PathBuf::from("/t/b"));
        me.get(&a, &t, &spec(), false).unwrap();
        assert_eq!(other.get(&a, &t, &spec(), false).unwrap(), 2);
        assert_eq!(f.m.mount_calls(), 1);
        match me.transaction().unwrap().release(&a, &t) {
            Err(e @ Error::LayerInUse { .. }) => {
                assert!(e.to_string().contains(&parent.pid.to_string()), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(me.put(&a, &t).unwrap(), Some(1));
        assert!(f.m.is_mounted(&t).unwrap());
        assert_eq!(me.put(&a, &t).unwrap(), None);
        assert_eq!(other.put(&a, &t).unwrap(), Some(0));
        assert!(!f.m.is_mounted(&t).unwrap());
    }

    #[test]
    fn owners_of_exited_processes_are_dead() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let running = Owner::of(pid).unwrap();
        child.wait().unwrap();
        assert_eq!(Owner::of(pid).unwrap(), None);
        if let Some(o) = running {
            assert!(!o.is_alive());
        }
    }

    #[test]
    fn dead_process_never_blocks_delete() {
        let f = Fixture::new();
        let me = f.refs();
        let ghost = Owner {
            pid: me.owner().unwrap().pid,
            start_time: me.owner().unwrap().start_time + 1,
        };
        assert!(!ghost.is_alive());
        let crashed = f.refs().with_owner(ghost);
        let (a, t) = (id(3), PathBuf::from("/t/c"));
        crashed.get(&a, &t, &spec(), false).unwrap();
        crashed.get(&a, &t, &spec(), false).unwrap();
        assert_eq!(me.count(&a).unwrap(), 0);
        let txn = me.transaction().unwrap();
        txn.release(&a, &t).unwrap();
        assert!(!f.m.is_mounted(&t).unwrap());
        assert!(!f.dir.join(format!("{a}.json")).exists());
    }

    #[test]
    fn leftover_mount_is_reused_not_stacked() {
        let f = Fixture::new();
        let r = f.refs();
        let (a, t) = (id(4), PathBuf::from("/t/d"));
        f.m.add_mount(&t);
        assert_eq!(r.get(&a, &t, &spec(), false).unwrap(), 1);
        assert_eq!(f.m.mount_calls(), 0);
        assert_eq!(r.put(&a, &t).unwrap(), Some(0));
        assert!(!f.m.is_mounted(&t).unwrap());
    }

    #[test]
    fn reconcile_drops_dead_refs_and_vanished_mounts() {
        let f = Fixture::new();
        let r = f.refs();
        let ghost = f.refs().with_owner(Owner {
            pid: r.owner().unwrap().pid,
            start_time: 0,
        });
        let (a, ta) = (id(5), PathBuf::from("/t/e"));
        let (b, tb) = (id(6), PathBuf::from("/t/f"));
        let (c, tc) = (id(7), PathBuf::from("/t/g"));
        r.get(&a, &ta, &spec(), false).unwrap();
        ghost.get(&b, &tb, &spec(), false).unwrap();
        r.get(&c, &tc, &spec(), false).unwrap();
        f.m.drop_mount(&tc);
        std::fs::write(f.dir.join(format!("{}.json", id(8))), "{torn").unwrap();
        let got = r.transaction().unwrap().reconcile().unwrap();
        assert_eq!(got.dead_refs, 1);
        assert_eq!(got.vanished, vec![c.clone()]);
        assert_eq!(got.orphaned, vec![b.clone()]);
        assert_eq!(r.count(&a).unwrap(), 1);
        assert!(!f.dir.join(format!("{b}.json")).exists());
        assert!(!f.dir.join(format!("{c}.json")).exists());
        assert!(!f.dir.join(format!("{}.json", id(8))).exists());
        // The vanished mount is mounted again on the next get.
        r.get(&c, &tc, &spec(), false).unwrap();
        assert!(f.m.is_mounted(&tc).unwrap());
    }

    #[test]
    fn other_boot_is_void_and_failed_mount_records_nothing() {
        let f = Fixture::new();
        let r = f.refs();
        let (a, t) = (id(9), PathBuf::from("/t/h"));
        f.m.add_mount(&t);
        let stale = MountRecord {
            boot_id: "another-boot".into(),
            target: t.clone(),
            refs: vec![Reference {
                owner: r.owner().unwrap(),
                count: 5,
            }],
        };
        std::fs::create_dir_all(&f.dir).unwrap();
        std::fs::write(
            f.dir.join(format!("{a}.json")),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        assert_eq!(r.count(&a).unwrap(), 0);
        r.transaction().unwrap().release(&a, &t).unwrap();

        f.m.fail_next_mount(rustix::io::Errno::PERM);
        assert!(r.get(&a, &t, &spec(), false).is_err());
        assert_eq!(r.count(&a).unwrap(), 0);
        assert!(!f.dir.join(format!("{a}.json")).exists());
    }

    #[test]
    fn threads_never_mount_twice() {
        let f = Fixture::new();
        let r = Arc::new(f.refs());
        let (a, t) = (id(10), PathBuf::from("/t/i"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (r, a, t) = (r.clone(), a.clone(), t.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        r.get(&a, &t, &spec(), false).unwrap();
                        std::thread::yield_now();
                        r.put(&a, &t).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(r.count(&a).unwrap(), 0);
        assert!(!f.m.is_mounted(&t).unwrap());
        let calls = f.m.calls();
        let mounts = calls
            .iter()
            .filter(|c| matches!(c, MountCall::Mount(..)))
            .count();
        let unmounts = calls.len() - mounts;
        assert_eq!(mounts, unmounts);
        assert!(mounts >= 1);
    }

    #[test]
    fn no_mounts_counts_live_only_and_never_vanish() {
        let f = Fixture::new();
        let r = MountRefs::open(&f.dir, crate::driver::mounter::NoMounts).unwrap();
        let ghost = MountRefs::open(&f.dir, crate::driver::mounter::NoMounts)
            .unwrap()
            .with_owner(Owner {
                pid: r.owner().unwrap().pid,
                start_time: 0,
            });
        let (a, ta) = (id(11), PathBuf::from("/t/j"));
        let (b, tb) = (id(12), PathBuf::from("/t/k"));
        assert_eq!(r.get(&a, &ta, &MountSpec::Itself, false).unwrap(), 1);
        ghost.get(&b, &tb, &MountSpec::Itself, false).unwrap();
        // Absent from any mount table, a live reference stays.
        let got = r.transaction().unwrap().reconcile().unwrap();
        assert_eq!(got.dead_refs, 1);
        assert!(got.vanished.is_empty());
        assert_eq!(r.count(&a).unwrap(), 1);
        assert!(matches!(
            r.transaction().unwrap().release(&a, &ta),
            Err(Error::LayerInUse { .. })
        ));
        assert_eq!(r.count(&b).unwrap(), 0);
        assert!(!f.dir.join(format!("{b}.json")).exists());
        assert_eq!(r.put(&a, &ta).unwrap(), Some(0));
        r.transaction().unwrap().release(&a, &ta).unwrap();
    }
}
