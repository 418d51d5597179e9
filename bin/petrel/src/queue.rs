//! `petrel queue list | show | flush | hold | release | delete`.
//!
//! `list` prints the queue the way Postfix's `mailq` does (`petrel_queue::listing`). Root
//! and mail_owner read the queue directly; anyone else may not read its directories, and
//! `list` then replaces itself with `daemon_directory/postdrop -c DIR -q`, which asks the
//! showq daemon over `public/showq` for the same listing.

use crate::{Fail, Res};
use petrel_ipc::qmgr::Notice;
use petrel_queue::file;
use petrel_queue::listing::{format_list, names_in, ready, scan, LISTED};
use petrel_queue::spool::Dir;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

fn queue_dir(dir: &Path) -> Res<PathBuf> {
    let cfg = crate::load_config(dir)?;
    Ok(PathBuf::from(cfg.get("queue_directory")))
}

/// `petrel queue list`.
pub fn list(dir: &Path) -> Res {
    let cfg = crate::load_config(dir)?;
    let q = PathBuf::from(cfg.get("queue_directory"));
    if !q.join(Dir::Incoming.name()).is_dir() {
        return Err(Fail::Fatal(format!("{}: no queue here", q.display())));
    }
    // A directory this user may not read would look empty: ask showq instead.
    for d in LISTED {
        let p = q.join(d.name());
        if let Err(e) = std::fs::read_dir(&p) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                let postdrop = Path::new(&cfg.get("daemon_directory")).join("postdrop");
                let failed = exec_postdrop_list(&postdrop, dir);
                return Err(Fail::Fatal(format!(
                    "{}: {e}: only root and mail_owner may list the mail queue \
                     (execute {}: {failed})",
                    p.display(),
                    postdrop.display()
                )));
            }
        }
    }
    out(&format_list(&scan(&q)))
}

/// The arguments of `postdrop` to list the queue of the configuration in `config_dir`.
fn postdrop_list_args(config_dir: &Path) -> Vec<std::ffi::OsString> {
    vec!["-c".into(), config_dir.into(), "-q".into()]
}

/// Replaces this process with `postdrop -c DIR -q` (set-group-id `setgid_group`, so it
/// may reach `public/showq`); returns only when that cannot be done, with the reason.
fn exec_postdrop_list(postdrop: &Path, config_dir: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(postdrop)
        .args(postdrop_list_args(config_dir))
        .exec()
}

/// Writes `text` to standard output; a reader that went away (`mailq | head`) is no error.
fn out(text: &str) -> Res {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail::Fatal(format!("standard output: {e}")))
        }
        _ => Ok(()),
    }
}

fn check_id(id: &str) -> Res {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(Fail::Fatal(format!("bad queue id {id:?}")));
    }
    Ok(())
}

fn locate(q: &Path, id: &str, dirs: &[Dir]) -> Option<(Dir, PathBuf)> {
    dirs.iter()
        .map(|d| (*d, q.join(d.file(id))))
        .find(|(_, p)| p.is_file())
}

/// `petrel queue show ID`.
pub fn show(dir: &Path, id: &str) -> Res {
    check_id(id)?;
    let q = queue_dir(dir)?;
    let dirs = [
        Dir::Incoming,
        Dir::Active,
        Dir::Deferred,
        Dir::Hold,
        Dir::Corrupt,
        Dir::Maildrop,
    ];
    let (_, path) = locate(&q, id, &dirs)
        .ok_or_else(|| Fail::Fatal(format!("{id}: no such message in the queue")))?;
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = file::dump(&mut f, true).map_err(|e| format!("{id}: {e}"))?;
    out(&text)
}

/// Sends `notice` to qmgr at `public/qmgr` without ever blocking.
pub fn notify_qmgr(q: &Path, notice: &Notice) -> Result<(), String> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let path = q.join(Dir::Public.file("qmgr"));
    let err = |e: &dyn std::fmt::Display| format!("cannot reach qmgr at {}: {e}", path.display());
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(&e))?;
    let addr = UnixAddr::new(&path).map_err(|e| err(&e))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| err(&e))?;
    let frame = petrel_ipc::encode(notice).map_err(|e| err(&e))?;
    let n = nix::unistd::write(&fd, &frame).map_err(|e| err(&e))?;
    if n != frame.len() {
        return Err(err(&"short write"));
    }
    Ok(())
}

/// `petrel queue flush`.
pub fn flush(dir: &Path) -> Res {
    let q = queue_dir(dir)?;
    notify_qmgr(&q, &Notice::Flush).map_err(Fail::Fatal)
}

/// Files found (id, where) and names not found.
type Targets = (Vec<(String, Dir)>, Vec<String>);

/// The files an operation applies to: every ready file in `from` for `ALL`, else the
/// named ones (with the names not found).
fn targets(q: &Path, ids: &[String], from: &[Dir]) -> Res<Targets> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    if ids.iter().any(|i| i == "ALL") {
        for d in from {
            for id in names_in(&q.join(d.name())) {
                let ok = std::fs::metadata(q.join(d.file(&id)))
                    .map(|m| m.is_file() && ready(*d, &m))
                    .unwrap_or(false);
                if ok {
                    found.push((id, *d));
                }
            }
        }
        return Ok((found, missing));
    }
    for id in ids {
        check_id(id)?;
        match locate(q, id, from) {
            Some((d, _)) => found.push((id.clone(), d)),
            None => missing.push(id.clone()),
        }
    }
    Ok((found, missing))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "message"
    } else {
        "messages"
    }
}

fn report_missing(missing: &[String], where_: &str) {
    for id in missing {
        eprintln!("petrel: warning: {id}: no such message in {where_}");
    }
}

/// Moves the named (or ALL) messages from incoming/active/deferred to hold/; returns the count.
pub fn hold_in(q: &Path, ids: &[String]) -> Res<(usize, Vec<String>)> {
    let (found, missing) = targets(q, ids, &[Dir::Incoming, Dir::Active, Dir::Deferred])?;
    let mut n = 0;
    for (id, d) in found {
        match std::fs::rename(q.join(d.file(&id)), q.join(Dir::Hold.file(&id))) {
            Ok(()) => n += 1,
            Err(e) => eprintln!("petrel: warning: {id}: cannot put on hold: {e}"),
        }
    }
    Ok((n, missing))
}

/// Moves the named (or ALL) messages from hold/ to deferred/, due now; returns the count.
pub fn release_in(q: &Path, ids: &[String]) -> Res<(usize, Vec<String>)> {
    let (found, missing) = targets(q, ids, &[Dir::Hold])?;
    let mut n = 0;
    for (id, _) in found {
        let to = q.join(Dir::Deferred.file(&id));
        if let Err(e) = std::fs::rename(q.join(Dir::Hold.file(&id)), &to) {
            eprintln!("petrel: warning: {id}: cannot release: {e}");
            continue;
        }
        let now = std::time::SystemTime::now();
        let times = std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now);
        if let Err(e) = std::fs::File::open(&to).and_then(|f| f.set_times(times)) {
            eprintln!("petrel: warning: {id}: cannot make it due now: {e}");
        }
        n += 1;
    }
    Ok((n, missing))
}

/// Removes the named (or ALL) messages and their defer/bounce records; returns the ids.
pub fn delete_in(q: &Path, ids: &[String]) -> Res<(Vec<String>, Vec<String>)> {
    let all = ids.iter().any(|i| i == "ALL");
    let mut from = vec![
        Dir::Maildrop,
        Dir::Incoming,
        Dir::Active,
        Dir::Deferred,
        Dir::Hold,
    ];
    if !all {
        // Named explicitly, a corrupt file may go too; ALL never empties corrupt/.
        from.push(Dir::Corrupt);
    }
    let (found, missing) = targets(q, ids, &from)?;
    let mut done = Vec::new();
    for (id, d) in found {
        match std::fs::remove_file(q.join(d.file(&id))) {
            Ok(()) => {
                let _ = std::fs::remove_file(q.join(Dir::Defer.file(&id)));
                let _ = std::fs::remove_file(q.join(Dir::Bounce.file(&id)));
                done.push(id);
            }
            Err(e) => eprintln!("petrel: warning: {id}: cannot delete: {e}"),
        }
    }
    Ok((done, missing))
}

/// `petrel queue hold ID...|ALL`.
pub fn hold(dir: &Path, ids: &[String]) -> Res {
    let q = queue_dir(dir)?;
    let (n, missing) = hold_in(&q, ids)?;
    report_missing(&missing, "incoming, active or deferred");
    println!("petrel: Placed on hold: {n} {}", plural(n));
    let _ = notify_qmgr(&q, &Notice::Rescan);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

/// `petrel queue release ID...|ALL`.
pub fn release(dir: &Path, ids: &[String]) -> Res {
    let q = queue_dir(dir)?;
    let (n, missing) = release_in(&q, ids)?;
    report_missing(&missing, "hold");
    println!("petrel: Released from hold: {n} {}", plural(n));
    let _ = notify_qmgr(&q, &Notice::Flush);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

/// `petrel queue delete ID...|ALL`.
pub fn delete(dir: &Path, ids: &[String]) -> Res {
    let cfg = crate::load_config(dir)?;
    let q = PathBuf::from(cfg.get("queue_directory"));
    petrel_log::init("queue", &cfg, false);
    let (done, missing) = delete_in(&q, ids)?;
    for id in &done {
        log::info!("{id}: removed");
    }
    report_missing(&missing, "the queue");
    println!("petrel: Deleted: {} {}", done.len(), plural(done.len()));
    let _ = notify_qmgr(&q, &Notice::Rescan);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_queue::testutil::message as make;

    fn spool() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        petrel_queue::spool::create(t.path(), None).expect("spool");
        t
    }

    #[test]
    fn list_falls_back_to_postdrop_with_the_configuration_directory() {
        assert_eq!(
            postdrop_list_args(Path::new("/etc/petrel")),
            ["-c", "/etc/petrel", "-q"]
        );
    }

    #[test]
    fn hold_release_delete() {
        let t = spool();
        let q = t.path();
        let a = make(q, Dir::Deferred, "a@x", &["b@x"], b"hi\n", &[]);
        let b = make(q, Dir::Incoming, "a@x", &["c@x"], b"hi\n", &[]);
        std::fs::write(q.join(Dir::Defer.file(&a)), "b@x\t4.0.0\tlater\n").expect("defer");

        assert_eq!(
            hold_in(q, std::slice::from_ref(&a)).expect("hold"),
            (1, vec![])
        );
        assert!(q.join(Dir::Hold.file(&a)).is_file());
        assert_eq!(
            hold_in(q, &["NOSUCHID".into()]).expect("hold").1,
            vec!["NOSUCHID".to_string()]
        );
        assert!(hold_in(q, &["../x".into()]).is_err());

        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::open(q.join(Dir::Hold.file(&a)))
            .and_then(|f| f.set_modified(old))
            .expect("backdate");
        assert_eq!(release_in(q, &["ALL".into()]).expect("release").0, 1);
        let m = std::fs::metadata(q.join(Dir::Deferred.file(&a))).expect("deferred");
        let age = std::time::SystemTime::now()
            .duration_since(m.modified().expect("mtime"))
            .unwrap_or_default();
        assert!(age.as_secs() < 60, "due now");

        assert_eq!(hold_in(q, &["ALL".into()]).expect("hold").0, 2);
        let (done, missing) = delete_in(q, &["ALL".into()]).expect("delete");
        assert_eq!(done.len(), 2);
        assert!(missing.is_empty());
        assert!(
            !q.join(Dir::Defer.file(&a)).exists(),
            "defer record removed"
        );
        assert!(!q.join(Dir::Hold.file(&b)).exists());
        assert_eq!(format_list(&scan(q)), "Mail queue is empty\n");
    }
}
