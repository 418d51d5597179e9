//! Queue ids: unique, sortable by time, safe as file names.
//!
//! Fifteen characters from `0-9A-Z` without E, I, O and U (32 symbols, in ASCII order): seven for the
//! seconds since the epoch, four for the microseconds, four from a per-process counter mixed
//! with the pid. Files are created with `O_EXCL`, so a clash is detected and a new id taken.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDFGHJKLMNPQRSTVWXYZ";
/// Length of every queue id.
pub const ID_LEN: usize = 15;

/// A queue id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn push_base32(out: &mut String, mut v: u64, width: usize) {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(v % 32) as usize];
        v /= 32;
    }
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

impl QueueId {
    /// A fresh id for now.
    pub fn new() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mix = (std::process::id().wrapping_mul(2654435761)).wrapping_add(n.wrapping_mul(40503));
        let mut s = String::with_capacity(ID_LEN);
        push_base32(&mut s, now.as_secs(), 7);
        push_base32(&mut s, u64::from(now.subsec_micros()), 4);
        push_base32(&mut s, u64::from(mix), 4);
        QueueId(s)
    }

    /// Parses an id (e.g. a file name); `None` if it is not one.
    pub fn parse(s: &str) -> Option<QueueId> {
        if s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b)) {
            Some(QueueId(s.to_string()))
        } else {
            None
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Seconds since the epoch encoded in the id.
    pub fn timestamp(&self) -> u64 {
        self.0.bytes().take(7).fold(0u64, |acc, b| {
            acc * 32 + ALPHABET.iter().position(|&a| a == b).unwrap_or(0) as u64
        })
    }
}

impl Default for QueueId {
    fn default() -> Self {
        QueueId::new()
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sortable_and_parse() {
        let mut ids: Vec<QueueId> = (0..2000).map(|_| QueueId::new()).collect();
        for w in ids.windows(2) {
            assert!(
                w[0].as_str()[..11] <= w[1].as_str()[..11],
                "time part sorts"
            );
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2000, "no two ids alike from one process");
        let id = &ids[0];
        assert_eq!(QueueId::parse(id.as_str()).as_ref(), Some(id));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - id.timestamp() < 5);
        assert!(QueueId::parse("../etc/passwd").is_none());
        assert!(
            QueueId::parse("EEEEEEEEEEEEEEE").is_none(),
            "E, I, O, U are not used"
        );
    }
}
