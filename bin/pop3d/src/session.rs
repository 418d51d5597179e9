//! One logged-in POP3 session (the TRANSACTION and UPDATE states), in a process of its
//! own running as the user: blocking I/O on the connection the spawner passed (the TCP
//! socket itself, or the login process's relay for a TLS client), with a read timeout
//! (pop3d_timeout) and a write deadline (each 64 KiB of output must be taken within 30 s:
//! a client that does not read its mail is disconnected).

use crate::maildrop::{Maildrop, OpenError};
use crate::settings::Settings;
use petrel_access::handoff::{FdStream, Session};
use petrel_pop3_proto::{
    capa, multiline, parse_command, top, Command, Line, LineReader, Transaction, MAX_LINE,
};
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// A client that takes nothing of its output for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Output goes out in pieces of this size, each of which must be taken within
/// [`WRITE_TIMEOUT`]: a client trickling a few bytes does not restart the clock.
const WRITE_PIECE: usize = 64 * 1024;
/// How long one send() may block (the socket's SO_SNDTIMEO), so that the piece's
/// deadline is checked at least this often.
const SEND_WAIT: Duration = Duration::from_secs(5);
/// Output is written once this much is waiting (and whenever the client's pipelined
/// commands are all answered).
const FLUSH_AT: usize = 128 * 1024;
/// An mbox's dotlock is refreshed this often while a session holds it.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The connection: its socket, the output not written yet, byte counts.
struct Client {
    stream: FdStream,
    out: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Client {
    fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(b);
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            for piece in self.out.chunks(WRITE_PIECE) {
                write_piece(&mut self.stream, piece)?;
                self.bytes_out += piece.len() as u64;
            }
            self.out.clear();
            if self.out.capacity() > 4 * FLUSH_AT {
                self.out = Vec::new();
            }
        }
        Ok(())
    }
}

/// Writes all of `piece` within [`WRITE_TIMEOUT`], or fails with `TimedOut`.
fn write_piece(stream: &mut FdStream, mut piece: &[u8]) -> io::Result<()> {
    let started = Instant::now();
    while !piece.is_empty() {
        match stream.write(piece) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => piece = &piece[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => {}
        }
        if !piece.is_empty() && started.elapsed() >= WRITE_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its output in time",
            ));
        }
    }
    Ok(())
}

/// What a session did, for the log.
#[derive(Default)]
struct Counts {
    top: u64,
    top_bytes: u64,
    retr: u64,
    retr_bytes: u64,
}

/// Serves the session `msg` on `fd` until QUIT, the client goes, or a timeout.
pub fn serve(msg: Session, fd: OwnedFd, s: &Settings) -> io::Result<()> {
    let stream = blocking_stream(fd, s.timeout)?;
    let ip = msg.conn.ip.clone();
    let user = msg.user.clone();
    let mut c = Client {
        stream,
        out: msg.conn.output,
        bytes_in: msg.conn.bytes_in,
        bytes_out: msg.conn.bytes_out,
    };
    let loc = match s.location(&msg.user, &msg.home) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("user={user}, rip={ip}: {e}");
            c.send(b"-ERR [SYS/PERM] Your mailbox is not configured correctly.\r\n")?;
            return c.flush();
        }
    };
    let (mut mdrop, list) = match Maildrop::open(&loc) {
        Ok(x) => x,
        Err(OpenError::InUse(why)) => {
            log::info!("user={user}, rip={ip}: mailbox in use: {why}");
            c.send(
                b"-ERR [IN-USE] Your mailbox is in use by another session; try again later.\r\n",
            )?;
            return c.flush();
        }
        Err(OpenError::Other(why)) => {
            log::warn!("user={user}, rip={ip}: cannot open the mailbox: {why}");
            c.send(b"-ERR [SYS/TEMP] Cannot open your mailbox; try again later.\r\n")?;
            return c.flush();
        }
    };
    let tls = msg.conn.tls.as_deref().unwrap_or("none");
    log::info!(
        "Login: user={user}, rip={ip}, tls={tls}, messages={}",
        list.len()
    );
    let mut tx = Transaction::new(list);
    c.send(b"+OK Logged in.\r\n")?;
    let mut reader = LineReader::new(MAX_LINE);
    reader.push(&msg.conn.leftover);
    let mut counts = Counts::default();
    let mut seen = BTreeSet::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut touched = Instant::now();
    let end = loop {
        let line = match reader.next_line() {
            Some(l) => l,
            None => {
                if let Err(e) = c.flush() {
                    break format!("write failed: {e}");
                }
                match c.stream.read(&mut buf) {
                    Ok(0) => break "client closed the connection".to_string(),
                    Ok(n) => {
                        c.bytes_in += n as u64;
                        reader.push(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let _ = c.send(b"-ERR Autologout; idle for too long.\r\n");
                        let _ = c.flush();
                        break "idle for too long".to_string();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break format!("read failed: {e}"),
                }
            }
        };
        if touched.elapsed() >= TOUCH_EVERY {
            mdrop.touch();
            touched = Instant::now();
        }
        let cmd = match line {
            Line::TooLong => Err("Line too long".to_string()),
            Line::Line(l) => parse_command(&l).map_err(|e| e.0),
        };
        let result = match cmd {
            Err(e) => c.send(format!("-ERR {e}.\r\n").as_bytes()),
            Ok(cmd) => match cmd {
                Command::Quit => {
                    let delete = tx.to_remove();
                    let total = tx.len();
                    let seen: Vec<usize> = seen.iter().copied().collect();
                    let answer = match mdrop.finish(&seen, &delete) {
                        Ok(()) => {
                            format!("+OK Logging out, {} messages deleted.\r\n", delete.len())
                        }
                        Err(e) => {
                            log::warn!("user={user}, rip={ip}: deleted messages not removed: {e}");
                            "-ERR [SYS/TEMP] Some deleted messages were not removed; they are still there.\r\n".to_string()
                        }
                    };
                    let sent = c.send(answer.as_bytes()).and_then(|()| c.flush());
                    log::info!(
                    "Logout: user={user}, rip={ip}, top={}/{}, retr={}/{}, del={}/{total}, size={}, in={}, out={}",
                    counts.top,
                    counts.top_bytes,
                    counts.retr,
                    counts.retr_bytes,
                    delete.len(),
                    size_of(&tx),
                    c.bytes_in,
                    c.bytes_out
                );
                    return sent;
                }
                Command::Noop => c.send(b"+OK\r\n"),
                Command::Stat => c.send(tx.stat().as_bytes()),
                Command::List(n) => c.send(tx.list(n, false).as_bytes()),
                Command::Uidl(n) => c.send(tx.list(n, true).as_bytes()),
                Command::Dele(n) => c.send(tx.delete(n).as_bytes()),
                Command::Rset => c.send(tx.reset().as_bytes()),
                Command::Capa => c.send(capa(false, false, false).as_bytes()),
                Command::Retr(n) => match tx.index(n) {
                    Err(e) => c.send(format!("-ERR {e}.\r\n").as_bytes()),
                    Ok(i) => match mdrop.read(i) {
                        Ok(content) => {
                            let size = tx.listing(i).map(|l| l.size).unwrap_or(0);
                            counts.retr += 1;
                            counts.retr_bytes += size;
                            seen.insert(i);
                            c.send(format!("+OK {size} octets\r\n").as_bytes())
                                .and_then(|()| c.send(&multiline(&content)))
                        }
                        Err(e) => read_failed(&mut c, &user, n, e),
                    },
                },
                Command::Top(n, lines) => match tx.index(n) {
                    Err(e) => c.send(format!("-ERR {e}.\r\n").as_bytes()),
                    Ok(i) => match mdrop.read(i) {
                        Ok(content) => {
                            let body = top(&content, lines);
                            counts.top += 1;
                            counts.top_bytes += body.len() as u64;
                            c.send(b"+OK\r\n").and_then(|()| c.send(&body))
                        }
                        Err(e) => read_failed(&mut c, &user, n, e),
                    },
                },
                Command::User(_) | Command::Pass(_) | Command::Auth { .. } => {
                    c.send(b"-ERR Already logged in.\r\n")
                }
                Command::Stls => c.send(b"-ERR STLS is only possible before login.\r\n"),
            },
        };
        if let Err(e) = result {
            break format!("write failed: {e}");
        }
    };
    // No QUIT: RFC 1939 says nothing is deleted; what was read is still marked seen.
    let seen: Vec<usize> = seen.iter().copied().collect();
    let _ = mdrop.finish(&seen, &[]);
    log::info!(
        "Disconnected: user={user}, rip={ip}, reason={end}, top={}/{}, retr={}/{}, del=0/{}, in={}, out={}",
        counts.top,
        counts.top_bytes,
        counts.retr,
        counts.retr_bytes,
        tx.len(),
        c.bytes_in,
        c.bytes_out
    );
    Ok(())
}

/// The octets of the messages at login.
fn size_of(tx: &Transaction) -> u64 {
    (0..tx.len())
        .filter_map(|i| tx.listing(i))
        .map(|l| l.size)
        .sum()
}

/// A message listed at login could not be read (removed by IMAP meanwhile, I/O error).
fn read_failed(c: &mut Client, user: &str, n: u32, e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        return c.send(format!("-ERR Message {n} was removed by another session.\r\n").as_bytes());
    }
    log::warn!("user={user}: cannot read message {n}: {e}");
    c.send(format!("-ERR [SYS/TEMP] Cannot read message {n}.\r\n").as_bytes())
}

/// The connection in blocking mode with the session's timeouts.
fn blocking_stream(fd: OwnedFd, read_timeout: Duration) -> io::Result<FdStream> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::socket::{setsockopt, sockopt};
    let fl = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(io::Error::from)?;
    let tv = |d: Duration| nix::sys::time::TimeVal::new(d.as_secs() as _, d.subsec_micros() as _);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv(read_timeout)).map_err(io::Error::from)?;
    setsockopt(&fd, sockopt::SendTimeout, &tv(SEND_WAIT)).map_err(io::Error::from)?;
    Ok(FdStream(fd))
}
