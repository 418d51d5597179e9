//! `petrel start | start-fg | stop | reload | status`.
//!
//! Whether master runs is decided by its lock (`pid/master.lock`, held for its whole
//! life), not by the pid file alone; the pid file says which process to signal.

use crate::{Fail, Res};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use petrel_config::{services, Config};
use petrel_queue::spool;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOCK_FILE: &str = "pid/master.lock";
const PID_FILE: &str = "pid/master.pid";
const START_WAIT: Duration = Duration::from_secs(10);
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Whether a master holds the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nobody holds the lock.
    Stopped,
    /// The lock is held; the pid when the pid file names a live process.
    Running(Option<i32>),
}

fn lock_held(queue_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(queue_dir.join(LOCK_FILE)) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

fn read_pid(queue_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(queue_dir.join(PID_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|&p| p > 0)?;
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
}

/// The state of the mail system whose spool is `queue_dir`.
pub fn state(queue_dir: &Path) -> State {
    if lock_held(queue_dir) {
        State::Running(read_pid(queue_dir))
    } else {
        State::Stopped
    }
}

fn queue_dir(cfg: &Config) -> PathBuf {
    PathBuf::from(cfg.get("queue_directory"))
}

/// Loads, validates and prints warnings for petrel.conf and services.conf.
pub fn checked_config(dir: &Path) -> Res<Config> {
    let cfg = crate::load_config(dir)?;
    for w in cfg.warnings() {
        eprintln!("petrel: warning: {w}");
    }
    cfg.validate().map_err(|e| Fail::Fatal(e.to_string()))?;
    let sfile = dir.join(petrel_config::SERVICES_FILE);
    let svcs = services::load(&sfile).map_err(|e| Fail::Fatal(e.to_string()))?;
    // A certificate smtpd cannot load would only show as a crash-looping service.
    if let Some(first) = crate::check::tls_problems(&cfg, &svcs, &sfile)
        .into_iter()
        .chain(crate::check::routing_problems(&cfg))
        .next()
    {
        return Err(Fail::Fatal(first));
    }
    Ok(cfg)
}

/// Spool owners when running as root for a mail_owner other than root.
pub fn spool_ids(cfg: &Config) -> Res<Option<spool::Ids>> {
    if !nix::unistd::geteuid().is_root() || petrel_daemon::running_as_mail_owner(cfg) {
        return Ok(None);
    }
    let (uid, gid) = petrel_daemon::mail_owner(cfg)?;
    let group = cfg.get("setgid_group");
    let drop_gid = match nix::unistd::Group::from_name(&group) {
        Ok(Some(g)) => g.gid,
        _ => return Err(Fail::Fatal(format!("setgid_group {group}: no such group"))),
    };
    Ok(Some(spool::Ids {
        mail_uid: uid.as_raw(),
        mail_gid: gid.as_raw(),
        drop_gid: drop_gid.as_raw(),
    }))
}

fn master_program(cfg: &Config) -> Res<PathBuf> {
    let p = PathBuf::from(cfg.get("daemon_directory")).join("master");
    if !p.is_file() {
        return Err(Fail::Fatal(format!(
            "{}: no such program (daemon_directory)",
            p.display()
        )));
    }
    Ok(p)
}

fn log_hint(cfg: &Config, pid: u32) -> String {
    let file = cfg.get("maillog_file");
    if file.is_empty() {
        return "see the system log (facility mail) for the reason".into();
    }
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let tag = format!("/master[{pid}]:");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&tag)).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        return format!("see {file}");
    }
    format!("last lines of {file}:\n  {}", tail.join("\n  "))
}

/// `petrel start`.
pub fn start(dir: &Path) -> Res {
    let cfg = checked_config(dir)?;
    let q = queue_dir(&cfg);
    if !spool::check(&q, None).is_empty() {
        spool::create(&q, spool_ids(&cfg)?)
            .map_err(|e| format!("queue directory {}: {e}", q.display()))?;
    }
    if let State::Running(pid) = state(&q) {
        let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        return Err(Fail::Msg(format!(
            "the Petrel mail system is already running (pid {pid})"
        )));
    }
    let program = master_program(&cfg)?;
    let mut cmd = Command::new(&program);
    cmd.arg("-c")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and takes no arguments.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot execute {}: {e}", program.display()))?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Fail::Fatal(format!(
                "the master process exited ({status}); {}",
                log_hint(&cfg, child.id())
            )));
        }
        if state(&q) == State::Running(Some(child.id() as i32)) {
            println!("petrel: starting the Petrel mail system");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Fail::Fatal(format!(
                "the master process (pid {}) did not start within {} s; {}",
                child.id(),
                START_WAIT.as_secs(),
                log_hint(&cfg, child.id())
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `petrel start-fg`: become master.
pub fn start_fg(dir: &Path) -> Res {
    let cfg = checked_config(dir)?;
    let q = queue_dir(&cfg);
    if let State::Running(pid) = state(&q) {
        let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        return Err(Fail::Msg(format!(
            "the Petrel mail system is already running (pid {pid})"
        )));
    }
    let program = master_program(&cfg)?;
    let e = Command::new(&program).arg("-c").arg(dir).exec();
    Err(Fail::Fatal(format!(
        "cannot execute {}: {e}",
        program.display()
    )))
}

fn running_pid(dir: &Path) -> Res<(Config, i32)> {
    let cfg = crate::load_config(dir)?;
    match state(&queue_dir(&cfg)) {
        State::Running(Some(pid)) => Ok((cfg, pid)),
        State::Running(None) => Err(Fail::Fatal(format!(
            "the master lock is held but {}/{PID_FILE} names no live process",
            queue_dir(&cfg).display()
        ))),
        State::Stopped => Err(Fail::Msg("the Petrel mail system is not running".into())),
    }
}

/// `petrel stop`.
pub fn stop(dir: &Path) -> Res {
    let (cfg, pid) = running_pid(dir)?;
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("kill {pid}: {e}"))?;
    println!("petrel: stopping the Petrel mail system");
    let q = queue_dir(&cfg);
    let deadline = Instant::now() + STOP_WAIT;
    while state(&q) != State::Stopped {
        if Instant::now() >= deadline {
            return Err(Fail::Fatal(format!(
                "the master process (pid {pid}) did not stop within {} s",
                STOP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `petrel reload`.
pub fn reload(dir: &Path) -> Res {
    let (_, pid) = running_pid(dir)?;
    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| format!("kill {pid}: {e}"))?;
    println!("petrel: refreshing the Petrel mail system");
    Ok(())
}

/// `petrel status`.
pub fn status(dir: &Path) -> Res {
    let cfg = crate::load_config(dir)?;
    match state(&queue_dir(&cfg)) {
        State::Running(pid) => {
            let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            println!("petrel: the Petrel mail system is running: PID: {pid}");
            Ok(())
        }
        State::Stopped => Err(Fail::Msg("the Petrel mail system is not running".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_decides_who_runs() {
        let t = tempfile::tempdir().expect("tempdir");
        let q = t.path();
        assert_eq!(state(q), State::Stopped, "no spool");
        std::fs::create_dir(q.join("pid")).expect("mkdir");
        std::fs::write(q.join(PID_FILE), format!("{}\n", std::process::id())).expect("pid");
        let f = std::fs::File::create(q.join(LOCK_FILE)).expect("lock file");
        assert_eq!(
            state(q),
            State::Stopped,
            "a pid file without the lock is stale"
        );
        let held = Flock::lock(f, FlockArg::LockExclusiveNonblock).expect("lock");
        assert_eq!(state(q), State::Running(Some(std::process::id() as i32)));
        drop(held);
        assert_eq!(state(q), State::Stopped);
    }
}
