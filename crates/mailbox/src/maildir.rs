//! Idempotent Maildir delivery (see the crate docs for the naming rule).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{context, sync_dir};

/// What [`deliver_maildir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaildirOutcome {
    /// The message is now in `new/` under this path.
    Delivered(PathBuf),
    /// An earlier attempt with the same key had already put the message at this path; nothing
    /// was added.
    AlreadyDelivered(PathBuf),
}

impl MaildirOutcome {
    /// The path of the message in `new/`, whichever way it got there.
    pub fn path(&self) -> &Path {
        match self {
            MaildirOutcome::Delivered(p) | MaildirOutcome::AlreadyDelivered(p) => p,
        }
    }
}

/// The Maildir file name for a delivery: `ARRIVAL.KEY.HOST,S=SIZE`, with `/` and `:` in the
/// host name written as `\057` and `\072` (the Maildir convention; `:` separates the flags
/// in `cur/` and `/` separates directories).
pub fn maildir_name(arrival_secs: u64, key: &str, hostname: &str, size: u64) -> String {
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!("{arrival_secs}.{key}.{host},S={size}")
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A key may only hold characters that are safe in a file name and carry no meaning in a
/// Maildir name: ASCII letters, digits and `.` (the brief's keys use `[0-9A-Z.]`).
fn check_key(key: &str) -> io::Result<()> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad Maildir delivery key {key:?}: only letters, digits and '.' are allowed"),
        ));
    }
    Ok(())
}

/// Delivers one message, given as consecutive byte slices, to the Maildir at `root`.
///
/// Creates `root` and its `tmp/`, `new/` and `cur/` (mode 0700) when missing. The file is
/// named by [`maildir_name`] from `arrival_secs`, `key` (letters, digits and `.` only, e.g.
/// `QUEUEID.R3`), this host's name and the total size. It is written to `tmp/` with mode
/// 0600, fsynced, linked into `new/`, and `new/` is fsynced. If `new/` already holds that
/// name the result is [`MaildirOutcome::AlreadyDelivered`] (after fsyncing `new/`, since the
/// attempt that made the link may have died before doing so). On error nothing is left in
/// `new/` or `tmp/`.
pub fn deliver_maildir(
    root: &Path,
    key: &str,
    arrival_secs: u64,
    parts: &[&[u8]],
) -> io::Result<MaildirOutcome> {
    check_key(key)?;
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let name = maildir_name(arrival_secs, key, &hostname(), size);
    ensure_dirs(root)?;
    let new_dir = root.join("new");
    let tmp = root.join("tmp").join(&name);
    let new = new_dir.join(&name);

    if let Err(e) = write_synced(&tmp, parts) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, &new);
    // Once linked (or found linked) the tmp name is only clutter; a failure to remove it is
    // harmless (Maildir readers clean old files out of tmp/).
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Err(e) = sync_dir(&new_dir) {
                let _ = fs::remove_file(&new);
                return Err(e);
            }
            Ok(MaildirOutcome::Delivered(new))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            sync_dir(&new_dir)?;
            Ok(MaildirOutcome::AlreadyDelivered(new))
        }
        Err(e) => Err(context(e, "cannot link into", &new)),
    }
}

/// Creates `tmp/`, `new/` and `cur/` (and `root` itself) when missing, fsyncing the
/// directories whose entries changed.
fn ensure_dirs(root: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    let mut created_sub = false;
    let mut created_root = false;
    for sub in ["tmp", "new", "cur"] {
        let dir = root.join(sub);
        let mut result = builder.create(&dir);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            let mut parents = DirBuilder::new();
            parents.mode(0o700).recursive(true);
            parents
                .create(root)
                .map_err(|e| context(e, "cannot create Maildir", root))?;
            created_root = true;
            result = builder.create(&dir);
        }
        match result {
            Ok(()) => created_sub = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(context(e, "cannot create", &dir)),
        }
    }
    if created_sub {
        sync_dir(root)?;
    }
    if created_root {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes the parts to a fresh `path` (replacing what a crashed attempt left) and fsyncs it.
fn write_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| context(e, "cannot create", path))?;
    let mut w = BufWriter::with_capacity(64 * 1024, &file);
    for part in parts {
        w.write_all(part)
            .map_err(|e| context(e, "cannot write", path))?;
    }
    w.flush().map_err(|e| context(e, "cannot write", path))?;
    drop(w);
    file.sync_all()
        .map_err(|e| context(e, "cannot fsync", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn name_escapes_host_and_carries_size() {
        assert_eq!(
            maildir_name(1_795_400_760, "ABC.R3", "mx/1:2", 42),
            "1795400760.ABC.R3.mx\\0571\\0722,S=42"
        );
    }

    #[test]
    fn delivers_exact_bytes_with_the_deterministic_name() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("home/Maildir");
        let parts: [&[u8]; 3] = [b"Delivered-To: a@b\n", b"Subject: x\n\n", b"body\n"];
        let out = deliver_maildir(&root, "4F2K9ZQ7BX0031A.R3", 1000, &parts).expect("deliver");
        let MaildirOutcome::Delivered(path) = &out else {
            panic!("{out:?}");
        };
        let expected = maildir_name(1000, "4F2K9ZQ7BX0031A.R3", &hostname(), 35);
        assert_eq!(path, &root.join("new").join(expected));
        assert_eq!(
            fs::read(path).expect("read"),
            b"Delivered-To: a@b\nSubject: x\n\nbody\n"
        );
        assert!(entries(&root.join("tmp")).is_empty());
        assert!(entries(&root.join("cur")).is_empty());
        use std::os::unix::fs::PermissionsExt;
        for sub in ["tmp", "new", "cur"] {
            let mode = fs::metadata(root.join(sub))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        let mode = fs::metadata(path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "file is private");
    }

    #[test]
    fn second_delivery_with_the_same_key_is_not_duplicated() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("Maildir");
        let parts: [&[u8]; 1] = [b"Subject: once\n\nhello\n"];
        let first = deliver_maildir(&root, "Q1.R0", 7, &parts).expect("first");
        assert!(matches!(first, MaildirOutcome::Delivered(_)));
        let second = deliver_maildir(&root, "Q1.R0", 7, &parts).expect("second");
        assert_eq!(
            second,
            MaildirOutcome::AlreadyDelivered(first.path().to_path_buf())
        );
        assert_eq!(entries(&root.join("new")).len(), 1);
        assert!(entries(&root.join("tmp")).is_empty());
        // Another recipient index is another message.
        let third = deliver_maildir(&root, "Q1.R1", 7, &parts).expect("third");
        assert!(matches!(third, MaildirOutcome::Delivered(_)));
        assert_eq!(entries(&root.join("new")).len(), 2);
    }

    #[test]
    fn a_crash_after_writing_tmp_is_recovered_by_the_retry() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("Maildir");
        let parts: [&[u8]; 1] = [b"x\n"];
        // Simulate an agent killed after writing part of tmp/NAME, before the link.
        ensure_dirs(&root).expect("dirs");
        let name = maildir_name(5, "Q2.R0", &hostname(), 2);
        fs::write(root.join("tmp").join(&name), b"partial garbage").expect("write");
        let out = deliver_maildir(&root, "Q2.R0", 5, &parts).expect("retry");
        assert!(matches!(out, MaildirOutcome::Delivered(_)));
        assert_eq!(fs::read(out.path()).expect("read"), b"x\n");
        assert!(entries(&root.join("tmp")).is_empty());
        // Killed after the link but before removing tmp/NAME: the retry sees the link.
        fs::write(root.join("tmp").join(&name), b"x\n").expect("write");
        let again = deliver_maildir(&root, "Q2.R0", 5, &parts).expect("retry 2");
        assert!(matches!(again, MaildirOutcome::AlreadyDelivered(_)));
        assert!(entries(&root.join("tmp")).is_empty());
        assert_eq!(entries(&root.join("new")).len(), 1);
    }

    #[test]
    fn bad_keys_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        for key in ["", "../x", "a/b", "a:2,S", "a b"] {
            let e = deliver_maildir(t.path(), key, 1, &[b"x"]).expect_err(key);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(!t.path().join("new").exists());
    }

    #[test]
    fn an_unusable_maildir_fails_cleanly() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("Maildir");
        fs::create_dir(&root).expect("mkdir");
        // new/ is a file: the link cannot be made.
        fs::write(root.join("new"), b"").expect("write");
        let e = deliver_maildir(&root, "Q3.R0", 1, &[b"x\n"]);
        assert!(e.is_err());
        assert!(entries(&root.join("tmp")).is_empty());
    }
}
