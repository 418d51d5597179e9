//! One authenticated IMAP session over a store.
//!
//! A [`Session`] is what is left of an IMAP connection once the user has logged in: the
//! authenticated state (no mailbox) and the selected state (one folder open). It takes
//! parsed commands and answers with the bytes to send; sockets, TLS, literals and IDLE's
//! timers are the program's business.
//!
//! # Shared folders, private views
//!
//! The sessions of one worker share one in-memory [`Folder`] per folder directory
//! ([`SharedFolders`]; [`Session::new`] makes a private one). A session keeps only its own
//! view of the selected folder, and works out its own updates from it, since a folder's
//! [`Folder::sync`] reports changes to whichever session happens to call it:
//!
//! - `known`: the UIDs the client has been told about, in sequence order. Sequence numbers
//!   in commands and responses are positions in this list, not in the folder. While the
//!   view is up to date it is the folder's own UID list, shared by every such session
//!   (copied only while the session holds changes it may not announce yet).
//! - Expunges: the folder counts expunges ([`Folder::expunge_generation`]); when the count
//!   moved, the session looks for its UIDs that are gone. They stay in `known` as "ghosts"
//!   (FETCH skips them, STORE cannot change them) until an EXPUNGE response may be sent —
//!   never while answering FETCH, STORE or SEARCH (RFC 3501 §7.4.1).
//! - New messages: the folder's UIDs above the last known one join `known` when their
//!   `EXISTS` is sent, which is allowed at any time.
//! - Flag changes by others (other sessions of the worker, other processes renaming files):
//!   the session remembers the highest MODSEQ it has reported and asks the folder's change
//!   log for what changed since ([`Folder::changed_since`]); its own changes (answered by
//!   STORE and FETCH themselves) are left out.
//! - `\Recent`: a message moved out of `new/`, appended or copied is `\Recent` in exactly
//!   one session, the first to learn of it: SELECT claims the folder's unclaimed ones, and
//!   a selected session claims the new ones it announces ([`Folder::claim_recent`]).
//!   EXAMINE shows them without claiming (RFC 3501 §6.3.2: EXAMINE must not make messages
//!   lose `\Recent`); STATUS, APPEND and COPY to another folder leave them unclaimed.
//!
//! Every command but FETCH, STORE and SEARCH ends with the full updates (EXPUNGE, EXISTS,
//! RECENT, FETCH FLAGS) when a mailbox is selected; those three get updates without
//! EXPUNGE. [`Session::updates`] gives the full updates on demand (during IDLE).
//!
//! # Streamed FETCH answers
//!
//! By default a command's whole answer is built before [`Session::handle`] returns. With
//! [`Session::set_streaming`], a FETCH answer comes in pieces of about a given size: the
//! session keeps the command's state (its tag, the `(seq, uid)` pairs it names, the items,
//! how far it got) and [`Session::resume`] gives the next piece, so that the program can
//! send one piece while the next is made, and a connection never holds more than about
//! one piece. The view does not change between pieces; a message expunged by another
//! session meanwhile is skipped like any ghost, and its EXPUNGE waits for a later command.

mod fetch;
mod list;
mod uidset;

use std::io::{self, Write as _};
use std::path::Path;
use std::rc::Rc;

use petrel_imap_proto::{
    astring, encode_mailbox, Command, CommandKind, Flag, SearchKey, SearchReturn, SeqNum,
    SequenceSet, StatusItem, BADCHARSET,
};
use petrel_mailstore::{is_inbox, FlagSet, Folder, Store, StoreError};

use crate::shared::Shared;
pub use crate::shared::SharedFolders;
use uidset::UidRanges;

/// The capabilities announced after login.
const CAPABILITIES: &str = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE \
                            UNSELECT CHILDREN SPECIAL-USE CONDSTORE ESEARCH";

/// What [`Session::handle`] gives back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The bytes to send: untagged responses, then the tagged completion (or `+ idling`).
    pub out: Vec<u8>,
    /// The session is over (LOGOUT, or the selected mailbox became unusable): close the
    /// connection after sending `out`.
    pub logout: bool,
    /// IDLE started: call [`Session::updates`] when the mailbox may have changed, until the
    /// client's `DONE` (handed to [`Session::handle`] as [`CommandKind::Done`]).
    pub idling: bool,
    /// A streamed FETCH answer ([`Session::set_streaming`]) is not complete: `out` is one
    /// piece of it; send it and call [`Session::resume`] for the next one (before the
    /// client's next command is handled).
    pub more: bool,
}

/// How a command ends (the tagged response).
#[derive(Debug)]
enum Reply {
    /// `tag OK text`.
    Ok(String),
    /// `tag NO text`.
    No(String),
    /// `tag BAD text`.
    Bad(String),
    /// No tagged response (IDLE has started).
    Nothing,
    /// No tagged response yet: the FETCH answer continues in [`Session::resume`].
    More,
}

fn ok(s: &str) -> Reply {
    Reply::Ok(s.to_string())
}

fn no(s: &str) -> Reply {
    Reply::No(s.to_string())
}

fn bad(s: &str) -> Reply {
    Reply::Bad(s.to_string())
}

/// The selected mailbox: this session's view of a shared folder.
#[derive(Debug)]
struct Selected {
    /// The store's (modified UTF-7) name.
    name: String,
    shared: Rc<Shared>,
    read_only: bool,
    /// The UIDVALIDITY the client was given.
    uidvalidity: u32,
    /// The UIDs the client knows, in sequence order (ascending); the folder's shared list
    /// while the view is up to date.
    known: Rc<Vec<u32>>,
    /// `known` holds UIDs the folder no longer has (EXPUNGE not sent yet).
    ghosts: bool,
    /// The folder's expunge generation `known` was last checked against.
    expunge_gen: u64,
    /// Every flag change up to this MODSEQ has been reported (or was the client's own).
    modseq: u64,
    /// MODSEQs of this session's own flag changes since `modseq` (ascending): answered by
    /// its STORE or FETCH, not to be announced again.
    own: Vec<u64>,
    /// This session's `\Recent` messages.
    recent: UidRanges,
}

impl Selected {
    /// The client's sequence number of a UID.
    fn seq_of(&self, uid: u32) -> Option<u32> {
        self.known
            .binary_search(&uid)
            .ok()
            .and_then(|i| u32::try_from(i + 1).ok())
    }

    /// The `(seq, uid)` pairs a set names, in the client's view; `Err` for a sequence
    /// number the client cannot know (RFC 3501: BAD).
    fn targets(&self, set: &SequenceSet, uid: bool) -> Result<Vec<(u32, u32)>, String> {
        let mut v = Vec::new();
        if uid {
            let max = self.known.last().copied().unwrap_or(0);
            for (lo, hi) in set.ranges(max) {
                let start = self.known.partition_point(|&u| u < lo);
                for (i, &u) in self.known[start..].iter().enumerate() {
                    if u > hi {
                        break;
                    }
                    v.push((u32::try_from(start + i + 1).unwrap_or(u32::MAX), u));
                }
            }
        } else {
            let max = u32::try_from(self.known.len()).unwrap_or(u32::MAX);
            let invalid = set.0.iter().any(|r| {
                [r.start, r.end].iter().any(|n| match n {
                    SeqNum::Value(v) => *v > max,
                    SeqNum::Last => max == 0,
                })
            });
            if invalid {
                return Err("Invalid message sequence number".to_string());
            }
            for seq in set.iter(max) {
                v.push((seq, self.known[seq as usize - 1]));
            }
        }
        Ok(v)
    }

    /// This session changed a message's flags: MODSEQ `before` became `after`.
    fn own_change(&mut self, before: u64, after: u64) {
        if after != before && after > self.modseq {
            self.own.push(after);
        }
    }

    /// The heap memory this view holds for itself alone (a UID list shared with the
    /// folder or other sessions counts nothing).
    fn heap_bytes(&self) -> usize {
        let known = if Rc::strong_count(&self.known) == 1 {
            // The list and the Rc's two counters.
            self.known.capacity() * std::mem::size_of::<u32>() + 2 * std::mem::size_of::<usize>()
        } else {
            0
        };
        self.name.capacity()
            + known
            + self.own.capacity() * std::mem::size_of::<u64>()
            + self.recent.heap_bytes()
    }
}

/// One logged-in IMAP session.
#[derive(Debug)]
pub struct Session {
    store: Store,
    user: String,
    /// The folders shared with the other sessions of this worker.
    folders: Rc<SharedFolders>,
    /// `folders` is this session's own ([`Session::new`]): every command and every
    /// [`Session::updates`] is a turn of its own (a sync from disk each time).
    own_turns: bool,
    selected: Option<Selected>,
    /// CONDSTORE is enabled (ENABLE, SELECT (CONDSTORE), or any CONDSTORE-using command).
    condstore: bool,
    /// The tag of the IDLE command in progress.
    idle_tag: Option<String>,
    /// The selected mailbox's UIDVALIDITY changed: the connection must end.
    dead: bool,
    /// FETCH answers come in pieces of about this many bytes ([`Session::set_streaming`]).
    chunk: Option<usize>,
    /// The FETCH whose answer is being streamed: the rest comes from [`Session::resume`].
    fetching: Option<fetch::FetchJob>,
    /// What this session did, for the logout line.
    counts: Counts,
}

/// The store's name for a mailbox name from a command (decoded UTF-8): modified UTF-7,
/// INBOX in upper case.
fn store_name(name: &str) -> String {
    if is_inbox(name) {
        "INBOX".to_string()
    } else {
        encode_mailbox(name)
    }
}

/// The tagged text for a store error.
fn store_error(e: StoreError) -> Reply {
    match e {
        StoreError::NotFound(_) => no("[NONEXISTENT] Mailbox doesn't exist"),
        StoreError::AlreadyExists(_) => no("[ALREADYEXISTS] Mailbox already exists"),
        StoreError::BadName(_) => no("[CANNOT] Invalid mailbox name"),
        StoreError::Refused(r) => Reply::No(format!("[CANNOT] {r}")),
        StoreError::Io(e) => io_error(&e),
    }
}

/// The tagged text for an I/O error.
fn io_error(e: &io::Error) -> Reply {
    if e.kind() == io::ErrorKind::InvalidInput {
        // The only one the store makes: a folder's 26 keywords are taken.
        return Reply::No(format!("[LIMIT] {e}"));
    }
    no("[SERVERBUG] Internal error occurred")
}

/// What a session did, for its logout line (as Dovecot's `Logged out ... expunged=N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages whose contents were fetched (a message fetched twice counts twice).
    pub fetched: u64,
    /// Messages this session expunged (EXPUNGE, UID EXPUNGE, CLOSE, MOVE).
    pub expunged: u64,
    /// Messages this session added (APPEND, COPY, MOVE into a folder).
    pub appended: u64,
}

/// A UID list as a compact set: runs of consecutive numbers as `a:b`, in the given order.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j].wrapping_add(1) {
            j += 1;
        }
        if !s.is_empty() {
            s.push(',');
        }
        if j > i {
            s.push_str(&format!("{}:{}", uids[i], uids[j]));
        } else {
            s.push_str(&uids[i].to_string());
        }
        i = j + 1;
    }
    s
}

/// The IMAP flag list of a message (with `\Recent`).
pub(crate) fn flag_list(flags: &FlagSet, recent: bool) -> String {
    let mut v = flags.to_imap();
    if recent {
        v.push("\\Recent".to_string());
    }
    format!("({})", v.join(" "))
}

/// The flags STORE leaves: `cur` changed by `req` in `mode`.
pub(crate) fn apply_store(
    mode: petrel_imap_proto::StoreMode,
    cur: &FlagSet,
    req: &FlagSet,
) -> FlagSet {
    use petrel_imap_proto::StoreMode;
    match mode {
        StoreMode::Replace => FlagSet {
            passed: cur.passed,
            ..req.clone()
        },
        StoreMode::Add => {
            let mut f = cur.clone();
            f.seen |= req.seen;
            f.answered |= req.answered;
            f.flagged |= req.flagged;
            f.deleted |= req.deleted;
            f.draft |= req.draft;
            for k in &req.keywords {
                if !f.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    f.keywords.insert(k.clone());
                }
            }
            f
        }
        StoreMode::Remove => {
            let mut f = cur.clone();
            f.seen &= !req.seen;
            f.answered &= !req.answered;
            f.flagged &= !req.flagged;
            f.deleted &= !req.deleted;
            f.draft &= !req.draft;
            f.keywords
                .retain(|k| !req.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)));
            f
        }
    }
}

/// Whether a search key uses MODSEQ (the SEARCH response then carries `(MODSEQ n)`).
fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::And(v) => v.iter().any(uses_modseq),
        _ => false,
    }
}

/// Syncs the selected folder (at most once per turn, unless `force`) and writes this
/// session's untagged updates: EXPUNGE (when `allow_expunge`), FETCH FLAGS for changes by
/// others, EXISTS and RECENT for new messages. `folder` is `sel`'s, borrowed by the
/// caller. Returns `false` when the UIDVALIDITY changed (the session must end; a BYE has
/// been written).
fn resync(
    sel: &mut Selected,
    folder: &mut Folder,
    condstore: bool,
    allow_expunge: bool,
    force: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    sel.shared.sync(folder, force)?;
    if folder.uidvalidity() != sel.uidvalidity {
        out.extend_from_slice(b"* BYE [UNAVAILABLE] Mailbox UIDVALIDITY changed, reconnect\r\n");
        return Ok(false);
    }
    // Expunges (by anyone): ghosts until EXPUNGE may be sent.
    let gen = folder.expunge_generation();
    if gen != sel.expunge_gen {
        sel.expunge_gen = gen;
        if !sel.ghosts {
            sel.ghosts = sel.known.iter().any(|&u| folder.get(u).is_none());
        }
    }
    // New messages: the folder is sorted by UID, the new ones (above the last UID the
    // client knows) are its tail from `lo` on.
    let last = sel.known.last().copied().unwrap_or(0);
    let n = folder.len();
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let uid = folder
            .by_seq(u32::try_from(mid + 1).unwrap_or(u32::MAX))
            .map_or(u32::MAX, |m| m.uid);
        if uid <= last {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // How many messages the client knows of (ghosts included).
    let mut visible = sel.known.len();
    // The client's view is the folder's first `visible` messages: it can share the
    // folder's list (of `n`), the tail not being visible yet.
    let mut prefix = !sel.ghosts && visible == lo;
    if allow_expunge && sel.ghosts {
        for i in (0..sel.known.len()).rev() {
            let uid = sel.known[i];
            if folder.get(uid).is_none() {
                let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
                sel.recent.remove(uid);
                visible -= 1;
            }
        }
        sel.ghosts = false;
        prefix = visible == lo;
        if !prefix {
            Rc::make_mut(&mut sel.known).retain(|&u| folder.get(u).is_some());
        }
    }
    if prefix && !Rc::ptr_eq(&sel.known, &sel.shared.uid_snapshot(folder)) {
        // Shared instead of copied (e.g. after an EXPUNGE, by every idle session).
        sel.known = sel.shared.uid_snapshot(folder);
    }
    announce_flag_changes(sel, folder, condstore, visible, out);
    if lo < n {
        if !prefix {
            let known = Rc::make_mut(&mut sel.known);
            known.reserve_exact(n - lo);
            for i in lo..n {
                if let Some(m) = folder.by_seq(u32::try_from(i + 1).unwrap_or(u32::MAX)) {
                    known.push(m.uid);
                }
            }
        }
        let from = last.saturating_add(1);
        let recent: Vec<u32> = if sel.read_only {
            folder.unclaimed_recent(from).collect()
        } else {
            folder.claim_recent(from)
        };
        for u in recent {
            sel.recent.insert(u);
        }
        let _ = write!(
            out,
            "* {} EXISTS\r\n* {} RECENT\r\n",
            sel.known.len(),
            sel.recent.len()
        );
    }
    sel.modseq = sel.modseq.max(folder.highest_modseq());
    sel.own.clear();
    // Up to date again after a copy of its own: share the folder's list again.
    if !sel.ghosts && sel.known.len() == folder.len() {
        let snap = sel.shared.uid_snapshot(folder);
        if !Rc::ptr_eq(&snap, &sel.known) {
            sel.known = snap;
        }
    }
    Ok(true)
}

/// Writes `* n FETCH (FLAGS ...)` for the messages whose flags others changed since the
/// session's MODSEQ (with UID and MODSEQ when CONDSTORE is on), in sequence order; only for
/// the first `visible` messages of `known` (those the client knows of).
fn announce_flag_changes(
    sel: &Selected,
    folder: &Folder,
    condstore: bool,
    visible: usize,
    out: &mut Vec<u8>,
) {
    if folder.highest_modseq() <= sel.modseq {
        return;
    }
    let not_own = |m: u64| sel.own.binary_search(&m).is_err();
    let mut uids: Vec<u32> = match folder.changed_since(sel.modseq) {
        Some(changes) => changes
            .filter(|&(m, _)| not_own(m))
            .map(|(_, u)| u)
            .collect(),
        // The log no longer reaches back that far: look at every message instead.
        None => sel.known[..visible.min(sel.known.len())]
            .iter()
            .copied()
            .filter(|&u| {
                folder
                    .get(u)
                    .is_some_and(|m| m.modseq > sel.modseq && not_own(m.modseq))
            })
            .collect(),
    };
    uids.sort_unstable();
    uids.dedup();
    for uid in uids {
        // Not known yet (announced by EXISTS instead), or a ghost.
        let (Some(seq), Some(m)) = (sel.seq_of(uid), folder.get(uid)) else {
            continue;
        };
        if seq as usize > visible {
            continue;
        }
        let _ = write!(out, "* {seq} FETCH (");
        if condstore {
            let _ = write!(out, "UID {} MODSEQ ({}) ", m.uid, m.modseq);
        }
        let _ = write!(
            out,
            "FLAGS {})\r\n",
            flag_list(&m.flags, sel.recent.contains(uid))
        );
    }
}

/// Writes `* n EXPUNGE` for messages this session removed (highest sequence number
/// first, so every number is valid when sent) and drops them from the client's view.
fn announce_expunged(sel: &mut Selected, removed: &[u32], out: &mut Vec<u8>) {
    let mut removed = removed.to_vec();
    removed.sort_unstable();
    let seqs: Vec<usize> = removed
        .iter()
        .filter_map(|&u| sel.known.binary_search(&u).ok())
        .collect();
    if seqs.is_empty() {
        return;
    }
    for &i in seqs.iter().rev() {
        let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
    }
    for &u in &removed {
        sel.recent.remove(u);
    }
    Rc::make_mut(&mut sel.known).retain(|u| removed.binary_search(u).is_err());
}

impl Session {
    /// After login: `user` for logs; creates the special-use folders on first use (a
    /// Maildir without a `subscriptions` file). The session has a set of folders of its
    /// own, synced from disk at every command and every [`Session::updates`]; it keeps
    /// only its selected folder, and others only while they hold `\Recent` messages it
    /// has not seen yet (APPEND, COPY, STATUS to another folder).
    pub fn new(store: Store, user: &str) -> io::Result<Session> {
        Session::make(store, user, SharedFolders::private(), true)
    }

    /// As [`Session::new`], for one of many sessions of a worker that share `folders`:
    /// the worker's event loop calls [`SharedFolders::tick`] once per turn.
    pub fn with_folders(
        store: Store,
        user: &str,
        folders: Rc<SharedFolders>,
    ) -> io::Result<Session> {
        Session::make(store, user, folders, false)
    }

    fn make(
        store: Store,
        user: &str,
        folders: Rc<SharedFolders>,
        own_turns: bool,
    ) -> io::Result<Session> {
        if !store.root().join("subscriptions").exists() {
            store.ensure_special_use()?;
        }
        Ok(Session {
            store,
            user: user.to_string(),
            folders,
            own_turns,
            selected: None,
            condstore: false,
            idle_tag: None,
            dead: false,
            chunk: None,
            fetching: None,
            counts: Counts::default(),
        })
    }

    /// The user this session belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The capability list this session announces after login (for CAPABILITY and the
    /// `OK [CAPABILITY ...]` of LOGIN).
    pub fn capabilities() -> &'static str {
        CAPABILITIES
    }

    /// The selected folder's directory (the worker watches its `new/` and `cur/` with
    /// inotify); `None` when no mailbox is selected.
    pub fn selected_dir(&self) -> Option<&Path> {
        self.selected.as_ref().map(|s| s.shared.dir.as_path())
    }

    /// The memory this session holds for itself: the session and its view of the selected
    /// mailbox, without what it shares with the other sessions of its worker (the folder,
    /// and the folder's UID list while the view is up to date). Counted from capacities,
    /// for tests and statistics.
    pub fn view_bytes(&self) -> usize {
        std::mem::size_of::<Session>()
            + self.user.capacity()
            + self.store.root().as_os_str().len()
            + self.idle_tag.as_ref().map_or(0, String::capacity)
            + self.selected.as_ref().map_or(0, Selected::heap_bytes)
            + self
                .fetching
                .as_ref()
                .map_or(0, fetch::FetchJob::heap_bytes)
    }

    /// Leaves the selected mailbox (if any); the folder stays with the worker for a while.
    fn release(&mut self) {
        if let Some(sel) = self.selected.take() {
            self.folders.release(sel.shared);
        }
    }

    /// [`resync`] of the selected mailbox, if any; marks the session dead when its
    /// UIDVALIDITY changed.
    fn resync_selected(
        &mut self,
        allow_expunge: bool,
        force: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        if !resync(sel, &mut folder, condstore, allow_expunge, force, out)? {
            self.dead = true;
        }
        Ok(())
    }

    /// Untagged updates for the selected folder after a re-sync (new mail from local,
    /// changes by other sessions): EXPUNGE, EXISTS, RECENT, and FETCH (FLAGS) for flag
    /// changes by others (with UID and MODSEQ when CONDSTORE is enabled). Empty when no
    /// mailbox is selected. For IDLE and between commands; [`Session::handle`] already
    /// adds these to every command's answer. When the mailbox's UIDVALIDITY changed, the
    /// result is a `* BYE` and the next [`Session::handle`] ends the session.
    ///
    /// While a streamed FETCH is not complete ([`Outcome::more`]) the result is empty: the
    /// client's view does not change between the pieces of an answer, and the updates come
    /// with its last piece.
    pub fn updates(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if self.dead || self.fetching.is_some() {
            return Ok(out);
        }
        if self.own_turns {
            self.folders.tick();
        }
        self.resync_selected(true, false, &mut out)?;
        Ok(out)
    }

    /// What this session did so far (for the logout line).
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// From now on, FETCH and UID FETCH answers come in pieces of about `chunk` bytes:
    /// [`Session::handle`] returns after the first piece with [`Outcome::more`] set, and
    /// the program calls [`Session::resume`] (instead of [`Session::handle`]) for each next
    /// piece until `more` is `false`. The tagged completion, and the untagged updates that
    /// follow a FETCH, come with the last piece. Concatenated, the pieces are exactly the
    /// answer [`Session::handle`] gives without streaming, as long as nobody else changes
    /// the folder meanwhile.
    ///
    /// A piece ends after the first message response that takes it to `chunk` bytes or
    /// more, so it is at most `chunk - 1` bytes plus one message's response (plus, for the
    /// last piece, the updates and the tagged completion; for the first, what the command
    /// answers before its FETCH responses, such as the end of an IDLE). Every piece makes
    /// progress: it covers at least one of the messages asked for (`chunk` 0 means one per
    /// piece). Other commands are not affected.
    ///
    /// Between pieces other sessions sharing the folder may change it. The session's view
    /// (sequence numbers, UIDs, `\Recent`) does not change; a message expunged meanwhile
    /// is left out of the answer, as a message expunged before the command is (the tagged
    /// OK then says so), and its EXPUNGE comes with a later command (RFC 3501 §7.4.1). Flag
    /// changes by others show in the pieces fetched after them (and again as updates at the
    /// end). When the folder's UIDVALIDITY changed meanwhile, the rest of the messages are
    /// left out and the last piece ends with `* BYE` and [`Outcome::logout`].
    pub fn set_streaming(&mut self, chunk: usize) {
        self.chunk = Some(chunk);
    }

    /// The next piece of a streamed FETCH answer (see [`Session::set_streaming`]):
    /// [`Outcome::more`] says whether another follows; the last one carries the tagged
    /// completion. With no FETCH answer in progress, an empty [`Outcome`].
    pub fn resume(&mut self) -> Outcome {
        self.piece(self.chunk)
    }

    /// Whether a streamed FETCH answer is not complete yet ([`Session::resume`] gives the
    /// rest).
    pub fn pending(&self) -> bool {
        self.fetching.is_some()
    }

    /// The next piece of the FETCH in progress, of about `limit` bytes (all of the rest
    /// for `None`).
    fn piece(&mut self, limit: Option<usize>) -> Outcome {
        let mut r = Outcome::default();
        let Some(mut job) = self.fetching.take() else {
            return r;
        };
        let reply = match self.fetch_more(&mut job, limit, &mut r.out) {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                self.fetching = Some(job);
                r.more = true;
                return r;
            }
            Err(e) => io_error(&e),
        };
        self.complete(job.tag(), reply, true, false, &mut r);
        r
    }

    /// One command (already parsed): untagged responses, then the tagged completion, as
    /// bytes. With streaming ([`Session::set_streaming`]), a FETCH answer may come only in
    /// part ([`Outcome::more`]).
    ///
    /// Called while a streamed FETCH answer is not complete (a bug of the program: it must
    /// call [`Session::resume`] until [`Outcome::more`] is `false`), the rest of that answer
    /// is produced first, in full, and the command's answer follows it in the same
    /// [`Outcome`]: the client still gets every response it is owed, in order.
    pub fn handle(&mut self, cmd: Command) -> Outcome {
        if self.fetching.is_none() {
            return self.command(cmd);
        }
        let mut r = self.piece(None);
        let next = self.command(cmd);
        r.out.extend_from_slice(&next.out);
        r.logout |= next.logout;
        r.idling = next.idling;
        r.more = next.more;
        r
    }

    /// [`Session::handle`] with no FETCH answer in progress.
    fn command(&mut self, cmd: Command) -> Outcome {
        let mut r = Outcome::default();
        if self.dead {
            r.out
                .extend_from_slice(b"* BYE [UNAVAILABLE] Mailbox UIDVALIDITY changed\r\n");
            r.logout = true;
            return r;
        }
        if self.own_turns {
            self.folders.tick();
        }
        let Command { tag, kind } = cmd;
        let mut tag = tag;
        if matches!(kind, CommandKind::Done) {
            match self.idle_tag.take() {
                Some(t) => tag = t,
                None => {
                    r.out.extend_from_slice(b"* BAD Not idling\r\n");
                    return r;
                }
            }
        } else if let Some(t) = self.idle_tag.take() {
            // Anything but DONE during IDLE ends it as a protocol error.
            let _ = write!(r.out, "{t} BAD Expected DONE\r\n");
        }
        let quiet = matches!(
            kind,
            CommandKind::Fetch { .. } | CommandKind::Store { .. } | CommandKind::Search { .. }
        );
        let plain = matches!(
            kind,
            CommandKind::Logout
                | CommandKind::Select { .. }
                | CommandKind::Examine { .. }
                | CommandKind::Close
                | CommandKind::Unselect
                | CommandKind::Idle
        );
        let reply = match self.dispatch(&tag, kind, &mut r) {
            Ok(Reply::More) => {
                r.more = true;
                return r;
            }
            Ok(reply) => reply,
            Err(e) => io_error(&e),
        };
        self.complete(&tag, reply, quiet, plain, &mut r);
        r
    }

    /// The end of a command's answer: the untagged updates (without EXPUNGE when `quiet`;
    /// none when `plain`), the tagged completion, and the end of the session when the
    /// mailbox became unusable.
    fn complete(&mut self, tag: &str, reply: Reply, quiet: bool, plain: bool, r: &mut Outcome) {
        if matches!(reply, Reply::Ok(_)) && !plain && !r.logout {
            let _ = self.resync_selected(!quiet, false, &mut r.out);
        }
        match reply {
            Reply::Ok(t) => {
                let _ = write!(r.out, "{tag} OK {t}\r\n");
            }
            Reply::No(t) => {
                let _ = write!(r.out, "{tag} NO {t}\r\n");
            }
            Reply::Bad(t) => {
                let _ = write!(r.out, "{tag} BAD {t}\r\n");
            }
            Reply::Nothing | Reply::More => {}
        }
        if self.dead {
            r.logout = true;
            r.idling = false;
        }
    }

    fn dispatch(&mut self, tag: &str, kind: CommandKind, r: &mut Outcome) -> io::Result<Reply> {
        use CommandKind as K;
        let needs_selected = matches!(
            kind,
            K::Check
                | K::Close
                | K::Unselect
                | K::Expunge
                | K::UidExpunge(_)
                | K::Search { .. }
                | K::Fetch { .. }
                | K::Store { .. }
                | K::Copy { .. }
                | K::Move { .. }
        );
        if needs_selected && self.selected.is_none() {
            return Ok(bad("No mailbox selected"));
        }
        let out = &mut r.out;
        Ok(match kind {
            K::Capability => {
                let _ = write!(out, "* CAPABILITY {CAPABILITIES}\r\n");
                ok("Capability completed.")
            }
            K::Noop => ok("NOOP completed."),
            K::Check => ok("CHECK completed."),
            K::Logout => {
                out.extend_from_slice(b"* BYE Logging out\r\n");
                r.logout = true;
                ok("Logout completed.")
            }
            K::StartTls | K::Authenticate { .. } | K::Login { .. } => bad("Already authenticated"),
            K::Id(_) => {
                out.extend_from_slice(b"* ID (\"name\" \"Petrel\")\r\n");
                ok("ID completed.")
            }
            K::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    if c == "CONDSTORE" && !enabled.contains(&"CONDSTORE") {
                        self.condstore = true;
                        enabled.push("CONDSTORE");
                    }
                }
                let _ = write!(out, "* ENABLED");
                for c in enabled {
                    let _ = write!(out, " {c}");
                }
                out.extend_from_slice(b"\r\n");
                ok("Enabled.")
            }
            K::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
                ok("Namespace completed.")
            }
            K::Idle => {
                self.idle_tag = Some(tag.to_string());
                out.extend_from_slice(b"+ idling\r\n");
                r.idling = true;
                self.resync_selected(true, false, out)?;
                Reply::Nothing
            }
            K::Done => ok("IDLE terminated."),
            K::Select { mailbox, condstore } => self.select(&mailbox, condstore, false, out)?,
            K::Examine { mailbox, condstore } => self.select(&mailbox, condstore, true, out)?,
            K::Create {
                mailbox,
                special_use,
            } => self.create(&mailbox, &special_use),
            K::Delete(mailbox) => {
                let name = store_name(&mailbox);
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    no("[INUSE] Cannot delete the selected mailbox")
                } else {
                    match self.store.delete(&name) {
                        Ok(()) => {
                            if let Ok(dir) = self.store.folder_dir(&name) {
                                self.folders.forget(&dir);
                            }
                            ok("Delete completed.")
                        }
                        Err(e) => store_error(e),
                    }
                }
            }
            K::Rename { from, to } => {
                let (from, to) = (store_name(&from), store_name(&to));
                if !is_inbox(&from) && self.selected.as_ref().is_some_and(|s| s.name == from) {
                    no("[INUSE] Cannot rename the selected mailbox")
                } else {
                    let to = to.trim_end_matches('.');
                    match self.store.rename(&from, to) {
                        Ok(()) => {
                            for name in [from.as_str(), to] {
                                let Ok(dir) = self.store.folder_dir(name) else {
                                    continue;
                                };
                                if is_inbox(name) {
                                    // Its messages moved away; the folder stays.
                                    self.folders.mark_dirty(&dir);
                                } else {
                                    self.folders.forget(&dir);
                                }
                            }
                            ok("Rename completed.")
                        }
                        Err(e) => store_error(e),
                    }
                }
            }
            K::Subscribe(mailbox) => match self.store.subscribe(&store_name(&mailbox)) {
                Ok(()) => ok("Subscribe completed."),
                Err(e) => store_error(e),
            },
            K::Unsubscribe(mailbox) => match self.store.unsubscribe(&store_name(&mailbox)) {
                Ok(()) => ok("Unsubscribe completed."),
                Err(e) => store_error(e),
            },
            K::List {
                reference,
                patterns,
                select_special_use,
                select_subscribed,
                recursive_match,
                return_special_use: _,
                return_children: _,
                return_subscribed,
            } => self.list(
                &reference,
                &patterns,
                list::ListOptions {
                    select_subscribed,
                    select_special_use,
                    recursive_match,
                    return_subscribed,
                },
                out,
            )?,
            K::Lsub { reference, pattern } => self.lsub(&reference, &pattern, out)?,
            K::Status { mailbox, items } => self.status(&mailbox, &items, out)?,
            K::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&mailbox, &flags, date.map(|d| d.epoch), &message, out)?,
            K::Close => {
                let shared = self
                    .selected
                    .as_ref()
                    .map(|s| (s.shared.clone(), s.read_only));
                self.release();
                if let Some((shared, false)) = shared {
                    let result = shared.folder().and_then(|mut folder| {
                        let del: Vec<u32> = folder
                            .messages()
                            .filter(|m| m.flags.deleted)
                            .map(|m| m.uid)
                            .collect();
                        folder.expunge(&del)
                    });
                    if let Ok(removed) = &result {
                        self.counts.expunged += removed.len() as u64;
                    }
                    self.folders.release(shared);
                    result?;
                }
                ok("Close completed.")
            }
            K::Unselect => {
                self.release();
                ok("Unselect completed.")
            }
            K::Expunge => self.expunge(None, out)?,
            K::UidExpunge(set) => self.expunge(Some(&set), out)?,
            K::Search {
                uid,
                charset,
                criteria,
                ret,
            } => self.search(tag, uid, charset.as_deref(), &criteria, ret.as_deref(), out)?,
            K::Fetch {
                uid,
                set,
                items,
                changed_since,
            } => self.fetch(tag, uid, &set, items, changed_since, out)?,
            K::Store {
                uid,
                set,
                mode,
                silent,
                flags,
                unchanged_since,
            } => self.store(uid, &set, mode, silent, &flags, unchanged_since, out)?,
            K::Copy { uid, set, mailbox } => self.copy(uid, &set, &mailbox, false, out)?,
            K::Move { uid, set, mailbox } => self.copy(uid, &set, &mailbox, true, out)?,
        })
    }

    fn select(
        &mut self,
        mailbox: &str,
        condstore: bool,
        read_only: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        self.release();
        if condstore {
            self.condstore = true;
        }
        let name = store_name(mailbox);
        let shared = match self.folders.open(&self.store, &name) {
            Ok(f) => f,
            Err(e) => return Ok(store_error(e)),
        };
        let mut folder = shared.folder()?;
        shared.sync(&mut folder, false)?;
        let mut kw = String::new();
        for c in 'a'..='z' {
            if let Some(k) = folder.keywords().name(c) {
                kw.push(' ');
                kw.push_str(k);
            }
        }
        let _ = write!(
            out,
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw})\r\n"
        );
        if read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
        } else {
            let _ = write!(
                out,
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw} \\*)] Flags permitted.\r\n"
            );
        }
        let known = shared.uid_snapshot(&folder);
        // The first session to learn of a \Recent message claims it; EXAMINE only looks.
        let claimed: Vec<u32> = if read_only {
            folder.unclaimed_recent(0).collect()
        } else {
            folder.claim_recent(0)
        };
        let mut recent = UidRanges::default();
        for u in claimed {
            recent.insert(u);
        }
        let _ = write!(
            out,
            "* {} EXISTS\r\n* {} RECENT\r\n",
            known.len(),
            recent.len()
        );
        if let Some(i) = folder.messages().position(|m| !m.flags.seen) {
            let _ = write!(out, "* OK [UNSEEN {}] First unseen.\r\n", i + 1);
        }
        let _ = write!(
            out,
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
            folder.uidvalidity(),
            folder.uidnext()
        );
        // RFC 7162 §3.1.2.1: a server that keeps MODSEQs for the mailbox sends
        // HIGHESTMODSEQ with every successful SELECT and EXAMINE (NOMODSEQ is for those
        // that do not).
        let _ = write!(
            out,
            "* OK [HIGHESTMODSEQ {}] Highest\r\n",
            folder.highest_modseq().max(1)
        );
        let sel = Selected {
            name,
            shared: shared.clone(),
            read_only,
            uidvalidity: folder.uidvalidity(),
            known,
            ghosts: false,
            expunge_gen: folder.expunge_generation(),
            modseq: folder.highest_modseq(),
            own: Vec::new(),
            recent,
        };
        drop(folder);
        self.selected = Some(sel);
        Ok(if read_only {
            ok("[READ-ONLY] Examine completed.")
        } else {
            ok("[READ-WRITE] Select completed.")
        })
    }

    fn create(&mut self, mailbox: &str, special_use: &[String]) -> Reply {
        let name = store_name(mailbox.trim_end_matches('.'));
        if !special_use.is_empty() {
            let builtin = petrel_mailstore::SPECIAL_USE
                .iter()
                .find(|s| s.0 == name)
                .map(|s| s.1);
            let fits = special_use.len() == 1
                && builtin.is_some_and(|b| b.eq_ignore_ascii_case(&special_use[0]));
            if !fits {
                return no("[USEATTR] This special use cannot be given to this mailbox");
            }
        }
        match self.store.create(&name) {
            Ok(()) => ok("Create completed."),
            Err(e) => store_error(e),
        }
    }

    fn status(
        &mut self,
        mailbox: &str,
        items: &[StatusItem],
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if items.contains(&StatusItem::HighestModSeq) {
            self.condstore = true;
        }
        let name = store_name(mailbox);
        let selected = self.selected.as_ref().is_some_and(|s| s.name == name);
        // The selected mailbox: this session's own view (and its \Recent); another: the
        // shared folder, whose unclaimed \Recent messages stay unclaimed.
        let (shared, own_recent) = if selected {
            self.resync_selected(true, false, out)?;
            match self.selected.as_ref() {
                Some(sel) => (sel.shared.clone(), Some(sel.recent.len())),
                None => return Ok(no("[UNAVAILABLE] Mailbox changed")),
            }
        } else {
            match self.folders.open(&self.store, &name) {
                Ok(s) => (s, None),
                Err(e) => return Ok(store_error(e)),
            }
        };
        let parts = status_items(&shared, items, own_recent);
        self.folders.release(shared);
        let parts = parts?;
        out.extend_from_slice(b"* STATUS ");
        out.extend_from_slice(&astring(name.as_bytes()));
        let _ = write!(out, " ({})\r\n", parts.join(" "));
        Ok(ok("Status completed."))
    }

    fn append(
        &mut self,
        mailbox: &str,
        flags: &[Flag],
        date: Option<i64>,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        let name = store_name(mailbox);
        if !self.store.exists(&name) {
            return Ok(no("[TRYCREATE] Mailbox doesn't exist"));
        }
        let fs = FlagSet::from_imap(flags.iter().map(Flag::as_str));
        let condstore = self.condstore;
        let (uidvalidity, uid) = match self.selected.as_mut() {
            Some(sel) if sel.name == name => {
                let shared = sel.shared.clone();
                let mut folder = shared.folder()?;
                let uid = folder.append(message, &fs, date)?;
                shared.mark_dirty();
                // EXISTS and RECENT now: this session is the first to learn of it.
                if !resync(sel, &mut folder, condstore, true, false, out)? {
                    self.dead = true;
                }
                (folder.uidvalidity(), uid)
            }
            _ => {
                let shared = match self.folders.open(&self.store, &name) {
                    Ok(f) => f,
                    Err(e) => return Ok(store_error(e)),
                };
                // \Recent for whoever selects the folder next (unclaimed until then).
                let r = shared.folder().and_then(|mut folder| {
                    let uid = folder.append(message, &fs, date)?;
                    Ok((folder.uidvalidity(), uid))
                });
                shared.mark_dirty();
                self.folders.release(shared);
                r?
            }
        };
        self.counts.appended += 1;
        Ok(Reply::Ok(format!(
            "[APPENDUID {uidvalidity} {uid}] Append completed."
        )))
    }

    fn expunge(&mut self, set: Option<&SequenceSet>, out: &mut Vec<u8>) -> io::Result<Reply> {
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(bad("No mailbox selected"));
        };
        if sel.read_only {
            return Ok(no("[READ-ONLY] Mailbox is read-only"));
        }
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        if !resync(sel, &mut folder, condstore, true, false, out)? {
            self.dead = true;
            return Ok(no("[UNAVAILABLE] Mailbox changed"));
        }
        let in_set: Option<Vec<u32>> = match set {
            Some(s) => match sel.targets(s, true) {
                Ok(t) => Some(t.into_iter().map(|(_, u)| u).collect()),
                Err(e) => return Ok(Reply::Bad(e)),
            },
            None => None,
        };
        let uids: Vec<u32> = sel
            .known
            .iter()
            .copied()
            .filter(|&u| folder.get(u).is_some_and(|m| m.flags.deleted))
            .filter(|u| in_set.as_ref().is_none_or(|s| s.binary_search(u).is_ok()))
            .collect();
        let n = own_expunge(sel, &mut folder, &uids, out)?;
        self.counts.expunged += n as u64;
        if condstore {
            return Ok(Reply::Ok(format!(
                "[HIGHESTMODSEQ {}] Expunge completed.",
                folder.highest_modseq().max(1)
            )));
        }
        Ok(ok("Expunge completed."))
    }

    fn copy(
        &mut self,
        uid_cmd: bool,
        set: &SequenceSet,
        mailbox: &str,
        mv: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        let name = store_name(mailbox);
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(bad("No mailbox selected"));
        };
        if mv && sel.read_only {
            return Ok(no("[READ-ONLY] Mailbox is read-only"));
        }
        if !self.store.exists(&name) {
            return Ok(no("[TRYCREATE] Mailbox doesn't exist"));
        }
        let targets = match sel.targets(set, uid_cmd) {
            Ok(t) => t,
            Err(e) => return Ok(Reply::Bad(e)),
        };
        let dest = match self.folders.open(&self.store, &name) {
            Ok(f) => f,
            Err(e) => return Ok(store_error(e)),
        };
        let src = sel.shared.clone();
        let same = Rc::ptr_eq(&src, &dest);
        let result = (|| -> io::Result<Result<CopyDone, Reply>> {
            let mut folder = src.folder()?;
            let mut attempt = 0;
            loop {
                let uids: Vec<u32> = targets
                    .iter()
                    .map(|&(_, u)| u)
                    .filter(|&u| folder.get(u).is_some())
                    .collect();
                let copied = if same {
                    copy_within(&mut folder, &uids)
                } else {
                    let mut d = dest.folder()?;
                    folder.copy_to(&uids, &mut d)
                };
                match copied {
                    Ok(p) => {
                        let uv = if same {
                            folder.uidvalidity()
                        } else {
                            dest.folder()?.uidvalidity()
                        };
                        return Ok(Ok((p, uids.len() != targets.len(), uv)));
                    }
                    // A file renamed by another process (a flag change) or expunged since
                    // the last sync: sync (without EXPUNGE responses) and try once more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                        attempt += 1;
                        if !resync(sel, &mut folder, condstore, false, true, out)? {
                            return Ok(Err(no("[UNAVAILABLE] Mailbox changed")));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        })();
        dest.mark_dirty();
        self.folders.release(dest);
        let (pairs, expunged_some, dest_uidvalidity) = match result? {
            Ok(r) => r,
            Err(reply) => {
                self.dead = true;
                return Ok(reply);
            }
        };
        self.counts.appended += pairs.len() as u64;
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            format!(
                "[COPYUID {} {} {}] ",
                dest_uidvalidity,
                uid_set(&src),
                uid_set(&dst)
            )
        };
        if !mv {
            if expunged_some {
                return Ok(Reply::No(format!(
                    "{code}Some of the messages no longer exist"
                )));
            }
            return Ok(Reply::Ok(format!("{code}Copy completed.")));
        }
        if !code.is_empty() {
            let _ = write!(out, "* OK {code}Moved UIDs.\r\n");
        }
        let src_uids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let mut folder = src.folder()?;
        let n = own_expunge(sel, &mut folder, &src_uids, out)?;
        self.counts.expunged += n as u64;
        Ok(ok("Move completed."))
    }

    fn search(
        &mut self,
        tag: &str,
        uid_cmd: bool,
        charset: Option<&str>,
        criteria: &SearchKey,
        ret: Option<&[SearchReturn]>,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if let Some(c) = charset {
            if !c.eq_ignore_ascii_case("UTF-8") && !c.eq_ignore_ascii_case("US-ASCII") {
                return Ok(Reply::No(format!("{BADCHARSET} Unsupported charset")));
            }
        }
        let with_modseq = uses_modseq(criteria);
        if with_modseq {
            self.condstore = true;
        }
        let Some(sel) = self.selected.as_mut() else {
            return Ok(bad("No mailbox selected"));
        };
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        let cur = folder.dir().join("cur");
        let files: std::collections::HashMap<u32, std::path::PathBuf> = sel
            .known
            .iter()
            .filter_map(|&u| folder.get(u).map(|m| (u, cur.join(&m.file))))
            .collect();
        let mut load = |uid: u32| files.get(&uid).and_then(|p| std::fs::read(p).ok());
        let recent = &sel.recent;
        let uids = crate::search::search_view(
            &mut folder,
            &sel.known,
            &|u| recent.contains(u),
            criteria,
            &mut load,
        )?;
        let mut nums = Vec::new();
        let mut top_modseq = 0u64;
        for u in uids {
            let Some(seq) = sel.seq_of(u) else { continue };
            nums.push(if uid_cmd { u } else { seq });
            if let Some(m) = folder.get(u) {
                top_modseq = top_modseq.max(m.modseq);
            }
        }
        match ret {
            None => {
                out.extend_from_slice(b"* SEARCH");
                for n in &nums {
                    let _ = write!(out, " {n}");
                }
                if with_modseq && !nums.is_empty() {
                    let _ = write!(out, " (MODSEQ {top_modseq})");
                }
                out.extend_from_slice(b"\r\n");
            }
            Some(ret) => {
                out.extend_from_slice(b"* ESEARCH (TAG ");
                out.extend_from_slice(&petrel_imap_proto::quoted_or_literal(tag.as_bytes()));
                out.extend_from_slice(b")");
                if uid_cmd {
                    out.extend_from_slice(b" UID");
                }
                // `RETURN ()` means ALL.
                let all = ret.is_empty();
                for r in [
                    SearchReturn::Min,
                    SearchReturn::Max,
                    SearchReturn::Count,
                    SearchReturn::All,
                ] {
                    if !(ret.contains(&r) || (all && r == SearchReturn::All)) {
                        continue;
                    }
                    match r {
                        SearchReturn::Min => {
                            if let Some(n) = nums.first() {
                                let _ = write!(out, " MIN {n}");
                            }
                        }
                        SearchReturn::Max => {
                            if let Some(n) = nums.last() {
                                let _ = write!(out, " MAX {n}");
                            }
                        }
                        SearchReturn::Count => {
                            let _ = write!(out, " COUNT {}", nums.len());
                        }
                        SearchReturn::All => {
                            if !nums.is_empty() {
                                let _ = write!(out, " ALL {}", uid_set(&nums));
                            }
                        }
                    }
                }
                if with_modseq && !nums.is_empty() {
                    let _ = write!(out, " MODSEQ {top_modseq}");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        Ok(ok("Search completed."))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}

/// What COPY did: the `(source UID, new UID)` pairs, whether some messages were gone, and
/// the destination's UIDVALIDITY.
type CopyDone = (Vec<(u32, u32)>, bool, u32);

/// The STATUS items of a folder; `own_recent` is the session's `\Recent` count when the
/// folder is its selected one (else the folder's unclaimed `\Recent` messages count).
fn status_items(
    shared: &Shared,
    items: &[StatusItem],
    own_recent: Option<usize>,
) -> io::Result<Vec<String>> {
    let mut folder = shared.folder()?;
    if own_recent.is_none() {
        shared.sync(&mut folder, false)?;
    }
    let mut parts = Vec::new();
    for item in items {
        let v: u64 = match item {
            StatusItem::Messages => folder.len() as u64,
            StatusItem::Recent => {
                own_recent.unwrap_or_else(|| folder.unclaimed_recent(0).count()) as u64
            }
            StatusItem::UidNext => u64::from(folder.uidnext()),
            StatusItem::UidValidity => u64::from(folder.uidvalidity()),
            StatusItem::Unseen => folder.messages().filter(|m| !m.flags.seen).count() as u64,
            StatusItem::HighestModSeq => folder.highest_modseq().max(1),
            StatusItem::Size => {
                let uids: Vec<u32> = folder.messages().map(|m| m.uid).collect();
                let mut total = 0u64;
                for u in uids {
                    total += folder.rfc822_size(u).unwrap_or(0);
                }
                total
            }
        };
        parts.push(format!("{} {v}", item.as_str()));
    }
    Ok(parts)
}

/// Expunges `uids` from the selected folder for this session (EXPUNGE, MOVE, UID
/// EXPUNGE) and announces the ones removed; how many that was.
fn own_expunge(
    sel: &mut Selected,
    folder: &mut Folder,
    uids: &[u32],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let before = folder.expunge_generation();
    let removed = folder.expunge(uids)?;
    if sel.expunge_gen == before {
        // Nobody else's expunges to look for.
        sel.expunge_gen = folder.expunge_generation();
    }
    announce_expunged(sel, &removed, out);
    Ok(removed.len())
}

/// COPY into the selected folder itself ([`Folder::copy_to`] needs another folder): each
/// message is added again with its flags and INTERNALDATE. `NotFound` before anything was
/// added when a file is not where the folder says (sync and retry); a file that vanishes
/// after that is skipped.
fn copy_within(folder: &mut Folder, uids: &[u32]) -> io::Result<Vec<(u32, u32)>> {
    let mut todo = Vec::new();
    for &uid in uids {
        let (Some(m), Some(path)) = (folder.get(uid), folder.path(uid)) else {
            continue;
        };
        std::fs::metadata(&path)?;
        todo.push((uid, path, m.flags.clone(), m.internaldate));
    }
    let mut pairs = Vec::new();
    for (uid, path, flags, date) in todo {
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        pairs.push((uid, folder.append(&data, &flags, Some(date))?));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_imap_proto::StoreMode;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
    }

    #[test]
    fn store_modes() {
        let cur = FlagSet::from_imap(["\\Seen", "$Junk"]);
        let req = FlagSet::from_imap(["\\Flagged", "$junk"]);
        let add = apply_store(StoreMode::Add, &cur, &req);
        assert_eq!(add.to_imap(), vec!["\\Flagged", "\\Seen", "$Junk"]);
        let rem = apply_store(StoreMode::Remove, &cur, &req);
        assert_eq!(rem.to_imap(), vec!["\\Seen"]);
        let mut passed = cur.clone();
        passed.passed = true;
        let rep = apply_store(StoreMode::Replace, &passed, &req);
        assert!(rep.passed);
        assert_eq!(rep.to_imap(), vec!["\\Flagged", "$junk"]);
    }

    #[test]
    fn flag_lists() {
        let f = FlagSet::from_imap(["\\Seen"]);
        assert_eq!(flag_list(&f, true), "(\\Seen \\Recent)");
        assert_eq!(flag_list(&FlagSet::default(), false), "()");
    }

    #[test]
    fn modseq_keys() {
        let k = SearchKey::And(vec![
            SearchKey::All,
            SearchKey::Not(Box::new(SearchKey::ModSeq(3))),
        ]);
        assert!(uses_modseq(&k));
        assert!(!uses_modseq(&SearchKey::Seen));
    }
}
