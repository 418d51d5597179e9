//! The client side of SMTP and LMTP (RFC 5321, RFC 2033): reading the server's replies,
//! understanding its EHLO/LHLO announcement, and putting a message into DATA form.
//! Bytes in, values out: no sockets, no clocks.
//!
//! - [`ReplyReader`]: bytes from the server → [`ClientReply`] values, multi-line replies
//!   joined, RFC 2034 enhanced status codes split off, with limits on line length, line
//!   count and reply size so a hostile server cannot make the client buffer without end.
//! - [`parse_ehlo`]: the EHLO (or LHLO) reply → [`Extensions`].
//! - [`encode_data`]: queued message content → the DATA stream (CRLF line ends,
//!   dot-stuffing, the final `.` line).
//! - [`xtext`]: RFC 3461 xtext, for `ENVID=` and `ORCPT=rfc822;`.

/// Longest reply line accepted, without its line end.
const MAX_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_LINES: usize = 1000;
/// Largest reply accepted, line ends included.
const MAX_REPLY: usize = 64 * 1024;

/// One reply as a client reads it (RFC 5321 §4.2, RFC 2034 enhanced codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    /// The three-digit basic code (200..=599).
    pub code: u16,
    /// The enhanced status code (`"2.1.5"`) of the first line that carried one, if any.
    pub enhanced: Option<String>,
    /// The text of each line, without the basic code, the separator, the enhanced code
    /// and the line end. Non-UTF-8 bytes are replaced by U+FFFD.
    pub lines: Vec<String>,
}

impl ClientReply {
    /// 2, 3, 4 or 5 (code / 100).
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The enhanced status code when the server sent one whose class matches the basic
    /// code (e.g. "5.1.1"), else "X.0.0" built from the class ("2.0.0", "4.0.0", "5.0.0").
    pub fn dsn(&self) -> String {
        match &self.enhanced {
            Some(e) if enhanced_len(e.as_bytes(), self.class_digit()) == Some(e.len()) => e.clone(),
            _ => format!("{}.0.0", self.class()),
        }
    }

    /// Postfix-style one-line text for logs/DSNs: "250 2.0.0 Ok: queued as 4F2A" — the
    /// code, then every line's text (enhanced code stripped from each line) joined by
    /// single spaces, the enhanced code shown once after the basic code when present.
    /// Empty lines add nothing.
    pub fn text(&self) -> String {
        let mut out = self.code.to_string();
        if let Some(e) = &self.enhanced {
            out.push(' ');
            out.push_str(e);
        }
        for line in &self.lines {
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
        }
        out
    }

    /// The class as the ASCII digit an enhanced code must start with.
    fn class_digit(&self) -> u8 {
        b'0' + (self.class() % 10) as u8
    }
}

/// Length of the enhanced status code at the start of `s` (`class "." 1*3digit "."
/// 1*3digit`, RFC 3463, with `class` given), when it is followed by a space or the end.
fn enhanced_len(s: &[u8], class: u8) -> Option<usize> {
    if !matches!(class, b'2' | b'4' | b'5') || s.len() < 5 || s[0] != class || s[1] != b'.' {
        return None;
    }
    let mut i = 2;
    for part in 0..2 {
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 3 {
            return None;
        }
        if part == 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    match s.get(i) {
        None | Some(b' ') => Some(i),
        _ => None,
    }
}

/// Accumulates bytes from the server and yields complete replies.
///
/// Lines end in CR LF or a bare LF. Every line is `ddd-text` except the last,
/// `ddd text` (or just `ddd`). Limits: 4096 bytes per line (without its end), 1000
/// lines and 64 KiB per reply. After an error the reader stays failed: every further
/// [`next_reply`](Self::next_reply) returns the same error (the connection is unusable).
#[derive(Debug, Clone, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    /// Start of the reply being read (everything before it has been returned).
    head: usize,
    /// Start of the next line not yet parsed.
    line_start: usize,
    /// Where to continue looking for the end of that line.
    scan: usize,
    /// The lines of the reply being read, parsed so far.
    code: u16,
    enhanced: Option<String>,
    lines: Vec<String>,
    failed: Option<String>,
}

impl ReplyReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.head > 0 {
            // Drop what has been returned already; offsets move with it.
            self.buf.drain(..self.head);
            self.line_start -= self.head;
            self.scan -= self.head;
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Next complete reply, `Ok(None)` if more bytes are needed, `Err(text)` on a
    /// malformed reply (a line not starting with 3 digits and `' '` or `'-'`, a code
    /// outside 200..=599, the code changing between lines, a line over 4096 bytes, more
    /// than 1000 lines, a reply over 64 KiB).
    pub fn next_reply(&mut self) -> Result<Option<ClientReply>, String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.parse() {
            Ok(r) => Ok(r),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes buffered and not yet part of a returned reply.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.head
    }

    fn parse(&mut self) -> Result<Option<ClientReply>, String> {
        loop {
            let Some(off) = self.buf[self.scan..].iter().position(|&b| b == b'\n') else {
                self.scan = self.buf.len();
                // A CR may still come before the LF.
                if self.buf.len() - self.line_start > MAX_LINE + 1 {
                    return Err(format!("reply line longer than {MAX_LINE} bytes"));
                }
                if self.buf.len() - self.head > MAX_REPLY {
                    return Err(format!("reply longer than {MAX_REPLY} bytes"));
                }
                return Ok(None);
            };
            let nl = self.scan + off;
            let mut line = &self.buf[self.line_start..nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > MAX_LINE {
                return Err(format!("reply line longer than {MAX_LINE} bytes"));
            }
            if nl + 1 - self.head > MAX_REPLY {
                return Err(format!("reply longer than {MAX_REPLY} bytes"));
            }
            if self.lines.len() >= MAX_LINES {
                return Err(format!("reply with more than {MAX_LINES} lines"));
            }
            let (code, last, enhanced, text) = parse_line(line)?;
            if !self.lines.is_empty() && code != self.code {
                return Err(format!(
                    "reply code changed from {} to {code} within a reply",
                    self.code
                ));
            }
            self.code = code;
            if self.enhanced.is_none() {
                self.enhanced = enhanced;
            }
            self.lines.push(text);
            self.line_start = nl + 1;
            self.scan = nl + 1;
            if last {
                self.head = self.line_start;
                return Ok(Some(ClientReply {
                    code: self.code,
                    enhanced: self.enhanced.take(),
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// One reply line without its end → (code, is the last line, enhanced code, text).
fn parse_line(line: &[u8]) -> Result<(u16, bool, Option<String>, String), String> {
    let bad = || {
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        format!("malformed reply line {shown:?}")
    };
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(bad()),
    };
    let code = line[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        return Err(format!("reply code {code} out of range"));
    }
    let mut text = line.get(4..).unwrap_or_default();
    let mut enhanced = None;
    if let Some(n) = enhanced_len(text, line[0]) {
        enhanced = Some(String::from_utf8_lossy(&text[..n]).into_owned());
        text = text.get(n + 1..).unwrap_or_default();
    }
    Ok((
        code,
        last,
        enhanced,
        String::from_utf8_lossy(text).into_owned(),
    ))
}

/// What the server announced in its EHLO (or LHLO) reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// SIZE limit; Some(0) when SIZE is announced without a number or with 0 (= no limit).
    pub size: Option<u64>,
    /// AUTH mechanisms, upper-cased (also from the old "AUTH=PLAIN LOGIN" form).
    pub auth: Vec<String>,
}

/// Parses the EHLO reply's lines after the first (keywords are case-insensitive).
///
/// A SIZE value that is not a number is taken as "no limit" (`Some(0)`). AUTH mechanisms
/// from several lines (`AUTH` and `AUTH=`) are merged without duplicates, in order.
pub fn parse_ehlo(reply: &ClientReply) -> Extensions {
    let mut ext = Extensions::default();
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let keyword = keyword.to_ascii_uppercase();
        if let Some(first) = keyword.strip_prefix("AUTH=") {
            add_auth(&mut ext.auth, std::iter::once(first).chain(words));
            continue;
        }
        match keyword.as_str() {
            "PIPELINING" => ext.pipelining = true,
            "8BITMIME" => ext.eight_bit_mime = true,
            "SMTPUTF8" => ext.smtputf8 = true,
            "DSN" => ext.dsn = true,
            "STARTTLS" => ext.starttls = true,
            "CHUNKING" => ext.chunking = true,
            "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
            "SIZE" => {
                ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
            }
            "AUTH" => add_auth(&mut ext.auth, words),
            _ => {}
        }
    }
    ext
}

/// Adds upper-cased mechanisms to `auth`, each once.
fn add_auth<'a>(auth: &mut Vec<String>, mechs: impl Iterator<Item = &'a str>) {
    for m in mechs {
        let m = m.to_ascii_uppercase();
        if !m.is_empty() && !auth.contains(&m) {
            auth.push(m);
        }
    }
}

/// The message content (as stored in the queue: LF or CRLF line ends, maybe no final
/// newline) as DATA sends it: every line ending CRLF (bare LF → CRLF; a CR not followed
/// by LF becomes a space), lines starting with '.' get another '.', a final CRLF added if
/// missing, then ".\r\n". Empty content gives just ".\r\n".
///
/// One allocation (sized for the usual case), one pass, copies in whole lines.
pub fn encode_data(content: &[u8]) -> Vec<u8> {
    // Room for ~1 added byte per 32 bytes of content (LF → CRLF, stuffed dots) plus the
    // end; grows once at most for unusual content.
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 8);
    let mut rest = content;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            out.push(b'.');
        }
        let (body, next) = match find_lf(rest) {
            Some(i) => {
                let line = &rest[..i];
                (line.strip_suffix(b"\r").unwrap_or(line), &rest[i + 1..])
            }
            None => (rest, &[][..]),
        };
        push_line_body(&mut out, body);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A line's bytes without its end; a stray CR (one not ending the line) becomes a space,
/// as Postfix's cleanup_replace_stray_cr_lf does: a receiver that takes a bare CR for a
/// line end must never see a line that is just "." (SMTP smuggling).
fn push_line_body(out: &mut Vec<u8>, body: &[u8]) {
    if body.contains(&b'\r') {
        out.extend(body.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
    } else {
        out.extend_from_slice(body);
    }
}

/// Position of the first LF in `s`, eight bytes at a time.
fn find_lf(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = LO * b'\n' as u64;
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ LF;
        // Non-zero exactly when some byte of x is zero (some byte of the chunk is LF).
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return chunk.iter().position(|&b| b == b'\n').map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| base + i)
}

/// RFC 3461 xtext encoding ("+" and "=" and chars outside '!'..='~' as +HH, upper-case
/// hex; a non-ASCII character as its UTF-8 bytes, each +HH).
pub fn xtext(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// All replies in `input`, fed in pieces of `piece` bytes.
    fn read_all(input: &[u8], piece: usize) -> Result<Vec<ClientReply>, String> {
        let mut r = ReplyReader::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            r.push(chunk);
            while let Some(reply) = r.next_reply()? {
                out.push(reply);
            }
        }
        assert_eq!(r.buffered(), 0, "leftover bytes");
        Ok(out)
    }

    fn one(input: &str) -> ClientReply {
        let mut all = read_all(input.as_bytes(), input.len().max(1)).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn err(input: &[u8]) -> String {
        let mut r = ReplyReader::new();
        r.push(input);
        loop {
            match r.next_reply() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error for {input:?}"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn single_line() {
        let r = one("250 2.0.0 Ok: queued as 4F2A\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.class(), 2);
        assert_eq!(r.enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(r.lines, vec!["Ok: queued as 4F2A"]);
        assert_eq!(r.dsn(), "2.0.0");
        assert_eq!(r.text(), "250 2.0.0 Ok: queued as 4F2A");
    }

    #[test]
    fn multi_line_with_enhanced_codes() {
        let r = one("550-5.1.1 The email account that you tried to reach does\r\n550-5.1.1 not exist. Please try\r\n550 5.1.1 double-checking.\r\n");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(r.lines.len(), 3);
        assert_eq!(r.lines[1], "not exist. Please try");
        assert_eq!(
            r.text(),
            "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking."
        );
        assert_eq!(r.dsn(), "5.1.1");
    }

    #[test]
    fn enhanced_code_on_some_lines_only() {
        let r = one("451-first line\r\n451-4.7.1 second\r\n451 third\r\n");
        assert_eq!(r.enhanced.as_deref(), Some("4.7.1"));
        assert_eq!(r.lines, vec!["first line", "second", "third"]);
        assert_eq!(r.text(), "451 4.7.1 first line second third");
        assert_eq!(r.dsn(), "4.7.1");
    }

    #[test]
    fn enhanced_code_must_match_class_and_shape() {
        let r = one("550 2.1.1 odd\r\n");
        assert_eq!(r.enhanced, None);
        assert_eq!(r.lines, vec!["2.1.1 odd"]);
        assert_eq!(r.dsn(), "5.0.0");
        assert_eq!(r.text(), "550 2.1.1 odd");
        for text in [
            "5.1.1234 x",
            "5.1 x",
            "5..1 x",
            "5.1.1x",
            "5.1111.1 x",
            "5.a.1",
        ] {
            let r = one(&format!("550 {text}\r\n"));
            assert_eq!(r.enhanced, None, "{text}");
            assert_eq!(r.lines, vec![text]);
        }
        let r = one("550 5.123.456\r\n");
        assert_eq!(r.enhanced.as_deref(), Some("5.123.456"));
        assert_eq!(r.lines, vec![""]);
        assert_eq!(r.text(), "550 5.123.456");
        // No enhanced codes for 3xx (RFC 3463 has classes 2, 4 and 5 only).
        let r = one("354 3.0.0 go ahead\r\n");
        assert_eq!(r.enhanced, None);
        assert_eq!(r.dsn(), "3.0.0");
    }

    #[test]
    fn dsn_without_or_with_mismatched_enhanced() {
        let r = one("421 closing\r\n");
        assert_eq!(r.dsn(), "4.0.0");
        assert_eq!(r.text(), "421 closing");
        let built = ClientReply {
            code: 550,
            enhanced: Some("4.1.1".into()),
            lines: vec![],
        };
        assert_eq!(built.dsn(), "5.0.0");
    }

    #[test]
    fn bare_code_and_empty_text() {
        let r = one("250\r\n");
        assert_eq!(r.lines, vec![""]);
        assert_eq!(r.text(), "250");
        let r = one("250-\r\n250 \r\n");
        assert_eq!(r.lines, vec!["", ""]);
        assert_eq!(r.text(), "250");
    }

    #[test]
    fn bare_lf_and_crlf_mixed() {
        let all = read_all(b"250-a\n250 b\r\n354 go\n", 100).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].lines, vec!["a", "b"]);
        assert_eq!(all[1].code, 354);
    }

    #[test]
    fn pieces_do_not_matter() {
        let input: &[u8] = b"220 mx.example.com ESMTP\r\n250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n250 2.1.0 Ok\n550 5.1.1 <x@y>: Recipient address rejected\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
        let whole = read_all(input, input.len()).unwrap();
        assert_eq!(whole.len(), 5);
        for piece in 1..=input.len() {
            assert_eq!(read_all(input, piece).unwrap(), whole, "piece {piece}");
        }
    }

    #[test]
    fn buffered_counts_unreturned_bytes() {
        let mut r = ReplyReader::new();
        r.push(b"250-a\r\n250 b\r\n220 x");
        assert_eq!(r.buffered(), 19);
        assert_eq!(r.next_reply().unwrap().unwrap().lines, vec!["a", "b"]);
        assert_eq!(r.buffered(), 5);
        assert_eq!(r.next_reply().unwrap(), None);
        assert_eq!(r.buffered(), 5);
        r.push(b"\r\n");
        assert_eq!(r.next_reply().unwrap().unwrap().code, 220);
        assert_eq!(r.buffered(), 0);
        // Lines of a reply still incomplete count too.
        r.push(b"250-a\r\n");
        assert_eq!(r.next_reply().unwrap(), None);
        assert_eq!(r.buffered(), 7);
    }

    #[test]
    fn non_utf8_is_replaced() {
        let all = read_all(b"550 caf\xe9\r\n", 3).unwrap();
        assert_eq!(all[0].lines, vec!["caf\u{fffd}"]);
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            &b"25 x\r\n"[..],
            b"2500 x\r\n",
            b"25a x\r\n",
            b"\r\n",
            b"hello\r\n",
            b" 250 x\r\n",
            b"250_x\r\n",
        ] {
            assert!(err(bad).contains("malformed"), "{bad:?}");
        }
        assert!(err(b"199 x\r\n").contains("out of range"));
        assert!(err(b"600 x\r\n").contains("out of range"));
        assert!(err(b"099 x\r\n").contains("out of range"));
    }

    #[test]
    fn code_change_within_a_reply() {
        let e = err(b"250-a\r\n251 b\r\n");
        assert!(e.contains("changed"), "{e}");
    }

    #[test]
    fn too_long_line() {
        let mut ok = b"250 ".to_vec();
        ok.resize(MAX_LINE, b'x');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(read_all(&ok, 1000).unwrap().len(), 1);

        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE + 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(err(&long).contains("longer than"));
        // Detected before the line end arrives, too.
        let mut r = ReplyReader::new();
        r.push(&long[..MAX_LINE]);
        assert_eq!(r.next_reply(), Ok(None));
        r.push(&long[MAX_LINE..MAX_LINE + 2]);
        assert!(r.next_reply().unwrap_err().contains("longer than"));
        // And the reader stays failed.
        r.push(b"\r\n250 ok\r\n");
        assert!(r.next_reply().is_err());
    }

    #[test]
    fn too_many_lines() {
        let ok = "250-x\r\n".repeat(MAX_LINES - 1) + "250 x\r\n";
        assert_eq!(one(&ok).lines.len(), MAX_LINES);
        let bad = "250-x\r\n".repeat(MAX_LINES) + "250 x\r\n";
        assert!(err(bad.as_bytes()).contains("more than"));
    }

    #[test]
    fn too_large_reply() {
        let line = format!("250-{}\r\n", "y".repeat(1000));
        let bad = line.repeat(70) + "250 x\r\n";
        assert!(err(bad.as_bytes()).contains("reply longer"));
        // Without the end in sight either.
        let mut r = ReplyReader::new();
        for _ in 0..70 {
            r.push(line.as_bytes());
            match r.next_reply() {
                Ok(None) => {}
                Err(e) => {
                    assert!(e.contains("reply longer"));
                    return;
                }
                Ok(Some(_)) => panic!("a reply"),
            }
        }
        panic!("no error");
    }

    fn ehlo(lines: &[&str]) -> Extensions {
        let mut input = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            input.push_str(&format!("250{sep}{l}\r\n"));
        }
        parse_ehlo(&one(&input))
    }

    #[test]
    fn ehlo_extensions() {
        let e = ehlo(&[
            "mx.example.com Hello",
            "PIPELINING",
            "SIZE 10240000",
            "ETRN",
            "STARTTLS",
            "AUTH PLAIN login",
            "AUTH=LOGIN CRAM-MD5",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]);
        assert_eq!(
            e,
            Extensions {
                pipelining: true,
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
                size: Some(10_240_000),
                auth: vec!["PLAIN".into(), "LOGIN".into(), "CRAM-MD5".into()],
            }
        );
    }

    #[test]
    fn ehlo_details() {
        assert_eq!(ehlo(&["mx"]), Extensions::default());
        // The first line is the greeting, never an extension.
        assert_eq!(ehlo(&["PIPELINING", "x"]), Extensions::default());
        assert_eq!(ehlo(&["mx", "size 1000"]).size, Some(1000));
        assert_eq!(ehlo(&["mx", "SIZE"]).size, Some(0));
        assert_eq!(ehlo(&["mx", "SIZE 0"]).size, Some(0));
        assert_eq!(ehlo(&["mx", "SIZE lots"]).size, Some(0));
        assert_eq!(ehlo(&["mx", "Auth=login"]).auth, vec!["LOGIN"]);
        assert_eq!(
            ehlo(&["mx", "AUTH=PLAIN LOGIN"]).auth,
            vec!["PLAIN", "LOGIN"]
        );
        assert!(ehlo(&["mx", "pipelining", "starttls"]).pipelining);
        assert!(!ehlo(&["mx", "PIPELININGX"]).pipelining);
        assert!(ehlo(&["mx", "", "  ", "8bitmime"]).eight_bit_mime);
        // An LHLO reply with enhanced codes on each line parses the same.
        let r = one("250-2.0.0 lmtp.example\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 5\r\n");
        let e = parse_ehlo(&r);
        assert!(e.pipelining);
        assert_eq!(e.size, Some(5));
    }

    fn enc(s: &str) -> String {
        String::from_utf8(encode_data(s.as_bytes())).unwrap()
    }

    #[test]
    fn data_encoding() {
        assert_eq!(enc(""), ".\r\n");
        assert_eq!(enc("a\nb\n"), "a\r\nb\r\n.\r\n");
        assert_eq!(enc("a\nb"), "a\r\nb\r\n.\r\n");
        assert_eq!(enc(".a\n.\n..\nx.y\n"), "..a\r\n..\r\n...\r\nx.y\r\n.\r\n");
        assert_eq!(enc("."), "..\r\n.\r\n");
        assert_eq!(enc("\n"), "\r\n.\r\n");
        assert_eq!(enc("\n\n.\n"), "\r\n\r\n..\r\n.\r\n");
        assert_eq!(
            enc("a\r\n.b\r\nc\r\n"),
            "a\r\n..b\r\nc\r\n.\r\n",
            "CRLF kept, dots stuffed"
        );
        assert_eq!(enc("a\r\nb\nc"), "a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(enc("a\rb\n"), "a b\r\n.\r\n", "a stray CR becomes a space");
        assert_eq!(
            enc("x\r.\r\ny\n"),
            "x .\r\ny\r\n.\r\n",
            "no line of a lone dot for receivers that end lines at a bare CR"
        );
        assert_eq!(enc("a\r"), "a \r\n.\r\n");
        assert_eq!(enc("a\r\r\n"), "a \r\n.\r\n");
        let long = "x".repeat(37) + "\n" + &".".repeat(20) + "\nend";
        assert_eq!(
            enc(&long),
            "x".repeat(37) + "\r\n." + &".".repeat(20) + "\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn find_lf_everywhere() {
        for len in 0..40 {
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = b'\n';
                assert_eq!(find_lf(&v), Some(at));
                // Bytes that differ from LF by one bit or borrow do not fool it.
                let v2: Vec<u8> = (0..len)
                    .map(|i| {
                        if i == at {
                            b'\n'
                        } else {
                            [0x0b, 0x8a, 0x09][i % 3]
                        }
                    })
                    .collect();
                assert_eq!(find_lf(&v2), Some(at));
            }
            assert_eq!(find_lf(&vec![0x8a; len]), None);
            assert_eq!(find_lf(&vec![0x0b; len]), None);
            assert_eq!(find_lf(&vec![0x09; len]), None);
        }
    }

    #[test]
    fn data_encoding_of_a_large_message() {
        let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\n";
        let mut content = Vec::new();
        while content.len() < 10 << 20 {
            content.extend_from_slice(line);
            content.extend_from_slice(b".dot line\n");
        }
        let start = std::time::Instant::now();
        let out = encode_data(&content);
        let took = start.elapsed();
        assert!(out.len() > content.len());
        // Speed is measured by the benches, not asserted here.
        eprintln!("encode_data: {} bytes in {took:?}", content.len());
    }

    #[test]
    fn xtext_encoding() {
        assert_eq!(xtext("user@example.com"), "user@example.com");
        assert_eq!(xtext("a+b=c"), "a+2Bb+3Dc");
        assert_eq!(xtext("a b\t~!"), "a+20b+09~!");
        assert_eq!(xtext("\u{7f}"), "+7F");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext(""), "");
    }

    /// Bare LF → CRLF, a final CRLF when missing (the property's expectation).
    /// CRLF line ends; a CR that does not end a line becomes a space.
    fn normalise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            if b == b'\r' {
                out.push(if input.get(i + 1) == Some(&b'\n') {
                    b
                } else {
                    b' '
                });
                continue;
            }
            if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Removes the final ".\r\n" and one leading dot from every line (CRLF-separated).
    fn unstuff(encoded: &[u8]) -> Vec<u8> {
        let body = encoded.strip_suffix(b".\r\n").expect("final dot line");
        let mut out = Vec::new();
        let mut at_start = true;
        for (i, &b) in body.iter().enumerate() {
            if at_start {
                assert!(
                    b != b'.' || body.get(i + 1) == Some(&b'.'),
                    "unstuffed dot at {i}"
                );
                if b == b'.' {
                    at_start = false;
                    continue;
                }
            }
            at_start = b == b'\n';
            out.push(b);
        }
        out
    }

    fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just(b'a'),
                3 => Just(b'.'),
                3 => Just(b'\n'),
                2 => Just(b'\r'),
                1 => any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn encode_data_round_trips(input in interesting_bytes()) {
            let encoded = encode_data(&input);
            prop_assert_eq!(unstuff(&encoded), normalise(&input));
            // Every LF in the output is part of a CRLF.
            for (i, &b) in encoded.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && encoded[i - 1] == b'\r');
                }
            }
        }

        #[test]
        fn our_server_reads_back_the_content(input in interesting_bytes()) {
            let mut d = crate::DataDecoder::new();
            let mut got = Vec::new();
            for ev in d.push(&encode_data(&input)) {
                if let crate::DataEvent::Bytes(b) = ev {
                    got.extend_from_slice(&b);
                }
            }
            prop_assert!(d.is_done());
            prop_assert!(d.rest().is_empty());
            prop_assert_eq!(d.bare_lf(), 0);
            // CRLF → LF on the way in: the content with LF line ends and a final LF.
            let mut want = Vec::new();
            for (i, &b) in input.iter().enumerate() {
                if b == b'\r' {
                    if input.get(i + 1) != Some(&b'\n') {
                        want.push(b' ');
                    }
                    continue;
                }
                want.push(b);
            }
            if !want.is_empty() && !want.ends_with(b"\n") {
                want.push(b'\n');
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn replies_survive_any_cutting(
            cuts in proptest::collection::vec(1usize..30, 1..40),
        ) {
            let input: &[u8] = b"220 hi\r\n250-mx\n250-PIPELINING\r\n250 2.0.0 SIZE 5\r\n550-5.1.1 a\r\n550 b\r\n";
            let mut r = ReplyReader::new();
            let mut got = Vec::new();
            let mut rest = input;
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                r.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(reply) = r.next_reply().unwrap() {
                    got.push(reply);
                }
            }
            prop_assert_eq!(got.len(), 3);
            prop_assert_eq!(got[2].text(), "550 5.1.1 a b");
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut r = ReplyReader::new();
            r.push(&input);
            while let Ok(Some(_)) = r.next_reply() {}
        }
    }
}
