//! pop3d test helpers: the sandbox's POP3 ports, waiting for pop3d, a raw plaintext POP3
//! client, a Python (poplib) prelude and its output, Maildir and mbox files as a client
//! would see them over POP3.

use crate::imap::{read_line, show};
use crate::{python, Sandbox};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long to wait for pop3d to come up, and for one answer.
pub const WAIT: Duration = Duration::from_secs(30);

/// The port of the plain POP3 listener (STLS offered).
pub fn pop3_port(sb: &Sandbox) -> u16 {
    sb.base + 110
}

/// The port of the POP3S listener (TLS from the first byte).
pub fn pop3s_port(sb: &Sandbox) -> u16 {
    sb.base + 995
}

/// Starts the suite and waits until pop3d greets on base+110 and accepts connections on
/// base+995. Panics (does not skip) when there is no pop3d or the sandbox wrote no POP3
/// listeners: it is the program under test.
pub fn start_pop3d(sb: &mut Sandbox) {
    assert!(
        sb.bin.join("pop3d").exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        sb.bin.join("pop3d").display()
    );
    let conf = std::fs::read_to_string(sb.etc.join("services.conf")).unwrap();
    for port in [pop3_port(sb), pop3s_port(sb)] {
        assert!(
            conf.contains(&format!("127.0.0.1:{port} ")),
            "petrel sandbox wrote no pop3d listener on {port}:\n{conf}"
        );
    }
    sb.start();
    sb.wait_for("pop3d running", WAIT, || !sb.pids_of("pop3d").is_empty());
    let port = pop3_port(sb);
    sb.wait_for(&format!("a +OK greeting on 127.0.0.1:{port}"), WAIT, || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return false;
        };
        if !read_line(&mut s, Duration::from_secs(5)).starts_with("+OK") {
            return false;
        }
        let _ = s.write_all(b"QUIT\r\n");
        let _ = read_line(&mut s, Duration::from_secs(5));
        true
    });
    let tls = pop3s_port(sb);
    sb.wait_for(&format!("a listener on 127.0.0.1:{tls}"), WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    });
}

/// True when python3 with poplib, imaplib and ssl can run; says why not otherwise.
pub fn have_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import poplib, imaplib, ssl, socket"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: python3 (with poplib, imaplib and ssl) is not installed");
    }
    ok
}

// ---------------------------------------------------------------------------------------
// Messages as POP3 sends them.
// ---------------------------------------------------------------------------------------

/// What RETR sends for a stored message (before dot-stuffing): every line end CRLF, a stray
/// CR a space, and a final CRLF when the message has none. Its length is what LIST says.
pub fn wire_form(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 16 + 2);
    let mut lines = stored.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend(line.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Writes a message straight into `maildir/new` (through tmp/, as a delivery does) and
/// returns its path. `name` makes the file name unique.
pub fn write_maildir_message(maildir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let file = format!("{t}.M{name}P{}.pop3test", std::process::id());
    let tmp = maildir.join("tmp").join(&file);
    std::fs::write(&tmp, content).unwrap();
    let new = maildir.join("new").join(&file);
    std::fs::rename(&tmp, &new).unwrap();
    new
}

/// The Subject of a stored message (any line ends).
pub fn subject_of(content: &[u8]) -> Option<String> {
    crate::header(&String::from_utf8_lossy(content), "Subject")
}

/// Every message file of a user's Maildir INBOX (new/ and cur/) by Subject: (path, content).
pub fn maildir_by_subject(sb: &Sandbox, user: &str) -> HashMap<String, (PathBuf, Vec<u8>)> {
    let mut m = HashMap::new();
    for p in sb.messages(user) {
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        let subject = subject_of(&data).unwrap_or_default();
        assert!(
            m.insert(subject.clone(), (p, data)).is_none(),
            "two messages with Subject {subject:?} in {user}'s Maildir"
        );
    }
    m
}

/// The flag letters after `:2,` in a Maildir file name ("" without).
pub fn maildir_flags(p: &Path) -> String {
    let name = p.file_name().unwrap().to_string_lossy().to_string();
    name.rsplit_once(":2,")
        .map(|(_, f)| f.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// mbox (mboxrd, as local writes it).
// ---------------------------------------------------------------------------------------

/// One message of an mbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    /// Every byte from its `From ` line up to the next message (or the end of the file).
    pub raw: Vec<u8>,
    /// The `From ` separator line, without its LF.
    pub separator: Vec<u8>,
    /// The content, unquoted (`>From ` → `From `, `>>From ` → `>From `), without the
    /// separator and the blank line that ends a message before the next one or at the end.
    pub content: Vec<u8>,
}

/// Splits an mbox into its messages (a message starts at a line beginning `From `).
pub fn parse_mbox(data: &[u8]) -> Vec<MboxMessage> {
    let mut starts = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in data.iter().enumerate() {
        if at_line_start && data[i..].starts_with(b"From ") {
            starts.push(i);
        }
        at_line_start = b == b'\n';
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(data.len());
        let raw = data[s..e].to_vec();
        let (separator, rest) = match raw.iter().position(|&b| b == b'\n') {
            Some(i) => (raw[..i].to_vec(), &raw[i + 1..]),
            None => (raw.clone(), &[][..]),
        };
        // The blank line that ends a message is not content.
        let rest = rest
            .strip_suffix(b"\n\n")
            .map_or(rest, |r| &rest[..r.len() + 1]);
        let mut content = Vec::with_capacity(rest.len());
        for line in rest.split_inclusive(|&b| b == b'\n') {
            let gts = line.iter().take_while(|&&b| b == b'>').count();
            if gts > 0 && line[gts..].starts_with(b"From ") {
                content.extend_from_slice(&line[1..]);
            } else {
                content.extend_from_slice(line);
            }
        }
        out.push(MboxMessage {
            raw,
            separator,
            content,
        });
    }
    out
}

/// The messages of an mbox file (none when it does not exist).
pub fn mbox_messages(path: &Path) -> Vec<MboxMessage> {
    std::fs::read(path)
        .map(|d| parse_mbox(&d))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// A raw plaintext POP3 client (hostile input, clients that do not read).
// ---------------------------------------------------------------------------------------

/// A raw POP3 dialogue over TCP to 127.0.0.1: send any bytes, read lines with deadlines.
pub struct Raw {
    /// The connection.
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
}

/// Why a read ended without a line.
#[derive(Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing within the time limit.
    Timeout,
}

impl Raw {
    /// Connects to 127.0.0.1:`port` and reads the greeting, which must be `+OK`.
    pub fn open(port: u16) -> Raw {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut r = Raw {
            stream,
            buf: Vec::new(),
        };
        let g = r.line().unwrap_or_else(|e| panic!("no greeting: {e:?}"));
        assert!(g.starts_with("+OK"), "greeting: {g:?}");
        r
    }

    /// Connects, reads the greeting and logs in with USER and PASS.
    pub fn login(port: u16, user: &str, password: &str) -> Raw {
        let mut r = Raw::open(port);
        r.expect(&format!("USER {user}"), "+OK");
        r.expect(&format!("PASS {password}"), "+OK");
        r
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// One line (without CRLF) within [`WAIT`].
    pub fn line(&mut self) -> Result<String, RawEnd> {
        self.line_within(WAIT)
    }

    /// One line (without CRLF) within `limit`.
    pub fn line_within(&mut self, limit: Duration) -> Result<String, RawEnd> {
        let end = Instant::now() + limit;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                let mut l = String::from_utf8_lossy(&raw).to_string();
                while l.ends_with(['\r', '\n']) {
                    l.pop();
                }
                return Ok(l);
            }
            let now = Instant::now();
            if now >= end {
                return Err(RawEnd::Timeout);
            }
            match self.read_some(end - now) {
                Ok(0) => return Err(RawEnd::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Err(RawEnd::Closed),
            }
        }
    }

    fn read_some(&mut self, limit: Duration) -> std::io::Result<usize> {
        self.stream
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))?;
        let mut b = [0u8; 65536];
        let n = self.stream.read(&mut b)?;
        self.buf.extend_from_slice(&b[..n]);
        Ok(n)
    }

    /// Sends `line` + CRLF and reads the one-line answer; panics when there is none.
    pub fn cmd(&mut self, line: &str) -> String {
        self.cmd_bytes(line.as_bytes())
    }

    /// Sends `line` + CRLF (any bytes) and reads the one-line answer.
    pub fn cmd_bytes(&mut self, line: &[u8]) -> String {
        let mut b = line.to_vec();
        b.extend_from_slice(b"\r\n");
        let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).to_string();
        self.send(&b)
            .unwrap_or_else(|e| panic!("sending {shown:?}: {e}"));
        self.line()
            .unwrap_or_else(|e| panic!("no answer to {shown:?}: {e:?}"))
    }

    /// Like [`Raw::cmd`], and asserts that the answer starts with `prefix`.
    pub fn expect(&mut self, line: &str, prefix: &str) -> String {
        let r = self.cmd(line);
        let shown = if line.starts_with("PASS ") {
            "PASS ***"
        } else {
            line
        };
        assert!(
            r.starts_with(prefix),
            "{shown:?}: expected {prefix:?}, got {r:?}"
        );
        r
    }

    /// Reads the lines of a multi-line answer after its `+OK` line, up to the `.` (not
    /// included), undoing dot-stuffing.
    pub fn multi_rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|e| panic!("multi-line answer ended early: {e:?} after {v:?}"));
            if l == "." {
                return v;
            }
            v.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
        }
    }

    /// Sends `line`, expects `+OK` and reads the multi-line answer.
    pub fn multi(&mut self, line: &str) -> Vec<String> {
        self.expect(line, "+OK");
        self.multi_rest()
    }

    /// Reads (and drops) everything until the server closes the connection or `limit`
    /// passes. Ok(bytes read) when it closed (a reset counts), Err(bytes read) when not.
    pub fn drain_until_closed(&mut self, limit: Duration) -> Result<u64, u64> {
        let end = Instant::now() + limit;
        let mut n = self.buf.len() as u64;
        self.buf.clear();
        let mut b = vec![0u8; 1 << 20];
        loop {
            let now = Instant::now();
            if now >= end {
                return Err(n);
            }
            self.stream
                .set_read_timeout(Some((end - now).max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut b) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(n),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Python (poplib, imaplib, raw sockets): what the scripts print.
// ---------------------------------------------------------------------------------------

/// The Python prelude for POP3 scripts. argv: the POP3 port of the test (POP3S or plain),
/// the password, then the script's own arguments (`args`). It defines:
///
/// - `out(name, text)`: records `name` (one line: `name<TAB>text`, with `\`, CR and LF
///   escaped);
/// - `rec(name, fn)`: runs a poplib call and records its result: the response line (and
///   for multi-line answers the lines after it), or the `-ERR` line poplib raised, or
///   `EXC ...` for any other exception; returns the result (None after an exception);
/// - `pop3s(port)`, `plain(port)`, `stls(port)`: poplib connections (TLS unverified:
///   the sandbox certificate is self-signed for mail.sandbox.test);
/// - `login(p)`, `capa(p)` (the raw answer: poplib's own `capa()` drops the `+OK`
///   line), `sasl_plain(user, password)`, `wire(lines)` (RETR's lines back to octets,
///   CRLF ends), `hexof(lines)`;
/// - `Raw(port, tls)`: a raw connection: `send(bytes)`, `line(timeout)` (None after a
///   close or the deadline), `cmd(text)`, `multi(text)`;
/// - `imap_uids(port)`: the IMAPS view of INBOX: UIDVALIDITY and uid → (flags, subject).
pub const PY_PRELUDE: &str = r#"
import base64, binascii, imaplib, os, poplib, re, select, socket, ssl, subprocess, sys, time
port = int(sys.argv[1])
pw = sys.argv[2]
args = sys.argv[3:]

def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c

def esc(text):
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")

def out(name, text):
    print("%s\t%s" % (name, esc(str(text))), flush=True)

def txt(b):
    return b.decode("latin-1") if isinstance(b, (bytes, bytearray)) else str(b)

def show(r):
    if isinstance(r, (bytes, bytearray)):
        return txt(r)
    if isinstance(r, tuple) and len(r) == 3 and isinstance(r[1], list):
        return "\n".join([txt(r[0])] + [txt(l) for l in r[1]])
    if isinstance(r, tuple):
        return " ".join(str(x) for x in r)
    if isinstance(r, dict):
        return "\n".join((k + " " + " ".join(v)).strip() for k, v in r.items())
    return str(r)

def rec(name, fn):
    try:
        r = fn()
    except poplib.error_proto as e:
        out(name, txt(e.args[0]) if e.args else "-ERR (nothing)")
        return None
    except Exception as e:
        out(name, "EXC %r" % (e,))
        return None
    out(name, show(r))
    return r

def pop3s(p):
    return poplib.POP3_SSL("127.0.0.1", p, context=ctx(), timeout=30)

def plain(p):
    return poplib.POP3("127.0.0.1", p, timeout=30)

def stls(p):
    c = plain(p)
    c.stls(ctx())
    return c

def login(c, user="demo", password=None):
    c.user(user)
    return c.pass_(pw if password is None else password)

def capa(c):
    return c._longcmd("CAPA")

def sasl_plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()

def wire(lines):
    return b"".join(l + b"\r\n" for l in lines)

def hexof(lines):
    return binascii.hexlify(wire(lines)).decode()

class Raw:
    def __init__(self, p, tls=False):
        s = socket.create_connection(("127.0.0.1", p), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            s = ctx().wrap_socket(s)
        self.sock = s
        self.buf = b""
        self.closed = False
    def starttls(self):
        self.sock = ctx().wrap_socket(self.sock)
    def send(self, data):
        self.sock.sendall(data)
    def line(self, timeout=20):
        end = time.time() + timeout
        while b"\n" not in self.buf:
            left = end - time.time()
            if left <= 0 or self.closed:
                return None
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending:
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    return None
            try:
                d = self.sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                d = b""
            if not d:
                self.closed = True
                return None
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.rstrip(b"\r").decode("latin-1")
    def cmd(self, text, timeout=20):
        self.send(text.encode("latin-1") + b"\r\n")
        return self.line(timeout)
    def multi(self, text, timeout=20):
        first = self.cmd(text, timeout)
        lines = [first]
        if first is None or not first.startswith("+OK"):
            return lines
        while True:
            l = self.line(timeout)
            lines.append(l)
            if l is None or l == ".":
                return lines

def imap_uids(p):
    M = imaplib.IMAP4_SSL("127.0.0.1", p, ssl_context=ctx(), timeout=30)
    M.login("demo", pw)
    typ, st = M.status("INBOX", "(UIDVALIDITY)")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", st[0]).group(1))
    M.select("INBOX", readonly=True)
    typ, d = M.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    msgs = {}
    for item in d:
        if isinstance(item, tuple):
            meta = item[0].decode("latin-1")
            uid = int(re.search(r"UID (\d+)", meta).group(1))
            flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1)
            subj = re.search(r"(?im)^Subject:[ \t]*([^\r\n]*)", item[1].decode("latin-1"))
            msgs[uid] = (flags, subj.group(1) if subj else "")
    M.logout()
    return validity, msgs
"#;

/// What a Python script printed: name → text, in the format of [`PY_PRELUDE`]'s `out`.
pub struct PyOut {
    /// name → text (the last one printed under that name).
    pub map: HashMap<String, String>,
    /// The whole output and status, for assertion messages.
    pub raw: String,
}

impl PyOut {
    /// Runs [`PY_PRELUDE`] + `script` with `port pw args...` within `limit`; panics when
    /// it fails (with its output and the end of the sandbox's log).
    pub fn run(sb: &Sandbox, script: &str, port: u16, pw: &str, args: &[&str]) -> PyOut {
        PyOut::run_within(sb, script, port, pw, args, Duration::from_secs(90))
    }

    /// [`PyOut::run`] with a time limit of its own.
    pub fn run_within(
        sb: &Sandbox,
        script: &str,
        port: u16,
        pw: &str,
        args: &[&str],
        limit: Duration,
    ) -> PyOut {
        let port = port.to_string();
        let mut all = vec![port.as_str(), pw];
        all.extend_from_slice(args);
        let out = python(&format!("{PY_PRELUDE}{script}"), &all, limit);
        let raw = show(&out);
        assert!(
            out.status.success(),
            "python failed: {raw}\n--- log ---\n{}",
            log_tail(sb, 40)
        );
        let mut map = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, text)) = line.split_once('\t') else {
                continue;
            };
            map.insert(name.to_string(), unescape(text));
        }
        PyOut { map, raw }
    }

    /// Everything recorded for `name`; panics (showing the output) when nothing was.
    pub fn get(&self, name: &str) -> &str {
        self.map
            .get(name)
            .unwrap_or_else(|| panic!("python printed no {name:?}:\n{}", self.raw))
    }

    /// The first line recorded for `name` (the response line).
    pub fn first(&self, name: &str) -> &str {
        self.get(name).lines().next().unwrap_or("")
    }

    /// The lines after the first (a multi-line answer's content).
    pub fn rest(&self, name: &str) -> Vec<&str> {
        self.get(name).lines().skip(1).collect()
    }

    /// Asserts that the response recorded for `name` starts with `prefix`; returns it.
    pub fn want(&self, name: &str, prefix: &str) -> &str {
        let f = self.first(name);
        assert!(
            f.starts_with(prefix),
            "{name}: expected {prefix:?}, got {:?}\n{}",
            self.get(name),
            self.raw
        );
        f
    }

    /// The bytes of a hex string recorded for `name`.
    pub fn hex(&self, name: &str) -> Vec<u8> {
        from_hex(self.get(name)).unwrap_or_else(|| panic!("{name}: not hex:\n{}", self.raw))
    }
}

fn unescape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    let mut it = text.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        match it.next() {
            Some('n') => s.push('\n'),
            Some('r') => s.push('\r'),
            Some(o) => s.push(o),
            None => s.push('\\'),
        }
    }
    s
}

/// Decodes lower- or upper-case hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// The last `n` lines of the sandbox's log, for assertion messages.
pub fn log_tail(sb: &Sandbox, n: usize) -> String {
    let log = sb.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until the log has `n` lines containing `what` (a session's end, a login ...).
pub fn wait_log(sb: &Sandbox, what: &str, n: usize, limit: Duration) {
    sb.wait_for(&format!("{n} log line(s) with {what:?}"), limit, || {
        sb.log().lines().filter(|l| l.contains(what)).count() >= n
    });
}

/// The pop3d lines of the log that must never be there (panics, fatal errors).
pub fn bad_log_lines(sb: &Sandbox) -> Vec<String> {
    sb.log()
        .lines()
        .filter(|l| {
            l.contains("pop3d")
                && (l.contains("panic") || l.contains("fatal:") || l.contains("killed by signal"))
        })
        .map(str::to_string)
        .collect()
}
