//! The login process's event loop: one mio loop for every client before login, as
//! mail_owner with no capabilities. A client costs a socket, the protocol's input state
//! and an output buffer; a login in progress has its own stream to authd. After a login
//! the connection goes to the spawner (see `handoff`): a plaintext one for good, a TLS one
//! through a socket pair this loop relays to (TLS stays here, the session never sees it).
//!
//! The loop knows nothing of IMAP or POP3: a [`Protocol`] turns the client's input into
//! answers and [`Step`]s (log in, start TLS, close).

use crate::handoff::{self, Answer, ConnState, Received};
use crate::outbuf::{Outbuf, PAUSE_OUT};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use petrel_daemon::authd::AuthLink;
use petrel_ipc::auth;
use petrel_tls::{ServerConfig, Transport};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a connection may stay silent before login.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the protocol knows of a connection when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// The connection is encrypted.
    pub tls_active: bool,
    /// TLS can be started (configured, not active yet).
    pub starttls: bool,
}

/// What the loop is to do after [`Protocol::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The protocol has no complete command: read more.
    NeedInput,
    /// One command was handled: call again.
    Next,
    /// Send what was queued, then close the connection.
    Close,
    /// Send what was queued (the go-ahead), then start TLS. The protocol has already
    /// dropped its unread input (pipelined plaintext must not survive, CVE-2011-0411).
    StartTls,
    /// Ask authd about this login; the answer completes the command `tag`.
    Login {
        /// What the answer needs (IMAP's tag; empty for POP3).
        tag: String,
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

/// Why a login did not lead to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Wrong user name or password.
    Rejected,
    /// Too many failures from this client: authd refuses to check.
    Throttled,
    /// authd could not check (a temporary failure), or cannot be reached.
    Temporary,
    /// The password was right but no session could be started (the client is then
    /// disconnected).
    NoSession,
}

/// A pre-login dialogue (IMAP's, POP3's).
pub trait Protocol {
    /// A connection's protocol state (its command reader, a SASL exchange in progress).
    type Conn;
    /// The service name authd is told (`imapd`, `pop3d`).
    fn service(&self) -> &'static str;
    /// A new connection's state.
    fn conn(&self) -> Self::Conn;
    /// Bytes from the client.
    fn push(&self, c: &mut Self::Conn, input: &[u8]);
    /// Input read but not handled, for the session after login.
    fn take_unread(&self, c: &mut Self::Conn) -> Vec<u8>;
    /// The greeting.
    fn greeting(&self, ctx: &Ctx) -> Vec<u8>;
    /// Handles at most one command from the input, queueing its answer in `out`.
    fn step(&self, c: &mut Self::Conn, ctx: &Ctx, out: &mut Outbuf) -> Step;
    /// The answer to a login that failed.
    fn failure(&self, tag: &str, why: Failure) -> Vec<u8>;
    /// Said (in plaintext listeners only) to a connection refused for being one too many.
    fn too_many(&self) -> &'static [u8];
    /// Said to a connection silent for too long before logging in.
    fn autologout(&self) -> &'static [u8];
}

const LISTENER: Token = Token(0);
const SPAWNER: Token = Token(1);
/// Tokens per connection: client socket, authd stream (later the relay socket).
const STRIDE: usize = 2;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Connections not logged in yet, from one address and in all, per login process; more
/// are refused at once (as Dovecot's login_max_connections-style limits).
const MAX_PREAUTH_PER_IP: usize = 100;
const MAX_PREAUTH: usize = 5000;

/// Where a connection is.
enum State {
    /// Not authenticated: the protocol has the input.
    PreAuth,
    /// The command with this tag waits for authd's answer; nothing else is read.
    Authd { tag: String },
    /// Handed to the spawner (request `id`); waiting for its answer. For a TLS
    /// connection, `peer` is this end of the relay socket pair.
    Handoff {
        id: u64,
        tag: String,
        peer: Option<UnixStream>,
    },
    /// Logged in over TLS: plaintext goes to and from the session worker through `peer`.
    Relay(Relay),
}

/// The plaintext side of a TLS connection whose session runs in a worker.
struct Relay {
    peer: UnixStream,
    /// Client input for the worker, not written yet.
    to_peer: Vec<u8>,
}

struct Conn<C> {
    /// The client socket, plain or TLS. `None` only for the instant of a STARTTLS switch.
    stream: Option<Transport<TcpStream>>,
    /// A TLS handshake is in progress (after STARTTLS, or from the start with implicit TLS).
    handshaking: bool,
    /// STARTTLS was answered: switch to TLS as soon as the OK is written.
    starttls_pending: bool,
    /// The TLS version once the handshake is done.
    tls_version: Option<String>,
    ip: IpAddr,
    out: Outbuf,
    proto: C,
    /// The connection to authd while a login waits for it.
    authd: Option<AuthLink>,
    state: State,
    /// Last input from the client.
    last: Instant,
    closing: bool,
    bytes_in: u64,
    /// Counted in `Server::preauth` (until login or close).
    counted: bool,
}

impl<C> Conn<C> {
    fn send(&mut self, b: &[u8]) {
        self.out.send(b);
    }

    fn ctx(&self, tls_configured: bool) -> Ctx {
        let tls_active = self.tls_active();
        Ctx {
            tls_active,
            starttls: tls_configured && !tls_active,
        }
    }

    fn tls_active(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_tls())
    }

    /// Commands may be taken from the input now.
    fn can_process(&self) -> bool {
        !self.closing
            && !self.starttls_pending
            && !self.handshaking
            && matches!(self.state, State::PreAuth)
            && self.out.pending() <= PAUSE_OUT
    }

    /// Writes what it can of the output.
    fn write_out(&mut self) -> io::Result<()> {
        match self.stream.as_mut() {
            Some(stream) => self.out.write_to(stream),
            None => Ok(()),
        }
    }
}

/// The event loop and every connection of this process.
pub struct Server<P: Protocol> {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn<P::Conn>>,
    next: usize,
    proto: P,
    tls: Option<ServerConfig>,
    /// TLS from the first byte (imaps, pop3s).
    wrappermode: bool,
    /// The socket to the spawner, and requests waiting to be sent on it.
    spawner: OwnedFd,
    to_spawner: VecDeque<(u64, Vec<u8>, OwnedFd)>,
    /// Hand-over requests in flight: id → connection.
    handoffs: HashMap<u64, usize>,
    next_id: u64,
    buf: Vec<u8>,
    /// Connections not logged in yet, per client address.
    preauth: HashMap<IpAddr, usize>,
    preauth_total: usize,
}

impl<P: Protocol> Server<P> {
    /// A server on master's listening socket.
    pub fn new(
        listener: std::net::TcpListener,
        proto: P,
        tls: Option<ServerConfig>,
        wrappermode: bool,
        spawner: OwnedFd,
    ) -> io::Result<Server<P>> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry().register(
            &mut SourceFd(&spawner.as_raw_fd()),
            SPAWNER,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(Server {
            poll,
            listener,
            conns: HashMap::new(),
            next: STRIDE,
            proto,
            tls,
            wrappermode,
            spawner,
            to_spawner: VecDeque::new(),
            handoffs: HashMap::new(),
            next_id: 1,
            buf: vec![0u8; handoff::MAX_MESSAGE],
            preauth: HashMap::new(),
            preauth_total: 0,
        })
    }

    /// Serves until a fatal error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            match self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SPAWNER => {
                        if !self.spawner_event() {
                            return Err(io::Error::other("the spawner went away"));
                        }
                    }
                    Token(t) => match t % STRIDE {
                        0 => self.client_event(t),
                        _ => self.second_event(t - 1),
                    },
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
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
            let from_ip = self.preauth.get(&ip).copied().unwrap_or(0);
            if from_ip >= MAX_PREAUTH_PER_IP || self.preauth_total >= MAX_PREAUTH {
                log::warn!(
                    "too many connections not logged in yet ({} from {ip}, {} in all); refusing one",
                    from_ip,
                    self.preauth_total
                );
                // Best effort: the greeting's place takes a BYE (never for TLS-first ports,
                // where plaintext would be garbage to the client).
                if !self.wrappermode {
                    let _ = stream.write(self.proto.too_many());
                }
                continue;
            }
            *self.preauth.entry(ip).or_insert(0) += 1;
            self.preauth_total += 1;
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
            let (stream, handshaking) = match (&self.tls, self.wrappermode) {
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
                out: Outbuf::new(now),
                proto: self.proto.conn(),
                authd: None,
                state: State::PreAuth,
                last: now,
                closing: false,
                bytes_in: 0,
                counted: true,
            };
            let greeting = self.proto.greeting(&c.ctx(self.tls.is_some()));
            c.send(&greeting);
            self.conns.insert(t, c);
            self.client_event(t);
        }
    }

    /// Reads, processes and answers until the client has nothing more for us or must wait.
    fn client_event(&mut self, t: usize) {
        if !self.drive_handshake(t) {
            return;
        }
        if matches!(self.conns.get(&t).map(|c| &c.state), Some(State::Relay(_))) {
            self.relay(t);
            return;
        }
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
            match stream.read(&mut self.buf[..READ_CHUNK]) {
                Ok(0) => {
                    self.close(t);
                    return;
                }
                Ok(n) => {
                    self.proto.push(&mut c.proto, &self.buf[..n]);
                    c.bytes_in += n as u64;
                    c.last = Instant::now();
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

    /// Handles the commands the protocol has. True when it needs more input (and may be
    /// given some now); false when it must wait (output backlog, authd, STARTTLS, closing).
    fn process(&mut self, t: usize) -> bool {
        let tls_configured = self.tls.is_some();
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return false;
            };
            if !c.can_process() {
                return false;
            }
            let ctx = c.ctx(tls_configured);
            match self.proto.step(&mut c.proto, &ctx, &mut c.out) {
                Step::NeedInput => return true,
                Step::Next => {}
                Step::Close => c.closing = true,
                Step::StartTls => c.starttls_pending = true,
                Step::Login {
                    tag,
                    user,
                    password,
                } => self.start_auth(t, tag, user, password),
            }
        }
    }

    /// Asks authd about a login; the command's answer waits for authd's.
    fn start_auth(&mut self, t: usize, tag: String, user: String, password: String) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let req = auth::Request::Login {
            service: self.proto.service().into(),
            client: c.ip.to_string(),
            user,
            password,
        };
        match AuthLink::open(self.poll.registry(), Token(t + 1), &req) {
            Ok(link) => c.authd = Some(link),
            Err(e) => {
                log::warn!("connect to private/auth: {e}");
                c.send(&self.proto.failure(&tag, Failure::Temporary));
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

    /// An event on a connection's second socket: authd's, or the relay's.
    fn second_event(&mut self, t: usize) {
        match self.conns.get(&t).map(|c| &c.state) {
            Some(State::Relay(_)) => self.relay(t),
            Some(State::Authd { .. }) => self.authd_event(t),
            _ => {}
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

    /// authd answered: hand the connection over, or say why not.
    fn finish_auth(&mut self, t: usize, reply: auth::Reply) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Authd { tag } = std::mem::replace(&mut c.state, State::PreAuth) else {
            return;
        };
        let why = match reply {
            auth::Reply::Ticket { ticket, .. } => {
                self.hand_over(t, tag, ticket);
                return;
            }
            // Not asked for (Login is answered with a ticket): treated as a failure.
            auth::Reply::Ok { .. } | auth::Reply::Fail => Failure::Rejected,
            auth::Reply::Throttled => Failure::Throttled,
            auth::Reply::Temporary { reason } => {
                log::warn!("authentication for {} failed temporarily: {reason}", c.ip);
                Failure::Temporary
            }
        };
        c.send(&self.proto.failure(&tag, why));
    }

    /// A login succeeded: the connection goes to the spawner with authd's ticket. A
    /// plaintext connection goes as it is (its socket); a TLS one as one end of a socket
    /// pair this process relays to.
    fn hand_over(&mut self, t: usize, tag: String, ticket: String) {
        let id = self.next_id;
        self.next_id += 1;
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let (fd, peer, output) = if c.tls_active() {
            let pair = std::os::unix::net::UnixStream::pair().and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                Ok((a, b))
            });
            let (mine, theirs) = match pair {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("socketpair: {e}");
                    c.send(&self.proto.failure(&tag, Failure::Temporary));
                    return;
                }
            };
            let mut mine = UnixStream::from_std(mine);
            if let Err(e) = self.poll.registry().register(
                &mut mine,
                Token(t + 1),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("register the relay socket: {e}");
                c.send(&self.proto.failure(&tag, Failure::Temporary));
                return;
            }
            (OwnedFd::from(theirs), Some(mine), Vec::new())
        } else {
            // The socket itself goes: this process must not touch it any more.
            let Some(Transport::Plain(tcp)) = c.stream.as_mut() else {
                return;
            };
            let _ = self.poll.registry().deregister(tcp);
            let fd = match nix::unistd::dup(&*tcp) {
                Ok(fd) => fd,
                Err(e) => {
                    log::warn!("dup: {e}");
                    c.closing = true;
                    return;
                }
            };
            (fd, None, c.out.take())
        };
        let conn = ConnState {
            tag: tag.clone(),
            leftover: self.proto.take_unread(&mut c.proto),
            output,
            ip: c.ip.to_string(),
            tls: c.tls_version.clone(),
            bytes_in: c.bytes_in,
            bytes_out: c.out.bytes_out,
        };
        c.state = State::Handoff { id, tag, peer };
        let req = handoff::Login { id, ticket, conn };
        match postcard::to_stdvec(&req) {
            Ok(bytes) => {
                self.handoffs.insert(id, t);
                self.to_spawner.push_back((id, bytes, fd));
                self.flush_spawner();
            }
            Err(e) => {
                log::warn!("encode a hand-over: {e}");
                self.handoff_failed(t);
            }
        }
    }

    /// Sends what waits for the spawner.
    fn flush_spawner(&mut self) {
        while let Some((id, bytes, fd)) = self.to_spawner.front() {
            match handoff::send_bytes(&self.spawner, bytes, Some(fd.as_raw_fd()), true) {
                Ok(()) => {
                    self.to_spawner.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("to the spawner: {e}");
                    let id = *id;
                    self.to_spawner.pop_front();
                    if let Some(t) = self.handoffs.remove(&id) {
                        self.handoff_failed(t);
                    }
                }
            }
        }
    }

    /// Answers from the spawner. False when it has gone away.
    fn spawner_event(&mut self) -> bool {
        self.flush_spawner();
        loop {
            match handoff::recv::<Answer>(&self.spawner, &mut self.buf, true) {
                Ok(Received::Msg(a, _)) => {
                    let Some(t) = self.handoffs.remove(&a.id) else {
                        continue;
                    };
                    match a.error {
                        None => self.handed_over(t),
                        Some(_) => self.handoff_failed(t),
                    }
                }
                Ok(Received::Nothing) => return true,
                Ok(Received::Closed) => return false,
                Err(e) => {
                    log::warn!("from the spawner: {e}");
                    return true;
                }
            }
        }
    }

    /// Connection `t` is no longer one that has not logged in.
    fn uncount(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if !std::mem::take(&mut c.counted) {
            return;
        }
        self.preauth_total = self.preauth_total.saturating_sub(1);
        if let Some(n) = self.preauth.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.preauth.remove(&c.ip);
            }
        }
    }

    /// The worker has the connection: forget a plaintext one, relay a TLS one.
    fn handed_over(&mut self, t: usize) {
        self.uncount(t);
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Handoff { peer, .. } = std::mem::replace(&mut c.state, State::PreAuth) else {
            return;
        };
        match peer {
            None => {
                // Closing our copy of the socket leaves the worker's open.
                self.conns.remove(&t);
            }
            Some(peer) => {
                c.state = State::Relay(Relay {
                    peer,
                    to_peer: Vec::new(),
                });
                self.relay(t);
            }
        }
    }

    /// The hand-over failed: the client hears so and the connection ends.
    fn handoff_failed(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let State::Handoff { tag, peer, .. } = std::mem::replace(&mut c.state, State::PreAuth)
        else {
            return;
        };
        if let Some(mut p) = peer {
            let _ = self.poll.registry().deregister(&mut p);
        }
        if let Some(Transport::Plain(tcp)) = c.stream.as_mut() {
            let _ = self.poll.registry().register(
                tcp,
                Token(t),
                Interest::READABLE | Interest::WRITABLE,
            );
        }
        c.send(&self.proto.failure(&tag, Failure::NoSession));
        c.closing = true;
        self.flush(t);
    }

    /// Moves bytes between a TLS client and its session worker until neither side has
    /// more for the other (or the one that should take them is full).
    fn relay(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let buf = &mut self.buf;
        let mut end = false;
        loop {
            let mut progress = false;
            let State::Relay(r) = &mut c.state else {
                return;
            };
            // Client → worker.
            if r.to_peer.len() < PAUSE_OUT {
                if let Some(stream) = c.stream.as_mut() {
                    match stream.read(&mut buf[..READ_CHUNK]) {
                        Ok(0) => end = true,
                        Ok(n) => {
                            c.bytes_in += n as u64;
                            c.last = Instant::now();
                            r.to_peer.extend_from_slice(&buf[..n]);
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                        Err(_) => end = true,
                    }
                }
            }
            while !r.to_peer.is_empty() {
                match r.peer.write(&r.to_peer) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(n) => {
                        r.to_peer.drain(..n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        end = true;
                        break;
                    }
                }
            }
            if r.to_peer.capacity() > 16 * 1024 && r.to_peer.is_empty() {
                r.to_peer = Vec::new();
            }
            // Worker → client.
            if c.out.pending() < PAUSE_OUT {
                match r.peer.read(&mut buf[..READ_CHUNK]) {
                    Ok(0) => {
                        // The session ended: what it said goes out, then the connection.
                        c.closing = true;
                    }
                    Ok(n) => {
                        c.out.send(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => c.closing = true,
                }
            }
            let before = c.out.pending();
            if c.write_out().is_err() {
                end = true;
            }
            if c.out.pending() < before {
                progress = true;
            }
            if end || (c.closing && c.out.pending() == 0) {
                break;
            }
            if !progress {
                return;
            }
        }
        self.close(t);
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
        if c.closing && c.out.pending() == 0 {
            self.close(t);
            return;
        }
        if c.starttls_pending && c.out.pending() == 0 {
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

    /// Timeouts, and clients that do not read their output.
    fn sweep(&mut self) {
        let mut stalled = Vec::new();
        let mut idle = Vec::new();
        for (&t, c) in &self.conns {
            if c.out.stalled() {
                stalled.push(t);
                continue;
            }
            let limit = match c.state {
                // The worker times the session out; the relay ends when it does.
                State::Authd { .. } | State::Handoff { .. } | State::Relay(_) => continue,
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
                    c.out.pending()
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
            c.send(self.proto.autologout());
            c.closing = true;
            self.flush(t);
        }
    }

    fn close(&mut self, t: usize) {
        self.uncount(t);
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
        match c.state {
            State::Relay(mut r) => {
                let _ = self.poll.registry().deregister(&mut r.peer);
            }
            State::Handoff { id, peer, .. } => {
                self.handoffs.remove(&id);
                if let Some(mut p) = peer {
                    let _ = self.poll.registry().deregister(&mut p);
                }
            }
            _ => {}
        }
    }
}
