//! Carrying out one delivery request: for each recipient, resolve it and write every copy.

use crate::privs;
use crate::resolve::{self, AliasCache, Final, Problem, Settings, UserKey};
use petrel_ipc::delivery::{Outcome, Reply, Request, Status};
use petrel_ipc::{cleanup, Incoming, Rcpt};
use petrel_mailbox::{deliver_maildir, deliver_mbox, LockPolicy, MaildirOutcome};
use petrel_message::HeaderBlock;
use petrel_queue::file;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything local needs across requests.
pub struct Agent {
    pub s: Settings,
    pub cache: AliasCache,
    pub home_mailbox: String,
    pub mail_spool: PathBuf,
    pub hopcount_limit: usize,
    pub command_time_limit: Duration,
}

/// The message being delivered.
struct Msg<'a> {
    id: &'a str,
    sender: &'a str,
    arrival: f64,
    content: &'a [u8],
    received: usize,
    delivered_to: HashSet<String>,
}

/// How one copy went.
enum Copy {
    Sent(String),
    Deferred(&'static str, String),
    Bounced(&'static str, String),
}

impl Agent {
    /// Delivers every recipient of `req`; one outcome each.
    pub fn handle(&mut self, req: &Request) -> Reply {
        let loaded = std::fs::File::open(&req.path).and_then(|mut f| {
            let env =
                file::read_envelope(&mut f).map_err(|e| std::io::Error::other(e.to_string()))?;
            let content = file::read_content(&f, &env)?;
            Ok(content)
        });
        let content = match loaded {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("cannot read queue file {}: {e}", req.path);
                log::warn!("{}: {reason}", req.queue_id);
                return Reply {
                    outcomes: req
                        .recipients
                        .iter()
                        .map(|r| Outcome {
                            index: r.index,
                            status: Status::Deferred,
                            dsn: "4.3.0".into(),
                            reason: reason.clone(),
                            dsn_passed_on: false,
                        })
                        .collect(),
                };
            }
        };
        let hb = HeaderBlock::scan(&content);
        let msg = Msg {
            id: &req.queue_id,
            sender: &req.sender,
            arrival: req.arrival,
            content: &content,
            received: hb.count("received"),
            delivered_to: hb
                .values(&content, "delivered-to")
                .map(|v| v.to_ascii_lowercase())
                .collect(),
        };
        let outcomes = req
            .recipients
            .iter()
            .map(|r| self.recipient(&msg, r.index, &r.address))
            .collect();
        Reply { outcomes }
    }

    fn recipient(&mut self, m: &Msg<'_>, index: u32, rcpt: &str) -> Outcome {
        let result = if m.received > self.hopcount_limit {
            Err(Problem::Bounce(
                "5.4.6",
                format!("too many hops ({} Received headers)", m.received),
            ))
        } else {
            resolve::resolve(rcpt, &self.s, &mut self.cache)
        };
        let finals = match result {
            Ok(f) => f,
            Err(p) => {
                let (status, dsn, reason) = match p {
                    Problem::Bounce(d, r) => (Status::Bounced, d, r),
                    Problem::Defer(d, r) => (Status::Deferred, d, r),
                };
                self.log(m, rcpt, None, dsn, status, &reason);
                return Outcome {
                    index,
                    status,
                    dsn: dsn.into(),
                    reason,
                    dsn_passed_on: false,
                };
            }
        };
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| self.s.myorigin.clone());
        let mut remote = Vec::new();
        let mut worst: Option<(Status, &'static str, String)> = None;
        for f in finals {
            let (to, copy) = match f {
                Final::Remote(a) => {
                    remote.push(a);
                    continue;
                }
                Final::Discard => (rcpt.to_string(), Copy::Sent("discarded".into())),
                Final::Mailbox(u) => {
                    let to = format!("{}@{domain}", u.name);
                    let copy = self.mailbox(m, index, &to, &u);
                    (to, copy)
                }
                Final::File { path, uid, gid } => {
                    let to = path.display().to_string();
                    let copy = self.file(m, index, rcpt, &path, uid, gid);
                    (to, copy)
                }
                Final::Command {
                    command,
                    uid,
                    gid,
                    home,
                    user,
                } => {
                    let to = format!("\"|{command}\"");
                    let copy = self.command(m, rcpt, &command, uid, gid, &home, &user);
                    (to, copy)
                }
            };
            let orig = (to != rcpt).then_some(rcpt);
            match copy {
                Copy::Sent(how) => self.log(m, &to, orig, "2.0.0", Status::Sent, &how),
                Copy::Deferred(d, r) => {
                    self.log(m, &to, orig, d, Status::Deferred, &r);
                    worst = Some((Status::Deferred, d, r));
                }
                Copy::Bounced(d, r) => {
                    self.log(m, &to, orig, d, Status::Bounced, &r);
                    if !matches!(worst, Some((Status::Deferred, ..))) {
                        worst = Some((Status::Bounced, d, r));
                    }
                }
            }
        }
        if !remote.is_empty() {
            match forward(m, rcpt, &remote) {
                Ok(id) => {
                    for a in &remote {
                        self.log(
                            m,
                            a,
                            Some(rcpt),
                            "2.0.0",
                            Status::Sent,
                            &format!("forwarded as {id}"),
                        );
                    }
                }
                Err(e) => {
                    for a in &remote {
                        self.log(m, a, Some(rcpt), "4.3.0", Status::Deferred, &e);
                    }
                    worst = Some((Status::Deferred, "4.3.0", e));
                }
            }
        }
        match worst {
            None => Outcome {
                index,
                status: Status::Sent,
                dsn: "2.0.0".into(),
                reason: "delivered".into(),
                dsn_passed_on: false,
            },
            Some((status, dsn, reason)) => Outcome {
                index,
                status,
                dsn: dsn.into(),
                reason,
                dsn_passed_on: false,
            },
        }
    }

    fn log(
        &self,
        m: &Msg<'_>,
        to: &str,
        orig: Option<&str>,
        dsn: &str,
        status: Status,
        reason: &str,
    ) {
        let delay = (petrel_queue::now() - m.arrival).max(0.0);
        let status = match status {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        };
        let orig = orig.map(|o| format!(" orig_to=<{o}>,")).unwrap_or_default();
        log::info!(
            "{}: to=<{to}>,{orig} relay=local, delay={delay:.2}, dsn={dsn}, status={status} ({reason})",
            m.id
        );
    }

    fn prefix(m: &Msg<'_>, delivered_to: &str) -> String {
        format!(
            "Return-Path: <{}>\nDelivered-To: {delivered_to}\n",
            m.sender
        )
    }

    fn mailbox(&mut self, m: &Msg<'_>, index: u32, to: &str, u: &UserKey) -> Copy {
        if m.delivered_to.contains(&to.to_ascii_lowercase()) {
            return Copy::Bounced("5.4.6", format!("mail forwarding loop for {to}"));
        }
        let prefix = Self::prefix(m, to);
        let parts: [&[u8]; 2] = [prefix.as_bytes(), m.content];
        let key = format!("{}.R{index}", m.id);
        if self.home_mailbox.ends_with('/') {
            let dir = u.home.join(&self.home_mailbox);
            if !u.home.is_dir() {
                return Copy::Deferred(
                    "4.2.0",
                    format!("home directory {} is missing", u.home.display()),
                );
            }
            let r = privs::as_user(u.uid, u.gid, || {
                deliver_maildir(&dir, &key, m.arrival as u64, &parts)
            });
            match r {
                Ok(MaildirOutcome::Delivered(_)) => Copy::Sent("delivered to maildir".into()),
                Ok(MaildirOutcome::AlreadyDelivered(_)) => {
                    Copy::Sent("delivered to maildir by an earlier attempt".into())
                }
                Err(e) => Copy::Deferred(
                    "4.2.0",
                    format!("cannot update maildir {}: {e}", dir.display()),
                ),
            }
        } else {
            let path = if self.home_mailbox.is_empty() {
                self.mail_spool.join(&u.name)
            } else {
                u.home.join(&self.home_mailbox)
            };
            if let Err(e) = precreate(&path, u.uid, u.gid) {
                return Copy::Deferred(
                    "4.2.0",
                    format!("cannot create mailbox {}: {e}", path.display()),
                );
            }
            let lock = LockPolicy::default();
            let r = privs::as_user(u.uid, u.gid, || {
                deliver_mbox(&path, m.sender, m.arrival as i64, &parts, &lock)
            });
            match r {
                Ok(()) => Copy::Sent("delivered to mailbox".into()),
                Err(e) => Copy::Deferred(
                    "4.2.0",
                    format!("cannot update mailbox {}: {e}", path.display()),
                ),
            }
        }
    }

    fn file(
        &mut self,
        m: &Msg<'_>,
        index: u32,
        rcpt: &str,
        path: &Path,
        uid: u32,
        gid: u32,
    ) -> Copy {
        let prefix = Self::prefix(m, rcpt);
        let parts: [&[u8]; 2] = [prefix.as_bytes(), m.content];
        let text = path.to_string_lossy();
        let r = if text.ends_with('/') {
            let key = format!("{}.R{index}", m.id);
            privs::as_user(uid, gid, || {
                deliver_maildir(path, &key, m.arrival as u64, &parts).map(|_| ())
            })
        } else {
            let lock = LockPolicy::default();
            privs::as_user(uid, gid, || {
                deliver_mbox(path, m.sender, m.arrival as i64, &parts, &lock)
            })
        };
        match r {
            Ok(()) => Copy::Sent("delivered to file".into()),
            Err(e) => Copy::Deferred("4.2.0", format!("cannot append to file {text}: {e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &mut self,
        m: &Msg<'_>,
        rcpt: &str,
        command: &str,
        uid: u32,
        gid: u32,
        home: &Path,
        user: &str,
    ) -> Copy {
        let prefix = Self::prefix(m, rcpt);
        let mut input = prefix.into_bytes();
        input.extend_from_slice(m.content);
        let (local, domain) = rcpt.rsplit_once('@').unwrap_or((rcpt, ""));
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SHELL", "/bin/sh")
            .env("HOME", home)
            .env("USER", user)
            .env("LOGNAME", user)
            .env("SENDER", m.sender)
            .env("RECIPIENT", rcpt)
            .env("LOCAL", local)
            .env("DOMAIN", domain)
            .current_dir(if home.is_dir() { home } else { Path::new("/") })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if privs::can_switch() {
            cmd.uid(uid).gid(gid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Copy::Deferred("4.3.0", format!("cannot run command: {e}")),
        };
        let stdin = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                let _ = s.write_all(&input);
            }
        });
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.take(4096).read_to_end(&mut text);
            }
            if let Some(e) = err.as_mut() {
                let _ = e.take(4096).read_to_end(&mut text);
            }
            text
        });
        let deadline = Instant::now() + self.command_time_limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        let _ = writer.join();
        let output = reader.join().unwrap_or_default();
        let said = String::from_utf8_lossy(&output)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let said: String = said.chars().take(200).collect();
        match status.and_then(|s| s.code()) {
            Some(0) => Copy::Sent(format!("delivered to command: {command}")),
            Some(75) => Copy::Deferred(
                "4.3.0",
                format!("temporary failure. Command output: {said}"),
            ),
            Some(code) => Copy::Bounced(
                "5.3.0",
                format!("Command died with status {code}: \"{command}\". Command output: {said}"),
            ),
            None if Instant::now() > deadline => {
                Copy::Deferred("4.3.0", "command time limit exceeded".into())
            }
            None => Copy::Bounced(
                "5.3.0",
                format!("Command killed by a signal: \"{command}\""),
            ),
        }
    }
}

/// Creates a missing mbox as root and gives it to the user (the spool directory is often
/// not writable by users).
fn precreate(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    if !privs::can_switch() || path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Queues a copy for the remote addresses an alias or .forward named, with the original
/// sender and a Delivered-To header for loop detection.
fn forward(m: &Msg<'_>, rcpt: &str, to: &[String]) -> Result<String, String> {
    let mut s = petrel_daemon::connect("private/cleanup", Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("forward through cleanup: {e}");
    let begin = cleanup::Request::Begin {
        sender: m.sender.to_string(),
        recipients: to
            .iter()
            .map(|a| Rcpt {
                address: a.clone(),
                ..Default::default()
            })
            .collect(),
        attrs: vec![("protocol".into(), "internal".into())],
    };
    petrel_ipc::write_frame(&mut s, &begin).map_err(io)?;
    let header = format!("Delivered-To: {rcpt}\n");
    petrel_ipc::write_frame(&mut s, &cleanup::Request::Data(header.into_bytes())).map_err(io)?;
    for chunk in m.content.chunks(petrel_ipc::CHUNK) {
        petrel_ipc::write_frame(&mut s, &cleanup::Request::Data(chunk.to_vec())).map_err(io)?;
    }
    petrel_ipc::write_frame(&mut s, &cleanup::Request::End).map_err(io)?;
    match petrel_ipc::read_frame::<cleanup::Reply>(&mut s).map_err(io)? {
        Some(Incoming::Msg(cleanup::Reply::Queued { id })) => Ok(id),
        Some(Incoming::Msg(cleanup::Reply::Failed { dsn, reason, .. })) => {
            Err(format!("{dsn} {reason}"))
        }
        _ => Err("cleanup closed the connection".into()),
    }
}
