//! The chunked stream sendmail writes and postdrop reads: chunks, each a 4-byte
//! big-endian length followed by that many bytes (1 to [`MAX_CHUNK`]), ended by a
//! zero-length chunk, the end marker; nothing may follow it.
//!
//! Only a writer that got to the end of the message writes the end marker
//! ([`Framer::finish`]), so a sender that dies halfway — even by SIGKILL, which it cannot
//! catch — leaves a stream the reader ([`Decoder`]) tells apart from a complete one, where
//! a plain end of input would look like a short message. postdrop then removes what it got
//! instead of queueing a truncated message.

use std::fmt;
use std::io::{self, Read, Write};

/// Largest chunk payload, in bytes.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Size of a chunk's length field.
const LEN_BYTES: usize = 4;

// ---- writing (sendmail) ----
/// Writes a message into `W` in postdrop's framing.
pub struct Framer<W: Write> {
    inner: W,
    /// The chunk being filled: room for its length, then its payload.
    chunk: Vec<u8>,
}

impl<W: Write> Framer<W> {
    /// Frames what is written into `inner`.
    pub fn new(inner: W) -> Self {
        let mut chunk = Vec::with_capacity(LEN_BYTES + MAX_CHUNK);
        chunk.extend_from_slice(&[0; LEN_BYTES]);
        Framer { inner, chunk }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes the chunk being filled, if it has anything in it.
    fn emit(&mut self) -> io::Result<()> {
        let len = self.chunk.len() - LEN_BYTES;
        if len == 0 {
            return Ok(());
        }
        let n = u32::try_from(len).map_err(io::Error::other)?;
        self.chunk[..LEN_BYTES].copy_from_slice(&n.to_be_bytes());
        // The chunk is gone either way: after an error the stream is broken for good.
        let r = self.inner.write_all(&self.chunk);
        self.chunk.truncate(LEN_BYTES);
        r
    }

    /// Writes what is left and the end marker, and flushes: the message is complete.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit()?;
        self.inner.write_all(&[0; LEN_BYTES])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Framer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.len() == LEN_BYTES + MAX_CHUNK {
            self.emit()?;
        }
        let n = buf.len().min(LEN_BYTES + MAX_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Passes on the chunk being filled (never the end marker), so postdrop gets what has
    /// been written so far.
    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod encoder_tests {
    use super::*;

    /// Splits a framed stream into its chunks' payloads; true when it ends with the end
    /// marker and nothing after it. Panics on anything a correct writer never produces.
    fn chunks(mut s: &[u8]) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        while s.len() >= LEN_BYTES {
            let len = u32::from_be_bytes(s[..LEN_BYTES].try_into().unwrap()) as usize;
            s = &s[LEN_BYTES..];
            if len == 0 {
                assert!(s.is_empty(), "bytes after the end marker");
                return (out, true);
            }
            assert!(len <= MAX_CHUNK, "chunk of {len}");
            out.push(s[..len].to_vec());
            s = &s[len..];
        }
        assert!(s.is_empty(), "a cut length");
        (out, false)
    }

    #[test]
    fn small_and_empty_messages() {
        let mut f = Framer::new(Vec::new());
        f.write_all(b"hello\n").unwrap();
        assert_eq!(f.finish().unwrap(), b"\0\0\0\x06hello\n\0\0\0\0");
        let out = Framer::new(Vec::new()).finish().unwrap();
        assert_eq!(out, [0; 4], "an empty message is only the end marker");
    }

    #[test]
    fn large_messages_are_cut_into_full_chunks() {
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1, 1000, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, msg.len()] {
            let mut f = Framer::new(Vec::new());
            for p in msg.chunks(piece) {
                f.write_all(p).unwrap();
            }
            let (got, ended) = chunks(&f.finish().unwrap());
            assert!(ended);
            assert_eq!(got.concat(), msg, "pieces of {piece}");
            let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
            assert_eq!(sizes, [MAX_CHUNK, MAX_CHUNK, MAX_CHUNK, 3392], "{piece}");
        }
    }

    #[test]
    fn flush_passes_data_on_but_only_finish_ends_the_message() {
        let mut f = Framer::new(Vec::new());
        f.write_all(b"ab").unwrap();
        f.flush().unwrap();
        f.flush().unwrap();
        f.write_all(b"c").unwrap();
        f.flush().unwrap();
        assert_eq!(
            chunks(f.get_ref()),
            (vec![b"ab".to_vec(), b"c".to_vec()], false)
        );
        let (got, ended) = chunks(&f.finish().unwrap());
        assert_eq!((got.concat(), ended), (b"abc".to_vec(), true));
    }

    #[test]
    fn dropped_without_finish_has_no_end_marker() {
        let mut out = Vec::new();
        {
            let mut f = Framer::new(&mut out);
            f.write_all(&vec![b'x'; MAX_CHUNK + 10]).unwrap();
        }
        let (got, ended) = chunks(&out);
        assert!(!ended);
        assert_eq!(got.len(), 1, "only the full chunk went out");
    }

    #[test]
    fn write_errors_pass_through() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut f = Framer::new(Broken);
        f.write_all(b"x").unwrap();
        assert_eq!(f.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(Framer::new(Broken).finish().is_err());
    }
}

/// A whole message framed at once, in chunks of at most `size` bytes (clamped to
/// 1..=[`MAX_CHUNK`]), with the end marker.
pub fn framed(msg: &[u8], size: usize) -> Vec<u8> {
    let size = size.clamp(1, MAX_CHUNK);
    let mut out = Vec::with_capacity(msg.len() + msg.len() / size * LEN_BYTES + 8);
    for c in msg.chunks(size) {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&[0; LEN_BYTES]);
    out
}

// ---- reading (postdrop) ----
/// Why the framed input was not accepted.
#[derive(Debug)]
pub enum Error {
    /// Reading failed.
    Io(io::Error),
    /// The input ended at a chunk boundary, before the end marker.
    NoEndMarker,
    /// The input ended inside a chunk's length field: `got` of its 4 bytes were there.
    InLength {
        /// Bytes of the length field that arrived.
        got: usize,
    },
    /// The input ended inside a chunk: `got` of its `len` bytes were there.
    InChunk {
        /// Bytes of the chunk that arrived.
        got: usize,
        /// The chunk's announced length.
        len: usize,
    },
    /// A chunk claims more than [`MAX_CHUNK`] bytes.
    TooLong {
        /// The announced length.
        len: u32,
    },
    /// Bytes follow the end marker.
    Trailing,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "reading the message from standard input: {e}"),
            Error::NoEndMarker => write!(f, "message input ended early (no end marker)"),
            Error::InLength { got } => write!(
                f,
                "message input ended early ({got} of the {LEN_BYTES} bytes of a chunk length, no end marker)"
            ),
            Error::InChunk { got, len } => write!(
                f,
                "message input ended early ({got} of the {len} bytes of a chunk, no end marker)"
            ),
            Error::TooLong { len } => write!(
                f,
                "bad message input framing: chunk of {len} bytes, more than {MAX_CHUNK}"
            ),
            Error::Trailing => write!(f, "bad message input framing: data after the end marker"),
        }
    }
}

/// Reads the chunks of one framed message.
pub struct Decoder<R> {
    r: R,
    done: bool,
}

impl<R: Read> Decoder<R> {
    /// Decodes the stream `r`.
    pub fn new(r: R) -> Self {
        Decoder { r, done: false }
    }

    /// Reads into `buf` as much of `buf` as the input has; short only at the end of input.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(got)
    }

    /// Puts the next chunk's payload into `buf` (replacing what was there) and returns
    /// true; returns false once the end marker has been read and the input has ended
    /// right after it. Any other end of the input is an error.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, Error> {
        buf.clear();
        if self.done {
            return Ok(false);
        }
        let mut len = [0u8; LEN_BYTES];
        match self.fill(&mut len)? {
            0 => return Err(Error::NoEndMarker),
            LEN_BYTES => {}
            got => return Err(Error::InLength { got }),
        }
        let len = u32::from_be_bytes(len);
        if len == 0 {
            if self.fill(&mut [0u8; 1])? != 0 {
                return Err(Error::Trailing);
            }
            self.done = true;
            return Ok(false);
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n > MAX_CHUNK {
            return Err(Error::TooLong { len });
        }
        buf.resize(n, 0);
        let got = self.fill(buf)?;
        if got < n {
            buf.truncate(got);
            return Err(Error::InChunk { got, len: n });
        }
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn framed(msg: &[u8], size: usize) -> Vec<u8> {
        super::framed(msg, size)
    }

    /// A reader that hands out its bytes a few at a time, like a pipe.
    struct Trickle(pub Vec<u8>, pub usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn decode(input: impl Read) -> Result<Vec<u8>, Error> {
        let mut d = Decoder::new(input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while d.next_chunk(&mut buf)? {
            assert!(!buf.is_empty() && buf.len() <= MAX_CHUNK);
            out.extend_from_slice(&buf);
        }
        assert!(!d.next_chunk(&mut buf).unwrap(), "stays at the end");
        Ok(out)
    }

    #[test]
    fn complete_streams() {
        assert_eq!(decode(&[0u8; 4][..]).unwrap(), b"", "an empty message");
        let msg = b"Subject: x\n\nbody\n".repeat(10_000);
        for size in [1, 3, 4096, MAX_CHUNK] {
            let f = framed(&msg, size);
            assert_eq!(decode(&f[..]).unwrap(), msg, "chunks of {size}");
            assert_eq!(decode(Trickle(f, 0)).unwrap(), msg, "trickled, {size}");
        }
    }

    #[test]
    fn chunk_boundaries_at_every_position() {
        let msg = b"Subject: hi\n\nab\n";
        for cut in 0..=msg.len() {
            let mut f = Vec::new();
            for part in [&msg[..cut], &msg[cut..]] {
                if !part.is_empty() {
                    f.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
                    f.extend_from_slice(part);
                }
            }
            f.extend_from_slice(&[0; 4]);
            assert_eq!(decode(&f[..]).unwrap(), msg, "boundary at {cut}");
        }
        for size in 1..=msg.len() {
            assert_eq!(decode(&framed(msg, size)[..]).unwrap(), msg, "size {size}");
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let f = framed(b"Subject: hi\n\nab\n", 5);
        for end in 0..f.len() {
            let e = decode(&f[..end]).unwrap_err();
            assert!(
                e.to_string().starts_with("message input ended early ("),
                "cut at {end}: {e}"
            );
        }
    }

    #[test]
    fn truncation_reasons() {
        let f = framed(b"0123456789", 4);
        // Before the end marker, at a chunk boundary.
        let e = decode(&f[..f.len() - 4]).unwrap_err();
        assert!(matches!(e, Error::NoEndMarker), "{e:?}");
        assert_eq!(e.to_string(), "message input ended early (no end marker)");
        assert!(matches!(decode(&b""[..]).unwrap_err(), Error::NoEndMarker));
        // Inside the end marker or another length.
        let e = decode(&f[..f.len() - 1]).unwrap_err();
        assert!(matches!(e, Error::InLength { got: 3 }), "{e:?}");
        let e = decode(&f[..2]).unwrap_err();
        assert!(matches!(e, Error::InLength { got: 2 }), "{e:?}");
        // Mid-chunk.
        let e = decode(&f[..6]).unwrap_err();
        assert!(matches!(e, Error::InChunk { got: 2, len: 4 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "message input ended early (2 of the 4 bytes of a chunk, no end marker)"
        );
    }

    #[test]
    fn oversize_chunk_is_refused() {
        let mut f = u32::try_from(MAX_CHUNK + 1).unwrap().to_be_bytes().to_vec();
        f.extend(vec![b'x'; MAX_CHUNK + 1]);
        f.extend_from_slice(&[0; 4]);
        let e = decode(&f[..]).unwrap_err();
        assert!(matches!(e, Error::TooLong { len } if len as usize == MAX_CHUNK + 1));
        let e = decode(&[0xff, 0xff, 0xff, 0xff][..]).unwrap_err();
        assert!(matches!(e, Error::TooLong { len: u32::MAX }), "{e:?}");
        assert!(e.to_string().starts_with("bad message input framing: "));
        // Exactly the largest chunk is fine.
        let msg = vec![b'y'; MAX_CHUNK];
        assert_eq!(decode(&framed(&msg, MAX_CHUNK)[..]).unwrap(), msg);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for extra in [&b"x"[..], &[0, 0, 0, 0], &[0, 0, 0, 1, b'z', 0, 0, 0, 0]] {
            let mut f = framed(b"hello\n", 3);
            f.extend_from_slice(extra);
            let e = decode(Trickle(f, 0)).unwrap_err();
            assert!(matches!(e, Error::Trailing), "{extra:?}: {e:?}");
            assert_eq!(
                e.to_string(),
                "bad message input framing: data after the end marker"
            );
        }
    }

    #[test]
    fn read_errors_pass_through_and_interruptions_are_retried() {
        struct Flaky(u8);
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                match self.0 {
                    1 => Err(io::ErrorKind::Interrupted.into()),
                    2 => {
                        buf[0] = 0;
                        Ok(1)
                    }
                    _ => Err(io::Error::other("gone")),
                }
            }
        }
        let e = decode(Flaky(0)).unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        assert!(e.to_string().contains("gone"));
    }
}
