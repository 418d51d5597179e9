//! `petrel-index`: Petrel's own per-folder cache (not Dovecot's `dovecot.index*`).
//!
//! It holds, per message, what would otherwise need a `stat` or a read of the message file:
//! UID, MODSEQ, physical size, RFC822.SIZE (CRLF size) once counted, INTERNALDATE, the
//! current file name (so a flag change made by another program is noticed and given a new
//! MODSEQ), and cache blobs the caller supplies (ENVELOPE, BODYSTRUCTURE, …). Text format:
//!
//! ```text
//! PETREL-INDEX 1 UIDVALIDITY HIGHESTMODSEQ COUNT CHECKSUM
//! UID \t MODSEQ \t SIZE \t VSIZE|- \t INTERNALDATE \t FILE \t KIND:BASE64,KIND:BASE64
//! ```
//!
//! `CHECKSUM` is the FNV-1a 64-bit hash of everything after the header line, in hex. A file
//! whose version, UIDVALIDITY, count or checksum does not match is ignored and rebuilt: the
//! index is a cache and never the authority (the UID list and the directory are). It is
//! written to `petrel-index.tmp` and renamed into place.

use std::fs;
use std::io;
use std::path::Path;

use base64::Engine;

use crate::write_atomic;

/// The index format version.
pub const VERSION: u32 = 1;

/// One message's cached data.
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

/// A folder's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// The UIDVALIDITY the records belong to.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// Records sorted by UID.
    pub records: Vec<IndexRecord>,
}

/// FNV-1a, 64 bits.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Index {
    /// Serialises the index.
    pub fn to_bytes(&self) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let mut body = String::with_capacity(self.records.len() * 80);
        for r in &self.records {
            let vsize = r.vsize.map_or("-".to_string(), |v| v.to_string());
            body.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t",
                r.uid, r.modseq, r.size, vsize, r.internaldate, r.file
            ));
            for (i, (kind, blob)) in r.cache.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!("{kind}:{}", b64.encode(blob)));
            }
            body.push('\n');
        }
        let mut out = format!(
            "PETREL-INDEX {VERSION} {} {} {} {:016x}\n",
            self.uidvalidity,
            self.highest_modseq,
            self.records.len(),
            fnv64(body.as_bytes())
        )
        .into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }

    /// Parses an index; `None` for anything torn, corrupt or of another version.
    pub fn parse(data: &[u8]) -> Option<Index> {
        let nl = data.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&data[..nl]).ok()?;
        let body = &data[nl + 1..];
        let f: Vec<&str> = header.split(' ').collect();
        if f.len() != 6 || f[0] != "PETREL-INDEX" || f[1].parse::<u32>().ok()? != VERSION {
            return None;
        }
        let uidvalidity: u32 = f[2].parse().ok()?;
        let highest_modseq: u64 = f[3].parse().ok()?;
        let count: usize = f[4].parse().ok()?;
        if u64::from_str_radix(f[5], 16).ok()? != fnv64(body) {
            return None;
        }
        let body = std::str::from_utf8(body).ok()?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let mut records = Vec::with_capacity(count);
        for line in body.lines() {
            let c: Vec<&str> = line.split('\t').collect();
            if c.len() != 7 {
                return None;
            }
            let mut cache = Vec::new();
            for item in c[6].split(',').filter(|s| !s.is_empty()) {
                let (k, v) = item.split_once(':')?;
                cache.push((k.parse().ok()?, b64.decode(v).ok()?));
            }
            records.push(IndexRecord {
                uid: c[0].parse().ok()?,
                modseq: c[1].parse().ok()?,
                size: c[2].parse().ok()?,
                vsize: if c[3] == "-" {
                    None
                } else {
                    Some(c[3].parse().ok()?)
                },
                internaldate: c[4].parse().ok()?,
                file: c[5].to_string(),
                cache,
            });
        }
        if records.len() != count {
            return None;
        }
        Some(Index {
            uidvalidity,
            highest_modseq,
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
        write_atomic(&dir.join("petrel-index"), &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index {
            uidvalidity: 7,
            highest_modseq: 9,
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
                    file: "c".into(),
                    cache: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let i = sample();
        assert_eq!(Index::parse(&i.to_bytes()), Some(i));
    }

    #[test]
    fn torn_or_corrupt_is_refused() {
        let b = sample().to_bytes();
        for cut in 0..b.len() {
            assert_eq!(Index::parse(&b[..cut]), None, "cut at {cut}");
        }
        let mut c = b.clone();
        let last = c.len() - 3;
        c[last] ^= 1;
        assert_eq!(Index::parse(&c), None);
        let other = String::from_utf8(b)
            .unwrap()
            .replacen("INDEX 1", "INDEX 2", 1);
        assert_eq!(Index::parse(other.as_bytes()), None);
    }
}
