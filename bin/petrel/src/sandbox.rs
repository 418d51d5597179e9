//! `petrel sandbox DIR`: a self-contained Petrel for the invoking user.
//!
//! ```text
//! DIR/etc/petrel.conf, services.conf, aliases, users
//! DIR/spool/            the queue
//! DIR/log/maillog       the log
//! DIR/data/ DIR/mail/   data_directory, mail_spool_directory
//! DIR/home/demo/Maildir/
//! ```
//!
//! Services whose program is not in `daemon_directory` (the directory of this `petrel`)
//! are left out, so running the command again with `--force` after building more
//! programs brings them in.
//!
//! Passwords in a sandbox are `{SHA512-CRYPT}` (`auth_password_scheme`), not the default
//! `{ARGON2ID}`: a login costs a millisecond instead of 64 MiB and a good part of a
//! second, which keeps tests quick. authd runs as the invoking user (`auth_owner`).

use crate::users;
use crate::{Fail, Res};
use petrel_queue::spool;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who the sandbox runs as.
#[derive(Debug, Clone)]
pub struct Who {
    /// User name (mail_owner).
    pub user: String,
    /// Primary group name (setgid_group).
    pub group: String,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

impl Who {
    /// The invoking user.
    pub fn me() -> Result<Who, String> {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .ok_or_else(|| {
                format!("uid {uid} has no user name (the sandbox needs one for mail_owner)")
            })?;
        let group = nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .ok_or_else(|| {
                format!("gid {gid} has no group name (the sandbox needs one for setgid_group)")
            })?;
        Ok(Who {
            user: user.name,
            group: group.name,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
        })
    }
}

/// What was created.
#[derive(Debug)]
pub struct Created {
    /// The sandbox directory (absolute).
    pub dir: PathBuf,
    /// The directory of the programs.
    pub bin: PathBuf,
    /// demo's password.
    pub password: String,
    /// The ports with a listener, as (what, port).
    pub ports: Vec<(&'static str, u32)>,
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn unsafe_in_config(p: &Path) -> Option<char> {
    p.to_string_lossy()
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, ',' | '$' | ':' | '#'))
}

fn petrel_conf(dir: &Path, bin: &Path, who: &Who, base: u32) -> String {
    let d = dir.display();
    let b = bin.display();
    format!(
        "\
# Petrel sandbox configuration, written by `petrel sandbox`.
#
# This is a SANDBOX: everything lives under {d}, every process runs as
# {user}, and the listeners are on 127.0.0.1 only. It is for trying Petrel out and
# for tests, not for a real mail server. See petrel.conf(5) for every parameter.

queue_directory = {d}/spool
daemon_directory = {b}
command_directory = {b}
data_directory = {d}/data
mail_owner = {user}
setgid_group = {group}

myhostname = mail.sandbox.test
mydomain = sandbox.test
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8

maillog_file = {d}/log/maillog
home_mailbox = Maildir/
mail_spool_directory = {d}/mail
alias_maps = {d}/etc/aliases
user_database = passwd-file:{d}/etc/users

# authd checks passwords against the same file, and runs as {user} like the rest.
# SHA512-CRYPT keeps logins quick for tests; a real server keeps the ARGON2ID default.
auth_password_file = {d}/etc/users
auth_password_scheme = SHA512-CRYPT
auth_owner = {user}

# A self-signed certificate for mail.sandbox.test, made by `petrel sandbox`: port 25
# offers STARTTLS, submission requires it, smtps speaks TLS from the start.
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/etc/tls/cert.pem
smtpd_tls_key_file = {d}/etc/tls/key.pem

# A sandbox never asks the machine's resolver; a test that needs DNS answers runs its
# own server here.
dns_servers = 127.0.0.1:{dns}
",
        user = who.user,
        group = who.group,
        dns = base + 53,
    )
}

/// services.conf for the programs found in `bin`; also returns the ports listened on.
fn services_conf(bin: &Path, base: u32) -> (String, Vec<(&'static str, u32)>) {
    let has = |p: &str| executable(&bin.join(p));
    let mut s = String::from(
        "\
# Petrel sandbox services, written by `petrel sandbox`. See services.conf(5).
#
# service          type  private unpriv chroot wakeup maxproc command + args
pickup             unix  n       -      n      60     1       pickup
cleanup            unix  -       -      n      -      1       cleanup
qmgr               unix  n       -      n      300    1       qmgr
local              unix  -       n      n      -      4       local
",
    );
    let mut ports = Vec::new();
    if has("authd") {
        s.push_str("auth               unix  -       -      n      -      1       authd\n");
    }
    if has("smtp") {
        // One process serves every qmgr connection (a thread each) and shares its
        // connection cache; `lmtp` is the same program speaking LMTP.
        s.push_str("smtp               unix  -       -      n      -      1       smtp\n");
        s.push_str("lmtp               unix  -       -      n      -      1       smtp\n");
    }
    // `unpriv`: `-` for a service that becomes mail_owner, `n` for one that starts as
    // root and gives up what it must itself (imapd, which starts sessions as users).
    let line_as = |s: &mut String, port: u32, unpriv: &str, cmd: &str| {
        let name = format!("127.0.0.1:{port}");
        let _ = writeln!(
            s,
            "{name:<18} inet  n       {unpriv}      n      -      1       {cmd}"
        );
    };
    let line = |s: &mut String, port: u32, cmd: &str| line_as(s, port, "-", cmd);
    if has("smtpd") {
        s.push_str("\n# SMTP\n");
        line(&mut s, base + 25, "smtpd");
        ports.push(("SMTP", base + 25));
        // Submission and smtps: clients log in (AUTH over TLS, checked by authd) and
        // may then relay; nobody else may.
        let submission = "smtpd -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_relay_restrictions=permit_sasl_authenticated,reject";
        let smtps = "smtpd -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes -o smtpd_relay_restrictions=permit_sasl_authenticated,reject";
        s.push_str("# Submission (STARTTLS and AUTH required)\n");
        line(&mut s, base + 587, submission);
        ports.push(("submission", base + 587));
        s.push_str("# SMTPS (implicit TLS, AUTH required)\n");
        line(&mut s, base + 465, smtps);
        ports.push(("SMTPS", base + 465));
    }
    if has("imapd") {
        s.push_str("\n# IMAP (STARTTLS; LOGIN only after it) and IMAPS (implicit TLS)\n");
        line_as(&mut s, base + 143, "n", "imapd");
        ports.push(("IMAP", base + 143));
        line_as(
            &mut s,
            base + 993,
            "n",
            "imapd -o imapd_tls_wrappermode=yes",
        );
        ports.push(("IMAPS", base + 993));
    }
    if has("pop3d") {
        s.push_str("\n# POP3 (STLS; USER/PASS/AUTH only after it) and POP3S (implicit TLS)\n");
        line_as(&mut s, base + 110, "n", "pop3d");
        ports.push(("POP3", base + 110));
        line_as(
            &mut s,
            base + 995,
            "n",
            "pop3d -o pop3d_tls_wrappermode=yes",
        );
        ports.push(("POP3S", base + 995));
    }
    (s, ports)
}

const ALIASES: &str = "\
# Aliases for the Petrel sandbox, in the /etc/aliases format. See aliases(5).
postmaster: demo
root: demo
MAILER-DAEMON: postmaster
";

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Creates the sandbox under `dir` for `who`, with the programs in `bin`.
pub fn create(
    dir: &Path,
    port_base: u16,
    force: bool,
    bin: &Path,
    who: &Who,
) -> Result<Created, String> {
    let base = u32::from(port_base);
    if base + 995 > 65535 {
        return Err(format!(
            "--port-base {port_base} is too high: the ports go up to N+995"
        ));
    }
    mkdir(dir)?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for p in [&dir, bin] {
        if let Some(c) = unsafe_in_config(p) {
            return Err(format!(
                "{}: the path contains {c:?}, which petrel.conf cannot hold; pick another directory",
                p.display()
            ));
        }
    }
    let etc = dir.join("etc");
    let conf = etc.join(petrel_config::MAIN_FILE);
    if conf.exists() && !force {
        return Err(format!(
            "{} already exists: this is a sandbox already (use --force to overwrite it)",
            conf.display()
        ));
    }
    for sub in ["etc", "log", "data", "mail"] {
        mkdir(&dir.join(sub))?;
    }
    let home = dir.join("home").join("demo");
    users::make_maildir(&home)?;
    spool::create(&dir.join("spool"), None).map_err(|e| format!("{}/spool: {e}", dir.display()))?;

    write_file(&conf, &petrel_conf(&dir, bin, who, base), 0o644)?;
    let (services, ports) = services_conf(bin, base);
    write_file(&etc.join(petrel_config::SERVICES_FILE), &services, 0o644)?;
    write_file(&etc.join("aliases"), ALIASES, 0o644)?;
    mkdir(&etc.join("tls"))?;
    petrel_tls::self_signed(
        "mail.sandbox.test",
        &etc.join("tls/cert.pem"),
        &etc.join("tls/key.pem"),
    )?;
    let password = users::generate_password(16)?;
    let users = format!(
        "demo:{}:{}:{}::{}::\n",
        users::hash_password(petrel_auth::Scheme::Sha512Crypt, &password)?,
        who.uid,
        who.gid,
        home.display()
    );
    write_file(&etc.join("users"), &users, 0o640)?;
    Ok(Created {
        dir,
        bin: bin.to_path_buf(),
        password,
        ports,
    })
}

/// `petrel sandbox DIR [--port-base N] [--force]`.
pub fn run(dir: &Path, port_base: u16, force: bool) -> Res {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let bin = exe
        .parent()
        .ok_or_else(|| Fail::Fatal("cannot find the directory of this program".into()))?;
    let who = Who::me()?;
    let c = create(dir, port_base, force, bin, &who)?;
    let d = c.dir.display();
    let ports: Vec<String> = c.ports.iter().map(|(w, p)| format!("{w} {p}")).collect();
    println!("petrel: created a sandbox in {d}");
    println!();
    println!("  configuration:  {d}/etc");
    println!("  demo password: {}", c.password);
    println!("  (account demo, in {d}/etc/users; add more with petrel -c {d}/etc user add NAME)");
    println!();
    println!("  start it:       petrel -c {d}/etc start");
    println!(
        "  send mail:      {}/sendmail -C {d}/etc demo@localhost < message",
        c.bin.display()
    );
    println!("  mail lands in:  {d}/home/demo/Maildir/new/");
    println!("  log:            {d}/log/maillog");
    println!("  queue:          petrel -c {d}/etc queue list");
    println!("  stop it:        petrel -c {d}/etc stop");
    if ports.is_empty() {
        println!("  ports:          none yet (no smtpd, imapd or pop3d next to petrel)");
    } else {
        println!("  ports:          127.0.0.1: {}", ports.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Who {
        Who::me().expect("the test user has a name")
    }

    #[test]
    fn sandbox_config_loads_validates_and_its_spool_is_clean() {
        let t = tempfile::tempdir().expect("tempdir");
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for p in ["smtpd", "pop3d", "authd"] {
            write_file(&bin.join(p), "#!/bin/sh\n", 0o755).expect("write");
        }
        write_file(&bin.join("imapd"), "not executable", 0o644).expect("write");
        let dir = t.path().join("sb");
        let c = create(&dir, 20000, false, &bin, &me()).expect("create");
        let etc = c.dir.join("etc");

        let cfg = petrel_config::Config::load(&etc).expect("petrel.conf loads");
        cfg.validate().expect("petrel.conf validates");
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
        assert_eq!(
            cfg.get("queue_directory"),
            format!("{}/spool", c.dir.display())
        );
        assert_eq!(cfg.get("daemon_directory"), bin.display().to_string());
        assert_eq!(
            cfg.get_list("mydestination"),
            vec!["mail.sandbox.test", "localhost.sandbox.test", "localhost"]
        );
        assert_eq!(cfg.get("dns_servers"), "127.0.0.1:20053");
        assert_eq!(cfg.get("mail_owner"), me().user);
        assert!(petrel_daemon::running_as_mail_owner(&cfg));

        let services =
            petrel_config::services::load(&etc.join("services.conf")).expect("services.conf loads");
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[..4], ["pickup", "cleanup", "qmgr", "local"]);
        assert!(
            names.contains(&"127.0.0.1:20025"),
            "smtpd is there: {names:?}"
        );
        assert!(
            names.contains(&"127.0.0.1:20110") && names.contains(&"127.0.0.1:20995"),
            "pop3d and pop3s are there: {names:?}"
        );
        assert!(
            !names.contains(&"127.0.0.1:20143"),
            "imapd is not executable: {names:?}"
        );
        assert!(
            names.contains(&"127.0.0.1:20465") && names.contains(&"127.0.0.1:20587"),
            "smtps and submission: {names:?}"
        );
        assert!(
            petrel_tls::ServerConfig::load(&etc.join("tls/cert.pem"), &etc.join("tls/key.pem"))
                .is_ok(),
            "the sandbox certificate loads"
        );
        assert!(c.ports.contains(&("SMTP", 20025)));
        let auth = services
            .iter()
            .find(|s| s.name == "auth")
            .expect("an auth service when authd is there");
        assert!(auth.private && auth.unpriv && !auth.chroot, "{auth:?}");
        assert_eq!(auth.command, "authd");
        assert_eq!(
            cfg.get("auth_password_file"),
            format!("{}/etc/users", c.dir.display())
        );
        assert_eq!(cfg.get("auth_owner"), me().user);
        assert_eq!(cfg.get("auth_password_scheme"), "SHA512-CRYPT");

        assert!(spool::check(&c.dir.join("spool"), None).is_empty());
        for d in [
            "log",
            "data",
            "mail",
            "home/demo/Maildir/tmp",
            "home/demo/Maildir/new",
            "home/demo/Maildir/cur",
        ] {
            assert!(c.dir.join(d).is_dir(), "{d}");
        }
        let users = std::fs::read_to_string(etc.join("users")).expect("users");
        let who = me();
        assert!(users.starts_with("demo:{SHA512-CRYPT}$6$"), "{users}");
        let hash = users.split(':').nth(1).expect("password field");
        assert_eq!(petrel_auth::verify(hash, &c.password), Ok(true));
        assert!(users.ends_with(&format!(
            ":{}:{}::{}/home/demo::\n",
            who.uid,
            who.gid,
            c.dir.display()
        )));
        assert_eq!(c.password.len(), 16);
        let db = crate::users::read_db(&etc.join("users")).expect("the maps parser reads it");
        assert_eq!(db.len(), 1);
        assert_eq!(
            db[0].home.as_deref(),
            Some(c.dir.join("home/demo").as_path())
        );
        let mode = std::fs::metadata(etc.join("users"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        let aliases = std::fs::read_to_string(etc.join("aliases")).expect("aliases");
        assert!(aliases.contains("MAILER-DAEMON: postmaster"));

        let again = create(&dir, 20000, false, &bin, &me()).expect_err("refused");
        assert!(again.contains("--force"), "{again}");
        create(&dir, 20000, true, &bin, &me()).expect("--force overwrites");
        assert!(
            create(&t.path().join("x"), 65000, false, &bin, &me()).is_err(),
            "ports past 65535"
        );
    }
}
