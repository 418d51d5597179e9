//! One SMTP or LMTP conversation with one server: connect, greeting, EHLO/LHLO, STARTTLS,
//! AUTH, and mail transactions. Blocking I/O with a time limit per step, as each delivery
//! runs on its own thread. The protocol's parsing lives in `petrel_smtp_proto::client`.

use crate::settings::Settings;
use base64::Engine as _;
use petrel_smtp_proto::client::{self, ClientReply, Extensions, ReplyReader};
use petrel_tls::client::{ClientLevel, ClientTls};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The byte stream under a session.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<ClientTls<TcpStream>>),
    Closed,
}

impl Conn {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tls(s) => {
                s.get_ref().set_read_timeout(t)?;
                s.get_ref().set_write_timeout(t)
            }
            Conn::Closed => Ok(()),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Closed => Err(closed()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Closed => Err(closed()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Closed => Err(closed()),
        }
    }
}

/// Why a session step failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection broke or timed out: `text` says where ("lost connection with
    /// mx.b.test[10.1.0.2] while receiving the initial server greeting").
    Lost { text: String },
    /// The server answered with an error at a session step (greeting, EHLO, STARTTLS,
    /// AUTH): `reply` and the step.
    Refused { reply: ClientReply, text: String },
    /// Something on our side: TLS required and not offered, handshake failed, …
    Local { dsn: &'static str, text: String },
}

impl Failure {
    /// The RFC 3463 status for a whole-session failure: always temporary, except a 5xx
    /// reply (which the caller may still treat as "try the next host").
    pub fn dsn(&self) -> String {
        match self {
            Failure::Lost { .. } => "4.4.2".into(),
            Failure::Refused { reply, .. } => reply.dsn(),
            Failure::Local { dsn, .. } => (*dsn).into(),
        }
    }

    /// The text for logs and DSNs.
    pub fn text(&self) -> &str {
        match self {
            Failure::Lost { text }
            | Failure::Refused { text, .. }
            | Failure::Local { text, .. } => text,
        }
    }
}

/// The result of one recipient in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Accepted for delivery: the reply text.
    Sent { dsn: String, text: String },
    /// 4xx, or the connection broke: try again later.
    Deferred { dsn: String, text: String },
    /// 5xx: bounce.
    Bounced { dsn: String, text: String },
}

impl RcptResult {
    /// What a 4xx or 5xx reply means for a recipient: 5xx bounces, the rest defers.
    fn refused(r: &ClientReply, text: String) -> RcptResult {
        if r.class() == 5 {
            RcptResult::Bounced { dsn: r.dsn(), text }
        } else {
            RcptResult::Deferred { dsn: r.dsn(), text }
        }
    }

    /// The same bounce for every one of `n` recipients.
    fn bounce_all(n: usize, dsn: &str, text: String) -> Vec<RcptResult> {
        vec![
            RcptResult::Bounced {
                dsn: dsn.into(),
                text
            };
            n
        ]
    }
}

/// One recipient as the transaction sends it.
pub struct TxRcpt<'a> {
    pub address: &'a str,
    /// RFC 3461 NOTIFY list (`SUCCESS,FAILURE`), or empty.
    pub notify: &'a str,
    /// `type;address` as stored in the queue file, or empty.
    pub orcpt: &'a str,
}

/// One message as the transaction sends it.
pub struct TxMessage<'a> {
    pub sender: &'a str,
    pub content: &'a [u8],
    pub envid: &'a str,
    pub ret: &'a str,
    pub smtputf8: bool,
    /// Asked right before the message content is sent: false when qmgr, who asked for
    /// this delivery, has gone away. Then the transaction is abandoned before the final
    /// dot (the server discards it), because a restarted qmgr will send the message
    /// again and would otherwise deliver it twice.
    pub still_wanted: &'a (dyn Fn() -> bool + Sync),
}

/// A live conversation.
pub struct Session {
    conn: Conn,
    reader: ReplyReader,
    /// The server's name for logs (MX host, `[host]`, or the LMTP greeting's name).
    pub host: String,
    /// Its address (`10.1.0.2`) or socket path.
    pub addr: String,
    pub port: u16,
    pub lmtp: bool,
    pub ext: Extensions,
    /// "TLSv1.3 with cipher …" when encrypted.
    pub tls: Option<String>,
    /// Transactions completed on this connection.
    pub transactions: u32,
    /// When this session was set up (for the `delays=` connection part).
    pub setup_time: Duration,
}

/// The log form of a server: `host[addr]:port` (`host[path]` for Unix sockets).
pub fn relay_name(host: &str, addr: &str, port: u16) -> String {
    if port == 0 {
        format!("{host}[{addr}]")
    } else {
        format!("{host}[{addr}]:{port}")
    }
}

impl Session {
    /// `host[addr]:port` for logs.
    pub fn relay(&self) -> String {
        relay_name(&self.host, &self.addr, self.port)
    }

    fn at(&self) -> String {
        format!("{}[{}]", self.host, self.addr)
    }

    fn send(&mut self, bytes: &[u8], limit: Duration, what: &str) -> Result<(), Failure> {
        let r = self
            .conn
            .set_timeout(limit)
            .and_then(|()| self.conn.write_all(bytes))
            .and_then(|()| self.conn.flush());
        r.map_err(|e| self.lost(&e, &format!("sending {what}")))
    }

    fn lost(&self, e: &io::Error, while_: &str) -> Failure {
        let text = if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            format!("conversation with {} timed out while {while_}", self.at())
        } else {
            format!("lost connection with {} while {while_}", self.at())
        };
        Failure::Lost { text }
    }

    /// Reads one complete reply within `limit`.
    fn reply(&mut self, limit: Duration, while_: &str) -> Result<ClientReply, Failure> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 8192];
        loop {
            match self.reader.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure::Lost {
                        text: format!("malformed reply from {} while {while_}: {e}", self.at()),
                    })
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                return Err(self.lost(&e, while_));
            }
            let n = self
                .conn
                .set_timeout(left)
                .and_then(|()| self.conn.read(&mut buf));
            match n {
                Ok(0) => {
                    return Err(self.lost(&io::Error::from(io::ErrorKind::UnexpectedEof), while_))
                }
                Ok(n) => self.reader.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lost(&e, while_)),
            }
        }
    }

    fn said(&self, r: &ClientReply, in_reply_to: &str) -> String {
        format!(
            "host {} said: {} (in reply to {in_reply_to})",
            self.at(),
            r.text()
        )
    }

    /// Connects over TCP and reads the greeting; then EHLO (HELO fallback) or LHLO,
    /// STARTTLS as `tls` wants, and AUTH when `auth` credentials are given.
    pub fn open_tcp(
        s: &Settings,
        host: &str,
        addr: SocketAddr,
        lmtp: bool,
        tls: Option<ClientLevel>,
        auth: Option<(&str, &str)>,
    ) -> Result<Session, Failure> {
        let started = Instant::now();
        let stream =
            TcpStream::connect_timeout(&addr, s.connect_timeout).map_err(|e| Failure::Lost {
                text: format!(
                    "connect to {host}[{}]:{}: {}",
                    addr.ip(),
                    addr.port(),
                    io_text(&e)
                ),
            })?;
        let _ = stream.set_nodelay(true);
        let mut sess = Session {
            conn: Conn::Tcp(stream),
            reader: ReplyReader::new(),
            host: host.to_string(),
            addr: addr.ip().to_string(),
            port: addr.port(),
            lmtp,
            ext: Extensions::default(),
            tls: None,
            transactions: 0,
            setup_time: Duration::ZERO,
        };
        sess.handshake(s, tls, auth)?;
        sess.setup_time = started.elapsed();
        Ok(sess)
    }

    /// Connects to an LMTP server on a Unix-domain socket.
    pub fn open_unix(s: &Settings, path: &Path) -> Result<Session, Failure> {
        let started = Instant::now();
        let stream = UnixStream::connect(path).map_err(|e| Failure::Lost {
            text: format!("connect to {}: {}", path.display(), io_text(&e)),
        })?;
        let mut sess = Session {
            conn: Conn::Unix(stream),
            reader: ReplyReader::new(),
            host: "localhost".into(),
            addr: path.display().to_string(),
            port: 0,
            lmtp: true,
            ext: Extensions::default(),
            tls: None,
            transactions: 0,
            setup_time: Duration::ZERO,
        };
        sess.handshake(s, None, None)?;
        sess.setup_time = started.elapsed();
        Ok(sess)
    }

    fn handshake(
        &mut self,
        s: &Settings,
        tls: Option<ClientLevel>,
        auth: Option<(&str, &str)>,
    ) -> Result<(), Failure> {
        let greeting = self.reply(s.helo_timeout, "receiving the initial server greeting")?;
        if greeting.class() != 2 {
            return Err(Failure::Refused {
                text: self.said(&greeting, "initial server greeting"),
                reply: greeting,
            });
        }
        if self.port == 0 {
            // LMTP over a Unix socket: the greeting's first word names the server.
            if let Some(name) = greeting
                .lines
                .first()
                .and_then(|l| l.split_whitespace().next())
            {
                if name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
                {
                    self.host = name.to_string();
                }
            }
        }
        self.hello(s)?;
        if let Some(level) = tls {
            if self.ext.starttls {
                self.starttls(s, level)?;
            } else if level != ClientLevel::May {
                return Err(Failure::Local {
                    dsn: "4.7.4",
                    text: format!("TLS is required, but was not offered by host {}", self.at()),
                });
            }
        }
        if let Some((user, pass)) = auth {
            self.auth(s, user, pass)?;
        }
        Ok(())
    }

    fn hello(&mut self, s: &Settings) -> Result<(), Failure> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}\r\n", s.helo_name);
        self.send(line.as_bytes(), s.helo_timeout, verb)?;
        let r = self.reply(s.helo_timeout, &format!("receiving the {verb} reply"))?;
        if r.class() == 2 {
            self.ext = client::parse_ehlo(&r);
            return Ok(());
        }
        if self.lmtp || r.class() == 4 {
            return Err(Failure::Refused {
                text: self.said(&r, verb),
                reply: r,
            });
        }
        // An old server: HELO, and no extensions.
        let line = format!("HELO {}\r\n", s.helo_name);
        self.send(line.as_bytes(), s.helo_timeout, "HELO")?;
        let r = self.reply(s.helo_timeout, "receiving the HELO reply")?;
        if r.class() != 2 {
            return Err(Failure::Refused {
                text: self.said(&r, "HELO"),
                reply: r,
            });
        }
        self.ext = Extensions::default();
        Ok(())
    }

    fn starttls(&mut self, s: &Settings, level: ClientLevel) -> Result<(), Failure> {
        self.send(b"STARTTLS\r\n", s.helo_timeout, "STARTTLS")?;
        let r = self.reply(s.helo_timeout, "receiving the STARTTLS reply")?;
        if r.code != 220 {
            if level == ClientLevel::May {
                return Ok(());
            }
            return Err(Failure::Local {
                dsn: "4.7.5",
                text: format!(
                    "TLS is required, but host {} refused to start TLS: {}",
                    self.at(),
                    r.text()
                ),
            });
        }
        if self.reader.buffered() > 0 {
            return Err(Failure::Lost {
                text: format!("host {} sent data after its STARTTLS reply", self.at()),
            });
        }
        let Some(cfg) = s.tls.as_ref() else {
            return Err(Failure::Local {
                dsn: "4.7.5",
                text: "TLS is not configured".into(),
            });
        };
        let Conn::Tcp(tcp) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            return Err(Failure::Local {
                dsn: "4.7.5",
                text: "STARTTLS on a connection that is not plain TCP".into(),
            });
        };
        let _ = tcp.set_read_timeout(Some(s.helo_timeout));
        let _ = tcp.set_write_timeout(Some(s.helo_timeout));
        let name = crate::nexthop::ip_literal(&self.host)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| self.host.clone());
        match cfg.connect(tcp, &name) {
            Ok(t) => {
                let state = format!("{} with cipher {}", t.version(), t.cipher());
                log::info!(
                    "{} TLS connection established to {}: {state}",
                    t.trust(),
                    self.relay()
                );
                self.tls = Some(state);
                self.conn = Conn::Tls(Box::new(t));
            }
            Err(e) => {
                return Err(Failure::Local {
                    dsn: "4.7.5",
                    text: format!("Cannot start TLS with {}: {e}", self.at()),
                })
            }
        }
        self.hello(s)
    }

    fn auth(&mut self, s: &Settings, user: &str, pass: &str) -> Result<(), Failure> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let has = |m: &str| self.ext.auth.iter().any(|a| a == m);
        if self.ext.auth.is_empty() {
            return Ok(()); // nothing offered: send without authenticating
        }
        if self.tls.is_none() {
            return Err(Failure::Local {
                dsn: "4.7.0",
                text: format!(
                    "not sending the password to {} over an unencrypted connection",
                    self.at()
                ),
            });
        }
        let r = if has("PLAIN") {
            let token = b64(format!("\0{user}\0{pass}").as_bytes());
            self.send(
                format!("AUTH PLAIN {token}\r\n").as_bytes(),
                s.helo_timeout,
                "AUTH",
            )?;
            self.reply(s.helo_timeout, "receiving the AUTH reply")?
        } else if has("LOGIN") {
            self.send(b"AUTH LOGIN\r\n", s.helo_timeout, "AUTH")?;
            let mut r = self.reply(s.helo_timeout, "receiving the AUTH reply")?;
            for secret in [user, pass] {
                if r.code != 334 {
                    break;
                }
                self.send(
                    format!("{}\r\n", b64(secret.as_bytes())).as_bytes(),
                    s.helo_timeout,
                    "AUTH",
                )?;
                r = self.reply(s.helo_timeout, "receiving the AUTH reply")?;
            }
            r
        } else {
            return Err(Failure::Local {
                dsn: "4.7.0",
                text: format!(
                    "no common SASL mechanism with {} (it offers {})",
                    self.at(),
                    self.ext.auth.join(" ")
                ),
            });
        };
        if r.class() == 2 {
            Ok(())
        } else {
            Err(Failure::Refused {
                text: format!(
                    "SASL authentication failed; server {} said: {}",
                    self.at(),
                    r.text()
                ),
                reply: r,
            })
        }
    }

    /// Resets the session for the next transaction (after one that did not end with DATA).
    pub fn rset(&mut self, s: &Settings) -> bool {
        if self.send(b"RSET\r\n", s.quit_timeout, "RSET").is_err() {
            return false;
        }
        matches!(self.reply(s.quit_timeout, "receiving the RSET reply"), Ok(r) if r.class() == 2)
    }

    /// Says goodbye (best effort) and closes.
    pub fn quit(mut self, s: &Settings) {
        let limit = s.quit_timeout.min(Duration::from_secs(5));
        if self.send(b"QUIT\r\n", limit, "QUIT").is_ok() {
            let _ = self.reply(limit, "receiving the QUIT reply");
        }
        if let Conn::Tls(t) = &mut self.conn {
            t.shutdown();
        }
    }

    /// Runs one mail transaction. Returns one result per recipient (in order) and whether
    /// the session can be used again. `Err` only for a failure before any recipient could
    /// be accepted by the server (the caller may try another host or a fresh connection).
    pub fn transaction(
        &mut self,
        s: &Settings,
        msg: &TxMessage<'_>,
        rcpts: &[TxRcpt<'_>],
    ) -> Result<(Vec<RcptResult>, bool), Failure> {
        let ext = self.ext.clone();
        let eight_bit = petrel_message::mime8::has_8bit(msg.content);
        let converted;
        let content: &[u8] = if eight_bit && !ext.eight_bit_mime && !self.lmtp {
            converted = petrel_message::mime8::downgrade(msg.content);
            &converted
        } else {
            msg.content
        };
        let data = client::encode_data(content);
        let size = data.len().saturating_sub(3) as u64;
        if let Some(limit) = ext.size.filter(|l| *l > 0) {
            if size > limit {
                let text = format!(
                    "message size {size} exceeds size limit {limit} of server {}",
                    self.at()
                );
                return Ok((RcptResult::bounce_all(rcpts.len(), "5.3.4", text), true));
            }
        }
        if msg.smtputf8 && !ext.smtputf8 {
            let text = format!(
                "SMTPUTF8 is required, but was not offered by host {}",
                self.at()
            );
            return Ok((RcptResult::bounce_all(rcpts.len(), "5.6.7", text), true));
        }
        // MAIL FROM with the parameters the server understands.
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if ext.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit && ext.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.smtputf8 && ext.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            if !msg.ret.is_empty() {
                mail.push_str(&format!(" RET={}", msg.ret.to_ascii_uppercase()));
            }
            if !msg.envid.is_empty() {
                mail.push_str(&format!(" ENVID={}", client::xtext(msg.envid)));
            }
        }
        mail.push_str("\r\n");
        let rcpt_lines: Vec<String> = rcpts
            .iter()
            .map(|r| {
                let mut l = format!("RCPT TO:<{}>", r.address);
                if ext.dsn {
                    if !r.notify.is_empty() {
                        l.push_str(&format!(" NOTIFY={}", r.notify.to_ascii_uppercase()));
                    }
                    if let Some((t, a)) = r.orcpt.split_once(';') {
                        l.push_str(&format!(" ORCPT={t};{}", client::xtext(a)));
                    }
                }
                l.push_str("\r\n");
                l
            })
            .collect();
        let pipelining = ext.pipelining || self.lmtp;
        if pipelining {
            let mut batch = mail.clone().into_bytes();
            for l in &rcpt_lines {
                batch.extend_from_slice(l.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&batch, s.mail_timeout, "MAIL FROM")?;
        } else {
            self.send(mail.as_bytes(), s.mail_timeout, "MAIL FROM")?;
        }
        let r = self.reply(s.mail_timeout, "receiving the MAIL FROM reply")?;
        if r.class() != 2 {
            let text = self.said(&r, "MAIL FROM command");
            let res = RcptResult::refused(&r, text);
            // Drain the pipelined replies so the session stays in step.
            let mut usable = true;
            if pipelining {
                for _ in 0..rcpts.len() + 1 {
                    if self
                        .reply(s.rcpt_timeout, "receiving pipelined replies")
                        .is_err()
                    {
                        usable = false;
                        break;
                    }
                }
            }
            let usable = usable && self.rset(s);
            return Ok((rcpts.iter().map(|_| res.clone()).collect(), usable));
        }
        let mut results: Vec<Option<RcptResult>> = Vec::with_capacity(rcpts.len());
        for (i, l) in rcpt_lines.iter().enumerate() {
            if !pipelining {
                self.send(l.as_bytes(), s.rcpt_timeout, "RCPT TO")?;
            }
            let r = match self.reply(s.rcpt_timeout, "receiving the RCPT TO reply") {
                Ok(r) => r,
                Err(f) => return self.broken(f, results, rcpts.len(), i),
            };
            let text = self.said(&r, "RCPT TO command");
            results.push((r.class() != 2).then(|| RcptResult::refused(&r, text)));
        }
        let accepted: Vec<usize> = (0..rcpts.len()).filter(|i| results[*i].is_none()).collect();
        if !pipelining {
            if accepted.is_empty() {
                let usable = self.rset(s);
                return Ok((results.into_iter().flatten().collect(), usable));
            }
            self.send(b"DATA\r\n", s.data_init_timeout, "DATA")?;
        }
        let r = match self.reply(s.data_init_timeout, "receiving the DATA reply") {
            Ok(r) => r,
            Err(f) => return self.broken(f, results, rcpts.len(), rcpts.len()),
        };
        if r.code != 354 {
            if accepted.is_empty() {
                let usable = self.rset(s);
                return Ok((results.into_iter().flatten().collect(), usable));
            }
            let text = self.said(&r, "DATA command");
            let res = RcptResult::refused(&r, text);
            let out = results
                .into_iter()
                .map(|x| x.unwrap_or_else(|| res.clone()))
                .collect();
            let usable = self.rset(s);
            return Ok((out, usable));
        }
        if accepted.is_empty() {
            // A server that says 354 with no recipient: end the empty message.
            let _ = self.send(b".\r\n", s.data_xfer_timeout, "end of data");
            let _ = self.reply(s.data_done_timeout, "receiving the end of data reply");
            let usable = self.rset(s);
            return Ok((results.into_iter().flatten().collect(), usable));
        }
        if !(msg.still_wanted)() {
            let text = "delivery abandoned before the end of data: qmgr went away".to_string();
            let out = rcpts
                .iter()
                .map(|_| RcptResult::Deferred {
                    dsn: "4.3.0".into(),
                    text: text.clone(),
                })
                .collect();
            // Closing without the final dot makes the server drop the message.
            self.conn = Conn::Closed;
            return Ok((out, false));
        }
        if let Err(f) = self.send(&data, s.data_xfer_timeout, "message content") {
            return self.broken(f, results, rcpts.len(), rcpts.len());
        }
        // The final replies: one for SMTP, one per accepted recipient for LMTP.
        let finals = if self.lmtp { accepted.len() } else { 1 };
        let mut replies = Vec::with_capacity(finals);
        for _ in 0..finals {
            match self.reply(s.data_done_timeout, "receiving the end of data reply") {
                Ok(r) => replies.push(r),
                Err(f) => {
                    // Nothing is known for the recipients without a reply: deferred. (For
                    // SMTP the server may have accepted the message: the unavoidable
                    // duplicate of RFC 1047.)
                    let text = f.text().to_string();
                    let mut out = Vec::with_capacity(rcpts.len());
                    let mut k = 0;
                    for x in results {
                        out.push(match x {
                            Some(x) => x,
                            None => {
                                let res = match replies.get(k) {
                                    Some(r) => self.final_result(r),
                                    None => RcptResult::Deferred {
                                        dsn: "4.4.2".into(),
                                        text: text.clone(),
                                    },
                                };
                                k += 1;
                                res
                            }
                        });
                    }
                    return Ok((out, false));
                }
            }
        }
        self.transactions += 1;
        let mut out = Vec::with_capacity(rcpts.len());
        let mut k = 0;
        for x in results {
            out.push(match x {
                Some(x) => x,
                None => {
                    let r = if self.lmtp { &replies[k] } else { &replies[0] };
                    k += 1;
                    self.final_result(r)
                }
            });
        }
        Ok((out, true))
    }

    fn final_result(&self, r: &ClientReply) -> RcptResult {
        match r.class() {
            2 => RcptResult::Sent {
                dsn: r.dsn(),
                text: r.text(),
            },
            _ => RcptResult::refused(r, self.said(r, "end of DATA command")),
        }
    }

    /// The connection broke during a transaction: recipients with an answer keep it,
    /// the others are deferred. Before any answer it is a session failure.
    fn broken(
        &self,
        f: Failure,
        results: Vec<Option<RcptResult>>,
        n: usize,
        answered: usize,
    ) -> Result<(Vec<RcptResult>, bool), Failure> {
        if answered == 0 {
            return Err(f);
        }
        let text = f.text().to_string();
        let lost = RcptResult::Deferred {
            dsn: "4.4.2".into(),
            text,
        };
        let mut out: Vec<RcptResult> = results
            .into_iter()
            .map(|x| x.unwrap_or_else(|| lost.clone()))
            .collect();
        out.resize(n, lost);
        Ok((out, false))
    }
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "Connection timed out".into(),
        io::ErrorKind::NotFound => "No such file or directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! The conversation against a scripted server on 127.0.0.1: every reply the server
    //! gives is listed in order, one per command line it reads (and one after each
    //! message's final dot); what the client sent is returned for checking.

    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    fn settings(lmtp: bool) -> Settings {
        let t = Duration::from_secs(5);
        Settings {
            lmtp,
            helo_name: "client.test".into(),
            connect_timeout: t,
            helo_timeout: t,
            mail_timeout: t,
            rcpt_timeout: t,
            data_init_timeout: t,
            data_xfer_timeout: t,
            data_done_timeout: t,
            quit_timeout: t,
            default_port: 25,
            tls_level: None,
            tls: None,
            sasl: None,
            cache_time: Duration::ZERO,
        }
    }

    /// Serves one connection: greeting, then `replies` in order. Lines after DATA's 354
    /// up to the dot are collected as one "DATA:" entry.
    fn server(
        greeting: &'static str,
        replies: Vec<&'static str>,
    ) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut seen = Vec::new();
            w.write_all(greeting.as_bytes()).unwrap();
            let mut replies = replies.into_iter();
            let mut in_data = false;
            let mut data = String::new();
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        seen.push(format!("DATA:{data}"));
                        data.clear();
                    } else {
                        data.push_str(&line);
                        continue;
                    }
                } else {
                    seen.push(line.trim_end().to_string());
                }
                let Some(reply) = replies.next() else { break };
                if reply.is_empty() {
                    break; // hang up
                }
                for part in reply.split('|') {
                    w.write_all(part.as_bytes()).unwrap();
                    w.write_all(b"\r\n").unwrap();
                    if part.starts_with("354") {
                        in_data = true;
                    }
                }
            }
            seen
        });
        (addr, h)
    }

    fn rcpt(a: &str) -> TxRcpt<'_> {
        TxRcpt {
            address: a,
            notify: "",
            orcpt: "",
        }
    }

    fn msg(content: &[u8]) -> TxMessage<'_> {
        TxMessage {
            sender: "a@a.test",
            content,
            envid: "",
            ret: "",
            smtputf8: false,
            still_wanted: &|| true,
        }
    }

    const EHLO: &str = "250-b.test|250-PIPELINING|250-SIZE 100000|250-8BITMIME|250 DSN";

    #[test]
    fn pipelined_transaction_with_one_refused_recipient() {
        let (addr, h) = server(
            "220 b.test ESMTP\r\n",
            vec![
                EHLO,
                "250 2.1.0 Ok",
                "250 2.1.5 Ok",
                "550 5.1.1 no such user",
                "354 go",
                "250 2.0.0 Ok: queued as X1",
                "221 bye",
            ],
        );
        let s = settings(false);
        let mut sess = Session::open_tcp(&s, "b.test", addr, false, None, None).unwrap();
        let m = TxMessage {
            envid: "env+1",
            ret: "hdrs",
            ..msg("Subject: x\n\n.dot\nh\u{e9}llo\n".as_bytes())
        };
        let rs = [
            TxRcpt {
                notify: "SUCCESS,FAILURE",
                orcpt: "rfc822;b@b.test",
                ..rcpt("b@b.test")
            },
            rcpt("c@b.test"),
        ];
        let (res, usable) = sess.transaction(&s, &m, &rs).unwrap();
        assert!(usable);
        assert_eq!(
            res[0],
            RcptResult::Sent {
                dsn: "2.0.0".into(),
                text: "250 2.0.0 Ok: queued as X1".into()
            }
        );
        match &res[1] {
            RcptResult::Bounced { dsn, text } => {
                assert_eq!(dsn, "5.1.1");
                assert!(
                    text.contains("said: 550 5.1.1 no such user (in reply to RCPT TO command)"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        sess.quit(&s);
        let seen = h.join().unwrap();
        assert_eq!(seen[0], "EHLO client.test");
        assert!(
            seen[1].starts_with("MAIL FROM:<a@a.test> SIZE="),
            "{seen:?}"
        );
        assert!(
            seen[1].ends_with(" BODY=8BITMIME RET=HDRS ENVID=env+2B1"),
            "{seen:?}"
        );
        assert_eq!(
            seen[2],
            "RCPT TO:<b@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@b.test"
        );
        assert_eq!(seen[4], "DATA");
        assert_eq!(seen[5], "DATA:Subject: x\r\n\r\n..dot\r\nh\u{e9}llo\r\n");
        assert_eq!(seen[6], "QUIT");
    }

    #[test]
    fn eight_bit_body_is_converted_for_a_server_without_8bitmime() {
        let (addr, h) = server(
            "220 old.test\r\n",
            vec![
                "250-old.test|250 SIZE",
                "250 ok",
                "250 ok",
                "354 go",
                "250 ok",
            ],
        );
        let s = settings(false);
        let mut sess = Session::open_tcp(&s, "old.test", addr, false, None, None).unwrap();
        let (res, _) = sess
            .transaction(
                &s,
                &msg("Subject: x\n\nh\u{e9}llo\n".as_bytes()),
                &[rcpt("b@old.test")],
            )
            .unwrap();
        assert!(matches!(res[0], RcptResult::Sent { .. }));
        drop(sess);
        let seen = h.join().unwrap();
        assert!(!seen[1].contains("BODY="), "{seen:?}");
        let data = seen.iter().find(|l| l.starts_with("DATA:")).unwrap();
        assert!(data.is_ascii(), "{data}");
        assert!(
            data.contains("Content-Transfer-Encoding: quoted-printable"),
            "{data}"
        );
        assert!(data.contains("h=C3=A9llo"), "{data}");
    }

    #[test]
    fn too_big_for_the_server_bounces_without_sending() {
        let (addr, h) = server("220 b\r\n", vec!["250-b|250 SIZE 10", "221 bye"]);
        let s = settings(false);
        let mut sess = Session::open_tcp(&s, "b.test", addr, false, None, None).unwrap();
        let (res, _) = sess
            .transaction(
                &s,
                &msg(b"Subject: a long message\n\nbody\n"),
                &[rcpt("b@b.test")],
            )
            .unwrap();
        match &res[0] {
            RcptResult::Bounced { dsn, text } => {
                assert_eq!(dsn, "5.3.4");
                assert!(text.contains("exceeds size limit 10"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        sess.quit(&s);
        let seen = h.join().unwrap();
        assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
    }

    #[test]
    fn lmtp_answers_per_recipient() {
        let (addr, h) = server(
            "220 dovecot LMTP ready\r\n",
            vec![
                "250-dovecot|250-PIPELINING|250 ENHANCEDSTATUSCODES",
                "250 ok",
                "250 ok",
                "250 ok",
                "550 5.1.1 unknown",
                "354 go",
                "250 2.0.0 <b> Saved|452 4.2.2 <c> Quota exceeded",
            ],
        );
        let s = settings(true);
        let mut sess = Session::open_tcp(&s, "lmtp.test", addr, true, None, None).unwrap();
        let (res, _) = sess
            .transaction(
                &s,
                &msg(b"Subject: x\n\nhi\n"),
                &[rcpt("b@x"), rcpt("c@x"), rcpt("d@x")],
            )
            .unwrap();
        assert!(
            matches!(&res[0], RcptResult::Sent { text, .. } if text.contains("Saved")),
            "{res:?}"
        );
        assert!(
            matches!(&res[1], RcptResult::Deferred { dsn, .. } if dsn == "4.2.2"),
            "{res:?}"
        );
        assert!(
            matches!(&res[2], RcptResult::Bounced { dsn, .. } if dsn == "5.1.1"),
            "{res:?}"
        );
        drop(sess);
        let seen = h.join().unwrap();
        assert_eq!(seen[0], "LHLO client.test");
    }

    #[test]
    fn helo_fallback_and_no_pipelining() {
        let (addr, h) = server(
            "220 ancient\r\n",
            vec![
                "502 what?",
                "250 hello",
                "250 ok",
                "550 no",
                "550 no",
                "250 reset",
            ],
        );
        let s = settings(false);
        let mut sess = Session::open_tcp(&s, "ancient.test", addr, false, None, None).unwrap();
        let (res, usable) = sess
            .transaction(&s, &msg(b"Subject: x\n\nhi\n"), &[rcpt("b@x"), rcpt("c@x")])
            .unwrap();
        assert!(usable);
        assert!(
            res.iter().all(|r| matches!(r, RcptResult::Bounced { .. })),
            "{res:?}"
        );
        drop(sess);
        let seen = h.join().unwrap();
        assert_eq!(
            seen,
            vec![
                "EHLO client.test",
                "HELO client.test",
                "MAIL FROM:<a@a.test>",
                "RCPT TO:<b@x>",
                "RCPT TO:<c@x>",
                "RSET"
            ]
        );
    }

    #[test]
    fn tls_required_but_not_offered() {
        let (addr, h) = server("220 b\r\n", vec![EHLO, "221 bye"]);
        let s = settings(false);
        match Session::open_tcp(&s, "b.test", addr, false, Some(ClientLevel::Encrypt), None) {
            Err(Failure::Local { dsn, text }) => {
                assert_eq!(dsn, "4.7.4");
                assert!(
                    text.contains("TLS is required, but was not offered"),
                    "{text}"
                );
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("must refuse a plain-text session"),
        }
        let seen = h.join().unwrap();
        assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
    }

    #[test]
    fn lost_connection_after_the_dot_defers() {
        let (addr, _h) = server("220 b\r\n", vec![EHLO, "250 ok", "250 ok", "354 go", ""]);
        let s = settings(false);
        let mut sess = Session::open_tcp(&s, "b.test", addr, false, None, None).unwrap();
        let (res, usable) = sess
            .transaction(&s, &msg(b"Subject: x\n\nhi\n"), &[rcpt("b@x")])
            .unwrap();
        assert!(!usable);
        assert!(
            matches!(&res[0], RcptResult::Deferred { text, .. } if text.contains("lost connection with b.test[127.0.0.1] while receiving the end of data reply")),
            "{res:?}"
        );
    }

    #[test]
    fn greeting_refused_and_connect_refused() {
        let (addr, _h) = server("554 go away\r\n", vec![]);
        let s = settings(false);
        match Session::open_tcp(&s, "b.test", addr, false, None, None) {
            Err(Failure::Refused { reply, .. }) => assert_eq!(reply.code, 554),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("must fail"),
        }
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match Session::open_tcp(&s, "b.test", dead, false, None, None) {
            Err(Failure::Lost { text }) => assert!(text.contains("Connection refused"), "{text}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("must fail"),
        }
    }
}
