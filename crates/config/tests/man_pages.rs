//! Keeps the documentation honest:
//!
//! 1. man/petrel.conf.5 documents exactly the parameters of `petrel_config::PARAMS`, in
//!    order, each with the table's default;
//! 2. the default configuration in etc/ loads, validates and has no unknown parameters;
//! 3. every program in bin/ has a man page;
//! 4. `mandoc -Tlint -Wwarning` is silent on every page (when mandoc is installed).

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
