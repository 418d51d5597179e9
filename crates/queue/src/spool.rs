//! The spool layout under `queue_directory`, its owners and modes, and fsync helpers.
//!
//! Every daemon `chdir`s to the queue directory at start-up and uses the relative paths
//! below, so the same code works inside a chroot to the queue directory.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// One directory of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Local submissions (postdrop writes, pickup reads).
    Maildrop,
    /// Queue files being written or just written by cleanup.
    Incoming,
    /// Queue files qmgr is delivering.
    Active,
    /// Queue files waiting for a retry; the file's mtime is the next retry time.
    Deferred,
    /// Queue files held by the operator.
    Hold,
    /// Files that failed to parse; never deleted silently.
    Corrupt,
    /// Per-message records of permanent failures.
    Bounce,
    /// Per-message records of temporary failures (the reasons used in DSNs).
    Defer,
    /// Sockets of internal services.
    Private,
    /// Sockets the petrel-drop group may use.
    Public,
    /// master.pid and its lock.
    Pid,
}

/// Who owns what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// mail_owner:mail_owner's group.
    Mail,
    /// mail_owner:setgid_group.
    MailDrop,
    /// root:root.
    Root,
}

impl Dir {
    /// Every spool directory.
    pub const ALL: [Dir; 11] = [
        Dir::Maildrop,
        Dir::Incoming,
        Dir::Active,
        Dir::Deferred,
        Dir::Hold,
        Dir::Corrupt,
        Dir::Bounce,
        Dir::Defer,
        Dir::Private,
        Dir::Public,
        Dir::Pid,
    ];

    /// Directory name relative to the queue directory.
    pub fn name(self) -> &'static str {
        match self {
            Dir::Maildrop => "maildrop",
            Dir::Incoming => "incoming",
            Dir::Active => "active",
            Dir::Deferred => "deferred",
            Dir::Hold => "hold",
            Dir::Corrupt => "corrupt",
            Dir::Bounce => "bounce",
            Dir::Defer => "defer",
            Dir::Private => "private",
            Dir::Public => "public",
            Dir::Pid => "pid",
        }
    }

    /// Mode and owner as in the design: maildrop 1730 and public 0710 belong to
    /// mail_owner:setgid_group; pid/ is root's; the rest are mail_owner's, 0700.
    pub fn mode_owner(self) -> (u32, Owner) {
        match self {
            Dir::Maildrop => (0o1730, Owner::MailDrop),
            Dir::Public => (0o710, Owner::MailDrop),
            Dir::Pid => (0o755, Owner::Root),
            _ => (0o700, Owner::Mail),
        }
    }

    /// Whether the directory holds queue files or their records (all but maildrop/, whose
    /// files are the submitters', and private/, public/ and pid/).
    pub fn holds_queue_files(self) -> bool {
        !matches!(self, Dir::Maildrop | Dir::Private | Dir::Public | Dir::Pid)
    }

    /// `dir/name` as a relative path string.
    pub fn file(self, name: &str) -> String {
        format!("{}/{}", self.name(), name)
    }
}

/// uid/gid values for [`create`] and [`check`]; `None` means "do not chown" (unprivileged).
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// mail_owner's uid.
    pub mail_uid: u32,
    /// mail_owner's primary gid.
    pub mail_gid: u32,
    /// setgid_group's gid.
    pub drop_gid: u32,
}

impl Ids {
    fn of(&self, o: Owner) -> (u32, u32) {
        match o {
            Owner::Mail => (self.mail_uid, self.mail_gid),
            Owner::MailDrop => (self.mail_uid, self.drop_gid),
            Owner::Root => (0, 0),
        }
    }
}

/// Creates the queue directory and every spool directory with its mode (and owner, when
/// `ids` is given). Existing directories get their mode and owner corrected.
pub fn create(root: &Path, ids: Option<Ids>) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    if ids.is_some() {
        std::os::unix::fs::chown(root, Some(0), Some(0))?;
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    for d in Dir::ALL {
        let p = root.join(d.name());
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        }
        let (mode, owner) = d.mode_owner();
        if let Some(ids) = ids {
            let (u, g) = ids.of(owner);
            std::os::unix::fs::chown(&p, Some(u), Some(g))?;
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Lists what is wrong with the spool's directories (missing, wrong mode or owner).
pub fn check(root: &Path, ids: Option<Ids>) -> Vec<String> {
    let mut problems = Vec::new();
    if !root.is_dir() {
        problems.push(format!(
            "{}: queue directory does not exist",
            root.display()
        ));
        return problems;
    }
    for d in Dir::ALL {
        let p = root.join(d.name());
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => {
                problems.push(format!("{}: not a directory", p.display()));
                continue;
            }
            Err(e) => {
                problems.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let (mode, owner) = d.mode_owner();
        if meta.mode() & 0o7777 != mode {
            problems.push(format!(
                "{}: mode is {:04o}, should be {:04o}",
                p.display(),
                meta.mode() & 0o7777,
                mode
            ));
        }
        if let Some(ids) = ids {
            let (u, g) = ids.of(owner);
            if meta.uid() != u || meta.gid() != g {
                problems.push(format!(
                    "{}: owner is {}:{}, should be {u}:{g}",
                    p.display(),
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
    }
    problems
}

/// fsyncs a directory, making a create, rename or unlink in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `file`, just created in `dir`, durable under its name: fsync of `dir`. A process
/// that may create files in `dir` but not read it (postdrop, set-group-id into `maildrop/`
/// 1730) cannot open it to fsync it; it calls syncfs(2) on the file instead, which writes
/// back the whole file system the file is on, the directory entry with it.
pub fn fsync_entry(dir: &Path, file: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let f = File::open(file)?;
            nix::unistd::syncfs(&f).map_err(io::Error::from)
        }
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to` (both relative to the spool) and fsyncs the target directory.
pub fn move_file(from: &str, to: &str, durable: bool) -> io::Result<()> {
    std::fs::rename(from, to)?;
    if durable {
        if let Some(parent) = Path::new(to).parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_files_live_in_seven_directories() {
        let q: Vec<Dir> = Dir::ALL
            .into_iter()
            .filter(|d| d.holds_queue_files())
            .collect();
        assert_eq!(q.len(), 7);
        for d in [Dir::Maildrop, Dir::Private, Dir::Public, Dir::Pid] {
            assert!(!q.contains(&d), "{d:?}");
        }
    }

    #[test]
    fn a_new_name_in_a_directory_that_cannot_be_read_is_made_durable_too() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("maildrop");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("F1");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        fsync_entry(&dir, &file).unwrap();
        // Write and search, not read: what postdrop has in maildrop/ (root reads anyway).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o300)).unwrap();
        let readable = File::open(&dir).is_ok();
        fsync_entry(&dir, &file).unwrap();
        assert!(
            fsync_entry(&dir, &dir.join("missing")).is_err() || readable,
            "without read access, the file itself must exist"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn create_then_check_is_clean_and_detects_damage() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("spool");
        create(&root, None).unwrap();
        assert!(check(&root, None).is_empty(), "{:?}", check(&root, None));
        std::fs::set_permissions(
            root.join("maildrop"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        std::fs::remove_dir(root.join("corrupt")).unwrap();
        let p = check(&root, None);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p
            .iter()
            .any(|s| s.contains("maildrop: mode is 0777, should be 1730")));
        create(&root, None).unwrap();
        assert!(check(&root, None).is_empty());
    }
}
