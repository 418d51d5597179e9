//! imapd's event loop: one mio loop for every client of this process. A client costs a
//! socket, a command reader, an output buffer and, once logged in, a session — no
//! thread, no process. A login in progress has its own stream to authd.

use crate::login::{self, Settings, TlsLevel, PREAUTH_TIMEOUT};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use petrel_daemon::authd::AuthLink;
use petrel_imap_proto::{parse_command, CommandKind, CommandReader, ReadEvent};
use petrel_imap_session::session::Session;
use petrel_ipc::auth;
use petrel_tls::{ServerConfig, Transport};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
/// Tokens per connection: client socket, authd stream.
const STRIDE: usize = 2;
/// The longest command line (all the lines of one command together).
const MAX_LINE: usize = 64 * 1024;
/// Stop reading a client's commands while this much output waits for it.
const PAUSE_OUT: usize = 256 * 1024;
/// Output over this that the client has not read from for [`KILL_STALL`] ends the
/// connection.
const KILL_OUT: usize = 8 * 1024 * 1024;
/// See [`KILL_OUT`].
const KILL_STALL: Duration = Duration::from_secs(5);
/// Any output the client has not read from for this long ends the connection.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// How often a connection in IDLE is re-synchronised with its mailbox.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A drained output buffer bigger than this is given back to the allocator.
const KEEP_OUT_CAPACITY: usize = 1024 * 1024;

/// Where a connection is in the protocol.
enum State {
    /// Not authenticated.
    PreAuth,
    /// AUTHENTICATE PLAIN without an initial response: `+ ` was sent, the next line is
    /// the client's response.
    SaslWait { tag: String },
    /// The command with this tag waits for authd's answer; nothing else is read.
    Authd { tag: String },
    /// Logged in.
    Session(Box<Session>),
}

struct Conn {
    /// The client socket, plain or TLS. `None` only for the instant of a STARTTLS switch.
    stream: Option<Transport<TcpStream>>,
    /// A TLS handshake is in progress (after STARTTLS, or from the start with implicit TLS).
    handshaking: bool,
    /// STARTTLS was answered: switch to TLS as soon as the OK is written.
    starttls_pending: bool,
    /// The TLS version once the handshake is done.
    tls_version: Option<String>,
    ip: IpAddr,
    /// Output; bytes before `out_pos` are sent.
    out: Vec<u8>,
    out_pos: usize,
    reader: CommandReader,
    /// The connection to authd while a login waits for it.
    authd: Option<AuthLink>,
    state: State,
    /// The session is in IDLE: poll it for updates.
    idling: bool,
    user: Option<String>,
    /// Last input from the client.
    last: Instant,
    /// Last progress writing to the client (or when output started to wait).
    last_write: Instant,
    closing: bool,
    bytes_in: u64,
    bytes_out: u64,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn send(&mut self, b: &[u8]) {
        if self.pending() == 0 {
            self.last_write = Instant::now();
        }
        self.out.extend_from_slice(b);
    }

    fn tls_active(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_tls())
    }

    /// Commands may be taken from the reader now.
    fn can_process(&self) -> bool {
        !self.closing
            && !self.starttls_pending
            && !self.handshaking
            && !matches!(self.state, State::Authd { .. })
            && self.pending() <= PAUSE_OUT
    }

    /// Writes what it can of the output.
    fn write_out(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.bytes_out += n as u64;
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            if self.out.capacity() > KEEP_OUT_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.out_pos = 0;
        } else if self.out_pos >= READ_CHUNK && self.out_pos >= self.out.len() / 2 {
            // The unsent bytes stay the same bytes: a blocked TLS write may be retried.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// The event loop and every connection of this process.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    s: Settings,
    tls: Option<ServerConfig>,
}

impl Server {
    /// A server on master's listening socket.
    pub fn new(
        listener: std::net::TcpListener,
        s: Settings,
        tls: Option<ServerConfig>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: HashMap::new(),
            next: STRIDE,
            s,
            tls,
        })
    }

    /// Serves until a fatal error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut last_idle = Instant::now();
        loop {
            match self.poll.poll(&mut events, Some(IDLE_POLL / 2)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    Token(t) => match t % STRIDE {
                        0 => self.client_event(t),
                        _ => self.authd_event(t - 1),
                    },
                }
            }
            if last_idle.elapsed() >= IDLE_POLL {
                last_idle = Instant::now();
                self.idle_updates();
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
    }

    fn capabilities(&self, c: &Conn) -> String {
        let tls_active = c.tls_active();
        login::preauth_capabilities(
            Session::capabilities(),
            self.tls.is_some() && !tls_active,
            !self.s.auth_only || tls_active,
        )
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            let ip = addr.ip();
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            let _ = stream.set_nodelay(true);
            let t = self.next;
            self.next += STRIDE;
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(t),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            // Implicit TLS (port 993): the handshake comes first, the greeting after it.
            let (stream, handshaking) = match (&self.tls, self.s.wrappermode) {
                (Some(cfg), true) => match Transport::Plain(stream).into_tls(cfg) {
                    Ok(t) => (t, true),
                    Err(e) => {
                        log::warn!("TLS setup for {ip}: {e}");
                        continue;
                    }
                },
                _ => (Transport::Plain(stream), false),
            };
            let now = Instant::now();
            let mut c = Conn {
                stream: Some(stream),
                handshaking,
                starttls_pending: false,
                tls_version: None,
                ip,
                out: Vec::new(),
                out_pos: 0,
                reader: CommandReader::new(MAX_LINE, self.s.max_literal),
                authd: None,
                state: State::PreAuth,
                idling: false,
                user: None,
                last: now,
                last_write: now,
                closing: false,
                bytes_in: 0,
                bytes_out: 0,
            };
            let greeting = format!(
                "* OK [CAPABILITY {}] Petrel IMAP ready.\r\n",
                self.capabilities(&c)
            );
            c.send(greeting.as_bytes());
            self.conns.insert(t, c);
            self.client_event(t);
        }
    }

    /// Reads, processes and answers until the client has nothing more for us or must wait.
    fn client_event(&mut self, t: usize) {
        if !self.drive_handshake(t) {
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let need_input = self.process(t);
            self.flush(t);
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if !need_input {
                if c.can_process() {
                    // The output drained below the mark: go on with buffered commands.
                    continue;
                }
                return;
            }
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.close(t);
                    return;
                }
                Ok(n) => {
                    c.bytes_in += n as u64;
                    c.last = Instant::now();
                    c.reader.push(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(t);
                    return;
                }
            }
        }
    }

    /// Handles the commands the reader has. True when it needs more input (and may be
    /// given some now); false when it must wait (output backlog, authd, STARTTLS, closing).
    fn process(&mut self, t: usize) -> bool {
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return false;
            };
            if !c.can_process() {
                return false;
            }
            let Some(ev) = c.reader.next() else {
                return true;
            };
            match ev {
                ReadEvent::NeedContinuation => c.send(b"+ Ready for literal data\r\n"),
                ReadEvent::Bad { tag, text, fatal } => {
                    if fatal {
                        c.send(format!("* BYE {text}\r\n").as_bytes());
                        c.closing = true;
                    } else {
                        let tag = tag.unwrap_or_else(|| "*".into());
                        c.send(format!("{tag} BAD {text}\r\n").as_bytes());
                        if matches!(c.state, State::SaslWait { .. }) {
                            c.state = State::PreAuth;
                        }
                    }
                }
                ReadEvent::Command(bytes) => self.command(t, &bytes),
            }
        }
    }

    /// One complete command (or the line answering AUTHENTICATE's `+`).
    fn command(&mut self, t: usize, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        match &mut c.state {
            State::Session(session) => {
                let cmd = match parse_command(bytes) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        let tag = e.tag.clone().unwrap_or_else(|| "*".into());
                        let word = if e.is_badcharset() { "NO" } else { "BAD" };
                        c.send(format!("{tag} {word} {}\r\n", e.text).as_bytes());
                        return;
                    }
                };
                let o = session.handle(cmd);
                c.idling = o.idling;
                if o.logout {
                    c.closing = true;
                }
                c.send(&o.out);
            }
            State::SaslWait { tag } => {
                let tag = std::mem::take(tag);
                c.state = State::PreAuth;
                if bytes == b"*" {
                    c.send(format!("{tag} BAD Authentication cancelled.\r\n").as_bytes());
                    return;
                }
                let Some(resp) = login::decode_sasl_line(bytes) else {
                    c.send(format!("{tag} BAD Invalid base64 data.\r\n").as_bytes());
                    return;
                };
                self.auth_plain(t, tag, &resp);
            }
            State::PreAuth => self.preauth_command(t, bytes),
            // Not reached: nothing is read while authd is asked.
            State::Authd { .. } => {}
        }
    }

    /// A command in the not-authenticated state.
    fn preauth_command(&mut self, t: usize, bytes: &[u8]) {
        let caps = match self.conns.get(&t) {
            Some(c) => self.capabilities(c),
            None => return,
        };
        let tls_possible = self.tls.is_some();
        let level = self.s.tls_level;
        let auth_only = self.s.auth_only;
        let max_literal = self.s.max_literal;
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let cmd = match parse_command(bytes) {
            Ok(cmd) => cmd,
            Err(e) => {
                let tag = e.tag.clone().unwrap_or_else(|| "*".into());
                c.send(format!("{tag} BAD {}\r\n", e.text).as_bytes());
                return;
            }
        };
        let tag = cmd.tag;
        let tls_active = c.tls_active();
        let login_allowed = !auth_only || tls_active;
        match cmd.kind {
            CommandKind::Capability => c.send(
                format!("* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n").as_bytes(),
            ),
            CommandKind::Noop => c.send(format!("{tag} OK NOOP completed.\r\n").as_bytes()),
            CommandKind::Logout => {
                c.send(format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n").as_bytes());
                c.closing = true;
            }
            CommandKind::StartTls => {
                if tls_active {
                    c.send(format!("{tag} BAD TLS is already active.\r\n").as_bytes());
                } else if !tls_possible {
                    c.send(format!("{tag} BAD STARTTLS is not available.\r\n").as_bytes());
                } else {
                    c.send(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes());
                    c.starttls_pending = true;
                    // Whatever was pipelined after STARTTLS came in plaintext: drop it
                    // (CVE-2011-0411).
                    c.reader = CommandReader::new(MAX_LINE, max_literal);
                }
            }
            CommandKind::Done => c.send(b"* BAD Not idling\r\n"),
            _ if level == TlsLevel::Encrypt && !tls_active => c.send(
                format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first.\r\n").as_bytes(),
            ),
            CommandKind::Id(_) => c.send(
                format!("* ID (\"name\" \"Petrel\")\r\n{tag} OK ID completed.\r\n").as_bytes(),
            ),
            CommandKind::Login { .. } | CommandKind::Authenticate { .. } if !login_allowed => c
                .send(
                    format!(
                        "{tag} NO [PRIVACYREQUIRED] Plaintext authentication is not allowed without TLS.\r\n"
                    )
                    .as_bytes(),
                ),
            CommandKind::Login { user, password } => self.start_auth(t, tag, user, password),
            CommandKind::Authenticate { mechanism, initial } => {
                if mechanism != "PLAIN" {
                    c.send(
                        format!("{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n")
                            .as_bytes(),
                    );
                } else if let Some(resp) = initial {
                    self.auth_plain(t, tag, &resp);
                } else {
                    c.send(b"+ \r\n");
                    c.state = State::SaslWait { tag };
                }
            }
            _ => c.send(format!("{tag} BAD Log in first.\r\n").as_bytes()),
        }
    }

    /// A SASL PLAIN response: checked by authd when well-formed.
    fn auth_plain(&mut self, t: usize, tag: String, resp: &[u8]) {
        match login::decode_plain(resp) {
            Ok((user, password)) => self.start_auth(t, tag, user, password),
            Err(why) => {
                if let Some(c) = self.conns.get_mut(&t) {
                    c.send(format!("{tag} NO [AUTHENTICATIONFAILED] {why}.\r\n").as_bytes());
                }
            }
        }
    }

    /// Asks authd about a login; the command's answer waits for authd's.
    fn start_auth(&mut self, t: usize, tag: String, user: String, password: String) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let req = auth::Request::Check {
            service: "imapd".into(),
            client: c.ip.to_string(),
            user,
            password,
        };
        match AuthLink::open(self.poll.registry(), Token(t + 1), &req) {
            Ok(link) => c.authd = Some(link),
            Err(e) => {
                log::warn!("connect to private/auth: {e}");
                c.send(
                    format!("{tag} NO [UNAVAILABLE] Authentication service unavailable.\r\n")
                        .as_bytes(),
                );
                return;
            }
        }
        c.state = State::Authd { tag };
        self.flush_authd(t);
    }

    fn flush_authd(&mut self, t: usize) {
        if let Some(link) = self.conns.get_mut(&t).and_then(|c| c.authd.as_mut()) {
            link.flush();
        }
    }

    fn authd_event(&mut self, t: usize) {
        let reply = self
            .conns
            .get_mut(&t)
            .and_then(|c| c.authd.as_mut())
            .and_then(|l| l.poll_reply());
        let Some(r) = reply else {
            return;
        };
        if let Some(l) = self.conns.get_mut(&t).and_then(|c| c.authd.take()) {
            l.close(self.poll.registry());
        }
        self.finish_auth(t, r);
        self.client_event(t);
    }

    /// authd answered: log in, or say why not.
    fn finish_auth(&mut self, t: usize, reply: auth::Reply) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Authd { tag } = std::mem::replace(&mut c.state, State::PreAuth) else {
            return;
        };
        let answer = match reply {
            auth::Reply::Ok { user, home, .. } => {
                match open_session(&self.s.home_mailbox, &user, &home) {
                    Ok(session) => {
                        log::info!(
                            "Login: user={user}, rip={}, tls={}",
                            c.ip,
                            c.tls_version.as_deref().unwrap_or("none")
                        );
                        c.state = State::Session(Box::new(session));
                        c.user = Some(user);
                        format!(
                            "{tag} OK [CAPABILITY {}] Logged in\r\n",
                            Session::capabilities()
                        )
                    }
                    Err(e) => {
                        log::error!("cannot open the mailbox of {user}: {e}");
                        format!("{tag} NO [SERVERBUG] Cannot open your mailbox; see the server log.\r\n")
                    }
                }
            }
            auth::Reply::Fail => {
                format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
            }
            auth::Reply::Throttled => {
                format!("{tag} NO [UNAVAILABLE] Too many failed logins; try again later.\r\n")
            }
            auth::Reply::Temporary { reason } => {
                log::warn!("authentication for {} failed temporarily: {reason}", c.ip);
                format!("{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n")
            }
        };
        c.send(answer.as_bytes());
    }

    fn flush(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.handshaking {
            return;
        }
        if c.write_out().is_err() {
            self.close(t);
            return;
        }
        if c.closing && c.pending() == 0 {
            self.close(t);
            return;
        }
        if c.starttls_pending && c.pending() == 0 {
            self.switch_to_tls(t);
        }
    }

    /// STARTTLS: the OK is out; from here on the socket speaks TLS.
    fn switch_to_tls(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        c.starttls_pending = false;
        let (Some(cfg), Some(plain)) = (self.tls.as_ref(), c.stream.take()) else {
            self.close(t);
            return;
        };
        match plain.into_tls(cfg) {
            Ok(tls) => {
                c.stream = Some(tls);
                c.handshaking = true;
                c.last = Instant::now();
                self.client_event(t);
            }
            Err(e) => {
                log::warn!("STARTTLS with {}: {e}", c.ip);
                self.close(t);
            }
        }
    }

    /// Moves a TLS handshake on. False when the connection is gone or still handshaking.
    fn drive_handshake(&mut self, t: usize) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        if !c.handshaking {
            return true;
        }
        let Some(Transport::Tls(tls)) = c.stream.as_mut() else {
            return true;
        };
        match tls.handshake() {
            Ok(false) => false,
            Ok(true) => {
                c.handshaking = false;
                c.last = Instant::now();
                let version = tls.version();
                log::info!(
                    "TLS connection established from {}: {version} with cipher {}",
                    c.ip,
                    tls.cipher()
                );
                c.tls_version = Some(version);
                true
            }
            Err(e) => {
                log::info!("TLS handshake failed with {}: {e}", c.ip);
                self.close(t);
                false
            }
        }
    }

    /// IDLE: what changed in the mailboxes of the connections that wait for it.
    fn idle_updates(&mut self) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.idling && !c.closing && c.pending() <= PAUSE_OUT)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            let State::Session(session) = &mut c.state else {
                continue;
            };
            match session.updates() {
                Ok(b) if !b.is_empty() => {
                    c.send(&b);
                    self.flush(t);
                }
                Ok(_) => {}
                Err(e) => log::warn!("IDLE update for {}: {e}", session.user()),
            }
        }
    }

    /// Timeouts, and clients that do not read their output.
    fn sweep(&mut self) {
        let mut stalled = Vec::new();
        let mut idle = Vec::new();
        for (&t, c) in &self.conns {
            let p = c.pending();
            let w = c.last_write.elapsed();
            if (p > 0 && w > WRITE_STALL) || (p > KILL_OUT && w > KILL_STALL) {
                stalled.push(t);
                continue;
            }
            let limit = match c.state {
                State::Session(_) => self.s.timeout,
                State::Authd { .. } => continue,
                _ => PREAUTH_TIMEOUT,
            };
            if !c.closing && c.last.elapsed() > limit {
                idle.push(t);
            }
        }
        for t in stalled {
            if let Some(c) = self.conns.get(&t) {
                log::warn!(
                    "{} does not read its replies ({} bytes waiting); disconnecting",
                    c.ip,
                    c.pending()
                );
            }
            self.close(t);
        }
        for t in idle {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if c.handshaking {
                // Nothing can be said before TLS is up: just go.
                log::info!("TLS handshake timeout with {}", c.ip);
                self.close(t);
                continue;
            }
            c.send(b"* BYE Autologout; idle for too long\r\n");
            c.closing = true;
            c.idling = false;
            self.flush(t);
        }
    }

    fn close(&mut self, t: usize) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        if let Some(mut s) = c.stream.take() {
            if !c.handshaking {
                let _ = s.shutdown();
            }
            let _ = self.poll.registry().deregister(s.get_mut());
        }
        if let Some(l) = c.authd.take() {
            l.close(self.poll.registry());
        }
        if let Some(user) = &c.user {
            log::info!(
                "Logout: user={user}, rip={}, in={}, out={}",
                c.ip,
                c.bytes_in,
                c.bytes_out
            );
        }
    }
}

/// The user's store and session, as mail_owner (no per-user privilege split yet).
fn open_session(home_mailbox: &str, user: &str, home: &str) -> Result<Session, String> {
    let path = login::maildir_path(home, home_mailbox)?;
    let store =
        petrel_mailstore::Store::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Session::new(store, user).map_err(|e| format!("{}: {e}", path.display()))
}
