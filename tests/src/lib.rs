//! The test kit for end-to-end tests: boots a whole Petrel suite with `petrel sandbox` in a
//! temporary directory, drives it with real programs, and looks at what a user would look
//! at (mailboxes, the log, the queue, /proc).
//!
//! The programs are the ones `cargo build --workspace --bins` put next to the test binary
//! (`target/debug`); `PETREL_BIN_DIR` overrides. `make test` builds them first.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod dns;
pub mod imap;
pub mod netns;
pub mod peers;
pub mod pop3;

/// Where the Petrel programs are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PETREL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/e2e-HASH → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for p in [
        "petrel", "master", "sendmail", "postdrop", "pickup", "cleanup", "qmgr", "local",
    ] {
        assert!(
            dir.join(p).exists(),
            "{} is missing: run `cargo build --workspace --bins` first (make test does)",
            dir.join(p).display()
        );
    }
    dir
}

/// Port offsets a sandbox listens on (base + offset).
const SANDBOX_PORTS: [u16; 9] = [25, 26, 53, 110, 143, 465, 587, 993, 995];
/// Port bases are 20000, 20100, … below 32768, where Linux's ephemeral ports (for
/// outgoing connections) start: a sandbox port can then not be taken by a client.
const PORT_BASES: u32 = 127;

/// A port base for this test, in 20000..32700, that no other running test holds and
/// whose ports are free: the test names its first choice, a lock file per base (held
/// while the returned file is open) keeps concurrent test processes apart, and a bind
/// check skips ports some other program uses.
pub fn port_base(name: &str) -> (u16, std::fs::File) {
    use std::os::fd::AsRawFd;
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    let dir = std::env::temp_dir().join("petrel-e2e-ports");
    let _ = std::fs::create_dir_all(&dir);
    for i in 0..PORT_BASES {
        let base = 20000 + ((h + i) % PORT_BASES) as u16 * 100;
        let Ok(f) = std::fs::File::create(dir.join(format!("{base}.lock"))) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        let free = SANDBOX_PORTS
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if free {
            return (base, f);
        }
    }
    panic!("no free port base for {name}");
}

/// True when running as root (tests that need it skip otherwise, saying why).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A sandboxed suite.
pub struct Sandbox {
    /// Keeps the directory alive.
    pub tmp: tempfile::TempDir,
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Its configuration directory.
    pub etc: PathBuf,
    /// Programs.
    pub bin: PathBuf,
    /// Port base.
    pub base: u16,
    started: bool,
    /// The network namespace its `petrel` commands (start, stop, queue …) run in, when
    /// set ([`Sandbox::set_netns`]); None runs them here, as usual.
    pub netns: Option<String>,
    /// Holds the port base for this test while the sandbox lives.
    _ports: std::fs::File,
}

impl Sandbox {
    /// `petrel sandbox DIR --port-base N`, not started.
    pub fn new(test: &str) -> Sandbox {
        Sandbox::create(test).0
    }

    /// Runs `petrel sandbox`; returns the sandbox and what the command printed.
    fn create(test: &str) -> (Sandbox, String) {
        let tmp = tempfile::Builder::new()
            .prefix("petrel-e2e-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("sb");
        let bin = bin_dir();
        let (base, ports) = port_base(test);
        let out = Command::new(bin.join("petrel"))
            .arg("sandbox")
            .arg(&dir)
            .arg("--port-base")
            .arg(base.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "petrel sandbox failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sb = Sandbox {
            etc: dir.join("etc"),
            dir,
            tmp,
            bin,
            base,
            started: false,
            netns: None,
            _ports: ports,
        };
        (sb, stdout)
    }

    /// Sets `name = value` in petrel.conf (appended: the last one wins).
    pub fn set(&self, name: &str, value: &str) {
        let p = self.etc.join("petrel.conf");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&format!("{name} = {value}\n"));
        std::fs::write(p, text).unwrap();
    }

    /// Appends a line to services.conf.
    pub fn add_service(&self, line: &str) {
        let p = self.etc.join("services.conf");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(p, text).unwrap();
    }

    /// Runs `petrel` commands (and so master and every service it starts) inside the
    /// network namespace `name` (`ip netns exec NAME petrel …`), or here again for None.
    pub fn set_netns(&mut self, name: Option<&str>) {
        self.netns = name.map(str::to_string);
    }

    /// Runs `petrel -c ETC ARGS` (inside [`Sandbox::netns`] while that namespace exists).
    pub fn petrel(&self, args: &[&str]) -> Output {
        let mut c = match &self.netns {
            Some(ns) if netns::exists(ns) => netns::exec(ns, self.bin.join("petrel")),
            _ => Command::new(self.bin.join("petrel")),
        };
        c.arg("-c")
            .arg(&self.etc)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the suite and waits until every service has a process.
    pub fn start(&mut self) {
        let out = self.petrel(&["start"]);
        assert!(
            out.status.success(),
            "petrel start failed: {}{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.started = true;
        let want = ["pickup", "cleanup", "qmgr", "local"];
        self.wait_for("every service running", Duration::from_secs(20), || {
            let kids = self.children();
            want.iter().all(|w| kids.iter().any(|(_, n)| n == w))
        });
    }

    /// Stops the suite.
    pub fn stop(&mut self) {
        if self.started {
            let out = self.petrel(&["stop"]);
            assert!(
                out.status.success(),
                "petrel stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.started = false;
        }
    }

    /// master's pid, when running.
    pub fn master_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("spool/pid/master.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// (pid, program name) of master's children.
    pub fn children(&self) -> Vec<(i32, String)> {
        let Some(master) = self.master_pid() else {
            return Vec::new();
        };
        Sandbox::children_of(master)
            .into_iter()
            .map(|(pid, _)| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
                let name = Path::new(std::str::from_utf8(argv0).unwrap_or(""))
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                (pid, name)
            })
            .collect()
    }

    /// (pid, process name as /proc/PID/comm says) of the live children of `parent`: the
    /// processes a daemon forked itself (imapd's login process and session workers).
    pub fn children_of(parent: i32) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(1).and_then(|p| p.parse::<i32>().ok()) != Some(parent)
                || fields.first() == Some(&"Z")
            {
                continue;
            }
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            out.push((pid, comm.to_string()));
        }
        out
    }

    /// pids of the running processes of one program.
    pub fn pids_of(&self, program: &str) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|(_, n)| n == program)
            .map(|(p, _)| p)
            .collect()
    }

    /// Runs our sendmail with `-C ETC` and `args`, message on stdin.
    pub fn sendmail(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = Command::new(self.bin.join("sendmail"));
        c.arg("-C").arg(&self.etc).args(args);
        run_with_input(c, input)
    }

    /// The log (maillog_file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/maillog")).unwrap_or_default()
    }

    /// Polls `cond` every 50 ms until it holds or `limit` passes (then panics, naming `what`
    /// and showing the end of the log).
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let queues: Vec<String> = [
            "maildrop", "incoming", "active", "deferred", "hold", "corrupt",
        ]
        .iter()
        .map(|d| format!("{d}={}", self.queue_files(d).len()))
        .collect();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("warning:") || l.contains("error:") || l.contains("fatal:"))
            .collect();
        let mut stuck = String::new();
        for d in ["incoming", "active", "deferred"] {
            for id in self.queue_files(d) {
                stuck.push_str(&format!("{d}/{id}:\n"));
                for l in log.lines().filter(|l| l.contains(id.as_str())).take(8) {
                    stuck.push_str(&format!("  {l}\n"));
                }
            }
        }
        panic!(
            "timed out after {limit:?} waiting for {what}\n--- queue: {} ---\n{stuck}--- warnings ---\n{}\n--- last log lines ---\n{}",
            queues.join(" "),
            warnings.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// A user's Maildir.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user).join("Maildir")
    }

    /// Files in a user's Maildir new/ and cur/.
    pub fn messages(&self, user: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir(user).join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()));
            }
        }
        v.sort();
        v
    }

    /// Waits until `user` has at least `n` messages; returns their contents.
    pub fn wait_messages(&self, user: &str, n: usize, limit: Duration) -> Vec<String> {
        self.wait_for(&format!("{n} message(s) for {user}"), limit, || {
            self.messages(user).len() >= n
        });
        self.messages(user)
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string())
            .collect()
    }

    /// `petrel user add NAME` with the password on stdin.
    pub fn add_user(&self, name: &str, password: &str) {
        let mut c = Command::new(self.bin.join("petrel"));
        c.arg("-c").arg(&self.etc).args(["user", "add", name]);
        let out = run_with_input(c, format!("{password}\n").as_bytes());
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Files in a spool directory.
    pub fn queue_files(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(self.dir.join("spool").join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.started {
            let _ = self.petrel(&["stop"]);
        }
        if let Some(pid) = self.master_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A command's status, standard output and error, for an assertion message.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command with `input` on stdin and collects its output.
pub fn run_with_input(mut c: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    out
}

/// The header section of a message, unfolded, as (name, value) pairs.
pub fn headers(msg: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in msg.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The first value of header `name` (any case).
pub fn header(msg: &str, name: &str) -> Option<String> {
    headers(msg)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------------------
// SMTP: the sandbox's smtpd, a raw dialogue client, and running outside clients with a
// time limit. Every connection is to 127.0.0.1; every read and wait has a deadline.
// ---------------------------------------------------------------------------------------

/// How long one SMTP reply may take before a read gives up.
pub const SMTP_REPLY_TIMEOUT: Duration = Duration::from_secs(20);

impl Sandbox {
    /// The port of the sandbox's smtpd (`127.0.0.1:{base + 25}` in services.conf).
    pub fn smtp_port(&self) -> u16 {
        self.base + 25
    }

    /// Starts the suite and waits until smtpd greets on [`Sandbox::smtp_port`]. Panics
    /// (does not skip) when there is no smtpd next to petrel: it is the program under test.
    pub fn start_smtp(&mut self) {
        assert!(
            self.bin.join("smtpd").exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            self.bin.join("smtpd").display()
        );
        let conf = std::fs::read_to_string(self.etc.join("services.conf")).unwrap();
        assert!(
            conf.contains(&format!("127.0.0.1:{}", self.smtp_port())),
            "petrel sandbox wrote no smtpd listener:\n{conf}"
        );
        self.start();
        self.wait_for("smtpd running", Duration::from_secs(20), || {
            !self.pids_of("smtpd").is_empty()
        });
        self.wait_smtp(Duration::from_secs(20));
    }

    /// Waits until a connection to smtpd gets a 220 greeting (then says QUIT and waits for
    /// the server to close, so the probe no longer counts against connection limits).
    pub fn wait_smtp(&self, limit: Duration) {
        let port = self.smtp_port();
        self.wait_for(&format!("a 220 greeting on port {port}"), limit, || {
            let Ok(mut c) = SmtpClient::connect(port) else {
                return false;
            };
            if !matches!(c.reply(), Ok(r) if r.code == 220) {
                return false;
            }
            let _ = c.send(b"QUIT\r\n");
            let _ = c.reply();
            let _ = c.wait_closed(Duration::from_secs(5));
            true
        });
    }

    /// Every file in every queue directory a message can be in (`maildrop`, `incoming`,
    /// `active`, `deferred`, `hold`, `corrupt`), as `dir/name`.
    pub fn all_queue_files(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in [
            "maildrop", "incoming", "active", "deferred", "hold", "corrupt",
        ] {
            v.extend(self.queue_files(d).into_iter().map(|f| format!("{d}/{f}")));
        }
        v.sort();
        v
    }

    /// Every message file in every Maildir (new/, cur/, tmp/) under the sandbox's home/,
    /// and every mbox file in its mail spool directory.
    pub fn all_mailbox_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Ok(homes) = std::fs::read_dir(self.dir.join("home")) {
            for h in homes.flatten() {
                for sub in ["new", "cur", "tmp"] {
                    if let Ok(rd) = std::fs::read_dir(h.path().join("Maildir").join(sub)) {
                        v.extend(rd.flatten().map(|e| e.path()));
                    }
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("mail")) {
            v.extend(
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)),
            );
        }
        v.sort();
        v
    }
}

/// One SMTP reply: its code and its lines as received (without CRLF, with the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit code.
    pub code: u16,
    /// Every line, e.g. `["250-mail.sandbox.test", "250 CHUNKING"]`.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The last line (`250 2.0.0 Ok`).
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// The text of every line after `NNN-`/`NNN `.
    pub fn texts(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|l| l.get(4..).unwrap_or(""))
            .collect()
    }

    /// True when the (last) line starts with `prefix`.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.last().starts_with(prefix)
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines.join("\\r\\n"))
    }
}

/// Why a read of a reply ended without one.
#[derive(Debug)]
pub enum SmtpEnd {
    /// The server closed the connection (with what came before the close, if anything).
    Closed(Vec<u8>),
    /// Nothing complete within the time limit (with what came, if anything).
    Timeout(Vec<u8>),
    /// Another I/O error (e.g. connection reset).
    Io(std::io::Error),
    /// A line that is not an SMTP reply line.
    Garbage(String),
}

/// A raw SMTP dialogue over TCP to 127.0.0.1: send any bytes, read whole replies.
pub struct SmtpClient {
    /// The connection.
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl SmtpClient {
    /// Connects to 127.0.0.1:`port` (does not read the greeting).
    pub fn connect(port: u16) -> std::io::Result<SmtpClient> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(SmtpClient {
            stream,
            buf: Vec::new(),
            timeout: SMTP_REPLY_TIMEOUT,
        })
    }

    /// Connects and reads the greeting, which must be a 220.
    pub fn open(port: u16) -> SmtpClient {
        let mut c = SmtpClient::connect(port)
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        let g = c.reply().unwrap_or_else(|e| panic!("no greeting: {e:?}"));
        assert_eq!(g.code, 220, "greeting: {g}");
        c
    }

    /// Connects, reads the 220 greeting and says `EHLO helo` (which must get a 250).
    pub fn ehlo(port: u16, helo: &str) -> SmtpClient {
        let mut c = SmtpClient::open(port);
        let r = c.cmd(&format!("EHLO {helo}"));
        assert_eq!(r.code, 250, "EHLO {helo}: {r}");
        c
    }

    /// Changes how long one reply may take.
    pub fn set_reply_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one whole reply within the reply timeout.
    pub fn reply(&mut self) -> Result<SmtpReply, SmtpEnd> {
        self.reply_within(self.timeout)
    }

    /// Reads one whole reply within `limit`.
    pub fn reply_within(&mut self, limit: Duration) -> Result<SmtpReply, SmtpEnd> {
        let end = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                let mut line = String::from_utf8_lossy(&raw).to_string();
                while line.ends_with(['\r', '\n']) {
                    line.pop();
                }
                let b = line.as_bytes();
                if b.len() < 3
                    || !b[..3].iter().all(u8::is_ascii_digit)
                    || (b.len() > 3 && b[3] != b' ' && b[3] != b'-')
                {
                    return Err(SmtpEnd::Garbage(line));
                }
                let code: u16 = line[..3].parse().unwrap();
                let more = b.len() > 3 && b[3] == b'-';
                lines.push(line);
                if !more {
                    return Ok(SmtpReply { code, lines });
                }
            }
            let now = Instant::now();
            if now >= end {
                let mut got = lines.join("\r\n").into_bytes();
                got.extend_from_slice(&self.buf);
                return Err(SmtpEnd::Timeout(got));
            }
            match self.read_some(end - now) {
                Ok(0) => {
                    let mut got = lines.join("\r\n").into_bytes();
                    got.extend_from_slice(&self.buf);
                    return Err(SmtpEnd::Closed(got));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(SmtpEnd::Io(e)),
            }
        }
    }

    fn read_some(&mut self, limit: Duration) -> std::io::Result<usize> {
        use std::io::Read;
        let t = limit.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(t))?;
        let mut b = [0u8; 65536];
        let n = self.stream.read(&mut b)?;
        self.buf.extend_from_slice(&b[..n]);
        Ok(n)
    }

    /// Sends `line` + CRLF and reads the reply; panics (naming the command) when there is
    /// none.
    pub fn cmd(&mut self, line: &str) -> SmtpReply {
        self.send(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("sending {line:?}: {e}"));
        self.reply()
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e:?}"))
    }

    /// Like [`SmtpClient::cmd`], and asserts that the reply's last line starts with
    /// `prefix`.
    pub fn expect(&mut self, line: &str, prefix: &str) -> SmtpReply {
        let r = self.cmd(line);
        assert!(
            r.starts_with(prefix),
            "{line:?}: expected {prefix:?}, got {r}"
        );
        r
    }

    /// MAIL, RCPT(s), DATA, the message (dot-stuffed here; CRLF line ends), and returns
    /// the reply to the final dot. Panics when MAIL/RCPT/DATA are refused.
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &str) -> SmtpReply {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for t in to {
            self.expect(&format!("RCPT TO:<{t}>"), "250 2.1.5");
        }
        self.expect("DATA", "354 ");
        self.send(&dot_stuff(message)).unwrap();
        self.reply().expect("a reply to the final dot")
    }

    /// Reads until the server closes the connection or `limit` passes. Ok(bytes received
    /// before the close) when it closed (a reset counts as closed), Err(bytes) when it
    /// did not close in time.
    pub fn wait_closed(&mut self, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let end = Instant::now() + limit;
        loop {
            let now = Instant::now();
            if now >= end {
                return Err(std::mem::take(&mut self.buf));
            }
            match self.read_some(end - now) {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(std::mem::take(&mut self.buf)),
            }
        }
    }
}

/// A message as sent after DATA: LF or CRLF line ends become CRLF, lines starting with
/// "." get another, and the terminating CRLF.CRLF is appended.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let body = message.strip_suffix('\n').unwrap_or(message);
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The queue id in a `250 2.0.0 Ok: queued as ID` reply.
pub fn queued_id(r: &SmtpReply) -> Option<String> {
    r.last()
        .split_once("queued as ")
        .map(|(_, id)| id.trim().to_string())
}

/// Runs a command with `input` on stdin; kills it when it has not finished within `limit`
/// (the Output's status then says killed by SIGKILL, and stderr says why).
pub fn run_limited(mut c: Command, input: &[u8], limit: Duration) -> Output {
    use std::io::{Read, Write};
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ro = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let re = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            killed = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = w.join();
    let stdout = ro.join().unwrap_or_default();
    let mut stderr = re.join().unwrap_or_default();
    if killed {
        stderr.extend_from_slice(format!("\n[killed after {limit:?}]\n").as_bytes());
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `python3 -c script args...` with a time limit.
pub fn python(script: &str, args: &[&str], limit: Duration) -> Output {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    run_limited(c, b"", limit)
}

/// The path of an outside program, if installed (`/usr/bin/swaks`, …).
pub fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false))
}

// ---------------------------------------------------------------------------------------
// TLS and AUTH: the sandbox's submission (587) and smtps (465) listeners, and the demo
// account's password as `petrel sandbox` prints it.
// ---------------------------------------------------------------------------------------

impl Sandbox {
    /// The port of the sandbox's submission smtpd (`127.0.0.1:{base + 587}`: STARTTLS and
    /// AUTH required).
    pub fn submission_port(&self) -> u16 {
        self.base + 587
    }

    /// The port of the sandbox's smtps smtpd (`127.0.0.1:{base + 465}`: implicit TLS).
    pub fn smtps_port(&self) -> u16 {
        self.base + 465
    }

    /// Like [`Sandbox::new`], and also returns the demo account's password, parsed from
    /// the `demo password: XXXX` line `petrel sandbox` prints.
    pub fn new_with_demo_password(test: &str) -> (Sandbox, String) {
        let (sb, stdout) = Sandbox::create(test);
        let password = demo_password(&stdout)
            .unwrap_or_else(|| panic!("petrel sandbox printed no demo password:\n{stdout}"));
        (sb, password)
    }
}

/// The password in a `demo password: XXXX` line of `petrel sandbox`'s output.
pub fn demo_password(sandbox_output: &str) -> Option<String> {
    sandbox_output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("demo password:")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
    })
}

/// Parses the `name|code|text` lines the Python client scripts print (text with `\n`
/// written as a backslash and n) into name → (code, text).
pub fn parse_replies(stdout: &[u8]) -> std::collections::HashMap<String, (u16, String)> {
    let mut m = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let mut parts = line.splitn(3, '|');
        let (Some(name), Some(code), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        m.insert(
            name.to_string(),
            (code.parse().unwrap_or(0), text.replace("\\n", "\n")),
        );
    }
    m
}

/// Helpers for the tests that run as root: system users and groups, /proc.
pub mod root {
    use std::process::Command;
    use std::time::Duration;

    /// Creates a system group unless it exists.
    pub fn ensure_group(name: &str) {
        if nix::unistd::Group::from_name(name).ok().flatten().is_none() {
            run_retry(Command::new("groupadd").args(["--system", name]));
        }
    }

    /// Creates a user (a system user when `system`) unless it exists.
    pub fn ensure_user(name: &str, system: bool) -> nix::unistd::User {
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            let mut c = Command::new("useradd");
            if system {
                c.arg("--system");
            }
            c.args([
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]);
            run_retry(&mut c);
        }
        nix::unistd::User::from_name(name).unwrap().unwrap()
    }

    /// useradd/groupadd fail while another process holds /etc/passwd's lock: try again.
    fn run_retry(c: &mut Command) {
        for _ in 0..50 {
            let out = c.output().unwrap();
            if out.status.success()
                || String::from_utf8_lossy(&out.stderr).contains("already exists")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{c:?} kept failing");
    }

    /// A field of /proc/PID/status (`Uid`, `CapEff`, `NoNewPrivs`, …).
    pub fn status_field(pid: i32, name: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap()
    }
}
