#![allow(clippy::unwrap_used)]
//! Opening a quiet folder from `petrel-index` alone (the stamps of `new/`, `cur/`,
//! `dovecot-uidlist` and `dovecot-keywords` still match; a UID list rewritten with the same
//! UIDVALIDITY costs only a look at its header), and everything that must make an open or a
//! sync look at the directories again. No timings are measured here (see
//! `examples/open_bench.rs`); instead of sleeping out the one-second settle time, the
//! mtimes are moved into the past.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{deliver, delivered, flags, Dovecot};
use petrel_mailstore::index::Index;
use petrel_mailstore::uidlist::UidList;
use petrel_mailstore::{FlagSet, Folder, Store};
use tempfile::TempDir;

/// Moves the mtimes of `names` in `dir` ten seconds back: as if they had been left alone
/// for that long.
fn backdate(dir: &Path, names: &[&str]) {
    let when = SystemTime::now() - Duration::from_secs(10);
    for p in names {
        if let Ok(f) = fs::File::open(dir.join(p)) {
            f.set_modified(when).unwrap();
        }
    }
}

/// Settles what the stamps cover and opens the folder once, so that its index records
/// them; then settles the index too.
fn settle_and_record(store: &Store, dir: &Path) {
    backdate(
        dir,
        &[
            "cur",
            "new",
            "dovecot-uidlist",
            "dovecot-keywords",
            "petrel-index",
        ],
    );
    drop(store.folder("INBOX").unwrap());
    let i = Index::load(dir).unwrap();
    assert!(i.stamps.is_some(), "the index records the settled stamps");
    backdate(dir, &["petrel-index"]);
}

/// `n` messages delivered (see [`delivered`]) and the folder opened once, its stamps
/// recorded: its next open is quiet.
fn recorded(n: usize) -> (TempDir, PathBuf, Store) {
    let (t, root, store) = delivered(n);
    drop(store.folder("INBOX").unwrap());
    settle_and_record(&store, &root);
    (t, root, store)
}

/// Everything a client sees of the folder (not the MODSEQs, which a rebuilt index
/// reassigns).
fn view(f: &Folder) -> Vec<(u32, String, u64, i64, Vec<String>)> {
    f.messages()
        .map(|m| {
            (
                m.uid,
                m.file.clone(),
                m.size,
                m.internaldate,
                m.flags.to_imap(),
            )
        })
        .collect()
}

fn modseqs(f: &Folder) -> Vec<u64> {
    f.messages().map(|m| m.modseq).collect()
}

/// Overwrites a file in place (same inode, same length) and puts its mtime back, so that
/// its stamp does not change; returns the old contents.
fn garble_keeping_stamp(path: &Path) -> Vec<u8> {
    let old = fs::read(path).unwrap();
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![b'#'; old.len()], 0).unwrap();
    f.set_modified(mtime).unwrap();
    old
}

fn restore_keeping_stamp(path: &Path, data: &[u8]) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, 0).unwrap();
    f.set_modified(mtime).unwrap();
}

fn cur_file(root: &Path, f: &Folder, uid: u32) -> PathBuf {
    root.join("cur").join(&f.get(uid).unwrap().file)
}

#[test]
fn a_quiet_folder_opens_from_the_index_and_every_change_is_noticed() {
    let (_t, root, store) = delivered(5);
    let mut f = store.folder("INBOX").unwrap();
    f.set_cache(2, 1, b"(ENVELOPE 2)").unwrap();
    f.set_cache(2, 2, b"(BODY 2)").unwrap();
    f.set_cache(4, 1, b"(ENVELOPE 4)").unwrap();
    f.set_flags(3, &flags(&["\\Seen", "$Work"])).unwrap();
    f.sync().unwrap();
    let want = view(&f);
    let want_modseqs = modseqs(&f);
    let uidvalidity = f.uidvalidity();
    let uidnext = f.uidnext();
    let hm = f.highest_modseq();
    drop(f);
    settle_and_record(&store, &root);

    // The UID list is not even read: garbled in place (its stamp unchanged), the folder
    // still opens with its UIDs, from the index.
    let uidlist = root.join("dovecot-uidlist");
    let saved = garble_keeping_stamp(&uidlist);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.uidvalidity(), uidvalidity);
    assert_eq!(f.uidnext(), uidnext);
    assert_eq!(f.highest_modseq(), hm);
    assert_eq!(view(&f), want);
    assert_eq!(modseqs(&f), want_modseqs);
    assert!(f.messages().all(|m| !m.recent));
    assert_eq!(f.cache(2, 1), Some(&b"(ENVELOPE 2)"[..]));
    assert_eq!(f.cache(2, 2), Some(&b"(BODY 2)"[..]));
    assert_eq!(f.cache(4, 1), Some(&b"(ENVELOPE 4)"[..]));
    assert_eq!(f.cache(4, 2), None);
    assert_eq!(f.cache(1, 1), None);
    assert_eq!(f.keywords().letter("$Work"), Some('a'));
    drop(f);
    restore_keeping_stamp(&uidlist, &saved);

    // A quiet open's folder syncs like any other: cache blobs set after it are kept with
    // the ones never read, and a rewrite of the index keeps every one.
    let mut f = store.folder("INBOX").unwrap();
    f.set_cache(5, 1, b"(ENVELOPE 5)").unwrap();
    assert!(f.sync().unwrap().new.is_empty());
    drop(f);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.cache(2, 2), Some(&b"(BODY 2)"[..]));
    assert_eq!(f.cache(5, 1), Some(&b"(ENVELOPE 5)"[..]));
    drop(f);
    settle_and_record(&store, &root);

    // A delivery to new/: the next open and the next sync of an open folder find it.
    let mut open = store.folder("INBOX").unwrap();
    deliver(&root, 1, 10);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.len(), 6);
    assert!(f.get(6).unwrap().recent);
    assert!(f.get(6).unwrap().modseq > hm);
    let ch = open.sync().unwrap();
    assert_eq!(ch.new, vec![6]);
    drop((f, open));
    settle_and_record(&store, &root);

    // Another program's rename in cur/ (a flag change).
    let mut open = store.folder("INBOX").unwrap();
    let before = open.highest_modseq();
    let p = cur_file(&root, &open, 1);
    fs::rename(&p, format!("{}F", p.display())).unwrap();
    let f = store.folder("INBOX").unwrap();
    assert!(f.get(1).unwrap().flags.flagged);
    assert!(f.get(1).unwrap().modseq > before);
    assert_eq!(f.cache(2, 1), Some(&b"(ENVELOPE 2)"[..]));
    let ch = open.sync().unwrap();
    assert_eq!(ch.flags, vec![1]);
    assert!(open.get(1).unwrap().flags.flagged);
    drop((f, open));
    settle_and_record(&store, &root);

    // A file deleted by another program.
    let mut open = store.folder("INBOX").unwrap();
    fs::remove_file(cur_file(&root, &open, 5)).unwrap();
    let f = store.folder("INBOX").unwrap();
    assert!(f.get(5).is_none());
    assert_eq!(f.len(), 5);
    let ch = open.sync().unwrap();
    assert_eq!(ch.expunged, vec![5]);
    drop((f, open));
    settle_and_record(&store, &root);

    // dovecot-keywords rewritten by another program: the same letter names another
    // keyword now.
    let mut open = store.folder("INBOX").unwrap();
    assert_eq!(open.get(3).unwrap().flags.to_imap(), ["\\Seen", "$Work"]);
    let before = open.highest_modseq();
    fs::write(root.join("dovecot-keywords"), "0 $Home\n").unwrap();
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.get(3).unwrap().flags.to_imap(), ["\\Seen", "$Home"]);
    let ch = open.sync().unwrap();
    assert_eq!(ch.flags, vec![3]);
    assert_eq!(open.get(3).unwrap().flags.to_imap(), ["\\Seen", "$Home"]);
    assert!(open.get(3).unwrap().modseq > before);
    drop((f, open));

    // Stamps that have not settled are never recorded (another change could follow within
    // the same mtime tick, unseen): cur/ dated in the future here, so that it cannot settle
    // however slowly this runs. The index written then vouches for nothing, and the next
    // open looks at the directory again.
    settle_and_record(&store, &root);
    fs::File::open(root.join("cur"))
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    let mut f = store.folder("INBOX").unwrap();
    f.set_flags(2, &flags(&["\\Deleted"])).unwrap();
    drop(f);
    assert!(Index::load(&root).unwrap().stamps.is_none());
    let f = store.folder("INBOX").unwrap();
    let p = cur_file(&root, &f, 2);
    drop(f);
    fs::rename(&p, format!("{}S", p.display())).unwrap();
    let f = store.folder("INBOX").unwrap();
    assert!(f.get(2).unwrap().flags.seen && f.get(2).unwrap().flags.deleted);
}

#[test]
fn a_quiet_open_is_followed_by_quiet_syncs_until_something_changes() {
    let (_t, root, store) = recorded(3);
    let mut f = store.folder("INBOX").unwrap();
    // The UID list garbled in place is not read by the syncs of a quiet folder either.
    let uidlist = root.join("dovecot-uidlist");
    let saved = garble_keeping_stamp(&uidlist);
    let uidvalidity = f.uidvalidity();
    assert_eq!(f.sync().unwrap(), Default::default());
    assert_eq!(f.uidvalidity(), uidvalidity);
    restore_keeping_stamp(&uidlist, &saved);
    // A delivery: the sync reads the UID list it skipped and gives the next UID.
    deliver(&root, 1, 7);
    let ch = f.sync().unwrap();
    assert_eq!(ch.new, vec![4]);
    assert_eq!(f.uidnext(), 5);
    assert_eq!(f.uidvalidity(), uidvalidity);
    // Appends through the quiet-opened folder get the next UIDs too.
    assert_eq!(f.append(b"x\n", &FlagSet::default(), None).unwrap(), 5);
    assert_eq!(f.sync().unwrap().new, vec![5]);
}

/// The index's own layout (see `index.rs`): header, blobs, records, names.
fn index_parts(data: &[u8]) -> (usize, usize, usize) {
    let blobs_len = u64::from_le_bytes(data[40..48].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(data[20..24].try_into().unwrap()) as usize;
    let recs_at = 192 + blobs_len;
    (192, recs_at, recs_at + count * 48)
}

#[test]
fn a_torn_or_garbled_index_is_never_trusted_and_is_rebuilt() {
    let (_t, root, store) = delivered(4);
    let mut f = store.folder("INBOX").unwrap();
    for uid in 1..=4 {
        f.set_cache(uid, 1, format!("(ENVELOPE {uid})").as_bytes())
            .unwrap();
    }
    f.set_flags(2, &flags(&["\\Seen", "$Junk"])).unwrap();
    f.sync().unwrap();
    let want = view(&f);
    drop(f);
    settle_and_record(&store, &root);
    let idx = root.join("petrel-index");
    let good = fs::read(&idx).unwrap();
    let (blobs_at, recs_at, names_at) = index_parts(&good);
    assert!(blobs_at < recs_at && recs_at < names_at && names_at < good.len());

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 1, 100, blobs_at, recs_at, names_at, good.len() - 1] {
        cases.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    for at in [
        0,
        9,
        13,
        30,
        60,
        blobs_at - 1,
        blobs_at + 3,
        recs_at - 2,
        recs_at,
        recs_at + 9,
        names_at - 1,
        names_at + 2,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[at] ^= 0x04;
        cases.push((format!("byte {at} flipped"), b));
    }
    // An index of an older format is not read but rebuilt.
    let mut v2 = good.clone();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    cases.push(("version 2".into(), v2));
    let v1 = format!(
        "PETREL-INDEX 1 {} 9 1 0000000000000000\n1\t1\t1\t-\t1\tx:2,\t\n",
        Index::load(&root).unwrap().uidvalidity
    );
    cases.push(("version 1".into(), v1.into_bytes()));
    for (what, bytes) in cases {
        fs::write(&idx, &bytes).unwrap();
        let f = store.folder("INBOX").unwrap();
        assert_eq!(view(&f), want, "{what}");
        for uid in 1..=4 {
            // A blob is right or missing, never wrong.
            let c = f.cache(uid, 1);
            let right = format!("(ENVELOPE {uid})");
            assert!(c.is_none() || c == Some(right.as_bytes()), "{what}: {c:?}");
        }
        drop(f);
        // Rebuilt whole.
        let rebuilt = Index::load(&root).unwrap_or_else(|| panic!("{what}: not rebuilt"));
        assert_eq!(rebuilt.records.len(), 4, "{what}");
        let f = store.folder("INBOX").unwrap();
        assert_eq!(view(&f), want, "{what}");
        drop(f);
        fs::write(&idx, &good).unwrap();
    }
}

/// Rewrites `dovecot-uidlist` the way its writers do (a new file renamed over it), changed
/// by `edit`.
fn rewrite_uidlist(root: &Path, edit: impl FnOnce(&mut UidList)) {
    let mut l = UidList::load(root).unwrap().unwrap();
    edit(&mut l);
    let tmp = root.join("dovecot-uidlist.tmp");
    fs::write(&tmp, l.to_text()).unwrap();
    fs::rename(&tmp, root.join("dovecot-uidlist")).unwrap();
}

/// Dovecot's way: the same entries with extension fields of its own (GUIDs, sizes) and
/// another next UID in the header.
fn dovecot_style(l: &mut UidList, next_uid: u32) {
    l.next_uid = next_uid;
    for e in &mut l.entries {
        e.ext = format!("G{:032x} W{}", e.uid * 7919, 20 + e.uid);
    }
}

/// Renames a message file in `cur/` to a name of the same length and puts `cur/`'s mtime
/// back: the directory's stamp does not change, so only a scan of `cur/` can see it.
fn hidden_rename(root: &Path, file: &str, to: &str) {
    assert_eq!(file.len(), to.len());
    let cur = root.join("cur");
    let mtime = fs::metadata(&cur).unwrap().modified().unwrap();
    fs::rename(cur.join(file), cur.join(to)).unwrap();
    fs::File::open(&cur).unwrap().set_modified(mtime).unwrap();
}

fn index_stamp(root: &Path) -> (u64, SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(root.join("petrel-index")).unwrap();
    (m.ino(), m.modified().unwrap())
}

#[test]
fn a_uid_list_rewritten_with_the_same_entries_changes_nothing_and_stays_quiet() {
    let (_t, root, store) = delivered(5);
    let mut f = store.folder("INBOX").unwrap();
    f.set_flags(2, &flags(&["\\Seen"])).unwrap();
    f.sync().unwrap();
    drop(f);
    settle_and_record(&store, &root);
    let mut f = store.folder("INBOX").unwrap();
    let want = view(&f);
    let uidvalidity = f.uidvalidity();
    assert_eq!(f.uidnext(), 6);
    assert_eq!(f.sync().unwrap(), Default::default());

    // A rename in cur/ hidden from cur/'s stamp: a sync that scans cur/ would see it.
    let seen = f.get(2).unwrap().file.clone();
    assert!(seen.ends_with(":2,S"), "{seen}");
    let flagged = seen.replace(":2,S", ":2,F");
    hidden_rename(&root, &seen, &flagged);

    // Dovecot rewrites the list: same UIDs, its own extension fields, a higher next UID.
    // The sync reads its header and not cur/.
    rewrite_uidlist(&root, |l| dovecot_style(l, 9));
    backdate(&root, &["dovecot-uidlist"]);
    assert_eq!(f.sync().unwrap(), Default::default());
    assert_eq!(view(&f), want);
    assert_eq!(f.uidvalidity(), uidvalidity);
    assert_eq!(f.uidnext(), 9, "the header's next UID is taken");

    // The next sync is quiet: it reads neither the UID list (garbled in place, its stamp
    // kept: read, it would be a new UIDVALIDITY) nor cur/.
    let uidlist = root.join("dovecot-uidlist");
    let saved = garble_keeping_stamp(&uidlist);
    assert_eq!(f.sync().unwrap(), Default::default());
    assert_eq!(f.uidvalidity(), uidvalidity);
    assert_eq!(view(&f), want);
    restore_keeping_stamp(&uidlist, &saved);

    // A new open is quiet too (the index, not cur/, gives it the messages), with the
    // header's next UID; and the index is not rewritten for a UID list that only changed.
    let before = index_stamp(&root);
    let g = store.folder("INBOX").unwrap();
    assert_eq!(view(&g), want);
    assert_eq!(g.uidvalidity(), uidvalidity);
    assert_eq!(g.uidnext(), 9);
    drop(g);
    drop(f);
    assert_eq!(index_stamp(&root), before, "index rewritten");

    // Once cur/'s stamp shows the rename, it is seen, with the UIDs the list gives.
    fs::File::open(root.join("cur"))
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    let mut f = store.folder("INBOX").unwrap();
    assert!(f.get(2).unwrap().flags.flagged && !f.get(2).unwrap().flags.seen);
    assert_eq!(
        f.messages().map(|m| m.uid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Dovecot's extension fields are kept when the list is written again.
    assert_eq!(f.append(b"x\n", &FlagSet::default(), None).unwrap(), 9);
    let text = fs::read_to_string(&uidlist).unwrap();
    assert!(
        text.contains(&format!("3 G{:032x} W23 :", 3 * 7919)),
        "{text}"
    );
    assert_eq!(f.sync().unwrap().new, vec![9]);
}

#[test]
fn a_uid_list_with_another_uidvalidity_is_seen_by_a_quiet_folder() {
    let (_t, root, store) = recorded(3);
    let mut f = store.folder("INBOX").unwrap();
    let old = f.uidvalidity();
    assert_eq!(f.sync().unwrap(), Default::default());
    // Re-created with another UIDVALIDITY (and other UIDs), new/ and cur/ untouched.
    rewrite_uidlist(&root, |l| {
        l.uidvalidity = old + 10;
        for e in &mut l.entries {
            e.uid += 100;
        }
        l.next_uid = 200;
    });
    backdate(&root, &["dovecot-uidlist"]);
    let ch = f.sync().unwrap();
    assert!(ch.uidvalidity_changed, "{ch:?}");
    assert_eq!(ch.new, vec![101, 102, 103]);
    assert_eq!(f.uidvalidity(), old + 10);
    assert_eq!(
        f.messages().map(|m| m.uid).collect::<Vec<_>>(),
        [101, 102, 103]
    );
    assert_eq!(f.uidnext(), 200);
    assert_eq!(f.sync().unwrap(), Default::default());
    drop(f);
    // A new open does not take the index's UIDVALIDITY either.
    settle_and_record(&store, &root);
    rewrite_uidlist(&root, |l| {
        l.uidvalidity = old + 20;
        for e in &mut l.entries {
            e.uid -= 50;
        }
    });
    backdate(&root, &["dovecot-uidlist"]);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.uidvalidity(), old + 20);
    assert_eq!(
        f.messages().map(|m| m.uid).collect::<Vec<_>>(),
        [51, 52, 53]
    );
}

#[test]
fn a_uid_list_changed_along_with_a_delivery_gives_the_listed_uids() {
    // A folder opened in full (its UID list read) and one opened quietly (not read).
    for quiet in [false, true] {
        let (_t, root, store) = delivered(3);
        let mut f = store.folder("INBOX").unwrap();
        if quiet {
            drop(f);
            settle_and_record(&store, &root);
            f = store.folder("INBOX").unwrap();
        }
        assert_eq!(f.sync().unwrap(), Default::default());
        // Dovecot delivers one message and gives it UID 40 (its list rewritten), and one
        // more arrives that no one has given a UID yet.
        let listed = "1700000001.M1P1Q1.host,S=11";
        let unlisted = "1700000002.M1P1Q2.host,S=11";
        for n in [listed, unlisted] {
            fs::write(root.join("new").join(n), "Subject: y\n").unwrap();
        }
        rewrite_uidlist(&root, |l| {
            dovecot_style(l, 41);
            l.entries.push(petrel_mailstore::uidlist::UidEntry {
                uid: 40,
                ext: String::new(),
                base: listed.to_string(),
            });
        });
        let ch = f.sync().unwrap();
        assert_eq!(ch.new, vec![40, 41], "quiet {quiet}");
        assert!(!ch.uidvalidity_changed);
        assert!(f.get(40).unwrap().file.starts_with(listed));
        assert!(f.get(41).unwrap().file.starts_with(unlisted));
        assert_eq!(f.uidnext(), 42);
        let l = UidList::load(&root).unwrap().unwrap();
        assert_eq!(l.entries.last().unwrap().base, unlisted);
        assert_eq!(l.entries.last().unwrap().uid, 41);
        // The header alone raised (N60): the next new file gets UID 60.
        rewrite_uidlist(&root, |l| l.next_uid = 60);
        fs::write(root.join("new").join("1700000003.M1P1Q3.host"), "z\n").unwrap();
        assert_eq!(f.sync().unwrap().new, vec![60], "quiet {quiet}");
        drop(f);
        let f = store.folder("INBOX").unwrap();
        let uids: Vec<u32> = f.messages().map(|m| m.uid).collect();
        assert_eq!(uids, [1, 2, 3, 40, 41, 60]);
    }
}

#[test]
fn a_dovecot_written_folder_opens_quietly_and_dovecots_changes_are_seen() {
    let t = tempfile::tempdir().unwrap();
    let dove = Dovecot::new(t.path());
    let run = |args: &[&str], stdin: Option<&[u8]>| dove.doveadm(args, stdin);
    if run(&["save", "-m", "INBOX"], Some(b"Subject: a\n\nhello\n")).is_none() {
        eprintln!("SKIPPED: doveadm is missing or cannot run here");
        return;
    }
    run(&["save", "-m", "INBOX"], Some(b"Subject: b\n\nhello2\n")).unwrap();
    dove.add_flags("INBOX", 1, "\\Seen $Junk").unwrap();
    let store = Store::open(&dove.maildir).unwrap();
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.messages().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(f.get(1).unwrap().flags.to_imap(), ["\\Seen", "$Junk"]);
    let uidvalidity = f.uidvalidity();
    drop(f);
    settle_and_record(&store, &dove.maildir);
    // Opened from the index alone: Dovecot's UID list, garbled in place, is not read.
    let uidlist = dove.maildir.join("dovecot-uidlist");
    let saved = garble_keeping_stamp(&uidlist);
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.uidvalidity(), uidvalidity);
    assert_eq!(f.messages().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(f.get(1).unwrap().flags.to_imap(), ["\\Seen", "$Junk"]);
    drop(f);
    restore_keeping_stamp(&uidlist, &saved);

    // Dovecot changes flags (a rename in cur/, a new keyword), saves a message and
    // expunges one: all of it is seen by the next open.
    dove.chown(t.path());
    dove.add_flags("INBOX", 2, "\\Flagged $Later").unwrap();
    run(&["save", "-m", "INBOX"], Some(b"Subject: c\n\nhello3\n")).unwrap();
    run(&["expunge", "mailbox", "INBOX", "uid", "1"], None).unwrap();
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.uidvalidity(), uidvalidity);
    assert_eq!(f.messages().map(|m| m.uid).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(f.get(2).unwrap().flags.to_imap(), ["\\Flagged", "$Later"]);
}
