//! imapd — Petrel's IMAP server.
//!
//! SYNOPSIS: started by master for each `inet` service whose command is `imapd`.
//!
//! DESCRIPTION: imapd speaks IMAP4rev1 (RFC 3501) with LITERAL+, SASL-IR, ID, ENABLE,
//! IDLE, NAMESPACE, UIDPLUS, MOVE, UNSELECT, CHILDREN, SPECIAL-USE, CONDSTORE and ESEARCH
//! over the users' Maildir++ folders. One process serves every connection master hands it
//! with a single mio event loop; several processes (maxproc) share the listening socket.
//! This program is the loop and the not-authenticated state (CAPABILITY, NOOP, LOGOUT,
//! STARTTLS, LOGIN, AUTHENTICATE PLAIN, ID); passwords are checked by authd over
//! `private/auth`; after login every command goes to a `petrel_imap_session::Session`
//! over the user's `petrel_mailstore::Store` (`home/home_mailbox`, Maildir only).
//!
//! IDLE: a connection in IDLE is re-synchronised with its mailbox every 500 ms and sent
//! what changed (new mail, expunges, flag changes by other sessions).
//!
//! LIMITS: a command line is at most 64 KiB, the literals of one command at most
//! message_size_limit; output waiting for a client stops the reading of its commands
//! over 256 KiB, and a client that reads nothing for 30 s while output waits (5 s when
//! over 8 MiB) is disconnected. imapd_timeout (60 s before login) ends silent
//! connections with `* BYE Autologout`.
//!
//! TLS: with imapd_tls_security_level = may (the default) and a certificate
//! (imapd_tls_cert_file, by default smtpd_tls_cert_file), STARTTLS is offered (plaintext
//! pipelined after it is discarded); with encrypt it is required before anything but
//! CAPABILITY, NOOP, LOGOUT and STARTTLS; with imapd_tls_wrappermode = yes the
//! connection is TLS from the first byte (port 993). With imapd_tls_auth_only = yes (the
//! default) LOGIN and AUTHENTICATE are refused before TLS (`NO [PRIVACYREQUIRED]`,
//! LOGINDISABLED).
//!
//! SECURITY: runs as mail_owner with no capabilities; the certificate and key are read
//! before the privilege drop. **The per-user privilege split is not implemented yet:**
//! this first version runs the authenticated session in-process as mail_owner, so it
//! serves the mailboxes mail_owner can read and write (virtual users, the sandbox), not
//! system users' homes owned by those users.
//!
//! LOGGING: `Login: user=U, rip=IP, tls=VERSION|none` and `Logout: user=U, rip=IP,
//! in=BYTES, out=BYTES`.
//!
//! CONFIGURATION PARAMETERS: home_mailbox, message_size_limit, imapd_timeout,
//! imapd_tls_auth_only, imapd_tls_cert_file, imapd_tls_key_file,
//! imapd_tls_security_level, imapd_tls_wrappermode.

mod login;
mod server;

fn main() {
    // The certificate and key are read before the privilege drop: the key is root's.
    let (d, tls) = petrel_daemon::start_with(
        "imapd",
        petrel_daemon::RootNeeds::Nothing,
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
    let listener = std::net::TcpListener::from(fd);
    let result = server::Server::new(listener, settings, tls).and_then(|mut s| s.run());
    if let Err(e) = result {
        petrel_log::fatal(format!("imapd: {e}"));
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
