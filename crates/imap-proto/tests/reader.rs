#![allow(clippy::unwrap_used)]
//! The command reader with its input cut every possible way, and arbitrary input.

use petrel_imap_proto::{parse_command, CommandKind, CommandReader, ReadEvent};
use proptest::prelude::*;

/// A session as a mail client writes it (sync literals are answered by the test's
/// "server", which does nothing: the bytes follow anyway, as a pipelining client's would).
const SESSION: &[u8] = b"a1 CAPABILITY\r\n\
a2 ID (\"name\" \"Thunderbird\" \"version\" \"115.3.1\")\r\n\
a3 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n\
a4 ENABLE CONDSTORE\r\n\
a5 LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE CHILDREN)\r\n\
a6 SELECT INBOX (CONDSTORE)\r\n\
a7 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])\r\n\
a8 APPEND Sent (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {32}\r\n\
From: a@b\r\nSubject: hi\r\n\r\nbody\r\n\r\n\
a9 LOGIN {3+}\r\nbob {6}\r\nsecret\r\n\
a10 UID SEARCH RETURN (MIN MAX COUNT) CHARSET UTF-8 SUBJECT {6}\r\nM\xc3\xbcsli\r\n\
a11 IDLE\r\nDONE\r\n\
a12 UID STORE 1:3 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Deleted)\r\n\
a13 UID MOVE 4 Trash\r\n\
a14 APPEND Drafts {0}\r\n\r\n\
a15 LOGOUT\r\n";

fn run(input: &[u8], piece: usize, max_line: usize, max_literal: u64) -> Vec<ReadEvent> {
    let mut r = CommandReader::new(max_line, max_literal);
    let mut out = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        r.push(chunk);
        while let Some(e) = r.next() {
            out.push(e);
        }
        // Memory stays bounded by the limits plus one piece.
        assert!(r.buffered() <= max_line + max_literal as usize + 2 * piece + 8);
    }
    out
}

#[test]
fn session_commands() {
    let events = run(SESSION, SESSION.len(), 1024, 1024);
    let commands: Vec<&Vec<u8>> = events
        .iter()
        .filter_map(|e| match e {
            ReadEvent::Command(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(commands.len(), 16);
    let conts = events
        .iter()
        .filter(|e| **e == ReadEvent::NeedContinuation)
        .count();
    assert_eq!(conts, 4);
    let kinds: Vec<CommandKind> = commands
        .iter()
        .map(|c| parse_command(c).unwrap().kind)
        .collect();
    assert!(matches!(kinds[7], CommandKind::Append { ref message, .. } if message.len() == 32));
    assert!(
        matches!(&kinds[8], CommandKind::Login { user, password } if user == "bob" && password == "secret")
    );
    assert!(matches!(kinds[11], CommandKind::Done));
    assert!(matches!(kinds[14], CommandKind::Append { ref message, .. } if message.is_empty()));
    assert!(matches!(kinds[15], CommandKind::Logout));
}

#[test]
fn every_piece_size_gives_the_same_events() {
    for (max_line, max_literal) in [(1024, 1024), (100, 10), (200, 34)] {
        let whole = run(SESSION, SESSION.len(), max_line, max_literal);
        for piece in 1..=512 {
            assert_eq!(
                run(SESSION, piece, max_line, max_literal),
                whole,
                "piece {piece}, limits {max_line}/{max_literal}"
            );
        }
    }
}

#[test]
fn every_cut_point_gives_the_same_events() {
    let whole = run(SESSION, SESSION.len(), 1024, 1024);
    for cut in 0..=SESSION.len() {
        let mut r = CommandReader::new(1024, 1024);
        let mut out = Vec::new();
        for part in [&SESSION[..cut], &SESSION[cut..]] {
            r.push(part);
            out.extend(std::iter::from_fn(|| r.next()));
        }
        assert_eq!(out, whole, "cut at {cut}");
    }
}

#[test]
fn limits_with_every_piece_size() {
    let input: &[u8] = b"t1 NOOP\r\n\
t2 APPEND x {50}\r\n\
t3 APPEND x {11+}\r\nhello world\r\n\
t4 LOGIN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\
t5 LOGIN {5+}\r\nab\r\nc {6}\r\n\
t6 NOOP\r\n\
t7 APPEND x {2000000+}\r\n";
    let whole = run(input, input.len(), 40, 10);
    fn bad(e: &ReadEvent, tag: &str, fatal: bool) -> bool {
        matches!(e, ReadEvent::Bad { tag: Some(t), fatal: f, .. } if t == tag && *f == fatal)
    }
    assert_eq!(whole[0], ReadEvent::Command(b"t1 NOOP".to_vec()));
    assert!(bad(&whole[1], "t2", false));
    assert!(bad(&whole[2], "t3", false));
    assert!(bad(&whole[3], "t4", false));
    // The first literal of t5 (5 bytes) fits; the second would pass the command's total.
    assert!(bad(&whole[4], "t5", false));
    assert_eq!(whole[5], ReadEvent::Command(b"t6 NOOP".to_vec()));
    assert!(bad(&whole[6], "t7", true));
    assert_eq!(whole.len(), 7);
    for piece in 1..=512 {
        assert_eq!(run(input, piece, 40, 10), whole, "piece {piece}");
    }
}

#[test]
fn idle_done() {
    let mut r = CommandReader::new(100, 100);
    r.push(b"a IDLE\r\n");
    let ReadEvent::Command(c) = r.next().unwrap() else {
        panic!()
    };
    assert_eq!(parse_command(&c).unwrap().kind, CommandKind::Idle);
    r.push(b"done\r\n");
    let ReadEvent::Command(c) = r.next().unwrap() else {
        panic!()
    };
    assert!(petrel_imap_proto::is_done_line(&c));
    assert!(r.next().is_none());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        piece in 1usize..64,
    ) {
        let whole = run(&input, input.len().max(1), 64, 32);
        prop_assert_eq!(run(&input, piece, 64, 32), whole.clone());
        for e in whole {
            if let ReadEvent::Command(c) = e {
                let _ = parse_command(&c);
            }
        }
    }

    #[test]
    fn imap_like_input_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"a "[..]), Just(&b"UID "[..]), Just(&b"FETCH "[..]), Just(&b"SEARCH "[..]),
                Just(&b"STORE "[..]), Just(&b"APPEND "[..]), Just(&b"LIST "[..]), Just(&b"("[..]),
                Just(&b")"[..]), Just(&b"{3}\r\n"[..]), Just(&b"{2+}\r\n"[..]), Just(&b"\""[..]),
                Just(&b"\\"[..]), Just(&b"BODY.PEEK["[..]), Just(&b"]"[..]), Just(&b"<1.2>"[..]),
                Just(&b"1:*"[..]), Just(&b","[..]), Just(&b"NOT "[..]), Just(&b"OR "[..]),
                Just(&b"HEADER.FIELDS "[..]), Just(&b"x"[..]), Just(&b" "[..]), Just(&b"\r\n"[..]),
                Just(&b"1-Jan-2000"[..]), Just(&b"FLAGS "[..]), Just(&b"\0"[..]), Just(&b"\xff"[..]),
                Just(&b"SELECT "[..]), Just(&b"&AP"[..]), Just(&b"-"[..]), Just(&b"NIL"[..]),
            ],
            0..40,
        )
    ) {
        let input: Vec<u8> = parts.concat();
        let _ = parse_command(&input);
        for e in run(&input, 7, 256, 256) {
            if let ReadEvent::Command(c) = e {
                let _ = parse_command(&c);
            }
        }
    }
}
