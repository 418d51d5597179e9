//! smtpd — Petrel's SMTP server.
//!
//! SYNOPSIS: started by master for each `inet` service whose command is `smtpd`.
//!
//! DESCRIPTION: smtpd speaks ESMTP (RFC 5321) with PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES, SMTPUTF8, DSN and CHUNKING. One process serves every connection
//! master hands it with a single event loop; several processes (maxproc) share the
//! listening socket. A recipient is accepted when its domain is in mydestination (and the
//! user or alias exists: unknown users get 550 5.1.1 at RCPT time), in relay_domains, or
//! when the client is in mynetworks; anyone else gets 554 5.7.1 Relay access denied
//! (smtpd_relay_restrictions, then smtpd_recipient_restrictions, in Postfix's order).
//! Messages stream to cleanup as they arrive; `250 Ok: queued as ID` is sent only after
//! cleanup reports the queue file fsynced. Only CR LF . CR LF ends DATA; a message with a
//! bare LF is refused with 550 5.5.2, so no second message can be smuggled inside it.
//! Hostile clients meet limits: line_length_limit, smtpd_recipient_limit,
//! smtpd_hard_error_limit, smtpd_timeout, smtpd_client_connection_count_limit and
//! smtpd_connection_limit, smtpd_greet_delay, smtpd_tls_security_level,
//! smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_wrappermode, smtpd_tls_auth_only,
//! smtpd_sasl_auth_enable, smtpd_sender_login_maps.
//!
//! TLS: with smtpd_tls_security_level = may (or encrypt) and smtpd_tls_cert_file, smtpd
//! offers STARTTLS (RFC 3207; TLS 1.2 or later; plaintext pipelined after STARTTLS is
//! discarded) and with smtpd_tls_wrappermode = yes speaks TLS from the first byte (port 465,
//! RFC 8314). With smtpd_sasl_auth_enable it offers AUTH PLAIN and LOGIN (RFC 4954),
//! checked by authd, only over TLS unless smtpd_tls_auth_only = no.
//!
//! SECURITY: runs as mail_owner with no capabilities; never touches the queue itself.
//! The certificate and key are read before the privilege drop.
//!
//! CONFIGURATION PARAMETERS: myhostname, smtpd_banner, mydestination, relay_domains,
//! mynetworks, smtpd_relay_restrictions, smtpd_recipient_restrictions,
//! smtpd_reject_unlisted_recipient, local_recipient_maps, recipient_delimiter,
//! message_size_limit, smtpd_recipient_limit, smtpd_hard_error_limit, smtpd_timeout,
//! line_length_limit, disable_vrfy_command, smtpd_client_connection_count_limit,
//! smtpd_connection_limit, smtpd_greet_delay, smtpd_tls_security_level,
//! smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_wrappermode, smtpd_tls_auth_only,
//! smtpd_sasl_auth_enable, smtpd_sender_login_maps.

mod policy;
mod server;
mod session;

fn main() {
    // The certificate and key are read before the privilege drop: the key is root's.
    let (d, tls) = petrel_daemon::start_with(
        "smtpd",
        petrel_daemon::RootNeeds::Nothing,
        "mail_owner",
        load_tls,
    );
    let mut settings = match policy::Settings::from_config(&d.cfg) {
        Ok(s) => s,
        Err(e) => petrel_log::fatal(e),
    };
    settings.tls_available = tls.is_some();
    let table =
        match petrel_maps::local_table::LocalTable::new(&d.cfg.get_list("local_recipient_maps")) {
            Ok(t) => t,
            Err(e) => petrel_log::fatal(format!("local_recipient_maps: {e}")),
        };
    let Some(fd) = d.listener else {
        petrel_log::fatal("no listening socket: smtpd must be started by master");
    };
    let listener = std::net::TcpListener::from(fd);
    let result = server::Server::new(listener, settings, table, tls).and_then(|mut s| s.run());
    if let Err(e) = result {
        petrel_log::fatal(format!("smtpd: {e}"));
    }
}

/// The TLS configuration, when smtpd_tls_security_level or smtpd_tls_wrappermode asks for
/// TLS.
fn load_tls(cfg: &petrel_config::Config) -> Result<Option<petrel_tls::ServerConfig>, String> {
    let level = cfg.get("smtpd_tls_security_level");
    if !cfg.get_bool("smtpd_tls_wrappermode") && (level.is_empty() || level == "none") {
        return Ok(None);
    }
    let cert = cfg.get("smtpd_tls_cert_file");
    if cert.is_empty() {
        return Err(
            "smtpd_tls_security_level or smtpd_tls_wrappermode needs smtpd_tls_cert_file".into(),
        );
    }
    let key = cfg.get("smtpd_tls_key_file");
    petrel_tls::ServerConfig::load(std::path::Path::new(&cert), std::path::Path::new(&key))
        .map(Some)
}
