//! The MIME tree of a message (RFC 2045/2046) with byte ranges into the CRLF form, and
//! the BODY / BODYSTRUCTURE writer (RFC 3501 §7.4.2).

use std::ops::Range;

use crate::header;
use crate::quote::{nstring, number, string};

/// Multiparts and message/rfc822 parts nested deeper than this are taken as leaves.
const MAX_DEPTH: usize = 64;

/// A parsed `Content-Type` or `Content-Disposition`: value and parameters, raw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    /// `type` for Content-Type, the disposition for Content-Disposition.
    pub main: Vec<u8>,
    /// `subtype` (Content-Type only).
    pub sub: Vec<u8>,
    /// Parameters in order, RFC 2231 continuations joined.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Params {
    fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

fn is_tspecial(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')'
            | b'<'
            | b'>'
            | b'@'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'/'
            | b'['
            | b']'
            | b'?'
            | b'='
    )
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    /// Skips blanks, line ends and comments.
    fn cfws(&mut self) {
        while self.i < self.s.len() {
            match self.s[self.i] {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    while self.i < self.s.len() {
                        match self.s[self.i] {
                            b'\\' => self.i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.i += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        // A backslash as the last byte of a comment steps one past the end.
        self.i = self.i.min(self.s.len());
    }

    fn token(&mut self) -> Vec<u8> {
        self.cfws();
        let start = self.i;
        while self.i < self.s.len() {
            let b = self.s[self.i];
            if is_tspecial(b) || b <= b' ' || b == 0x7f {
                break;
            }
            self.i += 1;
        }
        self.s[start..self.i].to_vec()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.cfws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A token or a quoted string (quoted pairs resolved, line ends dropped).
    fn value(&mut self) -> Vec<u8> {
        self.cfws();
        if self.s.get(self.i) != Some(&b'"') {
            return self.token();
        }
        self.i += 1;
        let mut v = Vec::new();
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            if self.s[self.i] == b'\\' && self.i + 1 < self.s.len() {
                self.i += 1;
            }
            if !matches!(self.s[self.i], b'\r' | b'\n') {
                v.push(self.s[self.i]);
            }
            self.i += 1;
        }
        // The closing quote, if there is one.
        self.i = (self.i + 1).min(self.s.len());
        v
    }

    /// `; name=value` pairs until the end.
    fn params(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while self.i < self.s.len() {
            // Skip to the next ';' (junk between parameters is ignored).
            while self.i < self.s.len() && !self.eat(b';') {
                // eat() skips white space and comments, possibly to the end.
                match self.s.get(self.i) {
                    Some(b'"') => {
                        self.value();
                    }
                    Some(_) => self.i += 1,
                    None => break,
                }
            }
            let name = self.token();
            if name.is_empty() || !self.eat(b'=') {
                continue;
            }
            let value = self.value();
            out.push((name, value));
        }
        join_rfc2231(out)
    }
}

/// Joins RFC 2231 continuations (`name*0`, `name*1*`, ...) into one parameter, called
/// `name*` when the first section is extended (charset'language'%XX kept as written).
fn join_rfc2231(params: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if !params.iter().any(|(n, _)| n.contains(&b'*')) {
        return params;
    }
    // (base, extended, sections) per joined name, in first-seen order.
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // Per joined parameter: its index in `out`, and its (number, value, extended) sections.
    type Sections = Vec<(u32, Vec<u8>, bool)>;
    let mut sections: Vec<(usize, Sections)> = Vec::new();
    for (name, value) in params {
        let section = name.iter().position(|&b| b == b'*').and_then(|star| {
            let rest = &name[star + 1..];
            let (digits, ext) = match rest.strip_suffix(b"*") {
                Some(d) => (d, true),
                None => (rest, false),
            };
            let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            Some((name[..star].to_ascii_lowercase(), n, ext))
        });
        match section {
            Some((base, n, ext)) => {
                match sections.iter_mut().find(|(idx, _)| out[*idx].0 == base) {
                    Some((_, v)) => v.push((n, value, ext)),
                    None => {
                        sections.push((out.len(), vec![(n, value, ext)]));
                        out.push((base, Vec::new()));
                    }
                }
            }
            None => out.push((name, value)),
        }
    }
    for (idx, mut secs) in sections {
        secs.sort_by_key(|s| s.0);
        let extended = secs.first().is_some_and(|s| s.2);
        let value: Vec<u8> = secs.into_iter().flat_map(|s| s.1).collect();
        if extended {
            out[idx].0.push(b'*');
        }
        out[idx].1 = value;
    }
    out
}

/// Parses a Content-Type value; `None` when it has no valid `type/subtype`.
pub(crate) fn parse_content_type(value: &[u8]) -> Option<Params> {
    let mut lx = Lexer { s: value, i: 0 };
    let main = lx.token();
    if main.is_empty() || !lx.eat(b'/') {
        return None;
    }
    let sub = lx.token();
    if sub.is_empty() {
        return None;
    }
    Some(Params {
        main,
        sub,
        params: lx.params(),
    })
}

/// Parses a Content-Disposition value; `None` when it has no disposition token.
pub(crate) fn parse_disposition(value: &[u8]) -> Option<Params> {
    let mut lx = Lexer { s: value, i: 0 };
    let main = lx.token();
    if main.is_empty() {
        return None;
    }
    Some(Params {
        main,
        sub: Vec::new(),
        params: lx.params(),
    })
}

/// What an entity's body holds.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A single part.
    Leaf,
    /// A multipart's parts (never empty: a multipart without any gets one empty part).
    Multipart(Vec<Entity>),
    /// A message/rfc822 part's encapsulated message.
    Message(Box<Entity>),
}

/// A message or MIME part.
#[derive(Debug)]
pub(crate) struct Entity {
    /// The header, including the blank line that ends it.
    pub header: Range<usize>,
    /// The body.
    pub body: Range<usize>,
    /// Its content type (the default when absent or invalid).
    pub ctype: Params,
    /// What the body holds.
    pub kind: Kind,
}

fn default_type(in_digest: bool) -> Params {
    if in_digest {
        Params {
            main: b"message".to_vec(),
            sub: b"rfc822".to_vec(),
            params: Vec::new(),
        }
    } else {
        Params {
            main: b"text".to_vec(),
            sub: b"plain".to_vec(),
            params: Vec::new(),
        }
    }
}

/// Parses the entity in `range` of the CRLF-form message.
pub(crate) fn parse(msg: &[u8], range: Range<usize>) -> Entity {
    parse_entity(msg, range, false, 0)
}

fn parse_entity(msg: &[u8], range: Range<usize>, in_digest: bool, depth: usize) -> Entity {
    let (header, body) = header::split(msg, range);
    let ctype = header::find(msg, header.clone(), "content-type")
        .and_then(parse_content_type)
        .unwrap_or_else(|| default_type(in_digest));
    let kind = if depth >= MAX_DEPTH {
        Kind::Leaf
    } else if ctype.main.eq_ignore_ascii_case(b"multipart") {
        let digest = ctype.sub.eq_ignore_ascii_case(b"digest");
        let mut parts: Vec<Entity> = match ctype.param("boundary") {
            Some(b) if !b.is_empty() => split_multipart(msg, body.clone(), b)
                .into_iter()
                .map(|r| parse_entity(msg, r, digest, depth + 1))
                .collect(),
            _ => Vec::new(),
        };
        if parts.is_empty() {
            let end = body.end;
            parts.push(Entity {
                header: end..end,
                body: end..end,
                ctype: default_type(false),
                kind: Kind::Leaf,
            });
        }
        Kind::Multipart(parts)
    } else if ctype.main.eq_ignore_ascii_case(b"message")
        && ctype.sub.eq_ignore_ascii_case(b"rfc822")
    {
        Kind::Message(Box::new(parse_entity(msg, body.clone(), false, depth + 1)))
    } else {
        Kind::Leaf
    };
    Entity {
        header,
        body,
        ctype,
        kind,
    }
}

/// The ranges of a multipart body's parts. The line end before a delimiter belongs to the
/// delimiter; without a close delimiter the last part runs to the end of the body.
fn split_multipart(msg: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut line = body.start;
    while line < body.end {
        let next = match header::memchr(b'\n', &msg[line..body.end]) {
            Some(i) => line + i + 1,
            None => body.end,
        };
        let l = &msg[line..next];
        if l.len() >= 2 + boundary.len()
            && l.starts_with(b"--")
            && &l[2..2 + boundary.len()] == boundary
        {
            let close = l[2 + boundary.len()..].starts_with(b"--");
            if let Some(start) = current {
                let mut end = line;
                if end > start && msg[end - 1] == b'\n' {
                    end -= 1;
                    if end > start && msg[end - 1] == b'\r' {
                        end -= 1;
                    }
                }
                parts.push(start..end.max(start));
            }
            if close {
                return parts;
            }
            current = Some(next);
        }
        line = next;
    }
    if let Some(start) = current {
        parts.push(start..body.end);
    }
    parts
}

fn count_lines(s: &[u8]) -> usize {
    s.iter().filter(|&&b| b == b'\n').count()
}

/// Appends `(name value ...)` or NIL.
fn write_params(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)], extra: Option<(&[u8], &[u8])>) {
    if params.is_empty() && extra.is_none() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut first = true;
    for (n, v) in params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .chain(extra)
    {
        if !first {
            out.push(b' ');
        }
        first = false;
        string(out, n);
        out.push(b' ');
        string(out, v);
    }
    out.push(b')');
}

/// The unfolded, trimmed value of a field, if present.
fn field(msg: &[u8], header: Range<usize>, name: &str) -> Option<Vec<u8>> {
    header::find(msg, header, name).map(header::unfold)
}

/// body-ext-1part / body-ext-mpart after the MD5 (disposition, language, location).
fn write_ext_common(out: &mut Vec<u8>, msg: &[u8], e: &Entity) {
    out.push(b' ');
    match header::find(msg, e.header.clone(), "content-disposition").and_then(parse_disposition) {
        Some(d) => {
            out.push(b'(');
            string(out, &d.main);
            out.push(b' ');
            write_params(out, &d.params, None);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let langs: Vec<Vec<u8>> = field(msg, e.header.clone(), "content-language")
        .map(|v| {
            v.split(|&b| matches!(b, b',' | b' ' | b'\t'))
                .filter(|s| !s.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    if langs.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, l) in langs.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            string(out, l);
        }
        out.push(b')');
    }
    out.push(b' ');
    let location = field(msg, e.header.clone(), "content-location").map(|v| {
        v.into_iter()
            .filter(|b| !matches!(b, b' ' | b'\t'))
            .collect::<Vec<u8>>()
    });
    nstring(out, location.as_deref());
}

/// Appends the BODY (`extensible == false`) or BODYSTRUCTURE form of `e`.
pub(crate) fn write_body(out: &mut Vec<u8>, msg: &[u8], e: &Entity, extensible: bool) {
    out.push(b'(');
    if let Kind::Multipart(parts) = &e.kind {
        for p in parts {
            write_body(out, msg, p, extensible);
        }
        out.push(b' ');
        string(out, &e.ctype.sub);
        if extensible {
            out.push(b' ');
            write_params(out, &e.ctype.params, None);
            write_ext_common(out, msg, e);
        }
        out.push(b')');
        return;
    }
    let is_text = e.ctype.main.eq_ignore_ascii_case(b"text");
    if let Kind::Message(_) = e.kind {
        // As Dovecot does, whatever the case in the header.
        out.extend_from_slice(b"\"message\" \"rfc822\"");
    } else {
        string(out, &e.ctype.main);
        out.push(b' ');
        string(out, &e.ctype.sub);
    }
    out.push(b' ');
    let charset = (is_text && e.ctype.param("charset").is_none())
        .then_some((&b"charset"[..], &b"us-ascii"[..]));
    write_params(out, &e.ctype.params, charset);
    out.push(b' ');
    nstring(out, field(msg, e.header.clone(), "content-id").as_deref());
    out.push(b' ');
    nstring(
        out,
        field(msg, e.header.clone(), "content-description").as_deref(),
    );
    out.push(b' ');
    let encoding =
        field(msg, e.header.clone(), "content-transfer-encoding").filter(|v| !v.is_empty());
    string(out, encoding.as_deref().unwrap_or(b"7bit"));
    out.push(b' ');
    let body = &msg[e.body.clone()];
    number(out, body.len());
    match &e.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            crate::envelope::write(out, msg, inner.header.clone());
            out.push(b' ');
            write_body(out, msg, inner, extensible);
            out.push(b' ');
            number(out, count_lines(body));
        }
        _ if is_text => {
            out.push(b' ');
            number(out, count_lines(body));
        }
        _ => {}
    }
    if extensible {
        out.push(b' ');
        nstring(out, field(msg, e.header.clone(), "content-md5").as_deref());
        write_ext_common(out, msg, e);
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_params() {
        let ct = parse_content_type(b"Text/Plain; charset=\"utf-8\" (c); format=flowed").unwrap();
        assert_eq!(ct.main, b"Text");
        assert_eq!(ct.sub, b"Plain");
        assert_eq!(
            ct.params,
            vec![
                (b"charset".to_vec(), b"utf-8".to_vec()),
                (b"format".to_vec(), b"flowed".to_vec())
            ]
        );
        assert!(parse_content_type(b"text").is_none());
        assert!(parse_content_type(b"").is_none());
        let ct = parse_content_type(b"a/b; name*0=\"x\"; name*1=y; f*=utf-8''%41").unwrap();
        assert_eq!(
            ct.params,
            vec![
                (b"name".to_vec(), b"xy".to_vec()),
                (b"f*".to_vec(), b"utf-8''%41".to_vec())
            ]
        );
    }

    #[test]
    fn multipart_split() {
        let m = b"--b\r\nA\r\n--b\r\n\r\nB\r\n--b--\r\n";
        let parts = split_multipart(m, 0..m.len(), b"b");
        assert_eq!(
            parts.iter().map(|r| &m[r.clone()]).collect::<Vec<_>>(),
            vec![&b"A"[..], &b"\r\nB"[..]]
        );
        let m = b"pre\r\n--b\r\nA\r\n";
        let parts = split_multipart(m, 0..m.len(), b"b");
        assert_eq!(&m[parts[0].clone()], b"A\r\n");
    }
}
