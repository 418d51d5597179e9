#![allow(clippy::unwrap_used)]
//! Every command kind parsed from the text real clients send.

use petrel_imap_proto::{
    parse_command, Command, CommandKind as K, Date, FetchItem as F, Flag, SearchKey as S,
    SearchReturn, Section, SectionText, SeqNum, SeqRange, SequenceSet, StatusItem, StoreMode,
    MAX_DEPTH,
};

fn parse(s: &str) -> K {
    match parse_command(s.as_bytes()) {
        Ok(c) => c.kind,
        Err(e) => panic!("{s:?}: {e:?}"),
    }
}

fn err(s: &[u8]) -> (Option<String>, String) {
    match parse_command(s) {
        Ok(c) => panic!("{s:?} parsed as {c:?}"),
        Err(e) => (e.tag, e.text),
    }
}

fn set(s: &[(u32, u32)]) -> SequenceSet {
    SequenceSet(
        s.iter()
            .map(|&(a, b)| SeqRange {
                start: if a == 0 {
                    SeqNum::Last
                } else {
                    SeqNum::Value(a)
                },
                end: if b == 0 {
                    SeqNum::Last
                } else {
                    SeqNum::Value(b)
                },
            })
            .collect(),
    )
}

fn date(year: u16, month: u8, day: u8) -> Date {
    Date { year, month, day }
}

#[test]
fn simple_commands() {
    assert_eq!(
        parse_command(b"a001 capability").unwrap(),
        Command {
            tag: "a001".into(),
            kind: K::Capability
        }
    );
    assert_eq!(parse("1 NOOP"), K::Noop);
    assert_eq!(parse("A3 LOGOUT"), K::Logout);
    assert_eq!(parse("x STARTTLS"), K::StartTls);
    assert_eq!(parse("a CHECK"), K::Check);
    assert_eq!(parse("a CLOSE"), K::Close);
    assert_eq!(parse("a UNSELECT"), K::Unselect);
    assert_eq!(parse("a EXPUNGE"), K::Expunge);
    assert_eq!(parse("a IDLE"), K::Idle);
    assert_eq!(parse("a NAMESPACE"), K::Namespace);
    assert_eq!(parse_command(b"done").unwrap().kind, K::Done);
    assert!(petrel_imap_proto::is_done_line(b"DONE\r\n"));
    assert!(!petrel_imap_proto::is_done_line(b"a DONE"));
    assert_eq!(
        parse("a UID EXPUNGE 3000:3002,4"),
        K::UidExpunge(set(&[(3000, 3002), (4, 4)]))
    );
}

#[test]
fn login_and_authenticate() {
    assert_eq!(
        parse("a1 LOGIN smith sesame"),
        K::Login {
            user: "smith".into(),
            password: "sesame".into()
        }
    );
    assert_eq!(
        parse("a1 LOGIN \"bob@example.org\" \"p a\\\"s\\\\s\""),
        K::Login {
            user: "bob@example.org".into(),
            password: "p a\"s\\s".into()
        }
    );
    assert_eq!(
        parse("a1 LOGIN {3}\r\nbob {5+}\r\nsé{}"),
        K::Login {
            user: "bob".into(),
            password: "sé{}".into()
        }
    );
    assert_eq!(
        parse("a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ="),
        K::Authenticate {
            mechanism: "PLAIN".into(),
            initial: Some(b"\0bob\0secret".to_vec())
        }
    );
    assert_eq!(
        parse("a authenticate plain"),
        K::Authenticate {
            mechanism: "PLAIN".into(),
            initial: None
        }
    );
    assert_eq!(
        parse("a AUTHENTICATE EXTERNAL ="),
        K::Authenticate {
            mechanism: "EXTERNAL".into(),
            initial: Some(vec![])
        }
    );
    assert!(parse_command(b"a AUTHENTICATE PLAIN AGJvYgBz!").is_err());
    assert!(parse_command(b"a AUTHENTICATE PLAIN AGJ").is_err());
}

#[test]
fn mailbox_commands() {
    assert_eq!(
        parse("a SELECT inbox"),
        K::Select {
            mailbox: "INBOX".into(),
            condstore: false
        }
    );
    assert_eq!(
        parse("a SELECT \"Entw&APw-rfe\" (CONDSTORE)"),
        K::Select {
            mailbox: "Entwürfe".into(),
            condstore: true
        }
    );
    assert_eq!(
        parse("a EXAMINE Archive/2024"),
        K::Examine {
            mailbox: "Archive/2024".into(),
            condstore: false
        }
    );
    assert!(err(b"a SELECT INBOX (QRESYNC (1 2))")
        .1
        .contains("select parameter"));
    assert_eq!(
        parse("a CREATE Sent (USE (\\Sent))"),
        K::Create {
            mailbox: "Sent".into(),
            special_use: vec!["\\Sent".into()]
        }
    );
    assert_eq!(
        parse("a CREATE \"Tom &- Jerry\""),
        K::Create {
            mailbox: "Tom & Jerry".into(),
            special_use: vec![]
        }
    );
    assert_eq!(parse("a DELETE foo"), K::Delete("foo".into()));
    assert_eq!(
        parse("a RENAME \"old one\" new"),
        K::Rename {
            from: "old one".into(),
            to: "new".into()
        }
    );
    assert_eq!(parse("a SUBSCRIBE Lists"), K::Subscribe("Lists".into()));
    assert_eq!(parse("a UNSUBSCRIBE Lists"), K::Unsubscribe("Lists".into()));
    assert_eq!(
        parse("a STATUS \"INBOX\" (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"),
        K::Status {
            mailbox: "INBOX".into(),
            items: vec![
                StatusItem::Messages,
                StatusItem::Unseen,
                StatusItem::Recent,
                StatusItem::UidNext,
                StatusItem::UidValidity,
                StatusItem::HighestModSeq
            ]
        }
    );
    assert!(parse_command(b"a STATUS INBOX ()").is_err());
    // Raw 8-bit mailbox names are not modified UTF-7.
    assert!(parse_command("a SELECT Entwürfe".as_bytes()).is_err());
}

#[test]
fn list_and_lsub() {
    assert_eq!(
        parse("a LIST \"\" \"*\""),
        K::List {
            reference: "".into(),
            patterns: vec!["*".into()],
            select_special_use: false,
            select_subscribed: false,
            recursive_match: false,
            return_special_use: false,
            return_children: false,
            return_subscribed: false,
        }
    );
    assert_eq!(
        parse("a LIST \"\" %"),
        K::List {
            reference: "".into(),
            patterns: vec!["%".into()],
            select_special_use: false,
            select_subscribed: false,
            recursive_match: false,
            return_special_use: false,
            return_children: false,
            return_subscribed: false,
        }
    );
    // Thunderbird.
    assert_eq!(
        parse("5 list (subscribed) \"\" \"*\" return (special-use children)"),
        K::List {
            reference: "".into(),
            patterns: vec!["*".into()],
            select_special_use: false,
            select_subscribed: true,
            recursive_match: false,
            return_special_use: true,
            return_children: true,
            return_subscribed: false,
        }
    );
    assert_eq!(
        parse("a LIST (SPECIAL-USE RECURSIVEMATCH) \"\" (\"%\" \"Entw&APw-rfe/*\") RETURN (SUBSCRIBED)"),
        K::List {
            reference: "".into(),
            patterns: vec!["%".into(), "Entwürfe/*".into()],
            select_special_use: true,
            select_subscribed: false,
            recursive_match: true,
            return_special_use: false,
            return_children: false,
            return_subscribed: true,
        }
    );
    assert_eq!(
        parse("a LSUB \"#news.\" comp.mail.*"),
        K::Lsub {
            reference: "#news.".into(),
            pattern: "comp.mail.*".into()
        }
    );
    assert!(parse_command(b"a LIST (RECURSIVEMATCH) \"\" *").is_err());
    assert!(parse_command(b"a LIST \"\" * RETURN (STATUS (MESSAGES))").is_err());
}

#[test]
fn append() {
    assert_eq!(
        parse("A003 APPEND saved-messages (\\Seen) {21}\r\nFrom: a@b\r\n\r\nHello!\r\n"),
        K::Append {
            mailbox: "saved-messages".into(),
            flags: vec![Flag::Seen],
            date: None,
            message: b"From: a@b\r\n\r\nHello!\r\n".to_vec()
        }
    );
    match parse("a APPEND Drafts (\\Draft $MDNSent) \" 7-Feb-2024 13:05:00 +0100\" {3+}\r\nx\0y") {
        K::Append {
            flags,
            date: Some(d),
            message,
            ..
        } => {
            assert_eq!(flags, vec![Flag::Draft, Flag::Keyword("$MDNSent".into())]);
            assert_eq!(d.offset_minutes, 60);
            assert_eq!(d.epoch, 1_707_307_500);
            assert_eq!(message, b"x\0y");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse("a APPEND INBOX () {0}\r\n"),
        K::Append {
            mailbox: "INBOX".into(),
            flags: vec![],
            date: None,
            message: vec![]
        }
    );
    assert!(err(b"a APPEND INBOX \"hello\"").1.contains("ate"));
    assert!(err(b"a APPEND INBOX hello").1.contains("literal"));
    assert!(parse_command(b"a APPEND INBOX \"31-Feb-2024 00:00:00 +0000\" {0}\r\n").is_err());
    assert!(parse_command(b"a APPEND INBOX \"01-Feb-2024 24:00:00 +0000\" {0}\r\n").is_err());
    assert!(parse_command(b"a APPEND INBOX {5}\r\nabc").is_err());
}

#[test]
fn fetch() {
    // Thunderbird's header fetch.
    assert_eq!(
        parse("a1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])"),
        K::Fetch {
            uid: true,
            set: set(&[(1, 0)]),
            items: vec![
                F::Uid,
                F::Rfc822Size,
                F::Flags,
                F::BodySection {
                    peek: true,
                    section: Section {
                        part: vec![],
                        text: Some(SectionText::HeaderFields(
                            "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To"
                                .split(' ')
                                .map(String::from)
                                .collect()
                        ))
                    },
                    partial: None
                }
            ],
            changed_since: None
        }
    );
    // mutt.
    assert_eq!(
        parse("a0005 FETCH 1:3 (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS.NOT (DATE)])"),
        K::Fetch {
            uid: false,
            set: set(&[(1, 3)]),
            items: vec![
                F::Uid,
                F::Flags,
                F::InternalDate,
                F::Rfc822Size,
                F::BodySection {
                    peek: true,
                    section: Section {
                        part: vec![],
                        text: Some(SectionText::HeaderFieldsNot(vec!["DATE".into()]))
                    },
                    partial: None
                }
            ],
            changed_since: None
        }
    );
    // imaplib / mbsync.
    assert_eq!(
        parse("a FETCH 2 (RFC822)"),
        K::Fetch {
            uid: false,
            set: set(&[(2, 2)]),
            items: vec![F::Rfc822],
            changed_since: None
        }
    );
    assert_eq!(
        parse("a UID FETCH 5,7:9 (BODY.PEEK[]<0.2048> BODY[1.2.MIME] body[2.text] BODY[3] BODY[] BODYSTRUCTURE ENVELOPE RFC822.HEADER RFC822.TEXT MODSEQ BODY) (CHANGEDSINCE 12345)"),
        K::Fetch {
            uid: true,
            set: set(&[(5, 5), (7, 9)]),
            items: vec![
                F::BodySection { peek: true, section: Section::default(), partial: Some((0, 2048)) },
                F::BodySection { peek: false, section: Section { part: vec![1, 2], text: Some(SectionText::Mime) }, partial: None },
                F::BodySection { peek: false, section: Section { part: vec![2], text: Some(SectionText::Text) }, partial: None },
                F::BodySection { peek: false, section: Section { part: vec![3], text: None }, partial: None },
                F::BodySection { peek: false, section: Section::default(), partial: None },
                F::BodyStructure,
                F::Envelope,
                F::Rfc822Header,
                F::Rfc822Text,
                F::ModSeq,
                F::Body,
            ],
            changed_since: Some(12345)
        }
    );
    let items = |s: &str| match parse(s) {
        K::Fetch { items, .. } => items,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        items("a FETCH 1 FAST"),
        vec![F::Flags, F::InternalDate, F::Rfc822Size]
    );
    assert_eq!(
        items("a FETCH 1 all"),
        vec![F::Flags, F::InternalDate, F::Rfc822Size, F::Envelope]
    );
    assert_eq!(
        items("a FETCH * FULL"),
        vec![
            F::Flags,
            F::InternalDate,
            F::Rfc822Size,
            F::Envelope,
            F::Body
        ]
    );
    assert_eq!(items("a FETCH 1 flags"), vec![F::Flags]);
    assert_eq!(
        items("a FETCH 1 BODY[HEADER]"),
        vec![F::BodySection {
            peek: false,
            section: Section {
                part: vec![],
                text: Some(SectionText::Header)
            },
            partial: None
        }]
    );
    for bad in [
        "a FETCH 1 (ALL)",
        "a FETCH 1 (FLAGS",
        "a FETCH 1 ()",
        "a FETCH 0 FLAGS",
        "a FETCH 1 BODY[MIME]",
        "a FETCH 1 BODY[0]",
        "a FETCH 1 BODY.PEEK",
        "a FETCH 1 BODY[HEADER.FIELDS ()]",
        "a FETCH 1 BODY[]<1.0>",
        "a FETCH 1 BINARY[1]",
        "a FETCH 1 FLAGS (VANISHED)",
        "a FETCH $ FLAGS",
        "a FETCH 1:4294967296 FLAGS",
    ] {
        let (tag, _) = err(bad.as_bytes());
        assert_eq!(tag.as_deref(), Some("a"), "{bad}");
    }
}

#[test]
fn store_copy_move() {
    assert_eq!(
        parse("A003 STORE 2:4 +FLAGS (\\Deleted)"),
        K::Store {
            uid: false,
            set: set(&[(2, 4)]),
            mode: StoreMode::Add,
            silent: false,
            flags: vec![Flag::Deleted],
            unchanged_since: None
        }
    );
    assert_eq!(
        parse("a UID STORE 1:* -FLAGS.SILENT \\Seen $Junk"),
        K::Store {
            uid: true,
            set: set(&[(1, 0)]),
            mode: StoreMode::Remove,
            silent: true,
            flags: vec![Flag::Seen, Flag::Keyword("$Junk".into())],
            unchanged_since: None
        }
    );
    assert_eq!(
        parse("a UID STORE 7 (UNCHANGEDSINCE 320162338) FLAGS ()"),
        K::Store {
            uid: true,
            set: set(&[(7, 7)]),
            mode: StoreMode::Replace,
            silent: false,
            flags: vec![],
            unchanged_since: Some(320_162_338)
        }
    );
    assert_eq!(
        parse("a UID COPY 1,3:5 \"[Gmail]/Trash\""),
        K::Copy {
            uid: true,
            set: set(&[(1, 1), (3, 5)]),
            mailbox: "[Gmail]/Trash".into()
        }
    );
    assert_eq!(
        parse("a COPY 2 Archive"),
        K::Copy {
            uid: false,
            set: set(&[(2, 2)]),
            mailbox: "Archive".into()
        }
    );
    assert_eq!(
        parse("a UID MOVE 42 Junk"),
        K::Move {
            uid: true,
            set: set(&[(42, 42)]),
            mailbox: "Junk".into()
        }
    );
    assert_eq!(
        parse("a MOVE *:3 Junk"),
        K::Move {
            uid: false,
            set: set(&[(0, 3)]),
            mailbox: "Junk".into()
        }
    );
    assert!(parse_command(b"a STORE 1 FLAGS.LOUD (\\Seen)").is_err());
    assert!(parse_command(b"a STORE 1 +FLAGS (\\*)").is_err());
    assert!(parse_command(b"a UID FOO 1").is_err());
}

#[test]
fn search() {
    assert_eq!(
        parse("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\""),
        K::Search {
            uid: false,
            charset: None,
            criteria: S::And(vec![
                S::Flagged,
                S::Since(date(1994, 2, 1)),
                S::Not(Box::new(S::From("Smith".into())))
            ]),
            ret: None
        }
    );
    assert_eq!(
        parse("a UID SEARCH RETURN (MIN MAX COUNT) CHARSET utf-8 SUBJECT {6+}\r\nMüsli UNDELETED"),
        K::Search {
            uid: true,
            charset: Some("UTF-8".into()),
            criteria: S::And(vec![S::Subject("Müsli".into()), S::Undeleted]),
            ret: Some(vec![
                SearchReturn::Min,
                SearchReturn::Max,
                SearchReturn::Count
            ])
        }
    );
    assert_eq!(
        parse("a UID SEARCH RETURN () 1:*"),
        K::Search {
            uid: true,
            charset: None,
            criteria: S::SequenceSet(set(&[(1, 0)])),
            ret: Some(vec![SearchReturn::All])
        }
    );
    // Every RFC 3501 key, and MODSEQ.
    let all = "ALL ANSWERED BCC b BEFORE \"01-Jan-2000\" BODY x CC c DELETED DRAFT FLAGGED FROM f \
        HEADER Message-ID \"<a@b>\" KEYWORD $Forwarded LARGER 1000 NEW NOT SEEN OLD ON 29-Feb-2024 \
        OR TO t (SUBJECT s) RECENT SEEN SENTBEFORE 2-Mar-2020 SENTON 3-Apr-2021 SENTSINCE 04-May-2022 \
        SINCE 5-Jun-2023 SMALLER 99 SUBJECT \"\" TEXT t TO t UID 1:5,*,7 UNANSWERED UNDELETED UNDRAFT \
        UNFLAGGED UNKEYWORD Junk UNSEEN 1,2:3 MODSEQ 620162338 \
        MODSEQ \"/flags/\\\\draft\" all 7 (ALL)";
    match parse(&format!("a SEARCH {all}")) {
        K::Search {
            criteria: S::And(keys),
            ..
        } => assert_eq!(
            keys,
            vec![
                S::All,
                S::Answered,
                S::Bcc("b".into()),
                S::Before(date(2000, 1, 1)),
                S::Body("x".into()),
                S::Cc("c".into()),
                S::Deleted,
                S::Draft,
                S::Flagged,
                S::From("f".into()),
                S::Header("Message-ID".into(), "<a@b>".into()),
                S::Keyword("$Forwarded".into()),
                S::Larger(1000),
                S::New,
                S::Not(Box::new(S::Seen)),
                S::Old,
                S::On(date(2024, 2, 29)),
                S::Or(
                    Box::new(S::To("t".into())),
                    Box::new(S::Subject("s".into()))
                ),
                S::Recent,
                S::Seen,
                S::SentBefore(date(2020, 3, 2)),
                S::SentOn(date(2021, 4, 3)),
                S::SentSince(date(2022, 5, 4)),
                S::Since(date(2023, 6, 5)),
                S::Smaller(99),
                S::Subject("".into()),
                S::Text("t".into()),
                S::To("t".into()),
                S::Uid(set(&[(1, 5), (0, 0), (7, 7)])),
                S::Unanswered,
                S::Undeleted,
                S::Undraft,
                S::Unflagged,
                S::Unkeyword("Junk".into()),
                S::Unseen,
                S::SequenceSet(set(&[(1, 1), (2, 3)])),
                S::ModSeq(620_162_338),
                S::ModSeq(7),
                S::All,
            ]
        ),
        other => panic!("{other:?}"),
    }
    let e = parse_command(b"a SEARCH CHARSET ISO-8859-1 TEXT x").unwrap_err();
    assert!(e.is_badcharset());
    assert_eq!(
        e.text.split("] ").next(),
        Some("[BADCHARSET (UTF-8 US-ASCII)")
    );
    assert_eq!(e.tag.as_deref(), Some("a"));
    for bad in [
        &b"a SEARCH"[..],
        b"a SEARCH FOO",
        b"a SEARCH (SEEN",
        b"a SEARCH ()",
        b"a SEARCH OR SEEN",
        b"a SEARCH SINCE 32-Jan-2000",
        b"a SEARCH SINCE 1-Foo-2000",
        b"a SEARCH SINCE 1-Jan-20",
        b"a SEARCH SUBJECT \"unterminated",
        b"a SEARCH SUBJECT \xff\xfe",
        b"a SEARCH SUBJECT \"\xff\"",
        b"a SEARCH SUBJECT {2}\r\n\xc3",
        b"a SEARCH RETURN (SAVE) ALL",
        b"a SEARCH  ALL",
        b"a SEARCH ALL ",
        b"a SEARCH LARGER 99999999999999999999999",
        b"a SEARCH MODSEQ 9223372036854775808",
    ] {
        let (tag, _) = err(bad);
        assert_eq!(
            tag.as_deref(),
            Some("a"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn nesting_limit() {
    let ok = format!(
        "a SEARCH {}ALL{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(parse_command(ok.as_bytes()).is_ok());
    let deep = format!(
        "a SEARCH {}ALL{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert!(err(deep.as_bytes()).1.contains("nested"));
    let nots = format!("a SEARCH {}ALL", "NOT ".repeat(100_000));
    assert!(err(nots.as_bytes()).1.contains("nested"));
    let ors = format!("a SEARCH {}ALL{}", "OR ALL ".repeat(100_000), "");
    assert!(parse_command(ors.as_bytes()).is_err());
}

#[test]
fn id_and_enable() {
    assert_eq!(
        parse("a ID (\"name\" \"Thunderbird\" \"version\" \"115.0\" \"os\" NIL)"),
        K::Id(Some(vec![
            ("name".into(), Some("Thunderbird".into())),
            ("version".into(), Some("115.0".into())),
            ("os".into(), None)
        ]))
    );
    assert_eq!(parse("a ID NIL"), K::Id(None));
    assert_eq!(parse("a ID ()"), K::Id(Some(vec![])));
    assert_eq!(
        parse("a ENABLE CONDSTORE utf8=accept"),
        K::Enable(vec!["CONDSTORE".into(), "UTF8=ACCEPT".into()])
    );
    assert!(parse_command(b"a ENABLE").is_err());
    assert!(parse_command(b"a ID (\"name\")").is_err());
}

#[test]
fn malformed() {
    assert_eq!(err(b""), (None, "Invalid tag".into()));
    assert_eq!(err(b"a+b NOOP").0, None);
    assert_eq!(err(b"* NOOP").0, None);
    assert_eq!(err(b"a"), (Some("a".into()), "Missing argument".into()));
    assert_eq!(err(b"a FROB"), (Some("a".into()), "Unknown command".into()));
    assert_eq!(err(b"a NOOP extra").1, "Unexpected extra arguments");
    assert!(err(b"a LOGIN bob").1.contains("Missing"));
    assert!(parse_command(b"a LOGIN bob \"pa\0ss\"").is_err());
    assert!(parse_command(b"a LOGIN bob {3}\r\npa\0").is_err());
    assert!(parse_command(b"a LOGIN bob {3}pass").is_err());
    assert!(parse_command(b"a LOGIN bob \"pa\\ss\"").is_err());
    assert!(parse_command(b"a LOGIN bob {99999999999999999999}\r\n").is_err());
    assert!(parse_command(b"a LOGIN bob {18446744073709551615}\r\n").is_err());
    assert!(parse_command(b"a NOOP\r\n").is_err());
}

mod roundtrip {
    use super::*;
    use petrel_imap_proto::format_internal_date;
    use proptest::prelude::*;

    fn seq_num() -> impl Strategy<Value = SeqNum> {
        prop_oneof![Just(SeqNum::Last), (1u32..).prop_map(SeqNum::Value)]
    }

    proptest! {
        #[test]
        fn sequence_set_display_parses_back(
            ranges in proptest::collection::vec((seq_num(), seq_num()), 1..8),
            max in 0u32..100,
            n in 0u32..120,
        ) {
            let s = SequenceSet(ranges.into_iter().map(|(start, end)| SeqRange { start, end }).collect());
            let cmd = format!("a UID EXPUNGE {s}");
            let K::UidExpunge(back) = parse(&cmd) else { panic!() };
            let expect: Vec<u32> = (1..=max).filter(|&i| s.contains(i, max)).collect();
            prop_assert_eq!(back.iter(max).collect::<Vec<_>>(), expect);
            prop_assert_eq!(back.contains(n, max), s.contains(n, max));
        }

        #[test]
        fn internal_date_parses_back(epoch in -2_000_000_000i64..8_000_000_000, off in -1439i32..1440) {
            let text = format_internal_date(epoch, off);
            let cmd = format!("a APPEND x \"{text}\" {{0}}\r\n");
            match parse(&cmd) {
                K::Append { date: Some(d), .. } => {
                    prop_assert_eq!(d.epoch, epoch);
                    prop_assert_eq!(d.offset_minutes, off);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
