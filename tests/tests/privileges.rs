//! Privilege separation as root: every service runs as its configured uid with no
//! capabilities (local keeps only what it needs to become recipients), chrooted where
//! services.conf says so, and local delivery writes files owned by the recipient.
//! Skips with a printed reason when not root.
#![allow(clippy::unwrap_used)]

use petrel_tests::root::{ensure_group, ensure_user, status_field};
use petrel_tests::{header, is_root, Sandbox};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[test]
fn services_run_with_their_configured_identity_and_no_capabilities() {
    if !is_root() {
        println!("skipped: needs root (creates system users, changes uids, chroots)");
        return;
    }
    ensure_group("petrel-drop");
    let owner = ensure_user("petrel", true);
    let auth_owner = ensure_user("petrel-auth", true);
    let rcpt = ensure_user("petrel-e2e-rcpt", false);

    let mut sb = Sandbox::new("services_run_with_their_configured_identity");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in [sb.dir.clone(), sb.dir.join("home")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    sb.set("mail_owner", "petrel");
    sb.set("setgid_group", "petrel-drop");
    sb.set("auth_owner", "petrel-auth");
    // The password file: readable by authd's user only (root owns it).
    let users_file = sb.etc.join("users");
    nix::unistd::chown(
        &users_file,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(auth_owner.gid),
    )
    .unwrap();
    // The unprivileged services are chrooted to the queue directory.
    let services = std::fs::read_to_string(sb.etc.join("services.conf")).unwrap();
    let services: String = services
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 8 && ["pickup", "cleanup", "qmgr"].contains(&f[0]) {
                format!(
                    "{} {} {} {} y {} {} {}\n",
                    f[0],
                    f[1],
                    f[2],
                    f[3],
                    f[5],
                    f[6],
                    f[7..].join(" ")
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(sb.etc.join("services.conf"), services).unwrap();
    // A recipient with a real uid, home under the sandbox.
    let home = sb.dir.join("home/petrel-e2e-rcpt");
    std::fs::create_dir_all(&home).unwrap();
    nix::unistd::chown(&home, Some(rcpt.uid), Some(rcpt.gid)).unwrap();
    let users = sb.etc.join("users");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!(
        "petrel-e2e-rcpt:{{PLAIN}}x:{}:{}::{}::\n",
        rcpt.uid,
        rcpt.gid,
        home.display()
    ));
    // A user whose uid is root's: imapd must never give it a session.
    text.push_str(&format!(
        "petrel-e2e-root:{{PLAIN}}y:0:0::{}::\n",
        sb.dir.join("home/petrel-e2e-root").display()
    ));
    std::fs::write(&users, text).unwrap();
    // Plain LOGIN / USER+PASS for the IMAP and POP3 checks below.
    sb.set("imapd_tls_auth_only", "no");
    sb.set("pop3d_tls_auth_only", "no");

    sb.start();
    // A service that was just started may still be reading its configuration as root:
    // look once every child has had time to drop what it drops.
    sb.wait_for(
        "every service past its privilege drop",
        Duration::from_secs(10),
        || {
            let kids = sb.children();
            kids.iter().any(|(_, n)| n == "smtp")
                && kids.iter().all(|(pid, name)| {
                    name == "local"
                        || status_field(*pid, "NoNewPrivs") == "1"
                        || name == "authd"
                        || ((name == "imapd" || name == "pop3d")
                            && status_field(*pid, "CapEff") == "00000000000000c0"
                            && petrel_tests::Sandbox::children_of(*pid)
                                .iter()
                                .any(|(p, n)| {
                                    *n == format!("{name}-login")
                                        && status_field(*p, "NoNewPrivs") == "1"
                                }))
                })
        },
    );
    let spool = std::fs::canonicalize(sb.dir.join("spool")).unwrap();
    let mut imapd_spawners = Vec::new();
    let mut pop3d_spawners = Vec::new();
    for (pid, name) in sb.children() {
        let uid = status_field(pid, "Uid");
        let cap_eff = status_field(pid, "CapEff");
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        match name.as_str() {
            "pickup" | "cleanup" | "qmgr" => {
                let want = owner.uid.to_string();
                assert!(
                    uid.split_whitespace().all(|u| u == want),
                    "{name}: Uid {uid}"
                );
                assert_eq!(cap_eff, "0000000000000000", "{name} has capabilities");
                assert_eq!(root, spool, "{name} is chrooted to the queue directory");
                assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name}");
            }
            "smtpd" => {
                // Unprivileged, not chrooted: its recipient lookups read files outside the spool.
                let want = owner.uid.to_string();
                assert!(
                    uid.split_whitespace().all(|u| u == want),
                    "smtpd: Uid {uid}"
                );
                assert_eq!(cap_eff, "0000000000000000", "smtpd has capabilities");
                assert_eq!(status_field(pid, "NoNewPrivs"), "1");
            }
            "smtp" => {
                // The SMTP/LMTP client: mail_owner, no capabilities, not chrooted (it reads
                // resolv.conf and CA files).
                let want = owner.uid.to_string();
                assert!(uid.split_whitespace().all(|u| u == want), "smtp: Uid {uid}");
                assert_eq!(cap_eff, "0000000000000000", "smtp has capabilities");
                assert_eq!(status_field(pid, "NoNewPrivs"), "1", "smtp");
            }
            "imapd" | "pop3d" => {
                // The spawner: root with only CAP_SETUID and CAP_SETGID (bits 7 and 6),
                // and no network socket.
                assert!(
                    uid.split_whitespace().all(|u| u == "0"),
                    "{name} spawner: Uid {uid}"
                );
                assert_eq!(
                    cap_eff, "00000000000000c0",
                    "{name} spawner keeps only setuid/setgid"
                );
                let bounding = status_field(pid, "CapBnd");
                assert_eq!(
                    bounding, "00000000000000c0",
                    "{name} spawner's bounding set"
                );
                let tcp = tcp_socket_inodes();
                for ino in socket_inodes(pid) {
                    assert!(!tcp.contains(&ino), "the {name} spawner holds a TCP socket");
                }
                if name == "imapd" {
                    imapd_spawners.push(pid);
                } else {
                    pop3d_spawners.push(pid);
                }
            }
            "authd" => {
                let want = auth_owner.uid.to_string();
                assert!(
                    uid.split_whitespace().all(|u| u == want),
                    "authd runs as petrel-auth: {uid}"
                );
                assert_eq!(cap_eff, "0000000000000000", "authd has capabilities");
            }
            "local" => {
                assert!(
                    uid.split_whitespace().all(|u| u == "0"),
                    "local runs as root: {uid}"
                );
                let caps = u64::from_str_radix(&cap_eff, 16).unwrap();
                let allowed = (1u64 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 7);
                assert_eq!(caps & !allowed, 0, "local keeps only chown, dac_override, dac_read_search, fowner, setgid, setuid: {cap_eff}");
                assert_eq!(root, std::path::PathBuf::from("/"));
            }
            other => panic!("unexpected child {other}"),
        }
    }
    // Two imapd: IMAP (143) and IMAPS (993).
    assert_eq!(imapd_spawners.len(), 2, "two imapd services");
    check_imapd_processes(&sb, &imapd_spawners, &owner, &rcpt, &home);

    // Spool ownership follows mail_owner.
    let meta = std::fs::metadata(spool.join("incoming")).unwrap();
    assert_eq!(meta.uid(), owner.uid.as_raw());
    let md = std::fs::metadata(spool.join("maildrop")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o1730);

    // smtpd runs as petrel and cannot read the user file (0640 root:petrel-auth): its
    // recipient checks go through authd.
    let mut c = petrel_tests::SmtpClient::ehlo(sb.smtp_port(), "client.example");
    assert_eq!(c.cmd("MAIL FROM:<someone@example.net>").code, 250);
    let r = c.cmd("RCPT TO:<petrel-e2e-rcpt@localhost>");
    assert_eq!(r.code, 250, "a real user is known through authd: {r}");
    let r = c.cmd("RCPT TO:<nosuchuser@localhost>");
    assert_eq!(r.code, 550, "an unknown user is refused: {r}");
    let _ = c.cmd("QUIT");
    let out = sb.sendmail(
        &["petrel-e2e-rcpt@localhost"],
        b"Subject: owned\n\nby the recipient\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = home.join("Maildir/new");
    sb.wait_for("delivery to the real user", Duration::from_secs(30), || {
        std::fs::read_dir(&new)
            .map(|d| d.count() == 1)
            .unwrap_or(false)
    });
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        meta.uid(),
        rcpt.uid.as_raw(),
        "the message belongs to the recipient"
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(header(&text, "Subject").as_deref(), Some("owned"));
    // Two pop3d: POP3 (110) and POP3S (995). authd was killed above: they restarted too.
    assert_eq!(pop3d_spawners.len(), 2, "two pop3d services");
    check_pop3d_processes(&sb, &owner, &rcpt);
    sb.stop();
}

/// Inodes of every TCP socket on the machine (/proc/net/tcp and tcp6).
fn tcp_socket_inodes() -> Vec<String> {
    let mut v = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().skip(1) {
            if let Some(ino) = l.split_whitespace().nth(9) {
                v.push(ino.to_string());
            }
        }
    }
    v
}

/// Inodes of the sockets a process holds.
fn socket_inodes(pid: i32) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                v.push(ino.to_string());
            }
        }
    }
    v
}

/// One IMAP command on a plain connection; the lines up to its tagged answer.
fn imap_cmd(s: &mut std::net::TcpStream, tag: &str, cmd: &str) -> String {
    use std::io::Write;
    s.write_all(format!("{tag} {cmd}\r\n").as_bytes()).unwrap();
    let mut all = String::new();
    loop {
        let l = petrel_tests::imap::read_line(s, Duration::from_secs(20));
        assert!(!l.is_empty(), "no answer to {cmd}: {all}");
        all.push_str(&l);
        if all.lines().any(|x| x.starts_with(&format!("{tag} "))) {
            return all;
        }
    }
}

/// Process `pid` (named `name`) runs as `user`'s uid and gid with no capabilities and
/// no_new_privs.
fn assert_unprivileged(pid: i32, user: &nix::unistd::User, name: &str) {
    let uid = status_field(pid, "Uid");
    let want = user.uid.to_string();
    assert!(
        uid.split_whitespace().all(|u| u == want),
        "{name} runs as {}: Uid {uid}",
        user.name
    );
    let gid = status_field(pid, "Gid");
    assert!(
        gid.split_whitespace().all(|g| g == user.gid.to_string()),
        "{name}: Gid {gid}"
    );
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000", "{name}");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000", "{name}");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name}");
}

/// One POP3 command line and its one-line answer.
fn pop_cmd(s: &mut std::net::TcpStream, cmd: &str) -> String {
    use std::io::Write;
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    petrel_tests::imap::read_line(s, Duration::from_secs(20))
}

/// pop3d's processes: the login process is mail_owner without capabilities; each login
/// gets a session process as the user's uid; a uid-0 user gets no session.
fn check_pop3d_processes(
    sb: &petrel_tests::Sandbox,
    owner: &nix::unistd::User,
    rcpt: &nix::unistd::User,
) {
    let spawners = || -> Vec<i32> {
        sb.children()
            .into_iter()
            .filter(|(_, n)| n == "pop3d")
            .map(|(p, _)| p)
            .collect()
    };
    sb.wait_for(
        "two pop3d, each with its login process",
        Duration::from_secs(20),
        || {
            let s = spawners();
            s.len() == 2
                && s.iter().all(|p| {
                    petrel_tests::Sandbox::children_of(*p)
                        .iter()
                        .any(|(c, n)| n == "pop3d-login" && status_field(*c, "NoNewPrivs") == "1")
                })
        },
    );
    let spawners = spawners();
    let kids = || -> Vec<(i32, String)> {
        spawners
            .iter()
            .flat_map(|p| petrel_tests::Sandbox::children_of(*p))
            .collect()
    };
    let login: Vec<i32> = kids()
        .iter()
        .filter(|(_, n)| n == "pop3d-login")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(login.len(), 2, "one login process per pop3d: {:?}", kids());
    for pid in login {
        assert_unprivileged(pid, owner, "pop3d-login");
    }
    let port = sb.base + 110;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let greeting = petrel_tests::imap::read_line(&mut s, Duration::from_secs(20));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(pop_cmd(&mut s, "USER petrel-e2e-rcpt").starts_with("+OK"));
    let r = pop_cmd(&mut s, "PASS x");
    assert!(
        r.starts_with("+OK"),
        "login as a system user: {r}\n{}",
        sb.log()
    );
    let r = pop_cmd(&mut s, "STAT");
    assert!(r.starts_with("+OK 1 "), "the message delivered above: {r}");
    let sessions: Vec<i32> = kids()
        .iter()
        .filter(|(_, n)| n == "pop3d-session")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(sessions.len(), 1, "one session process: {:?}", kids());
    assert_unprivileged(sessions[0], rcpt, "pop3d-session");
    assert!(pop_cmd(&mut s, "QUIT").starts_with("+OK"));

    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = petrel_tests::imap::read_line(&mut s, Duration::from_secs(20));
    assert!(pop_cmd(&mut s, "USER petrel-e2e-root").starts_with("+OK"));
    let r = pop_cmd(&mut s, "PASS y");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "a uid-0 user must not get a session: {r}"
    );
}

/// imapd's processes: the login process is mail_owner without capabilities; a login
/// starts a session worker as the user's uid; a uid-0 user gets no session.
fn check_imapd_processes(
    sb: &petrel_tests::Sandbox,
    spawners: &[i32],
    owner: &nix::unistd::User,
    rcpt: &nix::unistd::User,
    home: &std::path::Path,
) {
    let kids = || -> Vec<(i32, String)> {
        spawners
            .iter()
            .flat_map(|p| petrel_tests::Sandbox::children_of(*p))
            .collect()
    };
    let login: Vec<i32> = kids()
        .iter()
        .filter(|(_, n)| n == "imapd-login")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(login.len(), 2, "one login process per imapd: {:?}", kids());
    for pid in login {
        assert_unprivileged(pid, owner, "imapd-login");
    }

    let port = petrel_tests::imap::imap_port(sb);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let greeting = petrel_tests::imap::read_line(&mut s, Duration::from_secs(20));
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = imap_cmd(&mut s, "a1", "LOGIN petrel-e2e-rcpt x");
    assert!(r.contains("a1 OK"), "login as a system user: {r}");
    let r = imap_cmd(&mut s, "a2", "SELECT INBOX");
    assert!(r.contains("a2 OK"), "{r}");
    let kids = kids();
    let workers: Vec<i32> = kids
        .iter()
        .filter(|(_, n)| n == "imapd-worker")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(
        workers.len(),
        1,
        "one session worker: {kids:?}\nlog:\n{}",
        sb.log()
    );
    assert_unprivileged(workers[0], rcpt, "imapd-worker");
    // The Maildir the session created belongs to the user.
    let md = std::fs::metadata(home.join("Maildir/cur")).unwrap();
    assert_eq!(md.uid(), rcpt.uid.as_raw(), "Maildir/cur is the user's");
    let r = imap_cmd(&mut s, "a3", "LOGOUT");
    assert!(r.contains("a3 OK"), "{r}");

    // A user with uid 0: no session.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = petrel_tests::imap::read_line(&mut s, Duration::from_secs(20));
    let r = imap_cmd(&mut s, "b1", "LOGIN petrel-e2e-root y");
    assert!(
        r.contains("b1 NO"),
        "a uid-0 user must not get a session: {r}"
    );
    assert!(
        sb.log().contains("mail sessions never run as root"),
        "the log says why"
    );

    // authd dies and master starts it again: the spawner, root without DAC capabilities,
    // cannot reconnect to private/auth, so it ends and master starts a fresh imapd; logins
    // work again without anyone's help.
    let authd = sb.pids_of("authd");
    assert_eq!(authd.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(authd[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    sb.wait_for(
        "logins to work again after authd died",
        Duration::from_secs(60),
        || {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            if !petrel_tests::imap::read_line(&mut s, Duration::from_secs(5)).starts_with("* OK") {
                return false;
            }
            // The old imapd may still greet and then go away: no answer is "not yet".
            use std::io::Write;
            if s.write_all(b"c1 LOGIN petrel-e2e-rcpt x\r\n").is_err() {
                return false;
            }
            if petrel_tests::imap::read_line(&mut s, Duration::from_secs(5)).starts_with("c1 OK") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(300));
            false
        },
    );
    assert!(
        sb.log().contains("exiting so that master restarts imapd"),
        "{}",
        sb.log()
    );
}
