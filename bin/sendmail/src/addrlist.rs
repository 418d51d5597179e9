//! The addresses in an RFC 5322 address list (`To:`, `Cc:`, `Bcc:` field bodies).
//!
//! ```text
//! address-list = address *("," address)
//! address      = mailbox / group
//! group        = display-name ":" [mailbox *("," mailbox)] ";"
//! mailbox      = [display-name] "<" [route ":"] addr-spec ">" / addr-spec
//! ```
//!
//! Comments `( … )` (nested, with `\` escapes) are white space; quoted strings keep their
//! quotes in a local part (`"a,b"@example.org`) and hide commas, `<`, `:` and `;`; a
//! source route (`<@relay:user@host>`) is dropped; display names and group names are
//! dropped. Obsolete forms are tolerated: an empty item (`a,,b`), a missing `;`, a bare
//! address next to text. The result is each addr-spec as it was written, without white
//! space; nothing is resolved or qualified (cleanup does that).

/// A lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An atom or dot-atom piece (anything that is not special, space or control).
    Atom(String),
    /// A quoted string, with its quotes and escapes as written.
    Quoted(String),
    /// A domain literal `[…]` as written.
    Literal(String),
    /// One of `< > : ; , @ .`
    Special(char),
    /// White space or a comment: separates words.
    Space,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                out.push(Tok::Space);
            }
            '"' => {
                let mut s = String::from('"');
                let mut closed = false;
                while let Some(c) = chars.next() {
                    s.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                if !closed {
                    s.push('"');
                }
                out.push(Tok::Quoted(s));
            }
            '[' => {
                let mut s = String::from('[');
                for c in chars.by_ref() {
                    s.push(c);
                    if c == ']' {
                        break;
                    }
                }
                out.push(Tok::Literal(s));
            }
            '<' | '>' | ':' | ';' | ',' | '@' | '.' => out.push(Tok::Special(c)),
            c if c.is_whitespace() || c.is_control() => {
                if out.last() != Some(&Tok::Space) {
                    out.push(Tok::Space);
                }
            }
            _ => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n.is_control() || "()<>[]:;@,.\"".contains(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Tok::Atom(s));
            }
        }
    }
    out
}

/// Joins the tokens of one addr-spec, dropping white space.
fn join(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        match t {
            Tok::Atom(a) | Tok::Quoted(a) | Tok::Literal(a) => s.push_str(a),
            Tok::Special(c) => s.push(*c),
            Tok::Space => {}
        }
    }
    s
}

/// The addr-spec of one mailbox (the tokens between commas, group name already removed).
fn mailbox(toks: &[Tok]) -> Option<String> {
    let open = toks.iter().position(|t| *t == Tok::Special('<'));
    let spec = match open {
        Some(o) => {
            let inner = &toks[o + 1..];
            let close = inner
                .iter()
                .position(|t| *t == Tok::Special('>'))
                .unwrap_or(inner.len());
            let inner = &inner[..close];
            // Drop a source route: everything up to the last ':' inside the brackets.
            match inner.iter().rposition(|t| *t == Tok::Special(':')) {
                Some(c) => join(&inner[c + 1..]),
                None => join(inner),
            }
        }
        None => join(toks),
    };
    (!spec.is_empty()).then_some(spec)
}

/// Every addr-spec in an address-list field body, in order.
pub fn parse(text: &str) -> Vec<String> {
    let toks = tokens(text);
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Special('<') => in_angle = true,
            Tok::Special('>') => in_angle = false,
            // A group's display name ends at ':'; its members follow.
            Tok::Special(':') if !in_angle => start = i + 1,
            Tok::Special(',') | Tok::Special(';') if !in_angle => {
                out.extend(mailbox(&toks[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(mailbox(&toks[start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn plain_and_bracketed() {
        assert_eq!(parse("bob@example.org"), vec!["bob@example.org"]);
        assert_eq!(parse(" bob "), vec!["bob"]);
        assert_eq!(
            parse("Bob Smith <bob@example.org>, carol@example.org"),
            vec!["bob@example.org", "carol@example.org"]
        );
        assert_eq!(parse("<bob@example.org>"), vec!["bob@example.org"]);
    }

    #[test]
    fn display_names_with_specials_in_quotes() {
        assert_eq!(
            parse("\"Smith, Bob\" <bob@example.org>, \"a <b> c: d;\" <carol@x.example>"),
            vec!["bob@example.org", "carol@x.example"]
        );
        assert_eq!(
            parse("\"Esc \\\" aped, name\" <d@example.org>"),
            vec!["d@example.org"]
        );
    }

    #[test]
    fn quoted_local_parts_keep_their_quotes() {
        assert_eq!(
            parse("\"a,b\"@example.org, \"john doe\"@example.org"),
            vec!["\"a,b\"@example.org", "\"john doe\"@example.org"]
        );
    }

    #[test]
    fn comments_are_white_space() {
        assert_eq!(
            parse("bob@example.org (Bob, the (nested) one), Carol (x\\)y) <carol@example.org>"),
            vec!["bob@example.org", "carol@example.org"]
        );
        assert_eq!(parse("(only a comment)"), Vec::<String>::new());
        assert_eq!(parse("bob(c)@(d)example.org"), vec!["bob@example.org"]);
    }

    #[test]
    fn groups() {
        assert_eq!(parse("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            parse("Friends: alice@a.example, Bob <bob@b.example>; carol@c.example"),
            vec!["alice@a.example", "bob@b.example", "carol@c.example"]
        );
        assert_eq!(
            parse("Team: dave@d.example"),
            vec!["dave@d.example"],
            "missing ';'"
        );
    }

    #[test]
    fn routes_literals_and_oddities() {
        assert_eq!(
            parse("<@relay.example,@r2.example:bob@example.org>"),
            vec!["bob@example.org"]
        );
        assert_eq!(parse("bob@[192.0.2.1]"), vec!["bob@[192.0.2.1]"]);
        assert_eq!(parse("a,,b,"), vec!["a", "b"]);
        assert_eq!(parse("<>, bob"), vec!["bob"]);
        assert_eq!(parse(""), Vec::<String>::new());
        assert_eq!(parse("\"unterminated"), vec!["\"unterminated\""]);
        assert_eq!(parse("Bob <bob@example.org"), vec!["bob@example.org"]);
        assert_eq!(parse("Jörg <jörg@exämple.org>"), vec!["jörg@exämple.org"]);
    }
}
