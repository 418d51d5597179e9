//! `petrel config set NAME=VALUE...` (postconf -e) on a sandbox: the file is edited in
//! place and keeps its comments and mode, bad input writes nothing, and a running system
//! takes a change on `petrel reload`.
#![allow(clippy::unwrap_used)]

use petrel_tests::{Sandbox, SmtpClient};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use petrel_tests::show;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The text after `SIZE ` in an EHLO reply from the sandbox's smtpd (None: no SIZE),
/// or Err when the dialogue failed (smtpd being replaced by a reload).
fn ehlo_size(sb: &Sandbox) -> Result<Option<String>, String> {
    let mut c = SmtpClient::connect(sb.smtp_port()).map_err(|e| e.to_string())?;
    let g = c.reply().map_err(|e| format!("greeting: {e:?}"))?;
    if g.code != 220 {
        return Err(format!("greeting: {g}"));
    }
    c.send(b"EHLO size.example\r\n")
        .map_err(|e| e.to_string())?;
    let r = c.reply().map_err(|e| format!("EHLO: {e:?}"))?;
    if r.code != 250 {
        return Err(format!("EHLO: {r}"));
    }
    let _ = c.send(b"QUIT\r\n");
    Ok(r.texts()
        .into_iter()
        .find_map(|t| t.strip_prefix("SIZE ").map(str::to_string)))
}

#[test]
fn config_set_edits_petrel_conf_in_place_and_checks_first() {
    let sb = Sandbox::new("config_set_edits_in_place");
    let conf = sb.etc.join("petrel.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read_to_string(&conf).unwrap();
    let comments: Vec<&str> = before.lines().filter(|l| l.starts_with('#')).collect();
    assert!(comments.len() > 3, "the sandbox writes comments:\n{before}");
    assert!(before.contains("\nmyhostname = mail.sandbox.test\n"));

    let out = sb.petrel(&[
        "config",
        "set",
        "myhostname=mail.set.test",
        "message_size_limit = 2000000",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "silent: {}",
        show(&out)
    );
    let shown = sb.petrel(&["config", "show", "myhostname", "message_size_limit"]);
    assert!(shown.status.success(), "{}", show(&shown));
    assert_eq!(
        stdout(&shown),
        "myhostname = mail.set.test\nmessage_size_limit = 2000000\n"
    );
    let changed = sb.petrel(&["config", "show", "-n"]);
    assert!(
        stdout(&changed).contains("message_size_limit = 2000000\n"),
        "{}",
        show(&changed)
    );
    let after = std::fs::read_to_string(&conf).unwrap();
    // Replaced in place, appended at the end, nothing else touched.
    assert_eq!(
        after,
        format!(
            "{}message_size_limit = 2000000\n",
            before.replace(
                "\nmyhostname = mail.sandbox.test\n",
                "\nmyhostname = mail.set.test\n"
            )
        )
    );
    for c in &comments {
        assert!(after.contains(c), "comment {c:?} lost:\n{after}");
    }
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the mode is kept");
    assert!(!sb.etc.join("petrel.conf.tmp").exists());

    // A bad value: fatal, names the parameter, nothing written (not even the good one).
    let bytes = std::fs::read(&conf).unwrap();
    let out = sb.petrel(&[
        "config",
        "set",
        "myhostname=other.test",
        "message_size_limit=abc",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).starts_with("petrel: fatal: message_size_limit = abc: "),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read(&conf).unwrap(), bytes, "file unchanged");

    // No '=': a usage error.
    let out = sb.petrel(&["config", "set", "myhostname"]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        stderr(&out).contains("expected name=value"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read(&conf).unwrap(), bytes, "file unchanged");
    // No argument at all: clap's usage error.
    let out = sb.petrel(&["config", "set"]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    // A line break in a value is refused.
    let out = sb.petrel(&["config", "set", "relayhost=a\nmyhostname=b"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(std::fs::read(&conf).unwrap(), bytes, "file unchanged");

    // An unknown name: warned about, written anyway.
    let out = sb.petrel(&["config", "set", "frobnicate_limit=7"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stderr(&out),
        "petrel: warning: frobnicate_limit: unknown parameter\n"
    );
    let after = std::fs::read_to_string(&conf).unwrap();
    assert!(after.ends_with("\nfrobnicate_limit = 7\n"), "{after}");

    // An empty value; the file still passes petrel check's configuration part.
    let out = sb.petrel(&["config", "set", "relayhost="]);
    assert!(out.status.success(), "{}", show(&out));
    let shown = sb.petrel(&["config", "show", "relayhost"]);
    assert_eq!(stdout(&shown), "relayhost = \n");
}

#[test]
fn config_set_then_reload_changes_the_size_limit_in_effect() {
    let mut sb = Sandbox::new("config_set_then_reload");
    sb.start_smtp();
    let default = ehlo_size(&sb).unwrap().expect("smtpd advertises SIZE");
    assert_eq!(default, "10240000", "message_size_limit's default");

    let out = sb.petrel(&["config", "set", "message_size_limit=2000000"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        show(&out)
    );
    // Not in effect before the reload.
    assert_eq!(ehlo_size(&sb).unwrap(), Some(default));
    let out = sb.petrel(&["reload"]);
    assert!(out.status.success(), "{}", show(&out));
    sb.wait_for("SIZE 2000000 after reload", Duration::from_secs(20), || {
        ehlo_size(&sb) == Ok(Some("2000000".to_string()))
    });
    let mut c = SmtpClient::ehlo(sb.smtp_port(), "big.example");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.net> SIZE=2000001").last(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    let _ = c.send(b"QUIT\r\n");
    sb.stop();
}
