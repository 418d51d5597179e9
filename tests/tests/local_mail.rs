//! The local mail path end to end: sendmail → postdrop → maildrop/ → pickup → cleanup →
//! incoming/ → qmgr → local → Maildir or mbox, through real processes under master.
#![allow(clippy::unwrap_used)]

use petrel_tests::{header, Sandbox};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn sendmail_t_delivers_to_maildir_with_headers() {
    let mut sb = Sandbox::new("sendmail_t_delivers_to_maildir_with_headers");
    sb.start();
    let out = sb.sendmail(
        &["-t", "-F", "Test Sender", "-f", "sender@example.net"],
        b"To: Demo User <demo@localhost>\nBcc: hidden@localhost\nSubject: hello maildir\n\nfirst line\n.\nnot the end without -i? it is the end\n",
    );
    assert!(
        out.status.success(),
        "sendmail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = sb.wait_messages("demo", 1, WAIT);
    let m = &msgs[0];
    assert_eq!(
        header(m, "Return-Path").as_deref(),
        Some("<sender@example.net>")
    );
    assert_eq!(header(m, "Delivered-To").as_deref(), Some("demo@localhost"));
    assert!(
        header(m, "Received")
            .unwrap()
            .contains("by mail.sandbox.test (Petrel, from userid"),
        "{m}"
    );
    assert!(header(m, "Message-ID")
        .unwrap()
        .ends_with("@mail.sandbox.test>"));
    assert!(header(m, "Date").is_some());
    assert_eq!(
        header(m, "From").as_deref(),
        Some("Test Sender <sender@example.net>")
    );
    assert_eq!(header(m, "Subject").as_deref(), Some("hello maildir"));
    assert!(header(m, "Bcc").is_none(), "Bcc must be removed: {m}");
    assert!(
        m.ends_with("\n\nfirst line\n"),
        "a lone dot ends the message without -i: {m:?}"
    );
    // Maildir name carries the size; file is in new/.
    let path = &sb.messages("demo")[0];
    assert!(path.to_string_lossy().contains("/new/"));
    assert!(path.to_string_lossy().contains(&format!(",S={}", m.len())));
    let log = sb.log();
    assert!(log.contains("to=<demo@localhost>, relay=local"), "{log}");
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");
    sb.stop();
}

#[test]
fn sendmail_recipients_on_command_line_deliver_to_mbox() {
    let mut sb = Sandbox::new("sendmail_recipients_on_command_line_deliver_to_mbox");
    sb.set("home_mailbox", "");
    sb.start();
    for i in 0..2 {
        let body = format!("Subject: mbox {i}\n\nFrom here the line must be quoted\n>From this one too\n.\nkept with -i\n");
        let out = sb.sendmail(
            &["-i", "-f", "root@localhost", "demo@localhost"],
            body.as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mbox = sb.dir.join("mail/demo");
    sb.wait_for("two messages in the mbox", WAIT, || {
        std::fs::read_to_string(&mbox)
            .map(|t| t.matches("\nSubject: mbox ").count() == 2)
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From root@localhost "), "{text}");
    assert_eq!(
        text.matches("\nFrom root@localhost ").count(),
        1,
        "two From_ lines in all"
    );
    assert!(
        text.contains(
            "\n>From here the line must be quoted\n>>From this one too\n.\nkept with -i\n"
        ),
        "{text}"
    );
    assert!(text.contains("Return-Path: <root@localhost>\nDelivered-To: demo@localhost\n"));
    assert!(
        text.ends_with("\n\n"),
        "each message ends with a blank line"
    );
    sb.stop();
}

#[test]
fn alias_list_fans_out() {
    let mut sb = Sandbox::new("alias_list_fans_out");
    sb.add_user("alice", "secret-a");
    sb.add_user("bob", "secret-b");
    let aliases = sb.etc.join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str("team: alice,\n  bob, team-archive\nteam-archive: :include:");
    text.push_str(&sb.etc.join("archive.list").to_string_lossy());
    text.push('\n');
    std::fs::write(&aliases, text).unwrap();
    std::fs::write(sb.etc.join("archive.list"), "demo\n# a comment\nalice\n").unwrap();
    let out = sb.petrel(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let na = std::process::Command::new(sb.bin.join("sendmail"))
        .args(["-C"])
        .arg(&sb.etc)
        .arg("-bi")
        .output()
        .unwrap();
    assert!(
        na.status.success(),
        "newaliases: {}",
        String::from_utf8_lossy(&na.stderr)
    );
    sb.start();
    let out = sb.sendmail(&["team@localhost"], b"Subject: to the team\n\nhi all\n");
    assert!(out.status.success());
    for user in ["alice", "bob", "demo"] {
        let m = &sb.wait_messages(user, 1, WAIT)[0];
        assert_eq!(
            header(m, "Delivered-To").unwrap(),
            format!("{user}@localhost")
        );
        assert_eq!(header(m, "Subject").as_deref(), Some("to the team"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sb.messages("alice").len(),
        1,
        "alice is listed twice but gets one copy"
    );
    assert!(sb.log().contains("orig_to=<team@localhost>"));
    sb.stop();
}

#[test]
fn unknown_user_bounces_to_the_sender() {
    let mut sb = Sandbox::new("unknown_user_bounces_to_the_sender");
    sb.start();
    let out = sb.sendmail(
        &["-f", "demo@localhost", "nosuchuser@localhost"],
        b"Subject: into the void\n\nbody\n",
    );
    assert!(out.status.success());
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(
        header(m, "Return-Path").as_deref(),
        Some("<>"),
        "bounces come from the null sender"
    );
    assert!(header(m, "Content-Type")
        .unwrap()
        .starts_with("multipart/report; report-type=delivery-status"));
    assert!(
        m.contains("Final-Recipient: rfc822; nosuchuser@localhost\n"),
        "{m}"
    );
    assert!(m.contains("Action: failed\nStatus: 5.1.1\n"), "{m}");
    assert!(
        m.contains("Subject: into the void"),
        "the original is returned"
    );
    sb.wait_for("the bounced message to leave the queue", WAIT, || {
        sb.queue_files("active").is_empty()
            && sb.queue_files("deferred").is_empty()
            && sb.queue_files("incoming").is_empty()
    });
    let log = sb.log();
    assert!(
        log.contains("status=bounced (unknown user: \"nosuchuser\")"),
        "{log}"
    );
    assert!(log.contains("sender non-delivery notification"), "{log}");
    sb.stop();
}

#[test]
fn a_bounce_is_never_bounced_back_but_goes_to_the_postmaster() {
    let mut sb = Sandbox::new("a_bounce_is_never_bounced");
    sb.start();
    let out = sb.sendmail(
        &["-f", "", "nosuchuser@localhost"],
        b"Subject: from the null sender\n\nbody\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not back to <>: to 2bounce_notice_recipient, from double_bounce_sender.
    sb.wait_for("the postmaster notice to be logged", WAIT, || {
        sb.log().contains("postmaster non-delivery notification")
    });
    let log = sb.log();
    assert!(!log.contains("sender non-delivery notification"), "{log}");
    sb.wait_for("an empty queue", WAIT, || {
        sb.queue_files("active").is_empty() && sb.queue_files("deferred").is_empty()
    });
    sb.stop();
}

#[test]
fn submission_while_stopped_is_delivered_after_start() {
    let mut sb = Sandbox::new("submission_while_stopped_is_delivered_after_start");
    let out = sb.sendmail(
        &["demo@localhost"],
        b"Subject: waited in maildrop\n\nhello\n",
    );
    assert!(
        out.status.success(),
        "submission must work while stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.queue_files("maildrop").len(), 1);
    let list = sb.petrel(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("demo@localhost"));
    sb.start();
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("waited in maildrop"));
    sb.wait_for("maildrop/ to empty", WAIT, || {
        sb.queue_files("maildrop").is_empty()
    });
    sb.stop();
}

#[test]
fn corrupt_queue_file_goes_to_corrupt_and_the_rest_flows() {
    let mut sb = Sandbox::new("corrupt_queue_file_goes_to_corrupt_and_the_rest_flows");
    // A complete-looking file with garbage inside, named like a queue file.
    let bad = sb.dir.join("spool/incoming/1PJ74S4LR057GBN");
    std::fs::write(&bad, b"PETRELQ\x01this is not a queue file").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = sb.sendmail(&["demo@localhost"], b"Subject: good one\n\nok\n");
    assert!(out.status.success());
    sb.start();
    sb.wait_messages("demo", 1, WAIT);
    sb.wait_for("the bad file in corrupt/", WAIT, || {
        sb.queue_files("corrupt")
            .contains(&"1PJ74S4LR057GBN".to_string())
    });
    assert!(
        sb.log().contains("1PJ74S4LR057GBN: corrupt queue file"),
        "{}",
        sb.log()
    );
    sb.stop();
}

/// Sends `n` numbered messages from `threads` parallel senders.
fn send_batch(sb: &Sandbox, n: usize, threads: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let body = format!("Subject: batch {i}\nX-Seq: {i}\n\nmessage number {i}\n");
                    let out = sb.sendmail(&["demo@localhost"], body.as_bytes());
                    assert!(
                        out.status.success(),
                        "message {i}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
}

fn count_by_seq(sb: &Sandbox) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for p in sb.messages("demo") {
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string();
        if let Some(seq) = header(&text, "X-Seq") {
            *seen.entry(seq).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn kill_9_of_qmgr_cleanup_and_local_mid_batch_loses_nothing_and_duplicates_nothing() {
    let mut sb = Sandbox::new("kill_9_mid_batch");
    sb.start();
    const N: usize = 500;
    std::thread::scope(|s| {
        let sender = s.spawn(|| send_batch(&sb, N, 8));
        for (victim, at) in [("qmgr", 60), ("cleanup", 180), ("local", 300)] {
            sb.wait_for(
                &format!("{at} deliveries before killing {victim}"),
                Duration::from_secs(120),
                || sb.messages("demo").len() >= at,
            );
            for pid in sb.pids_of(victim) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        sender.join().unwrap();
    });
    sb.wait_for("all 500 messages", Duration::from_secs(180), || {
        sb.messages("demo").len() >= N
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = count_by_seq(&sb);
    let missing: Vec<usize> = (0..N)
        .filter(|i| !seen.contains_key(&i.to_string()))
        .collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, &c)| c > 1).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(sb.messages("demo").len(), N);
    let log = sb.log();
    for victim in ["qmgr", "cleanup", "local"] {
        assert!(
            log.contains(&format!("/{victim} pid")) && log.contains("killed by signal 9"),
            "master noticed {victim}: {log}"
        );
    }
    sb.stop();
}

#[test]
fn a_crash_looping_service_is_throttled() {
    let mut sb = Sandbox::new("a_crash_looping_service_is_throttled");
    // A service whose program stops at once with a fatal configuration error.
    sb.add_service("crasher unix n - n - 1 pickup -o queue_run_delay=never");
    // services.conf accepts it (the value is the program's business); the program dies.
    sb.start();
    std::thread::sleep(Duration::from_secs(10));
    let log = sb.log();
    let exits = log
        .lines()
        .filter(|l| l.contains("/pickup pid") && l.contains("exit status"))
        .count();
    assert!(exits >= 2, "the service was restarted: {log}");
    assert!(
        exits < 10,
        "restarted {exits} times in 10 s: not throttled\n{log}"
    );
    assert!(log.contains("is crashing; throttling restarts"), "{log}");
    // The rest of the suite still works.
    let out = sb.sendmail(&["demo@localhost"], b"Subject: still alive\n\nyes\n");
    assert!(out.status.success());
    sb.wait_messages("demo", 1, WAIT);
    sb.stop();
}

#[test]
fn second_master_is_refused_and_reload_keeps_working() {
    let mut sb = Sandbox::new("second_master_is_refused_and_reload_keeps_working");
    sb.start();
    let again = sb.petrel(&["start"]);
    assert!(!again.status.success(), "a second start must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    let status = sb.petrel(&["status"]);
    assert!(status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("is running"),
        "{:?}",
        status
    );
    let before = sb.pids_of("qmgr");
    let r = sb.petrel(&["reload"]);
    assert!(r.status.success());
    sb.wait_for("new processes after reload", WAIT, || {
        let now = sb.pids_of("qmgr");
        !now.is_empty() && now != before
    });
    let out = sb.sendmail(&["demo@localhost"], b"Subject: after reload\n\nok\n");
    assert!(out.status.success());
    sb.wait_messages("demo", 1, WAIT);
    sb.stop();
    assert!(sb.master_pid().is_none());
    let st = sb.petrel(&["status"]);
    assert!(!st.status.success());
}

#[test]
fn queue_list_and_config_show() {
    let mut sb = Sandbox::new("queue_list_and_config_show");
    sb.set("home_mailbox", "Maildir/");
    // Queue mail while stopped; it waits in maildrop/ and is listed.
    for i in 0..2 {
        let out = sb.sendmail(
            &["demo@localhost"],
            format!("Subject: q{i}\n\nx\n").as_bytes(),
        );
        assert!(out.status.success());
    }
    let list = String::from_utf8_lossy(&sb.petrel(&["queue", "list"]).stdout).to_string();
    assert!(
        list.contains("-- ") && list.contains("2 Requests"),
        "{list}"
    );
    let empty_cfg = sb.petrel(&["config", "show", "-n"]);
    assert!(String::from_utf8_lossy(&empty_cfg.stdout).contains("home_mailbox = Maildir/"));
    let all = String::from_utf8_lossy(&sb.petrel(&["config", "show"]).stdout).to_string();
    assert!(all.contains("maximal_queue_lifetime = 5d"), "{all}");
    sb.start();
    sb.wait_messages("demo", 2, WAIT);
    // The Maildir copy is there a moment before qmgr removes the queue file.
    sb.wait_for("an empty queue listing", WAIT, || {
        String::from_utf8_lossy(&sb.petrel(&["queue", "list"]).stdout)
            .contains("Mail queue is empty")
    });
    sb.stop();
}
