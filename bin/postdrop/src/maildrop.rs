//! Writing one maildrop file: create it exclusively under a fresh queue id, copy the
//! envelope and the message (decoded from its framing, see [`petrel_ipc::chunked`]) into it, make
//! it durable, and mark it complete. Without the end marker nothing is kept.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use petrel_queue::file::{Recipient, Writer, MODE_MAILDROP_COMPLETE};
use petrel_queue::QueueId;

use crate::{exit, frame, signals, Fatal};

/// How many ids to try when a name is taken (two postdrops in the same microsecond).
const CREATE_TRIES: usize = 100;

/// What goes into the maildrop file besides the message.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Envelope sender, empty for `<>`.
    pub sender: String,
    /// Attributes, in order.
    pub attrs: Vec<(String, String)>,
    /// Recipients, in order.
    pub recipients: Vec<String>,
    /// Largest message accepted, in bytes; 0 = no limit.
    pub size_limit: u64,
}

/// Removes the file it names when dropped, unless disarmed: every error path leaves
/// nothing behind.
struct Partial {
    path: PathBuf,
    armed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            signals::disarm();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp(path: &Path, what: &str, e: io::Error) -> Fatal {
    Fatal::new(exit::TEMPFAIL, format!("{}: {what}: {e}", path.display()))
}

/// Writes `maildrop/ID` from `sub` and the framed message read from `input`; returns the
/// id once the end marker has been read, the file and its directory are fsynced and the
/// file is marked complete. Input that ends early or breaks the framing is a temporary
/// failure and leaves no file.
pub fn write(maildrop: &Path, sub: &Submission, input: &mut impl Read) -> Result<QueueId, Fatal> {
    let (id, path, mut w) = create(maildrop)?;
    let mut partial = Partial { path, armed: true };
    let path = partial.path.clone();
    let werr = |e: io::Error| temp(&path, "write", e);
    w.sender(&sub.sender).map_err(werr)?;
    for (n, v) in &sub.attrs {
        w.attr(n, v).map_err(werr)?;
    }
    for r in &sub.recipients {
        w.recipient(&Recipient {
            address: r.clone(),
            ..Default::default()
        })
        .map_err(werr)?;
    }
    w.begin_content().map_err(werr)?;
    let mut chunks = frame::Decoder::new(input);
    let mut buf = Vec::with_capacity(frame::MAX_CHUNK);
    let mut total: u64 = 0;
    while chunks
        .next_chunk(&mut buf)
        .map_err(|e| Fatal::new(exit::TEMPFAIL, e.to_string()))?
    {
        total += buf.len() as u64;
        if sub.size_limit > 0 && total > sub.size_limit {
            return Err(Fatal::new(
                exit::DATAERR,
                format!(
                    "message too large: more than message_size_limit = {} bytes",
                    sub.size_limit
                ),
            ));
        }
        w.content(&buf).map_err(werr)?;
    }
    w.finish(MODE_MAILDROP_COMPLETE)
        .map_err(|e| temp(&path, "finish", e))?;
    petrel_queue::spool::fsync_entry(maildrop, &path).map_err(|e| temp(maildrop, "fsync", e))?;
    partial.armed = false;
    signals::disarm();
    Ok(id)
}

/// Creates `maildrop/ID` exclusively, trying new ids while the name is taken.
fn create(maildrop: &Path) -> Result<(QueueId, PathBuf, Writer), Fatal> {
    for _ in 0..CREATE_TRIES {
        let id = QueueId::new();
        let path = maildrop.join(id.as_str());
        match Writer::create(&path, petrel_queue::now()) {
            Ok(w) => {
                // From here a signal removes the file. (One between the create and this
                // leaves a file without the complete mode, which pickup moves aside after
                // a day; arming earlier could remove another postdrop's file.)
                signals::arm(&path);
                return Ok((id, path, w));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(temp(&path, "create", e)),
        }
    }
    Err(Fatal::new(
        exit::TEMPFAIL,
        format!(
            "{}: no free file name after {CREATE_TRIES} tries",
            maildrop.display()
        ),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use petrel_ipc::chunked::framed;
    use std::io::Read;

    /// A reader that hands out its bytes a few at a time, like a pipe.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    use std::os::unix::fs::PermissionsExt;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    fn sub(limit: u64) -> Submission {
        Submission {
            sender: "alice".into(),
            attrs: vec![
                ("uid".into(), "1000".into()),
                ("protocol".into(), "local".into()),
            ],
            recipients: vec!["bob".into(), "carol@example.org".into()],
            size_limit: limit,
        }
    }

    #[test]
    fn writes_a_complete_maildrop_file() {
        let d = tempfile::tempdir().unwrap();
        let msg = b"Subject: hi\n\nbody\n".repeat(5000);
        let input = framed(&msg, frame::MAX_CHUNK);
        let id = write(d.path(), &sub(0), &mut Trickle(input, 0)).unwrap();
        let path = d.path().join(id.as_str());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, MODE_MAILDROP_COMPLETE);
        let mut f = std::fs::File::open(&path).unwrap();
        let env = petrel_queue::file::read_envelope(&mut f).unwrap();
        assert_eq!(env.sender, "alice");
        assert_eq!(env.attr("uid"), Some("1000"));
        let r: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(r, vec!["bob", "carol@example.org"]);
        assert_eq!(petrel_queue::file::read_content(&f, &env).unwrap(), msg);
    }

    #[test]
    fn too_large_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        // Payload bytes count, not the framing, however the message is cut.
        for size in [1, 7, 100, 101] {
            let e = write(d.path(), &sub(100), &mut &framed(&[b'x'; 101], size)[..]).unwrap_err();
            assert_eq!(e.code, exit::DATAERR);
            assert!(e.reason.contains("message too large"), "{e:?}");
            assert_eq!(count(d.path()), 0);
        }
        // Exactly the limit is fine.
        for size in [1, 7, 100] {
            write(d.path(), &sub(100), &mut &framed(&[b'x'; 100], size)[..]).unwrap();
        }
        assert_eq!(count(d.path()), 3);
    }

    #[test]
    fn read_error_leaves_nothing() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let d = tempfile::tempdir().unwrap();
        let e = write(d.path(), &sub(0), &mut Broken).unwrap_err();
        assert_eq!(e.code, exit::TEMPFAIL);
        assert_eq!(count(d.path()), 0);
    }

    #[test]
    fn bad_framing_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let msg = b"Subject: hi\n\nbody\n".repeat(100);
        let whole = framed(&msg, 50);
        let mut trailing = whole.clone();
        trailing.push(b'x');
        let mut oversize = (70_000u32).to_be_bytes().to_vec();
        oversize.extend(vec![b'x'; 70_000]);
        oversize.extend_from_slice(&[0; 4]);
        for (input, why) in [
            (&b""[..], "message input ended early (no end marker)"),
            (
                &whole[..whole.len() - 4],
                "message input ended early (no end marker)",
            ),
            (
                &whole[..whole.len() - 2],
                "message input ended early (2 of the 4",
            ),
            (&whole[..30], "message input ended early (26 of the 50"),
            (
                &trailing[..],
                "bad message input framing: data after the end marker",
            ),
            (
                &oversize[..],
                "bad message input framing: chunk of 70000 bytes",
            ),
            (&msg[..], "bad message input framing: chunk of"),
        ] {
            let e = write(d.path(), &sub(0), &mut Trickle(input.to_vec(), 0)).unwrap_err();
            assert_eq!(e.code, exit::TEMPFAIL, "{e:?}");
            assert!(e.reason.starts_with(why), "{e:?}");
            assert_eq!(count(d.path()), 0, "{why}");
        }
        write(d.path(), &sub(0), &mut &whole[..]).unwrap();
        assert_eq!(count(d.path()), 1);
    }

    #[test]
    fn missing_directory_is_a_temporary_failure() {
        let d = tempfile::tempdir().unwrap();
        let e = write(&d.path().join("nope"), &sub(0), &mut &[0u8; 4][..]).unwrap_err();
        assert_eq!(e.code, exit::TEMPFAIL);
        assert!(e.reason.contains("create"), "{e:?}");
    }
}
