//! Petrel's internal protocol between its own programs.
//!
//! ```text
//! frame   = length:u32be protocol:u8 body[length - 1]
//! body    = postcard(T)           for the protocol T whose ID is `protocol`
//!         | (empty)               for protocol 0, the trigger (master's wake-up poke)
//! ```
//!
//! Every protocol is a message enum with its own id byte, which carries its version: a
//! change to an enum that breaks the wire format takes a new id. A receiver insists on the
//! id it expects and ends the conversation loudly on anything else. Frames are at most
//! [`MAX_FRAME`] bytes: message bodies travel as streams of [`cleanup::Request::Data`]
//! chunks or as the queue file itself, never as one frame per message.
//!
//! The codec does no I/O of its own beyond `Read`/`Write`: [`FrameReader`] is fed bytes by
//! an event loop, [`read_frame`]/[`write_frame`] serve blocking clients.
#![deny(missing_docs)]

pub mod chunked;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::io::{self, Read, Write};

/// Largest frame accepted (length field included in neither direction's data).
pub const MAX_FRAME: usize = 1 << 20;
/// Size of one streamed message chunk.
pub const CHUNK: usize = 64 * 1024;
/// Protocol id of the trigger frame.
pub const TRIGGER_ID: u8 = 0;

/// A message enum that travels in frames.
pub trait Protocol: Serialize + DeserializeOwned {
    /// Id byte; also the version.
    const ID: u8;
    /// Name, for error messages.
    const NAME: &'static str;
}

/// What a receiver gets: master's wake-up poke, or a message of its protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming<T> {
    /// Master's periodic wake-up (or any "look again" poke).
    Trigger,
    /// A message.
    Msg(T),
}

/// A protocol error: bad length, wrong protocol id, undecodable body.
#[derive(Debug)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

impl From<ProtocolError> for io::Error {
    fn from(e: ProtocolError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e.0)
    }
}

/// Encodes `msg` as one frame.
pub fn encode<T: Protocol>(msg: &T) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(msg)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", T::NAME)))?;
    if body.len() + 1 > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} frame of {} bytes is too large", T::NAME, body.len()),
        ));
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(T::ID);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The trigger frame.
pub fn trigger_frame() -> [u8; 5] {
    [0, 0, 0, 1, TRIGGER_ID]
}

fn decode<T: Protocol>(id: u8, body: &[u8]) -> Result<Incoming<T>, ProtocolError> {
    if id == TRIGGER_ID {
        return Ok(Incoming::Trigger);
    }
    if id != T::ID {
        return Err(ProtocolError(format!(
            "unexpected protocol id {id}, expected {} ({})",
            T::ID,
            T::NAME
        )));
    }
    postcard::from_bytes(body)
        .map(Incoming::Msg)
        .map_err(|e| ProtocolError(format!("bad {} message: {e}", T::NAME)))
}

/// Writes one message as a frame.
pub fn write_frame<T: Protocol>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame<T: Protocol>(r: &mut impl Read) -> io::Result<Option<Incoming<T>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtocolError(format!("bad frame length {len}")).into());
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(decode(buf[0], &buf[1..])?))
}

/// Writes as much of `out` as a non-blocking `w` takes now, removing what was written.
/// `Ok` when `out` is empty or the socket would block (write again when it is writable);
/// `Err` when the peer is gone (the caller drops the connection).
pub fn write_pending(w: &mut impl Write, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        match w.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reassembles frames from bytes an event loop reads.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Reads everything `r` (a non-blocking socket) has now, until it would block.
    /// Returns true when the peer has closed the connection or the read failed.
    pub fn read_from(&mut self, r: &mut impl Read) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame<T: Protocol>(&mut self) -> Result<Option<Incoming<T>>, ProtocolError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(ProtocolError(format!("bad frame length {len}")));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = &avail[4..4 + len];
        let msg = decode(frame[0], &frame[1..]);
        self.start += 4 + len;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        msg.map(Some)
    }
}

/// A recipient as handed between services.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Rcpt {
    /// The address.
    pub address: String,
    /// RFC 3461 ORCPT (`rfc822;addr`), or empty.
    pub orcpt: String,
    /// RFC 3461 NOTIFY, comma-separated, or empty for the default.
    pub notify: String,
}

/// cleanup's protocol: a client submits a message, cleanup writes the queue file.
pub mod cleanup {
    use super::Rcpt;
    use serde::{Deserialize, Serialize};

    /// Client → cleanup.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Request {
        /// Take the complete file `maildrop/NAME` (pickup). One [`Reply`] follows.
        Maildrop {
            /// File name inside maildrop/.
            name: String,
        },
        /// Start a streamed message; `Data`* then `End` (one [`Reply`]) or `Abort` follow.
        Begin {
            /// Envelope sender, empty for `<>`.
            sender: String,
            /// Envelope recipients.
            recipients: Vec<Rcpt>,
            /// Queue-file attributes (protocol, client, helo, envid, ret, …).
            attrs: Vec<(String, String)>,
        },
        /// Message bytes with LF line ends (at most [`super::CHUNK`] per frame).
        Data(Vec<u8>),
        /// The message is complete: write it durably and reply.
        End,
        /// Forget the message being streamed; no reply.
        Abort,
    }

    /// cleanup → client.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Reply {
        /// The queue file is complete and fsynced.
        Queued {
            /// Its queue id.
            id: String,
        },
        /// Not queued.
        Failed {
            /// A temporary problem (retry later) or a permanent one.
            temporary: bool,
            /// RFC 3463 enhanced status code, e.g. `4.3.0`.
            dsn: String,
            /// Human-readable reason.
            reason: String,
        },
    }

    impl super::Protocol for Request {
        const ID: u8 = 0x11;
        const NAME: &'static str = "cleanup request v1";
    }
    impl super::Protocol for Reply {
        const ID: u8 = 0x12;
        const NAME: &'static str = "cleanup reply v1";
    }
}

/// qmgr's protocol: notices that something in the queue changed. No replies.
pub mod qmgr {
    use serde::{Deserialize, Serialize};

    /// Anyone → qmgr.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Notice {
        /// cleanup wrote `incoming/ID`.
        Incoming {
            /// The queue id.
            id: String,
        },
        /// Retry every deferred message now (`petrel queue flush`, `sendmail -q`).
        Flush,
        /// The operator changed the queue (hold, release, delete): rescan.
        Rescan,
    }

    impl super::Protocol for Notice {
        const ID: u8 = 0x21;
        const NAME: &'static str = "qmgr notice v1";
    }
}

/// The delivery protocol between qmgr and a delivery agent (local, smtp, lmtp).
pub mod delivery {
    use serde::{Deserialize, Serialize};

    /// One recipient to deliver.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Recipient {
        /// Index of the recipient in the queue file (stable across attempts).
        pub index: u32,
        /// The address.
        pub address: String,
        /// RFC 3461 ORCPT, or empty.
        pub orcpt: String,
    }

    /// qmgr → agent: deliver these recipients of this queue file.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Request {
        /// Queue id.
        pub queue_id: String,
        /// Path of the queue file relative to the queue directory (`active/ID`).
        pub path: String,
        /// Envelope sender (empty for `<>`).
        pub sender: String,
        /// Arrival time, seconds since the epoch.
        pub arrival: f64,
        /// Recipients to deliver.
        pub recipients: Vec<Recipient>,
        /// Where to deliver them, in the transport's own terms (smtp: a domain for an MX
        /// lookup, `[host]:port`; lmtp: `unix:/path`, `inet:host:port`); empty when the
        /// transport decides by itself (local).
        pub nexthop: String,
    }

    /// How one recipient's delivery ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Status {
        /// Delivered.
        Sent,
        /// Temporary failure: try again later.
        Deferred,
        /// Permanent failure: bounce.
        Bounced,
    }

    /// The result for one recipient.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Outcome {
        /// Index of the recipient in the queue file.
        pub index: u32,
        /// How it ended.
        pub status: Status,
        /// RFC 3463 status code, e.g. `2.0.0`, `5.1.1`.
        pub dsn: String,
        /// Text for logs and DSNs.
        pub reason: String,
        /// The next hop accepted the recipient together with its DSN request (the server
        /// supports DSN and got NOTIFY): a success notice is its job now, not ours.
        pub dsn_passed_on: bool,
    }

    /// agent → qmgr: one outcome per requested recipient.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Reply {
        /// Outcomes, in any order.
        pub outcomes: Vec<Outcome>,
    }

    impl super::Protocol for Request {
        const ID: u8 = 0x31;
        const NAME: &'static str = "delivery request v2";
    }
    impl super::Protocol for Reply {
        const ID: u8 = 0x32;
        const NAME: &'static str = "delivery reply v2";
    }
}

/// authd's protocol: a service asks whether a user's password is right.
pub mod auth {
    use serde::{Deserialize, Serialize};

    /// service → authd. One outstanding request per connection; the reply may come late
    /// (failed attempts are delayed on purpose).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Request {
        /// Check `user`'s `password` for a login to `service` from `client`.
        Check {
            /// `smtpd`, `imapd`, `pop3d` (for logs and per-service rules).
            service: String,
            /// The client's IP address, for throttling and logs.
            client: String,
            /// The login name as the client gave it.
            user: String,
            /// The password as the client gave it.
            password: String,
        },
        /// Does `user` exist? (smtpd's recipient check when it may not read the user
        /// file itself.) Answered at once with `Ok` or `Fail`; no delay, no throttling.
        Lookup {
            /// The user name.
            user: String,
        },
        /// [`Request::Check`] for a login that starts a mail session in another process
        /// (imapd, pop3d): a right password is answered with [`Reply::Ticket`] instead of
        /// [`Reply::Ok`], so the network-facing process never has to be believed about who
        /// logged in.
        Login {
            /// As in [`Request::Check`].
            service: String,
            /// As in [`Request::Check`].
            client: String,
            /// As in [`Request::Check`].
            user: String,
            /// As in [`Request::Check`].
            password: String,
        },
        /// Exchange a ticket from [`Reply::Ticket`] for the account it was issued for
        /// ([`Reply::Ok`]), once, within a minute; anything else is [`Reply::Fail`]. Asked by
        /// the privileged session spawner.
        Redeem {
            /// The ticket.
            ticket: String,
        },
    }

    /// authd → service.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Reply {
        /// The password is right.
        Ok {
            /// The canonical user name (as in the password file).
            user: String,
            /// uid to run the user's mail session as.
            uid: u32,
            /// gid to run the user's mail session as.
            gid: u32,
            /// The user's home directory.
            home: String,
        },
        /// The password is right ([`Request::Login`]): a one-time ticket for the session.
        Ticket {
            /// The canonical user name.
            user: String,
            /// What [`Request::Redeem`] takes (random, hex).
            ticket: String,
        },
        /// Wrong user or password (the same answer for both).
        Fail,
        /// This client (or user) failed too often: refused for a while, password not checked.
        Throttled,
        /// authd cannot check now (password file unreadable, …): try again later.
        Temporary {
            /// Why, for logs.
            reason: String,
        },
    }

    impl super::Protocol for Request {
        const ID: u8 = 0x41;
        const NAME: &'static str = "auth request v1";
    }
    impl super::Protocol for Reply {
        const ID: u8 = 0x42;
        const NAME: &'static str = "auth reply v1";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_every_split() {
        let msgs = vec![
            cleanup::Request::Begin {
                sender: "a@b".into(),
                recipients: vec![Rcpt {
                    address: "c@d".into(),
                    ..Default::default()
                }],
                attrs: vec![("protocol".into(), "ESMTP".into())],
            },
            cleanup::Request::Data(vec![b'x'; 1000]),
            cleanup::Request::End,
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            write_frame(&mut bytes, m).unwrap();
        }
        bytes.extend_from_slice(&trigger_frame());
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.feed(piece);
                while let Some(m) = r.next_frame::<cleanup::Request>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got.len(), 4, "chunk {chunk}");
            assert_eq!(got[3], Incoming::Trigger);
            assert_eq!(got[0], Incoming::Msg(msgs[0].clone()));
            assert_eq!(r.pending(), 0);
        }
        let mut cur = std::io::Cursor::new(bytes);
        let first: Option<Incoming<cleanup::Request>> = read_frame(&mut cur).unwrap();
        assert_eq!(first, Some(Incoming::Msg(msgs[0].clone())));
    }

    #[test]
    fn wrong_protocol_and_bad_lengths_are_refused() {
        let frame = encode(&qmgr::Notice::Flush).unwrap();
        let mut r = FrameReader::new();
        r.feed(&frame);
        let e = r.next_frame::<cleanup::Request>().unwrap_err();
        assert!(e.0.contains("expected 17"), "{e}");
        let mut r = FrameReader::new();
        r.feed(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(r.next_frame::<qmgr::Notice>().is_err());
        let mut r = FrameReader::new();
        r.feed(&[0, 0, 0, 3, 0x21, 0xff, 0xff]);
        assert!(r.next_frame::<qmgr::Notice>().is_err(), "garbage body");
        let mut empty = std::io::Cursor::new(Vec::<u8>::new());
        assert!(read_frame::<qmgr::Notice>(&mut empty).unwrap().is_none());
    }
}
