//! Times re-SELECTs of a big, unchanged folder that another program (Dovecot) also opens:
//! a `Folder` held open (as an imapd worker holds it) is synced, or the folder is opened
//! anew, after each of the other program's opens. Not a test: timings are printed, never
//! asserted.
//!
//! ```text
//! cargo run --release -p petrel-mailstore --example reselect_bench -- [N] [--rounds R]
//!     [--other dovecot|rewrite|none] [--fresh] [--settle-wait] [--full-scans K]
//! ```
//!
//! The folder (default 100000 messages, Dovecot-style names with `S=` and `W=`) is built in
//! a temporary directory. The other program is, with `--other dovecot` (the default when
//! `/usr/lib/dovecot/imap` is there), Dovecot's own `imap` binary run pre-authenticated
//! (`a SELECT INBOX`) from a throwaway config, as uid 65534 when run as root; with
//! `--other rewrite`, this program rewriting `dovecot-uidlist` with the same entries and
//! another header (`N`) and ext fields, as Dovecot may; `none` leaves the folder alone.
//!
//! The steps follow `bench/imap.py`'s big-folder test: the other program opens the folder,
//! then Petrel (its warm-up), then R rounds of Petrel and the other program in alternating
//! order. Petrel's time is `Folder::sync` of the held folder (a worker's re-SELECT), or with
//! `--fresh` `Store::folder` + drop in a new process (a new worker's SELECT). Each line
//! also shows which of the folder's stamped files the step changed. `--settle-wait` sleeps
//! 1.1 s before each step instead of letting the steps follow one another at once. Last, the
//! held folder is synced K times (default 5) after moving `cur/`'s mtime (nothing else
//! changed): the cost of a sync that must look at the directories.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use petrel_mailstore::uidlist::UidList;
use petrel_mailstore::{Folder, Store};

const WATCHED: [&str; 5] = [
    "new",
    "cur",
    "dovecot-uidlist",
    "dovecot-keywords",
    "petrel-index",
];

type Snap = Vec<Option<(u64, u64, i64, i64)>>;

fn snap(dir: &Path) -> Snap {
    WATCHED
        .iter()
        .map(|n| {
            fs::metadata(dir.join(n))
                .ok()
                .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn diff(a: &Snap, b: &Snap) -> String {
    let changed: Vec<&str> = WATCHED
        .iter()
        .zip(a.iter().zip(b))
        .filter(|(_, (x, y))| x != y)
        .map(|(n, _)| *n)
        .collect();
    if changed.is_empty() {
        "nothing".into()
    } else {
        changed.join(" ")
    }
}

/// Dovecot's `imap` run from a throwaway config (the one the tests use).
struct Dovecot {
    config: common::Dovecot,
    /// Whom to run it as (setpriv) when we are root: the mail user.
    uid: Option<u32>,
}

impl Dovecot {
    fn setup(base: &Path) -> Dovecot {
        let config = common::Dovecot::new(base); // gives `base` to the mail user
                                                 // SAFETY: geteuid cannot fail and touches no memory of ours.
        let root = unsafe { libc::geteuid() } == 0;
        Dovecot {
            uid: root.then_some(config.uid),
            config,
        }
    }

    /// `SELECT INBOX` in Dovecot's imap, pre-authenticated; the seconds Dovecot reports.
    fn select(&self) -> String {
        let mut c = match self.uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("/usr/lib/dovecot/imap");
                c
            }
            None => Command::new("/usr/lib/dovecot/imap"),
        };
        c.arg("-c").arg(&self.config.conf);
        c.env("USER", "petreltest").env("HOME", &self.config.home);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a SELECT INBOX\r\nb LOGOUT\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("a "))
            .unwrap_or("(no answer)");
        assert!(line.starts_with("a OK"), "dovecot: {text}");
        line.split('(')
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(')')
            .to_string()
    }
}

/// Rewrites `dovecot-uidlist` with the same entries, another `N` and added ext fields, as
/// Dovecot may.
fn rewrite_uidlist(dir: &Path, round: usize) {
    let mut l = UidList::load(dir).unwrap().unwrap();
    l.next_uid = l.next_uid.saturating_add(round as u32 % 2);
    for e in l.entries.iter_mut().take(1000) {
        e.ext = format!("G{:032x}", u128::from(e.uid) + round as u128);
    }
    let tmp = dir.join("dovecot-uidlist.tmp");
    fs::write(&tmp, l.to_text()).unwrap();
    fs::rename(&tmp, dir.join("dovecot-uidlist")).unwrap();
}

fn build(cur: &Path, n: usize) {
    let body = b"From: a@example.org\nTo: b@example.org\nSubject: hello\n\nbody\n";
    let t_end = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..n {
        let t = t_end - Duration::from_secs(60 * (n - i) as u64);
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let flags = if i % 10 == 0 {
            "FS"
        } else if i % 3 != 0 {
            "S"
        } else {
            ""
        };
        let name = format!(
            "{secs}.M{}P4242Q{i}.bench,S={},W={}:2,{flags}",
            i % 1_000_000,
            body.len(),
            body.len() + 5
        );
        let p = cur.join(name);
        fs::write(&p, body).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Other {
    Dovecot,
    Rewrite,
    Nothing,
}

fn main() {
    let mut n = 100_000usize;
    let mut rounds = 4usize;
    let mut other = if Path::new("/usr/lib/dovecot/imap").exists() {
        Other::Dovecot
    } else {
        Other::Rewrite
    };
    let mut fresh = false;
    let mut settle_wait = false;
    let mut full_scans = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--open-once" => return open_once(Path::new(&args.next().unwrap())),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--fresh" => fresh = true,
            "--settle-wait" => settle_wait = true,
            "--full-scans" => full_scans = args.next().unwrap().parse().unwrap(),
            "--other" => {
                other = match args.next().as_deref() {
                    Some("dovecot") => Other::Dovecot,
                    Some("rewrite") => Other::Rewrite,
                    Some("none") => Other::Nothing,
                    o => panic!("--other dovecot|rewrite|none, not {o:?}"),
                }
            }
            x => n = x.parse().expect("a message count"),
        }
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let maildir = base.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let t0 = Instant::now();
    build(&maildir.join("cur"), n);
    println!("N={n}: built in {:.2?}", t0.elapsed());
    let dove = (other == Other::Dovecot).then(|| Dovecot::setup(base));
    let store = Store::open(&maildir).unwrap();
    if other == Other::Rewrite {
        // The UID list exists before Petrel opens the folder, as when Dovecot made it.
        drop(store.folder("INBOX").unwrap());
        fs::remove_file(maildir.join("petrel-index")).unwrap();
    }
    let mut last = snap(&maildir);
    let mut step = |what: &str, f: &mut dyn FnMut() -> String| {
        if settle_wait {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let t0 = Instant::now();
        let note = f();
        let took = t0.elapsed();
        let now = snap(&maildir);
        println!(
            "  {what:<28} {:>9.2?}  changed: {}{}",
            took,
            diff(&last, &now),
            if note.is_empty() {
                String::new()
            } else {
                format!("  ({note})")
            }
        );
        last = now;
    };
    let mut round_no = 0usize;
    let mut other_step = |step: &mut dyn FnMut(&str, &mut dyn FnMut() -> String)| {
        round_no += 1;
        match other {
            Other::Dovecot => {
                let d = dove.as_ref().unwrap();
                step("dovecot SELECT", &mut || format!("dovecot: {}", d.select()));
            }
            Other::Rewrite => step("uidlist rewritten", &mut || {
                rewrite_uidlist(&maildir, round_no);
                String::new()
            }),
            Other::Nothing => {}
        }
    };
    other_step(&mut step);
    let mut held: Option<Folder> = None;
    let mut petrel = |what: &str, step: &mut dyn FnMut(&str, &mut dyn FnMut() -> String)| {
        if fresh {
            step(what, &mut || {
                let out = Command::new(std::env::current_exe().unwrap())
                    .arg("--open-once")
                    .arg(&maildir)
                    .output()
                    .unwrap();
                format!(
                    "open in a new process {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                )
            });
        } else if let Some(f) = held.as_mut() {
            step(what, &mut || {
                let ch = f.sync().unwrap();
                assert!(ch.new.is_empty() && ch.expunged.is_empty() && ch.flags.is_empty());
                assert!(!ch.uidvalidity_changed);
                "sync of the held folder".into()
            });
        } else {
            step(what, &mut || {
                held = Some(store.folder("INBOX").unwrap());
                "open".into()
            });
        }
    };
    petrel("petrel warm-up", &mut step);
    if let Some(d) = &dove {
        step("chown -R", &mut || {
            d.config.chown(&maildir);
            String::new()
        });
    }
    for r in 0..rounds {
        if r % 2 == 0 {
            petrel(&format!("petrel round {r}"), &mut step);
            other_step(&mut step);
        } else {
            other_step(&mut step);
            petrel(&format!("petrel round {r}"), &mut step);
        }
    }
    for r in rounds..rounds + 2 {
        petrel(&format!("petrel alone {r}"), &mut step);
    }
    if let Some(f) = held.as_mut() {
        assert_eq!(f.len(), n);
        // What a sync costs when it must look (cur/'s mtime moved, nothing else changed):
        // the price of every sync within a second of a change.
        let mut times = Vec::new();
        for k in 0..full_scans {
            let when = SystemTime::now() - Duration::from_secs(20 + k as u64);
            fs::File::open(maildir.join("cur"))
                .unwrap()
                .set_modified(when)
                .unwrap();
            let t0 = Instant::now();
            let ch = f.sync().unwrap();
            times.push(t0.elapsed());
            assert!(ch.new.is_empty() && ch.flags.is_empty() && ch.expunged.is_empty());
        }
        if !times.is_empty() {
            times.sort();
            println!(
                "  full sync of the unchanged folder (cur/ mtime moved): median {:.2?}, min {:.2?} ({} runs)",
                times[times.len() / 2],
                times[0],
                times.len()
            );
        }
    }
}

/// `--open-once ROOT`: opens INBOX once, drops it and prints how long the open took.
fn open_once(root: &Path) {
    println!("{:.2?}", common::timed_open(root));
}
