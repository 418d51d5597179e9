//! A connection's output waiting for the client, with the bookkeeping both imapd loops
//! need: how much waits, since when nothing moved, and the rules that end a connection
//! whose client does not read.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Stop reading a client's commands while this much output waits for it.
pub const PAUSE_OUT: usize = 256 * 1024;
/// Output over this that the client has not read from for [`KILL_STALL`] ends the
/// connection.
const KILL_OUT: usize = 8 * 1024 * 1024;
/// See [`KILL_OUT`].
const KILL_STALL: Duration = Duration::from_secs(5);
/// Any output the client has not read from for this long ends the connection.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// A drained buffer bigger than this is given back to the allocator (an idle connection
/// should cost little).
const KEEP_CAPACITY: usize = 16 * 1024;
/// Sent bytes are dropped from the front once there are this many and they are half.
const COMPACT: usize = 64 * 1024;

/// Output for one client.
pub struct Outbuf {
    buf: Vec<u8>,
    /// Bytes before `pos` are sent.
    pos: usize,
    /// Last progress writing (or when output started to wait).
    last_write: Instant,
    /// Bytes written to the client.
    pub bytes_out: u64,
}

impl Outbuf {
    /// Nothing waiting.
    pub fn new(now: Instant) -> Outbuf {
        Outbuf {
            buf: Vec::new(),
            pos: 0,
            last_write: now,
            bytes_out: 0,
        }
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Queues bytes.
    pub fn send(&mut self, b: &[u8]) {
        if self.pending() == 0 {
            self.last_write = Instant::now();
        }
        self.buf.extend_from_slice(b);
    }

    /// Writes what the socket takes. An error means the connection is broken.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    self.bytes_out += n as u64;
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pos == self.buf.len() {
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.pos = 0;
        } else if self.pos >= COMPACT && self.pos >= self.buf.len() / 2 {
            // The unsent bytes stay the same bytes: a blocked TLS write may be retried.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(())
    }

    /// The client has not read its output for too long (30 s, or 5 s when over 8 MiB).
    pub fn stalled(&self) -> bool {
        let p = self.pending();
        let w = self.last_write.elapsed();
        (p > 0 && w > WRITE_STALL) || (p > KILL_OUT && w > KILL_STALL)
    }

    /// Takes the unsent bytes (to hand them to another process).
    pub fn take(&mut self) -> Vec<u8> {
        let v = self.buf.split_off(self.pos);
        self.buf = Vec::new();
        self.pos = 0;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `n` bytes per call, then would block.
    struct Slow {
        got: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = b.len().min(self.per_call);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_memory_is_returned() {
        let mut o = Outbuf::new(Instant::now());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        o.send(&data);
        let mut w = Slow {
            got: Vec::new(),
            per_call: 7_000,
            calls_left: 3,
        };
        o.write_to(&mut w).unwrap();
        assert_eq!(o.pending(), data.len() - 21_000);
        w.calls_left = usize::MAX;
        o.write_to(&mut w).unwrap();
        assert_eq!(w.got, data);
        assert_eq!(o.pending(), 0);
        assert_eq!(o.bytes_out, data.len() as u64);
        assert!(o.buf.capacity() <= KEEP_CAPACITY);
        assert!(!o.stalled());
    }

    #[test]
    fn take_gives_the_unsent_rest() {
        let mut o = Outbuf::new(Instant::now());
        o.send(b"abcdef");
        let mut w = Slow {
            got: Vec::new(),
            per_call: 2,
            calls_left: 1,
        };
        o.write_to(&mut w).unwrap();
        assert_eq!(o.take(), b"cdef");
        assert_eq!(o.pending(), 0);
    }
}
