//! How a logged-in connection moves from the login process to the session worker of its
//! user: messages on SOCK_SEQPACKET socket pairs (one message per packet, postcard), each
//! request carrying the client connection's file descriptor (SCM_RIGHTS).
//!
//! ```text
//! login ──Login{id, ticket, conn} + fd──▶ spawner ──Session{user, home, conn} + fd──▶ worker
//! login ◀──────────Answer{id, error}───── spawner
//! ```
//!
//! The login process is not believed about who logged in: it passes authd's one-time
//! ticket, which the spawner redeems with authd itself.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The biggest message: a connection's unread input is bounded by the login process's
/// line limit plus one read.
pub const MAX_MESSAGE: usize = 512 * 1024;

/// What a connection brings along to its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnState {
    /// The tag of the LOGIN or AUTHENTICATE command to complete.
    pub tag: String,
    /// Client input read after that command, not yet handled.
    pub leftover: Vec<u8>,
    /// Output to the client not sent yet (it goes before the login's answer).
    pub output: Vec<u8>,
    /// The client's address (for logs).
    pub ip: String,
    /// The TLS version when the login process terminates TLS for this connection.
    pub tls: Option<String>,
    /// Bytes from and to the client so far.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
}

/// login process → spawner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    /// Echoed in the [`Answer`].
    pub id: u64,
    /// authd's ticket for the login.
    pub ticket: String,
    /// The connection.
    pub conn: ConnState,
}

/// spawner → login process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The [`Login`]'s id.
    pub id: u64,
    /// `None`: a worker has the connection now. `Some(why)`: it could not be handed over;
    /// the login process still owns it.
    pub error: Option<String>,
}

/// spawner → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The user, as authd knows it.
    pub user: String,
    /// The user's home directory, from authd.
    pub home: String,
    /// The connection.
    pub conn: ConnState,
}

/// A connected pair of SOCK_SEQPACKET sockets (close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Sends one message, with a file descriptor when given. `MSG_DONTWAIT` when
/// `nonblocking` (then `WouldBlock` means: try again later).
pub fn send<T: Serialize>(
    sock: &impl AsRawFd,
    msg: &T,
    fd: Option<RawFd>,
    nonblocking: bool,
) -> io::Result<()> {
    let bytes = postcard::to_stdvec(msg).map_err(io::Error::other)?;
    send_bytes(sock, &bytes, fd, nonblocking)
}

/// [`send`] for a message already encoded.
pub fn send_bytes(
    sock: &impl AsRawFd,
    bytes: &[u8],
    fd: Option<RawFd>,
    nonblocking: bool,
) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::other("handoff message too big"));
    }
    let iov = [IoSlice::new(bytes)];
    let fds;
    let cmsg: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, flags, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`recv`] got.
pub enum Received<T> {
    /// A message (and the descriptor it carried).
    Msg(T, Option<OwnedFd>),
    /// The other side closed its end.
    Closed,
    /// Nothing now (non-blocking).
    Nothing,
}

/// Receives one message. A malformed one is an error (the descriptor it carried is
/// closed).
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<Received<T>> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; 2]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let (n, fd, truncated) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg_space), flags) {
            Ok(m) => {
                let mut fd = None;
                for c in m.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for f in fds {
                            // SAFETY: the kernel just gave us this descriptor; nothing
                            // else owns it. Extra ones are closed as they drop.
                            let owned = unsafe { OwnedFd::from_raw_fd(f) };
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                let truncated = m.flags.contains(MsgFlags::MSG_TRUNC);
                break (m.bytes, fd, truncated);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Received::Nothing),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 && fd.is_none() {
        return Ok(Received::Closed);
    }
    if truncated {
        return Err(io::Error::other("handoff message truncated"));
    }
    let msg = postcard::from_bytes(&buf[..n]).map_err(io::Error::other)?;
    Ok(Received::Msg(msg, fd))
}

/// A connected stream socket of any family (the client's TCP connection, or the login
/// process's relay socket for a TLS client), for the worker's event loop.
pub struct FdStream(pub OwnedFd);

impl FdStream {
    /// Takes `fd` and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<FdStream> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fl = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(io::Error::from)?;
        Ok(FdStream(fd))
    }
}

impl io::Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(&self.0, buf).map_err(io::Error::from)
    }
}

impl io::Write for FdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // send(MSG_NOSIGNAL): a client gone away is an error, not a SIGPIPE.
        nix::sys::socket::send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for FdStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_its_descriptor_cross() {
        let (a, b) = pair().unwrap();
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let msg = Login {
            id: 7,
            ticket: "00ff".into(),
            conn: ConnState {
                tag: "a1".into(),
                leftover: b"a2 NOOP\r\n".to_vec(),
                output: b"* OK\r\n".to_vec(),
                ip: "127.0.0.1".into(),
                tls: Some("TLSv1.3".into()),
                bytes_in: 10,
                bytes_out: 20,
            },
        };
        send(&a, &msg, Some(x.as_raw_fd()), false).unwrap();
        drop(x);
        let mut buf = vec![0u8; MAX_MESSAGE];
        let Received::Msg(got, Some(fd)) = recv::<Login>(&b, &mut buf, false).unwrap() else {
            panic!("no message with a descriptor");
        };
        assert_eq!(got, msg);
        // The descriptor is the other end of y.
        use std::io::{Read, Write};
        let mut s = FdStream::new(fd).unwrap();
        s.write_all(b"hello").unwrap();
        let mut y = y;
        let mut got = [0u8; 5];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(matches!(
            recv::<Login>(&b, &mut buf, true).unwrap(),
            Received::Nothing
        ));
        drop(a);
        assert!(matches!(
            recv::<Login>(&b, &mut buf, false).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (a, b) = pair().unwrap();
        send_bytes(&a, &[0xff; 40], None, false).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        assert!(recv::<Session>(&b, &mut buf, false).is_err());
        assert!(send_bytes(&a, &vec![0u8; MAX_MESSAGE + 1], None, false).is_err());
    }
}
