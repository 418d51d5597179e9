//! A login check with authd from a mio event loop (smtpd, imapd): one non-blocking
//! connection to `private/auth` per check, registered with the caller's poll under the
//! caller's token.

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use petrel_ipc::auth::{Reply, Request};
use petrel_ipc::{FrameReader, Incoming};
use std::io;

/// An authd check in progress.
pub struct AuthLink {
    stream: UnixStream,
    out: Vec<u8>,
    reader: FrameReader,
}

impl AuthLink {
    /// Connects to `private/auth`, registers the socket with `token`, and queues `req`
    /// (sent by [`AuthLink::flush`]).
    pub fn open(registry: &Registry, token: Token, req: &Request) -> io::Result<AuthLink> {
        let out = petrel_ipc::encode(req)?;
        let s = std::os::unix::net::UnixStream::connect("private/auth")?;
        s.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(s);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(AuthLink {
            stream,
            out,
            reader: FrameReader::new(),
        })
    }

    /// Writes what is queued. An authd that went away shows as the end of its reply.
    pub fn flush(&mut self) {
        if petrel_ipc::write_pending(&mut self.stream, &mut self.out).is_err() {
            self.out.clear();
        }
    }

    /// Writes what is queued and reads: `Some(reply)` once authd answered, `Some(Temporary)`
    /// when it closed the connection or broke the protocol, `None` while the answer is
    /// still to come.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.flush();
        let mut lost = self.reader.read_from(&mut self.stream);
        match self.reader.next_frame::<Reply>() {
            Ok(Some(Incoming::Msg(r))) => return Some(r),
            Ok(_) => {}
            Err(e) => {
                log::warn!("authd protocol error: {e}");
                lost = true;
            }
        }
        lost.then(|| Reply::Temporary {
            reason: "authd closed the connection".into(),
        })
    }

    /// Forgets the check and its socket.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}
