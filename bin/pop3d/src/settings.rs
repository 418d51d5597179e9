//! pop3d's parameters, and where a user's maildrop is.

use petrel_access::TlsLevel;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// pop3d's parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// pop3d_tls_security_level.
    pub tls_level: TlsLevel,
    /// pop3d_tls_wrappermode.
    pub wrappermode: bool,
    /// pop3d_tls_auth_only.
    pub auth_only: bool,
    /// pop3d_timeout (after login).
    pub timeout: Duration,
    /// home_mailbox.
    pub home_mailbox: String,
    /// mail_spool_directory.
    pub mail_spool: PathBuf,
}

impl Settings {
    /// From the loaded configuration.
    pub fn from_config(cfg: &petrel_config::Config) -> Result<Settings, String> {
        Ok(Settings {
            tls_level: TlsLevel::parse(
                "pop3d_tls_security_level",
                &cfg.get("pop3d_tls_security_level"),
            )?,
            wrappermode: cfg.get_bool("pop3d_tls_wrappermode"),
            auth_only: cfg.get_bool("pop3d_tls_auth_only"),
            timeout: cfg.get_time("pop3d_timeout"),
            home_mailbox: cfg.get("home_mailbox"),
            mail_spool: PathBuf::from(cfg.get("mail_spool_directory")),
        })
    }
}

/// Where a user's mail is: the same place `local` delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `home/home_mailbox` when home_mailbox ends in `/`.
    Maildir(PathBuf),
    /// `mail_spool_directory/USER` when home_mailbox is empty, else `home/home_mailbox`.
    Mbox(PathBuf),
}

impl Settings {
    /// The maildrop of `user` with home directory `home`.
    pub fn location(&self, user: &str, home: &str) -> Result<Location, String> {
        if self.home_mailbox.ends_with('/') {
            return petrel_access::maildir_path(home, &self.home_mailbox).map(Location::Maildir);
        }
        if self.home_mailbox.is_empty() {
            if user.is_empty() || user.contains('/') || user.starts_with('.') {
                return Err(format!("user name {user:?} cannot name a mailbox file"));
            }
            return Ok(Location::Mbox(Path::new(&self.mail_spool).join(user)));
        }
        petrel_access::home_path(home, &self.home_mailbox).map(Location::Mbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(home_mailbox: &str) -> Settings {
        Settings {
            tls_level: TlsLevel::May,
            wrappermode: false,
            auth_only: true,
            timeout: Duration::from_secs(600),
            home_mailbox: home_mailbox.into(),
            mail_spool: "/var/mail".into(),
        }
    }

    #[test]
    fn locations_follow_local() {
        assert_eq!(
            s("Maildir/").location("demo", "/home/demo"),
            Ok(Location::Maildir("/home/demo/Maildir".into()))
        );
        assert_eq!(
            s("").location("demo", "/home/demo"),
            Ok(Location::Mbox("/var/mail/demo".into()))
        );
        assert_eq!(
            s("mbox").location("demo", "/home/demo"),
            Ok(Location::Mbox("/home/demo/mbox".into()))
        );
        assert!(s("").location("../etc", "/h").is_err());
        assert!(s("../x").location("demo", "/home/demo").is_err());
    }
}
