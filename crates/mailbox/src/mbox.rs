//! mbox delivery in the mboxrd format, with dotlock and fcntl locking.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::context;

/// How [`deliver_mbox`] locks the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPolicy {
    /// Take a dotlock, `PATH.lock`, created exclusively. Skipped (with only the fcntl lock
    /// left) when the mailbox's directory does not let us create files (EACCES).
    pub dotlock: bool,
    /// Take an fcntl write lock on the whole mailbox (an open-file-description lock on
    /// Linux, which other processes' POSIX locks respect and which also excludes other
    /// threads of this process).
    pub fcntl: bool,
    /// How long to wait for both locks together before failing with
    /// [`io::ErrorKind::TimedOut`].
    pub timeout: Duration,
    /// A dotlock whose modification time is older than this is taken to be left by a dead
    /// process and removed.
    pub stale_after: Duration,
}

impl Default for LockPolicy {
    /// Both locks, 20 s to get them, dotlocks stale after 300 s.
    fn default() -> Self {
        LockPolicy {
            dotlock: true,
            fcntl: true,
            timeout: Duration::from_secs(20),
            stale_after: Duration::from_secs(300),
        }
    }
}

/// Appends one message to the mbox at `path` (created with mode 0600 when missing).
///
/// Writes `From SENDER DATE` (`MAILER-DAEMON` for the null sender; white space and control
/// characters in the sender become `_` so the line stays parseable; the date is
/// [`petrel_queue::asctime_date`] of `arrival_secs`, local time), then `parts` quoted as in
/// [`mboxrd_quote`], a newline if the content does not end with one, and a blank line. The
/// file is fsynced before returning. The mailbox must be a regular file with one link (a
/// symbolic link, a FIFO or a hard-linked file is refused). Locks are taken as `lock` says
/// and always released. On any error the file is truncated back to its length before this
/// delivery.
///
/// Before appending (with the locks held) it finishes a removal of messages that a crash
/// interrupted, see [`crate::maildrop::recover`]; if that fails, nothing is appended.
pub fn deliver_mbox(
    path: &Path,
    from_line_sender: &str,
    arrival_secs: i64,
    parts: &[&[u8]],
    lock: &LockPolicy,
) -> io::Result<()> {
    let deadline = Instant::now() + lock.timeout;
    let _dotlock = if lock.dotlock {
        DotLock::acquire(path, deadline, lock)?
    } else {
        None
    };
    // Declared after the dotlock, so dropped (closing the file, which releases the fcntl
    // lock) before it.
    let file = open_mailbox(path)?;
    if lock.fcntl {
        fcntl_lock(&file, path, deadline, lock.timeout)?;
    }
    crate::maildrop::recover(path, &file)?;
    let from = from_line(from_line_sender, arrival_secs);
    append_or_rollback(&file, path, |w| write_message(w, &from, parts))
}

/// The `From ` separator line, newline included.
fn from_line(sender: &str, arrival_secs: i64) -> String {
    let sender: String = if sender.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        sender
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    format!(
        "From {sender} {}\n",
        petrel_queue::asctime_date(arrival_secs)
    )
}

fn open_mailbox(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: opening a FIFO must not hang; it has no effect on a regular file.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| context(e, "cannot open mailbox", path))?;
    check_mailbox(&file, path)?;
    Ok(file)
}

/// Refuses a mailbox that is not a regular file or has more than one hard link.
pub(crate) fn check_mailbox(file: &File, path: &Path) -> io::Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| context(e, "cannot stat mailbox", path))?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mailbox {} is not a regular file", path.display()),
        ));
    }
    if meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "mailbox {} has {} hard links; refusing to write to it",
                path.display(),
                meta.nlink()
            ),
        ));
    }
    Ok(())
}

/// Writes what `write` produces at the end of `file`, flushes and fsyncs it; if any of that
/// fails, truncates the file back to the length it had before and returns the error.
fn append_or_rollback(
    file: &File,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let start = file
        .metadata()
        .map_err(|e| context(e, "cannot stat mailbox", path))?
        .len();
    let result = (|| {
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_data()
    })();
    let Err(e) = result else {
        return Ok(());
    };
    let e = context(e, "cannot write mailbox", path);
    match file.set_len(start).and_then(|()| file.sync_data()) {
        Ok(()) => Err(e),
        Err(t) => Err(io::Error::new(
            e.kind(),
            format!("{e}; truncating it back to {start} bytes also failed: {t}"),
        )),
    }
}

fn write_message(w: &mut dyn Write, from_line: &str, parts: &[&[u8]]) -> io::Result<()> {
    w.write_all(from_line.as_bytes())?;
    let mut q = Quoter::new(&mut *w);
    for part in parts {
        q.write(part)?;
    }
    if !q.finish()? {
        w.write_all(b"\n")?;
    }
    w.write_all(b"\n")
}

/// The mboxrd quoting of `content`: every line matching `^>*From ` gets one more `>` in
/// front. Everything else, CR bytes included, is copied as it is.
pub fn mboxrd_quote(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 16);
    let mut q = Quoter::new(&mut out);
    // Writing into a Vec cannot fail.
    let _ = q.write(content).and_then(|()| q.finish());
    out
}

/// Undoes [`mboxrd_quote`]: removes one `>` from every line matching `^>+From `.
pub fn mboxrd_unquote(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// One message read back from an mbox by [`split_mbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage<'a> {
    /// The separator line without `From ` and without its newline: `SENDER DATE`.
    pub envelope: &'a [u8],
    /// The content, unquoted, without the blank line that ends each message.
    pub content: Vec<u8>,
}

/// Splits an mboxrd file into its messages. A message starts at each line beginning with
/// `From `; the blank line before the next separator (and at the end of the file) belongs
/// to the format, not to the message, and is dropped. Text before the first separator is
/// ignored.
pub fn split_mbox(data: &[u8]) -> Vec<MboxMessage<'_>> {
    fn message<'a>(envelope: &'a [u8], mut body: &[u8]) -> MboxMessage<'a> {
        if body.ends_with(b"\n\n") {
            body = &body[..body.len() - 1];
        } else if body == b"\n" {
            body = b"";
        }
        MboxMessage {
            envelope,
            content: mboxrd_unquote(body),
        }
    }
    let mut messages = Vec::new();
    // The current message's envelope and the offset where its content starts.
    let mut current: Option<(&[u8], usize)> = None;
    let mut pos = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"From ") {
            if let Some((envelope, start)) = current {
                messages.push(message(envelope, &data[start..pos]));
            }
            let envelope = rest.strip_suffix(b"\n").unwrap_or(rest);
            current = Some((envelope, pos + line.len()));
        }
        pos += line.len();
    }
    if let Some((envelope, start)) = current {
        messages.push(message(envelope, &data[start..]));
    }
    messages
}

/// Streaming mboxrd quoter: bytes at the start of a line are held back until it is known
/// whether the line matches `>*From `.
struct Quoter<'a> {
    out: &'a mut dyn Write,
    /// The start of the current line while it may still match `>*From `.
    pending: Vec<u8>,
    at_line_start: bool,
    last: Option<u8>,
}

impl<'a> Quoter<'a> {
    fn new(out: &'a mut dyn Write) -> Quoter<'a> {
        Quoter {
            out,
            pending: Vec::new(),
            at_line_start: true,
            last: None,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.at_line_start {
                let b = data[0];
                let gts = self.pending.iter().take_while(|&&c| c == b'>').count();
                let matched = self.pending.len() - gts;
                if b == b'>' && matched == 0 {
                    self.pending.push(b);
                    data = &data[1..];
                } else if b == b"From "[matched] {
                    self.pending.push(b);
                    data = &data[1..];
                    if matched + 1 == 5 {
                        self.out.write_all(b">")?;
                        self.flush_pending()?;
                    }
                } else {
                    self.flush_pending()?;
                }
            } else {
                let end = match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.at_line_start = true;
                        i + 1
                    }
                    None => data.len(),
                };
                self.out.write_all(&data[..end])?;
                self.last = Some(data[end - 1]);
                data = &data[end..];
            }
        }
        Ok(())
    }

    /// Writes the held-back bytes and leaves the line-start state.
    fn flush_pending(&mut self) -> io::Result<()> {
        self.at_line_start = false;
        if let Some(&b) = self.pending.last() {
            self.out.write_all(&self.pending)?;
            self.last = Some(b);
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes whatever is held back; tells whether the output ends with a newline (an empty
    /// content counts as ending with one).
    fn finish(&mut self) -> io::Result<bool> {
        self.flush_pending()?;
        Ok(matches!(self.last, None | Some(b'\n')))
    }
}

/// `PATH.lock`.
fn dotlock_path(mailbox: &Path) -> PathBuf {
    let mut s = mailbox.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// A dotlock we created; removed on drop if it is still ours.
#[derive(Debug)]
pub(crate) struct DotLock {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl DotLock {
    /// Takes `MAILBOX.lock`, waiting until `deadline`. `Ok(None)` when the directory does not
    /// allow it (EACCES), in which case the caller relies on the fcntl lock alone.
    pub(crate) fn acquire(
        mailbox: &Path,
        deadline: Instant,
        policy: &LockPolicy,
    ) -> io::Result<Option<Self>> {
        let path = dotlock_path(mailbox);
        let mut backoff = Backoff::new(deadline);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let meta = match f.metadata() {
                        Ok(m) => m,
                        Err(e) => {
                            let _ = fs::remove_file(&path);
                            return Err(context(e, "cannot stat dotlock", &path));
                        }
                    };
                    // The pid is for people looking at a lock; nothing relies on it.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(Some(DotLock {
                        path,
                        dev: meta.dev(),
                        ino: meta.ino(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if remove_if_stale(&path, policy.stale_after)? {
                        continue;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(None),
                Err(e) => return Err(context(e, "cannot create dotlock", &path)),
            }
            if !backoff.sleep() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cannot get dotlock {} within {:?}: held by another process",
                        path.display(),
                        policy.timeout
                    ),
                ));
            }
        }
    }

    /// Sets the lock's modification time to now, so that it is not broken as stale while we
    /// still hold it. Does nothing if the file there is no longer ours or on any error.
    pub(crate) fn touch(&self) {
        let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
        else {
            return;
        };
        if let Ok(m) = f.metadata() {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = f.set_modified(SystemTime::now());
            }
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still the file we created: had ours been broken as
        // stale, the file now there belongs to someone else.
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Removes the dotlock at `path` if it is older than `stale_after`. Returns true when the
/// lock is gone (removed, or vanished meanwhile), so that creating it should be retried now.
fn remove_if_stale(path: &Path, stale_after: Duration) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(context(e, "cannot stat dotlock", path)),
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age <= stale_after {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(context(e, "cannot remove stale dotlock", path)),
    }
}

/// Takes an fcntl write lock on the whole file, retrying until `deadline`.
pub(crate) fn fcntl_lock(
    file: &File,
    path: &Path,
    deadline: Instant,
    timeout: Duration,
) -> io::Result<()> {
    // SAFETY: libc::flock is plain old data; all zeroes is a valid value (and l_pid must be
    // 0 for open-file-description locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    let mut backoff = Backoff::new(deadline);
    loop {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let arg = FcntlArg::F_OFD_SETLK(&fl);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let arg = FcntlArg::F_SETLK(&fl);
        match fcntl(file, arg) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN | Errno::EACCES) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(context(e.into(), "cannot lock mailbox", path)),
        }
        if !backoff.sleep() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "cannot lock mailbox {} within {timeout:?}: locked by another process",
                    path.display()
                ),
            ));
        }
    }
}

/// Sleeps 10 ms, then twice as long each time up to 250 ms, never past the deadline.
struct Backoff {
    deadline: Instant,
    delay: Duration,
}

impl Backoff {
    fn new(deadline: Instant) -> Backoff {
        Backoff {
            deadline,
            delay: Duration::from_millis(10),
        }
    }

    /// Sleeps; false when the deadline has already passed.
    fn sleep(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        std::thread::sleep(self.delay.min(self.deadline - now));
        self.delay = (self.delay * 2).min(Duration::from_millis(250));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn quick(timeout_ms: u64) -> LockPolicy {
        LockPolicy {
            timeout: Duration::from_millis(timeout_ms),
            ..LockPolicy::default()
        }
    }

    #[test]
    fn quoting_adds_one_gt_to_from_lines_only() {
        let cases: [(&[u8], &[u8]); 10] = [
            (b"From me\n", b">From me\n"),
            (b"a\nFrom x\n", b"a\n>From x\n"),
            (b">From x\n", b">>From x\n"),
            (b">>From x\n", b">>>From x\n"),
            (b"From\n", b"From\n"),
            (b"From:x\n", b"From:x\n"),
            (b" From x\n", b" From x\n"),
            (b"a From x\n>Fro\n", b"a From x\n>Fro\n"),
            (b"From x\r\n>From y\r\n", b">From x\r\n>>From y\r\n"),
            (b">>Fro", b">>Fro"),
        ];
        for (input, want) in cases {
            assert_eq!(
                mboxrd_quote(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(mboxrd_quote(b""), b"");
        assert_eq!(mboxrd_quote(b"From "), b">From ");
    }

    #[test]
    fn quoting_round_trips_and_does_not_depend_on_part_boundaries() {
        let text: &[u8] = b"From a\n>From b\n>>From c\nFrom\nxFrom d\n\nFrom e\r\n>\n>>\nFr";
        let quoted = mboxrd_quote(text);
        assert_eq!(mboxrd_unquote(&quoted), text);
        for cut in 0..=text.len() {
            let mut out = Vec::new();
            let mut q = Quoter::new(&mut out);
            q.write(&text[..cut]).expect("write");
            q.write(&text[cut..]).expect("write");
            q.finish().expect("finish");
            assert_eq!(out, quoted, "cut at {cut}");
        }
    }

    #[test]
    fn two_messages_split_back() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        let one: &[u8] = b"Subject: one\n\nFrom here on\n>From there\n";
        let two: &[u8] = b"Subject: two\n\nno final newline";
        deliver_mbox(&mbox, "a@example.org", 1_000_000_000, &[one], &quick(1000)).expect("one");
        deliver_mbox(
            &mbox,
            "",
            1_000_000_060,
            &[b"Subject: two\n", b"\nno final newline"],
            &quick(1000),
        )
        .expect("two");
        let data = fs::read(&mbox).expect("read");
        let text = String::from_utf8_lossy(&data);
        assert!(text.starts_with("From a@example.org "), "{text}");
        assert!(
            text.contains("\n>From here on\n>>From there\n\nFrom MAILER-DAEMON "),
            "{text}"
        );
        assert!(text.ends_with("no final newline\n\n"), "{text}");
        let msgs = split_mbox(&data);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].content, one);
        assert_eq!(msgs[1].content, [two, b"\n"].concat());
        assert!(msgs[1].envelope.starts_with(b"MAILER-DAEMON "));
        let date = petrel_queue::asctime_date(1_000_000_000);
        assert_eq!(msgs[0].envelope, format!("a@example.org {date}").as_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&mbox).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dotlock_path(&mbox).exists(), "dotlock released");
    }

    #[test]
    fn a_message_ending_in_a_blank_line_keeps_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        let body: &[u8] = b"Subject: x\n\nbody\n\n";
        deliver_mbox(&mbox, "s", 0, &[body], &quick(1000)).expect("deliver");
        deliver_mbox(&mbox, "s", 0, &[b""], &quick(1000)).expect("empty");
        let data = fs::read(&mbox).expect("read");
        let msgs = split_mbox(&data);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].content, body);
        assert_eq!(msgs[1].content, b"");
    }

    #[test]
    fn the_sender_cannot_break_the_from_line() {
        let line = from_line("\"a b\"@x\nFrom evil", 0);
        assert!(line.starts_with("From \"a_b\"@x_From_evil "), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn a_held_dotlock_makes_delivery_wait_then_time_out() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        let lock = dotlock_path(&mbox);
        let (tx, rx) = mpsc::channel();
        let holder = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                fs::write(&lock, b"12345\n").expect("create lock");
                tx.send(()).expect("send");
                std::thread::sleep(Duration::from_millis(400));
                fs::remove_file(&lock).expect("release");
            })
        };
        rx.recv().expect("recv");
        let started = Instant::now();
        let e = deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(150)).expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(lock.exists(), "someone else's lock is left alone");
        assert!(!mbox.exists() || fs::read(&mbox).expect("read").is_empty());
        // With a longer timeout the delivery waits for the holder to let go.
        deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(5000)).expect("waits");
        holder.join().expect("join");
        assert_eq!(split_mbox(&fs::read(&mbox).expect("read")).len(), 1);
    }

    #[test]
    fn a_stale_dotlock_is_broken() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        let lock = dotlock_path(&mbox);
        let f = File::create(&lock).expect("create lock");
        let old = SystemTime::now() - Duration::from_secs(3600);
        f.set_modified(old).expect("set mtime");
        drop(f);
        deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(200)).expect("deliver");
        assert!(!lock.exists());
        assert_eq!(split_mbox(&fs::read(&mbox).expect("read")).len(), 1);
    }

    #[test]
    fn an_fcntl_lock_held_elsewhere_times_out() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        let other = open_mailbox(&mbox).expect("open");
        fcntl_lock(&other, &mbox, Instant::now(), Duration::ZERO).expect("lock");
        let policy = LockPolicy {
            dotlock: false,
            ..quick(100)
        };
        let e = deliver_mbox(&mbox, "s", 0, &[b"x\n"], &policy).expect_err("locked");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        drop(other);
        deliver_mbox(&mbox, "s", 0, &[b"x\n"], &policy).expect("unlocked");
    }

    #[test]
    fn an_unwritable_directory_falls_back_to_fcntl_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("spool");
        fs::create_dir(&dir).expect("mkdir");
        let mbox = dir.join("user");
        fs::write(&mbox, b"").expect("create mbox");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod");
        let probe = dir.join("probe");
        if File::create(&probe).is_ok() {
            // Running as root: permissions do not stop us, nothing to test.
            let _ = fs::remove_file(&probe);
        } else {
            deliver_mbox(&mbox, "s", 0, &[b"x\n"], &quick(200)).expect("deliver");
            assert_eq!(split_mbox(&fs::read(&mbox).expect("read")).len(), 1);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod back");
    }

    #[test]
    fn a_failed_write_leaves_the_old_length() {
        let t = tempfile::tempdir().expect("tempdir");
        let mbox = t.path().join("user");
        deliver_mbox(&mbox, "s", 0, &[b"first\n"], &quick(1000)).expect("deliver");
        let before = fs::read(&mbox).expect("read");
        let file = open_mailbox(&mbox).expect("open");
        let e = append_or_rollback(&file, &mbox, |w| {
            w.write_all(&[b'y'; 100_000])?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .expect_err("fails");
        assert_eq!(e.raw_os_error(), None, "context added");
        assert!(e.to_string().contains("No space left"), "{e}");
        assert_eq!(fs::read(&mbox).expect("read"), before);
    }

    #[test]
    fn odd_mailboxes_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("dir");
        fs::create_dir(&dir).expect("mkdir");
        assert!(deliver_mbox(&dir, "s", 0, &[b"x\n"], &quick(100)).is_err());
        let real = t.path().join("real");
        fs::write(&real, b"").expect("write");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(deliver_mbox(&link, "s", 0, &[b"x\n"], &quick(100)).is_err());
        let hard = t.path().join("hard");
        fs::hard_link(&real, &hard).expect("link");
        assert!(deliver_mbox(&hard, "s", 0, &[b"x\n"], &quick(100)).is_err());
        assert_eq!(fs::read(&real).expect("read"), b"");
        assert!(!dotlock_path(&hard).exists());
    }
}
