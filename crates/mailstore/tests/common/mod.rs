//! Helpers shared by the mail store's tests (`mod common;`) and its examples
//! (`#[path = "../tests/common/mod.rs"] mod common;`).
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use petrel_mailbox::deliver_maildir;
use petrel_mailstore::{FlagSet, Store};
use tempfile::TempDir;

/// Delivers `n` messages to `root/new`, with keys from `first_key` on.
pub fn deliver(root: &Path, n: usize, first_key: usize) {
    for i in first_key..first_key + n {
        let body = format!("Subject: m{i}\n\nbody {i}\n");
        deliver_maildir(
            root,
            &format!("Q{i:05}.R0"),
            1000 + i as u64,
            &[body.as_bytes()],
        )
        .unwrap();
    }
}

pub fn flags(names: &[&str]) -> FlagSet {
    FlagSet::from_imap(names.iter().copied())
}

/// The files in `dir/cur`, sorted.
pub fn cur_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A throwaway Dovecot configuration in `base`: the Maildir `base/Maildir`, the home
/// `base/home` (made here), the config `base/dovecot.conf` (written here); all of `base`
/// is given to the mail user.
pub struct Dovecot {
    pub maildir: PathBuf,
    pub home: PathBuf,
    pub conf: PathBuf,
    /// Who Dovecot gives mail access to: we, or nobody (65534) when we are root, as
    /// Dovecot refuses mail access as root; the directories must then be theirs.
    pub uid: u32,
    pub gid: u32,
}

impl Dovecot {
    pub fn new(base: &Path) -> Dovecot {
        let maildir = base.join("Maildir");
        let home = base.join("home");
        fs::create_dir_all(&home).unwrap();
        // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        let conf = base.join("dovecot.conf");
        fs::write(
            &conf,
            format!(
                "base_dir = {b}/run\nlog_path = {b}/log\nssl = no\n\
                 mail_location = maildir:{m}\nmail_uid = {uid}\nmail_gid = {gid}\n\
                 first_valid_uid = 0\nfirst_valid_gid = 0\n\
                 namespace inbox {{\n  inbox = yes\n}}\n\
                 passdb {{\n  driver = static\n  args = password=x\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={h}\n}}\n",
                b = base.display(),
                m = maildir.display(),
                h = home.display(),
            ),
        )
        .unwrap();
        let d = Dovecot {
            maildir,
            home,
            conf,
            uid,
            gid,
        };
        d.chown(base);
        d
    }

    /// Gives everything under `path` to the mail user (`chown -R`) when that is not us.
    pub fn chown(&self, path: &Path) {
        if self.uid == 65534 {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success(), "chown -R {}", path.display());
        }
    }

    /// `doveadm flags add FLAGS mailbox MAILBOX uid UID`.
    pub fn add_flags(&self, mailbox: &str, uid: u32, flags: &str) -> Option<String> {
        let uid = uid.to_string();
        self.doveadm(
            &["flags", "add", flags, "mailbox", mailbox, "uid", &uid],
            None,
        )
    }

    /// Runs doveadm with this config; `None` when it could not be run at all.
    pub fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> Option<String> {
        let mut c = Command::new("doveadm");
        c.arg("-c").arg(&self.conf).args(args);
        c.env("USER", "petreltest").env("HOME", &self.home);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().ok()?;
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            eprintln!(
                "doveadm {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A new temporary directory (dropped, it goes) with a Maildir `Maildir` in it, `n`
/// messages delivered to it (keys from 1 on), opened as a store.
pub fn delivered(n: usize) -> (TempDir, PathBuf, Store) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    deliver(&root, n, 1);
    let store = Store::open(&root).unwrap();
    (t, root, store)
}

/// Opens INBOX of the store at `root` once (the benches' `--open-once`): how long the
/// open took.
pub fn timed_open(root: &Path) -> Duration {
    let store = Store::open(root).unwrap();
    let t0 = Instant::now();
    let f = store.folder("INBOX").unwrap();
    let took = t0.elapsed();
    assert!(!f.is_empty());
    took
}
