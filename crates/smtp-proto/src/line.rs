//! Command lines out of arbitrary pieces of input.
//!
//! [`LineReader`] buffers what the socket gave and hands out one [`Line`] at a time:
//! `Ok` for a line ended by CR LF, `BareLf` for one ended by a lone LF (the server decides
//! whether to tolerate it), `TooLong` for one over the limit. It never rejects a byte
//! itself: NUL and bare CR inside a line are passed through, and the caller checks
//! `line.contains(&0)` / `line.contains(&b'\r')` (they are hostile in commands).
//!
//! Memory is bounded: a line over the limit is not kept; the reader only counts it while
//! discarding up to its LF, so [`buffered`](LineReader::buffered) stays below the limit
//! plus two plus what one `push` added.

/// One line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line ended by CRLF (terminator removed).
    Ok(Vec<u8>),
    /// A line that ended with a bare LF (no CR before it); content without the LF.
    BareLf(Vec<u8>),
    /// A line longer than the limit: the reader has discarded bytes up to and including
    /// the next LF; `len` is how long it was (without its CRLF or LF).
    TooLong {
        /// The length of the line without its terminator.
        len: usize,
    },
}

/// Collects command lines from arbitrary byte pieces. Lines containing NUL or a bare CR
/// are still returned as `Ok`/`BareLf`: the caller checks `contains(&0)` /
/// `contains(&b'\r')`.
#[derive(Debug, Clone)]
pub struct LineReader {
    /// Input; bytes before `start` were already handed out.
    buf: Vec<u8>,
    start: usize,
    /// Bytes after `start` already searched for an LF without finding one.
    scanned: usize,
    limit: usize,
    /// Set while discarding the rest of an over-long line.
    discard: Option<Discard>,
}

#[derive(Debug, Clone, Copy)]
struct Discard {
    /// Bytes of the line dropped so far.
    len: usize,
    /// Whether the last dropped byte was a CR (the start of the terminating CRLF).
    last_cr: bool,
}

impl LineReader {
    /// A reader for lines of at most `limit` bytes, not counting the CRLF.
    pub fn new(limit: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
            discard: None,
        }
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        let data = &self.buf[self.start..];
        if let Some(d) = self.discard {
            return match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let ends_cr = if i > 0 {
                        data[i - 1] == b'\r'
                    } else {
                        d.last_cr
                    };
                    let len = d.len + i - usize::from(ends_cr);
                    self.consume(i + 1);
                    self.discard = None;
                    Some(Line::TooLong { len })
                }
                None => {
                    let last_cr = data.last().map_or(d.last_cr, |&b| b == b'\r');
                    self.discard = Some(Discard {
                        len: d.len + data.len(),
                        last_cr,
                    });
                    self.consume(data.len());
                    None
                }
            };
        }
        match data[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let (content, crlf) = match data[..end].strip_suffix(b"\r") {
                    Some(c) => (c, true),
                    None => (&data[..end], false),
                };
                let line = if content.len() > self.limit {
                    Line::TooLong { len: content.len() }
                } else if crlf {
                    Line::Ok(content.to_vec())
                } else {
                    Line::BareLf(content.to_vec())
                };
                self.consume(end + 1);
                Some(line)
            }
            None => {
                // Content plus a CR still waiting for its LF is at most limit + 1 bytes.
                if data.len() > self.limit.saturating_add(1) {
                    self.discard = Some(Discard {
                        len: data.len(),
                        last_cr: data.last() == Some(&b'\r'),
                    });
                    self.consume(data.len());
                } else {
                    self.scanned = data.len();
                }
                None
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Bytes held (bounded by the limit plus two plus one `push`).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes whatever is buffered after the last returned line (for handing the rest of
    /// the input to a DATA/BDAT decoder after the DATA/BDAT command line). Also forgets
    /// an over-long line being discarded.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..].to_vec();
        self.clear();
        rest
    }

    /// Puts bytes back in front of what is buffered (the leftover after DATA/BDAT ended).
    /// Meant for use after [`take_rest`](Self::take_rest); it does not end the discarding
    /// of an over-long line.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut buf = Vec::with_capacity(bytes.len() + self.buffered());
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(&self.buf[self.start..]);
        self.buf = buf;
        self.start = 0;
        self.scanned = 0;
    }

    /// Discards everything buffered (after STARTTLS: plaintext pipelined after it is
    /// dropped), including an over-long line being discarded.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.discard = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 8] = [1, 2, 3, 5, 7, 64, 512, usize::MAX];

    /// Feeds `input` in pieces of `n` bytes, collecting lines after each piece.
    fn lines(limit: usize, input: &[u8], n: usize) -> Vec<Line> {
        let mut r = LineReader::new(limit);
        let mut out = Vec::new();
        for piece in input.chunks(n.min(input.len().max(1))) {
            r.push(piece);
            while let Some(l) = r.next_line() {
                out.push(l);
            }
            assert!(
                r.buffered() <= limit + 2 + n.min(input.len()),
                "buffer bound"
            );
        }
        out
    }

    /// Runs `input` at every chunk size and every two-piece split; all must agree.
    fn all_cuts(limit: usize, input: &[u8]) -> Vec<Line> {
        let want = lines(limit, input, usize::MAX);
        for n in SIZES {
            assert_eq!(lines(limit, input, n), want, "chunks of {n}");
        }
        for cut in 0..=input.len() {
            let mut r = LineReader::new(limit);
            let mut got = Vec::new();
            for piece in [&input[..cut], &input[cut..]] {
                r.push(piece);
                while let Some(l) = r.next_line() {
                    got.push(l);
                }
            }
            assert_eq!(got, want, "cut at {cut}");
        }
        want
    }

    fn ok(s: &[u8]) -> Line {
        Line::Ok(s.to_vec())
    }

    #[test]
    fn crlf_lines() {
        assert_eq!(
            all_cuts(100, b"EHLO x\r\nMAIL FROM:<>\r\n\r\nQUIT\r\npartial"),
            vec![ok(b"EHLO x"), ok(b"MAIL FROM:<>"), ok(b""), ok(b"QUIT")]
        );
    }

    #[test]
    fn bare_lf_lines() {
        assert_eq!(
            all_cuts(100, b"EHLO x\nNOOP\r\n\nQUIT\n"),
            vec![
                Line::BareLf(b"EHLO x".to_vec()),
                ok(b"NOOP"),
                Line::BareLf(Vec::new()),
                Line::BareLf(b"QUIT".to_vec())
            ]
        );
    }

    #[test]
    fn nul_and_bare_cr_passed_through() {
        assert_eq!(
            all_cuts(100, b"NO\0OP\r\nRS\rET\r\nA\r\rB\r\n\r\r\n"),
            vec![ok(b"NO\0OP"), ok(b"RS\rET"), ok(b"A\r\rB"), ok(b"\r")]
        );
        assert_eq!(all_cuts(100, b"x\r\r\n"), vec![ok(b"x\r")]);
    }

    #[test]
    fn limit_is_exact() {
        let at = [vec![b'a'; 10], b"\r\n".to_vec()].concat();
        assert_eq!(all_cuts(10, &at), vec![ok(&[b'a'; 10])]);
        let at_lf = [vec![b'a'; 10], b"\n".to_vec()].concat();
        assert_eq!(all_cuts(10, &at_lf), vec![Line::BareLf(vec![b'a'; 10])]);
        let over = [vec![b'a'; 11], b"\r\n".to_vec()].concat();
        assert_eq!(all_cuts(10, &over), vec![Line::TooLong { len: 11 }]);
        let over_lf = [vec![b'a'; 11], b"\n".to_vec()].concat();
        assert_eq!(all_cuts(10, &over_lf), vec![Line::TooLong { len: 11 }]);
        assert_eq!(
            all_cuts(0, b"\r\nx\r\n"),
            vec![ok(b""), Line::TooLong { len: 1 }]
        );
    }

    #[test]
    fn too_long_then_next_line_is_fine() {
        let mut input = b"HELO a\r\n".to_vec();
        input.extend(vec![b'x'; 5000]);
        input.extend(b"\r\nQUIT\r\nNOOP\n");
        assert_eq!(
            all_cuts(512, &input),
            vec![
                ok(b"HELO a"),
                Line::TooLong { len: 5000 },
                ok(b"QUIT"),
                Line::BareLf(b"NOOP".to_vec())
            ]
        );
        // Several over-long lines in a row, with CRs inside.
        let mut input = vec![b'\r'; 40];
        input.extend(b"\r\n");
        input.extend(vec![b'y'; 39]);
        input.extend(b"\n");
        input.extend(b"ok\r\n");
        assert_eq!(
            all_cuts(16, &input),
            vec![
                Line::TooLong { len: 40 },
                Line::TooLong { len: 39 },
                ok(b"ok")
            ]
        );
    }

    #[test]
    fn buffer_stays_bounded_while_discarding() {
        let mut r = LineReader::new(100);
        for _ in 0..1000 {
            r.push(&[b'z'; 1000]);
            assert_eq!(r.next_line(), None);
            assert!(r.buffered() <= 1000);
        }
        r.push(b"\r\nQUIT\r\n");
        assert_eq!(r.next_line(), Some(Line::TooLong { len: 1_000_000 }));
        assert_eq!(r.next_line(), Some(ok(b"QUIT")));
        assert_eq!(r.next_line(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn take_rest_and_unread() {
        let mut r = LineReader::new(100);
        r.push(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(r.next_line(), Some(ok(b"DATA")));
        assert_eq!(r.buffered(), 29);
        let rest = r.take_rest();
        assert_eq!(rest, b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.next_line(), None);
        // The DATA decoder ends after ".\r\n" and hands back the pipelined command.
        r.push(b"NO");
        r.unread(b"QUIT\r\nRS");
        r.push(b"OP\r\n");
        assert_eq!(r.next_line(), Some(ok(b"QUIT")));
        assert_eq!(r.next_line(), Some(ok(b"RSNOOP")));
        assert_eq!(r.next_line(), None);
        // unread after a partially scanned line rescans from the front.
        r.push(b"ABC");
        assert_eq!(r.next_line(), None);
        r.unread(b"X\r\n");
        assert_eq!(r.next_line(), Some(ok(b"X")));
        r.push(b"\r\n");
        assert_eq!(r.next_line(), Some(ok(b"ABC")));
        assert_eq!(r.take_rest(), b"");
    }

    #[test]
    fn take_rest_forgets_discarding() {
        let mut r = LineReader::new(4);
        r.push(b"0123456789");
        assert_eq!(r.next_line(), None);
        assert_eq!(r.take_rest(), b"");
        r.push(b"QUIT\r\n");
        assert_eq!(r.next_line(), Some(ok(b"QUIT")));
    }

    #[test]
    fn clear_drops_pipelined_plaintext() {
        let mut r = LineReader::new(100);
        r.push(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT");
        assert_eq!(r.next_line(), Some(ok(b"STARTTLS")));
        r.clear();
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.next_line(), None);
        r.push(b"EHLO y\r\n");
        assert_eq!(r.next_line(), Some(ok(b"EHLO y")));
        // clear also ends the discarding of an over-long line.
        let mut r = LineReader::new(4);
        r.push(b"0123456789");
        assert_eq!(r.next_line(), None);
        r.clear();
        r.push(b"QUIT\r\n");
        assert_eq!(r.next_line(), Some(ok(b"QUIT")));
    }

    #[test]
    fn many_pipelined_lines_in_one_push() {
        let mut input = Vec::new();
        for i in 0..1000 {
            input.extend(format!("RCPT TO:<u{i}@x>\r\n").as_bytes());
        }
        let got = all_cuts(64, &input[..2000]);
        assert!(got.iter().all(|l| matches!(l, Line::Ok(_))));
        let got = lines(64, &input, usize::MAX);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], ok(b"RCPT TO:<u999@x>"));
    }
}
