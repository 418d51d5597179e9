//! RFC 5321 envelope addresses: the `Mailbox` grammar of §4.1.2 with the UTF-8
//! extensions of RFC 6531.
//!
//! What [`parse_mailbox`] accepts (the text between `<` and `>`, brackets not included):
//!
//! - an optional source route `@a.example,@b.example:` (RFC 5321 §4.1.2 `A-d-l`), checked
//!   and then dropped: `@a,@b:user@c` is `user@c` (RFC 5321 §3.6.1 says to ignore it);
//! - a local part that is a Dot-string (RFC 5322 `atext` atoms joined by single dots: no
//!   leading, trailing or double dots) or a Quoted-string (`qtextSMTP` = printable ASCII
//!   except `"` and `\`, and `quoted-pairSMTP` = `\` + printable ASCII or space);
//! - `@`, then a domain: dot-separated labels of letters, digits and hyphens (no hyphen at
//!   either end of a label, a label at most 63 octets, one trailing dot tolerated), or an
//!   address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`, checked with std's
//!   [`Ipv4Addr`] / [`Ipv6Addr`] parsers (so `[999.1.1.1]` and `[01.2.3.4]` are refused,
//!   as are RFC 5321 general address literals such as `[x400:…]`).
//!
//! With `utf8` (the client gave SMTPUTF8), RFC 6531 also allows non-ASCII characters in
//! atoms, in quoted strings and in domain labels (U-labels); non-ASCII control and space
//! characters are refused even then. Without it, any non-ASCII character is an error.
//!
//! Limits (RFC 5321 §4.5.3.1): local part at most [`MAX_LOCAL_PART`] octets as written
//! (quotes included), domain at most [`MAX_DOMAIN`] octets, and the whole path with its
//! angle brackets at most [`MAX_PATH`] octets.
//!
//! Parsing is total: every input, however hostile, gives `Ok` or `Err` with a short
//! human-readable reason that never echoes the input.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets as written (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest reverse- or forward-path, angle brackets included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Longest domain label, in octets (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// An RFC 5321 Mailbox: `local-part "@" domain`.
///
/// `local` is stored unquoted-canonical: for `"a b"@x` it is `a b` (quotes and backslash
/// escapes removed). [`Display`](fmt::Display) re-quotes when needed (`"a b"@x`,
/// `"a@b"@x`, `"a\"b"@x`) and writes a Dot-string otherwise (`"john"@x` → `john@x`), so
/// `parse(display(parse(s))) == parse(s)` and the displayed form is canonical.
///
/// `domain` is kept as written (case and a trailing dot preserved); use
/// [`domain_lower`](Mailbox::domain_lower) to compare. The one mailbox without a domain is
/// the special recipient `<Postmaster>` (RFC 5321 §4.1.1.3), which
/// [`parse_command`](crate::parse_command) returns as `local: "Postmaster", domain: ""`;
/// it displays as `Postmaster`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part, without quoting.
    pub local: String,
    /// The domain or address literal (brackets kept), as written.
    pub domain: String,
}

impl Mailbox {
    /// True when the local part or the domain has non-ASCII characters (the address
    /// needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The domain lower-cased with its trailing dot removed; address literals
    /// (`[192.0.2.1]`, `[IPv6:…]`) are returned as written (brackets kept).
    pub fn domain_lower(&self) -> String {
        if self.is_address_literal() {
            return self.domain.clone();
        }
        let mut d = self.domain.to_lowercase();
        if d.ends_with('.') {
            d.pop();
        }
        d
    }

    /// True when the domain is an address literal (`[…]`).
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local, true) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        if !self.domain.is_empty() {
            write!(f, "@{}", self.domain)?;
        }
        Ok(())
    }
}

/// The argument of `MAIL FROM:`: the null reverse-path `<>` or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    /// An ordinary sender.
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    /// The mailbox, or the empty string for `<>` (callers add the brackets, as in
    /// Postfix's `from=<…>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Parses what is between `<` and `>` (brackets NOT included) as a [`Mailbox`], accepting
/// and stripping an RFC 5321 source route (`@a,@b:user@c` → `user@c`).
///
/// `utf8`: whether SMTPUTF8 was given; without it non-ASCII is an error. Errors are
/// short human-readable reasons that do not quote the input. See the module
/// documentation for the grammar and limits.
pub fn parse_mailbox(s: &str, utf8: bool) -> Result<Mailbox, String> {
    if s.len() + 2 > MAX_PATH {
        return Err("address too long".into());
    }
    if !utf8 && !s.is_ascii() {
        return Err("non-ASCII address without SMTPUTF8".into());
    }
    let s = strip_source_route(s, utf8)?;
    let (local, domain) = parse_local_part(s, utf8)?;
    check_domain(domain, utf8)?;
    Ok(Mailbox {
        local,
        domain: domain.to_string(),
    })
}

/// Checks and removes `@d1,@d2:` in front of a mailbox. RFC 5321 `At-domain` takes a
/// `Domain` only, never an address literal.
fn strip_source_route(s: &str, utf8: bool) -> Result<&str, String> {
    if !s.starts_with('@') {
        return Ok(s);
    }
    let Some(colon) = s.find(':') else {
        return Err("bad source route".into());
    };
    for hop in s[..colon].split(',') {
        let Some(domain) = hop.strip_prefix('@') else {
            return Err("bad source route".into());
        };
        if domain.starts_with('[') {
            return Err("bad source route".into());
        }
        check_domain(domain, utf8).map_err(|e| format!("bad source route: {e}"))?;
    }
    Ok(&s[colon + 1..])
}

/// Splits off and decodes the local part; returns it with the text after the `@`.
fn parse_local_part(s: &str, utf8: bool) -> Result<(String, &str), String> {
    let (local, written, rest) = if let Some(quoted) = s.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, q)) if (' '..='~').contains(&q) => local.push(q),
                    _ => return Err("bad quoted-pair in local part".into()),
                },
                c if is_qtext(c, utf8) => local.push(c),
                _ => return Err("invalid character in quoted local part".into()),
            }
        }
        let Some(end) = end else {
            return Err("unterminated quoted local part".into());
        };
        // `end` indexes `quoted`, which starts one byte into `s`.
        (local, end + 2, &quoted[end + 1..])
    } else {
        let at = s.find('@').ok_or("missing domain")?;
        let local = &s[..at];
        if local.is_empty() {
            return Err("empty local part".into());
        }
        if !is_dot_string(local, utf8) {
            return Err("invalid local part".into());
        }
        (local.to_string(), at, &s[at..])
    };
    if written > MAX_LOCAL_PART {
        return Err("local part too long".into());
    }
    let Some(domain) = rest.strip_prefix('@') else {
        return Err("missing @ after local part".into());
    };
    Ok((local, domain))
}

/// RFC 5322 `atext`, extended by RFC 6531 with non-ASCII when `utf8`.
fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && is_utf8_ok(c))
}

/// RFC 5321 `qtextSMTP` (%d32-33 / %d35-91 / %d93-126), extended by RFC 6531.
fn is_qtext(c: char, utf8: bool) -> bool {
    ((' '..='~').contains(&c) && c != '"' && c != '\\') || (utf8 && is_utf8_ok(c))
}

/// A non-ASCII character we accept under SMTPUTF8: not a control, not a space.
fn is_utf8_ok(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// RFC 5321 `Dot-string`: atoms of `atext` separated by single dots.
fn is_dot_string(s: &str, utf8: bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| is_atext(c, utf8)))
}

/// Checks a domain or address literal.
fn check_domain(d: &str, utf8: bool) -> Result<(), String> {
    if d.is_empty() {
        return Err("missing domain".into());
    }
    if d.len() > MAX_DOMAIN {
        return Err("domain too long".into());
    }
    if d.starts_with('[') {
        return check_address_literal(d);
    }
    // One trailing dot (the DNS root) is tolerated; `domain_lower` removes it.
    let body = d.strip_suffix('.').unwrap_or(d);
    if body.is_empty() {
        return Err("invalid domain".into());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label in domain".into());
        }
        if label.len() > MAX_LABEL {
            return Err("domain label too long".into());
        }
        let let_dig = |c: char| c.is_ascii_alphanumeric() || (utf8 && is_utf8_ok(c));
        if !label.chars().all(|c| let_dig(c) || c == '-') {
            return Err("invalid character in domain".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with a hyphen".into());
        }
    }
    Ok(())
}

/// `[IPv4]` or `[IPv6:addr]`.
fn check_address_literal(d: &str) -> Result<(), String> {
    let inner = d
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .ok_or("bad address literal")?;
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err("bad address literal".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Mailbox {
        match parse_mailbox(s, false) {
            Ok(m) => m,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn bad(s: &str) {
        assert!(parse_mailbox(s, false).is_err(), "{s:?} should be refused");
        assert!(
            parse_mailbox(s, true).is_err(),
            "{s:?} should be refused with utf8"
        );
    }

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn plain() {
        assert_eq!(ok("user@example.com"), mb("user", "example.com"));
        assert_eq!(
            ok("first.last+tag@sub.example.org"),
            mb("first.last+tag", "sub.example.org")
        );
        assert_eq!(ok("!#$%&'*+-/=?^_`{|}~@x"), mb("!#$%&'*+-/=?^_`{|}~", "x"));
        assert_eq!(ok("u@1.2.3.4"), mb("u", "1.2.3.4"));
        assert_eq!(ok("u@a-b.c"), mb("u", "a-b.c"));
    }

    #[test]
    fn source_routes_are_stripped() {
        assert_eq!(
            ok("@a.example,@b.example:user@c.example"),
            mb("user", "c.example")
        );
        assert_eq!(ok("@a.example:user@c.example"), mb("user", "c.example"));
        bad("@a.example,user@c.example");
        bad("@a.example,:user@c.example");
        bad("@:user@c.example");
        bad("@-a.example:user@c.example");
        bad("@[192.0.2.1]:user@c.example");
        bad("@a.example:");
        bad("@a.example:@b.example");
        bad(",@a.example:user@c");
    }

    #[test]
    fn quoted_local_parts() {
        assert_eq!(ok("\"john doe\"@x"), mb("john doe", "x"));
        assert_eq!(ok("\"a\\\"b\"@x"), mb("a\"b", "x"));
        assert_eq!(ok("\"a@b\"@x"), mb("a@b", "x"));
        assert_eq!(ok("\"a\\\\b\"@x"), mb("a\\b", "x"));
        assert_eq!(ok("\"john\"@x"), mb("john", "x"));
        assert_eq!(ok("\"\"@x"), mb("", "x"));
        assert_eq!(ok("\".a..b.\"@x"), mb(".a..b.", "x"));
        assert_eq!(ok("\"a>b\"@x"), mb("a>b", "x"));
        bad("\"unterminated@x");
        bad("\"a\"b@x");
        bad("\"a\"");
        bad("\"a\tb\"@x");
        bad("\"a\\\tb\"@x");
        bad("\"a\rb\"@x");
        bad("\"a\\");
        bad("a\"b\"@x");
    }

    #[test]
    fn display_requotes_canonically() {
        for (input, shown) in [
            ("\"john doe\"@x", "\"john doe\"@x"),
            ("\"a\\\"b\"@x", "\"a\\\"b\"@x"),
            ("\"a@b\"@x", "\"a@b\"@x"),
            ("\"a\\\\b\"@x", "\"a\\\\b\"@x"),
            ("\"john\"@x", "john@x"),
            ("\"\\j\\o\\h\\n\"@x", "john@x"),
            ("\"\"@x", "\"\"@x"),
            ("\"a.\"@x", "\"a.\"@x"),
            ("user@Example.COM.", "user@Example.COM."),
            ("u@[IPv6:2001:db8::1]", "u@[IPv6:2001:db8::1]"),
            ("@a:u@b", "u@b"),
        ] {
            let m = ok(input);
            assert_eq!(m.to_string(), shown, "{input:?}");
            assert_eq!(ok(&m.to_string()), m, "round trip of {input:?}");
        }
        assert_eq!(mb("Postmaster", "").to_string(), "Postmaster");
        let u = parse_mailbox("\"é ü\"@exämple.de", true).expect("utf8");
        assert_eq!(u.to_string(), "\"é ü\"@exämple.de");
        assert_eq!(parse_mailbox(&u.to_string(), true), Ok(u));
    }

    #[test]
    fn address_literals() {
        let m = ok("u@[192.0.2.1]");
        assert_eq!(m.domain, "[192.0.2.1]");
        assert!(m.is_address_literal());
        assert_eq!(m.domain_lower(), "[192.0.2.1]");
        let m = ok("u@[IPv6:2001:db8::1]");
        assert!(m.is_address_literal());
        assert_eq!(m.domain_lower(), "[IPv6:2001:db8::1]");
        ok("u@[ipv6:::1]");
        ok("u@[IPv6:::ffff:192.0.2.1]");
        bad("u@[999.1.1.1]");
        bad("u@[1.2.3]");
        bad("u@[01.2.3.4]");
        bad("u@[192.0.2.1");
        bad("u@[192.0.2.1]x");
        bad("u@[192.0.2.1].com");
        bad("u@[IPv6:2001:db8::g]");
        bad("u@[IPv6:192.0.2.1]");
        bad("u@[2001:db8::1]");
        bad("u@[IPv6:fe80::1%eth0]");
        bad("u@[x400:foo]");
        bad("u@[]");
        bad("u@[ 192.0.2.1]");
        assert!(!ok("u@x").is_address_literal());
    }

    #[test]
    fn domains() {
        let m = ok("u@Example.COM.");
        assert_eq!(m.domain, "Example.COM.");
        assert_eq!(m.domain_lower(), "example.com");
        bad("u@example.com..");
        bad("u@.");
        bad("u@.example.com");
        bad("u@a..b");
        bad("u@-a.b");
        bad("u@a-.b");
        bad("u@a_b.c");
        bad("u@a b");
        bad("u@a,b");
        bad("u@a@b");
        let label63 = "a".repeat(63);
        ok(&format!("u@{label63}.com"));
        bad(&format!("u@{label63}a.com"));
    }

    #[test]
    fn malformed() {
        bad("");
        bad("user");
        bad("user@");
        bad("@x");
        bad("user@@x");
        bad("user@x@y");
        bad(".user@x");
        bad("user.@x");
        bad("us..er@x");
        bad("us er@x");
        bad("us(er)@x");
        bad("us,er@x");
        bad("us\\er@x");
        bad("<user@x>");
        bad("user@x ");
        bad(" user@x");
        bad("user\0@x");
        bad("user@x\0");
    }

    #[test]
    fn lengths() {
        let l64 = "a".repeat(64);
        let l65 = "a".repeat(65);
        assert_eq!(ok(&format!("{l64}@x")).local, l64);
        bad(&format!("{l65}@x"));
        // 62 characters quoted = 64 octets as written.
        ok(&format!("\"{}\"@x", "a".repeat(62)));
        bad(&format!("\"{}\"@x", "a".repeat(63)));
        // Domain of 256 octets (four 63-octet labels plus a 3-octet one).
        let label = "a".repeat(63);
        let long = format!("{label}.{label}.{label}.{}.a", "a".repeat(62));
        assert_eq!(long.len(), 256);
        bad(&format!("u@{long}"));
        // The domain limit on its own (a path can never carry such a domain).
        assert!(check_domain(&long, false).is_err());
        assert!(check_domain(&long[1..], false).is_ok());
        assert!(check_domain(&format!("{}.", &long[1..]), false).is_err());
        // Whole path: at most 256 with the brackets, so 254 between them.
        let d = format!("{label}.{label}.{label}");
        let fits = format!("{}@{d}", "u".repeat(254 - 1 - d.len()));
        assert_eq!(fits.len(), 254);
        ok(&fits);
        bad(&format!("u{fits}"));
    }

    #[test]
    fn utf8_needs_smtputf8() {
        for s in [
            "jösé@example.com",
            "user@exämple.com",
            "\"jö sé\"@x",
            "@exämple.com:u@x",
        ] {
            assert!(parse_mailbox(s, false).is_err(), "{s:?}");
            let m = parse_mailbox(s, true).expect(s);
            assert!(m.is_utf8() || s.starts_with('@'), "{s:?}");
        }
        let m = parse_mailbox("用户@例子.广告", true).expect("cjk");
        assert_eq!(m, mb("用户", "例子.广告"));
        assert!(m.is_utf8());
        assert!(!ok("user@x").is_utf8());
        assert_eq!(
            parse_mailbox("u@ÉXAMPLE.de.", true)
                .expect("upper")
                .domain_lower(),
            "éxample.de"
        );
        // Non-ASCII controls and spaces are refused even with SMTPUTF8.
        for s in ["a\u{85}b@x", "a\u{a0}b@x", "u@a\u{2028}b", "\"a\u{9f}\"@x"] {
            assert!(parse_mailbox(s, true).is_err(), "{s:?}");
        }
        // Quoted-pair is ASCII only.
        assert!(parse_mailbox("\"\\é\"@x", true).is_err());
    }
}
