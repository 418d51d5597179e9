//! The queue listing `mailq` prints, shared by `petrel queue list` (root and mail_owner
//! read the queue themselves) and the showq daemon (everyone else, through postdrop):
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
//!
//! Every path is relative to the queue directory passed in, so the same code works in a
//! chroot to it (`Path::new(".")`).

use crate::file;
use crate::spool::Dir;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The directories a listing scans, in order.
pub const LISTED: [Dir; 5] = [
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

/// The names in `dir` that do not start with `.`, sorted (queue ids sort by time); empty
/// when the directory cannot be read. Names that are not UTF-8 are left out.
pub fn names_in(dir: &Path) -> Vec<String> {
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

/// True when a file in `d` with metadata `meta` is complete enough to be listed or acted
/// on: a maildrop file postdrop finished (0644, or a complete queue file), an incoming file
/// cleanup finished (owner-execute bit); anything in the other directories.
pub fn ready(d: Dir, meta: &std::fs::Metadata) -> bool {
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

/// The entry of the file `id` in `d` under the queue directory `q`, or None when it is not
/// listed: gone, not a regular file, not [`ready`], unreadable, or a maildrop file that does
/// not parse (it may still be being written). Any other file that does not parse is
/// listed as corrupt, with its file size and mtime.
pub fn read_entry(q: &Path, d: Dir, id: &str) -> Option<Entry> {
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

/// Every listed message under the queue directory `q`: the directories of [`LISTED`] in
/// that order, each in name order.
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

/// The mailq-style listing of `entries` (`Mail queue is empty` for none), every line
/// ending in a newline.
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
        let date = crate::asctime_date(e.arrival);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::message as make;

    fn spool() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        crate::spool::create(t.path(), None).expect("spool");
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
        let date = crate::asctime_date(1_700_000_000);
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
    fn read_entry_skips_what_is_not_a_message() {
        let t = spool();
        let q = t.path();
        let id = make(q, Dir::Deferred, "a@x", &["b@x"], b"hi\n", &[]);
        let e = read_entry(q, Dir::Deferred, &id).expect("listed");
        assert_eq!((e.sender.as_str(), e.recipients.len()), ("a@x", 1));
        assert_eq!(read_entry(q, Dir::Deferred, "NOSUCHID"), None);
        std::fs::create_dir(q.join(Dir::Hold.file("0000000000DDDDD"))).expect("mkdir");
        assert_eq!(read_entry(q, Dir::Hold, "0000000000DDDDD"), None);
    }
}
