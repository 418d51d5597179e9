//! Runs the built postdrop against a temporary spool.
#![allow(clippy::unwrap_used)] // tests may panic

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn setup(limit: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().join("spool");
    petrel_queue::spool::create(&spool, None).unwrap();
    std::fs::write(
        d.path().join("petrel.conf"),
        format!(
            "queue_directory = {}\nmessage_size_limit = {limit}\n",
            spool.display()
        ),
    )
    .unwrap();
    d
}

/// `msg` in postdrop's input framing: chunks of at most `size` bytes, each after its
/// 4-byte big-endian length, then the zero-length end marker.
fn framed(msg: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in msg.chunks(size) {
        out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_be_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&[0; 4]);
    out
}

fn postdrop(dir: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postdrop"))
        .arg("-c")
        .arg(dir)
        .args(args)
        .env_remove("PETREL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // postdrop may stop reading early (message too large): a broken pipe is expected then.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn submission_lands_in_maildrop_complete() {
    let d = setup(0);
    let out = postdrop(
        d.path(),
        &[
            "-f",
            "alice",
            "-A",
            "fullname=Alice",
            "--",
            "bob",
            "carol@example.org",
        ],
        &framed(b"Subject: t\n\nhello\n", 5),
    );
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(petrel_queue::QueueId::parse(&id).is_some(), "{id:?}");
    let path = d.path().join("spool/maildrop").join(&id);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let mut f = std::fs::File::open(&path).unwrap();
    let env = petrel_queue::file::read_envelope(&mut f).unwrap();
    assert_eq!(env.sender, "alice");
    assert_eq!(env.attr("protocol"), Some("local"));
    assert_eq!(env.attr("fullname"), Some("Alice"));
    assert_eq!(
        env.attr("uid"),
        Some(nix::unistd::getuid().as_raw().to_string().as_str())
    );
    assert!(env.attr("user").is_some());
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["bob", "carol@example.org"]);
    assert_eq!(
        petrel_queue::file::read_content(&f, &env).unwrap(),
        b"Subject: t\n\nhello\n"
    );
}

#[test]
fn failures_exit_with_sysexits_and_leave_nothing() {
    let d = setup(1000);
    let maildrop = d.path().join("spool/maildrop");
    let big = framed(&[b'x'; 200_000], 65536);
    let x = framed(b"x\n", 2);
    for (args, input, code, text) in [
        (vec!["bob"], &big[..], 65, "message too large"),
        (vec![], &x[..], 64, "no recipients"),
        (vec!["-A", "uid=0", "bob"], &x[..], 64, "only fullname"),
        (vec!["bo\tb"], &x[..], 65, "bad recipient"),
    ] {
        let out = postdrop(d.path(), &args, input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.starts_with("postdrop: fatal: "), "{err}");
        assert!(err.contains(text), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
    let out = postdrop(&d.path().join("missing"), &["bob"], &x);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
}

#[test]
fn input_without_end_marker_or_with_bad_framing_is_not_queued() {
    let d = setup(0);
    let maildrop = d.path().join("spool/maildrop");
    let msg = b"Subject: t\n\nthe whole message\n".repeat(5000);
    let whole = framed(&msg, 65536);
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"junk");
    let mut oversize = 65537u32.to_be_bytes().to_vec();
    oversize.extend(vec![b'x'; 65537]);
    oversize.extend_from_slice(&[0; 4]);
    for (input, text) in [
        // What a sendmail killed between chunks leaves.
        (
            &whole[..whole.len() - 4],
            "message input ended early (no end marker)\n",
        ),
        // ... and in the middle of one.
        (
            &whole[..70_000],
            "message input ended early (4456 of the 65536 bytes of a chunk, no end marker)\n",
        ),
        (&b""[..], "message input ended early (no end marker)\n"),
        (
            &trailing[..],
            "bad message input framing: data after the end marker\n",
        ),
        (
            &oversize[..],
            "bad message input framing: chunk of 65537 bytes, more than 65536\n",
        ),
        // An unframed message is refused too.
        (&msg[..], "bad message input framing: chunk of"),
    ] {
        let out = postdrop(d.path(), &["bob"], input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert!(
            err.starts_with(&format!("postdrop: fatal: {text}")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
        assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0, "{err}");
    }
    // The same message with its end marker is queued whole.
    let out = postdrop(d.path(), &["bob"], &whole);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut f = std::fs::File::open(maildrop.join(&id)).unwrap();
    let env = petrel_queue::file::read_envelope(&mut f).unwrap();
    assert_eq!(petrel_queue::file::read_content(&f, &env).unwrap(), msg);
}

#[test]
fn writer_killed_mid_message_leaves_nothing() {
    // A writer that dies without the end marker: its end of the pipe closes while postdrop
    // is reading, as when sendmail is SIGKILLed.
    let d = setup(0);
    let maildrop = d.path().join("spool/maildrop");
    let mut child = Command::new(env!("CARGO_BIN_EXE_postdrop"))
        .arg("-c")
        .arg(d.path())
        .arg("bob")
        .env_remove("PETREL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&framed(&b"line\n".repeat(30_000), 65536)[..100_000])
        .unwrap();
    stdin.flush().unwrap();
    // Wait until postdrop has its file, so the removal is what is tested.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&maildrop).unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no maildrop file");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("message input ended early"));
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
}

#[test]
fn q_copies_what_showq_sends_and_exits_0() {
    let d = setup(0);
    let sock = d.path().join("spool/public/showq");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Bytes postdrop must not interpret: a listing, then NULs and a line without an end.
    let listing: Vec<u8> = b"Mail queue is empty\n\0\0\xffno newline".to_vec();
    let sent = listing.clone();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(&sent).unwrap();
    });
    let out = postdrop(d.path(), &["-q"], b"");
    server.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, listing);
    assert!(out.stderr.is_empty());
}

#[test]
fn q_without_showq_is_a_temporary_failure() {
    let d = setup(0);
    let out = postdrop(d.path(), &["-q"], b"");
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let sock = d.path().join("spool/public/showq");
    assert!(
        err.starts_with(&format!("postdrop: fatal: {}: ", sock.display()))
            && err.trim_end().ends_with(": is the mail system running?"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // -q lists, nothing else.
    let out = postdrop(d.path(), &["-q", "bob"], b"");
    assert_eq!(out.status.code(), Some(64));
}
