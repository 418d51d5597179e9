//! One pass over `maildrop/`: every complete file is handed to cleanup, oldest first.
//!
//! ```text
//! pickup → cleanup   Request::Maildrop { name }        (one at a time per connection; up
//!                                                      to PARALLEL connections, so that
//!                                                      cleanup's group commit can batch
//!                                                      the fsyncs of a backlog)
//! cleanup → pickup   Reply::Queued { id }              cleanup wrote the queue file and
//!                                                      removed maildrop/NAME
//!                    Reply::Failed { temporary, .. }   temporary: the file stays, retried
//!                                                      at the next scan; permanent:
//!                                                      cleanup moved it to corrupt/
//! ```
//!
//! A file is complete when postdrop has given it its final mode (group and other read
//! bits, `MODE_MAILDROP_COMPLETE`). An incomplete file is being written, or postdrop died:
//! after a day it is moved to `corrupt/`. So is anything that postdrop would not have
//! written (a name that is not a queue id, something that is not a regular file). pickup
//! never deletes a file.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use petrel_ipc::cleanup::{Reply, Request};
use petrel_ipc::Incoming;
use petrel_queue::QueueId;

/// Read bits postdrop sets when a file is complete.
const COMPLETE_BITS: u32 = 0o044;
/// How long an incomplete file may stay before it is moved to corrupt/.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Time limit for every read and write on the cleanup connection.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How many files are handed to cleanup at once (each on its own connection, by its own
/// thread), when there are that many waiting.
const PARALLEL: usize = 8;

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Files cleanup queued.
    pub queued: usize,
    /// Files cleanup could not take now (left for the next scan).
    pub deferred: usize,
    /// Files moved to corrupt/ (by pickup or by cleanup).
    pub corrupt: usize,
    /// cleanup could not be reached: files were left for a retry soon.
    pub cleanup_down: bool,
}

/// pickup's state between scans: where the spool is and the cleanup connection.
pub struct Pickup {
    root: PathBuf,
    cleanup: String,
    /// Idle connections to cleanup, kept between scans; a file is handed over on any idle
    /// one, and a new one is opened only when all are busy.
    idle: Mutex<Vec<UnixStream>>,
}

impl Pickup {
    /// A pickup for the spool at `root` (`.` in the daemon, which runs in the spool).
    pub fn new(root: &Path) -> Pickup {
        let cleanup = if root == Path::new(".") {
            "private/cleanup".to_string()
        } else {
            root.join("private/cleanup").display().to_string()
        };
        Pickup {
            root: root.to_path_buf(),
            cleanup,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Closes the cleanup connection (when idle; the next scan reconnects).
    pub fn disconnect(&mut self) {
        self.idle_conns().clear();
    }

    fn maildrop(&self, name: &OsStr) -> PathBuf {
        self.root.join("maildrop").join(name)
    }

    /// Scans maildrop/ once.
    pub fn scan(&mut self) -> Report {
        let mut report = Report::default();
        let dir = self.root.join("maildrop");
        let mut names: Vec<OsString> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
            Err(e) => {
                log::warn!("scan {}: {e}", dir.display());
                return report;
            }
        };
        names.sort();
        // A backlog goes over several connections at once (oldest files first); a worker
        // that finds cleanup down stops all of them.
        let workers = names.len().clamp(1, PARALLEL);
        let next = AtomicUsize::new(0);
        let down = AtomicBool::new(false);
        let reports: Vec<Report> = if workers == 1 {
            vec![self.work(&names, &next, &down)]
        } else {
            let this = &*self;
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| sc.spawn(|| this.work(&names, &next, &down)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        for r in reports {
            report.queued += r.queued;
            report.deferred += r.deferred;
            report.corrupt += r.corrupt;
            report.cleanup_down |= r.cleanup_down;
        }
        report
    }

    fn idle_conns(&self) -> std::sync::MutexGuard<'_, Vec<UnixStream>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker: takes the next file until none is left, each on an idle connection
    /// (or a new one), which goes back to the idle ones afterwards.
    fn work(&self, names: &[OsString], next: &AtomicUsize, down: &AtomicBool) -> Report {
        let mut r = Report::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(name) = names.get(i) else { break };
            if down.load(Ordering::Relaxed) {
                r.cleanup_down = true;
                break;
            }
            let mut conn = self.idle_conns().pop();
            self.one(&mut conn, name, &mut r);
            if let Some(c) = conn {
                self.idle_conns().push(c);
            }
            if r.cleanup_down {
                down.store(true, Ordering::Relaxed);
            }
        }
        r
    }

    fn one(&self, conn: &mut Option<UnixStream>, os_name: &OsStr, report: &mut Report) {
        let path = self.maildrop(os_name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                log::warn!("{}: {e}", path.display());
                return;
            }
        };
        let Some(name) = os_name.to_str().filter(|n| QueueId::parse(n).is_some()) else {
            self.quarantine(os_name, "not a queue file name");
            report.corrupt += 1;
            return;
        };
        if !meta.file_type().is_file() {
            self.quarantine(os_name, "not a regular file");
            report.corrupt += 1;
            return;
        }
        if meta.permissions().mode() & COMPLETE_BITS != COMPLETE_BITS {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age > STALE_AFTER {
                self.quarantine(os_name, "incomplete for more than a day");
                report.corrupt += 1;
            }
            return;
        }
        if report.cleanup_down {
            return;
        }
        match self.submit(conn, name) {
            Ok(None) => {}
            Ok(Some(Reply::Queued { .. })) => report.queued += 1,
            Ok(Some(Reply::Failed {
                temporary: true,
                dsn,
                reason,
            })) => {
                log::info!(
                    "maildrop/{name}: cleanup cannot take it now ({dsn} {reason}); will retry"
                );
                report.deferred += 1;
            }
            Ok(Some(Reply::Failed {
                temporary: false,
                dsn,
                reason,
            })) => {
                log::warn!("maildrop/{name}: rejected by cleanup ({dsn} {reason}); cleanup moved it to corrupt/");
                report.corrupt += 1;
            }
            Err(e) => {
                log::warn!("{e}");
                report.cleanup_down = true;
            }
        }
    }

    /// Hands one file to cleanup. `Ok(None)`: the file went away meanwhile (taken by a
    /// request whose reply was lost). A connection that fails is replaced once, so a
    /// connection cleanup closed while idle costs nothing.
    fn submit(&self, slot: &mut Option<UnixStream>, name: &str) -> io::Result<Option<Reply>> {
        let mut last = None;
        for _ in 0..2 {
            let fresh = slot.is_none();
            let conn = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(petrel_daemon::connect(&self.cleanup, CLEANUP_TIMEOUT)?),
            };
            match exchange(conn, name) {
                Ok(r) => return Ok(Some(r)),
                Err(e) => {
                    *slot = None;
                    if !self.maildrop(OsStr::new(name)).exists() {
                        return Ok(None);
                    }
                    last = Some(io::Error::new(e.kind(), format!("{}: {e}", self.cleanup)));
                    if fresh {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
    }

    /// Moves `maildrop/NAME` to `corrupt/` (under a new name if that one is taken).
    fn quarantine(&self, name: &OsStr, why: &str) {
        let from = self.maildrop(name);
        let corrupt = self.root.join("corrupt");
        let mut to_name = name.to_os_string();
        let mut n = 0;
        while corrupt.join(&to_name).symlink_metadata().is_ok() {
            n += 1;
            to_name = name.to_os_string();
            to_name.push(format!(".{n}"));
        }
        let to = corrupt.join(&to_name);
        let shown = Path::new("maildrop").join(name);
        let moved =
            std::fs::rename(&from, &to).and_then(|()| petrel_queue::spool::fsync_dir(&corrupt));
        match moved {
            Ok(()) => log::warn!(
                "{}: {why}; moved to corrupt/{}",
                shown.display(),
                Path::new(&to_name).display()
            ),
            Err(e) => log::warn!(
                "{}: {why}; cannot move it to corrupt/: {e}",
                shown.display()
            ),
        }
    }
}

/// One request and its reply.
fn exchange(conn: &mut UnixStream, name: &str) -> io::Result<Reply> {
    petrel_ipc::write_frame(
        conn,
        &Request::Maildrop {
            name: name.to_string(),
        },
    )?;
    match petrel_ipc::read_frame::<Reply>(conn)? {
        Some(Incoming::Msg(r)) => Ok(r),
        Some(Incoming::Trigger) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected trigger frame from cleanup",
        )),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "cleanup closed the connection",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn spool() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        petrel_queue::spool::create(d.path(), None).unwrap();
        d
    }

    fn drop_file(root: &Path, name: &str, mode: u32) -> PathBuf {
        let p = root.join("maildrop").join(name);
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[derive(Clone, Default)]
    struct Seen {
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    /// A cleanup stand-in serving each connection on its own thread, as cleanup's event
    /// loop serves them side by side: answers each request with `answer(root, name)`;
    /// with `one_per_connection`, it closes every connection after one reply.
    fn fake_cleanup(
        root: &Path,
        one_per_connection: bool,
        answer: impl Fn(&Path, &str) -> Reply + Send + Sync + 'static,
    ) -> Seen {
        let answer = Arc::new(answer);
        let listener = UnixListener::bind(root.join("private/cleanup")).unwrap();
        let seen = Seen::default();
        let s = seen.clone();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, root, answer) = (s.clone(), root.clone(), answer.clone());
                std::thread::spawn(move || {
                    while let Ok(Some(Incoming::Msg(Request::Maildrop { name }))) =
                        petrel_ipc::read_frame::<Request>(&mut conn)
                    {
                        s.requests.lock().unwrap().push(name.clone());
                        let reply = answer(&root, &name);
                        petrel_ipc::write_frame(&mut conn, &reply).unwrap();
                        if one_per_connection {
                            break;
                        }
                    }
                });
            }
        });
        seen
    }

    fn queue_it(root: &Path, name: &str) -> Reply {
        std::fs::remove_file(root.join("maildrop").join(name)).unwrap();
        Reply::Queued {
            id: name.to_string(),
        }
    }

    fn ids(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|_| QueueId::new().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn complete_files_go_to_cleanup_and_connections_are_kept() {
        let d = spool();
        let ids = ids(3);
        for id in ids.iter().rev() {
            drop_file(d.path(), id, 0o644);
        }
        let young = QueueId::new().to_string();
        drop_file(d.path(), &young, 0o600);
        let seen = fake_cleanup(d.path(), false, queue_it);
        let mut p = Pickup::new(d.path());
        let r = p.scan();
        assert_eq!(
            r,
            Report {
                queued: 3,
                ..Default::default()
            }
        );
        // Handed out oldest first, several at a time (one connection each).
        let mut got = seen.requests.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, ids);
        let opened = seen.connections.load(Ordering::SeqCst);
        assert!((1..=3).contains(&opened), "{opened} connections");
        assert!(
            d.path().join("maildrop").join(&young).exists(),
            "incomplete, young: left alone"
        );
        // The next scan reuses a connection.
        drop_file(d.path(), &QueueId::new().to_string(), 0o644);
        assert_eq!(p.scan().queued, 1);
        assert_eq!(seen.connections.load(Ordering::SeqCst), opened);
    }

    #[test]
    fn a_connection_closed_by_cleanup_is_replaced() {
        let d = spool();
        for id in ids(3) {
            drop_file(d.path(), &id, 0o644);
        }
        let seen = fake_cleanup(d.path(), true, queue_it);
        let mut p = Pickup::new(d.path());
        assert_eq!(p.scan().queued, 3);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn failures_temporary_and_permanent() {
        let d = spool();
        let ids = ids(2);
        for id in &ids {
            drop_file(d.path(), id, 0o644);
        }
        let first = ids[0].clone();
        fake_cleanup(d.path(), false, move |root, name| {
            if name == first {
                Reply::Failed {
                    temporary: true,
                    dsn: "4.3.0".into(),
                    reason: "busy".into(),
                }
            } else {
                let from = root.join("maildrop").join(name);
                std::fs::rename(from, root.join("corrupt").join(name)).unwrap();
                Reply::Failed {
                    temporary: false,
                    dsn: "5.6.0".into(),
                    reason: "bad".into(),
                }
            }
        });
        let r = Pickup::new(d.path()).scan();
        assert_eq!(
            r,
            Report {
                deferred: 1,
                corrupt: 1,
                ..Default::default()
            }
        );
        assert!(
            d.path().join("maildrop").join(&ids[0]).exists(),
            "temporary: left for later"
        );
    }

    #[test]
    fn cleanup_down_leaves_everything() {
        let d = spool();
        for id in ids(2) {
            drop_file(d.path(), &id, 0o644);
        }
        let r = Pickup::new(d.path()).scan();
        assert!(r.cleanup_down);
        assert_eq!(r.queued + r.corrupt, 0);
        assert_eq!(
            std::fs::read_dir(d.path().join("maildrop"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn strays_and_stale_files_go_to_corrupt_never_away() {
        let d = spool();
        let stale = QueueId::new().to_string();
        let p = drop_file(d.path(), &stale, 0o600);
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop_file(d.path(), "junk", 0o644);
        std::fs::write(d.path().join("corrupt/junk"), b"earlier").unwrap();
        let link = QueueId::new().to_string();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("maildrop").join(&link)).unwrap();
        let r = Pickup::new(d.path()).scan();
        assert_eq!(r.corrupt, 3, "{r:?}");
        assert_eq!(
            std::fs::read_dir(d.path().join("maildrop"))
                .unwrap()
                .count(),
            0
        );
        let corrupt = d.path().join("corrupt");
        assert!(corrupt.join(&stale).exists());
        assert_eq!(std::fs::read(corrupt.join("junk.1")).unwrap(), b"x");
        assert_eq!(std::fs::read(corrupt.join("junk")).unwrap(), b"earlier");
        assert!(corrupt
            .join(&link)
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
