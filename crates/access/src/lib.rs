//! What Petrel's mail-access servers, imapd and pop3d, share: the process split, the
//! unprivileged login process's event loop, the hand-over of logged-in connections and the
//! spawner that starts sessions as their users.
//!
//! ```text
//!              master (root)
//!                │ starts, unpriv n
//!   ┌────────────┴──────────────┐
//!   │ spawner (the program, root│      authd
//!   │ with CAP_SETUID/SETGID    │◀──── Redeem{ticket} → user, uid, gid, home
//!   │ only, no network input)   │
//!   └──▲──────────────┬─────────┘
//!      │ Login{ticket,│conn} + fd (SOCK_SEQPACKET, SCM_RIGHTS)
//!   ┌──┴───────────┐  │ forks, becomes the user
//!   │ NAME-login   │  ▼
//!   │ mail_owner,  │  NAME-worker (one per uid, imapd) or
//!   │ no caps: TLS,│  NAME-session (one per connection, pop3d)
//!   │ greeting,    │
//!   │ authd Login  │
//!   └──────────────┘
//! ```
//!
//! A program supplies its pre-login dialogue as a [`login::Protocol`] and its sessions as
//! [`spawner::Workers`], and calls [`run`].

#![deny(missing_docs)]

pub mod handoff;
pub mod login;
pub mod outbuf;
pub mod spawner;

use base64::Engine as _;
use std::path::{Path, PathBuf};

/// `*_tls_security_level` of imapd and pop3d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// No STARTTLS / STLS.
    None,
    /// Offered.
    May,
    /// Required before logging in.
    Encrypt,
}

impl TlsLevel {
    /// The parameter `name`'s value (empty means none).
    pub fn parse(name: &str, s: &str) -> Result<TlsLevel, String> {
        match s.trim() {
            "" | "none" => Ok(TlsLevel::None),
            "may" => Ok(TlsLevel::May),
            "encrypt" => Ok(TlsLevel::Encrypt),
            other => Err(format!(
                "{name}: unknown value {other:?} (none, may or encrypt)"
            )),
        }
    }
}

/// The TLS configuration for a server whose parameters start with `prefix` (`imapd`,
/// `pop3d`): when PREFIX_tls_security_level or PREFIX_tls_wrappermode asks for TLS and a
/// certificate is configured. `may` without a certificate means no TLS; `encrypt` or
/// wrapper mode without one is an error.
pub fn load_tls(
    cfg: &petrel_config::Config,
    prefix: &str,
) -> Result<Option<petrel_tls::ServerConfig>, String> {
    let level_name = format!("{prefix}_tls_security_level");
    let level = TlsLevel::parse(&level_name, &cfg.get(&level_name))?;
    let wrapper = cfg.get_bool(&format!("{prefix}_tls_wrappermode"));
    if !wrapper && level == TlsLevel::None {
        return Ok(None);
    }
    let cert = cfg.get(&format!("{prefix}_tls_cert_file"));
    if cert.is_empty() {
        if wrapper || level == TlsLevel::Encrypt {
            return Err(format!(
                "{prefix}_tls_security_level = encrypt or {prefix}_tls_wrappermode needs {prefix}_tls_cert_file"
            ));
        }
        return Ok(None);
    }
    let key = cfg.get(&format!("{prefix}_tls_key_file"));
    petrel_tls::ServerConfig::load(Path::new(&cert), Path::new(&key)).map(Some)
}

/// A SASL PLAIN response (`authzid NUL authcid NUL password`) → (user, password). An
/// authorisation identity other than the user itself is refused (no proxy logins).
pub fn decode_plain(resp: &[u8]) -> Result<(String, String), &'static str> {
    let mut parts = resp.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Malformed PLAIN response");
    };
    let user = std::str::from_utf8(user).map_err(|_| "User name is not UTF-8")?;
    let pass = std::str::from_utf8(pass).map_err(|_| "Password is not UTF-8")?;
    if user.is_empty() {
        return Err("Malformed PLAIN response");
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return Err("Authorization identity not allowed");
    }
    Ok((user.to_string(), pass.to_string()))
}

/// A base64 SASL line (the answer to a `+` challenge, or an initial response); `=` is
/// the empty response.
pub fn decode_sasl_line(line: &[u8]) -> Option<Vec<u8>> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

/// The Maildir of a user with home directory `home`: `home/home_mailbox` when
/// home_mailbox names a Maildir (ends in `/`).
pub fn maildir_path(home: &str, home_mailbox: &str) -> Result<PathBuf, String> {
    if !home_mailbox.ends_with('/') {
        return Err(format!(
            "home_mailbox = {home_mailbox:?} is not a Maildir (ending in /)"
        ));
    }
    home_path(home, home_mailbox.trim_end_matches('/'))
}

/// `home/rel`, for a home_mailbox that must stay inside the home directory.
pub fn home_path(home: &str, rel: &str) -> Result<PathBuf, String> {
    if home.is_empty() || !home.starts_with('/') {
        return Err(format!("home directory {home:?} is not an absolute path"));
    }
    if rel.is_empty() || rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(format!("home_mailbox = {rel:?} leaves the home directory"));
    }
    Ok(Path::new(home).join(rel))
}

/// The process name ps and /proc/PID/comm show (at most 15 bytes).
pub fn set_name(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes (longer
        // names are cut by the kernel); it only renames this thread.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
}

/// Every connection is a descriptor: allow as many as the hard limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Splits the started program into the login process and the spawner and runs both;
/// never returns. `d` and `tls` come from `petrel_daemon::start_with` (with
/// `RootNeeds::SplitsItself`); `name` is the program's name (`imapd`), the login process
/// is called `NAME-login`.
pub fn run<P: login::Protocol>(
    d: petrel_daemon::Daemon,
    name: &str,
    tls: Option<petrel_tls::ServerConfig>,
    wrappermode: bool,
    proto: P,
    workers: spawner::Workers,
) -> ! {
    let Some(fd) = d.listener else {
        petrel_log::fatal(format!(
            "no listening socket: {name} must be started by master"
        ));
    };
    let switch = nix::unistd::geteuid().is_root() && d.privileged;
    let login_user = if switch {
        match petrel_daemon::mail_owner(&d.cfg) {
            Ok(u) => Some(u),
            Err(e) => petrel_log::fatal(e),
        }
    } else {
        None
    };
    raise_fd_limit();
    // The spawner's line to authd, opened while the socket can still be reached.
    let authd = match spawner::connect_authd() {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("{e}; will try again at the first login");
            None
        }
    };
    let (spawner_end, login_end) = match handoff::pair() {
        Ok(p) => p,
        Err(e) => petrel_log::fatal(format!("socketpair: {e}")),
    };
    let parent = nix::unistd::getpid();
    // SAFETY: nothing has started a thread in this process yet.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(spawner_end);
            drop(authd);
            petrel_daemon::die_with(parent);
            set_name(&format!("{name}-login"));
            if let Some((uid, gid)) = login_user {
                if let Err(e) = petrel_daemon::become_user(uid, gid) {
                    petrel_log::fatal(format!("login process: {e}"));
                }
            }
            let listener = std::net::TcpListener::from(fd);
            let result = login::Server::new(listener, proto, tls, wrappermode, login_end)
                .and_then(|mut s| s.run());
            match result {
                Ok(()) => std::process::exit(0),
                Err(e) => petrel_log::fatal(format!("{name} login process: {e}")),
            }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(fd);
            drop(login_end);
            drop(tls);
            if switch {
                if let Err(e) = petrel_daemon::keep_only(&[
                    caps::Capability::CAP_SETUID,
                    caps::Capability::CAP_SETGID,
                ]) {
                    petrel_log::fatal(format!("spawner: {e}"));
                }
            }
            let result = spawner::Spawner::new(spawner_end, authd, switch, workers).run();
            if let Err(e) = result {
                petrel_log::fatal(format!("{name} spawner: {e}"));
            }
            // The login process ended (it logged why); master starts the program again.
            std::process::exit(1);
        }
        Err(e) => petrel_log::fatal(format!("fork: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let p = |s| TlsLevel::parse("x", s);
        assert_eq!(p(""), Ok(TlsLevel::None));
        assert_eq!(p("none"), Ok(TlsLevel::None));
        assert_eq!(p("may"), Ok(TlsLevel::May));
        assert_eq!(p(" encrypt "), Ok(TlsLevel::Encrypt));
        assert!(p("dane").is_err_and(|e| e.starts_with("x: ")));
    }

    #[test]
    fn plain() {
        assert_eq!(
            decode_plain(b"\0demo\0secret"),
            Ok(("demo".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(b"demo\0demo\0"),
            Ok(("demo".into(), String::new()))
        );
        assert!(decode_plain(b"admin\0demo\0secret").is_err());
        assert!(decode_plain(b"\0demo").is_err());
        assert!(decode_plain(b"\0\0x").is_err());
        assert!(decode_plain(b"\0a\0b\0c").is_err());
        assert!(decode_plain(b"\0\xff\0x").is_err());
        assert!(decode_plain(b"").is_err());
    }

    #[test]
    fn sasl_lines() {
        assert_eq!(
            decode_sasl_line(b"AGRlbW8Ac2VjcmV0"),
            Some(b"\0demo\0secret".to_vec())
        );
        assert_eq!(decode_sasl_line(b"="), Some(Vec::new()));
        assert_eq!(decode_sasl_line(b"not base64!"), None);
        assert_eq!(decode_sasl_line(b"\xff"), None);
    }

    #[test]
    fn mailbox_paths() {
        assert_eq!(
            maildir_path("/home/demo", "Maildir/"),
            Ok(PathBuf::from("/home/demo/Maildir"))
        );
        assert_eq!(
            maildir_path("/home/demo", "mail/box/"),
            Ok(PathBuf::from("/home/demo/mail/box"))
        );
        assert!(maildir_path("/home/demo", "").is_err());
        assert!(maildir_path("/home/demo", "mbox").is_err());
        assert!(maildir_path("/home/demo", "../x/").is_err());
        assert!(maildir_path("relative", "Maildir/").is_err());
        assert!(maildir_path("", "Maildir/").is_err());
        assert_eq!(home_path("/h", "mbox"), Ok(PathBuf::from("/h/mbox")));
        assert!(home_path("/h", "/etc/passwd").is_err());
    }
}
