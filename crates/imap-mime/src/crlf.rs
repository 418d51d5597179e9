//! LF → CRLF conversion, the hot path of `FETCH BODY[]`: Maildir files written by Petrel's
//! local agent have LF line ends, IMAP sends and counts CRLF.
//!
//! The rule (the same everywhere here): every LF not immediately preceded by a CR in the
//! *input* gets a CR in front of it; everything else, a lone CR included, is copied as it
//! is. Whether a LF at the very start of the input is preceded by a CR is only known to
//! the streaming types ([`CrlfEncoder`], [`CrlfCounter`]), which remember the last byte of
//! the previous chunk; the one-shot functions take it to be not.
//!
//! The conversion finds the LFs with `memchr` and copies the runs between them in bulk;
//! the length is counted without converting, so a literal's `{n}` prefix can be written
//! before its bytes go straight into the output buffer.

use std::borrow::Cow;

/// The number of LFs in `data` not preceded by a CR (`prev_cr`: whether the byte before
/// `data[0]` was a CR), i.e. how many bytes the CRLF form adds.
fn bare_lfs(data: &[u8], prev_cr: bool) -> usize {
    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    let mut n = usize::from(first == b'\n' && !prev_cr);
    if rest.is_empty() {
        return n;
    }
    let lfs = memchr::memchr_iter(b'\n', rest).count();
    if lfs == 0 {
        return n;
    }
    // No CR at all (the usual LF-only file): every LF is bare. Both counts are SIMD passes.
    if memchr::memchr(b'\r', data).is_none() {
        return n + lfs;
    }
    // Mixed or CRLF: look at the byte before each LF (pairs data[i - 1], data[i]), in
    // blocks small enough for an 8-bit counter, which the compiler vectorises.
    let before = &data[..data.len() - 1];
    for (p, c) in before.chunks(255).zip(rest.chunks(255)) {
        let block = p.iter().zip(c).fold(0u8, |acc, (&p, &c)| {
            acc + u8::from((c == b'\n') & (p != b'\r'))
        });
        n += usize::from(block);
    }
    n
}

/// Room in `out` for the CRLF form of `data` in the usual case (lines of 32 bytes or
/// more) without a second allocation; a no-op when the caller reserved already.
fn reserve(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 32 + 2);
}

/// Appends the CRLF form of `data` to `out`; `prev_cr` as for [`bare_lfs`].
fn convert(data: &[u8], prev_cr: bool, out: &mut Vec<u8>) {
    // `start` is where the bytes not yet copied begin: each run is copied up to a bare
    // LF, then the CR, and the LF starts the next run.
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        let cr_before = match i.checked_sub(1) {
            Some(j) => data[j] == b'\r',
            None => prev_cr,
        };
        if !cr_before {
            out.extend_from_slice(&data[start..i]);
            out.push(b'\r');
            start = i;
        }
    }
    out.extend_from_slice(&data[start..]);
}

/// The position of the first LF in `data` not preceded by a CR.
fn first_bare_lf(data: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', data).find(|&i| i == 0 || data[i - 1] != b'\r')
}

/// The length of the CRLF form of `data` (what [`to_crlf`] and [`to_crlf_into`] produce),
/// counted without converting: for the `{n}` of a literal, or RFC822.SIZE.
pub fn crlf_len(data: &[u8]) -> usize {
    data.len() + bare_lfs(data, false)
}

/// Appends the CRLF form of `data` to `out` (the bytes already in `out` do not matter: a
/// LF at the start of `data` always gets a CR). With [`crlf_len`] for the prefix, a literal
/// goes straight into a response buffer:
///
/// ```
/// use std::io::Write as _;
/// let stored = b"Subject: hi\n\nbody\n";
/// let mut out = b"* 1 FETCH (BODY[] ".to_vec();
/// write!(out, "{{{}}}\r\n", petrel_imap_mime::crlf_len(stored)).unwrap();
/// petrel_imap_mime::to_crlf_into(stored, &mut out);
/// assert_eq!(out, b"* 1 FETCH (BODY[] {21}\r\nSubject: hi\r\n\r\nbody\r\n");
/// ```
pub fn to_crlf_into(data: &[u8], out: &mut Vec<u8>) {
    reserve(data, out);
    convert(data, false, out);
}

/// Converts a stored message to the CRLF form IMAP counts in: every LF not already
/// preceded by CR gets one. Borrowed when there is nothing to change (the Dovecot-written
/// CRLF case). A bare CR is left as it is.
pub fn to_crlf(msg: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = first_bare_lf(msg) else {
        return Cow::Borrowed(msg);
    };
    // The exact size: counting is several times faster than converting, and saves a
    // reallocation or a too large buffer kept by the caller.
    let rest = &msg[first..];
    let mut out = Vec::with_capacity(msg.len() + bare_lfs(rest, false));
    out.extend_from_slice(&msg[..first]);
    convert(rest, false, &mut out);
    Cow::Owned(out)
}

/// Converts a message to the CRLF form a chunk at a time (a file read in pieces, say):
/// the concatenated output is what [`to_crlf_into`] gives for the concatenated input,
/// wherever the chunks are split (a CR at the end of one chunk and a LF at the start of
/// the next are a CRLF).
#[derive(Debug, Clone, Copy, Default)]
pub struct CrlfEncoder {
    prev_cr: bool,
}

impl CrlfEncoder {
    /// An encoder at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the CRLF form of the next chunk to `out`.
    pub fn encode_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if let Some(&last) = chunk.last() {
            reserve(chunk, out);
            convert(chunk, self.prev_cr, out);
            self.prev_cr = last == b'\r';
        }
    }
}

/// Counts the length of a message's CRLF form a chunk at a time: after all chunks,
/// [`CrlfCounter::total`] is [`crlf_len`] of the concatenated input.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrlfCounter {
    prev_cr: bool,
    total: u64,
}

impl CrlfCounter {
    /// A counter at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(&last) = chunk.last() {
            let n = chunk.len() + bare_lfs(chunk, self.prev_cr);
            self.total += n as u64;
            self.prev_cr = last == b'\r';
        }
    }

    /// The length of the CRLF form of everything counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward definition, byte by byte (the implementation before the fast
    /// path), to compare with.
    fn simple(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = 0u8;
        for &b in msg {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        out
    }

    fn into(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        to_crlf_into(data, &mut out);
        out
    }

    /// Every API against [`simple`], and every split of the input through the streaming
    /// types.
    fn check(data: &[u8]) {
        let want = simple(data);
        assert_eq!(into(data), want, "to_crlf_into {data:?}");
        assert_eq!(&*to_crlf(data), &want[..], "to_crlf {data:?}");
        assert_eq!(
            matches!(to_crlf(data), Cow::Borrowed(_)),
            want.len() == data.len()
        );
        assert_eq!(crlf_len(data), want.len(), "crlf_len {data:?}");
        for k in 0..=data.len() {
            let (a, b) = data.split_at(k);
            let mut enc = CrlfEncoder::new();
            let mut out = Vec::new();
            enc.encode_into(a, &mut out);
            enc.encode_into(&[], &mut out);
            enc.encode_into(b, &mut out);
            assert_eq!(out, want, "encoder split at {k} of {data:?}");
            let mut cnt = CrlfCounter::new();
            cnt.update(a);
            cnt.update(&[]);
            cnt.update(b);
            assert_eq!(cnt.total(), want.len() as u64, "counter split at {k}");
        }
    }

    #[test]
    fn cases() {
        check(b"");
        check(b"\n");
        check(b"\n\n\n");
        check(b"\r\n");
        check(b"\r");
        check(b"\r\r\n\n");
        check(b"a\nb\r\nc\n");
        check(b"a\rb");
        check(b"ends with CR\r");
        check(b"ends with CRLF\r\n");
        check(b"no line end");
        assert_eq!(into(b"a\nb"), b"a\r\nb");
        assert_eq!(into(b"\n"), b"\r\n");
        assert_eq!(into(b"a\r"), b"a\r");
        assert_eq!(into(b"\rx\n"), b"\rx\r\n");
        assert_eq!(crlf_len(b""), 0);
        assert_eq!(crlf_len(b"a\r\nb\nc\r"), 8);
    }

    #[test]
    fn borrowed_when_already_crlf() {
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(to_crlf(b""), Cow::Borrowed(_)));
        assert!(matches!(to_crlf(b"a\rb"), Cow::Borrowed(_)));
        assert!(matches!(to_crlf(b"a\r\nb\n"), Cow::Owned(_)));
    }

    #[test]
    fn appends_after_existing_bytes() {
        // A CR already in the buffer does not pair with a LF at the start of the data.
        let mut out = b"{3}\r".to_vec();
        to_crlf_into(b"\nx", &mut out);
        assert_eq!(out, b"{3}\r\r\nx");
        let mut out = b"prefix ".to_vec();
        to_crlf_into(b"a\nb\r\n", &mut out);
        assert_eq!(out, b"prefix a\r\nb\r\n");
    }

    #[test]
    fn every_position() {
        // A LF, CR or CRLF at every position of inputs longer than the counting blocks
        // (255 bytes) and memchr's vector width.
        for len in [
            1usize, 2, 15, 16, 17, 31, 32, 33, 64, 254, 255, 256, 257, 600,
        ] {
            for pos in 0..len {
                for special in [&b"\n"[..], b"\r", b"\r\n", b"\n\r"] {
                    let mut data = vec![b'x'; len];
                    data.splice(pos..(pos + special.len()).min(len), special.iter().copied());
                    let want = simple(&data);
                    assert_eq!(into(&data), want);
                    assert_eq!(&*to_crlf(&data), &want[..]);
                    assert_eq!(crlf_len(&data), want.len());
                }
            }
        }
        // All LFs, all CRLFs, all CRs across block ends.
        for len in [255usize, 256, 510, 511, 1000] {
            check(&vec![b'\n'; len]);
            check(&b"\r\n".repeat(len));
            check(&vec![b'\r'; len]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn same_as_simple(data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300)) {
            check(&data);
        }

        #[test]
        fn long_lines_same_as_simple(
            lines in proptest::collection::vec(("[ -~]{0,100}", prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("")]), 0..30)
        ) {
            let data: String = lines.iter().map(|(l, e)| format!("{l}{e}")).collect();
            let want = simple(data.as_bytes());
            prop_assert_eq!(into(data.as_bytes()), want.clone());
            prop_assert_eq!(crlf_len(data.as_bytes()), want.len());
            prop_assert_eq!(&*to_crlf(data.as_bytes()), &want[..]);
        }
    }
}
