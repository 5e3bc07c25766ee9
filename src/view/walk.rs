//! A walk of a merged view: every entry at and below a path, parents
//! before children, siblings sorted by name bytes (the order of
//! [`crate::archive::changes`] and of a diff's tar).
//!
//! Iterative, with an explicit stack, so any depth costs heap. Each
//! directory is listed whole when the walk enters it; the fds of the
//! directories on the way down (one per stack directory that makes each)
//! are kept up to [`MAX_FDS`], the shallowest closed first, and a closed
//! directory is opened again from the view's root by its path when the walk
//! comes back to it and needs it. Symlinks are entries, never followed.
//!
//! The second and later names of a regular file's inode are reported as
//! hard links to the first, as a tar writes them; the memory this takes
//! grows with the files that have more than one link only.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::entry::{Entry, EntryKind};
use super::stack::{join, Found, MergedDir};
use super::View;
use crate::error::Result;

/// The most directory fds a walk keeps open.
pub const MAX_FDS: usize = 256;

struct Frame {
    path: Vec<u8>,
    dir: Option<MergedDir>,
    entries: Vec<(OsString, Found)>,
    next: usize,
}

/// An iterator over a merged view's entries; see the module docs.
pub struct Walk {
    view: Arc<View>,
    first: Option<Entry>,
    frames: Vec<Frame>,
    open_fds: usize,
    links: HashMap<(u64, u64), Vec<u8>>,
    done: bool,
}

impl std::fmt::Debug for Walk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk")
            .field("depth", &self.frames.len())
            .finish()
    }
}

impl Walk {
    pub(crate) fn new(view: Arc<View>, path: &[u8]) -> Result<Walk> {
        let loc = view.stack.resolve(path, true)?;
        let mut first = view.entry_of(&loc)?;
        let mut w = Walk {
            view: view.clone(),
            first: None,
            frames: Vec::new(),
            open_fds: 0,
            links: HashMap::new(),
            done: false,
        };
        w.link(&mut first, &loc.found);
        if loc.found.is_dir() {
            let at = loc.path.clone();
            let dir = view.stack.dir_of(loc)?;
            w.push(at, dir)?;
        }
        w.first = Some(first);
        Ok(w)
    }

    /// A second or later name of a regular file's inode becomes a hard
    /// link to the first.
    fn link(&mut self, e: &mut Entry, found: &Found) {
        let st = &found.stat;
        if e.kind != EntryKind::File || st.st_nlink < 2 {
            return;
        }
        let path = e.path.as_os_str().as_bytes();
        match self.links.get(&(st.st_dev, st.st_ino)) {
            Some(first) => {
                e.kind = EntryKind::Hardlink;
                e.linkname = Some(PathBuf::from(OsStr::from_bytes(first)));
            }
            None => {
                self.links.insert((st.st_dev, st.st_ino), path.to_vec());
            }
        }
    }

    /// Enter the directory `dir` at `path`: list it, and keep its fds
    /// within the budget.
    fn push(&mut self, path: Vec<u8>, dir: MergedDir) -> Result<()> {
        let entries = self.view.stack.list(&dir, &path)?;
        self.open_fds += dir.fds();
        self.frames.push(Frame {
            path,
            dir: Some(dir),
            entries,
            next: 0,
        });
        // Close the shallowest directories first; the one just entered
        // stays open.
        let last = self.frames.len() - 1;
        for f in &mut self.frames[..last] {
            if self.open_fds <= MAX_FDS {
                break;
            }
            if let Some(d) = f.dir.take() {
                self.open_fds -= d.fds();
            }
        }
        Ok(())
    }

    /// The top frame's directory, opened again if it was closed.
    fn top_dir(&mut self) -> Result<&MergedDir> {
        let i = self.frames.len() - 1;
        if self.frames[i].dir.is_none() {
            let path = self.frames[i].path.clone();
            let loc = self.view.stack.resolve(&path, false)?;
            let dir = self.view.stack.dir_of(loc)?;
            self.open_fds += dir.fds();
            self.frames[i].dir = Some(dir);
        }
        Ok(self.frames[i].dir.as_ref().expect("just opened"))
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(top) = self.frames.last_mut() else {
                return Ok(None);
            };
            if top.next == top.entries.len() {
                let f = self.frames.pop().expect("a frame");
                if let Some(d) = f.dir {
                    self.open_fds -= d.fds();
                }
                continue;
            }
            let (name, found) = top.entries[top.next].clone();
            top.next += 1;
            let path = join(&top.path, name.as_bytes());
            let view = self.view.clone();
            let dir = self.top_dir()?;
            let st = view.stack.shown_stat(Some((dir, &name)), &found, &path)?;
            let mut e = Entry::from_stat(&path, &st);
            if found.is_symlink() {
                let t = view.stack.readlink(dir, &name, &found, &path)?;
                e.linkname = Some(PathBuf::from(OsString::from_vec(t)));
            }
            let child = if found.is_dir() {
                Some(view.stack.open_dir(dir, &name, &found, &path)?)
            } else {
                None
            };
            e.layer = view.provider(&path)?;
            self.link(&mut e, &found);
            if let Some(child) = child {
                self.push(path, child)?;
            }
            return Ok(Some(e));
        }
    }
}

use std::os::unix::ffi::OsStringExt;

impl Iterator for Walk {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.first.take() {
            return Some(Ok(e));
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                // One error ends the walk.
                self.done = true;
                self.frames.clear();
                Some(Err(e))
            }
        }
    }
}
