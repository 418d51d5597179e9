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
        b"Subject: t\n\nhello\n",
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
    let big = vec![b'x'; 200_000];
    for (args, input, code, text) in [
        (vec!["bob"], &big[..], 65, "message too large"),
        (vec![], &b"x\n"[..], 64, "no recipients"),
        (vec!["-A", "uid=0", "bob"], &b"x\n"[..], 64, "only fullname"),
        (vec!["bo\tb"], &b"x\n"[..], 65, "bad recipient"),
    ] {
        let out = postdrop(d.path(), &args, input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.starts_with("postdrop: fatal: "), "{err}");
        assert!(err.contains(text), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
    let out = postdrop(&d.path().join("missing"), &["bob"], b"x\n");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
}
