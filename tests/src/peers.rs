//! Peers for the outbound delivery tests (issue 5), all on 127.0.0.1:
//!
//! - [`ScriptedPeer`]: a small SMTP server written here, whose EHLO extensions and RCPT
//!   replies a test chooses, and which records every command and every accepted message
//!   (a message counts once its `250` after the final dot has been sent).
//! - [`SmtpSink`]: Postfix's `smtp-sink`, dumping each transaction to a file.
//! - [`Dovecot`]: a throwaway Dovecot that only speaks LMTP, with its own config, base
//!   directory, passwd-file and Maildirs in a temporary directory; stopped when dropped.
//!
//! Everything a peer waits for has a deadline; the servers stop when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a peer waits for its listener to come up.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---------------------------------------------------------------------------------------
// A scripted SMTP server.
// ---------------------------------------------------------------------------------------

/// What the RCPT reply is for an address (without `<>`), given how many times this
/// address was seen in RCPT commands before (0 the first time): a whole reply line
/// without CRLF, e.g. `250 2.1.5 Ok` or `450 4.2.0 try later`.
pub type RcptReply = Arc<dyn Fn(&str, usize) -> String + Send + Sync>;

/// How a [`ScriptedPeer`] behaves.
#[derive(Clone)]
pub struct PeerConfig {
    /// The EHLO extensions, one per line (`PIPELINING`, `8BITMIME`, `SIZE 1000`, …).
    /// `SIZE n` with n > 0 is enforced: a MAIL with a larger `SIZE=` and a message
    /// larger than n get `552 5.3.4`. STARTTLS and AUTH are not implemented: do not list
    /// them.
    pub extensions: Vec<String>,
    /// The RCPT reply for each recipient.
    pub rcpt_reply: RcptReply,
    /// A pause before the reply to the final dot (keeps deliveries in flight).
    pub data_delay: Duration,
}

impl Default for PeerConfig {
    fn default() -> PeerConfig {
        PeerConfig {
            extensions: [
                "PIPELINING",
                "SIZE 10240000",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rcpt_reply: Arc::new(|_, _| "250 2.1.5 Ok".to_string()),
            data_delay: Duration::ZERO,
        }
    }
}

impl PeerConfig {
    /// The default extensions without `name` (e.g. `8BITMIME`).
    pub fn without(mut self, name: &str) -> PeerConfig {
        self.extensions.retain(|e| {
            !e.split_whitespace()
                .next()
                .unwrap_or("")
                .eq_ignore_ascii_case(name)
        });
        self
    }

    /// Replaces the `SIZE` extension with `SIZE limit`.
    pub fn size(self, limit: u64) -> PeerConfig {
        let mut c = self.without("SIZE");
        c.extensions.push(format!("SIZE {limit}"));
        c
    }

    /// Sets the RCPT replies.
    pub fn rcpt(mut self, f: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> PeerConfig {
        self.rcpt_reply = Arc::new(f);
        self
    }

    fn size_limit(&self) -> u64 {
        self.extensions
            .iter()
            .find_map(|e| {
                let mut w = e.split_whitespace();
                match (w.next(), w.next()) {
                    (Some(k), Some(n)) if k.eq_ignore_ascii_case("SIZE") => n.parse().ok(),
                    _ => None,
                }
            })
            .unwrap_or(0)
    }
}

/// One message a [`ScriptedPeer`] accepted.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The EHLO/HELO argument of the session.
    pub helo: String,
    /// Everything after `MAIL FROM:` (`<a@b> SIZE=123 BODY=8BITMIME`).
    pub mail: String,
    /// The accepted recipients (without `<>`), in order.
    pub rcpts: Vec<String>,
    /// The message as received, dot-unstuffed, with CRLF line ends.
    pub data: Vec<u8>,
    /// Which connection (1, 2, …) carried it.
    pub connection: usize,
    /// When the `250` after the final dot was sent.
    pub accepted_at: Instant,
}

impl Transaction {
    /// The message as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).to_string()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        crate::header(&self.text().replace("\r\n", "\n"), name)
    }
}

#[derive(Default)]
struct PeerState {
    /// Every command line, as `N: LINE` (N = connection number).
    commands: Vec<String>,
    transactions: Vec<Transaction>,
    rcpt_seen: HashMap<String, usize>,
    streams: Vec<TcpStream>,
}

/// A scripted SMTP server on 127.0.0.1 (see the module documentation).
pub struct ScriptedPeer {
    port: u16,
    state: Arc<Mutex<PeerState>>,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedPeer {
    /// Listens on 127.0.0.1:`port` (0: any free port; panics when it cannot).
    pub fn start(port: u16, config: PeerConfig) -> ScriptedPeer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("scripted peer: bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(PeerState::default()));
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let acceptor = {
            let (state, open, peak, accepted, stop) = (
                state.clone(),
                open.clone(),
                peak.clone(),
                accepted.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now_open, Ordering::SeqCst);
                            if let Ok(c) = stream.try_clone() {
                                state.lock().unwrap().streams.push(c);
                            }
                            let (state, open, config) =
                                (state.clone(), open.clone(), config.clone());
                            std::thread::spawn(move || {
                                let _ = serve(stream, n, &config, &state);
                                open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        ScriptedPeer {
            port,
            state,
            open,
            peak,
            accepted,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The accepted messages so far.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.state.lock().unwrap().transactions.clone()
    }

    /// How many messages were accepted so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().transactions.len()
    }

    /// Every command line received so far, as `N: LINE` (N = connection number).
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    /// True when some connection sent a command starting with `verb` (any case).
    pub fn saw_command(&self, verb: &str) -> bool {
        self.commands().iter().any(|c| {
            c.split_once(": ")
                .map(|(_, l)| l.len() >= verb.len() && l[..verb.len()].eq_ignore_ascii_case(verb))
                .unwrap_or(false)
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A summary for assertion messages: the commands and the accepted envelopes.
    pub fn describe(&self) -> String {
        let st = self.state.lock().unwrap();
        let mut s = format!("--- peer 127.0.0.1:{} commands ---\n", self.port);
        for c in st
            .commands
            .iter()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            s.push_str(c);
            s.push('\n');
        }
        s.push_str(&format!(
            "--- {} accepted message(s) ---\n",
            st.transactions.len()
        ));
        for t in st.transactions.iter().take(20) {
            s.push_str(&format!(
                "conn {} MAIL FROM:{} RCPT {:?}\n",
                t.connection, t.mail, t.rcpts
            ));
        }
        s
    }
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        if let Ok(st) = self.state.lock() {
            for s in &st.streams {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// `<addr>` (and anything after) → addr.
fn angle_addr(arg: &str) -> String {
    let a = arg.trim();
    match (a.find('<'), a.find('>')) {
        (Some(s), Some(e)) if s < e => a[s + 1..e].to_string(),
        _ => a.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// The `SIZE=n` parameter of a MAIL command, if any.
fn mail_size(args: &str) -> Option<u64> {
    args.split_whitespace().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case("SIZE")
            .then(|| v.parse().ok())
            .flatten()
    })
}

/// One session.
fn serve(
    stream: TcpStream,
    conn: usize,
    config: &PeerConfig,
    state: &Mutex<PeerState>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let limit = config.size_limit();
    let mut say = |s: &str| -> std::io::Result<()> {
        out.write_all(s.as_bytes())?;
        out.write_all(b"\r\n")?;
        out.flush()
    };
    say("220 peer.test ESMTP scripted test peer")?;
    let mut helo = String::new();
    let mut mail: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut raw = Vec::new();
        if r.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        state
            .lock()
            .unwrap()
            .commands
            .push(format!("{conn}: {line}"));
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" | "LHLO" => {
                helo = line.get(5..).unwrap_or("").trim().to_string();
                mail = None;
                rcpts.clear();
                let mut lines = vec!["peer.test".to_string()];
                lines.extend(config.extensions.iter().cloned());
                let n = lines.len();
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                    .collect();
                say(&text.join("\r\n"))?;
            }
            "HELO" => {
                helo = line.get(5..).unwrap_or("").trim().to_string();
                say("250 peer.test")?;
            }
            "MAIL" => {
                let args = line
                    .split_once(':')
                    .map(|(_, a)| a.trim().to_string())
                    .unwrap_or_default();
                if mail.is_some() {
                    say("503 5.5.1 Error: nested MAIL command")?;
                } else if limit > 0 && mail_size(&args).is_some_and(|s| s > limit) {
                    say("552 5.3.4 Message size exceeds fixed limit")?;
                } else {
                    mail = Some(args);
                    say("250 2.1.0 Ok")?;
                }
            }
            "RCPT" => {
                if mail.is_none() {
                    say("503 5.5.1 Error: need MAIL command")?;
                    continue;
                }
                let addr = angle_addr(line.split_once(':').map(|(_, a)| a).unwrap_or(""));
                let seen = {
                    let mut st = state.lock().unwrap();
                    let n = st.rcpt_seen.entry(addr.to_ascii_lowercase()).or_insert(0);
                    let before = *n;
                    *n += 1;
                    before
                };
                let reply = (config.rcpt_reply)(&addr, seen);
                if reply.starts_with('2') {
                    rcpts.push(addr);
                }
                say(&reply)?;
            }
            "DATA" => {
                if mail.is_none() || rcpts.is_empty() {
                    say("554 5.5.1 Error: no valid recipients")?;
                    continue;
                }
                say("354 End data with <CR><LF>.<CR><LF>")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l)? == 0 {
                        // Cut off mid-message: nothing was accepted.
                        return Ok(());
                    }
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    if l.starts_with(b"..") {
                        data.extend_from_slice(&l[1..]);
                    } else {
                        data.extend_from_slice(&l);
                    }
                }
                if !config.data_delay.is_zero() {
                    std::thread::sleep(config.data_delay);
                }
                if limit > 0 && data.len() as u64 > limit {
                    say("552 5.3.4 Message size exceeds fixed limit")?;
                } else {
                    let t = Transaction {
                        helo: helo.clone(),
                        mail: mail.clone().unwrap_or_default(),
                        rcpts: rcpts.clone(),
                        data,
                        connection: conn,
                        accepted_at: Instant::now(),
                    };
                    let n = {
                        let mut st = state.lock().unwrap();
                        st.transactions.push(t);
                        st.transactions.len()
                    };
                    say(&format!("250 2.0.0 Ok: queued as PEER{n}"))?;
                }
                mail = None;
                rcpts.clear();
            }
            "RSET" => {
                mail = None;
                rcpts.clear();
                say("250 2.0.0 Ok")?;
            }
            "NOOP" => say("250 2.0.0 Ok")?,
            "QUIT" => {
                say("221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => say("502 5.5.2 Error: command not recognized")?,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Postfix's smtp-sink.
// ---------------------------------------------------------------------------------------

/// Postfix's `smtp-sink` on 127.0.0.1:`port`, dumping every transaction to a file of its
/// own (`-d`).
pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl SmtpSink {
    /// Where smtp-sink is installed (Debian's postfix package), if it is.
    pub fn program() -> Option<PathBuf> {
        crate::installed(&[
            "/usr/sbin/smtp-sink",
            "/usr/bin/smtp-sink",
            "/usr/lib/postfix/smtp-sink",
        ])
    }

    /// Starts it with `extra` options (e.g. `-8`: no 8BITMIME) and waits until it listens.
    /// Err(why) when it is not installed or does not come up.
    pub fn start(port: u16, extra: &[&str]) -> Result<SmtpSink, String> {
        let prog = SmtpSink::program()
            .ok_or("Postfix's smtp-sink is not installed (Debian package postfix)")?;
        let dir = tempfile::Builder::new()
            .prefix("petrel-sink-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut c = Command::new(prog);
        if crate::is_root() {
            // smtp-sink insists on a user to switch to when started as root.
            c.args(["-u", "root"]);
        }
        c.args(extra)
            .arg("-d")
            .arg(format!("{}/%Y%m%d%H%M%S.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().map_err(|e| format!("smtp-sink: {e}"))?;
        let mut sink = SmtpSink { child, dir, port };
        if !wait_listening(port, START_LIMIT) {
            let _ = sink.child.kill();
            return Err(format!("smtp-sink did not listen on 127.0.0.1:{port}"));
        }
        Ok(sink)
    }

    /// The dump files so far (each: smtp-sink's X-* headers, then the message).
    pub fn messages(&self) -> Vec<String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v.iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// A throwaway Dovecot (LMTP only).
// ---------------------------------------------------------------------------------------

/// Dovecot's LMTP server program (Debian package dovecot-lmtpd).
const DOVECOT_LMTP: &str = "/usr/lib/dovecot/lmtp";

/// A Dovecot that speaks only LMTP, on a unix socket ([`Dovecot::lmtp_socket`]) and on
/// 127.0.0.1:[`Dovecot::lmtp_port`], delivering to `DIR/mail/USER/Maildir` for the users
/// it was started with (anyone else is refused at RCPT: `550 5.1.1 ... User doesn't
/// exist`). The local part of a recipient is the user name. Mail is stored as the
/// running user (or, when that is root, as `mail`/`nobody`: Dovecot refuses uid 0).
pub struct Dovecot {
    _tmp: tempfile::TempDir,
    /// The temporary directory with everything in it.
    pub dir: PathBuf,
    /// Its configuration file.
    pub conf: PathBuf,
    /// The LMTP unix socket.
    pub lmtp_socket: PathBuf,
    /// The LMTP TCP port on 127.0.0.1.
    pub lmtp_port: u16,
    stopped: bool,
}

impl Dovecot {
    /// Why a Dovecot cannot run here, if it cannot (programs not installed).
    pub fn missing() -> Option<String> {
        if crate::installed(&["/usr/sbin/dovecot"]).is_none() {
            return Some("/usr/sbin/dovecot is not installed (Debian package dovecot-core)".into());
        }
        if crate::installed(&[DOVECOT_LMTP]).is_none() {
            return Some(format!(
                "{DOVECOT_LMTP} is not installed (Debian package dovecot-lmtpd)"
            ));
        }
        None
    }

    /// Writes the configuration, starts `dovecot -c CONF` and waits until LMTP greets on
    /// the TCP port and the unix socket exists. Err(why) when it does not come up.
    pub fn start(users: &[&str], lmtp_port: u16) -> Result<Dovecot, String> {
        if let Some(why) = Dovecot::missing() {
            return Err(why);
        }
        let tmp = tempfile::Builder::new()
            .prefix("petrel-dovecot-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        // Dovecot's own processes (user dovecot when started as root) walk into it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(dir.join(d)).map_err(|e| e.to_string())?;
        }
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .ok_or("the running uid has no user name")?;
        let group = nix::unistd::Group::from_gid(nix::unistd::getegid())
            .ok()
            .flatten()
            .ok_or("the running gid has no group name")?;
        let root = crate::is_root();
        // The identity mail is stored with.
        let (uid, gid) = if root {
            let u = ["mail", "nobody"]
                .iter()
                .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
                .ok_or("neither user mail nor nobody exists")?;
            (u.uid, u.gid)
        } else {
            (me.uid, me.gid)
        };
        let mail = dir.join("mail");
        if root {
            nix::unistd::chown(&mail, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let mut passwd = String::new();
        for u in users {
            passwd.push_str(&format!(
                "{u}:{{PLAIN}}not-used:{uid}:{gid}::{}::\n",
                mail.join(u).display()
            ));
        }
        std::fs::write(dir.join("passwd"), passwd).map_err(|e| e.to_string())?;
        let d = dir.display();
        // As root, Dovecot's internal processes run as its package's users (dovecot,
        // dovenull); as anyone else they run as that user, and nothing may chroot.
        let identity = if root {
            String::new()
        } else {
            format!(
                "default_internal_user = {u}\ndefault_internal_group = {g}\ndefault_login_user = {u}\nservice anvil {{\n  chroot =\n}}\n",
                u = me.name,
                g = group.name
            )
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let conf_text = format!(
            "\
# A throwaway Dovecot for Petrel's tests: LMTP only, everything under {d}.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
instance_name = {name}
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{d}/mail/%n/Maildir
auth_username_format = %Ln
first_valid_uid = 1
lmtp_save_to_detail_mailbox = no
{identity}passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, conf_text).map_err(|e| e.to_string())?;
        // dovecot forks its master into the background, which keeps any output pipe
        // open: its output goes to a file, and only the foreground process is waited for.
        let status = quiet(
            Command::new("/usr/sbin/dovecot").arg("-c").arg(&conf),
            &dir.join("start.out"),
        );
        let mut dc = Dovecot {
            lmtp_socket: dir.join("run/lmtp"),
            _tmp: tmp,
            dir,
            conf,
            lmtp_port,
            stopped: false,
        };
        if let Err(e) = status {
            dc.stopped = true;
            return Err(format!(
                "dovecot -c {} failed: {e}: {}\n{}",
                dc.conf.display(),
                std::fs::read_to_string(dc.dir.join("start.out")).unwrap_or_default(),
                dc.log()
            ));
        }
        let end = Instant::now() + START_LIMIT;
        loop {
            if dc.lmtp_socket.exists() && dc.lmtp_greets() {
                return Ok(dc);
            }
            if Instant::now() >= end {
                return Err(format!(
                    "dovecot's LMTP did not come up on 127.0.0.1:{lmtp_port} and {}\n{}",
                    dc.lmtp_socket.display(),
                    dc.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lmtp_greets(&self) -> bool {
        let Ok(mut c) = crate::SmtpClient::connect(self.lmtp_port) else {
            return false;
        };
        let ok = matches!(c.reply_within(Duration::from_secs(5)), Ok(r) if r.code == 220);
        let _ = c.send(b"QUIT\r\n");
        ok
    }

    /// `DIR/mail/USER/Maildir`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user).join("Maildir")
    }

    /// The files in a user's Maildir new/ and cur/.
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

    /// The contents of a user's messages.
    pub fn message_texts(&self, user: &str) -> Vec<String> {
        self.messages(user)
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string())
            .collect()
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Stops it: `doveadm -c CONF stop`, then SIGKILL to its master if that did not work.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = quiet(
            Command::new("doveadm")
                .arg("-c")
                .arg(&self.conf)
                .arg("stop"),
            &self.dir.join("stop.out"),
        );
        let pidfile = self.dir.join("run/master.pid");
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let Some(pid) = read_pid(&pidfile) else {
                return;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = read_pid(&pidfile) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a command that may leave a daemon behind: stdin from /dev/null, stdout and
/// stderr to `out`; kills it after 30 s. Ok when it exited 0.
fn quiet(c: &mut Command, out: &Path) -> Result<(), String> {
    let f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let mut child = c
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .map_err(|e| format!("{c:?}: {e}"))?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return if st.success() {
                Ok(())
            } else {
                Err(format!("{c:?}: {st}"))
            };
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{c:?}: still running after 30 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_and_size_parsing() {
        assert_eq!(angle_addr(" <a@b.test> SIZE=1"), "a@b.test");
        assert_eq!(angle_addr("a@b.test"), "a@b.test");
        assert_eq!(mail_size("<a@b> SIZE=1234 BODY=8BITMIME"), Some(1234));
        assert_eq!(mail_size("<a@b> BODY=8BITMIME"), None);
        let c = PeerConfig::default().without("8BITMIME").size(100);
        assert!(!c.extensions.iter().any(|e| e == "8BITMIME"));
        assert_eq!(c.size_limit(), 100);
        assert_eq!(PeerConfig::default().size_limit(), 10240000);
    }

    #[test]
    fn scripted_peer_records_accepted_messages_only() {
        let peer = ScriptedPeer::start(
            0,
            PeerConfig::default().rcpt(|a, n| {
                if a.starts_with("no") || (a.starts_with("later") && n == 0) {
                    "450 4.2.0 not now".into()
                } else {
                    "250 2.1.5 Ok".into()
                }
            }),
        );
        let mut c = crate::SmtpClient::ehlo(peer.port(), "me.test");
        c.expect("MAIL FROM:<a@b.test> SIZE=10", "250");
        c.expect("RCPT TO:<x@peer.test>", "250");
        c.expect("RCPT TO:<no@peer.test>", "450");
        c.expect("RCPT TO:<later@peer.test>", "450");
        c.expect("DATA", "354");
        c.send(b"Subject: t\r\n\r\n..dot\r\n.\r\n").unwrap();
        assert!(c.reply().unwrap().starts_with("250 2.0.0"));
        c.expect("MAIL FROM:<a@b.test>", "250");
        c.expect("RCPT TO:<later@peer.test>", "250");
        c.expect("QUIT", "221");
        let t = peer.transactions();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].rcpts, vec!["x@peer.test"]);
        assert_eq!(t[0].data, b"Subject: t\r\n\r\n.dot\r\n");
        assert_eq!(t[0].header("Subject").as_deref(), Some("t"));
        assert!(peer.saw_command("rcpt to:<no@"));
        assert!(!peer.saw_command("BDAT"));
    }
}
