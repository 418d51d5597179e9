//! One server-side TLS connection over a non-blocking socket.

use std::fmt;
use std::io::{self, Read, Write};

use openssl::error::ErrorStack;
use openssl::ssl::{self, ErrorCode, Ssl, SslStream};

use crate::config::{reasons, ServerConfig};

/// A server-side TLS connection over a non-blocking socket `S` (a `mio::net::TcpStream` in
/// the daemons; anything `Read + Write` works, blocking sockets too).
///
/// It implements [`Read`] and [`Write`] like a non-blocking socket: `Ok(0)` from `read` is
/// the end of the stream, `ErrorKind::WouldBlock` means "call again on the next readiness
/// event — readable **or** writable, whichever comes" (OpenSSL may need to write to read
/// and vice versa), and any other error means the connection is dead. The crate
/// documentation lists the rules for the caller's buffers.
pub struct TlsConn<S: Read + Write> {
    stream: SslStream<S>,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Ready,
    /// close_notify has been sent completely.
    ShutDown,
    /// A fatal error happened; OpenSSL must not be used on this connection again.
    Failed,
}

/// What an OpenSSL error means for a non-blocking caller.
enum Outcome {
    /// OpenSSL made progress without touching the socket's readiness: call it again now.
    Again,
    /// The socket would block.
    Blocked,
    /// The peer sent close_notify (or closed the connection).
    Eof,
    /// The connection is dead.
    Fatal(io::Error),
}

fn classify(e: ssl::Error, during: &str) -> Outcome {
    let code = e.code();
    if code == ErrorCode::WANT_READ || code == ErrorCode::WANT_WRITE {
        // With an I/O error, the socket said WouldBlock; without, OpenSSL processed a record
        // that carried no application data and wants to be called again.
        return if e.io_error().is_some() {
            Outcome::Blocked
        } else {
            Outcome::Again
        };
    }
    if code == ErrorCode::ZERO_RETURN {
        return Outcome::Eof;
    }
    if code == ErrorCode::SYSCALL {
        return match e.into_io_error() {
            Ok(io) => Outcome::Fatal(io),
            // SYSCALL without an error: the peer closed the connection.
            Err(_) => Outcome::Eof,
        };
    }
    let why = match e.ssl_error() {
        Some(stack) => reasons(stack),
        None => e.to_string(),
    };
    Outcome::Fatal(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{during}: {why}"),
    ))
}

/// Drains OpenSSL's per-thread error queue. A stale entry left there by anything else on
/// this thread would make OpenSSL report the next `WANT_READ` of an unrelated connection
/// as a fatal error; one mio loop serves many connections, so start every call clean.
fn clear_error_queue() {
    let _ = ErrorStack::get();
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

fn dead() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the TLS connection failed earlier",
    )
}

impl<S: Read + Write> TlsConn<S> {
    /// Starts the server side of a TLS connection on `sock`. Nothing is read or written
    /// yet; the handshake runs on the first call to [`handshake`](Self::handshake),
    /// `read` or `write`.
    ///
    /// Fails only when OpenSSL cannot allocate the connection.
    pub fn new(cfg: &ServerConfig, sock: S) -> io::Result<TlsConn<S>> {
        let setup = |e: ErrorStack| io::Error::other(format!("TLS setup: {}", reasons(&e)));
        clear_error_queue();
        let mut ssl = Ssl::new(cfg.context()).map_err(setup)?;
        ssl.set_accept_state();
        let stream = SslStream::new(ssl, sock).map_err(setup)?;
        Ok(TlsConn {
            stream,
            state: State::Handshaking,
        })
    }

    /// Advances the handshake as far as the socket allows.
    ///
    /// `Ok(true)`: the handshake is complete (cheap to ask again: once complete it stays
    /// `Ok(true)` without touching the socket). `Ok(false)`: the socket would block; call
    /// again on the next readable or writable event. `Err`: the handshake failed (wrong
    /// protocol version, no shared cipher, not TLS at all, the client went away); the
    /// message is fit for a log line. Never blocks on a non-blocking socket; a client that
    /// never completes the handshake is the caller's time-out to enforce.
    pub fn handshake(&mut self) -> io::Result<bool> {
        match self.state {
            State::Ready | State::ShutDown => return Ok(true),
            State::Failed => return Err(dead()),
            State::Handshaking => {}
        }
        loop {
            clear_error_queue();
            let Err(e) = self.stream.do_handshake() else {
                self.state = State::Ready;
                return Ok(true);
            };
            match classify(e, "TLS handshake failed") {
                Outcome::Again => continue,
                Outcome::Blocked => return Ok(false),
                Outcome::Eof => {
                    self.state = State::Failed;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS handshake failed: the client closed the connection",
                    ));
                }
                Outcome::Fatal(err) => {
                    self.state = State::Failed;
                    return Err(err);
                }
            }
        }
    }

    /// Sends a TLS close_notify to the peer (once); does not wait for the peer's. `Ok(())`
    /// when it has been sent, or when there is nothing to do (handshake not finished,
    /// connection failed). `WouldBlock`: call again on the next event. Close (drop) the
    /// connection afterwards; do not write to it any more.
    pub fn shutdown(&mut self) -> io::Result<()> {
        if self.state != State::Ready {
            return Ok(());
        }
        loop {
            clear_error_queue();
            match self.stream.shutdown() {
                Ok(_) => {
                    self.state = State::ShutDown;
                    return Ok(());
                }
                Err(e) => match classify(e, "TLS shutdown") {
                    Outcome::Again => continue,
                    Outcome::Blocked => return Err(would_block()),
                    Outcome::Eof => {
                        self.state = State::ShutDown;
                        return Ok(());
                    }
                    Outcome::Fatal(err) => {
                        self.state = State::Failed;
                        return Err(err);
                    }
                },
            }
        }
    }

    /// The socket, for registering with mio, `peer_addr`, socket options. Do not read from
    /// or write to it: that would corrupt the TLS stream.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// The socket, mutably (mio's `register`/`deregister` need `&mut`). Do not read from or
    /// write to it: that would corrupt the TLS stream.
    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// The negotiated protocol version, "TLSv1.2" or "TLSv1.3", for logs and the Received
    /// header. Meaningful once [`handshake`](Self::handshake) returned `Ok(true)`.
    pub fn version(&self) -> String {
        self.stream.ssl().version_str().to_string()
    }

    /// The negotiated cipher in OpenSSL's naming ("TLS_AES_256_GCM_SHA384",
    /// "ECDHE-RSA-AES128-GCM-SHA256"), for logs and the Received header; empty before the
    /// handshake is complete.
    pub fn cipher(&self) -> String {
        match self.state {
            State::Ready | State::ShutDown => self
                .stream
                .ssl()
                .current_cipher()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Runs the handshake on behalf of `read`/`write`: `Ok(())` when data may flow.
    fn ready(&mut self) -> io::Result<()> {
        match self.state {
            State::Ready | State::ShutDown => Ok(()),
            State::Failed => Err(dead()),
            State::Handshaking => {
                if self.handshake()? {
                    Ok(())
                } else {
                    Err(would_block())
                }
            }
        }
    }
}

impl<S: Read + Write> Read for TlsConn<S> {
    /// Reads decrypted data, driving the handshake first if needed. `Ok(0)`: the peer
    /// closed (with or without close_notify). `WouldBlock`: retry on the next readable or
    /// writable event.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ready()?;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            clear_error_queue();
            match self.stream.ssl_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) => match classify(e, "TLS read") {
                    Outcome::Again => continue,
                    Outcome::Blocked => return Err(would_block()),
                    Outcome::Eof => return Ok(0),
                    Outcome::Fatal(err) => {
                        self.state = State::Failed;
                        return Err(err);
                    }
                },
            }
        }
    }
}

impl<S: Read + Write> Write for TlsConn<S> {
    /// Encrypts and sends (a prefix of) `buf`, driving the handshake first if needed.
    /// `WouldBlock`: retry on the next readable or writable event **with the same bytes
    /// at the start of `buf`** (see the crate documentation).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ready()?;
        if self.state == State::ShutDown {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS shutdown",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            clear_error_queue();
            match self.stream.ssl_write(buf) {
                Ok(n) => return Ok(n),
                Err(e) => match classify(e, "TLS write") {
                    Outcome::Again => continue,
                    Outcome::Blocked => return Err(would_block()),
                    Outcome::Eof => {
                        self.state = State::Failed;
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "TLS write: the peer closed the connection",
                        ));
                    }
                    Outcome::Fatal(err) => {
                        self.state = State::Failed;
                        return Err(err);
                    }
                },
            }
        }
    }

    /// Nothing to do: OpenSSL keeps no output of its own beyond what a blocked `write`
    /// must be retried with.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Read + Write> fmt::Debug for TlsConn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConn")
            .field("state", &self.state)
            .field("cipher", &self.cipher())
            .finish()
    }
}
