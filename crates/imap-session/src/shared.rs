//! The folders open in one worker, shared by its sessions.
//!
//! An imapd worker serves many sessions in one single-threaded event loop. Each session
//! that selects a folder would otherwise hold its own [`Folder`] (every message's entry
//! and cache); here the sessions of a worker share one per folder directory and keep only
//! their own small view (the UIDs the client knows, its `\Recent` UIDs, the MODSEQ it
//! has reported). See [`crate::session`] for how a session works out its own updates
//! from the shared folder.
//!
//! Syncing a folder with its directory happens at most once per turn of the event loop
//! ([`SharedFolders::tick`]), however many sessions ask; a folder the worker itself changed
//! (APPEND, COPY) is synced again at the next request.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use petrel_mailstore::{Folder, Store, StoreError};

/// How many folders that no session has selected are kept, for a quick re-SELECT (the
/// least recently used go first).
pub const KEEP_UNSELECTED: usize = 8;

/// The folders open in one worker, shared by its sessions (single-threaded: `Rc`, not
/// `Send`). Keyed by folder directory.
pub struct SharedFolders {
    /// The event loop's turn ([`SharedFolders::tick`]); each folder remembers the turn of
    /// its last sync.
    turn: Rc<Cell<u64>>,
    /// A counter for least-recently-used order.
    clock: Cell<u64>,
    held: RefCell<HashMap<PathBuf, Rc<Shared>>>,
    /// One session's own set ([`crate::session::Session::new`]): an unselected folder is
    /// kept only while it has `\Recent` messages no session has claimed, so that the
    /// session's own next SELECT of it still gets them (memory as when each session held
    /// only its selected folder).
    private: bool,
}

impl fmt::Debug for SharedFolders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFolders")
            .field("turn", &self.turn.get())
            .field("held", &self.held.try_borrow().map(|h| h.len()).ok())
            .finish()
    }
}

impl SharedFolders {
    /// An empty set.
    pub fn new() -> Rc<SharedFolders> {
        Rc::new(SharedFolders::make(false))
    }

    /// A set for one session alone.
    pub(crate) fn private() -> Rc<SharedFolders> {
        Rc::new(SharedFolders::make(true))
    }

    fn make(private: bool) -> SharedFolders {
        SharedFolders {
            turn: Rc::new(Cell::new(1)),
            clock: Cell::new(0),
            held: RefCell::new(HashMap::new()),
            private,
        }
    }

    /// Called by the event loop once per loop turn: folder syncs from disk happen at most
    /// once per turn per folder (a second `sync` in the same turn is a no-op), so 10,000
    /// idle sessions woken by one delivery cause one directory scan, not 10,000.
    pub fn tick(&self) {
        self.turn.set(self.turn.get().wrapping_add(1));
    }

    /// Folders currently held (selected by a session or kept for a quick re-SELECT).
    pub fn len(&self) -> usize {
        self.trim();
        self.held.try_borrow().map_or(0, |h| h.len())
    }

    /// Whether no folder is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stamp(&self) -> u64 {
        let c = self.clock.get().wrapping_add(1);
        self.clock.set(c);
        c
    }

    /// The shared folder `name` of `store`, opened (and synced) when not held yet. A held
    /// folder is not synced here: the caller syncs it when it needs it fresh.
    pub(crate) fn open(&self, store: &Store, name: &str) -> Result<Rc<Shared>, StoreError> {
        let dir = store.folder_dir(name)?;
        if !dir.join("cur").is_dir() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        let found = self.held.borrow().get(&dir).cloned();
        if let Some(sh) = found {
            sh.last_used.set(self.stamp());
            return Ok(sh);
        }
        let folder = store.folder(name)?;
        let sh = Rc::new(Shared {
            dir: dir.clone(),
            folder: RefCell::new(folder),
            turn: self.turn.clone(),
            synced_turn: Cell::new(self.turn.get()),
            dirty: Cell::new(false),
            last_used: Cell::new(self.stamp()),
            uids: RefCell::new(None),
        });
        self.held.borrow_mut().insert(dir, sh.clone());
        self.trim();
        Ok(sh)
    }

    /// A session is done with a folder (UNSELECT, CLOSE, another SELECT, logout): it stays
    /// held for a quick re-SELECT while it is among the [`KEEP_UNSELECTED`] most recently
    /// used unselected ones.
    pub(crate) fn release(&self, sh: Rc<Shared>) {
        sh.last_used.set(self.stamp());
        drop(sh);
        self.trim();
    }

    /// Drops the unselected folders beyond [`KEEP_UNSELECTED`], least recently used first
    /// (in a private set, also those without unclaimed `\Recent` messages).
    pub(crate) fn trim(&self) {
        let dropped: Vec<Rc<Shared>> = {
            let Ok(mut held) = self.held.try_borrow_mut() else {
                return;
            };
            if held.len() <= KEEP_UNSELECTED && !self.private {
                return;
            }
            let mut idle: Vec<(u64, PathBuf)> = Vec::new();
            let mut gone: Vec<PathBuf> = Vec::new();
            for (d, s) in held.iter() {
                if Rc::strong_count(s) != 1 {
                    continue;
                }
                if self.private && !s.has_unclaimed_recent() {
                    gone.push(d.clone());
                } else {
                    idle.push((s.last_used.get(), d.clone()));
                }
            }
            if idle.len() > KEEP_UNSELECTED {
                idle.sort_unstable();
                let n = idle.len() - KEEP_UNSELECTED;
                gone.extend(idle.into_iter().take(n).map(|(_, d)| d));
            }
            gone.iter().filter_map(|d| held.remove(d)).collect()
        };
        // Dropping a folder may save its index: done with the registry released.
        drop(dropped);
    }

    /// Forgets the unselected folders in `dir` and below it (`dir.child…`): after DELETE or
    /// RENAME, the directory they were opened on is gone or is another folder.
    pub(crate) fn forget(&self, dir: &Path) {
        let dropped: Vec<Rc<Shared>> = {
            let Ok(mut held) = self.held.try_borrow_mut() else {
                return;
            };
            let prefix = format!("{}.", dir.to_string_lossy());
            let gone: Vec<PathBuf> = held
                .iter()
                .filter(|(d, s)| {
                    Rc::strong_count(s) == 1
                        && (d.as_path() == dir || d.to_string_lossy().starts_with(&prefix))
                })
                .map(|(d, _)| d.clone())
                .collect();
            gone.iter().filter_map(|d| held.remove(d)).collect()
        };
        drop(dropped);
    }

    /// Marks the held folder in `dir` (if any) as changed by this worker: its next sync
    /// happens even within the same turn.
    pub(crate) fn mark_dirty(&self, dir: &Path) {
        let found = self
            .held
            .try_borrow()
            .ok()
            .and_then(|h| h.get(dir).cloned());
        if let Some(sh) = found {
            sh.dirty.set(true);
        }
    }
}

/// The identity of a folder's UID list: it changes whenever messages come or go.
type SnapKey = (u32, u64, usize, u32);

/// One shared folder.
pub(crate) struct Shared {
    /// The folder's directory (the registry's key).
    pub(crate) dir: PathBuf,
    folder: RefCell<Folder>,
    turn: Rc<Cell<u64>>,
    synced_turn: Cell<u64>,
    /// Changed by this worker (APPEND, COPY into it) since its last sync.
    dirty: Cell<bool>,
    last_used: Cell<u64>,
    /// The folder's UIDs, shared by the sessions whose view is up to date.
    uids: RefCell<Option<(SnapKey, Rc<Vec<u32>>)>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("dir", &self.dir).finish()
    }
}

impl Shared {
    /// The folder, for the length of one operation. Never held across a call that could
    /// come back to this folder through the registry; a second borrow is an error (the
    /// command fails), not a panic.
    pub(crate) fn folder(&self) -> io::Result<RefMut<'_, Folder>> {
        self.folder
            .try_borrow_mut()
            .map_err(|_| io::Error::other("folder already in use"))
    }

    /// Syncs `folder` (this one's, borrowed by the caller) with its directory, unless it
    /// was synced in this turn and not changed by the worker since. `force` syncs anyway
    /// (a file was not found where the folder said).
    pub(crate) fn sync(&self, folder: &mut Folder, force: bool) -> io::Result<()> {
        let turn = self.turn.get();
        if !force && !self.dirty.get() && self.synced_turn.get() == turn {
            return Ok(());
        }
        folder.sync()?;
        self.synced_turn.set(turn);
        self.dirty.set(false);
        Ok(())
    }

    /// Whether the folder has `\Recent` messages no session has claimed (true when it
    /// cannot tell). Syncs first when the worker added messages (APPEND, COPY).
    fn has_unclaimed_recent(&self) -> bool {
        let Ok(mut f) = self.folder.try_borrow_mut() else {
            return true;
        };
        if self.dirty.get() && self.sync(&mut f, false).is_err() {
            return true;
        }
        let any = f.unclaimed_recent(0).next().is_some();
        any
    }

    /// The folder was changed by this worker (APPEND, COPY into it).
    pub(crate) fn mark_dirty(&self) {
        self.dirty.set(true);
    }

    /// The folder's UIDs in sequence order, as one list shared by every session whose view
    /// is up to date (rebuilt when messages came or went).
    pub(crate) fn uid_snapshot(&self, folder: &Folder) -> Rc<Vec<u32>> {
        let key: SnapKey = (
            folder.uidvalidity(),
            folder.expunge_generation(),
            folder.len(),
            folder
                .by_seq(u32::try_from(folder.len()).unwrap_or(u32::MAX))
                .map_or(0, |m| m.uid),
        );
        if let Ok(c) = self.uids.try_borrow() {
            if let Some((k, v)) = c.as_ref() {
                if *k == key {
                    return v.clone();
                }
            }
        }
        let v = Rc::new(folder.messages().map(|m| m.uid).collect::<Vec<u32>>());
        if let Ok(mut c) = self.uids.try_borrow_mut() {
            *c = Some((key, v.clone()));
        }
        v
    }
}
