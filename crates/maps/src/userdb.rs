//! User databases: who a local user is (uid, gid, home).
//!
//! A database is named by a spec, as in `local_user_maps`-style parameters:
//!
//! - `unix:passwd`: the system's users (`getpwnam`, so NSS sources count too);
//! - `passwd-file:/path`: a Dovecot-style [passwd-file](crate::passwd_file). The file is
//!   read again on every call (it is small, and edits by `petrel user` take effect at
//!   once). Names match exactly or, failing that, ignoring ASCII case. An entry without a
//!   uid or gid gets the uid or gid of the file's owner (so in a sandbox, run as one user,
//!   every account is that user); an entry without a home directory is an error when it is
//!   looked up.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::passwd_file::{self, Entry};

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name, as the database spells it.
    pub name: String,
    /// uid deliveries run as.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// A user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDb {
    /// The system's users.
    Unix,
    /// A passwd-file at this (absolute) path.
    PasswdFile(PathBuf),
}

impl UserDb {
    /// Parses `unix:passwd` or `passwd-file:/absolute/path`.
    pub fn from_spec(spec: &str) -> Result<UserDb, String> {
        let spec = spec.trim();
        if spec == "unix:passwd" {
            return Ok(UserDb::Unix);
        }
        if let Some(path) = spec.strip_prefix("passwd-file:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "user database {spec:?}: the passwd-file path must be absolute"
                ));
            }
            return Ok(UserDb::PasswdFile(PathBuf::from(path)));
        }
        Err(format!(
            "unknown user database {spec:?} (expected unix:passwd or passwd-file:/path)"
        ))
    }

    /// Looks `name` up. `Ok(None)`: no such user; `Err`: the database could not be read or
    /// the entry is unusable (say so, and defer).
    pub fn lookup(&self, name: &str) -> io::Result<Option<User>> {
        match self {
            UserDb::Unix => {
                let found = nix::unistd::User::from_name(name).map_err(io::Error::from)?;
                Ok(found.map(|u| User {
                    name: u.name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    home: u.dir,
                }))
            }
            UserDb::PasswdFile(path) => {
                let (entries, owner) = read_passwd_file(path)?;
                let found = entries
                    .iter()
                    .find(|e| e.name == name)
                    .or_else(|| entries.iter().find(|e| e.name.eq_ignore_ascii_case(name)));
                found.map(|e| to_user(e, owner, path)).transpose()
            }
        }
    }

    /// Every user of a passwd-file, in file order. The system database cannot be listed
    /// ([`io::ErrorKind::Unsupported`]).
    pub fn list(&self) -> io::Result<Vec<User>> {
        match self {
            UserDb::Unix => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the unix:passwd user database cannot be listed",
            )),
            UserDb::PasswdFile(path) => {
                let (entries, owner) = read_passwd_file(path)?;
                entries.iter().map(|e| to_user(e, owner, path)).collect()
            }
        }
    }
}

/// Reads and parses a passwd-file; also returns its owner's uid and gid.
fn read_passwd_file(path: &Path) -> io::Result<(Vec<Entry>, (u32, u32))> {
    let mut file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    let meta = file.metadata()?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    let entries = passwd_file::parse(&text, path).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        io::Error::new(io::ErrorKind::InvalidData, msgs.join("; "))
    })?;
    Ok((entries, (meta.uid(), meta.gid())))
}

fn to_user(e: &Entry, (uid, gid): (u32, u32), path: &Path) -> io::Result<User> {
    let Some(home) = &e.home else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: user {} has no home directory", path.display(), e.name),
        ));
    };
    Ok(User {
        name: e.name.clone(),
        uid: e.uid.unwrap_or(uid),
        gid: e.gid.unwrap_or(gid),
        home: home.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(UserDb::from_spec("unix:passwd"), Ok(UserDb::Unix));
        assert_eq!(
            UserDb::from_spec(" passwd-file:/etc/petrel/passwd "),
            Ok(UserDb::PasswdFile("/etc/petrel/passwd".into()))
        );
        assert!(UserDb::from_spec("passwd-file:relative").is_err());
        assert!(UserDb::from_spec("ldap:x").is_err());
        assert!(UserDb::from_spec("").is_err());
    }

    #[test]
    fn unix_lookup() {
        let root = UserDb::Unix.lookup("root").expect("lookup");
        if let Some(root) = root {
            assert_eq!(root.uid, 0);
        }
        assert_eq!(
            UserDb::Unix
                .lookup("no-such-user-petrel-test")
                .expect("lookup"),
            None
        );
        assert_eq!(UserDb::Unix.lookup("nul\0name").expect("lookup"), None);
        assert_eq!(
            UserDb::Unix.list().expect_err("unsupported").kind(),
            io::ErrorKind::Unsupported
        );
    }

    #[test]
    fn passwd_file_lookup_and_list() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("passwd");
        std::fs::write(
            &path,
            "demo:{PLAIN}x:1234:2345::/srv/demo\nAlice:{PLAIN}y::::/srv/alice\nhomeless:{PLAIN}z\n",
        )
        .expect("write");
        let meta = std::fs::metadata(&path).expect("stat");
        let db = UserDb::PasswdFile(path.clone());
        assert_eq!(
            db.lookup("demo").expect("lookup"),
            Some(User {
                name: "demo".into(),
                uid: 1234,
                gid: 2345,
                home: "/srv/demo".into()
            })
        );
        let alice = db.lookup("alice").expect("lookup").expect("found");
        assert_eq!(alice.name, "Alice");
        assert_eq!((alice.uid, alice.gid), (meta.uid(), meta.gid()));
        assert_eq!(db.lookup("nobody").expect("lookup"), None);
        let e = db.lookup("homeless").expect_err("no home");
        assert!(e.to_string().contains("has no home"), "{e}");
        assert!(db.list().is_err(), "one bad entry fails the listing");

        std::fs::write(&path, "demo:{PLAIN}x:1:1::/d\nbob:{PLAIN}x:2:2::/b\n").expect("write");
        let names: Vec<String> = db
            .list()
            .expect("list")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["demo", "bob"]);

        std::fs::write(&path, "demo:x:notanumber\n").expect("write");
        let e = db.lookup("demo").expect_err("syntax");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(", line 1: "), "{e}");

        let missing = UserDb::PasswdFile(t.path().join("missing"));
        assert_eq!(
            missing.lookup("x").expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
    }
}
