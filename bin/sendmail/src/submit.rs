//! Handing a message to postdrop: `postdrop -c DIR -f SENDER [-A fullname=NAME] -- RCPT...`
//! with the message on its standard input, framed (see [`petrel_ipc::chunked`]), and the queue id
//! on its standard output.
//!
//! The end marker is written only once the whole message has been: when the message
//! cannot be read, or sendmail dies halfway, even by SIGKILL, postdrop sees its input end
//! without it and removes its partial file instead of queueing a truncated message. While
//! postdrop runs, SIGHUP, SIGINT, SIGQUIT and SIGTERM sent to sendmail are also passed on
//! to it before sendmail exits.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{exit, Fatal};
use petrel_ipc::chunked::Framer;

/// Where postdrop is and which configuration it reads.
#[derive(Debug, Clone)]
pub struct Postdrop {
    /// The postdrop program.
    pub program: PathBuf,
    /// The configuration directory, passed with `-c`.
    pub config_dir: PathBuf,
}

/// One submission's envelope.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Envelope sender, empty for `<>`.
    pub sender: String,
    /// `-F` full name.
    pub fullname: Option<String>,
    /// Recipients.
    pub recipients: Vec<String>,
}

/// Counts write failures so a failed feed can be told apart: postdrop stopped reading
/// (it will say why) or our own input failed (postdrop must not queue what it got).
struct Tracked<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    // SAFETY: kill and _exit are async-signal-safe.
    unsafe {
        if pid > 0 {
            libc::kill(pid, sig);
        }
        libc::_exit(exit::TEMPFAIL);
    }
}

fn forward_signals(enable: bool) {
    let handler = if enable {
        SigHandler::Handler(forward)
    } else {
        SigHandler::SigDfl
    };
    let act = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
    ] {
        // SAFETY: the handler only makes async-signal-safe calls.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

impl Postdrop {
    /// The argument vector for `env`.
    pub fn args(&self, env: &Envelope) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec![
            "-c".into(),
            self.config_dir.clone().into(),
            "-f".into(),
            env.sender.clone().into(),
        ];
        if let Some(name) = &env.fullname {
            a.push("-A".into());
            a.push(format!("fullname={name}").into());
        }
        a.push("--".into());
        a.extend(env.recipients.iter().map(Into::into));
        a
    }

    /// Runs postdrop, lets `feed` write the message into it (framed here: `feed` writes the
    /// plain message), and returns the queue id.
    /// A postdrop failure carries postdrop's exit status and its message.
    pub fn submit(
        &self,
        env: &Envelope,
        feed: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<String, Fatal> {
        let mut child = Command::new(&self.program)
            .args(self.args(env))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Fatal::new(
                    exit::OSERR,
                    format!("execute {}: {e}", self.program.display()),
                )
            })?;
        CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
        forward_signals(true);
        let result = self.drive(&mut child, feed);
        forward_signals(false);
        CHILD.store(0, Ordering::SeqCst);
        result
    }

    fn drive(
        &self,
        child: &mut Child,
        feed: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<String, Fatal> {
        let Some(stdin) = child.stdin.take() else {
            return Err(Fatal::new(exit::SOFTWARE, "postdrop has no standard input"));
        };
        let mut w = Framer::new(Tracked {
            inner: stdin,
            failed: false,
        });
        let fed = feed(&mut w);
        if w.get_ref().failed {
            // postdrop stopped reading: its exit status and message say why.
            drop(w);
        } else if let Err(e) = fed {
            // Our input broke: postdrop must not queue what it got. SIGTERM makes it stop
            // and remove its partial file; so does the end of its input without the end
            // marker, should the signal not reach it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                Signal::SIGTERM,
            );
            drop(w);
            let _ = child.wait();
            return Err(Fatal::new(
                exit::TEMPFAIL,
                format!("reading the message: {e}"),
            ));
        } else {
            // The whole message is written: only now does it get its end marker. This
            // fails only when postdrop stopped reading, which its status then explains.
            let _ = w.finish();
        }
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let status = child
            .wait()
            .map_err(|e| Fatal::new(exit::OSERR, format!("waiting for postdrop: {e}")))?;
        let reason = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.strip_prefix("postdrop: fatal: ").unwrap_or(l).to_string());
        match status.code() {
            Some(0) => {
                let id = out.trim().to_string();
                if id.is_empty() {
                    Err(Fatal::new(exit::SOFTWARE, "postdrop printed no queue id"))
                } else {
                    Ok(id)
                }
            }
            Some(code) => Err(Fatal::new(
                code,
                reason.unwrap_or_else(|| format!("postdrop exited with status {code}")),
            )),
            None => Err(Fatal::new(
                exit::TEMPFAIL,
                format!("postdrop was killed: {status}"),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pd(program: PathBuf) -> Postdrop {
        Postdrop {
            program,
            config_dir: PathBuf::from("/etc/x"),
        }
    }

    #[test]
    fn argument_vector() {
        let env = Envelope {
            sender: String::new(),
            fullname: Some("A B".into()),
            recipients: vec!["-x".into(), "bob".into()],
        };
        let a: Vec<String> = pd("/p".into())
            .args(&env)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "-c",
                "/etc/x",
                "-f",
                "",
                "-A",
                "fullname=A B",
                "--",
                "-x",
                "bob"
            ]
        );
    }

    /// Held by tests that write a script and run programs: a script still open for writing
    /// in a child forked by another test cannot be executed (ETXTBSY).
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("fake-postdrop");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn status_id_and_reason_come_from_postdrop() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let env = Envelope {
            recipients: vec!["bob".into()],
            ..Default::default()
        };
        let out = d.path().join("got");
        let ok = script(d.path(), &format!("cat > {}; echo QID123", out.display()));
        let id = pd(ok.clone())
            .submit(&env, |w| w.write_all(b"hello\n"))
            .unwrap();
        assert_eq!(id, "QID123");
        // Framed: one chunk, then the end marker.
        assert_eq!(std::fs::read(&out).unwrap(), b"\0\0\0\x06hello\n\0\0\0\0");
        let big: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        pd(ok)
            .submit(&env, |w| {
                for piece in big.chunks(1000) {
                    w.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
        let got = std::fs::read(&out).unwrap();
        let (payload, ended) = unframe(&got);
        assert!(ended, "end marker");
        assert_eq!(payload, big);

        let bad = script(
            d.path(),
            "echo 'postdrop: fatal: message too large' >&2; exit 65",
        );
        let big = vec![b'x'; 1 << 20];
        let e = pd(bad).submit(&env, |w| w.write_all(&big)).unwrap_err();
        assert_eq!(e, Fatal::new(65, "message too large"));

        let e = pd(d.path().join("missing"))
            .submit(&env, |_| Ok(()))
            .unwrap_err();
        assert_eq!(e.code, exit::OSERR);
    }

    /// The payload of a framed stream, and whether it ends with the end marker.
    fn unframe(mut s: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        while s.len() >= 4 {
            let len = u32::from_be_bytes(s[..4].try_into().unwrap()) as usize;
            s = &s[4..];
            if len == 0 {
                assert!(s.is_empty(), "bytes after the end marker");
                return (out, true);
            }
            assert!(len <= petrel_ipc::chunked::MAX_CHUNK);
            out.extend_from_slice(&s[..len]);
            s = &s[len..];
        }
        assert!(s.is_empty(), "a cut length");
        (out, false)
    }

    #[test]
    fn broken_input_kills_postdrop() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("queued");
        let p = script(
            d.path(),
            &format!("cat >/dev/null && touch {}", marker.display()),
        );
        let env = Envelope {
            recipients: vec!["bob".into()],
            ..Default::default()
        };
        let e = pd(p)
            .submit(&env, |w| {
                w.write_all(b"part")?;
                Err(io::Error::other("stdin broke"))
            })
            .unwrap_err();
        assert_eq!(e.code, exit::TEMPFAIL);
        assert!(e.reason.contains("stdin broke"), "{e:?}");
        assert!(!marker.exists(), "postdrop must not finish");
    }

    #[test]
    fn broken_input_never_gets_the_end_marker() {
        // Even a postdrop that ignores SIGTERM sees its input end without the end marker.
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let got = d.path().join("got");
        let p = script(
            d.path(),
            &format!("trap '' TERM; cat > {}; exit 75", got.display()),
        );
        let env = Envelope {
            recipients: vec!["bob".into()],
            ..Default::default()
        };
        let e = pd(p)
            .submit(&env, |w| {
                w.write_all(&[b'x'; 100_000])?;
                w.write_all(b"part")?;
                w.flush()?;
                w.write_all(b"never sent")?;
                Err(io::Error::other("stdin broke"))
            })
            .unwrap_err();
        assert_eq!(e.code, exit::TEMPFAIL);
        assert!(e.reason.contains("stdin broke"), "{e:?}");
        let (payload, ended) = unframe(&std::fs::read(&got).unwrap());
        assert!(!ended, "no end marker");
        let mut want = vec![b'x'; 100_000];
        want.extend_from_slice(b"part");
        assert_eq!(payload, want);
    }
}
