//! A small set of UIDs (a session's `\Recent` messages).

/// A set of UIDs kept as sorted, disjoint, non-adjacent inclusive ranges. `\Recent` UIDs
/// come in runs (deliveries get consecutive UIDs), so this stays a few entries long
/// however many messages it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UidRanges {
    ranges: Vec<(u32, u32)>,
    count: usize,
}

impl UidRanges {
    /// The index of the first range ending at or above `uid`.
    fn find(&self, uid: u32) -> usize {
        self.ranges.partition_point(|&(_, hi)| hi < uid)
    }

    /// Whether `uid` is in the set.
    pub(crate) fn contains(&self, uid: u32) -> bool {
        let i = self.find(uid);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= uid)
    }

    /// Adds `uid`.
    pub(crate) fn insert(&mut self, uid: u32) {
        let i = self.find(uid);
        if self.ranges.get(i).is_some_and(|&(lo, _)| lo <= uid) {
            return;
        }
        self.count += 1;
        let joins_prev = i > 0 && self.ranges[i - 1].1.checked_add(1) == Some(uid);
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|&(lo, _)| uid.checked_add(1) == Some(lo));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = uid,
            (false, true) => self.ranges[i].0 = uid,
            (false, false) => self.ranges.insert(i, (uid, uid)),
        }
    }

    /// Removes `uid`.
    pub(crate) fn remove(&mut self, uid: u32) {
        let i = self.find(uid);
        let Some(&(lo, hi)) = self.ranges.get(i) else {
            return;
        };
        if lo > uid {
            return;
        }
        self.count -= 1;
        if lo == hi {
            self.ranges.remove(i);
        } else if uid == lo {
            self.ranges[i].0 = uid + 1;
        } else if uid == hi {
            self.ranges[i].1 = uid - 1;
        } else {
            self.ranges[i].1 = uid - 1;
            self.ranges.insert(i + 1, (uid + 1, hi));
        }
    }

    /// How many UIDs the set holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The heap memory it holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(u32, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::UidRanges;

    #[test]
    fn ranges_merge_and_split() {
        let mut s = UidRanges::default();
        for u in [5, 3, 4, 10, 7, 6, 1] {
            s.insert(u);
        }
        s.insert(4);
        assert_eq!(s.ranges, vec![(1, 1), (3, 7), (10, 10)]);
        assert_eq!(s.len(), 7);
        assert!(s.contains(6) && s.contains(1) && !s.contains(2) && !s.contains(11));
        s.remove(5);
        assert_eq!(s.ranges, vec![(1, 1), (3, 4), (6, 7), (10, 10)]);
        s.remove(3);
        s.remove(7);
        s.remove(1);
        s.remove(42);
        assert_eq!(s.ranges, vec![(4, 4), (6, 6), (10, 10)]);
        assert_eq!(s.len(), 3);
        s.insert(5);
        assert_eq!(s.ranges, vec![(4, 6), (10, 10)]);
        s.insert(u32::MAX);
        s.insert(u32::MAX - 1);
        assert!(s.contains(u32::MAX));
        assert_eq!(s.len(), 6);
    }
}
