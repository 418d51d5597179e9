//! Petrel's local mailbox writers: Maildir and mbox.
//!
//! Both writers are called by `local` after it has switched to the recipient's uid, and both
//! keep the same promise: when they return `Ok`, the message is on disk (fsynced, and so is
//! the directory entry that names it); when they return `Err`, the mailbox holds nothing of
//! this delivery.
//!
//! # Maildir ([`deliver_maildir`])
//!
//! The file name is derived from the caller's key (a queue id plus a recipient index), not
//! from the time, the pid or a counter, so a retried delivery picks the same name:
//!
//! ```text
//! ARRIVAL.KEY.HOSTNAME,S=SIZE        e.g. 1795400760.4F2K9ZQ7BX0031A.R3.mx1,S=2310
//! ```
//!
//! The message is written to `tmp/NAME`, fsynced, and hard-linked to `new/NAME`. If that link
//! already exists, an earlier attempt got that far and was killed before it could report:
//! the result is [`MaildirOutcome::AlreadyDelivered`] and no second copy is made. This is
//! what lets qmgr retry a delivery agent that died without duplicating mail. The caller must
//! pass the same `arrival_secs`, key and bytes on every attempt (the size is part of the
//! name); headers such as `Delivered-To:` and `Return-Path:` are fine, a header carrying the
//! time of the attempt is not. One limit: if the user's mail reader has already moved the
//! first copy to `cur/`, a retry cannot see it and delivers again.
//!
//! # mbox ([`deliver_mbox`])
//!
//! Messages are appended in the mboxrd format: a `From SENDER DATE` line, the content with
//! every line matching `^>*From ` given one more `>` (see [`mboxrd_quote`]; reading undoes it
//! exactly with [`mboxrd_unquote`]), a final newline if the content lacks one, and one blank
//! line. The mailbox is locked with a dotlock (`PATH.lock`) and an fcntl write lock, both
//! waited for up to [`LockPolicy::timeout`]; a dotlock older than
//! [`LockPolicy::stale_after`] is broken. A failed write is undone by truncating the file to
//! its length before the delivery.
//!
//! # POP3 maildrop ([`MboxDrop`])
//!
//! [`MboxDrop::lock`] locks an mbox for a POP3 session as [`deliver_mbox`] locks it, lists
//! its messages with their sizes and UIDLs, reads them, and [`MboxDrop::remove`] rewrites it
//! in place without the deleted ones. The rewrite is journaled (`PATH.petrel-journal`), so
//! that a crash half-way loses nothing: [`maildrop::recover`], which both
//! [`MboxDrop::lock`] and [`deliver_mbox`] run first under their locks, finishes it.
//!
//! # Errors
//!
//! Every error from this crate is an [`std::io::Error`] whose message names the file and the
//! step that failed; a lock that could not be had in time is [`std::io::ErrorKind::TimedOut`].
//! There is deliberately no "is this error permanent?" helper: a problem with a mailbox (full
//! disk, quota, lock held, a mailbox that is a directory, a missing or unwritable directory)
//! is something the user or the administrator can fix, so `local` treats every mailbox error
//! as a temporary failure and defers the recipient; the message bounces only when it expires
//! in the queue. Mail is never lost because a mailbox was briefly broken.
#![deny(missing_docs)]

pub mod maildir;
pub mod maildrop;
pub mod mbox;

pub use maildir::{deliver_maildir, maildir_name, MaildirOutcome};
pub use maildrop::{MboxDrop, MboxEntry};
pub use mbox::{deliver_mbox, mboxrd_quote, mboxrd_unquote, split_mbox, LockPolicy};

use std::fs::File;
use std::io;
use std::path::Path;

/// Adds the path and the step to an error, keeping its kind (and so its errno's meaning).
pub(crate) fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// fsyncs a directory, so that entries created or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "cannot fsync directory", dir))
}
