//! Runs the built `sendmail` with the built `postdrop` against a temporary spool.
//!
//! postdrop belongs to another package, so it is only there when it has been built
//! (`cargo build -p petrel-postdrop`, or a workspace build); without it these tests say
//! so and pass.
#![allow(clippy::unwrap_used)] // tests may panic

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Held while a test writes a script or runs a program: a script still open for writing in
/// a child forked by another test cannot be executed (ETXTBSY).
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(|e| e.into_inner())
}

fn postdrop() -> Option<PathBuf> {
    let sendmail = Path::new(env!("CARGO_BIN_EXE_sendmail"));
    let p = sendmail.parent()?.join("postdrop");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is not built (cargo build -p petrel-postdrop)",
            p.display()
        );
        None
    }
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        petrel_queue::spool::create(&spool, None).unwrap();
        std::fs::write(
            dir.path().join("petrel.conf"),
            format!(
                "queue_directory = {}\nmyhostname = test.example\n",
                spool.display()
            ),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn sendmail(&self, postdrop: &Path, args: &[&str], input: &[u8]) -> Output {
        let _g = spawn_lock();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sendmail"))
            .arg("-C")
            .arg(self.dir.path())
            .args(args)
            .env("PETREL_POSTDROP", postdrop)
            .env_remove("PETREL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn maildrop(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("spool/maildrop"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

fn read(path: &Path) -> (petrel_queue::Envelope, String) {
    let mut f = std::fs::File::open(path).unwrap();
    let env = petrel_queue::file::read_envelope(&mut f).unwrap();
    let body = petrel_queue::file::read_content(&f, &env).unwrap();
    (env, String::from_utf8(body).unwrap())
}

#[test]
fn dash_t_extracts_recipients_and_drops_bcc() {
    let Some(pd) = postdrop() else { return };
    let sb = Sandbox::new();
    let msg = b"From: Alice <alice@example.org>\r\n\
To: \"Smith, Bob\" <bob@example.org>, carol\r\n\
Bcc: secret@example.org,\r\n  hidden@example.org\r\n\
Subject: test\r\n\
\r\n\
body line\r\n\
..two dots stay\r\n\
.\r\n\
after the dot\r\n";
    let out = sb.sendmail(
        &pd,
        &[
            "-t",
            "-f",
            "alice@example.org",
            "-F",
            "Alice",
            "extra@example.org",
        ],
        msg,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "sendmail prints nothing on success");
    let files = sb.maildrop();
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let (env, body) = read(&files[0]);
    assert_eq!(env.sender, "alice@example.org");
    assert_eq!(env.attr("fullname"), Some("Alice"));
    assert_eq!(env.attr("protocol"), Some("local"));
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "extra@example.org",
            "bob@example.org",
            "carol",
            "secret@example.org",
            "hidden@example.org"
        ]
    );
    assert_eq!(
        body,
        "From: Alice <alice@example.org>\nTo: \"Smith, Bob\" <bob@example.org>, carol\nSubject: test\n\nbody line\n..two dots stay\n"
    );
}

#[test]
fn errors_have_sysexits_codes() {
    let Some(pd) = postdrop() else { return };
    let sb = Sandbox::new();
    let out = sb.sendmail(&pd, &[], b"x\n");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sendmail: fatal: no recipients specified\n"
    );
    let out = sb.sendmail(&pd, &["-t"], b"Subject: none\n\nx\n");
    assert_eq!(out.status.code(), Some(64));
    let out = sb.sendmail(&pd, &["-f", "a", "bo\tb"], b"x\n");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("sendmail: fatal: bad recipient"));
    let out = sb.sendmail(&pd, &["-C", "/nonexistent/petrel", "bob"], b"x\n");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(sb.maildrop().is_empty());
}

#[test]
fn smtp_dialogue_queues_through_postdrop() {
    let Some(pd) = postdrop() else { return };
    let sb = Sandbox::new();
    let out = sb.sendmail(
        &pd,
        &["-bs"],
        b"EHLO me\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: s\r\n\r\n..x\r\n.\r\nQUIT\r\n",
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("220 test.example ESMTP Petrel\r\n"),
        "{text}"
    );
    let files = sb.maildrop();
    assert_eq!(files.len(), 1);
    let id = files[0].file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("250 2.0.0 Ok: queued as {id}\r\n")),
        "{text}"
    );
    assert!(text.ends_with("221 2.0.0 Bye\r\n"));
    let (env, body) = read(&files[0]);
    assert_eq!(env.sender, "alice@example.org");
    assert_eq!(body, "Subject: s\n\n.x\n");
}

#[test]
fn sendmail_killed_mid_message_queues_nothing() {
    let Some(pd) = postdrop() else { return };
    let sb = Sandbox::new();
    let guard = spawn_lock();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendmail"))
        .arg("-C")
        .arg(sb.dir.path())
        .args(["-f", "alice", "bob"])
        .env("PETREL_POSTDROP", &pd)
        .env_remove("PETREL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(guard);
    let mut stdin = child.stdin.take().unwrap();
    // More than a chunk, so postdrop has been given part of the message.
    stdin
        .write_all(&b"Subject: half\n\nsome line\n".repeat(10_000))
        .unwrap();
    stdin.flush().unwrap();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for("postdrop's file", &|| !sb.maildrop().is_empty());
    child.kill().unwrap(); // SIGKILL: sendmail can neither pass it on nor clean up.
    child.wait().unwrap();
    drop(stdin);
    // postdrop now sees its input end without the end marker and removes its file.
    wait_for("the partial file to go", &|| sb.maildrop().is_empty());
    // And a whole message still goes through.
    let out = sb.sendmail(&pd, &["-f", "alice", "bob"], b"Subject: whole\n\nx\n");
    assert!(out.status.success(), "{out:?}");
    let files = sb.maildrop();
    assert_eq!(files.len(), 1);
    assert_eq!(read(&files[0]).1, "Subject: whole\n\nx\n");
}

#[test]
fn mailq_flush_and_newaliases() {
    let sb = Sandbox::new();
    let guard = spawn_lock();
    let cli = sb.dir.path().join("fake-petrel");
    std::fs::write(&cli, "#!/bin/sh\necho \"$@\"\n").unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mailq = sb.dir.path().join("mailq");
    let newaliases = sb.dir.path().join("newaliases");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sendmail"), &mailq).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sendmail"), &newaliases).unwrap();
    let conf = sb.dir.path().display().to_string();
    drop(guard);
    let run = |program: &Path, args: &[&str]| {
        let _g = spawn_lock();
        Command::new(program)
            .args(args)
            .env("PETREL_CLI", &cli)
            .env("PETREL_CONFIG", sb.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let sendmail = Path::new(env!("CARGO_BIN_EXE_sendmail"));
    for (program, args, want) in [
        (sendmail, vec!["-bp"], "queue list"),
        (mailq.as_path(), vec![], "queue list"),
        (sendmail, vec!["-q30m"], "queue flush"),
        (sendmail, vec!["-q"], "queue flush"),
    ] {
        let out = run(program, &args);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("-c {conf} {want}\n")
        );
    }

    let aliases = sb.dir.path().join("aliases");
    std::fs::write(&aliases, "postmaster: root\nabuse: postmaster\n").unwrap();
    let mut conf_text = std::fs::read_to_string(sb.dir.path().join("petrel.conf")).unwrap();
    conf_text.push_str(&format!("alias_maps = hash:{}\n", aliases.display()));
    std::fs::write(sb.dir.path().join("petrel.conf"), conf_text).unwrap();
    for (program, args) in [(newaliases.as_path(), vec![]), (sendmail, vec!["-bi"])] {
        let out = run(program, &args);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("newaliases: {}: 2 aliases\n", aliases.display())
        );
    }
    std::fs::write(&aliases, "postmaster root\n").unwrap();
    let out = run(&newaliases, &[]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("newaliases: {}, line 1:", aliases.display())),
        "{err}"
    );
}
