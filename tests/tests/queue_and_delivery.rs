//! Deferral, retry, expiry, the operator's queue commands, and local delivery's other
//! destinations (.forward, |command, /file), driven through the real suite.
#![allow(clippy::unwrap_used)]

use petrel_tests::{header, run_with_input, Sandbox};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A user whose home directory does not exist: delivery defers.
fn homeless_user(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    sb.add_user(name, "pw");
    let home = sb.dir.join("home").join(name);
    std::fs::remove_dir_all(&home).unwrap();
    home
}

#[test]
fn a_temporary_failure_is_deferred_and_retried_until_delivered() {
    let mut sb = Sandbox::new("a_temporary_failure_is_deferred_and_retried");
    sb.set("minimal_backoff_time", "1s");
    sb.set("maximal_backoff_time", "2s");
    sb.set("queue_run_delay", "1s");
    let home = homeless_user(&sb, "carol");
    sb.start();
    let out = sb.sendmail(&["carol@localhost"], b"Subject: patience\n\nwait for it\n");
    assert!(out.status.success());
    sb.wait_for("a deferral", WAIT, || {
        sb.log().contains("to=<carol@localhost>, relay=local")
            && sb.log().contains("status=deferred")
    });
    sb.wait_for("the message in deferred/", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    let list = String::from_utf8_lossy(&sb.petrel(&["queue", "list"]).stdout).to_string();
    assert!(
        list.contains("home directory") && list.contains("carol@localhost"),
        "mailq shows the reason: {list}"
    );
    // The problem goes away; the next retry delivers, once.
    std::fs::create_dir_all(&home).unwrap();
    let m = &sb.wait_messages("carol", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("patience"));
    sb.wait_for("an empty queue", WAIT, || {
        sb.queue_files("deferred").is_empty() && sb.queue_files("active").is_empty()
    });
    assert!(
        sb.queue_files("defer").is_empty(),
        "defer/ID is removed with the message"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sb.messages("carol").len(), 1);
    sb.stop();
}

#[test]
fn flush_retries_deferred_mail_at_once() {
    let mut sb = Sandbox::new("flush_retries_deferred_mail_at_once");
    let home = homeless_user(&sb, "dave");
    sb.start();
    let out = sb.sendmail(&["dave@localhost"], b"Subject: flushed\n\nnow\n");
    assert!(out.status.success());
    sb.wait_for("the message in deferred/", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    std::fs::create_dir_all(&home).unwrap();
    // minimal_backoff_time is 300 s: only a flush gets it out now.
    let f = sb.petrel(&["queue", "flush"]);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    sb.wait_messages("dave", 1, Duration::from_secs(10));
    // sendmail -q does the same.
    std::fs::remove_dir_all(&home).unwrap();
    assert!(sb
        .sendmail(&["dave@localhost"], b"Subject: again\n\nx\n")
        .status
        .success());
    sb.wait_for("the second message deferred", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    std::fs::create_dir_all(&home).unwrap();
    let q = Command::new(sb.bin.join("sendmail"))
        .arg("-C")
        .arg(&sb.etc)
        .arg("-q")
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    sb.wait_messages("dave", 1, Duration::from_secs(10));
    sb.stop();
}

#[test]
fn mail_older_than_the_queue_lifetime_bounces() {
    let mut sb = Sandbox::new("mail_older_than_the_queue_lifetime_bounces");
    sb.set("minimal_backoff_time", "1s");
    sb.set("maximal_backoff_time", "1s");
    sb.set("queue_run_delay", "1s");
    sb.set("maximal_queue_lifetime", "2s");
    homeless_user(&sb, "erin");
    sb.start();
    let out = sb.sendmail(
        &["-f", "demo@localhost", "erin@localhost"],
        b"Subject: too late\n\nbody\n",
    );
    assert!(out.status.success());
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert!(m.contains("Final-Recipient: rfc822; erin@localhost"), "{m}");
    assert!(m.contains("Action: failed"));
    assert!(m.contains("message expired after"), "{m}");
    assert!(
        m.contains("home directory"),
        "the last reason is given: {m}"
    );
    sb.wait_for("an empty queue", WAIT, || {
        sb.queue_files("deferred").is_empty() && sb.queue_files("active").is_empty()
    });
    assert!(sb.log().contains("status=expired, returned to sender"));
    sb.stop();
}

#[test]
fn hold_release_and_delete() {
    let mut sb = Sandbox::new("hold_release_and_delete");
    let home = homeless_user(&sb, "frank");
    sb.start();
    for s in ["keep", "drop"] {
        let out = sb.sendmail(
            &["frank@localhost"],
            format!("Subject: {s}\n\n{s}\n").as_bytes(),
        );
        assert!(out.status.success());
    }
    sb.wait_for("two deferred messages", WAIT, || {
        sb.queue_files("deferred").len() == 2
    });
    let mut ids = sb.queue_files("deferred");
    ids.sort();
    let (keep, drop) = (ids[0].clone(), ids[1].clone());
    let h = sb.petrel(&["queue", "hold", &keep]);
    assert!(h.status.success(), "{}", String::from_utf8_lossy(&h.stderr));
    assert_eq!(sb.queue_files("hold"), vec![keep.clone()]);
    let list = String::from_utf8_lossy(&sb.petrel(&["queue", "list"]).stdout).to_string();
    assert!(
        list.contains(&format!("{keep}!")),
        "held messages are marked with '!': {list}"
    );
    let d = sb.petrel(&["queue", "delete", &drop]);
    assert!(d.status.success());
    assert!(sb.queue_files("deferred").is_empty());
    std::fs::create_dir_all(&home).unwrap();
    assert!(sb.petrel(&["queue", "flush"]).status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sb.messages("frank").is_empty(),
        "held mail is not delivered"
    );
    let r = sb.petrel(&["queue", "release", &keep]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let msgs = sb.wait_messages("frank", 1, WAIT);
    assert_eq!(header(&msgs[0], "Subject").as_deref(), Some("keep"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sb.messages("frank").len(),
        1,
        "the deleted message never arrives"
    );
    assert!(sb.log().contains(&format!("{drop}: removed")));
    sb.stop();
}

#[test]
fn forward_files_commands_and_files() {
    let mut sb = Sandbox::new("forward_files_commands_and_files");
    sb.add_user("gina", "pw");
    // gina keeps a copy and forwards one to demo.
    std::fs::write(
        sb.dir.join("home/gina/.forward"),
        "\\gina, demo@localhost\n",
    )
    .unwrap();
    let piped = sb.dir.join("piped.txt");
    let filed = sb.dir.join("filed.mbox");
    let aliases = sb.etc.join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str(&format!("prog: \"|cat > {}\"\n", piped.display()));
    text.push_str(&format!("archive: {}\n", filed.display()));
    text.push_str("failing: \"|exit 67\"\n");
    std::fs::write(&aliases, text).unwrap();
    sb.start();
    assert!(sb
        .sendmail(&["gina@localhost"], b"Subject: fwd\n\nforwarded\n")
        .status
        .success());
    let g = &sb.wait_messages("gina", 1, WAIT)[0];
    assert_eq!(header(g, "Delivered-To").as_deref(), Some("gina@localhost"));
    let d = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(d, "Subject").as_deref(), Some("fwd"));
    assert!(
        sb.log()
            .contains("to=<demo@localhost>, orig_to=<gina@localhost>, relay=local"),
        "the copy for demo is logged against gina's address: {}",
        sb.log()
    );
    assert!(sb
        .sendmail(
            &["prog@localhost", "archive@localhost"],
            b"Subject: both\n\nto a program and a file\n"
        )
        .status
        .success());
    sb.wait_for("the command's output", WAIT, || {
        std::fs::read_to_string(&piped)
            .map(|t| t.contains("to a program"))
            .unwrap_or(false)
    });
    sb.wait_for("the file's mbox", WAIT, || {
        std::fs::read_to_string(&filed)
            .map(|t| t.starts_with("From "))
            .unwrap_or(false)
    });
    // A command that fails permanently bounces to the sender.
    assert!(sb
        .sendmail(
            &["-f", "demo@localhost", "failing@localhost"],
            b"Subject: cmd\n\nx\n"
        )
        .status
        .success());
    sb.wait_for("the bounce", WAIT, || sb.messages("demo").len() == 2);
    let log = sb.log();
    assert!(log.contains("Command died with status 67"), "{log}");
    sb.stop();
}

#[test]
fn sendmail_bs_speaks_smtp_on_stdin() {
    let mut sb = Sandbox::new("sendmail_bs_speaks_smtp_on_stdin");
    sb.start();
    let mut c = Command::new(sb.bin.join("sendmail"));
    c.arg("-C").arg(&sb.etc).arg("-bs");
    let out = run_with_input(
        c,
        b"EHLO client.example\r\nMAIL FROM:<demo@localhost>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\nSubject: via -bs\r\n\r\n..dot stuffed\r\n.\r\nQUIT\r\n",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("220 "), "{text}");
    assert!(text.contains("250 2.0.0 Ok: queued as "), "{text}");
    assert!(text.contains("221 "), "{text}");
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert!(m.ends_with("\n.dot stuffed\n"), "{m:?}");
    sb.stop();
}

#[test]
fn sendmail_reports_errors_with_sysexits_codes() {
    let sb = Sandbox::new("sendmail_reports_errors_with_sysexits_codes");
    let none = sb.sendmail(&[], b"Subject: x\n\n");
    assert_eq!(none.status.code(), Some(64), "no recipients is EX_USAGE");
    assert!(String::from_utf8_lossy(&none.stderr).starts_with("sendmail: "));
    let t_none = sb.sendmail(&["-t"], b"Subject: x\n\nno To header\n");
    assert_eq!(t_none.status.code(), Some(64));
    let bad = sb.sendmail(&["-Y"], b"");
    assert_eq!(bad.status.code(), Some(64));
    let mut c = Command::new(sb.bin.join("sendmail"));
    c.args(["-C", "/nonexistent/petrel", "demo@localhost"]);
    let cfg = run_with_input(c, b"x\n");
    assert_eq!(
        cfg.status.code(),
        Some(78),
        "unreadable configuration is EX_CONFIG"
    );
    // mailq through the sendmail interface.
    let bp = sb.sendmail(&["-bp"], b"");
    assert!(bp.status.success());
    assert!(String::from_utf8_lossy(&bp.stdout).contains("Mail queue is empty"));
}
