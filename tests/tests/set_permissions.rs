//! `petrel set-permissions` as root on a configuration laid out like an installed system
//! (in a temporary directory, with user and group names of its own so that it never
//! meets the tests that use petrel, petrel-drop and petrel-auth), and `petrel user add`
//! as root on that system. Skips with a printed reason when not root.
#![allow(clippy::unwrap_used)]

use petrel_tests::{bin_dir, is_root, run_with_input};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const OWN: &str = "petrel-sp-own";
const DROP: &str = "petrel-sp-drop";
const AUTH: &str = "petrel-sp-auth";
const VM: &str = "petrel-sp-vm";

/// useradd, userdel and friends fail while another process holds the lock on
/// /etc/passwd (other root tests create users): try again.
fn run_retry(prog: &str, args: &[&str]) -> Output {
    for _ in 0..50 {
        let out = Command::new(prog).args(args).output().unwrap();
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("lock") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{prog} {args:?} kept failing on a lock");
}

fn user(name: &str) -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(name).unwrap()
}

fn group(name: &str) -> Option<nix::unistd::Group> {
    nix::unistd::Group::from_name(name).unwrap()
}

/// Removes this test's users and groups (left over from an earlier run, or at the end).
fn remove_accounts() {
    for u in [OWN, AUTH, VM] {
        if user(u).is_some() {
            run_retry("userdel", &[u]);
        }
    }
    for g in [OWN, AUTH, VM, DROP] {
        if group(g).is_some() {
            run_retry("groupdel", &[g]);
        }
    }
}

/// Removes the accounts even when an assertion fails.
struct Accounts;

impl Drop for Accounts {
    fn drop(&mut self) {
        remove_accounts();
    }
}

fn petrel(etc: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("petrel"))
        .arg("-c")
        .arg(etc)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (mode & 07777, uid, gid), not following a symbolic link.
fn state(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn set_permissions_makes_users_spool_files_and_a_certificate_and_user_add_uses_vmail() {
    if !is_root() {
        println!("skipped: needs root (creates system users and groups, changes owners)");
        return;
    }
    remove_accounts();
    let _cleanup = Accounts;

    let tmp = tempfile::Builder::new()
        .prefix("petrel-sp-")
        .tempdir()
        .unwrap();
    // Everyone must be able to pass through (mail_owner's daemons, vmail's sessions).
    chmod(tmp.path(), 0o755);
    let t = tmp.path();
    let etc = t.join("etc");
    let libexec = t.join("libexec");
    for d in [&etc, &libexec] {
        std::fs::create_dir(d).unwrap();
        chmod(d, 0o755);
    }
    let spool = t.join("spool");
    let data = t.join("data");
    let vmail = t.join("vmail");
    let postdrop = libexec.join("postdrop");
    std::fs::copy(bin_dir().join("postdrop"), &postdrop).unwrap();
    chmod(&postdrop, 0o755);
    let users = etc.join("users");
    std::fs::write(&users, "").unwrap();
    chmod(&users, 0o600);
    let conf = format!(
        "config_directory = {etc}\n\
         queue_directory = {spool}\n\
         data_directory = {data}\n\
         daemon_directory = {libexec}\n\
         mail_owner = {OWN}\n\
         setgid_group = {DROP}\n\
         auth_owner = {AUTH}\n\
         virtual_mail_owner = {VM}\n\
         virtual_mailbox_base = {vmail}\n\
         myhostname = mail.sp.test\n\
         user_database = passwd-file:$config_directory/users\n\
         auth_password_scheme = SHA512-CRYPT\n\
         smtpd_tls_cert_file = $config_directory/tls/cert.pem\n\
         smtpd_tls_key_file = $config_directory/tls/key.pem\n",
        etc = etc.display(),
        spool = spool.display(),
        data = data.display(),
        libexec = libexec.display(),
        vmail = vmail.display(),
    );
    std::fs::write(etc.join("petrel.conf"), &conf).unwrap();

    // The first run makes everything.
    let out = petrel(&etc, &["set-permissions"]);
    let stdout = text(&out.stdout);
    println!("first run:\n{stdout}{}", text(&out.stderr));
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no warnings");
    let cert = etc.join("tls/cert.pem");
    let key = etc.join("tls/key.pem");
    for line in [
        format!("petrel: created group {DROP}"),
        format!("petrel: created group {OWN}"),
        format!("petrel: created user {OWN}"),
        format!("petrel: created user {AUTH}"),
        format!("petrel: created user {VM}"),
        format!("petrel: set-group-id {DROP} on {}", postdrop.display()),
        format!(
            "petrel: made a self-signed certificate for mail.sp.test in {}, its key in {}",
            cert.display(),
            key.display()
        ),
        format!(
            "petrel: created {} (mode 0700, owner {OWN}:{OWN})",
            data.display()
        ),
        format!(
            "petrel: created {}/maildrop (mode 1730, owner {OWN}:{DROP})",
            spool.display()
        ),
        format!(
            "petrel: changed the owner of {} from root:root to root:{AUTH}",
            users.display()
        ),
        format!(
            "petrel: changed the mode of {} from 0600 to 0640",
            users.display()
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }

    // The users and groups.
    let own = user(OWN).expect("mail_owner made");
    let auth = user(AUTH).expect("auth_owner made");
    let vm = user(VM).expect("virtual_mail_owner made");
    let drop = group(DROP).expect("setgid_group made");
    for (u, home) in [
        (&own, spool.clone()),
        (&auth, PathBuf::from("/nonexistent")),
        (&vm, vmail.clone()),
    ] {
        assert_eq!(
            u.gecos.to_str().unwrap(),
            "Petrel mail system",
            "{}",
            u.name
        );
        assert_eq!(u.shell, Path::new("/usr/sbin/nologin"), "{}", u.name);
        assert_eq!(u.dir, home, "{}", u.name);
        assert_ne!(u.uid.as_raw(), 0);
        let g = nix::unistd::Group::from_gid(u.gid).unwrap().unwrap();
        assert_eq!(g.name, u.name, "a group of its own name");
    }
    assert!(
        !vmail.exists(),
        "set-permissions does not make virtual_mailbox_base"
    );

    // The spool, as the queue's own rules want it.
    let ids = petrel_queue::spool::Ids {
        mail_uid: own.uid.as_raw(),
        mail_gid: own.gid.as_raw(),
        drop_gid: drop.gid.as_raw(),
    };
    let problems = petrel_queue::spool::check(&spool, Some(ids));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        state(&spool.join("maildrop")),
        (0o1730, own.uid.as_raw(), drop.gid.as_raw())
    );
    assert_eq!(state(&spool), (0o755, 0, 0));
    assert_eq!(
        state(&data),
        (0o700, own.uid.as_raw(), own.gid.as_raw()),
        "data_directory"
    );
    assert_eq!(state(&postdrop), (0o2755, 0, drop.gid.as_raw()), "postdrop");
    assert_eq!(state(&users), (0o640, 0, auth.gid.as_raw()), "users file");
    assert_eq!(state(&key), (0o600, 0, 0), "key");
    assert_eq!(state(&cert), (0o644, 0, 0), "certificate");
    assert_eq!(state(&etc.join("tls")), (0o755, 0, 0));
    petrel_tls::ServerConfig::load(&cert, &key).expect("the daemons accept the certificate");

    // A second run finds nothing to do.
    let out = petrel(&etc, &["set-permissions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        (String::new(), String::new()),
        "a second run prints nothing"
    );

    // Files of a copied spool are given to mail_owner (mode kept); a symbolic link is
    // neither followed nor changed, and maildrop/ files stay their submitters'.
    let queued = spool.join("deferred/0NQ3C8Y1B2K4ZPX");
    std::fs::write(&queued, "x").unwrap();
    chmod(&queued, 0o700);
    let outside = t.join("outside");
    std::fs::write(&outside, "root's").unwrap();
    std::os::unix::fs::symlink(&outside, spool.join("deferred/link")).unwrap();
    let submitted = spool.join("maildrop/0NQ3C8Y1B2K4ZPY");
    std::fs::write(&submitted, "y").unwrap();
    chmod(&postdrop, 0o755); // as a reinstall would leave it
    let out = petrel(&etc, &["set-permissions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = format!(
        "petrel: changed the owner of 1 file in {}/deferred to {OWN}:{OWN}\n\
         petrel: set-group-id {DROP} on {}\n",
        spool.display(),
        postdrop.display()
    );
    assert_eq!(text(&out.stdout), want);
    assert_eq!(state(&queued), (0o700, own.uid.as_raw(), own.gid.as_raw()));
    assert_eq!(state(&outside).1, 0, "the link's target is not given away");
    assert_eq!(state(&spool.join("deferred/link")).1, 0);
    assert_eq!(state(&submitted).1, 0, "maildrop/ is left alone");
    assert_eq!(state(&postdrop), (0o2755, 0, drop.gid.as_raw()));

    // TLS files outside config_directory are never made: a warning names them.
    let mut conf2 = conf.clone();
    conf2.push_str(&format!(
        "pop3d_tls_cert_file = {0}/elsewhere/cert.pem\npop3d_tls_key_file = {0}/elsewhere/key.pem\n",
        t.display()
    ));
    std::fs::write(etc.join("petrel.conf"), &conf2).unwrap();
    let out = petrel(&etc, &["set-permissions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("petrel: warning: pop3d_tls_cert_file ")
            && err.contains("not inside config_directory"),
        "{err}"
    );
    assert!(!t.join("elsewhere").exists());
    std::fs::write(etc.join("petrel.conf"), &conf).unwrap();

    // `petrel user add` as root: the account is vmail's, under virtual_mailbox_base.
    let mut c = Command::new(bin_dir().join("petrel"));
    c.arg("-c").arg(&etc).args(["user", "add", "alice"]);
    let out = run_with_input(c, b"s3cret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let home = vmail.join("alice");
    assert_eq!(
        text(&out.stdout),
        format!("petrel: added user alice (home {})\n", home.display())
    );
    let line = std::fs::read_to_string(&users).unwrap();
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    assert_eq!(fields[0], "alice");
    assert_eq!(fields[2], vm.uid.to_string(), "{line}");
    assert_eq!(fields[3], vm.gid.to_string(), "{line}");
    assert_eq!(fields[5], home.to_str().unwrap(), "{line}");
    let (vu, vg) = (vm.uid.as_raw(), vm.gid.as_raw());
    assert_eq!(state(&vmail), (0o750, vu, vg), "virtual_mailbox_base");
    for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
        assert_eq!(state(&home.join(d)), (0o700, vu, vg), "{d}");
    }
    assert_eq!(
        state(&users),
        (0o640, 0, auth.gid.as_raw()),
        "users file kept"
    );

    // Without virtual_mail_owner the command stops, saying what to do.
    let mut conf3 = conf.clone();
    conf3.push_str("virtual_mail_owner = petrel-sp-nobody\n");
    std::fs::write(etc.join("petrel.conf"), &conf3).unwrap();
    let mut c = Command::new(bin_dir().join("petrel"));
    c.arg("-c").arg(&etc).args(["user", "add", "bob"]);
    let out = run_with_input(c, b"s3cret\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "petrel: fatal: virtual_mail_owner petrel-sp-nobody: no such user \
         (run petrel set-permissions)\n"
    );

    // A host name no certificate can carry does not fail the command: the certificate is
    // made for localhost, with a warning that says what to do.
    std::fs::remove_file(etc.join("tls/cert.pem")).unwrap();
    std::fs::remove_file(etc.join("tls/key.pem")).unwrap();
    let mut conf4 = conf.clone();
    conf4.push_str("myhostname = bad_name.sp.test\n");
    std::fs::write(etc.join("petrel.conf"), &conf4).unwrap();
    let out = petrel(&etc, &["set-permissions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("made it for localhost instead; set myhostname"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("made a self-signed certificate for localhost"),
        "{}",
        text(&out.stdout)
    );
    petrel_tls::ServerConfig::load(&etc.join("tls/cert.pem"), &etc.join("tls/key.pem")).unwrap();
}

#[test]
fn set_permissions_is_refused_to_other_users() {
    let petrel = bin_dir().join("petrel");
    let out = if is_root() {
        // As nobody, with no supplementary groups.
        let Some(setpriv) = petrel_tests::installed(&["/usr/bin/setpriv", "/bin/setpriv"]) else {
            println!("skipped: setpriv is not installed");
            return;
        };
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&petrel)
            .args(["-c", "/nonexistent", "set-permissions"])
            .output()
            .unwrap()
    } else {
        Command::new(&petrel)
            .args(["-c", "/nonexistent", "set-permissions"])
            .output()
            .unwrap()
    };
    assert_eq!(
        text(&out.stderr),
        "petrel: fatal: set-permissions must be run by root\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
}
