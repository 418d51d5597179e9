//! TLS for Petrel on OpenSSL: the server side of its daemons (smtpd, imapd, pop3d) and
//! the client side of its delivery agents.
//!
//! On the server side, four things, nothing more:
//!
//! - [`ServerConfig::load`] reads a PEM certificate chain and private key and builds the
//!   server context: Mozilla's "intermediate" profile (TLS 1.2 and 1.3 only, AEAD ciphers with
//!   forward secrecy), minimum version TLS 1.2 set explicitly, client-initiated renegotiation
//!   off. Every error names the file and the reason, so `petrel start` / `petrel check` can
//!   print it as it is. A `ServerConfig` is an `Arc` inside: clone it freely; on reload build
//!   a new one and swap it in. Connections already running keep the context they started with.
//! - [`self_signed`] writes a fresh self-signed certificate and key (for `petrel sandbox` and
//!   `petrel set-permissions`).
//! - [`TlsConn`] is one server-side TLS connection over a non-blocking socket (a
//!   `mio::net::TcpStream` in the daemons), driven by readiness events: it reads and writes
//!   like a non-blocking socket and never blocks on its own.
//! - [`Transport`] is "plain or TLS" for a client connection, with
//!   [`Transport::into_tls`] for STARTTLS.
//!
//! And one for the other direction: [`ClientConfig`] / [`ClientTls`], the client side for
//! the delivery agents (STARTTLS to another mail server over a blocking socket), with
//! Postfix's security levels ([`ClientLevel`]) and trust words for the log.
//!
//! # Driving a connection from a mio loop
//!
//! ```no_run
//! # use std::io::{self, Read, Write};
//! # mod mio { pub mod net { pub type TcpStream = std::net::TcpStream; } }
//! # fn demo(cfg: &petrel_tls::ServerConfig, sock: mio::net::TcpStream) -> io::Result<()> {
//! use petrel_tls::{TlsConn, Transport};
//! // Implicit TLS (port 465): wrap the accepted socket right away. Register the socket
//! // with mio through `get_mut()` for READABLE | WRITABLE, as for a plain connection.
//! let mut t = Transport::Tls(Box::new(TlsConn::new(cfg, sock)?));
//! // On every readiness event, readable or writable:
//! let mut out: Vec<u8> = b"220 mail.example.com ESMTP\r\n".to_vec(); // only ever appended to
//! while !out.is_empty() {
//!     match t.write(&out) {
//!         Ok(n) => { out.drain(..n); }
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // retry on the next event
//!         Err(e) => return Err(e), // close the connection
//!     }
//! }
//! let mut buf = [0u8; 16384];
//! loop {
//!     match t.read(&mut buf) {
//!         Ok(0) => break, // the client closed
//!         Ok(_n) => { /* feed the session */ }
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
//!         Err(e) => return Err(e),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The rules, all of which the plain-socket code in smtpd already follows:
//!
//! - **`WouldBlock` does not say which way.** OpenSSL may need to *read* to finish a
//!   `write` (handshake) or *write* to finish a `read` (handshake, alerts). After
//!   `WouldBlock` from any call, retry on the next event of **either** kind. Register the
//!   socket for `READABLE | WRITABLE` and, on every event, flush pending output *and* read
//!   until `WouldBlock`.
//! - **Retry a blocked write with the same bytes.** After `write(buf)` returns
//!   `WouldBlock`, OpenSSL has already encrypted (part of) `buf`; the next `write` must start
//!   with those same bytes and be at least as long. A `Vec` that is only appended to and
//!   drained by what `write` returned does exactly that. Shrinking or replacing the pending
//!   output between retries fails the connection ("bad write retry").
//! - **Data can wait inside OpenSSL**, not only in the kernel: a `read` into a small buffer
//!   leaves the rest of a TLS record decrypted in OpenSSL, and no readiness event will come
//!   for it. As with an edge-triggered socket: read until `WouldBlock`, and when you stopped
//!   reading for a while (back-pressure), call `read` again yourself when you resume.
//! - **Handshakes happen implicitly**: `read` and `write` drive the handshake first and
//!   return `WouldBlock` until it is done. Call [`TlsConn::handshake`] yourself to learn
//!   when it finished (to log the version and cipher) or to make it progress without I/O of
//!   your own.
//! - **Time-outs are yours.** A client that connects and never finishes the handshake keeps
//!   the connection in the handshake forever; the daemon's own idle/handshake timer must
//!   close it.
//! - A peer that closes the TCP connection without a TLS close_notify reads as a normal
//!   end of file (`Ok(0)`), like a plain socket: SMTP, IMAP and POP3 frame their own data, so
//!   truncation is visible to them anyway.
//! - After an error other than `WouldBlock`, the connection is dead: every further call
//!   returns an error and [`TlsConn::shutdown`] does nothing. Just drop it.
//!
//! # STARTTLS and plaintext injection (CVE-2011-0411)
//!
//! [`Transport::into_tls`] switches the socket to TLS; the first bytes OpenSSL reads are
//! the client's ClientHello. **Anything the server read in plaintext and has not processed
//! yet — commands pipelined after `STARTTLS` — must be thrown away before (or when)
//! switching, never processed as if it came over TLS.** That is the CVE-2011-0411
//! command-injection class; this crate cannot see the caller's input buffer, so the caller
//! must do it. Also flush the plaintext `220 Ready to start TLS` completely before the
//! switch, and do not read plaintext from the socket after the `STARTTLS` command: the next
//! read must go through the TLS side.

#![deny(missing_docs)]

pub mod client;
mod config;
mod conn;
mod selfsigned;
mod transport;

pub use client::{ClientConfig, ClientLevel, ClientTls};
pub use config::ServerConfig;
pub use conn::TlsConn;
pub use selfsigned::self_signed;
pub use transport::Transport;
