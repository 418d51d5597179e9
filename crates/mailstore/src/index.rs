//! `petrel-index`: Petrel's own per-folder cache (not Dovecot's `dovecot.index*`).
//!
//! It holds, per message, what would otherwise need a `stat` or a read of the message file:
//! UID, MODSEQ, physical size, RFC822.SIZE (CRLF size) once counted, INTERNALDATE, the
//! current file name (so a flag change made by another program is noticed and given a new
//! MODSEQ), and cache blobs the caller supplies (ENVELOPE, BODYSTRUCTURE, …). It also
//! remembers the stamps (inode, size, mtime in ns) of `new/`, `cur/` and `dovecot-keywords`
//! as they were at the start of the sync whose result it holds, when they were old enough
//! to be trusted, and that of the `dovecot-uidlist` whose header agrees with its UIDVALIDITY
//! and next UID (none when that one was too new to be trusted): a folder whose stamps still
//! match is opened from the index alone, without reading the directories or the UID list
//! (Dovecot's trick). When only the UID list's differs (rewritten by another program), the
//! open reads the list's first line and nothing else.
//!
//! The file is binary, little-endian, laid out so that an open reads only the header, the
//! fixed-size records and the file names; the cache blobs stay on disk and are read when
//! asked for (a message's, with those of the next few messages):
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
//! The header's `CHECKSUM` covers the header, the records and the names (these two summed
//! 64 KiB at a time, so that an open reads and checks them through a small window instead
//! of loading them whole); each message's blobs carry their own, seeded with the UID, and
//! are checked when read. A file whose
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

/// The index format version (1 was a text format, 2 an unreleased draft of this one).
pub const VERSION: u32 = 3;

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

/// The little-endian number in the first 8 bytes of `b` (0 when it is shorter).
#[inline]
fn le64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The little-endian number in the first 4 bytes of `b` (0 when it is shorter).
#[inline]
fn le32(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
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
        let mut a = [0u8; 8];
        a[..w.len()].copy_from_slice(w);
        *lane = (*lane ^ u64::from_le_bytes(a))
            .wrapping_mul(P)
            .rotate_left(29);
    }
    let mut h = (data.len() as u64) ^ seed.rotate_left(17);
    for lane in l {
        h = (h ^ lane).wrapping_mul(Q).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P);
    h ^ (h >> 29)
}

/// The records and the names are checksummed this many bytes at a time (each piece
/// seeded with the sum so far), so that they can be read and checked a piece at a time.
const SUM_CHUNK: usize = 1 << 16;
const RECS_SEED: u64 = 0x5245_4353_0000_0001;
const NAMES_SEED: u64 = 0x4e41_4d45_0000_0002;

/// The checksum of `data` taken [`SUM_CHUNK`] bytes at a time.
fn chunked_sum(seed: u64, data: &[u8]) -> u64 {
    data.chunks(SUM_CHUNK).fold(seed, checksum)
}

/// The header's checksum: of the header before it, and of the records' and the names'
/// chunked sums.
fn table_sum(header: &[u8], recs_sum: u64, names_sum: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&recs_sum.to_le_bytes());
    b[8..].copy_from_slice(&names_sum.to_le_bytes());
    checksum(checksum(0, &header[..SUM_AT]), &b)
}

#[derive(Debug, Clone, Copy)]
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

/// Where an index is read from.
enum Src<'a> {
    File(&'a File),
    Mem(&'a [u8]),
}

impl Src<'_> {
    fn read_at(&self, buf: &mut [u8], at: u64) -> bool {
        match self {
            Src::File(f) => f.read_exact_at(buf, at).is_ok(),
            Src::Mem(d) => {
                let piece = usize::try_from(at)
                    .ok()
                    .and_then(|at| d.get(at..at.checked_add(buf.len())?));
                match piece {
                    Some(p) => {
                        buf.copy_from_slice(p);
                        true
                    }
                    None => false,
                }
            }
        }
    }
}

/// A region of an index read [`SUM_CHUNK`] bytes at a time into a small window, summed as
/// it is read.
struct Pieces<'a> {
    src: &'a Src<'a>,
    at: u64,
    left: usize,
    buf: Vec<u8>,
    start: usize,
    sum: u64,
    /// Refuse a piece holding `/` or NUL (names).
    names: bool,
}

impl<'a> Pieces<'a> {
    fn new(src: &'a Src<'a>, at: u64, len: usize, seed: u64, names: bool) -> Pieces<'a> {
        Pieces {
            src,
            at,
            left: len,
            buf: Vec::with_capacity(len.min(2 * SUM_CHUNK)),
            start: 0,
            sum: seed,
            names,
        }
    }

    /// The next `n` bytes; `None` when the region ends before or cannot be read.
    #[inline]
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        while self.buf.len() - self.start < n {
            if self.left == 0 {
                return None;
            }
            self.buf.drain(..self.start);
            self.start = 0;
            let k = self.left.min(SUM_CHUNK);
            let old = self.buf.len();
            self.buf.resize(old + k, 0);
            if !self.src.read_at(&mut self.buf[old..], self.at)
                || (self.names && has_slash_or_nul(&self.buf[old..]))
            {
                self.left = 0;
                self.buf.truncate(old);
                return None;
            }
            self.sum = checksum(self.sum, &self.buf[old..]);
            self.at += k as u64;
            self.left -= k;
        }
        let s = self.start;
        self.start += n;
        Some(&self.buf[s..s + n])
    }

    /// Whether every byte of the region was taken.
    fn done(&self) -> bool {
        self.left == 0 && self.start == self.buf.len()
    }
}

/// Reads the records of an index whose header is `hb`/`c` from `src`, checking each (UIDs
/// ascending and not 0, names non-empty UTF-8 without `/` or NUL, lengths adding up) and
/// giving it to `f`; then checks the checksum. `false` when anything is wrong: whatever `f`
/// was given must then be thrown away.
fn stream_records(src: &Src<'_>, hb: &[u8], c: &Counts, mut f: impl FnMut(RecordView<'_>)) -> bool {
    let recs_at = HEADER_LEN as u64 + c.blobs_len;
    let recs_len = c.count * RECORD_LEN;
    let mut recs = Pieces::new(src, recs_at, recs_len, RECS_SEED, false);
    let names_at = recs_at + recs_len as u64;
    let mut names = Pieces::new(src, names_at, c.names_len, NAMES_SEED, true);
    let mut last_uid = 0u32;
    let mut blob_off = HEADER_LEN as u64;
    for _ in 0..c.count {
        let Some(r) = recs.take(RECORD_LEN) else {
            return false;
        };
        let uid = le32(&r[0..4]);
        let name_len = le32(&r[4..8]) as usize;
        let modseq = le64(&r[8..16]);
        let size = le64(&r[16..24]);
        let vsize = le64(&r[24..32]);
        let internaldate = le64(&r[32..40]) as i64;
        let blob_len = le32(&r[40..44]);
        if uid <= last_uid || name_len == 0 || (blob_len != 0 && blob_len < 8) {
            return false;
        }
        last_uid = uid;
        let Some(name) = names.take(name_len) else {
            return false;
        };
        let Ok(file) = std::str::from_utf8(name) else {
            return false;
        };
        let blobs = BlobRef {
            off: blob_off,
            len: blob_len,
        };
        blob_off += u64::from(blob_len);
        f(RecordView {
            uid,
            modseq,
            size,
            vsize: (vsize != NO_VSIZE).then_some(vsize),
            internaldate,
            file,
            blobs,
        });
    }
    recs.done()
        && names.done()
        && blob_off == HEADER_LEN as u64 + c.blobs_len
        && table_sum(hb, recs.sum, names.sum) == le64(&hb[SUM_AT..])
}

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

/// An index file whose header was read and matches the file's length; its records are
/// read with [`IndexReader::read_records`] (a small window at a time, never the whole
/// table), its blobs later through [`IndexReader::into_blob_file`].
#[derive(Debug)]
pub struct IndexReader {
    /// The header (not checked yet: see [`IndexReader::read_records`]).
    pub header: Header,
    /// The index file's own stamp when opened.
    pub stamp: Stamp,
    file: File,
    counts: Counts,
    hb: [u8; HEADER_LEN],
}

impl IndexReader {
    /// Opens `dir/petrel-index` and reads its header; `None` when missing, of another
    /// version, or not as long as its header says.
    pub fn open(dir: &Path) -> Option<IndexReader> {
        let file = File::open(dir.join("petrel-index")).ok()?;
        let meta = file.metadata().ok()?;
        let mut hb = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hb, 0).ok()?;
        let (header, counts) = decode_header(&hb)?;
        if counts.file_len()? != meta.len() {
            return None;
        }
        Some(IndexReader {
            header,
            stamp: Stamp::of(&meta),
            file,
            counts,
            hb,
        })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.counts.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.counts.count == 0
    }

    /// Gives every record, UID ascending, to `f`, then checks the header and the records
    /// against the checksum. `false` when the index is torn or corrupt: everything `f` was
    /// given must then be thrown away.
    pub fn read_records(&self, mut f: impl FnMut(RecordView<'_>)) -> bool {
        stream_records(&Src::File(&self.file), &self.hb, &self.counts, &mut f)
    }

    /// The file, for reading blobs.
    pub fn into_blob_file(self) -> BlobFile {
        BlobFile { file: self.file }
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
    let sum = table_sum(
        &hb,
        chunked_sum(RECS_SEED, &recs),
        chunked_sum(NAMES_SEED, &names),
    );
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
        let mut records = Vec::with_capacity(c.count);
        let mut blobs_ok = true;
        let ok = stream_records(&Src::Mem(data), hb, &c, |r| {
            let packet = usize::try_from(r.blobs.off)
                .ok()
                .and_then(|at| data.get(at..at.checked_add(r.blobs.len as usize)?));
            let Some(set) = packet.and_then(|p| BlobSet::decode(r.uid, p)) else {
                blobs_ok = false;
                return;
            };
            records.push(IndexRecord {
                uid: r.uid,
                modseq: r.modseq,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                file: r.file.to_string(),
                cache: set.iter().map(|(k, b)| (k, b.to_vec())).collect(),
            });
        });
        if !ok || !blobs_ok {
            return None;
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
        let f = IndexReader::open(d.path()).unwrap();
        assert_eq!(f.header, i.header());
        assert_eq!(f.len(), 3);
        let mut recs: Vec<(IndexRecord, BlobRef)> = Vec::new();
        assert!(f.read_records(|r| {
            let rec = IndexRecord {
                uid: r.uid,
                modseq: r.modseq,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                file: r.file.to_string(),
                cache: Vec::new(),
            };
            recs.push((rec, r.blobs));
        }));
        let f = f.into_blob_file();
        let pairs =
            |s: BlobSet| -> Vec<(u8, Vec<u8>)> { s.iter().map(|(k, b)| (k, b.to_vec())).collect() };
        for ((r, at), want) in recs.iter().zip(&i.records) {
            assert_eq!(
                *r,
                IndexRecord {
                    cache: Vec::new(),
                    ..want.clone()
                }
            );
            assert_eq!(pairs(f.read(r.uid, *at).unwrap()), want.cache);
        }
        let run: Vec<(u32, BlobRef)> = recs.iter().map(|(r, at)| (r.uid, *at)).collect();
        let all = f.read_run(&run);
        for (got, want) in all.into_iter().zip(&i.records) {
            assert_eq!(pairs(got.unwrap()), want.cache);
        }
        // Blobs read under another UID are refused.
        assert_eq!(f.read(4, recs[0].1), None);
        // Copying blobs from the open file into a new one (which replaces it).
        let outs: Vec<RecordOut<'_>> = recs
            .iter()
            .map(|(r, at)| RecordOut {
                uid: r.uid,
                modseq: r.modseq + 1,
                size: r.size,
                vsize: r.vsize,
                internaldate: r.internaldate,
                file: &r.file,
                blobs: BlobSource::Disk(&f, *at),
            })
            .collect();
        let hdr = Header {
            stamps: None,
            ..i.header()
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
    fn big_tables_are_read_a_piece_at_a_time() {
        let records: Vec<IndexRecord> = (1..=5000u32)
            .map(|uid| IndexRecord {
                uid: uid * 2,
                modseq: u64::from(uid),
                size: 100 + u64::from(uid),
                vsize: (uid % 3 == 0).then_some(7),
                internaldate: 1_700_000_000 + i64::from(uid),
                file: format!(
                    "{uid}.M{uid}P1.h\u{e9}st{},S=5:2,S",
                    "x".repeat(uid as usize % 50)
                ),
                cache: if uid % 7 == 0 {
                    vec![(1, vec![uid as u8; 300])]
                } else {
                    vec![]
                },
            })
            .collect();
        let i = Index {
            uidvalidity: 3,
            next_uid: 10_001,
            highest_modseq: 5000,
            stamps: None,
            records,
        };
        let b = i.to_bytes();
        assert!(b.len() > 4 * SUM_CHUNK);
        assert_eq!(Index::parse(&b).as_ref(), Some(&i));
        let d = tempfile::tempdir().unwrap();
        i.save(d.path()).unwrap();
        let r = IndexReader::open(d.path()).unwrap();
        let mut n = 0;
        assert!(r.read_records(|rec| {
            assert_eq!(rec.file, i.records[n].file);
            assert_eq!(rec.vsize, i.records[n].vsize);
            n += 1;
        }));
        assert_eq!(n, 5000);
        // A flipped byte anywhere in the tables, far from the start, is found.
        let (blobs_len, count) = (le64(&b[40..48]) as usize, le32(&b[20..24]) as usize);
        let recs_at = HEADER_LEN + blobs_len;
        let names_at = recs_at + count * RECORD_LEN;
        for at in [
            recs_at + 3 * SUM_CHUNK + 5,
            names_at + SUM_CHUNK + 1,
            b.len() - 2,
        ] {
            let mut c = b.clone();
            c[at] ^= 0x20;
            assert_eq!(Index::parse(&c), None, "{at}");
            fs::write(d.path().join("petrel-index"), &c).unwrap();
            let r = IndexReader::open(d.path()).unwrap();
            assert!(!r.read_records(|_| {}), "{at}");
        }
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
