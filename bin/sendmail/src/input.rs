//! Reading the message on standard input: CRLF becomes LF, a last line without a line end
//! gets one, and (without `-i`/`-oi`) a line holding a single `.` ends the message and is
//! dropped. Leading dots are otherwise left alone: that is SMTP's business, not sendmail's.
//!
//! With `-t` the header block is read first ([`read_header`]) so its recipients can be
//! taken out ([`extract`]) before the message is handed on; the body is streamed.

use std::io::{self, BufRead};

use crate::addrlist;

/// A message read line by line from standard input.
pub struct Input<R> {
    r: R,
    ignore_dots: bool,
    ended: bool,
}

impl<R: BufRead> Input<R> {
    /// Reads from `r`; `ignore_dots` is `-i`.
    pub fn new(r: R, ignore_dots: bool) -> Self {
        Input {
            r,
            ignore_dots,
            ended: false,
        }
    }

    /// Puts the next line, ending in LF, into `buf` (cleared first); false at the end of
    /// the message.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        if self.ended {
            return Ok(false);
        }
        if self.r.read_until(b'\n', buf)? == 0 {
            self.ended = true;
            return Ok(false);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if !self.ignore_dots && buf.as_slice() == b"." {
            self.ended = true;
            buf.clear();
            return Ok(false);
        }
        buf.push(b'\n');
        Ok(true)
    }
}

/// The header block of a message read with `-t`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Each field with its continuation lines, LF line ends.
    pub fields: Vec<Vec<u8>>,
    /// The line that ended the header block: the empty separator line, or the first line
    /// that is not a header field (a message without a separator is passed on as it is).
    /// `None` when the message ended.
    pub next: Option<Vec<u8>>,
}

/// True when `line` starts a header field: a name of printable ASCII other than `:`, then
/// optional white space (an obsolete form), then `:`.
pub fn is_field_start(line: &[u8]) -> bool {
    let name_len = line
        .iter()
        .take_while(|&&b| (33..=126).contains(&b) && b != b':')
        .count();
    if name_len == 0 {
        return false;
    }
    let rest = &line[name_len..];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    rest.get(ws) == Some(&b':')
}

/// Reads the header block: fields until the empty line, the first line that is no header
/// line, the end of the message, or `limit` bytes (the rest is then passed on as body).
pub fn read_header<R: BufRead>(input: &mut Input<R>, limit: usize) -> io::Result<Header> {
    let mut h = Header::default();
    let mut size = 0;
    let mut line = Vec::new();
    while input.next_line(&mut line)? {
        let continuation = line.starts_with(b" ") || line.starts_with(b"\t");
        let header_line =
            line != b"\n" && (is_field_start(&line) || continuation && !h.fields.is_empty());
        if !header_line || size + line.len() > limit {
            h.next = Some(line);
            return Ok(h);
        }
        size += line.len();
        match h.fields.last_mut() {
            Some(last) if continuation => last.extend_from_slice(&line),
            _ => h.fields.push(line.clone()),
        }
    }
    Ok(h)
}

/// A field's name in lower case.
pub fn field_name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..end])
        .trim()
        .to_ascii_lowercase()
}

/// A field's body, unfolded.
pub fn field_body(field: &[u8]) -> String {
    let start = field.iter().position(|&b| b == b':').map_or(0, |p| p + 1);
    let mut body = Vec::with_capacity(field.len() - start);
    for &b in &field[start..] {
        if b != b'\n' {
            body.push(b);
        }
    }
    String::from_utf8_lossy(&body).trim().to_string()
}

/// What `-t` takes out of a header block.
#[derive(Debug, PartialEq, Eq)]
pub struct Extracted {
    /// Recipients from To:, Cc: and Bcc: (or, when any Resent- recipient field is
    /// present, from Resent-To:, Resent-Cc: and Resent-Bcc: only), in order.
    pub recipients: Vec<String>,
    /// The fields to pass on: all but Bcc: and Resent-Bcc:.
    pub kept: Vec<Vec<u8>>,
}

/// Takes the recipients out of `fields` and drops the blind-copy fields.
pub fn extract(fields: Vec<Vec<u8>>) -> Extracted {
    const PLAIN: [&str; 3] = ["to", "cc", "bcc"];
    const RESENT: [&str; 3] = ["resent-to", "resent-cc", "resent-bcc"];
    let names: Vec<String> = fields.iter().map(|f| field_name(f)).collect();
    let resent = names.iter().any(|n| RESENT.contains(&n.as_str()));
    let wanted: &[&str] = if resent { &RESENT } else { &PLAIN };
    let mut recipients = Vec::new();
    let mut kept = Vec::new();
    for (field, name) in fields.into_iter().zip(names) {
        if wanted.contains(&name.as_str()) {
            recipients.extend(addrlist::parse(&field_body(&field)));
        }
        if name != "bcc" && name != "resent-bcc" {
            kept.push(field);
        }
    }
    Extracted { recipients, kept }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn all(input: &[u8], ignore_dots: bool) -> Vec<u8> {
        let mut i = Input::new(input, ignore_dots);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while i.next_line(&mut line).unwrap() {
            out.extend_from_slice(&line);
        }
        out
    }

    #[test]
    fn crlf_becomes_lf_and_last_line_gets_an_end() {
        assert_eq!(all(b"a\r\nb\r\n\r\nc\rd\r\n", true), b"a\nb\n\nc\rd\n");
        assert_eq!(all(b"a\nno end", true), b"a\nno end\n");
        assert_eq!(all(b"cr at end\r", true), b"cr at end\n");
        assert_eq!(all(b"", true), b"");
    }

    #[test]
    fn lone_dot_ends_the_message_without_i() {
        assert_eq!(all(b"a\n.\nafter\n", false), b"a\n");
        assert_eq!(all(b"a\r\n.\r\nafter\r\n", false), b"a\n");
        assert_eq!(
            all(b"a\n..\n. \n.x\n", false),
            b"a\n..\n. \n.x\n",
            "only a lone dot"
        );
        assert_eq!(all(b"a\n.", false), b"a\n", "dot without line end");
    }

    #[test]
    fn with_i_dots_are_data() {
        assert_eq!(all(b"a\n.\nafter\n", true), b"a\n.\nafter\n");
    }

    #[test]
    fn field_starts() {
        assert!(is_field_start(b"To: a\n"));
        assert!(is_field_start(b"X-Odd :x\n"));
        assert!(!is_field_start(b": x\n"));
        assert!(!is_field_start(b"no colon here\n"));
        assert!(!is_field_start(b" To: folded\n"));
        assert!(!is_field_start(b"From alice Mon Jan 1\n"));
    }

    fn header(text: &[u8]) -> (Header, Vec<u8>) {
        let mut i = Input::new(text, false);
        let h = read_header(&mut i, 100_000).unwrap();
        let mut rest = Vec::new();
        let mut line = Vec::new();
        while i.next_line(&mut line).unwrap() {
            rest.extend_from_slice(&line);
        }
        (h, rest)
    }

    #[test]
    fn header_block_with_folding_and_separator() {
        let (h, rest) = header(b"To: a,\r\n  b\r\nSubject: x\r\n\r\nbody\r\n");
        assert_eq!(
            h.fields,
            vec![b"To: a,\n  b\n".to_vec(), b"Subject: x\n".to_vec()]
        );
        assert_eq!(h.next.as_deref(), Some(&b"\n"[..]));
        assert_eq!(rest, b"body\n");
    }

    #[test]
    fn header_without_separator_or_body() {
        let (h, rest) = header(b"To: a\nthis is body\nmore\n");
        assert_eq!(h.fields.len(), 1);
        assert_eq!(h.next.as_deref(), Some(&b"this is body\n"[..]));
        assert_eq!(rest, b"more\n");
        let (h, _) = header(b"To: a\n");
        assert_eq!(h.next, None);
        let (h, _) = header(b" leading space\nTo: a\n");
        assert!(
            h.fields.is_empty(),
            "a continuation with nothing to continue is body"
        );
        let (h, _) = header(b"To: a\n.\nTo: b\n");
        assert_eq!((h.fields.len(), h.next), (1, None), "the dot ends it");
    }

    #[test]
    fn header_limit_passes_the_rest_on_as_body() {
        let mut i = Input::new(&b"To: a\nCc: b\nSubject: c\n\nbody\n"[..], false);
        let h = read_header(&mut i, 12).unwrap();
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.next.as_deref(), Some(&b"Subject: c\n"[..]));
    }

    #[test]
    fn extract_takes_to_cc_bcc_and_drops_bcc() {
        let (h, _) = header(
            b"From: me\nTo: \"Smith, Bob\" <bob@example.org>, carol\nCC: Dave <dave@d.example>\nBcc: eve@e.example,\n\tfrank@f.example\nSubject: hi\n\n",
        );
        let e = extract(h.fields);
        assert_eq!(
            e.recipients,
            vec![
                "bob@example.org",
                "carol",
                "dave@d.example",
                "eve@e.example",
                "frank@f.example"
            ]
        );
        let kept: Vec<u8> = e.kept.concat();
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "From: me\nTo: \"Smith, Bob\" <bob@example.org>, carol\nCC: Dave <dave@d.example>\nSubject: hi\n"
        );
    }

    #[test]
    fn extract_prefers_resent_fields() {
        let (h, _) = header(
            b"To: old@example.org\nResent-To: new@example.org\nresent-bcc: hidden@example.org\nResent-Cc: undisclosed-recipients:;\nbcc: x@example.org\n\n",
        );
        let e = extract(h.fields);
        assert_eq!(e.recipients, vec!["new@example.org", "hidden@example.org"]);
        let names: Vec<String> = e.kept.iter().map(|f| field_name(f)).collect();
        assert_eq!(names, vec!["to", "resent-to", "resent-cc"]);
    }

    #[test]
    fn field_parts() {
        assert_eq!(field_name(b"X-Y : z\n"), "x-y");
        assert_eq!(field_body(b"To: a,\n b\n"), "a, b");
    }
}
