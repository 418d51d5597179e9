//! Decoded values for SEARCH, with mail-parser doing the RFC 2047, transfer-encoding and
//! charset work.

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, MessageParser, PartType};

use crate::header;

/// See [`crate::header_values`].
pub(crate) fn header_values(msg: &[u8], name: &str) -> Vec<String> {
    let (hdr, _) = header::split(msg, 0..msg.len());
    header::fields(msg, hdr)
        .filter(|f| msg[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| {
            // The unstructured parser wants the field's line end to finish the value.
            let mut v = msg[f.value].to_vec();
            v.push(b'\n');
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
