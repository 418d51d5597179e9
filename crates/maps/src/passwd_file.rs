//! Dovecot's passwd-file format: one user per line.
//!
//! ```text
//! # comment
//! demo:{SHA512-CRYPT}$6$salt$hash:1000:1000:Demo User:/srv/mail/demo::userdb_quota_rule=*:storage=1G
//! alice:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$salt$hash
//! ```
//!
//! Fields are `user:password:uid:gid:gecos:home:shell:extra_fields`, separated by `:`.
//! Everything after the password is optional; an empty uid, gid or home means "not set".
//! uid and gid are numbers; home, when set, is an absolute path. The shell and the extra
//! fields are kept verbatim as [`Entry::rest`] (they may contain `:`), so a file read and
//! written back keeps them. Blank lines and lines starting with `#` are skipped. The user
//! name may not be empty, may not contain white space, and may be defined only once.
//!
//! [`write_atomic`] writes a whole file from entries (comments are not kept): it writes
//! `PATH.tmp`, fsyncs it, gives it the mode asked for and the owner of the file it replaces,
//! renames it over `PATH` and fsyncs the directory. Writers must not run concurrently (the
//! `.tmp` name is fixed); callers serialise them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::LineError;

/// An error in a passwd-file (the crate's [`LineError`]).
pub type ParseError = LineError;

/// One user of a passwd-file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The user name.
    pub name: String,
    /// The password hash with its scheme, e.g. `{SHA512-CRYPT}$6$...`; may be empty.
    pub password: String,
    /// uid, if set.
    pub uid: Option<u32>,
    /// gid, if set.
    pub gid: Option<u32>,
    /// Free text (a full name).
    pub gecos: String,
    /// Home directory, if set.
    pub home: Option<PathBuf>,
    /// The shell and extra fields, verbatim (`shell:extra_fields`), or empty.
    pub rest: String,
}

impl Entry {
    /// A user with just a name and a password hash.
    pub fn new(name: &str, password: &str) -> Entry {
        Entry {
            name: name.to_string(),
            password: password.to_string(),
            ..Entry::default()
        }
    }

    /// Checks that the entry can be written as one line that reads back the same.
    pub fn validate(&self) -> Result<(), String> {
        fn bad_char(c: char) -> bool {
            c == ':' || c.is_control()
        }
        if self.name.is_empty() {
            return Err("empty user name".into());
        }
        if self.name.starts_with('#')
            || self
                .name
                .contains(|c: char| bad_char(c) || c.is_whitespace())
        {
            return Err(format!("bad user name {:?}", self.name));
        }
        if self.password.contains(bad_char) {
            return Err(format!(
                "user {}: the password may not contain ':' or control characters",
                self.name
            ));
        }
        if self.gecos.contains(bad_char) {
            return Err(format!(
                "user {}: the gecos field may not contain ':' or control characters",
                self.name
            ));
        }
        if let Some(home) = &self.home {
            let s = home.to_string_lossy();
            if !s.starts_with('/') || s.contains(bad_char) {
                return Err(format!("user {}: bad home directory {s:?}", self.name));
            }
        }
        if self.rest.contains(char::is_control) {
            return Err(format!(
                "user {}: control characters in the extra fields",
                self.name
            ));
        }
        Ok(())
    }
}

/// Parses a passwd-file; `file` is only used in messages. Returns every error found.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Entry>, Vec<ParseError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut lines_of: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let err = |reason: String| ParseError {
            file: file.to_path_buf(),
            line: line_no,
            reason,
        };
        match parse_line(line) {
            Ok(e) => {
                if let Some(first) = lines_of.get(&e.name) {
                    errors.push(err(format!(
                        "user {} is already defined on line {first}",
                        e.name
                    )));
                } else {
                    lines_of.insert(e.name.clone(), line_no);
                    entries.push(e);
                }
            }
            Err(reason) => errors.push(err(reason)),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let mut fields = line.splitn(7, ':');
    let name = fields.next().unwrap_or_default();
    let password = fields.next().unwrap_or_default();
    let uid = fields.next().unwrap_or_default();
    let gid = fields.next().unwrap_or_default();
    let gecos = fields.next().unwrap_or_default();
    let home = fields.next().unwrap_or_default();
    let rest = fields.next().unwrap_or_default();
    let number = |what: &str, v: &str| -> Result<Option<u32>, String> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("user {name}: bad {what} {v:?} (a number is expected)"))
    };
    let entry = Entry {
        name: name.to_string(),
        password: password.to_string(),
        uid: number("uid", uid)?,
        gid: number("gid", gid)?,
        gecos: gecos.to_string(),
        home: (!home.is_empty()).then(|| PathBuf::from(home)),
        rest: rest.to_string(),
    };
    entry.validate()?;
    Ok(entry)
}

/// One line of a passwd-file, without the newline. Trailing empty fields are left out
/// (`name:password` at the least).
pub fn format_entry(e: &Entry) -> String {
    let mut fields: Vec<String> = vec![
        e.name.clone(),
        e.password.clone(),
        e.uid.map(|u| u.to_string()).unwrap_or_default(),
        e.gid.map(|g| g.to_string()).unwrap_or_default(),
        e.gecos.clone(),
        e.home
            .as_ref()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        e.rest.clone(),
    ];
    while fields.len() > 2 && fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    fields.join(":")
}

/// Replaces the passwd-file at `path` with `entries` (see the module docs). The file gets
/// `mode` and, if it replaces an existing file, that file's owner and group. Nothing is
/// changed if an entry is invalid ([`io::ErrorKind::InvalidInput`]) or writing fails.
pub fn write_atomic(path: &Path, entries: &[Entry], mode: u32) -> io::Result<()> {
    for e in entries {
        e.validate()
            .map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r))?;
    }
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let owner = match fs::metadata(path) {
        Ok(m) => Some((m.uid(), m.gid())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        let mut w = BufWriter::new(&file);
        for e in entries {
            writeln!(w, "{}", format_entry(e))?;
        }
        w.flush()?;
        drop(w);
        if let Some((uid, gid)) = owner {
            let m = file.metadata()?;
            if (m.uid(), m.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
        }
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", path.display()),
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# users\n\
        demo:{SHA512-CRYPT}$6$salt$hash:1000:1000:Demo User:/srv/mail/demo::userdb_quota_rule=*:storage=1G\n\
        \n\
        alice:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA\n\
        bob:{PLAIN}x::::/home/bob\r\n\
        nopass:\n";

    fn sample() -> Vec<Entry> {
        parse(SAMPLE, Path::new("/etc/petrel/passwd")).expect("parse")
    }

    #[test]
    fn parses_fields() {
        let e = sample();
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[0],
            Entry {
                name: "demo".into(),
                password: "{SHA512-CRYPT}$6$salt$hash".into(),
                uid: Some(1000),
                gid: Some(1000),
                gecos: "Demo User".into(),
                home: Some("/srv/mail/demo".into()),
                rest: ":userdb_quota_rule=*:storage=1G".into(),
            }
        );
        assert_eq!(
            e[1],
            Entry::new(
                "alice",
                "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"
            )
        );
        assert_eq!(e[2].home.as_deref(), Some(Path::new("/home/bob")));
        assert_eq!(e[2].uid, None);
        assert_eq!(e[3], Entry::new("nopass", ""));
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "ok:x\nbad:x:12a\n:x\nhome:x:1:1::relative\nok:y\nsp ace:x\n";
        let e = parse(text, Path::new("/etc/petrel/passwd")).expect_err("errors");
        let msgs: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            vec![
                "/etc/petrel/passwd, line 2: user bad: bad uid \"12a\" (a number is expected)",
                "/etc/petrel/passwd, line 3: empty user name",
                "/etc/petrel/passwd, line 4: user home: bad home directory \"relative\"",
                "/etc/petrel/passwd, line 5: user ok is already defined on line 1",
                "/etc/petrel/passwd, line 6: bad user name \"sp ace\"",
            ]
        );
    }

    #[test]
    fn format_round_trips() {
        let entries = sample();
        let text: String = entries.iter().map(|e| format_entry(e) + "\n").collect();
        assert_eq!(parse(&text, Path::new("f")).expect("reparse"), entries);
        assert_eq!(
            format_entry(&entries[1]),
            "alice:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"
        );
        assert_eq!(format_entry(&entries[2]), "bob:{PLAIN}x::::/home/bob");
        assert_eq!(format_entry(&entries[3]), "nopass:");
        assert_eq!(
            format_entry(&entries[0]),
            "demo:{SHA512-CRYPT}$6$salt$hash:1000:1000:Demo User:/srv/mail/demo::userdb_quota_rule=*:storage=1G"
        );
    }

    #[test]
    fn write_atomic_round_trips_and_sets_the_mode() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("passwd");
        let mut entries = sample();
        write_atomic(&path, &entries, 0o640).expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(parse(&text, &path).expect("parse"), entries);
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o640
        );
        assert!(!t.path().join("passwd.tmp").exists());

        entries.push(Entry {
            uid: Some(1001),
            home: Some("/srv/mail/carol".into()),
            ..Entry::new("carol", "{PLAIN}c")
        });
        write_atomic(&path, &entries, 0o600).expect("rewrite");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(parse(&text, &path).expect("parse"), entries);
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn write_atomic_refuses_bad_entries_and_changes_nothing() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("passwd");
        write_atomic(&path, &sample(), 0o600).expect("write");
        let before = fs::read(&path).expect("read");
        for bad in [
            Entry::new("a:b", "x"),
            Entry::new("#a", "x"),
            Entry::new("a", "x\nroot::0:0::/root"),
            Entry {
                gecos: "a:b".into(),
                ..Entry::new("a", "x")
            },
            Entry {
                home: Some("rel".into()),
                ..Entry::new("a", "x")
            },
        ] {
            let e = write_atomic(&path, &[bad], 0o600).expect_err("invalid");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(fs::read(&path).expect("read"), before);
        let e = write_atomic(&t.path().join("no/such/dir/passwd"), &sample(), 0o600);
        assert!(e.is_err());
    }
}
