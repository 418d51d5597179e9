//! The not-authenticated state's pure parts: settings, the capability list, SASL PLAIN
//! and where a user's mailbox is.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection may stay silent before login.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// imapd_tls_security_level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// No STARTTLS.
    None,
    /// STARTTLS offered.
    May,
    /// STARTTLS required before anything but CAPABILITY, NOOP, LOGOUT, STARTTLS.
    Encrypt,
}

impl TlsLevel {
    /// The parameter's value (empty means none).
    pub fn parse(s: &str) -> Result<TlsLevel, String> {
        match s.trim() {
            "" | "none" => Ok(TlsLevel::None),
            "may" => Ok(TlsLevel::May),
            "encrypt" => Ok(TlsLevel::Encrypt),
            other => Err(format!(
                "imapd_tls_security_level: unknown value {other:?} (none, may or encrypt)"
            )),
        }
    }
}

/// imapd's parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// imapd_tls_security_level.
    pub tls_level: TlsLevel,
    /// imapd_tls_wrappermode.
    pub wrappermode: bool,
    /// imapd_tls_auth_only.
    pub auth_only: bool,
    /// imapd_timeout (after login).
    pub timeout: Duration,
    /// home_mailbox.
    pub home_mailbox: String,
    /// The largest literal total of one command (message_size_limit; 0 means 1 GiB).
    pub max_literal: u64,
}

impl Settings {
    /// From the loaded configuration.
    pub fn from_config(cfg: &petrel_config::Config) -> Result<Settings, String> {
        let size = cfg.get("message_size_limit").parse::<u64>().unwrap_or(0);
        Ok(Settings {
            tls_level: TlsLevel::parse(&cfg.get("imapd_tls_security_level"))?,
            wrappermode: cfg.get_bool("imapd_tls_wrappermode"),
            auth_only: cfg.get_bool("imapd_tls_auth_only"),
            timeout: cfg.get_time("imapd_timeout"),
            home_mailbox: cfg.get("home_mailbox"),
            max_literal: if size == 0 { 1 << 30 } else { size },
        })
    }
}

/// The capability list before login. `starttls`: TLS is possible and not active yet;
/// `login_allowed`: LOGIN and AUTHENTICATE may be used now (else LOGINDISABLED, and no
/// AUTH= mechanism is announced, as RFC 9051 asks).
pub fn preauth_capabilities(base: &str, starttls: bool, login_allowed: bool) -> String {
    let mut s = base.to_string();
    if starttls {
        s.push_str(" STARTTLS");
    }
    if login_allowed {
        s.push_str(" AUTH=PLAIN");
    } else {
        s.push_str(" LOGINDISABLED");
    }
    s
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

/// The base64 line a client sends after the `+ ` of AUTHENTICATE.
pub fn decode_sasl_line(line: &[u8]) -> Option<Vec<u8>> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

/// The Maildir of a user with home directory `home`: `home/home_mailbox` when
/// home_mailbox names a Maildir (ends in `/`); anything else is not supported yet.
pub fn maildir_path(home: &str, home_mailbox: &str) -> Result<PathBuf, String> {
    if home.is_empty() || !home.starts_with('/') {
        return Err(format!("home directory {home:?} is not an absolute path"));
    }
    if !home_mailbox.ends_with('/') {
        return Err(format!(
            "home_mailbox = {home_mailbox:?} is not a Maildir (ending in /); imapd serves Maildir only"
        ));
    }
    let rel = home_mailbox.trim_end_matches('/');
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(format!(
            "home_mailbox = {home_mailbox:?} leaves the home directory"
        ));
    }
    Ok(Path::new(home).join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(TlsLevel::parse(""), Ok(TlsLevel::None));
        assert_eq!(TlsLevel::parse("none"), Ok(TlsLevel::None));
        assert_eq!(TlsLevel::parse("may"), Ok(TlsLevel::May));
        assert_eq!(TlsLevel::parse(" encrypt "), Ok(TlsLevel::Encrypt));
        assert!(TlsLevel::parse("dane").is_err());
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            preauth_capabilities("IMAP4rev1 IDLE", true, false),
            "IMAP4rev1 IDLE STARTTLS LOGINDISABLED"
        );
        assert_eq!(
            preauth_capabilities("IMAP4rev1", false, true),
            "IMAP4rev1 AUTH=PLAIN"
        );
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
    fn maildirs() {
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
    }
}
