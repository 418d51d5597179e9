//! Complete commands out of arbitrary pieces of input, literals included.
//!
//! A command is a line, or a line ending in a literal marker `{n}` / `{n+}`, then n bytes,
//! then more line, and so on. [`CommandReader`] hands a command out only when all of it is
//! here, as the raw bytes with the final CRLF removed (inner CRLFs after literal markers
//! and literal data kept), so [`parse_command`](crate::parse_command) can re-read them.
//!
//! Memory is bounded: the line part of a command may not exceed `max_line`, and the
//! literals of a command together may not exceed `max_literal`; a literal that would is
//! refused when announced, before its data is read. A line that grows over the limit
//! without ending is dropped as it comes in.
//!
//! A line may end with CRLF or a bare LF (tolerated, as most servers do). Empty lines
//! are ignored.

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// A complete command: all its lines and literals, as raw bytes (literal data inline,
    /// the `{n}` markers and their CRLF kept), without the final CRLF.
    Command(Vec<u8>),
    /// A synchronising literal `{n}` was announced and accepted: the server must send a
    /// continuation request (`+ Ready for literal data\r\n`) now; more bytes will come.
    NeedContinuation,
    /// The line or literal is too big or malformed: the tag if it could be read, and the
    /// text for `TAG BAD text` (or `* BAD text` without a tag). The reader has already
    /// skipped what it could. When `fatal` is set, the server should say
    /// `* BYE` and disconnect: the stream cannot be resynchronised.
    Bad {
        /// The command's tag, if it could be read.
        tag: Option<String>,
        /// The explanation.
        text: String,
        /// Whether the connection should be closed.
        fatal: bool,
    },
}

/// A non-synchronising literal over the limit is skipped (its data read and dropped) if it
/// is at most this long; a longer one ends the connection.
pub const MAX_SKIP_LITERAL: u64 = 1024 * 1024;

/// Longest tag [`ReadEvent::Bad`] will report.
const MAX_TAG: usize = 64;

#[derive(Debug, Clone)]
enum State {
    /// Reading a line of the command.
    Line,
    /// Copying literal data into the command.
    Literal(u64),
    /// Dropping the data of a refused non-synchronising literal; the Bad comes after.
    Skip {
        remaining: u64,
        tag: Option<String>,
        text: String,
    },
    /// Dropping the rest of an over-long line, up to its LF; the Bad comes after.
    DiscardLine { tag: Option<String> },
    /// A fatal error was reported: nothing more is read.
    Dead,
}

/// Splits the client's byte stream into complete commands, literals included.
#[derive(Debug, Clone)]
pub struct CommandReader {
    buf: Vec<u8>,
    /// Bytes before `start` were consumed.
    start: usize,
    /// Bytes after `start` already searched for an LF without finding one.
    scanned: usize,
    max_line: usize,
    max_literal: u64,
    state: State,
    /// The command so far.
    cmd: Vec<u8>,
    /// Line bytes (not literal data) in `cmd`.
    line_bytes: usize,
    /// Literal bytes announced in this command so far.
    literal_bytes: u64,
    /// The next line is a continuation response (AUTHENTICATE): an empty one counts.
    expect_response: bool,
}

/// A consumed input buffer bigger than this is given back to the allocator, so an idle
/// connection does not keep the memory of its biggest command.
const KEEP_CAPACITY: usize = 16 * 1024;

impl CommandReader {
    /// A reader for commands whose lines together are at most `max_line` bytes (e.g. 64
    /// KiB) and whose literals together are at most `max_literal` bytes (e.g. the APPEND
    /// limit, 50 MiB); a bigger literal is refused before its bytes are read.
    pub fn new(max_line: usize, max_literal: u64) -> Self {
        CommandReader {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
            max_literal,
            state: State::Line,
            cmd: Vec::new(),
            line_bytes: 0,
            literal_bytes: 0,
            expect_response: false,
        }
    }

    /// The next line answers a `+` continuation request (AUTHENTICATE's SASL exchange):
    /// it comes out as a [`ReadEvent::Command`] even when it is empty (an empty SASL
    /// response), instead of being skipped as a blank line between commands.
    pub fn expect_response(&mut self) {
        self.expect_response = true;
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Dead) {
            return;
        }
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held: unconsumed input plus the command being assembled.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start + self.cmd.len()
    }

    /// The input not taken by a command yet, removed from the reader: to hand the
    /// connection to another process between two commands (nothing is lost when no
    /// command is partly read, see [`CommandReader::in_command`]).
    pub fn take_unread(&mut self) -> Vec<u8> {
        let v = self.buf.split_off(self.start);
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
        v
    }

    /// Whether a command is partly read (the server should not, e.g., time out an IDLE
    /// as if nothing were happening).
    pub fn in_command(&self) -> bool {
        !self.cmd.is_empty() || !matches!(self.state, State::Line | State::Dead)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
        if self.start == self.buf.len() {
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
        }
    }

    fn reset_command(&mut self) {
        self.cmd = Vec::new();
        self.line_bytes = 0;
        self.literal_bytes = 0;
    }

    /// The tag of the command being read: from `cmd`, or else from `line`.
    fn tag_of(&self, line: &[u8]) -> Option<String> {
        let src = if self.cmd.is_empty() { line } else { &self.cmd };
        let end = src.iter().take(MAX_TAG + 1).position(|&b| b == b' ')?;
        let tag = &src[..end];
        if !tag.is_empty() && tag.iter().all(|&b| crate::parse::is_tag_char(b)) {
            std::str::from_utf8(tag).ok().map(str::to_string)
        } else {
            None
        }
    }

    /// The next event, if there is one with the bytes pushed so far.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<ReadEvent> {
        loop {
            let avail = self.buf.len() - self.start;
            match &mut self.state {
                State::Dead => return None,
                State::Literal(remaining) => {
                    let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(avail);
                    *remaining -= n as u64;
                    let done = *remaining == 0;
                    self.cmd
                        .extend_from_slice(&self.buf[self.start..self.start + n]);
                    self.consume(n);
                    if !done {
                        return None;
                    }
                    self.state = State::Line;
                }
                State::Skip { remaining, .. } => {
                    let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(avail);
                    *remaining -= n as u64;
                    let done = *remaining == 0;
                    self.consume(n);
                    if !done {
                        return None;
                    }
                    let State::Skip { tag, text, .. } =
                        std::mem::replace(&mut self.state, State::Line)
                    else {
                        return None;
                    };
                    self.reset_command();
                    return Some(ReadEvent::Bad {
                        tag,
                        text,
                        fatal: false,
                    });
                }
                State::DiscardLine { .. } => {
                    let data = &self.buf[self.start..];
                    match data.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            self.consume(i + 1);
                            let State::DiscardLine { tag } =
                                std::mem::replace(&mut self.state, State::Line)
                            else {
                                return None;
                            };
                            self.reset_command();
                            return Some(too_long(tag));
                        }
                        None => {
                            // Keep a trailing CR out of the count: harmless either way.
                            self.consume(data.len());
                            return None;
                        }
                    }
                }
                State::Line => {
                    if let Some(ev) = self.line_step() {
                        return ev;
                    }
                }
            }
        }
    }

    /// One step in the Line state: `Some(event-or-none)` to return, `None` to loop.
    fn line_step(&mut self) -> Option<Option<ReadEvent>> {
        let data = &self.buf[self.start..];
        let Some(i) = data[self.scanned..].iter().position(|&b| b == b'\n') else {
            // Content plus a CR waiting for its LF.
            let budget = self.max_line.saturating_sub(self.line_bytes);
            if data.len() > budget.saturating_add(1) {
                let tag = self.tag_of(data);
                let n = data.len();
                self.consume(n);
                self.state = State::DiscardLine { tag };
                return None;
            }
            self.scanned = data.len();
            return Some(None);
        };
        let end = self.scanned + i;
        let content = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
        let content_len = content.len();
        if self.line_bytes + content_len > self.max_line {
            let tag = self.tag_of(content);
            self.consume(end + 1);
            self.reset_command();
            return Some(Some(too_long(tag)));
        }
        if self.cmd.is_empty() && content_len == 0 {
            self.consume(end + 1);
            if std::mem::take(&mut self.expect_response) {
                return Some(Some(ReadEvent::Command(Vec::new())));
            }
            return None;
        }
        self.expect_response = false;
        let literal = literal_marker(content);
        let tag = literal.is_some().then(|| self.tag_of(content)).flatten();
        self.cmd.extend_from_slice(content);
        self.line_bytes += content_len;
        self.consume(end + 1);
        let Some((n, sync)) = literal else {
            let cmd = std::mem::take(&mut self.cmd);
            self.reset_command();
            return Some(Some(ReadEvent::Command(cmd)));
        };
        let accepted = n.and_then(|n| Some((n, n.checked_add(self.literal_bytes)?)));
        match accepted {
            Some((n, total)) if total <= self.max_literal => {
                self.literal_bytes = total;
                self.cmd.extend_from_slice(b"\r\n");
                self.state = State::Literal(n);
                if sync {
                    Some(Some(ReadEvent::NeedContinuation))
                } else {
                    None
                }
            }
            _ => {
                let text = "[TOOBIG] Literal too big".to_string();
                self.reset_command();
                match n {
                    Some(n) if !sync && n <= MAX_SKIP_LITERAL => {
                        self.state = State::Skip {
                            remaining: n,
                            tag,
                            text,
                        };
                        None
                    }
                    _ if !sync => {
                        self.state = State::Dead;
                        Some(Some(ReadEvent::Bad {
                            tag,
                            text,
                            fatal: true,
                        }))
                    }
                    _ => Some(Some(ReadEvent::Bad {
                        tag,
                        text,
                        fatal: false,
                    })),
                }
            }
        }
    }
}

fn too_long(tag: Option<String>) -> ReadEvent {
    ReadEvent::Bad {
        tag,
        text: "[TOOBIG] Command line too long".to_string(),
        fatal: false,
    }
}

/// Whether a line ends with a literal marker: `Some((length, synchronising))`, the length
/// `None` when it does not fit in a u64.
pub(crate) fn literal_marker(line: &[u8]) -> Option<(Option<u64>, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let (inner, sync) = match inner.strip_suffix(b"+") {
        Some(i) => (i, false),
        None => (inner, true),
    };
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok();
    Some((n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(r: &mut CommandReader) -> Vec<ReadEvent> {
        std::iter::from_fn(|| r.next()).collect()
    }

    fn cmd(s: &str) -> ReadEvent {
        ReadEvent::Command(s.as_bytes().to_vec())
    }

    #[test]
    fn markers() {
        assert_eq!(literal_marker(b"a LOGIN {5}"), Some((Some(5), true)));
        assert_eq!(literal_marker(b"a LOGIN {5+}"), Some((Some(5), false)));
        assert_eq!(literal_marker(b"{0}"), Some((Some(0), true)));
        assert_eq!(literal_marker(b"a {}"), None);
        assert_eq!(literal_marker(b"a {+}"), None);
        assert_eq!(literal_marker(b"a {1a}"), None);
        assert_eq!(literal_marker(b"a 5}"), None);
        assert_eq!(
            literal_marker(b"a {99999999999999999999999}"),
            Some((None, true))
        );
    }

    #[test]
    fn an_empty_continuation_response_is_a_line() {
        let mut r = CommandReader::new(100, 100);
        r.push(b"\r\n");
        assert_eq!(events(&mut r), vec![]);
        r.expect_response();
        r.push(b"\r\n\r\na NOOP\r\n");
        assert_eq!(events(&mut r), vec![cmd(""), cmd("a NOOP")]);
        r.expect_response();
        r.push(b"AGRlbW8Ac2VjcmV0\r\n\r\n");
        assert_eq!(events(&mut r), vec![cmd("AGRlbW8Ac2VjcmV0")]);
    }

    #[test]
    fn unread_input_can_be_taken_between_commands() {
        let mut r = CommandReader::new(100, 100);
        r.push(b"a LOGIN u p\r\nb SELECT {5}\r\n");
        assert_eq!(events(&mut r)[..1], [cmd("a LOGIN u p")][..]);
        let mut r = CommandReader::new(100, 100);
        r.push(b"a LOGIN u p\r\nb SELECT {5}\r\n");
        assert_eq!(r.next(), Some(cmd("a LOGIN u p")));
        assert!(!r.in_command());
        assert_eq!(r.take_unread(), b"b SELECT {5}\r\n");
        assert_eq!(r.next(), None);
    }

    #[test]
    fn a_big_command_does_not_stay_in_memory() {
        let mut r = CommandReader::new(1 << 20, 1 << 20);
        let long = format!("a NOOP {}\r\n", "x".repeat(200_000));
        r.push(long.as_bytes());
        assert_eq!(events(&mut r).len(), 1);
        assert!(r.buf.capacity() <= KEEP_CAPACITY && r.cmd.capacity() == 0);
    }

    #[test]
    fn lines_and_literals() {
        let mut r = CommandReader::new(100, 100);
        r.push(b"a1 NOOP\r\n\r\na2 LOGIN {3}\r\nbob {3+}\r\nx\r\ny\r\na3 LOGOUT\n");
        assert_eq!(
            events(&mut r),
            vec![
                cmd("a1 NOOP"),
                ReadEvent::NeedContinuation,
                cmd("a2 LOGIN {3}\r\nbob {3+}\r\nx\r\ny"),
                cmd("a3 LOGOUT"),
            ]
        );
        assert_eq!(r.buffered(), 0);
        assert!(!r.in_command());
    }

    #[test]
    fn too_long_lines() {
        let mut r = CommandReader::new(10, 100);
        r.push(b"tag1 NOOP xxxxxxxxxxxxxxxxxx");
        assert_eq!(events(&mut r), vec![]);
        assert!(r.buffered() <= 12);
        r.push(b"yyyyyyyyyyyyyy\r\nb NOOP\r\n");
        assert_eq!(
            events(&mut r),
            vec![
                ReadEvent::Bad {
                    tag: Some("tag1".into()),
                    text: "[TOOBIG] Command line too long".into(),
                    fatal: false
                },
                cmd("b NOOP"),
            ]
        );
        // Exactly the limit is fine; lines of one command count together.
        let mut r = CommandReader::new(10, 100);
        r.push(b"0123456789\r\na {1}\r\nxbcdefgh\r\n");
        let ev = events(&mut r);
        assert_eq!(ev[0], cmd("0123456789"));
        assert_eq!(ev[1], ReadEvent::NeedContinuation);
        assert!(matches!(&ev[2], ReadEvent::Bad { tag: Some(t), .. } if t == "a"));
    }

    #[test]
    fn literal_limits() {
        // Synchronising: refused, nothing skipped.
        let mut r = CommandReader::new(100, 10);
        r.push(b"a APPEND x {11}\r\nb NOOP\r\n");
        assert_eq!(
            events(&mut r),
            vec![
                ReadEvent::Bad {
                    tag: Some("a".into()),
                    text: "[TOOBIG] Literal too big".into(),
                    fatal: false
                },
                cmd("b NOOP"),
            ]
        );
        // Non-synchronising, small: skipped.
        let mut r = CommandReader::new(100, 10);
        r.push(b"a APPEND x {11+}\r\n01234567890\r\nb NOOP\r\n");
        let ev = events(&mut r);
        assert!(matches!(&ev[0], ReadEvent::Bad { tag: Some(t), fatal: false, .. } if t == "a"));
        // The CRLF ending the command line after the literal is an empty line: ignored.
        assert_eq!(&ev[1..], &[cmd("b NOOP")]);
        // Non-synchronising, absurd: fatal, then nothing.
        let mut r = CommandReader::new(100, 10);
        r.push(b"a APPEND x {99999999+}\r\nb NOOP\r\n");
        let ev = events(&mut r);
        assert!(matches!(&ev[..], [ReadEvent::Bad { fatal: true, .. }]));
        r.push(b"c NOOP\r\n");
        assert_eq!(events(&mut r), vec![]);
        // Literals of one command add up.
        let mut r = CommandReader::new(100, 10);
        r.push(b"a LOGIN {6+}\r\n123456 {5}\r\n");
        assert!(matches!(
            &events(&mut r)[..],
            [ReadEvent::Bad { fatal: false, .. }]
        ));
        let mut r = CommandReader::new(100, 10);
        r.push(b"a LOGIN {99999999999999999999999}\r\n");
        assert!(matches!(
            &events(&mut r)[..],
            [ReadEvent::Bad { fatal: false, .. }]
        ));
    }
}
