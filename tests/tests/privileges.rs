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
    std::fs::write(&users, text).unwrap();

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
                    name == "local" || status_field(*pid, "NoNewPrivs") == "1" || name == "authd"
                })
        },
    );
    let spool = std::fs::canonicalize(sb.dir.join("spool")).unwrap();
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
            "imapd" => {
                // Network-facing: mail_owner, never root, no capabilities. (Sessions run in
                // this process too for now: the per-user privilege split is still to come.)
                let want = owner.uid.to_string();
                assert!(
                    uid.split_whitespace().all(|u| u == want),
                    "imapd: Uid {uid}"
                );
                assert_eq!(cap_eff, "0000000000000000", "imapd has capabilities");
                assert_eq!(status_field(pid, "NoNewPrivs"), "1", "imapd");
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
    sb.stop();
}
