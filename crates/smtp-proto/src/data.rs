//! The message stream after `DATA` (RFC 5321 §4.1.1.4, §4.5.2) and after `BDAT`
//! (RFC 3030).
//!
//! # DATA
//!
//! [`DataDecoder`] starts at the beginning of a line (right after the server's `354`)
//! and turns the dot-stuffed, CRLF-ended stream into message bytes with LF line ends:
//!
//! - Only CR LF `.` CR LF ends the message, or `.` CR LF as the very first line.
//! - A line that starts with `.` after a CRLF (or at the start) loses that dot
//!   (`..x` → `.x`, `.x` → `x`).
//! - CR LF becomes LF. A bare LF (not preceded by CR) is kept as LF and counted in
//!   [`bare_lf`](DataDecoder::bare_lf); a bare CR (not followed by LF) is kept as CR and
//!   counted in [`bare_cr`](DataDecoder::bare_cr).
//! - A line consisting of `.` alone whose line break before or after is a bare LF or a
//!   bare CR (`\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r`, `\r\n.\n`, `.\n` at the start …)
//!   is content, never an end: such a line is kept as `.` (not unstuffed) and
//!   [`smuggling_attempt`](DataDecoder::smuggling_attempt) becomes true. Another server
//!   might take it as the end of the message, so what follows it (often a second
//!   envelope: SMTP smuggling) stays inside this message.
//! - Dot-unstuffing applies only after CRLF: after a bare LF or bare CR, `..x` stays
//!   `..x`.
//!
//! The decoder is a byte-at-a-time state machine (with a fast path for runs of ordinary
//! bytes), so its output does not depend on how the input was cut into pieces.
//!
//! # BDAT
//!
//! [`BdatDecoder`] takes exactly the announced number of octets per chunk, with no dot
//! handling, converting CR LF to LF even when the CR ends one chunk and the LF starts the
//! next (the CR is held back until the next byte is known, and flushed by
//! [`finish`](BdatDecoder::finish)).

/// What [`DataDecoder::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// Message bytes, dot-unstuffed, CRLF converted to LF (bare CR kept as is).
    Bytes(Vec<u8>),
    /// `CRLF . CRLF` seen: the message is complete. Bytes after it are returned by
    /// [`DataDecoder::rest`].
    End,
}

/// What ended the previous line, for a line that starts here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// The start of the message or a CR LF: dot rules apply.
    Real,
    /// A bare LF.
    Lf,
    /// A bare CR.
    Cr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    Mid,
    /// A CR was seen; whether it is bare depends on the next byte.
    Cr,
    /// At the start of a line.
    LineStart(Break),
    /// A `.` at the start of a line.
    Dot(Break),
    /// `.` CR at the start of a line.
    DotCr(Break),
    /// The end was seen.
    Done,
}

/// Decodes the DATA stream. Starts at the beginning of a line (right after the DATA
/// command's `354` reply). Only CR LF `.` CR LF ends it (or `.` CR LF as the very first
/// line). `\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r`, `.\n` are content, never an end. See
/// the module documentation.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    rest: Vec<u8>,
    size: u64,
    bare_lf: u64,
    bare_cr: u64,
    smuggling: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    /// A decoder at the start of a message.
    pub fn new() -> Self {
        DataDecoder {
            state: State::LineStart(Break::Real),
            rest: Vec::new(),
            size: 0,
            bare_lf: 0,
            bare_cr: 0,
            smuggling: false,
        }
    }

    /// Feeds bytes; returns the events they complete: at most one `Bytes` (only when
    /// some were produced) followed by `End`. After `End`, further input is not consumed:
    /// it is kept for [`rest`](Self::rest).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<DataEvent> {
        if self.state == State::Done {
            self.rest.extend_from_slice(bytes);
            return Vec::new();
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Mid {
                // Fast path: copy the run up to the next CR or LF.
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(bytes.len() - i);
                out.extend_from_slice(&bytes[i..i + run]);
                i += run;
                if i == bytes.len() {
                    break;
                }
            }
            let b = bytes[i];
            i += 1;
            self.step(b, &mut out);
            if self.state == State::Done {
                self.rest.extend_from_slice(&bytes[i..]);
                break;
            }
        }
        self.size += out.len() as u64;
        let mut events = Vec::with_capacity(2);
        if !out.is_empty() {
            events.push(DataEvent::Bytes(out));
        }
        if self.state == State::Done {
            events.push(DataEvent::End);
        }
        events
    }

    /// One byte through the state machine.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        let mut state = self.state;
        // A byte after a bare CR is looked at again as the first of a new line, hence
        // the loop (it runs at most twice).
        loop {
            state = match (state, b) {
                (State::Done, _) => State::Done,
                (State::Mid | State::LineStart(_), b'\r') => State::Cr,
                (State::Mid | State::LineStart(_), b'\n') => {
                    out.push(b'\n');
                    self.bare_lf += 1;
                    State::LineStart(Break::Lf)
                }
                (State::LineStart(k), b'.') => State::Dot(k),
                (State::Mid | State::LineStart(_), _) => {
                    out.push(b);
                    State::Mid
                }
                (State::Cr, b'\n') => {
                    out.push(b'\n');
                    State::LineStart(Break::Real)
                }
                (State::Cr, _) => {
                    out.push(b'\r');
                    self.bare_cr += 1;
                    state = State::LineStart(Break::Cr);
                    continue;
                }
                (State::Dot(k), b'\r') => State::DotCr(k),
                (State::Dot(_), b'\n') => {
                    out.extend_from_slice(b".\n");
                    self.bare_lf += 1;
                    self.smuggling = true;
                    State::LineStart(Break::Lf)
                }
                (State::Dot(k), _) => {
                    if k != Break::Real {
                        out.push(b'.');
                    }
                    out.push(b);
                    State::Mid
                }
                (State::DotCr(Break::Real), b'\n') => State::Done,
                (State::DotCr(_), b'\n') => {
                    out.extend_from_slice(b".\n");
                    self.smuggling = true;
                    State::LineStart(Break::Real)
                }
                (State::DotCr(_), _) => {
                    out.extend_from_slice(b".\r");
                    self.bare_cr += 1;
                    self.smuggling = true;
                    state = State::LineStart(Break::Cr);
                    continue;
                }
            };
            break;
        }
        self.state = state;
    }

    /// Bytes that came after the end (pipelined commands), once `End` was returned.
    /// Takes them: a second call returns what was pushed since.
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest)
    }

    /// True once `End` was returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Message bytes produced so far (after unstuffing and CRLF→LF).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many bare LF (LF without CR before it) were seen in the message.
    pub fn bare_lf(&self) -> u64 {
        self.bare_lf
    }

    /// How many bare CR (CR not followed by LF) were seen.
    pub fn bare_cr(&self) -> u64 {
        self.bare_cr
    }

    /// True when a line consisting of `.` ended by a bare LF or with a bare CR around it
    /// was seen (`\n.\n`, `\r\n.\n`, `\n.\r\n`, `\r.\r\n` …): a smuggling attempt.
    pub fn smuggling_attempt(&self) -> bool {
        self.smuggling
    }
}

/// Decodes BDAT chunks (RFC 3030): exactly `size` bytes each, no dot handling. CRLF→LF
/// is carried across chunks by keeping a trailing CR pending: use one `BdatDecoder` per
/// message and [`begin_chunk`](Self::begin_chunk) per BDAT command.
#[derive(Debug, Clone, Default)]
pub struct BdatDecoder {
    remaining: u64,
    pending_cr: bool,
    size: u64,
}

impl BdatDecoder {
    /// A decoder at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a chunk of `size` bytes (replacing whatever remained of the previous one:
    /// the server must read each chunk whole before the next BDAT).
    pub fn begin_chunk(&mut self, size: u64) {
        self.remaining = size;
    }

    /// Consumes up to the chunk's remaining bytes from `input`; returns (bytes consumed,
    /// message bytes produced). The chunk is complete when
    /// [`remaining`](Self::remaining) is 0; bytes of `input` past the chunk are not
    /// consumed (they are the next command).
    pub fn push(&mut self, input: &[u8]) -> (usize, Vec<u8>) {
        let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        let mut out = Vec::with_capacity(n + 1);
        for &b in &input[..n] {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.push(b'\n');
                    continue;
                }
                out.push(b'\r');
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
        self.remaining -= n as u64;
        self.size += out.len() as u64;
        (n, out)
    }

    /// Bytes still expected in the current chunk.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// At LAST: flushes a pending CR (a message ending in a bare CR).
    pub fn finish(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.pending_cr) {
            self.size += 1;
            vec![b'\r']
        } else {
            Vec::new()
        }
    }

    /// Message bytes produced so far (after CRLF→LF).
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIZES: [usize; 7] = [1, 2, 3, 5, 7, 64, 512];

    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        content: Vec<u8>,
        ended: bool,
        rest: Vec<u8>,
        bare_lf: u64,
        bare_cr: u64,
        smuggling: bool,
    }

    fn run_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut d = DataDecoder::new();
        let mut content = Vec::new();
        let mut ended = false;
        for piece in pieces {
            for e in d.push(piece) {
                assert!(!ended, "event after End");
                match e {
                    DataEvent::Bytes(b) => {
                        assert!(!b.is_empty(), "empty Bytes event");
                        content.extend(b);
                    }
                    DataEvent::End => ended = true,
                }
            }
        }
        assert_eq!(d.size(), content.len() as u64);
        assert_eq!(d.is_done(), ended);
        Outcome {
            content,
            ended,
            rest: d.rest(),
            bare_lf: d.bare_lf(),
            bare_cr: d.bare_cr(),
            smuggling: d.smuggling_attempt(),
        }
    }

    /// Decodes `input` whole, in pieces of every size in SIZES, and cut in two at every
    /// byte boundary; asserts all agree and returns the outcome.
    fn decode(input: &[u8]) -> Outcome {
        let want = run_pieces([input]);
        for n in SIZES {
            assert_eq!(
                run_pieces(input.chunks(n)),
                want,
                "pieces of {n} of {input:?}"
            );
        }
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run_pieces([a, b]), want, "cut at {cut} of {input:?}");
        }
        want
    }

    fn ended(content: &[u8], rest: &[u8]) -> Outcome {
        Outcome {
            content: content.to_vec(),
            ended: true,
            rest: rest.to_vec(),
            bare_lf: 0,
            bare_cr: 0,
            smuggling: false,
        }
    }

    #[test]
    fn end_at_first_line() {
        assert_eq!(decode(b".\r\n"), ended(b"", b""));
        assert_eq!(decode(b".\r\nQUIT\r\n"), ended(b"", b"QUIT\r\n"));
    }

    #[test]
    fn end_after_content() {
        assert_eq!(
            decode(b"Subject: x\r\n\r\nhello\r\n.\r\n"),
            ended(b"Subject: x\n\nhello\n", b"")
        );
        assert_eq!(decode(b"\r\n.\r\n"), ended(b"\n", b""));
        assert_eq!(decode(b"a\r\n.\r\n"), ended(b"a\n", b""));
    }

    #[test]
    fn rest_returns_pipelined_bytes() {
        let o = decode(b"body\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n.\r\n");
        assert_eq!(
            o,
            ended(b"body\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n.\r\n")
        );
        // Input pushed after End is kept, not consumed.
        let mut d = DataDecoder::new();
        assert_eq!(
            d.push(b"x\r\n.\r\nQU"),
            vec![DataEvent::Bytes(b"x\n".to_vec()), DataEvent::End]
        );
        assert_eq!(d.push(b"IT\r\n"), vec![]);
        assert_eq!(d.rest(), b"QUIT\r\n");
        assert_eq!(d.rest(), b"");
        assert_eq!(d.push(b"more"), vec![]);
        assert_eq!(d.rest(), b"more");
        assert_eq!(d.size(), 2);
    }

    #[test]
    fn dot_unstuffing() {
        assert_eq!(decode(b"..x\r\n.\r\n"), ended(b".x\n", b""));
        assert_eq!(decode(b"a\r\n..x\r\n.\r\n"), ended(b"a\n.x\n", b""));
        assert_eq!(decode(b"a\r\n..\r\n.\r\n"), ended(b"a\n.\n", b""));
        assert_eq!(decode(b"a\r\n...\r\n.\r\n"), ended(b"a\n..\n", b""));
        assert_eq!(decode(b"a\r\n.x\r\n.\r\n"), ended(b"a\nx\n", b""));
        assert_eq!(decode(b"a.b\r\nc..d\r\n.\r\n"), ended(b"a.b\nc..d\n", b""));
        assert_eq!(decode(b"..\r\n.\r\n"), ended(b".\n", b""));
    }

    #[test]
    fn crlf_to_lf_and_no_end_without_terminator() {
        let o = decode(b"line1\r\nline2\r\n");
        assert_eq!(o.content, b"line1\nline2\n");
        assert!(!o.ended);
        let o = decode(b"line1\r\n.");
        assert_eq!(o.content, b"line1\n");
        assert!(!o.ended);
        let o = decode(b"line1\r\n.\r");
        assert_eq!(o.content, b"line1\n");
        assert!(!o.ended && !o.smuggling);
        let o = decode(b"x\r");
        assert_eq!((o.content.as_slice(), o.bare_cr), (&b"x"[..], 0));
    }

    #[test]
    fn bare_cr_and_lf_are_kept_and_counted() {
        let o = decode(b"a\nb\rc\r\r\nd\n\n.\r\n");
        assert_eq!(o.content, b"a\nb\rc\r\nd\n\n.\n");
        assert_eq!((o.bare_lf, o.bare_cr), (3, 2));
        assert!(!o.ended);
        // "..x" after a bare LF / bare CR is not unstuffed.
        let o = decode(b"a\n..x\r..y\r\n.\r\n");
        assert_eq!(o.content, b"a\n..x\r..y\n");
        assert!(o.ended && !o.smuggling);
        assert_eq!((o.bare_lf, o.bare_cr), (1, 1));
        let o = decode(b"a\n.x\r\n.\r\n");
        assert_eq!(o.content, b"a\n.x\n");
        assert!(o.ended && !o.smuggling);
    }

    #[test]
    fn smuggling_variants_never_end() {
        // (input, content, bare_lf, bare_cr)
        let cases: [(&[u8], &[u8], u64, u64); 11] = [
            (b"a\n.\nb", b"a\n.\nb", 2, 0),
            (b"a\n.\r\nb", b"a\n.\nb", 1, 0),
            (b"a\r.\r\nb", b"a\r.\nb", 0, 1),
            (b"a\r\n.\rb", b"a\n.\rb", 0, 1),
            (b"a\r\n.\nb", b"a\n.\nb", 1, 0),
            (b".\nb", b".\nb", 1, 0),
            (b".\rb", b".\rb", 0, 1),
            (b"a\r.\nb", b"a\r.\nb", 1, 1),
            (b"a\r.\rb", b"a\r.\rb", 0, 2),
            (b"a\n.\rb", b"a\n.\rb", 1, 1),
            (b"a\r\n.\r\r\nb", b"a\n.\r\nb", 0, 1),
        ];
        for (input, content, lf, cr) in cases {
            let o = decode(input);
            assert!(!o.ended, "{input:?} ended");
            assert!(o.smuggling, "{input:?} not flagged");
            assert_eq!(o.content, content, "{input:?}");
            assert_eq!((o.bare_lf, o.bare_cr), (lf, cr), "{input:?}");
            // The same at the end of the input: still no end.
            let o = decode(&input[..input.len() - 1]);
            assert!(!o.ended, "{input:?} ended when cut");
        }
        // A legitimate end after a smuggling attempt still ends the message.
        let o = decode(b"a\n.\nb\r\n.\r\nQUIT\r\n");
        assert!(o.ended && o.smuggling);
        assert_eq!(o.content, b"a\n.\nb\n");
        assert_eq!(o.rest, b"QUIT\r\n");
    }

    #[test]
    fn smuggled_envelope_stays_content() {
        let input: &[u8] = b"From: a@b\r\n\r\nhello\r\n.\nMAIL FROM:<admin@victim.example>\r\n\
              RCPT TO:<target@victim.example>\r\nDATA\r\n\r\nevil\r\n.\r\nQUIT\r\n";
        let o = decode(input);
        assert!(o.ended && o.smuggling);
        assert_eq!(
            o.content,
            b"From: a@b\n\nhello\n.\nMAIL FROM:<admin@victim.example>\n\
              RCPT TO:<target@victim.example>\nDATA\n\nevil\n"
        );
        assert_eq!(o.rest, b"QUIT\r\n");
        assert_eq!((o.bare_lf, o.bare_cr), (1, 0));
        for variant in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n.\n",
        ] {
            let mut input = b"hello".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\n");
            let o = decode(&input);
            assert!(!o.ended && o.smuggling, "{variant:?}");
            assert!(
                o.content
                    .ends_with(b"MAIL FROM:<x@y>\nRCPT TO:<z@w>\nDATA\n"),
                "{variant:?}: {:?}",
                o.content
            );
        }
    }

    /// Whether `input`, read from the start of a message, holds the end marker.
    fn has_end(input: &[u8]) -> bool {
        let mut s = b"\r\n".to_vec();
        s.extend_from_slice(input);
        s.windows(5).any(|w| w == b"\r\n.\r\n")
    }

    fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\r'),
                3 => Just(b'\n'),
                3 => Just(b'.'),
                1 => Just(b'x'),
                1 => any::<u8>(),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_nor_end_without_marker(input in interesting_bytes()) {
            let o = run_pieces([input.as_slice()]);
            if !has_end(&input) {
                prop_assert!(!o.ended);
                prop_assert!(o.rest.is_empty());
            } else {
                prop_assert!(o.ended);
            }
            prop_assert!(o.content.len() <= input.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let o = run_pieces([input.as_slice()]);
            prop_assert_eq!(o.ended, has_end(&input));
        }

        #[test]
        fn pieces_do_not_matter(input in interesting_bytes(), cuts in proptest::collection::vec(1usize..20, 1..50)) {
            let whole = run_pieces([input.as_slice()]);
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= input.len() {
                    break;
                }
                let end = (at + c).min(input.len());
                pieces.push(&input[at..end]);
                at = end;
            }
            prop_assert_eq!(run_pieces(pieces), whole);
        }

        #[test]
        fn bdat_pieces_do_not_matter(input in interesting_bytes(), n in 1usize..50) {
            let want = bdat_chunks(&[input.as_slice()], usize::MAX);
            prop_assert_eq!(bdat_chunks(&[input.as_slice()], n), want.clone());
            let (a, b) = input.split_at(input.len() / 2);
            prop_assert_eq!(bdat_chunks(&[a, b], n), want);
        }
    }

    /// Sends `chunks` as consecutive BDAT chunks, each fed in pieces of `n` bytes, with
    /// an extra pipelined command after each chunk; returns the message.
    fn bdat_chunks(chunks: &[&[u8]], n: usize) -> Vec<u8> {
        let mut d = BdatDecoder::new();
        let mut msg = Vec::new();
        for chunk in chunks {
            d.begin_chunk(chunk.len() as u64);
            let mut wire = chunk.to_vec();
            wire.extend_from_slice(b"BDAT 0 LAST\r\n");
            let mut at = 0;
            while d.remaining() > 0 {
                let end = (at + n.min(wire.len())).min(wire.len());
                let (used, out) = d.push(&wire[at..end]);
                at += used;
                msg.extend(out);
            }
            assert_eq!(at, chunk.len(), "consumed exactly the chunk");
            assert_eq!(&wire[at..], b"BDAT 0 LAST\r\n");
        }
        msg.extend(d.finish());
        assert_eq!(d.size(), msg.len() as u64);
        msg
    }

    #[test]
    fn bdat_exact_sizes() {
        let mut d = BdatDecoder::new();
        d.begin_chunk(5);
        assert_eq!(d.remaining(), 5);
        let (used, out) = d.push(b"hel");
        assert_eq!((used, out.as_slice()), (3, &b"hel"[..]));
        assert_eq!(d.remaining(), 2);
        let (used, out) = d.push(b"loQUIT\r\n");
        assert_eq!((used, out.as_slice()), (2, &b"lo"[..]));
        assert_eq!(d.remaining(), 0);
        let (used, out) = d.push(b"QUIT\r\n");
        assert_eq!((used, out.len()), (0, 0));
        d.begin_chunk(0);
        assert_eq!(d.push(b"x"), (0, Vec::new()));
        assert_eq!(d.finish(), b"");
        assert_eq!(d.size(), 5);
    }

    #[test]
    fn bdat_no_dot_handling() {
        for n in SIZES {
            assert_eq!(bdat_chunks(&[b"..x\r\n.\r\n.\n"], n), b"..x\n.\n.\n");
        }
    }

    #[test]
    fn bdat_crlf_across_chunks() {
        for n in SIZES {
            assert_eq!(bdat_chunks(&[b"a\r", b"\nb"], n), b"a\nb");
            assert_eq!(bdat_chunks(&[b"a\r", b"", b"\nb"], n), b"a\nb");
            assert_eq!(bdat_chunks(&[b"a\r", b"b"], n), b"a\rb");
            assert_eq!(bdat_chunks(&[b"a\r", b"\r\n"], n), b"a\r\n");
            assert_eq!(bdat_chunks(&[b"a\r\r", b"\r"], n), b"a\r\r\r");
            assert_eq!(bdat_chunks(&[b"a\n\r\n", b"\n"], n), b"a\n\n\n");
        }
    }

    #[test]
    fn bdat_pending_cr_flushed_at_finish() {
        let mut d = BdatDecoder::new();
        d.begin_chunk(2);
        assert_eq!(d.push(b"a\r"), (2, b"a".to_vec()));
        assert_eq!(d.size(), 1);
        assert_eq!(d.finish(), b"\r");
        assert_eq!(d.size(), 2);
        assert_eq!(d.finish(), b"");
    }

    #[test]
    fn bdat_every_cut() {
        let message: &[u8] = b"Subject: x\r\n\r\nline\rwith\ncr\r\n\r\n.\r\nend\r";
        let want = b"Subject: x\n\nline\rwith\ncr\n\n.\nend\r".to_vec();
        for cut in 0..=message.len() {
            let (a, b) = message.split_at(cut);
            for n in SIZES {
                assert_eq!(bdat_chunks(&[a, b], n), want, "cut {cut} pieces {n}");
            }
        }
        for cut1 in 0..=message.len() {
            for cut2 in cut1..=message.len() {
                let parts = [&message[..cut1], &message[cut1..cut2], &message[cut2..]];
                assert_eq!(bdat_chunks(&parts, 3), want, "cuts {cut1} {cut2}");
            }
        }
    }

    #[test]
    fn bdat_huge_chunk_size() {
        let mut d = BdatDecoder::new();
        d.begin_chunk(u64::MAX);
        assert_eq!(d.push(b"abc"), (3, b"abc".to_vec()));
        assert_eq!(d.remaining(), u64::MAX - 3);
    }
}
