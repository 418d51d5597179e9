//! cleanup's event loop: accepts clients on `private/cleanup`, feeds their frames to jobs,
//! hands finished jobs to the commit pool, answers when the pool is done, tells qmgr.

use crate::commit::{Done, Pool};
use crate::job::{self, Failure, Job, Settings};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use petrel_daemon::Daemon;
use petrel_ipc::cleanup::{Reply, Request};
use petrel_ipc::{FrameReader, Incoming};
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const COMMIT_WORKERS: usize = 4;
/// A client with this much unanswered output is not read from until it catches up.
const MAX_OUT: usize = 64 * 1024;

struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
    job: Option<Job>,
    /// Begin was refused: Data frames are dropped and End answers with this.
    refused: Option<Failure>,
    /// Waiting for the commit pool; frames after End wait in `reader`.
    committing: bool,
    eof: bool,
}

struct Server {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    settings: Settings,
    pool: Pool,
    done: Receiver<Done>,
    qmgr: Option<std::os::unix::net::UnixStream>,
}

/// Runs the loop until the process is told to stop.
pub fn run(d: Daemon) -> Result<(), String> {
    // Before serving anyone: undo what a crash may have left half done, and have qmgr
    // look at incoming/ (a notice may have died with the previous cleanup).
    job::recover_maildrop_duplicates();
    petrel_daemon::send_notice("public/qmgr", &petrel_ipc::qmgr::Notice::Rescan);
    let fd = d
        .listener
        .ok_or("no listening socket: cleanup must be started by master")?;
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let mut listener = UnixListener::from_std(std_listener);
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("waker: {e}"))?);
    let (done_tx, done_rx) = channel();
    let settings = Settings {
        myhostname: d.cfg.get("myhostname"),
        myorigin: d.cfg.get("myorigin"),
        size_limit: d.cfg.get_int("message_size_limit").max(0) as u64,
        header_limit: d.cfg.get_int("header_size_limit").max(1024) as usize,
    };
    let mut s = Server {
        poll,
        listener,
        conns: HashMap::new(),
        next: 2,
        settings,
        pool: Pool::new(COMMIT_WORKERS, done_tx, waker),
        done: done_rx,
        qmgr: None,
    };
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = s.poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => s.accept(),
                WAKER => s.completions(),
                Token(t) => s.service(t),
            }
        }
    }
}

impl Server {
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let t = self.next;
                    self.next += 1;
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(t),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        self.conns.insert(
                            t,
                            Conn {
                                stream,
                                reader: FrameReader::new(),
                                out: Vec::new(),
                                job: None,
                                refused: None,
                                committing: false,
                                eof: false,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what the client sent, handles complete frames, writes pending output.
    fn service(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        if !conn.eof && conn.out.len() < MAX_OUT {
            conn.eof = conn.reader.read_from(&mut conn.stream);
        }
        self.process(t);
        self.flush(t);
    }

    fn process(&mut self, t: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&t) else {
                return;
            };
            if conn.committing {
                return;
            }
            let frame = match conn.reader.next_frame::<Request>() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("client protocol error: {e}");
                    self.close(t);
                    return;
                }
            };
            let Incoming::Msg(req) = frame else {
                continue;
            };
            match req {
                Request::Maildrop { name } => {
                    if let Some(j) = conn.job.take() {
                        j.abort();
                    }
                    match job::from_maildrop(&self.settings, &name) {
                        Ok(ready) => self.commit(t, ready),
                        Err(f) => self.reply_failure(t, f),
                    }
                }
                Request::Begin {
                    sender,
                    recipients,
                    attrs,
                } => {
                    if let Some(j) = conn.job.take() {
                        j.abort();
                    }
                    conn.refused = None;
                    match Job::begin(&self.settings, &sender, &recipients, &attrs, None) {
                        Ok(j) => conn.job = Some(j),
                        Err(f) => conn.refused = Some(f),
                    }
                }
                Request::Data(bytes) => {
                    if let Some(j) = conn.job.as_mut() {
                        j.data(&bytes);
                    }
                }
                Request::End => match conn.job.take() {
                    Some(j) => match j.end() {
                        Ok(ready) => self.commit(t, ready),
                        Err(f) => self.reply_failure(t, f),
                    },
                    None => {
                        let f = self.take_pending_failure(t).unwrap_or(Failure {
                            temporary: false,
                            dsn: "5.5.1",
                            reason: "End without Begin".into(),
                        });
                        self.reply_failure(t, f);
                    }
                },
                Request::Abort => {
                    if let Some(j) = conn.job.take() {
                        j.abort();
                    }
                    self.take_pending_failure(t);
                }
            }
        }
    }

    fn take_pending_failure(&mut self, t: usize) -> Option<Failure> {
        self.conns.get_mut(&t).and_then(|c| c.refused.take())
    }

    fn commit(&mut self, t: usize, ready: job::Ready) {
        let id = ready.id.clone();
        if let Some(conn) = self.conns.get_mut(&t) {
            conn.committing = true;
        }
        if let Err(e) = self.pool.submit(t, ready) {
            log::error!("{id}: {e}");
            if let Some(conn) = self.conns.get_mut(&t) {
                conn.committing = false;
            }
            self.reply_failure(
                t,
                Failure {
                    temporary: true,
                    dsn: "4.3.0",
                    reason: e,
                },
            );
        }
    }

    fn reply_failure(&mut self, t: usize, f: Failure) {
        if f.temporary {
            log::warn!("message not queued: {} {}", f.dsn, f.reason);
        }
        self.send(
            t,
            &Reply::Failed {
                temporary: f.temporary,
                dsn: f.dsn.to_string(),
                reason: f.reason,
            },
        );
    }

    fn send(&mut self, t: usize, reply: &Reply) {
        if let Some(conn) = self.conns.get_mut(&t) {
            match petrel_ipc::encode(reply) {
                Ok(b) => conn.out.extend_from_slice(&b),
                Err(e) => log::error!("encode reply: {e}"),
            }
        }
    }

    fn completions(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            match done.result {
                Ok(()) => {
                    log::info!("{}: {}", done.id, done.summary);
                    self.tell_qmgr(done.id.as_str());
                    self.send(
                        done.token,
                        &Reply::Queued {
                            id: done.id.to_string(),
                        },
                    );
                }
                Err(e) => self.reply_failure(
                    done.token,
                    Failure {
                        temporary: true,
                        dsn: "4.3.0",
                        reason: e,
                    },
                ),
            }
            if let Some(conn) = self.conns.get_mut(&done.token) {
                conn.committing = false;
            }
            self.process(done.token);
            self.flush(done.token);
        }
    }

    fn flush(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        if petrel_ipc::write_pending(&mut conn.stream, &mut conn.out).is_err() {
            conn.out.clear();
            conn.eof = true;
        }
        // The client is gone and nothing is owed to it (a half frame left behind is dropped).
        if conn.eof && !conn.committing && conn.out.is_empty() {
            self.close(t);
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(mut conn) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // A client that vanished mid-message leaves no queue file behind.
            if let Some(j) = conn.job.take() {
                j.abort();
            }
        }
    }

    /// Tells qmgr about a new file. Best effort: qmgr also scans incoming/.
    fn tell_qmgr(&mut self, id: &str) {
        let frame =
            match petrel_ipc::encode(&petrel_ipc::qmgr::Notice::Incoming { id: id.to_string() }) {
                Ok(f) => f,
                Err(_) => return,
            };
        for _ in 0..2 {
            if self.qmgr.is_none() {
                self.qmgr = std::os::unix::net::UnixStream::connect("public/qmgr").ok();
                if let Some(s) = &self.qmgr {
                    let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(2)));
                }
            }
            let Some(s) = self.qmgr.as_mut() else {
                return;
            };
            if s.write_all(&frame).is_ok() {
                return;
            }
            self.qmgr = None;
        }
    }
}
