//! An opened folder: its messages, UIDs, flags and MODSEQs, kept in step with the directory.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::flags::{file_name, parse_letters, split_name, FlagSet, Keywords};
use crate::index::{Index, IndexRecord};
use crate::sync_dir;
use crate::uidlist::{new_guid, new_uidvalidity, DotLock, UidEntry, UidList};

/// One message as the folder knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The UID.
    pub uid: u32,
    /// The current file name in `cur/` (with its `:2,` flags).
    pub file: String,
    /// The physical size in bytes (from `S=` in the name when present, else the file's).
    pub size: u64,
    /// INTERNALDATE: the file's mtime in seconds since the epoch, as Dovecot uses.
    pub internaldate: i64,
    /// The flags.
    pub flags: FlagSet,
    /// The MODSEQ of the last change to this message (CONDSTORE).
    pub modseq: u64,
    /// `\Recent`: this session moved the message out of `new/` or appended it.
    pub recent: bool,
}

/// What [`Folder::sync`] found changed since the previous sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// UIDs of messages that disappeared (expunged by another session or program).
    pub expunged: Vec<u32>,
    /// UIDs of messages that appeared (new deliveries, appends, copies), ascending.
    pub new: Vec<u32>,
    /// UIDs of messages whose flags changed on disk by someone else.
    pub flags: Vec<u32>,
    /// The UID list was re-created with another UIDVALIDITY: every UID the session holds is
    /// void and it must close the folder (IMAP: disconnect or re-SELECT).
    pub uidvalidity_changed: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    info: MessageInfo,
    base: String,
    vsize: Option<u64>,
    cache: Vec<(u8, Vec<u8>)>,
}

/// An opened folder. See [`Folder::sync`].
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    root: PathBuf,
    lock_timeout: Duration,
    uidvalidity: u32,
    next_uid: u32,
    guid: String,
    keywords: Keywords,
    msgs: Vec<Entry>,
    by_uid: HashMap<u32, usize>,
    /// What the UID list said when last read: base → (uid, ext fields).
    listed: HashMap<String, (u32, String)>,
    /// Index records not yet matched to a file, by UID.
    warm: HashMap<u32, IndexRecord>,
    highest_modseq: u64,
    index_dirty: bool,
    index_stamp: Option<(u64, SystemTime)>,
    /// The state of the directories and files at the start of the last full sync, when it
    /// was old enough to be trusted: equal stamps mean nothing changed since.
    quiet_stamps: Option<Stamps>,
}

/// Modification stamps of what a sync reads: new/, cur/, dovecot-keywords, petrel-index.
type Stamps = [Option<(u64, SystemTime)>; 4];

/// A directory or file changed less than this long ago may still change within the same
/// timestamp tick, unseen: its stamp is not trusted to mean "nothing new".
const STAMP_SETTLE: Duration = Duration::from_secs(1);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn hostname() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let h = if h.is_empty() { "localhost".into() } else { h };
    h.replace('/', "\\057").replace(':', "\\072")
}

/// The RFC822.SIZE of `data`: its length with every bare LF counted as CRLF.
pub fn crlf_size(data: &[u8]) -> u64 {
    let mut n = data.len() as u64;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    n
}

/// A new, unique base name in Dovecot's style: `SECS.MUSECSPpidQn.HOST,S=SIZE,W=VSIZE`.
fn unique_base(size: u64, vsize: Option<u64>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = format!(
        "{}.M{}P{}Q{}.{},S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        hostname()
    );
    if let Some(v) = vsize {
        s.push_str(&format!(",W={v}"));
    }
    s
}

/// A `,K=NUMBER` field of a base name (`S` = size, `W` = RFC822.SIZE).
fn name_field(base: &str, key: char) -> Option<u64> {
    base.split(',').skip(1).find_map(|f| {
        f.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    })
}

/// Order of new files: by the leading seconds, then by name (delivery order).
fn arrival_key(base: &str) -> (u64, &str) {
    let digits = base.bytes().take_while(u8::is_ascii_digit).count();
    (base[..digits].parse().unwrap_or(u64::MAX), base)
}

fn mtime_secs(meta: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
}

fn read_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        if let Some(n) = e.file_name().to_str() {
            if !n.starts_with('.') && !n.contains(['\t', '\n']) {
                v.push(n.to_string());
            }
        }
    }
    Ok(v)
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl Folder {
    /// Opens the folder in directory `dir` (which has `cur/ new/ tmp/`) of the Maildir at
    /// `root`, and syncs it once.
    pub(crate) fn open(dir: PathBuf, root: PathBuf, lock_timeout: Duration) -> io::Result<Folder> {
        let mut f = Folder {
            dir,
            root,
            lock_timeout,
            uidvalidity: 0,
            next_uid: 1,
            guid: String::new(),
            keywords: Keywords::default(),
            msgs: Vec::new(),
            by_uid: HashMap::new(),
            listed: HashMap::new(),
            warm: HashMap::new(),
            highest_modseq: 0,
            index_dirty: false,
            index_stamp: None,
            quiet_stamps: None,
        };
        if let Some(list) = UidList::load(&f.dir)? {
            f.take_list(list);
        }
        if f.uidvalidity == 0 {
            let lock = f.lock()?;
            if UidList::load(&f.dir)?.is_none() {
                f.reload_list_locked()?;
                f.save_list_locked()?;
            } else {
                f.reload_list_locked()?;
            }
            drop(lock);
        }
        f.load_index();
        f.sync()?;
        Ok(f)
    }

    fn take_list(&mut self, list: UidList) {
        self.uidvalidity = list.uidvalidity;
        self.next_uid = list.next_uid;
        self.guid = list.guid;
        self.listed = list
            .entries
            .into_iter()
            .map(|e| (e.base, (e.uid, e.ext)))
            .collect();
    }

    fn load_index(&mut self) {
        self.index_stamp = file_stamp(&self.dir.join("petrel-index"));
        let Some(index) = Index::load(&self.dir) else {
            self.index_dirty = true;
            return;
        };
        if index.uidvalidity != self.uidvalidity || self.uidvalidity == 0 {
            self.index_dirty = true;
            return;
        }
        self.highest_modseq = self.highest_modseq.max(index.highest_modseq);
        for r in index.records {
            match self.by_uid.get(&r.uid) {
                Some(&i) => {
                    // Another session wrote it: keep the newer MODSEQ and its cache.
                    let e = &mut self.msgs[i];
                    if r.file == e.info.file && r.modseq > e.info.modseq {
                        e.info.modseq = r.modseq;
                    }
                    if e.vsize.is_none() {
                        e.vsize = r.vsize;
                    }
                    for (k, b) in r.cache {
                        if !e.cache.iter().any(|(ek, _)| *ek == k) {
                            e.cache.push((k, b));
                        }
                    }
                }
                None => {
                    self.warm.insert(r.uid, r);
                }
            }
        }
    }

    /// The folder's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// UIDNEXT: the UID the next new message will get (at least).
    pub fn uidnext(&self) -> u32 {
        let last = self.msgs.last().map_or(0, |e| e.info.uid);
        self.next_uid.max(last.saturating_add(1))
    }

    /// HIGHESTMODSEQ.
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// The keyword table (for PERMANENTFLAGS / FLAGS).
    pub fn keywords(&self) -> &Keywords {
        &self.keywords
    }

    /// The messages, sorted by UID; the sequence number of `messages()[i]` is `i + 1`.
    pub fn messages(&self) -> impl ExactSizeIterator<Item = &MessageInfo> + '_ {
        self.msgs.iter().map(|e| &e.info)
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether the folder holds no messages.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The message at `seq` (1-based).
    pub fn by_seq(&self, seq: u32) -> Option<&MessageInfo> {
        let i = (seq as usize).checked_sub(1)?;
        self.msgs.get(i).map(|e| &e.info)
    }

    /// The message with this UID.
    pub fn get(&self, uid: u32) -> Option<&MessageInfo> {
        self.by_uid.get(&uid).map(|&i| &self.msgs[i].info)
    }

    /// The sequence number (1-based) of a UID.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.by_uid.get(&uid).map(|&i| i as u32 + 1)
    }

    /// The path of the message file with this UID.
    pub fn path(&self, uid: u32) -> Option<PathBuf> {
        self.get(uid).map(|m| self.dir.join("cur").join(&m.file))
    }

    /// RFC822.SIZE (CRLF line ends): from `W=` in the name, the index, or by reading the file
    /// once (the result is remembered and saved with the index).
    pub fn rfc822_size(&mut self, uid: u32) -> io::Result<u64> {
        let i = self.index_of(uid)?;
        if let Some(v) = self.msgs[i].vsize {
            return Ok(v);
        }
        let data = fs::read(self.dir.join("cur").join(&self.msgs[i].info.file))?;
        let v = crlf_size(&data);
        self.msgs[i].vsize = Some(v);
        self.index_dirty = true;
        Ok(v)
    }

    /// A cache blob the caller stored for this message (e.g. kind 1 = ENVELOPE).
    pub fn cache(&self, uid: u32, kind: u8) -> Option<&[u8]> {
        let i = *self.by_uid.get(&uid)?;
        self.msgs[i]
            .cache
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b.as_slice())
    }

    /// Stores a cache blob for this message; saved with the index at the next sync.
    pub fn set_cache(&mut self, uid: u32, kind: u8, bytes: &[u8]) -> io::Result<()> {
        let i = self.index_of(uid)?;
        let c = &mut self.msgs[i].cache;
        c.retain(|(k, _)| *k != kind);
        c.push((kind, bytes.to_vec()));
        self.index_dirty = true;
        Ok(())
    }

    fn index_of(&self, uid: u32) -> io::Result<usize> {
        self.by_uid.get(&uid).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no message with UID {uid}"),
            )
        })
    }

    fn reindex(&mut self) {
        self.msgs.sort_by_key(|e| e.info.uid);
        self.by_uid = self
            .msgs
            .iter()
            .enumerate()
            .map(|(i, e)| (e.info.uid, i))
            .collect();
    }

    fn lock(&self) -> io::Result<DotLock> {
        DotLock::acquire(&self.dir, self.lock_timeout)
    }

    /// Under the lock: re-reads the UID list, or creates a new one. Returns whether the
    /// UIDVALIDITY changed under us.
    fn reload_list_locked(&mut self) -> io::Result<bool> {
        match UidList::load(&self.dir)? {
            Some(list) => {
                let changed = self.uidvalidity != 0 && list.uidvalidity != self.uidvalidity;
                self.take_list(list);
                Ok(changed)
            }
            None => {
                let changed = self.uidvalidity != 0;
                self.uidvalidity = new_uidvalidity(&self.root);
                self.next_uid = 1;
                self.guid = new_guid();
                self.listed.clear();
                Ok(changed)
            }
        }
    }

    /// Writes the UID list from `listed` (hold the lock).
    fn save_list_locked(&self) -> io::Result<()> {
        let mut entries: Vec<UidEntry> = self
            .listed
            .iter()
            .map(|(base, (uid, ext))| UidEntry {
                uid: *uid,
                ext: ext.clone(),
                base: base.clone(),
            })
            .collect();
        entries.sort_by_key(|e| e.uid);
        UidList {
            uidvalidity: self.uidvalidity,
            next_uid: self.next_uid,
            guid: if self.guid.is_empty() {
                new_guid()
            } else {
                self.guid.clone()
            },
            entries,
        }
        .save(&self.dir)
    }

    fn bump(&mut self) -> u64 {
        self.highest_modseq += 1;
        self.index_dirty = true;
        self.highest_modseq
    }

    /// Re-scans `new/` and `cur/`: moves files from `new/` to `cur/` (adding `:2,`), gives
    /// UIDs to files without one (in arrival order, under the UID list lock), drops
    /// messages whose files are gone and notices flag changes made by others (a renamed file
    /// keeps its UID: it is matched by its base name). Returns what changed since the last
    /// sync. Also saves the index when anything in it changed.
    pub fn sync(&mut self) -> io::Result<Changes> {
        // Nothing touched since the last full sync: nothing to do (an IDLE poll costs four
        // stats instead of two readdirs).
        let stamps = self.stamps();
        if self.quiet_stamps.is_some() && self.quiet_stamps == Some(stamps) {
            return Ok(Changes::default());
        }
        let settled = stamps.iter().flatten().all(|(_, t)| {
            SystemTime::now()
                .duration_since(*t)
                .is_ok_and(|age| age >= STAMP_SETTLE)
        });
        self.quiet_stamps = None;
        let ch = self.full_sync()?;
        if settled {
            self.quiet_stamps = Some(stamps);
        }
        Ok(ch)
    }

    fn stamps(&self) -> Stamps {
        [
            file_stamp(&self.dir.join("new")),
            file_stamp(&self.dir.join("cur")),
            file_stamp(&self.dir.join("dovecot-keywords")),
            file_stamp(&self.dir.join("petrel-index")),
        ]
    }

    fn full_sync(&mut self) -> io::Result<Changes> {
        let mut ch = Changes::default();
        self.keywords = Keywords::load(&self.dir)?;
        if file_stamp(&self.dir.join("petrel-index")) != self.index_stamp {
            self.load_index();
        }
        let cur = self.dir.join("cur");
        let new = self.dir.join("new");
        let mut recent: HashSet<String> = HashSet::new();
        let mut moved = false;
        for name in read_names(&new)? {
            let target = if name.contains(':') {
                name.clone()
            } else {
                format!("{name}:2,")
            };
            match fs::rename(new.join(&name), cur.join(&target)) {
                Ok(()) => {
                    moved = true;
                    recent.insert(split_name(&target).0.to_string());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if moved {
            sync_dir(&new)?;
            sync_dir(&cur)?;
        }
        let mut found: HashMap<String, String> = HashMap::new();
        let scan = |found: &mut HashMap<String, String>| -> io::Result<()> {
            for name in read_names(&cur)? {
                found.insert(split_name(&name).0.to_string(), name);
            }
            Ok(())
        };
        scan(&mut found)?;
        if self
            .msgs
            .iter()
            .any(|e| !found.contains_key(e.base.as_str()))
        {
            // A rename by another session can hide a file from one readdir: look again.
            scan(&mut found)?;
        }

        // Known messages: flag changes and expunges.
        let mut gone = Vec::new();
        let mut flag_changed = Vec::new();
        for (i, e) in self.msgs.iter_mut().enumerate() {
            match found.remove(e.base.as_str()) {
                None => gone.push(i),
                Some(file) if file != e.info.file => {
                    e.info.flags = parse_letters(split_name(&file).1, &self.keywords);
                    e.info.file = file;
                    flag_changed.push(i);
                }
                Some(_) => {}
            }
        }
        for i in flag_changed {
            let m = self.bump();
            self.msgs[i].info.modseq = m;
            ch.flags.push(self.msgs[i].info.uid);
        }
        if !gone.is_empty() {
            for &i in gone.iter().rev() {
                let e = self.msgs.remove(i);
                ch.expunged.push(e.info.uid);
            }
            ch.expunged.sort_unstable();
            self.index_dirty = true;
        }

        // Unknown files: UIDs from the list, or new ones under the lock.
        if !found.is_empty() {
            let mut lock = None;
            if self.uidvalidity == 0 || found.keys().any(|b| !self.listed.contains_key(b)) {
                lock = Some(self.lock()?);
                if self.reload_list_locked()? {
                    ch = Changes {
                        uidvalidity_changed: true,
                        ..Changes::default()
                    };
                    self.msgs.clear();
                    self.warm.clear();
                    self.highest_modseq = 0;
                    return self.resync_after_reset(ch, lock);
                }
            }
            let mut unlisted: Vec<&String> = found
                .keys()
                .filter(|b| !self.listed.contains_key(*b))
                .collect();
            unlisted.sort_by(|a, b| arrival_key(a).cmp(&arrival_key(b)));
            let mut wrote = false;
            for base in unlisted {
                self.listed
                    .insert(base.clone(), (self.next_uid, String::new()));
                self.next_uid = self.next_uid.saturating_add(1);
                wrote = true;
            }
            if wrote {
                self.save_list_locked()?;
            }
            drop(lock);
            let mut added: Vec<(u32, String, String)> = found
                .into_iter()
                .filter_map(|(base, file)| {
                    self.listed.get(&base).map(|(uid, _)| (*uid, base, file))
                })
                .collect();
            added.sort_by_key(|a| a.0);
            for (uid, base, file) in added {
                let e = self.make_entry(uid, base, file, &recent)?;
                if let Some(e) = e {
                    ch.new.push(uid);
                    self.msgs.push(e);
                }
            }
        }
        self.reindex();
        if self.index_dirty {
            self.save_index()?;
        }
        Ok(ch)
    }

    fn resync_after_reset(&mut self, ch: Changes, lock: Option<DotLock>) -> io::Result<Changes> {
        drop(lock);
        self.by_uid.clear();
        let inner = self.sync()?;
        Ok(Changes {
            new: inner.new,
            ..ch
        })
    }

    /// Builds the entry of a newly seen file; `None` when the file vanished meanwhile.
    fn make_entry(
        &mut self,
        uid: u32,
        base: String,
        file: String,
        recent: &HashSet<String>,
    ) -> io::Result<Option<Entry>> {
        let flags = parse_letters(split_name(&file).1, &self.keywords);
        let warm = self
            .warm
            .remove(&uid)
            .filter(|r| split_name(&r.file).0 == base);
        let (size, internaldate, vsize, cache, modseq) = match warm {
            Some(r) => {
                let modseq = if r.file == file {
                    r.modseq
                } else {
                    self.bump()
                };
                (r.size, r.internaldate, r.vsize, r.cache, modseq)
            }
            None => {
                let meta = match fs::metadata(self.dir.join("cur").join(&file)) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let size = name_field(&base, 'S').unwrap_or(meta.len());
                let m = self.bump();
                (
                    size,
                    mtime_secs(&meta),
                    name_field(&base, 'W'),
                    Vec::new(),
                    m,
                )
            }
        };
        Ok(Some(Entry {
            info: MessageInfo {
                uid,
                recent: recent.contains(&base),
                file,
                size,
                internaldate,
                flags,
                modseq,
            },
            base,
            vsize,
            cache,
        }))
    }

    /// Saves `petrel-index` now (sync does this when something changed).
    pub fn save_index(&mut self) -> io::Result<()> {
        let index = Index {
            uidvalidity: self.uidvalidity,
            highest_modseq: self.highest_modseq,
            records: self
                .msgs
                .iter()
                .map(|e| IndexRecord {
                    uid: e.info.uid,
                    modseq: e.info.modseq,
                    size: e.info.size,
                    vsize: e.vsize,
                    internaldate: e.info.internaldate,
                    file: e.info.file.clone(),
                    cache: e.cache.clone(),
                })
                .collect(),
        };
        index.save(&self.dir)?;
        self.index_stamp = file_stamp(&self.dir.join("petrel-index"));
        self.index_dirty = false;
        Ok(())
    }

    /// Makes sure every keyword of `flags` has a letter in `dovecot-keywords`.
    fn ensure_keywords(&mut self, flags: &FlagSet) -> io::Result<()> {
        if self.keywords.covers(flags) {
            return Ok(());
        }
        let _lock = self.lock()?;
        let mut kw = Keywords::load(&self.dir)?;
        for k in &flags.keywords {
            if !kw.add(k) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this folder already has 26 keywords",
                ));
            }
        }
        kw.save(&self.dir)?;
        self.keywords = kw;
        Ok(())
    }

    /// Replaces the flags of a message (renames its file to carry the new `:2,` letters).
    /// `NotFound` when the message is gone or was renamed by another session since the last
    /// sync (sync and retry).
    pub fn set_flags(&mut self, uid: u32, flags: &FlagSet) -> io::Result<()> {
        let i = self.index_of(uid)?;
        if self.msgs[i].info.flags == *flags {
            return Ok(());
        }
        self.ensure_keywords(flags)?;
        let e = &self.msgs[i];
        let target = file_name(&e.base, flags, &self.keywords);
        let cur = self.dir.join("cur");
        if target != e.info.file {
            fs::rename(cur.join(&e.info.file), cur.join(&target))?;
        }
        let m = self.bump();
        let e = &mut self.msgs[i];
        e.info.file = target;
        e.info.flags = flags.clone();
        e.info.modseq = m;
        Ok(())
    }

    /// Adds a message: written to `tmp/`, fsynced, its mtime set to `internaldate` (seconds;
    /// now when `None`), renamed into `cur/` with its flags and given the next UID under the
    /// lock. Returns the UID; the message joins [`Folder::messages`] at the next sync, which
    /// reports it as new.
    pub fn append(
        &mut self,
        data: &[u8],
        flags: &FlagSet,
        internaldate: Option<i64>,
    ) -> io::Result<u32> {
        self.ensure_keywords(flags)?;
        let base = unique_base(data.len() as u64, Some(crlf_size(data)));
        let tmp = self.dir.join("tmp").join(&base);
        let result = self.write_tmp(&tmp, data, internaldate);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let uids = self.commit_files(&[(tmp, base, flags.clone())]);
        uids.map(|u| u[0])
    }

    fn write_tmp(&self, tmp: &Path, data: &[u8], internaldate: Option<i64>) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(data)?;
        if let Some(t) = internaldate {
            let when = if t >= 0 {
                UNIX_EPOCH + Duration::from_secs(t as u64)
            } else {
                UNIX_EPOCH
            };
            f.set_modified(when)?;
        }
        f.sync_all()
    }

    /// Under the lock: renames each `tmp` file into `cur/BASE:2,FLAGS`, fsyncs `cur/`, gives
    /// them UIDs in order and saves the UID list.
    fn commit_files(&mut self, files: &[(PathBuf, String, FlagSet)]) -> io::Result<Vec<u32>> {
        let lock = self.lock()?;
        let cur = self.dir.join("cur");
        let mut done = Vec::new();
        for (tmp, base, flags) in files {
            let target = cur.join(file_name(base, flags, &self.keywords));
            if let Err(e) = fs::rename(tmp, &target) {
                for t in files {
                    let _ = fs::remove_file(&t.0);
                }
                for p in &done {
                    let _ = fs::remove_file(p);
                }
                return Err(e);
            }
            done.push(target);
        }
        sync_dir(&cur)?;
        self.reload_list_locked()?;
        let mut uids = Vec::new();
        for (_, base, _) in files {
            self.listed
                .insert(base.clone(), (self.next_uid, String::new()));
            uids.push(self.next_uid);
            self.next_uid = self.next_uid.saturating_add(1);
        }
        self.save_list_locked()?;
        drop(lock);
        Ok(uids)
    }

    /// Expunges messages: unlinks their files, fsyncs `cur/` and drops them from the UID
    /// list. Returns the UIDs actually removed (ascending; a file already gone counts as
    /// removed by whoever removed it, and is reported by the next sync instead).
    pub fn expunge(&mut self, uids: &[u32]) -> io::Result<Vec<u32>> {
        let cur = self.dir.join("cur");
        let mut removed = Vec::new();
        let mut bases = Vec::new();
        for &uid in uids {
            let Some(&i) = self.by_uid.get(&uid) else {
                continue;
            };
            match fs::remove_file(cur.join(&self.msgs[i].info.file)) {
                Ok(()) => {
                    removed.push(uid);
                    bases.push(self.msgs[i].base.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        sync_dir(&cur)?;
        let set: HashSet<u32> = removed.iter().copied().collect();
        self.msgs.retain(|e| !set.contains(&e.info.uid));
        self.reindex();
        self.bump();
        let lock = self.lock()?;
        let changed = self.reload_list_locked()?;
        if !changed {
            for b in &bases {
                self.listed.remove(b);
            }
            self.save_list_locked()?;
        }
        drop(lock);
        removed.sort_unstable();
        Ok(removed)
    }

    /// Copies messages into `dest` (a hard link when both are on one file system, else a
    /// copy), keeping flags and INTERNALDATE. Returns `(source UID, new UID)` pairs for the
    /// messages copied (UIDs not in this folder are skipped); the copies join
    /// `dest.messages()` at its next sync.
    pub fn copy_to(&self, uids: &[u32], dest: &mut Folder) -> io::Result<Vec<(u32, u32)>> {
        let mut staged: Vec<(PathBuf, String, FlagSet)> = Vec::new();
        let mut src_uids = Vec::new();
        let cleanup = |staged: &[(PathBuf, String, FlagSet)]| {
            for s in staged {
                let _ = fs::remove_file(&s.0);
            }
        };
        for &uid in uids {
            let Some(m) = self.get(uid) else {
                continue;
            };
            if let Err(e) = dest.ensure_keywords(&m.flags) {
                cleanup(&staged);
                return Err(e);
            }
            let src = self.dir.join("cur").join(&m.file);
            let entry = &self.msgs[self.by_uid[&uid]];
            let base = unique_base(m.size, entry.vsize);
            let tmp = dest.dir.join("tmp").join(&base);
            let r = match fs::hard_link(&src, &tmp) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    cleanup(&staged);
                    return Err(e);
                }
                Err(_) => {
                    fs::read(&src).and_then(|d| dest.write_tmp(&tmp, &d, Some(m.internaldate)))
                }
            };
            if let Err(e) = r {
                let _ = fs::remove_file(&tmp);
                cleanup(&staged);
                return Err(e);
            }
            staged.push((tmp, base, m.flags.clone()));
            src_uids.push(uid);
        }
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let new = dest.commit_files(&staged)?;
        Ok(src_uids.into_iter().zip(new).collect())
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        if self.index_dirty && self.uidvalidity != 0 {
            let _ = self.save_index();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(crlf_size(b"a\nb\r\nc\n"), 9);
        assert_eq!(name_field("1.M2P3.h,S=18,W=21", 'S'), Some(18));
        assert_eq!(name_field("1.M2P3.h,S=18,W=21", 'W'), Some(21));
        assert_eq!(name_field("1.M2P3.h", 'S'), None);
        assert!(arrival_key("9.x") < arrival_key("10.a"));
        let b = unique_base(5, Some(6));
        assert!(b.ends_with(",S=5,W=6"));
        assert_ne!(b, unique_base(5, Some(6)));
    }
}
