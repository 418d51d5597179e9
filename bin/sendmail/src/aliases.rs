//! `newaliases` / `sendmail -bi`: checks every file in `alias_database`.
//!
//! Local delivery reads the aliases text file directly, so there is no `.db` file to
//! build: newaliases parses each file, prints every error (`FILE, line N: reason`) and
//! warning, and reports how many aliases each file defines. A leading map type
//! (`hash:`, `texthash:`, `lmdb:`, `btree:`) is accepted for Postfix-style settings and
//! ignored.

use std::io::Write;
use std::path::Path;

use crate::exit;

/// Map types that name a plain aliases file.
const FILE_TYPES: [&str; 4] = ["hash:", "texthash:", "lmdb:", "btree:"];

/// The file named by an `alias_database` item, or `None` for a map type that is not a
/// file Petrel reads.
pub fn file_of(item: &str) -> Option<&str> {
    for t in FILE_TYPES {
        if let Some(rest) = item.strip_prefix(t) {
            return Some(rest);
        }
    }
    // "type:..." with an unknown type; a path that merely has a ':' after a '/' is a path.
    match item.split_once(':') {
        Some((t, _)) if !t.contains('/') => None,
        _ => Some(item),
    }
}

/// Checks `items`; writes reports to `out` and problems to `err`; returns the exit status.
pub fn check(items: &[String], out: &mut impl Write, err: &mut impl Write) -> i32 {
    let mut status = 0;
    for item in items {
        let Some(file) = file_of(item) else {
            let _ = writeln!(
                err,
                "newaliases: warning: {item}: unsupported map type, skipped"
            );
            continue;
        };
        match petrel_maps::aliases::Aliases::load(Path::new(file)) {
            Ok(a) => {
                for w in a.warnings() {
                    let _ = writeln!(err, "newaliases: warning: {w}");
                }
                let _ = writeln!(out, "newaliases: {file}: {} aliases", a.len());
            }
            Err(errors) => {
                for e in errors {
                    let _ = writeln!(err, "newaliases: {e}");
                }
                status = exit::DATAERR;
            }
        }
    }
    status
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn map_types() {
        assert_eq!(file_of("hash:/etc/aliases"), Some("/etc/aliases"));
        assert_eq!(file_of("texthash:/etc/aliases"), Some("/etc/aliases"));
        assert_eq!(file_of("/etc/aliases"), Some("/etc/aliases"));
        assert_eq!(file_of("ldap:/etc/x.cf"), None);
        assert_eq!(file_of("/odd/pa:th"), Some("/odd/pa:th"));
    }

    #[test]
    fn good_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("aliases");
        std::fs::write(&good, "postmaster: root\nroot: alice, bob\n").unwrap();
        let bad = d.path().join("bad");
        std::fs::write(&bad, "postmaster root\n").unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let items = vec![format!("hash:{}", good.display())];
        assert_eq!(check(&items, &mut out, &mut err), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("newaliases: {}: 2 aliases\n", good.display())
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let items = vec![good.display().to_string(), bad.display().to_string()];
        assert_eq!(check(&items, &mut out, &mut err), exit::DATAERR);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with(&format!("newaliases: {}, line 1: ", bad.display())),
            "{err}"
        );
    }
}
