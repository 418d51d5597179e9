//! A client connection that is plain or TLS, and the STARTTLS switch between them.

use std::io::{self, Read, Write};

use crate::config::ServerConfig;
use crate::conn::TlsConn;

/// A client connection: plain, or TLS (implicit TLS from the start, or after STARTTLS).
/// Reads and writes like the socket it wraps; see the crate documentation for the
/// non-blocking rules that apply to the `Tls` side.
///
/// The socket stays the same object across [`into_tls`](Self::into_tls), so its mio
/// registration stays valid.
#[derive(Debug)]
pub enum Transport<S: Read + Write> {
    /// Plaintext.
    Plain(S),
    /// TLS (boxed: an OpenSSL connection is much bigger than a socket).
    Tls(Box<TlsConn<S>>),
}

impl<S: Read + Write> Transport<S> {
    /// STARTTLS: moves the plain socket into a server-side TLS connection whose handshake
    /// starts with the next readiness event (or call `handshake` on the `Tls` variant).
    ///
    /// **Before calling this, discard every byte read in plaintext and not yet processed**
    /// (commands the client pipelined after `STARTTLS`): they came before the TLS handshake
    /// and must never be treated as if they came over TLS (CVE-2011-0411). Also make sure
    /// the plaintext "220 Ready to start TLS" reply has been written completely: this
    /// transport cannot see the caller's buffers.
    ///
    /// An error means the connection is lost: on a transport that is already TLS (STARTTLS
    /// twice is the caller's bug; answer it with 503 before getting here), or when OpenSSL
    /// cannot allocate the connection.
    pub fn into_tls(self, cfg: &ServerConfig) -> io::Result<Transport<S>> {
        match self {
            Transport::Plain(sock) => Ok(Transport::Tls(Box::new(TlsConn::new(cfg, sock)?))),
            Transport::Tls(_) => Err(io::Error::other(
                "STARTTLS on a connection that already uses TLS",
            )),
        }
    }

    /// True on the TLS side (also while its handshake is still running).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The socket, for mio registration and socket options. Never read or write it
    /// directly on a TLS transport.
    pub fn get_ref(&self) -> &S {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.get_ref(),
        }
    }

    /// The socket, mutably, for mio registration. Never read or write it directly on a
    /// TLS transport.
    pub fn get_mut(&mut self) -> &mut S {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.get_mut(),
        }
    }

    /// Before closing: sends the TLS close_notify on a TLS transport (see
    /// [`TlsConn::shutdown`]); nothing on a plain one.
    pub fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.shutdown(),
        }
    }
}

impl<S: Read + Write> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}
