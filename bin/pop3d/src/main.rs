//! pop3d — Petrel's POP3 server.
//!
//! SYNOPSIS: started by master for each `inet` service whose command is `pop3d`.
//!
//! DESCRIPTION: pop3d speaks POP3 (RFC 1939: USER, PASS, STAT, LIST, RETR, DELE, NOOP,
//! RSET, QUIT, TOP, UIDL; no APOP) with CAPA and response codes (RFC 2449, 3206), STLS
//! (RFC 2595), AUTH PLAIN with an initial response (RFC 5034) and POP3S. It serves the
//! users' INBOX where `local` delivers: a Maildir++ (home_mailbox ending in `/`, shared
//! with imapd) or an mbox (mail_spool_directory/USER, or home/home_mailbox). Passwords
//! are checked by authd.
//!
//! PROCESSES: as imapd (see petrel_access): `pop3d-login` (mail_owner, no capabilities)
//! holds every connection before login and TLS; the spawner (`pop3d`, root with only
//! CAP_SETUID/CAP_SETGID) redeems authd's ticket; each session runs in a process of its
//! own (`pop3d-session`) as the user, never as root.
//!
//! MAILDROP: locked for the session (another session gets `-ERR [IN-USE]`); the message
//! list is taken at login; RETR marks a Maildir message \Seen; DELE takes effect at QUIT
//! only; an mbox is rewritten in place under a redo journal, so a crash loses nothing.
//!
//! LOGGING: `Login: user=U, rip=IP, tls=VERSION|none, messages=N` and `Logout: user=U,
//! rip=IP, top=N/BYTES, retr=N/BYTES, del=N/OF, size=BYTES, in=BYTES, out=BYTES` (or
//! `Disconnected: ... reason=...` without QUIT).
//!
//! CONFIGURATION PARAMETERS: home_mailbox, mail_spool_directory, mail_owner, pop3d_timeout,
//! pop3d_tls_auth_only, pop3d_tls_cert_file, pop3d_tls_key_file,
//! pop3d_tls_security_level, pop3d_tls_wrappermode.

mod login;
mod maildrop;
mod session;
mod settings;

use petrel_access::spawner::Workers;

fn main() {
    // Started as root (unpriv n): the spawner stays root with what it needs to become
    // users. The certificate and key are read before anything is given up.
    let (d, tls) = petrel_daemon::start_with(
        "pop3d",
        petrel_daemon::RootNeeds::SplitsItself,
        "mail_owner",
        |cfg| petrel_access::load_tls(cfg, "pop3d"),
    );
    let settings = match settings::Settings::from_config(&d.cfg) {
        Ok(s) => s,
        Err(e) => petrel_log::fatal(e),
    };
    let wrappermode = settings.wrappermode;
    let for_sessions = settings.clone();
    let workers = Workers::PerConnection {
        name: "pop3d-session",
        serve: Box::new(move |msg, fd| session::serve(msg, fd, &for_sessions)),
    };
    let proto = login::Pop3Login { s: settings };
    petrel_access::run(d, "pop3d", tls, wrappermode, proto, workers)
}
