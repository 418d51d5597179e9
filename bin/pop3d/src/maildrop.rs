//! A user's maildrop for one session: the INBOX of a Maildir++ (the one imapd serves) or
//! an mbox (the one `local` appends to), locked against other POP3 sessions, listed once
//! at login (RFC 1939: the message numbers and sizes of a session do not change).
//!
//! - **Maildir**: an fcntl (open file description) lock on `MAILDIR/petrel-pop3.lock`,
//!   released by the kernel if the session dies. Deliveries and IMAP go on meanwhile; what
//!   arrives during the session is in the next one. UIDLs are Dovecot's default format
//!   (`%08Xu%08Xv`: the IMAP UID, then UIDVALIDITY, in hex as Dovecot prints them, lower
//!   case), so IMAP and POP3 agree and mail moved from Dovecot keeps its UIDLs. Sizes are
//!   IMAP's RFC822.SIZE plus the final CRLF that RETR adds to a message without one,
//!   worked out once per message and kept in the folder's index (cache blob
//!   [`POP3_SIZE`]).
//! - **mbox**: locked as `local` locks it (dotlock and fcntl) for the whole session, so a
//!   delivery waits (or is deferred and retried): nothing is lost and it shows up in the
//!   next session. Removal rewrites the file in place under a redo journal
//!   (`petrel_mailbox::MboxDrop::remove`).

use crate::settings::Location;
use petrel_mailbox::{LockPolicy, MboxDrop};
use petrel_mailstore::{Folder, Store};
use petrel_pop3_proto::Listing;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The mailstore cache blob holding a message's POP3 size (u64, little-endian). IMAP's
/// ENVELOPE and BODYSTRUCTURE are 1 and 2.
pub const POP3_SIZE: u8 = 3;

/// How long a session waits for another one's lock before `-ERR [IN-USE]`.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why a maildrop could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another session (or a delivery that takes too long) holds it: `[IN-USE]`.
    InUse(String),
    /// Anything else: `[SYS/TEMP]`.
    Other(String),
}

/// An open, locked maildrop.
pub enum Maildrop {
    /// A Maildir's INBOX; `uids[i]` is message i+1.
    Maildir {
        /// The folder.
        folder: Box<Folder>,
        /// The UIDs of the session's messages.
        uids: Vec<u32>,
        /// Holds the session lock.
        _lock: File,
    },
    /// An mbox.
    Mbox(MboxDrop),
}

impl Maildrop {
    /// Opens and locks the maildrop at `loc`; lists its messages.
    pub fn open(loc: &Location) -> Result<(Maildrop, Vec<Listing>), OpenError> {
        match loc {
            Location::Maildir(dir) => open_maildir(dir),
            Location::Mbox(path) => {
                let policy = LockPolicy {
                    timeout: LOCK_WAIT,
                    ..LockPolicy::default()
                };
                match MboxDrop::lock(path, &policy) {
                    Ok(m) => {
                        let list = m
                            .messages()
                            .iter()
                            .map(|e| Listing {
                                size: e.size,
                                uid: e.uid.clone(),
                            })
                            .collect();
                        Ok((Maildrop::Mbox(m), list))
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        Err(OpenError::InUse(e.to_string()))
                    }
                    Err(e) => Err(OpenError::Other(e.to_string())),
                }
            }
        }
    }

    /// Message `i`'s content as stored (LF or CRLF line ends).
    pub fn read(&mut self, i: usize) -> io::Result<Vec<u8>> {
        match self {
            Maildrop::Maildir { folder, uids, .. } => {
                let uid = *uids
                    .get(i)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such message"))?;
                let gone = || io::Error::new(io::ErrorKind::NotFound, "message removed");
                match std::fs::read(folder.path(uid).ok_or_else(gone)?) {
                    // IMAP renamed it (a flag change) since the listing: look again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        folder.sync()?;
                        std::fs::read(folder.path(uid).ok_or_else(gone)?)
                    }
                    other => other,
                }
            }
            Maildrop::Mbox(m) => m.read(i),
        }
    }

    /// Keeps long-held locks fresh (an mbox's dotlock).
    pub fn touch(&self) {
        if let Maildrop::Mbox(m) = self {
            m.touch();
        }
    }

    /// Ends the session: marks `seen` messages \Seen (Maildir; mbox has no flags) and,
    /// after QUIT, removes `delete`. Returns why removing failed (the messages are then
    /// all still there).
    pub fn finish(self, seen: &[usize], delete: &[usize]) -> Result<(), String> {
        match self {
            Maildrop::Maildir {
                mut folder, uids, ..
            } => {
                // Files IMAP renamed since the listing are found under their new names.
                if let Err(e) = folder.sync() {
                    log::warn!("{}: {e}", folder.dir().display());
                }
                let removed: std::collections::HashSet<usize> = delete.iter().copied().collect();
                for &i in seen.iter().filter(|i| !removed.contains(i)) {
                    if let Some(&uid) = uids.get(i) {
                        mark_seen(&mut folder, uid);
                    }
                }
                let gone: Vec<u32> = delete
                    .iter()
                    .filter_map(|&i| uids.get(i))
                    .copied()
                    .collect();
                let result = if gone.is_empty() {
                    Ok(())
                } else {
                    folder
                        .expunge(&gone)
                        .map(|_| ())
                        .map_err(|e| format!("{}: {e}", folder.dir().display()))
                };
                let _ = folder.save_index();
                result
            }
            Maildrop::Mbox(m) => m.remove(delete).map_err(|e| e.to_string()),
        }
    }
}

/// Sets \Seen on a message (a rename in cur/). Another session may have renamed it since
/// the listing: sync and try once more; a message gone meanwhile needs nothing.
fn mark_seen(folder: &mut Folder, uid: u32) {
    for _ in 0..2 {
        let Some(m) = folder.get(uid) else {
            return;
        };
        if m.flags.seen {
            return;
        }
        let mut flags = m.flags.clone();
        flags.seen = true;
        match folder.set_flags(uid, &flags) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if folder.sync().is_err() {
                    return;
                }
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot mark UID {uid} seen: {e}",
                    folder.dir().display()
                );
                return;
            }
        }
    }
}

fn open_maildir(dir: &Path) -> Result<(Maildrop, Vec<Listing>), OpenError> {
    let other = |e: &dyn std::fmt::Display| OpenError::Other(format!("{}: {e}", dir.display()));
    let store = Store::open(dir).map_err(|e| other(&e))?;
    let lock = session_lock(&dir.join("petrel-pop3.lock"))?;
    let mut folder = store.folder("INBOX").map_err(|e| other(&e))?;
    let validity = folder.uidvalidity();
    let uids: Vec<u32> = folder.messages().map(|m| m.uid).collect();
    let mut list = Vec::with_capacity(uids.len());
    let mut usable = Vec::with_capacity(uids.len());
    for uid in uids {
        match listing(&mut folder, uid, validity) {
            Ok(l) => {
                list.push(l);
                usable.push(uid);
            }
            // Expunged by IMAP since the sync: not part of this session.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(other(&e)),
        }
    }
    let _ = folder.save_index();
    Ok((
        Maildrop::Maildir {
            folder: Box::new(folder),
            uids: usable,
            _lock: lock,
        },
        list,
    ))
}

/// A Maildir message's UIDL and the octets RETR sends for it.
fn listing(folder: &mut Folder, uid: u32, validity: u32) -> io::Result<Listing> {
    let uidl = format!("{uid:08x}{validity:08x}");
    if let Some(b) = folder.cache(uid, POP3_SIZE) {
        if let Ok(b) = <[u8; 8]>::try_from(b) {
            return Ok(Listing {
                size: u64::from_le_bytes(b),
                uid: uidl,
            });
        }
    }
    let crlf = folder.rfc822_size(uid)?;
    let path = folder
        .path(uid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "gone"))?;
    // RETR ends a message without a final newline with CRLF.
    let mut size = crlf;
    let f = File::open(&path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            size += 2;
        }
    }
    folder.set_cache(uid, POP3_SIZE, &size.to_le_bytes())?;
    Ok(Listing { size, uid: uidl })
}

/// The Maildir's POP3 session lock: an open-file-description write lock, waited for up
/// to [`LOCK_WAIT`].
fn session_lock(path: &Path) -> Result<File, OpenError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| OpenError::Other(format!("{}: {e}", path.display())))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock is plain data; zeroes are valid (l_pid must be 0 for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        match nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => return Ok(f),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(OpenError::Other(format!("{}: {e}", path.display()))),
        }
        if Instant::now() >= deadline {
            return Err(OpenError::InUse(format!(
                "{} is held by another POP3 session",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
