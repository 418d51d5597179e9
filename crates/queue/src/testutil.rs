//! Test helpers for crates that work on queue files (feature `test-util`).
#![allow(clippy::expect_used)]

use crate::file;
use crate::spool::Dir;
use crate::{QueueId, Recipient, Writer};
use std::path::Path;

/// Writes a complete queue file into `q/d/` from `sender` to `rcpts` with `body` (arrival
/// 1700000000.5), marks the recipients at the indexes in `done` as finished, and returns
/// its queue id. Panics on any error: for tests only.
pub fn message(
    q: &Path,
    d: Dir,
    sender: &str,
    rcpts: &[&str],
    body: &[u8],
    done: &[usize],
) -> String {
    let id = QueueId::new().to_string();
    let path = q.join(d.file(&id));
    let mut w = Writer::create(&path, 1_700_000_000.5).expect("create");
    w.sender(sender).expect("sender");
    let mut offs = Vec::new();
    for r in rcpts {
        offs.push(
            w.recipient(&Recipient {
                address: r.to_string(),
                ..Default::default()
            })
            .expect("rcpt"),
        );
    }
    w.begin_content().expect("content");
    w.content(body).expect("content");
    w.finish(file::MODE_COMPLETE).expect("finish");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    for &i in done {
        file::mark_done(&f, offs[i]).expect("mark");
    }
    id
}
