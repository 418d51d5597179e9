//! An mbox served to a POP3 session: locked for the session, listed, read, and rewritten in
//! place, crash-safely, to remove the messages the client deleted.
//!
//! [`MboxDrop::lock`] takes the same locks as [`crate::deliver_mbox`] (a dotlock and an fcntl
//! write lock, as the [`LockPolicy`] says) and keeps them until the [`MboxDrop`] is dropped or
//! [`MboxDrop::remove`] has finished, so no delivery appends during a session. It then scans
//! the file once, streaming, and records for each message where it lies, the size POP3
//! announces for it and its UIDL.
//!
//! # Removal
//!
//! The mbox is rewritten in place, never replaced by a renamed copy: a delivery waiting for
//! the fcntl lock holds the inode open, and `/var/mail` is often not writable by users. Let O
//! be the start of the first removed message, L0 the file's length, TAIL the bytes of every
//! kept message after O (each from its `From ` line up to the next message) and N = O +
//! len(TAIL).
//!
//! 1. The journal `PATH.petrel-journal` is created (mode 0600, exclusively) holding
//!    `PETRELJ1`, O, N, L0 and the mbox's device and inode (u64, little-endian, 48 bytes in
//!    all), then TAIL, then the SHA-256 of everything before; it and its directory are
//!    fsynced.
//! 2. TAIL is written at O, the mbox truncated to N and fsynced.
//! 3. The journal is deleted and the directory fsynced.
//!
//! A crash before the journal is complete leaves the mbox untouched and a journal whose
//! checksum fails; a crash after leaves a complete journal from which step 2 can be redone,
//! however far it got. [`recover`] does either, and both [`MboxDrop::lock`] and
//! [`crate::deliver_mbox`] call it under their locks before anything else, so nothing is
//! appended to a half-rewritten mbox.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use openssl::sha::Sha256;

use crate::mbox::{check_mailbox, fcntl_lock, mboxrd_unquote, DotLock, LockPolicy};
use crate::{context, sync_dir};

/// How much is read or written at a time when scanning and copying.
const CHUNK: usize = 64 * 1024;

/// The separator that starts a message (at the start of a line).
const FROM: &[u8; 5] = b"From ";

/// The journal's first bytes.
const MAGIC: &[u8; 8] = b"PETRELJ1";

/// The journal's header: the magic and five u64.
const HEADER_LEN: u64 = 48;

/// The SHA-256 at the journal's end.
const SUM_LEN: u64 = 32;

/// One message of a locked mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxEntry {
    /// Offset of its `From ` separator line.
    pub start: u64,
    /// Offset of the first content byte (after the separator line). The content, still
    /// quoted, is `content_start..content_end`; the blank line that ends a message (before
    /// the next `From ` line or at the end of the file) is not part of it, as in
    /// [`crate::split_mbox`].
    pub content_start: u64,
    /// Offset just after the content's last byte.
    pub content_end: u64,
    /// The octets POP3 RETR sends for the unquoted content (before dot-stuffing): every
    /// bare LF counts as CRLF, and a CRLF is added when the content is not empty and does
    /// not end with LF.
    pub size: u64,
    /// The UIDL: 32 lowercase hex digits (the first 16 bytes of the SHA-256 of the
    /// separator line, the first [`UIDL_CONTENT`] bytes of the quoted content — headers,
    /// where Message-ID, Date and Received make messages differ — and the content's
    /// length), with `-2`, `-3`, ... appended to the second,
    /// third, ... message of the mbox having the same digest. Stable across sessions as
    /// long as the messages before an identical one are not removed.
    pub uid: String,
}

/// An mbox locked for a POP3 session: a dotlock and an fcntl lock taken as
/// [`crate::deliver_mbox`] takes them (same [`LockPolicy`]), held until this is dropped or
/// [`MboxDrop::remove`] has finished.
#[derive(Debug)]
pub struct MboxDrop {
    path: PathBuf,
    /// `None` when there is no mbox. Declared before the dotlock, so closed (releasing the
    /// fcntl lock) before the dotlock is removed.
    file: Option<File>,
    /// The file's length when it was scanned.
    len: u64,
    messages: Vec<MboxEntry>,
    dotlock: Option<DotLock>,
}

impl MboxDrop {
    /// Locks the mbox at `path` and lists its messages.
    ///
    /// Waits up to `policy.timeout` for the locks; a lock not had in time is
    /// [`io::ErrorKind::TimedOut`] with a message saying the mailbox is locked by another
    /// process. With the locks held it first finishes a removal a crash interrupted (see
    /// [`recover`]), then scans the file, streaming. A missing mbox is an empty maildrop
    /// (and is not created). The mbox is opened read-write without following a symbolic
    /// link; one that is not a regular file or has more than one hard link is refused, as
    /// [`crate::deliver_mbox`] refuses it.
    pub fn lock(path: &Path, policy: &LockPolicy) -> io::Result<MboxDrop> {
        let deadline = Instant::now() + policy.timeout;
        let dotlock = if policy.dotlock {
            DotLock::acquire(path, deadline, policy).map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "mailbox {} is locked by another process: {e}",
                            path.display()
                        ),
                    )
                } else {
                    e
                }
            })?
        } else {
            None
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            // O_NONBLOCK: opening a FIFO must not hang; it has no effect on a regular file.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(MboxDrop {
                    path: path.to_path_buf(),
                    file: None,
                    len: 0,
                    messages: Vec::new(),
                    dotlock,
                })
            }
            Err(e) => return Err(context(e, "cannot open mailbox", path)),
        };
        check_mailbox(&file, path)?;
        if policy.fcntl {
            fcntl_lock(&file, path, deadline, policy.timeout)?;
        }
        recover(path, &file)?;
        let (messages, len) = match listing::load(path, &file) {
            Some(found) => found,
            None => {
                let (messages, len) = scan(&file, path)?;
                listing::save(path, &file, &messages, len);
                (messages, len)
            }
        };
        Ok(MboxDrop {
            path: path.to_path_buf(),
            file: Some(file),
            len,
            messages,
            dotlock,
        })
    }

    /// The messages, in the order of the file.
    pub fn messages(&self) -> &[MboxEntry] {
        &self.messages
    }

    /// The content of message `i` (an index into [`MboxDrop::messages`]), unquoted (see
    /// [`crate::mboxrd_unquote`]), as it was delivered: line ends as in the file. Reads only
    /// that message's bytes.
    pub fn read(&self, i: usize) -> io::Result<Vec<u8>> {
        let entry = self.entry(i)?;
        let file = self.opened()?;
        let len = usize::try_from(entry.content_end - entry.content_start).map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "message {i} of {} is too large to read",
                    self.path.display()
                ),
            )
        })?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, entry.content_start)
            .map_err(|e| context(e, "cannot read mailbox", &self.path))?;
        Ok(mboxrd_unquote(&buf))
    }

    /// Sets the dotlock's modification time to now, so that deliveries do not break it as
    /// stale during a long session. Does nothing when there is no dotlock (or it is no
    /// longer ours).
    pub fn touch(&self) {
        if let Some(lock) = &self.dotlock {
            lock.touch();
        }
    }

    /// Removes the messages at `indices` (into [`MboxDrop::messages`]; repeats are allowed)
    /// from the mbox, crash-safely, then unlocks it. An empty list just unlocks.
    ///
    /// If the journal cannot be written (the directory is not writable, the disk is full,
    /// an index is out of range, ...), the error says so and the mbox is unchanged. If
    /// rewriting the mbox fails after that, the journal is kept and the removal is finished
    /// by the next [`MboxDrop::lock`] or delivery.
    pub fn remove(self, indices: &[usize]) -> io::Result<()> {
        if indices.is_empty() {
            return Ok(());
        }
        let fail = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot remove messages from {}: {e}", self.path.display()),
            )
        };
        let plan = self.plan(indices).map_err(fail)?;
        let file = self.opened().map_err(fail)?;
        let jpath = journal_path(&self.path);
        let journal = write_journal(&self.path, file, &jpath, &plan).map_err(fail)?;
        apply_journal(&self.path, file, &jpath, &journal, &plan.header).map_err(|e| {
            fail(io::Error::new(
                e.kind(),
                format!(
                    "{e}; the journal {} is kept and the removal will be finished when the \
                     mailbox is next locked",
                    jpath.display()
                ),
            ))
        })?;
        delete_journal(&jpath).map_err(fail)
    }

    fn entry(&self, i: usize) -> io::Result<&MboxEntry> {
        self.messages.get(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mailbox {} has no message {i} (it has {})",
                    self.path.display(),
                    self.messages.len()
                ),
            )
        })
    }

    fn opened(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("mailbox {} does not exist", self.path.display()),
            )
        })
    }

    /// Works out what removing `indices` writes: the journal's header and the ranges of the
    /// mbox that make up TAIL.
    fn plan(&self, indices: &[usize]) -> io::Result<Plan> {
        let mut removed = vec![false; self.messages.len()];
        for &i in indices {
            self.entry(i)?;
            removed[i] = true;
        }
        let file = self.opened()?;
        let meta = file
            .metadata()
            .map_err(|e| context(e, "cannot stat mailbox", &self.path))?;
        if meta.len() != self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "mailbox {} is now {} bytes long, not {} as when it was locked: another \
                     program changed it",
                    self.path.display(),
                    meta.len(),
                    self.len
                ),
            ));
        }
        let mut header = Header {
            start: self.len,
            end: self.len,
            old_len: self.len,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let mut ranges = Vec::new();
        let mut first_removed = None;
        for (i, entry) in self.messages.iter().enumerate() {
            if removed[i] {
                first_removed.get_or_insert(entry.start);
            } else if first_removed.is_some() {
                let end = self.messages.get(i + 1).map_or(self.len, |next| next.start);
                ranges.push((entry.start, end));
            }
        }
        if let Some(start) = first_removed {
            header.start = start;
            header.end = start + ranges.iter().map(|(s, e)| e - s).sum::<u64>();
        }
        Ok(Plan { header, ranges })
    }
}

/// Finishes a removal of messages that a crash interrupted.
///
/// When `PATH.petrel-journal` exists: if it is incomplete (its checksum fails: the crash
/// came while it was written, before the mbox was touched), it is deleted and the mbox left
/// as it is; otherwise the rewrite of the mbox is redone (it is idempotent) and the journal
/// deleted. Without a journal this returns `Ok` at once.
///
/// `file` must be the mbox at `path`, opened for writing (`O_APPEND` is fine) and locked
/// with the dotlock and the fcntl lock. Refused with an error, leaving the journal and the
/// mbox alone: a journal that is not a regular file with one link owned by the mbox's
/// owner, root or us; a complete journal written for another file (another device or
/// inode), or for an mbox whose length the interrupted removal cannot have left (another
/// program changed it).
pub fn recover(path: &Path, file: &File) -> io::Result<()> {
    let jpath = journal_path(path);
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot finish an interrupted removal of messages from {}: {e}",
                path.display()
            ),
        )
    };
    let journal = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&jpath)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(context(e, "cannot open journal", &jpath))),
    };
    let mbox = file
        .metadata()
        .map_err(|e| fail(context(e, "cannot stat mailbox", path)))?;
    let meta = journal
        .metadata()
        .map_err(|e| fail(context(e, "cannot stat journal", &jpath)))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file()
        || meta.nlink() != 1
        || ![0, euid, mbox.uid()].contains(&meta.uid())
    {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the journal {} is not a regular file with one link owned by the mailbox's \
                 owner or root; remove it if it is not Petrel's",
                jpath.display()
            ),
        )));
    }
    let Some(header) = read_journal(&journal, &jpath, meta.len()).map_err(fail)? else {
        // Incomplete: the mbox was not touched yet.
        return delete_journal(&jpath).map_err(fail);
    };
    if (header.dev, header.ino) != (mbox.dev(), mbox.ino()) {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the journal {} was written for another file (device {} inode {}, the \
                 mailbox is device {} inode {}); move it away once the messages it holds \
                 are safe",
                jpath.display(),
                header.dev,
                header.ino,
                mbox.dev(),
                mbox.ino()
            ),
        )));
    }
    if mbox.len() < header.start || mbox.len() > header.old_len {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the mailbox is {} bytes long, which a removal rewriting bytes {}.. of {} \
                 cannot have left: another program changed it; move the journal {} away \
                 once the messages it holds are safe",
                mbox.len(),
                header.start,
                header.old_len,
                jpath.display()
            ),
        )));
    }
    // pwrite on an O_APPEND descriptor appends (Linux), so the flag is off while rewriting.
    let flags = OFlag::from_bits_retain(
        fcntl(file, FcntlArg::F_GETFL)
            .map_err(|e| fail(context(e.into(), "cannot get the flags of mailbox", path)))?,
    );
    let appending = flags.contains(OFlag::O_APPEND);
    let set_flags = |flags: OFlag| {
        fcntl(file, FcntlArg::F_SETFL(flags))
            .map(drop)
            .map_err(|e| fail(context(e.into(), "cannot set the flags of mailbox", path)))
    };
    if appending {
        set_flags(flags - OFlag::O_APPEND)?;
    }
    let applied = apply_journal(path, file, &jpath, &journal, &header).map_err(fail);
    if appending {
        // Not restoring it would make the caller write at offset 0.
        set_flags(flags)?;
    }
    applied?;
    delete_journal(&jpath).map_err(fail)
}

/// `PATH.petrel-journal`.
fn journal_path(mailbox: &Path) -> PathBuf {
    let mut s = mailbox.as_os_str().to_os_string();
    s.push(".petrel-journal");
    PathBuf::from(s)
}

/// The directory holding `path`.
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The journal's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// O: where the first removed message started, and TAIL is written.
    start: u64,
    /// N = O + len(TAIL): the mbox's length after the removal.
    end: u64,
    /// L0: the mbox's length before the removal.
    old_len: u64,
    dev: u64,
    ino: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0; HEADER_LEN as usize];
        out[..8].copy_from_slice(MAGIC);
        let fields = [self.start, self.end, self.old_len, self.dev, self.ino];
        for (slot, value) in out[8..].chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// `None` unless it has the magic and O <= N <= L0.
    fn decode(bytes: &[u8; HEADER_LEN as usize]) -> Option<Header> {
        let (magic, rest) = bytes.split_at(8);
        if magic != MAGIC {
            return None;
        }
        let mut fields = [0u64; 5];
        for (field, chunk) in fields.iter_mut().zip(rest.chunks_exact(8)) {
            *field = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        let [start, end, old_len, dev, ino] = fields;
        (start <= end && end <= old_len).then_some(Header {
            start,
            end,
            old_len,
            dev,
            ino,
        })
    }
}

/// What a removal writes: the journal's header and the ranges of the mbox, in order, whose
/// concatenation is TAIL.
#[derive(Debug)]
struct Plan {
    header: Header,
    ranges: Vec<(u64, u64)>,
}

/// Step 1: writes the journal at `jpath` (which must not exist), fsyncs it and its
/// directory. On error it is removed again and the mbox has not been touched.
fn write_journal(path: &Path, file: &File, jpath: &Path, plan: &Plan) -> io::Result<File> {
    let journal = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(jpath)
        .map_err(|e| context(e, "cannot create journal", jpath))?;
    let result = (|| {
        let write_err = |e| context(e, "cannot write journal", jpath);
        let mut w = BufWriter::with_capacity(CHUNK, &journal);
        let mut sum = Sha256::new();
        let header = plan.header.encode();
        sum.update(&header);
        w.write_all(&header).map_err(write_err)?;
        let mut buf = vec![0; CHUNK];
        for &(start, end) in &plan.ranges {
            let mut at = start;
            while at < end {
                let n = chunk_len(end - at);
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(|e| context(e, "cannot read mailbox", path))?;
                sum.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(write_err)?;
                at += n as u64;
            }
        }
        w.write_all(&sum.finish()).map_err(write_err)?;
        w.flush().map_err(write_err)?;
        drop(w);
        journal.sync_all().map_err(write_err)?;
        sync_dir(parent_dir(jpath))
    })();
    match result {
        Ok(()) => Ok(journal),
        Err(e) => {
            let _ = fs::remove_file(jpath);
            Err(e)
        }
    }
}

/// Step 2: copies TAIL from the journal to the mbox at O, truncates it to N and fsyncs it.
/// Idempotent.
fn apply_journal(
    path: &Path,
    file: &File,
    jpath: &Path,
    journal: &File,
    header: &Header,
) -> io::Result<()> {
    let write_err = |e| context(e, "cannot write mailbox", path);
    let mut buf = vec![0; CHUNK];
    let mut at = 0;
    let len = header.end - header.start;
    while at < len {
        let n = chunk_len(len - at);
        journal
            .read_exact_at(&mut buf[..n], HEADER_LEN + at)
            .map_err(|e| context(e, "cannot read journal", jpath))?;
        file.write_all_at(&buf[..n], header.start + at)
            .map_err(write_err)?;
        at += n as u64;
    }
    file.set_len(header.end).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// Step 3: deletes the journal and fsyncs its directory.
fn delete_journal(jpath: &Path) -> io::Result<()> {
    fs::remove_file(jpath).map_err(|e| context(e, "cannot remove journal", jpath))?;
    sync_dir(parent_dir(jpath))
}

/// Reads and checks the journal (`len` bytes long): its header when it is complete, `None`
/// when it is not (too short, wrong magic, wrong length, wrong checksum).
fn read_journal(journal: &File, jpath: &Path, len: u64) -> io::Result<Option<Header>> {
    let read_err = |e| context(e, "cannot read journal", jpath);
    if len < HEADER_LEN + SUM_LEN {
        return Ok(None);
    }
    let mut bytes = [0; HEADER_LEN as usize];
    journal.read_exact_at(&mut bytes, 0).map_err(read_err)?;
    let Some(header) = Header::decode(&bytes) else {
        return Ok(None);
    };
    let expected = (header.end - header.start)
        .checked_add(HEADER_LEN + SUM_LEN)
        .filter(|&n| n == len);
    let Some(body_end) = expected.map(|n| n - SUM_LEN) else {
        return Ok(None);
    };
    let mut sum = Sha256::new();
    sum.update(&bytes);
    let mut buf = vec![0; CHUNK];
    let mut at = HEADER_LEN;
    while at < body_end {
        let n = chunk_len(body_end - at);
        journal.read_exact_at(&mut buf[..n], at).map_err(read_err)?;
        sum.update(&buf[..n]);
        at += n as u64;
    }
    let mut stored = [0; SUM_LEN as usize];
    journal
        .read_exact_at(&mut stored, body_end)
        .map_err(read_err)?;
    Ok((sum.finish() == stored).then_some(header))
}

/// `min(CHUNK, left)`.
fn chunk_len(left: u64) -> usize {
    usize::try_from(left).map_or(CHUNK, |n| n.min(CHUNK))
}

/// Scans the mbox from its start: its messages and its length.
/// A cache of an mbox's listing, `PATH.petrel-index`, so that a session on an unchanged
/// mbox does not read it all: valid only for the file with the same device, inode, size,
/// mtime and ctime (any write changes ctime, and nothing can set it back), checksummed,
/// and owned by us. Written (to a temporary name, then renamed) when the mbox's directory
/// lets us; a cache that is missing, stale, foreign or damaged is simply not used.
mod listing {
    use super::MboxEntry;
    use openssl::sha::sha256;
    use std::fs::{self, File};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    const MAGIC: &[u8; 8] = b"PETRELI1";

    fn path_of(mbox: &Path) -> PathBuf {
        let mut s = mbox.as_os_str().to_os_string();
        s.push(".petrel-index");
        PathBuf::from(s)
    }

    /// What identifies one state of the mbox.
    fn key(file: &File) -> Option<[u64; 7]> {
        let m = file.metadata().ok()?;
        Some([
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ])
    }

    /// The cached listing of `file`, if there is a valid one.
    pub(super) fn load(mbox: &Path, file: &File) -> Option<(Vec<MboxEntry>, u64)> {
        let path = path_of(mbox);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_file()
            || meta.nlink() != 1
            || meta.uid() != nix::unistd::geteuid().as_raw()
        {
            return None;
        }
        let data = fs::read(&path).ok()?;
        let (body, sum) = data.split_at(data.len().checked_sub(32)?);
        if sha256(body) != sum {
            return None;
        }
        let mut r = Reader(body);
        if r.take(8)? != MAGIC {
            return None;
        }
        let key = key(file)?;
        for k in key {
            if r.u64()? != k {
                return None;
            }
        }
        let len = key[2];
        let n = r.u64()? as usize;
        let mut messages = Vec::with_capacity(n.min(body.len() / 33));
        let mut prev_end = 0;
        for _ in 0..n {
            let (start, content_start, content_end, size) =
                (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let ulen = usize::from(*r.take(1)?.first()?);
            let uid = String::from_utf8(r.take(ulen)?.to_vec()).ok()?;
            // Offsets in order and inside the file, or the cache is not ours to trust.
            if start < prev_end
                || content_start < start
                || content_end < content_start
                || content_end > len
            {
                return None;
            }
            prev_end = content_end;
            messages.push(MboxEntry {
                start,
                content_start,
                content_end,
                size,
                uid,
            });
        }
        r.0.is_empty().then_some((messages, len))
    }

    /// Caches the listing of `file` (best effort).
    pub(super) fn save(mbox: &Path, file: &File, messages: &[MboxEntry], len: u64) {
        let Some(key) = key(file) else { return };
        if key[2] != len {
            return;
        }
        let mut out = Vec::with_capacity(80 + messages.len() * 72);
        out.extend_from_slice(MAGIC);
        for k in key {
            out.extend_from_slice(&k.to_le_bytes());
        }
        out.extend_from_slice(&(messages.len() as u64).to_le_bytes());
        for m in messages {
            for v in [m.start, m.content_start, m.content_end, m.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            let Ok(ulen) = u8::try_from(m.uid.len()) else {
                return;
            };
            out.push(ulen);
            out.extend_from_slice(m.uid.as_bytes());
        }
        let sum = sha256(&out);
        out.extend_from_slice(&sum);
        let path = path_of(mbox);
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&out))
        };
        if written.and_then(|()| fs::rename(&tmp, &path)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }

        fn u64(&mut self) -> Option<u64> {
            self.take(8)?.try_into().ok().map(u64::from_le_bytes)
        }
    }
}

fn scan(file: &File, path: &Path) -> io::Result<(Vec<MboxEntry>, u64)> {
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut scanner = Scanner::default();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(context(e, "cannot read mailbox", path)),
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        scanner.feed(buf);
        reader.consume(n);
    }
    Ok(scanner.finish())
}

/// Where the scanner is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line, or in its first bytes while they may still be `>*From `:
    /// `gts` `>` seen (already counted as content), then the first `matched` bytes of
    /// `From ` (held back: with no `>` before them they may start a separator).
    Head { gts: u64, matched: usize },
    /// In the rest of a line that is not a separator.
    Body,
    /// In the rest of a separator line.
    Separator,
}

/// The message being scanned.
struct Current {
    start: u64,
    content_start: u64,
    content_end: u64,
    size: u64,
    /// The last content byte counted; 0 before the first.
    prev: u8,
    /// The offset of a blank line held back: it is content only if more content follows.
    pending_blank: Option<u64>,
    sum: Sha256,
    /// Content bytes hashed so far (at most [`UIDL_CONTENT`]).
    hashed: usize,
}

/// How much of a message's content its UIDL digest covers: hashing whole messages made
/// listing a large mbox cost more than reading it.
pub const UIDL_CONTENT: usize = 4096;

impl Current {
    /// Adds content bytes to the digest while under [`UIDL_CONTENT`].
    fn hash(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(UIDL_CONTENT - self.hashed);
        if n > 0 {
            self.sum.update(&bytes[..n]);
            self.hashed += n;
        }
    }
}

/// Splits an mbox into [`MboxEntry`]s as [`crate::split_mbox`] does, fed in chunks of any
/// size.
struct Scanner {
    /// The offset of the next byte fed.
    pos: u64,
    state: LineState,
    current: Option<Current>,
    messages: Vec<MboxEntry>,
    /// How often each digest has been seen.
    seen: HashMap<[u8; 16], u32>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            pos: 0,
            state: LineState::Head { gts: 0, matched: 0 },
            current: None,
            messages: Vec::new(),
            seen: HashMap::new(),
        }
    }
}

impl Scanner {
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(&b) = data.first() {
            match self.state {
                LineState::Head { gts, matched } => {
                    if matched == 0 && b == b'>' {
                        if gts == 0 {
                            self.begin_line();
                        }
                        self.pos += 1;
                        self.content(b">");
                        self.state = LineState::Head {
                            gts: gts + 1,
                            matched: 0,
                        };
                        data = &data[1..];
                    } else if b == FROM[matched] {
                        self.pos += 1;
                        data = &data[1..];
                        if matched + 1 < FROM.len() {
                            self.state = LineState::Head {
                                gts,
                                matched: matched + 1,
                            };
                        } else if gts == 0 {
                            self.separator();
                            self.state = LineState::Separator;
                        } else {
                            // `>+From `: unquoting removes one `>`.
                            self.content(FROM);
                            if let Some(c) = &mut self.current {
                                c.size -= 1;
                            }
                            self.state = LineState::Body;
                        }
                    } else if gts == 0 && matched == 0 && b == b'\n' {
                        self.pos += 1;
                        data = &data[1..];
                        self.begin_line();
                        if let Some(c) = &mut self.current {
                            c.pending_blank = Some(self.pos - 1);
                        }
                    } else {
                        if gts == 0 {
                            self.begin_line();
                        }
                        self.content(&FROM[..matched]);
                        self.state = LineState::Body;
                    }
                }
                LineState::Body | LineState::Separator => {
                    let (end, eol) = match memchr::memchr(b'\n', data) {
                        Some(i) => (i + 1, true),
                        None => (data.len(), false),
                    };
                    let (line, rest) = data.split_at(end);
                    self.pos += end as u64;
                    if self.state == LineState::Body {
                        self.content(line);
                    } else if let Some(c) = &mut self.current {
                        c.sum.update(line);
                        c.content_start = self.pos;
                        c.content_end = self.pos;
                    }
                    if eol {
                        self.state = LineState::Head { gts: 0, matched: 0 };
                    }
                    data = rest;
                }
            }
        }
    }

    /// Ends the scan: the messages and the length of what was fed.
    fn finish(mut self) -> (Vec<MboxEntry>, u64) {
        if let LineState::Head { gts, matched } = self.state {
            if matched > 0 {
                if gts == 0 {
                    self.begin_line();
                }
                self.content(&FROM[..matched]);
            }
        }
        self.end_message();
        (self.messages, self.pos)
    }

    /// A line that is content starts: the blank line held back before it is content too.
    fn begin_line(&mut self) {
        if let Some(c) = &mut self.current {
            if let Some(at) = c.pending_blank.take() {
                c.hash(b"\n");
                c.size += 2;
                c.prev = b'\n';
                c.content_end = at + 1;
            }
        }
    }

    /// Counts content bytes that end at `self.pos`. They hold at most one LF, at the end.
    fn content(&mut self, bytes: &[u8]) {
        let (Some(c), Some(&last)) = (&mut self.current, bytes.last()) else {
            return;
        };
        c.hash(bytes);
        c.size += bytes.len() as u64;
        if last == b'\n' {
            let before = bytes.len().checked_sub(2).map_or(c.prev, |i| bytes[i]);
            if before != b'\r' {
                c.size += 1;
            }
        }
        c.prev = last;
        c.content_end = self.pos;
    }

    /// A separator line's `From ` has just been fed: a new message starts.
    fn separator(&mut self) {
        self.end_message();
        let mut sum = Sha256::new();
        sum.update(FROM);
        self.current = Some(Current {
            start: self.pos - FROM.len() as u64,
            content_start: self.pos,
            content_end: self.pos,
            size: 0,
            prev: 0,
            pending_blank: None,
            sum,
            hashed: 0,
        });
    }

    /// The current message (if any) is complete: a blank line held back is dropped.
    fn end_message(&mut self) {
        let Some(c) = self.current.take() else {
            return;
        };
        let mut size = c.size;
        if c.content_end > c.content_start && c.prev != b'\n' {
            size += 2;
        }
        let mut sum = c.sum;
        sum.update(&(c.content_end - c.content_start).to_le_bytes());
        let digest = sum.finish();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        let mut uid = String::with_capacity(40);
        for b in key {
            uid.push(char::from(HEX[usize::from(b >> 4)]));
            uid.push(char::from(HEX[usize::from(b & 15)]));
        }
        let seen = self.seen.entry(key).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            uid = format!("{uid}-{seen}");
        }
        self.messages.push(MboxEntry {
            start: c.start,
            content_start: c.content_start,
            content_end: c.content_end,
            size,
            uid,
        });
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{deliver_mbox, split_mbox};
    use std::time::{Duration, SystemTime};

    fn quick(timeout_ms: u64) -> LockPolicy {
        LockPolicy {
            timeout: Duration::from_millis(timeout_ms),
            ..LockPolicy::default()
        }
    }

    use petrel_pop3_proto::wire_size;

    const BODIES: [&[u8]; 6] = [
        b"Subject: one\n\nFrom the start\n>From quoted\n>>From twice\nFrom\n",
        b"Subject: two\n\nno final newline",
        b"Subject: three\r\n\r\nFrom x\r\nCRLF lines\r\n",
        b"",
        b"Subject: five\n\nends with blank lines\n\n\n",
        b"Subject: one\n\nFrom the start\n>From quoted\n>>From twice\nFrom\n",
    ];

    /// An mbox holding BODIES (the last a copy of the first, same sender and date).
    fn sample(dir: &Path) -> PathBuf {
        let mbox = dir.join("user");
        for (i, body) in BODIES.iter().enumerate() {
            let (sender, secs) = if i == 5 {
                ("a@example.org", 1_000_000_000)
            } else {
                (
                    ["a@example.org", "", "b@x", "c@y", "d@z"][i],
                    1_000_000_000 + i as i64,
                )
            };
            deliver_mbox(&mbox, sender, secs, &[body], &quick(1000)).expect("deliver");
        }
        mbox
    }

    fn scan_bytes(data: &[u8], chunk: usize) -> Vec<MboxEntry> {
        let mut s = Scanner::default();
        for part in data.chunks(chunk) {
            s.feed(part);
        }
        let (messages, len) = s.finish();
        assert_eq!(len, data.len() as u64);
        messages
    }

    /// The entries agree with split_mbox on `data`, however it is fed.
    fn check_against_split(data: &[u8]) -> Vec<MboxEntry> {
        let want = split_mbox(data);
        let got = scan_bytes(data, CHUNK);
        let text = String::from_utf8_lossy(data);
        assert_eq!(got.len(), want.len(), "{text:?}");
        for (g, w) in got.iter().zip(&want) {
            let range = g.content_start as usize..g.content_end as usize;
            assert_eq!(mboxrd_unquote(&data[range]), w.content, "{text:?}");
            assert_eq!(g.size, wire_size(&w.content), "{text:?}");
            assert!(data[g.start as usize..].starts_with(b"From "));
        }
        for chunk in [1, 2, 3, 5, 7] {
            assert_eq!(scan_bytes(data, chunk), got, "chunks of {chunk}: {text:?}");
        }
        got
    }

    #[test]
    fn the_scanner_agrees_with_split_mbox() {
        let cases: [&[u8]; 16] = [
            b"",
            b"\n",
            b"preamble\nFrom x\n\n",
            b"From x\n",
            b"From x",
            b"From x\n\n\n",
            b"From x\n\nFrom y\nb\n\n",
            b"From x\nFro",
            b"From x\n\nFro",
            b"From x\n>From a\n>>From b\n>Fro\n>\n>>\n\n",
            b"From x\nFrom\nFrom:\n From a\n\n",
            b"From x\r\na\r\n\r\n\nFrom y\r\n\r\n",
            b"From x\n\r\n\n",
            b"From x\n\n>From y\n\n",
            b"From x\nno newline at all",
            b">From x\nFrom y\n>\n",
        ];
        for data in cases {
            check_against_split(data);
        }
    }

    #[test]
    fn lists_sizes_contents_and_uids() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let data = fs::read(&mbox).expect("read");
        let want = split_mbox(&data);
        assert_eq!(want.len(), BODIES.len());
        check_against_split(&data);
        let drop1 = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let msgs = drop1.messages().to_vec();
        assert_eq!(msgs.len(), BODIES.len());
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.size, wire_size(&want[i].content), "message {i}");
            assert_eq!(drop1.read(i).expect("read"), want[i].content, "message {i}");
            let base = m.uid.split('-').next().expect("base");
            assert_eq!(base.len(), 32, "{}", m.uid);
            assert!(base.bytes().all(|b| HEX.contains(&b)), "{}", m.uid);
            assert!(m.uid.len() <= 70);
        }
        // The delivered content, newline added where it lacked one.
        assert_eq!(
            drop1.read(1).expect("read"),
            b"Subject: two\n\nno final newline\n"
        );
        assert_eq!(drop1.read(3).expect("read"), b"");
        assert_eq!(msgs[3].size, 0);
        assert_eq!(drop1.read(4).expect("read"), BODIES[4]);
        assert_eq!(msgs[2].size, BODIES[2].len() as u64);
        assert_eq!(msgs[5].uid, format!("{}-2", msgs[0].uid));
        let mut uids: Vec<&str> = msgs.iter().map(|m| m.uid.as_str()).collect();
        uids.sort_unstable();
        uids.dedup();
        assert_eq!(uids.len(), msgs.len(), "unique");
        assert!(drop1.read(6).is_err());
        drop(drop1);
        let drop2 = MboxDrop::lock(&mbox, &quick(1000)).expect("lock again");
        assert_eq!(drop2.messages(), msgs, "stable across sessions");
        drop2.remove(&[]).expect("just unlock");
        assert_eq!(fs::read(&mbox).expect("read"), data);
        assert!(!journal_path(&mbox).exists());
    }

    #[test]
    fn the_listing_cache_is_used_only_for_the_same_file_state() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let first = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let msgs = first.messages().to_vec();
        drop(first);
        let cache = t.path().join("user.petrel-index");
        assert!(cache.is_file(), "the listing was cached");
        // A damaged cache is not used: the listing comes from the file.
        let mut bytes = fs::read(&cache).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&cache, &bytes).expect("write");
        let again = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert_eq!(again.messages(), msgs);
        drop(again);
        // A delivery changes the file: the cache no longer matches it.
        deliver_mbox(
            &mbox,
            "x@example.org",
            0,
            &[b"Subject: new\n\nnew\n"],
            &quick(1000),
        )
        .expect("deliver");
        let after = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert_eq!(after.messages().len(), msgs.len() + 1);
        assert_eq!(&after.messages()[..msgs.len()], &msgs[..]);
        assert_eq!(
            after.read(msgs.len()).expect("read"),
            b"Subject: new\n\nnew\n"
        );
        // A removal too.
        after.remove(&[0]).expect("remove");
        let last = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert_eq!(last.messages().len(), msgs.len());
        assert_eq!(
            last.read(0).expect("read"),
            split_mbox(&fs::read(&mbox).expect("read"))[0].content
        );
    }

    /// The envelopes and contents of `data`'s messages.
    fn parsed(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        split_mbox(data)
            .into_iter()
            .map(|m| (m.envelope.to_vec(), m.content))
            .collect()
    }

    #[test]
    fn removes_the_middle_and_the_last() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        let all = parsed(&before);
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let starts: Vec<usize> = md.messages().iter().map(|m| m.start as usize).collect();
        md.remove(&[2, 5, 2]).expect("remove");
        let after = fs::read(&mbox).expect("read");
        assert_eq!(
            after,
            [&before[..starts[2]], &before[starts[3]..starts[5]]].concat()
        );
        let kept: Vec<_> = [0, 1, 3, 4].iter().map(|&i| all[i].clone()).collect();
        assert_eq!(parsed(&after), kept);
        assert!(!journal_path(&mbox).exists());
        assert!(!mbox.with_file_name("user.lock").exists());
        deliver_mbox(&mbox, "s@x", 7, &[b"new\n"], &quick(1000)).expect("deliver after");
        let data = fs::read(&mbox).expect("read");
        let msgs = parsed(&data);
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[..4], kept);
        assert_eq!(msgs[4].1, b"new\n");
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert_eq!(md.messages().len(), 5);
    }

    #[test]
    fn removes_everything_or_the_first() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let all = parsed(&fs::read(&mbox).expect("read"));
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let uids: Vec<String> = md.messages().iter().map(|m| m.uid.clone()).collect();
        md.remove(&[0]).expect("remove first");
        assert_eq!(parsed(&fs::read(&mbox).expect("read")), all[1..]);
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let now: Vec<&str> = md.messages().iter().map(|m| m.uid.as_str()).collect();
        // The copy of the first message no longer has an earlier twin.
        assert_eq!(now[..4], uids[1..5]);
        assert_eq!(now[4], uids[0]);
        let e = md.remove(&[0, 9]).expect_err("out of range");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("cannot remove messages from"), "{e}");
        assert_eq!(parsed(&fs::read(&mbox).expect("read")), all[1..]);
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        md.remove(&[0, 1, 2, 3, 4]).expect("remove all");
        assert_eq!(fs::read(&mbox).expect("read"), b"");
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert!(md.messages().is_empty());
    }

    /// Runs step 1 of removing `indices`, then `crash` with the locked mbox, the journal and
    /// its header, then drops everything as a crash would (releasing the locks).
    fn crash_after_journal(
        mbox: &Path,
        indices: &[usize],
        crash: impl FnOnce(&File, &File, &Header),
    ) {
        let md = MboxDrop::lock(mbox, &quick(1000)).expect("lock");
        let plan = md.plan(indices).expect("plan");
        let file = md.file.as_ref().expect("file");
        let jpath = journal_path(mbox);
        let journal = write_journal(mbox, file, &jpath, &plan).expect("step 1");
        crash(file, &journal, &plan.header);
        drop(md);
        assert!(jpath.exists());
    }

    /// `before`'s messages but 1 and 3.
    fn kept_1_3(before: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let all = parsed(before);
        [0, 2, 4, 5].iter().map(|&i| all[i].clone()).collect()
    }

    #[test]
    fn a_removal_interrupted_half_way_is_finished_by_the_next_lock() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        crash_after_journal(&mbox, &[1, 3], |file, journal, h| {
            let len = h.end - h.start;
            let mut tail = vec![0; len as usize];
            journal
                .read_exact_at(&mut tail, HEADER_LEN)
                .expect("read tail");
            file.write_all_at(&tail[..tail.len() / 2], h.start)
                .expect("half");
        });
        assert_ne!(fs::read(&mbox).expect("read"), before, "half rewritten");
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock recovers");
        assert!(!journal_path(&mbox).exists());
        assert_eq!(md.messages().len(), 4);
        let data = fs::read(&mbox).expect("read");
        assert_eq!(parsed(&data), kept_1_3(&before));
        for (i, (_, content)) in parsed(&data).iter().enumerate() {
            assert_eq!(&md.read(i).expect("read"), content);
        }
    }

    #[test]
    fn a_removal_interrupted_half_way_is_finished_by_a_delivery() {
        // deliver_mbox's descriptor is O_APPEND, on which pwrite would append.
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        crash_after_journal(&mbox, &[1, 3], |file, journal, h| {
            let mut tail = vec![0; (h.end - h.start) as usize];
            journal
                .read_exact_at(&mut tail, HEADER_LEN)
                .expect("read tail");
            file.write_all_at(&tail[..tail.len() / 2], h.start)
                .expect("half");
        });
        deliver_mbox(&mbox, "s@x", 7, &[b"new\n"], &quick(1000)).expect("deliver");
        assert!(!journal_path(&mbox).exists());
        let got = parsed(&fs::read(&mbox).expect("read"));
        assert_eq!(got[..4], kept_1_3(&before));
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].1, b"new\n");
    }

    #[test]
    fn a_removal_interrupted_before_deleting_the_journal_is_redone_by_a_delivery() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        crash_after_journal(&mbox, &[1, 3], |file, journal, h| {
            apply_journal(&mbox, file, &journal_path(&mbox), journal, h).expect("step 2");
        });
        deliver_mbox(&mbox, "s@x", 7, &[b"new\n"], &quick(1000)).expect("deliver");
        assert!(!journal_path(&mbox).exists());
        let mut want = kept_1_3(&before);
        want.push((b"s@x ".to_vec(), b"new\n".to_vec()));
        let got = parsed(&fs::read(&mbox).expect("read"));
        assert_eq!(got.len(), want.len());
        assert_eq!(got[..4], want[..4]);
        assert_eq!(got[4].1, want[4].1);
    }

    #[test]
    fn a_removal_interrupted_before_truncating_is_finished_by_a_delivery() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        crash_after_journal(&mbox, &[1, 3], |file, journal, h| {
            let mut tail = vec![0; (h.end - h.start) as usize];
            journal
                .read_exact_at(&mut tail, HEADER_LEN)
                .expect("read tail");
            file.write_all_at(&tail, h.start).expect("all of it");
        });
        deliver_mbox(&mbox, "s@x", 7, &[b"new\n"], &quick(1000)).expect("deliver");
        assert!(!journal_path(&mbox).exists());
        let got = parsed(&fs::read(&mbox).expect("read"));
        assert_eq!(got[..4], kept_1_3(&before));
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].1, b"new\n");
    }

    #[test]
    fn a_truncated_journal_is_deleted_and_the_mbox_left_alone() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        let jpath = journal_path(&mbox);
        crash_after_journal(&mbox, &[1, 3], |_, journal, _| {
            let len = journal.metadata().expect("stat").len();
            journal.set_len(len - 1).expect("truncate");
        });
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        assert!(!jpath.exists());
        assert_eq!(md.messages().len(), BODIES.len());
        assert_eq!(fs::read(&mbox).expect("read"), before);
        drop(md);
        // So is a journal cut inside its header, or one with a bad checksum.
        for bytes in [&b"PETRELJ1\0\0"[..], &[0; 200][..]] {
            fs::write(&jpath, bytes).expect("write journal");
            deliver_mbox(&mbox, "s@x", 7, &[b"x\n"], &quick(1000)).expect("deliver");
            assert!(!jpath.exists());
        }
        assert_eq!(
            parsed(&fs::read(&mbox).expect("read")).len(),
            BODIES.len() + 2
        );
    }

    #[test]
    fn a_journal_for_another_file_is_refused_and_kept() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let other = t.path().join("other");
        fs::copy(&mbox, &other).expect("copy");
        crash_after_journal(&other, &[1], |_, _, _| {});
        fs::rename(journal_path(&other), journal_path(&mbox)).expect("move journal");
        let e = MboxDrop::lock(&mbox, &quick(1000)).expect_err("foreign");
        assert!(e.to_string().contains("written for another file"), "{e}");
        let e = deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(1000)).expect_err("foreign");
        assert!(e.to_string().contains("interrupted removal"), "{e}");
        assert!(journal_path(&mbox).exists());
        assert_eq!(parsed(&fs::read(&mbox).expect("read")).len(), BODIES.len());
    }

    #[test]
    fn a_leftover_journal_stops_a_removal_before_it_changes_anything() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let before = fs::read(&mbox).expect("read");
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        fs::write(journal_path(&mbox), b"someone else's").expect("write");
        let e = md.remove(&[0]).expect_err("journal exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let want = format!(
            "cannot remove messages from {}: cannot create journal {}: ",
            mbox.display(),
            journal_path(&mbox).display()
        );
        assert!(e.to_string().starts_with(&want), "{e}");
        assert_eq!(
            fs::read(journal_path(&mbox)).expect("kept"),
            b"someone else's"
        );
        assert_eq!(fs::read(&mbox).expect("read"), before);
    }

    #[test]
    fn an_unwritable_directory_stops_a_removal_before_it_changes_anything() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("spool");
        fs::create_dir(&dir).expect("mkdir");
        let mbox = sample(&dir);
        let before = fs::read(&mbox).expect("read");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod");
        let probe = dir.join("probe");
        if File::create(&probe).is_ok() {
            // Running as root: permissions do not stop us, nothing to test.
            let _ = fs::remove_file(&probe);
        } else {
            let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
            let e = md.remove(&[1]).expect_err("no journal");
            let want = format!(
                "cannot remove messages from {}: cannot create journal {}: ",
                mbox.display(),
                journal_path(&mbox).display()
            );
            assert!(e.to_string().starts_with(&want), "{e}");
            assert_eq!(fs::read(&mbox).expect("read"), before);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod back");
    }

    #[test]
    fn a_locked_mbox_makes_others_wait_then_time_out() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        for policy in [
            quick(200),
            LockPolicy {
                dotlock: false,
                ..quick(200)
            },
        ] {
            let held = MboxDrop::lock(&mbox, &policy).expect("lock");
            let started = Instant::now();
            let e = MboxDrop::lock(&mbox, &policy).expect_err("second session");
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            assert!(e.to_string().contains("locked by another process"), "{e}");
            assert!(started.elapsed() >= Duration::from_millis(200));
            let e = deliver_mbox(&mbox, "s", 0, &[b"x\n"], &policy).expect_err("delivery");
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            held.touch();
            drop(held);
            let again = MboxDrop::lock(&mbox, &policy).expect("lock after drop");
            assert_eq!(again.messages().len(), BODIES.len());
            drop(again);
        }
        deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(200)).expect("deliver after drop");
        assert_eq!(
            parsed(&fs::read(&mbox).expect("read")).len(),
            BODIES.len() + 1
        );
    }

    #[test]
    fn touch_keeps_the_dotlock_fresh() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = sample(t.path());
        let md = MboxDrop::lock(&mbox, &quick(1000)).expect("lock");
        let lock = mbox.with_file_name("user.lock");
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&lock)
            .and_then(|f| f.set_modified(old))
            .expect("age the lock");
        md.touch();
        let mtime = fs::metadata(&lock)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(mtime > old + Duration::from_secs(3000));
        drop(md);
        assert!(!lock.exists());
    }

    #[test]
    fn a_missing_mbox_is_empty_and_odd_ones_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("none");
        let md = MboxDrop::lock(&mbox, &quick(200)).expect("lock");
        assert!(md.messages().is_empty());
        assert!(md.read(0).is_err());
        md.touch();
        md.remove(&[]).expect("unlock");
        assert!(!mbox.exists(), "not created");
        assert!(!mbox.with_file_name("none.lock").exists());

        let real = sample(t.path());
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(MboxDrop::lock(&link, &quick(200)).is_err());
        let dangling = t.path().join("dangling");
        std::os::unix::fs::symlink(t.path().join("nowhere"), &dangling).expect("symlink");
        assert!(MboxDrop::lock(&dangling, &quick(200)).is_err());
        let hard = t.path().join("hard");
        fs::hard_link(&real, &hard).expect("link");
        assert!(MboxDrop::lock(&hard, &quick(200)).is_err());
        let dir = t.path().join("dir");
        fs::create_dir(&dir).expect("mkdir");
        assert!(MboxDrop::lock(&dir, &quick(200)).is_err());
        assert!(!dir.with_file_name("dir.lock").exists());
    }

    #[test]
    fn the_journal_header_round_trips() {
        let h = Header {
            start: 1,
            end: 2,
            old_len: 3,
            dev: u64::MAX,
            ino: 5,
        };
        let bytes = h.encode();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(Header::decode(&bytes), Some(h));
        let bad = Header { end: 4, ..h }.encode();
        assert_eq!(Header::decode(&bad), None, "N > L0");
    }
}
