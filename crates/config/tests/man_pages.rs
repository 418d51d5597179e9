//! Keeps the documentation honest:
//!
//! 1. man/petrel.conf.5 documents exactly the parameters of `petrel_config::PARAMS`, in
//!    order, each with the table's default;
//! 2. the default configuration in etc/ loads, validates and has no unknown parameters;
//! 3. every program in bin/ has a man page;
//! 4. `mandoc -Tlint -Wwarning` is silent on every page (when mandoc is installed);
//! 5. the overview, petrel(8), names every page in man/ in its SEE ALSO;
//! 6. every cross-reference `name(N)` in a page is a page in man/ (or one of the names
//!    `make install` links to one), or one of a short list of the system's own pages;
//! 7. every parameter name the code reads (`cfg.get("name")`, `.get_list("name")`, ...)
//!    is one `petrel_config::PARAMS` knows, so each is documented in petrel.conf(5).

use petrel_config::{services, Config, PARAMS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The top of the workspace.
fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    r.canonicalize().unwrap_or(r)
}

fn man_dir() -> PathBuf {
    root().join("man")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The man pages: every file in man/ whose name ends in `.<digit>`.
fn man_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(man_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", man_dir().display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.len() == 1 && x.as_bytes()[0].is_ascii_digit())
        })
        .collect();
    pages.sort();
    pages
}

/// Undoes the roff escapes the parameter entries may use, and strips font changes.
fn unroff(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('e') | Some('\\') => out.push('\\'),
            Some('&') => {}
            Some('f') => {
                // \fB, \fI, \fR, \fP, \f(CW
                if chars.next() == Some('(') {
                    chars.next();
                    chars.next();
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A macro line's arguments, with double quotes removed.
fn macro_args(line: &str) -> String {
    unroff(line.split_once(' ').map_or("", |(_, a)| a).trim()).replace('"', "")
}

/// One documented parameter.
#[derive(Debug)]
struct Documented {
    name: String,
    default: Option<String>,
    line: usize,
    has_text: bool,
}

/// The parameters in the PARAMETERS section of petrel.conf.5: each `.TP` is followed by
/// `.B name`, then `(default: VALUE)` (`empty` for the empty string), then the text.
/// Returns the entries and the problems with the section's shape.
fn documented_params(text: &str) -> (Vec<Documented>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    let Some(start) = lines.iter().position(|l| l.trim() == ".SH PARAMETERS") else {
        return (Vec::new(), vec!["no `.SH PARAMETERS` section".to_string()]);
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with(".SH"))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out: Vec<Documented> = Vec::new();
    let mut i = start + 1;
    while i < end {
        if lines[i].trim() != ".TP" {
            if let Some(last) = out.last_mut() {
                if !lines[i].trim().is_empty() {
                    last.has_text = true;
                }
            }
            i += 1;
            continue;
        }
        let tag = lines.get(i + 1).copied().unwrap_or_default();
        if !tag.starts_with(".B ") {
            problems.push(format!(
                "line {}: .TP not followed by `.B name` but by {tag:?}",
                i + 2
            ));
            i += 1;
            continue;
        }
        let name = macro_args(tag);
        let default_line = unroff(lines.get(i + 2).copied().unwrap_or_default());
        let default = default_line
            .trim()
            .strip_prefix("(default:")
            .and_then(|r| r.strip_suffix(')'))
            .map(|d| match d.trim() {
                "empty" => String::new(),
                d => d.to_string(),
            });
        if default.is_none() {
            problems.push(format!(
                "line {}: {name}: expected `(default: VALUE)`, found {default_line:?}",
                i + 3
            ));
        }
        out.push(Documented {
            name,
            default,
            line: i + 2,
            has_text: false,
        });
        i += 3;
    }
    (out, problems)
}

#[test]
fn petrel_conf_5_documents_every_parameter_with_its_default() {
    let path = man_dir().join("petrel.conf.5");
    let (docs, mut problems) = documented_params(&read(&path));
    let table: BTreeSet<&str> = PARAMS.iter().map(|p| p.name).collect();
    let documented: BTreeSet<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    let missing: Vec<&&str> = table.difference(&documented).collect();
    let extra: Vec<&&str> = documented.difference(&table).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "not documented (in crates/config/src/params.rs only): {missing:?}"
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "documented but not in crates/config/src/params.rs: {extra:?}"
        ));
    }
    assert!(
        PARAMS.iter().all(|p| p.default != "empty"),
        "a default of \"empty\" would be ambiguous in the man page"
    );
    for d in &docs {
        if let (Some(def), Some(want)) = (&d.default, petrel_config::params::lookup(&d.name)) {
            if def != want.default {
                problems.push(format!(
                    "line {}: {}: documented default {def:?}, the table says {:?}",
                    d.line, d.name, want.default
                ));
            }
        }
        if !d.has_text {
            problems.push(format!("line {}: {}: no description", d.line, d.name));
        }
    }
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if names != sorted {
        problems.push("entries are not in alphabetical order, or one is repeated".into());
    }
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        path.display(),
        problems.join("\n  ")
    );
}

#[test]
fn default_configuration_loads_and_validates() {
    let etc = root().join("etc");
    let cfg = Config::load(&etc).unwrap_or_else(|e| panic!("{e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cfg.warnings().is_empty(),
        "etc/petrel.conf: {:?}",
        cfg.warnings()
    );
    // Commented-out settings must name real parameters too, so uncommenting one works.
    for (n, line) in read(&etc.join("petrel.conf")).lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        if let Some((name, _)) = rest.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                assert!(
                    petrel_config::params::lookup(name).is_some(),
                    "etc/petrel.conf, line {}: commented-out unknown parameter {name}",
                    n + 1
                );
            }
        }
    }

    let file = etc.join(petrel_config::SERVICES_FILE);
    let svcs = services::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = svcs.iter().map(|s| s.name.as_str()).collect();
    for want in ["pickup", "cleanup", "qmgr", "local"] {
        assert!(
            names.contains(&want),
            "{}: no {want} service",
            file.display()
        );
    }
    // Commented-out service lines must parse once uncommented.
    for (n, line) in read(&file).lines().enumerate() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() >= 8 && matches!(fields[1], "inet" | "unix") {
            services::parse(rest.trim_start(), &file)
                .unwrap_or_else(|e| panic!("line {}, uncommented: {e}", n + 1));
        }
    }
}

#[test]
fn every_program_has_a_man_page() {
    let pages: Vec<String> = man_pages()
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    let bin = root().join("bin");
    let mut programs: Vec<String> = std::fs::read_dir(&bin)
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    programs.sort();
    assert!(!programs.is_empty(), "no programs in {}", bin.display());
    let without: Vec<&String> = programs
        .iter()
        .filter(|p| !pages.iter().any(|page| page.contains(p.as_str())))
        .collect();
    assert!(
        without.is_empty(),
        "programs in bin/ without a man page in man/ (a file whose name contains the \
         program's name): {without:?}; pages: {pages:?}"
    );
}

#[test]
fn mandoc_lint_is_clean() {
    let pages = man_pages();
    assert!(!pages.is_empty(), "no man pages in {}", man_dir().display());
    let out = match Command::new("mandoc")
        .arg("-Tlint")
        .arg("-Wwarning")
        .args(&pages)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: mandoc is not installed ({e}); `apt-get install mandoc`");
            return;
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.trim().is_empty() && out.status.success(),
        "mandoc -Tlint -Wwarning ({}):\n{said}",
        out.status
    );
}

/// A man page's name and section, as a cross-reference writes them: `petrel-smtpd`, `8`.
type PageRef = (String, String);

/// The pages of man/ as (name, section): `petrel.conf.5` is `petrel.conf(5)`.
fn own_pages() -> BTreeSet<PageRef> {
    man_pages()
        .iter()
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?;
            let (name, sec) = file.rsplit_once('.')?;
            Some((name.to_string(), sec.to_string()))
        })
        .collect()
}

/// Other names `make install` gives a page of man/ (links to petrel-sendmail.1).
const INSTALLED_LINKS: &[(&str, &str)] = &[("sendmail", "1"), ("mailq", "1"), ("newaliases", "1")];

/// The system's pages that ours may refer to. Keep it to what the pages do refer to:
/// `every_external_reference_is_used` fails for an entry nobody uses any more.
const EXTERNAL_PAGES: &[(&str, &str)] = &[
    ("chroot", "2"),
    ("fdatasync", "2"),
    ("getopt", "3"),
    ("inotify", "7"),
    ("rename", "2"),
    ("seteuid", "2"),
];

/// The arguments of a macro line, split as roff splits them: at spaces, except inside
/// double quotes (`""` inside quotes is one quote).
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        out.push(arg);
    }
}

/// A page's lines as the reader sees their words: font macros (`.BR name (8),`) joined as
/// they print (`name(8),`), escapes undone, comments and other requests dropped.
/// Returns (line number, text).
fn plain_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some(request) = line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) else {
            out.push((n, unroff(line)));
            continue;
        };
        let (name, args) = request.split_once(' ').unwrap_or((request, ""));
        let args = split_args(args);
        let joined = match name {
            // Alternating fonts: the arguments print with nothing between them.
            "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => args.concat(),
            "B" | "I" | "SM" | "SB" | "TP" | "IP" | "SS" | "SH" => args.join(" "),
            _ => continue,
        };
        out.push((n, unroff(&joined)));
    }
    out
}

/// The cross-references `name(N)` in `text`: a name of letters, digits, `.`, `-`, `_`
/// (starting with a letter) right before `(`, one digit, an optional letter, `)`.
fn references_in(text: &str) -> Vec<PageRef> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find('(') {
        let open = i + off;
        i = open + 1;
        let mut close = open + 1;
        if !b.get(close).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        close += 1;
        if b.get(close).is_some_and(u8::is_ascii_lowercase) {
            close += 1;
        }
        if b.get(close) != Some(&b')') {
            continue;
        }
        let is_name = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_');
        let mut start = open;
        while start > 0 && is_name(b[start - 1]) {
            start -= 1;
        }
        // A sentence's full stop before the name is not part of it.
        while start < open && !b[start].is_ascii_alphabetic() {
            start += 1;
        }
        if start == open {
            continue;
        }
        out.push((
            text[start..open].to_string(),
            text[open + 1..close].to_string(),
        ));
    }
    out
}

/// Every cross-reference of a page, with its line number.
fn page_references(text: &str) -> Vec<(usize, PageRef)> {
    plain_lines(text)
        .into_iter()
        .flat_map(|(n, l)| references_in(&l).into_iter().map(move |r| (n, r)))
        .collect()
}

fn show((name, sec): &PageRef) -> String {
    format!("{name}({sec})")
}

#[test]
fn references_are_found_in_every_form() {
    let page = ".BR petrel\\-smtpd (8),\n\
                see \\fBpetrel.conf\\fR(5) and inotify(7).\n\
                .BR \"sendmail\" (1)\n\
                .B petrel (8)\n\
                .\\\" a comment about fake(1)\n\
                RFC 5321 (SMTP), f(x), (8), mode(0700), libc(3p).\n";
    let refs: Vec<String> = page_references(page).iter().map(|(_, r)| show(r)).collect();
    assert_eq!(
        refs,
        [
            "petrel-smtpd(8)",
            "petrel.conf(5)",
            "inotify(7)",
            "sendmail(1)",
            "libc(3p)"
        ]
    );
}

/// The lines of a page's SEE ALSO section.
fn see_also(text: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != ".SH SEE ALSO")
        .skip(1);
    let mut out = String::new();
    for l in lines.by_ref() {
        if l.starts_with(".SH") {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn the_overview_names_every_page() {
    let path = man_dir().join("petrel.8");
    let text = read(&path);
    let section = see_also(&text);
    assert!(
        !section.is_empty(),
        "{}: no SEE ALSO section",
        path.display()
    );
    let named: BTreeSet<PageRef> = page_references(&section)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let overview = ("petrel".to_string(), "8".to_string());
    let missing: Vec<String> = own_pages()
        .iter()
        .filter(|p| **p != overview && !named.contains(*p))
        .map(show)
        .collect();
    assert!(
        missing.is_empty(),
        "{}: SEE ALSO does not name these pages of man/: {}",
        path.display(),
        missing.join(", ")
    );
}

#[test]
fn every_cross_reference_resolves() {
    let mut known = own_pages();
    for (name, sec) in INSTALLED_LINKS.iter().chain(EXTERNAL_PAGES) {
        known.insert((name.to_string(), sec.to_string()));
    }
    let mut problems = Vec::new();
    let mut count = 0;
    for page in man_pages() {
        for (n, r) in page_references(&read(&page)) {
            count += 1;
            if !known.contains(&r) {
                problems.push(format!("{}:{n}: {}", page.display(), show(&r)));
            }
        }
    }
    assert!(
        count > 100,
        "found only {count} cross-references: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "references to pages that are neither in man/ nor on the list of the system's \
         pages (EXTERNAL_PAGES in this file):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_external_reference_is_used() {
    let used: BTreeSet<PageRef> = man_pages()
        .iter()
        .flat_map(|p| page_references(&read(p)))
        .map(|(_, r)| r)
        .collect();
    let own = own_pages();
    for (name, sec) in EXTERNAL_PAGES {
        let r = (name.to_string(), sec.to_string());
        assert!(
            !own.contains(&r),
            "{}: on the list of external pages but a page of man/",
            show(&r)
        );
        assert!(
            used.contains(&r),
            "{}: on the list of external pages but no page refers to it; remove it",
            show(&r)
        );
    }
}

/// The methods of `Config` that take a parameter name; for these any receiver counts.
const TYPED_GETTERS: &[&str] = &[
    "get_bool",
    "get_int",
    "get_time",
    "get_list",
    "raw",
    "is_explicit",
];

/// Receivers of a plain `.get("name")` that are a `Config` (a `.get` on anything else,
/// a map or a table, is not about parameters).
const CONFIG_RECEIVERS: &[&str] = &["cfg", "c", "config", "self.cfg", "d.cfg"];

/// Does `before` (the code up to a `.get(`) end with one of [`CONFIG_RECEIVERS`], as a
/// whole expression (`cfg`, but not `my_cfg` or `x.cfg` unless listed)?
fn ends_with_config_receiver(before: &str) -> bool {
    let before = before.trim_end();
    CONFIG_RECEIVERS.iter().any(|r| {
        before.strip_suffix(r).is_some_and(|rest| {
            !rest
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
    })
}

/// The parameter names `text` (Rust source) reads: (line, name) for each string literal
/// passed to a typed getter with any receiver, or to `.get(` with a receiver of
/// [`CONFIG_RECEIVERS`] on the same line or, for a chained call that starts its line,
/// at the end of the line before. White space (new lines too) may come between `(`
/// and the literal.
fn parameters_read(text: &str) -> Vec<(usize, String)> {
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(off) = text[from..].find('.') {
        let dot = from + off;
        from = dot + 1;
        let rest = &text[dot + 1..];
        let method_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let method = &rest[..method_len];
        let after = &rest[method_len..];
        let Some(args) = after.strip_prefix('(') else {
            continue;
        };
        let typed = TYPED_GETTERS.contains(&method);
        if !typed && method != "get" {
            continue;
        }
        let args = args.trim_start();
        let Some(lit) = args.strip_prefix('"') else {
            continue;
        };
        let Some(end) = lit.find('"') else {
            continue;
        };
        let name = &lit[..end];
        if !typed {
            let line_start = text[..dot].rfind('\n').map_or(0, |i| i + 1);
            let same_line = &text[line_start..dot];
            let receiver_ok = if same_line.trim().is_empty() {
                // A chained call: `cfg` ends the line before.
                let prev = &text[..line_start.saturating_sub(1)];
                ends_with_config_receiver(prev)
            } else {
                ends_with_config_receiver(same_line)
            };
            if !receiver_ok {
                continue;
            }
        }
        out.push((line_of(dot), name.to_string()));
    }
    out
}

/// Every `.rs` file under `dir`, leaving out `target/` and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_finds_parameters_in_every_form() {
    let code = "let a = cfg.get(\"myhostname\");\n\
                let b = d.cfg.get_bool(\"smtpd_tls_auth_only\");\n\
                let c = settings\n    .get_list(\n        \"alias_maps\")\n    .len();\n\
                let d = cfg\n    .get(\"mydomain\")\n    .len();\n\
                let e = self.cfg.get(\"relayhost\");\n\
                let f = table.get(\"not_a_parameter\");\n\
                let g = my_cfg.get(\"not_one_either\");\n\
                let h = c.raw(\"mynetworks\") + &c.get_time(\"smtpd_timeout\");\n";
    let got: Vec<(usize, String)> = parameters_read(code);
    let want: Vec<(usize, String)> = [
        (1, "myhostname"),
        (2, "smtpd_tls_auth_only"),
        (4, "alias_maps"),
        (8, "mydomain"),
        (10, "relayhost"),
        (13, "mynetworks"),
        (13, "smtpd_timeout"),
    ]
    .iter()
    .map(|(n, s)| (*n, s.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn every_parameter_the_code_reads_is_known() {
    let mut files = Vec::new();
    for top in ["bin", "crates"] {
        rust_files(&root().join(top), &mut files);
    }
    // Not this file: its comments and examples show the forms it looks for.
    let me = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/man_pages.rs");
    let me = me.canonicalize().unwrap_or(me);
    files.retain(|f| f.canonicalize().ok().as_ref() != Some(&me));
    files.sort();
    assert!(files.len() > 50, "found only {} .rs files", files.len());
    let mut found = BTreeSet::new();
    let mut unknown = Vec::new();
    for f in &files {
        for (line, name) in parameters_read(&read(f)) {
            if petrel_config::params::lookup(&name).is_none() {
                let shown = f.strip_prefix(root()).unwrap_or(f).display().to_string();
                unknown.push(format!("{shown}:{line}: {name}"));
            }
            found.insert(name);
        }
    }
    assert!(
        found.len() >= 60,
        "the scan found only {} parameter names ({found:?}): is the scanner broken?",
        found.len()
    );
    assert!(
        unknown.is_empty(),
        "the code reads parameters that crates/config/src/params.rs does not declare (and \
         man/petrel.conf.5 therefore does not document):\n  {}",
        unknown.join("\n  ")
    );
}
