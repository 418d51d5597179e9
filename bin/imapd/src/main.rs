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

mod input;
mod login;
mod worker;

use petrel_access::spawner::Workers;

fn main() {
    // Started as root (unpriv n): the spawner stays root with what it needs to become
    // users. The certificate and key are read before anything is given up.
    let (d, tls) = petrel_daemon::start_with(
        "imapd",
        petrel_daemon::RootNeeds::SplitsItself,
        "mail_owner",
        |cfg| petrel_access::load_tls(cfg, "imapd"),
    );
    let settings = match login::Settings::from_config(&d.cfg) {
        Ok(s) => s,
        Err(e) => petrel_log::fatal(e),
    };
    let wrappermode = settings.wrappermode;
    let for_workers = settings.clone();
    let workers = Workers::PerUid {
        name: "imapd-worker",
        serve: Box::new(move |sock| {
            worker::Worker::new(sock, for_workers.clone()).and_then(|mut w| w.run())
        }),
    };
    let proto = login::ImapLogin { s: settings };
    petrel_access::run(d, "imapd", tls, wrappermode, proto, workers)
}
