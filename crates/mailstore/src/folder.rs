//! An opened folder: its messages, UIDs, flags and MODSEQs, kept in step with the directory.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::flags::{file_name, parse_letters, split_name, FlagSet, Keywords};
use crate::index::{
    self, dir_stamps, BlobFile, BlobRef, BlobSet, BlobSource, DirStamps, Header, IndexReader,
    RecordOut, Stamp,
};
use crate::sync_dir;
use crate::uidlist::{new_guid, new_uidvalidity, DotLock, ListHeader, UidEntry, UidList};

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
    /// The length of the base name: `info.file[..base_len]`.
    base_len: usize,
    vsize: Option<u64>,
    blobs: Blobs,
}

impl Entry {
    /// The base name (the UID list key): the file name before `:2,`.
    fn base(&self) -> &str {
        self.info
            .file
            .get(..self.base_len)
            .unwrap_or(&self.info.file)
    }
}

/// A message's cache blobs: read from an index file the first time they are asked for.
#[derive(Debug, Clone, Default)]
struct Blobs {
    /// Which of [`Folder::blob_files`] holds them (1-based; 0: none on disk) …
    slot: u32,
    /// … and where.
    at: BlobRef,
    /// Once read or set: all of them (`slot` is then ignored).
    mem: OnceLock<BlobSet>,
}

impl Blobs {
    fn on_disk(slot: u32, at: BlobRef) -> Blobs {
        Blobs {
            slot: if at.len == 0 { 0 } else { slot },
            at,
            mem: OnceLock::new(),
        }
    }
}

/// An index record not matched to a file yet (its name is in [`Folder::warm_names`]).
#[derive(Debug, Clone, Copy)]
struct Warm {
    modseq: u64,
    size: u64,
    vsize: Option<u64>,
    internaldate: i64,
    name: (usize, usize),
    blobs: (u32, BlobRef),
}

/// A hasher for UIDs (small integers, not chosen by an attacker): one multiplication.
#[derive(Debug, Default, Clone, Copy)]
struct UidHasher(u64);

impl Hasher for UidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        let h = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

type UidHash = BuildHasherDefault<UidHasher>;

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
    by_uid: HashMap<u32, usize, UidHash>,
    /// What the UID list said when last read: base → (uid, ext fields).
    listed: HashMap<String, (u32, String)>,
    /// Whether `listed` holds the UID list (an open from a quiet index leaves it unread
    /// until a sync needs it).
    listed_loaded: bool,
    /// The stamp of the UID list `listed` comes from.
    list_stamp: Option<Stamp>,
    /// The stamp of the UID list whose header `uidvalidity` and `next_uid` agree with, when
    /// it was settled as it was read (`None`: look at the header again before trusting
    /// them). When only the UID list changed and `new/`, `cur/` and the keywords did not,
    /// no file can have come, gone or been renamed: its header is all that can matter.
    head_stamp: Option<Stamp>,
    /// Index records not yet matched to a file, by UID.
    warm: HashMap<u32, Warm, UidHash>,
    /// The file names of `warm`.
    warm_names: String,
    /// Index files the messages' cache blobs are read from ([`Blobs::slot`] - 1).
    blob_files: Vec<Option<BlobFile>>,
    /// A blob read from an index file was damaged: the index is rewritten at the next sync.
    blob_damage: AtomicBool,
    highest_modseq: u64,
    index_dirty: bool,
    index_stamp: Option<Stamp>,
    /// The stamps of [`index::STAMPED`] at the start of the last full sync, when those of
    /// `new/`, `cur/` and the keywords were settled: the messages as they are now were read
    /// after them (saved with the index, the UID list's slot replaced by `head_stamp`, so
    /// that the next open can skip the directories and the UID list when they still match).
    disk_stamps: Option<DirStamps>,
    /// What the index file on disk says about them.
    index_has_stamps: Option<DirStamps>,
    /// The state of the directories and files at the start of the last full sync, when it
    /// was old enough to be trusted, and of the index as this folder last read or wrote
    /// it: equal stamps mean nothing changed since (the UID list: see `head_stamp`).
    quiet_stamps: Option<Stamps>,
    /// What sessions sharing this folder need to find their own updates.
    track: Tracking,
}

/// Modification stamps of what a sync reads: new/, cur/, dovecot-keywords, petrel-index.
type Stamps = [Option<Stamp>; 4];

/// A directory or file changed less than this long ago may still change within the same
/// timestamp tick, unseen: its stamp is not trusted to mean "nothing new". (Not needed for
/// `petrel-index`, which is only ever replaced whole by a rename: another version of it is
/// another inode.)
const STAMP_SETTLE: Duration = Duration::from_secs(1);

/// `stamp` when it is settled at `now` (see [`STAMP_SETTLE`]).
fn if_settled(stamp: Option<Stamp>, now: SystemTime) -> Option<Stamp> {
    stamp.filter(|s| s.settled(now, STAMP_SETTLE))
}

/// How many following messages' blobs are read along with one message's.
const BLOB_READ_AHEAD: usize = 64;

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

/// The file names of a directory, in one buffer (a big `cur/` costs no allocation per
/// name to keep).
#[derive(Debug, Default)]
struct Names {
    buf: String,
    ends: Vec<usize>,
}

impl Names {
    fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| self.buf.get(a..b).unwrap_or(""))
    }

    /// The names by base name (the last one seen of a base wins).
    fn by_base(&self) -> HashMap<&str, &str> {
        let mut m = HashMap::with_capacity(self.ends.len());
        for n in self.iter() {
            m.insert(split_name(n).0, n);
        }
        m
    }
}

/// The names in `dir` that can be messages: UTF-8, not hidden, without a tab or a newline
/// (none when `dir` is missing).
fn read_names(dir: &Path) -> io::Result<Names> {
    let mut v = Names::default();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name();
        if let Some(n) = name.to_str() {
            if !n.starts_with('.') && !n.contains(['\t', '\n']) {
                v.buf.push_str(n);
                v.ends.push(v.buf.len());
            }
        }
    }
    Ok(v)
}

fn file_stamp(path: &Path) -> Option<Stamp> {
    fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

impl Folder {
    /// Opens the folder in directory `dir` (which has `cur/ new/ tmp/`) of the Maildir at
    /// `root`, and syncs it once — unless it is quiet: when nothing the index's stamps
    /// cover changed since it was written, the index alone is read (see `open_quiet`).
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
            by_uid: HashMap::default(),
            listed: HashMap::new(),
            listed_loaded: false,
            list_stamp: None,
            head_stamp: None,
            warm: HashMap::default(),
            warm_names: String::new(),
            blob_files: Vec::new(),
            blob_damage: AtomicBool::new(false),
            highest_modseq: 0,
            index_dirty: false,
            index_stamp: None,
            disk_stamps: None,
            index_has_stamps: None,
            quiet_stamps: None,
            track: Tracking::default(),
        };
        let index = match IndexReader::open(&f.dir) {
            Some(index) => match f.open_quiet(index)? {
                None => return Ok(f),
                unused => unused,
            },
            None => None,
        };
        let (list, stamp) = f.read_list()?;
        if let Some(list) = list {
            f.take_list(list, stamp);
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
        f.load_index(index);
        f.sync()?;
        Ok(f)
    }

    /// The open of a quiet folder: when the index's stamps of `new/`, `cur/` and the
    /// keywords still match the directory, the index's messages are the folder's, and the
    /// directories are not read. Nor is the UID list when its stamp matches too; when it
    /// does not (another program rewrote it, e.g. Dovecot with its own extension fields),
    /// only its header is read: with the files unchanged, only a new UIDVALIDITY (then the
    /// index is of no use) or a higher next UID can matter. Gives the index back when it
    /// cannot be used so (the caller then syncs in full).
    fn open_quiet(&mut self, index: IndexReader) -> io::Result<Option<IndexReader>> {
        let h = index.header;
        let Some(stamps) = h.stamps else {
            return Ok(Some(index));
        };
        let Some(now) = dir_stamps(&self.dir) else {
            return Ok(Some(index));
        };
        let same_files = now[0] == stamps[0] && now[1] == stamps[1] && now[3] == stamps[3];
        // A missing UID list is a new UIDVALIDITY, made by the full sync.
        if h.uidvalidity == 0 || !same_files || now[2].is_none() {
            return Ok(Some(index));
        }
        let mut next_uid = h.next_uid;
        let mut head_stamp = stamps[2];
        if now[2] != stamps[2] {
            match ListHeader::load(&self.dir)? {
                Some(l) if l.uidvalidity == h.uidvalidity => {
                    next_uid = next_uid.max(l.next_uid);
                    head_stamp = if_settled(now[2], SystemTime::now());
                }
                _ => return Ok(Some(index)),
            }
        }
        let kw = Keywords::load(&self.dir)?;
        let mut msgs = Vec::with_capacity(index.len());
        let ok = index.read_records(|r| {
            let (base, letters) = split_name(r.file);
            msgs.push(Entry {
                info: MessageInfo {
                    uid: r.uid,
                    file: r.file.to_string(),
                    size: r.size,
                    internaldate: r.internaldate,
                    flags: parse_letters(letters, &kw),
                    modseq: r.modseq,
                    recent: false,
                },
                base_len: base.len(),
                vsize: r.vsize,
                blobs: Blobs::on_disk(1, r.blobs),
            });
        });
        if !ok {
            // Torn or corrupt: the full sync finds that out again and rebuilds it.
            return Ok(Some(index));
        }
        self.keywords = kw;
        self.uidvalidity = h.uidvalidity;
        self.next_uid = next_uid.max(1);
        self.highest_modseq = h.highest_modseq;
        self.head_stamp = head_stamp;
        self.disk_stamps = Some(now);
        self.index_has_stamps = Some(stamps);
        self.index_stamp = Some(index.stamp);
        self.msgs = msgs;
        self.blob_files = vec![Some(index.into_blob_file())];
        self.by_uid = self
            .msgs
            .iter()
            .enumerate()
            .map(|(i, e)| (e.info.uid, i))
            .collect();
        // The stamps the next sync compares, from the same look at the directory (settled
        // when the index recorded them) and at the index file that was read.
        self.quiet_stamps = Some([stamps[0], stamps[1], stamps[3], self.index_stamp]);
        self.track.start(self.highest_modseq);
        Ok(None)
    }

    /// Reads the UID list, with the stamp it had before it was read.
    fn read_list(&self) -> io::Result<(Option<UidList>, Option<Stamp>)> {
        let stamp = file_stamp(&self.dir.join("dovecot-uidlist"));
        Ok((UidList::load(&self.dir)?, stamp))
    }

    fn take_list(&mut self, list: UidList, stamp: Option<Stamp>) {
        // UIDs are never given twice: a next UID this folder already knows stays.
        self.next_uid = if list.uidvalidity == self.uidvalidity {
            self.next_uid.max(list.next_uid)
        } else {
            list.next_uid
        };
        self.uidvalidity = list.uidvalidity;
        self.head_stamp = if_settled(stamp, SystemTime::now());
        self.guid = list.guid;
        self.listed = list
            .entries
            .into_iter()
            .map(|e| (e.base, (e.uid, e.ext)))
            .collect();
        self.listed_loaded = true;
        self.list_stamp = stamp;
    }

    /// Reads the UID list into `listed` when an open from a quiet index skipped it or it
    /// changed since (and it still has our UIDVALIDITY; else the next look under the lock
    /// finds out).
    fn ensure_listed(&mut self) -> io::Result<()> {
        if self.listed_loaded && file_stamp(&self.dir.join("dovecot-uidlist")) == self.list_stamp {
            return Ok(());
        }
        let (list, stamp) = self.read_list()?;
        if let Some(list) = list {
            if list.uidvalidity == self.uidvalidity {
                self.take_list(list, stamp);
            }
        }
        Ok(())
    }

    /// Merges an index (`index`, or else the file on disk): the MODSEQs, sizes and blobs
    /// of known messages; the other records wait in `warm` for their files.
    fn load_index(&mut self, index: Option<IndexReader>) {
        let Some(index) = index.or_else(|| IndexReader::open(&self.dir)) else {
            self.index_stamp = file_stamp(&self.dir.join("petrel-index"));
            self.index_has_stamps = None;
            self.index_dirty = true;
            return;
        };
        self.index_stamp = Some(index.stamp);
        self.index_has_stamps = None;
        if index.header.uidvalidity != self.uidvalidity || self.uidvalidity == 0 {
            self.index_dirty = true;
            return;
        }
        // Collected first, used only once the checksum matched.
        let mut recs: Vec<(u32, Warm)> = Vec::with_capacity(index.len());
        let mut names = String::new();
        let slot = self.free_blob_slot();
        let ok = index.read_records(|r| {
            let name = (names.len(), r.file.len());
            names.push_str(r.file);
            let w = Warm {
                modseq: r.modseq,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                name,
                blobs: (slot, r.blobs),
            };
            recs.push((r.uid, w));
        });
        if !ok {
            self.index_dirty = true;
            return;
        }
        self.index_has_stamps = index.header.stamps;
        self.highest_modseq = self.highest_modseq.max(index.header.highest_modseq);
        self.warm.clear();
        self.warm
            .reserve(recs.len().saturating_sub(self.msgs.len()));
        for (uid, w) in recs {
            match self.by_uid.get(&uid) {
                Some(&i) => {
                    // Another session wrote it: keep the newer MODSEQ, and its blobs unless
                    // ours were read or set here.
                    let e = &mut self.msgs[i];
                    let file = names.get(w.name.0..w.name.0 + w.name.1).unwrap_or("");
                    if file == e.info.file && w.modseq > e.info.modseq {
                        e.info.modseq = w.modseq;
                    }
                    if e.vsize.is_none() {
                        e.vsize = w.vsize;
                    }
                    let ours = e.blobs.mem.get().is_some_and(|s| !s.is_empty());
                    if w.blobs.1.len > 0 && !ours {
                        e.blobs = Blobs::on_disk(slot, w.blobs.1);
                    }
                }
                None => {
                    self.warm.insert(uid, w);
                }
            }
        }
        self.warm_names = names;
        self.put_blob_file(slot, index.into_blob_file());
    }

    /// The slot (1-based) the next index file's blobs will be read through.
    fn free_blob_slot(&self) -> u32 {
        let i = self
            .blob_files
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.blob_files.len());
        u32::try_from(i + 1).unwrap_or(0)
    }

    /// Puts an index file in its slot (from [`Folder::free_blob_slot`]) and closes the ones
    /// no longer used.
    fn put_blob_file(&mut self, slot: u32, file: BlobFile) {
        if let Some(i) = (slot as usize).checked_sub(1) {
            if self.blob_files.len() <= i {
                self.blob_files.resize_with(i + 1, || None);
            }
            self.blob_files[i] = Some(file);
        }
        self.drop_unused_blob_files();
    }

    /// Closes the index files no message's blobs are read from any more.
    fn drop_unused_blob_files(&mut self) {
        let mut used = vec![false; self.blob_files.len()];
        let slots = self
            .msgs
            .iter()
            .filter(|e| e.blobs.mem.get().is_none())
            .map(|e| e.blobs.slot)
            .chain(self.warm.values().map(|w| w.blobs.0));
        for s in slots {
            if let Some(u) = (s as usize).checked_sub(1).and_then(|i| used.get_mut(i)) {
                *u = true;
            }
        }
        for (f, used) in self.blob_files.iter_mut().zip(used) {
            if !used {
                *f = None;
            }
        }
        while self.blob_files.last().is_some_and(Option::is_none) {
            self.blob_files.pop();
        }
    }

    /// The file name of a `warm` record.
    fn warm_name(&self, w: &Warm) -> &str {
        self.warm_names
            .get(w.name.0..w.name.0 + w.name.1)
            .unwrap_or("")
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
        self.blobs(i).get(kind)
    }

    /// The blobs of `msgs[i]`, read from the index file the first time.
    fn blobs(&self, i: usize) -> &BlobSet {
        let e = &self.msgs[i];
        if let Some(v) = e.blobs.mem.get() {
            return v;
        }
        let slot = e.blobs.slot;
        let file = (slot as usize)
            .checked_sub(1)
            .and_then(|s| self.blob_files.get(s))
            .and_then(Option::as_ref);
        let mut first = None;
        if let Some(file) = file {
            // Read ahead: the next messages' blobs usually follow in the file, and a FETCH
            // of many messages asks for them next.
            let mut run = vec![(e.info.uid, e.blobs.at)];
            let mut end = e.blobs.at.off + u64::from(e.blobs.at.len);
            let mut bytes = e.blobs.at.len as usize;
            for n in self.msgs[i + 1..].iter().take(BLOB_READ_AHEAD) {
                let b = &n.blobs;
                if b.slot != slot || b.at.off != end || b.mem.get().is_some() || bytes > 32768 {
                    break;
                }
                run.push((n.info.uid, b.at));
                end += u64::from(b.at.len);
                bytes += b.at.len as usize;
            }
            for (k, got) in file.read_run(&run).into_iter().enumerate() {
                match (k, got) {
                    (0, got) => first = got,
                    // A damaged one is left to be found when it is asked for.
                    (k, Some(v)) => {
                        let _ = self.msgs[i + k].blobs.mem.set(v);
                    }
                    (_, None) => {}
                }
            }
        }
        e.blobs.mem.get_or_init(|| {
            if slot == 0 {
                return BlobSet::default();
            }
            first.unwrap_or_else(|| {
                // Damaged (or unreadable): dropped, and the index is rewritten without it.
                self.blob_damage.store(true, Ordering::Relaxed);
                BlobSet::default()
            })
        })
    }

    /// Stores a cache blob for this message; saved with the index at the next sync.
    pub fn set_cache(&mut self, uid: u32, kind: u8, bytes: &[u8]) -> io::Result<()> {
        let i = self.index_of(uid)?;
        self.blobs(i);
        let b = &mut self.msgs[i].blobs;
        b.slot = 0;
        if let Some(c) = b.mem.get_mut() {
            c.set(kind, bytes);
        }
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
        let (list, stamp) = self.read_list()?;
        match list {
            Some(list) => {
                let changed = self.uidvalidity != 0 && list.uidvalidity != self.uidvalidity;
                self.take_list(list, stamp);
                Ok(changed)
            }
            None => {
                let changed = self.uidvalidity != 0;
                self.uidvalidity = new_uidvalidity(&self.root);
                self.next_uid = 1;
                self.guid = new_guid();
                self.listed.clear();
                self.listed_loaded = true;
                self.list_stamp = None;
                self.head_stamp = None;
                // Written at once, under the lock we hold: the next reader (this folder's
                // own resync included) must find this UIDVALIDITY, not make another one.
                self.save_list_locked()?;
                Ok(changed)
            }
        }
    }

    /// Writes the UID list from `listed` (hold the lock).
    fn save_list_locked(&mut self) -> io::Result<()> {
        self.write_list_locked()?;
        // Under the lock nobody else writes it: this stamp is of what we wrote.
        self.list_stamp = file_stamp(&self.dir.join("dovecot-uidlist"));
        self.head_stamp = if_settled(self.list_stamp, SystemTime::now());
        Ok(())
    }

    fn write_list_locked(&self) -> io::Result<()> {
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
        // Nothing touched since the last full sync: nothing to do (an IDLE poll costs five
        // stats instead of two readdirs). A UID list rewritten meanwhile (Dovecot does, with
        // its own extension fields) costs a look at its first line.
        let stamps = self.stamps();
        if self.quiet_stamps.is_some()
            && self.quiet_stamps == Some(stamps)
            && self.list_head_unchanged()?
        {
            return Ok(Changes::default());
        }
        let now = SystemTime::now();
        // The index is not waited for: it is replaced whole, never changed in place.
        let settled = stamps[..3]
            .iter()
            .flatten()
            .all(|s| s.settled(now, STAMP_SETTLE));
        self.quiet_stamps = None;
        // What the index may record for the next open: the state before this sync's look
        // at the directories, when settled (the UID list: `head_stamp`).
        let disk = dir_stamps(&self.dir).filter(|d| {
            [d[0], d[1], d[3]]
                .iter()
                .flatten()
                .all(|s| s.settled(now, STAMP_SETTLE))
        });
        self.disk_stamps = disk;
        if self.blob_damage.swap(false, Ordering::Relaxed) {
            self.index_dirty = true;
        }
        let ch = self.full_sync();
        if ch.is_err() {
            self.disk_stamps = None;
        }
        let ch = ch?;
        if settled {
            // The index as this sync left it (read, or written by it): not a change.
            let mut q = stamps;
            q[3] = self.index_stamp;
            self.quiet_stamps = Some(q);
        }
        Ok(ch)
    }

    /// Whether the UID list still has our UIDVALIDITY: when it is not the file last looked
    /// at, its header alone is read (and a higher next UID taken from it). False when it
    /// has another UIDVALIDITY, or is gone or unusable: the caller must look under the lock.
    fn list_head_unchanged(&mut self) -> io::Result<bool> {
        let stamp = file_stamp(&self.dir.join("dovecot-uidlist"));
        if stamp.is_some() && stamp == self.head_stamp {
            return Ok(true);
        }
        match ListHeader::load(&self.dir)? {
            Some(h) if h.uidvalidity == self.uidvalidity && self.uidvalidity != 0 => {
                self.next_uid = self.next_uid.max(h.next_uid);
                self.head_stamp = if_settled(stamp, SystemTime::now());
                Ok(true)
            }
            _ => Ok(false),
        }
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
        self.track.start(self.highest_modseq);
        if self.uidvalidity != 0 && !self.list_head_unchanged()? {
            // Another UIDVALIDITY, or the list is gone: every UID is void.
            let lock = self.lock()?;
            if self.reload_list_locked()? {
                return self.reset(lock);
            }
        }
        let mut ch = Changes::default();
        let keywords = Keywords::load(&self.dir)?;
        let keywords_changed = keywords != self.keywords;
        self.keywords = keywords;
        if file_stamp(&self.dir.join("petrel-index")) != self.index_stamp {
            self.load_index(None);
        }
        let cur = self.dir.join("cur");
        let new = self.dir.join("new");
        let mut recent: HashSet<String> = HashSet::new();
        let mut moved = false;
        for name in read_names(&new)?.iter() {
            let target = if name.contains(':') {
                name.to_string()
            } else {
                format!("{name}:2,")
            };
            match fs::rename(new.join(name), cur.join(&target)) {
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
        let names = read_names(&cur)?;
        let mut found = names.by_base();

        // Known messages: flag changes and expunges.
        let mut missing = Vec::new();
        let mut flag_changed = Vec::new();
        for (i, e) in self.msgs.iter_mut().enumerate() {
            match found.remove(e.base()) {
                None => missing.push(i),
                Some(file) => {
                    if Self::seen_as(e, file, keywords_changed, &self.keywords) {
                        flag_changed.push(i);
                    }
                }
            }
        }
        let mut gone = Vec::new();
        if !missing.is_empty() {
            // A rename by another session can hide a file from one readdir: look again
            // for the missing ones. (A file new in this second look only is left to the
            // next sync: it came after this sync's stamps, which then differ.)
            let again = read_names(&cur)?;
            let mut found_again = again.by_base();
            for i in missing {
                let e = &mut self.msgs[i];
                match found_again.remove(e.base()) {
                    None => gone.push(i),
                    Some(file) => {
                        if Self::seen_as(e, file, keywords_changed, &self.keywords) {
                            flag_changed.push(i);
                        }
                    }
                }
            }
        }
        flag_changed.sort_unstable();
        for i in flag_changed {
            let m = self.bump();
            self.msgs[i].info.modseq = m;
            ch.flags.push(self.msgs[i].info.uid);
            self.log_change(m, self.msgs[i].info.uid);
        }
        if !gone.is_empty() {
            self.track.expunge_gen += 1;
            for &i in &gone {
                let uid = self.msgs[i].info.uid;
                self.track.unclaimed.remove(&uid);
                ch.expunged.push(uid);
            }
            let mut at = 0;
            let mut to_drop = gone.iter().copied().peekable();
            self.msgs.retain(|_| {
                let gone = to_drop.next_if_eq(&at).is_some();
                at += 1;
                !gone
            });
            ch.expunged.sort_unstable();
            self.index_dirty = true;
        }

        // Unknown files: UIDs from the list, or new ones under the lock.
        if !found.is_empty() {
            self.ensure_listed()?;
            let mut lock = None;
            if self.uidvalidity == 0 || found.keys().any(|b| !self.listed.contains_key(*b)) {
                let l = self.lock()?;
                if self.reload_list_locked()? {
                    return self.reset(l);
                }
                lock = Some(l);
            }
            let mut unlisted: Vec<&str> = found
                .keys()
                .copied()
                .filter(|b| !self.listed.contains_key(*b))
                .collect();
            unlisted.sort_by(|a, b| arrival_key(a).cmp(&arrival_key(b)));
            let mut wrote = false;
            for base in unlisted {
                self.listed
                    .insert(base.to_string(), (self.next_uid, String::new()));
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
                    let uid = self.listed.get(base)?.0;
                    Some((uid, base.to_string(), file.to_string()))
                })
                .collect();
            added.sort_by_key(|a| a.0);
            for (uid, base, file) in added {
                let e = self.make_entry(uid, base, file, &recent)?;
                if let Some(mut e) = e {
                    // Moved out of new/ here, or appended or copied here: \Recent.
                    if e.info.recent || self.track.unclaimed.contains(&uid) {
                        e.info.recent = true;
                        self.track.unclaimed.insert(uid);
                    }
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

    /// Takes `file` (the name found in `cur/` for `e`'s base name) into `e`: whether its
    /// flags changed (renamed by someone else, or other keywords for the same letters).
    fn seen_as(e: &mut Entry, file: &str, keywords_changed: bool, keywords: &Keywords) -> bool {
        if file != e.info.file {
            e.info.flags = parse_letters(split_name(file).1, keywords);
            e.info.file = file.to_string();
            return true;
        }
        if keywords_changed {
            // The same letters may name other keywords now.
            let f = parse_letters(split_name(&e.info.file).1, keywords);
            if f != e.info.flags {
                e.info.flags = f;
                return true;
            }
        }
        false
    }

    /// After the UID list got another UIDVALIDITY (read under `lock`): every message is
    /// forgotten and found again with its new UID.
    fn reset(&mut self, lock: DotLock) -> io::Result<Changes> {
        self.msgs.clear();
        self.warm.clear();
        self.highest_modseq = 0;
        self.track.reset();
        drop(lock);
        self.by_uid.clear();
        let inner = self.sync()?;
        Ok(Changes {
            new: inner.new,
            uidvalidity_changed: true,
            ..Changes::default()
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
            .map(|w| (w, self.warm_name(&w) == file))
            .filter(|(w, _)| split_name(self.warm_name(w)).0 == base);
        let (size, internaldate, vsize, blobs, modseq) = match warm {
            Some((w, same_name)) => {
                let modseq = if same_name { w.modseq } else { self.bump() };
                let blobs = Blobs::on_disk(w.blobs.0, w.blobs.1);
                (w.size, w.internaldate, w.vsize, blobs, modseq)
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
                    Blobs::default(),
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
            base_len: base.len(),
            vsize,
            blobs,
        }))
    }

    /// Saves `petrel-index` now (sync does this when something changed).
    pub fn save_index(&mut self) -> io::Result<()> {
        let header = Header {
            uidvalidity: self.uidvalidity,
            next_uid: self.next_uid,
            highest_modseq: self.highest_modseq,
            stamps: self.stamps_to_save(),
        };
        let files = &self.blob_files;
        let records = self.msgs.iter().map(|e| RecordOut {
            uid: e.info.uid,
            modseq: e.info.modseq,
            size: e.info.size,
            vsize: e.vsize,
            internaldate: e.info.internaldate,
            file: &e.info.file,
            blobs: match e.blobs.mem.get() {
                Some(v) => BlobSource::Mem(v),
                None => match (e.blobs.slot as usize)
                    .checked_sub(1)
                    .and_then(|i| files.get(i))
                    .and_then(Option::as_ref)
                {
                    Some(f) => BlobSource::Disk(f, e.blobs.at),
                    None => BlobSource::None,
                },
            },
        });
        let written = index::write(&self.dir, &header, records)?;
        // The blobs not read yet are read from the new file from now on.
        let slot = self.free_blob_slot();
        for (e, at) in self.msgs.iter_mut().zip(written.refs) {
            e.blobs.slot = if at.len == 0 { 0 } else { slot };
            e.blobs.at = at;
        }
        self.put_blob_file(slot, written.blobs);
        self.index_stamp = Some(written.stamp);
        self.index_has_stamps = header.stamps;
        self.index_dirty = false;
        Ok(())
    }

    /// The stamps the messages can be vouched for with (see `disk_stamps`), the UID list's
    /// being that of the header the UIDVALIDITY and the next UID agree with (`None` when
    /// unsettled: the next open then reads the header).
    fn stamps_to_save(&self) -> Option<DirStamps> {
        self.disk_stamps.map(|mut d| {
            d[2] = self.head_stamp;
            d
        })
    }

    /// Whether the index file lacks stamps that would let the next open skip the
    /// directories, and is still the one this folder last read or wrote. Only the UID
    /// list's differing is not worth rewriting the index for: it costs an open a look at
    /// its header.
    fn stamps_unsaved(&self) -> bool {
        let Some(s) = self.stamps_to_save() else {
            return false;
        };
        let saved = self
            .index_has_stamps
            .is_some_and(|h| h[0] == s[0] && h[1] == s[1] && h[3] == s[3]);
        !saved && file_stamp(&self.dir.join("petrel-index")) == self.index_stamp
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
        let target = file_name(e.base(), flags, &self.keywords);
        let cur = self.dir.join("cur");
        if target != e.info.file {
            fs::rename(cur.join(&e.info.file), cur.join(&target))?;
        }
        let m = self.bump();
        let e = &mut self.msgs[i];
        e.info.file = target;
        e.info.flags = flags.clone();
        e.info.modseq = m;
        self.log_change(m, uid);
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
        // Appended and copied messages are \Recent (RFC 3501 APPEND, COPY).
        self.track.unclaimed.extend(uids.iter().copied());
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
                    bases.push(self.msgs[i].base().to_string());
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
        self.track.expunge_gen += 1;
        for u in &removed {
            self.track.unclaimed.remove(u);
        }
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

/// The most flag changes [`Folder::changed_since`] remembers; older ones are forgotten
/// (half at a time) and a caller asking about them scans instead.
const CHANGE_LOG_MAX: usize = 8192;

/// What sessions sharing one [`Folder`] need to work out their own updates, since
/// [`Folder::sync`]'s [`Changes`] go to whoever calls it: see
/// [`Folder::expunge_generation`], [`Folder::changed_since`] and [`Folder::claim_recent`].
#[derive(Debug, Default)]
struct Tracking {
    /// Incremented whenever messages leave the folder (sync, expunge, a UIDVALIDITY reset).
    expunge_gen: u64,
    /// Flag changes as `(MODSEQ, UID)`, MODSEQ ascending. Once `started`, every flag change
    /// with a MODSEQ above `log_floor` is here.
    log: VecDeque<(u64, u32)>,
    log_floor: u64,
    started: bool,
    /// `\Recent` messages (moved out of `new/` by this folder, or appended or copied
    /// through it) that no session has claimed; may name UIDs not synced yet.
    unclaimed: BTreeSet<u32>,
}

impl Tracking {
    /// Starts the change log at `highest_modseq` (the changes before it are not logged).
    fn start(&mut self, highest_modseq: u64) {
        if !self.started {
            self.started = true;
            self.log_floor = highest_modseq;
        }
    }

    /// After a UIDVALIDITY change: every UID and MODSEQ is void.
    fn reset(&mut self) {
        self.expunge_gen += 1;
        self.log.clear();
        self.log_floor = 0;
        self.started = true;
        self.unclaimed.clear();
    }
}

impl Folder {
    /// Records a flag change (after [`Folder::bump`] gave it `modseq`).
    fn log_change(&mut self, modseq: u64, uid: u32) {
        let t = &mut self.track;
        t.start(modseq.saturating_sub(1));
        t.log.push_back((modseq, uid));
        if t.log.len() > CHANGE_LOG_MAX {
            let cut = t.log.len() / 2;
            if let Some(&(m, _)) = t.log.get(cut - 1) {
                t.log_floor = m;
            }
            t.log.drain(..cut);
        }
    }

    /// A counter that changes whenever messages leave this folder (a sync that finds files
    /// gone, [`Folder::expunge`], a UIDVALIDITY change). A session sharing the folder keeps
    /// the value it last looked at: while it is unchanged, every UID the session knows is
    /// still here.
    pub fn expunge_generation(&self) -> u64 {
        self.track.expunge_gen
    }

    /// The flag changes with a MODSEQ above `modseq`, as `(MODSEQ, UID)` in MODSEQ order (a
    /// UID may appear more than once; it may be gone since). Made by [`Folder::set_flags`]
    /// here or found by [`Folder::sync`] (a file renamed by another process). `None` when
    /// the log no longer reaches back to `modseq` (the caller compares
    /// [`MessageInfo::modseq`] of the messages it knows instead). New messages are not
    /// flag changes and are not listed.
    pub fn changed_since(&self, modseq: u64) -> Option<impl Iterator<Item = (u64, u32)> + '_> {
        let t = &self.track;
        let reaches = modseq >= self.highest_modseq || (t.started && modseq >= t.log_floor);
        if !reaches {
            return None;
        }
        let start = t.log.partition_point(|&(m, _)| m <= modseq);
        Some(t.log.range(start..).copied())
    }

    /// Claims the `\Recent` messages with a UID of at least `from_uid` that no one has
    /// claimed yet and that the folder holds: they are `\Recent` for the caller only (RFC
    /// 3501: the first session notified about a message). Ascending.
    pub fn claim_recent(&mut self, from_uid: u32) -> Vec<u32> {
        let v: Vec<u32> = self.unclaimed_recent(from_uid).collect();
        for u in &v {
            self.track.unclaimed.remove(u);
        }
        v
    }

    /// The `\Recent` messages (UID at least `from_uid`) no one has claimed yet, without
    /// claiming them (EXAMINE, STATUS). Ascending.
    pub fn unclaimed_recent(&self, from_uid: u32) -> impl Iterator<Item = u32> + '_ {
        self.track
            .unclaimed
            .range(from_uid..)
            .copied()
            .filter(|u| self.by_uid.contains_key(u))
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let damaged = *self.blob_damage.get_mut();
        if self.uidvalidity != 0 && (self.index_dirty || damaged || self.stamps_unsaved()) {
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
