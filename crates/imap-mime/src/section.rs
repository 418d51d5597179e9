//! BODY[section] content (RFC 3501 §6.4.5).

use std::borrow::Cow;
use std::ops::Range;

use crate::header;
use crate::mime::{Entity, Kind};
use crate::SectionText;

/// How the entity being resolved was reached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The root: a whole message.
    Root,
    /// A part of a multipart.
    Part,
    /// Part 1 of a non-multipart message: the message's body.
    MessageBody,
}

/// Resolves a part number path to the entity it names (the root for an empty path).
fn resolve<'a>(root: &'a Entity, path: &[u32]) -> Option<&'a Entity> {
    let mut cur = root;
    let mut via = Via::Root;
    for &n in path {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        // The message whose parts the number counts: the root, or the message a
        // message/rfc822 part encapsulates.
        let message = match (&cur.kind, via) {
            (_, Via::Root) => Some(cur),
            (Kind::Message(inner), _) => Some(inner.as_ref()),
            _ => None,
        };
        (cur, via) = match (message, &cur.kind) {
            (Some(m), _) => match &m.kind {
                Kind::Multipart(parts) => (parts.get(idx)?, Via::Part),
                // Part 1 of a non-multipart message is its body (RFC 3501 §6.4.5).
                _ if idx == 0 => (m, Via::MessageBody),
                _ => return None,
            },
            (None, Kind::Multipart(parts)) => (parts.get(idx)?, Via::Part),
            // Dovecot also takes part 1 of a single part of a multipart to be that part
            // (`1.1` of a text part in a multipart/mixed), and so do we.
            (None, _) if idx == 0 && via == Via::Part => (cur, Via::Part),
            (None, _) => return None,
        };
    }
    Some(cur)
}

/// Header fields of `header` kept (`keep == true`) or dropped by name, then the blank line.
fn header_fields(msg: &[u8], header: Range<usize>, names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in header::fields(msg, header) {
        let name = &msg[f.name.clone()];
        if names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            == keep
        {
            out.extend_from_slice(&msg[f.whole.clone()]);
            if !out.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The content of a section of an entity whose header and body are known: `part` names
/// the entity (empty for the root), `message` is the message its HEADER and TEXT refer to.
fn content<'a>(
    msg: &'a [u8],
    part: &[u32],
    entity: (Range<usize>, Range<usize>),
    message: Option<(Range<usize>, Range<usize>)>,
    text: Option<&SectionText>,
) -> Cow<'a, [u8]> {
    let slice = |r: Range<usize>| Cow::Borrowed(&msg[r]);
    let none = || Cow::Borrowed(&[][..]);
    match text {
        None if part.is_empty() => Cow::Borrowed(msg),
        None => slice(entity.1),
        Some(SectionText::Mime) if part.is_empty() => none(),
        Some(SectionText::Mime) => slice(entity.0),
        Some(SectionText::Header) => message.map_or_else(none, |m| slice(m.0)),
        Some(SectionText::Text) => message.map_or_else(none, |m| slice(m.1)),
        Some(SectionText::HeaderFields(names)) => {
            message.map_or_else(none, |m| Cow::Owned(header_fields(msg, m.0, names, true)))
        }
        Some(SectionText::HeaderFieldsNot(names)) => {
            message.map_or_else(none, |m| Cow::Owned(header_fields(msg, m.0, names, false)))
        }
    }
}

/// A section of the whole message (no part numbers): only the end of the header is
/// looked for, no MIME parse.
pub(crate) fn whole_message<'a>(msg: &'a [u8], text: Option<&SectionText>) -> Cow<'a, [u8]> {
    if text.is_none() {
        return Cow::Borrowed(msg);
    }
    let split = header::split(msg, 0..msg.len());
    content(msg, &[], split.clone(), Some(split), text)
}

/// See [`crate::section_ref`]; `root` is the message's MIME tree.
pub(crate) fn section<'a>(
    msg: &'a [u8],
    root: &Entity,
    part: &[u32],
    text: Option<&SectionText>,
) -> Cow<'a, [u8]> {
    let Some(e) = resolve(root, part) else {
        return Cow::Borrowed(&[]);
    };
    // The message HEADER/TEXT refer to: the root, or an encapsulated message.
    let message = if part.is_empty() {
        Some(e)
    } else if let Kind::Message(inner) = &e.kind {
        Some(inner.as_ref())
    } else {
        None
    };
    content(
        msg,
        part,
        (e.header.clone(), e.body.clone()),
        message.map(|m| (m.header.clone(), m.body.clone())),
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime;
    use proptest::prelude::*;

    fn texts() -> Vec<Option<SectionText>> {
        vec![
            None,
            Some(SectionText::Header),
            Some(SectionText::Text),
            Some(SectionText::Mime),
            Some(SectionText::HeaderFields(vec!["from".into(), "X-A".into()])),
            Some(SectionText::HeaderFieldsNot(vec!["from".into()])),
        ]
    }

    /// The short cut for the whole message gives what resolving the root of the parsed
    /// tree gives.
    fn same_as_parsed(msg: &[u8]) {
        let root = mime::parse(msg, 0..msg.len());
        for t in texts() {
            assert_eq!(
                whole_message(msg, t.as_ref()),
                section(msg, &root, &[], t.as_ref()),
                "{t:?} of {msg:?}"
            );
        }
    }

    #[test]
    fn whole_message_without_parse() {
        same_as_parsed(b"");
        same_as_parsed(b"\r\n");
        same_as_parsed(b"From: a\r\nX-A: b\r\n c\r\n\r\nbody\r\n");
        same_as_parsed(b"From: a\r\nno blank line");
        same_as_parsed(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        );
        assert!(matches!(
            whole_message(b"A: b\r\n\r\nc", None),
            Cow::Borrowed(b"A: b\r\n\r\nc")
        ));
        assert!(matches!(
            whole_message(b"A: b\r\n\r\nc", Some(&SectionText::Text)),
            Cow::Borrowed(b"c")
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn whole_message_same_as_parsed(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("\r\n".to_string()), Just("From: x\r\n".to_string()),
                    Just(" folded\r\n".to_string()), Just("X-a: y\r\n".to_string()),
                    Just("Content-Type: multipart/mixed; boundary=b\r\n".to_string()),
                    Just("--b\r\n".to_string()), "[ -~]{0,20}\r?\n?",
                ],
                0..20,
            )
        ) {
            same_as_parsed(lines.concat().as_bytes());
        }
    }
}
