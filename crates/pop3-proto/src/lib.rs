//! POP3 for Petrel's pop3d, without I/O: command parsing ([`parse_command`]), multi-line
//! responses ([`multiline`], [`top`]), the octet counts LIST and STAT report
//! ([`wire_size`]), and the TRANSACTION-state logic over a list of messages
//! ([`Transaction`]): message numbers, deletion marks, RSET, and what QUIT removes.
//!
//! Sizes and contents are those of the message as RETR sends it: CRLF line ends, a final
//! CRLF added when the message has none, a stray CR sent as a space (the same rule as the
//! SMTP client, which keeps the length), before dot-stuffing. So `LIST` says exactly how
//! many octets `RETR` transfers, not counting the stuffed dots and the final ".".

#![deny(missing_docs)]

/// The longest command line accepted (RFC 2449 §4: 255 octets; AUTH's initial response
/// may be longer, so a little room is left for it).
pub const MAX_LINE: usize = 2048;

/// A client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS secret` (the rest of the line: passwords may contain spaces)
    Pass(String),
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<u32>),
    /// `RETR msg`
    Retr(u32),
    /// `DELE msg`
    Dele(u32),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `QUIT`
    Quit,
    /// `TOP msg n`
    Top(u32, u32),
    /// `UIDL [msg]`
    Uidl(Option<u32>),
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// `AUTH` (list mechanisms) or `AUTH mechanism [initial-response]`; the initial
    /// response as sent (base64, or `=` for an empty one).
    Auth {
        /// Upper-cased mechanism, or None for a bare `AUTH`.
        mechanism: Option<String>,
        /// The initial response, undecoded.
        initial: Option<String>,
    },
}

/// Why a line is not a command: the text for `-ERR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

fn number(arg: Option<&str>, what: &str) -> Result<u32, CommandError> {
    let a = arg.ok_or_else(|| CommandError(format!("{what} needs a message number")))?;
    if a.is_empty() || a.len() > 9 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError(format!("invalid message number {a:?}")));
    }
    a.parse::<u32>()
        .map_err(|_| CommandError(format!("invalid message number {a:?}")))
}

/// Parses one command line (without its CRLF). Keywords are case-insensitive; arguments
/// are separated by single spaces (RFC 1939 §3), extra ones are an error.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) || line.contains(&b'\r') || line.contains(&b'\n') {
        return Err(CommandError("invalid characters in command".into()));
    }
    let text =
        std::str::from_utf8(line).map_err(|_| CommandError("command is not UTF-8".into()))?;
    let (keyword, rest) = match text.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (text, None),
    };
    let kw = keyword.to_ascii_uppercase();
    let args: Vec<&str> = rest.map(|r| r.split(' ').collect()).unwrap_or_default();
    let no_args = |c: Command| {
        if rest.is_some() {
            Err(CommandError(format!("{kw} takes no arguments")))
        } else {
            Ok(c)
        }
    };
    let at_most = |n: usize| {
        if args.len() > n {
            Err(CommandError(format!("too many arguments to {kw}")))
        } else {
            Ok(())
        }
    };
    match kw.as_str() {
        "USER" => {
            let name = rest.unwrap_or("");
            if name.is_empty() || name.contains(' ') {
                return Err(CommandError("USER needs one name".into()));
            }
            Ok(Command::User(name.to_string()))
        }
        "PASS" => match rest {
            Some(p) if !p.is_empty() => Ok(Command::Pass(p.to_string())),
            _ => Err(CommandError("PASS needs a password".into())),
        },
        "STAT" => no_args(Command::Stat),
        "NOOP" => no_args(Command::Noop),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "CAPA" => no_args(Command::Capa),
        "STLS" => no_args(Command::Stls),
        "LIST" | "UIDL" => {
            at_most(1)?;
            let n = match args.first() {
                Some(a) => Some(number(Some(a), &kw)?),
                None => None,
            };
            Ok(if kw == "LIST" {
                Command::List(n)
            } else {
                Command::Uidl(n)
            })
        }
        "RETR" | "DELE" => {
            at_most(1)?;
            let n = number(args.first().copied(), &kw)?;
            Ok(if kw == "RETR" {
                Command::Retr(n)
            } else {
                Command::Dele(n)
            })
        }
        "TOP" => {
            if args.len() != 2 {
                return Err(CommandError(
                    "TOP needs a message number and a line count".into(),
                ));
            }
            let n = number(Some(args[0]), "TOP")?;
            let lines = number(Some(args[1]), "TOP")?;
            Ok(Command::Top(n, lines))
        }
        "AUTH" => {
            at_most(2)?;
            Ok(Command::Auth {
                mechanism: args.first().map(|m| m.to_ascii_uppercase()),
                initial: args.get(1).map(|s| s.to_string()),
            })
        }
        "" => Err(CommandError("empty command".into())),
        _ => Err(CommandError(format!("unknown command {kw}"))),
    }
}

/// Splits a client's bytes into command lines (without CR LF). A line longer than the
/// limit is reported once as [`Line::TooLong`] and the rest of it is skipped, so the
/// session stays usable; memory never exceeds the limit plus one read.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Inside an overlong line: drop bytes up to its LF.
    skipping: bool,
    max: usize,
}

/// What [`LineReader::next_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, CR LF (or a bare LF) removed.
    Line(Vec<u8>),
    /// A line over the limit (answer `-ERR`; it is discarded).
    TooLong,
}

impl LineReader {
    /// A reader for lines of at most `max` bytes.
    pub fn new(max: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            skipping: false,
            max,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > self.max {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Line(line));
                }
                None if self.buf.len() > self.max + 1 => {
                    self.buf.clear();
                    if !self.skipping {
                        self.skipping = true;
                        return Some(Line::TooLong);
                    }
                    return None;
                }
                None => return None,
            }
        }
    }

    /// A complete line is buffered (the client pipelined commands).
    pub fn has_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    /// Takes what was read and not handled.
    pub fn take_unread(&mut self) -> Vec<u8> {
        if self.skipping {
            // The rest of an overlong line is not a command.
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.buf.drain(..=i);
                }
                None => self.buf.clear(),
            }
            self.skipping = false;
        }
        std::mem::take(&mut self.buf)
    }
}

/// The CAPA answer (RFC 2449), terminator included. `login`: USER and SASL PLAIN may be
/// used now (announced only in the AUTHORIZATION state); `stls`: STLS can be started.
pub fn capa(authorization: bool, login: bool, stls: bool) -> String {
    let mut s = String::from("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    if authorization && login {
        s.push_str("USER\r\nSASL PLAIN\r\n");
    }
    if authorization && stls {
        s.push_str("STLS\r\n");
    }
    s.push_str("IMPLEMENTATION Petrel\r\n.\r\n");
    s
}

/// A message as RETR sends it, dot-stuffed, ending with the terminating `.` line.
pub fn multiline(content: &[u8]) -> Vec<u8> {
    petrel_smtp_proto::client::encode_data(content)
}

/// The number of octets RETR transfers for `content`, stuffing and terminator left out
/// (RFC 1939 §5 LIST: the "exact size"). Matches [`multiline`].
pub fn wire_size(content: &[u8]) -> u64 {
    let mut n = content.len() as u64;
    let mut prev = 0u8;
    for &b in content {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    if !content.is_empty() && !content.ends_with(b"\n") {
        n += 2;
    }
    n
}

/// TOP: the header, the blank line, and the first `lines` lines of the body, as a
/// multi-line response body (dot-stuffed, terminated).
pub fn top(content: &[u8], lines: u32) -> Vec<u8> {
    // The header ends at the first empty line.
    let mut end = content.len();
    let mut pos = 0;
    let mut at_line_start = true;
    let mut body_start = content.len();
    while pos < content.len() {
        if at_line_start && (content[pos] == b'\n' || content[pos..].starts_with(b"\r\n")) {
            let nl = if content[pos] == b'\n' { 1 } else { 2 };
            body_start = pos + nl;
            break;
        }
        at_line_start = content[pos] == b'\n';
        pos += 1;
    }
    if body_start < content.len() {
        let mut p = body_start;
        let mut left = lines;
        while left > 0 && p < content.len() {
            match content[p..].iter().position(|&b| b == b'\n') {
                Some(i) => p += i + 1,
                None => p = content.len(),
            }
            left -= 1;
        }
        end = p;
    }
    multiline(&content[..end.max(body_start.min(content.len()))])
}

/// One message of the maildrop, as the TRANSACTION state sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Octets RETR sends ([`wire_size`]).
    pub size: u64,
    /// The UIDL: stable across sessions, 1–70 characters 0x21–0x7E.
    pub uid: String,
}

/// The TRANSACTION state: the messages as they were at login, deletion marks, and the
/// answers that need only the listing. Message numbers are 1-based; deleted messages
/// cannot be named (RFC 1939).
#[derive(Debug, Clone)]
pub struct Transaction {
    msgs: Vec<Listing>,
    deleted: Vec<bool>,
}

impl Transaction {
    /// The listing taken at login.
    pub fn new(msgs: Vec<Listing>) -> Transaction {
        let deleted = vec![false; msgs.len()];
        Transaction { msgs, deleted }
    }

    /// The 0-based index of message `n`, if it exists and is not deleted.
    pub fn index(&self, n: u32) -> Result<usize, String> {
        let i = (n as usize).wrapping_sub(1);
        match self.deleted.get(i) {
            Some(false) => Ok(i),
            Some(true) => Err(format!("message {n} already deleted")),
            None => Err(format!(
                "no such message, only {} messages in maildrop",
                self.msgs.len()
            )),
        }
    }

    /// `+OK count octets` for STAT (deleted messages not counted).
    pub fn stat(&self) -> String {
        let (n, size) = self
            .live()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
        format!("+OK {n} {size}\r\n")
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Listing)> {
        self.msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// LIST or UIDL, for one message or all: the full response.
    pub fn list(&self, n: Option<u32>, uidl: bool) -> String {
        let field = |m: &Listing| {
            if uidl {
                m.uid.clone()
            } else {
                m.size.to_string()
            }
        };
        match n {
            Some(n) => match self.index(n) {
                Ok(i) => format!("+OK {n} {}\r\n", field(&self.msgs[i])),
                Err(e) => format!("-ERR {e}\r\n"),
            },
            None => {
                let mut s = if uidl {
                    "+OK\r\n".to_string()
                } else {
                    let (count, size) = self
                        .live()
                        .fold((0, 0), |(c, s), (_, m)| (c + 1, s + m.size));
                    format!("+OK {count} messages ({size} octets)\r\n")
                };
                for (i, m) in self.live() {
                    s.push_str(&format!("{} {}\r\n", i + 1, field(m)));
                }
                s.push_str(".\r\n");
                s
            }
        }
    }

    /// DELE: marks message `n`.
    pub fn delete(&mut self, n: u32) -> String {
        match self.index(n) {
            Ok(i) => {
                self.deleted[i] = true;
                format!("+OK message {n} deleted\r\n")
            }
            Err(e) => format!("-ERR {e}\r\n"),
        }
    }

    /// RSET: unmarks every message.
    pub fn reset(&mut self) -> String {
        self.deleted.iter_mut().for_each(|d| *d = false);
        let (n, size) = self
            .live()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
        format!("+OK maildrop has {n} messages ({size} octets)\r\n")
    }

    /// The 0-based indexes QUIT must remove (the UPDATE state).
    pub fn to_remove(&self) -> Vec<usize> {
        (0..self.msgs.len()).filter(|i| self.deleted[*i]).collect()
    }

    /// The listing of the message at 0-based index `i`.
    pub fn listing(&self, i: usize) -> Option<&Listing> {
        self.msgs.get(i)
    }

    /// How many messages there are (deleted ones included).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// True when the maildrop was empty at login.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"user bob"), Ok(Command::User("bob".into())));
        assert_eq!(
            parse_command(b"PASS two words"),
            Ok(Command::Pass("two words".into()))
        );
        assert_eq!(parse_command(b"STAT"), Ok(Command::Stat));
        assert_eq!(parse_command(b"list"), Ok(Command::List(None)));
        assert_eq!(parse_command(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse_command(b"RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(parse_command(b"DELE 2"), Ok(Command::Dele(2)));
        assert_eq!(parse_command(b"TOP 1 10"), Ok(Command::Top(1, 10)));
        assert_eq!(parse_command(b"UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(parse_command(b"uidl 7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(parse_command(b"CAPA"), Ok(Command::Capa));
        assert_eq!(parse_command(b"STLS"), Ok(Command::Stls));
        assert_eq!(
            parse_command(b"AUTH PLAIN AGJvYgBzZWNyZXQ="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGJvYgBzZWNyZXQ=".into())
            })
        );
        assert_eq!(
            parse_command(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        for bad in [
            &b""[..],
            b"RETR",
            b"RETR x",
            b"RETR -1",
            b"RETR 99999999999",
            b"TOP 1",
            b"STAT 1",
            b"LIST 1 2",
            b"APOP bob 0123",
            b"USER",
            b"USER a b",
            b"PASS",
            b"NOOP\0",
            b"RETR 1\r",
            b"\xff\xfe",
        ] {
            assert!(
                parse_command(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lines_split_and_overlong_ones_are_skipped() {
        let mut r = LineReader::new(10);
        r.push(b"STAT\r\nLIST 1\nRE");
        assert_eq!(r.next_line(), Some(Line::Line(b"STAT".to_vec())));
        assert!(r.has_line());
        assert_eq!(r.next_line(), Some(Line::Line(b"LIST 1".to_vec())));
        assert_eq!(r.next_line(), None);
        r.push(b"TR 1\r\n");
        assert_eq!(r.next_line(), Some(Line::Line(b"RETR 1".to_vec())));
        // Overlong without its end yet: reported once, skipped to its LF.
        r.push(&[b'x'; 30]);
        assert_eq!(r.next_line(), Some(Line::TooLong));
        r.push(&[b'x'; 30]);
        assert_eq!(r.next_line(), None);
        r.push(b"xx\r\nNOOP\r\n");
        assert_eq!(r.next_line(), Some(Line::Line(b"NOOP".to_vec())));
        // Overlong in one piece.
        r.push(b"0123456789ab\r\nQUIT\r\n");
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), Some(Line::Line(b"QUIT".to_vec())));
        r.push(b"RSET\r\nNO");
        assert_eq!(r.take_unread(), b"RSET\r\nNO");
    }

    #[test]
    fn capabilities_by_state() {
        let c = capa(true, true, true);
        assert!(c.starts_with("+OK"));
        assert!(c.ends_with("\r\n.\r\n"));
        for cap in [
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "USER",
            "SASL PLAIN",
            "STLS",
        ] {
            assert!(c.contains(&format!("\r\n{cap}\r\n")), "{cap} in {c}");
        }
        let c = capa(true, false, true);
        assert!(!c.contains("USER") && !c.contains("SASL") && c.contains("STLS"));
        let c = capa(false, true, true);
        assert!(!c.contains("USER") && !c.contains("STLS"));
    }

    #[test]
    fn sizes_match_what_retr_sends() {
        for m in [
            &b"Subject: x\n\nbody\n"[..],
            b"Subject: x\r\n\r\nbody\r\n",
            b"Subject: x\n\n.leading dot\n..two\n",
            b"no final newline",
            b"a\rb\n",
            b"",
        ] {
            let sent = multiline(m);
            // Remove the terminator and the stuffing: what is left is the counted part.
            let body = sent.strip_suffix(b".\r\n").unwrap();
            let mut unstuffed = Vec::new();
            let mut start = true;
            for &c in body {
                if start && c == b'.' {
                    start = false;
                    continue;
                }
                start = c == b'\n';
                unstuffed.push(c);
            }
            // One stuffed dot removed per line starting with '.', which the loop did.
            assert_eq!(wire_size(m), unstuffed.len() as u64, "{m:?}");
        }
    }

    #[test]
    fn top_gives_headers_and_n_lines() {
        let m = b"From: a\nSubject: s\n\nl1\nl2\n.l3\n";
        assert_eq!(top(m, 0), b"From: a\r\nSubject: s\r\n\r\n.\r\n");
        assert_eq!(top(m, 1), b"From: a\r\nSubject: s\r\n\r\nl1\r\n.\r\n");
        assert_eq!(
            top(m, 10),
            b"From: a\r\nSubject: s\r\n\r\nl1\r\nl2\r\n..l3\r\n.\r\n"
        );
        // No body at all, no final newline.
        assert_eq!(top(b"Subject: s", 5), b"Subject: s\r\n.\r\n");
    }

    #[test]
    fn transaction_marks_and_resets() {
        let l = |size: u64, uid: &str| Listing {
            size,
            uid: uid.into(),
        };
        let mut t = Transaction::new(vec![l(100, "a"), l(200, "b"), l(300, "c")]);
        assert_eq!(t.stat(), "+OK 3 600\r\n");
        assert_eq!(
            t.list(None, false),
            "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
        );
        assert_eq!(t.delete(2), "+OK message 2 deleted\r\n");
        assert!(t.delete(2).starts_with("-ERR message 2 already deleted"));
        assert!(t.list(Some(2), false).starts_with("-ERR"));
        assert!(t.delete(4).starts_with("-ERR no such message"));
        assert!(t.delete(0).starts_with("-ERR no such message"));
        assert_eq!(t.stat(), "+OK 2 400\r\n");
        assert_eq!(t.list(None, true), "+OK\r\n1 a\r\n3 c\r\n.\r\n");
        assert_eq!(t.to_remove(), vec![1]);
        assert_eq!(t.reset(), "+OK maildrop has 3 messages (600 octets)\r\n");
        assert!(t.to_remove().is_empty());
        assert_eq!(t.list(Some(3), true), "+OK 3 c\r\n");
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_or_errs(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn top_never_panics(m in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), n in 0u32..20) {
            let out = top(&m, n);
            proptest::prop_assert!(out.ends_with(b".\r\n"));
        }
    }
}
