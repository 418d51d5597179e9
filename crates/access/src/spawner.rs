//! The spawner: the process master started, left with root and only CAP_SETUID and
//! CAP_SETGID (when started as root), and no network input at all. It reads hand-over
//! requests from the login process, redeems each request's ticket with authd (so a
//! compromised login process cannot name the user), and passes the connection to a
//! session process running as that user's uid with no capabilities: the worker of the uid
//! (forked when there is none yet), or a process of its own, as [`Workers`] says.

use crate::handoff::{self, Answer, Login, Received, Session};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use petrel_ipc::auth;
use petrel_ipc::Incoming;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long authd may take to redeem a ticket.
const AUTHD_TIMEOUT: Duration = Duration::from_secs(10);

struct WorkerProc {
    pid: Pid,
    sock: OwnedFd,
}

/// How logged-in connections become sessions. The functions run in the forked process,
/// after it became the user; an `Err` is logged and ends the process with status 1.
pub enum Workers {
    /// One worker process per uid serves all that uid's connections: `serve` reads
    /// [`Session`] messages (each with its connection's descriptor) from the socket it is
    /// given until it closes (imapd).
    PerUid {
        /// The process name (`imapd-worker`).
        name: &'static str,
        /// The worker's body.
        serve: Box<dyn Fn(OwnedFd) -> io::Result<()>>,
    },
    /// Every connection gets a process of its own (pop3d).
    PerConnection {
        /// The process name (`pop3d-session`).
        name: &'static str,
        /// The session's body.
        serve: Box<dyn Fn(Session, OwnedFd) -> io::Result<()>>,
    },
}

impl Workers {
    /// The program's name, from its session processes' names (`imapd-worker` → imapd).
    fn program(&self) -> &'static str {
        let (Workers::PerUid { name, .. } | Workers::PerConnection { name, .. }) = self;
        name.split('-').next().unwrap_or(name)
    }
}

/// The spawner's state.
pub struct Spawner {
    login: OwnedFd,
    authd: Option<UnixStream>,
    workers: HashMap<u32, WorkerProc>,
    /// Started as root: workers become their users.
    switch: bool,
    how: Workers,
    /// authd went away and cannot be reached again with the capabilities left: end, so
    /// master starts imapd afresh (as root, able to connect).
    lost_authd: bool,
}

impl Spawner {
    /// `login`: the socket to the login process; `authd`: a connection to authd opened
    /// while the process could still reach it; `switch`: change uids for workers.
    pub fn new(login: OwnedFd, authd: Option<UnixStream>, switch: bool, how: Workers) -> Spawner {
        Spawner {
            login,
            authd,
            workers: HashMap::new(),
            switch,
            how,
            lost_authd: false,
        }
    }

    /// Serves the login process until it goes away.
    pub fn run(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; handoff::MAX_MESSAGE];
        loop {
            self.reap();
            // Wake up at least every second, so that ended sessions are reaped. authd
            // never speaks unasked: its line becoming readable means it went away.
            let (login_ready, authd_gone) = {
                use nix::poll::{PollFd, PollFlags, PollTimeout};
                let mut fds = vec![PollFd::new(self.login.as_fd(), PollFlags::POLLIN)];
                if let Some(a) = &self.authd {
                    fds.push(PollFd::new(a.as_fd(), PollFlags::POLLIN));
                }
                match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            };
            if authd_gone {
                self.authd = None;
                if self.switch {
                    // As root without CAP_DAC_OVERRIDE the spool's private/ is out of
                    // reach: end now, before a login needs authd, so master starts a
                    // fresh spawner that can connect.
                    return Err(io::Error::other(format!(
                        "authd closed its connection; exiting so that master restarts {}",
                        self.how.program()
                    )));
                }
            }
            if !login_ready {
                continue;
            }
            match handoff::recv::<Login>(&self.login, &mut buf, true) {
                Ok(Received::Msg(req, fd)) => {
                    let id = req.id;
                    let error = match fd {
                        Some(fd) => self.hand_over(req, fd).err(),
                        None => Some("no connection came with the request".to_string()),
                    };
                    if let Some(e) = &error {
                        log::warn!("session hand-over failed: {e}");
                    }
                    handoff::send(&self.login, &Answer { id, error }, None, false)?;
                    if self.lost_authd {
                        return Err(io::Error::other(format!(
                            "lost the connection to authd, which only a new {0} can reopen; \
                             exiting so that master restarts {0}",
                            self.how.program()
                        )));
                    }
                }
                Ok(Received::Nothing) => {}
                Ok(Received::Closed) => return Ok(()),
                // A request that is not one: the descriptor it carried is closed; the
                // login process hears nothing (it is broken or hostile).
                Err(e) => log::warn!("from the login process: {e}"),
            }
        }
    }

    /// Forgets workers that have exited.
    fn reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let pid = match st {
                WaitStatus::Exited(pid, code) => {
                    if code != 0 {
                        log::warn!("session process {pid} exited with status {code}");
                    }
                    pid
                }
                WaitStatus::Signaled(pid, sig, _) => {
                    log::warn!("session process {pid} killed by signal {sig}");
                    pid
                }
                _ => break,
            };
            self.workers.retain(|_, w| w.pid != pid);
        }
    }

    /// Redeems the ticket and passes the connection to the user's worker.
    fn hand_over(&mut self, req: Login, fd: OwnedFd) -> Result<(), String> {
        let (user, uid, gid, home) = self.redeem(&req.ticket)?;
        if self.switch && uid == 0 {
            return Err(format!(
                "user {user} has uid 0: mail sessions never run as root"
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if !self.switch && uid != me {
            return Err(format!(
                "user {user} has uid {uid}, and this server (running as uid {me}) cannot \
                 become it: start it as root (unpriv n in services.conf)"
            ));
        }
        let msg = Session {
            user,
            home,
            conn: req.conn,
        };
        if let Workers::PerConnection { .. } = self.how {
            return self.session_process(uid, gid, msg, fd);
        }
        let bytes = postcard::to_stdvec(&msg).map_err(|e| e.to_string())?;
        for attempt in 0..2 {
            let sock = self.worker(uid, gid)?;
            match handoff::send_bytes(&sock, &bytes, Some(fd.as_raw_fd()), false) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 => {
                    log::warn!("session worker for uid {uid}: {e}; starting another");
                    if let Some(w) = self.workers.remove(&uid) {
                        let _ = nix::sys::signal::kill(w.pid, nix::sys::signal::Signal::SIGTERM);
                    }
                }
                Err(e) => return Err(format!("session worker for uid {uid}: {e}")),
            }
        }
        Err("no session worker".into())
    }

    /// Asks authd for the account a ticket stands for.
    fn redeem(&mut self, ticket: &str) -> Result<(String, u32, u32, String), String> {
        let req = auth::Request::Redeem {
            ticket: ticket.to_string(),
        };
        for attempt in 0..2 {
            if self.authd.is_none() {
                match connect_authd() {
                    Ok(s) => self.authd = Some(s),
                    Err(e) => {
                        // As root without CAP_DAC_OVERRIDE the spool's private/ is out of
                        // reach: only a restart gets authd back.
                        self.lost_authd = self.switch;
                        return Err(format!("authd: {e}"));
                    }
                }
            }
            let Some(s) = self.authd.as_mut() else {
                continue;
            };
            let answer = petrel_ipc::write_frame(s, &req)
                .and_then(|()| petrel_ipc::read_frame::<auth::Reply>(s));
            match answer {
                Ok(Some(Incoming::Msg(auth::Reply::Ok {
                    user,
                    uid,
                    gid,
                    home,
                }))) => return Ok((user, uid, gid, home)),
                Ok(Some(Incoming::Msg(_))) => {
                    return Err("authd does not know the ticket".into());
                }
                Ok(_) | Err(_) if attempt == 0 => {
                    self.authd = None;
                }
                Ok(_) => return Err("authd closed the connection".into()),
                Err(e) => return Err(format!("authd: {e}")),
            }
        }
        Err("authd unavailable".into())
    }

    /// Forks a process for one session, as the user.
    fn session_process(
        &mut self,
        uid: u32,
        gid: u32,
        msg: Session,
        fd: OwnedFd,
    ) -> Result<(), String> {
        let parent = nix::unistd::getpid();
        // SAFETY: the spawner is single-threaded, so the child may run arbitrary code.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                self.close_inherited();
                let Workers::PerConnection { name, serve } = &self.how else {
                    std::process::exit(1);
                };
                become_session(parent, name, uid, gid, self.switch);
                finish(uid, serve(msg, fd))
            }
            Ok(ForkResult::Parent { .. }) => Ok(()),
            Err(e) => Err(format!("fork: {e}")),
        }
    }

    /// In a forked child: closes what only the spawner may hold.
    fn close_inherited(&self) {
        let mut close = vec![self.login.as_raw_fd()];
        close.extend(self.authd.as_ref().map(|s| s.as_raw_fd()));
        close.extend(self.workers.values().map(|w| w.sock.as_raw_fd()));
        for fd in close {
            let _ = nix::unistd::close(fd);
        }
    }

    /// The socket of the worker for `uid`, started if need be.
    fn worker(&mut self, uid: u32, gid: u32) -> Result<RawFd, String> {
        if let Some(w) = self.workers.get(&uid) {
            return Ok(w.sock.as_raw_fd());
        }
        let (mine, theirs) = handoff::pair().map_err(|e| format!("socketpair: {e}"))?;
        let parent = nix::unistd::getpid();
        // SAFETY: this process is single-threaded (no thread is ever started in the
        // spawner), so the child may run arbitrary code after fork.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(mine);
                // Nothing of the spawner's stays open in the worker.
                self.close_inherited();
                let Workers::PerUid { name, serve } = &self.how else {
                    std::process::exit(1);
                };
                become_session(parent, name, uid, gid, self.switch);
                finish(uid, serve(theirs))
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                log::info!("started session worker {child} for uid {uid}");
                let fd = mine.as_raw_fd();
                self.workers.insert(
                    uid,
                    WorkerProc {
                        pid: child,
                        sock: mine,
                    },
                );
                Ok(fd)
            }
            Err(e) => Err(format!("fork: {e}")),
        }
    }
}

/// In a forked session process: dies with the spawner, takes its name, becomes the user.
fn become_session(parent: Pid, name: &str, uid: u32, gid: u32, switch: bool) {
    petrel_daemon::die_with(parent);
    crate::set_name(name);
    if switch {
        if let Err(e) = petrel_daemon::become_user(Uid::from_raw(uid), Gid::from_raw(gid)) {
            log::error!("session process for uid {uid}: {e}");
            std::process::exit(1);
        }
    }
}

/// Ends a session process with its result.
fn finish(uid: u32, result: io::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log::error!("session process for uid {uid}: {e}");
            std::process::exit(1)
        }
    }
}

/// Connects to authd (before the spawner gives up the right to).
pub fn connect_authd() -> io::Result<UnixStream> {
    petrel_daemon::connect("private/auth", AUTHD_TIMEOUT)
}
