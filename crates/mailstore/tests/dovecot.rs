#![allow(clippy::unwrap_used)]
//! Interop with a Maildir written by the installed Dovecot (`doveadm`), both ways. Skipped
//! with a printed reason when `doveadm` is missing or cannot run here.

mod common;

use common::Dovecot;
use petrel_mailstore::{FlagSet, Store};

#[test]
fn dovecot_written_maildir_opens_with_the_same_folders_flags_and_uids() {
    let t = tempfile::tempdir().unwrap();
    let dove = Dovecot::new(t.path());
    let run = |args: &[&str], stdin: Option<&[u8]>| dove.doveadm(args, stdin);
    if run(
        &["mailbox", "create", "-s", "Foo", "Lists.work", "Café"],
        None,
    )
    .is_none()
    {
        eprintln!("SKIPPED: doveadm is missing or cannot run here");
        return;
    }
    run(&["save", "-m", "INBOX"], Some(b"Subject: a\n\nhello\n")).unwrap();
    run(&["save", "-m", "INBOX"], Some(b"Subject: b\n\nhello2\n")).unwrap();
    run(
        &["save", "-m", "Lists.work"],
        Some(b"Subject: c\n\nhello3\n"),
    )
    .unwrap();
    dove.add_flags("INBOX", 1, "\\Seen $Junk").unwrap();
    dove.add_flags(
        "INBOX",
        2,
        "\\Answered \\Flagged \\Deleted \\Draft $Forwarded foo",
    )
    .unwrap();
    let dove_uidvalidity = run(
        &["-f", "flow", "mailbox", "status", "uidvalidity", "INBOX"],
        None,
    )
    .unwrap();
    let dove_uidvalidity: u32 = dove_uidvalidity
        .split("uidvalidity=")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let store = Store::open(&dove.maildir).unwrap();
    let names: Vec<(String, bool)> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.selectable))
        .collect();
    let want: Vec<(String, bool)> = [
        ("INBOX", true),
        ("Caf&-AOk-", false),
        ("Foo", true),
        ("Lists", false),
        ("Lists.work", true),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), *s))
    .collect();
    // Dovecot encodes "Café" in modified UTF-7; which form depends on its UTF-8 handling.
    let cafe = names
        .iter()
        .find(|(n, _)| n.starts_with("Caf"))
        .unwrap()
        .0
        .clone();
    assert!(cafe == "Caf&AOk-" || cafe == "Caf&-AOk-", "{cafe}");
    let want: Vec<(String, bool)> = want
        .into_iter()
        .map(|(n, s)| {
            if n.starts_with("Caf") {
                (cafe.clone(), true)
            } else {
                (n, s)
            }
        })
        .collect();
    let mut got = names.clone();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    let subs = store.subscriptions().unwrap();
    assert!(
        subs.contains(&"Lists.work".to_string()) && subs.contains(&"Foo".to_string()),
        "{subs:?}"
    );

    let mut inbox = store.folder("INBOX").unwrap();
    assert_eq!(inbox.uidvalidity(), dove_uidvalidity);
    let uids: Vec<u32> = inbox.messages().map(|m| m.uid).collect();
    assert_eq!(uids, vec![1, 2]);
    let f1 = &inbox.get(1).unwrap().flags;
    assert_eq!(f1.to_imap(), vec!["\\Seen", "$Junk"]);
    let f2 = &inbox.get(2).unwrap().flags;
    assert_eq!(
        f2.to_imap(),
        vec![
            "\\Answered",
            "\\Flagged",
            "\\Deleted",
            "\\Draft",
            "$Forwarded",
            "foo"
        ]
    );
    assert_eq!(inbox.rfc822_size(1).unwrap(), 21, "from W=");
    let work = store.folder("Lists.work").unwrap();
    assert_eq!(work.messages().map(|m| m.uid).collect::<Vec<_>>(), vec![1]);

    // And back: what we write, Dovecot reads.
    let mut fl = FlagSet::from_imap(["\\Flagged", "newkw"]);
    inbox.set_flags(1, &fl).unwrap();
    let uid3 = inbox
        .append(
            b"Subject: d\n\nfrom petrel\n",
            &FlagSet::from_imap(["\\Seen"]),
            None,
        )
        .unwrap();
    assert_eq!(uid3, 3);
    fl.keywords.clear();
    drop(inbox);
    store.create("Petrel.made").unwrap();
    let mut pm = store.folder("Petrel.made").unwrap();
    pm.append(b"Subject: e\n\nx\n", &FlagSet::default(), None)
        .unwrap();
    drop(pm);
    dove.chown(&dove.maildir);
    let out = run(&["fetch", "uid flags", "mailbox", "INBOX", "all"], None).unwrap();
    assert!(out.contains("uid: 1\nflags: \\Flagged newkw"), "{out}");
    assert!(
        out.contains("uid: 3\nflags: \\Recent \\Seen") || out.contains("uid: 3\nflags: \\Seen"),
        "{out}"
    );
    let list = run(&["mailbox", "list"], None).unwrap();
    assert!(list.lines().any(|l| l == "Petrel.made"), "{list}");
    let out = run(&["fetch", "uid", "mailbox", "Petrel.made", "all"], None).unwrap();
    assert!(out.contains("uid: 1"), "{out}");
}
