//! `petrel-index`: Petrel's own per-folder cache (not Dovecot's `dovecot.index*`).
//!
//! It holds, per message, what would otherwise need a `stat` or a read of the message file:
//! UID, MODSEQ, physical size, RFC822.SIZE (CRLF size) once counted, INTERNALDATE, the
//! current file name (so a flag change made by another program is noticed and given a new
//! MODSEQ), and cache blobs the caller supplies (ENVELOPE, BODYSTRUCTURE, …). It also
//! remembers the stamps (inode, size, mtime in ns) of `new/`, `cur/`, `dovecot-uidlist` and
//! `dovecot-keywords` as they were at the start of the sync whose result it holds, when they
//! were old enough to be trusted: a folder whose stamps still match is opened from the index
//! alone, without reading the directories or the UID list (Dovecot's trick).
//!
//! The file is binary, little-endian, laid out so that an open reads only the header, the
//! fixed-size records and the file names; the cache blobs stay on disk and are read one
//! message at a time when asked for:
//!
//! ```text
//! header   192 bytes  "PETRLIDX", VERSION, UIDVALIDITY, next UID, record count,
//!                     HIGHESTMODSEQ, names length, blobs length, 4 stamps, CHECKSUM
//! blobs    per message with blobs: CHECKSUM(UID; items), items = KIND u8, LEN u32, bytes
//! records  48 bytes each, UID ascending: UID, name length, MODSEQ, size, RFC822.SIZE
//!          (all ones when unknown), INTERNALDATE, blob length, 0
//! names    the file names, concatenated (UTF-8)
//! ```
//!
//! The header's `CHECKSUM` covers the header, the records and the names; each message's
//! blobs carry their own, seeded with the UID, and are checked when read. A file whose
//! version, lengths or checksum do not match is ignored and rebuilt (a damaged blob is
//! dropped): the index is a cache and never the authority (the UID list and the directory
//! are). It is written to a temporary name, fsynced and renamed into place, so an open file
//! never changes under a reader.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync_dir;

/// The index format version (1 was a text format).
pub const VERSION: u32 = 2;

const MAGIC: [u8; 8] = *b"PETRLIDX";
/// The size of the header.
const HEADER_LEN: usize = 192;
/// Where the header's checksum is (the last 8 bytes).
const SUM_AT: usize = HEADER_LEN - 8;
const STAMPS_AT: usize = 56;
const STAMP_LEN: usize = 32;
const RECORD_LEN: usize = 48;
const NO_VSIZE: u64 = u64::MAX;
/// Bytes read at once when blobs are copied into a new index.
const COPY_CHUNK: usize = 1 << 20;

static TMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The identity and modification stamp of a directory or file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// mtime, seconds since the epoch.
    pub secs: i64,
    /// mtime, nanoseconds.
    pub nsecs: u32,
}

impl Stamp {
    /// The stamp of `meta`.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            secs: meta.mtime(),
            nsecs: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        }
    }

    /// Whether the mtime is at least `settle` before `now` (a change made after `now`
    /// then always gives a different mtime).
    pub fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let Ok(secs) = u64::try_from(self.secs) else {
            return true;
        };
        let t = UNIX_EPOCH + Duration::new(secs, self.nsecs.min(999_999_999));
        now.duration_since(t).is_ok_and(|age| age >= settle)
    }
}

/// What the folder's stamps cover, in order.
pub const STAMPED: [&str; 4] = ["new", "cur", "dovecot-uidlist", "dovecot-keywords"];

/// The stamps of [`STAMPED`] (`None` for a missing file).
pub type DirStamps = [Option<Stamp>; 4];

/// Reads the stamps of a folder directory's [`STAMPED`] entries; `None` when one of them
/// cannot be examined (or `new/` or `cur/` is missing): nothing can be trusted then.
pub fn dir_stamps(dir: &Path) -> Option<DirStamps> {
    let mut out = [None; 4];
    for (i, name) in STAMPED.iter().enumerate() {
        match fs::metadata(dir.join(name)) {
            Ok(m) => out[i] = Some(Stamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && i >= 2 => {}
            Err(_) => return None,
        }
    }
    Some(out)
}

/// The header fields a caller sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// The UIDVALIDITY the records belong to.
    pub uidvalidity: u32,
    /// The UID list's next UID when the records were made.
    pub next_uid: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// The folder's stamps at the start of the sync the records come from, when they were
    /// settled; `None` when the records must be checked against the directory.
    pub stamps: Option<DirStamps>,
}

/// Where one message's blobs are in an index file (`len` 0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobRef {
    /// Offset in the file.
    pub off: u64,
    /// Length of the packet (checksum and items).
    pub len: u32,
}

/// One record of a loaded index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// UID.
    pub uid: u32,
    /// MODSEQ.
    pub modseq: u64,
    /// Physical file size.
    pub size: u64,
    /// RFC822.SIZE, once known.
    pub vsize: Option<u64>,
    /// INTERNALDATE (seconds since the epoch).
    pub internaldate: i64,
    /// The file name when last seen (with its `:2,` flags).
    pub file: &'a str,
    /// Where the blobs are (read them with [`BlobFile::read`]).
    pub blobs: BlobRef,
}

/// FNV-1a, 64 bits (the checksum of format version 1).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_le_bytes(a)
}

/// The index's checksum: four independent lanes over 8-byte words (fast: several bytes per
/// cycle), each step `rotl((lane ^ word) * P)`, then the lanes and the length folded
/// together. Every step is a bijection of the lane, so any change confined to one word —
/// a flipped byte — always changes the result; it is not meant to resist an attacker (who
/// could write the folder's files anyway).
pub fn checksum(seed: u64, data: &[u8]) -> u64 {
    const P: u64 = 0x9e37_79b9_7f4a_7c15;
    const Q: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut l = [
        seed ^ 0x243f_6a88_85a3_08d3,
        seed ^ 0x1319_8a2e_0370_7344,
        seed ^ 0xa409_3822_299f_31d0,
        seed ^ 0x082e_fa98_ec4e_6c89,
    ];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (j, lane) in l.iter_mut().enumerate() {
            let w = le64(&c[j * 8..j * 8 + 8]);
            *lane = (*lane ^ w).wrapping_mul(P).rotate_left(29);
        }
    }
    for (lane, w) in l.iter_mut().zip(chunks.remainder().chunks(8)) {
        *lane = (*lane ^ le64(w)).wrapping_mul(P).rotate_left(29);
    }
    let mut h = (data.len() as u64) ^ seed.rotate_left(17);
    for lane in l {
        h = (h ^ lane).wrapping_mul(Q).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P);
    h ^ (h >> 29)
}

/// The header checksum: the header before the checksum, the records, the names.
fn table_sum(header: &[u8], recs: &[u8], names: &[u8]) -> u64 {
    checksum(checksum(checksum(0, &header[..SUM_AT]), recs), names)
}

struct Counts {
    count: usize,
    names_len: usize,
    blobs_len: u64,
}

fn encode_header(h: &Header, c: &Counts) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.uidvalidity.to_le_bytes());
    b[16..20].copy_from_slice(&h.next_uid.to_le_bytes());
    b[20..24].copy_from_slice(&(c.count as u32).to_le_bytes());
    b[24..32].copy_from_slice(&h.highest_modseq.to_le_bytes());
    b[32..40].copy_from_slice(&(c.names_len as u64).to_le_bytes());
    b[40..48].copy_from_slice(&c.blobs_len.to_le_bytes());
    if let Some(stamps) = &h.stamps {
        b[48..52].copy_from_slice(&1u32.to_le_bytes());
        for (i, s) in stamps.iter().enumerate() {
            let o = STAMPS_AT + i * STAMP_LEN;
            let Some(s) = s else { continue };
            b[o..o + 4].copy_from_slice(&1u32.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&s.nsecs.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.ino.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&s.len.to_le_bytes());
            b[o + 24..o + 32].copy_from_slice(&s.secs.to_le_bytes());
        }
    }
    b
}

fn decode_header(b: &[u8]) -> Option<(Header, Counts)> {
    if b.len() < HEADER_LEN || b[..8] != MAGIC || le32(&b[8..12]) != VERSION {
        return None;
    }
    let stamps = match le32(&b[48..52]) {
        0 => None,
        1 => {
            let mut s = [None; 4];
            for (i, slot) in s.iter_mut().enumerate() {
                let o = STAMPS_AT + i * STAMP_LEN;
                match le32(&b[o..o + 4]) {
                    0 => {}
                    1 => {
                        *slot = Some(Stamp {
                            nsecs: le32(&b[o + 4..o + 8]),
                            ino: le64(&b[o + 8..o + 16]),
                            len: le64(&b[o + 16..o + 24]),
                            secs: le64(&b[o + 24..o + 32]) as i64,
                        })
                    }
                    _ => return None,
                }
            }
            Some(s)
        }
        _ => return None,
    };
    let h = Header {
        uidvalidity: le32(&b[12..16]),
        next_uid: le32(&b[16..20]),
        highest_modseq: le64(&b[24..32]),
        stamps,
    };
    let c = Counts {
        count: usize::try_from(le32(&b[20..24])).ok()?,
        names_len: usize::try_from(le64(&b[32..40])).ok()?,
        blobs_len: le64(&b[40..48]),
    };
    Some((h, c))
}

impl Counts {
    /// The file length these counts need.
    fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(self.blobs_len)?
            .checked_add(u64::try_from(self.count.checked_mul(RECORD_LEN)?).ok()?)?
            .checked_add(u64::try_from(self.names_len).ok()?)
    }
}

/// Whether `b` holds a `/` or a NUL byte (8 bytes at a time: a word has a zero byte when
/// `(w - 0x01…01) & !w & 0x80…80` is not 0).
fn has_slash_or_nul(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const SLASH: u64 = LO * b'/' as u64;
    let zero = |w: u64| w.wrapping_sub(LO) & !w & HI;
    let mut words = b.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut words {
        let w = le64(c);
        acc |= zero(w) | zero(w ^ SLASH);
    }
    acc != 0 || words.remainder().iter().any(|c| *c == b'/' || *c == 0)
}

/// Checks the records and names of a header whose checksum matched: UIDs ascending and not
/// 0, names non-empty, on character boundaries, without `/` or NUL, lengths adding up.
fn check_table(recs: &[u8], names: &str, c: &Counts) -> bool {
    if recs.len() != c.count * RECORD_LEN || names.len() != c.names_len {
        return false;
    }
    if has_slash_or_nul(names.as_bytes()) {
        return false;
    }
    let mut last_uid = 0u32;
    let mut name_off = 0usize;
    let mut blobs = 0u64;
    for r in recs.chunks_exact(RECORD_LEN) {
        let uid = le32(&r[0..4]);
        let name_len = le32(&r[4..8]) as usize;
        let blob_len = le32(&r[40..44]);
        if uid <= last_uid || name_len == 0 || (blob_len != 0 && blob_len < 8) {
            return false;
        }
        last_uid = uid;
        let Some(end) = name_off.checked_add(name_len) else {
            return false;
        };
        if end > names.len() || !names.is_char_boundary(end) {
            return false;
        }
        name_off = end;
        blobs += u64::from(blob_len);
    }
    name_off == names.len() && blobs == c.blobs_len
}

/// The records of a checked table.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    recs: std::slice::ChunksExact<'a, u8>,
    names: &'a str,
    name_off: usize,
    blob_off: u64,
}

impl<'a> Records<'a> {
    fn new(recs: &'a [u8], names: &'a str) -> Records<'a> {
        Records {
            recs: recs.chunks_exact(RECORD_LEN),
            names,
            name_off: 0,
            blob_off: HEADER_LEN as u64,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        let r = self.recs.next()?;
        let name_len = le32(&r[4..8]) as usize;
        let end = self.name_off + name_len;
        let file = self.names.get(self.name_off..end).unwrap_or("");
        self.name_off = end;
        let vsize = le64(&r[24..32]);
        let blobs = BlobRef {
            off: self.blob_off,
            len: le32(&r[40..44]),
        };
        self.blob_off += u64::from(blobs.len);
        Some(RecordView {
            uid: le32(&r[0..4]),
            modseq: le64(&r[8..16]),
            size: le64(&r[16..24]),
            vsize: (vsize != NO_VSIZE).then_some(vsize),
            internaldate: le64(&r[32..40]) as i64,
            file,
            blobs,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.recs.size_hint()
    }
}

impl ExactSizeIterator for Records<'_> {}

/// One message's cache blobs, by kind, kept as they are stored (`KIND u8, LEN u32, bytes`
/// for each): one allocation per message, and copied into a new index as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobSet {
    items: Box<[u8]>,
}

impl BlobSet {
    /// Checks the item layout; `None` when it is broken.
    fn from_items(items: &[u8]) -> Option<BlobSet> {
        let mut rest = items;
        while !rest.is_empty() {
            let len = le32(rest.get(1..5)?) as usize;
            rest = rest.get(5usize.checked_add(len)?..)?;
        }
        Some(BlobSet {
            items: items.into(),
        })
    }

    /// A set of these blobs (a kind given twice keeps the last).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u8, &'a [u8])>) -> BlobSet {
        let mut s = BlobSet::default();
        for (k, b) in pairs {
            s.set(k, b);
        }
        s
    }

    /// The blobs, in the order they were stored.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut rest: &[u8] = &self.items;
        std::iter::from_fn(move || {
            let kind = *rest.first()?;
            let len = le32(rest.get(1..5)?) as usize;
            let body = rest.get(5..5 + len)?;
            rest = &rest[5 + len..];
            Some((kind, body))
        })
    }

    /// The blob of this kind.
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == kind).map(|(_, b)| b)
    }

    /// Sets (replaces) the blob of this kind. A blob over 4 GiB is not stored.
    pub fn set(&mut self, kind: u8, bytes: &[u8]) {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return;
        };
        let mut v = Vec::with_capacity(self.items.len() + 5 + bytes.len());
        for (k, b) in self.iter().filter(|(k, _)| *k != kind) {
            v.push(k);
            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
            v.extend_from_slice(b);
        }
        v.push(kind);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(bytes);
        self.items = v.into_boxed_slice();
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends the packet (checksum, items) to `out`; nothing when there are no blobs.
    fn encode(&self, uid: u32, out: &mut Vec<u8>) {
        if self.items.is_empty() {
            return;
        }
        out.extend_from_slice(&checksum(u64::from(uid), &self.items).to_le_bytes());
        out.extend_from_slice(&self.items);
    }

    /// Checks and decodes one message's packet; `None` when damaged.
    fn decode(uid: u32, p: &[u8]) -> Option<BlobSet> {
        if p.is_empty() {
            return Some(BlobSet::default());
        }
        if p.len() < 8 || checksum(u64::from(uid), &p[8..]) != le64(&p[..8]) {
            return None;
        }
        BlobSet::from_items(&p[8..])
    }
}

/// Whether a packet is intact (as [`BlobSet::decode`] would find it, without a copy).
fn packet_ok(uid: u32, p: &[u8]) -> bool {
    p.is_empty() || (p.len() >= 8 && checksum(u64::from(uid), &p[8..]) == le64(&p[..8]))
}

/// An index file kept open for its blobs (the file is replaced, never changed, so the
/// handle keeps seeing what was checked when it was opened).
#[derive(Debug)]
pub struct BlobFile {
    file: File,
}

impl BlobFile {
    /// Reads and checks one message's blobs; `None` when they cannot be read or are
    /// damaged.
    pub fn read(&self, uid: u32, r: BlobRef) -> Option<BlobSet> {
        if r.len == 0 {
            return Some(BlobSet::default());
        }
        let mut buf = vec![0u8; r.len as usize];
        self.file.read_exact_at(&mut buf, r.off).ok()?;
        BlobSet::decode(uid, &buf)
    }

    /// Reads the blobs of several messages whose packets follow each other in the file
    /// (each `BlobRef` starting where the one before ends) with one read; `None` for each
    /// that cannot be read or is damaged.
    pub fn read_run(&self, run: &[(u32, BlobRef)]) -> Vec<Option<BlobSet>> {
        let contiguous = run
            .windows(2)
            .all(|w| w[0].1.off.checked_add(u64::from(w[0].1.len)) == Some(w[1].1.off));
        let (Some(first), true) = (run.first(), contiguous) else {
            return run.iter().map(|(uid, r)| self.read(*uid, *r)).collect();
        };
        let total: usize = run.iter().map(|(_, r)| r.len as usize).sum();
        let mut buf = vec![0u8; total];
        if self.file.read_exact_at(&mut buf, first.1.off).is_err() {
            return run.iter().map(|_| None).collect();
        }
        let mut at = 0;
        run.iter()
            .map(|(uid, r)| {
                let p = &buf[at..at + r.len as usize];
                at += r.len as usize;
                BlobSet::decode(*uid, p)
            })
            .collect()
    }
}

/// A loaded, checked index: header, records and names in memory; blobs left on disk.
#[derive(Debug)]
pub struct IndexFile {
    /// The header.
    pub header: Header,
    /// The index file's own stamp when opened.
    pub stamp: Stamp,
    blobs: BlobFile,
    recs: Vec<u8>,
    names: String,
}

impl IndexFile {
    /// Opens and checks `dir/petrel-index`; `None` when missing, torn, corrupt or of
    /// another version.
    pub fn open(dir: &Path) -> Option<IndexFile> {
        let file = File::open(dir.join("petrel-index")).ok()?;
        let meta = file.metadata().ok()?;
        let stamp = Stamp::of(&meta);
        let mut hb = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hb, 0).ok()?;
        let (header, c) = decode_header(&hb)?;
        if c.file_len()? != meta.len() {
            return None;
        }
        let recs_at = (HEADER_LEN as u64).checked_add(c.blobs_len)?;
        let mut recs = vec![0u8; c.count * RECORD_LEN];
        file.read_exact_at(&mut recs, recs_at).ok()?;
        let mut names = vec![0u8; c.names_len];
        file.read_exact_at(&mut names, recs_at + recs.len() as u64)
            .ok()?;
        if table_sum(&hb, &recs, &names) != le64(&hb[SUM_AT..]) {
            return None;
        }
        let names = String::from_utf8(names).ok()?;
        if !check_table(&recs, &names, &c) {
            return None;
        }
        Some(IndexFile {
            header,
            stamp,
            blobs: BlobFile { file },
            recs,
            names,
        })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.recs.len() / RECORD_LEN
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// The records, UID ascending.
    pub fn records(&self) -> Records<'_> {
        Records::new(&self.recs, &self.names)
    }

    /// The file, for reading blobs later.
    pub fn into_blob_file(self) -> BlobFile {
        self.blobs
    }

    /// The file, and the records' file names concatenated in record order.
    pub fn into_parts(self) -> (BlobFile, String) {
        (self.blobs, self.names)
    }

    /// The file, for reading blobs now.
    pub fn blob_file(&self) -> &BlobFile {
        &self.blobs
    }
}

/// Where a record to write takes its blobs from.
#[derive(Debug, Clone, Copy)]
pub enum BlobSource<'a> {
    /// No blobs.
    None,
    /// These.
    Mem(&'a BlobSet),
    /// These (kind, bytes) pairs.
    Pairs(&'a [(u8, Vec<u8>)]),
    /// Those of an older index file (copied after a check; dropped when damaged).
    Disk(&'a BlobFile, BlobRef),
}

/// One record to write.
#[derive(Debug, Clone, Copy)]
pub struct RecordOut<'a> {
    /// UID (ascending, not 0).
    pub uid: u32,
    /// MODSEQ.
    pub modseq: u64,
    /// Physical file size.
    pub size: u64,
    /// RFC822.SIZE, once known.
    pub vsize: Option<u64>,
    /// INTERNALDATE.
    pub internaldate: i64,
    /// The file name (not empty, no `/`).
    pub file: &'a str,
    /// The blobs.
    pub blobs: BlobSource<'a>,
}

/// Reads blobs of older index files in big sequential pieces while they are copied.
#[derive(Default)]
struct CopyReader<'a> {
    src: Option<&'a BlobFile>,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> CopyReader<'a> {
    fn get(&mut self, f: &'a BlobFile, r: BlobRef) -> Option<&[u8]> {
        let len = r.len as usize;
        let end = r.off.checked_add(u64::from(r.len))?;
        let hit = self.src.is_some_and(|s| std::ptr::eq(s, f))
            && r.off >= self.start
            && end <= self.start + self.buf.len() as u64;
        if !hit {
            self.src = None;
            self.buf.resize(len.max(COPY_CHUNK), 0);
            let mut got = 0;
            while got < self.buf.len() {
                match f.file.read_at(&mut self.buf[got..], r.off + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.buf.truncate(got);
            if got < len {
                return None;
            }
            self.src = Some(f);
            self.start = r.off;
        }
        let at = (r.off - self.start) as usize;
        self.buf.get(at..at + len)
    }
}

/// Writes the blobs of `records` to `w` (which is at offset [`HEADER_LEN`]), then the
/// records and names; returns the header to put at offset 0 and where each record's blobs
/// went.
fn encode_into<'a, W: Write>(
    w: &mut W,
    header: &Header,
    records: impl IntoIterator<Item = RecordOut<'a>>,
) -> io::Result<([u8; HEADER_LEN], Vec<BlobRef>)> {
    let records = records.into_iter();
    let (n, _) = records.size_hint();
    let mut recs = Vec::with_capacity(n * RECORD_LEN);
    let mut names = Vec::with_capacity(n * 64);
    let mut refs = Vec::with_capacity(n);
    let mut reader = CopyReader::default();
    let mut packet = Vec::new();
    let mut off = HEADER_LEN as u64;
    let mut last_uid = 0;
    for r in records {
        if r.uid <= last_uid || r.file.is_empty() || r.file.contains(['/', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("index record for UID {} out of order or badly named", r.uid),
            ));
        }
        last_uid = r.uid;
        packet.clear();
        let blob: &[u8] = match r.blobs {
            BlobSource::None => &[],
            BlobSource::Mem(set) => {
                set.encode(r.uid, &mut packet);
                &packet
            }
            BlobSource::Pairs(pairs) => {
                BlobSet::from_pairs(pairs.iter().map(|(k, b)| (*k, b.as_slice())))
                    .encode(r.uid, &mut packet);
                &packet
            }
            BlobSource::Disk(f, br) => match reader.get(f, br) {
                Some(p) if packet_ok(r.uid, p) => p,
                _ => &[],
            },
        };
        let blob_len = u32::try_from(blob.len()).unwrap_or(0);
        let blob = &blob[..blob_len as usize];
        w.write_all(blob)?;
        refs.push(BlobRef { off, len: blob_len });
        off += u64::from(blob_len);
        let name_len = u32::try_from(r.file.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file name too long"))?;
        recs.extend_from_slice(&r.uid.to_le_bytes());
        recs.extend_from_slice(&name_len.to_le_bytes());
        recs.extend_from_slice(&r.modseq.to_le_bytes());
        recs.extend_from_slice(&r.size.to_le_bytes());
        recs.extend_from_slice(&r.vsize.unwrap_or(NO_VSIZE).to_le_bytes());
        recs.extend_from_slice(&r.internaldate.to_le_bytes());
        recs.extend_from_slice(&blob_len.to_le_bytes());
        recs.extend_from_slice(&[0; 4]);
        names.extend_from_slice(r.file.as_bytes());
    }
    let count = recs.len() / RECORD_LEN;
    if u32::try_from(count).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many index records",
        ));
    }
    w.write_all(&recs)?;
    w.write_all(&names)?;
    let counts = Counts {
        count,
        names_len: names.len(),
        blobs_len: off - HEADER_LEN as u64,
    };
    let mut hb = encode_header(header, &counts);
    let sum = table_sum(&hb, &recs, &names);
    hb[SUM_AT..].copy_from_slice(&sum.to_le_bytes());
    Ok((hb, refs))
}

/// What [`write`] made.
#[derive(Debug)]
pub struct Written {
    /// The new file, for reading blobs.
    pub blobs: BlobFile,
    /// Where each record's blobs are in it, in record order.
    pub refs: Vec<BlobRef>,
    /// The new file's stamp.
    pub stamp: Stamp,
}

/// Writes `dir/petrel-index` atomically (a temporary file, fsync, rename, fsync of the
/// directory). Records must come in UID order.
pub fn write<'a>(
    dir: &Path,
    header: &Header,
    records: impl IntoIterator<Item = RecordOut<'a>>,
) -> io::Result<Written> {
    let path = dir.join("petrel-index");
    let tmp = dir.join(format!(
        "petrel-index.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| -> io::Result<Written> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 16, &file);
        w.write_all(&[0; HEADER_LEN])?;
        let (hb, refs) = encode_into(&mut w, header, records)?;
        w.flush()?;
        drop(w);
        file.write_all_at(&hb, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        let meta = file.metadata()?;
        Ok(Written {
            stamp: Stamp::of(&meta),
            blobs: BlobFile { file },
            refs,
        })
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let written = r?;
    sync_dir(dir)?;
    Ok(written)
}

/// One message's cached data (the whole-index form, see [`Index`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexRecord {
    /// UID.
    pub uid: u32,
    /// MODSEQ.
    pub modseq: u64,
    /// Physical file size.
    pub size: u64,
    /// RFC822.SIZE (CRLF line ends), once known.
    pub vsize: Option<u64>,
    /// INTERNALDATE (seconds since the epoch).
    pub internaldate: i64,
    /// The file name when last seen (with its `:2,` flags).
    pub file: String,
    /// Caller-supplied blobs by kind.
    pub cache: Vec<(u8, Vec<u8>)>,
}

/// A whole index in memory, blobs included (for tools and tests; [`Folder`] reads
/// blobs lazily through [`IndexFile`]).
///
/// [`Folder`]: crate::Folder
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// The UIDVALIDITY the records belong to.
    pub uidvalidity: u32,
    /// The UID list's next UID when the records were made.
    pub next_uid: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// See [`Header::stamps`].
    pub stamps: Option<DirStamps>,
    /// Records sorted by UID.
    pub records: Vec<IndexRecord>,
}

impl Index {
    fn header(&self) -> Header {
        Header {
            uidvalidity: self.uidvalidity,
            next_uid: self.next_uid,
            highest_modseq: self.highest_modseq,
            stamps: self.stamps,
        }
    }

    fn outs(&self) -> impl Iterator<Item = RecordOut<'_>> + '_ {
        self.records.iter().map(|r| RecordOut {
            uid: r.uid,
            modseq: r.modseq,
            size: r.size,
            vsize: r.vsize,
            internaldate: r.internaldate,
            file: &r.file,
            blobs: BlobSource::Pairs(&r.cache),
        })
    }

    /// Serialises the index (records must be sorted by UID, with non-empty names).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        match encode_into(&mut out, &self.header(), self.outs()) {
            Ok((hb, _)) => {
                out[..HEADER_LEN].copy_from_slice(&hb);
                out
            }
            Err(_) => Vec::new(),
        }
    }

    /// Parses an index; `None` for anything torn, corrupt (blobs included) or of another
    /// version.
    pub fn parse(data: &[u8]) -> Option<Index> {
        let hb = data.get(..HEADER_LEN)?;
        let (header, c) = decode_header(hb)?;
        if c.file_len()? != data.len() as u64 {
            return None;
        }
        let recs_at = HEADER_LEN + usize::try_from(c.blobs_len).ok()?;
        let recs = data.get(recs_at..recs_at + c.count * RECORD_LEN)?;
        let names = data.get(recs_at + recs.len()..)?;
        if table_sum(hb, recs, names) != le64(&hb[SUM_AT..]) {
            return None;
        }
        let names = std::str::from_utf8(names).ok()?;
        if !check_table(recs, names, &c) {
            return None;
        }
        let mut records = Vec::with_capacity(c.count);
        for r in Records::new(recs, names) {
            let at = usize::try_from(r.blobs.off).ok()?;
            let packet = data.get(at..at + r.blobs.len as usize)?;
            records.push(IndexRecord {
                uid: r.uid,
                modseq: r.modseq,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                file: r.file.to_string(),
                cache: BlobSet::decode(r.uid, packet)?
                    .iter()
                    .map(|(k, b)| (k, b.to_vec()))
                    .collect(),
            });
        }
        Some(Index {
            uidvalidity: header.uidvalidity,
            next_uid: header.next_uid,
            highest_modseq: header.highest_modseq,
            stamps: header.stamps,
            records,
        })
    }

    /// Reads `dir/petrel-index`, `None` when missing or unusable.
    pub fn load(dir: &Path) -> Option<Index> {
        fs::read(dir.join("petrel-index"))
            .ok()
            .and_then(|d| Index::parse(&d))
    }

    /// Writes `dir/petrel-index` atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write(dir, &self.header(), self.outs()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index {
            uidvalidity: 7,
            next_uid: 5,
            highest_modseq: 9,
            stamps: Some([
                Some(Stamp {
                    ino: 1,
                    len: 4096,
                    secs: 1_700_000_000,
                    nsecs: 5,
                }),
                Some(Stamp::default()),
                None,
                Some(Stamp {
                    ino: u64::MAX,
                    len: 3,
                    secs: -1,
                    nsecs: 999_999_999,
                }),
            ]),
            records: vec![
                IndexRecord {
                    uid: 1,
                    modseq: 3,
                    size: 10,
                    vsize: Some(12),
                    internaldate: -5,
                    file: "a.b:2,S".into(),
                    cache: vec![(1, b"env\0\n\t".to_vec()), (2, vec![])],
                },
                IndexRecord {
                    uid: 4,
                    modseq: 9,
                    size: 1,
                    vsize: None,
                    internaldate: 100,
                    file: "c\u{e9}".into(),
                    cache: vec![],
                },
                IndexRecord {
                    uid: 6,
                    modseq: 2,
                    size: 0,
                    vsize: Some(0),
                    internaldate: 0,
                    file: "d:2,".into(),
                    cache: vec![(9, vec![7; 40])],
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let i = sample();
        assert_eq!(Index::parse(&i.to_bytes()), Some(i));
        let empty = Index::default();
        assert_eq!(Index::parse(&empty.to_bytes()), Some(empty));
    }

    #[test]
    fn torn_or_corrupt_is_refused() {
        let b = sample().to_bytes();
        for cut in 0..b.len() {
            assert_eq!(Index::parse(&b[..cut]), None, "cut at {cut}");
        }
        for at in 0..b.len() {
            for bit in [0x01, 0x80] {
                let mut c = b.clone();
                c[at] ^= bit;
                assert_eq!(Index::parse(&c), None, "byte {at} ^ {bit:#x}");
            }
        }
        let mut other = b.clone();
        other[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(Index::parse(&other), None);
        let mut longer = b;
        longer.push(0);
        assert_eq!(Index::parse(&longer), None);
    }

    #[test]
    fn file_round_trip_with_lazy_blobs_and_copies() {
        let d = tempfile::tempdir().unwrap();
        let i = sample();
        i.save(d.path()).unwrap();
        let f = IndexFile::open(d.path()).unwrap();
        assert_eq!(f.header, i.header());
        assert_eq!(f.len(), 3);
        let recs: Vec<RecordView<'_>> = f.records().collect();
        assert_eq!(recs[1].file, "c\u{e9}");
        assert_eq!(recs[1].vsize, None);
        assert_eq!(recs[2].internaldate, 0);
        let pairs =
            |s: BlobSet| -> Vec<(u8, Vec<u8>)> { s.iter().map(|(k, b)| (k, b.to_vec())).collect() };
        for (r, want) in recs.iter().zip(&i.records) {
            assert_eq!(
                pairs(f.blob_file().read(r.uid, r.blobs).unwrap()),
                want.cache
            );
        }
        let run: Vec<(u32, BlobRef)> = recs.iter().map(|r| (r.uid, r.blobs)).collect();
        let all = f.blob_file().read_run(&run);
        for (got, want) in all.into_iter().zip(&i.records) {
            assert_eq!(pairs(got.unwrap()), want.cache);
        }
        // Blobs read under another UID are refused.
        assert_eq!(f.blob_file().read(4, recs[0].blobs), None);
        // Copying blobs from the open file into a new one (which replaces it).
        let outs: Vec<RecordOut<'_>> = recs
            .iter()
            .map(|r| RecordOut {
                uid: r.uid,
                modseq: r.modseq + 1,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                file: r.file,
                blobs: BlobSource::Disk(f.blob_file(), r.blobs),
            })
            .collect();
        let hdr = Header {
            stamps: None,
            ..f.header
        };
        let w = write(d.path(), &hdr, outs.iter().copied()).unwrap();
        let back = Index::load(d.path()).unwrap();
        assert_eq!(back.stamps, None);
        for (r, want) in back.records.iter().zip(&i.records) {
            assert_eq!(r.cache, want.cache);
            assert_eq!(r.modseq, want.modseq + 1);
        }
        assert_eq!(w.refs.len(), 3);
        assert_eq!(
            pairs(w.blobs.read(6, w.refs[2]).unwrap()),
            i.records[2].cache
        );
        // Out of order records are refused, the old file stays.
        let bad = [outs[1], outs[0]];
        assert!(write(d.path(), &hdr, bad.iter().copied()).is_err());
        assert!(Index::load(d.path()).is_some());
    }

    #[test]
    fn slash_or_nul() {
        let clean = b"1700000000.M1P2Q3.host,S=5:2,RS\xc3\xa9abc".to_vec();
        assert!(!has_slash_or_nul(&clean));
        for at in 0..clean.len() {
            for c in [b'/', 0] {
                let mut v = clean.clone();
                v[at] = c;
                assert!(has_slash_or_nul(&v), "{at} {c}");
            }
        }
        assert!(!has_slash_or_nul(b"\x01\x2e\x30\xff\x80\x7f..--"));
    }

    #[test]
    fn blob_sets() {
        let mut s = BlobSet::from_pairs([(1, &b"a"[..]), (2, b""), (1, b"bb")]);
        assert_eq!(s.get(1), Some(&b"bb"[..]));
        assert_eq!(s.get(2), Some(&b""[..]));
        assert_eq!(s.get(3), None);
        s.set(2, b"cc");
        let v: Vec<(u8, &[u8])> = s.iter().collect();
        assert_eq!(v, [(1, &b"bb"[..]), (2, b"cc")]);
        let mut p = Vec::new();
        s.encode(9, &mut p);
        assert_eq!(BlobSet::decode(9, &p), Some(s.clone()));
        assert_eq!(BlobSet::decode(8, &p), None);
        assert!(BlobSet::from_items(&[1, 5, 0, 0, 0, 1]).is_none());
        assert!(BlobSet::default().is_empty());
    }

    #[test]
    fn checksum_sees_every_byte() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        for n in [0, 1, 7, 8, 31, 32, 33, 64, 199] {
            let base = checksum(3, &data[..n]);
            assert_ne!(base, checksum(4, &data[..n]));
            if n > 0 {
                assert_ne!(base, checksum(3, &data[..n - 1]));
            }
            for at in 0..n {
                let mut c = data[..n].to_vec();
                c[at] ^= 0x10;
                assert_ne!(base, checksum(3, &c), "n {n} at {at}");
            }
        }
    }
}
