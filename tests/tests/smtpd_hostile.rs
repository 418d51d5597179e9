//! smtpd against hostile clients: open-relay tricks from an untrusted client, SMTP
//! smuggling, malformed command lines, resource limits, clients that vanish or flood. All
//! traffic is to 127.0.0.1; every loop is bounded in count and time.
#![allow(clippy::unwrap_used)]

use petrel_tests::{header, Sandbox, SmtpClient, SmtpEnd, SmtpReply};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn smtp_sandbox(name: &str, settings: &[(&str, &str)]) -> Sandbox {
    let mut sb = Sandbox::new(name);
    for (k, v) in settings {
        sb.set(k, v);
    }
    sb.start_smtp();
    sb
}

/// Asserts that no further reply is waiting (nothing arrives within `t`).
fn nothing_pending(c: &mut SmtpClient, t: Duration, after: &str) {
    match c.reply_within(t) {
        Err(SmtpEnd::Timeout(b)) if b.is_empty() => {}
        other => panic!("after {after}: unexpected extra reply or close: {other:?}"),
    }
}

/// Allowed refusals for a relay probe.
const RELAY: &str = "554 5.7.1 ";
const UNKNOWN: &str = "550 5.1.1 ";
const SYNTAX: &[&str] = &["501 ", "553 ", "555 "];

fn allowed(reply: &SmtpReply, relay: bool, unknown: bool, syntax: bool) -> bool {
    let l = reply.last();
    (relay && l.starts_with(RELAY) && l.ends_with("Relay access denied"))
        || (unknown && l.starts_with(UNKNOWN))
        || (syntax && SYNTAX.iter().any(|p| l.starts_with(p)))
}

#[test]
fn open_relay_battery_from_an_untrusted_client() {
    let mut sb = smtp_sandbox(
        "smtpd_hostile_open_relay",
        &[
            ("mynetworks", "10.255.255.0/24"),
            ("smtpd_hard_error_limit", "1000"),
        ],
    );
    let port = sb.smtp_port();
    let long_local = format!("<{}@other.test>", "a".repeat(300));
    let long_domain = format!("<user@{}test>", format!("{}.", "d".repeat(60)).repeat(5));
    let long_line_addr = format!("<user@{}.other.test>", "x".repeat(63));
    // (RCPT argument, relay denial ok, unknown local user ok, syntax error ok)
    let (r, u, s) = (true, true, true);
    let probes: Vec<(String, bool, bool, bool)> = vec![
        ("<user@other.test>".into(), r, false, false),
        ("<user%other.test@localhost>".into(), r, u, false),
        ("<other.test!user@localhost>".into(), r, u, false),
        ("<\"user@other.test\"@localhost>".into(), r, u, s),
        ("<user@other.test@localhost>".into(), r, false, s),
        ("<@localhost:user@other.test>".into(), r, false, s),
        (
            "<@localhost,@mail.sandbox.test:user@other.test>".into(),
            r,
            false,
            s,
        ),
        ("<@other.test:user@localhost>".into(), r, u, s),
        ("<user@other.test.>".into(), r, false, s),
        ("<user@[127.0.0.1]>".into(), r, u, s),
        ("<user@[10.0.0.1]>".into(), r, false, s),
        ("<user@[IPv6:::1]>".into(), r, u, s),
        ("<user@127.0.0.1>".into(), r, false, s),
        ("<user@localhost.other.test>".into(), r, false, false),
        (
            "<user@mail.sandbox.test.other.test>".into(),
            r,
            false,
            false,
        ),
        ("<user@other.test%localhost>".into(), r, false, s),
        ("<user%other.test>".into(), r, u, s),
        ("<\"user%other.test\"@localhost>".into(), r, u, s),
        ("<user%other.test@localhost.>".into(), r, u, s),
        ("<user@OTHER.TEST>".into(), r, false, false),
        ("<user@other.test> junk".into(), r, false, s),
        ("<user@other.test>,<demo@localhost>".into(), r, false, s),
        ("<user@other.test\\@localhost>".into(), r, false, s),
        ("<other.test!user%third.test@localhost>".into(), r, u, s),
        ("<user%third.test!other.test@localhost>".into(), r, u, s),
        ("<third.test!user@other.test>".into(), r, false, s),
        ("<user@localhost@other.test>".into(), r, false, s),
        ("<\"user\"@other.test>".into(), r, false, s),
        ("<\"user@other.test\">".into(), r, u, s),
        ("<user @other.test>".into(), r, false, s),
        ("<user@dömäin.test>".into(), r, false, s),
        ("<user@xn--dmin-moa0i.test>".into(), r, false, false),
        ("<postmaster@other.test>".into(), r, false, false),
        ("<user@sandbox.test>".into(), r, false, false),
        ("<user@[127.0.0.1].other.test>".into(), r, false, s),
        ("user@other.test".into(), false, false, s),
        (long_local, r, false, s),
        (long_domain, r, false, s),
        (long_line_addr, r, false, s),
    ];
    assert!(probes.len() >= 20);
    let mut failures = Vec::new();
    for (arg, rel, unk, syn) in &probes {
        for verb in ["RCPT TO:", "rcpt to:"] {
            let mut c = SmtpClient::ehlo(port, "stranger.example");
            c.expect("MAIL FROM:<probe@example.net>", "250 2.1.0 Ok");
            let line = format!("{verb}{arg}");
            let reply = c.cmd(&line);
            eprintln!("{line} → {reply}");
            if !allowed(&reply, *rel, *unk, *syn) {
                failures.push(format!("{line} → {reply}"));
            }
            // With every recipient refused there is nothing to send.
            let d = c.cmd("DATA");
            if d.code == 354 {
                failures.push(format!("{line} → {reply}; DATA → {d} (vanishing)"));
                drop(c);
                continue;
            }
            assert!(d.code >= 500, "DATA after {line}: {d}");
            c.expect("QUIT", "221 ");
        }
    }
    // UTF-8 with SMTPUTF8, and an IDN: still someone else's domain.
    for rcpt in ["<user@dömäin.test>", "<usér@other.test>"] {
        let mut c = SmtpClient::ehlo(port, "stranger.example");
        c.expect("MAIL FROM:<probe@example.net> SMTPUTF8", "250 2.1.0 Ok");
        let reply = c.cmd(&format!("RCPT TO:{rcpt}"));
        if !reply.last().starts_with(RELAY) {
            failures.push(format!("SMTPUTF8 RCPT TO:{rcpt} → {reply}"));
        }
        c.expect("QUIT", "221 ");
    }
    // One session mixing a local recipient with relay attempts: delivered locally only.
    let mut c = SmtpClient::ehlo(port, "stranger.example");
    c.expect("MAIL FROM:<probe@example.net>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
    for rcpt in [
        "<user@other.test>",
        "<demo%other.test@localhost>",
        "<@localhost:demo@other.test>",
    ] {
        let reply = c.cmd(&format!("RCPT TO:{rcpt}"));
        if !allowed(&reply, true, true, true) {
            failures.push(format!("mixed session RCPT TO:{rcpt} → {reply}"));
        }
    }
    let q = c.send_mail_data_only("Subject: local only\n\nfor demo\n");
    assert!(q.starts_with("250 2.0.0 Ok: queued as "), "{q}");
    c.expect("QUIT", "221 ");

    assert!(
        failures.is_empty(),
        "{} relay probes not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("local only"));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sb.all_queue_files().is_empty(),
        "{:?}",
        sb.all_queue_files()
    );
    assert_eq!(
        sb.all_mailbox_files().len(),
        1,
        "only demo's one message anywhere: {:?}",
        sb.all_mailbox_files()
    );
    let log = sb.log();
    for l in log.lines().filter(|l| l.contains("status=")) {
        assert!(
            l.contains("to=<demo@localhost>"),
            "a delivery attempt to someone else: {l}"
        );
    }
    assert!(
        log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <user@other.test>: Relay access denied; from=<probe@example.net> to=<user@other.test> proto=ESMTP helo=<stranger.example>"),
        "{log}"
    );
    sb.stop();
}

/// DATA on a client that already has MAIL and RCPT.
trait DataOnly {
    fn send_mail_data_only(&mut self, message: &str) -> SmtpReply;
}

impl DataOnly for SmtpClient {
    fn send_mail_data_only(&mut self, message: &str) -> SmtpReply {
        self.expect("DATA", "354 ");
        self.send(&petrel_tests::dot_stuff(message)).unwrap();
        self.reply().unwrap()
    }
}

#[test]
fn smtp_smuggling_variants_are_never_a_second_message() {
    let mut sb = smtp_sandbox("smtpd_hostile_smuggling", &[]);
    let port = sb.smtp_port();
    let variants: [&str; 5] = ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n.\n"];
    let smuggled = "MAIL FROM:<evil@x>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n";
    let mut accepted = Vec::new();
    let mut problems = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        for bytewise in [false, true] {
            let subject = format!("outer {i}{}", if bytewise { "b" } else { "a" });
            let mut c = SmtpClient::ehlo(port, "smuggler.example");
            c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
            c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
            c.expect("DATA", "354 ");
            let payload = format!("Subject: {subject}\r\n\r\nbefore{v}{smuggled}");
            if bytewise {
                for b in payload.as_bytes() {
                    c.send(&[*b]).unwrap();
                }
            } else {
                c.send(payload.as_bytes()).unwrap();
            }
            let r = c.reply().unwrap();
            eprintln!("{v:?} bytewise={bytewise}: {r}");
            let bare_lf = v.replace("\r\n", "").contains('\n');
            if r.starts_with("250 2.0.0 Ok: queued as ") {
                if bare_lf {
                    problems.push(format!(
                        "{v:?} ({subject}): a bare LF was accepted: {r} (want 550 5.5.2 Error: bare <LF> received)"
                    ));
                }
                accepted.push((subject.clone(), *v));
            } else if bare_lf {
                if r.last() != "550 5.5.2 Error: bare <LF> received" {
                    problems.push(format!("{v:?} ({subject}): {r}"));
                }
            } else if !r.starts_with("550 5.5.2 ") {
                problems.push(format!("{v:?} ({subject}): {r}"));
            }
            // Exactly one reply for the whole DATA: the smuggled commands were content.
            let q = c.cmd("QUIT");
            if q.last() != "221 2.0.0 Bye" {
                problems.push(format!(
                    "{v:?} ({subject}): after the message, QUIT got {q}: smuggled commands were run"
                ));
            }
            let _ = c.wait_closed(Duration::from_secs(5));
        }
    }
    // Wait for whatever was accepted, then look at everything delivered.
    if !accepted.is_empty() {
        sb.wait_messages("demo", accepted.len(), WAIT);
    }
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_secs(1));
    let files = sb.messages("demo");
    for p in &files {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
        let subject = header(&text, "Subject").unwrap_or_default();
        if subject == "smuggled" || header(&text, "Return-Path").as_deref() == Some("<evil@x>") {
            problems.push(format!("a smuggled message was delivered: {text:?}"));
            continue;
        }
        let body = text.split_once("\n\n").map(|(_, b)| b).unwrap_or("");
        if !body.starts_with("before")
            || !body.contains(
                "MAIL FROM:<evil@x>\nRCPT TO:<demo@localhost>\nDATA\nSubject: smuggled\n\nsmuggled\n",
            )
        {
            problems.push(format!(
                "{subject}: delivered but not intact: {body:?}"
            ));
        }
    }
    assert_eq!(
        files.len(),
        accepted.len(),
        "one delivery per accepted outer message"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    sb.stop();
}

#[test]
fn bare_lf_in_data_is_refused_and_the_session_goes_on() {
    let mut sb = smtp_sandbox("smtpd_hostile_bare_lf", &[]);
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "lf.example");
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
    c.expect("DATA", "354 ");
    c.send(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.\r\n")
        .unwrap();
    assert_eq!(
        c.reply().unwrap().last(),
        "550 5.5.2 Error: bare <LF> received"
    );
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok");
    // A header line ended by a bare LF, too.
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
    c.expect("DATA", "354 ");
    c.send(b"Subject: bare lf 2\nX-A: b\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    assert_eq!(
        c.reply().unwrap().last(),
        "550 5.5.2 Error: bare <LF> received"
    );
    let r = c.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: clean\n\nall CRLF\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.expect("QUIT", "221 2.0.0 Bye");
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("clean"));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.messages("demo").len(), 1);
    sb.stop();
}

#[test]
fn long_lines_nul_bytes_and_bare_cr_lf_in_commands() {
    let mut sb = smtp_sandbox("smtpd_hostile_long_lines", &[]);
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "lines.example");
    // The limit is 2048 octets without CRLF: 2048 is a (bad) command, 2049 is too long.
    let at_limit = "X".repeat(2048);
    assert_eq!(
        c.cmd(&at_limit).last(),
        "500 5.5.2 Error: command not recognized"
    );
    let over = "X".repeat(2049);
    assert_eq!(c.cmd(&over).last(), "500 5.5.2 Error: line too long");
    assert_eq!(
        c.cmd(&format!("NOOP {}", "x".repeat(3000))).last(),
        "500 5.5.2 Error: line too long"
    );
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{}@example.net>", "a".repeat(5000)))
            .last(),
        "500 5.5.2 Error: line too long"
    );
    assert_eq!(
        c.cmd("RCPT TO:<demo@localhost>").last(),
        "503 5.5.1 Error: need MAIL command",
        "the long MAIL did not start a transaction"
    );
    // 256 KiB without a line end, then one: one reply, and the server is still there.
    let mut huge = vec![b'Y'; 256 * 1024];
    huge.extend_from_slice(b"\r\n");
    c.send(&huge).unwrap();
    assert_eq!(c.reply().unwrap().last(), "500 5.5.2 Error: line too long");
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok");
    nothing_pending(&mut c, Duration::from_millis(500), "the long lines");
    c.expect("QUIT", "221 ");

    // NUL bytes.
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "nul.example");
    c.send(b"NOOP\0\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(r.starts_with("500 5.5.2 "), "NOOP<NUL>: {r}");
    c.send(b"MAIL FROM:<a\0b@example.net>\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(r.starts_with("500 5.5.2 "), "MAIL with NUL: {r}");
    c.send(b"\0\0\0\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(r.starts_with("500 5.5.2 "), "NULs: {r}");
    assert_eq!(
        c.cmd("RCPT TO:<demo@localhost>").last(),
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok");
    nothing_pending(&mut c, Duration::from_millis(500), "the NUL lines");
    c.expect("QUIT", "221 ");

    // A bare CR inside a command is not a line end: one reply for the whole line, and it
    // is not an accepted MAIL followed by an accepted RCPT.
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "cr.example");
    c.send(b"MAIL FROM:<a@example.net>\rRCPT TO:<demo@localhost>\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert!(r.code >= 500, "MAIL..<CR>RCPT..: {r}");
    c.send(b"NOOP\rNOOP\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(
        r.code >= 500 || r.code == 250,
        "NOOP<CR>NOOP: one reply: {r}"
    );
    c.expect("HELP", "214 ");
    nothing_pending(&mut c, Duration::from_millis(500), "bare CR lines");
    // A bare LF ending a command: one reply (accepted or refused), session usable.
    c.send(b"NOOP\n").unwrap();
    let r = c.reply().unwrap();
    assert!(r.code == 250 || r.code >= 500, "NOOP<LF>: {r}");
    c.expect("HELP", "214 ");
    nothing_pending(&mut c, Duration::from_millis(500), "bare LF lines");
    c.expect("QUIT", "221 ");
    sb.stop();
}

#[test]
fn too_many_recipients() {
    let mut sb = Sandbox::new("smtpd_hostile_rcpt_limit");
    sb.set("smtpd_recipient_limit", "5");
    for i in 1..=6 {
        sb.add_user(&format!("r{i}"), "pw");
    }
    sb.start_smtp();
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "many.example");
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    for i in 1..=5 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<r{i}@localhost>")).last(),
            "250 2.1.5 Ok"
        );
    }
    assert_eq!(
        c.cmd("RCPT TO:<r6@localhost>").last(),
        "452 4.5.3 Error: too many recipients"
    );
    assert_eq!(
        c.cmd("RCPT TO:<r6@localhost>").last(),
        "452 4.5.3 Error: too many recipients"
    );
    let r = c.send_mail_data_only("Subject: five of you\n\nhi\n");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.expect("QUIT", "221 ");
    for i in 1..=5 {
        sb.wait_messages(&format!("r{i}"), 1, WAIT);
    }
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(sb.messages("r6").is_empty(), "the sixth got mail");
    sb.stop();
}

#[test]
fn hard_error_limit_disconnects() {
    let mut sb = smtp_sandbox(
        "smtpd_hostile_hard_errors",
        &[("smtpd_hard_error_limit", "3")],
    );
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "errors.example");
    for i in 1..=3 {
        assert_eq!(
            c.cmd(&format!("BOGUS{i}")).last(),
            "500 5.5.2 Error: command not recognized",
            "error {i}"
        );
    }
    // Like Postfix: the 421 follows the error that reached the limit, unasked.
    let r = c
        .reply_within(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no 421 after 3 errors: {e:?}"));
    assert_eq!(
        r.last(),
        "421 4.7.0 mail.sandbox.test Error: too many errors"
    );
    assert!(
        c.wait_closed(Duration::from_secs(5)).is_ok(),
        "the server closes after 421"
    );
    // A new client is served.
    let mut d = SmtpClient::ehlo(sb.smtp_port(), "errors.example");
    d.expect("NOOP", "250 2.0.0 Ok");
    d.expect("QUIT", "221 ");
    sb.stop();
}

#[test]
fn idle_timeout_says_421_and_closes() {
    let mut sb = smtp_sandbox("smtpd_hostile_idle_timeout", &[("smtpd_timeout", "2s")]);
    let port = sb.smtp_port();
    // Activity keeps a session alive past smtpd_timeout.
    let mut c = SmtpClient::ehlo(port, "idle.example");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok");
    }
    // Then silence.
    let t0 = Instant::now();
    let r = c
        .reply_within(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no 421 after 2 s idle: {e:?}"));
    let idle = t0.elapsed();
    assert_eq!(
        r.last(),
        "421 4.4.2 mail.sandbox.test Error: timeout exceeded"
    );
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(8),
        "{idle:?}"
    );
    assert!(c.wait_closed(Duration::from_secs(5)).is_ok());

    // Idle right after the greeting.
    let mut g = SmtpClient::open(port);
    let r = g.reply_within(Duration::from_secs(10)).unwrap();
    assert_eq!(
        r.last(),
        "421 4.4.2 mail.sandbox.test Error: timeout exceeded"
    );
    assert!(g.wait_closed(Duration::from_secs(5)).is_ok());

    // Idle in the middle of DATA: nothing is queued.
    let mut d = SmtpClient::ehlo(port, "idle.example");
    d.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    d.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
    d.expect("DATA", "354 ");
    d.send(b"Subject: never finished\r\n\r\nhalf a line")
        .unwrap();
    let r = d.reply_within(Duration::from_secs(10)).unwrap();
    assert_eq!(
        r.last(),
        "421 4.4.2 mail.sandbox.test Error: timeout exceeded"
    );
    assert!(d.wait_closed(Duration::from_secs(5)).is_ok());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sb.all_queue_files().is_empty(),
        "{:?}",
        sb.all_queue_files()
    );
    assert!(sb.messages("demo").is_empty());
    sb.stop();
}

#[test]
fn per_client_connection_limit() {
    let mut sb = smtp_sandbox(
        "smtpd_hostile_client_conn_limit",
        &[("smtpd_client_connection_count_limit", "3")],
    );
    let port = sb.smtp_port();
    let mut held: Vec<SmtpClient> = (0..3).map(|_| SmtpClient::open(port)).collect();
    let mut fourth = SmtpClient::connect(port).unwrap();
    let r = fourth.reply().unwrap();
    assert!(
        r.starts_with("421 4.7.0 mail.sandbox.test Error: too many connections"),
        "4th connection from 127.0.0.1: {r}"
    );
    assert!(fourth.wait_closed(Duration::from_secs(5)).is_ok());
    for c in held.iter_mut() {
        assert_eq!(
            c.cmd("NOOP").last(),
            "250 2.0.0 Ok",
            "the first three go on"
        );
    }
    // One leaves: there is room again.
    let mut gone = held.pop().unwrap();
    gone.expect("QUIT", "221 ");
    let _ = gone.wait_closed(Duration::from_secs(5));
    let mut again = None;
    for _ in 0..50 {
        let mut c = SmtpClient::connect(port).unwrap();
        let r = c.reply().unwrap();
        if r.code == 220 {
            again = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut again = again.expect("a connection after one of three left");
    again.expect("QUIT", "221 ");
    for c in held.iter_mut() {
        c.expect("QUIT", "221 ");
    }
    sb.stop();
}

#[test]
fn global_connection_limit() {
    let mut sb = smtp_sandbox(
        "smtpd_hostile_global_conn_limit",
        &[
            ("smtpd_connection_limit", "2"),
            ("smtpd_client_connection_count_limit", "0"),
        ],
    );
    let port = sb.smtp_port();
    let mut held: Vec<SmtpClient> = (0..2).map(|_| SmtpClient::open(port)).collect();
    let mut third = SmtpClient::connect(port).unwrap();
    let r = third.reply().unwrap();
    assert!(
        r.starts_with("421 4.7.0 mail.sandbox.test Error: too many connections"),
        "3rd connection with smtpd_connection_limit = 2: {r}"
    );
    assert!(third.wait_closed(Duration::from_secs(5)).is_ok());
    for c in held.iter_mut() {
        c.expect("NOOP", "250 2.0.0 Ok");
        c.expect("QUIT", "221 ");
    }
    sb.stop();
}

/// Sets SO_LINGER to 0 so that dropping the stream sends a reset.
fn reset_on_close(c: &SmtpClient) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&c.stream, nix::sys::socket::sockopt::Linger, &l).unwrap();
}

#[test]
fn client_vanishing_mid_data_leaves_nothing_behind() {
    let mut sb = smtp_sandbox("smtpd_hostile_vanishing", &[]);
    let port = sb.smtp_port();
    let smtpd = sb.pids_of("smtpd");
    for (how, reset) in [("close", false), ("reset", true)] {
        let mut c = SmtpClient::ehlo(port, "vanish.example");
        c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
        c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
        c.expect("DATA", "354 ");
        let mut half = format!("Subject: half by {how}\r\n\r\n").into_bytes();
        half.extend_from_slice(&b"0123456789abcdef0123456789abcdef\r\n".repeat(3000));
        c.send(&half).unwrap();
        if reset {
            reset_on_close(&c);
        }
        drop(c);
    }
    // BDAT: half a chunk.
    let mut c = SmtpClient::ehlo(port, "vanish.example");
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<demo@localhost>", "250 2.1.5 Ok");
    c.send(b"BDAT 100000\r\nSubject: half a chunk\r\n\r\nsome")
        .unwrap();
    drop(c);
    std::thread::sleep(Duration::from_secs(1));
    sb.wait_for("spool/incoming to be empty", Duration::from_secs(5), || {
        sb.queue_files("incoming").is_empty()
    });
    assert!(
        sb.all_queue_files().is_empty(),
        "{:?}",
        sb.all_queue_files()
    );
    // smtpd is still there, and serves the next client.
    let mut d = SmtpClient::ehlo(port, "next.example");
    let r = d.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: complete\n\nwhole\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    d.expect("QUIT", "221 ");
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("complete"));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.messages("demo").len(), 1);
    // The smtpd processes serving before are the ones serving now (master may have
    // started the other smtpd services' processes since: they do not count).
    let now = sb.pids_of("smtpd");
    assert!(
        smtpd.iter().all(|p| now.contains(p)),
        "smtpd did not crash: {smtpd:?} then {now:?}"
    );
    sb.stop();
}

#[test]
fn ten_thousand_pipelined_noops() {
    let mut sb = smtp_sandbox("smtpd_hostile_noop_flood", &[]);
    let port = sb.smtp_port();
    let smtpd = sb.pids_of("smtpd");
    let c = SmtpClient::ehlo(port, "flood.example");
    let mut writer = c.stream.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let all = b"NOOP\r\n".repeat(10_000);
        // The write timeout (20 s) bounds this if the server stops reading.
        writer.write_all(&all).and_then(|()| writer.flush())
    });
    let mut c = c;
    c.set_reply_timeout(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut ok, mut other, mut closed) = (0usize, Vec::new(), false);
    while ok + other.len() < 10_000 && Instant::now() < deadline {
        match c.reply() {
            Ok(r) if r.last() == "250 2.0.0 Ok" => ok += 1,
            Ok(r) => {
                let last = r.code == 421;
                other.push(r.to_string());
                if last {
                    closed = c.wait_closed(Duration::from_secs(5)).is_ok();
                    break;
                }
            }
            Err(SmtpEnd::Closed(_)) | Err(SmtpEnd::Io(_)) => {
                closed = true;
                break;
            }
            Err(e) => panic!("after {ok} replies: {e:?}"),
        }
    }
    let _ = w.join();
    assert!(
        ok == 10_000 || closed,
        "neither all 10000 answered nor a disconnect: {ok} ok, others {:?}",
        other.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        other
            .iter()
            .all(|r| r.starts_with("421 ") || r.starts_with("250 ")),
        "{:?}",
        other.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "10000 pipelined NOOPs: {ok} answered 250, {} other replies, closed={closed}",
        other.len()
    );
    // Still alive, same process.
    let mut d = SmtpClient::ehlo(port, "after.example");
    d.expect("NOOP", "250 2.0.0 Ok");
    d.expect("QUIT", "221 ");
    // The smtpd processes serving before are the ones serving now (master may have
    // started the other smtpd services' processes since: they do not count).
    let now = sb.pids_of("smtpd");
    assert!(
        smtpd.iter().all(|p| now.contains(p)),
        "smtpd did not crash: {smtpd:?} then {now:?}"
    );
    sb.stop();
}

#[test]
fn a_client_that_talks_before_the_greeting_is_refused() {
    let mut sb = Sandbox::new("a_client_that_talks_before_the_greeting");
    sb.set("smtpd_greet_delay", "2s");
    sb.start();
    sb.wait_for("smtpd running", Duration::from_secs(20), || {
        !sb.pids_of("smtpd").is_empty()
    });
    // A polite client waits for the 220 and is served.
    let mut polite = SmtpClient::connect(sb.smtp_port()).unwrap();
    let started = Instant::now();
    let g = polite.reply().unwrap();
    assert_eq!(g.code, 220, "{g}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the greeting waited"
    );
    assert_eq!(polite.cmd("EHLO polite.example").code, 250);
    // An impatient one speaks first and is shown the door.
    let mut rude = SmtpClient::connect(sb.smtp_port()).unwrap();
    rude.send(b"EHLO rude.example\r\nMAIL FROM:<spam@example.net>\r\n")
        .unwrap();
    let r = rude.reply().unwrap();
    assert_eq!(r.code, 554, "{r}");
    assert!(r.last().contains("5.5.1"), "{r}");
    assert!(
        rude.wait_closed(Duration::from_secs(10)).is_ok(),
        "and disconnected"
    );
    assert!(sb.log().contains("sent data before the greeting"));
    sb.stop();
}
