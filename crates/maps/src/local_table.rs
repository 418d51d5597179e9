//! The table of local recipients that exist (`local_recipient_maps`), so smtpd can refuse
//! unknown users at RCPT time instead of accepting and bouncing later.
//!
//! Each entry of the list is a user database (`unix:passwd`, `passwd-file:/path`) or an
//! alias file (optionally written with a Postfix map type such as `hash:`). A local part
//! exists when an alias or a user has its name, with or without its `+extension`. An empty
//! list accepts every local part (Postfix's meaning). Alias files are re-read when they
//! change.

use crate::aliases::{self, Aliases};
use crate::userdb::UserDb;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

/// The local recipient table.
pub struct LocalTable {
    userdbs: Vec<UserDb>,
    alias_files: Vec<(PathBuf, Option<SystemTime>, Aliases)>,
    accept_all: bool,
}

impl LocalTable {
    /// Builds the table from the (expanded) items of `local_recipient_maps`.
    pub fn new(items: &[String]) -> Result<LocalTable, String> {
        let mut t = LocalTable {
            userdbs: Vec::new(),
            alias_files: Vec::new(),
            accept_all: items.is_empty(),
        };
        for item in items {
            if item.starts_with("unix:") || item.starts_with("passwd-file:") {
                t.userdbs.push(UserDb::from_spec(item)?);
            } else {
                let path = match item.split_once(':') {
                    Some((kind, rest)) if !kind.contains('/') => rest,
                    _ => item.as_str(),
                };
                t.alias_files
                    .push((PathBuf::from(path), None, Aliases::default()));
            }
        }
        Ok(t)
    }

    fn refresh(&mut self) {
        for (path, stamp, table) in &mut self.alias_files {
            let now = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
            if now == *stamp && stamp.is_some() {
                continue;
            }
            let text = std::fs::read_to_string(&*path).unwrap_or_default();
            let (a, _errors) = aliases::parse_lenient(&text, path);
            *table = a;
            *stamp = now;
        }
    }

    /// True when `local` (case-insensitive) is a user or an alias; `delimiter` is
    /// `recipient_delimiter`. An error means "don't know now" (the caller answers 4xx).
    pub fn exists(&mut self, local: &str, delimiter: &str) -> io::Result<bool> {
        self.exists_with(local, delimiter, &mut |_| {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        })
    }

    /// [`LocalTable::exists`], asking `unreadable` about a user when a user database
    /// cannot be read by this process (EACCES): smtpd runs as mail_owner and may not read a
    /// password file only authd can read, so it asks authd.
    pub fn exists_with(
        &mut self,
        local: &str,
        delimiter: &str,
        unreadable: &mut dyn FnMut(&str) -> io::Result<bool>,
    ) -> io::Result<bool> {
        if self.accept_all {
            return Ok(true);
        }
        self.refresh();
        let local = local.to_ascii_lowercase();
        let mut names = vec![local.clone()];
        if !delimiter.is_empty() {
            if let Some(i) = local.find(|c| delimiter.contains(c)).filter(|&i| i > 0) {
                names.push(local[..i].to_string());
            }
        }
        for name in &names {
            if self
                .alias_files
                .iter()
                .any(|(_, _, a)| a.get(name).is_some())
            {
                return Ok(true);
            }
            for db in &self.userdbs {
                match db.lookup(name) {
                    Ok(Some(_)) => return Ok(true),
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        if unreadable(name)? {
                            return Ok(true);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_aliases_extensions_and_accept_all() {
        let d = tempfile::tempdir().unwrap();
        let users = d.path().join("users");
        std::fs::write(
            &users,
            format!("alice:x:1000:1000::{}::\n", d.path().display()),
        )
        .unwrap();
        let al = d.path().join("aliases");
        std::fs::write(&al, "postmaster: alice\n").unwrap();
        let mut t = LocalTable::new(&[
            format!("passwd-file:{}", users.display()),
            format!("hash:{}", al.display()),
        ])
        .unwrap();
        assert!(t.exists("alice", "+").unwrap());
        assert!(t.exists("Alice+news", "+").unwrap());
        assert!(t.exists("POSTMASTER", "").unwrap());
        assert!(!t.exists("bob", "+").unwrap());
        assert!(
            !t.exists("alice+x", "").unwrap(),
            "no delimiter: no extension"
        );
        std::fs::write(&al, "postmaster: alice\nbob: alice\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&al)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(
            t.exists("bob", "").unwrap(),
            "a changed alias file is re-read"
        );
        assert!(LocalTable::new(&[]).unwrap().exists("anyone", "").unwrap());
    }

    #[test]
    fn an_unreadable_user_file_is_asked_about_elsewhere() {
        if nix::unistd::geteuid().is_root() {
            println!("skipped: root reads every file");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let users = d.path().join("users");
        std::fs::write(&users, "alice:x:1:1::/h::\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o000)).unwrap();
        let mut t = LocalTable::new(&[format!("passwd-file:{}", users.display())]).unwrap();
        assert!(
            t.exists("alice", "").is_err(),
            "without a fallback the error shows"
        );
        let mut asked = Vec::new();
        let mut ask = |n: &str| {
            asked.push(n.to_string());
            Ok(n == "alice")
        };
        assert!(t.exists_with("alice", "", &mut ask).unwrap());
        assert!(!t.exists_with("bob", "", &mut ask).unwrap());
        assert_eq!(asked, vec!["alice", "bob"]);
    }
}
