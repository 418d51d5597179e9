//! One message on its way into `incoming/`: envelope checks, header rewriting, size limit.
//! No sockets here; the server feeds it frames, the commit pool makes it durable.

use petrel_ipc::Rcpt;
use petrel_message::cleanup::{qualify, rewrite, Context, Origin};
use petrel_queue::file::{self, Writer};
use petrel_queue::{Dir, QueueId};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// Parameters cleanup reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub myhostname: String,
    pub myorigin: String,
    pub size_limit: u64,
    pub header_limit: usize,
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub temporary: bool,
    pub dsn: &'static str,
    pub reason: String,
}

impl Failure {
    fn temp(reason: impl Into<String>) -> Failure {
        Failure {
            temporary: true,
            dsn: "4.3.0",
            reason: reason.into(),
        }
    }
    fn perm(dsn: &'static str, reason: impl Into<String>) -> Failure {
        Failure {
            temporary: false,
            dsn,
            reason: reason.into(),
        }
    }
}

/// A message whose bytes are all written; the commit pool finishes it.
pub struct Ready {
    pub id: QueueId,
    pub writer: Writer,
    /// The maildrop file to remove once the queue file is durable.
    pub maildrop: Option<String>,
    /// For the log line.
    pub summary: String,
}

/// A message being received.
pub struct Job {
    pub id: QueueId,
    path: String,
    writer: Option<Writer>,
    ctx_sender: String,
    rcpts: Vec<String>,
    origin: Origin,
    header: Vec<u8>,
    header_done: bool,
    size: u64,
    failure: Option<Failure>,
    maildrop: Option<String>,
    settings: Settings,
}

fn valid_address(a: &str) -> bool {
    a.len() <= 998 && !a.chars().any(|c| c.is_control())
}

fn origin_of(attrs: &[(String, String)]) -> Origin {
    let get = |n: &str| {
        attrs
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match get("protocol").as_str() {
        "local" => Origin::Local {
            uid: get("uid"),
            fullname: get("fullname"),
        },
        "" | "internal" => Origin::Internal,
        proto => Origin::Network {
            helo: get("helo"),
            client_name: {
                let n = get("client_name");
                if n.is_empty() {
                    "unknown".into()
                } else {
                    n
                }
            },
            client_addr: get("client_address"),
            protocol: proto.to_string(),
        },
    }
}

impl Job {
    /// Starts a message: checks the envelope and creates `incoming/ID` with it.
    pub fn begin(
        settings: &Settings,
        sender: &str,
        recipients: &[Rcpt],
        attrs: &[(String, String)],
        maildrop: Option<String>,
    ) -> Result<Job, Failure> {
        if !valid_address(sender) {
            return Err(Failure::perm("5.1.7", "bad sender address syntax"));
        }
        let sender = qualify(sender, &settings.myorigin);
        let mut seen = std::collections::HashSet::new();
        let mut rcpts: Vec<Rcpt> = Vec::new();
        for r in recipients {
            if r.address.is_empty() || !valid_address(&r.address) {
                return Err(Failure::perm(
                    "5.1.3",
                    format!("bad recipient address syntax: {:?}", r.address),
                ));
            }
            let q = qualify(&r.address, &settings.myorigin);
            if seen.insert(q.to_ascii_lowercase()) {
                rcpts.push(Rcpt {
                    address: q,
                    ..r.clone()
                });
            }
        }
        if rcpts.is_empty() {
            return Err(Failure::perm("5.1.3", "no recipients specified"));
        }
        let (id, path, mut writer) = create_queue_file()?;
        let io_fail = |e: io::Error| Failure::temp(format!("queue file write error: {e}"));
        let write_env = |w: &mut Writer| -> io::Result<()> {
            w.sender(&sender)?;
            for (k, v) in attrs {
                w.attr(k, v)?;
            }
            for r in &rcpts {
                w.recipient(&file::Recipient {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: r.notify.clone(),
                    ..Default::default()
                })?;
            }
            w.begin_content()
        };
        if let Err(e) = write_env(&mut writer) {
            let _ = std::fs::remove_file(&path);
            return Err(io_fail(e));
        }
        Ok(Job {
            id,
            path,
            writer: Some(writer),
            ctx_sender: sender,
            rcpts: rcpts.into_iter().map(|r| r.address).collect(),
            origin: origin_of(attrs),
            header: Vec::new(),
            header_done: false,
            size: 0,
            failure: None,
            maildrop,
            settings: settings.clone(),
        })
    }

    /// Takes message bytes (LF line ends).
    pub fn data(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        self.size += bytes.len() as u64;
        if self.settings.size_limit > 0 && self.size > self.settings.size_limit {
            self.failure = Some(Failure::perm("5.3.4", "message file too big"));
            return;
        }
        if self.header_done {
            self.write(bytes);
            return;
        }
        self.header.extend_from_slice(bytes);
        let end_seen =
            self.header.starts_with(b"\n") || self.header.windows(2).any(|w| w == b"\n\n");
        if end_seen || self.header.len() > self.settings.header_limit {
            self.flush_header();
        }
    }

    fn flush_header(&mut self) {
        let ctx = Context {
            queue_id: self.id.as_str(),
            now: petrel_queue::now() as i64,
            myhostname: &self.settings.myhostname,
            myorigin: &self.settings.myorigin,
            sender: &self.ctx_sender,
            recipients: &self.rcpts,
            origin: self.origin.clone(),
        };
        let out = rewrite(&ctx, &self.header);
        self.header = Vec::new();
        self.header_done = true;
        self.write(&out);
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.content(bytes) {
                self.failure = Some(if e.raw_os_error() == Some(libc::ENOSPC) {
                    Failure {
                        temporary: true,
                        dsn: "4.3.1",
                        reason: "insufficient system storage".into(),
                    }
                } else {
                    Failure::temp(format!("queue file write error: {e}"))
                });
            }
        }
    }

    /// The client says the message is complete.
    pub fn end(mut self) -> Result<Ready, Failure> {
        if !self.header_done && self.failure.is_none() {
            self.flush_header();
        }
        if let Some(f) = self.failure.take() {
            self.abort();
            return Err(f);
        }
        let summary = format!(
            "from=<{}>, size={}, nrcpt={}",
            self.ctx_sender,
            self.size,
            self.rcpts.len()
        );
        match self.writer.take() {
            Some(writer) => Ok(Ready {
                id: self.id.clone(),
                writer,
                maildrop: self.maildrop.take(),
                summary,
            }),
            None => Err(Failure::temp("internal error: no queue file")),
        }
    }

    /// Forgets the message and removes its file.
    pub fn abort(mut self) {
        self.writer.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn create_queue_file() -> Result<(QueueId, String, Writer), Failure> {
    for _ in 0..10 {
        let id = QueueId::new();
        let path = Dir::Incoming.file(id.as_str());
        match Writer::create(&path, petrel_queue::now()) {
            Ok(w) => return Ok((id, path, w)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(Failure {
                    temporary: true,
                    dsn: "4.3.1",
                    reason: "insufficient system storage".into(),
                })
            }
            Err(e) => return Err(Failure::temp(format!("cannot create queue file: {e}"))),
        }
    }
    Err(Failure::temp("cannot create a unique queue file"))
}

/// Reads a maildrop file and turns it into a ready message. A file that is not a valid
/// maildrop file is moved to corrupt/ (permanent failure).
pub fn from_maildrop(settings: &Settings, name: &str) -> Result<Ready, Failure> {
    if QueueId::parse(name).is_none() {
        return Err(Failure::perm(
            "5.3.0",
            format!("bad maildrop file name {name:?}"),
        ));
    }
    let path = Dir::Maildrop.file(name);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Failure::temp(format!("open {path}: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| Failure::temp(format!("stat {path}: {e}")))?;
    if !meta.is_file() {
        return Err(corrupt(name, "not a regular file"));
    }
    let env = match file::read_envelope(&mut f) {
        Ok(env) => env,
        Err(file::ReadError::Corrupt(why)) => return Err(corrupt(name, &why)),
        Err(file::ReadError::Io(e)) => return Err(Failure::temp(format!("read {path}: {e}"))),
    };
    let content =
        file::read_content(&f, &env).map_err(|e| Failure::temp(format!("read {path}: {e}")))?;
    drop::<File>(f);
    // The submitter is whoever owns the file (postdrop runs as the calling user); the
    // attribute is only a label and may not claim another uid.
    let mut attrs: Vec<(String, String)> = env
        .attrs
        .into_iter()
        .filter(|(k, _)| k != "uid" && k != "protocol")
        .collect();
    attrs.insert(0, ("uid".into(), meta.uid().to_string()));
    attrs.insert(0, ("protocol".into(), "local".into()));
    // Lets a restarted cleanup see that this maildrop file was already queued.
    attrs.push(("maildrop".into(), name.to_string()));
    let rcpts: Vec<Rcpt> = env
        .recipients
        .into_iter()
        .map(|r| Rcpt {
            address: r.address,
            orcpt: r.orcpt,
            notify: r.notify,
        })
        .collect();
    let mut job = match Job::begin(
        settings,
        &env.sender,
        &rcpts,
        &attrs,
        Some(name.to_string()),
    ) {
        Ok(j) => j,
        Err(f) if !f.temporary => return Err(corrupt(name, &f.reason)),
        Err(f) => return Err(f),
    };
    job.data(&content);
    match job.end() {
        // Refused for good (too large for today's message_size_limit): keep it, aside.
        Err(f) if !f.temporary => Err(corrupt(name, &f.reason)),
        other => other,
    }
}

fn corrupt(name: &str, why: &str) -> Failure {
    let from = Dir::Maildrop.file(name);
    let to = Dir::Corrupt.file(name);
    match std::fs::rename(&from, &to) {
        Ok(()) => log::warn!("{name}: maildrop file moved to corrupt/: {why}"),
        Err(e) => log::warn!("{name}: bad maildrop file ({why}); cannot move it to corrupt/: {e}"),
    }
    Failure::perm("5.3.0", format!("corrupt maildrop file: {why}"))
}

/// After a crash: a maildrop file whose message is already in the queue (cleanup died
/// between making the queue file durable and removing the maildrop file) is removed, so
/// pickup does not queue it twice. Looks at incoming/ and active/, where such a file can
/// be a moment after the crash. Returns how many were found.
pub fn recover_maildrop_duplicates() -> usize {
    let mut found = 0;
    for dir in [Dir::Incoming, Dir::Active] {
        let Ok(rd) = std::fs::read_dir(dir.name()) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if QueueId::parse(&name).is_none() {
                continue;
            }
            let path = dir.file(&name);
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            if !f.metadata().map(|m| file::is_complete(&m)).unwrap_or(false) {
                continue;
            }
            let Ok(env) = file::read_envelope(&mut f) else {
                continue;
            };
            let Some(md) = env.attr("maildrop").filter(|m| QueueId::parse(m).is_some()) else {
                continue;
            };
            let source = Dir::Maildrop.file(md);
            if std::fs::remove_file(&source).is_ok() {
                log::warn!(
                    "{name}: maildrop/{md} was already queued before a restart; removed the copy"
                );
                found += 1;
            }
        }
    }
    found
}
