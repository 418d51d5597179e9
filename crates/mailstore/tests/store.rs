#![allow(clippy::unwrap_used)]
//! Store and folder behaviour on real directories.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::{cur_files, deliver, delivered, flags};
use petrel_mailstore::{FlagSet, Store, StoreError};

#[test]
fn delivered_mail_gets_uids_in_order_and_keeps_them() {
    let (_t, root, store) = delivered(3);
    let f = store.folder("INBOX").unwrap();
    let uids: Vec<u32> = f.messages().map(|m| m.uid).collect();
    assert_eq!(uids, vec![1, 2, 3]);
    assert!(f.messages().all(|m| m.recent));
    let m1 = f.get(1).unwrap();
    assert!(m1.file.contains("Q00001.R0"));
    assert_eq!(m1.size, "Subject: m1\n\nbody 1\n".len() as u64);
    assert_eq!(
        m1.internaldate,
        fs::metadata(f.path(1).unwrap())
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    );
    let v = f.uidvalidity();
    assert_eq!(f.uidnext(), 4);
    assert!(fs::read_dir(root.join("new")).unwrap().next().is_none());
    drop(f);

    let text = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(text.starts_with(&format!("3 V{v} N4 G")), "{text}");
    assert!(text.contains("\n1 :") && text.contains("Q00001.R0"));

    let mut f = Store::open(&root).unwrap().folder("INBOX").unwrap();
    assert_eq!(f.uidvalidity(), v);
    assert!(f.messages().all(|m| !m.recent));
    deliver(&root, 1, 4);
    let ch = f.sync().unwrap();
    assert_eq!(ch.new, vec![4]);
    assert!(ch.expunged.is_empty());
    assert_eq!(f.len(), 4);
    assert_eq!(f.seq_of(4), Some(4));
}

#[test]
fn flags_and_keywords_round_trip_through_file_names() {
    let (_t, root, store) = delivered(2);
    let mut f = store.folder("INBOX").unwrap();
    let hm = f.highest_modseq();
    f.set_flags(1, &flags(&["\\Seen", "\\Deleted", "$Junk", "\\Answered"]))
        .unwrap();
    assert!(f.highest_modseq() > hm);
    assert_eq!(f.get(1).unwrap().modseq, f.highest_modseq());
    let name = f.get(1).unwrap().file.clone();
    assert!(name.ends_with(":2,RSTa"), "{name}");
    assert_eq!(
        fs::read_to_string(root.join("dovecot-keywords")).unwrap(),
        "0 $Junk\n"
    );
    f.set_flags(2, &flags(&["$Forwarded", "\\Flagged"]))
        .unwrap();
    assert!(f.get(2).unwrap().file.ends_with(":2,Fb"));
    drop(f);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(
        f.get(1).unwrap().flags,
        flags(&["\\Seen", "\\Deleted", "$Junk", "\\Answered"])
    );
    assert_eq!(
        f.get(2).unwrap().flags.to_imap(),
        vec!["\\Flagged", "$Forwarded"]
    );
}

#[test]
fn other_sessions_renames_and_unlinks_are_seen() {
    let (_t, root, store) = delivered(3);
    let mut a = store.folder("INBOX").unwrap();
    let mut b = store.folder("INBOX").unwrap();
    // b changes flags of 2 and expunges 3.
    b.set_flags(2, &flags(&["\\Seen"])).unwrap();
    assert_eq!(b.expunge(&[3]).unwrap(), vec![3]);
    let before = a.highest_modseq();
    let ch = a.sync().unwrap();
    assert_eq!(ch.flags, vec![2]);
    assert_eq!(ch.expunged, vec![3]);
    assert!(a.get(2).unwrap().flags.seen);
    assert!(a.get(2).unwrap().modseq > before);
    // A plain rename by another program keeps the UID.
    let p = a.path(1).unwrap();
    let renamed = PathBuf::from(format!("{}F", p.display()));
    fs::rename(&p, &renamed).unwrap();
    let ch = a.sync().unwrap();
    assert_eq!(ch.flags, vec![1]);
    assert!(a.get(1).unwrap().flags.flagged);
    // An unlink by another program is an expunge; the UID is never reused.
    fs::remove_file(a.path(1).unwrap()).unwrap();
    let ch = a.sync().unwrap();
    assert_eq!(ch.expunged, vec![1]);
    deliver(&root, 1, 9);
    let ch = a.sync().unwrap();
    assert_eq!(ch.new, vec![4]);
    let uids: Vec<u32> = a.messages().map(|m| m.uid).collect();
    assert_eq!(uids, vec![2, 4]);
}

#[test]
fn append_expunge_copy() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let store = Store::open(&root).unwrap();
    store.create("Archive").unwrap();
    let mut inbox = store.folder("INBOX").unwrap();
    assert!(inbox.is_empty());
    let uid = inbox
        .append(
            b"Subject: a\n\nhi\n",
            &flags(&["\\Seen", "custom"]),
            Some(1_000_000),
        )
        .unwrap();
    assert_eq!(uid, 1);
    let uid2 = inbox
        .append(b"Subject: b\r\n\r\nho\r\n", &FlagSet::default(), None)
        .unwrap();
    assert_eq!(uid2, 2);
    let ch = inbox.sync().unwrap();
    assert_eq!(ch.new, vec![1, 2]);
    let m = inbox.get(1).unwrap().clone();
    assert_eq!(m.internaldate, 1_000_000);
    assert_eq!(m.size, 15);
    assert!(m.flags.seen && m.flags.keywords.contains("custom"));
    assert_eq!(inbox.rfc822_size(1).unwrap(), 18);
    assert_eq!(inbox.rfc822_size(2).unwrap(), 18);
    assert_eq!(
        fs::read(inbox.path(1).unwrap()).unwrap(),
        b"Subject: a\n\nhi\n"
    );
    assert!(fs::read_dir(root.join("tmp")).unwrap().next().is_none());

    let mut arch = store.folder("Archive").unwrap();
    let pairs = inbox.copy_to(&[1, 2, 99], &mut arch).unwrap();
    assert_eq!(pairs, vec![(1, 1), (2, 2)]);
    let ch = arch.sync().unwrap();
    assert_eq!(ch.new, vec![1, 2]);
    let c = arch.get(1).unwrap();
    assert!(c.flags.seen && c.flags.keywords.contains("custom"));
    assert_eq!(c.internaldate, 1_000_000);
    assert_eq!(
        fs::read(arch.path(1).unwrap()).unwrap(),
        b"Subject: a\n\nhi\n"
    );

    assert_eq!(inbox.expunge(&[1, 5]).unwrap(), vec![1]);
    assert_eq!(inbox.len(), 1);
    assert!(!fs::read_to_string(root.join("dovecot-uidlist"))
        .unwrap()
        .contains("\n1 :"));
    let ch = inbox.sync().unwrap();
    assert!(ch.expunged.is_empty() && ch.new.is_empty());
    assert_eq!(inbox.append(b"x\n", &FlagSet::default(), None).unwrap(), 3);
}

#[test]
fn torn_index_is_rebuilt_and_warm_index_is_used() {
    let (_t, root, store) = delivered(3);
    let mut f = store.folder("INBOX").unwrap();
    f.set_cache(2, 1, b"(ENVELOPE)").unwrap();
    f.set_flags(3, &flags(&["\\Seen"])).unwrap();
    f.sync().unwrap();
    let hm = f.highest_modseq();
    let m3 = f.get(3).unwrap().modseq;
    drop(f);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.cache(2, 1), Some(&b"(ENVELOPE)"[..]));
    assert_eq!(f.highest_modseq(), hm);
    assert_eq!(f.get(3).unwrap().modseq, m3);
    drop(f);
    let idx = root.join("petrel-index");
    let len = fs::metadata(&idx).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.len(), 3);
    assert_eq!(f.cache(2, 1), None);
    assert!(f.get(3).unwrap().flags.seen);
    drop(f);
    // Rewritten whole.
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.len(), 3);
    assert!(petrel_mailstore::index::Index::load(&root).is_some());
}

#[test]
fn uidlist_lock_is_honoured() {
    let (_t, root, mut store) = delivered(1);
    store.set_lock_timeout(Duration::from_millis(50));
    let mut f = store.folder("INBOX").unwrap();
    fs::write(root.join("dovecot-uidlist.lock"), b"123\n").unwrap();
    deliver(&root, 1, 2);
    let e = f.sync().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(f.append(b"x\n", &FlagSet::default(), None).is_err());
    fs::remove_file(root.join("dovecot-uidlist.lock")).unwrap();
    let ch = f.sync().unwrap();
    assert_eq!(ch.new, vec![2]);
}

#[test]
fn folder_operations() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let store = Store::open(&root).unwrap();
    store.create("Lists.work").unwrap();
    store.create("Caf&AOk-").unwrap();
    assert!(matches!(
        store.create("Lists.work"),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(store.create("a..b"), Err(StoreError::BadName(_))));
    assert!(matches!(store.create("a/b"), Err(StoreError::BadName(_))));
    assert!(root.join(".Lists.work/maildirfolder").exists());
    let l = store.list().unwrap();
    let names: Vec<(&str, bool, bool)> = l
        .iter()
        .map(|f| (f.name.as_str(), f.selectable, f.has_children))
        .collect();
    assert_eq!(
        names,
        vec![
            ("INBOX", true, false),
            ("Caf&AOk-", true, false),
            ("Lists", false, true),
            ("Lists.work", true, false)
        ]
    );
    assert!(matches!(store.delete("INBOX"), Err(StoreError::Refused(_))));
    assert!(matches!(store.delete("Nope"), Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.folder("Lists"),
        Err(StoreError::NotFound(_))
    ));

    // Rename moves the children too.
    store.create("Lists").unwrap();
    let mut lists = store.folder("Lists.work").unwrap();
    lists.append(b"m\n", &FlagSet::default(), None).unwrap();
    drop(lists);
    store.rename("Lists", "Old").unwrap();
    assert!(store.exists("Old") && store.exists("Old.work") && !store.exists("Lists.work"));
    assert_eq!(store.folder("Old.work").unwrap().len(), 1);
    assert!(matches!(
        store.rename("Old", "Old.x"),
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store.rename("Old", "Caf&AOk-"),
        Err(StoreError::AlreadyExists(_))
    ));

    // Deleting a parent leaves its child and a \Noselect parent.
    store.delete("Old").unwrap();
    let l = store.list().unwrap();
    let old = l.iter().find(|f| f.name == "Old").unwrap();
    assert!(!old.selectable && old.has_children);
    assert!(store.exists("Old.work"));
    assert!(!fs::read_dir(&root).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("..")));

    // INBOX rename: messages move, INBOX stays and is empty.
    deliver(&root, 2, 1);
    let mut inbox = store.folder("INBOX").unwrap();
    inbox.set_flags(1, &flags(&["$Junk"])).unwrap();
    store.rename("INBOX", "Saved").unwrap();
    let ch = inbox.sync().unwrap();
    assert_eq!(ch.expunged, vec![1, 2]);
    let saved = store.folder("Saved").unwrap();
    assert_eq!(saved.len(), 2);
    assert!(saved.get(1).unwrap().flags.keywords.contains("$Junk"));
    assert!(store.folder("INBOX").unwrap().is_empty());

    // Re-created folder gets a new UIDVALIDITY.
    let v1 = store.folder("Saved").unwrap().uidvalidity();
    store.delete("Saved").unwrap();
    store.create("Saved").unwrap();
    assert!(store.folder("Saved").unwrap().uidvalidity() > v1);
}

#[test]
fn subscriptions_and_special_use() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let store = Store::open(&root).unwrap();
    store.ensure_special_use().unwrap();
    store.ensure_special_use().unwrap();
    store.subscribe("Lists.work").unwrap();
    store.subscribe("Lists.work").unwrap();
    let subs = store.subscriptions().unwrap();
    assert_eq!(
        subs,
        vec!["Sent", "Drafts", "Trash", "Junk", "Archive", "Lists.work"]
    );
    let text = fs::read_to_string(root.join("subscriptions")).unwrap();
    assert!(text.starts_with("V\t2\n\nSent\n") && text.ends_with("Lists\twork\n"));
    store.unsubscribe("Sent").unwrap();
    assert!(matches!(
        store.unsubscribe("Sent"),
        Err(StoreError::NotFound(_))
    ));
    let l = store.list().unwrap();
    assert_eq!(
        l.iter().find(|f| f.name == "Trash").unwrap().special_use,
        Some("\\Trash")
    );
    assert_eq!(l.len(), 6);
}

/// 100,000 messages: the warm-index sync must be fast. Run with
/// `cargo test -p petrel-mailstore --release -- --ignored big`.
#[test]
#[ignore]
fn big_folder_sync_with_warm_index() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let store = Store::open(&root).unwrap();
    for i in 0..100_000u32 {
        fs::write(
            root.join("new")
                .join(format!("{}.Q{i:06}.R0.host,S=10", 1_000_000 + i)),
            b"Subject: x\n",
        )
        .unwrap();
    }
    let t0 = std::time::Instant::now();
    let f = store.folder("INBOX").unwrap();
    eprintln!(
        "cold open (moves + stats + uidlist + index): {:?}",
        t0.elapsed()
    );
    assert_eq!(f.len(), 100_000);
    drop(f);
    let t1 = std::time::Instant::now();
    let mut f = store.folder("INBOX").unwrap();
    let warm_open = t1.elapsed();
    let t2 = std::time::Instant::now();
    let ch = f.sync().unwrap();
    let resync = t2.elapsed();
    eprintln!("warm open: {warm_open:?}, resync: {resync:?}");
    assert!(ch.new.is_empty());
    // Timings are printed for information only: speed targets live in the benches.
    let _ = (warm_open, resync);
}

#[test]
fn cur_files_helper_is_used() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    deliver(&root, 1, 1);
    let _f = Store::open(&root).unwrap().folder("INBOX").unwrap();
    assert_eq!(cur_files(&root).len(), 1);
}

#[test]
fn a_quiet_folder_is_not_rescanned_but_every_change_is_seen() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let store = Store::open(&root).unwrap();
    deliver(&root, 2, 0);
    let mut f = store.folder("INBOX").unwrap();
    assert_eq!(f.len(), 2);
    // Changes right after a sync (same timestamp tick) are still found: the stamps of a
    // directory that changed less than a second ago are not trusted.
    deliver(&root, 1, 10);
    assert_eq!(f.sync().unwrap().new.len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(f.sync().unwrap().new.is_empty());
    // Quiet now: the next syncs find nothing, and a delivery is still found at once.
    assert!(f.sync().unwrap().new.is_empty());
    deliver(&root, 1, 20);
    assert_eq!(f.sync().unwrap().new.len(), 1);
    assert_eq!(f.len(), 4);
    // Another session's flag change (a rename in cur/) after a quiet spell.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(f.sync().unwrap().flags.is_empty());
    let mut other = store.folder("INBOX").unwrap();
    let uid = other.messages().next().unwrap().uid;
    other.set_flags(uid, &flags(&["\\Seen"])).unwrap();
    assert_eq!(f.sync().unwrap().flags.len(), 1);
}

/// Someone deletes dovecot-uidlist under an open folder: the next sync makes one new
/// UIDVALIDITY (reported), writes it, and the folder goes on — it used to make a new one
/// on every nested resync until the stack overflowed.
#[test]
fn a_deleted_uid_list_gives_one_new_uidvalidity_and_no_crash() {
    let (_t, root, store) = delivered(3);
    let mut f = store.folder("INBOX").unwrap();
    let old = f.uidvalidity();
    fs::remove_file(root.join("dovecot-uidlist")).unwrap();
    deliver(&root, 1, 4);
    let ch = f.sync().unwrap();
    assert!(ch.uidvalidity_changed);
    let v = f.uidvalidity();
    assert_ne!(v, 0);
    assert_ne!(v, old);
    assert_eq!(f.len(), 4, "every file is still a message");
    let text = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(text.starts_with(&format!("3 V{v} ")), "{text}");
    let ch = f.sync().unwrap();
    assert!(!ch.uidvalidity_changed, "{ch:?}");
    assert_eq!(f.uidvalidity(), v);
    let again = Store::open(&root).unwrap().folder("INBOX").unwrap();
    assert_eq!(again.uidvalidity(), v);
    assert_eq!(again.len(), 4);
}

/// Another program removes files here and there and renames one: one sync finds them all,
/// and the messages left keep their order and sequence numbers.
#[test]
fn files_removed_by_others_here_and_there_are_expunged_in_one_sync() {
    let (_t, _root, store) = delivered(8);
    let mut f = store.folder("INBOX").unwrap();
    let gen = f.expunge_generation();
    for uid in [1, 4, 5, 8] {
        fs::remove_file(f.path(uid).unwrap()).unwrap();
    }
    let p = f.path(6).unwrap();
    fs::rename(&p, format!("{}S", p.display())).unwrap();
    let ch = f.sync().unwrap();
    assert_eq!(ch.expunged, vec![1, 4, 5, 8]);
    assert_eq!(ch.flags, vec![6]);
    assert!(ch.new.is_empty());
    assert_ne!(f.expunge_generation(), gen);
    assert_eq!(
        f.messages().map(|m| m.uid).collect::<Vec<_>>(),
        [2, 3, 6, 7]
    );
    assert_eq!(f.seq_of(6), Some(3));
    assert_eq!(f.by_seq(4).unwrap().uid, 7);
    assert!(f.get(6).unwrap().flags.seen);
    assert!(f.sync().unwrap().expunged.is_empty());
}
