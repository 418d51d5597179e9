//! pop3d end to end: the sandbox's POP3 listener on base+110 (STLS; USER/PASS/AUTH only
//! after it by default) and POP3S on base+995, driven by Python's poplib, raw sockets,
//! curl, fetchmail and getmail6, over demo's Maildir (shared with imapd, checked through
//! imaplib over IMAPS) or mbox. Mail is delivered by our sendmail, or written into the
//! maildrop directly when a test needs exact bytes (no final newline, CRLF line ends).
//! Every test boots its own sandbox, skips with a printed reason when a client is not
//! installed, and every wait is bounded.
#![allow(clippy::unwrap_used)]

use petrel_tests::imap::{imaps_port, show};
use petrel_tests::pop3::{
    bad_log_lines, log_tail, maildir_by_subject, maildir_flags, mbox_messages, pop3_port,
    pop3s_port, start_pop3d, wait_log, wire_form, write_maildir_message, MboxMessage, PyOut, Raw,
    RawEnd, WAIT,
};
use petrel_tests::{installed, run_limited, Sandbox};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long an outside client (fetchmail, getmail, curl) may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A sandbox (not started) with `settings` applied, and demo's password.
fn pop3_sandbox(name: &str, settings: &[(&str, &str)]) -> (Sandbox, String) {
    let (sb, pw) = Sandbox::new_with_demo_password(name);
    for (k, v) in settings {
        sb.set(k, v);
    }
    (sb, pw)
}

/// A message from sender@example.org to demo with `subject` and `body` (LF line ends).
fn message(subject: &str, body: &str) -> String {
    format!(
        "From: sender@example.org\nTo: demo@localhost\nSubject: {subject}\nMessage-ID: <{}@example.org>\n\n{body}",
        subject.replace(' ', ".")
    )
}

/// Hands a message to our sendmail (which returns once it is queued; `-i`: a line that is
/// a single dot is content).
fn send(sb: &Sandbox, subject: &str, body: &str) {
    let out = sb.sendmail(&["-i", "demo@localhost"], message(subject, body).as_bytes());
    assert!(out.status.success(), "sendmail: {}", show(&out));
}

/// Delivers a message into demo's Maildir and waits until it has `n` messages.
fn deliver(sb: &Sandbox, subject: &str, body: &str, n: usize) {
    send(sb, subject, body);
    sb.wait_messages("demo", n, WAIT);
}

/// demo's mbox with `home_mailbox = mbox`.
fn mbox_path(sb: &Sandbox) -> PathBuf {
    sb.dir.join("home").join("demo").join("mbox")
}

/// The number of messages in demo's mbox once the last one is complete (local ends every
/// message with a blank line); 0 while a delivery is half written.
fn mbox_count(sb: &Sandbox) -> usize {
    let data = std::fs::read(mbox_path(sb)).unwrap_or_default();
    if !data.is_empty() && !data.ends_with(b"\n\n") {
        return 0;
    }
    petrel_tests::pop3::parse_mbox(&data).len()
}

/// Delivers a message into demo's mbox and waits until it has `n` messages.
fn deliver_mbox(sb: &Sandbox, subject: &str, body: &str, n: usize) {
    send(sb, subject, body);
    sb.wait_for(&format!("{n} message(s) in demo's mbox"), WAIT, || {
        mbox_count(sb) >= n
    });
}

/// Waits until imapd serves IMAPS (for the tests that compare with IMAP).
fn wait_imapd(sb: &Sandbox) {
    sb.wait_for("imapd running", WAIT, || !sb.pids_of("imapd").is_empty());
    let port = imaps_port(sb);
    sb.wait_for(&format!("a listener on 127.0.0.1:{port}"), WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// The Subject in a message's text (any line ends).
fn subject_in(data: &[u8]) -> String {
    petrel_tests::pop3::subject_of(data).unwrap_or_default()
}

/// `n text` lines of a LIST or UIDL answer (after its +OK line) as n → text.
fn numbered(lines: &[&str]) -> BTreeMap<u32, String> {
    lines
        .iter()
        .map(|l| {
            let (n, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `n value`: {l:?}"));
            (n.parse().unwrap(), v.to_string())
        })
        .collect()
}

/// The value in `+OK n value` (the answer to LIST n or UIDL n).
fn single_value(line: &str, n: u32) -> String {
    let parts: Vec<&str> = line.split(' ').collect();
    assert!(
        parts.len() == 3 && parts[0] == "+OK" && parts[1] == n.to_string(),
        "not `+OK {n} value`: {line:?}"
    );
    parts[2].to_string()
}

/// Capability names (the first word of each CAPA line, `SASL PLAIN` whole).
fn capa_set(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            if l.starts_with("SASL") {
                l.to_string()
            } else {
                l.split(' ').next().unwrap_or("").to_string()
            }
        })
        .collect()
}

/// The header section of a message in wire form (CRLF), the blank line included, and its
/// first `n` body lines.
fn top_of(wire: &[u8], n: usize) -> Vec<u8> {
    let Some(i) = wire.windows(4).position(|w| w == b"\r\n\r\n") else {
        return wire.to_vec();
    };
    let mut out = wire[..i + 4].to_vec();
    for line in wire[i + 4..].split_inclusive(|&b| b == b'\n').take(n) {
        out.extend_from_slice(line);
    }
    out
}

// ---------------------------------------------------------------------------------------
// 1. poplib: every command, over POP3S and over STLS.
// ---------------------------------------------------------------------------------------

/// argv after port and password: `pop3s` or `stls`, the IMAPS port.
const PY_EVERY: &str = r#"
mode, imaps = args[0], int(args[1])
def connect():
    return pop3s(port) if mode == "pop3s" else stls(port)

if mode == "stls":
    p = plain(port)
    out("greeting", txt(p.welcome))
    rec("capa_plain", lambda: capa(p))
    rec("user_plain", lambda: p.user("demo"))
    rec("stat_plain", p.stat)
    rec("stls", lambda: p.stls(ctx()))
else:
    p = pop3s(port)
    out("greeting", txt(p.welcome))
rec("capa", lambda: capa(p))
rec("stls_tls", lambda: p._shortcmd("STLS"))
rec("stat_preauth", p.stat)
rec("user_bad", lambda: p.user("demo"))
rec("pass_bad", lambda: p.pass_("wrong-" + pw))
rec("user", lambda: p.user("demo"))
rec("pass", lambda: p.pass_(pw))
rec("capa_trans", lambda: capa(p))
st = rec("stat", p.stat)
n = st[0]
rec("list", p.list)
rec("uidl", p.uidl)
for i in range(1, n + 1):
    rec("list%d" % i, lambda i=i: p.list(i))
    rec("uidl%d" % i, lambda i=i: p.uidl(i))
    r = rec("retr%d" % i, lambda i=i: p.retr(i))
    if r:
        out("retr%d_hex" % i, hexof(r[1]))
        out("retr%d_octets" % i, r[2])
        out("retr%d_sum" % i, sum(len(l) + 2 for l in r[1]))
    r = rec("top%d_0" % i, lambda i=i: p.top(i, 0))
    if r:
        out("top%d_0_hex" % i, hexof(r[1]))
    r = rec("top%d_2" % i, lambda i=i: p.top(i, 2))
    if r:
        out("top%d_2_hex" % i, hexof(r[1]))
rec("dele1", lambda: p.dele(1))
rec("dele1_again", lambda: p.dele(1))
rec("retr_deleted", lambda: p.retr(1))
rec("top_deleted", lambda: p.top(1, 0))
rec("list_deleted", lambda: p.list(1))
rec("uidl_deleted", lambda: p.uidl(1))
rec("stat_deleted", p.stat)
rec("list_after_dele", p.list)
rec("uidl_after_dele", p.uidl)
rec("rset", p.rset)
rec("stat_rset", p.stat)
rec("retr_range", lambda: p.retr(n + 1))
rec("list_range", lambda: p.list(n + 1))
rec("top_range", lambda: p.top(n + 1, 0))
rec("dele_range", lambda: p.dele(n + 1))
rec("retr_zero", lambda: p.retr(0))
rec("noop", p.noop)
rec("user_trans", lambda: p.user("demo"))
rec("stls_trans", lambda: p._shortcmd("STLS"))
rec("stat_end", p.stat)
rec("quit", p.quit)

# AUTH PLAIN with an initial response.
q = connect()
rec("auth_list", lambda: q._longcmd("AUTH"))
rec("auth_ir", lambda: q._shortcmd("AUTH PLAIN " + sasl_plain("demo", pw)))
rec("auth_ir_stat", q.stat)
rec("auth_ir_quit", q.quit)
# Without one: "+ ", then the response on a line of its own.
q = connect()
rec("auth_cont", lambda: q._shortcmd("AUTH PLAIN"))
rec("auth_cont_resp", lambda: q._shortcmd(sasl_plain("demo", pw)))
rec("auth_cont_stat", q.stat)
rec("auth_cont_quit", q.quit)
# Cancelled, another mechanism, bad base64, a wrong password; then a good one.
q = connect()
rec("auth_cancel", lambda: q._shortcmd("AUTH PLAIN"))
rec("auth_cancel_star", lambda: q._shortcmd("*"))
rec("auth_mech", lambda: q._shortcmd("AUTH CRAM-MD5"))
rec("auth_b64", lambda: q._shortcmd("AUTH PLAIN !!!"))
rec("auth_wrong", lambda: q._shortcmd("AUTH PLAIN " + sasl_plain("demo", "wrong-" + pw)))
rec("auth_good", lambda: q._shortcmd("AUTH PLAIN " + sasl_plain("demo", pw)))
rec("auth_good_quit", q.quit)

# A second session: the same messages, the same UIDLs.
q = connect()
login(q)
rec("list_again", q.list)
rec("uidl_again", q.uidl)
rec("quit_again", q.quit)

validity, msgs = imap_uids(imaps)
out("imap_validity", validity)
for uid, (flags, subj) in sorted(msgs.items()):
    out("imap_uid_%d" % uid, subj)
"#;

/// The messages of the every-command tests: two delivered by sendmail, one without a final
/// newline and one with CRLF line ends written into the Maildir.
fn every_command_mail(sb: &Sandbox) {
    deliver(
        sb,
        "alpha dots",
        "first line\n.leading dot\n..two dots\n.\nFrom here\nlast line\n",
        1,
    );
    deliver(sb, "beta plain", "one\ntwo\nthree\nfour\n", 2);
    let md = sb.maildir("demo");
    write_maildir_message(
        &md,
        "gamma",
        b"From: sender@example.org\nTo: demo@localhost\nSubject: gamma no newline\n\nline one\nline two without a newline",
    );
    write_maildir_message(
        &md,
        "delta",
        b"From: sender@example.org\r\nTo: demo@localhost\r\nSubject: delta crlf\r\n\r\n.dot crlf\r\nsecond\r\nthird\r\n",
    );
}

fn every_command(name: &str, mode: &str) {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox(name, &[]);
    start_pop3d(&mut sb);
    wait_imapd(&sb);
    every_command_mail(&sb);
    let files = maildir_by_subject(&sb, "demo");
    assert_eq!(files.len(), 4, "{:?}", files.keys());
    let port = if mode == "pop3s" {
        pop3s_port(&sb)
    } else {
        pop3_port(&sb)
    };
    let imaps = imaps_port(&sb).to_string();
    let py = PyOut::run(&sb, PY_EVERY, port, &pw, &[mode, &imaps]);

    // Greeting and capabilities, before and after TLS.
    py.want("greeting", "+OK");
    let base = [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION",
    ];
    if mode == "stls" {
        py.want("capa_plain", "+OK");
        let c = capa_set(&py.rest("capa_plain"));
        for want in base.iter().chain(&["STLS"]) {
            assert!(c.contains(*want), "plaintext CAPA lacks {want}: {c:?}");
        }
        for not in ["USER", "SASL PLAIN"] {
            assert!(
                !c.contains(not),
                "plaintext CAPA offers {not} with pop3d_tls_auth_only = yes: {c:?}"
            );
        }
        py.want("user_plain", "-ERR [AUTH]");
        py.want("stat_plain", "-ERR");
        py.want("stls", "+OK");
    }
    py.want("capa", "+OK");
    let c = capa_set(&py.rest("capa"));
    for want in base.iter().chain(&["USER", "SASL PLAIN"]) {
        assert!(c.contains(*want), "CAPA over TLS lacks {want}: {c:?}");
    }
    assert!(!c.contains("STLS"), "STLS offered over TLS: {c:?}");
    assert!(
        py.rest("capa").contains(&"IMPLEMENTATION Petrel"),
        "{:?}",
        py.get("capa")
    );
    py.want("stls_tls", "-ERR");
    py.want("stat_preauth", "-ERR");

    // USER/PASS: a wrong password, then the right one on the same connection.
    py.want("user_bad", "+OK");
    py.want("pass_bad", "-ERR [AUTH]");
    py.want("user", "+OK");
    py.want("pass", "+OK");
    py.want("capa_trans", "+OK");
    let ct = capa_set(&py.rest("capa_trans"));
    for want in base {
        assert!(ct.contains(want), "CAPA after login lacks {want}: {ct:?}");
    }
    for not in ["USER", "SASL PLAIN", "STLS"] {
        assert!(!ct.contains(not), "CAPA after login offers {not}: {ct:?}");
    }

    // STAT, LIST, UIDL: four messages; sizes are what RETR sends.
    let stat: Vec<u64> = py
        .get("stat")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(stat[0], 4, "STAT: {stat:?}");
    py.want("list", "+OK");
    let list = numbered(&py.rest("list"));
    let uidl = numbered(&py.rest("uidl"));
    assert_eq!(list.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(uidl.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let total: u64 = list.values().map(|s| s.parse::<u64>().unwrap()).sum();
    assert_eq!(stat[1], total, "STAT's octets are the sum of LIST's");
    assert!(
        py.first("list")
            .contains(&format!("4 messages ({total} octets)")),
        "{:?}",
        py.first("list")
    );
    let mut subjects = BTreeMap::new();
    for i in 1..=4u32 {
        let size: u64 = single_value(py.first(&format!("list{i}")), i)
            .parse()
            .unwrap();
        assert_eq!(size.to_string(), list[&i], "LIST {i} and LIST");
        assert_eq!(
            single_value(py.first(&format!("uidl{i}")), i),
            uidl[&i],
            "UIDL {i} and UIDL"
        );
        py.want(&format!("retr{i}"), "+OK");
        let retr = py.hex(&format!("retr{i}_hex"));
        let subject = subject_in(&retr);
        let (path, stored) = files
            .get(&subject)
            .unwrap_or_else(|| panic!("RETR {i} is no message of the Maildir: {subject:?}"));
        let expect = wire_form(stored);
        assert_eq!(
            String::from_utf8_lossy(&retr),
            String::from_utf8_lossy(&expect),
            "RETR {i} ({}) is the stored message with CRLF line ends",
            path.display()
        );
        assert_eq!(
            size,
            retr.len() as u64,
            "LIST {i} is the octets of RETR {i}"
        );
        assert_eq!(py.get(&format!("retr{i}_sum")), size.to_string());
        assert_eq!(py.get(&format!("retr{i}_octets")), size.to_string());
        assert_eq!(
            String::from_utf8_lossy(&py.hex(&format!("top{i}_0_hex"))),
            String::from_utf8_lossy(&top_of(&expect, 0)),
            "TOP {i} 0"
        );
        assert_eq!(
            String::from_utf8_lossy(&py.hex(&format!("top{i}_2_hex"))),
            String::from_utf8_lossy(&top_of(&expect, 2)),
            "TOP {i} 2"
        );
        subjects.insert(i, subject);
    }
    let by_subject: BTreeMap<&str, u32> = subjects.iter().map(|(n, s)| (s.as_str(), *n)).collect();
    // Dot-stuffing undone by poplib: the lines come back with their single leading dot.
    let alpha = py.hex(&format!("retr{}_hex", by_subject["alpha dots"]));
    let alpha = String::from_utf8_lossy(&alpha).to_string();
    for line in [".leading dot", "..two dots", ".", "From here"] {
        assert!(
            alpha.split("\r\n").any(|l| l == line),
            "RETR lost the line {line:?}: {alpha:?}"
        );
    }
    let gamma = py.hex(&format!("retr{}_hex", by_subject["gamma no newline"]));
    assert!(
        gamma.ends_with(b"line two without a newline\r\n"),
        "a message without a final newline gets CRLF: {:?}",
        String::from_utf8_lossy(&gamma)
    );

    // DELE, RSET, numbers out of range: -ERR, and the session goes on.
    py.want("dele1", "+OK");
    py.want("dele1_again", "-ERR");
    py.want("retr_deleted", "-ERR");
    py.want("top_deleted", "-ERR");
    py.want("list_deleted", "-ERR");
    py.want("uidl_deleted", "-ERR");
    let size1: u64 = list[&1].parse().unwrap();
    assert_eq!(
        py.get("stat_deleted"),
        format!("3 {}", total - size1),
        "STAT after DELE 1"
    );
    let after = numbered(&py.rest("list_after_dele"));
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    let after = numbered(&py.rest("uidl_after_dele"));
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    py.want("rset", "+OK");
    assert_eq!(py.get("stat_rset"), format!("4 {total}"), "STAT after RSET");
    for name in [
        "retr_range",
        "list_range",
        "top_range",
        "dele_range",
        "retr_zero",
        "user_trans",
        "stls_trans",
    ] {
        py.want(name, "-ERR");
    }
    py.want("noop", "+OK");
    assert_eq!(py.get("stat_end"), format!("4 {total}"));
    py.want("quit", "+OK");

    // AUTH PLAIN.
    assert_eq!(py.get("auth_list"), "+OK\nPLAIN", "bare AUTH");
    py.want("auth_ir", "+OK");
    assert_eq!(py.get("auth_ir_stat"), format!("4 {total}"));
    py.want("auth_ir_quit", "+OK");
    assert_eq!(py.get("auth_cont").trim_end(), "+", "AUTH PLAIN without IR");
    py.want("auth_cont_resp", "+OK");
    assert_eq!(py.get("auth_cont_stat"), format!("4 {total}"));
    py.want("auth_cont_quit", "+OK");
    assert_eq!(py.get("auth_cancel").trim_end(), "+");
    py.want("auth_cancel_star", "-ERR");
    py.want("auth_mech", "-ERR");
    py.want("auth_b64", "-ERR");
    py.want("auth_wrong", "-ERR [AUTH]");
    py.want("auth_good", "+OK");
    py.want("auth_good_quit", "+OK");

    // Nothing was deleted; the second session sees the same messages and UIDLs.
    assert_eq!(numbered(&py.rest("list_again")), list);
    assert_eq!(
        numbered(&py.rest("uidl_again")),
        uidl,
        "UIDLs across sessions"
    );
    assert_eq!(maildir_by_subject(&sb, "demo").len(), 4);

    // UIDL = IMAP UID and UIDVALIDITY, %08x%08x (lower-case hex, as Dovecot prints it).
    let validity: u32 = py.get("imap_validity").parse().unwrap();
    let mut imap: BTreeMap<String, u32> = BTreeMap::new();
    for (k, v) in &py.map {
        if let Some(uid) = k.strip_prefix("imap_uid_") {
            imap.insert(v.clone(), uid.parse().unwrap());
        }
    }
    assert_eq!(imap.len(), 4, "IMAP: {imap:?}\n{}", py.raw);
    for (n, subject) in &subjects {
        let uid = imap
            .get(subject)
            .unwrap_or_else(|| panic!("IMAP has no {subject:?}: {imap:?}"));
        assert_eq!(
            uidl[n],
            format!("{uid:08x}{validity:08x}"),
            "UIDL of message {n} ({subject}) against IMAP UID {uid}, UIDVALIDITY {validity}"
        );
    }

    // The log: TLS sessions, and what the first one did.
    let log = sb.log();
    let logins = log
        .lines()
        .filter(|l| l.contains("Login: user=demo, rip=127.0.0.1, tls=TLSv1"))
        .count();
    assert!(logins >= 5, "Login lines with TLS: {logins}\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("Logout: user=demo, rip=127.0.0.1, top=8/")
                && l.contains(&format!("retr=4/{total}, del=0/4, size={total}"))),
        "no Logout line for the first session:\n{}",
        log_tail(&sb, 30)
    );
    assert!(bad_log_lines(&sb).is_empty(), "{:?}", bad_log_lines(&sb));
}

#[test]
fn poplib_every_command_over_pop3s() {
    every_command("pop3d_every_pop3s", "pop3s");
}

#[test]
fn poplib_every_command_over_stls() {
    every_command("pop3d_every_stls", "stls");
}

// ---------------------------------------------------------------------------------------
// 2. Plaintext before STLS (pop3d_tls_auth_only = yes): no login; pipelined plaintext
//    after STLS is dropped; after it everything works, pipelined too.
// ---------------------------------------------------------------------------------------

const PY_STLS: &str = r#"
r = Raw(port)
out("greeting", r.line())
out("capa", "\n".join(str(l) for l in r.multi("CAPA")))
out("user", r.cmd("USER demo"))
out("pass", r.cmd("PASS " + pw))
out("auth_ir", r.cmd("AUTH PLAIN " + sasl_plain("demo", pw)))
out("auth", r.cmd("AUTH PLAIN"))
out("stat", r.cmd("STAT"))
out("list", r.cmd("LIST"))
out("retr", r.cmd("RETR 1"))
out("dele", r.cmd("DELE 1"))
out("noop", r.cmd("NOOP"))
out("quit", r.cmd("QUIT"))
out("closed", "%s %s" % (r.line(10), r.closed))

# STLS with a login pipelined behind it in plaintext: the login must be dropped.
r = Raw(port)
r.line()
r.send(("STLS\r\nUSER demo\r\nPASS %s\r\nSTAT\r\n" % pw).encode())
out("stls", r.line())
r.starttls()
out("after_stls", r.cmd("STAT"))
out("capa_tls", "\n".join(str(l) for l in r.multi("CAPA")))
out("stls_again", r.cmd("STLS"))
# A pipelined login and commands over TLS: every one answered, in order.
r.send(("USER demo\r\nPASS %s\r\nSTAT\r\nUIDL\r\nNOOP\r\nQUIT\r\n" % pw).encode())
lines = []
while len(lines) < 20:
    l = r.line(20)
    if l is None:
        lines.append("<closed>" if r.closed else "<timeout>")
        break
    lines.append(l)
out("pipelined", "\n".join(lines))
"#;

#[test]
fn plaintext_login_refused_before_stls_and_pipelined_plaintext_dropped() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_stls_only", &[]);
    start_pop3d(&mut sb);
    deliver(&sb, "stls only", "body\n", 1);
    let py = PyOut::run(&sb, PY_STLS, pop3_port(&sb), &pw, &[]);

    py.want("greeting", "+OK");
    let capa: Vec<&str> = py.get("capa").lines().collect();
    assert_eq!(capa.first(), Some(&"+OK Capability list follows"));
    assert_eq!(capa.last(), Some(&"."));
    assert!(capa.contains(&"STLS"), "{capa:?}");
    assert!(
        !capa.contains(&"USER") && !capa.iter().any(|l| l.starts_with("SASL")),
        "plaintext CAPA offers a login: {capa:?}"
    );
    for name in ["user", "pass", "auth_ir", "auth"] {
        py.want(name, "-ERR [AUTH]");
    }
    for name in ["stat", "list", "retr", "dele", "noop"] {
        py.want(name, "-ERR");
    }
    py.want("quit", "+OK");
    assert_eq!(py.get("closed"), "None True", "QUIT closes the connection");

    py.want("stls", "+OK");
    // Had the pipelined USER/PASS survived, the first answer over TLS would be +OK.
    py.want("after_stls", "-ERR");
    let capa: Vec<&str> = py.get("capa_tls").lines().collect();
    assert!(
        capa.contains(&"USER") && capa.contains(&"SASL PLAIN") && !capa.contains(&"STLS"),
        "CAPA after STLS: {capa:?}"
    );
    py.want("stls_again", "-ERR");
    let lines: Vec<&str> = py.get("pipelined").lines().collect();
    let uidl_ok = |l: &str| {
        l.strip_prefix("1 ")
            .is_some_and(|u| u.len() == 16 && u.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(
        lines.len() == 9
            && lines[0] == "+OK"
            && lines[1].starts_with("+OK Logged in")
            && lines[2].starts_with("+OK 1 ")
            && lines[3] == "+OK"
            && uidl_ok(lines[4])
            && lines[5] == "."
            && lines[6] == "+OK"
            && lines[7].starts_with("+OK Logging out")
            && lines[8] == "<closed>",
        "pipelined commands over TLS: {lines:?}"
    );
    // Only the TLS session logged in (and said so).
    let log = sb.log();
    let logins: Vec<&str> = log.lines().filter(|l| l.contains("Login: user=")).collect();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(logins[0].contains("tls=TLSv1"), "{logins:?}");
}

// ---------------------------------------------------------------------------------------
// 3. RETR marks \Seen (with and without QUIT); TOP does not.
// ---------------------------------------------------------------------------------------

const PY_SEEN: &str = r#"
p = pop3s(port)
login(p)
rec("retr1", lambda: p.retr(1))
rec("top3", lambda: p.top(3, 0))
rec("quit", p.quit)
q = pop3s(port)
login(q)
rec("retr2", lambda: q.retr(2))
q.sock.close()
out("dropped", "yes")
"#;

const PY_IMAP_FLAGS: &str = r#"
validity, msgs = imap_uids(int(args[0]))
for uid, (flags, subj) in sorted(msgs.items()):
    out("flags_" + subj, flags)
"#;

#[test]
fn retr_marks_seen_in_the_maildir_and_for_imap() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_seen", &[]);
    start_pop3d(&mut sb);
    wait_imapd(&sb);
    deliver(&sb, "seen one", "first\n", 1);
    deliver(&sb, "seen two", "second\n", 2);
    deliver(&sb, "seen three", "third\n", 3);
    let py = PyOut::run(&sb, PY_SEEN, pop3s_port(&sb), &pw, &[]);
    for (name, subject) in [("retr1", "seen one"), ("retr2", "seen two")] {
        py.want(name, "+OK");
        assert!(
            py.get(name).contains(&format!("Subject: {subject}")),
            "{name}: {}",
            py.get(name)
        );
    }
    assert!(py.get("top3").contains("Subject: seen three"));
    py.want("quit", "+OK");
    // The second session ends without QUIT: what it read is marked all the same.
    wait_log(&sb, "Disconnected: user=demo", 1, WAIT);
    let files = maildir_by_subject(&sb, "demo");
    for (subject, seen) in [
        ("seen one", true),
        ("seen two", true),
        ("seen three", false),
    ] {
        let (path, _) = &files[subject];
        assert_eq!(
            maildir_flags(path).contains('S'),
            seen,
            "{subject}: {} (\\Seen expected: {seen})",
            path.display()
        );
        if seen {
            assert_eq!(
                path.parent().unwrap().file_name().unwrap(),
                "cur",
                "{}",
                path.display()
            );
        }
    }
    let imaps = imaps_port(&sb).to_string();
    let flags = PyOut::run(&sb, PY_IMAP_FLAGS, pop3s_port(&sb), &pw, &[&imaps]);
    for (subject, seen) in [
        ("seen one", true),
        ("seen two", true),
        ("seen three", false),
    ] {
        let f = flags.get(&format!("flags_{subject}"));
        assert_eq!(
            f.split(' ').any(|x| x == "\\Seen"),
            seen,
            "IMAP FLAGS of {subject}: {f:?}"
        );
    }
}

/// argv after port and password: the IMAPS port.
const PY_IMAP_FLAGS_DURING: &str = r#"
imaps = int(args[0])
p = pop3s(port)
login(p)
rec("uidl", p.uidl)
# An IMAP client flags message 1 meanwhile (its file is renamed: ...:2,F).
M = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx(), timeout=30)
M.login("demo", pw)
M.select("INBOX")
typ, d = M.store("1", "+FLAGS", "(\\Flagged)")
out("imap_store", "%s %r" % (typ, d))
M.logout()
rec("retr1", lambda: p.retr(1))
rec("top1", lambda: p.top(1, 0))
rec("retr2", lambda: p.retr(2))
rec("dele1", lambda: p.dele(1))
rec("quit", p.quit)
validity, msgs = imap_uids(imaps)
for uid, (flags, subj) in sorted(msgs.items()):
    out("after_" + subj, flags)
"#;

/// IMAP sessions go on during a POP3 session (the man page): a flag set over IMAP renames
/// the message's file, and the POP3 session must still read and remove it.
///
/// (The session looks the file up again when its listed name is gone, and syncs before
/// it removes messages.)
#[test]
fn an_imap_flag_change_during_a_session_keeps_the_message_readable() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_imap_rename", &[]);
    start_pop3d(&mut sb);
    wait_imapd(&sb);
    deliver(&sb, "imap one", "first\n", 1);
    deliver(&sb, "imap two", "second\n", 2);
    let imaps = imaps_port(&sb).to_string();
    let py = PyOut::run(&sb, PY_IMAP_FLAGS_DURING, pop3s_port(&sb), &pw, &[&imaps]);
    // IMAP renamed the file (`:2,F`) while the POP3 session had it listed.
    assert!(py.get("imap_store").starts_with("OK"), "{}", py.raw);
    assert!(py.get("imap_store").contains("Flagged"), "{}", py.raw);
    py.want("retr2", "+OK");
    py.want("retr1", "+OK");
    assert!(py.get("retr1").contains("Subject: imap one"), "{}", py.raw);
    py.want("top1", "+OK");
    py.want("dele1", "+OK");
    assert_eq!(py.get("quit"), "+OK Logging out, 1 messages deleted.");
    let left: Vec<String> = maildir_by_subject(&sb, "demo").into_keys().collect();
    assert_eq!(left, vec!["imap two"], "DELE 1 + QUIT");
    assert!(!py.map.contains_key("after_imap one"), "{}", py.raw);
    assert!(py.get("after_imap two").contains("\\Seen"), "{}", py.raw);
}

// ---------------------------------------------------------------------------------------
// 4. DELE, RSET, QUIT; a dropped connection removes nothing; errors keep the session.
// ---------------------------------------------------------------------------------------

const PY_DELE_KEEP: &str = r#"
p = pop3s(port)
login(p)
rec("uidl_first", p.uidl)
rec("dele1", lambda: p.dele(1))
rec("dele2", lambda: p.dele(2))
rec("stat_marked", p.stat)
rec("rset", p.rset)
rec("stat_rset", p.stat)
rec("quit", p.quit)
q = pop3s(port)
login(q)
rec("uidl_second", q.uidl)
rec("dele", lambda: q.dele(2))
rec("dele_again", lambda: q.dele(2))
rec("retr_deleted", lambda: q.retr(2))
rec("top_deleted", lambda: q.top(2, 0))
rec("list_deleted", lambda: q.list(2))
rec("uidl_deleted", lambda: q.uidl(2))
rec("list_range", lambda: q.list(4))
rec("retr_range", lambda: q.retr(4))
rec("dele_range", lambda: q.dele(4))
rec("retr_zero", lambda: q.retr(0))
rec("noop", q.noop)
rec("stat", q.stat)
rec("uidl_marked", q.uidl)
q.sock.close()
out("dropped", "yes")
"#;

const PY_DELE_REMOVE: &str = r#"
p = pop3s(port)
login(p)
rec("uidl_before", p.uidl)
rec("top2", lambda: p.top(2, 0))
rec("dele2", lambda: p.dele(2))
rec("quit", p.quit)
q = pop3s(port)
login(q)
rec("stat_after", q.stat)
rec("uidl_after", q.uidl)
rec("quit_after", q.quit)
"#;

#[test]
fn dele_rset_quit_and_a_dropped_connection() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_dele", &[]);
    start_pop3d(&mut sb);
    deliver(&sb, "dele one", "first\n", 1);
    deliver(&sb, "dele two", "second\n", 2);
    deliver(&sb, "dele three", "third\n", 3);
    let contents = |sb: &Sandbox| -> BTreeMap<String, Vec<u8>> {
        maildir_by_subject(sb, "demo")
            .into_iter()
            .map(|(s, (_, c))| (s, c))
            .collect()
    };
    let before = contents(&sb);
    let port = pop3s_port(&sb);
    let py = PyOut::run(&sb, PY_DELE_KEEP, port, &pw, &[]);
    let uidls = numbered(&py.rest("uidl_first"));
    assert_eq!(uidls.len(), 3);
    py.want("dele1", "+OK");
    py.want("dele2", "+OK");
    assert!(py.get("stat_marked").starts_with("1 "), "{}", py.raw);
    py.want("rset", "+OK");
    assert!(py.get("stat_rset").starts_with("3 "), "{}", py.raw);
    assert_eq!(
        py.get("quit"),
        "+OK Logging out, 0 messages deleted.",
        "DELE, RSET, QUIT"
    );
    assert_eq!(numbered(&py.rest("uidl_second")), uidls, "after RSET");
    py.want("dele", "+OK");
    for name in [
        "dele_again",
        "retr_deleted",
        "top_deleted",
        "list_deleted",
        "uidl_deleted",
        "list_range",
        "retr_range",
        "dele_range",
        "retr_zero",
    ] {
        py.want(name, "-ERR");
    }
    py.want("noop", "+OK");
    assert!(py.get("stat").starts_with("2 "), "{}", py.raw);
    let marked = numbered(&py.rest("uidl_marked"));
    assert_eq!(marked.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    // The connection ended without QUIT: nothing removed.
    wait_log(&sb, "Disconnected: user=demo", 1, WAIT);
    assert_eq!(contents(&sb), before, "DELE then a dropped connection");

    let py = PyOut::run(&sb, PY_DELE_REMOVE, port, &pw, &[]);
    assert_eq!(numbered(&py.rest("uidl_before")), uidls);
    assert!(py.get("top2").contains("Subject: dele two"), "{}", py.raw);
    py.want("dele2", "+OK");
    assert_eq!(py.get("quit"), "+OK Logging out, 1 messages deleted.");
    let after = contents(&sb);
    let mut expect = before.clone();
    expect.remove("dele two");
    assert_eq!(after, expect, "DELE 2 and QUIT remove exactly message 2");
    assert!(py.get("stat_after").starts_with("2 "), "{}", py.raw);
    let next: Vec<String> = numbered(&py.rest("uidl_after")).into_values().collect();
    assert_eq!(next, vec![uidls[&1].clone(), uidls[&3].clone()]);
    py.want("quit_after", "+OK");
    let log = sb.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Logout: user=demo") && l.contains("del=1/3")),
        "{}",
        log_tail(&sb, 20)
    );
}

// ---------------------------------------------------------------------------------------
// 5. Mail arriving during a session: not in it, in the next one (Maildir and mbox).
// ---------------------------------------------------------------------------------------

const PY_DURING_MAILDIR: &str = r#"
sendmail_path, etc, maildir = args[0], args[1], args[2]
def count():
    return sum(len(os.listdir(os.path.join(maildir, d))) for d in ("new", "cur"))
p = pop3s(port)
login(p)
rec("stat_before", p.stat)
rec("uidl_before", p.uidl)
before = count()
msg = b"From: sender@example.org\nTo: demo@localhost\nSubject: arrived during\n\nbody\n"
subprocess.run([sendmail_path, "-C", etc, "demo@localhost"], input=msg, check=True, timeout=20)
end = time.time() + 30
while count() <= before and time.time() < end:
    time.sleep(0.05)
out("delivered", "%d %d" % (before, count()))
rec("stat_during", p.stat)
rec("uidl_during", p.uidl)
rec("quit", p.quit)
q = pop3s(port)
login(q)
st = rec("stat_after", q.stat)
rec("uidl_after", q.uidl)
rec("top_new", lambda: q.top(st[0], 0))
rec("quit_after", q.quit)
"#;

#[test]
fn a_delivery_during_a_maildir_session_shows_in_the_next() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_during_maildir", &[]);
    start_pop3d(&mut sb);
    deliver(&sb, "before one", "first\n", 1);
    deliver(&sb, "before two", "second\n", 2);
    let sendmail = sb.bin.join("sendmail").to_string_lossy().to_string();
    let etc = sb.etc.to_string_lossy().to_string();
    let md = sb.maildir("demo").to_string_lossy().to_string();
    let py = PyOut::run(
        &sb,
        PY_DURING_MAILDIR,
        pop3s_port(&sb),
        &pw,
        &[&sendmail, &etc, &md],
    );
    assert_eq!(
        py.get("delivered"),
        "2 3",
        "the delivery went ahead during the session"
    );
    assert_eq!(py.get("stat_during"), py.get("stat_before"));
    assert_eq!(py.get("uidl_during"), py.get("uidl_before"));
    py.want("quit", "+OK");
    assert!(py.get("stat_after").starts_with("3 "), "{}", py.raw);
    let before = numbered(&py.rest("uidl_before"));
    let after = numbered(&py.rest("uidl_after"));
    assert_eq!(after.len(), 3);
    assert_eq!(after[&1], before[&1]);
    assert_eq!(after[&2], before[&2]);
    assert!(py.get("top_new").contains("Subject: arrived during"));
}

const PY_DURING_MBOX: &str = r#"
sendmail_path, etc, mbox, spool = args[0], args[1], args[2], args[3]
def count():
    try:
        data = open(mbox, "rb").read()
    except FileNotFoundError:
        return 0
    return len(re.findall(rb"(?m)^From ", data))
def queued():
    return sum(len(os.listdir(os.path.join(spool, d))) for d in ("active", "deferred"))
p = pop3s(port)
login(p)
rec("stat_before", p.stat)
rec("uidl_before", p.uidl)
msg = b"From: sender@example.org\nTo: demo@localhost\nSubject: arrived during\n\nbody\n"
subprocess.run([sendmail_path, "-C", etc, "demo@localhost"], input=msg, check=True, timeout=20)
# qmgr hands it to local, which waits for the mbox the session holds.
end = time.time() + 15
while not queued() and time.time() < end:
    time.sleep(0.05)
time.sleep(1)
out("queued", queued())
out("count_during", count())
rec("stat_during", p.stat)
rec("uidl_during", p.uidl)
rec("quit", p.quit)
"#;

const PY_STAT_UIDL: &str = r#"
p = pop3s(port)
login(p)
rec("stat", p.stat)
rec("uidl", p.uidl)
rec("quit", p.quit)
"#;

#[test]
fn a_delivery_during_an_mbox_session_waits_and_shows_in_the_next() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_during_mbox", &[("home_mailbox", "mbox")]);
    start_pop3d(&mut sb);
    deliver_mbox(&sb, "before one", "first\n", 1);
    deliver_mbox(&sb, "before two", "second\n", 2);
    let sendmail = sb.bin.join("sendmail").to_string_lossy().to_string();
    let etc = sb.etc.to_string_lossy().to_string();
    let mbox = mbox_path(&sb).to_string_lossy().to_string();
    let spool = sb.dir.join("spool").to_string_lossy().to_string();
    let port = pop3s_port(&sb);
    let py = PyOut::run(
        &sb,
        PY_DURING_MBOX,
        port,
        &pw,
        &[&sendmail, &etc, &mbox, &spool],
    );
    assert_ne!(py.get("queued"), "0", "the message never reached qmgr");
    assert_eq!(
        py.get("count_during"),
        "2",
        "a delivery went into the mbox while a session held it"
    );
    assert_eq!(py.get("stat_during"), py.get("stat_before"));
    assert_eq!(py.get("uidl_during"), py.get("uidl_before"));
    py.want("quit", "+OK");
    // local was waiting for the lock (or deferred the message; a flush retries it).
    let mut flushed = false;
    sb.wait_for(
        "the third message in the mbox",
        Duration::from_secs(60),
        || {
            if !flushed && !sb.queue_files("deferred").is_empty() {
                eprintln!("the delivery was deferred: flushing the queue");
                let _ = sb.petrel(&["queue", "flush"]);
                flushed = true;
            }
            mbox_count(&sb) >= 3
        },
    );
    let msgs = mbox_messages(&mbox_path(&sb));
    let subjects: Vec<String> = msgs.iter().map(|m| subject_in(&m.content)).collect();
    assert_eq!(
        subjects,
        vec!["before one", "before two", "arrived during"],
        "nothing lost, nothing twice"
    );
    let next = PyOut::run(&sb, PY_STAT_UIDL, port, &pw, &[]);
    assert!(next.get("stat").starts_with("3 "), "{}", next.raw);
    let before = numbered(&py.rest("uidl_before"));
    let after = numbered(&next.rest("uidl"));
    assert_eq!(after.len(), 3);
    assert_eq!(after[&1], before[&1]);
    assert_eq!(after[&2], before[&2]);
    assert!(
        sb.all_queue_files().is_empty(),
        "{:?}",
        sb.all_queue_files()
    );
}

// ---------------------------------------------------------------------------------------
// 6. A second session on a maildrop in use: -ERR [IN-USE] after about 5 s.
// ---------------------------------------------------------------------------------------

const PY_IN_USE: &str = r#"
a = pop3s(port)
login(a)
rec("a_stat", a.stat)
b = pop3s(port)
rec("b_user", lambda: b.user("demo"))
t0 = time.time()
rec("b_pass", lambda: b.pass_(pw))
out("b_secs", "%.2f" % (time.time() - t0))
try:
    b.sock.settimeout(10)
    out("b_after", repr(b.sock.recv(100)))
except Exception as e:
    out("b_after", "EXC %r" % (e,))
rec("a_stat2", a.stat)
rec("a_quit", a.quit)
c = pop3s(port)
rec("c_login", lambda: login(c))
rec("c_stat", c.stat)
rec("c_quit", c.quit)
"#;

fn second_session_in_use(name: &str, settings: &[(&str, &str)], mbox: bool) {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox(name, settings);
    start_pop3d(&mut sb);
    if mbox {
        deliver_mbox(&sb, "in use", "body\n", 1);
    } else {
        deliver(&sb, "in use", "body\n", 1);
    }
    let py = PyOut::run(&sb, PY_IN_USE, pop3s_port(&sb), &pw, &[]);
    assert!(py.get("a_stat").starts_with("1 "), "{}", py.raw);
    py.want("b_user", "+OK");
    py.want("b_pass", "-ERR [IN-USE]");
    let secs: f64 = py.get("b_secs").parse().unwrap();
    assert!(
        secs >= 4.0,
        "[IN-USE] after {secs} s: pop3d waits 5 s for the other session"
    );
    assert_eq!(py.get("b_after"), "b''", "the refused connection is closed");
    assert_eq!(
        py.get("a_stat2"),
        py.get("a_stat"),
        "the first session goes on"
    );
    py.want("a_quit", "+OK");
    py.want("c_login", "+OK");
    assert!(py.get("c_stat").starts_with("1 "), "{}", py.raw);
    py.want("c_quit", "+OK");
    assert!(
        sb.log()
            .lines()
            .any(|l| l.contains("user=demo, rip=127.0.0.1: mailbox in use")),
        "{}",
        log_tail(&sb, 20)
    );
}

#[test]
fn a_second_session_on_a_maildir_gets_in_use() {
    second_session_in_use("pop3d_in_use_maildir", &[], false);
}

#[test]
fn a_second_session_on_an_mbox_gets_in_use() {
    second_session_in_use("pop3d_in_use_mbox", &[("home_mailbox", "mbox")], true);
}

// ---------------------------------------------------------------------------------------
// 7. mbox: From quoting undone, exact sizes, DELE rewrites the file in place.
// ---------------------------------------------------------------------------------------

const PY_MBOX: &str = r#"
p = pop3s(port)
login(p)
st = rec("stat", p.stat)
rec("list", p.list)
rec("uidl", p.uidl)
for i in range(1, st[0] + 1):
    rec("list%d" % i, lambda i=i: p.list(i))
    r = rec("retr%d" % i, lambda i=i: p.retr(i))
    if r:
        out("retr%d_hex" % i, hexof(r[1]))
        out("retr%d_octets" % i, r[2])
    r = rec("top%d" % i, lambda i=i: p.top(i, 1))
    if r:
        out("top%d_hex" % i, hexof(r[1]))
rec("dele2", lambda: p.dele(2))
rec("quit", p.quit)
q = pop3s(port)
login(q)
st = rec("stat_after", q.stat)
rec("uidl_after", q.uidl)
for i in range(1, st[0] + 1):
    r = rec("after%d" % i, lambda i=i: q.retr(i))
    if r:
        out("after%d_hex" % i, hexof(r[1]))
rec("quit_after", q.quit)
"#;

#[test]
fn mbox_quoting_sizes_and_dele_rewrite() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_mbox", &[("home_mailbox", "mbox")]);
    start_pop3d(&mut sb);
    deliver_mbox(
        &sb,
        "mbox one",
        "first\nFrom here\n>From quoted\n.leading dot\n",
        1,
    );
    deliver_mbox(&sb, "mbox two", "second\n", 2);
    deliver_mbox(&sb, "mbox three", "third\n\nFrom the end\n", 3);
    // A fourth message at the end of the file without a final newline, as another
    // program may leave it.
    let path = mbox_path(&sb);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(
            b"From hand@example.org Mon Jan  1 00:00:00 2024\nFrom: hand@example.org\nSubject: mbox four\n\nlast line without newline",
        )
        .unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("\n>From here\n") && text.contains("\n>>From quoted\n"),
        "local quotes From lines (mboxrd):\n{text}"
    );
    let orig = mbox_messages(&path);
    let subjects: Vec<String> = orig.iter().map(|m| subject_in(&m.content)).collect();
    assert_eq!(
        subjects,
        vec!["mbox one", "mbox two", "mbox three", "mbox four"]
    );

    let py = PyOut::run(&sb, PY_MBOX, pop3s_port(&sb), &pw, &[]);
    let list = numbered(&py.rest("list"));
    let total: u64 = list.values().map(|s| s.parse::<u64>().unwrap()).sum();
    assert_eq!(py.get("stat"), format!("4 {total}"));
    let uidl = numbered(&py.rest("uidl"));
    assert_eq!(uidl.len(), 4);
    for (k, m) in orig.iter().enumerate() {
        let i = k as u32 + 1;
        let retr = py.hex(&format!("retr{i}_hex"));
        let expect = wire_form(&m.content);
        assert_eq!(
            String::from_utf8_lossy(&retr),
            String::from_utf8_lossy(&expect),
            "RETR {i} is the unquoted message with CRLF line ends"
        );
        assert_eq!(list[&i], retr.len().to_string(), "LIST {i}");
        assert_eq!(py.get(&format!("retr{i}_octets")), list[&i]);
        assert_eq!(
            single_value(py.first(&format!("list{i}")), i),
            list[&i],
            "LIST {i}"
        );
        assert_eq!(
            String::from_utf8_lossy(&py.hex(&format!("top{i}_hex"))),
            String::from_utf8_lossy(&top_of(&expect, 1)),
            "TOP {i} 1"
        );
    }
    let one = String::from_utf8_lossy(&py.hex("retr1_hex")).to_string();
    for line in ["From here", ">From quoted", ".leading dot"] {
        assert!(
            one.split("\r\n").any(|l| l == line),
            "RETR 1 lacks the line {line:?}: {one:?}"
        );
    }
    assert!(py
        .hex("retr4_hex")
        .ends_with(b"\r\n\r\nlast line without newline\r\n"));
    py.want("dele2", "+OK");
    assert_eq!(py.get("quit"), "+OK Logging out, 1 messages deleted.");

    // The mbox now holds messages 1, 3 and 4, byte for byte, and nothing else.
    let now = std::fs::read(&path).unwrap();
    let kept: Vec<&MboxMessage> = [0, 2, 3].iter().map(|&k| &orig[k]).collect();
    let expect: Vec<u8> = kept.iter().flat_map(|m| m.raw.clone()).collect();
    assert_eq!(
        String::from_utf8_lossy(&now),
        String::from_utf8_lossy(&expect),
        "the mbox after DELE 2 + QUIT"
    );
    let dir = path.parent().unwrap();
    for leftover in ["mbox.petrel-journal", "mbox.lock"] {
        assert!(
            !dir.join(leftover).exists(),
            "{leftover} left behind: {:?}",
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
    }
    assert!(py.get("stat_after").starts_with("3 "), "{}", py.raw);
    let after: Vec<String> = numbered(&py.rest("uidl_after")).into_values().collect();
    assert_eq!(
        after,
        vec![uidl[&1].clone(), uidl[&3].clone(), uidl[&4].clone()],
        "UIDLs of the kept messages"
    );
    for (i, m) in kept.iter().enumerate() {
        let i = i + 1;
        assert_eq!(
            py.hex(&format!("after{i}_hex")),
            wire_form(&m.content),
            "RETR {i} after the rewrite"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. fetchmail over POP3S: keep (UIDL: the next run fetches only new mail) and no-keep,
//    on a Maildir and on an mbox. Delivery is by an MDA writing files: fetchmail never
//    talks to an SMTP port.
// ---------------------------------------------------------------------------------------

/// fetchmail's path, if installed; says why not otherwise.
fn have_fetchmail() -> Option<PathBuf> {
    let f = installed(&["/usr/bin/fetchmail", "/usr/local/bin/fetchmail"]);
    if f.is_none() {
        eprintln!("SKIP: fetchmail is not installed (apt-get install fetchmail)");
    }
    f
}

/// How many messages demo's maildrop has (Maildir INBOX or mbox).
fn server_count(sb: &Sandbox, mbox: bool) -> usize {
    if mbox {
        mbox_count(sb)
    } else {
        sb.messages("demo").len()
    }
}

/// The Subjects of the files in `dir` (a fetchmail or Maildir output), sorted.
fn subjects_in_files<P: AsRef<Path>>(dirs: &[P]) -> Vec<String> {
    let mut v = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d.as_ref()).unwrap().flatten() {
            if e.path().is_file() {
                v.push(subject_in(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    v.sort();
    v
}

/// Runs fetchmail once with its own rcfile (mode 0600) and HOME `home`, delivering every
/// message to a file in `outdir`. Returns the exit status (0: mail fetched, 1: none) and
/// what it said.
fn fetchmail(
    fm: &Path,
    sb: &Sandbox,
    pw: &str,
    home: &Path,
    outdir: &Path,
    keep: bool,
) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(home).unwrap();
    std::fs::create_dir_all(outdir).unwrap();
    let rc = home.join("fetchmailrc");
    let text = format!(
        "set no syslog\nset no bouncemail\n\
         poll 127.0.0.1 with proto POP3 port {port} uidl timeout 30\n\
         \x20 user \"demo\" there with password \"{pw}\"\n\
         \x20 options ssl no sslcertck {keep}\n\
         \x20 mda \"cat > {out}/msg.$$\"\n",
        port = pop3s_port(sb),
        keep = if keep { "keep" } else { "nokeep" },
        out = outdir.display()
    );
    std::fs::write(&rc, text).unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = Command::new(fm);
    c.env("HOME", home)
        .env("FETCHMAILHOME", home)
        .env("LC_ALL", "C")
        .arg("-f")
        .arg(&rc)
        // As root fetchmail's lock is /var/run/fetchmail.pid, shared by every test.
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .arg("-v");
    let out = run_limited(c, b"", CLIENT_LIMIT);
    let code = out.status.code().unwrap_or(-1);
    (code, show(&out))
}

fn fetchmail_keep_then_nokeep(name: &str, mbox: bool) {
    let Some(fm) = have_fetchmail() else {
        return;
    };
    let settings: &[(&str, &str)] = if mbox {
        &[("home_mailbox", "mbox")]
    } else {
        &[]
    };
    let (mut sb, pw) = pop3_sandbox(name, settings);
    start_pop3d(&mut sb);
    let put = |subject: &str, n: usize| {
        if mbox {
            deliver_mbox(&sb, subject, "fetched by fetchmail\n", n);
        } else {
            deliver(&sb, subject, "fetched by fetchmail\n", n);
        }
    };
    put("fm one", 1);
    put("fm two", 2);
    put("fm three", 3);
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let out = work.path().join("out");

    // keep: everything fetched, everything stays.
    let (code, said) = fetchmail(&fm, &sb, &pw, &home, &out, true);
    assert_eq!(code, 0, "fetchmail --keep: {said}\n{}", log_tail(&sb, 20));
    assert_eq!(
        subjects_in_files(&[&out]),
        vec!["fm one", "fm three", "fm two"]
    );
    assert_eq!(server_count(&sb, mbox), 3, "keep keeps");
    // Again: the UIDLs are known, nothing new.
    let (code, said) = fetchmail(&fm, &sb, &pw, &home, &out, true);
    assert_eq!(code, 1, "a second keep run finds no new mail: {said}");
    assert_eq!(subjects_in_files(&[&out]).len(), 3, "{said}");
    // One new message: only it is fetched.
    put("fm four", 4);
    let (code, said) = fetchmail(&fm, &sb, &pw, &home, &out, true);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        subjects_in_files(&[&out]),
        vec!["fm four", "fm one", "fm three", "fm two"],
        "{said}"
    );
    assert_eq!(server_count(&sb, mbox), 4);

    // nokeep (a fresh HOME, so every message is new): fetched, then gone.
    let home2 = work.path().join("home2");
    let out2 = work.path().join("out2");
    let (code, said) = fetchmail(&fm, &sb, &pw, &home2, &out2, false);
    assert_eq!(code, 0, "fetchmail nokeep: {said}\n{}", log_tail(&sb, 20));
    assert_eq!(
        subjects_in_files(&[&out2]),
        vec!["fm four", "fm one", "fm three", "fm two"],
        "{said}"
    );
    assert_eq!(server_count(&sb, mbox), 0, "nokeep removes: {said}");
    if mbox {
        assert!(mbox_messages(&mbox_path(&sb)).is_empty());
        assert!(!sb.dir.join("home/demo/mbox.petrel-journal").exists());
    }
    assert!(
        sb.log()
            .lines()
            .any(|l| l.contains("Logout: user=demo") && l.contains("del=4/4")),
        "{}",
        log_tail(&sb, 20)
    );
    let (code, said) = fetchmail(&fm, &sb, &pw, &home2, &out2, false);
    assert_eq!(code, 1, "nothing left: {said}");
}

#[test]
fn fetchmail_keep_and_nokeep_on_a_maildir() {
    fetchmail_keep_then_nokeep("pop3d_fetchmail_maildir", false);
}

#[test]
fn fetchmail_keep_and_nokeep_on_an_mbox() {
    fetchmail_keep_then_nokeep("pop3d_fetchmail_mbox", true);
}

// ---------------------------------------------------------------------------------------
// 9. getmail6 over POP3S into a Maildir: delete = false with read_all = false (the next
//    run gets nothing), then delete = true.
// ---------------------------------------------------------------------------------------

/// getmail's path, if installed; says why not otherwise.
fn have_getmail() -> Option<PathBuf> {
    let g = installed(&[
        "/usr/bin/getmail6",
        "/usr/bin/getmail",
        "/usr/local/bin/getmail6",
        "/usr/local/bin/getmail",
    ]);
    if g.is_none() {
        eprintln!("SKIP: getmail6 is not installed (apt-get install getmail6)");
    }
    g
}

/// A Maildir for getmail to deliver into. getmail refuses to deliver as root: as root the
/// Maildir belongs to `nobody`, whom getmail then delivers as (None: no such user).
fn getmail_maildir(dir: &Path) -> Option<Option<String>> {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    if !petrel_tests::is_root() {
        return Some(None);
    }
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten()?;
    for p in [
        dir.to_path_buf(),
        dir.join("new"),
        dir.join("cur"),
        dir.join("tmp"),
    ] {
        nix::unistd::chown(&p, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    Some(Some("nobody".into()))
}

fn getmail(
    gm: &Path,
    sb: &Sandbox,
    pw: &str,
    getmaildir: &Path,
    dest: &Path,
    user: &Option<String>,
    delete: bool,
) -> String {
    std::fs::create_dir_all(getmaildir).unwrap();
    let rc = getmaildir.join(format!("getmailrc-{delete}"));
    let user_line = user
        .as_ref()
        .map(|u| format!("user = {u}\n"))
        .unwrap_or_default();
    std::fs::write(
        &rc,
        format!(
            "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\nport = {port}\n\
             username = demo\npassword = {pw}\n\n\
             [destination]\ntype = Maildir\npath = {dest}/\n{user_line}\n\
             [options]\ndelete = {delete}\nread_all = {delete}\nverbose = 2\n",
            port = pop3s_port(sb),
            dest = dest.display(),
        ),
    )
    .unwrap();
    let mut c = Command::new(gm);
    c.env("LC_ALL", "C.UTF-8")
        .arg("--getmaildir")
        .arg(getmaildir)
        .arg("--rcfile")
        .arg(&rc);
    let out = run_limited(c, b"", CLIENT_LIMIT);
    let said = show(&out);
    assert!(
        out.status.success(),
        "getmail (delete = {delete}): {said}\n{}",
        log_tail(sb, 20)
    );
    said
}

#[test]
fn getmail6_keeps_then_deletes() {
    use std::os::unix::fs::PermissionsExt;
    let Some(gm) = have_getmail() else {
        return;
    };
    let (mut sb, pw) = pop3_sandbox("pop3d_getmail", &[]);
    start_pop3d(&mut sb);
    deliver(&sb, "gm one", "for getmail\n", 1);
    deliver(&sb, "gm two", "for getmail\n", 2);
    deliver(&sb, "gm three", "for getmail\n", 3);
    let work = tempfile::tempdir().unwrap();
    // nobody (see getmail_maildir) must reach the Maildirs in it.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = work.path().join("dest");
    let dest2 = work.path().join("dest2");
    let (Some(user), Some(_)) = (getmail_maildir(&dest), getmail_maildir(&dest2)) else {
        eprintln!("SKIP: running as root and there is no user nobody for getmail to deliver as");
        return;
    };
    let gmdir = work.path().join("getmail");
    let maildir_files = |d: &Path| vec![d.join("new"), d.join("cur")];
    let all = vec!["gm one", "gm three", "gm two"];

    let said = getmail(&gm, &sb, &pw, &gmdir, &dest, &user, false);
    assert_eq!(subjects_in_files(&maildir_files(&dest)), all, "{said}");
    assert_eq!(sb.messages("demo").len(), 3, "delete = false keeps");
    let said = getmail(&gm, &sb, &pw, &gmdir, &dest, &user, false);
    assert_eq!(
        subjects_in_files(&maildir_files(&dest)).len(),
        3,
        "read_all = false: the second run gets nothing new\n{said}"
    );
    let said = getmail(&gm, &sb, &pw, &gmdir, &dest2, &user, true);
    assert_eq!(subjects_in_files(&maildir_files(&dest2)), all, "{said}");
    assert!(
        sb.messages("demo").is_empty(),
        "delete = true removes: {:?}\n{said}",
        sb.messages("demo")
    );
}

// ---------------------------------------------------------------------------------------
// 10. curl: pop3s:// list, retrieve, UIDL, DELE; pop3:// with STLS (--ssl-reqd), and no
//     login without it.
// ---------------------------------------------------------------------------------------

#[test]
fn curl_lists_retrieves_and_uses_stls() {
    let Some(curl) = installed(&["/usr/bin/curl", "/usr/local/bin/curl"]) else {
        eprintln!("SKIP: curl is not installed (apt-get install curl)");
        return;
    };
    let (mut sb, pw) = pop3_sandbox("pop3d_curl", &[]);
    start_pop3d(&mut sb);
    deliver(&sb, "curl one", "the first body\n.with a dot\n", 1);
    deliver(&sb, "curl two", "the second body\n", 2);
    let files = maildir_by_subject(&sb, "demo");
    let size = |s: &str| wire_form(&files[s].1).len();
    let user = format!("demo:{pw}");
    let run = |args: &[&str]| {
        let mut c = Command::new(&curl);
        c.args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "--insecure",
            "--user",
            &user,
        ])
        .args(args);
        run_limited(c, b"", CLIENT_LIMIT)
    };
    let ok = |args: &[&str]| -> String {
        let out = run(args);
        assert!(
            out.status.success(),
            "curl {args:?}: {}\n{}",
            show(&out),
            log_tail(&sb, 20)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let url = format!("pop3s://127.0.0.1:{}", pop3s_port(&sb));

    let list = ok(&[&format!("{url}/")]);
    let list: Vec<&str> = list.lines().map(str::trim_end).collect();
    assert_eq!(
        list,
        vec![
            format!("1 {}", size("curl one")),
            format!("2 {}", size("curl two"))
        ],
        "curl LIST"
    );
    let one = ok(&[&format!("{url}/1")]);
    assert!(
        one.contains("Subject: curl one") && one.contains("\r\n.with a dot\r\n"),
        "curl RETR 1: {one:?}"
    );
    assert_eq!(one.len(), size("curl one"), "curl RETR 1 is LIST's octets");
    let uidl = ok(&[&format!("{url}/"), "-X", "UIDL"]);
    let uidl: Vec<&str> = uidl.lines().map(str::trim_end).collect();
    assert_eq!(uidl.len(), 2, "{uidl:?}");
    for (i, l) in uidl.iter().enumerate() {
        let (n, u) = l.split_once(' ').unwrap();
        assert_eq!(n, (i + 1).to_string());
        assert!(
            u.len() == 16 && u.bytes().all(|b| b.is_ascii_hexdigit()),
            "{l:?}"
        );
    }
    // STLS on the plain port.
    let plain = format!("pop3://127.0.0.1:{}", pop3_port(&sb));
    let two = ok(&["--ssl-reqd", &format!("{plain}/2")]);
    assert!(
        two.contains("Subject: curl two"),
        "curl STLS RETR 2: {two:?}"
    );
    // Without TLS there is no login to be had (pop3d_tls_auth_only = yes).
    let out = run(&[&format!("{plain}/")]);
    assert!(
        !out.status.success(),
        "curl logged in without TLS: {}",
        show(&out)
    );
    // DELE (no body: -I), then QUIT removes it.
    ok(&[&format!("{url}/"), "-X", "DELE 1", "-I"]);
    let list = ok(&[&format!("{url}/")]);
    assert_eq!(
        list.lines().map(str::trim_end).collect::<Vec<_>>(),
        vec![format!("1 {}", size("curl two"))],
        "after curl DELE 1 (a new session numbers from 1)"
    );
    let left: Vec<String> = maildir_by_subject(&sb, "demo").into_keys().collect();
    assert_eq!(left, vec!["curl two"]);
}

// ---------------------------------------------------------------------------------------
// 11. Hostile input on a raw socket: overlong lines, garbage, commands of the wrong state,
//     floods; the session and the server live on, the maildrop is untouched.
// ---------------------------------------------------------------------------------------

/// Sends one line far over the limit in pieces, then its end and CAPA/NOOP: the overlong
/// line must be answered exactly once.
fn overlong_in_pieces(c: &mut Raw, next: &str, want: &str) {
    for _ in 0..5 {
        c.send(&[b'B'; 3000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    c.send(format!("BBB\r\n{next}\r\n").as_bytes()).unwrap();
    assert_eq!(c.line(), Ok("-ERR Line too long.".to_string()));
    let l = c.line().unwrap();
    assert!(
        l.starts_with(want),
        "after an overlong line sent in pieces, {next}: {l:?}"
    );
}

#[test]
fn hostile_input_gets_err_and_the_session_lives_on() {
    let (mut sb, pw) = pop3_sandbox("pop3d_hostile", &[("pop3d_tls_auth_only", "no")]);
    start_pop3d(&mut sb);
    deliver(&sb, "hostile", "still here\n", 1);
    let before: BTreeMap<String, Vec<u8>> = maildir_by_subject(&sb, "demo")
        .into_iter()
        .map(|(s, (_, c))| (s, c))
        .collect();
    let port = pop3_port(&sb);
    let mut c = Raw::open(port);

    // Before login.
    let long = vec![b'A'; 100_000];
    assert_eq!(c.cmd_bytes(&long), "-ERR Line too long.", "a 100 KB line");
    let capa = c.multi("CAPA");
    for want in ["USER", "SASL PLAIN", "STLS", "TOP"] {
        assert!(capa.iter().any(|l| l == want), "CAPA after it: {capa:?}");
    }
    overlong_in_pieces(&mut c, "CAPA", "+OK Capability list follows");
    let _ = c.multi_rest();
    for bad in [
        &b"\x00\xff garbage \x01\x02"[..],
        b"NOOP\x00",
        b"\xff\xfe",
        b"",
        b"   ",
        b"APOP demo 0123456789abcdef0123456789abcdef",
        b"XYZZY",
        b"USER",
        b"USER a b",
        b"AUTH PLAIN a b c",
        b"PASS x",
        b"RETR x",
    ] {
        let r = c.cmd_bytes(bad);
        assert!(
            r.starts_with("-ERR"),
            "{:?} before login: {r:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // SASL: an empty response, an empty initial response, a cancel: answered, not hung.
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(
        c.cmd("").starts_with("-ERR [AUTH]"),
        "an empty SASL response"
    );
    assert!(
        c.cmd("AUTH PLAIN =").starts_with("-ERR [AUTH]"),
        "AUTH PLAIN ="
    );
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(c.cmd("*"), "-ERR Authentication cancelled.");
    for wrong in [
        "STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 1", "RSET", "NOOP",
    ] {
        assert_eq!(c.cmd(wrong), "-ERR Log in first.", "{wrong} before login");
    }
    assert!(
        c.multi("CAPA").iter().any(|l| l == "USER"),
        "CAPA still works"
    );

    // Logged in (a pipelined USER + PASS + STAT, as PIPELINING allows).
    c.send(format!("USER demo\r\nPASS {pw}\r\nSTAT\r\n").as_bytes())
        .unwrap();
    assert_eq!(c.line(), Ok("+OK".to_string()));
    assert_eq!(c.line(), Ok("+OK Logged in.".to_string()));
    let stat = c.line().unwrap();
    assert!(stat.starts_with("+OK 1 "), "{stat:?}");
    assert_eq!(c.cmd_bytes(&long), "-ERR Line too long.", "a 100 KB line");
    assert_eq!(c.cmd("NOOP"), "+OK");
    overlong_in_pieces(&mut c, "NOOP", "+OK");
    for bad in [
        &b"\x00\xff garbage \x01\x02"[..],
        b"RETR 1\x00",
        b"\xff\xfe",
        b"",
        b"USER demo",
        b"PASS x",
        b"STLS",
        b"AUTH PLAIN AGRlbW8AeA==",
        b"APOP demo 0123456789abcdef0123456789abcdef",
        b"RETR 99999999999",
        b"RETR -1",
        b"RETR",
        b"LIST 1 2",
        b"TOP 1",
        b"TOP 1 x",
        b"DELE",
        b"STAT 1",
        b"RETR 2",
        b"XYZZY",
    ] {
        let r = c.cmd_bytes(bad);
        assert!(
            r.starts_with("-ERR"),
            "{:?} after login: {r:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let capa = c.multi("CAPA");
    assert!(
        !capa
            .iter()
            .any(|l| l == "USER" || l == "STLS" || l.starts_with("SASL")),
        "CAPA after login: {capa:?}"
    );
    assert_eq!(c.cmd("stat"), stat, "commands are case-insensitive");
    // 1000 pipelined NOOPs in one write: 1000 answers.
    c.send(&b"NOOP\r\n".repeat(1000)).unwrap();
    for i in 0..1000 {
        assert_eq!(c.line(), Ok("+OK".to_string()), "NOOP {i} of 1000");
    }
    let retr = c.multi("RETR 1");
    assert!(retr.iter().any(|l| l == "Subject: hostile"), "{retr:?}");
    assert_eq!(c.cmd("QUIT"), "+OK Logging out, 0 messages deleted.");
    assert_eq!(c.line_within(Duration::from_secs(10)), Err(RawEnd::Closed));

    // The server goes on; the maildrop is as it was.
    let mut d = Raw::login(port, "demo", &pw);
    assert_eq!(d.cmd("STAT"), stat);
    assert_eq!(d.cmd("QUIT"), "+OK Logging out, 0 messages deleted.");
    let after: BTreeMap<String, Vec<u8>> = maildir_by_subject(&sb, "demo")
        .into_iter()
        .map(|(s, (_, c))| (s, c))
        .collect();
    assert_eq!(after, before);
    assert!(!sb.pids_of("pop3d").is_empty(), "pop3d is gone");

    // STLS forgets a USER given before it (RFC 2595: the client must start again).
    if petrel_tests::pop3::have_python() {
        let py = PyOut::run(&sb, PY_STLS_FORGETS, port, &pw, &[]);
        py.want("user", "+OK");
        py.want("stls", "+OK");
        py.want("pass", "-ERR");
        py.want("user2", "+OK");
        py.want("pass2", "+OK Logged in");
        py.want("quit", "+OK");
    }
    assert!(bad_log_lines(&sb).is_empty(), "{:?}", bad_log_lines(&sb));
}

const PY_STLS_FORGETS: &str = r#"
r = Raw(port)
r.line()
out("user", r.cmd("USER demo"))
out("stls", r.cmd("STLS"))
r.starttls()
out("pass", r.cmd("PASS " + pw))
out("user2", r.cmd("USER demo"))
out("pass2", r.cmd("PASS " + pw))
out("quit", r.cmd("QUIT"))
"#;

/// A session idle for pop3d_timeout is told so and ended; its DELE is not applied.
#[test]
fn an_idle_session_times_out_and_removes_nothing() {
    let (mut sb, pw) = pop3_sandbox(
        "pop3d_idle_timeout",
        &[("pop3d_tls_auth_only", "no"), ("pop3d_timeout", "2s")],
    );
    start_pop3d(&mut sb);
    deliver(&sb, "idle", "body\n", 1);
    let before = maildir_by_subject(&sb, "demo")["idle"].1.clone();
    let mut c = Raw::login(pop3_port(&sb), "demo", &pw);
    c.expect("DELE 1", "+OK");
    assert_eq!(
        c.line_within(Duration::from_secs(20)),
        Ok("-ERR Autologout; idle for too long.".to_string())
    );
    assert_eq!(c.line_within(Duration::from_secs(10)), Err(RawEnd::Closed));
    wait_log(&sb, "Disconnected: user=demo", 1, WAIT);
    assert!(
        disconnected_line(&sb).contains("reason=idle for too long"),
        "{}",
        disconnected_line(&sb)
    );
    let files = maildir_by_subject(&sb, "demo");
    assert_eq!(files.len(), 1);
    assert!(files["idle"].1 == before, "the message changed");
}

// ---------------------------------------------------------------------------------------
// 12. A client that pipelines 2000 RETRs of a 200 KB message and never reads is
//     disconnected (30 s without progress); the maildrop is intact and the next session
//     works. Plaintext (the session writes to the socket) and POP3S (through the login
//     process's TLS relay).
// ---------------------------------------------------------------------------------------

const RETRS: usize = 2000;

/// How long a client that takes none of its output may keep its session: the man page
/// says 30 s; the rest is room for filling the buffers and the log.
const NEVER_READS_LIMIT: Duration = Duration::from_secs(45);

/// A 200 KB message written into demo's Maildir; returns its bytes.
fn big_message(sb: &Sandbox) -> Vec<u8> {
    let mut m = b"From: sender@example.org\nTo: demo@localhost\nSubject: big\n\n".to_vec();
    for i in 0..3000 {
        m.extend_from_slice(format!("line {i:06} {}\n", "x".repeat(56)).as_bytes());
    }
    write_maildir_message(&sb.maildir("demo"), "big", &m);
    m
}

/// After the disconnect: the message is intact and a new session gets it.
fn big_message_intact(sb: &Sandbox, pw: &str, big: &[u8]) {
    let files = maildir_by_subject(sb, "demo");
    assert_eq!(files.len(), 1);
    assert!(files["big"].1 == big, "the message changed");
    let wire = wire_form(big);
    let mut c = Raw::login(pop3_port(sb), "demo", pw);
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {}", wire.len()));
    c.expect("RETR 1", &format!("+OK {} octets", wire.len()));
    let lines = c.multi_rest();
    let got: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    assert!(got == wire, "RETR 1 after the disconnect");
    c.expect("QUIT", "+OK");
    assert!(bad_log_lines(sb).is_empty(), "{:?}", bad_log_lines(sb));
}

/// The `Disconnected:` line of demo's session.
fn disconnected_line(sb: &Sandbox) -> String {
    sb.log()
        .lines()
        .find(|l| l.contains("Disconnected: user=demo"))
        .unwrap_or_default()
        .to_string()
}

/// A plaintext client that reads nothing: the session's own write deadline ends it (each
/// 64 KiB piece must go within 30 s, however many bytes trickle out meanwhile).
#[test]
fn a_client_that_never_reads_is_disconnected_plaintext() {
    let (mut sb, pw) = pop3_sandbox("pop3d_never_reads_plain", &[("pop3d_tls_auth_only", "no")]);
    start_pop3d(&mut sb);
    let big = big_message(&sb);
    let size = wire_form(&big).len() as u64;
    let mut c = Raw::login(pop3_port(&sb), "demo", &pw);
    c.send(&b"RETR 1\r\n".repeat(RETRS)).unwrap();
    // Never read: the session's writes stall, and after 30 s it gives up.
    wait_log(&sb, "Disconnected: user=demo", 1, NEVER_READS_LIMIT);
    let line = disconnected_line(&sb);
    assert!(line.contains("reason=write failed"), "{line}");
    let got = c.drain_until_closed(Duration::from_secs(60));
    let Ok(n) = got else {
        panic!("the connection is still open after the session ended: {got:?}")
    };
    assert!(
        n < RETRS as u64 * size / 4,
        "{n} bytes came: the session did not stop writing"
    );
    big_message_intact(&sb, &pw, &big);
}

/// argv after port and password: the log file, how many seconds to wait for the session's
/// end.
const PY_NEVER_READS: &str = r#"
logpath, limit = args[0], float(args[1])
t = Raw(port, tls=True)
out("greeting", t.line())
out("user", t.cmd("USER demo"))
out("pass", t.cmd("PASS " + pw))
t.send(b"RETR 1\r\n" * 2000)
t0 = time.time()
def gone():
    try:
        return "Disconnected: user=demo" in open(logpath, errors="replace").read()
    except OSError:
        return False
while not gone() and time.time() - t0 < limit:
    time.sleep(0.25)
out("disconnected", "after %.1f s" % (time.time() - t0) if gone() else "never")
# Now read: what was on its way comes, then the end of the connection.
n = 0
state = "open"
end = time.time() + 60
t.sock.settimeout(5)
while time.time() < end:
    try:
        d = t.sock.recv(1 << 20)
    except socket.timeout:
        continue
    except (ssl.SSLError, OSError) as e:
        state = "reset %r" % (e,)
        break
    if not d:
        state = "closed"
        break
    n += len(d)
out("drained", n)
out("state", state)
"#;

#[test]
fn a_client_that_never_reads_is_disconnected_pop3s() {
    if !petrel_tests::pop3::have_python() {
        return;
    }
    let (mut sb, pw) = pop3_sandbox("pop3d_never_reads_tls", &[("pop3d_tls_auth_only", "no")]);
    start_pop3d(&mut sb);
    let big = big_message(&sb);
    let size = wire_form(&big).len() as u64;
    let logpath = sb.dir.join("log/maillog").to_string_lossy().to_string();
    let limit = NEVER_READS_LIMIT.as_secs().to_string();
    let py = PyOut::run_within(
        &sb,
        PY_NEVER_READS,
        pop3s_port(&sb),
        &pw,
        &[&logpath, &limit],
        Duration::from_secs(240),
    );
    py.want("greeting", "+OK");
    py.want("user", "+OK");
    py.want("pass", "+OK Logged in");
    assert!(
        py.get("disconnected").starts_with("after"),
        "the session did not end within {NEVER_READS_LIMIT:?}:\n{}\n{}",
        py.raw,
        log_tail(&sb, 20)
    );
    assert_ne!(
        py.get("state"),
        "open",
        "the connection stayed open\n{}",
        py.raw
    );
    let n: u64 = py.get("drained").parse().unwrap();
    assert!(
        n < RETRS as u64 * size / 4,
        "{n} bytes came: the session did not stop writing"
    );
    let line = disconnected_line(&sb);
    assert!(line.contains("reason=write failed"), "{line}");
    big_message_intact(&sb, &pw, &big);
}
