//! Decoded values for SEARCH, with mail-parser doing the RFC 2047, transfer-encoding and
//! charset work.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, MessageParser, PartType};

use crate::header;

/// See [`crate::header_values`].
pub(crate) fn header_values(msg: &[u8], name: &str) -> Vec<String> {
    let (hdr, _) = header::split(msg, 0..msg.len());
    header::fields(msg, hdr)
        .filter(|f| msg[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| {
            // The unstructured parser wants the field's line end to finish the value (it
            // skips CRs): the one in the message when there is one, else a copy with one.
            let with_end = &msg[f.value.start..f.whole.end];
            let v: Cow<'_, [u8]> = if with_end.ends_with(b"\n") {
                Cow::Borrowed(with_end)
            } else {
                let mut v = with_end.to_vec();
                v.push(b'\n');
                Cow::Owned(v)
            };
            match MessageStream::new(&v).parse_unstructured() {
                HeaderValue::Text(t) => t.trim().to_string(),
                _ => String::new(),
            }
        })
        .collect()
}

fn collect_text(m: &Message<'_>, out: &mut String) {
    for part in &m.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
            PartType::Message(inner) => collect_text(inner, out),
            _ => {}
        }
    }
}

/// See [`crate::body_text`].
///
/// mail-parser 0.11.9 has a `debug_assert!` that some malformed multipart/digest messages
/// trip (debug builds only); a panic in the parser must not take the imapd down with a
/// hostile message, so it is caught and the message searched as having no text.
pub(crate) fn body_text(msg: &[u8]) -> String {
    std::panic::catch_unwind(|| {
        let mut out = String::new();
        if let Some(m) = MessageParser::default().parse(msg) {
            collect_text(&m, &mut out);
        }
        out
    })
    .unwrap_or_default()
}

/// See [`crate::sent_date`].
pub(crate) fn sent_date(msg: &[u8]) -> Option<i64> {
    let (hdr, _) = header::split(msg, 0..msg.len());
    let value = header::find(msg, hdr, "date")?;
    let dt = mail_parser::DateTime::parse_rfc822(&String::from_utf8_lossy(value))?;
    dt.is_valid().then(|| dt.to_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The values as decoded from a copy of each value with a LF added (what
    /// [`header_values`] did before it used the message's own line ends).
    fn from_copies(msg: &[u8], name: &str) -> Vec<String> {
        let (hdr, _) = header::split(msg, 0..msg.len());
        header::fields(msg, hdr)
            .filter(|f| msg[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| {
                let mut v = msg[f.value].to_vec();
                v.push(b'\n');
                match MessageStream::new(&v).parse_unstructured() {
                    HeaderValue::Text(t) => t.trim().to_string(),
                    _ => String::new(),
                }
            })
            .collect()
    }

    #[test]
    fn values_with_and_without_line_ends() {
        for msg in [
            &b"Subject: a\r\n b\r\nSubject: =?utf-8?q?c=C3=A9?=\r\n\r\nx"[..],
            b"Subject: a\n b\nSubject:\n",
            b"Subject: cut",
            b"Subject: cut\r",
            b"Subject: x\r\n\t=?iso-8859-1?q?y?= \r\n",
        ] {
            assert_eq!(header_values(msg, "subject"), from_copies(msg, "subject"));
        }
        assert_eq!(header_values(b"Subject: a\r\n b\r\n", "subject"), ["a b"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn same_values_as_from_copies(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("Subject:".to_string()), Just(" ".to_string()), Just("\t".to_string()),
                    Just("\r".to_string()), Just("\n".to_string()), Just("\r\n".to_string()),
                    Just("=?utf-8?q?a=C3=A9_b?=".to_string()), Just("=?x?b?zz?=".to_string()),
                    "[ -~]{0,8}",
                ],
                0..30,
            )
        ) {
            let msg = format!("Subject:{}", lines.concat());
            prop_assert_eq!(
                header_values(msg.as_bytes(), "subject"),
                from_copies(msg.as_bytes(), "subject")
            );
        }
    }
}
