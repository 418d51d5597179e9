//! showq: the queue listing for those who may not read the queue, through `postdrop -q`
//! over `public/showq`. Runs as any user: a sandbox's user may read its own queue, so
//! this checks the path from postdrop to showq and that the listing is the one `petrel
//! queue list` prints; the package test (tests/tests/package.rs) checks an ordinary
//! user's `mailq` on an installed system, where the queue is mail_owner's.
#![allow(clippy::unwrap_used)]

use petrel_tests::{show, Sandbox};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `postdrop -c ETC -q`.
fn postdrop_q(sb: &Sandbox) -> Output {
    Command::new(sb.bin.join("postdrop"))
        .arg("-c")
        .arg(&sb.etc)
        .arg("-q")
        .env_remove("PETREL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn postdrop_q_prints_what_petrel_queue_list_prints() {
    let mut sb = Sandbox::new("showq_postdrop_q_prints_the_listing");
    // The sandbox has no showq (its user reads the queue); add it as an installed system
    // has it (but not chrooted: a sandbox may run as an ordinary user).
    sb.add_service("showq              unix  n       -      n      -      1       showq");
    // A relay host that refuses connections: mail to another domain waits in deferred/.
    sb.set("relayhost", "[127.0.0.1]:1");
    sb.start();
    sb.wait_for("showq running", WAIT, || !sb.pids_of("showq").is_empty());

    // An empty queue first.
    let out = postdrop_q(&sb);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Mail queue is empty\n"
    );

    let sent = sb.sendmail(
        &["-f", "demo@localhost", "someone@example.net"],
        b"Subject: waits\n\nfor a relay host that answers\n",
    );
    assert!(sent.status.success(), "{}", show(&sent));
    sb.wait_for("the message in deferred/ with its reason", WAIT, || {
        sb.queue_files("deferred").len() == 1
            && sb.queue_files("active").is_empty()
            && sb.queue_files("incoming").is_empty()
            && sb.queue_files("maildrop").is_empty()
            && sb.queue_files("defer").len() == 1
    });
    let id = sb.queue_files("deferred").remove(0);

    let direct = sb.petrel(&["queue", "list"]);
    assert!(direct.status.success(), "{}", show(&direct));
    let via_showq = postdrop_q(&sb);
    assert_eq!(via_showq.status.code(), Some(0), "{}", show(&via_showq));
    assert!(via_showq.stderr.is_empty(), "{}", show(&via_showq));
    let listed = String::from_utf8_lossy(&via_showq.stdout).to_string();
    assert!(
        listed.contains(&id)
            && listed.contains("demo@localhost")
            && listed.contains("someone@example.net")
            && listed.ends_with("-- 0 Kbytes in 1 Request.\n"),
        "{listed}"
    );
    assert_eq!(
        listed,
        String::from_utf8_lossy(&direct.stdout),
        "showq's listing is petrel queue list's"
    );

    // Stopped: nobody answers, and postdrop says so (EX_TEMPFAIL).
    sb.stop();
    let out = postdrop_q(&sb);
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let socket = sb.dir.join("spool/public/showq");
    assert!(
        err.starts_with(&format!("postdrop: fatal: {}: ", socket.display()))
            && err.ends_with(": is the mail system running?\n"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
