//! smtpd's event loop: one mio loop for every client of this process. A client costs a
//! session, a socket and two buffers — no thread, no process. Each session with a message
//! in flight has its own stream to cleanup.

use crate::policy::Settings;
use crate::session::{Action, Ctx, Session};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use petrel_daemon::authd::AuthLink;
use petrel_ipc::auth;
use petrel_ipc::cleanup::{Reply as CleanupReply, Request};
use petrel_ipc::{FrameReader, Incoming};
use petrel_maps::local_table::LocalTable;
use petrel_tls::{ServerConfig, Transport};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
/// Tokens per connection: client socket, cleanup stream, authd stream.
const STRIDE: usize = 4;
/// Stop reading a client while this much output waits for it (it does not read replies).
const MAX_CLIENT_OUT: usize = 256 * 1024;
/// Stop reading a client while this much waits to go to cleanup.
const MAX_CLEANUP_OUT: usize = 1024 * 1024;
/// A client whose unread output passes this is cut off.
const KILL_CLIENT_OUT: usize = 4 * 1024 * 1024;

struct Link {
    stream: UnixStream,
    out: Vec<u8>,
    reader: FrameReader,
}

struct Conn {
    session: Session,
    /// The client socket, plain or TLS. `None` only for the instant of a STARTTLS switch.
    stream: Option<Transport<TcpStream>>,
    /// A TLS handshake is in progress (after STARTTLS, or from the start with implicit TLS).
    handshaking: bool,
    /// STARTTLS was answered: switch to TLS as soon as the 220 is written.
    starttls_pending: bool,
    ip: IpAddr,
    out: Vec<u8>,
    cleanup: Option<Link>,
    /// The connection to authd while an AUTH exchange waits for it.
    authd: Option<AuthLink>,
    /// With smtpd_greet_delay: the greeting, held until this time.
    greeting: Option<(Instant, Vec<u8>)>,
    last: Instant,
    closing: bool,
    started: Instant,
}

/// What a session may ask for, bound to one connection.
struct SessionCtx<'a> {
    link: &'a mut Option<Link>,
    table: &'a mut LocalTable,
    delimiter: &'a str,
    poll: &'a Poll,
    token: usize,
}

impl Ctx for SessionCtx<'_> {
    fn open_cleanup(&mut self) -> bool {
        if self.link.is_some() {
            return true;
        }
        let s = match std::os::unix::net::UnixStream::connect("private/cleanup") {
            Ok(s) => s,
            Err(e) => {
                log::warn!("connect to private/cleanup: {e}");
                return false;
            }
        };
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut stream = UnixStream::from_std(s);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(self.token + 1),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return false;
        }
        *self.link = Some(Link {
            stream,
            out: Vec::new(),
            reader: FrameReader::new(),
        });
        true
    }

    fn local_exists(&mut self, local: &str) -> Result<bool, String> {
        self.table
            .exists_with(local, self.delimiter, &mut authd_lookup)
            .map_err(|e| e.to_string())
    }
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn>,
    per_ip: HashMap<IpAddr, usize>,
    next: usize,
    s: Arc<Settings>,
    table: LocalTable,
    tls: Option<ServerConfig>,
}

impl Server {
    pub fn new(
        listener: std::net::TcpListener,
        s: Settings,
        table: LocalTable,
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
            per_ip: HashMap::new(),
            next: STRIDE,
            s: Arc::new(s),
            table,
            tls,
        })
    }

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
                    Token(t) => match t % STRIDE {
                        0 => self.client_event(t),
                        1 => self.cleanup_event(t - 1),
                        _ => self.authd_event(t - 2),
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
            let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
            let too_many = if self.conns.len() >= self.s.connection_limit {
                Some("too many connections".to_string())
            } else if self.s.client_connection_limit > 0
                && from_ip >= self.s.client_connection_limit
            {
                Some(format!("too many connections from {ip}"))
            } else {
                None
            };
            if let Some(why) = too_many {
                log::warn!("{why}: refusing connection from unknown[{ip}]");
                let _ = stream
                    .write(format!("421 4.7.0 {} Error: {why}\r\n", self.s.myhostname).as_bytes());
                continue;
            }
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
            log::info!("connect from unknown[{ip}]");
            // Implicit TLS (port 465): the handshake comes first, the greeting after it.
            let (stream, handshaking) = match (&self.tls, self.s.tls_wrappermode) {
                (Some(cfg), true) => match Transport::Plain(stream).into_tls(cfg) {
                    Ok(t) => (t, true),
                    Err(e) => {
                        log::warn!("TLS setup for unknown[{ip}]: {e}");
                        continue;
                    }
                },
                _ => (Transport::Plain(stream), false),
            };
            *self.per_ip.entry(ip).or_insert(0) += 1;
            let (session, actions) = Session::new(Arc::clone(&self.s), ip);
            self.conns.insert(
                t,
                Conn {
                    session,
                    stream: Some(stream),
                    handshaking,
                    starttls_pending: false,
                    ip,
                    out: Vec::new(),
                    cleanup: None,
                    authd: None,
                    greeting: None,
                    last: Instant::now(),
                    closing: false,
                    started: Instant::now(),
                },
            );
            if self.s.greet_delay.is_zero() {
                self.apply(t, actions);
                self.flush(t);
            } else if let Some(c) = self.conns.get_mut(&t) {
                let bytes: Vec<u8> = actions
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Send(b) => Some(b),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                c.greeting = Some((Instant::now() + self.s.greet_delay, bytes));
            }
        }
    }

    /// Carries out a session's actions.
    fn apply(&mut self, t: usize, actions: Vec<Action>) {
        let mut auth_down = None;
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        for a in actions {
            match a {
                Action::Send(b) => c.out.extend_from_slice(&b),
                Action::Close => c.closing = true,
                Action::StartTls => c.starttls_pending = true,
                Action::Auth { user, password } => {
                    let req = auth::Request::Check {
                        service: "smtpd".into(),
                        client: c.ip.to_string(),
                        user,
                        password,
                    };
                    match AuthLink::open(self.poll.registry(), Token(t + 2), &req) {
                        Ok(link) => c.authd = Some(link),
                        Err(e) => {
                            log::warn!("connect to private/auth: {e}");
                            auth_down = Some(format!("authd unavailable: {e}"));
                        }
                    }
                }
                Action::Cleanup(req) => {
                    let Some(link) = c.cleanup.as_mut() else {
                        continue;
                    };
                    let frames: Vec<Request> = match req {
                        Request::Data(b) if b.len() > petrel_ipc::CHUNK => b
                            .chunks(petrel_ipc::CHUNK)
                            .map(|x| Request::Data(x.to_vec()))
                            .collect(),
                        other => vec![other],
                    };
                    for f in frames {
                        match petrel_ipc::encode(&f) {
                            Ok(bytes) => link.out.extend_from_slice(&bytes),
                            Err(e) => log::error!("encode cleanup frame: {e}"),
                        }
                    }
                }
            }
        }
        self.flush_cleanup(t);
        self.flush_authd(t);
        if let Some(reason) = auth_down {
            self.with_session(t, |s, ctx| {
                s.auth_reply(auth::Reply::Temporary { reason }, ctx)
            });
        }
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
        self.with_session(t, |s, ctx| s.auth_reply(r, ctx));
        self.client_event(t);
    }

    fn client_event(&mut self, t: usize) {
        if !self.drive_handshake(t) {
            return;
        }
        self.flush(t);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            let blocked = c.out.len() > MAX_CLIENT_OUT
                || c.cleanup
                    .as_ref()
                    .is_some_and(|l| l.out.len() > MAX_CLEANUP_OUT);
            if c.closing || blocked || !c.session.wants_input() {
                break;
            }
            if c.greeting.is_some() {
                // Anything before our greeting is a client that does not wait its turn.
                let mut probe = [0u8; 1];
                let Some(stream) = c.stream.as_mut() else {
                    break;
                };
                match stream.read(&mut probe) {
                    Ok(0) => {
                        self.close(t, "");
                        return;
                    }
                    Ok(_) => {
                        log::info!(
                            "reject: {} sent data before the greeting",
                            c.session.client()
                        );
                        c.greeting = None;
                        let bye = "554 5.5.1 Error: SMTP protocol synchronization (client talked before the greeting)\r\n";
                        c.out.extend_from_slice(bye.as_bytes());
                        c.closing = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let Some(stream) = c.stream.as_mut() else {
                break;
            };
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.close(t, "");
                    return;
                }
                Ok(n) => {
                    c.last = Instant::now();
                    let Conn {
                        session, cleanup, ..
                    } = c;
                    let mut ctx = SessionCtx {
                        link: cleanup,
                        table: &mut self.table,
                        delimiter: &self.s.recipient_delimiter,
                        poll: &self.poll,
                        token: t,
                    };
                    let actions = session.input(&buf[..n], &mut ctx);
                    self.apply(t, actions);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(t, "");
                    return;
                }
            }
        }
        self.flush(t);
    }

    fn cleanup_event(&mut self, t: usize) {
        self.flush_cleanup(t);
        let mut replies = Vec::new();
        let mut lost = false;
        if let Some(link) = self.conns.get_mut(&t).and_then(|c| c.cleanup.as_mut()) {
            lost = link.reader.read_from(&mut link.stream);
            loop {
                match link.reader.next_frame::<CleanupReply>() {
                    Ok(Some(Incoming::Msg(r))) => replies.push(r),
                    Ok(Some(Incoming::Trigger)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("cleanup protocol error: {e}");
                        lost = true;
                        break;
                    }
                }
            }
        }
        for r in replies {
            self.with_session(t, |s, ctx| s.cleanup_reply(r, ctx));
        }
        if lost {
            if let Some(c) = self.conns.get_mut(&t) {
                if let Some(mut l) = c.cleanup.take() {
                    let _ = self.poll.registry().deregister(&mut l.stream);
                }
            }
            self.with_session(t, |s, ctx| s.cleanup_lost(ctx));
        }
        // Input that waited for cleanup's answer may be processed now.
        self.client_event(t);
    }

    fn with_session(
        &mut self,
        t: usize,
        f: impl FnOnce(&mut Session, &mut dyn Ctx) -> Vec<Action>,
    ) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let Conn {
            session, cleanup, ..
        } = c;
        let mut ctx = SessionCtx {
            link: cleanup,
            table: &mut self.table,
            delimiter: &self.s.recipient_delimiter,
            poll: &self.poll,
            token: t,
        };
        let actions = f(session, &mut ctx);
        self.apply(t, actions);
        self.flush(t);
    }

    fn flush_cleanup(&mut self, t: usize) {
        let mut lost = false;
        if let Some(link) = self.conns.get_mut(&t).and_then(|c| c.cleanup.as_mut()) {
            lost = petrel_ipc::write_pending(&mut link.stream, &mut link.out).is_err();
        }
        if lost {
            if let Some(c) = self.conns.get_mut(&t) {
                if let Some(mut l) = c.cleanup.take() {
                    let _ = self.poll.registry().deregister(&mut l.stream);
                }
            }
            self.with_session(t, |s, ctx| s.cleanup_lost(ctx));
        }
    }

    fn flush(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.handshaking {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if petrel_ipc::write_pending(stream, &mut c.out).is_err() {
            c.out.clear();
            c.closing = true;
        }
        if c.out.len() > KILL_CLIENT_OUT {
            log::warn!(
                "{} does not read its replies; disconnecting",
                c.session.client()
            );
            self.close(t, "");
            return;
        }
        if c.closing && c.out.is_empty() {
            self.close(t, "");
            return;
        }
        if c.starttls_pending && c.out.is_empty() {
            self.switch_to_tls(t);
        }
    }

    /// STARTTLS: the 220 is out; from here on the socket speaks TLS. The session stopped
    /// reading at the STARTTLS line and discarded what followed it in plaintext.
    fn switch_to_tls(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        c.starttls_pending = false;
        let (Some(cfg), Some(plain)) = (self.tls.as_ref(), c.stream.take()) else {
            self.close(t, "");
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
                log::warn!("STARTTLS with {}: {e}", c.session.client());
                self.close(t, "");
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
                let desc = format!("{} with cipher {}", tls.version(), tls.cipher());
                log::info!(
                    "TLS connection established from {}: {desc}",
                    c.session.client()
                );
                self.with_session(t, |s, ctx| s.tls_started(desc, ctx));
                true
            }
            Err(e) => {
                log::info!("TLS handshake failed with {}: {e}", c.session.client());
                self.close(t, "");
                false
            }
        }
    }

    /// Timeouts, and greetings whose delay is over.
    fn sweep(&mut self) {
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.greeting
                    .as_ref()
                    .is_some_and(|(at, _)| Instant::now() >= *at)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            if let Some(c) = self.conns.get_mut(&t) {
                if let Some((_, g)) = c.greeting.take() {
                    c.out.extend_from_slice(&g);
                    c.last = Instant::now();
                }
            }
            self.flush(t);
            // The client may have written right after the greeting went out.
            self.client_event(t);
        }
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.last.elapsed() > self.s.timeout)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            if self.conns.get(&t).is_some_and(|c| c.handshaking) {
                // No 421 can be said before TLS is up: just go.
                if let Some(c) = self.conns.get(&t) {
                    log::info!("TLS handshake timeout with {}", c.session.client());
                }
                self.close(t, "");
                continue;
            }
            if let Some(c) = self.conns.get_mut(&t) {
                log::info!(
                    "timeout after {:.0}s from {}",
                    c.started.elapsed().as_secs_f64(),
                    c.session.client()
                );
                let actions = c.session.timeout();
                self.apply(t, actions);
                self.flush(t);
            }
        }
    }

    fn close(&mut self, t: usize, _why: &str) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        if let Some(mut s) = c.stream.take() {
            let _ = s.shutdown();
            let _ = self.poll.registry().deregister(s.get_mut());
        }
        if let Some(l) = c.authd.take() {
            l.close(self.poll.registry());
        }
        if let Some(mut l) = c.cleanup.take() {
            // A message left open is abandoned: cleanup removes its file when we go.
            if c.session.message_open() {
                if let Ok(b) = petrel_ipc::encode(&Request::Abort) {
                    let _ = l.stream.write(&b);
                }
            }
            let _ = self.poll.registry().deregister(&mut l.stream);
        }
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        log::info!(
            "disconnect from {} {}",
            c.session.client(),
            c.session.counts.summary()
        );
    }
}

/// Connects to authd for one AUTH exchange.
/// Asks authd whether a user exists, for a user file only authd may read. A short
/// blocking exchange: authd answers lookups at once from memory.
fn authd_lookup(user: &str) -> io::Result<bool> {
    let mut s = petrel_daemon::connect("private/auth", Duration::from_secs(5))?;
    petrel_ipc::write_frame(
        &mut s,
        &auth::Request::Lookup {
            user: user.to_string(),
        },
    )?;
    match petrel_ipc::read_frame::<auth::Reply>(&mut s)? {
        Some(Incoming::Msg(auth::Reply::Ok { .. })) => Ok(true),
        Some(Incoming::Msg(auth::Reply::Fail)) => Ok(false),
        Some(Incoming::Msg(auth::Reply::Temporary { reason })) => Err(io::Error::other(reason)),
        _ => Err(io::Error::other("authd gave no answer to a user lookup")),
    }
}
