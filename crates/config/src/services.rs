//! `services.conf`: one service per logical line, like Postfix's `master.cf`.
//!
//! ```text
//! # service        type  private unpriv chroot wakeup maxproc command + args
//! 127.0.0.1:10025  inet  n       -      n      -      2       smtpd
//! pickup           unix  n       -      n      60     1       pickup
//!   -o queue_run_delay=60s
//! ```
//!
//! - `type` is `inet` (the service name is `[host:]port`; master opens a TCP listener) or
//!   `unix` (master opens the Unix socket `private/NAME`, or `public/NAME` when private is `n`).
//! - `-` takes the default: private `y`, unpriv `y`, chroot `n`, wakeup `0`, maxproc `1`.
//! - `unpriv y` runs the service as `mail_owner`; `n` as root (when master runs as root).
//! - `chroot y` confines it to `queue_directory`.
//! - `wakeup N` makes master poke the service every N seconds (a trailing `?` is accepted).
//! - `maxproc N` is how many processes of the service master keeps running. Petrel's
//!   daemons serve many clients each, so this is a small number, unlike Postfix's.
//! - The command is a program in `daemon_directory`; its arguments follow, including
//!   `-o name=value` parameter overrides, which master checks and passes on.

use crate::{logical_lines, params, ConfigError};
use std::path::Path;

/// How a service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceType {
    /// TCP listener on `host:port` (`host` empty means every `inet_interfaces` address).
    Inet {
        /// Listen host ("" for all).
        host: String,
        /// Listen port.
        port: u16,
    },
    /// Unix socket under `private/` or `public/`.
    Unix,
}

/// One line of `services.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The first column as written.
    pub name: String,
    /// inet or unix.
    pub kind: ServiceType,
    /// Unix socket under `private/` (true) or `public/` (false).
    pub private: bool,
    /// Run as `mail_owner` (true) or root (false).
    pub unpriv: bool,
    /// Chroot to `queue_directory`.
    pub chroot: bool,
    /// Wake-up interval in seconds (0 = none).
    pub wakeup: u32,
    /// Number of processes to keep running.
    pub maxproc: u32,
    /// Program name (in `daemon_directory`).
    pub command: String,
    /// Arguments after the command, `-o name=value` pairs included.
    pub args: Vec<String>,
    /// Line in services.conf.
    pub line: usize,
}

impl Service {
    /// The `-o name=value` overrides among the arguments.
    pub fn overrides(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == "-o" {
                if let Some(v) = it.next() {
                    out.push(v.as_str());
                }
            } else if let Some(v) = a.strip_prefix("-o") {
                out.push(v);
            }
        }
        out
    }

    /// Where a unix service's socket lives, relative to the queue directory.
    pub fn socket_path(&self) -> Option<String> {
        match self.kind {
            ServiceType::Unix => Some(format!(
                "{}/{}",
                if self.private { "private" } else { "public" },
                self.name
            )),
            ServiceType::Inet { .. } => None,
        }
    }
}

/// Reads `services.conf` from `path`.
pub fn load(path: &Path) -> Result<Vec<Service>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    parse(&text, path)
}

/// Parses the text of a `services.conf`; `file` is used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Service>, ConfigError> {
    let mut out: Vec<Service> = Vec::new();
    for (line, logical) in logical_lines(text) {
        let err = |reason: String| ConfigError {
            file: file.to_path_buf(),
            line,
            reason,
        };
        let f: Vec<&str> = logical.split_whitespace().collect();
        if f.len() < 8 {
            return Err(err(format!(
                "expected 8 or more fields (service type private unpriv chroot wakeup maxproc command), found {}",
                f.len()
            )));
        }
        let yn = |v: &str, default: bool, what: &str| -> Result<bool, ConfigError> {
            match v {
                "-" => Ok(default),
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err(err(format!("{what} field must be y, n or -, not {v:?}"))),
            }
        };
        let kind = match f[1] {
            "unix" => {
                if f[0].contains('/') || f[0].starts_with('.') {
                    return Err(err(format!("bad unix service name {:?}", f[0])));
                }
                ServiceType::Unix
            }
            "inet" => {
                let (host, port) = match f[0].rsplit_once(':') {
                    Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
                    None => ("", f[0]),
                };
                let port = port
                    .parse::<u16>()
                    .map_err(|_| err(format!("inet service {:?}: bad port {port:?}", f[0])))?;
                ServiceType::Inet {
                    host: host.to_string(),
                    port,
                }
            }
            other => {
                return Err(err(format!(
                    "unknown service type {other:?} (use inet or unix)"
                )))
            }
        };
        let private = yn(f[2], true, "private")?;
        let unpriv = yn(f[3], true, "unpriv")?;
        let chroot = yn(f[4], false, "chroot")?;
        let wakeup = match f[5].trim_end_matches('?') {
            "-" => 0,
            w => w
                .parse::<u32>()
                .map_err(|_| err(format!("bad wakeup time {w:?}")))?,
        };
        let maxproc = match f[6] {
            "-" => 1,
            m => m
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=1000).contains(&n))
                .ok_or_else(|| {
                    err(format!(
                        "maxproc must be a number from 1 to 1000, not {m:?}"
                    ))
                })?,
        };
        let command = f[7].to_string();
        if command.contains('/') {
            return Err(err(format!(
                "command {command:?} must be a program name in daemon_directory"
            )));
        }
        let svc = Service {
            name: f[0].to_string(),
            kind,
            private,
            unpriv,
            chroot,
            wakeup,
            maxproc,
            command,
            args: f[8..].iter().map(|s| s.to_string()).collect(),
            line,
        };
        for o in svc.overrides() {
            let name = o
                .split_once('=')
                .map(|(n, _)| n)
                .ok_or_else(|| err(format!("-o {o}: expected name=value")))?;
            if params::lookup(name).is_none() {
                return Err(err(format!("-o {o}: unknown parameter {name}")));
            }
        }
        if out.iter().any(|s| s.name == svc.name && s.kind == svc.kind) {
            return Err(err(format!("duplicate service {} {}", svc.name, f[1])));
        }
        out.push(svc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:10025 inet n - n - 2 smtpd
cleanup   unix  n  -  y  -  1  cleanup
qmgr      unix  n  -  -  300 1 qmgr
local     unix  -  n  n  -  4  local
   -o home_mailbox=Maildir/
pickup    unix  n  -  n  60? 1  pickup
";

    #[test]
    fn parses_a_full_file() {
        let s = parse(GOOD, Path::new("services.conf")).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[0].kind,
            ServiceType::Inet {
                host: "127.0.0.1".into(),
                port: 10025
            }
        );
        assert!(!s[0].private);
        assert_eq!(s[0].maxproc, 2);
        assert!(s[1].chroot);
        assert_eq!(s[2].wakeup, 300);
        assert!(!s[3].unpriv);
        assert!(s[3].private);
        assert_eq!(s[3].overrides(), vec!["home_mailbox=Maildir/"]);
        assert_eq!(s[3].socket_path().as_deref(), Some("private/local"));
        assert_eq!(s[4].wakeup, 60);
        assert_eq!(s[4].socket_path().as_deref(), Some("public/pickup"));
        assert_eq!(s[3].line, 5);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("a unix n - n - 1\n", "expected 8 or more fields"),
            ("a tcp n - n - 1 x\n", "unknown service type"),
            ("a unix x - n - 1 x\n", "private field"),
            ("a unix n - n - 0 x\n", "maxproc"),
            ("x:99999 inet n - n - 1 x\n", "bad port"),
            ("a unix n - n - 1 /bin/sh\n", "program name"),
            ("a unix n - n - 1 x -o bogus=1\n", "unknown parameter bogus"),
            (
                "a unix n - n - 1 x\na unix n - n - 1 y\n",
                "duplicate service",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, Path::new("services.conf")).unwrap_err();
            assert!(e.reason.contains(want), "{text:?}: {e}");
            assert!(e.line >= 1);
        }
    }
}
