#![allow(clippy::unwrap_used)]
//! The session driven with parsed commands over a Maildir in a temporary directory; the
//! answers are compared with the forms RFC 3501 and the extensions' RFCs give.

use std::fs;
use std::path::Path;
use std::rc::Rc;

use petrel_imap_proto::{format_internal_date, parse_command};
use petrel_imap_session::session::Session;
use petrel_imap_session::SharedFolders;
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

/// [`setup`] with `msgs` in INBOX.
fn with_inbox(msgs: &[&[u8]]) -> (tempfile::TempDir, Store) {
    let (d, store) = setup();
    put(&store, "INBOX", msgs);
    (d, store)
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

/// INTERNALDATE as the session shows it: in the server's local time zone.
fn idate(epoch: i64) -> String {
    // SAFETY: localtime_r only writes into the tm we hand it; a zeroed tm is valid.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t = epoch as libc::time_t;
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format_internal_date(epoch, (tm.tm_gmtoff / 60) as i32)
}

/// A store in a temporary directory with `msgs` in INBOX, and a session with INBOX
/// selected (tag `a`).
fn selected(msgs: &[&[u8]]) -> (tempfile::TempDir, Store, Session) {
    let (d, store) = with_inbox(msgs);
    let mut s = session(&store);
    run(&mut s, "a SELECT INBOX");
    (d, store, s)
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
    let (_d, store) = with_inbox(&[MSG1, MSG2]);
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
             * OK [HIGHESTMODSEQ {hm}] Highest\r\n\
             a1 OK [READ-WRITE] Select completed.\r\n",
            hm = store.folder("INBOX").unwrap().highest_modseq()
        ),
        "HIGHESTMODSEQ comes with every SELECT (RFC 7162 3.1.2.1)"
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
    let (_d, _store, mut s) = selected(&[MSG1, MSG2]);
    let out = run(&mut s, "a1 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)");
    let size = MSG1.len() + MSG1.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (FLAGS () INTERNALDATE \"{}\" RFC822.SIZE {size} UID 1)\r\na1 OK Fetch completed.\r\n",
            idate(837_595_405)
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

/// The CRLF form by the definition: a CR before every LF without one.
fn crlf_form(msg: &[u8]) -> String {
    let mut out = String::new();
    let mut prev = 0u8;
    for &b in msg {
        if b == b'\n' && prev != b'\r' {
            out.push('\r');
        }
        out.push(char::from(b));
        prev = b;
    }
    out
}

#[test]
fn fetch_sends_the_crlf_form_of_lf_crlf_and_mixed_files() {
    let lf: &[u8] = b"Subject: lf\nFrom: a@example.org\n\nline one\nline two\n";
    let crlf: &[u8] = b"Subject: crlf\r\nFrom: a@example.org\r\n\r\nline one\r\nline two\r\n";
    let mixed: &[u8] = b"Subject: mixed\r\nFrom: a@example.org\n\nline\r\nlone\rcr\n\nend";
    let (_d, _store, mut s) = selected(&[lf, crlf, mixed]);
    for (n, m) in [lf, crlf, mixed].into_iter().enumerate() {
        let seq = n + 1;
        let c = crlf_form(m);
        let split = c.find("\r\n\r\n").unwrap() + 4;
        let (header, text) = c.split_at(split);
        let part = &c[3..23];
        let lit = |s: &str| format!("{{{}}}\r\n{s}", s.len());
        // The whole message first (stored bytes), then items on the CRLF form, then the
        // whole message again (from the converted copy).
        let out = run(
            &mut s,
            &format!(
                "a{seq} FETCH {seq} (BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[]<3.20> \
                 RFC822.HEADER BODY.PEEK[] RFC822.SIZE)"
            ),
        );
        assert_eq!(
            out,
            format!(
                "* {seq} FETCH (BODY[] {} BODY[TEXT] {} BODY[]<3> {} RFC822.HEADER {} \
                 BODY[] {} RFC822.SIZE {})\r\na{seq} OK Fetch completed.\r\n",
                lit(&c),
                lit(text),
                lit(part),
                lit(header),
                lit(&c),
                c.len()
            ),
            "message {seq}"
        );
        let out = run(&mut s, &format!("b{seq} FETCH {seq} (RFC822 RFC822.TEXT)"));
        assert_eq!(
            out,
            format!(
                "* {seq} FETCH (RFC822 {} RFC822.TEXT {} FLAGS (\\Seen))\r\n\
                 b{seq} OK Fetch completed.\r\n",
                lit(&c),
                lit(text)
            ),
            "message {seq}"
        );
    }
}

#[test]
fn fetch_leaves_out_a_message_whose_file_went_away() {
    let (_d, store, mut s) = selected(&[MSG1, MSG3]);
    let first = cur_files(store.root())
        .into_iter()
        .find(|f| fs::read(f).unwrap() == MSG1)
        .unwrap();
    fs::remove_file(&first).unwrap();
    let out = run(&mut s, "a1 FETCH 1:2 (UID BODY.PEEK[])");
    assert!(!out.contains("* 1 FETCH"), "no half response: {out}");
    let c = crlf_form(MSG3);
    assert!(
        out.contains(&format!(
            "* 2 FETCH (UID 2 BODY[] {{{}}}\r\n{c})\r\n",
            c.len()
        )),
        "{out}"
    );
    assert!(
        out.ends_with("a1 OK Fetch completed; some messages were expunged meanwhile.\r\n"),
        "{out}"
    );
}

#[test]
fn envelope_and_bodystructure_come_from_the_cache() {
    let (_d, store, mut s) = selected(&[MSG1, MSG2]);
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
    let (_d, store, mut s) = selected(&[MSG1, MSG2, MSG3]);
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
    // An appended message is \Recent (RFC 3501 6.3.11), for the session that selects the
    // folder first.
    assert_eq!(
        run(&mut s, "a3 FETCH 1 (FLAGS INTERNALDATE)"),
        format!(
            "* 1 FETCH (FLAGS (\\Seen \\Draft \\Recent) INTERNALDATE \"{}\")\r\na3 OK Fetch completed.\r\n",
            idate(837_596_665)
        )
    );
    // Into the selected mailbox: EXISTS comes with the answer, and the message is \Recent
    // here.
    let mut cmd = format!("a4 APPEND Drafts {{{}}}\r\n", MSG3.len()).into_bytes();
    cmd.extend_from_slice(MSG3);
    assert_eq!(
        run_bytes(&mut s, &cmd),
        format!("* 2 EXISTS\r\n* 2 RECENT\r\na4 OK [APPENDUID {uv} 2] Append completed.\r\n")
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
    let (_d, store, mut s) = selected(&[MSG1, MSG2, MSG3, MSG1, MSG2]);
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
    let (_d, store, mut s) = selected(&[MSG1, MSG2, MSG3]);
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
    // COPY into the selected mailbox announces the copies; copies are \Recent (RFC 3501
    // 6.4.7), the earlier ones for this session since it selected the folder first.
    let out = run(&mut s, "b SELECT Archive");
    assert!(out.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{out}");
    let out = run(&mut s, "b1 COPY 1 Archive");
    assert_eq!(
        out,
        format!("* 4 EXISTS\r\n* 4 RECENT\r\nb1 OK [COPYUID {uv} 1 4] Copy completed.\r\n")
    );
    assert_eq!(
        run(&mut s, "b2 FETCH 4 (FLAGS)"),
        "* 4 FETCH (FLAGS (\\Recent))\r\nb2 OK Fetch completed.\r\n"
    );
    arch.sync().unwrap();
    assert_eq!(arch.len(), 4);
}

#[test]
fn search_and_esearch() {
    let (_d, _store, mut s) = selected(&[MSG1, MSG2, MSG3]);
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
    let (_d, store) = with_inbox(&[MSG1, MSG2, MSG3]);
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
    let (_d, store, mut s) = selected(&[MSG1]);
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
    let (_d, store) = with_inbox(&[MSG1, MSG2]);
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
    let (_d, store) = with_inbox(&[MSG1]);
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

// ---------------------------------------------------------------------------------------
// Sessions of one worker sharing their folders.
// ---------------------------------------------------------------------------------------

fn shared(store: &Store, folders: &Rc<SharedFolders>) -> Session {
    Session::with_folders(store.clone(), "bob", folders.clone()).unwrap()
}

fn ups(s: &mut Session) -> String {
    String::from_utf8(s.updates().unwrap()).unwrap()
}

/// Two sessions sharing their folders, `a` and `b`, both with INBOX selected.
fn two_shared(store: &Store) -> (Rc<SharedFolders>, Session, Session) {
    let folders = SharedFolders::new();
    let mut a = shared(store, &folders);
    let mut b = shared(store, &folders);
    run(&mut a, "a SELECT INBOX");
    run(&mut b, "b SELECT INBOX");
    (folders, a, b)
}

/// Rewrites the header of the folder's `dovecot-uidlist` with the next UIDVALIDITY, as if
/// the folder had been made anew.
fn next_uidvalidity(root: &Path) {
    let list = root.join("dovecot-uidlist");
    let text = fs::read_to_string(&list).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let head: Vec<String> = head
        .split(' ')
        .map(|f| match f.strip_prefix('V') {
            Some(v) => format!("V{}", v.parse::<u32>().unwrap() + 1),
            None => f.to_string(),
        })
        .collect();
    fs::write(&list, format!("{}\n{rest}", head.join(" "))).unwrap();
}

/// Asserts that the whole answer to `line` is the lines `want` (each ended by CRLF).
#[track_caller]
fn answers(s: &mut Session, line: &str, want: &[&str]) {
    let want: String = want.iter().map(|l| format!("{l}\r\n")).collect();
    assert_eq!(run(s, line), want);
}

/// The number in `MODSEQ (n)` of a response.
fn modseq_of(out: &str) -> u64 {
    out.split("MODSEQ (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MODSEQ in {out}"))
}

#[test]
fn shared_folder_flag_changes_reach_the_others_only() {
    let (_d, store) = with_inbox(&[MSG1, MSG2, MSG3]);
    let (folders, mut a, mut b) = two_shared(&store);
    assert_eq!(folders.len(), 1);
    assert_eq!(a.selected_dir(), Some(store.root()));
    assert_eq!(b.selected_dir(), Some(store.root()));
    // A's change: answered by its STORE, announced to B once, never again to A.
    answers(
        &mut a,
        "a1 STORE 2 +FLAGS (\\Flagged)",
        &["* 2 FETCH (FLAGS (\\Flagged))", "a1 OK Store completed."],
    );
    assert_eq!(ups(&mut b), "* 2 FETCH (FLAGS (\\Flagged))\r\n");
    assert_eq!(ups(&mut b), "");
    answers(&mut a, "a2 NOOP", &["a2 OK NOOP completed."]);
    assert_eq!(ups(&mut a), "");
    // .SILENT: nothing to A, the change to B in its next command's answer.
    answers(
        &mut a,
        "a3 STORE 3 +FLAGS.SILENT (\\Seen)",
        &["a3 OK Store completed."],
    );
    answers(
        &mut b,
        "b1 FETCH 1 (UID)",
        &[
            "* 1 FETCH (UID 1)",
            "* 3 FETCH (FLAGS (\\Seen))",
            "b1 OK Fetch completed.",
        ],
    );
    answers(&mut a, "a4 NOOP", &["a4 OK NOOP completed."]);
    // FETCH BODY[] setting \Seen is A's own change too.
    let out = run(&mut a, "a5 FETCH 1 BODY[]");
    assert!(out.contains(" FLAGS (\\Seen))\r\n"), "{out}");
    answers(&mut a, "a6 NOOP", &["a6 OK NOOP completed."]);
    answers(
        &mut b,
        "b2 NOOP",
        &["* 1 FETCH (FLAGS (\\Seen))", "b2 OK NOOP completed."],
    );
    // With CONDSTORE: UID and MODSEQ; both changes of one message give one FETCH.
    run(&mut b, "b ENABLE CONDSTORE");
    run(&mut a, "a7 STORE 1 +FLAGS.SILENT (\\Answered)");
    run(&mut a, "a8 STORE 1 -FLAGS.SILENT (\\Seen)");
    let up = ups(&mut b);
    assert!(up.starts_with("* 1 FETCH (UID 1 MODSEQ ("), "{up}");
    assert!(up.ends_with(" FLAGS (\\Answered))\r\n"), "{up}");
    assert_eq!(up.lines().count(), 1, "{up}");
    // A flag change by another process (a renamed file) is seen by the sync of the next
    // turn, gets a new MODSEQ and goes to both.
    let before = modseq_of(&run(&mut b, "b3 FETCH 2 (MODSEQ)"));
    let f = cur_files(store.root())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(":2,F"))
        .unwrap();
    let renamed = f.to_string_lossy().replace(":2,F", ":2,FS");
    fs::rename(&f, &renamed).unwrap();
    folders.tick();
    let up = ups(&mut b);
    assert!(up.starts_with("* 2 FETCH (UID 2 MODSEQ ("), "{up}");
    assert!(up.ends_with(" FLAGS (\\Flagged \\Seen))\r\n"), "{up}");
    assert!(modseq_of(&up) > before, "{up}");
    assert_eq!(ups(&mut a), "* 2 FETCH (FLAGS (\\Flagged \\Seen))\r\n");
    // B's own STORE: not repeated to B, announced to A.
    let out = run(&mut b, "b4 STORE 3 +FLAGS (\\Deleted)");
    assert!(out.starts_with("* 3 FETCH (MODSEQ ("), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(ups(&mut b), "");
    assert_eq!(ups(&mut a), "* 3 FETCH (FLAGS (\\Deleted \\Seen))\r\n");
}

#[test]
fn shared_folder_expunge_waits_for_a_command_that_allows_it() {
    let (_d, store) = with_inbox(&[MSG1, MSG2, MSG3]);
    let (folders, mut a, mut b) = two_shared(&store);
    run(&mut a, "a1 STORE 1 +FLAGS.SILENT (\\Deleted)");
    answers(
        &mut a,
        "a2 EXPUNGE",
        &["* 1 EXPUNGE", "a2 OK Expunge completed."],
    );
    answers(&mut a, "a3 NOOP", &["a3 OK NOOP completed."]);
    // B: FETCH, STORE and SEARCH send no EXPUNGE; the message is a ghost meanwhile.
    answers(
        &mut b,
        "b1 FETCH 1:* (UID)",
        &[
            "* 2 FETCH (UID 2)",
            "* 3 FETCH (UID 3)",
            "b1 OK Fetch completed; some messages were expunged meanwhile.",
        ],
    );
    answers(
        &mut b,
        "b2 SEARCH ALL",
        &["* SEARCH 2 3", "b2 OK Search completed."],
    );
    assert_eq!(
        run(&mut b, "b3 SEARCH 1:2"),
        "* SEARCH 2\r\nb3 OK Search completed.\r\n",
        "sequence numbers are the client's"
    );
    answers(
        &mut b,
        "b4 STORE 1:2 +FLAGS (\\Answered)",
        &[
            "* 2 FETCH (FLAGS (\\Answered))",
            "b4 NO Some of the messages no longer exist.",
        ],
    );
    // A sees B's change, B's NOOP finally gets the EXPUNGE.
    answers(
        &mut a,
        "a4 NOOP",
        &["* 1 FETCH (FLAGS (\\Answered))", "a4 OK NOOP completed."],
    );
    answers(&mut b, "b5 NOOP", &["* 1 EXPUNGE", "b5 OK NOOP completed."]);
    answers(
        &mut b,
        "b6 FETCH 1:* (UID)",
        &[
            "* 1 FETCH (UID 2)",
            "* 2 FETCH (UID 3)",
            "b6 OK Fetch completed.",
        ],
    );
    // Also in IDLE (updates) and with an expunge by another process.
    fs::remove_file(&cur_files(store.root())[0]).unwrap();
    folders.tick();
    assert_eq!(ups(&mut a), "* 1 EXPUNGE\r\n");
    assert_eq!(ups(&mut b), "* 1 EXPUNGE\r\n");
}

#[test]
fn shared_folder_new_mail_is_recent_in_exactly_one_session() {
    let (_d, store) = with_inbox(&[MSG1]);
    let folders = SharedFolders::new();
    let mut s: Vec<Session> = (0..3).map(|_| shared(&store, &folders)).collect();
    for (i, x) in s.iter_mut().enumerate() {
        let out = run(x, &format!("s{i} SELECT INBOX"));
        assert!(out.contains("* 1 EXISTS\r\n* 0 RECENT\r\n"), "{out}");
    }
    let mut idle = shared(&store, &folders);
    fs::write(store.root().join("new/1000.M1P2Q3.host"), MSG2).unwrap();
    folders.tick();
    // STATUS from a session without the folder selected does not take \Recent.
    assert_eq!(
        run(&mut idle, "i1 STATUS INBOX (MESSAGES RECENT)"),
        "* STATUS INBOX (MESSAGES 2 RECENT 1)\r\ni1 OK Status completed.\r\n"
    );
    let outs: Vec<String> = s.iter_mut().map(ups).collect();
    for o in &outs {
        assert!(o.starts_with("* 2 EXISTS\r\n"), "{o}");
    }
    let recent: Vec<usize> = (0..3).filter(|&i| outs[i].contains("* 1 RECENT")).collect();
    assert_eq!(recent.len(), 1, "{outs:?}");
    for (i, o) in outs.iter().enumerate() {
        if !recent.contains(&i) {
            assert!(o.contains("* 0 RECENT"), "{o}");
        }
    }
    let r = recent[0];
    for (i, x) in s.iter_mut().enumerate() {
        let out = run(x, "f FETCH 2 (FLAGS)");
        assert_eq!(out.contains("\\Recent"), i == r, "{i}: {out}");
        let out = run(x, "g SEARCH RECENT");
        let want = if i == r {
            "* SEARCH 2\r\n"
        } else {
            "* SEARCH\r\n"
        };
        assert!(out.starts_with(want), "{i}: {out}");
    }
    assert_eq!(
        run(&mut idle, "i2 STATUS INBOX (RECENT)"),
        "* STATUS INBOX (RECENT 0)\r\ni2 OK Status completed.\r\n"
    );
    // A later SELECT finds nothing \Recent left; EXAMINE shows without taking.
    let out = run(&mut idle, "i3 SELECT INBOX");
    assert!(out.contains("* 2 EXISTS\r\n* 0 RECENT\r\n"), "{out}");
    fs::write(store.root().join("new/1001.M1P2Q4.host"), MSG3).unwrap();
    folders.tick();
    let out = run(&mut idle, "i4 EXAMINE INBOX");
    assert!(out.contains("* 3 EXISTS\r\n* 1 RECENT\r\n"), "{out}");
    // The RECENT count is of all the session's \Recent messages.
    let had = |i: usize| usize::from(i == r);
    assert_eq!(
        ups(&mut s[0]),
        format!("* 3 EXISTS\r\n* {} RECENT\r\n", 1 + had(0)),
        "EXAMINE left it unclaimed"
    );
    assert_eq!(
        ups(&mut s[1]),
        format!("* 3 EXISTS\r\n* {} RECENT\r\n", had(1))
    );
    // APPEND and COPY to a folder nobody selected leave \Recent for its first SELECT.
    let mut cmd = format!("c1 APPEND Trash {{{}}}\r\n", MSG3.len()).into_bytes();
    cmd.extend_from_slice(MSG3);
    assert!(run_bytes(&mut s[2], &cmd).contains("c1 OK [APPENDUID "));
    assert!(run(&mut s[2], "c2 COPY 1 Trash").contains("c2 OK [COPYUID "));
    fs::write(store.root().join(".Trash/new/1002.M1P2Q5.host"), MSG1).unwrap();
    assert_eq!(
        run(&mut s[2], "c3 STATUS Trash (MESSAGES RECENT)"),
        "* STATUS Trash (MESSAGES 3 RECENT 3)\r\nc3 OK Status completed.\r\n"
    );
    let out = run(&mut s[1], "c4 SELECT Trash");
    assert!(out.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{out}");
}

#[test]
fn shared_folder_syncs_once_per_turn() {
    let (_d, store) = with_inbox(&[MSG1]);
    let (folders, mut a, mut b) = two_shared(&store);
    folders.tick();
    assert_eq!(ups(&mut a), "");
    fs::write(store.root().join("new/1000.M1P2Q3.host"), MSG2).unwrap();
    // Same turn: the folder was synced already, B sees nothing yet.
    assert_eq!(ups(&mut b), "");
    folders.tick();
    assert_eq!(ups(&mut b), "* 2 EXISTS\r\n* 1 RECENT\r\n");
    assert_eq!(ups(&mut a), "* 2 EXISTS\r\n* 0 RECENT\r\n");
    // This worker's own APPEND is seen at once, in the same turn.
    let mut cmd = format!("a1 APPEND INBOX {{{}}}\r\n", MSG3.len()).into_bytes();
    cmd.extend_from_slice(MSG3);
    let out = run_bytes(&mut a, &cmd);
    assert!(out.starts_with("* 3 EXISTS\r\n* 1 RECENT\r\n"), "{out}");
    assert_eq!(ups(&mut b), "* 3 EXISTS\r\n* 1 RECENT\r\n");
}

#[test]
fn shared_folder_lru_and_uidvalidity() {
    let (_d, store) = with_inbox(&[MSG1]);
    let folders = SharedFolders::new();
    let mut a = shared(&store, &folders);
    for i in 0..12 {
        run(&mut a, &format!("c CREATE F{i}"));
    }
    run(&mut a, "a SELECT INBOX");
    assert_eq!(folders.len(), 1);
    for i in 0..12 {
        assert!(run(&mut a, &format!("s SELECT F{i}")).contains("OK [READ-WRITE]"));
    }
    assert_eq!(folders.len(), 9, "8 unselected kept, and the selected one");
    run(&mut a, "u UNSELECT");
    assert_eq!(folders.len(), 8);
    assert_eq!(a.selected_dir(), None);
    // DELETE forgets the folder; a session that drops ends its selection.
    run(&mut a, "d DELETE F11");
    assert_eq!(folders.len(), 7);
    let mut b = shared(&store, &folders);
    run(&mut b, "b SELECT INBOX");
    drop(b);
    assert_eq!(folders.len(), 8);
    // A new UIDVALIDITY ends the sessions that have the folder selected.
    let mut c = shared(&store, &folders);
    run(&mut c, "c SELECT INBOX");
    next_uidvalidity(store.root());
    fs::write(store.root().join("new/1000.M1P2Q3.host"), MSG2).unwrap();
    folders.tick();
    assert!(ups(&mut c).starts_with("* BYE [UNAVAILABLE]"));
    let o = c.handle(parse_command(b"c1 NOOP").unwrap());
    assert!(o.logout);
    let mut d = shared(&store, &folders);
    assert!(run(&mut d, "d SELECT INBOX").contains("* 2 EXISTS\r\n"));
}

#[test]
fn a_thousand_sessions_share_one_folder() {
    let (_d, store) = setup();
    let cur = store.root().join("cur");
    for i in 0..10_000u32 {
        let body = format!("Subject: m{i}\n\nbody {i}\n");
        fs::write(
            cur.join(format!("{}.M{i}P1Q{i}.host:2,", 1_600_000_000 + i)),
            body,
        )
        .unwrap();
    }
    let folders = SharedFolders::new();
    let mut sessions: Vec<Session> = Vec::new();
    for i in 0..1000 {
        let mut s = shared(&store, &folders);
        let out = run(&mut s, &format!("s{i} SELECT INBOX"));
        assert!(out.contains("* 10000 EXISTS\r\n"), "{out}");
        sessions.push(s);
    }
    assert_eq!(folders.len(), 1);
    let max = sessions.iter().map(Session::view_bytes).max().unwrap();
    println!("idle session in a 10,000-message folder: {max} bytes of its own");
    assert!(max < 2048, "{max}");
    // New mail: every view takes the new shared list instead of a copy of its own.
    fs::write(store.root().join("new/1700000000.M1P2Q3.host"), MSG1).unwrap();
    folders.tick();
    for s in &mut sessions {
        assert!(ups(s).starts_with("* 10001 EXISTS\r\n"));
    }
    let max = sessions.iter().map(Session::view_bytes).max().unwrap();
    assert!(max < 2048, "after new mail: {max}");
    // An expunge: the sessions that may not announce it yet keep sharing the list they
    // had; one that must add new mail to such a list (EXISTS may be sent, EXPUNGE not)
    // copies it until it may send the EXPUNGE, then shares again.
    let (first, rest) = sessions.split_first_mut().unwrap();
    run(first, "x STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert!(run(first, "x EXPUNGE").starts_with("* 1 EXPUNGE\r\n"));
    assert!(first.view_bytes() < 2048, "{}", first.view_bytes());
    let (other, rest) = rest.split_first_mut().unwrap();
    assert_eq!(
        run(other, "y FETCH 2 (UID)"),
        "* 2 FETCH (UID 2)\r\ny OK Fetch completed.\r\n"
    );
    assert!(other.view_bytes() < 2048, "{}", other.view_bytes());
    fs::write(store.root().join("new/1700000001.M1P2Q4.host"), MSG2).unwrap();
    folders.tick();
    let out = run(other, "y FETCH 2 (UID)");
    assert!(out.contains("* 10002 EXISTS\r\n"), "{out}");
    let ghostly = other.view_bytes();
    assert!(ghostly >= 40_000, "a list of its own: {ghostly}");
    println!("with an EXPUNGE not announced yet and new mail: {ghostly} bytes");
    assert_eq!(
        run(other, "y NOOP"),
        "* 1 EXPUNGE\r\ny OK NOOP completed.\r\n"
    );
    assert!(other.view_bytes() < 2048, "{}", other.view_bytes());
    for s in rest.iter_mut() {
        assert_eq!(ups(s), "* 1 EXPUNGE\r\n* 10001 EXISTS\r\n* 0 RECENT\r\n");
    }
    assert!(ups(first).starts_with("* 10001 EXISTS\r\n"));
    let max = sessions.iter().map(Session::view_bytes).max().unwrap();
    assert!(max < 2048, "after the expunge: {max}");
    assert_eq!(folders.len(), 1);
}

#[test]
fn list_recursivematch_gives_childinfo() {
    let (_d, store) = setup();
    let mut s = session(&store);
    for n in ["Foo.Bar", "Foo.Baz", "Eps", "Eps.Mb"] {
        run(&mut s, &format!("c CREATE {n}"));
    }
    for n in ["Foo.Bar", "Eps", "Eps.Mb", "Qux.Bar"] {
        run(&mut s, &format!("s SUBSCRIBE {n}"));
    }
    let out = run(&mut s, "a2 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %");
    assert!(
        out.contains(
            "* LIST (\\Noselect \\HasChildren) \".\" Foo (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "* LIST (\\HasChildren \\Subscribed) \".\" Eps (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("* LIST (\\NonExistent) \".\" Qux (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"),
        "{out}"
    );
    assert!(
        !out.contains("Foo.Bar") && !out.contains("Qux.Bar"),
        "{out}"
    );
    let plain = run(&mut s, "a3 LIST (SUBSCRIBED) \"\" %");
    assert!(
        !plain.contains("CHILDINFO") && !plain.contains(" Foo\r\n"),
        "{plain}"
    );
    assert!(
        plain.contains("* LIST (\\HasChildren \\Subscribed) \".\" Eps\r\n"),
        "{plain}"
    );
}

// ---------------------------------------------------------------------------------------
// Streamed FETCH answers (Session::set_streaming / resume).

/// `n` messages of 250 to 2,200 bytes (LF ends, as Maildir files have).
fn many(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = format!(
                "From: a{i}@example.org\nTo: bob@example.com\nSubject: message {i}\nMessage-ID: <{i}@example.org>\n\n"
            )
            .into_bytes();
            for l in 0..5 + (i * 7) % 40 {
                m.extend_from_slice(
                    format!("line {l} of message {i}, some text to make it longer\n").as_bytes(),
                );
            }
            m
        })
        .collect()
}

fn put_many(store: &Store, n: usize) {
    let msgs = many(n);
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    put(store, "INBOX", &refs);
}

/// `n` messages (see [`many`]) in INBOX and [`two_shared`] sessions, `a` streaming its
/// FETCH answers in pieces of `chunk` bytes.
fn streaming_pair(
    n: usize,
    chunk: usize,
) -> (
    tempfile::TempDir,
    Store,
    Rc<SharedFolders>,
    Session,
    Session,
) {
    let (d, store) = setup();
    put_many(&store, n);
    let (folders, mut a, b) = two_shared(&store);
    a.set_streaming(chunk);
    (d, store, folders, a, b)
}

/// A command's answer as the program gets it: `handle`, then `resume` while `more`.
fn pieces(s: &mut Session, line: &str) -> Vec<String> {
    let cmd = parse_command(line.as_bytes()).unwrap();
    let mut o = s.handle(cmd);
    let mut v = Vec::new();
    loop {
        v.push(String::from_utf8(std::mem::take(&mut o.out)).unwrap());
        if !o.more {
            break;
        }
        assert!(s.pending());
        assert!(v.len() < 10_000, "no end");
        o = s.resume();
    }
    assert!(!s.pending());
    v
}

/// The longest untagged response of an answer (one message's FETCH response).
fn longest_response(answer: &str) -> usize {
    answer.split("\r\n* ").map(str::len).max().unwrap_or(0) + 4
}

/// Runs `line` on `streamed` (streaming with `chunk`) and on `whole` (no streaming, an
/// identical mailbox): the pieces make up the whole answer byte for byte, each at most
/// `chunk` plus one message's response, the tagged completion in the last only. Returns
/// the number of pieces.
fn same_answer(streamed: &mut Session, whole: &mut Session, line: &str, chunk: usize) -> usize {
    let cmd = parse_command(line.as_bytes()).unwrap();
    let o = whole.handle(cmd);
    assert!(!o.more, "no pieces without streaming");
    let expect = String::from_utf8(o.out).unwrap();
    let got = pieces(streamed, line);
    assert_eq!(got.concat(), expect, "{line}");
    let tag = line.split(' ').next().unwrap();
    let longest = longest_response(&expect);
    let (last, rest) = got.split_last().unwrap();
    for p in rest {
        assert!(
            p.len() <= chunk + longest,
            "{} > {chunk} + {longest}",
            p.len()
        );
        assert!(
            p.ends_with(")\r\n"),
            "a piece ends with a whole response: {p}"
        );
        assert!(!p.contains(&format!("\r\n{tag} ")) && !p.starts_with(&format!("{tag} ")));
    }
    assert!(last.ends_with("\r\n"));
    assert!(tagged(last).starts_with(&format!("{tag} OK ")), "{last}");
    got.len()
}

#[test]
fn streamed_fetch_is_the_whole_answer_in_pieces() {
    let (_d1, st1) = setup();
    let (_d2, st2) = setup();
    put_many(&st1, 50);
    put_many(&st2, 50);
    let mut a = session(&st1);
    let mut b = session(&st2);
    a.set_streaming(4096);
    assert!(run(&mut a, "s SELECT INBOX").contains("* 50 EXISTS\r\n"));
    assert!(run(&mut b, "s SELECT INBOX").contains("* 50 EXISTS\r\n"));
    let n = same_answer(&mut a, &mut b, "f1 FETCH 1:* BODY.PEEK[]", 4096);
    assert!(n >= 8, "{n} pieces");
    let n = same_answer(
        &mut a,
        &mut b,
        "f2 FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER] BODYSTRUCTURE)",
        4096,
    );
    assert!(n >= 3, "{n} pieces");
    // A small answer: one piece, as without streaming.
    assert_eq!(same_answer(&mut a, &mut b, "f3 FETCH 2:3 (UID)", 4096), 1);
    // Other commands are not streamed.
    assert_eq!(
        same_answer(&mut a, &mut b, "f4 SEARCH ALL", 4096),
        1,
        "SEARCH in one piece"
    );
    // BODY[] sets \Seen as it goes (FLAGS added), CONDSTORE adds MODSEQ.
    run(&mut a, "e ENABLE CONDSTORE");
    run(&mut b, "e ENABLE CONDSTORE");
    let n = same_answer(&mut a, &mut b, "f5 FETCH 5:40 BODY[]", 4096);
    assert!(n >= 5, "{n} pieces");
    let out = run(&mut a, "f6 FETCH 5 (FLAGS)");
    assert!(out.contains("FLAGS (\\Seen)"), "{out}");
    // UID FETCH with CHANGEDSINCE: only the messages changed since, UID and MODSEQ added.
    let since = modseq_of(&run(&mut a, "f7 FETCH 40 (MODSEQ)"));
    assert_eq!(since, modseq_of(&run(&mut b, "f7 FETCH 40 (MODSEQ)")));
    for s in [&mut a, &mut b] {
        run(s, "f8 STORE 10:20,45 +FLAGS.SILENT (\\Flagged)");
    }
    let line = format!("f9 UID FETCH 1:* (FLAGS BODY.PEEK[TEXT]) (CHANGEDSINCE {since})");
    let n = same_answer(&mut a, &mut b, &line, 4096);
    assert!(n >= 2, "{n} pieces");
    let all = pieces(&mut a, &line).concat();
    assert_eq!(all.matches(" FETCH (UID ").count(), 12, "{all}");
    assert!(all.contains("* 45 FETCH (UID 45 FLAGS (\\Flagged) BODY[TEXT] {"));
    assert!(all.contains("\r\n MODSEQ ("), "{all}");
    // chunk 0: one message per piece (every piece makes progress).
    a.set_streaming(0);
    assert_eq!(same_answer(&mut a, &mut b, "g1 FETCH 1:* (UID)", 0), 50);
    assert_eq!(same_answer(&mut a, &mut b, "g2 UID FETCH 1:* (UID)", 0), 50);
}

#[test]
fn streamed_fetch_skips_what_another_session_expunged_between_pieces() {
    let (_d, _store, _folders, mut a, mut b) = streaming_pair(50, 4096);
    let o = a.handle(parse_command(b"a1 FETCH 1:* (UID BODY.PEEK[])").unwrap());
    assert!(o.more);
    let first = String::from_utf8(o.out).unwrap();
    assert!(first.starts_with("* 1 FETCH (UID 1 BODY[] {"), "{first}");
    assert!(!first.contains("* 30 FETCH"), "{first}");
    // Meanwhile B expunges message 30 and flags UID 40.
    run(&mut b, "b1 STORE 30 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(
        run(&mut b, "b2 EXPUNGE"),
        "* 30 EXPUNGE\r\nb2 OK Expunge completed.\r\n"
    );
    run(&mut b, "b3 UID STORE 40 +FLAGS.SILENT (\\Flagged)");
    // ... and adds one: not part of A's 1:* (named when the command came).
    let out = run_bytes(
        &mut b,
        b"b4 APPEND INBOX {20+}\r\nSubject: new\r\n\r\nhi\r\n",
    );
    assert!(out.contains("b4 OK [APPENDUID "), "{out}");
    // No updates for A between pieces (its view stays as it was).
    assert_eq!(ups(&mut a), "");
    let mut rest = Vec::new();
    loop {
        let o = a.resume();
        rest.push(String::from_utf8(o.out).unwrap());
        if !o.more {
            break;
        }
    }
    assert!(rest.len() >= 5, "{} pieces", rest.len());
    let (last, middle) = rest.split_last().unwrap();
    for p in middle {
        assert!(!p.contains("a1 OK"), "{p}");
    }
    let all = format!("{first}{}", rest.concat());
    assert!(!all.contains("* 30 FETCH"), "skipped");
    assert!(all.contains("* 29 FETCH (UID 29 BODY[] {"));
    assert!(
        all.contains("* 31 FETCH (UID 31 BODY[] {"),
        "sequence numbers unchanged"
    );
    assert!(all.contains("* 50 FETCH (UID 50 BODY[] {"));
    assert!(!all.contains("* 51 FETCH"));
    assert!(!all.contains("EXPUNGE"), "no EXPUNGE during FETCH: {all}");
    // The end: B's flag change (sequence numbers of A's view), then the tagged OK.
    assert!(
        last.ends_with(
            ")\r\n* 40 FETCH (FLAGS (\\Flagged))\r\n* 51 EXISTS\r\n* 0 RECENT\r\na1 OK Fetch completed; some messages were expunged meanwhile.\r\n"
        ),
        "{last}"
    );
    // The EXPUNGE comes with the next command that may carry it.
    assert_eq!(
        run(&mut a, "a2 NOOP"),
        "* 30 EXPUNGE\r\na2 OK NOOP completed.\r\n"
    );
    assert_eq!(
        run(&mut a, "a3 FETCH 30 (UID)"),
        "* 30 FETCH (UID 31)\r\na3 OK Fetch completed.\r\n"
    );
}

#[test]
fn streamed_fetch_sets_seen_between_pieces_and_reports_once() {
    let (_d, _store, _folders, mut a, mut b) = streaming_pair(20, 2048);
    let got = pieces(&mut a, "a1 FETCH 1:* BODY[]");
    assert!(got.len() >= 3, "{} pieces", got.len());
    let all = got.concat();
    assert_eq!(all.matches(" FLAGS (\\Seen))\r\n").count(), 20, "{all}");
    // A's own changes are not announced to A again; B hears of all of them.
    assert_eq!(run(&mut a, "a2 NOOP"), "a2 OK NOOP completed.\r\n");
    let out = run(&mut b, "b1 NOOP");
    assert_eq!(
        out.matches(" FETCH (FLAGS (\\Seen))\r\n").count(),
        20,
        "{out}"
    );
}

#[test]
fn a_command_while_a_fetch_is_streamed_finishes_the_fetch_first() {
    let (_d, store) = setup();
    put_many(&store, 30);
    let mut a = session(&store);
    let mut b = session(&store);
    a.set_streaming(4096);
    run(&mut a, "a SELECT INBOX");
    run(&mut b, "a SELECT INBOX");
    let whole = run(&mut b, "a1 FETCH 1:* BODY.PEEK[]");
    let o = a.handle(parse_command(b"a1 FETCH 1:* BODY.PEEK[]").unwrap());
    assert!(o.more && a.pending());
    let first = String::from_utf8(o.out).unwrap();
    // The program's bug: the next command before the rest of the answer.
    let o = a.handle(parse_command(b"a2 NOOP").unwrap());
    assert!(!o.more && !a.pending());
    let rest = String::from_utf8(o.out).unwrap();
    assert_eq!(
        format!("{first}{rest}"),
        format!("{whole}a2 OK NOOP completed.\r\n")
    );
    // Nothing in progress: resume gives nothing.
    assert_eq!(a.resume(), Default::default());
    // A streamed FETCH started by that command continues as usual.
    let o = a.handle(parse_command(b"a3 FETCH 1:* BODY.PEEK[]").unwrap());
    assert!(o.more);
    let o = a.handle(parse_command(b"a4 FETCH 1:* BODY.PEEK[]").unwrap());
    assert!(o.more, "a4 streamed after a3 was finished");
    let out = String::from_utf8(o.out).unwrap();
    assert!(
        out.contains("a3 OK Fetch completed.\r\n* 1 FETCH (BODY[] {"),
        "{out}"
    );
    while a.resume().more {}
    assert!(!a.pending());
}

#[test]
fn streamed_fetch_stops_when_the_uidvalidity_changed_between_pieces() {
    let (_d, store, folders, mut a, mut b) = streaming_pair(30, 4096);
    let o = a.handle(parse_command(b"a1 FETCH 1:* (UID BODY.PEEK[])").unwrap());
    assert!(o.more);
    // A new UIDVALIDITY in the UID list (and new mail, so that the folder looks at it);
    // B's next command syncs the shared folder.
    next_uidvalidity(store.root());
    fs::write(store.root().join("new/1000.M1P2Q3.host"), MSG2).unwrap();
    folders.tick();
    let out = run(&mut b, "b1 NOOP");
    assert!(out.starts_with("* BYE [UNAVAILABLE]"), "{out}");
    // A: the rest is left out (its UIDs may name other messages now), the session ends.
    let o = a.resume();
    assert!(!o.more && o.logout);
    let out = String::from_utf8(o.out).unwrap();
    assert_eq!(
        out,
        "* BYE [UNAVAILABLE] Mailbox UIDVALIDITY changed, reconnect\r\na1 OK Fetch completed; some messages were expunged meanwhile.\r\n"
    );
}

/// The counts for the logout line: messages fetched, expunged, appended.
#[test]
fn counts_for_the_logout_line() {
    let (_t, store) = setup();
    put(
        &store,
        "INBOX",
        &[b"Subject: a\n\none\n", b"Subject: b\n\ntwo\n"],
    );
    let mut s = session(&store);
    assert_eq!(s.counts(), Default::default());
    assert!(tagged(&run(&mut s, "a SELECT INBOX")).starts_with("a OK"));
    run(&mut s, "b FETCH 1:* (FLAGS)");
    assert_eq!(s.counts().fetched, 0, "FLAGS reads no message");
    run(&mut s, "c FETCH 1:* BODY.PEEK[]");
    assert_eq!(s.counts().fetched, 2);
    run(&mut s, "d APPEND INBOX {17}\r\nSubject: c\r\n\r\nx\r\n");
    run(&mut s, "e COPY 1 Trash");
    assert_eq!(s.counts().appended, 2);
    run(&mut s, "f STORE 1:2 +FLAGS.SILENT (\\Deleted)");
    assert!(tagged(&run(&mut s, "g EXPUNGE")).starts_with("g OK"));
    assert_eq!(s.counts().expunged, 2);
}
