//! SMTP command lines → [`Command`] (RFC 5321 §4.1.1 and the ESMTP extensions Petrel
//! speaks: SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461),
//! CHUNKING/BINARYMIME (RFC 3030), AUTH (RFC 4954)).
//!
//! The grammar [`parse_command`] accepts, on a line whose CRLF was already removed:
//!
//! - The verb is everything up to the first space, matched case-insensitively. Trailing
//!   spaces and tabs on the line are ignored. A line that is not UTF-8, or that holds an
//!   ASCII control character other than TAB (NUL, bare CR, …), is a syntax error.
//! - `EHLO x` / `HELO x`: the argument as given, trimmed (not validated: that is policy).
//! - `MAIL FROM:<path> [params]`, `RCPT TO:<path> [params]`: `FROM:`/`TO:` are
//!   case-insensitive and must follow the verb after exactly one space; one space is
//!   tolerated after the colon, as Postfix does; the angle brackets are required. The
//!   closing `>` is the first one outside a quoted string, and it must be followed by the
//!   end of the line or a space. `MAIL FROM:<>` is the null sender; `RCPT TO:<>` is an
//!   error; `RCPT TO:<Postmaster>` (any case, no domain) gives
//!   `Mailbox { local: "Postmaster", domain: "" }`. Addresses are parsed by
//!   [`parse_mailbox`] with UTF-8 allowed; a MAIL address with non-ASCII characters and
//!   no `SMTPUTF8` parameter is [`CommandError::NeedsUtf8`]. RCPT addresses are not
//!   checked that way: the server compares [`Mailbox::is_utf8`] with the transaction's
//!   SMTPUTF8 itself.
//! - Parameters are `KEYWORD[=VALUE]` separated by spaces; keywords are
//!   case-insensitive, values are printable ASCII without `=`. Unknown or repeated
//!   parameters are errors. MAIL takes `SIZE=digits`, `BODY=7BIT|8BITMIME|BINARYMIME`,
//!   `SMTPUTF8` (no value), `RET=FULL|HDRS`, `ENVID=xtext` (≤ 100 characters) and
//!   `AUTH=xtext|<>`; RCPT takes `NOTIFY=NEVER|SUCCESS,FAILURE,DELAY` (NEVER alone) and
//!   `ORCPT=addr-type;xtext` (≤ 500 characters). xtext `+HH` escapes are decoded; a
//!   decoded value that is not UTF-8 or holds a control character (CR, LF, NUL …) is
//!   refused, so these values can go into headers and queue files as they are.
//! - `DATA`, `RSET`, `QUIT`, `STARTTLS`: no argument. `NOOP [anything]`. `HELP [topic]`.
//!   `VRFY string`, `EXPN string` (required, trimmed). `BDAT size [LAST]`.
//!   `AUTH mechanism [initial-response]`: mechanism 1–20 of `A-Z 0-9 - _` (upper-cased),
//!   initial response base64 or `=`.
//!
//! Errors and their replies ([`CommandError::reply`]):
//!
//! | error | reply |
//! |---|---|
//! | [`CommandError::Unrecognized`] (unknown or empty verb) | `500 5.5.2 Error: command not recognized` |
//! | [`CommandError::Syntax`] (bad arguments, bad address) | `501 5.5.4 Syntax: <text>` |
//! | [`CommandError::Parameter`] (bad, unknown or repeated ESMTP parameter) | `555 5.5.4 <text>` |
//! | [`CommandError::NeedsUtf8`] (non-ASCII MAIL address without SMTPUTF8) | `553 5.6.7 <text>` |
//!
//! Error texts never echo the client's input beyond a parameter keyword.

use crate::address::{parse_mailbox, Mailbox, ReversePath};
use crate::reply::Reply;

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`: the argument as given (domain or address literal), trimmed.
    Ehlo(String),
    /// `HELO name`: the argument as given, trimmed.
    Helo(String),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The sender, or `<>`.
        from: ReversePath,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> params`. `RCPT TO:<Postmaster>` (no domain) gives
    /// `Mailbox { local: "Postmaster", domain: "" }`.
    Rcpt {
        /// The recipient.
        to: Mailbox,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// The exact number of octets in the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument is ignored).
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The initial response as sent (base64, or `=` for an empty one).
        initial: Option<String>,
    },
}

/// The `BODY=` parameter of MAIL (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (needs BDAT).
    BinaryMime,
}

/// The `RET=` parameter of MAIL (RFC 3461): what a DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the headers only.
    Hdrs,
}

/// The ESMTP parameters of MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` was given (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), xtext-decoded; `<>` stays `<>`.
    pub auth: Option<String>,
}

/// The `NOTIFY=` parameter of RCPT (RFC 3461).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// `NEVER` (never set together with the others).
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `"NEVER"`, or the set ones of `"SUCCESS,FAILURE,DELAY"` in that order, or `""`
    /// when none is set.
    pub fn to_list(&self) -> String {
        if self.never {
            return "NEVER".into();
        }
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        parts.join(",")
    }
}

/// The ESMTP parameters of RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` (RFC 3461) as `addr-type;decoded`, e.g. `rfc822;u@x`.
    pub orcpt: Option<String>,
}

/// Why a command line was refused; [`reply`](CommandError::reply) gives the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb → `500 5.5.2 Error: command not recognized`.
    Unrecognized,
    /// Bad syntax → `501 5.5.4 Syntax: <text>` (e.g. `MAIL FROM:<a@b` missing `>`).
    Syntax(String),
    /// Bad or unknown ESMTP parameter → `555 5.5.4 <text>`.
    Parameter(String),
    /// Non-ASCII address without SMTPUTF8 → `553 5.6.7 <text>`.
    NeedsUtf8(String),
}

impl CommandError {
    /// The reply to send for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unrecognized => Reply::new(500, "5.5.2", "Error: command not recognized"),
            CommandError::Syntax(t) => Reply::new(501, "5.5.4", format!("Syntax: {t}")),
            CommandError::Parameter(t) => Reply::new(555, "5.5.4", t.clone()),
            CommandError::NeedsUtf8(t) => Reply::new(553, "5.6.7", t.clone()),
        }
    }
}

const MAIL_USAGE: &str = "MAIL FROM:<address>";
const RCPT_USAGE: &str = "RCPT TO:<address>";
/// RFC 3461 §4.4.
const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2 (also used for AUTH=).
const MAX_ORCPT: usize = 500;

fn syntax(t: impl Into<String>) -> CommandError {
    CommandError::Syntax(t.into())
}

fn param(t: impl Into<String>) -> CommandError {
    CommandError::Parameter(t.into())
}

/// Parses one command line (CRLF already removed). See the module documentation for
/// the grammar and the error classes.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| syntax("invalid UTF-8 in command"))?;
    if line.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(syntax("control character in command"));
    }
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, Some(arg)),
        None => (line, None),
    };
    let trimmed = arg
        .map(|a| a.trim_matches([' ', '\t']))
        .filter(|a| !a.is_empty());
    let none = |c: Command, usage: &str| match trimmed {
        None => Ok(c),
        Some(_) => Err(syntax(usage)),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => trimmed
            .map(|a| Command::Ehlo(a.to_string()))
            .ok_or_else(|| syntax("EHLO hostname")),
        "HELO" => trimmed
            .map(|a| Command::Helo(a.to_string()))
            .ok_or_else(|| syntax("HELO hostname")),
        "MAIL" => parse_mail(arg.unwrap_or("")),
        "RCPT" => parse_rcpt(arg.unwrap_or("")),
        "DATA" => none(Command::Data, "DATA"),
        "BDAT" => parse_bdat(trimmed.unwrap_or("")),
        "RSET" => none(Command::Rset, "RSET"),
        "QUIT" => none(Command::Quit, "QUIT"),
        "STARTTLS" => none(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help(trimmed.map(str::to_string))),
        "VRFY" => trimmed
            .map(|a| Command::Vrfy(a.to_string()))
            .ok_or_else(|| syntax("VRFY address")),
        "EXPN" => trimmed
            .map(|a| Command::Expn(a.to_string()))
            .ok_or_else(|| syntax("EXPN address")),
        "AUTH" => parse_auth(trimmed.unwrap_or("")),
        _ => Err(CommandError::Unrecognized),
    }
}

/// Splits `FROM:<path> params` into the text between the brackets and the parameters.
fn split_path<'a>(
    arg: &'a str,
    keyword: &str,
    usage: &str,
) -> Result<(&'a str, &'a str), CommandError> {
    let n = keyword.len();
    if !arg
        .as_bytes()
        .get(..n)
        .is_some_and(|k| k.eq_ignore_ascii_case(keyword.as_bytes()))
    {
        return Err(syntax(usage));
    }
    // The first `n` bytes are ASCII, so `n` is a char boundary.
    let rest = &arg[n..];
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let Some(rest) = rest.strip_prefix('<') else {
        return Err(syntax(usage));
    };
    let close = closing_bracket(rest).ok_or_else(|| syntax(usage))?;
    let inner = &rest[..close];
    let after = &rest[close + 1..];
    if after.is_empty() {
        Ok((inner, ""))
    } else if let Some(params) = after.strip_prefix(' ') {
        Ok((inner, params))
    } else {
        Err(syntax(usage))
    }
}

/// The index of the first `>` outside a quoted string (where `\` escapes one character).
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                '"' => quoted = true,
                '>' => return Some(i),
                _ => {}
            }
        }
    }
    None
}

fn parse_mail(arg: &str) -> Result<Command, CommandError> {
    let (inner, params) = split_path(arg, "FROM:", MAIL_USAGE)?;
    let from = if inner.is_empty() {
        ReversePath::Null
    } else {
        let m =
            parse_mailbox(inner, true).map_err(|e| syntax(format!("bad sender address: {e}")))?;
        ReversePath::Mailbox(m)
    };
    let params = mail_params(params)?;
    if let ReversePath::Mailbox(m) = &from {
        if m.is_utf8() && !params.smtputf8 {
            return Err(CommandError::NeedsUtf8(
                "Must declare SMTPUTF8 to send a non-ASCII address".into(),
            ));
        }
    }
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(arg: &str) -> Result<Command, CommandError> {
    let (inner, params) = split_path(arg, "TO:", RCPT_USAGE)?;
    let to = if inner.is_empty() {
        return Err(syntax(RCPT_USAGE));
    } else if inner.eq_ignore_ascii_case("postmaster") {
        Mailbox {
            local: "Postmaster".into(),
            domain: String::new(),
        }
    } else {
        parse_mailbox(inner, true).map_err(|e| syntax(format!("bad recipient address: {e}")))?
    };
    let params = rcpt_params(params)?;
    Ok(Command::Rcpt { to, params })
}

/// Splits parameters into (upper-cased keyword, value), checking their syntax and
/// refusing repeats.
fn split_params(s: &str) -> Result<Vec<(String, Option<&str>)>, CommandError> {
    let mut out: Vec<(String, Option<&str>)> = Vec::new();
    for token in s.split(' ').filter(|t| !t.is_empty()) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphanumeric())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !key_ok {
            return Err(param("Bad parameter syntax"));
        }
        let key = key.to_ascii_uppercase();
        let shown: String = key.chars().take(32).collect();
        // esmtp-value = 1*(%d33-60 / %d62-126)
        if let Some(v) = value {
            if v.is_empty() || !v.bytes().all(|b| (33..=126).contains(&b) && b != b'=') {
                return Err(param(format!("Bad parameter value: {shown}")));
            }
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(param(format!("Duplicate parameter: {shown}")));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn mail_params(s: &str) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    for (key, value) in split_params(s)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(param("Bad SIZE parameter"));
                }
                p.size = Some(v.parse().map_err(|_| param("Bad SIZE parameter"))?);
            }
            ("BODY", Some(v)) => {
                p.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(param("Bad BODY parameter")),
                });
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) => {
                p.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(param("Bad RET parameter")),
                });
            }
            ("ENVID", Some(v)) => {
                if v.len() > MAX_ENVID {
                    return Err(param("ENVID parameter too long"));
                }
                p.envid = Some(xtext_decode(v).ok_or_else(|| param("Bad ENVID parameter"))?);
            }
            ("AUTH", Some(v)) => {
                if v.len() > MAX_ORCPT {
                    return Err(param("AUTH parameter too long"));
                }
                let decoded = if v == "<>" {
                    Some(v.to_string())
                } else {
                    xtext_decode(v)
                };
                p.auth = Some(decoded.ok_or_else(|| param("Bad AUTH parameter"))?);
            }
            ("SIZE" | "BODY" | "RET" | "ENVID" | "AUTH", None) | ("SMTPUTF8", Some(_)) => {
                return Err(param(format!("Bad {key} parameter")));
            }
            _ => return Err(unsupported(&key)),
        }
    }
    Ok(p)
}

fn rcpt_params(s: &str) -> Result<RcptParams, CommandError> {
    let mut p = RcptParams::default();
    for (key, value) in split_params(s)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let mut n = Notify::default();
                for item in v.split(',') {
                    match item.to_ascii_uppercase().as_str() {
                        "NEVER" => n.never = true,
                        "SUCCESS" => n.success = true,
                        "FAILURE" => n.failure = true,
                        "DELAY" => n.delay = true,
                        _ => return Err(param("Bad NOTIFY parameter")),
                    }
                }
                if n.never && (n.success || n.failure || n.delay) {
                    return Err(param("Bad NOTIFY parameter: NEVER with other values"));
                }
                p.notify = Some(n);
            }
            ("ORCPT", Some(v)) => {
                if v.len() > MAX_ORCPT {
                    return Err(param("ORCPT parameter too long"));
                }
                let bad = || param("Bad ORCPT parameter");
                let (addr_type, addr) = v.split_once(';').ok_or_else(bad)?;
                // addr-type = atom
                let type_ok = !addr_type.is_empty()
                    && addr_type
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/?^_`{|}~".contains(c));
                if !type_ok {
                    return Err(bad());
                }
                let addr = xtext_decode(addr).ok_or_else(bad)?;
                if addr.is_empty() {
                    return Err(bad());
                }
                p.orcpt = Some(format!("{addr_type};{addr}"));
            }
            ("NOTIFY" | "ORCPT", None) => return Err(param(format!("Bad {key} parameter"))),
            _ => return Err(unsupported(&key)),
        }
    }
    Ok(p)
}

fn unsupported(key: &str) -> CommandError {
    let shown: String = key.chars().take(32).collect();
    param(format!("Unsupported option: {shown}"))
}

/// Decodes RFC 3461 xtext: `xchar` (`!`..`~` except `+` and `=`) or `+HH`. Returns `None`
/// for bad syntax, a decoded value that is not UTF-8, or one with a control character.
fn xtext_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                out.push((hi << 4) | lo);
            }
            b'=' => return None,
            33..=126 => out.push(b),
            _ => return None,
        }
    }
    let s = String::from_utf8(out).ok()?;
    if s.chars().any(char::is_control) {
        return None;
    }
    Some(s)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn parse_bdat(arg: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "BDAT size [LAST]";
    let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
    let size = words.next().ok_or_else(|| syntax(USAGE))?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(USAGE));
    }
    let size = size.parse().map_err(|_| syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(arg: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "AUTH mechanism [initial-response]";
    let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or_else(|| syntax(USAGE))?;
    let mech_ok = (1..=20).contains(&mechanism.len())
        && mechanism
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !mech_ok {
        return Err(syntax(USAGE));
    }
    let initial = words.next();
    if let Some(i) = initial {
        let b64 = i
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=');
        if !b64 {
            return Err(syntax(USAGE));
        }
    }
    if words.next().is_some() {
        return Err(syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        match parse_command(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{s:?} should parse: {e:?}"),
        }
    }

    fn err(s: &str) -> CommandError {
        match parse_command(s.as_bytes()) {
            Ok(c) => panic!("{s:?} should be refused, got {c:?}"),
            Err(e) => e,
        }
    }

    fn code(s: &str) -> (u16, String) {
        let r = err(s).reply();
        (r.code, r.enhanced.unwrap_or_default())
    }

    fn syntax_err(s: &str) {
        assert_eq!(code(s), (501, "5.5.4".into()), "{s:?}: {:?}", err(s));
    }

    fn param_err(s: &str) {
        assert_eq!(code(s), (555, "5.5.4".into()), "{s:?}: {:?}", err(s));
    }

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn mail(s: &str) -> (ReversePath, MailParams) {
        match cmd(s) {
            Command::Mail { from, params } => (from, params),
            c => panic!("{s:?} gave {c:?}"),
        }
    }

    fn rcpt(s: &str) -> (Mailbox, RcptParams) {
        match cmd(s) {
            Command::Rcpt { to, params } => (to, params),
            c => panic!("{s:?} gave {c:?}"),
        }
    }

    #[test]
    fn every_verb_any_case() {
        let cases: Vec<(&str, Command)> = vec![
            (
                "EHLO client.example",
                Command::Ehlo("client.example".into()),
            ),
            (
                "HELO client.example",
                Command::Helo("client.example".into()),
            ),
            ("EHLO [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            (
                "MAIL FROM:<a@b>",
                Command::Mail {
                    from: ReversePath::Mailbox(mb("a", "b")),
                    params: MailParams::default(),
                },
            ),
            (
                "RCPT TO:<a@b>",
                Command::Rcpt {
                    to: mb("a", "b"),
                    params: RcptParams::default(),
                },
            ),
            ("DATA", Command::Data),
            (
                "BDAT 100",
                Command::Bdat {
                    size: 100,
                    last: false,
                },
            ),
            (
                "BDAT 0 LAST",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP anything at all", Command::Noop),
            ("QUIT", Command::Quit),
            ("HELP", Command::Help(None)),
            ("HELP MAIL", Command::Help(Some("MAIL".into()))),
            ("VRFY user", Command::Vrfy("user".into())),
            ("EXPN list", Command::Expn("list".into())),
            ("STARTTLS", Command::StartTls),
            (
                "AUTH PLAIN",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (
                "AUTH PLAIN AHVzZXIAcGFzcw==",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AHVzZXIAcGFzcw==".into()),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(cmd(line), want, "{line:?}");
            let lower = line.to_ascii_lowercase();
            let mixed: String = line
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect();
            // Only the verb (and keywords) are case-insensitive; compare the verb variant.
            let verb_len = line.find(' ').unwrap_or(line.len());
            let lower_verb = format!("{}{}", &lower[..verb_len], &line[verb_len..]);
            let mixed_verb = format!("{}{}", &mixed[..verb_len], &line[verb_len..]);
            assert_eq!(cmd(&lower_verb), want, "{lower_verb:?}");
            assert_eq!(cmd(&mixed_verb), want, "{mixed_verb:?}");
        }
        assert_eq!(cmd("mail from:<a@b>"), cmd("MAIL FROM:<a@b>"));
        assert_eq!(cmd("rcpt to:<a@b>"), cmd("RCPT TO:<a@b>"));
        assert_eq!(
            cmd("bdat 5 last"),
            Command::Bdat {
                size: 5,
                last: true
            }
        );
        assert_eq!(
            cmd("auth login"),
            Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            }
        );
        assert_eq!(
            cmd("AUTH scram-sha-256 ="),
            Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial: Some("=".into())
            }
        );
    }

    #[test]
    fn arguments_trimmed_and_trailing_space_tolerated() {
        assert_eq!(
            cmd("EHLO   host.example  "),
            Command::Ehlo("host.example".into())
        );
        assert_eq!(cmd("HELO a b"), Command::Helo("a b".into()));
        assert_eq!(cmd("RSET "), Command::Rset);
        assert_eq!(cmd("QUIT\t"), Command::Quit);
        assert_eq!(cmd("HELP  "), Command::Help(None));
        assert_eq!(cmd("VRFY  <u@x> "), Command::Vrfy("<u@x>".into()));
        assert_eq!(cmd("MAIL FROM:<a@b>  "), cmd("MAIL FROM:<a@b>"));
    }

    #[test]
    fn unrecognized() {
        for s in [
            "",
            " ",
            "FOO",
            "MAILFROM:<a@b>",
            "EHL0 x",
            " EHLO x",
            "DATA\tx",
            "STARTTLSX",
            "Ü",
        ] {
            assert_eq!(
                parse_command(s.as_bytes()),
                Err(CommandError::Unrecognized),
                "{s:?}"
            );
        }
        let r = CommandError::Unrecognized.reply();
        assert_eq!(r.to_bytes(), b"500 5.5.2 Error: command not recognized\r\n");
    }

    #[test]
    fn syntax_errors() {
        for s in [
            "EHLO",
            "HELO ",
            "DATA x",
            "RSET x",
            "QUIT now",
            "STARTTLS x",
            "VRFY",
            "EXPN  ",
            "MAIL",
            "MAIL FROM:",
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:a@b>",
            "MAIL FROM:<a@b>x",
            "MAIL FROM:<a@b>>",
            "MAIL FROM:<a@b><c@d>",
            "MAIL FROM:  <a@b>",
            "MAIL  FROM:<a@b>",
            "MAIL TO:<a@b>",
            "MAIL FROM <a@b>",
            "MAIL FROM:<user@@x>",
            "MAIL FROM:<user@>",
            "MAIL FROM:<@x>",
            "MAIL FROM:<.user@x>",
            "MAIL FROM:<user.@x>",
            "MAIL FROM:<u@[999.1.1.1]>",
            "RCPT TO:<>",
            "RCPT TO:",
            "RCPT TO:u@x",
            "RCPT TO:<u@x",
            "RCPT FROM:<u@x>",
            "RCPT TO:<u@x>junk",
            "RCPT TO:<Postmaster@>",
            "RCPT TO:<\"a\"b@x>",
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 1 LAST x",
            "BDAT 1 FIRST",
            "BDAT 99999999999999999999999",
            "BDAT 18446744073709551616",
            "AUTH",
            "AUTH PL@IN",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
            "AUTH PLAIN a b",
            "AUTH PLAIN a*b",
            "NOOP \0",
            "HELO a\rb",
            "EHLO a\x7f",
        ] {
            syntax_err(s);
        }
        assert_eq!(
            parse_command(b"EHLO \xff"),
            Err(syntax("invalid UTF-8 in command"))
        );
        assert_eq!(
            parse_command(b"\xffOO"),
            Err(syntax("invalid UTF-8 in command"))
        );
        assert_eq!(
            err("MAIL FROM:<a@b").reply().to_bytes(),
            b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        );
        assert_eq!(
            cmd("BDAT 18446744073709551615"),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
    }

    #[test]
    fn mail_from() {
        assert_eq!(mail("MAIL FROM:<>").0, ReversePath::Null);
        assert_eq!(mail("MAIL FROM: <>").0, ReversePath::Null);
        assert_eq!(mail("MAIL FROM:<> SIZE=10").1.size, Some(10));
        assert_eq!(
            mail("MAIL FROM: <a@b>").0,
            ReversePath::Mailbox(mb("a", "b"))
        );
        assert_eq!(
            mail("MAIL From:<a@b>").0,
            ReversePath::Mailbox(mb("a", "b"))
        );
        assert_eq!(
            mail("MAIL FROM:<@a.example,@b.example:user@c.example>").0,
            ReversePath::Mailbox(mb("user", "c.example"))
        );
        assert_eq!(
            mail("MAIL FROM:<\"john doe\"@x>").0,
            ReversePath::Mailbox(mb("john doe", "x"))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a\\\"b\"@x>").0,
            ReversePath::Mailbox(mb("a\"b", "x"))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a@b\"@x>").0,
            ReversePath::Mailbox(mb("a@b", "x"))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a>b\"@x>").0,
            ReversePath::Mailbox(mb("a>b", "x"))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a\\>b\"@x>").0,
            ReversePath::Mailbox(mb("a>b", "x"))
        );
        assert_eq!(
            mail("MAIL FROM:<u@[192.0.2.1]>").0,
            ReversePath::Mailbox(mb("u", "[192.0.2.1]"))
        );
        assert_eq!(
            mail("MAIL FROM:<u@[IPv6:2001:db8::1]>").0,
            ReversePath::Mailbox(mb("u", "[IPv6:2001:db8::1]"))
        );
        assert_eq!(
            mail("MAIL FROM:<u@x.example.>").0,
            ReversePath::Mailbox(mb("u", "x.example."))
        );
        syntax_err(&format!("MAIL FROM:<{}@x>", "a".repeat(65)));
        mail(&format!("MAIL FROM:<{}@x>", "a".repeat(64)));
        let label = "a".repeat(63);
        syntax_err(&format!(
            "MAIL FROM:<u@{label}.{label}.{label}.{label}.abc>"
        ));
        syntax_err(&format!("MAIL FROM:<u@{}.com>", "a".repeat(64)));
    }

    #[test]
    fn mail_params_all() {
        let (_, p) = mail(
            "MAIL FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B+3Dx AUTH=u+2Bx@example",
        );
        assert_eq!(
            p,
            MailParams {
                size: Some(12345),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("QQ+=x".into()),
                auth: Some("u+x@example".into()),
            }
        );
        let (_, p) = mail("MAIL FROM:<a@b> size=0 body=7bit ret=full smtputf8 auth=<>");
        assert_eq!(p.size, Some(0));
        assert_eq!(p.body, Some(Body::SevenBit));
        assert_eq!(p.ret, Some(Ret::Full));
        assert!(p.smtputf8);
        assert_eq!(p.auth.as_deref(), Some("<>"));
        assert_eq!(
            mail("MAIL FROM:<a@b> BODY=BINARYMIME").1.body,
            Some(Body::BinaryMime)
        );
        assert_eq!(mail("MAIL FROM:<a@b>   SIZE=1   RET=FULL").1.size, Some(1));
        assert_eq!(
            mail("MAIL FROM:<a@b> SIZE=18446744073709551615").1.size,
            Some(u64::MAX)
        );
        assert_eq!(
            mail("MAIL FROM:<a@b> ENVID=+c3+A9").1.envid.as_deref(),
            Some("é")
        );
        assert_eq!(
            mail(&format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(100)))
                .1
                .envid
                .map(|e| e.len()),
            Some(100)
        );
    }

    #[test]
    fn mail_param_errors() {
        for s in [
            "MAIL FROM:<a@b> SIZE",
            "MAIL FROM:<a@b> SIZE=",
            "MAIL FROM:<a@b> SIZE=-1",
            "MAIL FROM:<a@b> SIZE=1k",
            "MAIL FROM:<a@b> SIZE=+1",
            "MAIL FROM:<a@b> SIZE=18446744073709551616",
            "MAIL FROM:<a@b> SIZE=1 SIZE=2",
            "MAIL FROM:<a@b> SIZE=1 size=1",
            "MAIL FROM:<a@b> BODY=8BIT",
            "MAIL FROM:<a@b> BODY",
            "MAIL FROM:<a@b> BODY=7BIT BODY=7BIT",
            "MAIL FROM:<a@b> SMTPUTF8=yes",
            "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8",
            "MAIL FROM:<a@b> RET=ALL",
            "MAIL FROM:<a@b> RET",
            "MAIL FROM:<a@b> ENVID",
            "MAIL FROM:<a@b> ENVID=a+2",
            "MAIL FROM:<a@b> ENVID=a+zz",
            "MAIL FROM:<a@b> ENVID=a+0D+0Ab",
            "MAIL FROM:<a@b> ENVID=a+00",
            "MAIL FROM:<a@b> ENVID=a+FF",
            "MAIL FROM:<a@b> ENVID=a=b",
            "MAIL FROM:<a@b> ENVID=é",
            "MAIL FROM:<a@b> AUTH",
            "MAIL FROM:<a@b> AUTH=a+0A",
            "MAIL FROM:<a@b> NOTIFY=NEVER",
            "MAIL FROM:<a@b> ORCPT=rfc822;a@b",
            "MAIL FROM:<a@b> FOO",
            "MAIL FROM:<a@b> FOO=BAR",
            "MAIL FROM:<a@b> =x",
            "MAIL FROM:<a@b> -X=1",
            "MAIL FROM:<a@b> X_Y=1",
            "MAIL FROM:<a@b> Ü=1",
            "MAIL FROM:<a@b> SIZE==1",
        ] {
            param_err(s);
        }
        param_err(&format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(101)));
        assert_eq!(
            err("MAIL FROM:<a@b> XFOO=1").reply().to_bytes(),
            b"555 5.5.4 Unsupported option: XFOO\r\n"
        );
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(rcpt("RCPT TO:<Postmaster>").0, mb("Postmaster", ""));
        assert_eq!(rcpt("RCPT TO:<postmaster>").0, mb("Postmaster", ""));
        assert_eq!(rcpt("RCPT TO: <POSTMASTER>").0, mb("Postmaster", ""));
        assert_eq!(
            rcpt("RCPT TO:<postmaster@example.com>").0,
            mb("postmaster", "example.com")
        );
        assert_eq!(rcpt("RCPT TO:<u@x>").0, mb("u", "x"));
        assert_eq!(rcpt("rcpt to:<u@x>").0, mb("u", "x"));
        assert_eq!(
            rcpt("RCPT TO:<@a.example,@b.example:user@c.example>").0,
            mb("user", "c.example")
        );
        // UTF-8 recipients parse; the server checks them against the transaction.
        let (to, _) = rcpt("RCPT TO:<jösé@exämple.com>");
        assert!(to.is_utf8());
        let (to, _) = rcpt("RCPT TO:<user@example.com>");
        assert!(!to.is_utf8());
    }

    #[test]
    fn rcpt_params_all() {
        let (_, p) = rcpt("RCPT TO:<u@x> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;u+2Bx@x");
        let n = p.notify.expect("notify");
        assert!(n.success && n.failure && n.delay && !n.never);
        assert_eq!(n.to_list(), "SUCCESS,FAILURE,DELAY");
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;u+x@x"));
        let (_, p) = rcpt("RCPT TO:<u@x> notify=never");
        assert_eq!(p.notify.map(|n| n.to_list()).as_deref(), Some("NEVER"));
        let (_, p) = rcpt("RCPT TO:<u@x> NOTIFY=delay,success");
        assert_eq!(
            p.notify.map(|n| n.to_list()).as_deref(),
            Some("SUCCESS,DELAY")
        );
        let (_, p) = rcpt("RCPT TO:<u@x> NOTIFY=FAILURE");
        assert_eq!(p.notify.map(|n| n.to_list()).as_deref(), Some("FAILURE"));
        assert_eq!(Notify::default().to_list(), "");
        let (_, p) = rcpt("RCPT TO:<u@x> ORCPT=RFC822;+22john+20doe+22@x");
        assert_eq!(p.orcpt.as_deref(), Some("RFC822;\"john doe\"@x"));
        for s in [
            "RCPT TO:<u@x> NOTIFY",
            "RCPT TO:<u@x> NOTIFY=",
            "RCPT TO:<u@x> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<u@x> NOTIFY=DELAY,NEVER",
            "RCPT TO:<u@x> NOTIFY=SOMETIMES",
            "RCPT TO:<u@x> NOTIFY=SUCCESS,",
            "RCPT TO:<u@x> NOTIFY=,SUCCESS",
            "RCPT TO:<u@x> NOTIFY=NEVER NOTIFY=NEVER",
            "RCPT TO:<u@x> ORCPT",
            "RCPT TO:<u@x> ORCPT=u@x",
            "RCPT TO:<u@x> ORCPT=;u@x",
            "RCPT TO:<u@x> ORCPT=rfc822;",
            "RCPT TO:<u@x> ORCPT=rfc 822;u@x",
            "RCPT TO:<u@x> ORCPT=rfc(822;u@x",
            "RCPT TO:<u@x> ORCPT=rfc822;u+0D+0A@x",
            "RCPT TO:<u@x> ORCPT=rfc822;u+4",
            "RCPT TO:<u@x> ORCPT=a;b ORCPT=a;b",
            "RCPT TO:<u@x> SIZE=1",
            "RCPT TO:<u@x> SMTPUTF8",
            "RCPT TO:<u@x> BODY=8BITMIME",
            "RCPT TO:<u@x> XFOO",
            "RCPT TO:<u@x> junk=",
        ] {
            param_err(s);
        }
        param_err(&format!("RCPT TO:<u@x> ORCPT=rfc822;{}", "x".repeat(494)));
        rcpt(&format!("RCPT TO:<u@x> ORCPT=rfc822;{}", "x".repeat(493)));
    }

    #[test]
    fn smtputf8() {
        for s in [
            "MAIL FROM:<jösé@example.com>",
            "MAIL FROM:<user@exämple.com>",
            "MAIL FROM:<\"jö sé\"@x>",
        ] {
            assert_eq!(code(s), (553, "5.6.7".into()), "{s:?}");
            let (from, p) = mail(&format!("{s} SMTPUTF8"));
            assert!(p.smtputf8);
            assert!(matches!(from, ReversePath::Mailbox(m) if m.is_utf8()));
        }
        let r = err("MAIL FROM:<jösé@example.com>").reply();
        assert!(r.to_bytes().starts_with(b"553 5.6.7 "));
        // A source route through a U-label with an ASCII mailbox needs nothing.
        assert!(matches!(
            mail("MAIL FROM:<@exämple.com:u@x>").0,
            ReversePath::Mailbox(m) if !m.is_utf8()
        ));
        // Bad syntax wins over a missing SMTPUTF8.
        syntax_err("MAIL FROM:<jö..sé@example.com>");
        // UTF-8 in a quoted pair or a control character is never accepted.
        syntax_err("MAIL FROM:<\"\\é\"@x> SMTPUTF8");
        syntax_err("MAIL FROM:<a\u{85}@x> SMTPUTF8");
    }

    #[test]
    fn error_replies() {
        assert_eq!(syntax("x").reply().code, 501);
        assert_eq!(syntax("x").reply().to_bytes(), b"501 5.5.4 Syntax: x\r\n");
        assert_eq!(param("Bad x").reply().to_bytes(), b"555 5.5.4 Bad x\r\n");
        assert_eq!(
            CommandError::NeedsUtf8("need it".into()).reply().to_bytes(),
            b"553 5.6.7 need it\r\n"
        );
        for e in [
            CommandError::Unrecognized,
            syntax("x"),
            param("x"),
            CommandError::NeedsUtf8("x".into()),
        ] {
            assert!(!e.reply().is_positive());
        }
    }

    #[test]
    fn hostile_lines_never_panic() {
        let pieces: [&[u8]; 12] = [
            b"MAIL FROM:<",
            b">",
            b"\"",
            b"\\",
            b"@",
            b"[",
            b"]",
            b"IPv6:",
            b" SIZE=",
            b"\xc3",
            b"\xa9",
            b"+",
        ];
        // Every pair and triple of pieces, after each verb.
        for verb in [
            &b"MAIL FROM:"[..],
            b"RCPT TO:",
            b"BDAT ",
            b"AUTH ",
            b"EHLO ",
        ] {
            for a in pieces {
                for b in pieces {
                    for c in pieces {
                        let line = [verb, a, b, c].concat();
                        let _ = parse_command(&line);
                    }
                }
            }
        }
    }
}
