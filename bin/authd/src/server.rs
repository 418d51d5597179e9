//! authd's event loop: accepts services on `private/auth`, checks each client's uid,
//! answers `Check` requests. Password checks go to the worker pool; failed attempts are
//! answered when their delay has passed (a timer list looked at every loop turn).

use crate::db::{PasswordDb, Refresh};
use crate::pool::{Done, Job, Pool};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use petrel_auth::throttle::{Locked, Outcome, Settings, Throttle};
use petrel_daemon::Daemon;
use petrel_ipc::auth::{Reply, Request};
use petrel_ipc::{FrameReader, Incoming};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Password checks at once: argon2 at Dovecot's settings takes 64 MiB each.
const WORKERS: usize = 2;
/// Longer passwords and user names are refused without a check (SHA-crypt's cost grows
/// with the password's length).
const MAX_PASSWORD: usize = 1024;
const MAX_USER: usize = 255;
/// Connections at once; more are closed at once.
const MAX_CONNS: usize = 1000;

/// The request being answered on a connection (one at a time).
struct Pending {
    received: Instant,
    service: String,
    client: String,
    user: String,
    account: Option<crate::db::Account>,
    /// A [`Request::Login`]: answer a right password with a ticket.
    ticket: bool,
}

/// What a ticket stands for, until it is redeemed or expires.
struct Issued {
    user: String,
    uid: u32,
    gid: u32,
    home: String,
    expires: Instant,
}

/// How long a ticket may wait for its redemption.
const TICKET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// Tickets outstanding at once; beyond this the oldest are forgotten.
const MAX_TICKETS: usize = 10_000;

struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
    eof: bool,
    /// A request is being checked or its answer is waiting for its delay: later requests
    /// wait in `reader`.
    busy: bool,
    /// The request being checked.
    check: Option<Pending>,
}

struct Server {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    pool: Pool,
    done: Receiver<Done>,
    db: PasswordDb,
    throttle: Throttle,
    allowed_uids: Vec<u32>,
    /// (when, sequence) → (connection, answer): delayed failure answers.
    timers: BTreeMap<(Instant, u64), (usize, Reply)>,
    timer_seq: u64,
    tickets: HashMap<String, Issued>,
}

/// The throttling settings from the configuration.
pub fn settings(cfg: &petrel_config::Config) -> Settings {
    Settings::new(
        cfg.get_time("auth_failure_delay"),
        u32::try_from(cfg.get_int("auth_failure_limit").max(0)).unwrap_or(u32::MAX),
        cfg.get_time("auth_failure_window"),
        cfg.get_time("auth_failure_lockout"),
    )
}

/// Runs the loop until the process is told to stop.
pub fn run(d: Daemon) -> Result<(), String> {
    let fd = d
        .listener
        .ok_or("no listening socket: authd must be started by master")?;
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let mut listener = UnixListener::from_std(std_listener);
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("waker: {e}"))?);
    let (done_tx, done_rx) = channel();

    let me = nix::unistd::geteuid().as_raw();
    let mut allowed_uids = vec![0, me];
    match petrel_daemon::mail_owner(&d.cfg) {
        Ok((uid, _)) => allowed_uids.push(uid.as_raw()),
        Err(e) => log::warn!("auth: {e}; only root and uid {me} may connect"),
    }
    allowed_uids.sort_unstable();
    allowed_uids.dedup();

    let path = d.cfg.get("auth_password_file");
    if !path.starts_with('/') {
        return Err(format!(
            "auth_password_file = {path}: the path must be absolute"
        ));
    }
    let mut s = Server {
        poll,
        listener,
        conns: HashMap::new(),
        next: 2,
        pool: Pool::new(WORKERS, done_tx, waker)?,
        done: done_rx,
        db: PasswordDb::new(std::path::Path::new(&path)),
        throttle: Throttle::new(settings(&d.cfg)),
        allowed_uids,
        timers: BTreeMap::new(),
        timer_seq: 0,
        tickets: HashMap::new(),
    };
    // Read it now, so a problem shows in the log at start-up.
    let _ = s.refresh_db();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = s
            .timers
            .keys()
            .next()
            .map(|(when, _)| when.saturating_duration_since(Instant::now()));
        if let Err(e) = s.poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => s.accept(),
                WAKER => s.completions(),
                Token(t) => s.service(t),
            }
        }
        s.fire_timers();
    }
}

/// A value for a log line: control characters and the separators of the line shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ',') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

impl Server {
    /// Re-reads the password file if it changed; logs what happened when it is news.
    fn refresh_db(&mut self) -> Result<(), String> {
        let (r, changed) = self.db.refresh();
        match r {
            Ok(Refresh::Loaded(n)) => {
                log::info!(
                    "auth: read {} ({n} user{})",
                    self.db.path().display(),
                    if n == 1 { "" } else { "s" }
                );
                Ok(())
            }
            Ok(Refresh::Same) => Ok(()),
            Err(e) => {
                if changed {
                    log::error!("auth: {e}; logins fail temporarily until it is fixed");
                }
                Err(e)
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let uid = petrel_daemon::peer_uid(&stream);
                    if !uid.is_some_and(|u| self.allowed_uids.contains(&u)) {
                        let who = uid.map_or("an unknown uid".to_string(), |u| format!("uid {u}"));
                        log::warn!("auth: refusing a connection from {who} (only mail_owner and root may ask)");
                        continue;
                    }
                    if self.conns.len() >= MAX_CONNS {
                        log::warn!("auth: too many connections ({MAX_CONNS}); closing a new one");
                        continue;
                    }
                    let t = self.next;
                    self.next += 1;
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(t),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        self.conns.insert(
                            t,
                            Conn {
                                stream,
                                reader: FrameReader::new(),
                                out: Vec::new(),
                                eof: false,
                                busy: false,
                                check: None,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("auth: accept: {e}");
                    return;
                }
            }
        }
    }

    fn service(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        if !conn.eof {
            conn.eof = conn.reader.read_from(&mut conn.stream);
        }
        self.process(t);
        self.flush(t);
    }

    /// Handles buffered requests while none is outstanding.
    fn process(&mut self, t: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&t) else {
                return;
            };
            if conn.busy {
                return;
            }
            let frame = match conn.reader.next_frame::<Request>() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("auth: client protocol error: {e}");
                    self.close(t);
                    return;
                }
            };
            match frame {
                Incoming::Msg(Request::Check {
                    service,
                    client,
                    user,
                    password,
                }) => self.check(t, service, client, user, password, false),
                Incoming::Msg(Request::Login {
                    service,
                    client,
                    user,
                    password,
                }) => self.check(t, service, client, user, password, true),
                Incoming::Msg(Request::Redeem { ticket }) => self.redeem(t, &ticket),
                Incoming::Msg(Request::Lookup { user }) => self.lookup(t, &user),
                Incoming::Trigger => {}
            }
        }
    }

    /// A user lookup (smtpd's recipient check): answered at once, never throttled, and
    /// never says anything about the password.
    fn lookup(&mut self, t: usize, user: &str) {
        if let Err(e) = self.refresh_db() {
            self.send(t, &Reply::Temporary { reason: e });
            return;
        }
        let reply = match (user.len() <= MAX_USER)
            .then(|| self.db.lookup(user))
            .flatten()
        {
            Some(a) => Reply::Ok {
                user: a.name,
                uid: a.uid,
                gid: a.gid,
                home: a.home,
            },
            None => Reply::Fail,
        };
        self.send(t, &reply);
    }

    /// A ticket for a session spawner: the account, once.
    fn redeem(&mut self, t: usize, ticket: &str) {
        let now = Instant::now();
        self.tickets.retain(|_, i| i.expires > now);
        let reply = match self.tickets.remove(ticket) {
            Some(i) => Reply::Ok {
                user: i.user,
                uid: i.uid,
                gid: i.gid,
                home: i.home,
            },
            None => {
                log::warn!("auth: an unknown or expired ticket was presented");
                Reply::Fail
            }
        };
        self.send(t, &reply);
    }

    /// A new ticket for `a`.
    fn issue(&mut self, a: &crate::db::Account) -> Option<String> {
        let now = Instant::now();
        self.tickets.retain(|_, i| i.expires > now);
        if self.tickets.len() >= MAX_TICKETS {
            log::warn!("auth: {MAX_TICKETS} session tickets outstanding; refusing another");
            return None;
        }
        let mut raw = [0u8; 16];
        // SAFETY: getrandom writes at most raw.len() bytes into the buffer it is given.
        let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
        if n != raw.len() as isize {
            log::error!("auth: getrandom failed; no ticket");
            return None;
        }
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.tickets.insert(
            ticket.clone(),
            Issued {
                user: a.name.clone(),
                uid: a.uid,
                gid: a.gid,
                home: a.home.clone(),
                expires: now + TICKET_LIFETIME,
            },
        );
        Some(ticket)
    }

    fn check(
        &mut self,
        t: usize,
        service: String,
        client: String,
        user: String,
        password: String,
        ticket: bool,
    ) {
        let now = Instant::now();
        let who = format!(
            "user=<{}>, service={}, client={}",
            clean(&user),
            clean(&service),
            clean(&client)
        );
        if let Err(locked) = self.throttle.begin(now, &client, &user) {
            let reply = match locked {
                Locked::Client(c) => {
                    log::info!(
                        "auth: login refused: {who} (too many failed logins from {})",
                        clean(&c)
                    );
                    Reply::Throttled
                }
                Locked::User(u) => {
                    log::info!(
                        "auth: login refused: {who} (too many failed logins for user <{}>)",
                        clean(&u)
                    );
                    Reply::Throttled
                }
                Locked::Busy(c) => {
                    log::info!(
                        "auth: login not checked: {who} (too many logins running from {})",
                        clean(&c)
                    );
                    Reply::Temporary {
                        reason: "too many logins running from this address".into(),
                    }
                }
            };
            self.send(t, &reply);
            return;
        }
        let pending = Pending {
            received: now,
            service,
            client,
            user,
            account: None,
            ticket,
        };
        if let Err(e) = self.refresh_db() {
            self.throttle
                .end(now, &pending.client, &pending.user, Outcome::Neither);
            log::warn!("auth: login not checked: {who}: password file unavailable");
            self.send(t, &Reply::Temporary { reason: e });
            return;
        }
        let account = if pending.user.len() <= MAX_USER && password.len() <= MAX_PASSWORD {
            self.db.lookup(&pending.user)
        } else {
            None
        };
        let Some(account) = account.filter(|a| !a.password.is_empty()) else {
            // Unknown user (or no password): the same answer, after the same delay.
            self.set_busy(t, pending);
            self.finish(t, Ok(false));
            return;
        };
        let job = Job {
            token: t,
            stored: account.password.clone(),
            password,
        };
        self.set_busy(
            t,
            Pending {
                account: Some(account),
                ..pending
            },
        );
        if let Err(e) = self.pool.submit(job) {
            log::error!("auth: {e}");
            self.finish(t, Err(e));
        }
    }

    fn set_busy(&mut self, t: usize, p: Pending) {
        if let Some(conn) = self.conns.get_mut(&t) {
            conn.busy = true;
            conn.check = Some(p);
        }
    }

    /// Results from the workers.
    fn completions(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            self.finish(done.token, done.result);
        }
    }

    /// A check of connection `t`'s request ended. The accounting and the log line happen
    /// even when the client has gone away (leaving does not skip the count).
    fn finish(&mut self, t: usize, result: Result<bool, String>) {
        let Some(p) = self.conns.get_mut(&t).and_then(|c| c.check.take()) else {
            return;
        };
        let now = Instant::now();
        let who = format!(
            "user=<{}>, service={}, client={}",
            clean(&p.user),
            clean(&p.service),
            clean(&p.client)
        );
        match (result, p.account) {
            (Ok(true), Some(a)) => {
                self.throttle.end(now, &p.client, &p.user, Outcome::Success);
                log::info!(
                    "auth: login ok: user=<{}>, service={}, client={}",
                    clean(&a.name),
                    clean(&p.service),
                    clean(&p.client)
                );
                let reply = if p.ticket {
                    match self.issue(&a) {
                        Some(ticket) => Reply::Ticket {
                            user: a.name,
                            ticket,
                        },
                        None => Reply::Temporary {
                            reason: "no session ticket could be issued".into(),
                        },
                    }
                } else {
                    Reply::Ok {
                        user: a.name,
                        uid: a.uid,
                        gid: a.gid,
                        home: a.home,
                    }
                };
                self.send(t, &reply);
            }
            (Err(e), _) => {
                self.throttle.end(now, &p.client, &p.user, Outcome::Neither);
                log::warn!("auth: login not checked: {who}: {e}");
                self.send(
                    t,
                    &Reply::Temporary {
                        reason: "the password could not be checked".into(),
                    },
                );
            }
            (Ok(_), _) => {
                let started = self.throttle.end(now, &p.client, &p.user, Outcome::Failure);
                log::info!("auth: login failed: {who}");
                let secs = self.throttle.settings().lockout.as_secs();
                for l in started {
                    match l {
                        Locked::Client(c) => log::warn!(
                            "auth: too many failed logins from {}; refusing it for {secs} s",
                            clean(&c)
                        ),
                        Locked::User(u) => log::warn!(
                            "auth: too many failed logins for user <{}>; refusing it for {secs} s",
                            clean(&u)
                        ),
                        Locked::Busy(_) => {}
                    }
                }
                // Still busy until the answer goes out: one request at a time.
                let due = p.received + self.throttle.delay();
                self.timer_seq += 1;
                self.timers.insert((due, self.timer_seq), (t, Reply::Fail));
                return;
            }
        }
        if let Some(conn) = self.conns.get_mut(&t) {
            conn.busy = false;
        }
        self.process(t);
        self.flush(t);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (t, reply) = entry.remove();
            if let Some(conn) = self.conns.get_mut(&t) {
                conn.busy = false;
            }
            self.send(t, &reply);
            self.process(t);
            self.flush(t);
        }
    }

    fn send(&mut self, t: usize, reply: &Reply) {
        if let Some(conn) = self.conns.get_mut(&t) {
            match petrel_ipc::encode(reply) {
                Ok(b) => conn.out.extend_from_slice(&b),
                Err(e) => log::error!("auth: encode reply: {e}"),
            }
        }
    }

    fn flush(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        if petrel_ipc::write_pending(&mut conn.stream, &mut conn.out).is_err() {
            conn.out.clear();
            conn.eof = true;
        }
        if conn.eof && !conn.busy && conn.out.is_empty() {
            self.close(t);
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(mut conn) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn log_values_cannot_forge_fields_or_lines() {
        assert_eq!(clean("demo"), "demo");
        assert_eq!(clean("a>, client=1.2.3.4\nx"), "a?? client=1.2.3.4?x");
        assert_eq!(clean(&"x".repeat(500)).len(), 100);
    }
}
