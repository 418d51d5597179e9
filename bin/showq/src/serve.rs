//! One client at a time: accept, write the listing, close.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// The listening socket master passed, in blocking mode; refused unless it is a Unix-domain
/// socket (an `inet` line in services.conf would show the queue to the network).
pub fn unix_listener(fd: OwnedFd) -> Result<UnixListener, String> {
    let listener = UnixListener::from(fd);
    listener
        .local_addr()
        .map_err(|e| format!("the listening socket is not a Unix-domain one: {e}"))?;
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("listening socket: {e}"))?;
    Ok(listener)
}

/// Serves the clients of `listener` one after the other, for ever: each gets the listing
/// of the queue directory `q`. A failure with one client is a warning in the log.
pub fn run(listener: &UnixListener, q: &Path, timeout: Duration) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, q, timeout) {
                    log::warn!("{e}");
                }
            }
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// Writes the listing of `q` to `client` and closes the connection; reads nothing. A
/// client that does not read what it asked for is given `timeout` for each write.
pub fn answer(mut client: UnixStream, q: &Path, timeout: Duration) -> Result<(), String> {
    client
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("client: set a write timeout: {e}"))?;
    let listing = petrel_queue::listing::format_list(&petrel_queue::listing::scan(q));
    client
        .write_all(listing.as_bytes())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "client: timed out after {}s writing the listing",
                timeout.as_secs_f64()
            ),
            _ => format!("client: write the listing: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_queue::spool::Dir;
    use std::io::Read;

    fn spool() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        petrel_queue::spool::create(t.path(), None).expect("spool");
        t
    }

    fn queue_file(q: &Path, d: Dir, rcpts: &[String]) -> String {
        let id = petrel_queue::QueueId::new().to_string();
        let mut w =
            petrel_queue::Writer::create(q.join(d.file(&id)), 1_700_000_000.0).expect("create");
        w.sender("alice@example.org").expect("sender");
        for r in rcpts {
            w.recipient(&petrel_queue::Recipient {
                address: r.clone(),
                ..Default::default()
            })
            .expect("rcpt");
        }
        w.begin_content().expect("content");
        w.content(b"hi\n").expect("content");
        w.finish(petrel_queue::file::MODE_COMPLETE).expect("finish");
        id
    }

    /// Recipients whose listing is more than the socket buffers hold.
    fn long_list() -> Vec<String> {
        (0..5000)
            .map(|i| format!("{}{i}@example.net", "x".repeat(200)))
            .collect()
    }

    #[test]
    fn only_a_unix_domain_listener_is_taken() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let e = unix_listener(OwnedFd::from(tcp)).expect_err("TCP refused");
        assert!(e.contains("not a Unix-domain"), "{e}");
        let t = tempfile::tempdir().expect("tempdir");
        let unix = UnixListener::bind(t.path().join("showq")).expect("bind");
        unix.set_nonblocking(true).expect("nonblocking");
        let l = unix_listener(OwnedFd::from(unix)).expect("Unix taken");
        // Blocking again: accept waits rather than failing with WouldBlock.
        let _client = UnixStream::connect(t.path().join("showq")).expect("connect");
        l.accept().expect("accept");
    }

    #[test]
    fn a_client_gets_the_listing_without_sending_anything() {
        let t = spool();
        let q = t.path();
        let id = queue_file(q, Dir::Deferred, &["bob@example.net".to_string()]);
        let (ours, theirs) = UnixStream::pair().expect("pair");
        answer(ours, q, Duration::from_secs(10)).expect("answered");
        let mut got = String::new();
        let mut theirs = theirs;
        theirs.read_to_string(&mut got).expect("read to the end");
        let want = petrel_queue::listing::format_list(&petrel_queue::listing::scan(q));
        assert_eq!(got, want);
        assert!(
            got.contains(&id) && got.contains("bob@example.net"),
            "{got}"
        );
    }

    #[test]
    fn a_client_that_does_not_read_costs_only_the_timeout() {
        let t = spool();
        let q = t.path();
        queue_file(q, Dir::Hold, &long_list());
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let start = std::time::Instant::now();
        let e = answer(ours, q, Duration::from_millis(200)).expect_err("times out");
        assert!(e.contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_client_gone_away_is_an_error_not_a_crash() {
        let t = spool();
        let q = t.path();
        queue_file(q, Dir::Hold, &long_list());
        let (ours, theirs) = UnixStream::pair().expect("pair");
        drop(theirs);
        let e = answer(ours, q, Duration::from_secs(10)).expect_err("broken pipe");
        assert!(e.starts_with("client: write the listing"), "{e}");
    }
}
