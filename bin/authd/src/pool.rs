//! The password-check workers: a few threads take jobs from a queue, verify, and hand the
//! result back to the event loop through a channel and its `Waker`.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

/// One check.
pub struct Job {
    /// The connection's token.
    pub token: usize,
    /// The stored `{SCHEME}hash`.
    pub stored: String,
    /// The password given.
    pub password: String,
}

/// A finished check.
pub struct Done {
    /// The connection's token.
    pub token: usize,
    /// `petrel_auth::verify`'s answer.
    pub result: Result<bool, String>,
}

/// The workers.
pub struct Pool {
    jobs: Sender<Job>,
}

impl Pool {
    /// Starts `n` workers that send results to `done` and wake the loop.
    pub fn new(n: usize, done: Sender<Done>, waker: Arc<mio::Waker>) -> Result<Pool, String> {
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx: Arc<Mutex<Receiver<Job>>> = Arc::clone(&rx);
            let done = done.clone();
            let waker = Arc::clone(&waker);
            thread::Builder::new()
                .name(format!("check{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(guard) = rx.lock() else { return };
                        match guard.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    let result = petrel_auth::verify(&job.stored, &job.password);
                    drop(job.password);
                    if done
                        .send(Done {
                            token: job.token,
                            result,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = waker.wake();
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        Ok(Pool { jobs })
    }

    /// Queues a check.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the password-check workers are gone".to_string())
    }
}
