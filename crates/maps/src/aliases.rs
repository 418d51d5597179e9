//! The aliases file (`/etc/aliases`, as Postfix and sendmail read it) and the destination
//! lists of `.forward` and `:include:` files.
//!
//! ```text
//! # comment lines start with '#'; "root" on its own right-hand side means root's mailbox
//! postmaster: root
//! root:       root, admin@example.org
//! "sales team": alice,
//!     bob, "|/usr/bin/ticket --queue sales, urgent"
//! archive:    /var/mail-archive/all, :include:/etc/petrel/archive.list
//! ```
//!
//! - An entry is `name: destination, destination, ...`.
//! - A line that starts with white space continues the entry above it. Blank lines and lines
//!   whose first non-blank character is `#` are skipped (they do not end an entry).
//! - The name is everything before the first `:`; a name with white space in it must be
//!   quoted (`"a b":`, with `\"` and `\\` escapes). Names are case-insensitive and stored in
//!   lower case.
//! - Destinations are separated by commas; a comma inside double quotes does not split, and
//!   empty items (`a,,b`, a trailing comma) are ignored. A destination that is entirely in
//!   double quotes is unquoted before it is classified. Each one is:
//!   - `|command args`: a command, run through the shell ([`Dest::Command`]);
//!   - `:include:/path` (the keyword in any case): a file of more destinations
//!     ([`Dest::Include`]); the path must be absolute;
//!   - `/path`: a file to append to ([`Dest::File`]); a trailing `/` means a Maildir
//!     (Postfix's rule) and is kept in the path;
//!   - anything else: an address, `user` or `user@domain`, optionally in angle brackets
//!     ([`Dest::Address`]); a leading `\` (`\user`) means "this user's own mailbox, no
//!     further alias or `.forward` expansion" (see [`crate::expand()`]).
//!
//! Errors are collected, not stopped at: a missing `:`, an empty name, an entry without
//! destinations, a bad destination, an unbalanced quote. A name defined twice is only a
//! warning: the first definition is kept ([`Aliases::warnings`]).
//!
//! `.forward` and `:include:` files ([`parse_destinations`]) hold destinations only,
//! separated by commas or newlines, with `#` comment lines and no continuation lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::LineError;

/// An error in an aliases file (the crate's [`LineError`]); displays as `FILE, line N: reason`.
pub type AliasError = LineError;

/// One destination of an alias, a `.forward` or an `:include:` file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// An address: `user`, `user@domain`, or `\user`.
    Address(String),
    /// `:include:/path`: more destinations, read from that file.
    Include(PathBuf),
    /// `/path`: append to this file (a Maildir when the path ends with `/`).
    File(PathBuf),
    /// `|command`: pipe the message to this shell command (without the `|`).
    Command(String),
}

/// A parsed aliases file.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    map: HashMap<String, Entry>,
    warnings: Vec<AliasError>,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    dests: Vec<Dest>,
}

impl Aliases {
    /// Reads and parses an aliases file ([`parse`]). A file that cannot be read is one error
    /// with line 0.
    pub fn load(path: &Path) -> Result<Aliases, Vec<AliasError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![AliasError {
                file: path.to_path_buf(),
                line: 0,
                reason: format!("cannot read: {e}"),
            }]
        })?;
        parse(&text, path)
    }

    /// The destinations of alias `name` (looked up case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[Dest]> {
        self.map
            .get(&name.to_lowercase())
            .map(|e| e.dests.as_slice())
    }

    /// The line alias `name` is defined on.
    pub fn line_of(&self, name: &str) -> Option<usize> {
        self.map.get(&name.to_lowercase()).map(|e| e.line)
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Alias names (lower case), in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Problems that did not stop the parse: names defined more than once.
    pub fn warnings(&self) -> &[AliasError] {
        &self.warnings
    }
}

/// Parses the text of an aliases file; `file` is only used in messages. Returns every error
/// found (see the module docs); duplicate names are warnings, kept in
/// [`Aliases::warnings`].
pub fn parse(text: &str, file: &Path) -> Result<Aliases, Vec<AliasError>> {
    let (aliases, errors) = parse_lenient(text, file);
    if errors.is_empty() {
        Ok(aliases)
    } else {
        Err(errors)
    }
}

/// Like [`parse`], but keeps the entries that are correct and skips the others (a skipped
/// entry is not half-kept: one bad destination drops the whole entry), as `newaliases`
/// does. Returns the aliases and the errors.
pub fn parse_lenient(text: &str, file: &Path) -> (Aliases, Vec<AliasError>) {
    let mut aliases = Aliases::default();
    let mut errors = Vec::new();
    let err = |line: usize, reason: String| AliasError {
        file: file.to_path_buf(),
        line,
        reason,
    };
    for logical in logical_lines(text) {
        let (line, text) = match logical {
            Ok(l) => l,
            Err(line) => {
                errors.push(err(
                    line,
                    "continuation line without an entry above it".into(),
                ));
                continue;
            }
        };
        let (name, rest) = match split_name(&text) {
            Ok(v) => v,
            Err(reason) => {
                errors.push(err(line, reason));
                continue;
            }
        };
        let items = match split_unquoted(rest) {
            Ok(items) => items,
            Err(reason) => {
                errors.push(err(line, format!("alias {name}: {reason}")));
                continue;
            }
        };
        let mut dests = Vec::new();
        let mut bad = false;
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            match classify(item) {
                Ok(d) => dests.push(d),
                Err(reason) => {
                    errors.push(err(line, format!("alias {name}: {reason}")));
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        if dests.is_empty() {
            errors.push(err(line, format!("alias {name} has no destinations")));
            continue;
        }
        if let Some(first) = aliases.map.get(&name) {
            let first = first.line;
            aliases.warnings.push(err(
                line,
                format!("alias {name} is already defined on line {first}; this entry is ignored"),
            ));
            continue;
        }
        aliases.map.insert(name, Entry { line, dests });
    }
    (aliases, errors)
}

/// Parses a `.forward` or `:include:` file: destinations separated by commas or newlines,
/// `#` comment lines, blank lines. `file` is only used in messages.
///
/// Unlike a list that just drops what it cannot read, this reports every bad destination,
/// so that local delivery can defer instead of silently losing a forwarding target.
pub fn parse_destinations(text: &str, file: &Path) -> Result<Vec<Dest>, Vec<LineError>> {
    let mut dests = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| LineError {
            file: file.to_path_buf(),
            line: i + 1,
            reason,
        };
        match split_unquoted(line) {
            Ok(items) => {
                for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
                    match classify(item) {
                        Ok(d) => dests.push(d),
                        Err(reason) => errors.push(err(reason)),
                    }
                }
            }
            Err(reason) => errors.push(err(reason)),
        }
    }
    if errors.is_empty() {
        Ok(dests)
    } else {
        Err(errors)
    }
}

/// Joins continuation lines. Yields `(first line number, text)`, or `Err(line)` for a
/// continuation line with nothing to continue.
fn logical_lines(text: &str) -> Vec<Result<(usize, String), usize>> {
    let mut out: Vec<Result<(usize, String), usize>> = Vec::new();
    let mut have_entry = false;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some(Ok((_, logical))) if have_entry => {
                    logical.push(' ');
                    logical.push_str(trimmed);
                }
                // More of an orphan continuation: already reported.
                Some(Err(_)) => {}
                _ => out.push(Err(i + 1)),
            }
            continue;
        }
        have_entry = true;
        out.push(Ok((i + 1, trimmed.to_string())));
    }
    out
}

/// Splits `name: rest`, returning the lower-cased name.
fn split_name(logical: &str) -> Result<(String, &str), String> {
    let (name, rest) = if logical.starts_with('"') {
        let Some((name, after)) = leading_quoted(logical) else {
            return Err("unbalanced '\"' in the alias name".into());
        };
        let Some(rest) = after.trim_start().strip_prefix(':') else {
            return Err(format!("missing ':' after the alias name \"{name}\""));
        };
        (name, rest)
    } else {
        let Some((name, rest)) = logical.split_once(':') else {
            return Err(format!(
                "missing ':' after the alias name (expected \"name: destination, ...\"): {logical:?}"
            ));
        };
        let name = name.trim();
        if name.contains(char::is_whitespace) {
            return Err(format!(
                "white space in the alias name {name:?}; quote the name or add the missing ':'"
            ));
        }
        (name.to_string(), rest)
    };
    if name.is_empty() {
        return Err("empty alias name".into());
    }
    Ok((name.to_lowercase(), rest))
}

/// If `s` starts with a double-quoted string, returns its unescaped content and what
/// follows the closing quote.
fn leading_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    if !matches!(chars.next(), Some((_, '"'))) {
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Splits at commas outside double quotes (a backslash inside quotes escapes the next
/// character).
fn split_unquoted(s: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == ',' && !in_quotes {
            items.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err(format!("unbalanced '\"' in {:?}", s.trim()));
    }
    items.push(&s[start..]);
    Ok(items)
}

/// Classifies one trimmed, non-empty destination.
fn classify(item: &str) -> Result<Dest, String> {
    let unquoted = match leading_quoted(item) {
        Some((inner, "")) => Some(inner),
        _ => None,
    };
    let text = unquoted.as_deref().unwrap_or(item);
    if let Some(cmd) = text.strip_prefix('|') {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            return Err(format!("empty command in {item:?}"));
        }
        return Ok(Dest::Command(cmd.to_string()));
    }
    if text
        .get(..9)
        .is_some_and(|head| head.eq_ignore_ascii_case(":include:"))
    {
        let path = text[9..].trim();
        if !path.starts_with('/') {
            return Err(format!("the path in {item:?} must be absolute"));
        }
        return Ok(Dest::Include(PathBuf::from(path)));
    }
    if text.starts_with('/') {
        return Ok(Dest::File(PathBuf::from(text)));
    }
    // An address. A fully quoted one is a quoted local part: "john doe" keeps its quotes,
    // while "john" needs none.
    let addr = match (
        &unquoted,
        item.strip_prefix('<').and_then(|a| a.strip_suffix('>')),
    ) {
        (Some(inner), _) if !inner.is_empty() && inner.chars().all(plain_address_char) => inner,
        (_, Some(inner)) => inner.trim(),
        _ => item,
    };
    if addr.is_empty() || addr == "\\" {
        return Err(format!("empty address in {item:?}"));
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for c in addr.chars() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && (c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "white space in the address {addr:?}; separate destinations with ','"
            ));
        } else if !in_quotes && matches!(c, '<' | '>' | ':' | ';') {
            return Err(format!("bad character {c:?} in the address {addr:?}"));
        }
    }
    Ok(Dest::Address(addr.to_string()))
}

/// Characters that need no quoting in an address (as far as this module cares).
fn plain_address_char(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '<' | '>' | ':' | ';' | ','))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Aliases {
        match parse(text, Path::new("/etc/aliases")) {
            Ok(a) => a,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn errs(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/aliases")) {
            Ok(a) => panic!("parsed: {a:?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn addr(s: &str) -> Dest {
        Dest::Address(s.into())
    }

    #[test]
    fn entries_continuations_and_comments() {
        let a = p("# header\n\
                   postmaster: root\n\
                   Root: root,\n\
                   \x20 admin@example.org\n\
                   # a comment inside an entry does not end it\n\
                   \t, other\n\
                   \n\
                   sales:alice,bob\r\n");
        assert_eq!(a.len(), 3);
        assert_eq!(a.get("postmaster"), Some(&[addr("root")][..]));
        assert_eq!(
            a.get("ROOT"),
            Some(&[addr("root"), addr("admin@example.org"), addr("other")][..])
        );
        assert_eq!(a.get("sales"), Some(&[addr("alice"), addr("bob")][..]));
        assert_eq!(a.line_of("root"), Some(3));
        assert!(a.get("nobody").is_none());
        assert!(a.warnings().is_empty());
    }

    #[test]
    fn every_kind_of_destination() {
        let a = p("x: user, user@example.org, <angle@example.org>, \\self, \"john doe\"@example.org, \"plain\",\n\
                   \x20 :include:/etc/list, :INCLUDE: /etc/list2, /var/log/mail.log, /home/x/Maildir/,\n\
                   \x20 |/usr/bin/prog -a, \"|/usr/bin/prog --queue sales, urgent\", \"/path with space\",\n\
                   \x20 \":include:/etc/with space\"\n");
        let want = vec![
            addr("user"),
            addr("user@example.org"),
            addr("angle@example.org"),
            addr("\\self"),
            addr("\"john doe\"@example.org"),
            addr("plain"),
            Dest::Include("/etc/list".into()),
            Dest::Include("/etc/list2".into()),
            Dest::File("/var/log/mail.log".into()),
            Dest::File("/home/x/Maildir/".into()),
            Dest::Command("/usr/bin/prog -a".into()),
            Dest::Command("/usr/bin/prog --queue sales, urgent".into()),
            Dest::File("/path with space".into()),
            Dest::Include("/etc/with space".into()),
        ];
        assert_eq!(a.get("x"), Some(want.as_slice()));
        if let Some([.., Dest::File(maildir), _, _, _, _]) = a.get("x") {
            assert!(maildir.as_os_str().to_string_lossy().ends_with('/'));
        } else {
            panic!("shape");
        }
    }

    #[test]
    fn quoted_names_and_escapes() {
        let a = p("\"Sales Team\": a\n\"we \\\"quote\\\"\" : b\n");
        assert_eq!(a.get("sales team"), Some(&[addr("a")][..]));
        assert_eq!(a.get("WE \"QUOTE\""), Some(&[addr("b")][..]));
    }

    #[test]
    fn all_errors_are_collected_with_file_and_line() {
        let e = errs(
            "good: a\n\
                      two words: x\n\
                      : nobody\n\
                      empty:\n\
                      bad: a b, c\n\
                      inc: :include:relative\n\
                      pipe: |\n\
                      q: \"unbalanced, x\n\
                      \"open: x\n",
        );
        assert_eq!(
            e,
            vec![
                "/etc/aliases, line 2: white space in the alias name \"two words\"; quote the name or add the missing ':'",
                "/etc/aliases, line 3: empty alias name",
                "/etc/aliases, line 4: alias empty has no destinations",
                "/etc/aliases, line 5: alias bad: white space in the address \"a b\"; separate destinations with ','",
                "/etc/aliases, line 6: alias inc: the path in \":include:relative\" must be absolute",
                "/etc/aliases, line 7: alias pipe: empty command in \"|\"",
                "/etc/aliases, line 8: alias q: unbalanced '\"' in \"\\\"unbalanced, x\"",
                "/etc/aliases, line 9: unbalanced '\"' in the alias name",
            ]
        );
        assert_eq!(errs("nocolon\n")[0], "/etc/aliases, line 1: missing ':' after the alias name (expected \"name: destination, ...\"): \"nocolon\"");
        assert_eq!(
            errs("  leading: x\na: b\n"),
            vec!["/etc/aliases, line 1: continuation line without an entry above it"]
        );
    }

    #[test]
    fn lenient_parse_keeps_the_good_entries() {
        let (a, e) = parse_lenient("a: x\nb: bad bad\nc: y\n", Path::new("f"));
        assert_eq!(e.len(), 1);
        assert_eq!(a.len(), 2);
        assert!(a.get("b").is_none());
    }

    #[test]
    fn duplicates_keep_the_first_and_warn() {
        let a = p("a: x\nA: y\n");
        assert_eq!(a.get("a"), Some(&[addr("x")][..]));
        assert_eq!(a.warnings().len(), 1);
        assert_eq!(
            a.warnings()[0].to_string(),
            "/etc/aliases, line 2: alias a is already defined on line 1; this entry is ignored"
        );
    }

    #[test]
    fn empty_items_are_ignored() {
        let a = p("a: x,, y,\n");
        assert_eq!(a.get("a"), Some(&[addr("x"), addr("y")][..]));
    }

    #[test]
    fn forward_files() {
        let d = parse_destinations(
            "# my forward\n\\me, me@elsewhere.example\n\"|/usr/bin/vacation me\"\n\n/home/me/archive\n:include:/etc/more\n",
            Path::new("/home/me/.forward"),
        )
        .expect("parse");
        assert_eq!(
            d,
            vec![
                addr("\\me"),
                addr("me@elsewhere.example"),
                Dest::Command("/usr/bin/vacation me".into()),
                Dest::File("/home/me/archive".into()),
                Dest::Include("/etc/more".into()),
            ]
        );
        let e =
            parse_destinations("ok\nnot ok\n", Path::new("/home/me/.forward")).expect_err("bad");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 2);
        assert!(parse_destinations("", Path::new("f"))
            .expect("empty")
            .is_empty());
    }

    #[test]
    fn load_reports_an_unreadable_file() {
        let e = Aliases::load(Path::new("/nonexistent/aliases")).expect_err("missing");
        assert_eq!(e[0].line, 0);
        assert!(e[0]
            .to_string()
            .starts_with("/nonexistent/aliases: cannot read"));
    }
}
