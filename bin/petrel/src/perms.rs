//! `petrel set-permissions`: makes an installed system's users, groups, directories and
//! files exist with the owners and modes the design gives them, like Postfix's
//! `postfix set-permissions` together with what Debian's postinst does for Postfix.
//!
//! Run by root after `make install` and by the Debian package's postinst. Every change
//! is one line on standard output; a run on a system that is already right changes and
//! prints nothing. What it does, in order:
//!
//! 1. users and groups that are missing, made with the system's `groupadd`/`useradd`:
//!    the group `setgid_group`; the users `mail_owner` (home: the queue directory),
//!    `auth_owner` (home: /nonexistent) and `virtual_mail_owner` (home:
//!    `virtual_mailbox_base`, not made here), each a system user with a group of its
//!    own name, no login shell and the comment [`GECOS`] (which is how the Debian postrm
//!    knows the users it may remove);
//! 2. the spool (`petrel_queue::spool::create`), and the regular files in its queue
//!    directories given to mail_owner (a spool copied from elsewhere);
//! 3. `data_directory`: mail_owner's, 0700;
//! 4. `daemon_directory/postdrop`: root:`setgid_group`, 02755;
//! 5. `auth_password_file`: root:`auth_owner`'s group, 0640; made empty when it is missing
//!    and inside `config_directory` (authd then answers every login with "no");
//! 6. the TLS certificate and key of smtpd, imapd and pop3d: when neither file exists and
//!    both are inside `config_directory`, a self-signed certificate for `myhostname`
//!    (key root:root 0600, certificate root:root 0644; the daemons read them as root
//!    before they drop privileges). Existing files are the administrator's and are
//!    left alone.

use crate::{Fail, Res};
use petrel_config::Config;
use petrel_queue::spool::{self, Dir, Owner};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The comment (GECOS field) of the users set-permissions creates: the Debian postrm
/// removes only users that carry it.
pub const GECOS: &str = "Petrel mail system";

/// The login shell of the users set-permissions creates.
pub const NOLOGIN: &str = "/usr/sbin/nologin";

/// The home of `auth_owner`, which needs none.
const NO_HOME: &str = "/nonexistent";

/// The (certificate, key) parameters of the TLS servers.
const TLS_PAIRS: [(&str, &str); 3] = [
    ("smtpd_tls_cert_file", "smtpd_tls_key_file"),
    ("imapd_tls_cert_file", "imapd_tls_key_file"),
    ("pop3d_tls_cert_file", "pop3d_tls_key_file"),
];

/// A user or group set-permissions makes sure exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A group only (`setgid_group`).
    Group(String),
    /// A system user with a group of its own name.
    User {
        /// Its name.
        name: String,
        /// Its home directory (not created).
        home: PathBuf,
    },
}

/// The accounts the configuration needs, in the order they are made: `setgid_group`,
/// then `mail_owner`, `auth_owner` and `virtual_mail_owner`. Root and empty names are
/// left out, and a user named twice is made once.
pub fn accounts(cfg: &Config) -> Vec<Account> {
    let mut out = Vec::new();
    let group = cfg.get("setgid_group");
    if !group.is_empty() && group != "root" {
        out.push(Account::Group(group));
    }
    let users = [
        ("mail_owner", cfg.get("queue_directory")),
        ("auth_owner", NO_HOME.to_string()),
        ("virtual_mail_owner", cfg.get("virtual_mailbox_base")),
    ];
    for (param, home) in users {
        let name = cfg.get(param);
        let known = out
            .iter()
            .any(|a| matches!(a, Account::User { name: n, .. } if *n == name));
        if name.is_empty() || name == "root" || known {
            continue;
        }
        let home = if home.is_empty() {
            NO_HOME.into()
        } else {
            home
        };
        out.push(Account::User {
            name,
            home: PathBuf::from(home),
        });
    }
    out
}

/// What to do about one TLS certificate/key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAction {
    /// Both files exist: they are the administrator's.
    Nothing,
    /// Neither exists and both paths are inside config_directory: make a self-signed
    /// certificate.
    Create,
    /// The certificate exists, the key does not: warn, make nothing.
    KeyMissing,
    /// The key exists, the certificate does not: warn, make nothing.
    CertMissing,
    /// Neither exists, but a path is outside config_directory: warn, make nothing.
    Outside,
}

/// The decision for a pair of set (non-empty) paths.
pub fn tls_action(cert_exists: bool, key_exists: bool, inside_config_dir: bool) -> TlsAction {
    match (cert_exists, key_exists) {
        (true, true) => TlsAction::Nothing,
        (true, false) => TlsAction::KeyMissing,
        (false, true) => TlsAction::CertMissing,
        (false, false) if inside_config_dir => TlsAction::Create,
        (false, false) => TlsAction::Outside,
    }
}

/// True when `path` is strictly below `dir`, both absolute, with no `..` in `path`
/// (compared as written: set-permissions creates nothing outside config_directory).
pub fn inside(path: &Path, dir: &Path) -> bool {
    path.is_absolute()
        && dir.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && path != dir
        && path.starts_with(dir)
}

/// `(mode, uid, gid)` of a file or directory.
type Have = (u32, u32, u32);

/// What differs between a path's state and the wanted one, as lines to print (without
/// `petrel: `). `have` is None when the path is missing (it will be created); `owner`
/// None means "any owner" (unprivileged configurations); `name` turns ids into names.
pub fn changes(
    path: &Path,
    have: Option<Have>,
    mode: u32,
    owner: Option<(u32, u32)>,
    name: &dyn Fn(u32, u32) -> String,
) -> Vec<String> {
    let p = path.display();
    let Some((m, u, g)) = have else {
        return vec![match owner {
            Some((u, g)) => format!("created {p} (mode {mode:04o}, owner {})", name(u, g)),
            None => format!("created {p} (mode {mode:04o})"),
        }];
    };
    let mut out = Vec::new();
    if let Some((wu, wg)) = owner {
        if (u, g) != (wu, wg) {
            out.push(format!(
                "changed the owner of {p} from {} to {}",
                name(u, g),
                name(wu, wg)
            ));
        }
    }
    if m & 0o7777 != mode {
        out.push(format!(
            "changed the mode of {p} from {:04o} to {mode:04o}",
            m & 0o7777
        ));
    }
    out
}

/// `user:group` by name where the system knows them, else by number.
fn owner_name(uid: u32, gid: u32) -> String {
    let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    };
    let group = match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    };
    format!("{user}:{group}")
}

fn say(line: &str) {
    println!("petrel: {line}");
}

fn warn(line: &str) {
    eprintln!("petrel: warning: {line}");
}

fn fatal_at(path: &Path, e: impl std::fmt::Display) -> Fail {
    Fail::Fatal(format!("{}: {e}", path.display()))
}

/// The state of `path` (following symbolic links), None when it does not exist.
fn have(path: &Path) -> Res<Option<Have>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.mode(), m.uid(), m.gid()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fatal_at(path, e)),
    }
}

/// An absolute path from the parameter `param`.
fn abs_param(cfg: &Config, param: &str) -> Res<PathBuf> {
    let v = cfg.get(param);
    if !Path::new(&v).is_absolute() {
        return Err(Fail::Fatal(format!(
            "{param} = {v}: must be an absolute path"
        )));
    }
    Ok(PathBuf::from(v))
}

/// `petrel set-permissions`.
pub fn run(dir: &Path) -> Res {
    if !nix::unistd::geteuid().is_root() {
        return Err(Fail::Fatal("set-permissions must be run by root".into()));
    }
    let cfg = crate::load_config(dir)?;
    for w in cfg.warnings() {
        warn(w);
    }
    let queue = abs_param(&cfg, "queue_directory")?;
    let data = abs_param(&cfg, "data_directory")?;
    abs_param(&cfg, "daemon_directory")?;
    for a in accounts(&cfg) {
        ensure_account(&a)?;
    }
    let ids = crate::control::spool_ids(&cfg)?;
    make_spool(&queue, ids)?;
    if let Some(ids) = ids {
        give_queue_files(&queue, ids)?;
    }
    ensure_dir(&data, 0o700, ids.map(|i| (i.mail_uid, i.mail_gid)))?;
    set_postdrop(&cfg)?;
    set_password_file(&cfg)?;
    make_certificates(&cfg)?;
    Ok(())
}

fn group_exists(name: &str) -> Res<bool> {
    nix::unistd::Group::from_name(name)
        .map(|g| g.is_some())
        .map_err(|e| Fail::Fatal(format!("group {name}: {e}")))
}

fn user_exists(name: &str) -> Res<bool> {
    nix::unistd::User::from_name(name)
        .map(|u| u.is_some())
        .map_err(|e| Fail::Fatal(format!("user {name}: {e}")))
}

fn ensure_group(name: &str) -> Res {
    if group_exists(name)? {
        return Ok(());
    }
    let by_hand = format!("create the system group {name} by hand");
    if run_tool("groupadd", &["--system", name], &by_hand, || {
        group_exists(name)
    })? {
        say(&format!("created group {name}"));
    }
    Ok(())
}

fn ensure_account(a: &Account) -> Res {
    let (name, home) = match a {
        Account::Group(g) => return ensure_group(g),
        Account::User { name, home } => (name, home),
    };
    // An existing user, root's uid included, is left as it is.
    if user_exists(name)? {
        return Ok(());
    }
    ensure_group(name)?;
    let home = home.to_string_lossy();
    let by_hand = format!(
        "create the system user {name} by hand (group {name}, home {home}, shell {NOLOGIN}, \
         comment \"{GECOS}\")"
    );
    let args = [
        "--system",
        "--no-create-home",
        "--home-dir",
        &home,
        "--shell",
        NOLOGIN,
        "--gid",
        name,
        "--comment",
        GECOS,
        name,
    ];
    if run_tool("useradd", &args, &by_hand, || user_exists(name))? {
        say(&format!("created user {name}"));
    }
    Ok(())
}

/// Where `prog` is: on $PATH, else in /usr/sbin or /sbin (a root shell's PATH may
/// lack them, as `su` without `-` leaves it).
fn find_tool(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs `prog args`; true when it made the account, false when `made()` says someone
/// else did meanwhile. `useradd` and `groupadd` fail while another process holds the
/// lock on /etc/passwd or /etc/group: they are tried again for up to 10 s.
fn run_tool(prog: &str, args: &[&str], by_hand: &str, made: impl Fn() -> Res<bool>) -> Res<bool> {
    let Some(path) = find_tool(prog) else {
        return Err(Fail::Fatal(format!(
            "{prog}: command not found: {by_hand}, then run petrel set-permissions again"
        )));
    };
    let mut tries = 0;
    loop {
        let out = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fatal_at(&path, e))?;
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if made()? {
            return Ok(false);
        }
        tries += 1;
        if err.contains("lock") && tries < 50 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        return Err(Fail::Fatal(format!(
            "{prog} {} failed ({}): {err}",
            args.join(" "),
            out.status
        )));
    }
}

/// The owner `(uid, gid)` a spool directory's [`Owner`] stands for.
fn ids_of(ids: spool::Ids, o: Owner) -> (u32, u32) {
    match o {
        Owner::Mail => (ids.mail_uid, ids.mail_gid),
        Owner::MailDrop => (ids.mail_uid, ids.drop_gid),
        Owner::Root => (0, 0),
    }
}

/// `spool::create`, saying what it changes.
fn make_spool(queue: &Path, ids: Option<spool::Ids>) -> Res {
    let mut lines = changes(queue, have(queue)?, 0o755, ids.map(|_| (0, 0)), &owner_name);
    for d in Dir::ALL {
        let p = queue.join(d.name());
        let (mode, owner) = d.mode_owner();
        let owner = ids.map(|i| ids_of(i, owner));
        lines.extend(changes(&p, have(&p)?, mode, owner, &owner_name));
    }
    spool::create(queue, ids)
        .map_err(|e| Fail::Fatal(format!("queue_directory {}: {e}", queue.display())))?;
    for l in &lines {
        say(l);
    }
    Ok(())
}

/// Gives the regular files in the queue directories to mail_owner (modes are kept;
/// symbolic links are neither followed nor changed).
fn give_queue_files(queue: &Path, ids: spool::Ids) -> Res {
    let (uid, gid) = (ids.mail_uid, ids.mail_gid);
    // A copied spool's queue files go to mail_owner. maildrop/ files belong to their
    // submitters, and private/, public/ and pid/ hold sockets and master's files.
    for d in Dir::ALL.into_iter().filter(|d| d.holds_queue_files()) {
        let dir = queue.join(d.name());
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| fatal_at(&dir, e))? {
            let path = entry.map_err(|e| fatal_at(&dir, e))?.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Delivered or moved meanwhile (a running system).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fatal_at(&path, e)),
            };
            if !meta.file_type().is_file() || (meta.uid(), meta.gid()) == (uid, gid) {
                continue;
            }
            match std::os::unix::fs::lchown(&path, Some(uid), Some(gid)) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fatal_at(&path, e)),
            }
        }
        if n > 0 {
            let files = if n == 1 { "file" } else { "files" };
            say(&format!(
                "changed the owner of {n} {files} in {} to {}",
                dir.display(),
                owner_name(uid, gid)
            ));
        }
    }
    Ok(())
}

/// Makes the missing directories of `path` (and `path`) with mode 0755, saying so.
fn make_parents(path: &Path) -> Res {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    for p in missing.into_iter().rev() {
        std::fs::create_dir(p).map_err(|e| fatal_at(p, e))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fatal_at(p, e))?;
        say(&format!("created {} (mode 0755)", p.display()));
    }
    Ok(())
}

/// Makes `path` a directory with `mode` (and `owner`), creating it when missing.
fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Res {
    let before = have(path)?;
    if before.is_some() && !path.is_dir() {
        return Err(fatal_at(path, "not a directory"));
    }
    let lines = changes(path, before, mode, owner, &owner_name);
    if lines.is_empty() {
        return Ok(());
    }
    if before.is_none() {
        if let Some(parent) = path.parent() {
            make_parents(parent)?;
        }
        std::fs::create_dir(path).map_err(|e| fatal_at(path, e))?;
    }
    set_owner_mode(path, owner, mode)?;
    for l in &lines {
        say(l);
    }
    Ok(())
}

/// chown (first: it clears set-id bits), then chmod.
fn set_owner_mode(path: &Path, owner: Option<(u32, u32)>, mode: u32) -> Res {
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(path, Some(u), Some(g)).map_err(|e| fatal_at(path, e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fatal_at(path, e))
}

/// `daemon_directory/postdrop`: root:setgid_group, 02755.
fn set_postdrop(cfg: &Config) -> Res {
    let prog = abs_param(cfg, "daemon_directory")?.join("postdrop");
    let group = cfg.get("setgid_group");
    let gid = match nix::unistd::Group::from_name(&group) {
        Ok(Some(g)) => g.gid.as_raw(),
        Ok(None) => return Err(Fail::Fatal(format!("setgid_group {group}: no such group"))),
        Err(e) => return Err(Fail::Fatal(format!("setgid_group {group}: {e}"))),
    };
    let Some((mode, uid, have_gid)) = have(&prog)? else {
        warn(&format!(
            "{}: no such file; postdrop is not set-group-id {group} (local submission \
             by other users will not work)",
            prog.display()
        ));
        return Ok(());
    };
    if gid == 0 {
        // A set-group-id root program would give its users root's group.
        warn(&format!(
            "setgid_group {group} is root's group: {} is not made set-group-id",
            prog.display()
        ));
        return Ok(());
    }
    if (uid, have_gid, mode & 0o7777) != (0, gid, 0o2755) {
        set_owner_mode(&prog, Some((0, gid)), 0o2755)?;
        say(&format!("set-group-id {group} on {}", prog.display()));
    }
    Ok(())
}

/// `auth_password_file`: root:auth_owner's group, 0640; an empty one when it is missing.
fn set_password_file(cfg: &Config) -> Res {
    let file = cfg.get("auth_password_file");
    if file.is_empty() {
        return Ok(());
    }
    let file = PathBuf::from(file);
    let (_, gid) = petrel_daemon::owner(cfg, "auth_owner")?;
    let owner = Some((0, gid.as_raw()));
    let Some(before) = have(&file)? else {
        // No accounts yet: an empty file, so authd answers "no" instead of failing.
        if inside(&file, Path::new(&cfg.get("config_directory"))) {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .map_err(|e| fatal_at(&file, e))?;
            set_owner_mode(&file, owner, 0o640)?;
            say(&format!(
                "created {} (mode 0640, owner root:{}): no accounts yet, add them with petrel user add NAME",
                file.display(),
                cfg.get("auth_owner")
            ));
        }
        return Ok(());
    };
    let lines = changes(&file, Some(before), 0o640, owner, &owner_name);
    if !lines.is_empty() {
        set_owner_mode(&file, owner, 0o640)?;
    }
    for l in &lines {
        say(l);
    }
    Ok(())
}

/// Self-signed certificates where the TLS parameters name files that are missing.
fn make_certificates(cfg: &Config) -> Res {
    let config_dir = PathBuf::from(cfg.get("config_directory"));
    let mut seen: Vec<(String, String)> = Vec::new();
    for (cert_param, key_param) in TLS_PAIRS {
        let (cert, key) = (cfg.get(cert_param), cfg.get(key_param));
        if cert.is_empty() || seen.contains(&(cert.clone(), key.clone())) {
            continue;
        }
        seen.push((cert.clone(), key.clone()));
        if key.is_empty() {
            warn(&format!(
                "{key_param} is empty while {cert_param} = {cert}: no certificate made"
            ));
            continue;
        }
        let (cert_p, key_p) = (PathBuf::from(&cert), PathBuf::from(&key));
        let (cert_exists, key_exists) = (have(&cert_p)?.is_some(), have(&key_p)?.is_some());
        let inside_dir = inside(&cert_p, &config_dir) && inside(&key_p, &config_dir);
        match tls_action(cert_exists, key_exists, inside_dir) {
            TlsAction::Nothing => {
                if have(&key_p)?.is_some_and(|(m, _, _)| m & 0o004 != 0) {
                    warn(&format!(
                        "{key_param} {key}: the private key is readable by every user"
                    ));
                }
            }
            TlsAction::KeyMissing => warn(&format!(
                "{key_param} {key}: no such file ({cert_param} {cert} exists): no \
                 certificate made"
            )),
            TlsAction::CertMissing => warn(&format!(
                "{cert_param} {cert}: no such file ({key_param} {key} exists): no \
                 certificate made"
            )),
            TlsAction::Outside => warn(&format!(
                "{cert_param} {cert} and {key_param} {key}: no such files, and they are \
                 not inside config_directory {}: no certificate made",
                config_dir.display()
            )),
            TlsAction::Create => self_signed(cfg, &cert_p, &key_p)?,
        }
    }
    Ok(())
}

fn self_signed(cfg: &Config, cert: &Path, key: &Path) -> Res {
    for p in [cert, key] {
        if let Some(parent) = p.parent() {
            make_parents(parent)?;
        }
    }
    let mut host = cfg.get("myhostname");
    if let Err(e) = petrel_tls::self_signed(&host, cert, key) {
        // A host name no certificate can carry (an underscore, say) must not fail the
        // package's installation: STARTTLS with a self-signed certificate is opportunistic
        // and its name is not checked. The administrator hears how to do better.
        warn(&format!(
            "{e}: made it for localhost instead; set myhostname, remove {} and {} and run              petrel set-permissions again, or install your own certificate there",
            cert.display(),
            key.display()
        ));
        host = "localhost".to_string();
        petrel_tls::self_signed(&host, cert, key)
            .map_err(|e| Fail::Fatal(format!("{}: {e}", cert.display())))?;
    }
    if cert != key {
        set_owner_mode(cert, Some((0, 0)), 0o644)?;
    }
    set_owner_mode(key, Some((0, 0)), 0o600)?;
    if cert == key {
        say(&format!(
            "made a self-signed certificate for {host} in {}",
            cert.display()
        ));
    } else {
        say(&format!(
            "made a self-signed certificate for {host} in {}, its key in {}",
            cert.display(),
            key.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/petrel/petrel.conf")).expect("parse")
    }

    fn user(name: &str, home: &str) -> Account {
        Account::User {
            name: name.into(),
            home: home.into(),
        }
    }

    #[test]
    fn the_default_configuration_needs_one_group_and_three_users() {
        assert_eq!(
            accounts(&cfg("")),
            vec![
                Account::Group("petrel-drop".into()),
                user("petrel", "/var/spool/petrel"),
                user("petrel-auth", "/nonexistent"),
                user("petrel-vmail", "/var/vmail"),
            ]
        );
    }

    #[test]
    fn root_and_repeated_names_are_left_out() {
        let c = cfg(
            "mail_owner = root\nsetgid_group = root\nauth_owner = mail\n\
             virtual_mail_owner = mail\nqueue_directory = /q\nvirtual_mailbox_base = /v\n",
        );
        assert_eq!(accounts(&c), vec![user("mail", "/nonexistent")]);
        let c = cfg(
            "queue_directory = /srv/q\nvirtual_mailbox_base = /srv/mail\n\
             setgid_group = maildrop\nmail_owner = m\nauth_owner = a\nvirtual_mail_owner = v\n",
        );
        assert_eq!(
            accounts(&c),
            vec![
                Account::Group("maildrop".into()),
                user("m", "/srv/q"),
                user("a", "/nonexistent"),
                user("v", "/srv/mail"),
            ]
        );
    }

    #[test]
    fn tls_pairs_are_made_only_when_both_are_missing_and_inside() {
        use TlsAction::*;
        // (cert exists, key exists, inside config_directory) → action
        let table = [
            ((true, true, true), Nothing),
            ((true, true, false), Nothing),
            ((true, false, true), KeyMissing),
            ((true, false, false), KeyMissing),
            ((false, true, true), CertMissing),
            ((false, true, false), CertMissing),
            ((false, false, true), Create),
            ((false, false, false), Outside),
        ];
        for ((c, k, i), want) in table {
            assert_eq!(tls_action(c, k, i), want, "cert {c} key {k} inside {i}");
        }
    }

    #[test]
    fn inside_is_strictly_below_and_lexical() {
        let etc = Path::new("/etc/petrel");
        assert!(inside(Path::new("/etc/petrel/tls/cert.pem"), etc));
        assert!(inside(Path::new("/etc/petrel/key.pem"), etc));
        assert!(!inside(Path::new("/etc/petrel"), etc));
        assert!(!inside(Path::new("/etc/petrel-other/cert.pem"), etc));
        assert!(!inside(Path::new("/etc/petrel/../ssl/cert.pem"), etc));
        assert!(!inside(Path::new("tls/cert.pem"), etc));
        assert!(!inside(Path::new("/etc/ssl/certs/x.pem"), etc));
    }

    #[test]
    fn changes_say_what_differs() {
        let name = |u: u32, g: u32| format!("u{u}:g{g}");
        let p = Path::new("/q/maildrop");
        assert_eq!(
            changes(p, None, 0o1730, Some((5, 6)), &name),
            vec!["created /q/maildrop (mode 1730, owner u5:g6)"]
        );
        assert_eq!(
            changes(p, None, 0o700, None, &name),
            vec!["created /q/maildrop (mode 0700)"]
        );
        // The file-type bits of st_mode do not count.
        assert!(changes(p, Some((0o41730, 5, 6)), 0o1730, Some((5, 6)), &name).is_empty());
        assert!(changes(p, Some((0o40700, 0, 0)), 0o700, None, &name).is_empty());
        assert_eq!(
            changes(p, Some((0o40777, 0, 0)), 0o1730, Some((5, 6)), &name),
            vec![
                "changed the owner of /q/maildrop from u0:g0 to u5:g6",
                "changed the mode of /q/maildrop from 0777 to 1730",
            ]
        );
    }

    #[test]
    fn only_root_may_run_it() {
        if nix::unistd::geteuid().is_root() {
            return; // the integration test runs it as another user
        }
        match run(Path::new("/nonexistent")) {
            Err(Fail::Fatal(m)) => assert_eq!(m, "set-permissions must be run by root"),
            other => panic!("{other:?}"),
        }
    }
}
