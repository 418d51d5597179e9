//! The supervision loop: start processes, reap them, restart them with back-off, poke
//! services that asked for wake-ups, reload on SIGHUP and stop on SIGTERM/SIGINT.
//!
//! Master is single-threaded. Signals are blocked and read from a signalfd, so the loop
//! only ever waits in one `poll`, with a timeout that is the next thing due (a delayed
//! start, a wake-up, the end of a stop).

use crate::backoff::Backoff;
use crate::listen::{self, Endpoint, Listener};
use crate::startup::{self, Started, PID_FILE};
use log::{error, info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use petrel_config::{Config, Service, ServiceType};
use petrel_queue::spool::Ids;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long a stop waits for services before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After a reload, how long a new process waits for the old ones of its service to go.
const RELOAD_GRACE: Duration = Duration::from_secs(5);

/// One endpoint of one service and the processes serving it.
#[derive(Debug)]
struct Slot {
    svc: Service,
    endpoint: Endpoint,
    running: u32,
    not_before: Instant,
    backoff: Backoff,
    next_wakeup: Option<Instant>,
    /// After a reload: do not start before the old processes of this service are gone, or
    /// this instant has passed.
    wait_old_until: Option<Instant>,
}

#[derive(Debug)]
struct Child {
    /// Index into `slots`; `None` once retired by a reload or a stop.
    slot: Option<usize>,
    service: String,
    program: PathBuf,
    started: Instant,
}

/// The running master.
pub struct Master {
    config_dir: PathBuf,
    cfg: Config,
    owners: Option<Ids>,
    listeners: BTreeMap<Endpoint, Listener>,
    slots: Vec<Slot>,
    children: HashMap<Pid, Child>,
    sigfd: SignalFd,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The argument vector master gives a service (after the program path).
pub fn service_args(svc: &Service, config_dir: &Path) -> Vec<String> {
    let mut v = vec![
        "-c".to_string(),
        config_dir.to_string_lossy().into_owned(),
        "-n".to_string(),
        svc.name.clone(),
        "-t".to_string(),
        match svc.kind {
            ServiceType::Unix => "unix",
            ServiceType::Inet { .. } => "inet",
        }
        .to_string(),
    ];
    if svc.unpriv {
        v.push("-u".into());
    }
    if svc.chroot {
        v.push("-r".into());
    }
    v.extend(svc.args.iter().cloned());
    v
}

/// Blocks the signals master handles, so they queue for the signalfd. Called first thing,
/// so a SIGTERM during start-up is not lost or fatal.
pub fn block_signals() {
    if let Err(e) = signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None) {
        eprintln!("master: fatal: sigprocmask: {e}");
        std::process::exit(1);
    }
}

fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
    ] {
        s.add(sig);
    }
    s
}

fn describe(status: &WaitStatus) -> Option<(bool, String)> {
    match status {
        WaitStatus::Exited(_, 0) => Some((true, "exit status 0".into())),
        WaitStatus::Exited(_, c) => Some((false, format!("exit status {c}"))),
        WaitStatus::Signaled(_, s, _) => Some((false, format!("killed by signal {}", *s as i32))),
        _ => None,
    }
}

impl Master {
    /// Takes over from start-up: blocks signals, opens listeners and starts every service.
    pub fn new(st: Started) -> Master {
        let mask = handled_signals();
        let sigfd =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(f) => f,
                Err(e) => startup::die(format!("signalfd: {e}")),
            };
        let mut m = Master {
            config_dir: st.config_dir,
            cfg: st.cfg,
            owners: st.owners,
            listeners: BTreeMap::new(),
            slots: Vec::new(),
            children: HashMap::new(),
            sigfd,
            _lock: st.lock,
        };
        let now = Instant::now();
        for svc in &st.services {
            let eps = match listen::endpoints(svc, &m.cfg) {
                Ok(e) => e,
                Err(e) => startup::die(e),
            };
            for ep in eps {
                if !m.listeners.contains_key(&ep) {
                    match listen::open(&ep, m.owners) {
                        Ok(l) => {
                            m.listeners.insert(ep.clone(), l);
                        }
                        Err(e) => startup::die(format!("service {}: {e}", svc.name)),
                    }
                }
                m.slots.push(new_slot(svc, ep, now, None));
            }
        }
        m.start_due(now);
        info!(
            "daemon started -- version {VERSION}, configuration {}",
            m.config_dir.display()
        );
        m
    }

    /// The supervision loop. Never returns: a stop exits the process.
    pub fn run(mut self) -> ! {
        loop {
            let now = Instant::now();
            self.start_due(now);
            self.wake_up(now);
            let timeout = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()));
            self.wait_signals(timeout);
            while let Ok(Some(si)) = self.sigfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGHUP) => self.reload(),
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.stop(sig),
                    _ => {}
                }
            }
            self.reap();
        }
    }

    fn wait_signals(&self, timeout: Option<Duration>) {
        let t = match timeout {
            // Round up so a timer due in 0.4 ms does not become a busy loop of 0 ms polls.
            Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u64)
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, t);
    }

    fn next_due(&self) -> Option<Instant> {
        let mut due: Option<Instant> = None;
        let mut consider = |t: Instant| {
            due = Some(due.map_or(t, |d| d.min(t)));
        };
        for s in &self.slots {
            if s.running < s.svc.maxproc {
                consider(s.not_before);
                if let Some(w) = s.wait_old_until {
                    consider(w);
                }
            }
            if let Some(w) = s.next_wakeup {
                consider(w);
            }
        }
        due
    }

    fn old_running(&self, service: &str) -> bool {
        self.children
            .values()
            .any(|c| c.slot.is_none() && c.service == service)
    }

    /// Starts every process that is due.
    fn start_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if let Some(until) = self.slots[i].wait_old_until {
                if now < until && self.old_running(&self.slots[i].svc.name) {
                    continue;
                }
                self.slots[i].wait_old_until = None;
            }
            while self.slots[i].running < self.slots[i].svc.maxproc
                && self.slots[i].not_before <= now
            {
                if !self.spawn(i) {
                    break;
                }
            }
        }
    }

    /// Starts one process of slot `i`; false when it could not be started.
    fn spawn(&mut self, i: usize) -> bool {
        let slot = &self.slots[i];
        let program = PathBuf::from(self.cfg.get("daemon_directory")).join(&slot.svc.command);
        let Some(listener) = self.listeners.get(&slot.endpoint) else {
            self.slots[i].not_before = Instant::now() + Duration::from_secs(60);
            return false;
        };
        let fd = listener.fd().as_raw_fd();
        let mut cmd = Command::new(&program);
        cmd.args(service_args(&slot.svc, &self.config_dir))
            .env(
                petrel_daemon::LISTEN_ENV,
                petrel_daemon::LISTEN_FD.to_string(),
            )
            .env(
                petrel_daemon::MASTER_PID_ENV,
                std::process::id().to_string(),
            )
            .stdin(Stdio::null());
        let target = petrel_daemon::LISTEN_FD;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (dup2, fcntl, sigprocmask) on plain integers.
        unsafe {
            cmd.pre_exec(move || {
                if fd == target {
                    if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let now = Instant::now();
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                let service = self.slots[i].svc.name.clone();
                self.children.insert(
                    pid,
                    Child {
                        slot: Some(i),
                        service,
                        program,
                        started: now,
                    },
                );
                self.slots[i].running += 1;
                true
            }
            Err(e) => {
                warn!("process {}: cannot execute: {e}", program.display());
                self.failed(i, false, Duration::ZERO, now);
                false
            }
        }
    }

    /// Records the end of a process of slot `i` and schedules its restart.
    fn failed(&mut self, i: usize, clean: bool, ran: Duration, now: Instant) {
        let cap = self.cfg.get_time("service_throttle_time");
        let slot = &mut self.slots[i];
        let d = slot.backoff.record(clean, ran, cap);
        if let Some(w) = d.warn {
            warn!(
                "service {} ({}) is crashing; throttling restarts for {} s",
                slot.svc.name,
                slot.svc.command,
                w.as_secs()
            );
        }
        slot.not_before = slot.not_before.max(now + d.delay);
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            let Some((clean, what)) = describe(&status) else {
                continue;
            };
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            let now = Instant::now();
            let retired_by_us = child.slot.is_none()
                && matches!(
                    status,
                    WaitStatus::Signaled(_, Signal::SIGTERM | Signal::SIGKILL, _)
                );
            if !clean && !retired_by_us {
                warn!("process {} pid {pid} {what}", child.program.display());
            }
            if let Some(i) = child.slot {
                if let Some(slot) = self.slots.get_mut(i) {
                    slot.running = slot.running.saturating_sub(1);
                }
                let ran = now.saturating_duration_since(child.started);
                self.failed(i, clean, ran, now);
            }
        }
    }

    /// Pokes every service whose wake-up time has come.
    fn wake_up(&mut self, now: Instant) {
        for s in &mut self.slots {
            let Some(due) = s.next_wakeup else { continue };
            if due > now {
                continue;
            }
            s.next_wakeup = Some(now + Duration::from_secs(u64::from(s.svc.wakeup)));
            if let Endpoint::Unix { path, .. } = &s.endpoint {
                trigger(path);
            }
        }
    }

    /// SIGHUP: re-read the configuration and replace every process.
    fn reload(&mut self) {
        let (cfg, services) = match startup::load_config(&self.config_dir) {
            Ok(x) => x,
            Err(e) => {
                error!("reload: {e}");
                return;
            }
        };
        let mut wanted: Vec<(Service, Endpoint)> = Vec::new();
        for svc in &services {
            match listen::endpoints(svc, &cfg) {
                Ok(eps) => wanted.extend(eps.into_iter().map(|e| (svc.clone(), e))),
                Err(e) => {
                    error!("reload: {e}");
                    return;
                }
            }
        }
        info!(
            "reload -- version {VERSION}, configuration {}",
            self.config_dir.display()
        );
        for w in cfg.warnings() {
            warn!("{w}");
        }
        let old: BTreeSet<Endpoint> = self.listeners.keys().cloned().collect();
        let new: BTreeSet<Endpoint> = wanted.iter().map(|(_, e)| e.clone()).collect();
        let d = listen::diff(&old, &new);
        for ep in &d.close {
            self.listeners.remove(ep);
            if let Endpoint::Unix { path, .. } = ep {
                let _ = std::fs::remove_file(path);
            }
        }
        for ep in &d.open {
            match listen::open(ep, self.owners) {
                Ok(l) => {
                    self.listeners.insert(ep.clone(), l);
                }
                Err(e) => error!("reload: {e}"),
            }
        }
        for (pid, child) in self.children.iter_mut() {
            child.slot = None;
            let _ = signal::kill(*pid, Signal::SIGTERM);
        }
        let now = Instant::now();
        self.cfg = cfg;
        self.slots = wanted
            .into_iter()
            .filter(|(_, ep)| self.listeners.contains_key(ep))
            .map(|(svc, ep)| new_slot(&svc, ep, now, Some(now + RELOAD_GRACE)))
            .collect();
    }

    /// SIGTERM/SIGINT: stop every process and exit.
    fn stop(&mut self, sig: Signal) -> ! {
        info!("terminating on signal {}", sig as i32);
        for (pid, child) in self.children.iter_mut() {
            child.slot = None;
            let _ = signal::kill(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            self.reap();
            if self.children.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.wait_signals(Some(deadline - now));
            while let Ok(Some(_)) = self.sigfd.read_signal() {}
        }
        for (pid, child) in &self.children {
            warn!(
                "process {} pid {pid} did not stop; killing it",
                child.program.display()
            );
            let _ = signal::kill(*pid, Signal::SIGKILL);
        }
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        for pid in pids {
            let _ = waitpid(pid, None);
        }
        let _ = std::fs::remove_file(PID_FILE);
        std::process::exit(0)
    }
}

fn new_slot(
    svc: &Service,
    endpoint: Endpoint,
    now: Instant,
    wait_old_until: Option<Instant>,
) -> Slot {
    let wakeup = matches!(endpoint, Endpoint::Unix { .. }) && svc.wakeup > 0;
    Slot {
        svc: svc.clone(),
        endpoint,
        running: 0,
        not_before: now,
        backoff: Backoff::default(),
        next_wakeup: wakeup.then(|| now + Duration::from_secs(u64::from(svc.wakeup))),
        wait_old_until,
    }
}

/// Pokes a unix service without blocking (see [`petrel_daemon::trigger`]).
fn trigger(path: &str) {
    petrel_daemon::trigger(std::path::Path::new(path));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_get_the_daemon_argument_contract() {
        let svcs = petrel_config::services::parse(
            "local unix - n y - 4 local -o home_mailbox=Maildir/ -v\n127.0.0.1:25 inet n - n - 1 smtpd\n",
            Path::new("services.conf"),
        )
        .expect("parses");
        assert_eq!(
            service_args(&svcs[0], Path::new("/etc/petrel")).join(" "),
            "-c /etc/petrel -n local -t unix -r -o home_mailbox=Maildir/ -v"
        );
        assert_eq!(
            service_args(&svcs[1], Path::new("/x")).join(" "),
            "-c /x -n 127.0.0.1:25 -t inet -u"
        );
    }

    #[test]
    fn exit_statuses_are_described_like_postfix() {
        let pid = Pid::from_raw(7);
        assert_eq!(
            describe(&WaitStatus::Exited(pid, 0)),
            Some((true, "exit status 0".into()))
        );
        assert_eq!(
            describe(&WaitStatus::Exited(pid, 1)),
            Some((false, "exit status 1".into()))
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((false, "killed by signal 9".into()))
        );
    }
}
