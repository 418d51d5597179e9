#![allow(clippy::unwrap_used)]
//! The session driven with parsed commands over a Maildir in a temporary directory; the
//! answers are compared with the forms RFC 3501 and the extensions' RFCs give.

use std::fs;
use std::path::Path;

use petrel_imap_proto::parse_command;
use petrel_imap_session::session::Session;
use petrel_mailstore::{FlagSet, Store};

const MSG1: &[u8] = b"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: Hello\nDate: Wed, 17 Jul 1996 02:23:25 -0700\nMessage-ID: <1@example.org>\n\nHello Bob,\nhow are you?\n";
const MSG2: &[u8] = b"From: carol@example.net\nTo: bob@example.com\nSubject: Lunch\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nLunch at noon?\n--b1\nContent-Type: text/html\n\n<p>Lunch</p>\n--b1--\n";
const MSG3: &[u8] = b"From: dave@example.com\nSubject: Third\n\nthird body\n";

fn setup() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("Maildir")).unwrap();
    (dir, store)
}

fn put(store: &Store, folder: &str, msgs: &[&[u8]]) {
    let mut f = store.folder(folder).unwrap();
    for m in msgs {
        f.append(m, &FlagSet::default(), Some(837_595_405)).unwrap();
    }
}

fn session(store: &Store) -> Session {
    Session::new(store.clone(), "bob").unwrap()
}

fn run(s: &mut Session, line: &str) -> String {
    let cmd = parse_command(line.as_bytes()).unwrap();
    String::from_utf8(s.handle(cmd).out).unwrap()
}

fn run_bytes(s: &mut Session, line: &[u8]) -> String {
    let cmd = parse_command(line).unwrap();
    String::from_utf8_lossy(&s.handle(cmd).out).into_owned()
}

fn tagged(out: &str) -> &str {
    out.trim_end().lines().last().unwrap()
}

fn cur_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn any_state_commands() {
    let (_d, store) = setup();
    let mut s = session(&store);
    let out = run(&mut s, "a1 CAPABILITY");
    assert_eq!(
        out,
        format!(
            "* CAPABILITY {}\r\na1 OK Capability completed.\r\n",
            Session::capabilities()
        )
    );
    assert!(Session::capabilities().starts_with("IMAP4rev1 "));
    assert!(Session::capabilities().contains(" CONDSTORE ESEARCH"));
    assert_eq!(run(&mut s, "a2 NOOP"), "a2 OK NOOP completed.\r\n");
    assert_eq!(
        run(&mut s, "a3 ID (\"name\" \"mutt\")"),
        "* ID (\"name\" \"Petrel\")\r\na3 OK ID completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a4 NAMESPACE"),
        "* NAMESPACE ((\"\" \".\")) NIL NIL\r\na4 OK Namespace completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a5 ENABLE CONDSTORE X-UNKNOWN"),
        "* ENABLED CONDSTORE\r\na5 OK Enabled.\r\n"
    );
    assert!(run(&mut s, "a6 LOGIN bob secret").starts_with("a6 BAD"));
    let cmd = parse_command(b"a7 LOGOUT").unwrap();
    let o = s.handle(cmd);
    assert!(o.logout);
    assert_eq!(
        String::from_utf8(o.out).unwrap(),
        "* BYE Logging out\r\na7 OK Logout completed.\r\n"
    );
}

#[test]
fn special_use_folders_made_on_first_use() {
    let (_d, store) = setup();
    let _s = session(&store);
    for n in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(store.exists(n), "{n}");
    }
    assert!(store
        .subscriptions()
        .unwrap()
        .contains(&"Trash".to_string()));
    store.delete("Junk").unwrap();
    let _s = session(&store);
    assert!(!store.exists("Junk"), "only on first use");
}

#[test]
fn wrong_state() {
    let (_d, store) = setup();
    let mut s = session(&store);
    for c in [
        "a FETCH 1 FLAGS",
        "a STORE 1 +FLAGS (\\Seen)",
        "a SEARCH ALL",
        "a EXPUNGE",
        "a CLOSE",
        "a UNSELECT",
        "a COPY 1 Trash",
        "a UID MOVE 1 Trash",
        "a CHECK",
    ] {
        assert_eq!(run(&mut s, c), "a BAD No mailbox selected\r\n", "{c}");
    }
}

#[test]
fn select_and_examine() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2]);
    let mut s = session(&store);
    let uv = store.folder("INBOX").unwrap().uidvalidity();
    let out = run(&mut s, "a1 SELECT INBOX");
    assert_eq!(
        out,
        format!(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n\
             * 2 EXISTS\r\n\
             * 0 RECENT\r\n\
             * OK [UNSEEN 1] First unseen.\r\n\
             * OK [UIDVALIDITY {uv}] UIDs valid\r\n\
             * OK [UIDNEXT 3] Predicted next UID\r\n\
             a1 OK [READ-WRITE] Select completed.\r\n"
        )
    );
    let out = run(&mut s, "a2 EXAMINE inbox (CONDSTORE)");
    assert!(out.contains("* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"));
    assert!(out.contains("* OK [HIGHESTMODSEQ "));
    assert!(out.ends_with("a2 OK [READ-ONLY] Examine completed.\r\n"));
    assert_eq!(
        tagged(&run(&mut s, "a3 STORE 1 +FLAGS (\\Seen)")),
        "a3 NO [READ-ONLY] Mailbox is read-only"
    );
    // BODY[] in EXAMINE does not set \Seen.
    let out = run(&mut s, "a4 FETCH 1 BODY[TEXT]");
    assert!(!out.contains("FLAGS"), "{out}");
    assert_eq!(
        tagged(&run(&mut s, "a5 SELECT Nowhere")),
        "a5 NO [NONEXISTENT] Mailbox doesn't exist"
    );
    assert_eq!(
        run(&mut s, "a6 FETCH 1 FLAGS"),
        "a6 BAD No mailbox selected\r\n",
        "a failed SELECT leaves no mailbox selected"
    );
    // Keywords appear in FLAGS and PERMANENTFLAGS; new mail counts as \Recent.
    run(&mut s, "a7 SELECT INBOX");
    run(&mut s, "a8 STORE 1 +FLAGS ($Forwarded)");
    fs::write(store.root().join("new/100.M1P1.host"), MSG3).unwrap();
    let out = run(&mut s, "a9 SELECT INBOX");
    assert!(
        out.starts_with("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n")
    );
    assert!(out.contains("\\Draft $Forwarded \\*)]"));
    assert!(out.contains("* 3 EXISTS\r\n* 1 RECENT\r\n"), "{out}");
    assert!(run(&mut s, "b1 FETCH 3 FLAGS").contains("* 3 FETCH (FLAGS (\\Recent))"));
}

#[test]
fn fetch_items() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    let out = run(&mut s, "a1 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)");
    let size = MSG1.len() + MSG1.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (FLAGS () INTERNALDATE \"17-Jul-1996 09:23:25 +0000\" RFC822.SIZE {size} UID 1)\r\na1 OK Fetch completed.\r\n"
        )
    );
    let out = run(&mut s, "a2 FETCH 1 ENVELOPE");
    assert_eq!(
        out,
        "* 1 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700\" \"Hello\" ((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((NIL NIL \"bob\" \"example.com\")) NIL NIL NIL \"<1@example.org>\"))\r\na2 OK Fetch completed.\r\n"
    );
    let out = run(&mut s, "a3 FETCH 2 BODYSTRUCTURE");
    assert!(
        out.starts_with("* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 0 NIL NIL NIL NIL)"),
        "{out}"
    );
    assert!(out.contains("\"mixed\" (\"boundary\" \"b1\")"), "{out}");
    let out = run(&mut s, "a4 FETCH 2 BODY");
    assert!(
        out.starts_with("* 2 FETCH (BODY ((\"text\" \"plain\""),
        "{out}"
    );
    assert!(out.contains(") \"mixed\")"), "{out}");
    // PEEK: no \Seen; partial with origin.
    let out = run(&mut s, "a5 FETCH 1 BODY.PEEK[TEXT]<0.5>");
    assert_eq!(
        out,
        "* 1 FETCH (BODY[TEXT]<0> {5}\r\nHello)\r\na5 OK Fetch completed.\r\n"
    );
    let out = run(&mut s, "a6 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])");
    assert_eq!(
        out,
        "* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {18}\r\nSubject: Hello\r\n\r\n)\r\na6 OK Fetch completed.\r\n"
    );
    let out = run(&mut s, "a7 FETCH 2 BODY.PEEK[2]");
    assert_eq!(
        out,
        "* 2 FETCH (BODY[2] {12}\r\n<p>Lunch</p>)\r\na7 OK Fetch completed.\r\n"
    );
    let out = run(&mut s, "a8 FETCH 2 BODY.PEEK[1.MIME]");
    assert!(
        out.contains("BODY[1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n)"),
        "{out}"
    );
    // Non-PEEK sets \Seen and reports FLAGS.
    let out = run(&mut s, "a9 FETCH 1 BODY[]");
    let crlf = String::from_utf8(MSG1.to_vec())
        .unwrap()
        .replace('\n', "\r\n");
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (BODY[] {{{}}}\r\n{crlf} FLAGS (\\Seen))\r\na9 OK Fetch completed.\r\n",
            crlf.len()
        )
    );
    let out = run(&mut s, "b1 FETCH 2 (RFC822.HEADER)");
    assert!(out.starts_with("* 2 FETCH (RFC822.HEADER {"), "{out}");
    assert!(!out.contains("FLAGS"));
    let out = run(&mut s, "b2 FETCH 2 RFC822.TEXT");
    assert!(out.starts_with("* 2 FETCH (RFC822.TEXT {"), "{out}");
    assert!(out.contains("FLAGS (\\Seen)"), "{out}");
    let out = run(&mut s, "b3 FETCH 1 RFC822");
    assert!(out.starts_with(&format!("* 1 FETCH (RFC822 {{{}}}\r\n", crlf.len())));
    assert!(!out.contains("FLAGS"), "already seen: {out}");
    // UID FETCH always includes UID; UID ranges with *.
    let out = run(&mut s, "b4 UID FETCH 2:* FLAGS");
    assert_eq!(
        out,
        "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\nb4 OK Fetch completed.\r\n"
    );
    let out = run(&mut s, "b5 UID FETCH 50:* FLAGS");
    assert_eq!(
        out, "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\nb5 OK Fetch completed.\r\n",
        "n:* includes the highest UID"
    );
    assert_eq!(
        run(&mut s, "b6 UID FETCH 7 FLAGS"),
        "b6 OK Fetch completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "b7 FETCH 3 FLAGS"),
        "b7 BAD Invalid message sequence number\r\n"
    );
    // Macros.
    let out = run(&mut s, "b8 FETCH 1 FAST");
    assert!(
        out.starts_with("* 1 FETCH (FLAGS (\\Seen) INTERNALDATE \""),
        "{out}"
    );
}

#[test]
fn envelope_and_bodystructure_come_from_the_cache() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    let first = run(&mut s, "a1 FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)");
    // Blank the files: a second FETCH must not need them.
    for f in cur_files(store.root()) {
        fs::write(&f, b"").unwrap();
    }
    let second = run(&mut s, "a1 FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)");
    assert_eq!(first, second);
    // A new session reads the cache from the index.
    let mut s2 = session(&store);
    run(&mut s2, "a SELECT INBOX");
    assert_eq!(
        run(&mut s2, "a1 FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)"),
        first
    );
}

#[test]
fn store_flags() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2, MSG3]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    assert_eq!(
        run(&mut s, "a1 STORE 1:2 +FLAGS (\\Seen \\Flagged)"),
        "* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\n* 2 FETCH (FLAGS (\\Flagged \\Seen))\r\na1 OK Store completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 STORE 2 -FLAGS (\\Flagged)"),
        "* 2 FETCH (FLAGS (\\Seen))\r\na2 OK Store completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a3 STORE 3 FLAGS.SILENT (\\Deleted $Junk)"),
        "a3 OK Store completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a4 UID STORE 3 FLAGS (\\Answered)"),
        "* 3 FETCH (UID 3 FLAGS (\\Answered))\r\na4 OK Store completed.\r\n"
    );
    // The flags are in the file names (Maildir letters).
    let names: Vec<String> = cur_files(store.root())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(":2,FS")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(":2,R")), "{names:?}");
    // CONDSTORE: MODSEQ in FETCH, UNCHANGEDSINCE.
    let out = run(&mut s, "b1 FETCH 1 (MODSEQ)");
    let m1: u64 = out
        .split("MODSEQ (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = run(
        &mut s,
        &format!("b2 STORE 1,2 (UNCHANGEDSINCE {m1}) +FLAGS (\\Draft)"),
    );
    assert!(out.contains("* 1 FETCH (MODSEQ ("), "{out}");
    assert!(out.contains("FLAGS (\\Flagged \\Seen \\Draft))"), "{out}");
    assert!(
        out.ends_with("b2 OK [MODIFIED 2] Conditional STORE failed\r\n"),
        "{out}"
    );
    let out = run(&mut s, "b3 UID STORE 1 (UNCHANGEDSINCE 1) -FLAGS (\\Draft)");
    assert_eq!(out, "b3 OK [MODIFIED 1] Conditional STORE failed\r\n");
    let out = run(&mut s, "b4 FETCH 1:* (FLAGS) (CHANGEDSINCE 1)");
    assert!(out.contains("MODSEQ ("), "{out}");
    let high = run(&mut s, "b5 FETCH 1:* MODSEQ");
    let out = run(
        &mut s,
        &format!("b6 FETCH 1:* FLAGS (CHANGEDSINCE {})", 1_000_000),
    );
    assert_eq!(out, "b6 OK Fetch completed.\r\n", "{high}");
    // .SILENT with CONDSTORE still reports MODSEQ.
    let out = run(&mut s, "b7 STORE 2 +FLAGS.SILENT (\\Answered)");
    assert!(out.starts_with("* 2 FETCH (MODSEQ ("), "{out}");
    assert!(!out.contains("FLAGS ("), "{out}");
}

#[test]
fn mailbox_commands() {
    let (_d, store) = setup();
    let mut s = session(&store);
    assert_eq!(
        run(&mut s, "a1 CREATE Lists.work"),
        "a1 OK Create completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 CREATE Lists.work"),
        "a2 NO [ALREADYEXISTS] Mailbox already exists\r\n"
    );
    assert_eq!(
        run(&mut s, "a3 CREATE Caf&AOk-."),
        "a3 OK Create completed.\r\n"
    );
    assert!(store.exists("Caf&AOk-"));
    assert_eq!(
        run(&mut s, "a4 CREATE Bin (USE (\\Trash))"),
        "a4 NO [USEATTR] This special use cannot be given to this mailbox\r\n"
    );
    assert_eq!(
        run(&mut s, "a5 LIST \"\" \"\""),
        "* LIST (\\Noselect) \".\" \"\"\r\na5 OK List completed.\r\n"
    );
    let out = run(&mut s, "a6 LIST \"\" *");
    assert_eq!(
        out,
        "* LIST (\\HasNoChildren) \".\" INBOX\r\n\
         * LIST (\\HasNoChildren \\Archive) \".\" Archive\r\n\
         * LIST (\\HasNoChildren) \".\" Caf&AOk-\r\n\
         * LIST (\\HasNoChildren \\Drafts) \".\" Drafts\r\n\
         * LIST (\\HasNoChildren \\Junk) \".\" Junk\r\n\
         * LIST (\\Noselect \\HasChildren) \".\" Lists\r\n\
         * LIST (\\HasNoChildren) \".\" Lists.work\r\n\
         * LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n\
         * LIST (\\HasNoChildren \\Trash) \".\" Trash\r\n\
         a6 OK List completed.\r\n"
    );
    let out = run(&mut s, "a7 LIST \"\" %");
    assert!(
        out.contains("\" Lists\r\n") && !out.contains("Lists.work"),
        "{out}"
    );
    let out = run(&mut s, "a8 LIST Lists. %");
    assert_eq!(
        out,
        "* LIST (\\HasNoChildren) \".\" Lists.work\r\na8 OK List completed.\r\n"
    );
    let out = run(&mut s, "a9 LIST \"\" inbox");
    assert_eq!(
        out,
        "* LIST (\\HasNoChildren) \".\" INBOX\r\na9 OK List completed.\r\n"
    );
    let out = run(&mut s, "b1 LIST (SPECIAL-USE) \"\" *");
    assert_eq!(out.lines().count(), 6, "{out}");
    let out = run(
        &mut s,
        "b2 LIST \"\" * RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)",
    );
    assert!(
        out.contains("* LIST (\\HasNoChildren \\Sent \\Subscribed) \".\" Sent\r\n"),
        "{out}"
    );
    assert!(
        out.contains("* LIST (\\HasNoChildren) \".\" Lists.work\r\n"),
        "{out}"
    );
    // Subscriptions.
    assert_eq!(
        run(&mut s, "c1 SUBSCRIBE Lists.work"),
        "c1 OK Subscribe completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "c2 SUBSCRIBE Gone"),
        "c2 OK Subscribe completed.\r\n"
    );
    let out = run(&mut s, "c3 LIST (SUBSCRIBED) \"\" L*");
    assert_eq!(
        out,
        "* LIST (\\HasNoChildren \\Subscribed) \".\" Lists.work\r\nc3 OK List completed.\r\n"
    );
    let out = run(&mut s, "c4 LSUB \"\" *");
    assert!(out.contains("* LSUB () \".\" Lists.work\r\n"), "{out}");
    assert!(out.contains("* LSUB (\\Noselect) \".\" Gone\r\n"), "{out}");
    let out = run(&mut s, "c5 LIST (SUBSCRIBED) \"\" G*");
    assert_eq!(
        out,
        "* LIST (\\NonExistent \\Subscribed) \".\" Gone\r\nc5 OK List completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "c6 UNSUBSCRIBE Gone"),
        "c6 OK Unsubscribe completed.\r\n"
    );
    assert!(!run(&mut s, "c7 LSUB \"\" *").contains("Gone"));
    // RENAME and DELETE.
    assert_eq!(
        run(&mut s, "d1 RENAME Lists Team"),
        "d1 OK Rename completed.\r\n"
    );
    assert!(store.exists("Team.work"));
    assert_eq!(
        run(&mut s, "d2 RENAME Nope Other"),
        "d2 NO [NONEXISTENT] Mailbox doesn't exist\r\n"
    );
    assert_eq!(
        run(&mut s, "d3 RENAME Team.work Sent"),
        "d3 NO [ALREADYEXISTS] Mailbox already exists\r\n"
    );
    assert_eq!(
        run(&mut s, "d4 DELETE Team.work"),
        "d4 OK Delete completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "d5 DELETE Team.work"),
        "d5 NO [NONEXISTENT] Mailbox doesn't exist\r\n"
    );
    assert!(run(&mut s, "d6 DELETE INBOX").starts_with("d6 NO [CANNOT]"));
    // RENAME INBOX moves its messages and leaves it empty.
    put(&store, "INBOX", &[MSG1, MSG2]);
    assert_eq!(
        run(&mut s, "e1 RENAME INBOX Old"),
        "e1 OK Rename completed.\r\n"
    );
    let out = run(&mut s, "e2 STATUS Old (MESSAGES)");
    assert_eq!(
        out,
        "* STATUS Old (MESSAGES 2)\r\ne2 OK Status completed.\r\n"
    );
    let out = run(&mut s, "e3 STATUS INBOX (MESSAGES)");
    assert_eq!(
        out,
        "* STATUS INBOX (MESSAGES 0)\r\ne3 OK Status completed.\r\n"
    );
}

#[test]
fn status() {
    let (_d, store) = setup();
    let mut s = session(&store);
    put(&store, "Trash", &[MSG1, MSG2]);
    run(&mut s, "a SELECT Trash");
    run(&mut s, "a STORE 1 +FLAGS (\\Seen)");
    run(&mut s, "a UNSELECT");
    let uv = store.folder("Trash").unwrap().uidvalidity();
    let out = run(
        &mut s,
        "a1 STATUS Trash (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE)",
    );
    let size: usize = [MSG1, MSG2]
        .iter()
        .map(|m| m.len() + m.iter().filter(|&&b| b == b'\n').count())
        .sum();
    assert_eq!(
        out,
        format!(
            "* STATUS Trash (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY {uv} UNSEEN 1 SIZE {size})\r\na1 OK Status completed.\r\n"
        )
    );
    let out = run(&mut s, "a2 STATUS Trash (HIGHESTMODSEQ)");
    assert!(out.starts_with("* STATUS Trash (HIGHESTMODSEQ "), "{out}");
    assert_eq!(
        tagged(&run(&mut s, "a3 STATUS Nope (MESSAGES)")),
        "a3 NO [NONEXISTENT] Mailbox doesn't exist"
    );
}

#[test]
fn append() {
    let (_d, store) = setup();
    let mut s = session(&store);
    let uv = store.folder("Drafts").unwrap().uidvalidity();
    let mut cmd = b"a1 APPEND Drafts (\\Draft \\Seen) \"17-Jul-1996 02:44:25 -0700\" {".to_vec();
    cmd.extend_from_slice(format!("{}}}\r\n", MSG1.len()).as_bytes());
    cmd.extend_from_slice(MSG1);
    assert_eq!(
        run_bytes(&mut s, &cmd),
        format!("a1 OK [APPENDUID {uv} 1] Append completed.\r\n")
    );
    run(&mut s, "a2 SELECT Drafts");
    assert_eq!(
        run(&mut s, "a3 FETCH 1 (FLAGS INTERNALDATE)"),
        "* 1 FETCH (FLAGS (\\Seen \\Draft) INTERNALDATE \"17-Jul-1996 09:44:25 +0000\")\r\na3 OK Fetch completed.\r\n"
    );
    // Into the selected mailbox: EXISTS comes with the answer.
    let mut cmd = format!("a4 APPEND Drafts {{{}}}\r\n", MSG3.len()).into_bytes();
    cmd.extend_from_slice(MSG3);
    assert_eq!(
        run_bytes(&mut s, &cmd),
        format!("* 2 EXISTS\r\n* 0 RECENT\r\na4 OK [APPENDUID {uv} 2] Append completed.\r\n")
    );
    let mut cmd = format!("a5 APPEND Nope {{{}}}\r\n", MSG3.len()).into_bytes();
    cmd.extend_from_slice(MSG3);
    assert_eq!(
        run_bytes(&mut s, &cmd),
        "a5 NO [TRYCREATE] Mailbox doesn't exist\r\n"
    );
}

#[test]
fn expunge_close_unselect() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2, MSG3, MSG1, MSG2]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    run(&mut s, "a STORE 2,3,5 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(
        run(&mut s, "a1 UID EXPUNGE 1:3"),
        "* 3 EXPUNGE\r\n* 2 EXPUNGE\r\na1 OK Expunge completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 EXPUNGE"),
        "* 3 EXPUNGE\r\na2 OK Expunge completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a3 UID FETCH 1:* FLAGS"),
        "* 1 FETCH (UID 1 FLAGS ())\r\n* 2 FETCH (UID 4 FLAGS ())\r\na3 OK Fetch completed.\r\n"
    );
    run(&mut s, "a STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(run(&mut s, "a4 UNSELECT"), "a4 OK Unselect completed.\r\n");
    assert_eq!(
        store.folder("INBOX").unwrap().len(),
        2,
        "UNSELECT keeps \\Deleted"
    );
    run(&mut s, "a SELECT INBOX");
    assert_eq!(run(&mut s, "a5 CLOSE"), "a5 OK Close completed.\r\n");
    assert_eq!(
        store.folder("INBOX").unwrap().len(),
        1,
        "CLOSE expunges silently"
    );
    assert_eq!(
        run(&mut s, "a6 FETCH 1 FLAGS"),
        "a6 BAD No mailbox selected\r\n"
    );
    // EXAMINE + CLOSE expunges nothing; EXPUNGE is refused.
    run(&mut s, "a SELECT INBOX");
    run(&mut s, "a STORE 1 +FLAGS.SILENT (\\Deleted)");
    run(&mut s, "a EXAMINE INBOX");
    assert!(run(&mut s, "a7 EXPUNGE").starts_with("a7 NO"));
    run(&mut s, "a8 CLOSE");
    assert_eq!(store.folder("INBOX").unwrap().len(), 1);
}

#[test]
fn copy_and_move() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2, MSG3]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    run(&mut s, "a STORE 2 +FLAGS.SILENT (\\Flagged $Work)");
    let uv = store.folder("Archive").unwrap().uidvalidity();
    assert_eq!(
        run(&mut s, "a1 COPY 1:2 Archive"),
        format!("a1 OK [COPYUID {uv} 1:2 1:2] Copy completed.\r\n")
    );
    assert_eq!(
        run(&mut s, "a2 UID COPY 3 Archive"),
        format!("a2 OK [COPYUID {uv} 3 3] Copy completed.\r\n")
    );
    assert_eq!(
        run(&mut s, "a3 COPY 1 Nope"),
        "a3 NO [TRYCREATE] Mailbox doesn't exist\r\n"
    );
    let mut arch = store.folder("Archive").unwrap();
    assert_eq!(arch.len(), 3);
    let f = &arch.get(2).unwrap().flags;
    assert!(f.flagged && f.keywords.contains("$Work"));
    let tv = store.folder("Trash").unwrap().uidvalidity();
    assert_eq!(
        run(&mut s, "a4 MOVE 1,3 Trash"),
        format!("* OK [COPYUID {tv} 1,3 1:2] Moved UIDs.\r\n* 3 EXPUNGE\r\n* 1 EXPUNGE\r\na4 OK Move completed.\r\n")
    );
    assert_eq!(
        run(&mut s, "a5 UID MOVE 2 Trash"),
        format!("* OK [COPYUID {tv} 2 3] Moved UIDs.\r\n* 1 EXPUNGE\r\na5 OK Move completed.\r\n")
    );
    assert_eq!(store.folder("Trash").unwrap().len(), 3);
    assert_eq!(store.folder("INBOX").unwrap().len(), 0);
    // COPY into the selected mailbox announces the copies.
    run(&mut s, "b SELECT Archive");
    let out = run(&mut s, "b1 COPY 1 Archive");
    assert_eq!(
        out,
        format!("* 4 EXISTS\r\n* 0 RECENT\r\nb1 OK [COPYUID {uv} 1 4] Copy completed.\r\n")
    );
    arch.sync().unwrap();
    assert_eq!(arch.len(), 4);
}

#[test]
fn search_and_esearch() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2, MSG3]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    run(&mut s, "a STORE 2 +FLAGS (\\Seen)");
    run(&mut s, "a EXPUNGE");
    assert_eq!(
        run(&mut s, "a1 SEARCH UNSEEN"),
        "* SEARCH 1 3\r\na1 OK Search completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 UID SEARCH SUBJECT lunch"),
        "* SEARCH 2\r\na2 OK Search completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a3 SEARCH CHARSET UTF-8 FROM alice"),
        "* SEARCH 1\r\na3 OK Search completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a4 SEARCH RETURN (MIN MAX COUNT) ALL"),
        "* ESEARCH (TAG \"a4\") MIN 1 MAX 3 COUNT 3\r\na4 OK Search completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a5 UID SEARCH RETURN () UNSEEN"),
        "* ESEARCH (TAG \"a5\") UID ALL 1,3\r\na5 OK Search completed.\r\n"
    );
    assert_eq!(
        run(
            &mut s,
            "a6 SEARCH RETURN (COUNT MIN) SUBJECT nothing-like-this"
        ),
        "* ESEARCH (TAG \"a6\") COUNT 0\r\na6 OK Search completed.\r\n"
    );
    let out = run(&mut s, "a7 SEARCH MODSEQ 1");
    assert!(out.starts_with("* SEARCH 1 2 3 (MODSEQ "), "{out}");
    match parse_command(b"a8 SEARCH CHARSET KOI8-R ALL") {
        Ok(cmd) => {
            let out = String::from_utf8(s.handle(cmd).out).unwrap();
            assert!(out.starts_with("a8 NO [BADCHARSET"), "{out}");
        }
        Err(e) => assert!(e.is_badcharset()),
    }
}

#[test]
fn two_sessions_see_each_other() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2, MSG3]);
    let mut a = session(&store);
    let mut b = session(&store);
    run(&mut a, "a SELECT INBOX");
    run(&mut b, "b SELECT INBOX");
    // A flag change by A reaches B.
    run(&mut a, "a1 STORE 2 +FLAGS (\\Flagged)");
    assert_eq!(
        String::from_utf8(b.updates().unwrap()).unwrap(),
        "* 2 FETCH (FLAGS (\\Flagged))\r\n"
    );
    assert!(b.updates().unwrap().is_empty());
    // With CONDSTORE, UID and MODSEQ come along.
    run(&mut b, "b ENABLE CONDSTORE");
    run(&mut a, "a2 STORE 3 +FLAGS (\\Seen)");
    let up = String::from_utf8(b.updates().unwrap()).unwrap();
    assert!(up.starts_with("* 3 FETCH (UID 3 MODSEQ ("), "{up}");
    assert!(up.ends_with(" FLAGS (\\Seen))\r\n"), "{up}");
    // An expunge by A: B hears nothing during FETCH, STORE or SEARCH, then EXPUNGE.
    run(&mut a, "a3 STORE 1 +FLAGS.SILENT (\\Deleted)");
    run(&mut a, "a4 EXPUNGE");
    let out = run(&mut b, "b1 FETCH 1:* UID");
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert_eq!(
        out,
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nb1 OK Fetch completed.\r\n"
    );
    // Now B's folder knows; message 1 is a ghost until EXPUNGE may be sent.
    let out = run(
        &mut b,
        "b1 FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (Subject)])",
    );
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert!(
        !out.contains("* 1 FETCH"),
        "the expunged message is skipped: {out}"
    );
    assert!(
        out.contains(
            "* 2 FETCH (UID 2 BODY[HEADER.FIELDS (Subject)] {18}\r\nSubject: Lunch\r\n\r\n)"
        ),
        "{out}"
    );
    assert!(out.ends_with("b1 OK Fetch completed; some messages were expunged meanwhile.\r\n"));
    let out = run(&mut b, "b2 SEARCH ALL");
    assert!(!out.contains("EXPUNGE"), "{out}");
    let out = run(&mut b, "b3 STORE 3 +FLAGS (\\Answered)");
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert!(out.contains("* 3 FETCH (MODSEQ ("), "{out}");
    assert_eq!(
        String::from_utf8(b.updates().unwrap()).unwrap(),
        "* 1 EXPUNGE\r\n"
    );
    assert_eq!(
        run(&mut b, "b4 FETCH 1:* (UID FLAGS)"),
        "* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n* 2 FETCH (UID 3 FLAGS (\\Answered \\Seen))\r\nb4 OK Fetch completed.\r\n"
    );
    // A sees B's change in NOOP.
    let out = run(&mut a, "a5 NOOP");
    assert_eq!(
        out,
        "* 2 FETCH (FLAGS (\\Answered \\Seen))\r\na5 OK NOOP completed.\r\n"
    );
}

#[test]
fn new_mail_becomes_exists() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1]);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    assert!(s.updates().unwrap().is_empty());
    fs::write(store.root().join("new/1000.M1P2Q3.host"), MSG2).unwrap();
    assert_eq!(
        String::from_utf8(s.updates().unwrap()).unwrap(),
        "* 2 EXISTS\r\n* 1 RECENT\r\n"
    );
    assert_eq!(
        run(&mut s, "a1 FETCH 2 (UID FLAGS)"),
        "* 2 FETCH (UID 2 FLAGS (\\Recent))\r\na1 OK Fetch completed.\r\n"
    );
    // During IDLE, then DONE with the IDLE's tag.
    let o = s.handle(parse_command(b"a2 IDLE").unwrap());
    assert!(o.idling);
    assert_eq!(String::from_utf8(o.out).unwrap(), "+ idling\r\n");
    fs::write(store.root().join("new/1001.M1P2Q4.host"), MSG3).unwrap();
    assert_eq!(
        String::from_utf8(s.updates().unwrap()).unwrap(),
        "* 3 EXISTS\r\n* 2 RECENT\r\n"
    );
    let o = s.handle(parse_command(b"DONE").unwrap());
    assert!(!o.idling);
    assert_eq!(
        String::from_utf8(o.out).unwrap(),
        "a2 OK IDLE terminated.\r\n"
    );
    // New mail shows up in a FETCH's answer too (EXISTS may be sent any time).
    fs::write(store.root().join("new/1002.M1P2Q5.host"), MSG1).unwrap();
    let out = run(&mut s, "a3 FETCH 1 UID");
    assert_eq!(
        out,
        "* 1 FETCH (UID 1)\r\n* 4 EXISTS\r\n* 3 RECENT\r\na3 OK Fetch completed.\r\n"
    );
}

#[test]
fn copy_after_a_rename_by_another_session() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1, MSG2]);
    let mut a = session(&store);
    let mut b = session(&store);
    run(&mut a, "a SELECT INBOX");
    run(&mut b, "b SELECT INBOX");
    run(&mut a, "a1 STORE 1 +FLAGS (\\Flagged)");
    let out = run(&mut b, "b1 COPY 1:2 Archive");
    assert!(
        out.starts_with("* 1 FETCH (FLAGS (\\Flagged))\r\n"),
        "{out}"
    );
    assert!(out.contains("b1 OK [COPYUID "), "{out}");
    let arch = store.folder("Archive").unwrap();
    assert_eq!(arch.len(), 2);
    assert!(arch.get(1).unwrap().flags.flagged);
}

#[test]
fn selected_mailbox_guards_and_check() {
    let (_d, store) = setup();
    put(&store, "INBOX", &[MSG1]);
    let mut s = session(&store);
    run(&mut s, "a SELECT Trash");
    assert_eq!(
        run(&mut s, "a1 DELETE Trash"),
        "a1 NO [INUSE] Cannot delete the selected mailbox\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 RENAME Trash Bin"),
        "a2 NO [INUSE] Cannot rename the selected mailbox\r\n"
    );
    assert_eq!(run(&mut s, "a3 CHECK"), "a3 OK CHECK completed.\r\n");
    // With CONDSTORE, EXPUNGE reports the new HIGHESTMODSEQ.
    run(&mut s, "a SELECT INBOX (CONDSTORE)");
    run(&mut s, "a STORE 1 +FLAGS.SILENT (\\Deleted)");
    let out = run(&mut s, "a4 EXPUNGE");
    assert!(
        out.starts_with("* 1 EXPUNGE\r\na4 OK [HIGHESTMODSEQ "),
        "{out}"
    );
    // RENAME INBOX while selected: its messages leave, announced as expunged.
    put(&store, "INBOX", &[MSG2]);
    assert_eq!(
        run(&mut s, "a5 NOOP"),
        "* 1 EXISTS\r\n* 0 RECENT\r\na5 OK NOOP completed.\r\n"
    );
    assert_eq!(
        run(&mut s, "a6 RENAME INBOX Old"),
        "* 1 EXPUNGE\r\na6 OK Rename completed.\r\n"
    );
}
