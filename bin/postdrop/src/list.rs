//! `postdrop -q`: the queue listing from showq over `public/showq`, copied unchanged to
//! standard output. Nothing showq sends is interpreted.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{exit, Fatal};

/// showq's socket, relative to the queue directory.
pub const SOCKET: &str = "public/showq";
/// The most bytes copied from showq.
pub const MAX_LISTING: u64 = 64 << 20;
/// The longest wait for a connection to be accepted, and for each read.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to showq (the current directory is the queue directory; `shown` is the
/// socket's full name for messages) and copies the listing to `out`.
pub fn run(shown: &Path, out: &mut impl Write) -> Result<(), Fatal> {
    let mut showq = connect(Path::new(SOCKET)).map_err(|e| {
        Fatal::new(
            exit::TEMPFAIL,
            format!("{}: {e}: is the mail system running?", shown.display()),
        )
    })?;
    copy(&mut showq, out, MAX_LISTING).map_err(|e| e.about(shown))
}

/// A connected stream with [`TIMEOUT`] for the connect (a listen queue that stays full)
/// and for every read.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    use nix::sys::time::TimeVal;
    let timeout = TimeVal::new(TIMEOUT.as_secs() as _, 0);
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    let addr = UnixAddr::new(path)?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(|e| match e {
        nix::errno::Errno::EAGAIN => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not accepted within {}s", TIMEOUT.as_secs()),
        ),
        e => e.into(),
    })?;
    let s = UnixStream::from(fd);
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// Why a copy stopped early.
#[derive(Debug)]
pub enum CopyError {
    /// Reading from showq failed or timed out.
    Read(std::io::Error),
    /// Nothing came (showq always sends something, even for an empty queue).
    Nothing,
    /// More than the limit came: the first `limit` bytes were copied.
    TooLong(u64),
    /// Writing the output failed.
    Write(std::io::Error),
}

impl CopyError {
    fn about(self, shown: &Path) -> Fatal {
        let s = shown.display();
        match self {
            CopyError::Read(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Fatal::new(
                    exit::TEMPFAIL,
                    format!("{s}: no answer within {}s", TIMEOUT.as_secs()),
                )
            }
            CopyError::Read(e) => Fatal::new(exit::TEMPFAIL, format!("{s}: read: {e}")),
            CopyError::Nothing => Fatal::new(exit::TEMPFAIL, format!("{s}: no listing received")),
            CopyError::TooLong(limit) => Fatal::new(
                exit::TEMPFAIL,
                format!("{s}: listing longer than {} MiB; stopped", limit >> 20),
            ),
            CopyError::Write(e) => Fatal::new(exit::OSERR, format!("write standard output: {e}")),
        }
    }
}

/// Copies everything `from` sends, up to `limit` bytes, to `to`, and flushes it.
pub fn copy(from: &mut impl Read, to: &mut impl Write, limit: u64) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let room = usize::try_from(limit - total).unwrap_or(usize::MAX);
        let take = n.min(room);
        to.write_all(&buf[..take]).map_err(CopyError::Write)?;
        total += take as u64;
        if take < n {
            to.flush().map_err(CopyError::Write)?;
            return Err(CopyError::TooLong(limit));
        }
    }
    to.flush().map_err(CopyError::Write)?;
    if total == 0 {
        return Err(CopyError::Nothing);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn copies_everything_unchanged() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        copy(&mut &data[..], &mut out, MAX_LISTING).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn stops_at_the_limit() {
        let data = vec![b'x'; 100_000];
        let mut out = Vec::new();
        let e = copy(&mut &data[..], &mut out, 70_000).unwrap_err();
        assert!(matches!(e, CopyError::TooLong(70_000)), "{e:?}");
        assert_eq!(out.len(), 70_000);
        // Exactly the limit is fine.
        let mut out = Vec::new();
        copy(&mut &data[..70_000], &mut out, 70_000).unwrap();
        assert_eq!(out.len(), 70_000);
    }

    #[test]
    fn nothing_is_an_error() {
        let e = copy(&mut &b""[..], &mut Vec::new(), MAX_LISTING).unwrap_err();
        assert!(matches!(e, CopyError::Nothing));
        let f = e.about(Path::new("/q/public/showq"));
        assert_eq!(f.code, exit::TEMPFAIL);
        assert_eq!(f.reason, "/q/public/showq: no listing received");
    }

    #[test]
    fn a_silent_showq_times_out() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("showq");
        // Accepted (by the kernel, in the listen queue) but never answered.
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut s = connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let e = copy(&mut s, &mut Vec::new(), MAX_LISTING).unwrap_err();
        let f = e.about(Path::new("/q/public/showq"));
        assert_eq!(f.code, exit::TEMPFAIL);
        assert!(f.reason.contains("no answer within"), "{}", f.reason);
    }

    #[test]
    fn no_showq_is_a_temporary_failure() {
        let t = tempfile::tempdir().unwrap();
        let e = connect(&t.path().join("showq")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
