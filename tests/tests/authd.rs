//! authd end to end: the real authd under master in a sandbox, asked over `private/auth`
//! with the ipc auth protocol, as smtpd asks it. Right and wrong passwords, the delay, a
//! burst that gets throttled, hashes written by `petrel user add`, by openssl and (when
//! installed) by Dovecot's doveadm, a password file that goes away, a client with the
//! wrong uid, and (as root) authd's own uid and the password file's protection.
#![allow(clippy::unwrap_used)]

use petrel_ipc::auth::{Reply, Request};
use petrel_ipc::{read_frame, write_frame, Incoming};
use petrel_tests::root::{ensure_group, ensure_user, status_field};
use petrel_tests::{installed, is_root, python, run_limited, Sandbox};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One connection to authd.
struct AuthClient {
    stream: UnixStream,
}

impl AuthClient {
    fn connect(sb: &Sandbox) -> AuthClient {
        let path = sb.dir.join("spool/private/auth");
        let stream = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        AuthClient { stream }
    }

    fn send(&mut self, client: &str, user: &str, password: &str) {
        write_frame(
            &mut self.stream,
            &Request::Check {
                service: "smtpd".into(),
                client: client.into(),
                user: user.into(),
                password: password.into(),
            },
        )
        .unwrap();
    }

    fn receive(&mut self) -> Reply {
        match read_frame::<Reply>(&mut self.stream) {
            Ok(Some(Incoming::Msg(r))) => r,
            other => panic!("no reply from authd: {other:?}"),
        }
    }

    /// Asks and waits; returns the reply and how long it took.
    fn check(&mut self, client: &str, user: &str, password: &str) -> (Reply, Duration) {
        let t = Instant::now();
        self.send(client, user, password);
        let r = self.receive();
        (r, t.elapsed())
    }
}

/// One question on a new connection.
fn check(sb: &Sandbox, client: &str, user: &str, password: &str) -> (Reply, Duration) {
    AuthClient::connect(sb).check(client, user, password)
}

/// A sandbox for these tests. authd needs no smtpd; while the sandbox has no certificate,
/// the service lines that require TLS are left out so the suite starts.
fn sandbox(test: &str) -> Sandbox {
    let sb = Sandbox::new(test);
    let conf = std::fs::read_to_string(sb.etc.join("petrel.conf")).unwrap();
    if !conf.contains("smtpd_tls_cert_file") {
        let path = sb.etc.join("services.conf");
        let services = std::fs::read_to_string(&path).unwrap();
        let kept: String = services
            .lines()
            .filter(|l| {
                !l.contains("smtpd_tls_security_level=encrypt")
                    && !l.contains("smtpd_tls_wrappermode=yes")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept).unwrap();
    }
    sb
}

/// Starts the sandbox and waits for authd.
fn start_auth(sb: &mut Sandbox) {
    assert!(
        sb.bin.join("authd").exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        sb.bin.join("authd").display()
    );
    let services = std::fs::read_to_string(sb.etc.join("services.conf")).unwrap();
    assert!(
        services.lines().any(|l| l.starts_with("auth ")),
        "petrel sandbox wrote no auth service:\n{services}"
    );
    sb.start();
    sb.wait_for("authd running", Duration::from_secs(20), || {
        !sb.pids_of("authd").is_empty()
    });
}

fn me() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

fn append_user(sb: &Sandbox, name: &str, hash: &str) -> PathBuf {
    let home = sb.dir.join("home").join(name);
    let (uid, gid) = me();
    let users = sb.etc.join("users");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!(
        "{name}:{hash}:{uid}:{gid}::{}::\n",
        home.display()
    ));
    // Write a new file and rename it, as an editor or petrel user would.
    let tmp = sb.etc.join("users.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    home
}

fn password_field(sb: &Sandbox, user: &str) -> String {
    let text = std::fs::read_to_string(sb.etc.join("users")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no {user} in the users file:\n{text}"))
}

#[test]
fn right_and_wrong_passwords_and_the_failure_delay() {
    let mut sb = sandbox("authd_right_and_wrong");
    start_auth(&mut sb);
    sb.add_user("alice", "correct horse");
    let (uid, gid) = me();

    let (r, _) = check(&sb, "127.0.0.1", "alice", "correct horse");
    assert_eq!(
        r,
        Reply::Ok {
            user: "alice".into(),
            uid,
            gid,
            home: sb.dir.join("home/alice").display().to_string(),
        }
    );
    // Case does not matter for the name; the answer spells it as the file does.
    let (r, _) = check(&sb, "127.0.0.1", "ALICE", "correct horse");
    assert!(
        matches!(&r, Reply::Ok { user, .. } if user == "alice"),
        "{r:?}"
    );

    let mut c = AuthClient::connect(&sb);
    let (r, took) = c.check("127.0.0.1", "alice", "wrong-horse-9731");
    assert_eq!(r, Reply::Fail);
    assert!(
        took >= Duration::from_millis(990),
        "answered after {took:?}"
    );
    // Unknown users get the same answer after the same delay, on the same connection.
    let (r, took) = c.check("127.0.0.1", "nobody-here", "x");
    assert_eq!(r, Reply::Fail);
    assert!(
        took >= Duration::from_millis(990),
        "answered after {took:?}"
    );
    // And a right password right after, on the same connection, is answered at once.
    let (r, took) = c.check("127.0.0.1", "alice", "correct horse");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Two requests written back to back are answered in order.
    c.send("127.0.0.1", "alice", "nope-5521");
    c.send("127.0.0.1", "alice", "correct horse");
    assert_eq!(c.receive(), Reply::Fail);
    assert!(matches!(c.receive(), Reply::Ok { .. }));

    let log = sb.log();
    assert!(
        log.contains("auth: login ok: user=<alice>, service=smtpd, client=127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("auth: login failed: user=<alice>, service=smtpd, client=127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("auth: login failed: user=<nobody-here>"),
        "{log}"
    );
    for secret in ["correct horse", "wrong-horse-9731", "nope-5521"] {
        assert!(!log.contains(secret), "the log shows a password: {secret}");
    }
    sb.stop();
}

#[test]
fn a_burst_of_wrong_passwords_is_throttled_and_logged() {
    let mut sb = sandbox("authd_burst");
    sb.set("auth_failure_limit", "3");
    start_auth(&mut sb);
    sb.add_user("bob", "b0b-secret");

    // Eight guesses at once from one address: checks running are not failures (many
    // people may share an address), so all eight are checked and fail after the delay;
    // a burst is bounded by the cap on checks running at once (max(4 × limit, 32)).
    let mut conns: Vec<AuthClient> = (0..8).map(|_| AuthClient::connect(&sb)).collect();
    let t = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send("192.0.2.7", "bob", &format!("guess-{i}"));
    }
    let replies: Vec<Reply> = conns.iter_mut().map(AuthClient::receive).collect();
    assert!(replies.iter().all(|r| *r == Reply::Fail), "{replies:?}");
    assert!(t.elapsed() >= Duration::from_millis(990));

    // Now the address is locked out: even the right password is refused, at once.
    let (r, took) = check(&sb, "192.0.2.7", "bob", "b0b-secret");
    assert_eq!(r, Reply::Throttled);
    assert!(took < Duration::from_millis(900), "{took:?}");
    // Another address is not.
    let (r, _) = check(&sb, "192.0.2.8", "bob", "b0b-secret");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");

    sb.wait_for("the lock-out in the log", Duration::from_secs(10), || {
        sb.log()
            .contains("warning: auth: too many failed logins from 192.0.2.7; refusing it for 600 s")
    });
    let log = sb.log();
    assert!(log.contains("auth: login refused: user=<bob>, service=smtpd, client=192.0.2.7"));
    assert!(!log.contains("guess-") && !log.contains("b0b-secret"));
    sb.stop();
}

#[test]
fn user_add_writes_argon2id_that_authd_and_dovecot_accept() {
    let mut sb = sandbox("authd_argon2id");
    // A sandbox writes SHA512-CRYPT for speed; a real server writes ARGON2ID.
    sb.set("auth_password_scheme", "ARGON2ID");
    start_auth(&mut sb);
    sb.add_user("carol", "Car0l pw");
    let hash = password_field(&sb, "carol");
    assert!(
        hash.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        "{hash}"
    );
    let meta = std::fs::metadata(sb.etc.join("users")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);

    let (r, _) = check(&sb, "127.0.0.1", "carol", "Car0l pw");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    let (r, _) = check(&sb, "127.0.0.1", "carol", "Car0l pW");
    assert_eq!(r, Reply::Fail);

    // Dovecot checks ARGON2ID with libsodium's crypto_pwhash_str_verify.
    match installed(&["/usr/bin/doveadm", "/usr/sbin/doveadm"]) {
        Some(doveadm) => {
            let mut c = Command::new(&doveadm);
            c.args(["pw", "-t", &hash, "-p", "Car0l pw"]);
            let out = run_limited(c, b"", Duration::from_secs(60));
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.contains("verified"),
                "doveadm pw -t: {said}"
            );
            let mut c = Command::new(&doveadm);
            c.args(["pw", "-t", &hash, "-p", "wrong"]);
            let out = run_limited(c, b"", Duration::from_secs(60));
            assert!(!out.status.success(), "doveadm accepted a wrong password");
        }
        None => println!("skipped doveadm pw -t: doveadm is not installed (Debian: dovecot-core)"),
    }
    // The same check through libsodium directly, when python3 and libsodium are there.
    let script = r#"
import ctypes, ctypes.util, sys
name = ctypes.util.find_library("sodium")
if not name:
    print("no libsodium"); sys.exit(3)
s = ctypes.CDLL(name)
if s.sodium_init() < 0:
    sys.exit(4)
f = s.crypto_pwhash_str_verify
f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
h, pw = sys.argv[1].encode(), sys.argv[2].encode()
print(f(h, pw, len(pw)), f(h, b"wrong", 5))
"#;
    let phc = hash.trim_start_matches("{ARGON2ID}");
    let out = python(script, &[phc, "Car0l pw"], Duration::from_secs(60));
    match out.status.code() {
        Some(0) => assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 -1"),
        _ => println!(
            "skipped the libsodium check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }

    // petrel user passwd: authd notices the new file.
    let mut c = Command::new(sb.bin.join("petrel"));
    c.arg("-c").arg(&sb.etc).args(["user", "passwd", "carol"]);
    let out = run_limited(c, b"new pw 2\n", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (r, _) = check(&sb, "127.0.0.1", "carol", "new pw 2");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    let (r, _) = check(&sb, "127.0.0.1", "carol", "Car0l pw");
    assert_eq!(r, Reply::Fail);
    sb.stop();
}

#[test]
fn sha512_crypt_lines_from_openssl_and_doveadm_are_accepted() {
    let Some(openssl) = installed(&["/usr/bin/openssl"]) else {
        println!("skipped: openssl is not installed");
        return;
    };
    let mut sb = sandbox("authd_sha512_crypt");
    start_auth(&mut sb);
    let out = Command::new(&openssl)
        .args(["passwd", "-6", "-salt", "Xy7pQ2mN4vB8cR1s", "dave's pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$6$Xy7pQ2mN4vB8cR1s$"), "{h}");
    let home = append_user(&sb, "dave", &format!("{{SHA512-CRYPT}}{h}"));
    // A bare crypt hash (no {SCHEME}) is recognised by its $6$, as Dovecot's CRYPT does.
    append_user(&sb, "erin", &h);
    let (uid, gid) = me();
    let (r, _) = check(&sb, "127.0.0.1", "dave", "dave's pw");
    assert_eq!(
        r,
        Reply::Ok {
            user: "dave".into(),
            uid,
            gid,
            home: home.display().to_string()
        }
    );
    let (r, _) = check(&sb, "127.0.0.1", "erin", "dave's pw");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    let (r, _) = check(&sb, "127.0.0.1", "dave", "dave's pW");
    assert_eq!(r, Reply::Fail);

    match installed(&["/usr/bin/doveadm", "/usr/sbin/doveadm"]) {
        Some(doveadm) => {
            let out = Command::new(doveadm)
                .args(["pw", "-s", "SHA512-CRYPT", "-p", "frank pw"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8(out.stdout).unwrap().trim().to_string();
            assert!(line.starts_with("{SHA512-CRYPT}$6$"), "{line}");
            append_user(&sb, "frank", &line);
            let (r, _) = check(&sb, "127.0.0.1", "frank", "frank pw");
            assert!(matches!(r, Reply::Ok { .. }), "doveadm's {line}: {r:?}");
        }
        None => println!(
            "skipped the doveadm pw -s SHA512-CRYPT line: doveadm is not installed (Debian: dovecot-core)"
        ),
    }
    sb.stop();
}

#[test]
fn a_missing_password_file_is_a_temporary_failure() {
    let mut sb = sandbox("authd_missing_file");
    start_auth(&mut sb);
    sb.add_user("gina", "gina pw");
    let users = sb.etc.join("users");
    let away = sb.etc.join("users.away");
    std::fs::rename(&users, &away).unwrap();
    let (r, took) = check(&sb, "127.0.0.1", "gina", "gina pw");
    assert!(
        matches!(&r, Reply::Temporary { reason } if reason.contains("cannot read")),
        "{r:?}"
    );
    assert!(took < Duration::from_millis(900), "{took:?}");
    std::fs::rename(&away, &users).unwrap();
    let (r, _) = check(&sb, "127.0.0.1", "gina", "gina pw");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    sb.wait_for("the error in the log", Duration::from_secs(10), || {
        sb.log()
            .contains("logins fail temporarily until it is fixed")
    });
    sb.stop();
}

/// Makes `p` and every directory above it searchable by other users (a tempdir is 0700).
fn open_up(p: &Path) {
    let mut cur = Some(p);
    while let Some(d) = cur {
        if d == Path::new("/") || d == Path::new("/tmp") {
            break;
        }
        let mode = std::fs::metadata(d).unwrap().mode() & 0o7777;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        cur = d.parent();
    }
}

#[test]
fn a_client_with_another_uid_is_closed_and_logged() {
    if !is_root() {
        println!("skipped: needs root (connects as another uid)");
        return;
    }
    let mut sb = sandbox("authd_peer_uid");
    start_auth(&mut sb);
    let sock = sb.dir.join("spool/private/auth");
    // Let uid 65534 reach the socket (master made it 0600 in a 0700 directory).
    open_up(&sb.dir.join("spool/private"));
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
try:
    s.sendall(b"\x00\x00\x00\x05\x41\x00\x00\x00\x00")
    print(repr(s.recv(100)))
except OSError as e:
    print("error", e)
"#;
    use std::os::unix::process::CommandExt;
    // The system's python3: another uid cannot run one under /root.
    let Some(py) = installed(&["/usr/bin/python3"]) else {
        println!("skipped: /usr/bin/python3 is not installed");
        return;
    };
    let mut c = Command::new(py);
    c.arg("-c")
        .arg(script)
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .current_dir("/");
    let out = run_limited(c, b"", Duration::from_secs(30));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.trim() == "b''" || said.contains("error"),
        "a stranger got an answer: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.wait_for("the refusal in the log", Duration::from_secs(10), || {
        sb.log()
            .contains("warning: auth: refusing a connection from uid 65534")
    });
    sb.stop();
}

#[test]
fn as_root_authd_runs_as_petrel_auth_and_mail_owner_cannot_read_the_passwords() {
    if !is_root() {
        println!("skipped: needs root (creates system users, changes uids)");
        return;
    }
    ensure_group("petrel-drop");
    let owner = ensure_user("petrel", true);
    let auth = ensure_user("petrel-auth", true);
    assert_ne!(auth.gid, owner.gid);

    let mut sb = sandbox("authd_as_root");
    open_up(&sb.etc);
    open_up(&sb.dir.join("home"));
    sb.set("mail_owner", "petrel");
    sb.set("setgid_group", "petrel-drop");
    sb.set("auth_owner", "petrel-auth");
    // Accounts root adds belong to the virtual-mail user, their homes below the base.
    let vmail = ensure_user("petrel-vmail", true);
    sb.set(
        "virtual_mailbox_base",
        &sb.dir.join("vmail").display().to_string(),
    );
    let users = sb.etc.join("users");
    nix::unistd::chown(&users, Some(nix::unistd::Uid::from_raw(0)), Some(auth.gid)).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    start_auth(&mut sb);

    let pid = sb.pids_of("authd")[0];
    let want = auth.uid.to_string();
    let uid = status_field(pid, "Uid");
    assert!(
        uid.split_whitespace().all(|u| u == want),
        "authd: Uid {uid}"
    );
    let gid = status_field(pid, "Gid");
    assert!(
        gid.split_whitespace().all(|g| g == auth.gid.to_string()),
        "authd: Gid {gid}"
    );
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");

    // petrel user add (run by root) keeps the file root:petrel-auth 0640, and authd reads it.
    sb.add_user("hank", "hank pw");
    let meta = std::fs::metadata(&users).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, auth.gid.as_raw()));
    assert_eq!(meta.mode() & 0o777, 0o640);
    let (r, _) = check(&sb, "127.0.0.1", "hank", "hank pw");
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}\n{}", sb.log());
    let line = std::fs::read_to_string(&users).unwrap();
    let hank: Vec<&str> = line
        .lines()
        .find(|l| l.starts_with("hank:"))
        .unwrap()
        .split(':')
        .collect();
    assert_eq!(
        (hank[2], hank[3]),
        (
            vmail.uid.to_string().as_str(),
            vmail.gid.to_string().as_str()
        ),
        "{line}"
    );
    let home = sb.dir.join("vmail/hank");
    assert_eq!(hank[5], home.display().to_string());
    let meta = std::fs::metadata(home.join("Maildir/new")).unwrap();
    assert_eq!(meta.uid(), vmail.uid.as_raw());

    // mail_owner (smtpd's uid) cannot read the password file.
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("cat");
    c.arg(&users)
        .uid(owner.uid.as_raw())
        .gid(owner.gid.as_raw())
        .current_dir("/");
    let out = run_limited(c, b"", Duration::from_secs(10));
    assert!(!out.status.success(), "mail_owner read the password file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the running smtpd is not in petrel-auth's group.
    for pid in sb.pids_of("smtpd") {
        assert_eq!(
            status_field(pid, "Uid").split_whitespace().next(),
            Some(owner.uid.to_string().as_str())
        );
        let groups = status_field(pid, "Groups");
        assert!(
            !groups.split_whitespace().any(|g| g == auth.gid.to_string()),
            "smtpd is in petrel-auth's group: {groups}"
        );
    }
    sb.stop();
}

#[test]
fn user_lookups_are_answered_at_once_without_a_password() {
    let mut sb = sandbox("authd_user_lookups");
    start_auth(&mut sb);
    for (user, known) in [("demo", true), ("nosuchuser", false)] {
        let mut c = AuthClient::connect(&sb);
        let t = Instant::now();
        write_frame(&mut c.stream, &Request::Lookup { user: user.into() }).unwrap();
        let r = c.receive();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "no failure delay for lookups"
        );
        match (known, r) {
            (true, Reply::Ok { user: u, .. }) => assert_eq!(u, "demo"),
            (false, Reply::Fail) => {}
            (_, other) => panic!("lookup {user}: {other:?}"),
        }
    }
    sb.stop();
}
