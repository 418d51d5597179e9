//! smtpd with TLS and SMTP AUTH, end to end (issue 4): the sandbox's port 25 (STARTTLS
//! offered), submission on 587 (STARTTLS and AUTH required) and smtps on 465 (implicit
//! TLS), authd behind them. Driven by raw sockets, Python's ssl and smtplib, swaks and
//! `openssl s_client`. Every connection is to 127.0.0.1; every wait and loop is bounded.
#![allow(clippy::unwrap_used)]

use petrel_tests::{
    header, installed, python, queued_id, run_limited, Sandbox, SmtpClient, SmtpReply,
};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A sandbox (not started) with `settings` applied, and demo's password.
fn tls_sandbox(name: &str, settings: &[(&str, &str)]) -> (Sandbox, String) {
    let (sb, pw) = Sandbox::new_with_demo_password(name);
    for (k, v) in settings {
        sb.set(k, v);
    }
    (sb, pw)
}

/// Starts the suite and waits until 587 and 465 accept connections too.
fn start(sb: &mut Sandbox) {
    sb.start_smtp();
    for port in [sb.submission_port(), sb.smtps_port()] {
        sb.wait_for(
            &format!("a listener on 127.0.0.1:{port}"),
            Duration::from_secs(20),
            || SmtpClient::connect(port).is_ok(),
        );
    }
}

use petrel_tests::show;

/// What a Python script printed: `name|code|text` lines (text: "\n" as "\\n").
struct Py {
    m: HashMap<String, (u16, String)>,
    raw: String,
}

impl Py {
    fn run(script: &str, args: &[&str]) -> Py {
        let out = python(&format!("{PY_PRELUDE}{script}"), args, CLIENT_LIMIT);
        let raw = show(&out);
        assert!(out.status.success(), "python failed: {raw}");
        let m = petrel_tests::parse_replies(&out.stdout);
        Py { m, raw }
    }

    fn get(&self, name: &str) -> &(u16, String) {
        self.m
            .get(name)
            .unwrap_or_else(|| panic!("python printed no {name:?}:\n{}", self.raw))
    }

    fn text(&self, name: &str) -> &str {
        &self.get(name).1
    }

    fn code(&self, name: &str) -> u16 {
        self.get(name).0
    }

    /// Asserts that the reply `name` (its whole text, every line with its code) starts with
    /// `prefix`.
    fn want(&self, name: &str, prefix: &str) {
        let t = self.text(name);
        assert!(
            t.starts_with(prefix),
            "{name}: expected a reply starting with {prefix:?}, got {t:?}\n{}",
            self.raw
        );
    }
}

/// A small TLS-capable SMTP dialogue kit for Python: `Conn.open(port)` reads the greeting;
/// `cmd` returns (code, every line of the reply joined with "\n"); a connection error or
/// close is a reply with code 0 and says what happened, so a test shows it.
const PY_PRELUDE: &str = r#"
import base64, select, smtplib, socket, ssl, sys, time
port = int(sys.argv[1])
pw = sys.argv[2] if len(sys.argv) > 2 else ""

def p(name, r):
    text = r[1].decode("utf-8", "replace") if isinstance(r[1], bytes) else str(r[1])
    print("%s|%d|%s" % (name, r[0], text.replace("\n", "\\n")), flush=True)

def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c

def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

def plain(user, password):
    return b64(b"\0" + user.encode() + b"\0" + password.encode())

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    @staticmethod
    def open(port, wrap=False):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if wrap:
            s = ctx().wrap_socket(s)
        c = Conn(s)
        c.greeting = c.reply()
        return c

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        lines = []
        try:
            for _ in range(500):
                while b"\n" not in self.buf:
                    d = self.sock.recv(65536)
                    if not d:
                        return (0, "CLOSED after %r" % (lines + [self.buf.decode("utf-8", "replace")]))
                    self.buf += d
                line, self.buf = self.buf.split(b"\n", 1)
                line = line.rstrip(b"\r").decode("utf-8", "replace")
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return (int(line[:3]) if line[:3].isdigit() else 0, "\n".join(lines))
        except OSError as e:
            return (0, "ERROR %r after %r" % (e, lines))
        return (0, "reply too long: %r" % lines)

    def cmd(self, line):
        try:
            self.send(line.encode() + b"\r\n")
        except OSError as e:
            return (0, "ERROR sending %r: %r" % (line, e))
        return self.reply()

    def starttls(self):
        r = self.cmd("STARTTLS")
        if r[0] == 220:
            self.left_over = self.buf
            self.buf = b""
            self.sock = ctx().wrap_socket(self.sock)
        return r

def tls_session(port, ehlo="client.example"):
    """587/25: greeting, EHLO, STARTTLS, EHLO again."""
    c = Conn.open(port)
    c.cmd("EHLO " + ehlo)
    r = c.starttls()
    assert r[0] == 220, r
    r = c.cmd("EHLO " + ehlo)
    assert r[0] == 250, r
    return c
"#;

/// Base64 (standard alphabet, padded).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// True when an EHLO reply advertises `keyword` (a whole extension line, any arguments).
fn advertises(r: &SmtpReply, keyword: &str) -> bool {
    r.texts()
        .iter()
        .any(|t| t.split_whitespace().next() == Some(keyword))
}

/// The message in `msgs` whose Subject is `subject`.
fn by_subject<'a>(msgs: &'a [String], subject: &str) -> &'a String {
    msgs.iter()
        .find(|m| header(m, "Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message with Subject {subject:?} in {msgs:#?}"))
}

/// `petrel queue show ID`, retried while qmgr moves the file between directories.
fn queue_show(sb: &Sandbox, id: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let out = sb.petrel(&["queue", "show", id]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).to_string();
        }
        last = show(&out);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "petrel queue show {id} never succeeded: {last}\nqueue: {:?}",
        sb.all_queue_files()
    );
}

// ---------------------------------------------------------------------------------------
// Submission (587): STARTTLS first, then AUTH, then relay.
// ---------------------------------------------------------------------------------------

const PY_SUBMISSION: &str = r#"
c = Conn.open(port)
p("greeting", c.greeting)
p("ehlo-plain", c.cmd("EHLO client.example"))
p("starttls", c.starttls())
p("left-over", (len(c.left_over), repr(c.left_over)))
p("ehlo-tls", c.cmd("EHLO client.example"))
p("tls-version", (0, c.sock.version()))
p("mail-noauth", c.cmd("MAIL FROM:<demo@localhost>"))
p("rcpt-noauth", c.cmd("RCPT TO:<someone@remote.example>"))
p("rset", c.cmd("RSET"))
t = time.time()
p("auth-wrong", c.cmd("AUTH PLAIN " + plain("demo", "wrong-" + pw)))
p("auth-wrong-ms", (int((time.time() - t) * 1000), ""))
p("auth-unknown-user", c.cmd("AUTH PLAIN " + plain("nosuchuser", pw)))
p("auth-plain-1", c.cmd("AUTH PLAIN"))
p("auth-plain-2", c.cmd(plain("demo", pw)))
p("auth-twice", c.cmd("AUTH PLAIN " + plain("demo", pw)))
p("mail", c.cmd("MAIL FROM:<demo@localhost>"))
p("rcpt-remote", c.cmd("RCPT TO:<someone@remote.example>"))
p("rcpt-local", c.cmd("RCPT TO:<demo@localhost>"))
p("data", c.cmd("DATA"))
p("queued", c.cmd("Subject: submitted over 587\r\n\r\nhello from submission\r\n."))
p("quit", c.cmd("QUIT"))

# AUTH PLAIN with the initial response.
c = tls_session(port)
p("plain-ir", c.cmd("AUTH PLAIN " + plain("demo", pw)))
c.cmd("QUIT")

# AUTH LOGIN, step by step, then with the user name as initial response.
c = tls_session(port)
p("login-1", c.cmd("AUTH LOGIN"))
p("login-2", c.cmd(b64("demo")))
p("login-3", c.cmd(b64(pw)))
c.cmd("QUIT")
c = tls_session(port)
p("login-ir-1", c.cmd("AUTH LOGIN " + b64("demo")))
p("login-ir-2", c.cmd(b64(pw)))
c.cmd("QUIT")

# '*' aborts an exchange; the session goes on and can still log in.
c = tls_session(port)
c.cmd("AUTH PLAIN")
p("abort-plain", c.cmd("*"))
c.cmd("AUTH LOGIN")
c.cmd(b64("demo"))
p("abort-login", c.cmd("*"))
p("after-abort", c.cmd("AUTH PLAIN " + plain("demo", pw)))
c.cmd("QUIT")
"#;

#[test]
fn submission_requires_starttls_then_auth_then_relays() {
    let (mut sb, pw) = tls_sandbox("tlsauth_submission_587", &[]);
    start(&mut sb);
    let port = sb.submission_port();

    // Before TLS (raw plaintext): STARTTLS offered, AUTH not; MAIL and AUTH refused.
    let mut c = SmtpClient::open(port);
    let r = c.cmd("EHLO client.example");
    assert_eq!(r.code, 250, "{r}");
    assert!(advertises(&r, "STARTTLS"), "587 offers STARTTLS: {r}");
    assert!(!advertises(&r, "AUTH"), "no AUTH before TLS on 587: {r}");
    c.expect(
        "MAIL FROM:<demo@localhost>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.expect(
        &format!("AUTH PLAIN {}", plain("demo", &pw)),
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.expect("QUIT", "221 ");

    // Inside TLS (Python ssl).
    let py = Py::run(PY_SUBMISSION, &[&port.to_string(), &pw]);
    py.want("greeting", "220 mail.sandbox.test ESMTP");
    py.want("starttls", "220 2.0.0");
    assert_eq!(py.code("left-over"), 0, "{}", py.raw);
    let ehlo = py.text("ehlo-tls");
    assert_eq!(py.code("ehlo-tls"), 250, "{}", py.raw);
    assert!(
        ehlo.lines().any(|l| l.get(4..) == Some("AUTH PLAIN LOGIN")),
        "AUTH PLAIN LOGIN after STARTTLS: {ehlo}"
    );
    assert!(
        !ehlo
            .lines()
            .any(|l| l.get(4..).unwrap_or("").starts_with("STARTTLS")),
        "no STARTTLS inside TLS: {ehlo}"
    );
    let version = py.text("tls-version");
    assert!(
        version == "TLSv1.3" || version == "TLSv1.2",
        "TLS version {version}"
    );

    // Relay without AUTH: the sender is fine, a remote recipient is not.
    py.want("mail-noauth", "250 2.1.0");
    let relay = py.text("rcpt-noauth");
    assert!(
        relay.starts_with("554 5.7.1")
            && (relay.contains("Relay access denied") || relay.contains("Access denied")),
        "relay without AUTH: {relay}"
    );

    // Wrong password: 535 after authd's delay; unknown user: the same 535.
    py.want("auth-wrong", "535 5.7.8 Error: authentication failed");
    let ms = py.code("auth-wrong-ms");
    assert!(
        ms >= 800,
        "a failed login is answered after auth_failure_delay (1s), took {ms} ms"
    );
    py.want(
        "auth-unknown-user",
        "535 5.7.8 Error: authentication failed",
    );

    // AUTH PLAIN without initial response, then twice.
    py.want("auth-plain-1", "334");
    assert_eq!(py.text("auth-plain-1").trim_end(), "334", "{}", py.raw);
    py.want("auth-plain-2", "235 2.7.0 Authentication successful");
    py.want("auth-twice", "503 5.5.1 Error: already authenticated");

    // Authenticated: relay allowed.
    py.want("mail", "250 2.1.0");
    py.want("rcpt-remote", "250 2.1.5");
    py.want("rcpt-local", "250 2.1.5");
    py.want("data", "354 ");
    py.want("queued", "250 2.0.0 Ok: queued as ");
    py.want("quit", "221 ");
    let id = py
        .text("queued")
        .rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_string())
        .unwrap();

    py.want("plain-ir", "235 2.7.0 Authentication successful");
    py.want("login-1", "334 VXNlcm5hbWU6");
    py.want("login-2", "334 UGFzc3dvcmQ6");
    py.want("login-3", "235 2.7.0 Authentication successful");
    py.want("login-ir-1", "334 UGFzc3dvcmQ6");
    py.want("login-ir-2", "235 2.7.0 Authentication successful");
    py.want("abort-plain", "501 5.7.0");
    py.want("abort-login", "501 5.7.0");
    py.want("after-abort", "235 2.7.0 Authentication successful");

    // The local copy is delivered, says ESMTPSA; the remote one waits in the queue
    // (there is no smtp client) and records who logged in.
    let msgs = sb.wait_messages("demo", 1, WAIT);
    let msg = by_subject(&msgs, "submitted over 587");
    let received = header(msg, "Received").unwrap();
    assert!(
        received.contains(&format!("with ESMTPSA id {id}")),
        "Received: {received}"
    );
    let dump = queue_show(&sb, &id);
    assert!(dump.contains("sasl_username=demo"), "{dump}");
    assert!(dump.contains("sasl_method=PLAIN"), "{dump}");
    assert!(dump.contains("someone@remote.example"), "{dump}");

    let log = sb.log();
    for want in [
        "TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher ",
        "unknown[127.0.0.1]: sasl_method=PLAIN, sasl_username=demo",
        "unknown[127.0.0.1]: sasl_method=LOGIN, sasl_username=demo",
        &format!("{id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=demo"),
    ] {
        assert!(log.contains(want), "log has no {want:?}:\n{log}");
    }
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Port 25 with AUTH enabled: AUTH only over TLS; Received says ESMTPS / ESMTPSA / ESMTPA.
// ---------------------------------------------------------------------------------------

const PY_PORT25: &str = r#"
c = tls_session(port)
p("tls-only", c.cmd("MAIL FROM:<sender@example.net>"))
c.cmd("RCPT TO:<demo@localhost>")
c.cmd("DATA")
p("tls-only-queued", c.cmd("Subject: tls only\r\n\r\nencrypted, anonymous\r\n."))
c.cmd("QUIT")
c = tls_session(port)
p("auth", c.cmd("AUTH PLAIN " + plain("demo", pw)))
c.cmd("MAIL FROM:<demo@localhost>")
c.cmd("RCPT TO:<demo@localhost>")
c.cmd("DATA")
p("tls-auth-queued", c.cmd("Subject: tls and auth\r\n\r\nencrypted, logged in\r\n."))
c.cmd("QUIT")
"#;

#[test]
fn port_25_offers_auth_only_inside_tls_and_received_says_so() {
    let (mut sb, pw) = tls_sandbox(
        "tlsauth_port_25_auth_only",
        &[
            ("smtpd_sasl_auth_enable", "yes"),
            ("smtpd_tls_auth_only", "yes"),
        ],
    );
    // A listener where AUTH is allowed in plaintext, for comparison.
    let lax = sb.base + 26;
    sb.add_service(&format!(
        "127.0.0.1:{lax}    inet  n       -      n      -      1       smtpd -o smtpd_tls_auth_only=no"
    ));
    start(&mut sb);
    let port = sb.smtp_port();

    let mut c = SmtpClient::open(port);
    let r = c.cmd("EHLO client.example");
    assert!(advertises(&r, "STARTTLS"), "{r}");
    assert!(!advertises(&r, "AUTH"), "no AUTH in plaintext on 25: {r}");
    c.expect(&format!("AUTH PLAIN {}", plain("demo", &pw)), "538 5.7.11");
    // Plaintext mail is still fine on 25 (security level may).
    let sent = c.send_mail(
        "sender@example.net",
        &["demo@localhost"],
        "Subject: plaintext\n\nno TLS\n",
    );
    assert!(sent.starts_with("250 2.0.0"), "{sent}");
    c.expect("QUIT", "221 ");

    // smtpd_tls_auth_only = no: AUTH in plaintext, Received says ESMTPA.
    let mut c = SmtpClient::open(lax);
    let r = c.cmd("EHLO client.example");
    assert!(
        advertises(&r, "AUTH"),
        "AUTH offered with smtpd_tls_auth_only=no: {r}"
    );
    c.expect(
        &format!("AUTH PLAIN {}", plain("demo", &pw)),
        "235 2.7.0 Authentication successful",
    );
    let sent = c.send_mail(
        "demo@localhost",
        &["demo@localhost"],
        "Subject: plaintext auth\n\nlogged in, not encrypted\n",
    );
    assert!(sent.starts_with("250 2.0.0"), "{sent}");
    c.expect("QUIT", "221 ");

    let py = Py::run(PY_PORT25, &[&port.to_string(), &pw]);
    py.want("tls-only", "250 2.1.0");
    py.want("tls-only-queued", "250 2.0.0 Ok: queued as ");
    py.want("auth", "235 2.7.0 Authentication successful");
    py.want("tls-auth-queued", "250 2.0.0 Ok: queued as ");

    let msgs = sb.wait_messages("demo", 4, WAIT);
    for (subject, proto) in [
        ("plaintext", "ESMTP"),
        ("plaintext auth", "ESMTPA"),
        ("tls only", "ESMTPS"),
        ("tls and auth", "ESMTPSA"),
    ] {
        let received = header(by_subject(&msgs, subject), "Received").unwrap();
        assert!(
            received.contains(&format!(" with {proto} id ")),
            "{subject}: wanted {proto}: {received}"
        );
    }
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// smtpd_sender_login_maps
// ---------------------------------------------------------------------------------------

const PY_SENDER_LOGIN: &str = r#"
alice_pw = sys.argv[3]
c = tls_session(port)
p("auth-demo", c.cmd("AUTH PLAIN " + plain("demo", pw)))
p("mail-other", c.cmd("MAIL FROM:<someoneelse@localhost>"))
p("mail-own", c.cmd("MAIL FROM:<demo@localhost>"))
p("rcpt", c.cmd("RCPT TO:<demo@localhost>"))
c.cmd("DATA")
p("queued", c.cmd("Subject: own sender\r\n\r\nmine\r\n."))
c.cmd("QUIT")
c = tls_session(port)
p("auth-alice", c.cmd("AUTH PLAIN " + plain("alice", alice_pw)))
p("alice-as-demo", c.cmd("MAIL FROM:<demo@localhost>"))
p("alice-own", c.cmd("MAIL FROM:<alice@localhost>"))
c.cmd("QUIT")
"#;

#[test]
fn sender_login_maps_allow_only_owned_addresses() {
    let (sb, pw) = tls_sandbox("tlsauth_sender_login_maps", &[]);
    let map = sb.etc.join("sender_logins");
    std::fs::write(&map, "demo@localhost demo\nalice@localhost alice\n").unwrap();
    sb.set("smtpd_sender_login_maps", &map.display().to_string());
    sb.add_user("alice", "alice-secret");
    let mut sb = sb;
    start(&mut sb);
    let port = sb.submission_port().to_string();
    let py = Py::run(PY_SENDER_LOGIN, &[&port, &pw, "alice-secret"]);
    py.want("auth-demo", "235 2.7.0");
    py.want(
        "mail-other",
        "553 5.7.1 <someoneelse@localhost>: Sender address rejected: not owned by user demo",
    );
    py.want("mail-own", "250 2.1.0");
    py.want("rcpt", "250 2.1.5");
    py.want("queued", "250 2.0.0 Ok: queued as ");
    py.want("auth-alice", "235 2.7.0");
    py.want(
        "alice-as-demo",
        "553 5.7.1 <demo@localhost>: Sender address rejected: not owned by user alice",
    );
    py.want("alice-own", "250 2.1.0");
    sb.wait_messages("demo", 1, WAIT);
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// STARTTLS command injection (CVE-2011-0411)
// ---------------------------------------------------------------------------------------

const PY_INJECTION: &str = r#"
def inject(name, port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(s)
    p(name + "-greeting", c.reply())
    p(name + "-ehlo", c.cmd("EHLO client.example"))
    # STARTTLS and a command after it, in one write (one TCP segment).
    s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
    p(name + "-starttls", c.reply())
    # Nothing more may come in plaintext: not now, not in the next half second.
    extra = c.buf
    c.buf = b""
    end = time.time() + 0.5
    while time.time() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.time()))
        if not r:
            break
        d = s.recv(4096)
        if not d:
            break
        extra += d
    p(name + "-plaintext-extra", (len(extra), repr(extra)))
    try:
        c.sock = ctx().wrap_socket(s)
    except (OSError, ssl.SSLError) as e:
        p(name + "-handshake", (0, repr(e)))
        return
    p(name + "-handshake", (1, c.sock.version()))
    c.send(b"EHLO client.example\r\n")
    p(name + "-first-tls-reply", c.reply())
    p(name + "-rcpt", c.cmd("RCPT TO:<demo@localhost>"))
    p(name + "-mail", c.cmd("MAIL FROM:<ok@example.net>"))
    p(name + "-starttls-again", c.cmd("STARTTLS"))
    p(name + "-quit", c.cmd("QUIT"))

inject("p25", port)
inject("p587", int(sys.argv[2]))
"#;

#[test]
fn starttls_injection_plaintext_after_starttls_is_discarded() {
    let (mut sb, _pw) = tls_sandbox("tlsauth_starttls_injection", &[]);
    start(&mut sb);
    let py = Py::run(
        PY_INJECTION,
        &[
            &sb.smtp_port().to_string(),
            &sb.submission_port().to_string(),
        ],
    );
    for p in ["p25", "p587"] {
        py.want(&format!("{p}-greeting"), "220 ");
        assert_eq!(py.code(&format!("{p}-ehlo")), 250, "{}", py.raw);
        // Exactly one reply in plaintext: the 220 to STARTTLS.
        assert_eq!(
            py.text(&format!("{p}-starttls")),
            "220 2.0.0 Ready to start TLS",
            "{}",
            py.raw
        );
        assert_eq!(
            py.code(&format!("{p}-plaintext-extra")),
            0,
            "{p}: the server answered the injected command in plaintext: {}",
            py.raw
        );
        assert_eq!(py.code(&format!("{p}-handshake")), 1, "{}", py.raw);
        // The first reply inside TLS is the EHLO's, not one to the injected MAIL (a server
        // that kept the plaintext would answer `250 2.1.0` or `530 5.7.0` here).
        let first = py.text(&format!("{p}-first-tls-reply"));
        assert!(
            first.starts_with("250-mail.sandbox.test\n") || first == "250 mail.sandbox.test",
            "{p}: the first reply inside TLS must be the EHLO's: {first:?}\n{}",
            py.raw
        );
        // No transaction was started by the injected MAIL.
        py.want(&format!("{p}-rcpt"), "503 5.5.1");
        py.want(&format!("{p}-mail"), "250 2.1.0");
        py.want(&format!("{p}-starttls-again"), "554 5.5.1");
        py.want(&format!("{p}-quit"), "221 ");
    }
    let log = sb.log();
    assert!(
        !log.contains("evil@x"),
        "the injected MAIL was executed:\n{log}"
    );
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// A stalled TLS handshake: timed out, other sessions unaffected.
// ---------------------------------------------------------------------------------------

const PY_SEND_DURING_STALL: &str = r#"
smtps_port = int(sys.argv[3])
t0 = time.time()
s = smtplib.SMTP_SSL("127.0.0.1", smtps_port, local_hostname="ssl.example", context=ctx(), timeout=30)
p("smtps-login", s.login("demo", pw))
p("smtps-refused", (0, repr(s.sendmail("demo@localhost", ["demo@localhost"], b"Subject: during stall 465\r\n\r\nx\r\n"))))
s.quit()
p("smtps-ms", (int((time.time() - t0) * 1000), ""))
t0 = time.time()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="tls.example", timeout=30)
s.starttls(context=ctx())
p("sub-login", s.login("demo", pw))
p("sub-refused", (0, repr(s.sendmail("demo@localhost", ["demo@localhost"], b"Subject: during stall 587\r\n\r\nx\r\n"))))
s.quit()
p("sub-ms", (int((time.time() - t0) * 1000), ""))
"#;

#[test]
fn stalled_tls_handshakes_time_out_without_blocking_other_clients() {
    let (mut sb, pw) = tls_sandbox("tlsauth_stalled_handshake", &[("smtpd_timeout", "3s")]);
    start(&mut sb);
    let (sub, smtps) = (sb.submission_port(), sb.smtps_port());

    // 465: connect and send nothing.
    let mut silent = SmtpClient::connect(smtps).unwrap();
    // 465: half a ClientHello (a record header announcing 512 bytes, then a few).
    let mut half = SmtpClient::connect(smtps).unwrap();
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x42; 20]);
    half.send(&hello).unwrap();
    // 587: STARTTLS, then nothing.
    let mut after_starttls = SmtpClient::open(sub);
    after_starttls.expect("EHLO client.example", "250");
    after_starttls.expect("STARTTLS", "220 2.0.0");
    let t0 = Instant::now();

    // Meanwhile whole messages go through the same smtpd processes.
    let py = Py::run(
        PY_SEND_DURING_STALL,
        &[&sub.to_string(), &pw, &smtps.to_string()],
    );
    assert_eq!(py.code("smtps-login"), 235, "{}", py.raw);
    assert_eq!(py.code("sub-login"), 235, "{}", py.raw);
    assert_eq!(py.text("smtps-refused"), "{}", "{}", py.raw);
    assert_eq!(py.text("sub-refused"), "{}", "{}", py.raw);
    for name in ["smtps-ms", "sub-ms"] {
        let ms = py.code(name);
        assert!(
            ms < 2500,
            "{name}: a client took {ms} ms while handshakes stalled (smtpd_timeout is 3 s)"
        );
    }
    let during = t0.elapsed();
    if during < Duration::from_millis(2500) {
        for (what, c) in [
            ("silent 465", &mut silent),
            ("half ClientHello 465", &mut half),
            ("587 after STARTTLS", &mut after_starttls),
        ] {
            assert!(
                c.wait_closed(Duration::from_millis(10)).is_err(),
                "{what}: closed before smtpd_timeout"
            );
        }
    }

    // Then each stalled connection is closed after about smtpd_timeout.
    let mut problems = Vec::new();
    for (what, c) in [
        ("silent 465", &mut silent),
        ("half ClientHello 465", &mut half),
        ("587 after STARTTLS", &mut after_starttls),
    ] {
        let left = Duration::from_secs(12).saturating_sub(t0.elapsed());
        let closed = c.wait_closed(left.max(Duration::from_millis(10)));
        let at = t0.elapsed();
        if closed.is_err() {
            problems.push(format!("{what}: still open {at:?} after the stall began"));
        } else if at < Duration::from_millis(2500) || at > Duration::from_secs(12) {
            problems.push(format!("{what}: closed {at:?} after the stall began"));
        }
    }
    assert!(
        problems.is_empty(),
        "stalled handshakes with smtpd_timeout = 3s:\n{}\n--- log ---\n{}",
        problems.join("\n"),
        sb.log()
    );
    let msgs = sb.wait_messages("demo", 2, WAIT);
    by_subject(&msgs, "during stall 465");
    by_subject(&msgs, "during stall 587");
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Brute force: throttled, then refused even with the right password.
// ---------------------------------------------------------------------------------------

const PY_BURST: &str = r#"
c = tls_session(port)
for i in range(10):
    r = c.cmd("AUTH PLAIN " + plain("demo", "guess-%d" % i))
    p("wrong-%d" % i, r)
    if r[0] != 535:
        break
p("right-same-session", c.cmd("AUTH PLAIN " + plain("demo", pw)))
c.cmd("QUIT")
c = tls_session(port)
p("right-new-session", c.cmd("AUTH PLAIN " + plain("demo", pw)))
c.cmd("QUIT")
"#;

#[test]
fn brute_force_burst_is_throttled_then_refused() {
    let (mut sb, pw) = tls_sandbox(
        "tlsauth_brute_force",
        &[("auth_failure_limit", "3"), ("auth_failure_delay", "0s")],
    );
    start(&mut sb);
    let py = Py::run(PY_BURST, &[&sb.submission_port().to_string(), &pw]);
    let mut codes = Vec::new();
    for i in 0..10 {
        match py.m.get(&format!("wrong-{i}")) {
            Some((c, _)) => codes.push(*c),
            None => break,
        }
    }
    for i in 0..3 {
        py.want(
            &format!("wrong-{i}"),
            "535 5.7.8 Error: authentication failed",
        );
    }
    assert_eq!(
        codes.get(3),
        Some(&454),
        "after auth_failure_limit = 3 failures the 4th is refused: {codes:?}\n{}",
        py.raw
    );
    py.want(
        "wrong-3",
        "454 4.7.0 Error: too many failed logins; try again later",
    );
    py.want(
        "right-same-session",
        "454 4.7.0 Error: too many failed logins; try again later",
    );
    py.want(
        "right-new-session",
        "454 4.7.0 Error: too many failed logins; try again later",
    );
    let log = sb.log();
    assert!(
        log.contains("too many failed logins from 127.0.0.1"),
        "authd logs the refusal:\n{log}"
    );
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Real clients: swaks, smtplib, openssl s_client.
// ---------------------------------------------------------------------------------------

#[test]
fn swaks_starttls_and_implicit_tls_with_auth_plain_and_login() {
    let Some(swaks) = installed(&["/usr/bin/swaks", "/usr/local/bin/swaks"]) else {
        eprintln!("SKIP: swaks is not installed (apt-get install swaks; make deps does)");
        return;
    };
    let (mut sb, pw) = tls_sandbox("tlsauth_swaks", &[]);
    start(&mut sb);
    let run = |args: &[&str]| -> Output {
        let mut c = Command::new(&swaks);
        c.args(["--server", "127.0.0.1", "--helo", "swaks.example"])
            .args(["--from", "demo@localhost", "--to", "demo@localhost"])
            .args(["--auth-user", "demo", "--timeout", "30"])
            .args(args);
        run_limited(c, b"", CLIENT_LIMIT)
    };
    let sub = sb.submission_port().to_string();
    let smtps = sb.smtps_port().to_string();
    let cases: [(&str, &[&str]); 4] = [
        (
            "swaks 587 plain",
            &["--port", &sub, "--tls", "--auth", "PLAIN"],
        ),
        (
            "swaks 587 login",
            &["--port", &sub, "--tls", "--auth", "LOGIN"],
        ),
        (
            "swaks 465 plain",
            &["--port", &smtps, "--tlsc", "--auth", "PLAIN"],
        ),
        (
            "swaks 465 login",
            &["--port", &smtps, "--tlsc", "--auth", "LOGIN"],
        ),
    ];
    for (subject, args) in cases {
        let subject_header = format!("Subject: {subject}");
        let mut a = args.to_vec();
        a.extend(["--auth-password", &pw, "--header", &subject_header]);
        let out = run(&a);
        let text = show(&out);
        assert!(out.status.success(), "{subject}: {text}");
        assert!(
            text.contains("<~  235 2.7.0 Authentication successful"),
            "{subject}: {text}"
        );
        assert!(
            text.contains("<~  250 2.0.0 Ok: queued as "),
            "{subject}: {text}"
        );
    }
    // A wrong password: swaks fails, having seen the 535.
    let out = run(&[
        "--port",
        &sub,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-password",
        "not-the-password",
    ]);
    let text = show(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("535 5.7.8 Error: authentication failed"),
        "{text}"
    );

    let msgs = sb.wait_messages("demo", 4, WAIT);
    for (subject, _) in cases {
        let received = header(by_subject(&msgs, subject), "Received").unwrap();
        assert!(
            received.starts_with("from swaks.example (unknown [127.0.0.1]) by mail.sandbox.test (Petrel) with ESMTPSA id "),
            "{subject}: {received}"
        );
    }
    let log = sb.log();
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=demo"),
        "{log}"
    );
    sb.stop();
}

const PY_SMTPLIB: &str = r#"
smtps_port = int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.example", timeout=30)
p("ehlo", s.ehlo())
p("has-auth-before", (1 if s.has_extn("auth") else 0, ""))
p("starttls", s.starttls(context=ctx()))
p("ehlo-tls", s.ehlo())
p("auth-feature", (0, s.esmtp_features.get("auth", "")))
p("login", s.login("demo", pw))
p("refused", (0, repr(s.sendmail("demo@localhost", ["demo@localhost", "someone@remote.example"], b"Subject: smtplib 587\r\n\r\nstarttls and login\r\n"))))
p("quit", s.quit())

s = smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.example", timeout=30)
s.starttls(context=ctx())
s.ehlo()
s.user, s.password = "demo", pw
p("auth-login", s.auth("LOGIN", s.auth_login))
s.quit()

s = smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.example", timeout=30)
s.starttls(context=ctx())
try:
    s.login("demo", "wrong")
    p("wrong", (0, "accepted"))
except smtplib.SMTPAuthenticationError as e:
    p("wrong", (e.smtp_code, e.smtp_error))
s.quit()

s = smtplib.SMTP_SSL("127.0.0.1", smtps_port, local_hostname="smtplib.example", context=ctx(), timeout=30)
p("ssl-ehlo", s.ehlo())
p("ssl-version", (0, s.sock.version()))
p("ssl-login", s.login("demo", pw))
p("ssl-refused", (0, repr(s.sendmail("demo@localhost", ["demo@localhost"], b"Subject: smtplib 465\r\n\r\nimplicit tls\r\n"))))
p("ssl-quit", s.quit())
"#;

#[test]
fn smtplib_starttls_login_and_smtp_ssl() {
    let (mut sb, pw) = tls_sandbox("tlsauth_smtplib", &[]);
    start(&mut sb);
    let py = Py::run(
        PY_SMTPLIB,
        &[
            &sb.submission_port().to_string(),
            &pw,
            &sb.smtps_port().to_string(),
        ],
    );
    assert_eq!(py.code("has-auth-before"), 0, "{}", py.raw);
    assert_eq!(py.code("starttls"), 220, "{}", py.raw);
    assert_eq!(py.text("auth-feature").trim(), "PLAIN LOGIN", "{}", py.raw);
    assert_eq!(
        py.get("login"),
        &(235, "2.7.0 Authentication successful".to_string())
    );
    assert_eq!(py.text("refused"), "{}", "{}", py.raw);
    assert_eq!(py.code("auth-login"), 235, "{}", py.raw);
    assert_eq!(
        py.get("wrong"),
        &(535, "5.7.8 Error: authentication failed".to_string())
    );
    assert_eq!(py.code("ssl-ehlo"), 250, "{}", py.raw);
    assert!(
        py.text("ssl-ehlo").contains("AUTH PLAIN LOGIN"),
        "465 offers AUTH: {}",
        py.raw
    );
    assert!(
        !py.text("ssl-ehlo").contains("STARTTLS"),
        "no STARTTLS on 465: {}",
        py.raw
    );
    let v = py.text("ssl-version");
    assert!(v == "TLSv1.3" || v == "TLSv1.2", "{v}");
    assert_eq!(py.code("ssl-login"), 235, "{}", py.raw);
    assert_eq!(py.text("ssl-refused"), "{}", "{}", py.raw);
    assert_eq!(py.code("ssl-quit"), 221, "{}", py.raw);

    let msgs = sb.wait_messages("demo", 2, WAIT);
    for s in ["smtplib 587", "smtplib 465"] {
        let received = header(by_subject(&msgs, s), "Received").unwrap();
        assert!(received.contains(" with ESMTPSA id "), "{s}: {received}");
    }
    sb.stop();
}

/// `openssl s_client ARGS -brief </dev/null`, stdout and stderr together.
fn s_client(openssl: &Path, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(openssl);
    c.arg("s_client").args(args);
    let out = run_limited(c, b"", Duration::from_secs(20));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("CONNECTION ESTABLISHED"), text)
}

const PY_OLD_TLS: &str = r#"
def old_ctx():
    c = ctx()
    c.minimum_version = ssl.TLSVersion.TLSv1
    c.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 allows TLS 1.0/1.1 only at security level 0 on the client side.
    c.set_ciphers("DEFAULT:@SECLEVEL=0")
    return c
import warnings
warnings.simplefilter("ignore")
smtps_port = int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", smtps_port), timeout=30)
try:
    t = old_ctx().wrap_socket(s)
    p("465", (1, t.version()))
except (OSError, ssl.SSLError) as e:
    p("465", (0, repr(e)))
c = Conn.open(port)
c.cmd("EHLO old.example")
p("587-starttls", c.cmd("STARTTLS"))
try:
    t = old_ctx().wrap_socket(c.sock)
    p("587", (1, t.version()))
except (OSError, ssl.SSLError) as e:
    p("587", (0, repr(e)))
"#;

#[test]
fn openssl_s_client_sees_the_certificate_and_old_tls_is_refused() {
    let Some(openssl) = installed(&["/usr/bin/openssl", "/usr/local/bin/openssl"]) else {
        eprintln!("SKIP: openssl is not installed (apt-get install openssl)");
        return;
    };
    let (mut sb, _pw) = tls_sandbox("tlsauth_openssl_s_client", &[]);
    start(&mut sb);
    let (p25, sub, smtps) = (
        format!("127.0.0.1:{}", sb.smtp_port()),
        format!("127.0.0.1:{}", sb.submission_port()),
        format!("127.0.0.1:{}", sb.smtps_port()),
    );
    for (what, args) in [
        (
            "25 starttls",
            vec!["-starttls", "smtp", "-connect", &p25, "-brief"],
        ),
        (
            "587 starttls",
            vec!["-starttls", "smtp", "-connect", &sub, "-brief"],
        ),
        ("465", vec!["-connect", &smtps, "-brief"]),
    ] {
        let (ok, text) = s_client(&openssl, &args);
        assert!(ok, "{what}: {text}");
        assert!(
            text.contains("Protocol version: TLSv1.3")
                || text.contains("Protocol version: TLSv1.2"),
            "{what}: {text}"
        );
        assert!(
            text.contains("Peer certificate: CN = mail.sandbox.test"),
            "{what}: {text}"
        );
    }
    // -showcerts prints the chain: the sandbox's self-signed certificate.
    let (ok, text) = s_client(
        &openssl,
        &["-starttls", "smtp", "-connect", &sub, "-showcerts"],
    );
    assert!(
        text.contains("-----BEGIN CERTIFICATE-----") && text.contains("CN = mail.sandbox.test"),
        "{ok} {text}"
    );

    // TLS 1.2 works, with forward secrecy and an AEAD cipher; static RSA and CBC do not.
    let (ok, text) = s_client(&openssl, &["-tls1_2", "-connect", &smtps, "-brief"]);
    assert!(ok && text.contains("Protocol version: TLSv1.2"), "{text}");
    let suite = text
        .lines()
        .find_map(|l| l.strip_prefix("Ciphersuite: "))
        .unwrap_or("")
        .to_string();
    assert!(
        suite.starts_with("ECDHE-") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "TLS 1.2 cipher {suite:?}: {text}"
    );
    for weak in ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"] {
        let cipher = format!("{weak}:@SECLEVEL=0");
        let (ok, text) = s_client(
            &openssl,
            &["-tls1_2", "-cipher", &cipher, "-connect", &smtps, "-brief"],
        );
        assert!(!ok, "TLS 1.2 with {weak} was accepted: {text}");
    }

    // TLS 1.1: refused by the server (a protocol_version alert), on 465 and after STARTTLS.
    let (ok, text) = s_client(
        &openssl,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-connect",
            &smtps,
            "-brief",
        ],
    );
    assert!(!ok, "TLS 1.1 accepted on 465: {text}");
    assert!(text.contains("alert protocol version"), "{text}");
    let py = Py::run(
        PY_OLD_TLS,
        &[
            &sb.submission_port().to_string(),
            &sb.smtps_port().to_string(),
        ],
    );
    py.want("587-starttls", "220 2.0.0");
    for port in ["465", "587"] {
        assert_eq!(py.code(port), 0, "TLS 1.1 accepted on {port}: {}", py.raw);
        assert!(
            py.text(port).contains("PROTOCOL_VERSION"),
            "{port}: refused by the server, not the client: {}",
            py.raw
        );
    }
    let log = sb.log();
    assert!(
        log.contains("TLS handshake failed with unknown[127.0.0.1]"),
        "{log}"
    );
    sb.stop();
}

// ---------------------------------------------------------------------------------------
// Certificates: petrel check / start refuse a bad pair; petrel reload picks up a new one.
// ---------------------------------------------------------------------------------------

fn make_pair(openssl: &Path, dir: &Path, cn: &str, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let mut c = Command::new(openssl);
    c.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ])
    .arg("-subj")
    .arg(format!("/CN={cn}"))
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let out = run_limited(c, b"", Duration::from_secs(60));
    assert!(out.status.success(), "openssl req: {}", show(&out));
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn petrel_check_and_start_refuse_a_missing_or_mismatched_certificate() {
    let Some(openssl) = installed(&["/usr/bin/openssl", "/usr/local/bin/openssl"]) else {
        eprintln!("SKIP: openssl is not installed (apt-get install openssl)");
        return;
    };
    let (mut sb, _pw) = tls_sandbox("tlsauth_bad_certificate", &[]);
    let conf = sb.etc.join("petrel.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    let (c2, k2) = make_pair(&openssl, &sb.etc, "x", "second");
    let key = sb.etc.join("tls/key.pem").display().to_string();
    let cert = sb.etc.join("tls/cert.pem").display().to_string();
    let missing = sb.etc.join("tls/missing.pem").display().to_string();

    // (what, parameter, value, what the error must name)
    let cases = [
        (
            "missing certificate",
            "smtpd_tls_cert_file",
            missing.as_str(),
            vec![missing.as_str()],
        ),
        (
            "certificate of another key",
            "smtpd_tls_cert_file",
            c2.as_str(),
            vec![c2.as_str(), key.as_str(), "does not match"],
        ),
        (
            "key of another certificate",
            "smtpd_tls_key_file",
            k2.as_str(),
            vec![k2.as_str(), cert.as_str(), "does not match"],
        ),
    ];
    for (what, param, value, names) in &cases {
        std::fs::write(&conf, &original).unwrap();
        sb.set(param, value);
        for cmd in ["check", "start"] {
            let out = sb.petrel(&[cmd]);
            let text = show(&out);
            assert!(
                !out.status.success(),
                "{what}: petrel {cmd} succeeded: {text}"
            );
            for n in names {
                assert!(
                    text.contains(n),
                    "{what}: petrel {cmd} does not name {n:?}: {text}"
                );
            }
            assert!(
                sb.master_pid().is_none(),
                "{what}: petrel {cmd} left a master running"
            );
        }
    }
    // The crossed pair, put right: check passes and the suite starts.
    std::fs::write(&conf, &original).unwrap();
    sb.set("smtpd_tls_cert_file", &c2);
    sb.set("smtpd_tls_key_file", &k2);
    let out = sb.petrel(&["check"]);
    assert!(out.status.success(), "a matching pair: {}", show(&out));
    start(&mut sb);
    sb.stop();
}

#[test]
fn petrel_reload_picks_up_a_new_certificate() {
    let Some(openssl) = installed(&["/usr/bin/openssl", "/usr/local/bin/openssl"]) else {
        eprintln!("SKIP: openssl is not installed (apt-get install openssl)");
        return;
    };
    let (mut sb, _pw) = tls_sandbox("tlsauth_reload_certificate", &[]);
    start(&mut sb);
    let smtps = format!("127.0.0.1:{}", sb.smtps_port());
    let (ok, text) = s_client(&openssl, &["-connect", &smtps, "-brief"]);
    assert!(ok && text.contains("CN = mail.sandbox.test"), "{text}");

    let (c2, k2) = make_pair(&openssl, &sb.etc, "reloaded.sandbox.test", "new");
    std::fs::copy(&c2, sb.etc.join("tls/cert.pem")).unwrap();
    std::fs::copy(&k2, sb.etc.join("tls/key.pem")).unwrap();
    let out = sb.petrel(&["reload"]);
    assert!(out.status.success(), "petrel reload: {}", show(&out));
    sb.wait_for(
        "the new certificate on 465",
        Duration::from_secs(20),
        || {
            let (ok, text) = s_client(&openssl, &["-connect", &smtps, "-brief"]);
            ok && text.contains("CN = reloaded.sandbox.test")
        },
    );
    let sub = format!("127.0.0.1:{}", sb.submission_port());
    let (ok, text) = s_client(&openssl, &["-starttls", "smtp", "-connect", &sub, "-brief"]);
    assert!(
        ok && text.contains("CN = reloaded.sandbox.test"),
        "587 after reload: {text}"
    );
    sb.stop();
}

#[test]
fn queue_file_records_the_login_and_the_tls_session() {
    let (mut sb, pw) = tls_sandbox("tlsauth_queue_record", &[]);
    start(&mut sb);
    let py = Py::run(
        r#"
c = tls_session(port)
p("auth", c.cmd("AUTH LOGIN " + b64("demo")))
p("auth2", c.cmd(b64(pw)))
c.cmd("MAIL FROM:<demo@localhost>")
c.cmd("RCPT TO:<someone@remote.example>")
c.cmd("DATA")
p("queued", c.cmd("Subject: held\r\n\r\nfor the queue\r\n."))
c.cmd("QUIT")
"#,
        &[&sb.submission_port().to_string(), &pw],
    );
    py.want("auth2", "235 2.7.0");
    py.want("queued", "250 2.0.0 Ok: queued as ");
    let r = SmtpReply {
        code: 250,
        lines: vec![py.text("queued").to_string()],
    };
    let id = queued_id(&r).unwrap();
    let dump = queue_show(&sb, &id);
    for want in [
        "sasl_username=demo",
        "sasl_method=LOGIN",
        "protocol=ESMTPSA",
        "with ESMTPSA id",
        "tls=TLSv1.",
    ] {
        assert!(dump.contains(want), "queue file has no {want:?}:\n{dump}");
    }
    sb.stop();
}

const PY_PARALLEL_LOGINS: &str = r#"
import threading
results = []
lock = threading.Lock()
def worker(w):
    for i in range(3):
        try:
            c = tls_session(port)
            r = c.cmd("AUTH PLAIN " + plain("demo", pw))
            c.cmd("QUIT")
        except Exception as e:
            r = (0, repr(e))
        with lock:
            results.append(r)
threads = [threading.Thread(target=worker, args=(w,)) for w in range(20)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
bad = [r for r in results if r[0] != 235]
p("total", (len(results), ""))
p("refused", (len(bad), repr(sorted(set(r[1] for r in bad)))))
"#;

/// Twenty users logging in at once from one address (a NAT, a webmail) with the right
/// password: nothing failed, so nothing may be refused. auth_failure_limit counts failed
/// logins (petrel.conf(5)); checks merely running at the same time are not failures.
#[test]
fn concurrent_correct_logins_from_one_address_are_not_refused() {
    let (mut sb, pw) = tls_sandbox("tlsauth_parallel_logins", &[]);
    start(&mut sb);
    let py = Py::run(
        PY_PARALLEL_LOGINS,
        &[&sb.submission_port().to_string(), &pw],
    );
    assert_eq!(py.code("total"), 60, "{}", py.raw);
    assert_eq!(
        py.code("refused"),
        0,
        "correct logins refused (auth_failure_limit = 10 by default, 20 at once): {}",
        py.text("refused")
    );
    sb.stop();
}
