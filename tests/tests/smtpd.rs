//! smtpd end to end, driven by real clients: Python's smtplib, swaks, lettre, Postfix's
//! smtp-source, and raw sockets for what no client library will send. Every connection is
//! to 127.0.0.1; every wait is bounded.
#![allow(clippy::unwrap_used)]

use petrel_tests::{
    header, installed, python, queued_id, run_limited, Sandbox, SmtpClient, SmtpReply,
};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A started sandbox with smtpd, after `settings` were applied.
fn smtp_sandbox(name: &str, settings: &[(&str, &str)]) -> Sandbox {
    let mut sb = Sandbox::new(name);
    for (k, v) in settings {
        sb.set(k, v);
    }
    sb.start_smtp();
    sb
}

use petrel_tests::show;

/// Lines `name|code|text` printed by the Python scripts below (text: "\n" as "\\n").
fn py_replies(out: &Output) -> HashMap<String, (u16, String)> {
    assert!(out.status.success(), "python failed: {}", show(out));
    petrel_tests::parse_replies(&out.stdout)
}

fn py_get<'a>(m: &'a HashMap<String, (u16, String)>, name: &str) -> &'a (u16, String) {
    m.get(name)
        .unwrap_or_else(|| panic!("python printed no {name:?}: {m:?}"))
}

/// The body of a message (after the first empty line).
fn body(msg: &str) -> &str {
    msg.split_once("\n\n").map(|(_, b)| b).unwrap_or("")
}

/// The message in `msgs` whose Subject is `subject`.
fn by_subject<'a>(msgs: &'a [String], subject: &str) -> &'a String {
    msgs.iter()
        .find(|m| header(m, "Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message with Subject {subject:?} in {msgs:#?}"))
}

const PY_PRELUDE: &str = r#"
import smtplib, socket, sys
port = int(sys.argv[1])
def p(name, r):
    text = r[1].decode("utf-8", "replace") if isinstance(r[1], bytes) else str(r[1])
    print("%s|%d|%s" % (name, r[0], text.replace("\n", "\\n")), flush=True)
"#;

const PY_FEATURES: &str = r#"
s = smtplib.SMTP(timeout=30, local_hostname="client.example")
p("greeting", s.connect("127.0.0.1", port))
p("ehlo", s.ehlo())
for f in ["pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "dsn", "chunking", "vrfy", "starttls"]:
    p("feature-" + f, (1 if s.has_extn(f) else 0, s.esmtp_features.get(f, "")))
p("helo", s.helo("client.example"))
p("quit", s.quit())
"#;

#[test]
fn smtplib_sees_the_greeting_and_ehlo_features() {
    let mut sb = smtp_sandbox("smtpd_smtplib_ehlo_features", &[]);
    let port = sb.smtp_port().to_string();
    let out = python(
        &format!("{PY_PRELUDE}{PY_FEATURES}"),
        &[&port],
        CLIENT_LIMIT,
    );
    let m = py_replies(&out);
    assert_eq!(
        py_get(&m, "greeting"),
        &(220, "mail.sandbox.test ESMTP Petrel".to_string())
    );
    let (code, ehlo) = py_get(&m, "ehlo");
    assert_eq!(*code, 250, "{ehlo}");
    let lines: Vec<&str> = ehlo.lines().collect();
    assert_eq!(lines.first(), Some(&"mail.sandbox.test"), "{ehlo}");
    assert_eq!(lines.last(), Some(&"CHUNKING"), "{ehlo}");
    for f in [
        "pipelining",
        "size",
        "8bitmime",
        "enhancedstatuscodes",
        "smtputf8",
        "dsn",
        "chunking",
    ] {
        assert_eq!(
            py_get(&m, &format!("feature-{f}")).0,
            1,
            "{f} advertised: {ehlo}"
        );
    }
    assert_eq!(
        py_get(&m, "feature-size").1,
        "10240000",
        "SIZE = message_size_limit's default"
    );
    assert_eq!(
        py_get(&m, "feature-starttls").0,
        1,
        "the sandbox has a certificate, so port 25 offers STARTTLS: {ehlo}"
    );
    assert_eq!(py_get(&m, "helo"), &(250, "mail.sandbox.test".to_string()));
    assert_eq!(py_get(&m, "quit"), &(221, "2.0.0 Bye".to_string()));
    sb.stop();
}

const PY_SEND: &str = r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
p("ehlo", s.ehlo())
p("mail", s.mail("sender@example.net"))
p("rcpt", s.rcpt("demo@localhost"))
p("data", s.data(b"From: Sender <sender@example.net>\r\nTo: demo@localhost\r\nSubject: via smtplib\r\nMessage-ID: <smtplib-1@example.net>\r\n\r\nhello over SMTP\r\n.leading dot line\r\n..two dots\r\nlast line\r\n"))
refused = s.sendmail("sender@example.net", ["demo@localhost", "alice@localhost", "bob@localhost"], b"Subject: to three\r\n\r\nthree of you\r\n")
p("sendmail-refused", (0, repr(refused)))
p("quit", s.quit())
"#;

#[test]
fn smtplib_sendmail_delivers_with_a_received_header() {
    let mut sb = Sandbox::new("smtpd_smtplib_sendmail");
    sb.add_user("alice", "pw-a");
    sb.add_user("bob", "pw-b");
    sb.start_smtp();
    let port = sb.smtp_port().to_string();
    let out = python(&format!("{PY_PRELUDE}{PY_SEND}"), &[&port], CLIENT_LIMIT);
    let m = py_replies(&out);
    assert_eq!(py_get(&m, "mail"), &(250, "2.1.0 Ok".to_string()));
    assert_eq!(py_get(&m, "rcpt"), &(250, "2.1.5 Ok".to_string()));
    let (code, data) = py_get(&m, "data");
    assert_eq!(*code, 250, "{data}");
    let id = data
        .strip_prefix("2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("queued reply: {data}"))
        .trim()
        .to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    assert_eq!(py_get(&m, "sendmail-refused").1, "{}");
    assert_eq!(py_get(&m, "quit"), &(221, "2.0.0 Bye".to_string()));

    let msgs = sb.wait_messages("demo", 2, WAIT);
    let msg = by_subject(&msgs, "via smtplib");
    assert_eq!(
        header(msg, "Return-Path").as_deref(),
        Some("<sender@example.net>")
    );
    assert_eq!(
        header(msg, "Delivered-To").as_deref(),
        Some("demo@localhost")
    );
    let received = header(msg, "Received").unwrap();
    let want = format!(
        "from client.example (unknown [127.0.0.1]) by mail.sandbox.test (Petrel) with ESMTP id {id} for <demo@localhost>; "
    );
    assert!(
        received.starts_with(&want),
        "Received: {received}\nwanted it to start with: {want}\n{msg}"
    );
    let date = &received[want.len()..];
    assert!(
        date.contains(':') && date.chars().any(|c| c.is_ascii_digit()),
        "a date after the ';': {received}"
    );
    assert!(
        msg.contains("\nReceived: from client.example (unknown [127.0.0.1])\n\t")
            || msg.contains("\nReceived: from client.example (unknown [127.0.0.1])\n "),
        "the Received header is folded like Postfix's: {msg}"
    );
    assert_eq!(
        header(msg, "Message-ID").as_deref(),
        Some("<smtplib-1@example.net>")
    );
    assert_eq!(
        body(msg),
        "hello over SMTP\n.leading dot line\n..two dots\nlast line\n",
        "dot-stuffing undone, CRLF → LF: {msg:?}"
    );
    for user in ["alice", "bob"] {
        let got = sb.wait_messages(user, 1, WAIT);
        assert_eq!(header(&got[0], "Subject").as_deref(), Some("to three"));
        assert_eq!(body(&got[0]), "three of you\n");
    }
    by_subject(&msgs, "to three");
    let log = sb.log();
    assert!(log.contains("connect from unknown[127.0.0.1]"), "{log}");
    assert!(
        log.contains(&format!("{id}: client=unknown[127.0.0.1]")),
        "{log}"
    );
    assert!(log.contains("disconnect from unknown[127.0.0.1]"), "{log}");
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.messages("demo").len(), 2);
    assert_eq!(sb.messages("alice").len(), 1);
    sb.stop();
}

const PY_RSET: &str = r#"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
p("ehlo", s.ehlo())
p("mail", s.mail("sender@example.net"))
p("rcpt", s.rcpt("demo@localhost"))
p("rset", s.rset())
p("rcpt-after-rset", s.rcpt("demo@localhost"))
p("mail2", s.mail("sender@example.net"))
p("rcpt-unknown", s.rcpt("nosuchuser@localhost"))
p("rcpt-alice", s.rcpt("alice@localhost"))
p("data", s.data(b"Subject: after rset\r\n\r\nonly alice\r\n"))
p("vrfy", s.verify("demo"))
p("vrfy-unknown", s.verify("nosuchuser"))
p("noop", s.noop())
p("quit", s.quit())
"#;

#[test]
fn smtplib_rset_vrfy_and_unknown_user() {
    let mut sb = Sandbox::new("smtpd_smtplib_rset_vrfy");
    sb.add_user("alice", "pw-a");
    sb.start_smtp();
    let port = sb.smtp_port().to_string();
    let out = python(&format!("{PY_PRELUDE}{PY_RSET}"), &[&port], CLIENT_LIMIT);
    let m = py_replies(&out);
    assert_eq!(py_get(&m, "rset"), &(250, "2.0.0 Ok".to_string()));
    assert_eq!(
        py_get(&m, "rcpt-after-rset"),
        &(503, "5.5.1 Error: need MAIL command".to_string()),
        "RSET ends the transaction"
    );
    assert_eq!(py_get(&m, "mail2"), &(250, "2.1.0 Ok".to_string()));
    assert_eq!(
        py_get(&m, "rcpt-unknown"),
        &(
            550,
            "5.1.1 <nosuchuser@localhost>: Recipient address rejected: User unknown in local recipient table"
                .to_string()
        )
    );
    assert_eq!(py_get(&m, "rcpt-alice"), &(250, "2.1.5 Ok".to_string()));
    let (code, data) = py_get(&m, "data");
    assert!(
        *code == 250 && data.starts_with("2.0.0 Ok: queued as "),
        "{code} {data}"
    );
    for v in ["vrfy", "vrfy-unknown"] {
        let (code, text) = py_get(&m, v);
        assert!(
            *code == 252 && text.starts_with("2.0.0 "),
            "{v}: {code} {text}"
        );
    }
    assert_eq!(
        py_get(&m, "vrfy").1,
        py_get(&m, "vrfy-unknown").1,
        "VRFY must not tell users apart"
    );
    assert_eq!(py_get(&m, "noop"), &(250, "2.0.0 Ok".to_string()));
    let got = sb.wait_messages("alice", 1, WAIT);
    assert_eq!(header(&got[0], "Subject").as_deref(), Some("after rset"));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sb.messages("demo").is_empty(),
        "the recipient given before RSET got mail"
    );
    let log = sb.log();
    assert!(
        log.contains(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nosuchuser@localhost>: Recipient address rejected: User unknown in local recipient table; from=<sender@example.net> to=<nosuchuser@localhost> proto=ESMTP helo=<client.example>"
        ),
        "{log}"
    );
    sb.stop();
}

#[test]
fn raw_dialogue_replies_errors_and_log_lines() {
    let mut sb = smtp_sandbox("smtpd_raw_dialogue", &[("message_size_limit", "2000000")]);
    let port = sb.smtp_port();

    // Greeting and EHLO, byte for byte.
    let mut c = SmtpClient::connect(port).unwrap();
    let g = c.reply().unwrap();
    assert_eq!(g.lines, vec!["220 mail.sandbox.test ESMTP Petrel"]);
    let e = c.cmd("EHLO client.example");
    assert_eq!(e.code, 250, "{e}");
    assert_eq!(e.lines[0], "250-mail.sandbox.test", "{e}");
    assert_eq!(e.last(), "250 CHUNKING", "{e}");
    let got: HashSet<&str> = e.texts().into_iter().collect();
    let want: HashSet<&str> = [
        "mail.sandbox.test",
        "PIPELINING",
        "STARTTLS",
        "SIZE 2000000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "DSN",
        "CHUNKING",
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{e}");
    assert!(
        e.lines[..e.lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("250-")),
        "{e}"
    );

    // Simple commands.
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("RSET").last(), "250 2.0.0 Ok");
    c.expect("HELP", "214 2.0.0 ");
    c.expect("VRFY demo", "252 2.0.0 ");
    c.expect("EXPN staff", "502 5.5.1 ");

    // Errors (fewer than smtpd_hard_error_limit = 20), each leaving the session usable.
    assert_eq!(
        c.cmd("XYZZY").last(),
        "500 5.5.2 Error: command not recognized"
    );
    c.expect("MAIL FROM:<sender@example.net", "501 5.5.4 Syntax: ");
    c.expect("MAIL FROM:sender@example.net", "501 5.5.4 Syntax: ");
    assert_eq!(
        c.cmd("RCPT TO:<demo@localhost>").last(),
        "503 5.5.1 Error: need MAIL command"
    );
    // DATA with no MAIL: Postfix 3.x says "need RCPT command"; "need MAIL command" is the
    // other reading of the spec. Either, as long as it is 503 5.5.1.
    let d = c.cmd("DATA");
    assert!(
        [
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need RCPT command"
        ]
        .contains(&d.last()),
        "DATA without MAIL: {d}"
    );
    c.expect("MAIL FROM:<sender@example.net> FOO=BAR", "555 5.5.4 ");
    c.expect("MAIL FROM:<sender@example.net> BODY=9BIT", "555 5.5.4 ");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.net> SIZE=2000001").last(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    c.expect("MAIL FROM:<jörg@example.net>", "553 5.6.7 ");
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok", "still usable");

    // A transaction with every ESMTP parameter we advertise.
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.net> SIZE=1000 BODY=8BITMIME RET=FULL ENVID=raw-1")
            .last(),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<other@example.net>").last(),
        "503 5.5.1 Error: nested MAIL command"
    );
    // DATA after MAIL with no RCPT: the spec's 503 "need RCPT command"; Postfix 3.x says
    // "554 5.5.1 Error: no valid recipients" here.
    let d = c.cmd("DATA");
    assert!(
        [
            "503 5.5.1 Error: need RCPT command",
            "554 5.5.1 Error: no valid recipients"
        ]
        .contains(&d.last()),
        "DATA after MAIL without RCPT: {d}"
    );
    assert_eq!(
        c.cmd("RCPT TO:<demo@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;demo@localhost")
            .last(),
        "250 2.1.5 Ok"
    );
    c.expect("RCPT TO:<dömé@localhost>", "553 5.6.7 ");
    assert_eq!(c.cmd("DATA").last(), "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"Subject: raw one\r\n\r\n8bit: \xc3\xa9t\xc3\xa9\r\n")
        .unwrap();
    c.send(b".\r\n").unwrap();
    let q = c.reply().unwrap();
    assert!(q.starts_with("250 2.0.0 Ok: queued as "), "{q}");
    let id1 = queued_id(&q).unwrap();

    // SMTPUTF8: a UTF-8 recipient is accepted once the client asks for it (unknown user,
    // so refused as such, not as a syntax error).
    assert_eq!(
        c.cmd("MAIL FROM:<jörg@example.net> SMTPUTF8").last(),
        "250 2.1.0 Ok"
    );
    c.expect("RCPT TO:<dömé@localhost>", "550 5.1.1 ");
    assert_eq!(c.cmd("RSET").last(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("QUIT").last(), "221 2.0.0 Bye");
    assert!(
        c.wait_closed(Duration::from_secs(5)).is_ok(),
        "closed after QUIT"
    );

    // HELO: plain SMTP, and the Received header says so.
    let mut h = SmtpClient::open(port);
    assert_eq!(
        h.cmd("HELO old.example").lines,
        vec!["250 mail.sandbox.test"]
    );
    let q = h.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: raw two\n\nover HELO\n",
    );
    assert!(q.starts_with("250 2.0.0 Ok: queued as "), "{q}");
    let id2 = queued_id(&q).unwrap();
    h.expect("QUIT", "221 2.0.0 Bye");

    // A clean session for the disconnect line's counters.
    let mut d = SmtpClient::ehlo(port, "counter.example");
    let q = d.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: raw three\n\ncounted\n",
    );
    assert!(q.starts_with("250 2.0.0 Ok: queued as "), "{q}");
    d.expect("QUIT", "221 2.0.0 Bye");
    let _ = d.wait_closed(Duration::from_secs(5));

    let msgs = sb.wait_messages("demo", 3, WAIT);
    let one = by_subject(&msgs, "raw one");
    assert!(
        header(one, "Received")
            .unwrap()
            .contains(&format!("with ESMTP id {id1} for <demo@localhost>;")),
        "{one}"
    );
    assert!(
        body(one).contains("8bit: été"),
        "8BITMIME body intact: {one}"
    );
    let two = by_subject(&msgs, "raw two");
    let r2 = header(two, "Received").unwrap();
    assert!(
        r2.starts_with(&format!(
            "from old.example (unknown [127.0.0.1]) by mail.sandbox.test (Petrel) with SMTP id {id2} for <demo@localhost>; "
        )),
        "{r2}"
    );
    sb.wait_for("the disconnect line", WAIT, || {
        sb.log().contains(
            "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        )
    });
    sb.stop();
}

#[test]
fn oversized_message_is_refused_after_data_and_the_session_goes_on() {
    let mut sb = smtp_sandbox("smtpd_oversized", &[("message_size_limit", "20000")]);
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "big.example");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.net> SIZE=30000").last(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    // No SIZE given: the limit is enforced on the data itself.
    let big = format!("Subject: too big\n\n{}", "0123456789abcdef\n".repeat(3000));
    let r = c.send_mail("sender@example.net", &["demo@localhost"], &big);
    assert_eq!(
        r.last(),
        "552 5.3.4 Message size exceeds fixed limit",
        "{r}"
    );
    assert_eq!(c.cmd("NOOP").last(), "250 2.0.0 Ok", "the session goes on");
    let r = c.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: small\n\nfits\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.expect("QUIT", "221 2.0.0 Bye");
    let msgs = sb.wait_messages("demo", 1, WAIT);
    assert_eq!(header(&msgs[0], "Subject").as_deref(), Some("small"));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sb.messages("demo").len(),
        1,
        "the big one was not delivered"
    );
    sb.stop();
}

#[test]
fn relay_rules_trusted_network_relay_domains_and_local_users() {
    // The sandbox trusts 127.0.0.0/8: any domain is accepted at RCPT (we RSET before DATA:
    // nothing is ever sent anywhere).
    let mut sb = smtp_sandbox("smtpd_relay_rules_trusted", &[]);
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "trusted.example");
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<someone@other.test>").last(), "250 2.1.5 Ok");
    assert_eq!(c.cmd("RSET").last(), "250 2.0.0 Ok");
    // Local domains still insist on a known user, from anywhere.
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<nosuchuser@mail.sandbox.test>").last(),
        "550 5.1.1 <nosuchuser@mail.sandbox.test>: Recipient address rejected: User unknown in local recipient table"
    );
    c.expect("RCPT TO:<demo@localhost.sandbox.test>", "250 2.1.5 Ok");
    c.expect("RCPT TO:<Postmaster>", "250 2.1.5 Ok");
    c.expect("RSET", "250 2.0.0 Ok");
    c.expect("QUIT", "221 ");
    sb.stop();

    // A stranger: only mydestination and relay_domains.
    let mut sb = smtp_sandbox(
        "smtpd_relay_rules_stranger",
        &[
            ("mynetworks", "10.255.255.0/24"),
            ("relay_domains", "relay.test"),
        ],
    );
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "stranger.example");
    c.expect("MAIL FROM:<sender@example.net>", "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<someone@other.test>").last(),
        "554 5.7.1 <someone@other.test>: Relay access denied"
    );
    assert_eq!(c.cmd("RCPT TO:<someone@relay.test>").last(), "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<demo@localhost>").last(), "250 2.1.5 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<nosuchuser@localhost>").last(),
        "550 5.1.1 <nosuchuser@localhost>: Recipient address rejected: User unknown in local recipient table"
    );
    c.expect("RSET", "250 2.0.0 Ok");
    c.expect("QUIT", "221 ");
    let log = sb.log();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <someone@other.test>: Relay access denied; from=<sender@example.net> to=<someone@other.test> proto=ESMTP helo=<stranger.example>"),
        "{log}"
    );
    assert!(sb.all_queue_files().is_empty());
    sb.stop();
}

/// A user whose home directory does not exist: delivery defers (as in
/// queue_and_delivery.rs).
fn homeless_user(sb: &Sandbox, name: &str) {
    sb.add_user(name, "pw");
    std::fs::remove_dir_all(sb.dir.join("home").join(name)).unwrap();
}

#[test]
fn dsn_parameters_are_kept_and_honoured_by_bounces() {
    let mut sb = Sandbox::new("smtpd_dsn_parameters");
    sb.set("minimal_backoff_time", "1s");
    sb.set("maximal_backoff_time", "1s");
    sb.set("queue_run_delay", "1s");
    sb.set("maximal_queue_lifetime", "2s");
    homeless_user(&sb, "erin");
    homeless_user(&sb, "frank");
    sb.start_smtp();
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "dsn.example");
    c.expect(
        "MAIL FROM:<demo@localhost> RET=HDRS ENVID=petrel-env-1",
        "250 2.1.0 Ok",
    );
    c.expect(
        "RCPT TO:<erin@localhost> NOTIFY=FAILURE,DELAY ORCPT=rfc822;Erin@Original.Example",
        "250 2.1.5 Ok",
    );
    c.expect("DATA", "354 ");
    c.send(b"Subject: dsn probe\r\nX-Probe: headers only\r\n\r\nBODY-MUST-NOT-COME-BACK\r\n.\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    // NOTIFY=NEVER: expires silently.
    c.expect("MAIL FROM:<demo@localhost>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<frank@localhost> NOTIFY=NEVER", "250 2.1.5 Ok");
    let r = c.send_mail_data("Subject: never tell\n\nquiet\n");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.expect("QUIT", "221 ");

    let m = &sb.wait_messages("demo", 1, Duration::from_secs(60))[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert!(m.contains("Original-Envelope-Id: petrel-env-1\n"), "{m}");
    assert!(
        m.contains("Final-Recipient: rfc822; erin@localhost\n"),
        "{m}"
    );
    assert!(
        m.contains("Original-Recipient: rfc822; Erin@Original.Example\n"),
        "ORCPT kept as given: {m}"
    );
    assert!(m.contains("text/rfc822-headers"), "RET=HDRS: {m}");
    assert!(m.contains("X-Probe: headers only"), "{m}");
    assert!(
        !m.contains("BODY-MUST-NOT-COME-BACK"),
        "RET=HDRS returns no body: {m}"
    );
    assert!(!m.contains("frank@localhost"), "{m}");
    sb.wait_for("frank's message to expire", Duration::from_secs(60), || {
        let log = sb.log();
        log.lines()
            .any(|l| l.contains("to=<frank@localhost>") && l.contains("status=expired"))
    });
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sb.messages("demo").len(),
        1,
        "NOTIFY=NEVER: no bounce for frank"
    );
    sb.stop();
}

/// DATA and a message on a client that already has MAIL and RCPT.
trait SendData {
    fn send_mail_data(&mut self, message: &str) -> SmtpReply;
}

impl SendData for SmtpClient {
    fn send_mail_data(&mut self, message: &str) -> SmtpReply {
        self.expect("DATA", "354 ");
        self.send(&petrel_tests::dot_stuff(message)).unwrap();
        self.reply().unwrap()
    }
}

#[test]
fn cleanup_unavailable_is_a_temporary_error() {
    let mut sb = smtp_sandbox("smtpd_cleanup_unavailable", &[]);
    let sock = sb.dir.join("spool/private/cleanup");
    let away = sb.dir.join("spool/private/cleanup.away");
    assert!(sock.exists(), "{}", sock.display());
    std::fs::rename(&sock, &away).unwrap();
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "tempfail.example");
    // Postfix says 451 4.3.0 where it finds out (MAIL, RCPT, DATA or the final dot).
    let mut replies = Vec::new();
    let mut r = c.cmd("MAIL FROM:<sender@example.net>");
    replies.push(r.to_string());
    if r.code == 250 {
        r = c.cmd("RCPT TO:<demo@localhost>");
        replies.push(r.to_string());
    }
    if r.code == 250 {
        r = c.cmd("DATA");
        replies.push(r.to_string());
    }
    if r.code == 354 {
        c.send(b"Subject: not now\r\n\r\nlater\r\n.\r\n").unwrap();
        r = c.reply().unwrap();
        replies.push(r.to_string());
    }
    assert!(r.starts_with("451 4.3.0 "), "replies: {replies:?}");
    assert_eq!(c.cmd("RSET").last(), "250 2.0.0 Ok", "the session goes on");
    c.expect("QUIT", "221 ");
    std::fs::rename(&away, &sock).unwrap();
    // Back again: a new session queues mail.
    let mut d = SmtpClient::ehlo(sb.smtp_port(), "tempfail.example");
    let r = d.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: now\n\nworks again\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    d.expect("QUIT", "221 ");
    let msgs = sb.wait_messages("demo", 1, WAIT);
    assert_eq!(header(&msgs[0], "Subject").as_deref(), Some("now"));
    sb.stop();
}

const PY_BDAT: &str = r#"
def recv_reply(f):
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise SystemExit("connection closed; got %r" % lines)
        lines.append(l.decode("utf-8", "replace").rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return lines
s = socket.create_connection(("127.0.0.1", port), timeout=30)
f = s.makefile("rb")
def cmd(name, data):
    s.sendall(data)
    r = recv_reply(f)
    print("%s|%s|%s" % (name, r[-1][:3], "\\n".join(r)), flush=True)
    return r
print("greeting|%s|%s" % ("220", "\\n".join(recv_reply(f))), flush=True)
cmd("ehlo", b"EHLO bdat.example\r\n")
cmd("mail", b"MAIL FROM:<sender@example.net>\r\n")
cmd("rcpt", b"RCPT TO:<demo@localhost>\r\n")
# Chunk 1 ends in the middle of a CRLF; chunk 2 has lines that look like DATA's end and
# dot-stuffing, which BDAT must leave alone.
c1 = b"Subject: chunked\r\nX-Chunks: 3\r\n\r\nfirst chunk\r"
c2 = b"\n.\r\n..two dots stay two\r\n.\r\nafter a dot line\r\n"
c3 = b"last chunk\r\n"
cmd("bdat1", b"BDAT %d\r\n" % len(c1) + c1)
cmd("bdat2", b"BDAT %d\r\n" % len(c2) + c2)
cmd("bdat3", b"BDAT %d LAST\r\n" % len(c3) + c3)
# Pipelined: MAIL, RCPT, BDAT, BDAT LAST in one write; four replies.
c4 = b"Subject: pipelined chunks\r\n\r\none"
c5 = b" two\r\n"
s.sendall(b"MAIL FROM:<sender@example.net>\r\nRCPT TO:<demo@localhost>\r\n" + b"BDAT %d\r\n" % len(c4) + c4 + b"BDAT %d LAST\r\n" % len(c5) + c5)
for name in ["p-mail", "p-rcpt", "p-bdat1", "p-bdat2"]:
    r = recv_reply(f)
    print("%s|%s|%s" % (name, r[-1][:3], "\\n".join(r)), flush=True)
# BDAT 0 LAST after a chunk, and BDAT without a transaction.
cmd("bdat-no-mail", b"BDAT 3 LAST\r\nabc")
cmd("noop", b"NOOP\r\n")
cmd("quit", b"QUIT\r\n")
"#;

#[test]
fn bdat_chunks_from_a_raw_python_socket() {
    let mut sb = smtp_sandbox("smtpd_bdat_python", &[]);
    let port = sb.smtp_port().to_string();
    let out = python(&format!("{PY_PRELUDE}{PY_BDAT}"), &[&port], CLIENT_LIMIT);
    let m = py_replies(&out);
    assert!(py_get(&m, "ehlo").1.contains("250 CHUNKING"));
    assert_eq!(py_get(&m, "mail").1, "250 2.1.0 Ok");
    assert_eq!(py_get(&m, "rcpt").1, "250 2.1.5 Ok");
    let c1 = "Subject: chunked\r\nX-Chunks: 3\r\n\r\nfirst chunk\r".len();
    let c2 = "\n.\r\n..two dots stay two\r\n.\r\nafter a dot line\r\n".len();
    assert_eq!(
        py_get(&m, "bdat1").1,
        format!("250 2.0.0 Ok: {c1} octets received")
    );
    assert_eq!(
        py_get(&m, "bdat2").1,
        format!("250 2.0.0 Ok: {c2} octets received")
    );
    let last = &py_get(&m, "bdat3").1;
    assert!(last.starts_with("250 2.0.0 Ok: queued as "), "{last}");
    let id = last.trim_start_matches("250 2.0.0 Ok: queued as ").trim();
    assert_eq!(py_get(&m, "p-mail").1, "250 2.1.0 Ok");
    assert_eq!(py_get(&m, "p-rcpt").1, "250 2.1.5 Ok");
    assert_eq!(
        py_get(&m, "p-bdat1").1,
        format!(
            "250 2.0.0 Ok: {} octets received",
            "Subject: pipelined chunks\r\n\r\none".len()
        )
    );
    assert!(
        py_get(&m, "p-bdat2")
            .1
            .starts_with("250 2.0.0 Ok: queued as "),
        "{:?}",
        py_get(&m, "p-bdat2")
    );
    let nm = &py_get(&m, "bdat-no-mail").1;
    assert!(nm.starts_with("503 5.5.1 "), "BDAT without MAIL: {nm}");
    assert_eq!(
        py_get(&m, "noop").1,
        "250 2.0.0 Ok",
        "the 3 octets of the refused BDAT were skipped, not read as a command"
    );
    assert_eq!(py_get(&m, "quit").1, "221 2.0.0 Bye");

    let msgs = sb.wait_messages("demo", 2, WAIT);
    let one = by_subject(&msgs, "chunked");
    assert_eq!(
        body(one),
        "first chunk\n.\n..two dots stay two\n.\nafter a dot line\nlast chunk\n",
        "BDAT content is not unstuffed and CRLF split across chunks is one line end: {one:?}"
    );
    assert!(
        header(one, "Received")
            .unwrap()
            .contains(&format!("with ESMTP id {id} for <demo@localhost>;")),
        "{one}"
    );
    let two = by_subject(&msgs, "pipelined chunks");
    assert_eq!(body(two), "one two\n");
    sb.stop();
}

#[test]
fn swaks_plain_pipelined_data_file_and_dot_lines() {
    let Some(swaks) = installed(&["/usr/bin/swaks", "/usr/local/bin/swaks"]) else {
        eprintln!("SKIP: swaks is not installed (apt-get install swaks; make deps does)");
        return;
    };
    let mut sb = smtp_sandbox("smtpd_swaks", &[]);
    let port = sb.smtp_port().to_string();
    let swaks_run = |extra: &[&str]| -> Output {
        let mut c = Command::new(&swaks);
        c.args(["--server", "127.0.0.1", "--port", &port])
            .args(["--helo", "swaks.example", "--from", "sender@example.net"])
            .args(["--to", "demo@localhost", "--timeout", "30"])
            .args(extra);
        let out = run_limited(c, b"", CLIENT_LIMIT);
        assert!(out.status.success(), "swaks {extra:?}: {}", show(&out));
        out
    };
    // Plain.
    let out = swaks_run(&[
        "--header",
        "Subject: swaks plain",
        "--body",
        "hello from swaks",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("<-  250 2.0.0 Ok: queued as "), "{text}");
    assert!(text.contains("<-  221 2.0.0 Bye"), "{text}");
    // Pipelined.
    let out = swaks_run(&[
        "--pipeline",
        "--header",
        "Subject: swaks pipelined",
        "--body",
        "pipelined body",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("<-  250 2.0.0 Ok: queued as "), "{text}");
    // DATA from a file, with lines that need dot-stuffing.
    let file = sb.dir.join("swaks-message.eml");
    std::fs::write(
        &file,
        "Subject: swaks from file\r\nX-From-File: yes\r\n\r\nfile body\r\n.\r\n.dot line\r\nend\r\n",
    )
    .unwrap();
    swaks_run(&["--data", &format!("@{}", file.display())]);
    // --body with a line of just a dot (swaks stuffs it).
    swaks_run(&[
        "--header",
        "Subject: swaks dot body",
        "--body",
        "line1\\n.\\nline3\\n..two",
    ]);

    let msgs = sb.wait_messages("demo", 4, WAIT);
    let plain = by_subject(&msgs, "swaks plain");
    assert!(body(plain).starts_with("hello from swaks\n"), "{plain}");
    assert!(header(plain, "Received").unwrap().starts_with(
        "from swaks.example (unknown [127.0.0.1]) by mail.sandbox.test (Petrel) with ESMTP id "
    ));
    let piped = by_subject(&msgs, "swaks pipelined");
    assert!(body(piped).starts_with("pipelined body\n"), "{piped}");
    let file_msg = by_subject(&msgs, "swaks from file");
    assert_eq!(header(file_msg, "X-From-File").as_deref(), Some("yes"));
    assert!(
        body(file_msg).starts_with("file body\n.\n.dot line\nend\n"),
        "{file_msg:?}"
    );
    let dots = by_subject(&msgs, "swaks dot body");
    assert!(
        body(dots).starts_with("line1\n.\nline3\n..two\n"),
        "{dots:?}"
    );
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    assert_eq!(sb.messages("demo").len(), 4);
    sb.stop();
}

#[test]
fn lettre_sends_a_built_message() {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{Message, SmtpTransport, Transport};
    let mut sb = smtp_sandbox("smtpd_lettre", &[]);
    let email = Message::builder()
        .from("Lettre Sender <sender@example.net>".parse().unwrap())
        .to("Demo <demo@localhost>".parse().unwrap())
        .subject("via lettre")
        .header(ContentType::TEXT_PLAIN)
        .body(String::from(
            "hello from lettre\n.\nline after a lone dot\n",
        ))
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(sb.smtp_port())
        .hello_name(ClientId::Domain("lettre.example".into()))
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let resp = mailer
        .send(&email)
        .unwrap_or_else(|e| panic!("lettre: {e}"));
    let text: Vec<&str> = resp.message().collect();
    assert!(resp.is_positive(), "{text:?}");
    assert!(
        text.join(" ").starts_with("2.0.0 Ok: queued as "),
        "{text:?}"
    );
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("via lettre"));
    let from = header(m, "From").unwrap();
    assert!(
        from.contains("Lettre Sender") && from.ends_with("<sender@example.net>"),
        "{from}"
    );
    assert_eq!(
        header(m, "Return-Path").as_deref(),
        Some("<sender@example.net>")
    );
    assert!(header(m, "Received").unwrap().starts_with(
        "from lettre.example (unknown [127.0.0.1]) by mail.sandbox.test (Petrel) with ESMTP id "
    ));
    // lettre always ends DATA with CRLF "." CRLF after the message, so a message that
    // ends in CRLF arrives with one more empty line.
    assert_eq!(
        body(m),
        "hello from lettre\n.\nline after a lone dot\n\n",
        "{m:?}"
    );
    sb.stop();
}

#[test]
fn smtp_source_1000_messages_in_20_sessions_each_delivered_once() {
    let Some(source) = installed(&["/usr/sbin/smtp-source", "/usr/bin/smtp-source"]) else {
        eprintln!("SKIP: Postfix's smtp-source is not installed (apt-get install postfix)");
        return;
    };
    let mut sb = smtp_sandbox("smtpd_smtp_source_1000", &[]);
    let mut c = Command::new(source);
    c.args([
        "-s",
        "20",
        "-m",
        "1000",
        "-f",
        "sender@example.net",
        "-t",
        "demo@localhost",
        "-M",
        "source.example",
        &format!("127.0.0.1:{}", sb.smtp_port()),
    ]);
    let out = run_limited(c, b"", Duration::from_secs(300));
    assert!(out.status.success(), "smtp-source: {}", show(&out));
    sb.wait_messages("demo", 1000, Duration::from_secs(300));
    sb.wait_for("an empty queue", WAIT, || sb.all_queue_files().is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let files = sb.messages("demo");
    assert_eq!(files.len(), 1000, "exactly 1000 deliveries");
    // smtp-source's Message-Ids are not unique across sessions; the queue id in our
    // Received header is. smtp-source says HELO, so the header says "with SMTP".
    let mut ids = HashSet::new();
    for p in &files {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
        let rec = header(&text, "Received").unwrap();
        let id = rec
            .split_once(" with SMTP id ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no id in {rec}"))
            .to_string();
        assert!(
            rec.starts_with("from source.example (unknown [127.0.0.1])"),
            "{rec}"
        );
        assert!(ids.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(ids.len(), 1000);
    let log = sb.log();
    let clients = log
        .lines()
        .filter(|l| l.contains(": client=unknown[127.0.0.1]"))
        .count();
    assert_eq!(clients, 1000, "one queue id per message");
    sb.stop();
}

#[test]
fn notify_success_gets_a_delivery_report() {
    let mut sb = Sandbox::new("smtpd_notify_success");
    sb.start_smtp();
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "dsn.example");
    c.expect("MAIL FROM:<demo@localhost> ENVID=ok-1", "250 2.1.0 Ok");
    c.expect(
        "RCPT TO:<demo@localhost> NOTIFY=SUCCESS ORCPT=rfc822;Demo@Example.Org",
        "250 2.1.5 Ok",
    );
    let r = c.send_mail_data("Subject: tell me when it is there\n\nbody\n");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.expect("QUIT", "221 ");
    let msgs = sb.wait_messages("demo", 2, Duration::from_secs(30));
    let report = msgs
        .iter()
        .find(|m| header(m, "Subject").as_deref() == Some("Successful Mail Delivery Report"))
        .unwrap_or_else(|| panic!("no success report: {msgs:?}"));
    assert!(report.contains("Action: delivered\n"), "{report}");
    assert!(report.contains("Original-Envelope-Id: ok-1\n"), "{report}");
    assert!(
        report.contains("Original-Recipient: rfc822; Demo@Example.Org\n"),
        "{report}"
    );
    assert!(report.contains("text/rfc822-headers"), "{report}");
    sb.stop();
}
