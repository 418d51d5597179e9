//! Outbound delivery end to end (issue 5), on 127.0.0.1 only: qmgr routes recipients
//! (relayhost, transport_maps, `error:`), the `smtp` agent delivers over SMTP to peers
//! (a second Petrel as smart host with STARTTLS and AUTH, Postfix's smtp-sink, a scripted
//! server from `petrel_tests::peers`) and over LMTP into a real Dovecot; bounces, delay
//! notices and double bounces come back to the sandbox; kill -9 of the agent and of qmgr
//! mid-batch loses nothing.
//!
//! Next hops are IP literals (`[127.0.0.1]:PORT`), so nothing needs DNS; every port is
//! derived from the test's sandbox port base (base + 24 LMTP, base + 30… peers), below
//! 32768. Tests that need smtp-sink, Dovecot's LMTP server or openssl skip with a printed
//! reason when it is not installed; a missing `smtp` program is a failure (it is the
//! program under test).
#![allow(clippy::unwrap_used)]

use petrel_tests::peers::{Dovecot, PeerConfig, ScriptedPeer, SmtpSink, Transaction};
use petrel_tests::{header, installed, queued_id, run_limited, Sandbox, SmtpClient};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// A sandbox (not started) for outbound tests: the smtp agent must exist, and the `smtp`
/// and `lmtp` services are there (added when `petrel sandbox` did not write them).
fn outbound(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    assert!(
        sb.bin.join("smtp").exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        sb.bin.join("smtp").display()
    );
    let conf = std::fs::read_to_string(sb.etc.join("services.conf")).unwrap();
    let has = |svc: &str| {
        conf.lines()
            .any(|l| l.split_whitespace().next() == Some(svc))
    };
    if !has("smtp") {
        sb.add_service("smtp               unix  -       -      n      -      2       smtp");
    }
    if !has("lmtp") {
        sb.add_service("lmtp               unix  -       -      n      -      2       smtp");
    }
    sb
}

/// For a sandbox that sends to a second Petrel sandbox: both are born as
/// mail.sandbox.test, so this one takes another name and stops treating
/// mail.sandbox.test as local.
fn rename_client(sb: &Sandbox) {
    sb.set("myhostname", "client.sandbox.test");
    sb.set("mydestination", "$myhostname, localhost");
}

/// Writes ETC/transport and points transport_maps at it.
fn transport(sb: &Sandbox, lines: &[String]) {
    let p = sb.etc.join("transport");
    std::fs::write(&p, format!("{}\n", lines.join("\n"))).unwrap();
    sb.set("transport_maps", &format!("texthash:{}", p.display()));
}

/// `sendmail -i -f FROM TO...` with `msg` on stdin; must succeed.
fn send(sb: &Sandbox, from: &str, to: &[&str], msg: &str) {
    let mut args = vec!["-i", "-f", from];
    args.extend_from_slice(to);
    let out = sb.sendmail(&args, msg.as_bytes());
    assert!(
        out.status.success(),
        "sendmail {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The log lines that contain every one of `needles`.
fn log_lines(sb: &Sandbox, needles: &[&str]) -> Vec<String> {
    sb.log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Waits for a log line with every one of `needles`; returns the first.
fn wait_log(sb: &Sandbox, needles: &[&str], limit: Duration) -> String {
    sb.wait_for(&format!("a log line with {needles:?}"), limit, || {
        !log_lines(sb, needles).is_empty()
    });
    log_lines(sb, needles).remove(0)
}

/// Waits until no queue directory holds a file.
fn wait_queue_empty(sb: &Sandbox, limit: Duration) {
    sb.wait_for("an empty queue", limit, || sb.all_queue_files().is_empty());
}

/// The texts of demo's messages.
fn demo_mail(sb: &Sandbox) -> Vec<String> {
    sb.messages("demo")
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string())
        .collect()
}

/// Waits for the DSN in demo's Maildir that reports on `rcpt`; returns it.
fn wait_dsn_for(sb: &Sandbox, rcpt: &str) -> String {
    let want = format!("Final-Recipient: rfc822; {rcpt}\n");
    sb.wait_for(&format!("a DSN about {rcpt} for demo"), WAIT, || {
        demo_mail(sb).iter().any(|m| m.contains(&want))
    });
    demo_mail(sb)
        .into_iter()
        .find(|m| m.contains(&want))
        .unwrap()
}

/// Waits until `peer` accepted at least `n` messages; returns them.
fn wait_peer(sb: &Sandbox, peer: &ScriptedPeer, n: usize, limit: Duration) -> Vec<Transaction> {
    let what = format!("{n} message(s) at the peer on port {}", peer.port());
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if peer.count() >= n {
            return peer.transactions();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = sb.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    panic!(
        "timed out after {limit:?} waiting for {what}\n{}--- queue: {:?} ---\n--- last log lines ---\n{}",
        peer.describe(),
        sb.all_queue_files(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// The transport_maps value for a peer on 127.0.0.1:`port`.
fn nexthop(port: u16) -> String {
    format!("smtp:[127.0.0.1]:{port}")
}

// ---------------------------------------------------------------------------------------
// Smart host, transport_maps, LMTP.
// ---------------------------------------------------------------------------------------

#[test]
fn relayhost_with_auth_over_starttls_to_a_second_petrel() {
    let (mut peer, pw) = Sandbox::new_with_demo_password("smtp_out_relay_peer");
    peer.start_smtp();
    let port = peer.submission_port();
    peer.wait_for(
        &format!("a listener on 127.0.0.1:{port}"),
        Duration::from_secs(20),
        || SmtpClient::connect(port).is_ok(),
    );

    let mut sb = outbound("smtp_out_relay_client");
    rename_client(&sb);
    let passwords = sb.etc.join("sasl_passwd");
    std::fs::write(&passwords, format!("[127.0.0.1]:{port} demo:{pw}\n")).unwrap();
    sb.set("relayhost", &format!("[127.0.0.1]:{port}"));
    sb.set("smtp_sasl_auth_enable", "yes");
    sb.set(
        "smtp_sasl_password_maps",
        &format!("texthash:{}", passwords.display()),
    );
    sb.set("smtp_tls_security_level", "encrypt");
    sb.start();
    send(
        &sb,
        "alice@client.sandbox.test",
        &["demo@mail.sandbox.test"],
        "Subject: via the smart host\n\nrelayed with AUTH over STARTTLS\n",
    );

    // The smart host's submission port takes mail only after STARTTLS and AUTH.
    let m = &peer.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("via the smart host"));
    assert_eq!(
        header(m, "Return-Path").as_deref(),
        Some("<alice@client.sandbox.test>")
    );
    assert!(m.contains("relayed with AUTH over STARTTLS"), "{m}");
    let received = header(m, "Received").unwrap();
    assert!(
        received.contains("from client.sandbox.test") && received.contains("with ESMTPSA"),
        "the smart host saw our EHLO name, TLS and AUTH: {received}"
    );
    assert!(peer.log().contains("sasl_username=demo"), "{}", peer.log());

    let line = wait_log(&sb, &["to=<demo@mail.sandbox.test>", "status=sent"], WAIT);
    assert!(line.contains(&format!("[127.0.0.1]:{port}")), "{line}");
    assert!(line.contains("dsn=2.0.0"), "{line}");
    let tls = log_lines(&sb, &["TLS connection established to", &format!(":{port}")]);
    assert!(!tls.is_empty(), "a TLS log line:\n{}", sb.log());
    wait_queue_empty(&sb, WAIT);
    sb.stop();
    peer.stop();
}

#[test]
fn transport_maps_routes_a_domain_to_smtp_sink() {
    const T: &str = "transport_maps_routes_a_domain_to_smtp_sink";
    if SmtpSink::program().is_none() {
        return skip(
            T,
            "Postfix's smtp-sink is not installed (Debian package postfix)",
        );
    }
    let mut sb = outbound("smtp_out_transport_sink");
    let sink = SmtpSink::start(sb.base + 30, &[]).unwrap_or_else(|e| panic!("{e}"));
    // A second entry for the same key is ignored, with a warning (petrel check, qmgr).
    transport(
        &sb,
        &[
            format!("example.com smtp:[127.0.0.1]:{}", sink.port),
            "EXAMPLE.com error:5.1.2 the later entry".to_string(),
        ],
    );
    let check = sb.petrel(&["check"]);
    let said = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("petrel: warning: transport_maps: ")
            && said
                .contains(", line 2: duplicate entry for 'example.com' (first at line 1): ignored"),
        "{said}"
    );
    sb.start();
    wait_log(
        &sb,
        &[
            "qmgr",
            "warning: transport_maps: ",
            "line 2: duplicate entry",
        ],
        WAIT,
    );
    send(
        &sb,
        "demo@localhost",
        &["bob@example.com", "demo@localhost"],
        "Subject: routed by transport_maps\n\nto the sink and home\n",
    );
    sb.wait_for("the message at smtp-sink", WAIT, || {
        sink.messages()
            .iter()
            .any(|m| m.contains("to the sink and home"))
    });
    let dumps = sink.messages();
    assert_eq!(dumps.len(), 1, "{dumps:#?}");
    let d = &dumps[0];
    assert!(d.contains("X-Mail-Args: <demo@localhost>"), "{d}");
    assert!(d.contains("X-Rcpt-Args: <bob@example.com>"), "{d}");
    assert!(
        !d.contains("X-Rcpt-Args: <demo@localhost>"),
        "the local recipient is not sent to the sink: {d}"
    );
    assert!(d.contains("Subject: routed by transport_maps"), "{d}");
    // The local recipient goes to local.
    let m = &sb.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("routed by transport_maps")
    );
    let line = wait_log(&sb, &["to=<bob@example.com>", "status=sent"], WAIT);
    assert!(
        line.contains(&format!("[127.0.0.1]:{}", sink.port)),
        "{line}"
    );
    wait_log(
        &sb,
        &["to=<demo@localhost>", "relay=local", "status=sent"],
        WAIT,
    );
    wait_queue_empty(&sb, WAIT);
    sb.stop();
}

#[test]
fn lmtp_over_tcp_delivers_into_dovecot() {
    const T: &str = "lmtp_over_tcp_delivers_into_dovecot";
    if let Some(why) = Dovecot::missing() {
        return skip(T, &why);
    }
    let mut sb = outbound("smtp_out_lmtp_tcp");
    let dc = Dovecot::start(&["alice"], sb.base + 24).unwrap_or_else(|e| panic!("{e}"));
    transport(
        &sb,
        &[format!("lmtp.test lmtp:inet:127.0.0.1:{}", dc.lmtp_port)],
    );
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["alice@lmtp.test"],
        "Subject: into dovecot\n\nover LMTP on TCP\n",
    );
    sb.wait_for("alice's message in Dovecot's Maildir", WAIT, || {
        !dc.messages("alice").is_empty()
    });
    let m = &dc.message_texts("alice")[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("into dovecot"));
    assert!(m.contains("over LMTP on TCP"), "{m}");
    // Dovecot's log process writes a moment later.
    sb.wait_for("Dovecot's log line about alice", WAIT, || {
        dc.log()
            .lines()
            .any(|l| l.contains("lmtp(alice)") && l.contains("saved mail to INBOX"))
    });
    let line = wait_log(&sb, &["to=<alice@lmtp.test>", "status=sent"], WAIT);
    assert!(line.contains(&format!(":{}", dc.lmtp_port)), "{line}");
    wait_queue_empty(&sb, WAIT);
    sb.stop();
}

#[test]
fn lmtp_reports_per_recipient_results_one_refused_by_dovecot() {
    const T: &str = "lmtp_reports_per_recipient_results_one_refused_by_dovecot";
    if let Some(why) = Dovecot::missing() {
        return skip(T, &why);
    }
    let mut sb = outbound("smtp_out_lmtp_unix");
    let dc = Dovecot::start(&["alice", "carol"], sb.base + 24).unwrap_or_else(|e| panic!("{e}"));
    transport(
        &sb,
        &[format!("lmtp.test lmtp:unix:{}", dc.lmtp_socket.display())],
    );
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["alice@lmtp.test", "bob@lmtp.test", "carol@lmtp.test"],
        "Subject: two of three\n\nover LMTP on a unix socket\n",
    );
    sb.wait_for("alice and carol in Dovecot", WAIT, || {
        !dc.messages("alice").is_empty() && !dc.messages("carol").is_empty()
    });
    for u in ["alice", "carol"] {
        let m = &dc.message_texts(u)[0];
        assert_eq!(header(m, "Subject").as_deref(), Some("two of three"), "{m}");
    }
    // Dovecot refuses bob at RCPT: only he bounces.
    let dsn = wait_dsn_for(&sb, "bob@lmtp.test");
    assert!(dsn.contains("Action: failed\nStatus: 5.1.1\n"), "{dsn}");
    assert!(!dsn.contains("Final-Recipient: rfc822; alice@"), "{dsn}");
    assert!(!dsn.contains("Final-Recipient: rfc822; carol@"), "{dsn}");
    for u in ["alice", "carol"] {
        wait_log(&sb, &[&format!("to=<{u}@lmtp.test>"), "status=sent"], WAIT);
    }
    let bob = wait_log(&sb, &["to=<bob@lmtp.test>", "status=bounced"], WAIT);
    assert!(bob.contains("550 5.1.1"), "{bob}");
    wait_queue_empty(&sb, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dc.messages("alice").len(), 1, "delivered once");
    assert_eq!(dc.messages("carol").len(), 1, "delivered once");
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Agent behaviour against a scripted peer.
// ---------------------------------------------------------------------------------------

/// Decodes quoted-printable text (soft line breaks, =XX), CRLF → LF.
fn qp_decode(s: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(s).replace("\r\n", "\n");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            let hex = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Header section and body of a received message (CRLF line ends).
fn split_message(data: &[u8]) -> (&[u8], &[u8]) {
    let pos = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header/body separator");
    (&data[..pos + 2], &data[pos + 4..])
}

#[test]
fn eight_bit_body_is_downgraded_to_quoted_printable_for_a_peer_without_8bitmime() {
    let mut sb = outbound("smtp_out_8bitmime");
    let seven = ScriptedPeer::start(sb.base + 31, PeerConfig::default().without("8BITMIME"));
    let eight = ScriptedPeer::start(sb.base + 32, PeerConfig::default());
    transport(
        &sb,
        &[
            format!("seven.test {}", nexthop(seven.port())),
            format!("eight.test {}", nexthop(eight.port())),
        ],
    );
    sb.start_smtp();
    let long = "ä".repeat(60);
    let body = format!(
        "Grüße aus Köln.\nÇa va? naïve café = 1 €\n{long}\ntrailing space \nplain ascii line\n"
    );
    let message = format!(
        "From: demo@localhost\nTo: x@seven.test, y@eight.test\nSubject: eight bits\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{body}"
    );
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "client.test");
    c.expect("MAIL FROM:<demo@localhost> BODY=8BITMIME", "250");
    c.expect("RCPT TO:<x@seven.test>", "250");
    c.expect("RCPT TO:<y@eight.test>", "250");
    c.expect("DATA", "354");
    c.send(&petrel_tests::dot_stuff(&message)).unwrap();
    let r = c.reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    c.expect("QUIT", "221");

    let t7 = wait_peer(&sb, &seven, 1, WAIT).remove(0);
    let t8 = wait_peer(&sb, &eight, 1, WAIT).remove(0);

    // Without 8BITMIME: 7-bit only, quoted-printable, no BODY=8BITMIME.
    assert!(
        t7.data.iter().all(|&b| b < 0x80),
        "8-bit bytes sent to a peer without 8BITMIME:\n{}",
        t7.text()
    );
    assert!(
        !t7.mail.to_ascii_uppercase().contains("BODY=8BITMIME"),
        "{}",
        t7.mail
    );
    let (head, encoded) = split_message(&t7.data);
    let head = String::from_utf8_lossy(head).replace("\r\n", "\n");
    let ctes: Vec<String> = petrel_tests::headers(&head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Transfer-Encoding"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ctes, vec!["quoted-printable".to_string()], "{head}");
    assert_eq!(
        header(&head, "Subject").as_deref(),
        Some("eight bits"),
        "{head}"
    );
    let text = String::from_utf8_lossy(encoded).to_string();
    assert!(text.contains("Gr=C3=BC=C3=9Fe aus K=C3=B6ln."), "{text}");
    assert!(
        text.split("\r\n").all(|l| l.len() <= 76),
        "quoted-printable lines are at most 76 characters:\n{text}"
    );
    assert_eq!(
        String::from_utf8_lossy(&qp_decode(encoded)),
        body,
        "decoding gives the original body back:\n{text}"
    );

    // With 8BITMIME: as it was, declared.
    assert!(
        t8.mail.to_ascii_uppercase().contains("BODY=8BITMIME"),
        "{}",
        t8.mail
    );
    let (_, raw) = split_message(&t8.data);
    assert_eq!(
        String::from_utf8_lossy(raw).replace("\r\n", "\n"),
        body,
        "unchanged for a peer with 8BITMIME"
    );
    assert_eq!(
        header(
            &t8.text().replace("\r\n", "\n"),
            "Content-Transfer-Encoding"
        )
        .as_deref(),
        Some("8bit")
    );
    wait_queue_empty(&sb, WAIT);
    sb.stop();
}

#[test]
fn message_larger_than_the_peers_size_bounces_5_3_4_and_nothing_is_sent() {
    let mut sb = outbound("smtp_out_size");
    let peer = ScriptedPeer::start(sb.base + 31, PeerConfig::default().size(2000));
    transport(&sb, &[format!("small.test {}", nexthop(peer.port()))]);
    sb.start();
    let filler = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n".repeat(100);
    send(
        &sb,
        "demo@localhost",
        &["big@small.test"],
        &format!("Subject: too big for them\n\n{filler}"),
    );
    let dsn = wait_dsn_for(&sb, "big@small.test");
    assert!(dsn.contains("Action: failed\nStatus: 5.3.4\n"), "{dsn}");
    let line = wait_log(&sb, &["to=<big@small.test>", "status=bounced"], WAIT);
    assert!(line.contains("dsn=5.3.4"), "{line}");
    assert!(
        !peer.saw_command("DATA") && peer.count() == 0,
        "nothing may be sent:\n{}",
        peer.describe()
    );
    wait_queue_empty(&sb, WAIT);
    sb.stop();
}

#[test]
fn one_recipient_refused_at_rcpt_bounces_alone_the_others_go_in_one_transaction() {
    let mut sb = outbound("smtp_out_rcpt_550");
    let peer = ScriptedPeer::start(
        sb.base + 31,
        PeerConfig::default().rcpt(|a, _| {
            if a.starts_with("nobody@") {
                format!("550 5.1.1 <{a}>: Recipient address rejected: User unknown")
            } else {
                "250 2.1.5 Ok".into()
            }
        }),
    );
    transport(&sb, &[format!("peer.test {}", nexthop(peer.port()))]);
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["a@peer.test", "nobody@peer.test", "c@peer.test"],
        "Subject: three recipients\n\none will not make it\n",
    );
    let t = wait_peer(&sb, &peer, 1, WAIT);
    assert_eq!(
        t[0].rcpts,
        vec!["a@peer.test", "c@peer.test"],
        "{}",
        peer.describe()
    );
    assert_eq!(t[0].header("Subject").as_deref(), Some("three recipients"));
    let dsn = wait_dsn_for(&sb, "nobody@peer.test");
    assert!(
        dsn.contains(
            "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; 127.0.0.1\n\
             Diagnostic-Code: smtp; 550 5.1.1 <nobody@peer.test>: Recipient address rejected: \
             User unknown\n"
        ),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; a@peer.test"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; c@peer.test"),
        "{dsn}"
    );
    let bounced = wait_log(&sb, &["to=<nobody@peer.test>", "status=bounced"], WAIT);
    assert!(
        bounced.contains("said: 550 5.1.1") && bounced.contains("(in reply to RCPT TO command)"),
        "{bounced}"
    );
    for r in ["a@peer.test", "c@peer.test"] {
        wait_log(&sb, &[&format!("to=<{r}>"), "status=sent"], WAIT);
    }
    wait_queue_empty(&sb, WAIT);
    let mails = peer
        .commands()
        .iter()
        .filter(|c| {
            c.split_once(": ")
                .is_some_and(|(_, l)| l.to_ascii_uppercase().starts_with("MAIL "))
        })
        .count();
    assert_eq!(mails, 1, "one transaction:\n{}", peer.describe());
    assert_eq!(peer.count(), 1);
    sb.stop();
}

#[test]
fn rcpt_4xx_is_deferred_then_delivered_once_after_flush() {
    let mut sb = outbound("smtp_out_rcpt_4xx");
    // No retry happens by itself during the test: only the flush brings it back.
    sb.set("minimal_backoff_time", "1h");
    sb.set("maximal_backoff_time", "2h");
    sb.set("queue_run_delay", "1h");
    let peer = ScriptedPeer::start(
        sb.base + 31,
        PeerConfig::default().rcpt(|a, seen| {
            if a.starts_with("later@") && seen == 0 {
                "450 4.2.0 <later@peer.test>: try again later".into()
            } else {
                "250 2.1.5 Ok".into()
            }
        }),
    );
    transport(&sb, &[format!("peer.test {}", nexthop(peer.port()))]);
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["now@peer.test", "later@peer.test"],
        "Subject: one now one later\n\nbody\n",
    );
    let line = wait_log(&sb, &["to=<later@peer.test>", "status=deferred"], WAIT);
    assert!(line.contains("450 4.2.0"), "{line}");
    wait_log(&sb, &["to=<now@peer.test>", "status=sent"], WAIT);
    sb.wait_for("the message in deferred/", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    let t = peer.transactions();
    assert_eq!(t.len(), 1, "{}", peer.describe());
    assert_eq!(t[0].rcpts, vec!["now@peer.test"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(peer.count(), 1, "no retry before the flush");

    let out = sb.petrel(&["queue", "flush"]);
    assert!(
        out.status.success(),
        "queue flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = wait_peer(&sb, &peer, 2, WAIT);
    assert_eq!(
        t[1].rcpts,
        vec!["later@peer.test"],
        "only the deferred recipient is tried again:\n{}",
        peer.describe()
    );
    wait_log(&sb, &["to=<later@peer.test>", "status=sent"], WAIT);
    wait_queue_empty(&sb, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(peer.count(), 2);
    assert!(
        demo_mail(&sb).is_empty(),
        "no notice to the sender: {:#?}",
        demo_mail(&sb)
    );
    sb.stop();
}

#[test]
fn delay_warning_time_sends_exactly_one_delayed_notice() {
    let mut sb = outbound("smtp_out_delay_warning");
    sb.set("delay_warning_time", "2s");
    sb.set("minimal_backoff_time", "1s");
    sb.set("maximal_backoff_time", "1s");
    sb.set("queue_run_delay", "1s");
    let peer = ScriptedPeer::start(
        sb.base + 31,
        PeerConfig::default().rcpt(|_, _| "451 4.3.0 not today".into()),
    );
    transport(&sb, &[format!("slow.test {}", nexthop(peer.port()))]);
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["someone@slow.test"],
        "Subject: will be late\n\nbody\n",
    );
    let notice = wait_dsn_for(&sb, "someone@slow.test");
    assert_eq!(
        header(&notice, "Subject").as_deref(),
        Some("Delayed Mail (still being retried)"),
        "{notice}"
    );
    assert!(notice.contains("Action: delayed\n"), "{notice}");
    // Keep retrying for a while: no second notice.
    let deferrals =
        |sb: &Sandbox| log_lines(sb, &["to=<someone@slow.test>", "status=deferred"]).len();
    let at_notice = deferrals(&sb);
    sb.wait_for("three more deferrals after the notice", WAIT, || {
        deferrals(&sb) >= at_notice + 3
    });
    let mail = demo_mail(&sb);
    assert_eq!(mail.len(), 1, "exactly one notice: {mail:#?}");
    assert_eq!(
        log_lines(&sb, &["sender delay notification"]).len(),
        1,
        "{}",
        sb.log()
    );
    assert_eq!(peer.count(), 0);
    sb.wait_for("the message still in the queue", WAIT, || {
        sb.all_queue_files().len() == 1
    });
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Bounces: error: transport, double bounces.
// ---------------------------------------------------------------------------------------

#[test]
fn error_transport_bounces_with_its_text_and_a_user_key_beats_the_domain() {
    let mut sb = outbound("smtp_out_error_transport");
    let peer = ScriptedPeer::start(sb.base + 31, PeerConfig::default());
    transport(
        &sb,
        &[
            "nowhere.test error:5.7.1 we do not deliver there".to_string(),
            format!("vip@nowhere.test {}", nexthop(peer.port())),
        ],
    );
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["x@nowhere.test", "vip@nowhere.test"],
        "Subject: nowhere\n\nbody\n",
    );
    let dsn = wait_dsn_for(&sb, "x@nowhere.test");
    assert!(dsn.contains("Action: failed\nStatus: 5.7.1\n"), "{dsn}");
    assert!(dsn.contains("we do not deliver there"), "{dsn}");
    assert!(!dsn.contains("Final-Recipient: rfc822; vip@"), "{dsn}");
    let line = wait_log(&sb, &["to=<x@nowhere.test>", "status=bounced"], WAIT);
    assert!(line.contains("we do not deliver there"), "{line}");
    assert!(line.contains("dsn=5.7.1"), "{line}");
    let t = wait_peer(&sb, &peer, 1, WAIT);
    assert_eq!(t[0].rcpts, vec!["vip@nowhere.test"]);
    wait_queue_empty(&sb, WAIT);
    sb.stop();
}

#[test]
fn an_undeliverable_bounce_goes_to_postmaster() {
    let mut sb = outbound("smtp_out_double_bounce");
    transport(
        &sb,
        &[
            "gone.test error:5.1.1 mailbox gone".to_string(),
            "bad-sender.test error:5.1.2 sender domain gone".to_string(),
        ],
    );
    sb.start();
    send(
        &sb,
        "nosuch@bad-sender.test",
        &["someone@gone.test"],
        "Subject: doomed twice\n\nbody\n",
    );
    // The bounce to nosuch@bad-sender.test fails too: the postmaster (demo, by alias)
    // hears about it.
    let m = wait_dsn_for(&sb, "nosuch@bad-sender.test");
    assert!(m.contains("Status: 5.1.2"), "{m}");
    assert!(m.contains("sender domain gone"), "{m}");
    wait_log(&sb, &["postmaster non-delivery notification"], WAIT);
    wait_queue_empty(&sb, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(demo_mail(&sb).len(), 1, "one notice to the postmaster");
    sb.stop();
}

#[test]
fn a_failed_double_bounce_is_dropped_with_a_log_line() {
    let mut sb = outbound("smtp_out_double_bounce_dropped");
    sb.set("2bounce_notice_recipient", "postmaster@dead.test");
    transport(
        &sb,
        &[
            "gone.test error:5.1.1 mailbox gone".to_string(),
            "bad-sender.test error:5.1.2 sender domain gone".to_string(),
            "dead.test error:5.1.1 the postmaster is gone too".to_string(),
        ],
    );
    sb.start();
    send(
        &sb,
        "nosuch@bad-sender.test",
        &["someone@gone.test"],
        "Subject: doomed three times\n\nbody\n",
    );
    let line = wait_log(&sb, &["postmaster non-delivery notification: "], WAIT);
    let id = line
        .rsplit("notification: ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    // The notice to the postmaster failed: dropped, with a log line, no further notice.
    wait_log(&sb, &[&format!("{id}:"), "discarded"], WAIT);
    wait_queue_empty(&sb, WAIT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(demo_mail(&sb).is_empty(), "{:#?}", demo_mail(&sb));
    assert!(
        sb.all_queue_files().is_empty(),
        "no loop: {:?}",
        sb.all_queue_files()
    );
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// TLS policy.
// ---------------------------------------------------------------------------------------

#[test]
fn tls_encrypt_to_a_peer_without_starttls_defers_and_sends_nothing_in_clear() {
    let mut sb = outbound("smtp_out_tls_encrypt");
    sb.set("smtp_tls_security_level", "encrypt");
    let peer = ScriptedPeer::start(sb.base + 31, PeerConfig::default());
    transport(&sb, &[format!("plain.test {}", nexthop(peer.port()))]);
    sb.start();
    send(
        &sb,
        "demo@localhost",
        &["x@plain.test"],
        "Subject: secret\n\nnot for the clear\n",
    );
    let line = wait_log(&sb, &["to=<x@plain.test>", "status=deferred"], WAIT);
    assert!(line.contains("TLS"), "the reason names TLS: {line}");
    sb.wait_for("the message in deferred/", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    assert!(peer.connections() >= 1, "the peer was asked");
    for verb in ["MAIL", "RCPT", "DATA", "AUTH"] {
        assert!(
            !peer.saw_command(verb),
            "{verb} in clear:\n{}",
            peer.describe()
        );
    }
    assert_eq!(peer.count(), 0);
    sb.stop();
}

/// Replaces a sandbox's certificate by one for the IP address 127.0.0.1 (what a client
/// checks for an `[127.0.0.1]` next hop). Err(why) when openssl cannot make it.
fn ip_certificate(sb: &Sandbox) -> Result<(), String> {
    let openssl = installed(&["/usr/bin/openssl", "/usr/local/bin/openssl"])
        .ok_or("the openssl command is not installed")?;
    let tls = sb.etc.join("tls");
    let mut c = Command::new(openssl);
    c.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ])
    .args([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ])
    .arg("-keyout")
    .arg(tls.join("key.pem"))
    .arg("-out")
    .arg(tls.join("cert.pem"));
    let out = run_limited(c, b"", Duration::from_secs(60));
    if !out.status.success() {
        return Err(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A peer Petrel (port base + 25 offers STARTTLS) and a client routing
/// mail.sandbox.test to it with `smtp_tls_security_level = verify` and the peer's
/// certificate as the only trust anchor. Neither is started.
fn verify_pair(peer_name: &str, client_name: &str) -> (Sandbox, Sandbox) {
    let peer = Sandbox::new(peer_name);
    let sb = outbound(client_name);
    rename_client(&sb);
    sb.set("smtp_tls_security_level", "verify");
    sb.set(
        "smtp_tls_CAfile",
        &peer.etc.join("tls/cert.pem").display().to_string(),
    );
    transport(
        &sb,
        &[format!("mail.sandbox.test {}", nexthop(peer.smtp_port()))],
    );
    (peer, sb)
}

#[test]
fn tls_verify_with_the_peers_certificate_logs_verified() {
    const T: &str = "tls_verify_with_the_peers_certificate_logs_verified";
    let (mut peer, mut sb) = verify_pair("smtp_out_tls_verify_peer", "smtp_out_tls_verify");
    if let Err(why) = ip_certificate(&peer) {
        return skip(T, &why);
    }
    peer.start_smtp();
    sb.start();
    send(
        &sb,
        "alice@client.sandbox.test",
        &["demo@mail.sandbox.test"],
        "Subject: verified\n\nover verified TLS\n",
    );
    let m = &peer.wait_messages("demo", 1, WAIT)[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("verified"));
    assert!(
        header(m, "Received").unwrap().contains("with ESMTPS"),
        "{m}"
    );
    let port = peer.smtp_port();
    let line = wait_log(&sb, &["Verified TLS connection established to"], WAIT);
    assert!(line.contains(&format!("[127.0.0.1]:{port}")), "{line}");
    wait_log(&sb, &["to=<demo@mail.sandbox.test>", "status=sent"], WAIT);
    wait_queue_empty(&sb, WAIT);
    sb.stop();
    peer.stop();
}

#[test]
fn tls_verify_with_a_certificate_for_another_name_defers() {
    // The sandbox certificate is for mail.sandbox.test; the next hop is [127.0.0.1].
    let (mut peer, mut sb) = verify_pair("smtp_out_tls_mismatch_peer", "smtp_out_tls_mismatch");
    peer.start_smtp();
    sb.start();
    send(
        &sb,
        "alice@client.sandbox.test",
        &["demo@mail.sandbox.test"],
        "Subject: not verified\n\nmust wait\n",
    );
    let line = wait_log(
        &sb,
        &["to=<demo@mail.sandbox.test>", "status=deferred"],
        WAIT,
    );
    assert!(
        line.contains("TLS") && line.contains("certificate"),
        "the reason is the certificate check: {line}"
    );
    sb.wait_for("the message in deferred/", WAIT, || {
        sb.queue_files("deferred").len() == 1
    });
    assert!(
        log_lines(&sb, &["Verified TLS connection"]).is_empty(),
        "{}",
        sb.log()
    );
    assert!(peer.messages("demo").is_empty());
    assert!(
        !peer.log().contains("from=<alice@client.sandbox.test>"),
        "the peer got no message:\n{}",
        peer.log()
    );
    sb.stop();
    peer.stop();
}

// ---------------------------------------------------------------------------------------
// kill -9 mid-batch.
// ---------------------------------------------------------------------------------------

/// Sends `n` messages (header `X-Seq: i`) to rcpt@batch.test through the sandbox's
/// smtpd, over `threads` connections.
fn inject(sb: &Sandbox, n: usize, threads: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut c = SmtpClient::ehlo(sb.smtp_port(), "batch.client");
                for i in (t..n).step_by(threads) {
                    let r = c.send_mail(
                        "demo@localhost",
                        &["rcpt@batch.test"],
                        &format!("Subject: batch {i}\nX-Seq: {i}\n\nmessage number {i}\n"),
                    );
                    assert!(r.starts_with("250"), "message {i}: {r}");
                    assert!(queued_id(&r).is_some(), "{r}");
                }
                c.expect("QUIT", "221");
            });
        }
    });
}

/// kill -9 of every process of `victim` (by pid) when the peer has 100 and then 200 of
/// 300 messages (one recipient each; default_destination_concurrency_limit = 4; the
/// master restarts the victim). Asserts that every message arrives, and bounds the
/// duplicates: a message may arrive twice only when its first delivery was in flight at
/// a kill (the peer had said 250 but the outcome was not recorded yet). So each
/// duplicate's first copy must have been accepted within 5 s of a kill, and per kill
/// there may be at most min(connections open at the peer at the kill, the destination
/// concurrency 4) duplicates.
fn kill_9_mid_batch(name: &str, victim: &str) {
    const N: usize = 300;
    const CONCURRENCY: usize = 4;
    let mut sb = outbound(name);
    sb.set("minimal_backoff_time", "1s");
    sb.set("maximal_backoff_time", "2s");
    sb.set("queue_run_delay", "1s");
    sb.set(
        "default_destination_concurrency_limit",
        &CONCURRENCY.to_string(),
    );
    let peer = ScriptedPeer::start(
        sb.base + 33,
        PeerConfig {
            data_delay: Duration::from_millis(20),
            ..PeerConfig::default()
        },
    );
    transport(&sb, &[format!("batch.test {}", nexthop(peer.port()))]);
    sb.start_smtp();
    let mut kills: Vec<(Instant, usize)> = Vec::new();
    std::thread::scope(|s| {
        let sender = s.spawn(|| inject(&sb, N, 4));
        for at in [100, 200] {
            sb.wait_for(
                &format!("{at} messages at the peer before killing {victim}"),
                Duration::from_secs(90),
                || peer.count() >= at,
            );
            let pids = sb.pids_of(victim);
            assert!(!pids.is_empty(), "no {victim} process to kill");
            let open_before = peer.open_connections();
            let when = Instant::now();
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            assert!(
                peer.count() < N,
                "the batch was over before the kill: raise N"
            );
            std::thread::sleep(Duration::from_millis(200));
            kills.push((when, open_before.max(peer.open_connections())));
        }
        sender.join().unwrap();
    });
    let seqs = |peer: &ScriptedPeer| {
        let mut m: HashMap<usize, Vec<Instant>> = HashMap::new();
        for t in peer.transactions() {
            if let Some(seq) = t.header("X-Seq").and_then(|s| s.parse().ok()) {
                m.entry(seq).or_default().push(t.accepted_at);
            }
        }
        m
    };
    sb.wait_for(
        &format!("all {N} messages at the peer"),
        Duration::from_secs(120),
        || seqs(&peer).len() >= N,
    );
    wait_queue_empty(&sb, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let seen = seqs(&peer);
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}\n{}", peer.describe());
    let dups: Vec<(usize, usize)> = seen
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (*k, v.len()))
        .collect();
    // Each duplicate belongs to the kill nearest to its first acceptance, which must be
    // within 5 s of it; per kill, no more duplicates than deliveries in flight.
    let distance = |a: Instant, b: Instant| if a > b { a - b } else { b - a };
    let mut per_kill = vec![0usize; kills.len()];
    for (seq, copies) in &dups {
        let first = *seen[seq].iter().min().unwrap();
        let (k, d) = kills
            .iter()
            .enumerate()
            .map(|(i, (when, _))| (i, distance(first, *when)))
            .min_by_key(|(_, d)| *d)
            .unwrap();
        assert!(
            d <= Duration::from_secs(5),
            "message {seq} was accepted by the peer {d:?} away from any kill and delivered again"
        );
        per_kill[k] += copies - 1;
    }
    eprintln!(
        "{victim}: {} transactions for {N} messages; duplicates {dups:?}; per kill {per_kill:?}; open connections at the kills {:?}",
        peer.count(),
        kills.iter().map(|(_, o)| o).collect::<Vec<_>>()
    );
    for (i, (_, open)) in kills.iter().enumerate() {
        let bound = (*open).min(CONCURRENCY);
        assert!(
            per_kill[i] <= bound,
            "kill {}: {} duplicate deliveries, more than the {bound} that can have been in flight (destination concurrency {CONCURRENCY}, {open} connections open): {dups:?}",
            i + 1,
            per_kill[i]
        );
    }
    let log = sb.log();
    assert!(
        log.contains(&format!("/{victim} pid")) && log.contains("killed by signal 9"),
        "master noticed the {victim} deaths:\n{log}"
    );
    sb.stop();
}

#[test]
fn kill_9_of_the_smtp_agent_mid_batch_loses_nothing() {
    kill_9_mid_batch("smtp_out_kill_smtp", "smtp");
}

#[test]
fn kill_9_of_qmgr_mid_batch_loses_nothing() {
    kill_9_mid_batch("smtp_out_kill_qmgr", "qmgr");
}
