//! The commit pool: makes finished queue files durable off the event loop.
//!
//! Each worker takes a batch of ready messages, fsyncs each file (several workers fsync at
//! once, which the file system's journal commits together), fsyncs `incoming/` once for the
//! whole batch, then removes the maildrop files the messages came from. Only then does the
//! server answer "queued". Group commit without weakening the promise.

use crate::job::Ready;
use petrel_queue::file::MODE_COMPLETE;
use petrel_queue::{Dir, QueueId};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// The outcome of one commit.
pub struct Done {
    pub token: usize,
    pub id: QueueId,
    pub summary: String,
    pub result: Result<(), String>,
}

/// A handle to the pool.
pub struct Pool {
    tx: Sender<(usize, Ready)>,
}

const BATCH: usize = 32;

impl Pool {
    /// Starts `workers` threads; each completion is sent on `done` and wakes the loop.
    pub fn new(workers: usize, done: Sender<Done>, waker: Arc<mio::Waker>) -> Pool {
        let (tx, rx) = channel::<(usize, Ready)>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let rx = Arc::clone(&rx);
            let done = done.clone();
            let waker = Arc::clone(&waker);
            std::thread::spawn(move || worker(&rx, &done, &waker));
        }
        Pool { tx }
    }

    /// Queues a ready message for commit.
    pub fn submit(&self, token: usize, ready: Ready) -> Result<(), String> {
        self.tx
            .send((token, ready))
            .map_err(|_| "commit pool stopped".to_string())
    }
}

fn take_batch(rx: &Mutex<Receiver<(usize, Ready)>>) -> Option<Vec<(usize, Ready)>> {
    let guard = rx.lock().ok()?;
    let first = guard.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match guard.try_recv() {
            Ok(x) => batch.push(x),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn worker(rx: &Mutex<Receiver<(usize, Ready)>>, done: &Sender<Done>, waker: &mio::Waker) {
    while let Some(batch) = take_batch(rx) {
        let mut finished: Vec<(Done, Option<String>)> = Vec::with_capacity(batch.len());
        for (token, ready) in batch {
            let path = Dir::Incoming.file(ready.id.as_str());
            let result = ready
                .writer
                .finish(MODE_COMPLETE)
                .map(|_| ())
                .map_err(|e| format!("queue file write error: {e}"));
            if result.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            let d = Done {
                token,
                id: ready.id,
                summary: ready.summary,
                result,
            };
            finished.push((d, ready.maildrop));
        }
        if let Err(e) = petrel_queue::spool::fsync_dir(Path::new(Dir::Incoming.name())) {
            for (d, _) in finished.iter_mut().filter(|(d, _)| d.result.is_ok()) {
                let _ = std::fs::remove_file(Dir::Incoming.file(d.id.as_str()));
                d.result = Err(format!("fsync incoming/: {e}"));
            }
        }
        for (d, maildrop) in finished {
            if let (Ok(()), Some(name)) = (&d.result, maildrop) {
                if let Err(e) = std::fs::remove_file(Dir::Maildrop.file(&name)) {
                    log::warn!("{}: remove maildrop/{name}: {e}", d.id);
                }
            }
            let _ = done.send(d);
        }
        let _ = waker.wake();
    }
}
