#![allow(clippy::unwrap_used)]
//! RFC 3501's examples, the SEARCH helpers, robustness and speed.

use std::time::Instant;

use petrel_imap_mime::{
    body_structure, body_text, envelope, header_values, section, sent_date, to_crlf, SectionText,
};
use proptest::prelude::*;

const RFC_HEADER: &str = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n\
From: Terry Gray <gray@cac.washington.edu>\n\
Subject: IMAP4rev1 WG mtg summary and minutes\n\
To: imap@cac.washington.edu\n\
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n\
Message-Id: <B27397-0100000@cac.washington.edu>\n\
MIME-Version: 1.0\n\
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\
Content-Transfer-Encoding: 7BIT\n\n";

/// RFC 3501 §8's FETCH example: its ENVELOPE, and its BODY for a 3028-byte, 92-line body.
#[test]
fn rfc3501_fetch_example() {
    let line = "x".repeat(3028 / 92 - 2);
    let mut body = format!("{line}\n").repeat(91);
    let last = 3028 - (body.len() + 91) - 2;
    body.push_str(&"y".repeat(last));
    body.push('\n');
    let msg = to_crlf(format!("{RFC_HEADER}{body}").as_bytes()).into_owned();
    // RFC 3501 writes a space between the cc addresses; the grammar has none (nor does
    // Dovecot).
    let want = "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" \
(\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) \
((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
\"<B27397-0100000@cac.washington.edu>\")"
        .replacen("\" (\"Terry", "\" ((\"Terry", 1);
    assert_eq!(String::from_utf8(envelope(&msg)).unwrap(), want);
    assert_eq!(
        String::from_utf8(body_structure(&msg, false)).unwrap(),
        "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92)"
    );
}

#[test]
fn sections_of_rfc3501_example() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/messages/rfc3501.eml"
    ))
    .unwrap();
    let msg = to_crlf(&raw);
    let s = |p: &[u32], t: Option<SectionText>| {
        String::from_utf8(section(&msg, p, t.as_ref())).unwrap()
    };
    assert_eq!(s(&[1], None), "part 1");
    assert_eq!(s(&[3, 1], None), "part 3.1");
    assert_eq!(s(&[3, 2], None), "part 3.2");
    assert_eq!(s(&[4, 2, 1], None), "part 4.2.1");
    assert_eq!(s(&[4, 2, 2, 1], None), "part 4.2.2.1");
    assert_eq!(s(&[4, 2, 2, 2], None), "part 4.2.2.2");
    assert!(s(&[3], Some(SectionText::Header)).starts_with("Subject: part 3\r\n"));
    assert!(s(&[4, 2], Some(SectionText::Header)).ends_with("boundary=\"d\"\r\n\r\n"));
    assert_eq!(
        s(&[4, 1], Some(SectionText::Mime)),
        "Content-Type: IMAGE/GIF\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    assert_eq!(
        s(
            &[3],
            Some(SectionText::HeaderFields(vec!["SUBJECT".into()]))
        ),
        "Subject: part 3\r\n\r\n"
    );
    assert_eq!(s(&[1], Some(SectionText::Header)), "");
    assert_eq!(s(&[9], None), "");
    assert_eq!(s(&[4, 1, 2], None), "");
    assert_eq!(s(&[], Some(SectionText::Mime)), "");
    assert_eq!(s(&[], None).len(), msg.len());
}

#[test]
fn search_helpers() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/messages/encoded.eml"
    ))
    .unwrap();
    let msg = to_crlf(&raw);
    assert_eq!(
        header_values(&msg, "subject"),
        vec!["Çà va bien?".to_string()]
    );
    assert_eq!(
        header_values(&msg, "TO"),
        vec!["Joël <joel@example.fr>".to_string()]
    );
    assert!(header_values(&msg, "x-missing").is_empty());
    assert_eq!(body_text(&msg).trim_end(), "Voilà un message en français.");
    assert_eq!(sent_date(&msg), Some(1_704_546_000));

    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/messages/rfc822.eml"
    ))
    .unwrap();
    let text = body_text(&to_crlf(&raw));
    assert!(text.contains("Forwarding the message below."), "{text}");
    assert!(text.contains("original text"), "{text}");

    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/messages/alternative.eml"
    ))
    .unwrap();
    let text = body_text(&to_crlf(&raw));
    assert!(text.contains("Café plain text."), "{text}");
    assert_eq!(sent_date(b"Subject: x\r\n\r\n"), None);
    assert_eq!(sent_date(b"Date: garbage\r\n\r\n"), None);
}

/// ENVELOPE of a message with many trace fields: the same answer every time (the time
/// taken is printed for information; speed targets live in the benches, not in tests).
#[test]
fn envelope_of_a_long_header() {
    let mut raw = RFC_HEADER.replace("Content-Transfer-Encoding: 7BIT\n\n", "");
    for i in 0..20 {
        raw.push_str(&format!("Received: from host{i}.example.com (host{i}.example.com [192.0.2.{i}])\n\tby mx.example.org with ESMTP id ABC{i}; Wed, 17 Jul 1996 02:23:25 -0700\n"));
    }
    raw.push('\n');
    while raw.len() < 4096 {
        raw.push_str("Some body text that fills the message up to four kibibytes.\n");
    }
    let msg = to_crlf(raw.as_bytes()).into_owned();
    let n = 2000;
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..n {
        total += envelope(std::hint::black_box(&msg)).len();
    }
    let per = start.elapsed() / n;
    assert_eq!(total, envelope(&msg).len() * n as usize);
    eprintln!("envelope: {per:?} per 4 KiB message");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        let msg = to_crlf(&raw);
        envelope(&msg);
        body_structure(&msg, true);
        body_structure(&msg, false);
        for p in [&[][..], &[1], &[2], &[1, 1], &[2, 1, 1]] {
            for t in [None, Some(SectionText::Header), Some(SectionText::Text), Some(SectionText::Mime),
                      Some(SectionText::HeaderFields(vec!["from".into()])),
                      Some(SectionText::HeaderFieldsNot(vec!["from".into()]))] {
                section(&msg, p, t.as_ref());
            }
        }
        header_values(&msg, "subject");
        body_text(&msg);
        sent_date(&msg);
    }

    #[test]
    fn mime_shaped_input_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("--b\n".to_string()), Just("--b--\n".to_string()), Just("--c\n".to_string()),
                Just("Content-Type: multipart/mixed; boundary=c\n".to_string()),
                Just("Content-Type: message/rfc822\n".to_string()),
                Just("Content-Type: multipart/digest; boundary=b\n".to_string()),
                Just("\n".to_string()), Just("From: a <b@c>, g: d@e;\n".to_string()),
                Just("text\n".to_string()), Just("Subject: =?utf-8?q?x?=\n".to_string()),
                "[ -~]{0,20}\n",
            ],
            0..40,
        )
    ) {
        let raw = format!("Content-Type: multipart/mixed; boundary=b\n{}", parts.concat());
        let msg = to_crlf(raw.as_bytes());
        let bs = body_structure(&msg, true);
        prop_assert!(bs.starts_with(b"(") && bs.ends_with(b")"));
        envelope(&msg);
        for p in [&[1][..], &[1, 1], &[2, 1], &[1, 2, 1]] {
            section(&msg, p, None);
            section(&msg, p, Some(&SectionText::Header));
            section(&msg, p, Some(&SectionText::Mime));
        }
        body_text(&msg);
    }
}

#[test]
fn deep_nesting_is_bounded() {
    let mut raw = String::new();
    for _ in 0..5000 {
        raw.push_str("Content-Type: message/rfc822\n\n");
    }
    let msg = to_crlf(raw.as_bytes());
    let bs = body_structure(&msg, true);
    assert!(bs.starts_with(b"(\"message\""));
    section(&msg, &[1; 100], None);
    let mut raw = String::new();
    for i in 0..5000 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    body_structure(&to_crlf(raw.as_bytes()), false);
}
