//! The password file, kept in memory and read again when it changes (its modification
//! time, size, inode or device differ from the copy's).

use petrel_maps::passwd_file::{self, Entry};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What authd needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as the file spells it.
    pub name: String,
    /// `{SCHEME}hash`.
    pub password: String,
    /// uid (the file owner's when the entry has none).
    pub uid: u32,
    /// gid (the file's group when the entry has none).
    pub gid: u32,
    /// Home directory, or empty.
    pub home: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The password file.
#[derive(Debug)]
pub struct PasswordDb {
    path: PathBuf,
    stamp: Option<Stamp>,
    /// The last load's result: the accounts by name, or why there are none.
    state: Result<Loaded, String>,
}

#[derive(Debug, Default)]
struct Loaded {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    by_lower: HashMap<String, usize>,
    owner: (u32, u32),
}

/// What [`PasswordDb::refresh`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing changed.
    Same,
    /// The file was (re)read: this many users.
    Loaded(usize),
}

impl PasswordDb {
    /// A database for `path`, not read yet.
    pub fn new(path: &Path) -> PasswordDb {
        PasswordDb {
            path: path.to_path_buf(),
            stamp: None,
            state: Err("not read yet".into()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again when it changed. `Err`: it cannot be used now (unreadable or
    /// malformed); the reason is the same until the file changes, so callers can log it
    /// once (`changed` tells whether this call found it changed).
    pub fn refresh(&mut self) -> (Result<Refresh, String>, bool) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("cannot read {}: {e}", self.path.display());
                let changed = self.stamp.is_some() || self.state.as_ref().err() != Some(&msg);
                self.stamp = None;
                self.state = Err(msg.clone());
                return (Err(msg), changed);
            }
        };
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        if self.stamp == Some(stamp) {
            return match &self.state {
                Ok(_) => (Ok(Refresh::Same), false),
                Err(e) => (Err(e.clone()), false),
            };
        }
        let previous = self.state.as_ref().err().cloned();
        self.stamp = Some(stamp);
        self.state = load(&self.path);
        match &self.state {
            Ok(l) => (Ok(Refresh::Loaded(l.entries.len())), true),
            Err(e) => {
                let changed = previous.as_ref() != Some(e);
                (Err(e.clone()), changed)
            }
        }
    }

    /// Looks `name` up: an exact match, else one that differs only in ASCII case.
    pub fn lookup(&self, name: &str) -> Option<Account> {
        let l = self.state.as_ref().ok()?;
        let i = l
            .by_name
            .get(name)
            .or_else(|| l.by_lower.get(&name.to_ascii_lowercase()))?;
        let e = &l.entries[*i];
        Some(Account {
            name: e.name.clone(),
            password: e.password.clone(),
            uid: e.uid.unwrap_or(l.owner.0),
            gid: e.gid.unwrap_or(l.owner.1),
            home: e
                .home
                .as_ref()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }
}

fn load(path: &Path) -> Result<Loaded, String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = passwd_file::parse(&text, path).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut by_name = HashMap::new();
    let mut by_lower = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_name.insert(e.name.clone(), i);
        by_lower.entry(e.name.to_ascii_lowercase()).or_insert(i);
    }
    Ok(Loaded {
        entries,
        by_name,
        by_lower,
        owner: (meta.uid(), meta.gid()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_looks_up_and_notices_changes() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("users");
        let mut db = PasswordDb::new(&path);
        let (r, changed) = db.refresh();
        assert!(r.expect_err("missing").contains("cannot read"));
        assert!(changed);
        assert!(!db.refresh().1, "the same error is not news");
        assert_eq!(db.lookup("demo"), None);

        std::fs::write(
            &path,
            "demo:{PLAIN}x:1000:1001::/home/demo::\nBob:{PLAIN}y\n",
        )
        .expect("write");
        assert_eq!(db.refresh(), (Ok(Refresh::Loaded(2)), true));
        assert_eq!(db.refresh(), (Ok(Refresh::Same), false));
        let demo = db.lookup("demo").expect("demo");
        assert_eq!(
            demo,
            Account {
                name: "demo".into(),
                password: "{PLAIN}x".into(),
                uid: 1000,
                gid: 1001,
                home: "/home/demo".into(),
            }
        );
        let bob = db.lookup("bob").expect("case-insensitive");
        assert_eq!(bob.name, "Bob");
        let me = std::fs::metadata(&path).expect("meta");
        assert_eq!((bob.uid, bob.gid), (me.uid(), me.gid()), "the file's owner");
        assert_eq!(bob.home, "");
        assert_eq!(db.lookup("nobody"), None);

        // A rewrite (rename over it, as petrel user does) is noticed.
        let tmp = t.path().join("users.tmp");
        std::fs::write(&tmp, "carol:{PLAIN}z\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(db.refresh().0, Ok(Refresh::Loaded(1)));
        assert_eq!(db.lookup("demo"), None);
        assert!(db.lookup("carol").is_some());

        // A broken file: nobody logs in, and the reason is given once.
        std::fs::write(&path, "carol:{PLAIN}z:notanumber\n").expect("write");
        let (r, changed) = db.refresh();
        assert!(r.expect_err("broken").contains("bad uid"));
        assert!(changed);
        assert!(db.lookup("carol").is_none());
    }
}
