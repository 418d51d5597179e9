//! Waiting for a reason to scan: a connection on `public/pickup` (postdrop, or master's
//! periodic wake-up), or the end of the scan interval.
//!
//! A client connects, writes a trigger frame and closes; the new connection is the
//! trigger. Whatever a client sends is read and thrown away, without ever blocking: the
//! listener and the clients are non-blocking and watched with poll(2), and a client that
//! stays silent is dropped after [`CLIENT_TIMEOUT`].

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long a client may keep its connection open.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most clients kept at once; the oldest is dropped for a new one.
pub const MAX_CLIENTS: usize = 64;

/// The wake-up listener and the clients connected to it.
pub struct Wakeup {
    listener: Option<UnixListener>,
    clients: Vec<(UnixStream, Instant)>,
}

impl Wakeup {
    /// Watches `listener` (none: only the timer wakes pickup up).
    pub fn new(listener: Option<UnixListener>) -> io::Result<Wakeup> {
        if let Some(l) = &listener {
            l.set_nonblocking(true)?;
        }
        Ok(Wakeup {
            listener,
            clients: Vec::new(),
        })
    }

    /// Number of clients still connected.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Waits at most `max`; true when a client connected (scan now), false on time-out.
    pub fn wait(&mut self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        loop {
            let now = Instant::now();
            self.clients
                .retain(|(_, since)| now.duration_since(*since) < CLIENT_TIMEOUT);
            if now >= deadline {
                return false;
            }
            let mut timeout = deadline - now;
            if let Some(oldest) = self.clients.iter().map(|(_, t)| *t).min() {
                timeout = timeout.min((oldest + CLIENT_TIMEOUT).saturating_duration_since(now));
            }
            let (listener_ready, ready) = match self.poll(timeout) {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("poll: {e}");
                    std::thread::sleep(timeout.min(Duration::from_secs(1)));
                    continue;
                }
            };
            self.drain(&ready);
            if listener_ready && self.accept() {
                return true;
            }
        }
    }

    /// Polls; returns whether the listener is ready and which clients are.
    fn poll(&self, timeout: Duration) -> Result<(bool, Vec<bool>), Errno> {
        let ms = PollTimeout::try_from(timeout.as_millis().clamp(1, 60_000) as u64)
            .unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.clients.len() + 1);
        if let Some(l) = &self.listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        for (c, _) in &self.clients {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return Ok((false, Vec::new()));
        }
        poll(&mut fds, ms)?;
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let off = usize::from(self.listener.is_some());
        Ok((off == 1 && ready[0], ready[off..].to_vec()))
    }

    /// Reads and discards what ready clients sent; drops those that closed or failed.
    fn drain(&mut self, ready: &[bool]) {
        let mut buf = [0u8; 512];
        let mut keep = Vec::with_capacity(self.clients.len());
        for (i, (mut c, since)) in std::mem::take(&mut self.clients).into_iter().enumerate() {
            let mut open = true;
            if ready.get(i).copied().unwrap_or(false) {
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => {
                            open = false;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            if open {
                keep.push((c, since));
            }
        }
        self.clients = keep;
    }

    /// Accepts every pending connection; true when there was at least one.
    fn accept(&mut self) -> bool {
        let Some(l) = &self.listener else {
            return false;
        };
        let mut any = false;
        loop {
            match l.accept() {
                Ok((c, _)) => {
                    any = true;
                    if c.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.clients.len() >= MAX_CLIENTS {
                        self.clients.remove(0);
                    }
                    self.clients.push((c, Instant::now()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(e) => {
                    log::warn!("accept on the wake-up socket: {e}");
                    return any;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use std::io::Write;

    fn listener() -> (tempfile::TempDir, std::path::PathBuf, Wakeup) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pickup");
        let l = UnixListener::bind(&path).unwrap();
        (d, path, Wakeup::new(Some(l)).unwrap())
    }

    #[test]
    fn times_out_without_clients() {
        let (_d, _p, mut w) = listener();
        let t = Instant::now();
        assert!(!w.wait(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        let mut none = Wakeup::new(None).unwrap();
        assert!(!none.wait(Duration::from_millis(10)));
    }

    #[test]
    fn a_trigger_wakes_it_and_the_client_is_cleaned_up() {
        let (_d, path, mut w) = listener();
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(&petrel_ipc::trigger_frame()).unwrap();
        drop(c);
        assert!(w.wait(Duration::from_secs(5)));
        // The closed client is read to its end and dropped on the next wait.
        assert!(!w.wait(Duration::from_millis(20)));
        assert_eq!(w.clients(), 0);
    }

    #[test]
    fn a_silent_client_does_not_block() {
        let (_d, path, mut w) = listener();
        let silent = UnixStream::connect(&path).unwrap();
        assert!(w.wait(Duration::from_secs(5)), "connecting is the trigger");
        let t = Instant::now();
        assert!(!w.wait(Duration::from_millis(50)));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(w.clients(), 1);
        // A client that sends rubbish and stays connected is no trigger by itself.
        let mut noisy = UnixStream::connect(&path).unwrap();
        assert!(w.wait(Duration::from_secs(5)));
        noisy.write_all(&[0xff; 4096]).unwrap();
        assert!(!w.wait(Duration::from_millis(50)));
        drop(silent);
    }

    #[test]
    fn many_clients_at_once_are_one_wake_up() {
        let (_d, path, mut w) = listener();
        let cs: Vec<UnixStream> = (0..MAX_CLIENTS + 10)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        assert!(w.wait(Duration::from_secs(5)));
        assert!(w.clients() <= MAX_CLIENTS);
        drop(cs);
    }
}
