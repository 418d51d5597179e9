//! `petrel user add|del|list|passwd`: the accounts of a `passwd-file:PATH` user database.
//!
//! Passwords are hashed with `auth_password_scheme` ({ARGON2ID} by default, or
//! {SHA512-CRYPT}). The file keeps mode 0640 and, when it is rewritten, its owner and
//! group; a file created by root is given to the group of `auth_owner`, so authd can read
//! it and nobody else can.
//!
//! Whose a new account's mail is: run by root on an installed system (a privileged
//! configuration, where `mail_owner` is not root), the account gets the uid and gid of
//! `virtual_mail_owner` and its home is `virtual_mailbox_base/NAME`, both owned by that
//! user ([`Virtual`]). Otherwise (an ordinary user, or root's own sandbox) it gets the
//! caller's uid and gid and a home next to the first account's ([`home_for`]).

use crate::{Fail, Res};
use petrel_auth::Scheme;
use petrel_maps::passwd_file::{self, Entry};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("/dev/urandom: {e}"))
}

/// A random password of `len` letters and digits.
pub fn generate_password(len: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        random_bytes(&mut buf)?;
        // Rejection sampling keeps every symbol equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// `{ARGON2ID}$argon2id$…` or `{SHA512-CRYPT}$6$salt$hash` for `password`, with a random
/// salt.
pub fn hash_password(scheme: Scheme, password: &str) -> Result<String, String> {
    petrel_auth::try_hash(scheme, password).map_err(|e| format!("password hashing failed: {e}"))
}

/// The scheme `auth_password_scheme` names.
pub fn password_scheme(cfg: &petrel_config::Config) -> Result<Scheme, String> {
    Scheme::from_name(&cfg.get("auth_password_scheme"))
        .map_err(|e| format!("auth_password_scheme: {e}"))
}

/// Checks a user name: letters, digits and `._-+@`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad user name {name:?}: use letters, digits and . _ - + @, not starting with . or -"
        ))
    }
}

/// The password file the accounts live in: `auth_password_file`, which authd reads.
pub fn database_path(dir: &Path) -> Res<PathBuf> {
    let cfg = crate::load_config(dir)?;
    password_file(&cfg).map_err(Fail::Fatal)
}

fn password_file(cfg: &petrel_config::Config) -> Result<PathBuf, String> {
    let file = cfg.get("auth_password_file");
    if file.trim().is_empty() {
        return Err("auth_password_file is empty: there is no password file to manage".into());
    }
    Ok(PathBuf::from(file.trim()))
}

/// Whose mail a new account reaches, and so which uid and home its entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's (a sandbox, or a system run by one user): the caller's uid, a home
    /// next to the other accounts.
    Caller,
    /// An account of its own (`user_database = passwd-file:...`, the same file): the
    /// virtual-mail owner's uid, a home below `virtual_mailbox_base`.
    Virtual,
    /// A user of the system (`user_database = unix:passwd`): local delivers its mail to
    /// its home as its uid, so IMAP and POP3 must serve the same.
    System,
}

/// The [`Kind`] of accounts `petrel user add` makes: run by root for a privileged
/// configuration, the user database decides; otherwise [`Kind::Caller`].
pub fn kind(euid_is_root: bool, runs_as_mail_owner: bool, user_database: &str) -> Kind {
    if !uses_virtual_owner(euid_is_root, runs_as_mail_owner) {
        Kind::Caller
    } else if user_database.trim().starts_with("passwd-file:") {
        Kind::Virtual
    } else {
        Kind::System
    }
}

/// The system user `name` (not root), for a [`Kind::System`] account.
fn system_user(name: &str, cfg: &petrel_config::Config) -> Result<nix::unistd::User, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if u.uid.is_root() => Err(format!(
            "{name} has uid 0: mail sessions never run as root, so it can have no account"
        )),
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!(
            "{name} is not a user of this system, and user_database = {} delivers mail \
             to system users only: add the user first (useradd), or set user_database = \
             passwd-file:{} for accounts of their own",
            cfg.get("user_database"),
            cfg.get("auth_password_file")
        )),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn read_secret(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own; a zeroed termios is a
    // valid value to be filled in.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(format!(
                "cannot read the terminal settings: {}",
                std::io::Error::last_os_error()
            ));
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
    }
    r.map_err(|e| format!("reading the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The new password: the first line of standard input, or asked twice on a terminal.
fn new_password() -> Result<String, String> {
    let pw = if std::io::stdin().is_terminal() {
        let a = read_secret("New password: ")?;
        let b = read_secret("Retype new password: ")?;
        if a != b {
            return Err("the passwords do not match".into());
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if pw.is_empty() {
        return Err("empty password".into());
    }
    Ok(pw)
}

/// The home directory of a new account: next to the first existing account's home, else
/// `home/NAME` beside the configuration directory (a sandbox's `DIR/home/NAME`).
pub fn home_for(db: &[Entry], config_dir: &Path, name: &str) -> PathBuf {
    if let Some(parent) = db
        .iter()
        .find_map(|e| e.home.as_deref())
        .and_then(|h| h.parent().map(Path::to_path_buf))
    {
        return parent.join(name);
    }
    config_dir
        .parent()
        .unwrap_or(Path::new("/"))
        .join("home")
        .join(name)
}

/// Creates `home/Maildir/{tmp,new,cur}` (mode 0700).
pub fn make_maildir(home: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    for sub in ["tmp", "new", "cur"] {
        let d = home.join("Maildir").join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(())
}

/// The owner and place of the mail of accounts added by root on an installed system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Virtual {
    /// `virtual_mail_owner`'s uid.
    pub uid: u32,
    /// `virtual_mail_owner`'s primary gid.
    pub gid: u32,
    /// `virtual_mailbox_base`: homes are `base/NAME`.
    pub base: PathBuf,
}

/// Whether a new account belongs to `virtual_mail_owner` (true) or to the caller: only
/// when root runs the command for a privileged configuration. A sandbox run by root has
/// mail_owner = root (`runs_as_mail_owner`) and keeps the caller's ids.
pub fn uses_virtual_owner(euid_is_root: bool, runs_as_mail_owner: bool) -> bool {
    euid_is_root && !runs_as_mail_owner
}

/// The [`Virtual`] owner for `petrel user add` run by this process, if any.
pub fn virtual_owner(cfg: &petrel_config::Config) -> Result<Option<Virtual>, String> {
    if !uses_virtual_owner(
        nix::unistd::geteuid().is_root(),
        petrel_daemon::running_as_mail_owner(cfg),
    ) {
        return Ok(None);
    }
    let name = cfg.get("virtual_mail_owner");
    let user = match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(format!(
                "virtual_mail_owner {name}: no such user (run petrel set-permissions)"
            ))
        }
        Err(e) => return Err(format!("virtual_mail_owner {name}: {e}")),
    };
    if user.uid.is_root() {
        return Err(format!(
            "virtual_mail_owner {name}: the mail of password-file accounts must not belong to root"
        ));
    }
    let base = PathBuf::from(cfg.get("virtual_mailbox_base"));
    if !base.is_absolute() {
        return Err(format!(
            "virtual_mailbox_base = {}: must be an absolute path",
            base.display()
        ));
    }
    Ok(Some(Virtual {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        base,
    }))
}

/// Makes `base` when it is missing (its parents 0755, itself 0750, given to the virtual
/// owner), then `base/name/Maildir/{tmp,new,cur}`, each directory mode 0700 and owned by
/// the virtual owner. Below `base` nothing is followed through a symbolic link (the
/// virtual owner could have planted one), so root never changes anything outside it.
pub fn make_virtual_home(v: &Virtual, name: &str) -> Result<PathBuf, String> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    check_name(name)?;
    let base = &v.base;
    if !base.exists() {
        if let Some(parent) = base.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o750).create(base) {
            Ok(()) => std::os::unix::fs::chown(base, Some(v.uid), Some(v.gid))
                .and_then(|()| {
                    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o750))
                })
                .map_err(|e| format!("{}: {e}", base.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", base.display())),
        }
    }
    let base_fd = open(
        base.as_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", base.display()))?;
    let home = base.join(name);
    let home_fd = owned_subdir(&base_fd, &home, v)?;
    let maildir = home.join("Maildir");
    let maildir_fd = owned_subdir(&home_fd, &maildir, v)?;
    for sub in ["tmp", "new", "cur"] {
        owned_subdir(&maildir_fd, &maildir.join(sub), v)?;
    }
    Ok(home)
}

/// Makes the directory `path` (named for messages; its last component is made in the
/// directory `parent`) unless it exists, refuses a symbolic link or a non-directory,
/// and gives it mode 0700 and the virtual owner. Returns it open.
fn owned_subdir(
    parent: &std::os::fd::OwnedFd,
    path: &Path,
    v: &Virtual,
) -> Result<std::os::fd::OwnedFd, String> {
    use nix::errno::Errno;
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{fchmod, mkdirat, Mode};
    use nix::unistd::{fchown, Gid, Uid};
    let part = path
        .file_name()
        .ok_or_else(|| format!("{}: no file name", path.display()))?;
    match mkdirat(parent, part, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, part, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            format!("{}: not a directory (a symbolic link?)", path.display())
        }
        e => format!("{}: {e}", path.display()),
    })?;
    fchown(&fd, Some(Uid::from_raw(v.uid)), Some(Gid::from_raw(v.gid)))
        .and_then(|()| fchmod(&fd, Mode::from_bits_truncate(0o700)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(fd)
}

/// Reads the passwd-file at `path`; a file that does not exist is an empty database.
pub fn read_db(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    passwd_file::parse(&text, path).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Writes the database; `group` is the group a file that did not exist yet gets (the
/// group of an existing file is kept).
fn write_db(path: &Path, db: &[Entry], group: Option<u32>) -> Result<(), String> {
    let existed = path.exists();
    passwd_file::write_atomic(path, db, 0o640).map_err(|e| e.to_string())?;
    if let (false, Some(gid)) = (existed, group) {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("chgrp {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The group a new password file gets: auth_owner's, when root creates it (so authd can
/// read it, and mail_owner cannot); otherwise the creator's.
fn new_file_group(cfg: &petrel_config::Config) -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    match petrel_daemon::owner(cfg, "auth_owner") {
        Ok((uid, gid)) if !uid.is_root() => Some(gid.as_raw()),
        _ => None,
    }
}

/// Adds `name` with `password` to the database at `path`; returns its home. With
/// `virt`, the account and its home belong to the virtual owner
/// ([`make_virtual_home`]); without, to the caller, next to the other accounts.
pub fn add_entry(
    path: &Path,
    config_dir: &Path,
    name: &str,
    password: &str,
    scheme: Scheme,
    group: Option<u32>,
    virt: Option<&Virtual>,
) -> Result<PathBuf, String> {
    check_name(name)?;
    let mut db = read_db(path)?;
    if db.iter().any(|e| e.name == name) {
        return Err(format!("user {name} already exists in {}", path.display()));
    }
    let (home, uid, gid) = match virt {
        Some(v) => (make_virtual_home(v, name)?, v.uid, v.gid),
        None => {
            let home = home_for(&db, config_dir, name);
            make_maildir(&home)?;
            let uid = nix::unistd::geteuid().as_raw();
            (home, uid, nix::unistd::getegid().as_raw())
        }
    };
    db.push(Entry {
        uid: Some(uid),
        gid: Some(gid),
        home: Some(home.clone()),
        ..Entry::new(name, &hash_password(scheme, password)?)
    });
    write_db(path, &db, group)?;
    Ok(home)
}

/// Removes `name` from the database at `path`; returns its home.
pub fn del_entry(path: &Path, name: &str) -> Result<Option<PathBuf>, String> {
    let mut db = read_db(path)?;
    let i = db
        .iter()
        .position(|e| e.name == name)
        .ok_or_else(|| format!("no user {name} in {}", path.display()))?;
    let gone = db.remove(i);
    write_db(path, &db, None)?;
    Ok(gone.home)
}

/// `petrel user add NAME`.
pub fn add(dir: &Path, name: &str) -> Res {
    let cfg = crate::load_config(dir)?;
    let path = password_file(&cfg)?;
    let scheme = password_scheme(&cfg)?;
    check_name(name)?;
    let db = cfg.get("user_database");
    let kind = kind(
        nix::unistd::geteuid().is_root(),
        petrel_daemon::running_as_mail_owner(&cfg),
        &db,
    );
    let group = new_file_group(&cfg);
    if kind == Kind::System {
        let user = system_user(name, &cfg)?;
        let pw = new_password()?;
        add_system_entry(&path, &user, &pw, scheme, group)?;
        println!(
            "petrel: added user {name} (the system user: uid {}, home {})",
            user.uid,
            user.dir.display()
        );
        return Ok(());
    }
    let virt = match kind {
        Kind::Virtual => virtual_owner(&cfg)?,
        _ => None,
    };
    if kind == Kind::Virtual && db.trim() != format!("passwd-file:{}", path.display()) {
        eprintln!(
            "petrel: warning: user_database = {db} is not auth_password_file ({}): mail for \
             {name} is delivered only if that database has it too",
            path.display()
        );
    }
    let pw = new_password()?;
    let home = add_entry(&path, dir, name, &pw, scheme, group, virt.as_ref())?;
    println!("petrel: added user {name} (home {})", home.display());
    Ok(())
}

/// Adds the system user `user` with `password` to the password file at `path`, with its
/// uid, gid and home (its mailbox is where local delivers it; nothing is created).
pub fn add_system_entry(
    path: &Path,
    user: &nix::unistd::User,
    password: &str,
    scheme: Scheme,
    group: Option<u32>,
) -> Result<(), String> {
    let mut db = read_db(path)?;
    if db.iter().any(|e| e.name == user.name) {
        return Err(format!(
            "user {} already exists in {}",
            user.name,
            path.display()
        ));
    }
    db.push(Entry {
        uid: Some(user.uid.as_raw()),
        gid: Some(user.gid.as_raw()),
        home: Some(user.dir.clone()),
        ..Entry::new(&user.name, &hash_password(scheme, password)?)
    });
    write_db(path, &db, group)
}

/// `petrel user del NAME`.
pub fn del(dir: &Path, name: &str) -> Res {
    let path = database_path(dir)?;
    match del_entry(&path, name)? {
        Some(home) => println!(
            "petrel: removed user {name} (its mail in {} was left in place)",
            home.display()
        ),
        None => println!("petrel: removed user {name}"),
    }
    Ok(())
}

/// `petrel user list`.
pub fn list(dir: &Path) -> Res {
    let path = database_path(dir)?;
    for e in read_db(&path)? {
        println!("{}", e.name);
    }
    Ok(())
}

/// `petrel user passwd NAME`.
pub fn passwd(dir: &Path, name: &str) -> Res {
    let path = database_path(dir)?;
    let scheme = password_scheme(&crate::load_config(dir)?)?;
    let mut db = read_db(&path)?;
    if !db.iter().any(|e| e.name == name) {
        return Err(Fail::Fatal(format!("no user {name} in {}", path.display())));
    }
    let hash = hash_password(scheme, &new_password()?)?;
    for e in db.iter_mut().filter(|e| e.name == name) {
        e.password = hash.clone();
    }
    write_db(&path, &db, None)?;
    println!("petrel: changed the password of {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn verify(stored: &str, pw: &str) -> bool {
        petrel_auth::verify(stored, pw) == Ok(true)
    }

    const SHA: Scheme = Scheme::Sha512Crypt;

    #[test]
    fn add_and_del_round_trip() {
        let t = tempfile::tempdir().expect("tempdir");
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).expect("mkdir");
        let users = etc.join("users");
        let home = add_entry(&users, &etc, "alice", "s3cret", SHA, None, None).expect("add");
        assert_eq!(
            home,
            t.path().join("home/alice"),
            "first account goes beside etc/"
        );
        assert!(home.join("Maildir/new").is_dir() && home.join("Maildir/cur").is_dir());
        let home_b = add_entry(&users, &etc, "bob", "pw2", SHA, None, None).expect("add");
        assert_eq!(
            home_b,
            t.path().join("home/bob"),
            "next to the first account's home"
        );
        assert!(
            add_entry(&users, &etc, "alice", "x", SHA, None, None).is_err(),
            "no duplicates"
        );
        assert!(
            add_entry(&users, &etc, "../evil", "x", SHA, None, None).is_err(),
            "bad names refused"
        );

        let mode = std::fs::metadata(&users)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        let db = read_db(&users).expect("read");
        let names: Vec<&str> = db.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["alice", "bob"]);
        let alice = &db[0];
        assert!(
            alice.password.starts_with("{SHA512-CRYPT}$6$"),
            "{}",
            alice.password
        );
        assert!(verify(&alice.password, "s3cret"));
        assert!(!verify(&alice.password, "wrong"));
        assert_eq!(alice.uid, Some(nix::unistd::geteuid().as_raw()));
        let line = std::fs::read_to_string(&users).expect("text");
        assert!(line.starts_with("alice:{SHA512-CRYPT}$6$"));
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        assert!(line
            .lines()
            .next()
            .expect("line")
            .ends_with(&format!(":{uid}:{gid}::{}", home.display())));

        assert_eq!(del_entry(&users, "alice").expect("del"), Some(home.clone()));
        assert!(del_entry(&users, "alice").is_err());
        let db = read_db(&users).expect("read");
        assert_eq!(
            db.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            vec!["bob"]
        );
        assert!(home.is_dir(), "mail is kept");
        assert!(!etc.join("users.tmp").exists());
    }

    #[test]
    fn argon2id_is_written_and_the_group_is_kept() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().expect("tempdir");
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).expect("mkdir");
        let users = etc.join("users");
        let gid = nix::unistd::getegid().as_raw();
        add_entry(
            &users,
            &etc,
            "carol",
            "pw",
            Scheme::Argon2id,
            Some(gid),
            None,
        )
        .expect("add");
        let db = read_db(&users).expect("read");
        assert!(
            db[0]
                .password
                .starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
            "{}",
            db[0].password
        );
        assert!(verify(&db[0].password, "pw"));
        let meta = std::fs::metadata(&users).expect("meta");
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.mode() & 0o777, 0o640);
        // As root, a file given to another group keeps it through rewrites.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&users, Some(0), Some(4242)).expect("chown");
            add_entry(&users, &etc, "dave", "pw", SHA, Some(0), None).expect("add");
            del_entry(&users, "carol").expect("del");
            let meta = std::fs::metadata(&users).expect("meta");
            assert_eq!((meta.uid(), meta.gid()), (0, 4242));
            assert_eq!(meta.mode() & 0o777, 0o640);
        }
    }

    #[test]
    fn the_user_database_decides_whose_account_root_adds() {
        assert_eq!(kind(false, false, "unix:passwd"), Kind::Caller);
        assert_eq!(
            kind(true, true, "unix:passwd"),
            Kind::Caller,
            "a sandbox run by root"
        );
        assert_eq!(kind(true, false, "unix:passwd"), Kind::System);
        assert_eq!(
            kind(true, false, " passwd-file:/etc/petrel/users"),
            Kind::Virtual
        );
        assert_eq!(kind(false, false, "passwd-file:/x/users"), Kind::Caller);
    }

    #[test]
    fn a_system_account_records_the_users_own_ids_and_home() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("users");
        let user = nix::unistd::User {
            name: "alice".into(),
            passwd: Default::default(),
            uid: nix::unistd::Uid::from_raw(1234),
            gid: nix::unistd::Gid::from_raw(1235),
            gecos: Default::default(),
            dir: PathBuf::from("/home/alice"),
            shell: PathBuf::from("/bin/sh"),
        };
        add_system_entry(&path, &user, "pw", Scheme::Sha512Crypt, None).expect("added");
        let db = read_db(&path).expect("read");
        assert_eq!(db.len(), 1);
        assert_eq!((db[0].uid, db[0].gid), (Some(1234), Some(1235)));
        assert_eq!(db[0].home.as_deref(), Some(Path::new("/home/alice")));
        assert!(verify(&db[0].password, "pw"));
        assert!(!t.path().join("home").exists(), "nothing is created");
        let again = add_system_entry(&path, &user, "pw", Scheme::Sha512Crypt, None);
        assert!(again.is_err_and(|e| e.contains("already exists")));
    }

    #[test]
    fn only_root_with_a_privileged_configuration_uses_the_virtual_owner() {
        assert!(uses_virtual_owner(true, false), "root, installed system");
        assert!(!uses_virtual_owner(true, true), "root's own sandbox");
        assert!(!uses_virtual_owner(false, false), "an ordinary user");
        assert!(
            !uses_virtual_owner(false, true),
            "an ordinary user's sandbox"
        );
    }

    #[test]
    fn a_sandbox_run_by_anyone_keeps_the_callers_ids() {
        // The sandbox's mail_owner is the caller (root's sandbox: root), so no virtual
        // owner is looked up, whatever virtual_mail_owner says.
        // (Not root: no virtual owner whoever mail_owner is.)
        let me = match nix::unistd::User::from_uid(nix::unistd::geteuid()) {
            Ok(Some(u)) => u.name,
            _ => "root".to_string(),
        };
        let text = format!("mail_owner = {me}\nvirtual_mail_owner = petrel-no-such-user-xyz\n");
        let cfg = petrel_config::Config::parse(&text, Path::new("/nonexistent/petrel.conf"))
            .expect("parse");
        assert_eq!(virtual_owner(&cfg), Ok(None));
    }

    #[test]
    fn virtual_homes_go_under_the_base_and_belong_to_the_owner() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().expect("tempdir");
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).expect("mkdir");
        let users = etc.join("users");
        // Our own ids stand in for the virtual owner's (chown to them needs no root).
        let v = Virtual {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            base: t.path().join("var/vmail"),
        };
        let home = add_entry(&users, &etc, "alice", "pw", SHA, None, Some(&v)).expect("add");
        assert_eq!(home, t.path().join("var/vmail/alice"));
        let base = std::fs::metadata(&v.base).expect("base");
        assert_eq!(base.mode() & 0o7777, 0o750);
        for d in ["", "Maildir", "Maildir/tmp", "Maildir/new", "Maildir/cur"] {
            let m = std::fs::symlink_metadata(home.join(d)).expect(d);
            assert!(m.is_dir(), "{d}");
            assert_eq!(m.mode() & 0o7777, 0o700, "{d}");
            assert_eq!((m.uid(), m.gid()), (v.uid, v.gid), "{d}");
        }
        let db = read_db(&users).expect("read");
        assert_eq!((db[0].uid, db[0].gid), (Some(v.uid), Some(v.gid)));
        assert_eq!(db[0].home.as_deref(), Some(home.as_path()));
        // A second account under the same base; an existing base is left as it is.
        std::fs::set_permissions(&v.base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bob = add_entry(&users, &etc, "bob", "pw", SHA, None, Some(&v)).expect("add");
        assert_eq!(bob, v.base.join("bob"));
        let mode = std::fs::metadata(&v.base).expect("base").mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // A leftover home (mail kept by `user del`) is taken over again.
        del_entry(&users, "alice").expect("del");
        add_entry(&users, &etc, "alice", "pw", SHA, None, Some(&v)).expect("re-add");
    }

    #[test]
    fn a_symbolic_link_below_the_base_is_not_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let v = Virtual {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            base: t.path().join("vmail"),
        };
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir(&v.base).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, v.base.join("mallory")).expect("symlink");
        let e = make_virtual_home(&v, "mallory").expect_err("symlink refused");
        assert!(e.contains("not a directory (a symbolic link?)"), "{e}");
        std::fs::create_dir(v.base.join("eve")).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, v.base.join("eve/Maildir")).expect("symlink");
        assert!(make_virtual_home(&v, "eve").is_err());
        assert!(
            !elsewhere.join("tmp").exists(),
            "nothing made through the link"
        );
        let mode = std::fs::metadata(&elsewhere)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "the link's target untouched");
        assert!(make_virtual_home(&v, "../x").is_err(), "bad names refused");
    }

    #[test]
    fn generated_passwords_are_random_and_of_the_right_shape() {
        let a = generate_password(16).expect("pw");
        let b = generate_password(16).expect("pw");
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
