//! `petrel queue list | show | flush | hold | release | delete`.
//!
//! `list` prints the queue the way Postfix's `mailq` does:
//!
//! ```text
//! -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
//! 0NQ3C8Y1B2K4ZPX*      314 Mon Nov 23 01:06:00  alice@example.org
//!                                                bob@example.org
//!
//! -- 0 Kbytes in 1 Request.
//! ```
//!
//! `*` after the id: in `active/` (being delivered); `!`: in `hold/`. A deferred message
//! shows the last reason qmgr recorded in `defer/ID`, in parentheses. A file that cannot
//! be read as a queue file is listed as `(corrupt)`.

use crate::{Fail, Res};
use petrel_ipc::qmgr::Notice;
use petrel_queue::file;
use petrel_queue::spool::Dir;
use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directories `list` scans, in order.
const LISTED: [Dir; 5] = [
    Dir::Maildrop,
    Dir::Incoming,
    Dir::Active,
    Dir::Deferred,
    Dir::Hold,
];

/// One message as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Queue id (file name).
    pub id: String,
    /// Where it is.
    pub dir: Dir,
    /// Message size in bytes (file size when corrupt).
    pub size: u64,
    /// Arrival time, seconds since the epoch (mtime when corrupt).
    pub arrival: i64,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Pending recipients.
    pub recipients: Vec<String>,
    /// Last deferral reason, for deferred messages.
    pub reason: Option<String>,
    /// The file could not be parsed.
    pub corrupt: bool,
}

fn names_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// True when a file in `d` is complete enough to be listed or acted on.
fn ready(d: Dir, meta: &std::fs::Metadata) -> bool {
    match d {
        // postdrop makes a finished file readable by pickup (0644).
        Dir::Maildrop => meta.permissions().mode() & 0o044 != 0 || file::is_complete(meta),
        // cleanup sets the owner-execute bit when the file is on disk.
        Dir::Incoming => file::is_complete(meta),
        _ => true,
    }
}

/// The reason in the last line of `defer/ID` (`RECIPIENT\tDSN\tREASON`).
fn defer_reason(q: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(q.join(Dir::Defer.file(id))).ok()?;
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let reason = last.splitn(3, '\t').nth(2).unwrap_or(last).trim();
    (!reason.is_empty()).then(|| reason.to_string())
}

fn read_entry(q: &Path, d: Dir, id: &str) -> Option<Entry> {
    let path = q.join(d.file(id));
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || !ready(d, &meta) {
        return None;
    }
    let parsed = std::fs::File::open(&path)
        .map_err(file::ReadError::Io)
        .and_then(|mut f| file::read_envelope(&mut f));
    let reason = if d == Dir::Deferred {
        defer_reason(q, id)
    } else {
        None
    };
    match parsed {
        Ok(env) => Some(Entry {
            id: id.to_string(),
            dir: d,
            size: env.content_len,
            arrival: env.arrival as i64,
            sender: env.sender.clone(),
            recipients: env.pending().map(|r| r.address.clone()).collect(),
            reason,
            corrupt: false,
        }),
        // A maildrop file may be unreadable to us or still being written: not our business.
        Err(_) if d == Dir::Maildrop => None,
        Err(file::ReadError::Io(_)) => None,
        Err(file::ReadError::Corrupt(_)) => {
            use std::os::unix::fs::MetadataExt;
            Some(Entry {
                id: id.to_string(),
                dir: d,
                size: meta.len(),
                arrival: meta.mtime(),
                sender: String::new(),
                recipients: Vec::new(),
                reason,
                corrupt: true,
            })
        }
    }
}

/// Every listed message under the queue directory `q`.
pub fn scan(q: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for d in LISTED {
        for id in names_in(&q.join(d.name())) {
            if let Some(e) = read_entry(q, d, &id) {
                out.push(e);
            }
        }
    }
    out
}

/// The mailq-style listing of `entries`.
pub fn format_list(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut s =
        String::from("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut total: u64 = 0;
    for e in entries {
        let mark = match e.dir {
            Dir::Active => '*',
            Dir::Hold => '!',
            _ => ' ',
        };
        let date = petrel_queue::asctime_date(e.arrival);
        let date = date.get(..19).unwrap_or(&date);
        let head = format!(
            "{:<16} {:>8} {:<19}  ",
            format!("{}{mark}", e.id),
            e.size,
            date
        );
        let indent = " ".repeat(head.chars().count());
        total += e.size;
        let sender = if e.corrupt {
            "(corrupt)"
        } else if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            e.sender.as_str()
        };
        let _ = writeln!(s, "{head}{sender}");
        if let Some(r) = &e.reason {
            let _ = writeln!(s, "{indent}({r})");
        }
        for r in &e.recipients {
            let _ = writeln!(s, "{indent}{r}");
        }
        s.push('\n');
    }
    let n = entries.len();
    let _ = writeln!(
        s,
        "-- {} Kbytes in {n} Request{}.",
        total / 1024,
        if n == 1 { "" } else { "s" }
    );
    s
}

fn queue_dir(dir: &Path) -> Res<PathBuf> {
    let cfg = crate::load_config(dir)?;
    Ok(PathBuf::from(cfg.get("queue_directory")))
}

/// `petrel queue list`.
pub fn list(dir: &Path) -> Res {
    let q = queue_dir(dir)?;
    if !q.join(Dir::Incoming.name()).is_dir() {
        return Err(Fail::Fatal(format!("{}: no queue here", q.display())));
    }
    // A directory this user may not read would look empty: say so instead.
    for d in LISTED {
        let p = q.join(d.name());
        if let Err(e) = std::fs::read_dir(&p) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(Fail::Fatal(format!(
                    "{}: {e}: only root and mail_owner may list the mail queue",
                    p.display()
                )));
            }
        }
    }
    print!("{}", format_list(&scan(&q)));
    Ok(())
}

fn check_id(id: &str) -> Res {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(Fail::Fatal(format!("bad queue id {id:?}")));
    }
    Ok(())
}

fn locate(q: &Path, id: &str, dirs: &[Dir]) -> Option<(Dir, PathBuf)> {
    dirs.iter()
        .map(|d| (*d, q.join(d.file(id))))
        .find(|(_, p)| p.is_file())
}

/// `petrel queue show ID`.
pub fn show(dir: &Path, id: &str) -> Res {
    check_id(id)?;
    let q = queue_dir(dir)?;
    let dirs = [
        Dir::Incoming,
        Dir::Active,
        Dir::Deferred,
        Dir::Hold,
        Dir::Corrupt,
        Dir::Maildrop,
    ];
    let (_, path) = locate(&q, id, &dirs)
        .ok_or_else(|| Fail::Fatal(format!("{id}: no such message in the queue")))?;
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = file::dump(&mut f, true).map_err(|e| format!("{id}: {e}"))?;
    print!("{text}");
    Ok(())
}

/// Sends `notice` to qmgr at `public/qmgr` without ever blocking.
pub fn notify_qmgr(q: &Path, notice: &Notice) -> Result<(), String> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let path = q.join(Dir::Public.file("qmgr"));
    let err = |e: &dyn std::fmt::Display| format!("cannot reach qmgr at {}: {e}", path.display());
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(&e))?;
    let addr = UnixAddr::new(&path).map_err(|e| err(&e))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| err(&e))?;
    let frame = petrel_ipc::encode(notice).map_err(|e| err(&e))?;
    let n = nix::unistd::write(&fd, &frame).map_err(|e| err(&e))?;
    if n != frame.len() {
        return Err(err(&"short write"));
    }
    Ok(())
}

/// `petrel queue flush`.
pub fn flush(dir: &Path) -> Res {
    let q = queue_dir(dir)?;
    notify_qmgr(&q, &Notice::Flush).map_err(Fail::Fatal)
}

/// Files found (id, where) and names not found.
type Targets = (Vec<(String, Dir)>, Vec<String>);

/// The files an operation applies to: every ready file in `from` for `ALL`, else the
/// named ones (with the names not found).
fn targets(q: &Path, ids: &[String], from: &[Dir]) -> Res<Targets> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    if ids.iter().any(|i| i == "ALL") {
        for d in from {
            for id in names_in(&q.join(d.name())) {
                let ok = std::fs::metadata(q.join(d.file(&id)))
                    .map(|m| m.is_file() && ready(*d, &m))
                    .unwrap_or(false);
                if ok {
                    found.push((id, *d));
                }
            }
        }
        return Ok((found, missing));
    }
    for id in ids {
        check_id(id)?;
        match locate(q, id, from) {
            Some((d, _)) => found.push((id.clone(), d)),
            None => missing.push(id.clone()),
        }
    }
    Ok((found, missing))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "message"
    } else {
        "messages"
    }
}

fn report_missing(missing: &[String], where_: &str) {
    for id in missing {
        eprintln!("petrel: warning: {id}: no such message in {where_}");
    }
}

/// Moves the named (or ALL) messages from incoming/active/deferred to hold/; returns the count.
pub fn hold_in(q: &Path, ids: &[String]) -> Res<(usize, Vec<String>)> {
    let (found, missing) = targets(q, ids, &[Dir::Incoming, Dir::Active, Dir::Deferred])?;
    let mut n = 0;
    for (id, d) in found {
        match std::fs::rename(q.join(d.file(&id)), q.join(Dir::Hold.file(&id))) {
            Ok(()) => n += 1,
            Err(e) => eprintln!("petrel: warning: {id}: cannot put on hold: {e}"),
        }
    }
    Ok((n, missing))
}

/// Moves the named (or ALL) messages from hold/ to deferred/, due now; returns the count.
pub fn release_in(q: &Path, ids: &[String]) -> Res<(usize, Vec<String>)> {
    let (found, missing) = targets(q, ids, &[Dir::Hold])?;
    let mut n = 0;
    for (id, _) in found {
        let to = q.join(Dir::Deferred.file(&id));
        if let Err(e) = std::fs::rename(q.join(Dir::Hold.file(&id)), &to) {
            eprintln!("petrel: warning: {id}: cannot release: {e}");
            continue;
        }
        let now = std::time::SystemTime::now();
        let times = std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now);
        if let Err(e) = std::fs::File::open(&to).and_then(|f| f.set_times(times)) {
            eprintln!("petrel: warning: {id}: cannot make it due now: {e}");
        }
        n += 1;
    }
    Ok((n, missing))
}

/// Removes the named (or ALL) messages and their defer/bounce records; returns the ids.
pub fn delete_in(q: &Path, ids: &[String]) -> Res<(Vec<String>, Vec<String>)> {
    let all = ids.iter().any(|i| i == "ALL");
    let mut from = vec![
        Dir::Maildrop,
        Dir::Incoming,
        Dir::Active,
        Dir::Deferred,
        Dir::Hold,
    ];
    if !all {
        // Named explicitly, a corrupt file may go too; ALL never empties corrupt/.
        from.push(Dir::Corrupt);
    }
    let (found, missing) = targets(q, ids, &from)?;
    let mut done = Vec::new();
    for (id, d) in found {
        match std::fs::remove_file(q.join(d.file(&id))) {
            Ok(()) => {
                let _ = std::fs::remove_file(q.join(Dir::Defer.file(&id)));
                let _ = std::fs::remove_file(q.join(Dir::Bounce.file(&id)));
                done.push(id);
            }
            Err(e) => eprintln!("petrel: warning: {id}: cannot delete: {e}"),
        }
    }
    Ok((done, missing))
}

/// `petrel queue hold ID...|ALL`.
pub fn hold(dir: &Path, ids: &[String]) -> Res {
    let q = queue_dir(dir)?;
    let (n, missing) = hold_in(&q, ids)?;
    report_missing(&missing, "incoming, active or deferred");
    println!("petrel: Placed on hold: {n} {}", plural(n));
    let _ = notify_qmgr(&q, &Notice::Rescan);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

/// `petrel queue release ID...|ALL`.
pub fn release(dir: &Path, ids: &[String]) -> Res {
    let q = queue_dir(dir)?;
    let (n, missing) = release_in(&q, ids)?;
    report_missing(&missing, "hold");
    println!("petrel: Released from hold: {n} {}", plural(n));
    let _ = notify_qmgr(&q, &Notice::Flush);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

/// `petrel queue delete ID...|ALL`.
pub fn delete(dir: &Path, ids: &[String]) -> Res {
    let cfg = crate::load_config(dir)?;
    let q = PathBuf::from(cfg.get("queue_directory"));
    petrel_log::init("queue", &cfg, false);
    let (done, missing) = delete_in(&q, ids)?;
    for id in &done {
        log::info!("{id}: removed");
    }
    report_missing(&missing, "the queue");
    println!("petrel: Deleted: {} {}", done.len(), plural(done.len()));
    let _ = notify_qmgr(&q, &Notice::Rescan);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_queue::{QueueId, Recipient, Writer};

    fn make(q: &Path, d: Dir, sender: &str, rcpts: &[&str], body: &[u8], done: &[usize]) -> String {
        let id = QueueId::new().to_string();
        let path = q.join(d.file(&id));
        let mut w = Writer::create(&path, 1_700_000_000.5).expect("create");
        w.sender(sender).expect("sender");
        let mut offs = Vec::new();
        for r in rcpts {
            offs.push(
                w.recipient(&Recipient {
                    address: r.to_string(),
                    ..Default::default()
                })
                .expect("rcpt"),
            );
        }
        w.begin_content().expect("content");
        w.content(body).expect("content");
        w.finish(file::MODE_COMPLETE).expect("finish");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        for &i in done {
            file::mark_done(&f, offs[i]).expect("mark");
        }
        id
    }

    fn spool() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        petrel_queue::spool::create(t.path(), None).expect("spool");
        t
    }

    #[test]
    fn mailq_format_of_a_synthetic_queue() {
        let t = spool();
        let q = t.path();
        assert_eq!(format_list(&scan(q)), "Mail queue is empty\n");

        let big = vec![b'x'; 3000];
        let a = make(
            q,
            Dir::Active,
            "alice@example.org",
            &["bob@example.org", "carol@example.org"],
            &big,
            &[0],
        );
        let d = make(
            q,
            Dir::Deferred,
            "",
            &["dave@example.net"],
            b"Subject: x\n\nhi\n",
            &[],
        );
        std::fs::write(
            q.join(Dir::Defer.file(&d)),
            "dave@example.net\t4.4.1\tconnect to mx.example.net: Connection refused\ndave@example.net\t4.4.2\tlost connection\n",
        )
        .expect("defer");
        let h = make(
            q,
            Dir::Hold,
            "eve@example.org",
            &["frank@example.org"],
            b"hi\n",
            &[],
        );
        std::fs::write(q.join(Dir::Deferred.file("0000000000CCCCC")), b"garbage").expect("corrupt");
        // Being written by cleanup: not listed.
        std::fs::write(q.join(Dir::Incoming.file("0000000000BBBBB")), b"PETRELQ").expect("partial");
        // Maildrop: complete ones are listed, unreadable junk is skipped.
        let m = make(q, Dir::Maildrop, "root", &["demo"], b"hi\n", &[]);
        std::fs::write(q.join(Dir::Maildrop.file("junk")), b"junk").expect("junk");

        let out = format_list(&scan(q));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
        );
        let date = petrel_queue::asctime_date(1_700_000_000);
        let date = &date[..19];
        let head = |id: &str, mark: char, size: u64, who: &str| {
            format!("{:<16} {:>8} {date}  {who}", format!("{id}{mark}"), size)
        };
        let indent = " ".repeat(16 + 1 + 8 + 1 + 19 + 2);
        let want = vec![
            head(&m, ' ', 3, "root"),
            format!("{indent}demo"),
            String::new(),
            head(&a, '*', 3000, "alice@example.org"),
            format!("{indent}carol@example.org"),
            String::new(),
        ];
        assert_eq!(lines[1..7].to_vec(), want, "\n{out}");
        assert!(
            lines[7].starts_with("0000000000CCCCC  ") && lines[7].ends_with("(corrupt)"),
            "{out}"
        );
        let want = vec![
            head(&d, ' ', 15, "MAILER-DAEMON"),
            format!("{indent}(lost connection)"),
            format!("{indent}dave@example.net"),
            String::new(),
        ];
        assert_eq!(lines[9..13].to_vec(), want, "\n{out}");
        assert_eq!(lines[13], head(&h, '!', 3, "eve@example.org"));
        assert_eq!(lines[14], format!("{indent}frank@example.org"));
        assert_eq!(*lines.last().expect("footer"), "-- 2 Kbytes in 5 Requests.");
        assert!(!out.contains("junk") && !out.contains("BBBBB"));
    }

    #[test]
    fn hold_release_delete() {
        let t = spool();
        let q = t.path();
        let a = make(q, Dir::Deferred, "a@x", &["b@x"], b"hi\n", &[]);
        let b = make(q, Dir::Incoming, "a@x", &["c@x"], b"hi\n", &[]);
        std::fs::write(q.join(Dir::Defer.file(&a)), "b@x\t4.0.0\tlater\n").expect("defer");

        assert_eq!(
            hold_in(q, std::slice::from_ref(&a)).expect("hold"),
            (1, vec![])
        );
        assert!(q.join(Dir::Hold.file(&a)).is_file());
        assert_eq!(
            hold_in(q, &["NOSUCHID".into()]).expect("hold").1,
            vec!["NOSUCHID".to_string()]
        );
        assert!(hold_in(q, &["../x".into()]).is_err());

        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::open(q.join(Dir::Hold.file(&a)))
            .and_then(|f| f.set_modified(old))
            .expect("backdate");
        assert_eq!(release_in(q, &["ALL".into()]).expect("release").0, 1);
        let m = std::fs::metadata(q.join(Dir::Deferred.file(&a))).expect("deferred");
        let age = std::time::SystemTime::now()
            .duration_since(m.modified().expect("mtime"))
            .unwrap_or_default();
        assert!(age.as_secs() < 60, "due now");

        assert_eq!(hold_in(q, &["ALL".into()]).expect("hold").0, 2);
        let (done, missing) = delete_in(q, &["ALL".into()]).expect("delete");
        assert_eq!(done.len(), 2);
        assert!(missing.is_empty());
        assert!(
            !q.join(Dir::Defer.file(&a)).exists(),
            "defer record removed"
        );
        assert!(!q.join(Dir::Hold.file(&b)).exists());
        assert_eq!(format_list(&scan(q)), "Mail queue is empty\n");
    }
}
