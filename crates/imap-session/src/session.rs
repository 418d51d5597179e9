//! One authenticated IMAP session over a store.
//!
//! A [`Session`] is what is left of an IMAP connection once the user has logged in: the
//! authenticated state (no mailbox) and the selected state (one [`Folder`] open). It takes
//! parsed commands and answers with the bytes to send; sockets, TLS, literals and IDLE's
//! timers are the program's business.
//!
//! # The client's view
//!
//! The session keeps the list of UIDs the client has been told about (`known`, in sequence
//! order). Sequence numbers in commands and responses are positions in that list, not in
//! the folder, because the folder's own list changes as soon as it is synced:
//!
//! - a message another session expunged stays in `known` (a "ghost": FETCH skips it, STORE
//!   cannot change it) until an EXPUNGE response may be sent — never while answering
//!   FETCH, STORE or SEARCH (RFC 3501 §7.4.1);
//! - a new message joins `known` when its `EXISTS` is sent, which is allowed at any time.
//!
//! Every command but FETCH, STORE and SEARCH ends with the full updates (EXPUNGE, EXISTS,
//! RECENT, FETCH FLAGS) when a mailbox is selected; those three get updates without
//! EXPUNGE. [`Session::updates`] gives the full updates on demand (during IDLE).

mod fetch;
mod list;

use std::io::{self, Write as _};

use petrel_imap_proto::{
    astring, encode_mailbox, Command, CommandKind, Flag, SearchKey, SearchReturn, SeqNum,
    SequenceSet, StatusItem, BADCHARSET,
};
use petrel_mailstore::{is_inbox, FlagSet, Folder, Store, StoreError};

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

/// The selected mailbox.
#[derive(Debug)]
struct Selected {
    /// The store's (modified UTF-7) name.
    name: String,
    folder: Folder,
    read_only: bool,
    /// The UIDs the client knows, in sequence order (ascending).
    known: Vec<u32>,
    /// A sync saw expunges not yet announced.
    pending_expunge: bool,
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
}

/// One logged-in IMAP session.
#[derive(Debug)]
pub struct Session {
    store: Store,
    user: String,
    selected: Option<Selected>,
    /// CONDSTORE is enabled (ENABLE, SELECT (CONDSTORE), or any CONDSTORE-using command).
    condstore: bool,
    /// The tag of the IDLE command in progress.
    idle_tag: Option<String>,
    /// The selected mailbox's UIDVALIDITY changed: the connection must end.
    dead: bool,
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

/// Re-syncs the selected folder and writes the untagged updates: EXPUNGE (when
/// `allow_expunge`), FETCH FLAGS for changes by others, EXISTS and RECENT for new
/// messages. Returns `false` when the UIDVALIDITY changed (the session must end; a BYE has
/// been written).
fn resync(
    sel: &mut Selected,
    condstore: bool,
    allow_expunge: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    let ch = sel.folder.sync()?;
    if ch.uidvalidity_changed {
        out.extend_from_slice(b"* BYE [UNAVAILABLE] Mailbox UIDVALIDITY changed, reconnect\r\n");
        return Ok(false);
    }
    if !ch.expunged.is_empty() {
        sel.pending_expunge = true;
    }
    if allow_expunge && sel.pending_expunge {
        for i in (0..sel.known.len()).rev() {
            if sel.folder.get(sel.known[i]).is_none() {
                let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
            }
        }
        let folder = &sel.folder;
        sel.known.retain(|&u| folder.get(u).is_some());
        sel.pending_expunge = false;
    }
    for uid in &ch.flags {
        let (Some(seq), Some(m)) = (sel.seq_of(*uid), sel.folder.get(*uid)) else {
            continue;
        };
        let _ = write!(out, "* {seq} FETCH (");
        if condstore {
            let _ = write!(out, "UID {} MODSEQ ({}) ", m.uid, m.modseq);
        }
        let _ = write!(out, "FLAGS {})\r\n", flag_list(&m.flags, m.recent));
    }
    let last = sel.known.last().copied().unwrap_or(0);
    let before = sel.known.len();
    let n = sel.folder.len();
    // The folder is sorted by UID: the new ones are a tail.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let uid = sel
            .folder
            .by_seq(u32::try_from(mid + 1).unwrap_or(u32::MAX))
            .map_or(u32::MAX, |m| m.uid);
        if uid <= last {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for i in lo..n {
        if let Some(m) = sel.folder.by_seq(u32::try_from(i + 1).unwrap_or(u32::MAX)) {
            sel.known.push(m.uid);
        }
    }
    if sel.known.len() != before {
        let recent = sel
            .known
            .iter()
            .filter(|&&u| sel.folder.get(u).is_some_and(|m| m.recent))
            .count();
        let _ = write!(out, "* {} EXISTS\r\n* {recent} RECENT\r\n", sel.known.len());
    }
    Ok(true)
}

impl Session {
    /// After login: `user` for logs; creates the special-use folders on first use (a
    /// Maildir without a `subscriptions` file).
    pub fn new(store: Store, user: &str) -> io::Result<Session> {
        if !store.root().join("subscriptions").exists() {
            store.ensure_special_use()?;
        }
        Ok(Session {
            store,
            user: user.to_string(),
            selected: None,
            condstore: false,
            idle_tag: None,
            dead: false,
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

    /// Untagged updates for the selected folder after a re-sync (new mail from local,
    /// changes by other sessions): EXPUNGE, EXISTS, RECENT, and FETCH (FLAGS) for flag
    /// changes by others (with UID and MODSEQ when CONDSTORE is enabled). Empty when no
    /// mailbox is selected. For IDLE and between commands; [`Session::handle`] already
    /// adds these to every command's answer. When the mailbox's UIDVALIDITY changed, the
    /// result is a `* BYE` and the next [`Session::handle`] ends the session.
    pub fn updates(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if self.dead {
            return Ok(out);
        }
        if let Some(sel) = self.selected.as_mut() {
            if !resync(sel, self.condstore, true, &mut out)? {
                self.dead = true;
            }
        }
        Ok(out)
    }

    /// One command (already parsed): untagged responses, then the tagged completion, as
    /// bytes.
    pub fn handle(&mut self, cmd: Command) -> Outcome {
        let mut r = Outcome::default();
        if self.dead {
            r.out
                .extend_from_slice(b"* BYE [UNAVAILABLE] Mailbox UIDVALIDITY changed\r\n");
            r.logout = true;
            return r;
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
            Ok(reply) => reply,
            Err(e) => io_error(&e),
        };
        if matches!(reply, Reply::Ok(_)) && !plain && !r.logout {
            if let Some(sel) = self.selected.as_mut() {
                match resync(sel, self.condstore, !quiet, &mut r.out) {
                    Ok(true) => {}
                    Ok(false) => self.dead = true,
                    Err(_) => {}
                }
            }
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
            Reply::Nothing => {}
        }
        if self.dead {
            r.logout = true;
            r.idling = false;
        }
        r
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
                if let Some(sel) = self.selected.as_mut() {
                    if !resync(sel, self.condstore, true, out)? {
                        self.dead = true;
                    }
                }
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
                        Ok(()) => ok("Delete completed."),
                        Err(e) => store_error(e),
                    }
                }
            }
            K::Rename { from, to } => {
                let (from, to) = (store_name(&from), store_name(&to));
                if !is_inbox(&from) && self.selected.as_ref().is_some_and(|s| s.name == from) {
                    no("[INUSE] Cannot rename the selected mailbox")
                } else {
                    match self.store.rename(&from, to.trim_end_matches('.')) {
                        Ok(()) => ok("Rename completed."),
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
                recursive_match: _,
                return_special_use: _,
                return_children: _,
                return_subscribed,
            } => self.list(
                &reference,
                &patterns,
                list::ListOptions {
                    select_subscribed,
                    select_special_use,
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
                if let Some(mut sel) = self.selected.take() {
                    if !sel.read_only {
                        let del: Vec<u32> = sel
                            .folder
                            .messages()
                            .filter(|m| m.flags.deleted)
                            .map(|m| m.uid)
                            .collect();
                        sel.folder.expunge(&del)?;
                    }
                }
                ok("Close completed.")
            }
            K::Unselect => {
                self.selected = None;
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
            } => self.fetch(uid, &set, &items, changed_since, out)?,
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
        self.selected = None;
        if condstore {
            self.condstore = true;
        }
        let name = store_name(mailbox);
        let folder = match self.store.folder(&name) {
            Ok(f) => f,
            Err(e) => return Ok(store_error(e)),
        };
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
        let known: Vec<u32> = folder.messages().map(|m| m.uid).collect();
        let recent = folder.messages().filter(|m| m.recent).count();
        let _ = write!(out, "* {} EXISTS\r\n* {recent} RECENT\r\n", known.len());
        if let Some(i) = folder.messages().position(|m| !m.flags.seen) {
            let _ = write!(out, "* OK [UNSEEN {}] First unseen.\r\n", i + 1);
        }
        let _ = write!(
            out,
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
            folder.uidvalidity(),
            folder.uidnext()
        );
        if self.condstore {
            let _ = write!(
                out,
                "* OK [HIGHESTMODSEQ {}] Highest\r\n",
                folder.highest_modseq().max(1)
            );
        }
        self.selected = Some(Selected {
            name,
            folder,
            read_only,
            known,
            pending_expunge: false,
        });
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
        let mut opened;
        let folder: &mut Folder = match self.selected.as_mut() {
            Some(sel) if sel.name == name => {
                if !resync(sel, self.condstore, true, out)? {
                    self.dead = true;
                }
                &mut sel.folder
            }
            _ => match self.store.folder(&name) {
                Ok(f) => {
                    opened = f;
                    &mut opened
                }
                Err(e) => return Ok(store_error(e)),
            },
        };
        let mut parts = Vec::new();
        for item in items {
            let v: u64 = match item {
                StatusItem::Messages => folder.len() as u64,
                StatusItem::Recent => folder.messages().filter(|m| m.recent).count() as u64,
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
                let uid = sel.folder.append(message, &fs, date)?;
                if !resync(sel, condstore, true, out)? {
                    self.dead = true;
                }
                (sel.folder.uidvalidity(), uid)
            }
            _ => {
                let mut f = match self.store.folder(&name) {
                    Ok(f) => f,
                    Err(e) => return Ok(store_error(e)),
                };
                let uid = f.append(message, &fs, date)?;
                (f.uidvalidity(), uid)
            }
        };
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
        if !resync(sel, condstore, true, out)? {
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
            .filter(|&u| sel.folder.get(u).is_some_and(|m| m.flags.deleted))
            .filter(|u| in_set.as_ref().is_none_or(|s| s.binary_search(u).is_ok()))
            .collect();
        let removed = sel.folder.expunge(&uids)?;
        announce_expunged(sel, &removed, out);
        if condstore {
            return Ok(Reply::Ok(format!(
                "[HIGHESTMODSEQ {}] Expunge completed.",
                sel.folder.highest_modseq().max(1)
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
        let mut dest = match self.store.folder(&name) {
            Ok(f) => f,
            Err(e) => return Ok(store_error(e)),
        };
        let mut attempt = 0;
        let (pairs, expunged_some) = loop {
            let uids: Vec<u32> = targets
                .iter()
                .map(|&(_, u)| u)
                .filter(|&u| sel.folder.get(u).is_some())
                .collect();
            match sel.folder.copy_to(&uids, &mut dest) {
                Ok(p) => break (p, uids.len() != targets.len()),
                // A file renamed by another session (a flag change) or expunged since the
                // last sync: sync (without EXPUNGE responses) and try once more.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                    attempt += 1;
                    if !resync(sel, self.condstore, false, out)? {
                        self.dead = true;
                        return Ok(no("[UNAVAILABLE] Mailbox changed"));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            format!(
                "[COPYUID {} {} {}] ",
                dest.uidvalidity(),
                uid_set(&src),
                uid_set(&dst)
            )
        };
        drop(dest);
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
        let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let removed = sel.folder.expunge(&src)?;
        announce_expunged(sel, &removed, out);
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
        let cur = sel.folder.dir().join("cur");
        let files: std::collections::HashMap<u32, std::path::PathBuf> = sel
            .folder
            .messages()
            .map(|m| (m.uid, cur.join(&m.file)))
            .collect();
        let mut load = |uid: u32| files.get(&uid).and_then(|p| std::fs::read(p).ok());
        let uids = crate::search::search(&mut sel.folder, criteria, &mut load)?;
        let mut nums = Vec::new();
        let mut top_modseq = 0u64;
        for u in uids {
            let Some(seq) = sel.seq_of(u) else { continue };
            nums.push(if uid_cmd { u } else { seq });
            if let Some(m) = sel.folder.get(u) {
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

/// Writes `* n EXPUNGE` for messages this session removed (highest sequence number
/// first, so every number is valid when sent) and drops them from the client's view.
fn announce_expunged(sel: &mut Selected, removed: &[u32], out: &mut Vec<u8>) {
    let mut seqs: Vec<usize> = removed
        .iter()
        .filter_map(|&u| sel.known.binary_search(&u).ok())
        .collect();
    seqs.sort_unstable();
    for &i in seqs.iter().rev() {
        let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
        sel.known.remove(i);
    }
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
