//! Postfix-style lookup tables, as `transport_maps` and `smtp_sasl_password_maps` name them
//! (`hash:/etc/petrel/transport, texthash:/etc/petrel/more`).
//!
//! Petrel has no Berkeley DB (or LMDB, or CDB): whatever the map type says, the text source
//! file itself is read, the way Postfix's `texthash:` reads it, so there is no `postmap`
//! step and no `.db` file; the file is read again when the tables are opened again (on
//! `petrel reload`).
//!
//! ```text
//! # transport(5)
//! example.com        smtp:[10.0.0.5]:25
//! example.org        lmtp:unix:/run/dovecot/lmtp
//! .example.org       smtp:
//!     [relay.example.org]
//! ```
//!
//! - Each entry is `key` white space `value`; the value is the rest of the line, trimmed.
//! - Empty lines and lines whose first non-blank character is `#` are ignored (they do not
//!   end an entry). A `#` elsewhere is not a comment.
//! - A line that starts with white space continues the entry above it: its text is joined to
//!   the entry with one space (so the value may even start on the next line).
//! - Keys are case-insensitive (stored in lower case). A key defined twice keeps its first
//!   value; the later one draws a warning ([`Table::warnings`]).
//! - A key without a value, or a continuation line with no entry above it, is an error:
//!   `FILE, line N: reason`, every such error of the file reported at once.
//!
//! [`transport_lookup`] searches tables in transport(5) order, and [`split_transport`]
//! splits its result into transport and next hop.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// The map types accepted in `TYPE:/path`: all of them read the text file `/path`.
pub const MAP_TYPES: &[&str] = &["hash", "btree", "texthash", "lmdb", "cdb"];

/// At most this many errors of one file are listed; the rest are counted.
const MAX_ERRORS: usize = 10;

/// One lookup table from a text file: `key whitespace value` per line; `#` comment lines
/// and blank lines ignored; a line starting with whitespace continues the previous entry's
/// value (joined with one space); keys are case-insensitive (stored lower-cased); of a
/// duplicate key the first one wins and a warning is recorded. A line with a key but no
/// value is an error.
#[derive(Debug, Clone, Default)]
pub struct Table {
    name: String,
    /// Lower-cased key → (value, line number).
    entries: HashMap<String, (String, usize)>,
    warnings: Vec<String>,
}

impl Table {
    /// Reads the table `spec` names: `TYPE:/path` with TYPE in hash, btree, texthash, lmdb,
    /// cdb (all read the text file `/path` itself, not `/path.db`), or a bare absolute path.
    ///
    /// Errors: `unsupported map type 'ldap'` (the caller adds which parameter it was in), a
    /// file that cannot be read (`/etc/petrel/transport: No such file or directory`), and
    /// the syntax errors of [`Table::parse`].
    pub fn open(spec: &str) -> Result<Table, String> {
        let path = map_path(spec.trim())?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {}", io_reason(&e)))?;
        Table::parse(&String::from_utf8_lossy(&bytes), path)
    }

    /// Parses the text of a table; `name` (the file) is used in errors and warnings.
    /// Errors are `NAME, line N: reason`, all those of the text joined by `; ` (the first
    /// ten, then how many more).
    pub fn parse(text: &str, name: &str) -> Result<Table, String> {
        let mut errors = Vec::new();
        // Logical lines: (number of the first line, text with continuations joined).
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let content = line.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                match logical.last_mut() {
                    Some((_, entry)) => {
                        entry.push(' ');
                        entry.push_str(content);
                    }
                    None => errors.push(format!(
                        "{name}, line {n}: continuation line (starting with white space) \
                         with no entry before it"
                    )),
                }
                continue;
            }
            logical.push((n, content.to_string()));
        }

        let mut table = Table {
            name: name.to_string(),
            ..Table::default()
        };
        for (n, entry) in logical {
            let (key, value) = entry
                .split_once(char::is_whitespace)
                .map_or((entry.as_str(), ""), |(k, v)| (k, v.trim()));
            if value.is_empty() {
                errors.push(format!(
                    "{name}, line {n}: key '{key}' has no value (expected 'key value')"
                ));
                continue;
            }
            match table.entries.entry(lower(key).into_owned()) {
                Entry::Occupied(first) => table.warnings.push(format!(
                    "{name}, line {n}: duplicate entry for '{}' (first at line {}): ignored",
                    first.key(),
                    first.get().1
                )),
                Entry::Vacant(slot) => {
                    slot.insert((value.to_string(), n));
                }
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(join_errors(errors))
        }
    }

    /// The value of `key` (exact match, case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(&*lower(key)).map(|(v, _)| v.as_str())
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file name (the `name` given to [`Table::parse`], the path for [`Table::open`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Warnings about the file (duplicate keys), `NAME, line N: ...`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `key` in lower case (borrowed when it already is).
fn lower(key: &str) -> Cow<'_, str> {
    if key.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(key.to_lowercase())
    } else {
        Cow::Borrowed(key)
    }
}

/// The file a table spec names.
fn map_path(spec: &str) -> Result<&str, String> {
    if spec.starts_with('/') {
        return Ok(spec);
    }
    let Some((kind, path)) = spec.split_once(':') else {
        return Err(format!(
            "'{spec}' is neither TYPE:/path nor an absolute path"
        ));
    };
    if !MAP_TYPES.contains(&kind) {
        return Err(format!("unsupported map type '{kind}'"));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "'{spec}': the file name after '{kind}:' must be an absolute path"
        ));
    }
    Ok(path)
}

/// An I/O error as the system says it, without Rust's "(os error N)".
fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

fn join_errors(mut errors: Vec<String>) -> String {
    let more = errors.len().saturating_sub(MAX_ERRORS);
    errors.truncate(MAX_ERRORS);
    let mut s = errors.join("; ");
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Several tables searched in order (a parameter value like `hash:/a, texthash:/b`).
#[derive(Debug, Clone, Default)]
pub struct Tables {
    tables: Vec<Table>,
}

impl Tables {
    /// Opens each table of `specs` in order ([`Table::open`]). An item may itself hold
    /// several specs separated by commas or white space. An empty list gives an empty
    /// `Tables` (every lookup misses). Errors of all tables are joined by `; `.
    pub fn open(specs: &[String]) -> Result<Tables, String> {
        let mut tables = Vec::new();
        let mut errors = Vec::new();
        let items = specs
            .iter()
            .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|s| !s.is_empty());
        for spec in items {
            match Table::open(spec) {
                Ok(t) => tables.push(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Tables { tables })
        } else {
            Err(errors.join("; "))
        }
    }

    /// Tables already read, searched in the order given.
    pub fn from_tables(t: Vec<Table>) -> Tables {
        Tables { tables: t }
    }

    /// The value of `key` in the first table that has it (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = lower(key);
        self.tables.iter().find_map(|t| t.get(&key))
    }

    /// True when no table has an entry (every lookup misses), as with no tables at all.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(Table::is_empty)
    }

    /// The tables, in search order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The warnings of every table.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.tables
            .iter()
            .flat_map(|t| t.warnings.iter().map(String::as_str))
    }
}

/// transport(5) lookup for a recipient address. Tries, in order: the full address
/// `user+ext@domain`; without its extension, `user@domain` (when `delimiter`, the
/// `recipient_delimiter` characters, is not empty and the local part has one after its first
/// character); `domain`; each parent `.parent.domain` ... `.tld` (not for a domain literal
/// `[...]`); then `*`. A plain `domain` key does not match subdomains (Postfix's default,
/// where `parent_domain_matches_transport_maps` does not list transport_maps). An address
/// without `@` looks up only itself, then `*`. A trailing dot of the domain is ignored.
/// Returns the value found.
pub fn transport_lookup<'a>(tables: &'a Tables, address: &str, delimiter: &str) -> Option<&'a str> {
    let address = address.trim();
    let Some(at) = address.rfind('@') else {
        return tables.get(address).or_else(|| tables.get("*"));
    };
    let local = &address[..at];
    let domain = &address[at + 1..];
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if let Some(v) = tables.get(&format!("{local}@{domain}")) {
        return Some(v);
    }
    if !delimiter.is_empty() {
        if let Some(i) = local.find(|c| delimiter.contains(c)).filter(|&i| i > 0) {
            if let Some(v) = tables.get(&format!("{}@{domain}", &local[..i])) {
                return Some(v);
            }
        }
    }
    if !domain.is_empty() {
        if let Some(v) = tables.get(domain) {
            return Some(v);
        }
        if !domain.starts_with('[') {
            let mut rest = domain;
            while let Some(dot) = rest.find('.') {
                let parent = &rest[dot..];
                if parent.len() > 1 {
                    if let Some(v) = tables.get(parent) {
                        return Some(v);
                    }
                }
                rest = &parent[1..];
            }
        }
    }
    tables.get("*")
}

/// A transport(5) value `transport:nexthop` split at the first `:`, both halves trimmed:
/// `smtp:[10.0.0.5]:25` → (`smtp`, `[10.0.0.5]:25`), `lmtp:unix:/run/dovecot/lmtp` →
/// (`lmtp`, `unix:/run/dovecot/lmtp`), `:[relay]` → (``, `[relay]`), `smtp:` and `smtp` →
/// (`smtp`, ``), `error:5.1.1 gone` → (`error`, `5.1.1 gone`).
pub fn split_transport(value: &str) -> (&str, &str) {
    let value = value.trim();
    match value.split_once(':') {
        Some((transport, nexthop)) => (transport.trim(), nexthop.trim()),
        None => (value, ""),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn table(text: &str) -> Table {
        Table::parse(text, "/etc/petrel/transport").unwrap()
    }

    fn tables(text: &str) -> Tables {
        Tables::from_tables(vec![table(text)])
    }

    #[test]
    fn entries_comments_blank_lines_and_case() {
        let t = table(
            "# transport table\n\
             \n\
             Example.COM   smtp:[10.0.0.5]:25\n\
             \t# indented comment\n\
             example.org\tlmtp:unix:/run/dovecot/lmtp  \n\
             bounce.example   error:5.1.1 mailbox   unavailable\n\
             * smtp:[relay.example]\r\n",
        );
        assert_eq!(t.len(), 4);
        assert!(!t.is_empty());
        assert_eq!(t.get("example.com"), Some("smtp:[10.0.0.5]:25"));
        assert_eq!(t.get("EXAMPLE.com"), Some("smtp:[10.0.0.5]:25"));
        assert_eq!(t.get("example.org"), Some("lmtp:unix:/run/dovecot/lmtp"));
        // Inner white space of a value is kept; a '#' inside a value is not a comment.
        assert_eq!(
            t.get("bounce.example"),
            Some("error:5.1.1 mailbox   unavailable")
        );
        assert_eq!(t.get("*"), Some("smtp:[relay.example]"));
        assert_eq!(t.get("sub.example.com"), None);
        assert!(t.warnings().is_empty());
        assert_eq!(t.name(), "/etc/petrel/transport");
        let t = table("a b # not a comment\n");
        assert_eq!(t.get("a"), Some("b # not a comment"));
        assert!(table("").is_empty());
    }

    #[test]
    fn continuation_lines_join_with_one_space() {
        let t = table(
            "bounce.example error:5.1.1\n   mailbox\n# comment between\n\n\t unavailable\n\
             next.example\n    smtp:[relay]\n",
        );
        assert_eq!(
            t.get("bounce.example"),
            Some("error:5.1.1 mailbox unavailable")
        );
        // The value may start on the continuation line.
        assert_eq!(t.get("next.example"), Some("smtp:[relay]"));
    }

    #[test]
    fn duplicates_first_wins_with_a_warning() {
        let t = table("a.example smtp:first\nA.EXAMPLE smtp:second\n");
        assert_eq!(t.get("a.example"), Some("smtp:first"));
        assert_eq!(
            t.warnings(),
            ["/etc/petrel/transport, line 2: duplicate entry for 'a.example' (first at line 1): \
              ignored"]
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line_all_of_them() {
        let e =
            Table::parse("  leading continuation\nok.example smtp:\nlonely\n", "/x").unwrap_err();
        assert_eq!(
            e,
            "/x, line 1: continuation line (starting with white space) with no entry before \
             it; /x, line 3: key 'lonely' has no value (expected 'key value')"
        );
        // A continuation of a key without value still counts from the entry's first line.
        let e = Table::parse("a.example\n\nb.example\n   \n", "/x").unwrap_err();
        assert_eq!(
            e,
            "/x, line 1: key 'a.example' has no value (expected 'key value'); \
             /x, line 3: key 'b.example' has no value (expected 'key value')"
        );
        // Many errors: the first ten, then a count.
        let text = "k\n".repeat(15);
        let e = Table::parse(&text, "/x").unwrap_err();
        assert_eq!(e.matches("has no value").count(), 10, "{e}");
        assert!(e.ends_with("; and 5 more"), "{e}");
    }

    #[test]
    fn open_reads_the_text_file_for_every_type() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("transport");
        std::fs::write(&path, "example.com smtp:[10.0.0.5]:25\n").unwrap();
        // A stale .db file is never read.
        std::fs::write(d.path().join("transport.db"), b"\x00\x06\x15\x61garbage").unwrap();
        let p = path.to_str().unwrap();
        for spec in [
            format!("hash:{p}"),
            format!("btree:{p}"),
            format!("texthash:{p}"),
            format!("lmdb:{p}"),
            format!("cdb:{p}"),
            p.to_string(),
            format!("  hash:{p} "),
        ] {
            let t = Table::open(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(t.get("example.com"), Some("smtp:[10.0.0.5]:25"), "{spec}");
            assert_eq!(t.name(), p);
        }
    }

    #[test]
    fn open_errors() {
        assert_eq!(
            Table::open("ldap:/x").unwrap_err(),
            "unsupported map type 'ldap'"
        );
        assert_eq!(
            Table::open("proxy:hash:/x").unwrap_err(),
            "unsupported map type 'proxy'"
        );
        assert_eq!(
            Table::open("hash:/nonexistent/petrel/transport").unwrap_err(),
            "/nonexistent/petrel/transport: No such file or directory"
        );
        assert!(Table::open("transport")
            .unwrap_err()
            .contains("absolute path"));
        assert!(Table::open("hash:transport")
            .unwrap_err()
            .contains("absolute path"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_str().unwrap();
        assert_eq!(
            Table::open(&format!("texthash:{p}")).unwrap_err(),
            format!("{p}: Is a directory")
        );
        let f = d.path().join("bad");
        std::fs::write(&f, "ok.example smtp:\nbroken\n").unwrap();
        let f = f.to_str().unwrap();
        assert_eq!(
            Table::open(&format!("hash:{f}")).unwrap_err(),
            format!("{f}, line 2: key 'broken' has no value (expected 'key value')")
        );
    }

    #[test]
    fn tables_search_in_order() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, "one.example smtp:a\n").unwrap();
        std::fs::write(&b, "one.example smtp:b\ntwo.example smtp:b\n").unwrap();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let t = Tables::open(&[format!("hash:{a}"), format!("texthash:{b}")]).unwrap();
        assert_eq!(t.get("one.example"), Some("smtp:a"));
        assert_eq!(t.get("TWO.example"), Some("smtp:b"));
        assert_eq!(t.get("three.example"), None);
        assert!(!t.is_empty());
        assert_eq!(t.tables().len(), 2);
        // One item holding a list, as the parameter's text.
        let t = Tables::open(&[format!("texthash:{b}, hash:{a}")]).unwrap();
        assert_eq!(t.get("one.example"), Some("smtp:b"));
        // Empty list: an empty Tables.
        let t = Tables::open(&[]).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.get("one.example"), None);
        assert!(Tables::from_tables(vec![table("")]).is_empty());
        // Errors of every table.
        let e =
            Tables::open(&["ldap:/x".to_string(), "hash:/nonexistent/y".to_string()]).unwrap_err();
        assert_eq!(
            e,
            "unsupported map type 'ldap'; /nonexistent/y: No such file or directory"
        );
        // Warnings of every table.
        let t = Tables::from_tables(vec![table("a x\na y\n"), table("b x\n")]);
        assert_eq!(t.warnings().count(), 1);
    }

    #[test]
    fn transport_lookup_order() {
        let all = "user+ext@sub.example.com  t:ext\n\
                   user@sub.example.com      t:user\n\
                   sub.example.com           t:domain\n\
                   .example.com              t:dot-parent\n\
                   .com                      t:tld\n\
                   *                         t:star\n";
        let lookup = |text: &str, addr: &str| {
            let t = tables(text);
            transport_lookup(&t, addr, "+").map(str::to_string)
        };
        let addr = "User+Ext@Sub.Example.COM";
        assert_eq!(lookup(all, addr).as_deref(), Some("t:ext"));
        // Remove the most specific key each time.
        let lines: Vec<&str> = all.lines().collect();
        let want = ["t:user", "t:domain", "t:dot-parent", "t:tld", "t:star"];
        for (i, w) in want.iter().enumerate() {
            let text = lines[i + 1..].join("\n");
            assert_eq!(
                lookup(&text, addr).as_deref(),
                Some(*w),
                "without {:?}",
                &lines[..=i]
            );
        }
        assert_eq!(lookup("", addr), None);
        // Another extension falls back to the user without it.
        assert_eq!(
            lookup(all, "user+other@sub.example.com").as_deref(),
            Some("t:user")
        );
    }

    #[test]
    fn plain_domain_does_not_match_subdomains() {
        let t = tables("example.com t:exact\n");
        assert_eq!(transport_lookup(&t, "a@example.com", ""), Some("t:exact"));
        assert_eq!(transport_lookup(&t, "a@sub.example.com", ""), None);
        let t = tables("example.com t:exact\n.example.com t:subs\n");
        assert_eq!(transport_lookup(&t, "a@example.com", ""), Some("t:exact"));
        assert_eq!(
            transport_lookup(&t, "a@x.y.example.com", ""),
            Some("t:subs")
        );
        // ".example.com" does not match example.com itself.
        let t = tables(".example.com t:subs\n");
        assert_eq!(transport_lookup(&t, "a@example.com", ""), None);
        // A trailing dot is ignored.
        let t = tables("example.com t:exact\n");
        assert_eq!(transport_lookup(&t, "a@example.com.", ""), Some("t:exact"));
    }

    #[test]
    fn delimiter_handling() {
        let t = tables("user@example.com t:user\n");
        assert_eq!(
            transport_lookup(&t, "user+x@example.com", "+"),
            Some("t:user")
        );
        assert_eq!(
            transport_lookup(&t, "user-x@example.com", "+-"),
            Some("t:user")
        );
        // No delimiter configured: no stripping.
        assert_eq!(transport_lookup(&t, "user+x@example.com", ""), None);
        // A delimiter as the first character is not an extension.
        let t = tables("@example.com t:odd\n+user@example.com t:plus\n");
        assert_eq!(
            transport_lookup(&t, "+user@example.com", "+"),
            Some("t:plus")
        );
    }

    #[test]
    fn addresses_without_at_and_domain_literals() {
        let t = tables("postmaster t:local\n* t:star\nexample.com t:domain\n");
        assert_eq!(transport_lookup(&t, "postmaster", "+"), Some("t:local"));
        assert_eq!(transport_lookup(&t, "example.com", "+"), Some("t:domain"));
        assert_eq!(transport_lookup(&t, "someone", "+"), Some("t:star"));
        let t = tables("[10.0.0.1] t:literal\n.1 t:wrong\n");
        assert_eq!(transport_lookup(&t, "a@[10.0.0.1]", ""), Some("t:literal"));
        assert_eq!(transport_lookup(&t, "a@[10.0.0.2]", ""), None);
        // Empty domain: only the full address and '*'.
        let t = tables("* t:star\n");
        assert_eq!(transport_lookup(&t, "user@", ""), Some("t:star"));
        // The last '@' separates the domain.
        let t = tables("example.com t:domain\n");
        assert_eq!(
            transport_lookup(&t, "\"a@b\"@example.com", ""),
            Some("t:domain")
        );
    }

    #[test]
    fn split_transport_values() {
        assert_eq!(
            split_transport("smtp:[10.0.0.5]:25"),
            ("smtp", "[10.0.0.5]:25")
        );
        assert_eq!(
            split_transport("lmtp:unix:/run/dovecot/lmtp"),
            ("lmtp", "unix:/run/dovecot/lmtp")
        );
        assert_eq!(split_transport(":[relay]"), ("", "[relay]"));
        assert_eq!(split_transport("smtp:"), ("smtp", ""));
        assert_eq!(split_transport("smtp"), ("smtp", ""));
        assert_eq!(split_transport("error:5.1.1 gone"), ("error", "5.1.1 gone"));
        assert_eq!(
            split_transport("  smtp : example.com  "),
            ("smtp", "example.com")
        );
        assert_eq!(
            split_transport("smtp:[ipv6:2001:db8::1]:25"),
            ("smtp", "[ipv6:2001:db8::1]:25")
        );
        assert_eq!(split_transport(""), ("", ""));
    }
}
