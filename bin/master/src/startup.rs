//! Start-up, up to the point where processes are started: configuration, log, spool,
//! lock, pid file.

use log::warn;
use nix::fcntl::{Flock, FlockArg};
use petrel_config::{services, Config, Service};
use petrel_queue::spool::{self, Ids};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file, relative to the queue directory.
pub const LOCK_FILE: &str = "pid/master.lock";
/// The pid file, relative to the queue directory.
pub const PID_FILE: &str = "pid/master.pid";

/// Everything start-up produced.
pub struct Started {
    /// The configuration directory, absolute.
    pub config_dir: PathBuf,
    /// petrel.conf.
    pub cfg: Config,
    /// services.conf.
    pub services: Vec<Service>,
    /// Owners for sockets when running as root with a mail_owner to drop to.
    pub owners: Option<Ids>,
    /// The master lock, held for life.
    pub lock: Flock<File>,
}

/// Prints and logs a fatal error, then exits 1.
pub fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("master: fatal: {msg}");
    petrel_log::fatal(msg)
}

/// Loads and validates both configuration files. Used at start-up and on reload.
pub fn load_config(dir: &Path) -> Result<(Config, Vec<Service>), petrel_config::ConfigError> {
    let cfg = Config::load(dir)?;
    cfg.validate()?;
    let services = services::load(&dir.join(petrel_config::SERVICES_FILE))?;
    Ok((cfg, services))
}

/// Looks up the spool owners (mail_owner and setgid_group).
pub fn owner_ids(cfg: &Config) -> Result<Ids, String> {
    let (uid, gid) = petrel_daemon::mail_owner(cfg)?;
    let group = cfg.get("setgid_group");
    let drop_gid = match nix::unistd::Group::from_name(&group) {
        Ok(Some(g)) => g.gid,
        Ok(None) => return Err(format!("setgid_group {group}: no such group")),
        Err(e) => return Err(format!("setgid_group {group}: {e}")),
    };
    Ok(Ids {
        mail_uid: uid.as_raw(),
        mail_gid: gid.as_raw(),
        drop_gid: drop_gid.as_raw(),
    })
}

/// Marks every inherited descriptor above stderr close-on-exec, so only the listener we
/// hand over reaches a service.
fn close_inherited_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a number that may or may not be open only sets a flag or fails.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Runs start-up; any failure is fatal.
pub fn start(dir: &Path) -> Started {
    close_inherited_on_exec();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let config_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let cfg = match Config::load(&config_dir) {
        Ok(c) => c,
        Err(e) => die(e),
    };
    petrel_log::init("master", &cfg, false);
    for w in cfg.warnings() {
        warn!("{w}");
    }
    if let Err(e) = cfg.validate() {
        die(e);
    }
    let services = match services::load(&config_dir.join(petrel_config::SERVICES_FILE)) {
        Ok(s) => s,
        Err(e) => die(e),
    };
    let queue_dir = PathBuf::from(cfg.get("queue_directory"));
    let privileged =
        nix::unistd::geteuid().is_root() && !petrel_daemon::running_as_mail_owner(&cfg);
    let owners = if privileged {
        match owner_ids(&cfg) {
            Ok(ids) => Some(ids),
            Err(e) => die(e),
        }
    } else {
        None
    };
    if let Err(e) = spool::create(&queue_dir, owners) {
        die(format!("queue directory {}: {e}", queue_dir.display()));
    }
    if let Err(e) = std::env::set_current_dir(&queue_dir) {
        die(format!("chdir {}: {e}", queue_dir.display()));
    }
    let lock = take_lock();
    if let Err(e) = write_pid() {
        die(format!("{}/{PID_FILE}: {e}", queue_dir.display()));
    }
    if !privileged {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| nix::unistd::geteuid().to_string());
        let why = if me == "root" {
            "mail_owner is root"
        } else {
            "not root"
        };
        warn!("unprivileged mode: every service runs as user {me} ({why})");
    }
    Started {
        config_dir,
        cfg,
        services,
        owners,
        lock,
    }
}

fn take_lock() -> Flock<File> {
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(LOCK_FILE)
    {
        Ok(f) => f,
        Err(e) => die(format!("open {LOCK_FILE}: {e}")),
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            die("the Petrel mail system is already running")
        }
        Err((_, e)) => die(format!("lock {LOCK_FILE}: {e}")),
    }
}

fn write_pid() -> std::io::Result<()> {
    let tmp = format!("{PID_FILE}.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    std::fs::rename(&tmp, PID_FILE)
}
