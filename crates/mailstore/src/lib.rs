//! Petrel's Maildir++ mail store, for imapd and pop3d.
//!
//! One user's mail is a Maildir laid out exactly as Dovecot lays it out with
//! `mail_location = maildir:~/Maildir`, so a mailbox can move between Dovecot and Petrel:
//!
//! - **Folders.** INBOX is the Maildir root (`cur/ new/ tmp/`); every other folder is a
//!   directory `.NAME` in the root, with `.` as the hierarchy separator (`.Lists.work` is
//!   `Lists.work`, a child of `Lists`). The separator shown to clients is `.` too, as
//!   Dovecot's default. Names are handled in the IMAP wire form, modified UTF-7 (RFC 3501
//!   5.1.3), which is also their on-disk form, so no conversion happens anywhere; names that
//!   are not valid modified UTF-7 are refused. A parent that exists only through its
//!   children (`Lists` above) is listed as not selectable (`\Noselect`). Each folder
//!   directory holds an empty `maildirfolder` file, as Dovecot creates.
//! - **Flags** are the letters after `:2,` and keywords the letters `a`..`z` of the folder's
//!   `dovecot-keywords` ([`flags`]).
//! - **UIDs** live in each folder's `dovecot-uidlist`, Dovecot's version 3 format, read as
//!   Dovecot writes it and written so Dovecot reads it ([`uidlist`]); new UIDVALIDITY values
//!   come from the time, kept increasing by the root's `dovecot-uidvalidity`.
//! - **Subscriptions** are the root's `subscriptions` file in Dovecot 2.3's format: a
//!   `V\t2` line, an empty line, then one name per line with the hierarchy separator
//!   written as a tab.
//! - **Our own index** `petrel-index` per folder caches sizes, dates, MODSEQs and caller
//!   blobs ([`index`]); it is only ever a cache for the files above.
//!
//! Every file this crate rewrites is written to a unique temporary name, fsynced and renamed
//! into place; directories whose entries change are fsynced.
#![deny(missing_docs)]

pub mod flags;
pub mod folder;
pub mod index;
pub mod uidlist;

pub use flags::{FlagSet, Keywords};
pub use folder::{Changes, Folder, MessageInfo};

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The hierarchy separator shown to clients (Dovecot's Maildir++ default).
pub const SEPARATOR: char = '.';

/// The special-use folders made on first login, with their RFC 6154 attributes.
pub const SPECIAL_USE: [(&str, &str); 5] = [
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

static TMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// fsyncs a directory.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `path` atomically: a unique temporary name beside it, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        "{name}.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r?;
    sync_dir(dir)
}

/// Errors of folder operations.
#[derive(Debug)]
pub enum StoreError {
    /// The folder does not exist.
    NotFound(String),
    /// The folder already exists.
    AlreadyExists(String),
    /// The name is not a valid folder name (reason given).
    BadName(String),
    /// The operation is not allowed (e.g. deleting INBOX).
    Refused(String),
    /// A file-system error.
    Io(io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(n) => write!(f, "mailbox {n} does not exist"),
            StoreError::AlreadyExists(n) => write!(f, "mailbox {n} already exists"),
            StoreError::BadName(r) => write!(f, "bad mailbox name: {r}"),
            StoreError::Refused(r) => write!(f, "{r}"),
            StoreError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        StoreError::Io(e)
    }
}

/// One entry of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The name (`INBOX` or the modified UTF-7 name with `.` separators).
    pub name: String,
    /// `false` for a parent that exists only through its children (`\Noselect`).
    pub selectable: bool,
    /// `\HasChildren` (else `\HasNoChildren`).
    pub has_children: bool,
    /// The RFC 6154 attribute (`\Sent`, …) for the special-use names.
    pub special_use: Option<&'static str>,
}

/// Whether `name` is INBOX (any case).
pub fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

/// Checks a folder name: printable ASCII in valid modified UTF-7, no `/`, `\`, `*`, `%`, no
/// empty hierarchy levels (leading, trailing or doubled `.`), at most 255 bytes.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |r: &str| Err(StoreError::BadName(format!("{name:?}: {r}")));
    if name.is_empty() || name.len() > 255 {
        return bad("empty or too long");
    }
    if name.split('.').any(|p| p.is_empty()) {
        return bad("empty hierarchy level");
    }
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..0x7f).contains(&c) || matches!(c, b'/' | b'\\' | b'*' | b'%') {
            return bad("character not allowed");
        }
        if c == b'&' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'+' || b[j] == b',') {
                j += 1;
            }
            if j >= b.len() || b[j] != b'-' {
                return bad("bad modified UTF-7");
            }
            let n = j - start;
            // Base64 of UTF-16: 16 bits per unit, so 3, 6 or 8 chars per 1, 2 or 3 units.
            if n != 0 && matches!(n % 8, 1 | 4) {
                return bad("bad modified UTF-7");
            }
            i = j;
        }
        i += 1;
    }
    Ok(())
}

/// One user's Maildir.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    lock_timeout: Duration,
}

impl Store {
    /// Opens the Maildir at `root`, creating it and its `cur/ new/ tmp/` when missing.
    pub fn open(root: &Path) -> io::Result<Store> {
        make_maildir(root, false)?;
        Ok(Store {
            root: root.to_path_buf(),
            lock_timeout: Duration::from_secs(30),
        })
    }

    /// How long operations wait for a `dovecot-uidlist.lock` held by someone else
    /// (default 30 s).
    pub fn set_lock_timeout(&mut self, timeout: Duration) {
        self.lock_timeout = timeout;
    }

    /// The Maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a folder (validated name).
    pub fn folder_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        if is_inbox(name) {
            return Ok(self.root.clone());
        }
        check_name(name)?;
        Ok(self.root.join(format!(".{name}")))
    }

    fn names_on_disk(&self) -> io::Result<Vec<(String, bool)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.root)? {
            let e = e?;
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(name) = n.strip_prefix('.') else {
                continue;
            };
            if check_name(name).is_err() || !e.file_type()?.is_dir() {
                continue;
            }
            let selectable = e.path().join("cur").is_dir();
            v.push((name.to_string(), selectable));
        }
        Ok(v)
    }

    /// INBOX and every folder, sorted by name with INBOX first, including parents that
    /// exist only through their children (not selectable).
    pub fn list(&self) -> io::Result<Vec<FolderInfo>> {
        let on_disk = self.names_on_disk()?;
        let mut all: std::collections::BTreeMap<String, bool> = Default::default();
        for (n, sel) in &on_disk {
            let mut prefix = String::new();
            let parts: Vec<&str> = n.split('.').collect();
            for p in &parts[..parts.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(p);
                all.entry(prefix.clone()).or_insert(false);
            }
            let e = all.entry(n.clone()).or_insert(*sel);
            *e |= *sel;
        }
        let names: Vec<String> = all.keys().cloned().collect();
        let has_children = |n: &str| {
            names
                .iter()
                .any(|o| o.len() > n.len() + 1 && o.starts_with(n) && o.as_bytes()[n.len()] == b'.')
        };
        let mut out = vec![FolderInfo {
            name: "INBOX".into(),
            selectable: true,
            has_children: names
                .iter()
                .any(|o| o.len() > 6 && is_inbox(&o[..5]) && o.as_bytes()[5] == b'.'),
            special_use: None,
        }];
        for (n, sel) in &all {
            if is_inbox(n) {
                continue;
            }
            out.push(FolderInfo {
                has_children: has_children(n),
                selectable: *sel,
                special_use: SPECIAL_USE.iter().find(|s| s.0 == n).map(|s| s.1),
                name: n.clone(),
            });
        }
        Ok(out)
    }

    /// Whether a selectable folder of this name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.folder_dir(name)
            .map(|d| d.join("cur").is_dir())
            .unwrap_or(false)
    }

    /// Creates a folder (parents are implied by the Maildir++ layout).
    pub fn create(&self, name: &str) -> Result<(), StoreError> {
        if is_inbox(name) {
            return Err(StoreError::AlreadyExists(name.into()));
        }
        let dir = self.folder_dir(name)?;
        if dir.join("cur").is_dir() {
            return Err(StoreError::AlreadyExists(name.into()));
        }
        make_maildir(&dir, true)?;
        Ok(())
    }

    /// Deletes a folder and its messages (its children stay; a parent left with children
    /// becomes a `\Noselect` name). INBOX cannot be deleted.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        if is_inbox(name) {
            return Err(StoreError::Refused("INBOX cannot be deleted".into()));
        }
        let dir = self.folder_dir(name)?;
        if !dir.is_dir() {
            return Err(StoreError::NotFound(name.into()));
        }
        // Renamed away in one step (so the folder is gone at once, even after a crash), then
        // removed; leftovers are names starting with ".." and never listed.
        let trash = self.root.join(format!(
            "..petrel-deleted.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &trash)?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&trash)?;
        Ok(())
    }

    /// Renames a folder and its children. Renaming INBOX moves all its messages into a new
    /// folder `to` and leaves INBOX empty (RFC 3501).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        if is_inbox(to) {
            return Err(StoreError::AlreadyExists(to.into()));
        }
        let to_dir = self.folder_dir(to)?;
        if to_dir.exists() {
            return Err(StoreError::AlreadyExists(to.into()));
        }
        if is_inbox(from) {
            return self.rename_inbox(to, &to_dir);
        }
        check_name(from)?;
        if to.starts_with(from) && to.as_bytes().get(from.len()) == Some(&b'.') {
            return Err(StoreError::Refused(format!(
                "cannot move {from} into its own child"
            )));
        }
        let mut moves = Vec::new();
        for (n, _) in self.names_on_disk()? {
            let suffix = if n == from {
                Some("")
            } else {
                n.strip_prefix(from).filter(|s| s.starts_with('.'))
            };
            if let Some(s) = suffix {
                let target = format!("{to}{s}");
                check_name(&target)?;
                moves.push((n.clone(), target));
            }
        }
        if moves.is_empty() {
            return Err(StoreError::NotFound(from.into()));
        }
        for (_, t) in &moves {
            if self.root.join(format!(".{t}")).exists() {
                return Err(StoreError::AlreadyExists(t.clone()));
            }
        }
        for (f, t) in &moves {
            fs::rename(
                self.root.join(format!(".{f}")),
                self.root.join(format!(".{t}")),
            )?;
        }
        sync_dir(&self.root)?;
        Ok(())
    }

    fn rename_inbox(&self, to: &str, to_dir: &Path) -> Result<(), StoreError> {
        make_maildir(to_dir, true)?;
        match fs::copy(
            self.root.join("dovecot-keywords"),
            to_dir.join("dovecot-keywords"),
        ) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // Each message moves with one rename, so it is always in exactly one of the two.
        for sub in ["new", "cur"] {
            let src = self.root.join(sub);
            let dst = to_dir.join(sub);
            for e in fs::read_dir(&src)? {
                let e = e?;
                let name = e.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                match fs::rename(src.join(&name), dst.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            sync_dir(&dst)?;
            sync_dir(&src)?;
        }
        let _ = to;
        Ok(())
    }

    /// The subscribed names.
    pub fn subscriptions(&self) -> io::Result<Vec<String>> {
        let text = match fs::read_to_string(self.root.join("subscriptions")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(parse_subscriptions(&text))
    }

    /// Subscribes a name (the folder need not exist, as RFC 3501 allows).
    pub fn subscribe(&self, name: &str) -> Result<(), StoreError> {
        let name = if is_inbox(name) { "INBOX" } else { name };
        check_name(name)?;
        let mut subs = self.subscriptions()?;
        if !subs.iter().any(|s| s == name) {
            subs.push(name.to_string());
            write_atomic(
                &self.root.join("subscriptions"),
                format_subscriptions(&subs).as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Unsubscribes a name.
    pub fn unsubscribe(&self, name: &str) -> Result<(), StoreError> {
        let mut subs = self.subscriptions()?;
        let before = subs.len();
        subs.retain(|s| s != name && !(is_inbox(name) && is_inbox(s)));
        if subs.len() == before {
            return Err(StoreError::NotFound(name.into()));
        }
        write_atomic(
            &self.root.join("subscriptions"),
            format_subscriptions(&subs).as_bytes(),
        )?;
        Ok(())
    }

    /// Creates and subscribes the special-use folders (`Sent Drafts Trash Junk Archive`)
    /// that are missing; meant for a user's first login.
    pub fn ensure_special_use(&self) -> io::Result<()> {
        for (name, _) in SPECIAL_USE {
            if !self.exists(name) {
                match self.create(name) {
                    Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(StoreError::Io(e)) => return Err(e),
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
                self.subscribe(name)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Opens a folder (INBOX or an existing selectable folder) and syncs it.
    pub fn folder(&self, name: &str) -> Result<Folder, StoreError> {
        let dir = self.folder_dir(name)?;
        if !dir.join("cur").is_dir() {
            return Err(StoreError::NotFound(name.into()));
        }
        Ok(Folder::open(dir, self.root.clone(), self.lock_timeout)?)
    }
}

/// Parses a `subscriptions` file: Dovecot 2.3's `V\t2` format (tab = separator) or the
/// older one name per line.
pub fn parse_subscriptions(text: &str) -> Vec<String> {
    let mut lines = text.lines().peekable();
    let v2 = lines.peek().is_some_and(|l| l.starts_with("V\t"));
    if v2 {
        lines.next();
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            if v2 {
                l.replace('\t', ".")
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// Formats a `subscriptions` file as Dovecot 2.3 writes it.
pub fn format_subscriptions(names: &[String]) -> String {
    let mut s = String::from("V\t2\n\n");
    for n in names {
        s.push_str(&n.replace('.', "\t"));
        s.push('\n');
    }
    s
}

/// Creates a Maildir (`tmp/ new/ cur/`, mode 0700) at `dir`, plus the `maildirfolder`
/// marker for a sub-folder. A new sub-folder is built under a temporary name and renamed
/// into place, so it never exists half-made.
fn make_maildir(dir: &Path, subfolder: bool) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.mode(0o700);
    if dir.join("cur").is_dir() && dir.join("new").is_dir() && dir.join("tmp").is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    if subfolder && !dir.exists() {
        let tmp = parent.join(format!(
            "..petrel-new.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let r = (|| {
            b.create(&tmp)?;
            for sub in ["cur", "new", "tmp"] {
                b.create(tmp.join(sub))?;
            }
            File::create(tmp.join("maildirfolder"))?;
            sync_dir(&tmp)?;
            fs::rename(&tmp, dir)
        })();
        if r.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        r?;
        return sync_dir(parent);
    }
    let mut rb = DirBuilder::new();
    rb.mode(0o700).recursive(true);
    rb.create(dir)?;
    for sub in ["cur", "new", "tmp"] {
        match b.create(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if subfolder {
        File::create(dir.join("maildirfolder"))?;
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["Foo", "Lists.work", "Caf&AOk-", "a&-b", "INBOX.x", "x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".a", "a.", "a..b", "a/b", "a*", "a%", "a&AOk", "a&A-", "tab\tx", "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subscriptions_format() {
        let text = "V\t2\n\nFoo\nLists\twork\nCaf&-AOk-\n";
        let v = parse_subscriptions(text);
        assert_eq!(v, vec!["Foo", "Lists.work", "Caf&-AOk-"]);
        assert_eq!(format_subscriptions(&v), text);
        assert_eq!(parse_subscriptions("A\nB.c\n"), vec!["A", "B.c"]);
    }
}
