//! The ENVELOPE structure (RFC 3501 §7.4.2).

use std::ops::Range;

use crate::address::{parse_list, EnvAddr};
use crate::header;
use crate::quote::{literal, nstring_unescaped as nstring, string_unescaped as string};

/// Appends a field value as ENVELOPE sends it, as Dovecot does: leading blanks dropped,
/// line ends removed, trailing blanks kept; a value with tabs goes as a literal with the
/// tabs turned into spaces.
fn write_text(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let start = value
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(value.len());
    let value = &value[start..];
    if !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | b'\t')) {
        return string(out, value);
    }
    let v: Vec<u8> = value
        .iter()
        .filter(|&&b| b != b'\r' && b != b'\n')
        .map(|&b| if b == b'\t' { b' ' } else { b })
        .collect();
    if value.contains(&b'\t') {
        literal(out, &v);
    } else {
        string(out, &v);
    }
}

fn write_addresses(out: &mut Vec<u8>, list: &[EnvAddr]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref());
        out.push(b' ');
        nstring(out, a.adl.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// Appends the ENVELOPE of the message whose header is `header` in `msg` (CRLF form).
pub(crate) fn write(out: &mut Vec<u8>, msg: &[u8], header: Range<usize>) {
    // The first occurrence of each field, in one pass over the header.
    const NAMES: [&str; 10] = [
        "date",
        "subject",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "in-reply-to",
        "message-id",
    ];
    let mut found: [Option<&[u8]>; 10] = [None; 10];
    for f in header::fields(msg, header) {
        let name = &msg[f.name.clone()];
        let hit = NAMES
            .iter()
            .position(|n| n.len() == name.len() && name.eq_ignore_ascii_case(n.as_bytes()));
        if let Some(i) = hit {
            if found[i].is_none() {
                found[i] = Some(&msg[f.value]);
            }
        }
    }
    let text = |out: &mut Vec<u8>, i: usize| write_text(out, found[i]);
    out.push(b'(');
    text(out, 0);
    out.push(b' ');
    text(out, 1);
    let from = found[2].map(parse_list).unwrap_or_default();
    for (i, value) in found.iter().enumerate().take(8).skip(2) {
        out.push(b' ');
        let list = if i == 2 {
            Vec::new()
        } else {
            value.map(parse_list).unwrap_or_default()
        };
        // Sender and Reply-To default to From.
        let list = if i == 2 || ((i == 3 || i == 4) && list.is_empty()) {
            &from
        } else {
            &list
        };
        write_addresses(out, list);
    }
    out.push(b' ');
    text(out, 8);
    out.push(b' ');
    text(out, 9);
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(m: &[u8]) -> String {
        let mut out = Vec::new();
        write(&mut out, m, 0..m.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn defaults_and_nil() {
        assert_eq!(env(b"\r\n"), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        assert_eq!(
            env(b"From: a@b\r\nSubject:  x\r\n\ty \r\n\r\n"),
            "(NIL {4}\r\nx y  ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) NIL NIL NIL NIL NIL)"
        );
    }
}
