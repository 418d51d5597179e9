//! The one table of every parameter Petrel knows: name, kind, default and a one-line
//! description. Every program reads its parameters through this table, `petrel config show`
//! prints it, and the test in `tests/` checks that man/petrel.conf.5 documents exactly these.

/// What kind of value a parameter holds; decides how it is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (host names, paths, lists written as text).
    Str,
    /// `yes` or `no`.
    Bool,
    /// A whole number within bounds.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A time with an optional unit: s (default), m, h, d, w.
    Time,
    /// A list separated by commas and/or white space.
    List,
}

/// One parameter's declaration.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// Name as written in petrel.conf.
    pub name: &'static str,
    /// Kind, for validation.
    pub kind: Kind,
    /// Default value (before `$name` expansion). `@hostname` and `@domain` are computed.
    pub default: &'static str,
    /// One-line description (man/petrel.conf.5 says more; a test keeps the two in step).
    pub doc: &'static str,
}

const fn p(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> ParamDef {
    ParamDef {
        name,
        kind,
        default,
        doc,
    }
}

const S: Kind = Kind::Str;
const T: Kind = Kind::Time;
const L: Kind = Kind::List;
const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

/// Every parameter, sorted by name.
pub const PARAMS: &[ParamDef] = &[
    p(
        "2bounce_notice_recipient",
        S,
        "postmaster",
        "recipient of undeliverable bounces",
    ),
    p(
        "alias_database",
        L,
        "$alias_maps",
        "alias files rebuilt/checked by newaliases",
    ),
    p(
        "alias_maps",
        L,
        "/etc/aliases",
        "alias files consulted by local delivery",
    ),
    p(
        "allow_mail_to_commands",
        L,
        "alias, forward",
        "where |command destinations are allowed",
    ),
    p(
        "allow_mail_to_files",
        L,
        "alias, forward",
        "where /file destinations are allowed",
    ),
    p(
        "auth_failure_delay",
        T,
        "1s",
        "how long authd waits before answering a failed login",
    ),
    p(
        "auth_failure_limit",
        int(0, 1_000_000),
        "10",
        "failed logins from one client address within auth_failure_window that get it refused (0 = never); a user name is refused after three times as many",
    ),
    p(
        "auth_failure_lockout",
        T,
        "10m",
        "how long authd refuses a client address or user name that failed too often",
    ),
    p(
        "auth_failure_window",
        T,
        "10m",
        "the time within which authd counts failed logins",
    ),
    p(
        "auth_owner",
        S,
        "petrel-auth",
        "user authd runs as, the only one that can read auth_password_file",
    ),
    p(
        "auth_password_file",
        S,
        "$config_directory/users",
        "the passwd-file authd checks passwords against",
    ),
    p(
        "auth_password_scheme",
        S,
        "ARGON2ID",
        "scheme petrel user add and passwd write: ARGON2ID or SHA512-CRYPT",
    ),
    p(
        "bounce_notice_recipient",
        S,
        "postmaster",
        "recipient of postmaster notices",
    ),
    p(
        "bounce_queue_lifetime",
        T,
        "5d",
        "how long a bounce message may stay queued",
    ),
    p(
        "command_directory",
        S,
        "/usr/sbin",
        "where the petrel and sendmail commands live",
    ),
    p(
        "command_time_limit",
        T,
        "1000s",
        "time limit for delivery to a |command",
    ),
    p(
        "config_directory",
        S,
        "/etc/petrel",
        "where petrel.conf and services.conf live",
    ),
    p(
        "daemon_directory",
        S,
        "/usr/lib/petrel",
        "where the daemon programs live",
    ),
    p(
        "data_directory",
        S,
        "/var/lib/petrel",
        "writable data owned by mail_owner",
    ),
    p(
        "default_destination_concurrency_limit",
        int(1, 1000),
        "20",
        "parallel deliveries to one destination",
    ),
    p(
        "default_destination_recipient_limit",
        int(1, 100000),
        "50",
        "recipients per delivery request to one destination",
    ),
    p(
        "default_privs",
        S,
        "nobody",
        "user that runs |commands and /file deliveries from root-owned alias files",
    ),
    p(
        "default_process_limit",
        int(1, 10000),
        "100",
        "connections qmgr opens to one transport's agents",
    ),
    p(
        "default_transport",
        S,
        "smtp",
        "transport[:nexthop] for mail to other domains",
    ),
    p(
        "delay_warning_time",
        T,
        "0h",
        "send a delayed-mail notice after this long (0 = never)",
    ),
    p(
        "disable_vrfy_command",
        Kind::Bool,
        "yes",
        "answer VRFY with 252 instead of checking the address",
    ),
    p(
        "dns_servers",
        L,
        "",
        "name servers to ask instead of /etc/resolv.conf (host:port)",
    ),
    p(
        "double_bounce_sender",
        S,
        "double-bounce",
        "sender of postmaster notices; mail to it is dropped",
    ),
    p(
        "forward_path",
        L,
        "$home/.forward",
        "where local looks for a user's .forward file",
    ),
    p(
        "header_size_limit",
        int(1024, 1 << 30),
        "102400",
        "largest message header kept, in bytes",
    ),
    p(
        "home_mailbox",
        S,
        "",
        "mailbox relative to the home directory; ending in / means Maildir",
    ),
    p(
        "hopcount_limit",
        int(1, 1000),
        "50",
        "most Received headers before a message is bounced as a loop",
    ),
    p("imapd_timeout", T, "30m", "idle time after which imapd says BYE Autologout (60 s before login)"),
    p("imapd_tls_auth_only", Kind::Bool, "yes", "refuse LOGIN and AUTHENTICATE before TLS"),
    p("imapd_tls_cert_file", S, "$smtpd_tls_cert_file", "PEM certificate chain for IMAP STARTTLS and implicit TLS"),
    p("imapd_tls_key_file", S, "$smtpd_tls_key_file", "PEM private key matching imapd_tls_cert_file"),
    p("imapd_tls_security_level", S, "may", "none, may (offer STARTTLS) or encrypt (require it)"),
    p("imapd_tls_wrappermode", Kind::Bool, "no", "implicit TLS from the first byte (port 993)"),
    p(
        "inet_interfaces",
        L,
        "all",
        "addresses inet services listen on",
    ),
    p(
        "line_length_limit",
        int(80, 1 << 20),
        "2048",
        "longest header line kept before it is folded",
    ),
    p(
        "lmtp_tcp_port",
        int(1, 65535),
        "24",
        "LMTP port when a next hop names none",
    ),
    p(
        "local_concurrency_limit",
        int(1, 1000),
        "4",
        "deliveries qmgr runs through local at once",
    ),
    p(
        "local_recipient_maps",
        L,
        "$user_database $alias_maps",
        "tables of the local recipients that exist",
    ),
    p(
        "local_transport",
        S,
        "local",
        "transport for mail to mydestination domains",
    ),
    p(
        "mail_owner",
        S,
        "petrel",
        "the unprivileged user that owns the queue and runs the daemons",
    ),
    p(
        "mail_spool_directory",
        S,
        "/var/mail",
        "where mbox files live when home_mailbox is empty",
    ),
    p("maillog_file", S, "", "log to this file instead of syslog"),
    p(
        "maximal_backoff_time",
        T,
        "4000s",
        "longest time between retries of a deferred message",
    ),
    p(
        "maximal_queue_lifetime",
        T,
        "5d",
        "how long a message may stay queued before it bounces",
    ),
    p(
        "message_size_limit",
        int(0, 4_000_000_000),
        "10240000",
        "largest message accepted, in bytes (0 = none)",
    ),
    p(
        "minimal_backoff_time",
        T,
        "300s",
        "shortest time between retries of a deferred message",
    ),
    p(
        "mydestination",
        L,
        "$myhostname, localhost.$mydomain, localhost",
        "domains delivered locally",
    ),
    p("mydomain", S, "@domain", "the domain of this host"),
    p(
        "myhostname",
        S,
        "@hostname",
        "the fully qualified name of this host",
    ),
    p(
        "mynetworks",
        L,
        "127.0.0.0/8 [::1]/128",
        "clients trusted to relay",
    ),
    p(
        "myorigin",
        S,
        "$myhostname",
        "domain appended to unqualified local addresses",
    ),
    p("pop3d_timeout", T, "10m", "idle time after which pop3d ends a session (60 s before login)"),
    p("pop3d_tls_auth_only", Kind::Bool, "yes", "refuse USER, PASS and AUTH before TLS"),
    p("pop3d_tls_cert_file", S, "$smtpd_tls_cert_file", "PEM certificate chain for POP3 STLS and implicit TLS"),
    p("pop3d_tls_key_file", S, "$smtpd_tls_key_file", "PEM private key matching pop3d_tls_cert_file"),
    p("pop3d_tls_security_level", S, "may", "none, may (offer STLS) or encrypt (require it)"),
    p("pop3d_tls_wrappermode", Kind::Bool, "no", "implicit TLS from the first byte (port 995)"),
    p(
        "queue_directory",
        S,
        "/var/spool/petrel",
        "the queue (spool) directory",
    ),
    p(
        "queue_run_delay",
        T,
        "300s",
        "how often qmgr scans deferred/",
    ),
    p(
        "recipient_delimiter",
        S,
        "",
        "separates a user name from its extension (user+ext)",
    ),
    p("relay_domains", L, "", "domains this host relays for"),
    p("relayhost", S, "", "the smart host for non-local mail"),
    p(
        "service_throttle_time",
        T,
        "60s",
        "how long master waits before restarting a crashing service",
    ),
    p(
        "setgid_group",
        S,
        "petrel-drop",
        "group that postdrop runs as",
    ),
    p(
        "smtp_connect_timeout",
        T,
        "30s",
        "SMTP client: time limit for a TCP connect",
    ),
    p(
        "smtp_connection_cache_time_limit",
        T,
        "2s",
        "how long an idle SMTP connection is kept for reuse",
    ),
    p(
        "smtp_data_done_timeout",
        T,
        "600s",
        "SMTP client: time limit for the reply after the final dot",
    ),
    p(
        "smtp_data_init_timeout",
        T,
        "120s",
        "SMTP client: time limit for the reply to DATA",
    ),
    p(
        "smtp_data_xfer_timeout",
        T,
        "180s",
        "SMTP client: time limit for sending message data",
    ),
    p(
        "smtp_helo_name",
        S,
        "$myhostname",
        "the name the SMTP client sends in EHLO/HELO/LHLO",
    ),
    p(
        "smtp_helo_timeout",
        T,
        "300s",
        "SMTP client: time limit for the greeting and EHLO reply",
    ),
    p(
        "smtp_mail_timeout",
        T,
        "300s",
        "SMTP client: time limit for the reply to MAIL FROM",
    ),
    p(
        "smtp_quit_timeout",
        T,
        "300s",
        "SMTP client: time limit for the reply to QUIT and RSET",
    ),
    p(
        "smtp_rcpt_timeout",
        T,
        "300s",
        "SMTP client: time limit for the reply to RCPT TO",
    ),
    p(
        "smtp_sasl_auth_enable",
        Kind::Bool,
        "no",
        "SMTP client: authenticate to servers that ask",
    ),
    p(
        "smtp_sasl_password_maps",
        L,
        "",
        "SMTP client: user:password per next hop",
    ),
    p(
        "smtp_tcp_port",
        int(1, 65535),
        "25",
        "SMTP port when a next hop names none",
    ),
    p(
        "smtp_tls_CAfile",
        S,
        "",
        "SMTP client: trusted CA certificates (PEM)",
    ),
    p(
        "smtp_tls_security_level",
        S,
        "may",
        "SMTP client: none, may, encrypt or verify",
    ),
    p(
        "smtpd_banner",
        S,
        "$myhostname ESMTP Petrel",
        "text after 220 in the SMTP greeting",
    ),
    p(
        "smtpd_client_connection_count_limit",
        int(0, 100000),
        "50",
        "most simultaneous connections from one client address per smtpd process (0 = no limit)",
    ),
    p(
        "smtpd_connection_limit",
        int(1, 1000000),
        "2000",
        "most simultaneous connections one smtpd process serves",
    ),
    p("smtpd_greet_delay", T, "0s", "wait this long before the greeting and refuse clients that talk first (0 = greet at once)"),
    p(
        "smtpd_hard_error_limit",
        int(1, 1000),
        "20",
        "errors after which smtpd says 421 and disconnects",
    ),
    p(
        "smtpd_recipient_limit",
        int(1, 100000),
        "1000",
        "most recipients per message",
    ),
    p(
        "smtpd_recipient_restrictions",
        L,
        "",
        "restrictions applied to RCPT after smtpd_relay_restrictions",
    ),
    p(
        "smtpd_reject_unlisted_recipient",
        Kind::Bool,
        "yes",
        "reject unknown users of local domains at RCPT time with 550 5.1.1",
    ),
    p(
        "smtpd_relay_restrictions",
        L,
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        "restrictions that decide who may relay",
    ),
    p("smtpd_sasl_auth_enable", Kind::Bool, "no", "offer SMTP AUTH (PLAIN, LOGIN) checked by authd"),
    p("smtpd_sender_login_maps", L, "", "files of sender addresses and the logins that own them; authenticated clients may only use their own"),
    p(
        "smtpd_timeout",
        T,
        "300s",
        "idle time after which smtpd says 421 and disconnects",
    ),
    p("smtpd_tls_auth_only", Kind::Bool, "yes", "offer and accept AUTH only over TLS"),
    p("smtpd_tls_cert_file", S, "", "PEM certificate chain for STARTTLS and implicit TLS"),
    p("smtpd_tls_key_file", S, "$smtpd_tls_cert_file", "PEM private key matching smtpd_tls_cert_file"),
    p("smtpd_tls_security_level", S, "none", "none, may (offer STARTTLS) or encrypt (require it)"),
    p("smtpd_tls_wrappermode", Kind::Bool, "no", "implicit TLS from the first byte (port 465)"),
    p("syslog_facility", S, "mail", "syslog facility"),
    p("syslog_name", S, "petrel", "prefix of syslog program names"),
    p(
        "transport_maps",
        L,
        "",
        "lookup tables: address or domain to transport:nexthop",
    ),
    p(
        "trigger_timeout",
        T,
        "10s",
        "time limit for waking up a service",
    ),
    p(
        "user_database",
        S,
        "unix:passwd",
        "where local users come from: unix:passwd or passwd-file:PATH",
    ),
    p(
        "virtual_mail_owner",
        S,
        "petrel-vmail",
        "user that owns the mail of the password-file accounts petrel user add creates as root",
    ),
    p(
        "virtual_mailbox_base",
        S,
        "/var/vmail",
        "where petrel user add, run as root, puts a new account's home (NAME below it)",
    ),
];

/// The declaration of `name`, if Petrel knows it.
pub fn lookup(name: &str) -> Option<&'static ParamDef> {
    PARAMS
        .binary_search_by(|d| d.name.cmp(name))
        .ok()
        .map(|i| &PARAMS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in PARAMS.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn lookup_finds_known_and_rejects_unknown() {
        assert!(lookup("myhostname").is_some());
        assert!(lookup("no_such_parameter").is_none());
    }
}
