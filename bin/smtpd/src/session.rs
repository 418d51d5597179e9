//! One SMTP session as a state machine: bytes from the client in, [`Action`]s out (replies
//! to send, frames for cleanup, close). No sockets: the server loop carries the actions
//! out, and the tests drive it directly.
//!
//! The order of replies is the order of commands, so PIPELINING needs nothing special:
//! while a message waits for cleanup's answer the session reads no further commands (they
//! wait in the line buffer), and resumes when the answer comes.

use crate::policy::{self, Facts, Settings, TlsLevel, Verdict};
use base64::Engine as _;
use petrel_ipc::auth::Reply as AuthReply;
use petrel_ipc::cleanup::{Reply as CleanupReply, Request};
use petrel_ipc::Rcpt;
use petrel_smtp_proto::{
    parse_command, BdatDecoder, Command, DataDecoder, DataEvent, Line, LineReader, MailParams,
    Mailbox, RcptParams, Reply, ReversePath,
};
use std::net::IpAddr;
use std::sync::Arc;

/// What the server must do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Send this to cleanup (the stream was opened with [`Ctx::open_cleanup`]).
    Cleanup(Request),
    /// Flush what was sent, then close the connection.
    Close,
    /// Flush what was sent (the 220), then start TLS on the connection and call
    /// [`Session::tls_started`] when the handshake is done.
    StartTls,
    /// Check these credentials with authd and call [`Session::auth_reply`].
    Auth {
        /// The login name.
        user: String,
        /// The password.
        password: String,
    },
}

/// What the session asks of the server.
pub trait Ctx {
    /// Makes sure a cleanup stream is open for this session; false when cleanup cannot be
    /// reached.
    fn open_cleanup(&mut self) -> bool;
    /// Whether `local` is a known local recipient (`Err` = cannot tell now).
    fn local_exists(&mut self, local: &str) -> Result<bool, String>;
}

#[derive(Debug)]
enum State {
    Command,
    Data(DataDecoder),
    /// Reading a BDAT chunk (the decoder is `Session::bdat_dec`): is it the LAST one, and
    /// the refusal to give once it is read (chunks are always read, even when refused).
    Bdat {
        last: bool,
        refuse: Option<Reply>,
        chunk: u64,
    },
    /// The message went to cleanup; waiting for its answer.
    AwaitCleanup,
    /// STARTTLS was answered; waiting for the handshake.
    AwaitTls,
    /// Credentials went to authd; waiting for its answer.
    AwaitAuth,
    Closed,
}

struct Transaction {
    sender: ReversePath,
    params: MailParams,
    rcpts: Vec<(Mailbox, RcptParams)>,
    /// cleanup has the Begin frame.
    streaming: bool,
    /// Stop forwarding bytes: the message will be refused at its end with this reply.
    refused: Option<Reply>,
    bdat_started: bool,
}

/// Command counts for the disconnect log line.
#[derive(Default, Debug)]
pub struct Counts {
    pub list: Vec<(&'static str, u32)>,
}

impl Counts {
    fn add(&mut self, name: &'static str) {
        match self.list.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.list.push((name, 1)),
        }
    }

    /// `ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5`
    pub fn summary(&self) -> String {
        let total: u32 = self.list.iter().map(|(_, c)| c).sum();
        let mut s: Vec<String> = self.list.iter().map(|(n, c)| format!("{n}={c}")).collect();
        s.push(format!("commands={total}"));
        s.join(" ")
    }
}

/// One client's session.
pub struct Session {
    s: Arc<Settings>,
    ip: IpAddr,
    client_name: String,
    trusted: bool,
    lines: LineReader,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    bdat_dec: BdatDecoder,
    /// TLS version and cipher, once TLS is on.
    tls: Option<String>,
    /// The authenticated login and mechanism.
    auth: Option<(String, &'static str)>,
    /// An AUTH exchange in progress (the next line is a SASL response).
    sasl: Option<Sasl>,
    pending_mech: &'static str,
    pub counts: Counts,
}

/// Where an AUTH exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sasl {
    /// PLAIN without an initial response: waiting for it.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn reply(code: u16, enhanced: &str, text: impl Into<String>) -> Action {
    Action::Send(Reply::new(code, enhanced, text).to_bytes())
}

impl Session {
    /// A new session; the greeting is the first action.
    pub fn new(s: Arc<Settings>, ip: IpAddr) -> (Session, Vec<Action>) {
        let greeting = Action::Send(format!("220 {}\r\n", s.banner).into_bytes());
        let sess = Session {
            trusted: s.trusted(ip),
            lines: LineReader::new(s.line_length_limit),
            s,
            ip,
            client_name: "unknown".into(),
            state: State::Command,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            bdat_dec: BdatDecoder::new(),
            tls: None,
            auth: None,
            sasl: None,
            pending_mech: "",
            counts: Counts::default(),
        };
        (sess, vec![greeting])
    }

    /// `unknown[127.0.0.1]`, as logs name the client.
    pub fn client(&self) -> String {
        format!("{}[{}]", self.client_name, self.ip)
    }

    /// True while the session takes input (not waiting for cleanup, not closed).
    pub fn wants_input(&self) -> bool {
        !matches!(
            self.state,
            State::AwaitCleanup | State::AwaitTls | State::AwaitAuth | State::Closed
        )
    }

    /// The TLS handshake is done (STARTTLS, or at once with implicit TLS).
    // The server calls this once the TLS transport is wired in (issue 4, in progress).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn tls_started(&mut self, description: String, ctx: &mut dyn Ctx) -> Vec<Action> {
        self.tls = Some(description);
        // RFC 3207: the client must start over; nothing said before counts.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.state = State::Command;
        let mut out = Vec::new();
        self.run(ctx, &mut out);
        out
    }

    /// authd answered an AUTH exchange.
    pub fn auth_reply(&mut self, r: AuthReply, ctx: &mut dyn Ctx) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.state, State::AwaitAuth) {
            return out;
        }
        let mechanism = self.pending_mech;
        self.state = State::Command;
        match r {
            AuthReply::Ok { user, .. } | AuthReply::Ticket { user, .. } => {
                log::info!(
                    "{}: sasl_method={mechanism}, sasl_username={user}",
                    self.client()
                );
                self.auth = Some((user, mechanism));
                out.push(reply(235, "2.7.0", "Authentication successful"));
            }
            AuthReply::Fail => {
                log::warn!("{}: SASL {mechanism} authentication failed", self.client());
                out.push(reply(535, "5.7.8", "Error: authentication failed"));
                self.count_error(&mut out);
            }
            AuthReply::Throttled => {
                log::warn!(
                    "{}: SASL {mechanism} refused: too many failed logins",
                    self.client()
                );
                out.push(reply(
                    454,
                    "4.7.0",
                    "Error: too many failed logins; try again later",
                ));
                self.count_error(&mut out);
            }
            AuthReply::Temporary { reason } => {
                log::warn!("{}: SASL {mechanism}: {reason}", self.client());
                out.push(reply(454, "4.7.0", "Temporary authentication failure"));
            }
        }
        self.run(ctx, &mut out);
        out
    }

    /// The name cleanup puts in the Received header: ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    fn protocol(&self) -> String {
        let mut p = String::from(if self.esmtp { "ESMTP" } else { "SMTP" });
        if self.tls.is_some() {
            p.push('S');
        }
        if self.auth.is_some() {
            p.push('A');
        }
        p
    }

    fn tls_offered(&self) -> bool {
        self.s.tls_available
            && self.s.tls_level != TlsLevel::None
            && !self.s.tls_wrappermode
            && self.tls.is_none()
    }

    fn auth_offered(&self) -> bool {
        self.s.sasl_enabled && (self.tls.is_some() || !self.s.tls_auth_only)
    }

    /// With `smtpd_tls_security_level = encrypt`, nothing but EHLO/HELO/STARTTLS/NOOP/
    /// RSET/QUIT before TLS.
    fn needs_tls(&mut self, out: &mut Vec<Action>) -> bool {
        if self.s.tls_level == TlsLevel::Encrypt && self.tls.is_none() {
            self.error(out, 530, "5.7.0", "Must issue a STARTTLS command first");
            return true;
        }
        false
    }

    /// True while a message is open in cleanup (the server aborts it if the client goes).
    pub fn message_open(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.streaming)
    }

    /// Bytes from the client.
    pub fn input(&mut self, bytes: &[u8], ctx: &mut dyn Ctx) -> Vec<Action> {
        let mut out = Vec::new();
        match &mut self.state {
            State::Command | State::AwaitCleanup | State::AwaitAuth => self.lines.push(bytes),
            // The server does not read from the client while the TLS handshake is pending.
            State::AwaitTls => return out,
            State::Data(_) | State::Bdat { .. } => self.feed_body(bytes.to_vec(), &mut out),
            State::Closed => return out,
        }
        self.run(ctx, &mut out);
        out
    }

    /// cleanup answered the message in flight.
    pub fn cleanup_reply(&mut self, r: CleanupReply, ctx: &mut dyn Ctx) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.state, State::AwaitCleanup) {
            return out;
        }
        match r {
            CleanupReply::Queued { id } => {
                match &self.auth {
                    Some((u, m)) => log::info!(
                        "{id}: client={}, sasl_method={m}, sasl_username={u}",
                        self.client()
                    ),
                    None => log::info!("{id}: client={}", self.client()),
                }
                out.push(reply(250, "2.0.0", format!("Ok: queued as {id}")));
            }
            CleanupReply::Failed {
                temporary,
                dsn,
                reason,
            } => {
                let code = if temporary {
                    if dsn == "4.3.1" {
                        452
                    } else {
                        451
                    }
                } else {
                    554
                };
                log::warn!(
                    "NOQUEUE: message not queued for {}: {dsn} {reason}",
                    self.client()
                );
                out.push(reply(code, &dsn, format!("Error: {reason}")));
                self.errors += 1;
            }
        }
        self.tx = None;
        self.state = State::Command;
        self.run(ctx, &mut out);
        out
    }

    /// cleanup's stream broke.
    pub fn cleanup_lost(&mut self, ctx: &mut dyn Ctx) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(tx) = self.tx.as_mut() {
            if tx.streaming {
                tx.streaming = false;
                tx.refused.get_or_insert_with(|| {
                    Reply::new(451, "4.3.0", "Error: queue file write error")
                });
            }
        }
        if matches!(self.state, State::AwaitCleanup) {
            out.push(reply(451, "4.3.0", "Error: queue file write error"));
            self.tx = None;
            self.state = State::Command;
            self.run(ctx, &mut out);
        }
        out
    }

    /// The client was idle too long.
    pub fn timeout(&mut self) -> Vec<Action> {
        self.state = State::Closed;
        vec![
            reply(
                421,
                "4.4.2",
                format!("{} Error: timeout exceeded", self.s.myhostname),
            ),
            Action::Close,
        ]
    }

    /// Processes buffered command lines while the session takes commands.
    fn run(&mut self, ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        while matches!(self.state, State::Command) {
            let Some(line) = self.lines.next_line() else {
                return;
            };
            if let Some(step) = self.sasl.take() {
                match line {
                    Line::Ok(l) => self.sasl_response(step, &l, out),
                    _ => self.error(out, 501, "5.5.2", "Error: bad SASL response"),
                }
                continue;
            }
            match line {
                Line::Ok(l) => self.command(&l, ctx, out),
                Line::BareLf(_) => self.error(out, 500, "5.5.2", "Error: bare <LF> received"),
                Line::TooLong { .. } => self.error(out, 500, "5.5.2", "Error: line too long"),
            }
        }
    }

    fn error(&mut self, out: &mut Vec<Action>, code: u16, enhanced: &str, text: &str) {
        out.push(reply(code, enhanced, text));
        self.count_error(out);
    }

    fn count_error(&mut self, out: &mut Vec<Action>) {
        self.errors += 1;
        if self.errors >= self.s.hard_error_limit {
            log::warn!("too many errors from {}", self.client());
            out.push(reply(
                421,
                "4.7.0",
                format!("{} Error: too many errors", self.s.myhostname),
            ));
            out.push(Action::Close);
            self.state = State::Closed;
        }
    }

    fn command(&mut self, line: &[u8], ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        if line.contains(&0) {
            self.counts.add("unknown");
            return self.error(out, 500, "5.5.2", "Error: NUL character in command");
        }
        if line.contains(&b'\r') {
            self.counts.add("unknown");
            return self.error(out, 500, "5.5.2", "Error: bare <CR> received");
        }
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                self.counts.add("unknown");
                out.push(Action::Send(e.reply().to_bytes()));
                return self.count_error(out);
            }
        };
        match cmd {
            Command::Ehlo(h) | Command::Helo(h) if h.is_empty() => {
                self.error(out, 501, "5.5.4", "Syntax: EHLO hostname")
            }
            Command::Ehlo(h) => {
                self.counts.add("ehlo");
                self.abort_tx(out);
                self.helo = Some(h);
                self.esmtp = true;
                let ext = vec![
                    "PIPELINING".to_string(),
                    format!("SIZE {}", self.s.message_size_limit),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "SMTPUTF8".into(),
                    "DSN".into(),
                    "CHUNKING".into(),
                ];
                let mut ext = ext;
                if self.tls_offered() {
                    ext.insert(1, "STARTTLS".into());
                }
                if self.auth_offered() {
                    ext.insert(1, "AUTH PLAIN LOGIN".into());
                }
                out.push(Action::Send(
                    Reply::ehlo(&self.s.myhostname, "", &ext).to_bytes(),
                ));
            }
            Command::Helo(h) => {
                self.counts.add("helo");
                self.abort_tx(out);
                self.helo = Some(h);
                self.esmtp = false;
                out.push(Action::Send(
                    format!("250 {}\r\n", self.s.myhostname).into_bytes(),
                ));
            }
            Command::Mail { from, params } => self.mail(from, params, out),
            Command::Rcpt { to, params } => self.rcpt(to, params, ctx, out),
            Command::Data => self.data(ctx, out),
            Command::Bdat { size, last } => self.bdat(size, last, ctx, out),
            Command::Rset => {
                self.counts.add("rset");
                self.abort_tx(out);
                out.push(reply(250, "2.0.0", "Ok"));
            }
            Command::Noop => {
                self.counts.add("noop");
                out.push(reply(250, "2.0.0", "Ok"));
            }
            Command::Quit => {
                self.counts.add("quit");
                self.abort_tx(out);
                out.push(reply(221, "2.0.0", "Bye"));
                out.push(Action::Close);
                self.state = State::Closed;
            }
            Command::Help(_) => {
                self.counts.add("help");
                out.push(reply(
                    214,
                    "2.0.0",
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
                ));
            }
            Command::Vrfy(arg) => {
                self.counts.add("vrfy");
                self.vrfy(&arg, ctx, out);
            }
            Command::Expn(_) => {
                self.counts.add("expn");
                self.error(out, 502, "5.5.1", "Error: EXPN is disabled");
            }
            Command::StartTls => {
                self.counts.add("starttls");
                self.starttls(out);
            }
            Command::Auth { mechanism, initial } => {
                self.counts.add("auth");
                self.auth_command(&mechanism, initial, out);
            }
        }
    }

    fn starttls(&mut self, out: &mut Vec<Action>) {
        if self.tls.is_some() {
            return self.error(out, 554, "5.5.1", "Error: TLS already active");
        }
        if !self.tls_offered() {
            return self.error(out, 502, "5.5.1", "Error: command not implemented");
        }
        out.push(reply(220, "2.0.0", "Ready to start TLS"));
        out.push(Action::StartTls);
        // Anything the client sent after STARTTLS in plaintext is discarded, never
        // executed inside the TLS session (CVE-2011-0411).
        self.lines.clear();
        self.abort_tx(out);
        self.state = State::AwaitTls;
    }

    fn auth_command(&mut self, mechanism: &str, initial: Option<String>, out: &mut Vec<Action>) {
        if !self.s.sasl_enabled {
            return self.error(out, 503, "5.5.1", "Error: authentication not enabled");
        }
        if self.needs_tls(out) {
            return;
        }
        if !self.auth_offered() {
            return self.error(
                out,
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        if self.auth.is_some() {
            return self.error(out, 503, "5.5.1", "Error: already authenticated");
        }
        if self.tx.is_some() {
            return self.error(out, 503, "5.5.1", "Error: MAIL transaction in progress");
        }
        match (mechanism, initial) {
            ("PLAIN", None) => {
                out.push(Action::Send(b"334 \r\n".to_vec()));
                self.sasl = Some(Sasl::Plain);
            }
            ("PLAIN", Some(i)) => self.sasl_response(Sasl::Plain, i.as_bytes(), out),
            ("LOGIN", None) => {
                out.push(Action::Send(b"334 VXNlcm5hbWU6\r\n".to_vec()));
                self.sasl = Some(Sasl::LoginUser);
            }
            ("LOGIN", Some(i)) => self.sasl_response(Sasl::LoginUser, i.as_bytes(), out),
            _ => self.error(
                out,
                504,
                "5.5.4",
                "Error: unsupported authentication mechanism",
            ),
        }
    }

    /// One client line during an AUTH exchange.
    fn sasl_response(&mut self, step: Sasl, line: &[u8], out: &mut Vec<Action>) {
        let text = String::from_utf8_lossy(line).trim().to_string();
        if text == "*" {
            return self.error(out, 501, "5.7.0", "Authentication aborted");
        }
        let decoded = if text == "=" {
            Some(Vec::new())
        } else {
            b64(&text)
        };
        let Some(decoded) = decoded else {
            return self.error(out, 501, "5.5.2", "Error: invalid base64 data");
        };
        match step {
            Sasl::Plain => {
                // authzid NUL authcid NUL passwd; no proxy logins.
                let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                let [authz, user, pass] = parts.as_slice() else {
                    return self.error(out, 501, "5.5.2", "Error: invalid PLAIN response");
                };
                if !authz.is_empty() && authz != user {
                    return self.error(
                        out,
                        535,
                        "5.7.8",
                        "Error: authentication failed: authorization identity not allowed",
                    );
                }
                let (user, pass) = (user.to_vec(), pass.to_vec());
                self.ask_authd("PLAIN", &user, &pass, out);
            }
            Sasl::LoginUser => {
                out.push(Action::Send(b"334 UGFzc3dvcmQ6\r\n".to_vec()));
                self.sasl = Some(Sasl::LoginPassword(
                    String::from_utf8_lossy(&decoded).to_string(),
                ));
            }
            Sasl::LoginPassword(user) => {
                let user = user.into_bytes();
                self.ask_authd("LOGIN", &user, &decoded, out);
            }
        }
    }

    fn ask_authd(&mut self, mech: &'static str, user: &[u8], pass: &[u8], out: &mut Vec<Action>) {
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(pass))
        else {
            return self.error(out, 535, "5.7.8", "Error: authentication failed");
        };
        if user.is_empty()
            || user.len() > 256
            || password.len() > 1024
            || user.chars().any(char::is_control)
        {
            return self.error(out, 535, "5.7.8", "Error: authentication failed");
        }
        self.pending_mech = mech;
        self.state = State::AwaitAuth;
        out.push(Action::Auth {
            user: user.to_string(),
            password: password.to_string(),
        });
    }

    fn vrfy(&mut self, arg: &str, ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        if self.s.disable_vrfy {
            out.push(reply(
                252,
                "2.0.0",
                "Cannot VRFY user; try RCPT to attempt delivery",
            ));
            return;
        }
        let arg = arg.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = match petrel_smtp_proto::address::parse_mailbox(arg, true) {
            Ok(m) => {
                let d = m.domain_lower();
                (m.local, d)
            }
            Err(_) if !arg.is_empty() && !arg.contains(['@', ' ']) => {
                (arg.to_string(), String::new())
            }
            Err(e) => {
                return self.error(
                    out,
                    501,
                    "5.1.3",
                    &format!("Bad recipient address syntax: {e}"),
                )
            }
        };
        if !self.s.is_local_domain(&domain) {
            out.push(reply(
                252,
                "2.0.0",
                "Cannot VRFY user; try RCPT to attempt delivery",
            ));
            return;
        }
        match ctx.local_exists(&local) {
            Ok(true) => out.push(reply(250, "2.0.0", arg.to_string())),
            Ok(false) => self.error(
                out,
                550,
                "5.1.1",
                &format!(
                    "<{arg}>: Recipient address rejected: User unknown in local recipient table"
                ),
            ),
            Err(_) => self.error(
                out,
                451,
                "4.3.0",
                "Error: temporary recipient lookup failure",
            ),
        }
    }

    fn abort_tx(&mut self, out: &mut Vec<Action>) {
        if let Some(tx) = self.tx.take() {
            if tx.streaming {
                out.push(Action::Cleanup(Request::Abort));
            }
        }
    }

    fn mail(&mut self, from: ReversePath, params: MailParams, out: &mut Vec<Action>) {
        self.counts.add("mail");
        if self.needs_tls(out) {
            return;
        }
        if let (Some((login, _)), ReversePath::Mailbox(m)) = (&self.auth, &from) {
            let addr = m.to_string();
            if self.s.sender_logins.enabled() && !self.s.sender_logins.owns(login, &addr) {
                let text = format!("<{addr}>: Sender address rejected: not owned by user {login}");
                log::info!(
                    "NOQUEUE: reject: MAIL from {}: 553 5.7.1 {text}; proto={}",
                    self.client(),
                    self.protocol()
                );
                return self.error(out, 553, "5.7.1", &text);
            }
        }
        if self.tx.is_some() {
            return self.error(out, 503, "5.5.1", "Error: nested MAIL command");
        }
        if self.s.message_size_limit > 0
            && params.size.is_some_and(|n| n > self.s.message_size_limit)
        {
            return self.error(out, 552, "5.3.4", "Message size exceeds fixed limit");
        }
        self.tx = Some(Transaction {
            sender: from,
            params,
            rcpts: Vec::new(),
            streaming: false,
            refused: None,
            bdat_started: false,
        });
        out.push(reply(250, "2.1.0", "Ok"));
    }

    fn sender_text(&self) -> String {
        match self.tx.as_ref().map(|t| &t.sender) {
            Some(ReversePath::Mailbox(m)) => m.to_string(),
            _ => String::new(),
        }
    }

    fn reject_log(&self, to: &str, r: &Reply) {
        log::info!(
            "NOQUEUE: reject: RCPT from {}: {} {} {}; from=<{}> to=<{to}> proto={} helo=<{}>",
            self.client(),
            r.code,
            r.enhanced.as_deref().unwrap_or(""),
            r.lines.join(" "),
            self.sender_text(),
            self.protocol(),
            self.helo.as_deref().unwrap_or("")
        );
    }

    fn rcpt(&mut self, to: Mailbox, params: RcptParams, ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        self.counts.add("rcpt");
        if self.needs_tls(out) {
            return;
        }
        let Some(tx) = self.tx.as_mut() else {
            return self.error(out, 503, "5.5.1", "Error: need MAIL command");
        };
        if tx.rcpts.len() >= self.s.recipient_limit {
            return self.error(out, 452, "4.5.3", "Error: too many recipients");
        }
        let smtputf8 = tx.params.smtputf8;
        let address = to.to_string();
        if to.is_utf8() && !smtputf8 {
            let r = Reply::new(
                553,
                "5.6.7",
                format!("<{address}>: non-ASCII address needs SMTPUTF8"),
            );
            self.reject_log(&address, &r);
            out.push(Action::Send(r.to_bytes()));
            return self.count_error(out);
        }
        let domain = to.domain_lower();
        let local = self.s.is_local_domain(&domain) && !to.is_address_literal();
        let local_exists = if local && self.s.reject_unlisted {
            match ctx.local_exists(&to.local) {
                Ok(b) => Some(b),
                Err(e) => {
                    log::warn!("local recipient lookup for <{address}>: {e}");
                    return self.error(
                        out,
                        451,
                        "4.3.0",
                        "Error: temporary recipient lookup failure",
                    );
                }
            }
        } else {
            None
        };
        let facts = Facts {
            client_trusted: self.trusted,
            authenticated: self.auth.is_some(),
            address: &address,
            destination_ok: local || self.s.is_relay_domain(&domain),
            local_exists,
        };
        let mut verdict = policy::evaluate(&self.s.relay_restrictions, &facts);
        if !matches!(verdict, Verdict::Reject(..)) {
            verdict = policy::evaluate(&self.s.recipient_restrictions, &facts);
        }
        if !matches!(verdict, Verdict::Reject(..)) && local_exists == Some(false) {
            verdict = policy::unknown_user(&address);
        }
        if let Verdict::Reject(code, enhanced, text) = verdict {
            let r = Reply::new(code, enhanced, text);
            self.reject_log(&address, &r);
            out.push(Action::Send(r.to_bytes()));
            return self.count_error(out);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpts.push((to, params));
        }
        out.push(reply(250, "2.1.5", "Ok"));
    }

    /// Opens the message in cleanup; on failure the reply is pushed and false returned.
    fn begin(&mut self, ctx: &mut dyn Ctx, out: &mut Vec<Action>) -> bool {
        if !ctx.open_cleanup() {
            out.push(reply(451, "4.3.0", "Error: queue file write error"));
            self.count_error(out);
            return false;
        }
        let protocol = self.protocol();
        let auth = self.auth.clone();
        let tls = self.tls.clone();
        let Some(tx) = self.tx.as_mut() else {
            return false;
        };
        let sender = match &tx.sender {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.to_string(),
        };
        let recipients = tx
            .rcpts
            .iter()
            .map(|(m, p)| Rcpt {
                address: m.to_string(),
                orcpt: p.orcpt.clone().unwrap_or_default(),
                notify: p.notify.map(|n| n.to_list()).unwrap_or_default(),
            })
            .collect();
        let mut attrs = vec![
            ("protocol".to_string(), protocol),
            ("helo".into(), self.helo.clone().unwrap_or_default()),
            ("client_name".into(), self.client_name.clone()),
            ("client_address".into(), self.ip.to_string()),
        ];
        if let Some(e) = &tx.params.envid {
            attrs.push(("envid".into(), e.clone()));
        }
        if let Some(r) = tx.params.ret {
            let v = if r == petrel_smtp_proto::Ret::Hdrs {
                "HDRS"
            } else {
                "FULL"
            };
            attrs.push(("ret".into(), v.into()));
        }
        if tx.params.smtputf8 {
            attrs.push(("smtputf8".into(), "yes".into()));
        }
        match tx.params.body {
            Some(petrel_smtp_proto::Body::EightBitMime) => {
                attrs.push(("body".into(), "8BITMIME".into()))
            }
            Some(petrel_smtp_proto::Body::BinaryMime) => {
                attrs.push(("body".into(), "BINARYMIME".into()))
            }
            _ => {}
        }
        if let Some((user, mech)) = auth {
            attrs.push(("sasl_method".into(), mech.to_string()));
            attrs.push(("sasl_username".into(), user));
        }
        if let Some(t) = tls {
            attrs.push(("tls".into(), t));
        }
        tx.streaming = true;
        out.push(Action::Cleanup(Request::Begin {
            sender,
            recipients,
            attrs,
        }));
        true
    }

    fn data(&mut self, ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        self.counts.add("data");
        if self.needs_tls(out) {
            return;
        }
        // Postfix's answers: outside a transaction "need RCPT", inside one without an
        // accepted recipient "no valid recipients".
        let Some(tx) = self.tx.as_ref() else {
            return self.error(out, 503, "5.5.1", "Error: need RCPT command");
        };
        if tx.bdat_started {
            return self.error(out, 503, "5.5.1", "Error: DATA after BDAT");
        }
        if tx.rcpts.is_empty() {
            return self.error(out, 554, "5.5.1", "Error: no valid recipients");
        }
        if !self.begin(ctx, out) {
            return;
        }
        let go_ahead = Reply {
            code: 354,
            enhanced: None,
            lines: vec!["End data with <CR><LF>.<CR><LF>".into()],
        };
        out.push(Action::Send(go_ahead.to_bytes()));
        self.state = State::Data(DataDecoder::new());
        let rest = self.lines.take_rest();
        if !rest.is_empty() {
            self.feed_body(rest, out);
        }
    }

    fn bdat(&mut self, size: u64, last: bool, ctx: &mut dyn Ctx, out: &mut Vec<Action>) {
        self.counts.add("bdat");
        // The chunk's bytes follow whatever we answer: they are read either way.
        let refuse = match self.tx.as_ref() {
            None => Some(Reply::new(503, "5.5.1", "Error: need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() => {
                Some(Reply::new(503, "5.5.1", "Error: need RCPT command"))
            }
            Some(tx) if tx.bdat_started => None,
            Some(_) => {
                self.bdat_dec = BdatDecoder::new();
                if let Some(tx) = self.tx.as_mut() {
                    tx.bdat_started = true;
                }
                if self.begin(ctx, out) {
                    None
                } else {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.refused =
                            Some(Reply::new(451, "4.3.0", "Error: queue file write error"));
                    }
                    None
                }
            }
        };
        if refuse.is_some() {
            self.bdat_dec = BdatDecoder::new();
        }
        self.bdat_dec.begin_chunk(size);
        self.state = State::Bdat {
            last,
            refuse,
            chunk: size,
        };
        let rest = self.lines.take_rest();
        self.feed_body(rest, out);
    }

    /// Message bytes (DATA or BDAT) from the client.
    fn feed_body(&mut self, input: Vec<u8>, out: &mut Vec<Action>) {
        match &mut self.state {
            State::Data(dec) => {
                let events = dec.push(&input);
                let (size, bad) = (dec.size(), dec.bare_lf() > 0 || dec.smuggling_attempt());
                let mut ended = false;
                for ev in events {
                    match ev {
                        DataEvent::Bytes(b) => self.forward(b, size, out),
                        DataEvent::End => ended = true,
                    }
                }
                if ended {
                    let rest = match &mut self.state {
                        State::Data(dec) => dec.rest(),
                        _ => Vec::new(),
                    };
                    if bad {
                        if let Some(tx) = self.tx.as_mut() {
                            tx.refused.get_or_insert_with(|| {
                                Reply::new(550, "5.5.2", "Error: bare <LF> received")
                            });
                        }
                        log::warn!("{}: message with bare <LF> refused", self.client());
                    }
                    self.state = State::Command;
                    self.lines.unread(&rest);
                    self.end_message(out);
                }
            }
            State::Bdat {
                last,
                refuse,
                chunk,
            } => {
                let (last, refuse, chunk) = (*last, refuse.clone(), *chunk);
                let (used, bytes) = self.bdat_dec.push(&input);
                let size = self.bdat_dec.size();
                if refuse.is_none() {
                    self.forward(bytes, size, out);
                }
                if self.bdat_dec.remaining() > 0 {
                    return;
                }
                self.state = State::Command;
                self.lines.unread(&input[used..]);
                if let Some(r) = refuse {
                    out.push(Action::Send(r.to_bytes()));
                    self.count_error(out);
                } else if last {
                    let tail = self.bdat_dec.finish();
                    let size = self.bdat_dec.size();
                    self.forward(tail, size, out);
                    self.end_message(out);
                } else {
                    let refused = self.tx.as_ref().and_then(|t| t.refused.clone());
                    match refused {
                        // Keep reading chunks; the refusal comes with LAST.
                        Some(_) => out.push(reply(
                            250,
                            "2.0.0",
                            format!("Ok: {chunk} octets received, message will be refused"),
                        )),
                        None => {
                            out.push(reply(250, "2.0.0", format!("Ok: {chunk} octets received")))
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends message bytes on to cleanup unless the message is already refused.
    fn forward(&mut self, bytes: Vec<u8>, size_so_far: u64, out: &mut Vec<Action>) {
        let limit = self.s.message_size_limit;
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        if tx.refused.is_some() || bytes.is_empty() {
            return;
        }
        if limit > 0 && size_so_far > limit {
            tx.refused = Some(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"));
            return;
        }
        if tx.streaming {
            out.push(Action::Cleanup(Request::Data(bytes)));
        }
    }

    /// The message is complete: have cleanup commit it, or refuse it.
    fn end_message(&mut self, out: &mut Vec<Action>) {
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        if let Some(r) = tx.refused.take() {
            if tx.streaming {
                out.push(Action::Cleanup(Request::Abort));
            }
            self.tx = None;
            out.push(Action::Send(r.to_bytes()));
            self.count_error(out);
            return;
        }
        out.push(Action::Cleanup(Request::End));
        self.state = State::AwaitCleanup;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_config::Config;

    struct Fake {
        cleanup_up: bool,
        users: Vec<&'static str>,
        opened: u32,
    }

    impl Ctx for Fake {
        fn open_cleanup(&mut self) -> bool {
            self.opened += 1;
            self.cleanup_up
        }
        fn local_exists(&mut self, local: &str) -> Result<bool, String> {
            // Like LocalTable with recipient_delimiter = +.
            let base = local.split('+').next().unwrap_or(local);
            Ok(self.users.iter().any(|u| u.eq_ignore_ascii_case(base)))
        }
    }

    fn settings(extra: &str) -> Arc<Settings> {
        let text = format!("myhostname = mx.example.org\nmydestination = example.org, localhost\nmynetworks = 10.0.0.0/8\nmessage_size_limit = 1000\nsmtpd_recipient_limit = 3\nsmtpd_hard_error_limit = 5\n{extra}");
        let c = Config::parse(&text, std::path::Path::new("petrel.conf")).unwrap();
        Arc::new(Settings::from_config(&c).unwrap())
    }

    fn fake() -> Fake {
        Fake {
            cleanup_up: true,
            users: vec!["alice", "postmaster"],
            opened: 0,
        }
    }

    /// Runs a dialogue cut into pieces of `chunk` bytes; returns what the client saw and
    /// what cleanup got.
    fn talk(
        s: Arc<Settings>,
        ip: &str,
        input: &[u8],
        chunk: usize,
        ctx: &mut Fake,
    ) -> (String, Vec<Request>) {
        let (mut sess, first) = Session::new(s, ip.parse().unwrap());
        let mut all = first;
        for piece in input.chunks(chunk) {
            all.extend(sess.input(piece, ctx));
            // cleanup answers a message as soon as it is complete (its answer may let the
            // session go on with pipelined commands, which may complete another message).
            while matches!(sess.state, State::AwaitCleanup) {
                let more = sess.cleanup_reply(CleanupReply::Queued { id: "QID".into() }, ctx);
                all.extend(more);
            }
        }
        let mut text = String::new();
        let mut reqs = Vec::new();
        for a in all {
            match a {
                Action::Send(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Action::Cleanup(r) => reqs.push(r),
                Action::Close => text.push_str("<close>"),
                Action::StartTls => text.push_str("<starttls>"),
                Action::Auth { user, password } => {
                    text.push_str(&format!("<auth {user}:{password}>"))
                }
            }
        }
        (text, reqs)
    }

    fn data_bytes(reqs: &[Request]) -> Vec<u8> {
        reqs.iter()
            .filter_map(|r| match r {
                Request::Data(b) => Some(b.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    const MSG: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";

    #[test]
    fn a_pipelined_dialogue_in_any_chunking() {
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let (text, reqs) = talk(settings(""), "192.0.2.1", MSG, chunk, &mut fake());
            assert!(
                text.starts_with("220 mx.example.org ESMTP Petrel\r\n250-mx.example.org"),
                "{text}"
            );
            assert!(text.contains("250-PIPELINING\r\n") && text.contains("250 CHUNKING\r\n"));
            assert!(
                text.contains("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data"),
                "{text}"
            );
            assert!(
                text.contains("250 2.0.0 Ok: queued as QID\r\n221 2.0.0 Bye\r\n<close>"),
                "chunk {chunk}: {text}"
            );
            assert_eq!(data_bytes(&reqs), b"Subject: hi\n\n.dot\nbody\n");
            assert!(
                matches!(&reqs[0], Request::Begin { sender, recipients, attrs }
                if sender == "a@b.example" && recipients[0].address == "alice@example.org"
                && attrs.contains(&("protocol".to_string(), "ESMTP".to_string())))
            );
            assert_eq!(reqs.last(), Some(&Request::End));
        }
    }

    #[test]
    fn relay_is_refused_for_strangers_and_allowed_for_mynetworks() {
        let d = b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n";
        let (text, reqs) = talk(settings(""), "192.0.2.1", d, 4096, &mut fake());
        assert!(
            text.contains("554 5.7.1 <x@elsewhere.test>: Relay access denied"),
            "{text}"
        );
        assert!(text.contains("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table"));
        assert!(
            text.contains("554 5.5.1 Error: no valid recipients"),
            "{text}"
        );
        assert!(reqs.is_empty());
        let (text, _) = talk(settings(""), "10.1.2.3", d, 4096, &mut fake());
        assert!(text.contains("250 2.1.5 Ok"), "{text}");
        assert!(
            text.contains("550 5.1.1"),
            "unknown local users are refused even for trusted clients"
        );
    }

    #[test]
    fn state_errors_limits_and_the_hard_error_limit() {
        let d = b"RCPT TO:<alice@example.org>\r\nDATA\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nFOO\r\nBAR\r\nNOOP\r\n";
        let (text, _) = talk(settings(""), "192.0.2.1", d, 4096, &mut fake());
        assert!(text.contains("503 5.5.1 Error: need MAIL command"));
        assert!(text.contains("503 5.5.1 Error: nested MAIL command"));
        assert!(text.contains("500 5.5.2"), "{text}");
        assert!(
            text.ends_with("421 4.7.0 mx.example.org Error: too many errors\r\n<close>"),
            "{text}"
        );
        let d = b"MAIL FROM:<a@b> SIZE=5000\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<postmaster@example.org>\r\nRCPT TO:<alice+x@example.org>\r\nRCPT TO:<alice@localhost>\r\n";
        let (text, _) = talk(
            settings("recipient_delimiter = +\n"),
            "10.0.0.1",
            d,
            4096,
            &mut fake(),
        );
        assert!(text.contains("552 5.3.4 Message size exceeds fixed limit"));
        assert!(
            text.contains("452 4.5.3 Error: too many recipients"),
            "{text}"
        );
    }

    #[test]
    fn oversized_and_bare_lf_messages_are_refused_and_the_session_goes_on() {
        let mut big = b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n".to_vec();
        big.extend(std::iter::repeat_n(b"0123456789\r\n".as_slice(), 200).flatten());
        big.extend_from_slice(b".\r\nNOOP\r\n");
        let (text, reqs) = talk(settings(""), "10.0.0.1", &big, 100, &mut fake());
        assert!(
            text.contains("552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n"),
            "{text}"
        );
        assert!(reqs.contains(&Request::Abort));
        assert!(!reqs.contains(&Request::End));
        let smuggle = b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n";
        let (text, reqs) = talk(settings(""), "10.0.0.1", smuggle, 5, &mut fake());
        assert!(
            text.contains("550 5.5.2 Error: bare <LF> received\r\n250 2.0.0 Ok\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("354 ").count(), 1, "only one DATA: {text}");
        assert!(!reqs.contains(&Request::End));
    }

    #[test]
    fn bdat_chunks_and_cleanup_down() {
        let d = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.org>\r\nBDAT 6\r\nab\r\ncdBDAT 4 LAST\r\nef\r\nNOOP\r\n";
        for chunk in [1, 3, 4096] {
            let (text, reqs) = talk(settings(""), "10.0.0.1", d, chunk, &mut fake());
            assert!(text.contains("250 2.0.0 Ok: 6 octets received\r\n250 2.0.0 Ok: queued as QID\r\n250 2.0.0 Ok\r\n"), "{chunk}: {text}");
            assert_eq!(data_bytes(&reqs), b"ab\ncdef\n");
        }
        let mut f = fake();
        f.cleanup_up = false;
        let (text, _) = talk(settings(""), "10.0.0.1", MSG, 4096, &mut f);
        assert!(text.contains("451 4.3.0"), "{text}");
        assert!(!text.contains("354"), "{text}");
    }

    #[test]
    fn utf8_addresses_need_smtputf8_and_vrfy_is_off() {
        let d = "MAIL FROM:<a@b>\r\nRCPT TO:<jösé@example.org>\r\nRSET\r\nMAIL FROM:<a@b> SMTPUTF8\r\nRCPT TO:<jösé@elsewhere.test>\r\nVRFY alice\r\n";
        let (text, _) = talk(settings(""), "10.0.0.1", d.as_bytes(), 4096, &mut fake());
        assert!(text.contains("553 5.6.7"), "{text}");
        assert!(text.contains("250 2.1.5 Ok"), "{text}");
        assert!(text.contains("252 2.0.0"), "{text}");
    }

    fn texts(actions: Vec<Action>) -> String {
        let mut t = String::new();
        for a in actions {
            match a {
                Action::Send(b) => t.push_str(&String::from_utf8_lossy(&b)),
                Action::StartTls => t.push_str("<starttls>"),
                Action::Auth { user, password } => t.push_str(&format!("<auth {user}:{password}>")),
                Action::Close => t.push_str("<close>"),
                Action::Cleanup(_) => {}
            }
        }
        t
    }

    fn tls_settings(extra: &str) -> Arc<Settings> {
        let s = settings(&format!(
            "smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n{extra}"
        ));
        let mut s = (*s).clone();
        s.tls_available = true;
        Arc::new(s)
    }

    #[test]
    fn starttls_discards_pipelined_plaintext_and_resets_the_session() {
        let mut f = fake();
        let (mut sess, _) = Session::new(tls_settings(""), "192.0.2.1".parse().unwrap());
        let t = texts(sess.input(b"EHLO c\r\n", &mut f));
        assert!(t.contains("250-STARTTLS\r\n") && !t.contains("AUTH"), "{t}");
        assert!(texts(sess.input(b"AUTH PLAIN AGRlbW8AcHc=\r\n", &mut f)).starts_with("538 5.7.11"));
        // The classic injection: a command pipelined after STARTTLS in the same packet.
        let t = texts(sess.input(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n", &mut f));
        assert_eq!(t, "220 2.0.0 Ready to start TLS\r\n<starttls>");
        assert!(!sess.wants_input());
        let t =
            texts(sess.tls_started("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384".into(), &mut f));
        assert_eq!(t, "", "the injected MAIL is never answered");
        let t = texts(sess.input(b"MAIL FROM:<a@b>\r\n", &mut f));
        assert!(
            t.starts_with("250 2.1.0"),
            "a fresh transaction after TLS: {t}"
        );
        let t = texts(sess.input(b"RSET\r\nEHLO c\r\nSTARTTLS\r\n", &mut f));
        assert!(
            t.contains("250-AUTH PLAIN LOGIN\r\n") && !t.contains("250-STARTTLS"),
            "{t}"
        );
        assert!(
            t.ends_with("554 5.5.1 Error: TLS already active\r\n"),
            "{t}"
        );
    }

    #[test]
    fn auth_plain_login_results_and_sender_ownership() {
        let d = tempfile::tempdir().unwrap();
        let map = d.path().join("logins");
        std::fs::write(&map, "demo@example.org demo\n").unwrap();
        let s = tls_settings(&format!("smtpd_sender_login_maps = {}\n", map.display()));
        let mut f = fake();
        let (mut sess, _) = Session::new(s, "192.0.2.1".parse().unwrap());
        sess.input(b"EHLO c\r\nSTARTTLS\r\n", &mut f);
        sess.tls_started("TLSv1.3".into(), &mut f);
        sess.input(b"EHLO c\r\n", &mut f);
        // PLAIN with an initial response: \0demo\0pw
        let t = texts(sess.input(b"AUTH PLAIN AGRlbW8AcHc=\r\n", &mut f));
        assert_eq!(t, "<auth demo:pw>");
        let t = texts(sess.auth_reply(AuthReply::Fail, &mut f));
        assert!(t.starts_with("535 5.7.8"), "{t}");
        // LOGIN, step by step.
        assert_eq!(
            texts(sess.input(b"AUTH LOGIN\r\n", &mut f)),
            "334 VXNlcm5hbWU6\r\n"
        );
        assert_eq!(
            texts(sess.input(b"ZGVtbw==\r\n", &mut f)),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(texts(sess.input(b"cHc=\r\n", &mut f)), "<auth demo:pw>");
        let ok = AuthReply::Ok {
            user: "demo".into(),
            uid: 1,
            gid: 1,
            home: "/".into(),
        };
        assert_eq!(
            texts(sess.auth_reply(ok, &mut f)),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert!(texts(sess.input(b"AUTH PLAIN AGRlbW8AcHc=\r\n", &mut f))
            .starts_with("503 5.5.1 Error: already authenticated"));
        let t = texts(sess.input(b"MAIL FROM:<boss@example.org>\r\n", &mut f));
        assert!(
            t.starts_with(
                "553 5.7.1 <boss@example.org>: Sender address rejected: not owned by user demo"
            ),
            "{t}"
        );
        let t = texts(sess.input(
            b"MAIL FROM:<demo@example.org>\r\nRCPT TO:<x@elsewhere.test>\r\n",
            &mut f,
        ));
        assert!(
            t.contains("250 2.1.0") && t.contains("250 2.1.5"),
            "authenticated clients may relay: {t}"
        );
        assert_eq!(sess.protocol(), "ESMTPSA");
        // An aborted exchange.
        let (mut s2, _) = Session::new(tls_settings(""), "192.0.2.1".parse().unwrap());
        s2.input(b"EHLO c\r\nSTARTTLS\r\n", &mut f);
        s2.tls_started("TLSv1.3".into(), &mut f);
        let t = texts(s2.input(b"EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH CRAM-MD5\r\n", &mut f));
        assert!(
            t.contains("334 \r\n501 5.7.0 Authentication aborted\r\n504 5.5.4"),
            "{t}"
        );
    }

    #[test]
    fn encrypt_level_requires_tls_first() {
        let s = tls_settings("smtpd_tls_security_level = encrypt\n");
        let (text, reqs) = talk(s, "10.0.0.1", MSG, 4096, &mut fake());
        assert!(
            text.contains("530 5.7.0 Must issue a STARTTLS command first"),
            "{text}"
        );
        assert!(reqs.is_empty());
    }
}
