//! Times `Store::folder` on a big, quiet Maildir++ folder (index and UID list written by an
//! earlier open, page cache warm, nothing changed on disk). Not a test: timings are printed,
//! never asserted.
//!
//! ```text
//! cargo run --release -p petrel-mailstore --example open_bench -- [N ...] [--no-cache] [--runs R]
//!     [--dir DIR]
//! ```
//!
//! For each N (default 10000 and 100000) it builds a folder of N messages in a temporary
//! directory, gives every message an ENVELOPE- and a BODYSTRUCTURE-sized cache blob (unless
//! `--no-cache`), lets the directories settle (their mtimes are moved 10 s into the past
//! instead of sleeping), opens the folder once more so the index can record that, then times
//! R opens (default 15) in this process, up to 9 opens that are the first thing a new
//! process does (no heap to reuse: every page is new), an open after another program's
//! rename in `cur/` (a full sync) and reading every message's ENVELOPE blob. With `--dir`, the
//! folder is built in `DIR/N` and kept, and a folder already there is used as it is (for a
//! profiler: the build does not get in the way).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use petrel_mailstore::Store;

fn backdate(root: &Path) {
    let when = SystemTime::now() - Duration::from_secs(10);
    for p in ["cur", "new", "dovecot-uidlist", "dovecot-keywords"] {
        if let Ok(f) = fs::File::open(root.join(p)) {
            let _ = f.set_modified(when);
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(n: usize, with_cache: bool, runs: usize, keep: Option<&Path>) {
    let t = tempfile::tempdir().unwrap();
    let root = match keep {
        Some(d) => d.join(n.to_string()),
        None => t.path().join("Maildir"),
    };
    let reuse = root.join("petrel-index").exists();
    let store = Store::open(&root).unwrap();
    let cur = root.join("cur");
    let body = b"From: a@example.org\nTo: b@example.org\nSubject: hello\n\nbody\n";
    let t0 = Instant::now();
    for i in (0..n).filter(|_| !reuse) {
        let flags = match i % 4 {
            0 => "",
            1 => "S",
            2 => "RS",
            _ => "FS",
        };
        let name = format!(
            "{}.M{}P{}Q{}.mail.example.org,S={},W={}:2,{flags}",
            1_700_000_000 + i / 10,
            (i * 7919) % 1_000_000,
            10_000 + i % 5000,
            i,
            body.len(),
            body.len() + 5
        );
        fs::write(cur.join(name), body).unwrap();
    }
    let build = t0.elapsed();
    let t0 = Instant::now();
    let mut f = store.folder("INBOX").unwrap();
    let first = t0.elapsed();
    assert_eq!(f.len(), n);
    if with_cache && !reuse {
        let env = vec![b'e'; 420];
        let bs = vec![b'b'; 260];
        let uids: Vec<u32> = f.messages().map(|m| m.uid).collect();
        for uid in uids {
            f.set_cache(uid, 1, &env).unwrap();
            f.set_cache(uid, 2, &bs).unwrap();
        }
    }
    drop(f);
    let size = fs::metadata(root.join("petrel-index"))
        .map(|m| m.len())
        .unwrap_or(0);
    backdate(&root);
    // This open may find the index's stamps missing or stale and rewrite it.
    drop(store.folder("INBOX").unwrap());
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let f = store.folder("INBOX").unwrap();
        times.push(t0.elapsed());
        assert_eq!(f.len(), n);
        drop(f);
    }
    let min = *times.iter().min().unwrap();
    let med = median(&mut times);
    // The same open as the first thing a new process does (nothing of the heap reused).
    let mut fresh = Vec::new();
    for _ in 0..runs.min(9) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--open-once")
            .arg(&root)
            .output()
            .unwrap();
        let nanos: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        fresh.push(Duration::from_nanos(nanos));
    }
    let fresh = median(&mut fresh);
    // A flag change by another program: the next open must re-scan.
    let victim = fs::read_dir(&cur)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(":2,"))
        .unwrap();
    fs::rename(cur.join(&victim), cur.join(format!("{victim}T"))).unwrap();
    let t0 = Instant::now();
    let f = store.folder("INBOX").unwrap();
    let rescan = t0.elapsed();
    assert!(f.messages().any(|m| m.flags.deleted));
    let fetched = if with_cache {
        let t0 = Instant::now();
        let mut total = 0usize;
        for m in f.messages() {
            total += f.cache(m.uid, 1).map_or(0, <[u8]>::len);
        }
        assert!(total <= 420 * n);
        Some(t0.elapsed())
    } else {
        None
    };
    drop(f);
    println!(
        "N={n} cache={with_cache}: build {build:.2?}, first open {first:.2?}, index {:.1} MB; \
         quiet open: median {med:.2?}, min {min:.2?} ({runs} runs), in a new process \
         {fresh:.2?}; open after a rename in cur/: {rescan:.2?}{}",
        size as f64 / 1e6,
        fetched.map_or(String::new(), |d| format!(
            "; all ENVELOPE blobs read: {d:.2?}"
        ))
    );
}

/// `--open-once ROOT`: opens INBOX once and prints the nanoseconds it took.
fn open_once(root: &Path) {
    println!("{}", common::timed_open(root).as_nanos());
}

fn main() {
    let mut sizes = Vec::new();
    let mut with_cache = true;
    let mut runs = 15;
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--no-cache" => with_cache = false,
            "--dir" => keep = args.next().map(std::path::PathBuf::from),
            "--open-once" => return open_once(Path::new(&args.next().unwrap())),
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()).unwrap_or(runs),
            n => sizes.push(n.parse::<usize>().expect("a message count")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000];
    }
    for n in sizes {
        run(n, with_cache, runs, keep.as_deref());
    }
}
