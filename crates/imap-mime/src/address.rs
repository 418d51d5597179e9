//! RFC 5322 address lists as the ENVELOPE structure wants them (RFC 3501 §7.4.2):
//! `(name adl mailbox host)`, with groups as a start marker `(NIL NIL "group" NIL)` and an
//! end marker `(NIL NIL NIL NIL)`. Values stay raw: encoded words are not decoded.

/// One element of an ENVELOPE address list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EnvAddr {
    pub name: Option<Vec<u8>>,
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An atom (any run of bytes that are not specials, blanks or controls).
    Atom(Vec<u8>),
    /// A quoted string, quoted pairs resolved.
    Quoted(Vec<u8>),
    /// A comment's content (nested comments kept as written).
    Comment(Vec<u8>),
    /// A domain literal, brackets included.
    Literal(Vec<u8>),
    /// One of `< > @ , ; : .`
    Special(u8),
}

/// A token with whether blanks (or a comment) preceded it.
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    space: bool,
}

fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' | b'(' | b')' | b'"' | b'[' | b']'
    )
}

fn tokenize(s: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut space = false;
    while i < s.len() {
        let b = s[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                space = true;
                i += 1;
                continue;
            }
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    if s[i] != b'\r' && s[i] != b'\n' {
                        v.push(s[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token {
                    tok: Tok::Quoted(v),
                    space,
                });
            }
            b'(' => {
                let mut depth = 1;
                let mut v = Vec::new();
                i += 1;
                while i < s.len() {
                    let c = s[i];
                    if c == b'\\' && i + 1 < s.len() {
                        v.push(s[i + 1]);
                        i += 2;
                        continue;
                    }
                    if c == b'(' {
                        depth += 1;
                    } else if c == b')' {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    if c != b'\r' && c != b'\n' {
                        v.push(c);
                    }
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Comment(v),
                    space,
                });
                // A comment separates like a blank does.
                space = true;
                continue;
            }
            b'[' => {
                let start = i;
                while i < s.len() && s[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(s.len());
                let v = s[start..i]
                    .iter()
                    .copied()
                    .filter(|&c| c != b'\r' && c != b'\n')
                    .collect();
                out.push(Token {
                    tok: Tok::Literal(v),
                    space,
                });
            }
            b')' | b']' => {
                i += 1;
            }
            _ if is_special(b) => {
                out.push(Token {
                    tok: Tok::Special(b),
                    space,
                });
                i += 1;
            }
            _ => {
                let start = i;
                while i < s.len()
                    && !is_special(s[i])
                    && !matches!(s[i], b' ' | b'\t' | b'\r' | b'\n')
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Atom(s[start..i].to_vec()),
                    space,
                });
            }
        }
        space = false;
    }
    out
}

/// Words of a phrase or local part joined: with one space where the original had blanks
/// (for a phrase) or with nothing (for a local part or domain).
fn join(tokens: &[Token], spaced: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for t in tokens {
        let bytes: &[u8] = match &t.tok {
            Tok::Atom(a) | Tok::Quoted(a) | Tok::Literal(a) => a,
            Tok::Special(c) => std::slice::from_ref(c),
            Tok::Comment(_) => continue,
        };
        if spaced && t.space && !v.is_empty() {
            v.push(b' ');
        }
        v.extend_from_slice(bytes);
    }
    v
}

fn non_empty(v: Vec<u8>) -> Option<Vec<u8>> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn is_special(&self, c: u8) -> bool {
        self.peek() == Some(&Tok::Special(c))
    }

    /// Tokens up to (not including) one of `stops` or the end; comments go to `comments`.
    fn until(&mut self, stops: &[u8], comments: &mut Vec<Vec<u8>>) -> Vec<Token> {
        let mut v = Vec::new();
        while let Some(t) = self.toks.get(self.pos) {
            match &t.tok {
                Tok::Special(c) if stops.contains(c) => break,
                Tok::Comment(c) => comments.push(c.clone()),
                _ => v.push(t.clone()),
            }
            self.pos += 1;
        }
        v
    }

    /// One mailbox (or a group, which pushes several entries). `in_group` makes `;` a stop.
    fn address(&mut self, out: &mut Vec<EnvAddr>, in_group: bool) {
        let mut comments = Vec::new();
        let phrase = self.until(b"<:@,;>", &mut comments);
        match self.peek() {
            Some(Tok::Special(b':')) if !in_group => {
                self.pos += 1;
                out.push(EnvAddr {
                    mailbox: Some(join(&phrase, true)),
                    ..Default::default()
                });
                loop {
                    match self.peek() {
                        None => break,
                        Some(Tok::Special(b';')) => {
                            self.pos += 1;
                            break;
                        }
                        Some(Tok::Special(b',')) => self.pos += 1,
                        _ => {
                            let before = self.pos;
                            self.address(out, true);
                            if self.pos == before {
                                self.pos += 1;
                            }
                        }
                    }
                }
                out.push(EnvAddr::default());
            }
            Some(Tok::Special(b'<')) => {
                self.pos += 1;
                let mut inner_comments = Vec::new();
                let mut adl = None;
                if self.is_special(b'@') {
                    let route = self.until(b":>", &mut inner_comments);
                    if self.is_special(b':') {
                        self.pos += 1;
                        adl = non_empty(join(&route, false));
                    }
                }
                let local = self.until(b"@>", &mut inner_comments);
                let mut domain = Vec::new();
                if self.is_special(b'@') {
                    self.pos += 1;
                    domain = self.until(b">", &mut inner_comments);
                }
                if self.is_special(b'>') {
                    self.pos += 1;
                }
                // Anything after the angle address up to the next separator is dropped.
                let stops: &[u8] = if in_group { b",;" } else { b"," };
                self.until(stops, &mut comments);
                out.push(mailbox(
                    non_empty(join(&phrase, true)),
                    adl,
                    &local,
                    &domain,
                ));
            }
            Some(Tok::Special(b'@')) => {
                self.pos += 1;
                let stops: &[u8] = if in_group { b",;" } else { b"," };
                let domain = self.until(stops, &mut comments);
                let name = comments.pop();
                out.push(mailbox(name, None, &phrase, &domain));
            }
            _ => {
                if !phrase.is_empty() {
                    let name = comments.pop();
                    out.push(mailbox(name, None, &phrase, &[]));
                }
                if self.is_special(b'>')
                    || (self.is_special(b';') && !in_group)
                    || self.is_special(b':')
                {
                    self.pos += 1;
                }
            }
        }
    }
}

fn mailbox(
    name: Option<Vec<u8>>,
    adl: Option<Vec<u8>>,
    local: &[Token],
    domain: &[Token],
) -> EnvAddr {
    let mailbox = non_empty(join(local, false)).unwrap_or_else(|| b"MISSING_MAILBOX".to_vec());
    let host = non_empty(join(domain, false)).unwrap_or_else(|| b"MISSING_DOMAIN".to_vec());
    EnvAddr {
        name: name.and_then(non_empty),
        adl,
        mailbox: Some(mailbox),
        host: Some(host),
    }
}

/// Parses an address-list field value into ENVELOPE address entries.
pub(crate) fn parse_list(value: &[u8]) -> Vec<EnvAddr> {
    let mut p = Parser {
        toks: tokenize(value),
        pos: 0,
    };
    let mut out = Vec::new();
    while p.pos < p.toks.len() {
        if p.is_special(b',') {
            p.pos += 1;
            continue;
        }
        let before = p.pos;
        p.address(&mut out, false);
        if p.pos == before {
            p.pos += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, adl: Option<&str>, mb: Option<&str>, host: Option<&str>) -> EnvAddr {
        let f = |s: Option<&str>| s.map(|s| s.as_bytes().to_vec());
        EnvAddr {
            name: f(name),
            adl: f(adl),
            mailbox: f(mb),
            host: f(host),
        }
    }

    #[test]
    fn simple_forms() {
        assert_eq!(
            parse_list(b"Terry Gray <gray@cac.washington.edu>"),
            vec![a(
                Some("Terry Gray"),
                None,
                Some("gray"),
                Some("cac.washington.edu")
            )]
        );
        assert_eq!(
            parse_list(b"\"Smith, John\" <j@x>, k@y (Kay)"),
            vec![
                a(Some("Smith, John"), None, Some("j"), Some("x")),
                a(Some("Kay"), None, Some("k"), Some("y"))
            ]
        );
        assert_eq!(
            parse_list(b"John Q. Public <q@x>")[0].name.as_deref(),
            Some(&b"John Q. Public"[..])
        );
        assert_eq!(
            parse_list(b"<@r1,@r2:u@h>"),
            vec![a(None, Some("@r1,@r2"), Some("u"), Some("h"))]
        );
    }

    #[test]
    fn groups() {
        assert_eq!(
            parse_list(b"G: a@b, c <d@e>;, f@g"),
            vec![
                a(None, None, Some("G"), None),
                a(None, None, Some("a"), Some("b")),
                a(Some("c"), None, Some("d"), Some("e")),
                a(None, None, None, None),
                a(None, None, Some("f"), Some("g")),
            ]
        );
        assert_eq!(parse_list(b"Undisclosed recipients:;").len(), 2);
    }

    #[test]
    fn missing_parts() {
        assert_eq!(
            parse_list(b"local"),
            vec![a(None, None, Some("local"), Some("MISSING_DOMAIN"))]
        );
        assert_eq!(
            parse_list(b"@host"),
            vec![a(None, None, Some("MISSING_MAILBOX"), Some("host"))]
        );
        assert!(parse_list(b"").is_empty());
        assert!(parse_list(b" , ,").is_empty());
    }
}
