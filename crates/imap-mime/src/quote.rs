//! IMAP string output: quoted strings, literals and NIL (RFC 3501 §4.3, §4.5).

/// Appends `s` as an IMAP string: a quoted string when every byte is printable 7-bit
/// (`"` and `\` escaped), otherwise a literal `{n}\r\n` followed by the bytes (CR, LF,
/// NUL, tabs, other controls and 8-bit bytes).
pub(crate) fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// Like [`string`] but a string with `"` or `\` goes as a literal too: what Dovecot does
/// in ENVELOPE, so that names and subjects reach clients exactly as written.
pub(crate) fn string_unescaped(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().any(|&b| b == b'"' || b == b'\\') {
        literal(out, s);
    } else {
        string(out, s);
    }
}

/// Like [`nstring`] with [`string_unescaped`].
pub(crate) fn nstring_unescaped(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string_unescaped(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Appends `s` as a literal `{n}\r\n...`.
pub(crate) fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// Appends `s` as an IMAP string, or `NIL` when it is `None`.
pub(crate) fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Appends a decimal number.
pub(crate) fn number(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(n.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, v);
        out
    }

    #[test]
    fn quoted_and_literal() {
        assert_eq!(s(b"abc"), b"\"abc\"");
        assert_eq!(s(b""), b"\"\"");
        assert_eq!(s(b"a\"b\\c"), b"\"a\\\"b\\\\c\"");
        let mut out = Vec::new();
        string_unescaped(&mut out, b"a\"b");
        nstring_unescaped(&mut out, Some(b"ab"));
        assert_eq!(out, b"{3}\r\na\"b\"ab\"");
        assert_eq!(s(b"a\tb"), b"{3}\r\na\tb");
        assert_eq!(s(b"a\r\nb"), b"{4}\r\na\r\nb");
        assert_eq!(s("é".as_bytes()), b"{2}\r\n\xc3\xa9");
        assert_eq!(s(b"a\0"), b"{2}\r\na\0");
        let mut out = Vec::new();
        nstring(&mut out, None);
        number(&mut out, 42);
        assert_eq!(out, b"NIL42");
    }
}
