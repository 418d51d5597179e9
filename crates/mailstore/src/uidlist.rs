//! Dovecot's `dovecot-uidlist` (format version 3, and version 1 for reading) and its dotlock.
//!
//! ```text
//! 3 V1795407888 N3 Gb7c5881f0ec0036bc42d000083ecc375
//! 1 :1795407886.M570237P11749.vm,S=18,W=21
//! 2 S19 W22 :1795407886.M597879P11770.vm,S=19,W=22
//! ```
//!
//! The header holds the UIDVALIDITY (`V`), the next UID (`N`, which Dovecot may leave lower
//! than the last line's UID + 1, so the real next UID is the larger of the two) and the
//! mailbox GUID (`G`). Each line is a UID, optional extension fields (kept verbatim when we
//! rewrite the file) and, after ` :`, the file's base name (the name without `:2,…`).
//!
//! Writers hold `dovecot-uidlist.lock` (created with `O_EXCL`; a lock whose mtime is more
//! than two minutes old is stale and broken, as Dovecot does), write `dovecot-uidlist.tmp`,
//! fsync it and rename it over `dovecot-uidlist`.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::write_atomic;

/// How old a lock file must be before it is considered left behind by a dead process.
pub const STALE_LOCK: Duration = Duration::from_secs(120);

/// One line of the UID list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidEntry {
    /// The UID.
    pub uid: u32,
    /// Extension fields between the UID and the name (e.g. `S19 W22`), without the
    /// surrounding spaces; empty when none.
    pub ext: String,
    /// The base file name (without `:2,…`).
    pub base: String,
}

/// A parsed `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidList {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The next UID to assign (already corrected to exceed every listed UID).
    pub next_uid: u32,
    /// The mailbox GUID as 32 hex digits (empty if the file had none).
    pub guid: String,
    /// Entries sorted by UID.
    pub entries: Vec<UidEntry>,
}

/// The first line of a UID list: what it says without its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHeader {
    /// UIDVALIDITY (never 0).
    pub uidvalidity: u32,
    /// The next UID as the header says it (at least 1). Dovecot may leave it lower than
    /// the last entry's UID + 1: only [`UidList::next_uid`] is corrected for that.
    pub next_uid: u32,
    /// The mailbox GUID (empty if none).
    pub guid: String,
    /// Version 1 (`1 UIDVALIDITY NEXTUID`, entries without extension fields).
    v1: bool,
}

/// The longest first line [`ListHeader::load`] reads on its own (a longer one, which no
/// writer makes, is read with the whole file).
const HEADER_MAX: u64 = 4096;

impl ListHeader {
    /// Parses a header line. `None` when it is unusable.
    pub fn parse(line: &str) -> Option<ListHeader> {
        let mut fields = line.split(' ');
        let version = fields.next()?;
        let mut h = ListHeader {
            uidvalidity: 0,
            next_uid: 1,
            guid: String::new(),
            v1: version == "1",
        };
        if h.v1 {
            h.uidvalidity = fields.next()?.parse().ok()?;
            h.next_uid = fields.next()?.parse().ok()?;
        } else if version == "3" || version == "2" {
            for f in fields {
                let (k, v) = f.split_at(f.len().min(1));
                match k {
                    "V" => h.uidvalidity = v.parse().ok()?,
                    "N" => h.next_uid = v.parse().ok()?,
                    "G" => h.guid = v.to_string(),
                    _ => {}
                }
            }
        } else {
            return None;
        }
        if h.uidvalidity == 0 {
            return None;
        }
        h.next_uid = h.next_uid.max(1);
        Some(h)
    }

    /// Reads only the header of `dir/dovecot-uidlist` (its first line), for a caller that
    /// needs the UIDVALIDITY and the next UID but not the entries. `Ok(None)` when the
    /// file is missing or its header unusable, as [`UidList::load`].
    pub fn load(dir: &Path) -> io::Result<Option<ListHeader>> {
        let file = match fs::File::open(dir.join("dovecot-uidlist")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut line = Vec::with_capacity(128);
        io::BufReader::with_capacity(512, file)
            .take(HEADER_MAX)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') && line.len() as u64 >= HEADER_MAX {
            return Ok(UidList::load(dir)?.map(|l| ListHeader {
                uidvalidity: l.uidvalidity,
                next_uid: l.next_uid,
                guid: l.guid,
                v1: false,
            }));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(ListHeader::parse(&String::from_utf8_lossy(&line)))
    }
}

impl UidList {
    /// Parses the file text. `None` when the header is unusable (the caller then treats the
    /// folder as having no UID list, and a new UIDVALIDITY is made).
    pub fn parse(text: &str) -> Option<UidList> {
        let mut lines = text.split('\n');
        let header = ListHeader::parse(lines.next()?)?;
        let v1 = header.v1;
        let mut list = UidList {
            uidvalidity: header.uidvalidity,
            next_uid: header.next_uid,
            guid: header.guid,
            entries: Vec::new(),
        };
        for line in lines {
            let Some((uid, rest)) = line.split_once(' ') else {
                continue;
            };
            let Ok(uid) = uid.parse::<u32>() else {
                continue;
            };
            if uid == 0 {
                continue;
            }
            let (ext, base) = if v1 {
                ("", rest)
            } else if let Some(b) = rest.strip_prefix(':') {
                ("", b)
            } else if let Some(i) = rest.find(" :") {
                (&rest[..i], &rest[i + 2..])
            } else {
                continue;
            };
            if base.is_empty() {
                continue;
            }
            list.entries.push(UidEntry {
                uid,
                ext: ext.to_string(),
                base: base.to_string(),
            });
        }
        list.entries.sort_by_key(|e| e.uid);
        list.entries.dedup_by_key(|e| e.uid);
        if let Some(last) = list.entries.last() {
            list.next_uid = list.next_uid.max(last.uid.saturating_add(1));
        }
        list.next_uid = list.next_uid.max(1);
        Some(list)
    }

    /// The version 3 text Dovecot reads.
    pub fn to_text(&self) -> String {
        let mut s = format!("3 V{} N{}", self.uidvalidity, self.next_uid);
        if !self.guid.is_empty() {
            s.push_str(&format!(" G{}", self.guid));
        }
        s.push('\n');
        for e in &self.entries {
            s.push_str(&e.uid.to_string());
            s.push(' ');
            if !e.ext.is_empty() {
                s.push_str(&e.ext);
                s.push(' ');
            }
            s.push(':');
            s.push_str(&e.base);
            s.push('\n');
        }
        s
    }

    /// Reads `dir/dovecot-uidlist`; `Ok(None)` when missing or unusable.
    pub fn load(dir: &Path) -> io::Result<Option<UidList>> {
        match fs::read(dir.join("dovecot-uidlist")) {
            Ok(b) => Ok(UidList::parse(&String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `dir/dovecot-uidlist` via `dovecot-uidlist.tmp` + rename. Hold the lock.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_atomic(&dir.join("dovecot-uidlist"), self.to_text().as_bytes())
    }
}

/// A held dotlock; removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
}

impl DotLock {
    /// Takes `dir/dovecot-uidlist.lock`, waiting up to `timeout`. A lock file older than
    /// [`STALE_LOCK`] is removed as stale. Fails with [`io::ErrorKind::TimedOut`].
    pub fn acquire(dir: &Path, timeout: Duration) -> io::Result<DotLock> {
        let path = dir.join("dovecot-uidlist.lock");
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}", path.display()),
                    ))
                }
            }
            if let Ok(meta) = fs::metadata(&path) {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                if age > STALE_LOCK {
                    let _ = fs::remove_file(&path);
                    continue;
                }
            }
            if start.elapsed() >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} is held by another process", path.display()),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A new UIDVALIDITY for a folder of the Maildir at `root`: the current time, but above the
/// last value handed out (kept in `root/dovecot-uidvalidity` as hex, as Dovecot does), so a
/// folder deleted and re-created within a second still gets a new one.
pub fn new_uidvalidity(root: &Path) -> u32 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
        .max(1);
    let file = root.join("dovecot-uidvalidity");
    let last = fs::read_to_string(&file)
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    let v = if now > last {
        now
    } else {
        last.wrapping_add(1).max(1)
    };
    let _ = write_atomic(&file, format!("{v:08x}").as_bytes());
    v
}

/// A fresh mailbox GUID (32 hex digits) from the kernel's random source, falling back to
/// the time and pid.
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    let ok = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_v3_and_corrects_next_uid() {
        let t = "3 V1795407887 N1 Gb6c5\n1 :a.b,S=19,W=22\n3 S5 W6 :c.d\nbad\n";
        let l = UidList::parse(t).unwrap();
        assert_eq!(l.uidvalidity, 1_795_407_887);
        assert_eq!(l.next_uid, 4);
        assert_eq!(l.guid, "b6c5");
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[1].ext, "S5 W6");
        assert_eq!(l.entries[1].base, "c.d");
        assert_eq!(
            l.to_text(),
            "3 V1795407887 N4 Gb6c5\n1 :a.b,S=19,W=22\n3 S5 W6 :c.d\n"
        );
        assert_eq!(UidList::parse(&l.to_text()).unwrap(), l);
    }

    #[test]
    fn reads_the_header_alone() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ListHeader::load(d.path()).unwrap(), None);
        let path = d.path().join("dovecot-uidlist");
        fs::write(&path, "3 V1795407887 N1 Gb6c5\n1 :a.b\n3 S5 W6 :c.d\n").unwrap();
        let h = ListHeader::load(d.path()).unwrap().unwrap();
        assert_eq!(
            (h.uidvalidity, h.next_uid, h.guid.as_str()),
            (1_795_407_887, 1, "b6c5")
        );
        // No entry is read: a damaged one after the header does not matter.
        fs::write(&path, "3 V7 N9\n\u{0}garbage").unwrap();
        let h = ListHeader::load(d.path()).unwrap().unwrap();
        assert_eq!((h.uidvalidity, h.next_uid), (7, 9));
        fs::write(&path, "1 42 10\n7 x.y\n").unwrap();
        let h = ListHeader::load(d.path()).unwrap().unwrap();
        assert_eq!((h.uidvalidity, h.next_uid), (42, 10));
        for bad in ["", "3 N5\n1 :a\n", "####\n", "3 V0 N1\n"] {
            fs::write(&path, bad).unwrap();
            assert_eq!(ListHeader::load(d.path()).unwrap(), None, "{bad:?}");
        }
        // A header without its line end, and one longer than is read at once.
        fs::write(&path, "3 V5 N6").unwrap();
        assert_eq!(ListHeader::load(d.path()).unwrap().unwrap().next_uid, 6);
        let long = format!("3 V5 N6 X{}\n1 :a\n", "x".repeat(5000));
        fs::write(&path, long).unwrap();
        let h = ListHeader::load(d.path()).unwrap().unwrap();
        assert_eq!((h.uidvalidity, h.next_uid), (5, 6));
    }

    #[test]
    fn parses_v1_and_rejects_garbage() {
        let l = UidList::parse("1 42 10\n7 x.y\n").unwrap();
        assert_eq!((l.uidvalidity, l.next_uid), (42, 10));
        assert_eq!(l.entries[0].base, "x.y");
        assert!(UidList::parse("").is_none());
        assert!(UidList::parse("9 V1").is_none());
        assert!(UidList::parse("3 N5").is_none());
    }

    #[test]
    fn lock_is_exclusive_and_stale_locks_are_broken() {
        let d = tempfile::tempdir().unwrap();
        let l = DotLock::acquire(d.path(), Duration::from_secs(1)).unwrap();
        let e = DotLock::acquire(d.path(), Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(l);
        let _l2 = DotLock::acquire(d.path(), Duration::from_millis(30)).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("dovecot-uidlist.lock"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(121))
            .unwrap();
        std::mem::forget(_l2);
        let _l3 = DotLock::acquire(d.path(), Duration::from_millis(30)).unwrap();
    }

    #[test]
    fn uidvalidity_always_increases() {
        let d = tempfile::tempdir().unwrap();
        let a = new_uidvalidity(d.path());
        let b = new_uidvalidity(d.path());
        assert!(b > a);
        assert_eq!(new_guid().len(), 32);
    }
}
