//! `sendmail -bs`: an SMTP dialogue on standard input and output, for local programs that
//! would rather speak SMTP than run sendmail once per message.
//!
//! [`Session`] is the whole protocol as a pure state machine: a line goes in (without its
//! CRLF or LF), an [`Event`] comes out. It does no I/O, so it is tested without processes;
//! [`serve`] connects it to the streams and to postdrop.
//!
//! The subset of RFC 5321 spoken: EHLO/HELO, MAIL FROM (SIZE and BODY parameters), RCPT TO
//! (NOTIFY and ORCPT accepted and ignored), DATA with dot-unstuffing, RSET, NOOP, QUIT;
//! everything else is answered `502`. Every reply carries an RFC 3463 enhanced status
//! code. A message is answered `250 2.0.0 Ok: queued as ID` only after postdrop exits 0;
//! a postdrop failure is `451 4.3.0`.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Longest command line accepted (RFC 5321 says 512; local clients get some slack).
pub const MAX_COMMAND: usize = 2048;
/// Most recipients in one transaction.
pub const MAX_RECIPIENTS: usize = 1000;
/// Longest address accepted.
const MAX_ADDRESS: usize = 998;

/// A message accepted by the dialogue, to be handed to postdrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Envelope sender, empty for `<>`.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The message, dot-unstuffed, LF line ends.
    pub data: Vec<u8>,
}

/// What the caller should do after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this reply (CRLF line ends included).
    Reply(String),
    /// Inside DATA: nothing to send.
    Nothing,
    /// The message is complete: hand it to postdrop and send [`Session::queued`]'s reply.
    Deliver(Message),
    /// Send this reply and end the session.
    Close(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    Data,
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    hostname: String,
    size_limit: u64,
    state: State,
    sender: Option<String>,
    recipients: Vec<String>,
    data: Vec<u8>,
    too_big: bool,
}

fn reply(text: &str) -> String {
    format!("{text}\r\n")
}

impl Session {
    /// A session for `hostname` (greeting and HELO reply); `size_limit` is
    /// `message_size_limit` (0 = none).
    pub fn new(hostname: &str, size_limit: u64) -> Session {
        Session {
            hostname: hostname.to_string(),
            size_limit,
            state: State::Command,
            sender: None,
            recipients: Vec::new(),
            data: Vec::new(),
            too_big: false,
        }
    }

    /// The greeting.
    pub fn greeting(&self) -> String {
        reply(&format!("220 {} ESMTP Petrel", self.hostname))
    }

    fn reset(&mut self) {
        self.state = State::Command;
        self.sender = None;
        self.recipients.clear();
        self.data = Vec::new();
        self.too_big = false;
    }

    /// The reply once postdrop has been run for the message of [`Event::Deliver`]:
    /// `Ok(queue id)` or `Err(reason)`.
    pub fn queued(&mut self, result: Result<String, String>) -> String {
        match result {
            Ok(id) => reply(&format!("250 2.0.0 Ok: queued as {id}")),
            Err(why) => reply(&format!("451 4.3.0 Error: queue file write error: {why}")),
        }
    }

    /// Handles one line (without its line end).
    pub fn line(&mut self, line: &[u8]) -> Event {
        match self.state {
            State::Data => self.data_line(line),
            State::Command => self.command(line),
        }
    }

    fn data_line(&mut self, line: &[u8]) -> Event {
        if line == b"." {
            let too_big = self.too_big;
            let msg = Message {
                sender: self.sender.take().unwrap_or_default(),
                recipients: std::mem::take(&mut self.recipients),
                data: std::mem::take(&mut self.data),
            };
            self.reset();
            if too_big {
                return Event::Reply(reply("552 5.3.4 Error: message file too big"));
            }
            return Event::Deliver(msg);
        }
        if self.too_big {
            return Event::Nothing;
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        if self.size_limit > 0 && (self.data.len() + line.len() + 1) as u64 > self.size_limit {
            self.too_big = true;
            self.data = Vec::new();
            return Event::Nothing;
        }
        self.data.extend_from_slice(line);
        self.data.push(b'\n');
        Event::Nothing
    }

    fn command(&mut self, line: &[u8]) -> Event {
        if line.len() > MAX_COMMAND {
            return Event::Reply(reply("500 5.5.2 Error: line too long"));
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (text, ""),
        };
        let r = match verb.to_ascii_uppercase().as_str() {
            "" => reply("500 5.5.2 Error: bad syntax"),
            "HELO" | "EHLO" if arg.is_empty() => reply(&format!(
                "501 5.5.4 Syntax: {} hostname",
                verb.to_ascii_uppercase()
            )),
            "HELO" => {
                self.reset();
                reply(&format!("250 {}", self.hostname))
            }
            "EHLO" => {
                self.reset();
                let size = if self.size_limit > 0 {
                    format!("SIZE {}", self.size_limit)
                } else {
                    "SIZE".to_string()
                };
                format!(
                    "250-{}\r\n250-PIPELINING\r\n250-{size}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
                    self.hostname
                )
            }
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" if !arg.is_empty() => reply("501 5.5.4 Syntax: DATA"),
            "DATA" if self.sender.is_none() => reply("503 5.5.1 Error: need MAIL command"),
            "DATA" if self.recipients.is_empty() => reply("503 5.5.1 Error: need RCPT command"),
            "DATA" => {
                self.state = State::Data;
                reply("354 End data with <CR><LF>.<CR><LF>")
            }
            "RSET" if !arg.is_empty() => reply("501 5.5.4 Syntax: RSET"),
            "RSET" => {
                self.reset();
                reply("250 2.0.0 Ok")
            }
            "NOOP" => reply("250 2.0.0 Ok"),
            "QUIT" => return Event::Close(reply("221 2.0.0 Bye")),
            _ => reply("502 5.5.1 Error: command not implemented"),
        };
        Event::Reply(r)
    }

    fn mail(&mut self, arg: &str) -> String {
        if self.sender.is_some() {
            return reply("503 5.5.1 Error: nested MAIL command");
        }
        let Some((addr, params)) = path_arg(arg, "FROM:") else {
            return reply("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        if !clean(&addr) {
            return reply("501 5.1.7 Bad sender address syntax");
        }
        for p in params {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            match name.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if self.size_limit > 0 && n > self.size_limit => {
                        return reply("552 5.3.4 Message size exceeds fixed limit")
                    }
                    Ok(_) => {}
                    Err(_) => return reply("501 5.5.4 Bad SIZE parameter"),
                },
                "BODY" => {}
                _ => return reply(&format!("555 5.5.4 Unsupported option: {p}")),
            }
        }
        self.sender = Some(addr);
        reply("250 2.1.0 Ok")
    }

    fn rcpt(&mut self, arg: &str) -> String {
        if self.sender.is_none() {
            return reply("503 5.5.1 Error: need MAIL command");
        }
        let Some((addr, params)) = path_arg(arg, "TO:") else {
            return reply("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if addr.is_empty() || !clean(&addr) {
            return reply("501 5.1.3 Bad recipient address syntax");
        }
        for p in params {
            let name = p.split_once('=').map_or(p, |(n, _)| n);
            if !matches!(name.to_ascii_uppercase().as_str(), "NOTIFY" | "ORCPT") {
                return reply(&format!("555 5.5.4 Unsupported option: {p}"));
            }
        }
        if self.recipients.len() >= MAX_RECIPIENTS {
            return reply("452 4.5.3 Error: too many recipients");
        }
        self.recipients.push(addr);
        reply("250 2.1.5 Ok")
    }
}

fn clean(addr: &str) -> bool {
    addr.len() <= MAX_ADDRESS && !addr.chars().any(char::is_control)
}

/// Parses `FROM:<addr> PARAM...` (`keyword` is `FROM:` or `TO:`, any case, white space
/// allowed after the colon). The brackets may be left out; a source route is dropped.
fn path_arg<'a>(arg: &'a str, keyword: &str) -> Option<(String, Vec<&'a str>)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let (addr, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = closing_bracket(inner)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    let addr = if addr.starts_with('@') {
        addr.split_once(':').map_or("", |(_, a)| a)
    } else {
        addr
    };
    Some((addr.to_string(), params.split_whitespace().collect()))
}

/// The index of the `>` that closes a path, skipping quoted strings.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Runs a session on `input`/`output`; `deliver` hands a message to postdrop and returns
/// the queue id or the reason it failed. Returns when the client quits or goes away.
pub fn serve<R: Read>(
    session: &mut Session,
    input: &mut BufReader<R>,
    output: &mut impl Write,
    mut deliver: impl FnMut(&Message) -> Result<String, String>,
) -> io::Result<()> {
    output.write_all(session.greeting().as_bytes())?;
    output.flush()?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = match session.line(&line) {
            Event::Nothing => continue,
            Event::Reply(r) => r,
            Event::Deliver(m) => {
                let result = deliver(&m);
                session.queued(result)
            }
            Event::Close(r) => {
                output.write_all(r.as_bytes())?;
                return output.flush();
            }
        };
        output.write_all(text.as_bytes())?;
        // With PIPELINING, replies to a batch of commands go out together.
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn code(e: &Event) -> String {
        match e {
            Event::Reply(r) | Event::Close(r) => r
                .lines()
                .last()
                .unwrap_or_default()
                .chars()
                .take(9)
                .collect(),
            Event::Nothing => "-".into(),
            Event::Deliver(_) => "deliver".into(),
        }
    }

    fn run(s: &mut Session, lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| code(&s.line(l.as_bytes()))).collect()
    }

    #[test]
    fn a_whole_transaction() {
        let mut s = Session::new("mail.example.org", 0);
        assert_eq!(s.greeting(), "220 mail.example.org ESMTP Petrel\r\n");
        let codes = run(
            &mut s,
            &[
                "EHLO client",
                "MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME",
                "RCPT TO:<bob>",
                "rcpt to: <carol@example.org> NOTIFY=NEVER",
                "DATA",
            ],
        );
        assert_eq!(
            codes,
            [
                "250 ENHAN",
                "250 2.1.0",
                "250 2.1.5",
                "250 2.1.5",
                "354 End d"
            ]
        );
        assert_eq!(
            run(&mut s, &["Subject: x", "", "..leading dot", ""]),
            ["-", "-", "-", "-"]
        );
        let Event::Deliver(m) = s.line(b".") else {
            panic!("expected a message")
        };
        assert_eq!(m.sender, "alice@example.org");
        assert_eq!(m.recipients, ["bob", "carol@example.org"]);
        assert_eq!(m.data, b"Subject: x\n\n.leading dot\n\n");
        assert_eq!(
            s.queued(Ok("ABC".into())),
            "250 2.0.0 Ok: queued as ABC\r\n"
        );
        // The transaction is over: a new one needs MAIL again.
        assert_eq!(run(&mut s, &["RCPT TO:<x>"]), ["503 5.5.1"]);
        assert_eq!(run(&mut s, &["QUIT"]), ["221 2.0.0"]);
    }

    #[test]
    fn ehlo_lists_extensions() {
        let mut s = Session::new("h", 1000);
        let Event::Reply(r) = s.line(b"EHLO x") else {
            panic!()
        };
        assert_eq!(r, "250-h\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n");
        assert_eq!(code(&s.line(b"HELO x")), "250 h");
        assert_eq!(code(&s.line(b"EHLO")), "501 5.5.4");
    }

    #[test]
    fn sequence_errors() {
        let mut s = Session::new("h", 0);
        assert_eq!(
            run(
                &mut s,
                &[
                    "DATA",
                    "RCPT TO:<a>",
                    "MAIL FROM:<>",
                    "MAIL FROM:<x>",
                    "DATA",
                    "RSET",
                    "DATA"
                ]
            ),
            [
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.0",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.0.0",
                "503 5.5.1"
            ]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_commands() {
        let mut s = Session::new("h", 0);
        assert_eq!(
            run(
                &mut s,
                &[
                    "",
                    "VRFY bob",
                    "STARTTLS",
                    "MAIL TO:<a>",
                    "MAIL FROM:<a",
                    "MAIL FROM:<a> FOO=1",
                    "MAIL FROM:<a>x",
                    "NOOP",
                    "RSET x",
                    "DATA x"
                ]
            ),
            [
                "500 5.5.2",
                "502 5.5.1",
                "502 5.5.1",
                "501 5.5.4",
                "501 5.5.4",
                "555 5.5.4",
                "501 5.5.4",
                "250 2.0.0",
                "501 5.5.4",
                "501 5.5.4"
            ]
        );
        assert_eq!(
            run(
                &mut s,
                &[
                    "MAIL FROM:<a>",
                    "RCPT TO:<>",
                    "RCPT TO:<b> X=1",
                    "RCPT TO:<b\u{1}>"
                ]
            ),
            ["250 2.1.0", "501 5.1.3", "555 5.5.4", "501 5.1.3"]
        );
        let long = "NOOP ".to_string() + &"x".repeat(MAX_COMMAND);
        assert_eq!(run(&mut s, &[&long]), ["500 5.5.2"]);
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_arg("FROM:<a@b>", "FROM:"),
            Some(("a@b".into(), vec![]))
        );
        assert_eq!(
            path_arg("from: <a@b>  SIZE=1", "FROM:"),
            Some(("a@b".into(), vec!["SIZE=1"]))
        );
        assert_eq!(
            path_arg("FROM:a@b SIZE=1", "FROM:"),
            Some(("a@b".into(), vec!["SIZE=1"]))
        );
        assert_eq!(
            path_arg("TO:<@r1,@r2:a@b>", "TO:"),
            Some(("a@b".into(), vec![]))
        );
        assert_eq!(
            path_arg("TO:<\"x>y\"@b>", "TO:"),
            Some(("\"x>y\"@b".into(), vec![]))
        );
        assert_eq!(path_arg("FROM:<>", "FROM:"), Some((String::new(), vec![])));
        assert_eq!(path_arg("FRO", "FROM:"), None);
        assert_eq!(path_arg("FRÖM:<a>", "FROM:"), None);
    }

    #[test]
    fn size_limit_is_enforced() {
        let mut s = Session::new("h", 20);
        assert_eq!(run(&mut s, &["MAIL FROM:<a> SIZE=21"]), ["552 5.3.4"]);
        assert_eq!(run(&mut s, &["MAIL FROM:<a> SIZE=x"]), ["501 5.5.4"]);
        assert_eq!(
            run(&mut s, &["MAIL FROM:<a>", "RCPT TO:<b>", "DATA"]),
            ["250 2.1.0", "250 2.1.5", "354 End d"]
        );
        assert_eq!(
            run(&mut s, &["0123456789", "0123456789", "more", "."]),
            ["-", "-", "-", "552 5.3.4"]
        );
        // The session goes on.
        assert_eq!(
            run(
                &mut s,
                &["MAIL FROM:<a>", "RCPT TO:<b>", "DATA", "0123456789", "."]
            ),
            ["250 2.1.0", "250 2.1.5", "354 End d", "-", "deliver"]
        );
    }

    #[test]
    fn too_many_recipients() {
        let mut s = Session::new("h", 0);
        s.line(b"MAIL FROM:<a>");
        for i in 0..MAX_RECIPIENTS {
            assert_eq!(
                code(&s.line(format!("RCPT TO:<r{i}>").as_bytes())),
                "250 2.1.5"
            );
        }
        assert_eq!(code(&s.line(b"RCPT TO:<one-more>")), "452 4.5.3");
    }

    #[test]
    fn failure_to_queue_is_temporary() {
        let mut s = Session::new("h", 0);
        assert_eq!(
            s.queued(Err("disk full".into())),
            "451 4.3.0 Error: queue file write error: disk full\r\n"
        );
    }

    #[test]
    fn serve_with_pipelining_crlf_and_lf() {
        let input = b"EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\nRCPT TO:<c>\r\nDATA\r\nhi\r\n..dot\r\n.\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\nignored\r\n";
        let mut out = Vec::new();
        let mut got = Vec::new();
        let mut n = 0;
        serve(
            &mut Session::new("h", 0),
            &mut BufReader::new(&input[..]),
            &mut out,
            |m| {
                got.push(m.clone());
                n += 1;
                if n == 1 {
                    Ok("ID1".into())
                } else {
                    Err("postdrop failed".into())
                }
            },
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
        assert_eq!(
            codes,
            [
                "220 ", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "250 ", "354 ",
                "250 ", "250 ", "250 ", "354 ", "451 ", "221 "
            ]
        );
        assert!(out.contains("250 2.0.0 Ok: queued as ID1\r\n"));
        assert_eq!(got[0].data, b"hi\n.dot\n");
        assert_eq!(got[0].recipients, ["b", "c"]);
        assert_eq!(got[1].data, b"second\n");
    }

    #[test]
    fn input_cut_anywhere_gives_the_same_dialogue() {
        let input: &[u8] =
            b"HELO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nline\r\n.\r\nQUIT\r\n";
        let mut want = Vec::new();
        serve(
            &mut Session::new("h", 0),
            &mut BufReader::new(input),
            &mut want,
            |_| Ok("Q".into()),
        )
        .unwrap();
        for size in [1, 2, 4, 8, 16, 512] {
            let mut r = BufReader::with_capacity(size, input);
            let mut out = Vec::new();
            serve(&mut Session::new("h", 0), &mut r, &mut out, |_| {
                Ok("Q".into())
            })
            .unwrap();
            assert_eq!(out, want, "buffer of {size}");
        }
    }

    #[test]
    fn end_of_input_without_quit_ends_quietly() {
        let mut out = Vec::new();
        serve(
            &mut Session::new("h", 0),
            &mut BufReader::new(&b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nhalf"[..]),
            &mut out,
            |_| panic!("nothing to deliver"),
        )
        .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
    }
}
