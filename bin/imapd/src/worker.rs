//! A session worker: the authenticated IMAP sessions of one uid (a system user, or every
//! virtual user of the virtual-mail uid) in one mio loop, running as that uid with no
//! capabilities. Connections arrive from the spawner with their file descriptor; the
//! sessions of one worker share their open folders (`SharedFolders`), and a connection
//! in IDLE is woken by inotify on its folder's `new/` and `cur/`.

use crate::input::{read_into, Input};
use crate::login::{Settings, MAX_LINE};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use petrel_access::handoff::{self, ConnState, FdStream, Received};
use petrel_access::outbuf::{Outbuf, PAUSE_OUT};
use petrel_imap_proto::{parse_command, CommandReader, ReadEvent};
use petrel_imap_session::session::Session;
use petrel_imap_session::SharedFolders;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

const SPAWNER: Token = Token(0);
const INOTIFY: Token = Token(1);
const FIRST: usize = 2;
/// Connections in IDLE are also re-synchronised this often (inotify is the fast path;
/// this catches what it cannot see, e.g. a full watch table or a network file system),
/// as Dovecot's mailbox_idle_check_interval.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// An IDLE connection hears `* OK Still here` this often (as Dovecot's
/// imap_idle_notify_interval), so NAT boxes and the client know it is alive.
const IDLE_KEEPALIVE: Duration = Duration::from_secs(120);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A FETCH answer is made in pieces of about this size, the next one when the output
/// waiting for the client fell below [`STREAM_LOW`]: making and sending overlap, and a
/// connection never holds a whole 50 MB answer.
const STREAM_CHUNK: usize = 128 * 1024;
/// See [`STREAM_CHUNK`].
const STREAM_LOW: usize = 128 * 1024;

struct Conn {
    stream: FdStream,
    ip: String,
    reader: CommandReader,
    out: Outbuf,
    session: Session,
    idling: bool,
    /// The folder directory this connection's IDLE watches.
    watched: Option<PathBuf>,
    last: Instant,
    last_keepalive: Instant,
    closing: bool,
    bytes_in: u64,
}

impl Conn {
    /// Commands (or the next piece of a FETCH answer) may be taken now.
    fn can_process(&self) -> bool {
        let limit = if self.session.pending() {
            STREAM_LOW - 1
        } else {
            PAUSE_OUT
        };
        !self.closing && self.out.pending() <= limit
    }

    /// Runs a session call, containing a panic (a bug) to this connection. Applies the
    /// outcome: output, IDLE, logout.
    fn run(&mut self, call: impl FnOnce(&mut Session) -> petrel_imap_session::session::Outcome) {
        let session = &mut self.session;
        let run = std::panic::AssertUnwindSafe(|| call(session));
        match std::panic::catch_unwind(run) {
            Ok(o) => {
                if !o.more {
                    self.idling = o.idling;
                    if o.logout {
                        self.closing = true;
                    }
                }
                self.out.send(&o.out);
            }
            Err(_) => {
                log::error!(
                    "internal error in the session of {} from {}; disconnecting it",
                    self.session.user(),
                    self.ip
                );
                self.out.send(b"* BYE [SERVERBUG] Internal error\r\n");
                self.idling = false;
                self.closing = true;
            }
        }
    }
}

/// Who watches a folder: the watch descriptors of its new/ and cur/ and how many IDLE
/// connections use them.
struct Watch {
    wds: Vec<WatchDescriptor>,
    users: usize,
}

/// The worker's loop and its connections.
pub struct Worker {
    poll: Poll,
    spawner: OwnedFd,
    inotify: Option<Inotify>,
    conns: HashMap<usize, Conn>,
    next: usize,
    folders: Rc<SharedFolders>,
    watches: HashMap<PathBuf, Watch>,
    watched_dirs: HashMap<WatchDescriptor, PathBuf>,
    s: Settings,
    buf: Vec<u8>,
    msg_buf: Vec<u8>,
}

impl Worker {
    /// A worker reading connections from `spawner`.
    pub fn new(spawner: OwnedFd, s: Settings) -> io::Result<Worker> {
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&spawner.as_raw_fd()),
            SPAWNER,
            Interest::READABLE,
        )?;
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => {
                poll.registry().register(
                    &mut SourceFd(&i.as_fd().as_raw_fd()),
                    INOTIFY,
                    Interest::READABLE,
                )?;
                Some(i)
            }
            Err(e) => {
                log::warn!("inotify: {e}; IDLE falls back to polling every {IDLE_POLL:?}");
                None
            }
        };
        Ok(Worker {
            poll,
            spawner,
            inotify,
            conns: HashMap::new(),
            next: FIRST,
            folders: SharedFolders::new(),
            watches: HashMap::new(),
            watched_dirs: HashMap::new(),
            s,
            buf: vec![0u8; READ_CHUNK],
            msg_buf: vec![0u8; handoff::MAX_MESSAGE],
        })
    }

    /// Serves until the spawner goes away.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut last_idle = Instant::now();
        loop {
            match self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.folders.tick();
            for ev in events.iter() {
                match ev.token() {
                    SPAWNER => {
                        if !self.spawner_event() {
                            return Ok(());
                        }
                    }
                    INOTIFY => self.inotify_event(),
                    Token(t) => self.client_event(t),
                }
            }
            if last_idle.elapsed() >= IDLE_POLL {
                last_idle = Instant::now();
                self.folders.tick();
                let idle: Vec<usize> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.idling)
                    .map(|(t, _)| *t)
                    .collect();
                self.idle_updates(&idle);
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
    }

    /// New connections from the spawner. False when it has gone.
    fn spawner_event(&mut self) -> bool {
        loop {
            match handoff::recv::<handoff::Session>(&self.spawner, &mut self.msg_buf, true) {
                Ok(Received::Msg(msg, Some(fd))) => self.adopt(msg, fd),
                Ok(Received::Msg(_, None)) => {
                    log::warn!("spawner sent a session without its connection")
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

    /// A logged-in connection: open the user's mailbox and complete the login command.
    fn adopt(&mut self, msg: handoff::Session, fd: OwnedFd) {
        let handoff::Session { user, home, conn } = msg;
        let ConnState {
            tag,
            leftover,
            output,
            ip,
            tls,
            bytes_in,
            bytes_out,
        } = conn;
        let mut stream = match FdStream::new(fd) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("connection of {user}: {e}");
                return;
            }
        };
        let session = match open_session(&self.s.home_mailbox, &user, &home, &self.folders) {
            Ok(mut s) => {
                s.set_streaming(STREAM_CHUNK);
                s
            }
            Err(e) => {
                log::error!("cannot open the mailbox of {user}: {e}");
                use std::io::Write;
                let _ = stream.write(
                    format!(
                        "{tag} NO [SERVERBUG] Cannot open your mailbox; see the server log.\r\n\
                         * BYE Internal error\r\n"
                    )
                    .as_bytes(),
                );
                return;
            }
        };
        let t = self.next;
        self.next += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("register the connection of {user}: {e}");
            return;
        }
        log::info!(
            "Login: user={user}, rip={ip}, tls={}",
            tls.as_deref().unwrap_or("none")
        );
        let now = Instant::now();
        let mut out = Outbuf::new(now);
        out.bytes_out = bytes_out;
        out.send(&output);
        out.send(
            format!(
                "{tag} OK [CAPABILITY {}] Logged in\r\n",
                Session::capabilities()
            )
            .as_bytes(),
        );
        let mut reader = CommandReader::new(MAX_LINE, self.s.max_literal);
        reader.push(&leftover);
        self.conns.insert(
            t,
            Conn {
                stream,
                ip,
                reader,
                out,
                session,
                idling: false,
                watched: None,
                last: now,
                last_keepalive: now,
                closing: false,
                bytes_in,
            },
        );
        self.client_event(t);
    }

    /// Reads, processes and answers until the client has nothing more or must wait.
    fn client_event(&mut self, t: usize) {
        loop {
            let need_input = self.process(t);
            self.flush(t);
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if !need_input {
                if c.can_process() {
                    continue;
                }
                return;
            }
            match read_into(&mut c.stream, &mut self.buf, &mut c.reader) {
                Input::Got(n) => {
                    c.bytes_in += n as u64;
                    c.last = Instant::now();
                }
                Input::Wait => return,
                Input::End => {
                    self.close(t);
                    return;
                }
            }
        }
    }

    /// Handles the commands the reader has. True when it needs more input.
    fn process(&mut self, t: usize) -> bool {
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return false;
            };
            if !c.can_process() {
                return false;
            }
            if c.session.pending() {
                // The rest of a FETCH answer, a piece at a time as the client takes it.
                c.run(Session::resume);
                continue;
            }
            let Some(ev) = c.reader.next() else {
                return true;
            };
            match ev {
                ReadEvent::NeedContinuation => c.out.send(b"+ Ready for literal data\r\n"),
                ReadEvent::Bad { tag, text, fatal } => {
                    if fatal {
                        c.out.send(format!("* BYE {text}\r\n").as_bytes());
                        c.closing = true;
                    } else {
                        let tag = tag.unwrap_or_else(|| "*".into());
                        c.out.send(format!("{tag} BAD {text}\r\n").as_bytes());
                    }
                }
                ReadEvent::Command(bytes) => {
                    let was_idling = c.idling;
                    match parse_command(&bytes) {
                        // A bug in one session must not end the others this worker
                        // serves: it ends only its own connection.
                        Ok(cmd) => c.run(|s| s.handle(cmd)),
                        Err(e) => {
                            let tag = e.tag.clone().unwrap_or_else(|| "*".into());
                            let word = if e.is_badcharset() { "NO" } else { "BAD" };
                            c.out
                                .send(format!("{tag} {word} {}\r\n", e.text).as_bytes());
                        }
                    }
                    if c.idling && !was_idling {
                        c.last_keepalive = Instant::now();
                        self.watch(t);
                    } else if !c.idling && was_idling {
                        self.unwatch(t);
                    }
                }
            }
        }
    }

    fn flush(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.out.write_to(&mut c.stream).is_err() {
            self.close(t);
            return;
        }
        if c.closing && c.out.pending() == 0 {
            self.close(t);
        }
    }

    /// Starts watching the folder of connection `t`, which has just entered IDLE.
    fn watch(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let Some(dir) = c.session.selected_dir().map(|d| d.to_path_buf()) else {
            return;
        };
        c.watched = Some(dir.clone());
        if let Some(w) = self.watches.get_mut(&dir) {
            w.users += 1;
            return;
        }
        let Some(ino) = &self.inotify else {
            return;
        };
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CLOSE_WRITE;
        let mut wds = Vec::new();
        for sub in ["new", "cur"] {
            match ino.add_watch(&dir.join(sub), mask) {
                Ok(wd) => {
                    self.watched_dirs.insert(wd, dir.clone());
                    wds.push(wd);
                }
                Err(e) => log::warn!("inotify watch on {}/{sub}: {e}", dir.display()),
            }
        }
        self.watches.insert(dir, Watch { wds, users: 1 });
    }

    /// Connection `t` left IDLE (or closed): its folder may lose its watch.
    fn unwatch(&mut self, t: usize) {
        let Some(dir) = self.conns.get_mut(&t).and_then(|c| c.watched.take()) else {
            return;
        };
        let Some(w) = self.watches.get_mut(&dir) else {
            return;
        };
        w.users -= 1;
        if w.users > 0 {
            return;
        }
        if let Some(w) = self.watches.remove(&dir) {
            for wd in w.wds {
                self.watched_dirs.remove(&wd);
                if let Some(ino) = &self.inotify {
                    let _ = ino.rm_watch(wd);
                }
            }
        }
    }

    /// Something changed in a watched new/ or cur/: tell the IDLE connections of that
    /// folder.
    fn inotify_event(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let Some(ino) = &self.inotify else {
            return;
        };
        loop {
            match ino.read_events() {
                Ok(evs) if !evs.is_empty() => {
                    for ev in evs {
                        if let Some(d) = self.watched_dirs.get(&ev.wd) {
                            if !dirs.contains(d) {
                                dirs.push(d.clone());
                            }
                        }
                    }
                }
                Ok(_) => break,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("inotify: {e}");
                    break;
                }
            }
        }
        if dirs.is_empty() {
            return;
        }
        // Whatever was synced earlier in this loop turn may predate the change.
        self.folders.tick();
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.idling && c.watched.as_ref().is_some_and(|w| dirs.contains(w)))
            .map(|(t, _)| *t)
            .collect();
        self.idle_updates(&idle);
    }

    /// IDLE: what changed in the mailboxes of these connections.
    fn idle_updates(&mut self, idle: &[usize]) {
        for &t in idle {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if !c.idling || c.closing || c.out.pending() > PAUSE_OUT {
                continue;
            }
            match c.session.updates() {
                Ok(b) if !b.is_empty() => {
                    c.out.send(&b);
                    self.flush(t);
                }
                Ok(_) => {}
                Err(e) => log::warn!("IDLE update for {}: {e}", c.session.user()),
            }
        }
    }

    /// Timeouts, keepalives, and clients that do not read their output.
    fn sweep(&mut self) {
        let mut stalled = Vec::new();
        let mut idle = Vec::new();
        let mut keepalive = Vec::new();
        for (&t, c) in &self.conns {
            if c.out.stalled() {
                stalled.push(t);
            } else if c.idling {
                if c.last_keepalive.elapsed() >= IDLE_KEEPALIVE {
                    keepalive.push(t);
                }
            } else if !c.closing && c.last.elapsed() > self.s.timeout {
                idle.push(t);
            }
        }
        for t in stalled {
            if let Some(c) = self.conns.get(&t) {
                log::warn!(
                    "{} ({}) does not read its replies ({} bytes waiting); disconnecting",
                    c.ip,
                    c.session.user(),
                    c.out.pending()
                );
            }
            self.close(t);
        }
        for t in keepalive {
            if let Some(c) = self.conns.get_mut(&t) {
                c.last_keepalive = Instant::now();
                c.out.send(b"* OK Still here\r\n");
                self.flush(t);
            }
        }
        for t in idle {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            c.out.send(b"* BYE Autologout; idle for too long\r\n");
            c.closing = true;
            self.flush(t);
        }
    }

    fn close(&mut self, t: usize) {
        self.unwatch(t);
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ =
            nix::sys::socket::shutdown(c.stream.0.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let n = c.session.counts();
        log::info!(
            "Logout: user={}, rip={}, in={}, out={}, fetched={}, expunged={}, appended={}",
            c.session.user(),
            c.ip,
            c.bytes_in,
            c.out.bytes_out,
            n.fetched,
            n.expunged,
            n.appended
        );
    }
}

/// The user's store and session.
fn open_session(
    home_mailbox: &str,
    user: &str,
    home: &str,
    folders: &Rc<SharedFolders>,
) -> Result<Session, String> {
    let path = petrel_access::maildir_path(home, home_mailbox)?;
    let store =
        petrel_mailstore::Store::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Session::with_folders(store, user, Rc::clone(folders))
        .map_err(|e| format!("{}: {e}", path.display()))
}
