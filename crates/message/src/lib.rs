//! Message headers as Petrel handles them. Pure functions, no I/O.
//!
//! - [`HeaderBlock`]: where the header section of a message ends and which fields it has
//!   (LF line ends, as messages are stored in the queue).
//! - [`cleanup`]: the headers cleanup adds (Received, Message-ID, Date, From).
//! - [`dsn`]: RFC 3464 delivery status notifications. Written here rather than with a MIME
//!   builder crate because the structure is fixed and must be exact: the returned message
//!   travels as `message/rfc822` which RFC 2046 §5.2.1 forbids to encode, and the builders
//!   we tried choose transfer encodings themselves.
//! - [`mime8`]: 8-bit MIME to quoted-printable, for a next hop without 8BITMIME.
#![deny(missing_docs)]

pub mod cleanup;
pub mod dsn;
pub mod mime8;

/// One header field: lower-cased name and the byte range of the whole field (folded
/// continuation lines and the final LF included) in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name, lower case.
    pub name: String,
    /// Start offset of the field.
    pub start: usize,
    /// End offset (exclusive), after the field's last LF.
    pub end: usize,
}

/// The header section of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderBlock {
    /// Fields in order.
    pub fields: Vec<Field>,
    /// Offset where the body starts (after the empty separator line, if any).
    pub body_start: usize,
    /// Offset where the header section ends (before the separator line).
    pub header_end: usize,
    /// True when a well-formed empty separator line was found.
    pub has_separator: bool,
}

impl HeaderBlock {
    /// Scans the header section at the start of `msg`. A line that is neither a field nor a
    /// continuation ends the header section (it and what follows are body), as Postfix
    /// does. Continuation lines before the first field are treated the same way.
    pub fn scan(msg: &[u8]) -> HeaderBlock {
        let mut hb = HeaderBlock::default();
        let mut pos = 0;
        while pos < msg.len() {
            let line_end = memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
            let line = &msg[pos..line_end];
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.is_empty() {
                hb.header_end = pos;
                hb.body_start = line_end;
                hb.has_separator = true;
                return hb;
            }
            if content[0] == b' ' || content[0] == b'\t' {
                match hb.fields.last_mut() {
                    Some(f) => {
                        f.end = line_end;
                        pos = line_end;
                        continue;
                    }
                    None => break,
                }
            }
            match field_name(content) {
                Some(name) => hb.fields.push(Field {
                    name,
                    start: pos,
                    end: line_end,
                }),
                None => break,
            }
            pos = line_end;
        }
        hb.header_end = pos;
        hb.body_start = pos;
        hb
    }

    /// True when a field named `name` (any case) is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// How many fields named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .count()
    }

    /// Unfolded values of every field named `name`.
    pub fn values<'a>(&'a self, msg: &'a [u8], name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(move |f| field_value(&msg[f.start..f.end]))
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// The field name of a header line, if it is one (printable ASCII except `:`, then `:`).
fn field_name(line: &[u8]) -> Option<String> {
    let colon = memchr(b':', line)?;
    let name = &line[..colon];
    let name = name.strip_suffix(b" ").unwrap_or(name);
    if name.is_empty() || !name.iter().all(|&c| (33..=126).contains(&c) && c != b':') {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The unfolded, trimmed value of one raw field.
pub fn field_value(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let v = text.split_once(':').map(|(_, v)| v).unwrap_or("");
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Converts CRLF line ends to LF (a lone CR is kept).
pub fn crlf_to_lf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_fields_folds_and_separator() {
        let m = b"Subject: a\n  folded\nFrom: x@y\n\nbody\nNot: header\n";
        let h = HeaderBlock::scan(m);
        assert_eq!(h.fields.len(), 2);
        assert!(h.has_separator);
        assert_eq!(&m[h.body_start..], b"body\nNot: header\n");
        assert_eq!(h.values(m, "SUBJECT").collect::<Vec<_>>(), vec!["a folded"]);
        assert!(h.has("from") && !h.has("date"));
    }

    #[test]
    fn garbage_line_ends_headers_and_no_headers_at_all() {
        let m = b"Subject: a\nthis is not a header\nmore\n";
        let h = HeaderBlock::scan(m);
        assert_eq!(h.fields.len(), 1);
        assert!(!h.has_separator);
        assert_eq!(&m[h.body_start..], b"this is not a header\nmore\n");
        let h = HeaderBlock::scan(b"just text\n");
        assert!(h.fields.is_empty());
        assert_eq!(h.body_start, 0);
        let h = HeaderBlock::scan(b" leading continuation\n");
        assert!(h.fields.is_empty());
        let h = HeaderBlock::scan(b"");
        assert_eq!(h.body_start, 0);
    }

    #[test]
    fn crlf_conversion() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
    }
}
