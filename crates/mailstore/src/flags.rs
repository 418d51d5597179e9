//! Message flags: the Maildir `:2,` info suffix and the folder's `dovecot-keywords` table.
//!
//! System flags are capital letters in the suffix, always written sorted: `D` Draft,
//! `F` Flagged, `P` Passed, `R` Replied (\Answered), `S` Seen, `T` Trashed (\Deleted).
//! Keywords are the lowercase letters `a`..`z`, each an index (0..25) into the folder's
//! `dovecot-keywords` file, whose lines are `INDEX NAME` (e.g. `0 $Junk`). This is exactly
//! what Dovecot writes; like Dovecot, `$Forwarded` is an ordinary keyword (a letter), and `P`
//! is kept as [`FlagSet::passed`] so that a file another program marked with it keeps it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use crate::write_atomic;

/// The flags of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet {
    /// `\Seen` (`S`).
    pub seen: bool,
    /// `\Answered` (`R`).
    pub answered: bool,
    /// `\Flagged` (`F`).
    pub flagged: bool,
    /// `\Deleted` (`T`).
    pub deleted: bool,
    /// `\Draft` (`D`).
    pub draft: bool,
    /// Maildir's "passed" (`P`): not an IMAP system flag; preserved as found.
    pub passed: bool,
    /// Keywords (e.g. `$Junk`, `$Forwarded`), as the client spelled them.
    pub keywords: BTreeSet<String>,
}

impl FlagSet {
    /// A flag set from IMAP flag names (`\Seen`, `\Answered`, `\Flagged`, `\Deleted`,
    /// `\Draft`, case-insensitive; anything not starting with `\` is a keyword). `\Recent`
    /// and other unknown system flags are ignored.
    pub fn from_imap<'a>(names: impl IntoIterator<Item = &'a str>) -> FlagSet {
        let mut f = FlagSet::default();
        for n in names {
            match n.to_ascii_lowercase().as_str() {
                "\\seen" => f.seen = true,
                "\\answered" => f.answered = true,
                "\\flagged" => f.flagged = true,
                "\\deleted" => f.deleted = true,
                "\\draft" => f.draft = true,
                _ if n.starts_with('\\') => {}
                _ => {
                    f.keywords.insert(n.to_string());
                }
            }
        }
        f
    }

    /// The IMAP flag names, system flags first (in `\Answered \Flagged \Deleted \Seen
    /// \Draft` order), then keywords.
    pub fn to_imap(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.answered, "\\Answered"),
            (self.flagged, "\\Flagged"),
            (self.deleted, "\\Deleted"),
            (self.seen, "\\Seen"),
            (self.draft, "\\Draft"),
        ] {
            if on {
                v.push(name.to_string());
            }
        }
        v.extend(self.keywords.iter().cloned());
        v
    }

    /// The capital letters of the system flags, sorted.
    fn system_letters(&self) -> String {
        let mut s = String::new();
        for (on, c) in [
            (self.draft, 'D'),
            (self.flagged, 'F'),
            (self.passed, 'P'),
            (self.answered, 'R'),
            (self.seen, 'S'),
            (self.deleted, 'T'),
        ] {
            if on {
                s.push(c);
            }
        }
        s
    }
}

/// A folder's keyword table (`dovecot-keywords`): index → name, at most 26 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    names: Vec<Option<String>>,
}

impl Keywords {
    /// Parses `dovecot-keywords` text; bad lines and indexes over 25 are skipped.
    pub fn parse(text: &str) -> Keywords {
        let mut k = Keywords::default();
        for line in text.lines() {
            let Some((idx, name)) = line.split_once(' ') else {
                continue;
            };
            let Ok(idx) = idx.parse::<usize>() else {
                continue;
            };
            if idx >= 26 || name.is_empty() {
                continue;
            }
            if k.names.len() <= idx {
                k.names.resize(idx + 1, None);
            }
            k.names[idx] = Some(name.to_string());
        }
        k
    }

    /// Reads the folder's `dovecot-keywords` (an empty table when the file is missing).
    pub fn load(dir: &Path) -> io::Result<Keywords> {
        match fs::read(dir.join("dovecot-keywords")) {
            Ok(b) => Ok(Keywords::parse(&String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Keywords::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the table to the folder's `dovecot-keywords` atomically (tmp + rename).
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_atomic(&dir.join("dovecot-keywords"), self.to_text().as_bytes())
    }

    /// The file text: `INDEX NAME` lines.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.names.iter().enumerate() {
            if let Some(n) = n {
                s.push_str(&format!("{i} {n}\n"));
            }
        }
        s
    }

    /// The name of keyword letter `c` (`a`..`z`), when the table has one.
    pub fn name(&self, c: char) -> Option<&str> {
        let idx = (c as usize).checked_sub('a' as usize)?;
        self.names.get(idx)?.as_deref()
    }

    /// The letter of a keyword (matched case-insensitively, as IMAP keywords are).
    pub fn letter(&self, name: &str) -> Option<char> {
        self.names.iter().enumerate().find_map(|(i, n)| {
            n.as_deref()
                .filter(|n| n.eq_ignore_ascii_case(name))
                .map(|_| (b'a' + i as u8) as char)
        })
    }

    /// Adds a keyword if missing; `false` when all 26 letters are taken.
    pub fn add(&mut self, name: &str) -> bool {
        if self.letter(name).is_some() {
            return true;
        }
        if let Some(slot) = self.names.iter_mut().find(|n| n.is_none()) {
            *slot = Some(name.to_string());
            return true;
        }
        if self.names.len() < 26 {
            self.names.push(Some(name.to_string()));
            return true;
        }
        false
    }

    /// Whether every keyword of `flags` has a letter.
    pub fn covers(&self, flags: &FlagSet) -> bool {
        flags.keywords.iter().all(|k| self.letter(k).is_some())
    }
}

/// Splits a Maildir file name into its base (before `:2,`, the UID list key) and the flag
/// letters after `:2,` (empty when there is no info suffix).
pub fn split_name(file: &str) -> (&str, &str) {
    // The usual case first, without a substring search: the first colon starts `:2,`.
    let b = file.as_bytes();
    if let Some(i) = b.iter().position(|c| *c == b':') {
        if b.get(i + 1) == Some(&b'2') && b.get(i + 2) == Some(&b',') {
            return (&file[..i], &file[i + 3..]);
        }
    }
    match file.find(":2,") {
        Some(i) => (&file[..i], &file[i + 3..]),
        None => match file.find(':') {
            // A `:1,` or other experimental info: the base still ends at the colon.
            Some(i) => (&file[..i], ""),
            None => (file, ""),
        },
    }
}

/// Parses the flag letters of an info suffix; keyword letters missing from `kw` are dropped.
pub fn parse_letters(letters: &str, kw: &Keywords) -> FlagSet {
    let mut f = FlagSet::default();
    for c in letters.bytes() {
        match c {
            b'D' => f.draft = true,
            b'F' => f.flagged = true,
            b'P' => f.passed = true,
            b'R' => f.answered = true,
            b'S' => f.seen = true,
            b'T' => f.deleted = true,
            b'a'..=b'z' => {
                if let Some(n) = kw.name(char::from(c)) {
                    f.keywords.insert(n.to_string());
                }
            }
            _ => {}
        }
    }
    f
}

/// The flag letters for `flags`: system letters sorted, then keyword letters sorted.
/// Keywords without a letter in `kw` are left out (add them to the table first).
pub fn format_letters(flags: &FlagSet, kw: &Keywords) -> String {
    let mut s = flags.system_letters();
    let mut letters: Vec<char> = flags.keywords.iter().filter_map(|k| kw.letter(k)).collect();
    letters.sort_unstable();
    letters.dedup();
    s.extend(letters);
    s
}

/// The file name for `base` carrying `flags`: `BASE:2,LETTERS`.
pub fn file_name(base: &str, flags: &FlagSet, kw: &Keywords) -> String {
    format!("{base}:2,{}", format_letters(flags, kw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_sorted() {
        let kw = Keywords::parse("0 $Junk\n1 $Forwarded\n2 foo\nbad line\n30 x\n");
        let f = parse_letters("TSRFDcab", &kw);
        assert!(f.seen && f.answered && f.flagged && f.draft && f.deleted && !f.passed);
        assert_eq!(f.keywords.len(), 3);
        assert_eq!(format_letters(&f, &kw), "DFRSTabc");
        assert_eq!(kw.letter("$junk"), Some('a'));
        assert_eq!(kw.to_text(), "0 $Junk\n1 $Forwarded\n2 foo\n");
        let p = parse_letters("PSz", &kw);
        assert!(p.passed && p.seen && p.keywords.is_empty());
        assert_eq!(format_letters(&p, &kw), "PS");
    }

    #[test]
    fn split_names() {
        assert_eq!(split_name("1.M2.h,S=5:2,RS"), ("1.M2.h,S=5", "RS"));
        assert_eq!(split_name("1.M2.h,S=5"), ("1.M2.h,S=5", ""));
        assert_eq!(split_name("1.M2.h:2,"), ("1.M2.h", ""));
        assert_eq!(split_name("1.M2.h:1,x:2,S"), ("1.M2.h:1,x", "S"));
        assert_eq!(split_name("1.M2.h:1,x"), ("1.M2.h", ""));
        assert_eq!(split_name("1.M2.h:2"), ("1.M2.h", ""));
        assert_eq!(split_name("é:2,é"), ("é", "é"));
    }

    #[test]
    fn keyword_table_fills_holes_and_caps_at_26() {
        let mut kw = Keywords::parse("1 b\n");
        assert!(kw.add("a"));
        assert_eq!(kw.letter("a"), Some('a'));
        for i in 0..24 {
            assert!(kw.add(&format!("k{i}")));
        }
        assert!(!kw.add("one-too-many"));
        assert!(kw.add("B"), "an existing keyword, any case");
    }

    #[test]
    fn imap_names() {
        let f = FlagSet::from_imap(["\\SEEN", "\\Recent", "$Junk", "\\Deleted"]);
        assert_eq!(f.to_imap(), vec!["\\Deleted", "\\Seen", "$Junk"]);
    }
}
