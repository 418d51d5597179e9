//! The not-authenticated state: settings, the capability list, and the pre-login
//! dialogue the shared login process runs ([`ImapLogin`], a
//! `petrel_access::login::Protocol`).

use petrel_access::login::{Ctx, Failure, Protocol, Step};
use petrel_access::outbuf::Outbuf;
use petrel_access::TlsLevel;
use petrel_imap_proto::{parse_command, CommandKind, CommandReader, ReadEvent};
use petrel_imap_session::session::Session;
use std::time::Duration;

/// The longest command line (all the lines of one command together).
pub const MAX_LINE: usize = 64 * 1024;
/// The literals of one command before login (LOGIN's user name and password).
const PREAUTH_LITERAL: u64 = 8 * 1024;

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
            tls_level: TlsLevel::parse(
                "imapd_tls_security_level",
                &cfg.get("imapd_tls_security_level"),
            )?,
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

/// A connection before login.
pub struct PreAuth {
    reader: CommandReader,
    /// AUTHENTICATE PLAIN without an initial response: `+ ` was sent, the next line is
    /// the response to the command with this tag.
    sasl_tag: Option<String>,
}

/// IMAP's pre-login dialogue.
pub struct ImapLogin {
    /// imapd's settings.
    pub s: Settings,
}

impl ImapLogin {
    fn capabilities(&self, ctx: &Ctx) -> String {
        preauth_capabilities(
            Session::capabilities(),
            ctx.starttls,
            !self.s.auth_only || ctx.tls_active,
        )
    }

    /// A SASL PLAIN response: a login to check when well-formed.
    fn auth_plain(tag: String, resp: &[u8], out: &mut Outbuf) -> Step {
        match petrel_access::decode_plain(resp) {
            Ok((user, password)) => Step::Login {
                tag,
                user,
                password,
            },
            Err(why) => {
                out.send(format!("{tag} NO [AUTHENTICATIONFAILED] {why}.\r\n").as_bytes());
                Step::Next
            }
        }
    }

    /// A command in the not-authenticated state.
    fn command(&self, c: &mut PreAuth, ctx: &Ctx, bytes: &[u8], out: &mut Outbuf) -> Step {
        let cmd = match parse_command(bytes) {
            Ok(cmd) => cmd,
            Err(e) => {
                let tag = e.tag.clone().unwrap_or_else(|| "*".into());
                out.send(format!("{tag} BAD {}\r\n", e.text).as_bytes());
                return Step::Next;
            }
        };
        let tag = cmd.tag;
        let login_allowed = !self.s.auth_only || ctx.tls_active;
        let send = |out: &mut Outbuf, text: String| {
            out.send(text.as_bytes());
            Step::Next
        };
        match cmd.kind {
            CommandKind::Capability => send(
                out,
                format!(
                    "* CAPABILITY {}\r\n{tag} OK Capability completed.\r\n",
                    self.capabilities(ctx)
                ),
            ),
            CommandKind::Noop => send(out, format!("{tag} OK NOOP completed.\r\n")),
            CommandKind::Logout => {
                send(
                    out,
                    format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n"),
                );
                Step::Close
            }
            CommandKind::StartTls => {
                if ctx.tls_active {
                    send(out, format!("{tag} BAD TLS is already active.\r\n"))
                } else if !ctx.starttls {
                    send(out, format!("{tag} BAD STARTTLS is not available.\r\n"))
                } else {
                    out.send(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes());
                    // Whatever was pipelined after STARTTLS came in plaintext: drop it.
                    c.reader = CommandReader::new(MAX_LINE, PREAUTH_LITERAL);
                    Step::StartTls
                }
            }
            CommandKind::Done => send(out, "* BAD Not idling\r\n".into()),
            _ if self.s.tls_level == TlsLevel::Encrypt && !ctx.tls_active => send(
                out,
                format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first.\r\n"),
            ),
            CommandKind::Id(_) => send(
                out,
                format!("* ID (\"name\" \"Petrel\")\r\n{tag} OK ID completed.\r\n"),
            ),
            CommandKind::Login { .. } | CommandKind::Authenticate { .. } if !login_allowed => {
                send(
                    out,
                    format!(
                        "{tag} NO [PRIVACYREQUIRED] Plaintext authentication is not allowed without TLS.\r\n"
                    ),
                )
            }
            CommandKind::Login { user, password } => Step::Login {
                tag,
                user,
                password,
            },
            CommandKind::Authenticate { mechanism, initial } => {
                if mechanism != "PLAIN" {
                    send(
                        out,
                        format!("{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n"),
                    )
                } else if let Some(resp) = initial {
                    Self::auth_plain(tag, &resp, out)
                } else {
                    out.send(b"+ \r\n");
                    c.reader.expect_response();
                    c.sasl_tag = Some(tag);
                    Step::Next
                }
            }
            _ => send(out, format!("{tag} BAD Log in first.\r\n")),
        }
    }
}

impl Protocol for ImapLogin {
    type Conn = PreAuth;

    fn service(&self) -> &'static str {
        "imapd"
    }

    fn conn(&self) -> PreAuth {
        PreAuth {
            reader: CommandReader::new(MAX_LINE, PREAUTH_LITERAL),
            sasl_tag: None,
        }
    }

    fn push(&self, c: &mut PreAuth, input: &[u8]) {
        c.reader.push(input);
    }

    fn take_unread(&self, c: &mut PreAuth) -> Vec<u8> {
        c.reader.take_unread()
    }

    fn greeting(&self, ctx: &Ctx) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] Petrel IMAP ready.\r\n",
            self.capabilities(ctx)
        )
        .into_bytes()
    }

    fn step(&self, c: &mut PreAuth, ctx: &Ctx, out: &mut Outbuf) -> Step {
        let Some(ev) = c.reader.next() else {
            return Step::NeedInput;
        };
        match ev {
            ReadEvent::NeedContinuation => {
                out.send(b"+ Ready for literal data\r\n");
                Step::Next
            }
            ReadEvent::Bad { tag, text, fatal } => {
                if fatal {
                    out.send(format!("* BYE {text}\r\n").as_bytes());
                    return Step::Close;
                }
                let tag = tag.unwrap_or_else(|| "*".into());
                out.send(format!("{tag} BAD {text}\r\n").as_bytes());
                c.sasl_tag = None;
                Step::Next
            }
            ReadEvent::Command(bytes) => match c.sasl_tag.take() {
                // The line answering AUTHENTICATE's `+`.
                Some(tag) => {
                    if bytes == b"*" {
                        out.send(format!("{tag} BAD Authentication cancelled.\r\n").as_bytes());
                        return Step::Next;
                    }
                    match petrel_access::decode_sasl_line(&bytes) {
                        Some(resp) => Self::auth_plain(tag, &resp, out),
                        None => {
                            out.send(format!("{tag} BAD Invalid base64 data.\r\n").as_bytes());
                            Step::Next
                        }
                    }
                }
                None => self.command(c, ctx, &bytes, out),
            },
        }
    }

    fn failure(&self, tag: &str, why: Failure) -> Vec<u8> {
        match why {
            Failure::Rejected => {
                format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
            }
            Failure::Throttled => {
                format!("{tag} NO [UNAVAILABLE] Too many failed logins; try again later.\r\n")
            }
            Failure::Temporary => {
                format!("{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n")
            }
            Failure::NoSession => format!(
                "{tag} NO [UNAVAILABLE] Your session could not be started; try again later.\r\n* BYE Internal error\r\n"
            ),
        }
        .into_bytes()
    }

    fn too_many(&self) -> &'static [u8] {
        b"* BYE [UNAVAILABLE] Too many connections\r\n"
    }

    fn autologout(&self) -> &'static [u8] {
        b"* BYE Autologout; idle for too long\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
