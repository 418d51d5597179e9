//! The AUTHORIZATION state, as the shared login process runs it ([`Pop3Login`], a
//! `petrel_access::login::Protocol`): greeting, CAPA, STLS, USER/PASS, AUTH PLAIN (with
//! or without an initial response) and QUIT. Anything else is answered `-ERR` and the
//! connection stays usable.

use crate::settings::Settings;
use petrel_access::login::{Ctx, Failure, Protocol, Step};
use petrel_access::outbuf::Outbuf;
use petrel_access::TlsLevel;
use petrel_pop3_proto::{capa, parse_command, Command, Line, LineReader, MAX_LINE};

/// A connection before login.
pub struct PreAuth {
    reader: LineReader,
    /// The name USER gave, for the PASS that follows.
    user: Option<String>,
    /// `AUTH PLAIN` without an initial response: `+ ` was sent, the next line is the
    /// response.
    sasl: bool,
}

/// POP3's pre-login dialogue.
pub struct Pop3Login {
    /// pop3d's settings.
    pub s: Settings,
}

impl Pop3Login {
    /// USER, PASS and AUTH may be used now.
    fn login_allowed(&self, ctx: &Ctx) -> bool {
        ctx.tls_active || (!self.s.auth_only && self.s.tls_level != TlsLevel::Encrypt)
    }

    /// An AUTH PLAIN response (base64): a login to check when well-formed.
    fn plain(line: &[u8], out: &mut Outbuf) -> Step {
        let decoded = petrel_access::decode_sasl_line(line);
        match decoded.as_deref().map(petrel_access::decode_plain) {
            Some(Ok((user, password))) => Step::Login {
                tag: String::new(),
                user,
                password,
            },
            Some(Err(why)) => {
                out.send(format!("-ERR [AUTH] {why}.\r\n").as_bytes());
                Step::Next
            }
            None => {
                out.send(b"-ERR Invalid base64 data.\r\n");
                Step::Next
            }
        }
    }

    fn command(&self, c: &mut PreAuth, ctx: &Ctx, line: &[u8], out: &mut Outbuf) -> Step {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                out.send(format!("-ERR {}.\r\n", e.0).as_bytes());
                return Step::Next;
            }
        };
        let say = |out: &mut Outbuf, text: &str| {
            out.send(text.as_bytes());
            Step::Next
        };
        let login_allowed = self.login_allowed(ctx);
        match cmd {
            Command::Capa => say(out, &capa(true, login_allowed, ctx.starttls)),
            Command::Quit => {
                out.send(b"+OK Logging out.\r\n");
                Step::Close
            }
            Command::Stls if ctx.tls_active => say(out, "-ERR TLS is already active.\r\n"),
            Command::Stls if !ctx.starttls => say(out, "-ERR STLS is not available.\r\n"),
            Command::Stls => {
                out.send(b"+OK Begin TLS negotiation now.\r\n");
                // Whatever was pipelined after STLS came in plaintext: drop it.
                c.reader = LineReader::new(MAX_LINE);
                c.user = None;
                Step::StartTls
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if !login_allowed => say(
                out,
                "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS.\r\n",
            ),
            Command::User(name) => {
                c.user = Some(name);
                say(out, "+OK\r\n")
            }
            Command::Pass(password) => match c.user.take() {
                Some(user) => Step::Login {
                    tag: String::new(),
                    user,
                    password,
                },
                None => say(out, "-ERR No user name given; USER first.\r\n"),
            },
            Command::Auth {
                mechanism: None, ..
            } => say(out, "+OK\r\nPLAIN\r\n.\r\n"),
            Command::Auth {
                mechanism: Some(m),
                initial,
            } => {
                if m != "PLAIN" {
                    return say(out, "-ERR Unsupported authentication mechanism.\r\n");
                }
                match initial {
                    Some(resp) => Self::plain(resp.as_bytes(), out),
                    None => {
                        c.sasl = true;
                        say(out, "+ \r\n")
                    }
                }
            }
            Command::Noop
            | Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_) => say(out, "-ERR Log in first.\r\n"),
        }
    }
}

impl Protocol for Pop3Login {
    type Conn = PreAuth;

    fn service(&self) -> &'static str {
        "pop3d"
    }

    fn conn(&self) -> PreAuth {
        PreAuth {
            reader: LineReader::new(MAX_LINE),
            user: None,
            sasl: false,
        }
    }

    fn push(&self, c: &mut PreAuth, input: &[u8]) {
        c.reader.push(input);
    }

    fn take_unread(&self, c: &mut PreAuth) -> Vec<u8> {
        c.reader.take_unread()
    }

    fn greeting(&self, _ctx: &Ctx) -> Vec<u8> {
        b"+OK Petrel POP3 ready.\r\n".to_vec()
    }

    fn step(&self, c: &mut PreAuth, ctx: &Ctx, out: &mut Outbuf) -> Step {
        match c.reader.next_line() {
            None => Step::NeedInput,
            Some(Line::TooLong) => {
                c.sasl = false;
                out.send(b"-ERR Line too long.\r\n");
                Step::Next
            }
            Some(Line::Line(line)) if std::mem::take(&mut c.sasl) => {
                if line == b"*" {
                    out.send(b"-ERR Authentication cancelled.\r\n");
                    return Step::Next;
                }
                Self::plain(&line, out)
            }
            Some(Line::Line(line)) => self.command(c, ctx, &line, out),
        }
    }

    fn failure(&self, _tag: &str, why: Failure) -> Vec<u8> {
        match why {
            Failure::Rejected => &b"-ERR [AUTH] Authentication failed.\r\n"[..],
            Failure::Throttled => b"-ERR [SYS/TEMP] Too many failed logins; try again later.\r\n",
            Failure::Temporary => b"-ERR [SYS/TEMP] Temporary authentication failure.\r\n",
            Failure::NoSession => {
                b"-ERR [SYS/TEMP] Your session could not be started; try again later.\r\n"
            }
        }
        .to_vec()
    }

    fn too_many(&self) -> &'static [u8] {
        b"-ERR [SYS/TEMP] Too many connections.\r\n"
    }

    fn autologout(&self) -> &'static [u8] {
        b"-ERR Autologout; idle for too long.\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn settings(auth_only: bool) -> Settings {
        Settings {
            tls_level: TlsLevel::May,
            wrappermode: false,
            auth_only,
            timeout: Duration::from_secs(600),
            home_mailbox: "Maildir/".into(),
            mail_spool: "/var/mail".into(),
        }
    }

    /// Feeds `input`, runs steps until input is needed; returns the output and the steps
    /// other than Next / NeedInput.
    fn run(p: &Pop3Login, c: &mut PreAuth, ctx: &Ctx, input: &[u8]) -> (String, Vec<Step>) {
        let mut out = Outbuf::new(Instant::now());
        p.push(c, input);
        let mut steps = Vec::new();
        loop {
            match p.step(c, ctx, &mut out) {
                Step::NeedInput => break,
                Step::Next => {}
                s => steps.push(s),
            }
        }
        (String::from_utf8_lossy(&out.take()).to_string(), steps)
    }

    const PLAIN: Ctx = Ctx {
        tls_active: false,
        starttls: true,
    };
    const TLS: Ctx = Ctx {
        tls_active: true,
        starttls: false,
    };

    #[test]
    fn user_pass_gives_a_login() {
        let p = Pop3Login { s: settings(false) };
        let mut c = p.conn();
        let (out, steps) = run(&p, &mut c, &PLAIN, b"USER demo\r\nPASS two words\r\n");
        assert_eq!(out, "+OK\r\n");
        assert_eq!(
            steps,
            vec![Step::Login {
                tag: String::new(),
                user: "demo".into(),
                password: "two words".into()
            }]
        );
        let (out, steps) = run(&p, &mut c, &PLAIN, b"PASS x\r\n");
        assert!(out.starts_with("-ERR No user name"), "{out}");
        assert!(steps.is_empty());
    }

    #[test]
    fn plaintext_login_is_refused_before_tls_when_auth_only() {
        let p = Pop3Login { s: settings(true) };
        let mut c = p.conn();
        let (out, _) = run(&p, &mut c, &PLAIN, b"CAPA\r\nUSER demo\r\n");
        assert!(
            out.contains("STLS\r\n") && !out.contains("USER\r\n"),
            "{out}"
        );
        assert!(out.contains("-ERR [AUTH] Plaintext"), "{out}");
        let (out, steps) = run(&p, &mut c, &PLAIN, b"STLS\r\nUSER smuggled\r\n");
        assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
        assert_eq!(steps, vec![Step::StartTls]);
        assert!(
            p.take_unread(&mut c).is_empty(),
            "pipelined plaintext dropped"
        );
        let (out, _) = run(&p, &mut c, &TLS, b"CAPA\r\n");
        assert!(
            out.contains("USER\r\n") && out.contains("SASL PLAIN\r\n"),
            "{out}"
        );
        assert!(!out.contains("STLS"), "{out}");
    }

    #[test]
    fn auth_plain_with_and_without_initial_response() {
        let p = Pop3Login { s: settings(false) };
        let mut c = p.conn();
        // "\0demo\0secret"
        let (_, steps) = run(&p, &mut c, &PLAIN, b"AUTH PLAIN AGRlbW8Ac2VjcmV0\r\n");
        assert!(
            matches!(&steps[..], [Step::Login { user, password, .. }] if user == "demo" && password == "secret")
        );
        let (out, steps) = run(&p, &mut c, &PLAIN, b"AUTH PLAIN\r\n");
        assert_eq!(out, "+ \r\n");
        assert!(steps.is_empty());
        let (_, steps) = run(&p, &mut c, &PLAIN, b"AGRlbW8Ac2VjcmV0\r\n");
        assert_eq!(steps.len(), 1);
        let (out, _) = run(&p, &mut c, &PLAIN, b"AUTH PLAIN\r\n*\r\n");
        assert!(out.ends_with("-ERR Authentication cancelled.\r\n"), "{out}");
        let (out, _) = run(
            &p,
            &mut c,
            &PLAIN,
            b"AUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nAUTH\r\n",
        );
        assert!(out.contains("-ERR Invalid base64"), "{out}");
        assert!(out.contains("-ERR Unsupported"), "{out}");
        assert!(out.ends_with("+OK\r\nPLAIN\r\n.\r\n"), "{out}");
        // Someone else's authorization identity.
        let (out, steps) = run(
            &p,
            &mut c,
            &PLAIN,
            b"AUTH PLAIN YWRtaW4AZGVtbwBzZWNyZXQ=\r\n",
        );
        assert!(out.starts_with("-ERR [AUTH]"), "{out}");
        assert!(steps.is_empty());
    }

    #[test]
    fn wrong_state_and_hostile_lines_leave_the_session_usable() {
        let p = Pop3Login { s: settings(false) };
        let mut c = p.conn();
        let mut input = b"STAT\r\nRETR 1\r\nBOGUS\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'A', 10_000));
        input.extend_from_slice(b"\r\nUSER\x00x\r\nQUIT\r\n");
        let (out, steps) = run(&p, &mut c, &PLAIN, &input);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("-ERR Log in first"), "{out}");
        assert!(lines[1].starts_with("-ERR Log in first"), "{out}");
        assert!(lines[2].starts_with("-ERR unknown command"), "{out}");
        assert!(lines[3].starts_with("-ERR Line too long"), "{out}");
        assert!(lines[4].starts_with("-ERR "), "{out}");
        assert_eq!(lines[5], "+OK Logging out.");
        assert_eq!(steps, vec![Step::Close]);
    }
}
