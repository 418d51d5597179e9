//! BODY[section] content (RFC 3501 §6.4.5).

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
fn header_fields(
    msg: &[u8],
    header: std::ops::Range<usize>,
    names: &[String],
    keep: bool,
) -> Vec<u8> {
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

/// See [`crate::section`].
pub(crate) fn section(
    msg: &[u8],
    root: &Entity,
    part: &[u32],
    text: Option<&SectionText>,
) -> Vec<u8> {
    let Some(e) = resolve(root, part) else {
        return Vec::new();
    };
    // The message HEADER/TEXT refer to: the root, or an encapsulated message.
    let message = if part.is_empty() {
        Some(e)
    } else if let Kind::Message(inner) = &e.kind {
        Some(inner.as_ref())
    } else {
        None
    };
    match text {
        None if part.is_empty() => msg.to_vec(),
        None => msg[e.body.clone()].to_vec(),
        Some(SectionText::Mime) if part.is_empty() => Vec::new(),
        Some(SectionText::Mime) => msg[e.header.clone()].to_vec(),
        Some(SectionText::Header) => message
            .map(|m| msg[m.header.clone()].to_vec())
            .unwrap_or_default(),
        Some(SectionText::Text) => message
            .map(|m| msg[m.body.clone()].to_vec())
            .unwrap_or_default(),
        Some(SectionText::HeaderFields(names)) => message
            .map(|m| header_fields(msg, m.header.clone(), names, true))
            .unwrap_or_default(),
        Some(SectionText::HeaderFieldsNot(names)) => message
            .map(|m| header_fields(msg, m.header.clone(), names, false))
            .unwrap_or_default(),
    }
}
