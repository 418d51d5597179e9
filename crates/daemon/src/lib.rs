//! The one start-up path every Petrel daemon shares, in the same order every time:
//!
//! 1. parse the arguments master passes: `-c CONFIG_DIR -n SERVICE -t unix|inet [-u] [-r]
//!    [-o name=value]... [--] [program arguments]` (`-u`: run as mail_owner, `-r`: chroot);
//! 2. load `petrel.conf`, apply `-o` overrides, validate (a bad value is fatal);
//! 3. open the log (before any chroot);
//! 4. take the listening socket master passed as file descriptor 3;
//! 5. `chdir` to `queue_directory` — every daemon uses spool paths relative to it;
//! 6. when started as root: chroot to the queue directory if asked, then either become
//!    mail_owner (or the user another parameter names, see [`start_as`]) with no
//!    capabilities and `no_new_privs` (`-u`), or stay root with only the capabilities the
//!    program declares (local delivery);
//! 7. ask the kernel to send SIGTERM when master goes away.
//!
//! Started by someone other than root, nothing changes identity ("unprivileged mode").
#![deny(missing_docs)]

pub mod authd;

use petrel_config::Config;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// File descriptor on which master passes a service's listening socket.
pub const LISTEN_FD: i32 = 3;
/// Environment variable master sets to tell a child fd 3 is its listener.
pub const LISTEN_ENV: &str = "PETREL_LISTEN_FD";
/// Environment variable master sets to its own pid, so a child can tell it lost master.
pub const MASTER_PID_ENV: &str = "PETREL_MASTER_PID";

/// What the program needs to keep when it runs as root (unpriv `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootNeeds {
    /// Nothing: the program must run as mail_owner; `n` in services.conf is refused.
    Nothing,
    /// Switching to recipients' uids and reading their homes (local delivery).
    SwitchUsers,
    /// Everything, for a program that splits itself at once into processes that each
    /// give up what they do not need (imapd: its login process becomes mail_owner, its
    /// spawner keeps CAP_SETUID and CAP_SETGID).
    SplitsItself,
}

/// A started daemon.
#[derive(Debug)]
pub struct Daemon {
    /// The configuration, overrides applied.
    pub cfg: Config,
    /// Service name from services.conf.
    pub service: String,
    /// The listening socket master passed, if any.
    pub listener: Option<OwnedFd>,
    /// The queue directory as an absolute path outside any chroot.
    pub queue_dir: PathBuf,
    /// True when privileges were changed (started as root).
    pub privileged: bool,
    /// Program arguments after the master-given ones.
    pub args: Vec<String>,
}

struct Parsed {
    config_dir: Option<PathBuf>,
    service: String,
    unpriv: bool,
    chroot: bool,
    overrides: Vec<String>,
    rest: Vec<String>,
}

fn parse_args(program: &str, argv: &[String]) -> Result<Parsed, String> {
    let mut p = Parsed {
        config_dir: None,
        service: program.to_string(),
        unpriv: false,
        chroot: false,
        overrides: Vec::new(),
        rest: Vec::new(),
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => p.config_dir = Some(PathBuf::from(it.next().ok_or("-c needs a directory")?)),
            "-n" => p.service = it.next().ok_or("-n needs a service name")?.clone(),
            "-t" => {
                it.next().ok_or("-t needs a type")?;
            }
            "-u" => p.unpriv = true,
            "-r" => p.chroot = true,
            "-o" => p
                .overrides
                .push(it.next().ok_or("-o needs name=value")?.clone()),
            "--" => {
                p.rest.extend(it.by_ref().cloned());
            }
            o if o.starts_with("-o") && o.contains('=') => p.overrides.push(o[2..].to_string()),
            other => p.rest.push(other.to_string()),
        }
    }
    Ok(p)
}

/// Starts a daemon: see the crate docs for the steps. Exits with a fatal log line when
/// the environment is broken. With `-u` it becomes mail_owner.
pub fn start(program: &str, needs: RootNeeds) -> Daemon {
    start_as(program, needs, "mail_owner")
}

/// [`start`] for a program that runs as the user named by the parameter `owner_param`
/// instead of mail_owner (authd: `auth_owner`). In unprivileged mode (not root, or root
/// when mail_owner or that user is root) nothing changes identity, as with [`start`].
pub fn start_as(program: &str, needs: RootNeeds, owner_param: &str) -> Daemon {
    start_with(program, needs, owner_param, |_| Ok(())).0
}

/// [`start_as`] with a `prepare` step that runs with the privileges the program was
/// started with, after the configuration is loaded and before any chroot or identity
/// change: for reading what the unprivileged process may not (TLS private keys).
pub fn start_with<T>(
    program: &str,
    needs: RootNeeds,
    owner_param: &str,
    prepare: impl FnOnce(&Config) -> Result<T, String>,
) -> (Daemon, T) {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match parse_args(program, &argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(64);
        }
    };
    let dir = petrel_config::config_dir(parsed.config_dir.as_deref());
    let mut cfg = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            petrel_log::init_stderr(program);
            petrel_log::fatal(e)
        }
    };
    for o in &parsed.overrides {
        if let Err(e) = cfg.apply_override_arg(o) {
            petrel_log::init_stderr(program);
            petrel_log::fatal(format!("service {}: {e}", parsed.service));
        }
    }
    petrel_log::init(program, &cfg, false);
    if let Err(e) = cfg.validate() {
        petrel_log::fatal(e);
    }
    let listener = match std::env::var(LISTEN_ENV) {
        // SAFETY: master passes fd 3 open for exactly this purpose and says so in LISTEN_ENV;
        // nothing else in this process owns it.
        Ok(v) if v == LISTEN_FD.to_string() => Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FD) }),
        _ => None,
    };
    if let Some(fd) = &listener {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let queue_dir = PathBuf::from(cfg.get("queue_directory"));
    if let Err(e) = std::env::set_current_dir(&queue_dir) {
        petrel_log::fatal(format!("chdir {}: {e}", queue_dir.display()));
    }
    let prepared = match prepare(&cfg) {
        Ok(t) => t,
        Err(e) => petrel_log::fatal(e),
    };
    let privileged = nix::unistd::geteuid().is_root()
        && !running_as_mail_owner(&cfg)
        && !running_as_owner(&cfg, owner_param);
    if privileged {
        if let Err(e) = drop_privileges(&cfg, &parsed, needs, owner_param) {
            petrel_log::fatal(e);
        }
    }
    die_with_parent();
    let d = Daemon {
        cfg,
        service: parsed.service,
        listener,
        queue_dir,
        privileged,
        args: parsed.rest,
    };
    (d, prepared)
}

/// True when mail_owner is the user we already are (a sandbox run by root names root):
/// then there is nobody to become, and the suite runs in unprivileged mode.
pub fn running_as_mail_owner(cfg: &Config) -> bool {
    running_as_owner(cfg, "mail_owner")
}

/// True when the user named by the parameter `owner_param` is the user we already are.
pub fn running_as_owner(cfg: &Config, owner_param: &str) -> bool {
    match nix::unistd::User::from_name(&cfg.get(owner_param)) {
        Ok(Some(u)) => u.uid == nix::unistd::geteuid(),
        _ => false,
    }
}

/// Looks up mail_owner's uid and gid.
pub fn mail_owner(cfg: &Config) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    owner(cfg, "mail_owner")
}

/// Looks up the uid and gid of the user named by the parameter `owner_param`.
pub fn owner(
    cfg: &Config,
    owner_param: &str,
) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    let name = cfg.get(owner_param);
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        Ok(None) => Err(format!(
            "{owner_param} {name}: no such user (create it: see petrel(8))"
        )),
        Err(e) => Err(format!("{owner_param} {name}: {e}")),
    }
}

fn drop_privileges(
    cfg: &Config,
    p: &Parsed,
    needs: RootNeeds,
    owner_param: &str,
) -> Result<(), String> {
    use caps::Capability;
    // Look the user up while /etc/passwd is still in sight.
    let owner = if p.unpriv {
        Some(owner(cfg, owner_param)?)
    } else {
        None
    };
    if p.chroot {
        nix::unistd::chroot(".")
            .map_err(|e| format!("chroot {}: {e}", cfg.get("queue_directory")))?;
        std::env::set_current_dir("/").map_err(|e| format!("chdir / in chroot: {e}"))?;
    }
    if let Some((uid, gid)) = owner {
        return become_user(uid, gid);
    }
    match needs {
        RootNeeds::Nothing => Err(format!(
            "service {} must run unprivileged: set unpriv to y or - in services.conf",
            p.service
        )),
        RootNeeds::SwitchUsers => keep_only(&[
            Capability::CAP_SETUID,
            Capability::CAP_SETGID,
            Capability::CAP_CHOWN,
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_FOWNER,
        ]),
        RootNeeds::SplitsItself => Ok(()),
    }
}

/// Becomes `uid`/`gid` for good (real, effective and saved ids; `gid` the only group),
/// with no capabilities left in any set and `no_new_privs`. For a root process (or one
/// holding CAP_SETUID and CAP_SETGID) that hands work to a user: imapd's login process
/// and its per-user session workers.
pub fn become_user(uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<(), String> {
    use caps::CapSet;
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {uid}: {e}"))?;
    // Becoming a non-root uid empties the permitted and effective sets; make sure, and
    // empty the rest, so nothing can come back through exec.
    let _ = caps::clear(None, CapSet::Ambient);
    let _ = caps::clear(None, CapSet::Inheritable);
    if !uid.is_root() {
        let _ = caps::clear(None, CapSet::Effective);
        let _ = caps::clear(None, CapSet::Permitted);
    }
    if !caps::read(None, CapSet::Effective)
        .map(|s| s.is_empty())
        .unwrap_or(false)
    {
        return Err("capabilities survived the uid change".into());
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(())
}

/// Keeps only the capabilities `keep` (effective, permitted and bounding sets; nothing
/// inheritable or ambient). The process stays root.
pub fn keep_only(keep: &[caps::Capability]) -> Result<(), String> {
    use caps::CapSet;
    let keep: std::collections::HashSet<caps::Capability> = keep.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            let _ = caps::drop(None, CapSet::Bounding, c);
        }
    }
    caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("capset: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("capset: {e}"))?;
    let _ = caps::clear(None, CapSet::Inheritable);
    let _ = caps::clear(None, CapSet::Ambient);
    Ok(())
}

/// Asks the kernel to send SIGTERM to this process when its parent dies (for the helper
/// processes a daemon forks: they must not outlive it). Exits at once if the parent is
/// already gone (`parent` is the pid it had before the fork).
pub fn die_with(parent: nix::unistd::Pid) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and affects only this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if nix::unistd::getppid() != parent {
        std::process::exit(0);
    }
}

fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and affects only this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // Master may have gone between fork and the prctl: then our parent is someone else.
    // (Comparing with master's pid, not with 1, keeps this right when master is pid 1.)
    let master = std::env::var(MASTER_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if master.is_some_and(|m| nix::unistd::getppid().as_raw() != m) {
        std::process::exit(0);
    }
}

/// Connects to a service socket under the queue directory (`private/cleanup`), with a
/// timeout for every read and write.
pub fn connect(
    path: &str,
    timeout: std::time::Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("connect to {path}: {e}")))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Pokes a service with a trigger frame; errors are ignored by design (the service will
/// find the work on its next scan).
///
/// Never blocks: the connect is non-blocking, so a service whose listen queue is full
/// (it is busy; it has wake-ups waiting already) costs the caller nothing. A submitter
/// must not hang because pickup is slow.
pub fn trigger(path: &Path) {
    send_nonblocking(path, &petrel_ipc::trigger_frame());
}

/// Sends one notice frame to a service without waiting (best effort, like [`trigger`]).
pub fn send_notice<T: petrel_ipc::Protocol>(path: &str, msg: &T) {
    if let Ok(frame) = petrel_ipc::encode(msg) {
        send_nonblocking(Path::new(path), &frame);
    }
}

/// Connects to a Unix socket without blocking and writes `bytes`; every failure is
/// ignored (a full listen queue means the service is busy and will look anyway).
fn send_nonblocking(path: &Path, bytes: &[u8]) {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let Ok(addr) = UnixAddr::new(path) else {
        return;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return;
    };
    if connect(fd.as_raw_fd(), &addr).is_ok() {
        let _ = nix::unistd::write(&fd, bytes);
    }
}

/// The peer's credentials on a Unix socket (SO_PEERCRED).
pub fn peer_uid(fd: &impl std::os::fd::AsFd) -> Option<u32> {
    nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_arguments_parse() {
        let argv: Vec<String> = "-c /etc/x -n local -t unix -u -r -o a=b -oc=d -- --extra"
            .split(' ')
            .map(String::from)
            .collect();
        let p = parse_args("local", &argv).unwrap();
        assert_eq!(p.config_dir.as_deref(), Some(Path::new("/etc/x")));
        assert_eq!(p.service, "local");
        assert!(p.unpriv && p.chroot);
        assert_eq!(p.overrides, vec!["a=b", "c=d"]);
        assert_eq!(p.rest, vec!["--extra"]);
        assert!(parse_args("x", &["-c".to_string()]).is_err());
    }
}
