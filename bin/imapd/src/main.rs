//! imapd — Petrel's IMAP server.
//!
//! SYNOPSIS: started by master for each `inet` service whose command is `imapd`.
//!
//! DESCRIPTION: imapd speaks IMAP4rev1 (RFC 3501) with LITERAL+, SASL-IR, ID, ENABLE,
//! IDLE, NAMESPACE, UIDPLUS, MOVE, UNSELECT, CHILDREN, SPECIAL-USE, CONDSTORE and ESEARCH
//! over the users' Maildir++ folders (`home/home_mailbox`, Maildir only). Passwords are
//! checked by authd over `private/auth`; after login every command goes to a
//! `petrel_imap_session::Session` over the user's `petrel_mailstore::Store`.
//!
//! PROCESSES: imapd is three kinds of process, as Dovecot's imap-login, master and imap:
//! - the **login process** (`imapd-login`, as mail_owner, no capabilities): every
//!   connection before login, TLS, and the relay of logged-in TLS connections. After a
//!   password is right, authd gives it a one-time ticket; it passes the ticket and the
//!   connection to the spawner;
//! - the **spawner** (the process master started, `imapd`): root with only CAP_SETUID and
//!   CAP_SETGID, no network input. It redeems the ticket with authd, which tells it the
//!   user, uid, gid and home, and passes the connection to the worker of that uid;
//! - **session workers** (`imapd-worker`, one per uid, as that uid with no
//!   capabilities): all the sessions of the users of one uid in one event loop, sharing
//!   their open folders. Sessions never run as root: a user with uid 0 cannot log in.
//!
//! Started by a user other than root (a sandbox), nothing changes identity and only users
//! with that uid can log in.
//!
//! IDLE: a worker watches the new/ and cur/ of every folder a connection idles in with
//! inotify and sends what changed (new mail, expunges, flag changes by other sessions) at
//! once; every 30 s (as Dovecot's mailbox_idle_check_interval) it also looks without
//! being told, and every 2 minutes an idling client hears `* OK Still here`.
//!
//! LIMITS: a command line is at most 64 KiB; before login a command's literals are at most
//! 8 KiB, after it message_size_limit; FETCH answers are made 128 KiB at a time as the
//! client reads them; output waiting for a client stops the reading of
//! its commands over 256 KiB, and a client that reads nothing for 30 s while output waits
//! (5 s when over 8 MiB) is disconnected. imapd_timeout (60 s before login) ends silent
//! connections with `* BYE Autologout` (not while in IDLE).
//!
//! TLS: with imapd_tls_security_level = may (the default) and a certificate
//! (imapd_tls_cert_file, by default smtpd_tls_cert_file), STARTTLS is offered (plaintext
//! pipelined after it is discarded); with encrypt it is required before anything but
//! CAPABILITY, NOOP, LOGOUT and STARTTLS; with imapd_tls_wrappermode = yes the
//! connection is TLS from the first byte (port 993). With imapd_tls_auth_only = yes (the
//! default) LOGIN and AUTHENTICATE are refused before TLS (`NO [PRIVACYREQUIRED]`,
//! LOGINDISABLED). The certificate and key are read as root, before anything else.
//!
//! LOGGING: `Login: user=U, rip=IP, tls=VERSION|none` and `Logout: user=U, rip=IP,
//! in=BYTES, out=BYTES, fetched=N, expunged=N, appended=N` (by the worker).
//!
//! CONFIGURATION PARAMETERS: home_mailbox, mail_owner, message_size_limit, imapd_timeout,
//! imapd_tls_auth_only, imapd_tls_cert_file, imapd_tls_key_file,
//! imapd_tls_security_level, imapd_tls_wrappermode.

mod handoff;
mod input;
mod login;
mod outbuf;
mod server;
mod spawner;
mod worker;

fn main() {
    // Started as root (unpriv n): the spawner stays root with what it needs to become
    // users. The certificate and key are read before anything is given up.
    let (d, tls) = petrel_daemon::start_with(
        "imapd",
        petrel_daemon::RootNeeds::SplitsItself,
        "mail_owner",
        load_tls,
    );
    let settings = match login::Settings::from_config(&d.cfg) {
        Ok(s) => s,
        Err(e) => petrel_log::fatal(e),
    };
    let Some(fd) = d.listener else {
        petrel_log::fatal("no listening socket: imapd must be started by master");
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
            spawner::set_name("imapd-login");
            if let Some((uid, gid)) = login_user {
                if let Err(e) = petrel_daemon::become_user(uid, gid) {
                    petrel_log::fatal(format!("login process: {e}"));
                }
            }
            let listener = std::net::TcpListener::from(fd);
            let result =
                server::Server::new(listener, settings, tls, login_end).and_then(|mut s| s.run());
            if let Err(e) = result {
                petrel_log::fatal(format!("imapd login process: {e}"));
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
            let result = spawner::Spawner::new(spawner_end, authd, switch, settings).run();
            if let Err(e) = result {
                petrel_log::fatal(format!("imapd spawner: {e}"));
            }
            // The login process ended (it logged why); master starts imapd again.
            std::process::exit(1);
        }
        Err(e) => petrel_log::fatal(format!("fork: {e}")),
    }
}

/// Every connection of a worker is a descriptor: allow as many as the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The TLS configuration, when imapd_tls_security_level or imapd_tls_wrappermode asks for
/// TLS and a certificate is configured. `may` without a certificate means no TLS;
/// `encrypt` or wrapper mode without one is an error.
fn load_tls(cfg: &petrel_config::Config) -> Result<Option<petrel_tls::ServerConfig>, String> {
    let level = login::TlsLevel::parse(&cfg.get("imapd_tls_security_level"))?;
    let wrapper = cfg.get_bool("imapd_tls_wrappermode");
    if !wrapper && level == login::TlsLevel::None {
        return Ok(None);
    }
    let cert = cfg.get("imapd_tls_cert_file");
    if cert.is_empty() {
        if wrapper || level == login::TlsLevel::Encrypt {
            return Err(
                "imapd_tls_security_level = encrypt or imapd_tls_wrappermode needs imapd_tls_cert_file"
                    .into(),
            );
        }
        return Ok(None);
    }
    let key = cfg.get("imapd_tls_key_file");
    petrel_tls::ServerConfig::load(std::path::Path::new(&cert), std::path::Path::new(&key))
        .map(Some)
}
