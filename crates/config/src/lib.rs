//! Petrel's configuration: `petrel.conf` (Postfix's `main.cf` habits) and `services.conf`
//! (Postfix's `master.cf` habits).
//!
//! `petrel.conf` grammar:
//! - `name = value`; white space around `=` and at the end of the line is dropped;
//! - a line that starts with white space continues the previous logical line;
//! - blank lines and lines whose first non-blank character is `#` are ignored;
//! - `$name`, `${name}` and `$(name)` expand to another parameter's value when the value is
//!   used (not when it is read), so the order of lines does not matter; `$$` is a literal
//!   `$`; a `$name` that is not a parameter is left as it is (local delivery expands `$home`
//!   and `$user` itself).
//!
//! Every parameter is declared once in [`params::PARAMS`] with its kind and default; an
//! invalid value is reported with the file, the line and the reason.
#![deny(missing_docs)]

pub mod params;
pub mod services;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use params::{Kind, ParamDef, PARAMS};
pub use services::{Service, ServiceType};

/// Name of the main configuration file inside the configuration directory.
pub const MAIN_FILE: &str = "petrel.conf";
/// Name of the services file inside the configuration directory.
pub const SERVICES_FILE: &str = "services.conf";
/// The configuration directory used when neither `-c` nor `PETREL_CONFIG` names one.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/petrel";

/// A configuration problem, with the file and (when it has one) the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line number, or 0 when the problem is not on one line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}, line {}: {}",
                self.file.display(),
                self.line,
                self.reason
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a parameter's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(usize),
    Override,
}

/// A loaded `petrel.conf`.
#[derive(Debug, Clone)]
pub struct Config {
    dir: PathBuf,
    file: PathBuf,
    set: HashMap<String, (String, Origin)>,
    warnings: Vec<String>,
    hostname: String,
}

/// The configuration directory a command should use: `-c DIR` if given, else
/// `$PETREL_CONFIG`, else `/etc/petrel`.
pub fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_path_buf();
    }
    match std::env::var_os("PETREL_CONFIG") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

impl Config {
    /// Reads `DIR/petrel.conf`. A syntax error stops loading; values are checked by
    /// [`Config::validate`].
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let file = dir.join(MAIN_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        let mut cfg = Config::parse(&text, &file)?;
        cfg.dir = dir.to_path_buf();
        Ok(cfg)
    }

    /// Parses the text of a `petrel.conf`; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            file: file.to_path_buf(),
            set: HashMap::new(),
            warnings: Vec::new(),
            hostname: system_hostname(),
        };
        for (line_no, logical) in logical_lines(text) {
            let err = |reason: String| ConfigError {
                file: file.to_path_buf(),
                line: line_no,
                reason,
            };
            let Some((name, value)) = logical.split_once('=') else {
                return Err(err(format!(
                    "missing '=' after parameter name: {logical:?}"
                )));
            };
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err(format!("bad parameter name {name:?}")));
            }
            let value = value.trim().to_string();
            if params::lookup(name).is_none() {
                cfg.warnings.push(format!(
                    "{}, line {line_no}: unknown parameter {name}",
                    file.display()
                ));
            }
            if let Some((_, Origin::File(prev))) = cfg.set.get(name) {
                cfg.warnings.push(format!(
                    "{}, line {line_no}: overriding earlier entry for {name} (line {prev})",
                    file.display()
                ));
            }
            cfg.set
                .insert(name.to_string(), (value, Origin::File(line_no)));
        }
        Ok(cfg)
    }

    /// The configuration directory this was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `petrel.conf` path this was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Warnings found while reading (unknown parameters, duplicates).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Sets `name = value` as a command-line (`-o`) override.
    pub fn set_override(&mut self, name: &str, value: &str) -> Result<(), String> {
        if params::lookup(name).is_none() {
            return Err(format!("unknown parameter {name}"));
        }
        self.set
            .insert(name.to_string(), (value.to_string(), Origin::Override));
        Ok(())
    }

    /// Applies a `name=value` override as written after `-o`.
    pub fn apply_override_arg(&mut self, arg: &str) -> Result<(), String> {
        let (n, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("-o {arg}: expected name=value"))?;
        self.set_override(n.trim(), v.trim())
    }

    /// Forgets the setting of `name` (file or override): it takes its default again.
    pub fn unset(&mut self, name: &str) {
        self.set.remove(name);
    }

    /// True when `name` was set in the file or by an override.
    pub fn is_explicit(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    /// The value of `name` as written (not expanded): override, file, or default.
    pub fn raw(&self, name: &str) -> String {
        if let Some((v, _)) = self.set.get(name) {
            return v.clone();
        }
        match params::lookup(name).map(|d| d.default) {
            Some("@hostname") => self.hostname.clone(),
            Some("@domain") => domain_of(&self.get("myhostname")),
            Some(d) => d.to_string(),
            None => String::new(),
        }
    }

    /// The expanded value of `name`. Unknown names give the empty string.
    pub fn get(&self, name: &str) -> String {
        self.expand_checked(&self.raw(name), &mut vec![name.to_string()])
            .unwrap_or_default()
    }

    /// Expands `$name` references in `text` against this configuration.
    pub fn expand(&self, text: &str) -> String {
        self.expand_checked(text, &mut Vec::new())
            .unwrap_or_default()
    }

    fn expand_checked(&self, text: &str, stack: &mut Vec<String>) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (name, consumed) = if let Some(r) = after.strip_prefix('{') {
                match r.find('}') {
                    Some(end) => (&r[..end], end + 2),
                    None => return Err(format!("unterminated ${{ in {text:?}")),
                }
            } else if let Some(r) = after.strip_prefix('(') {
                match r.find(')') {
                    Some(end) => (&r[..end], end + 2),
                    None => return Err(format!("unterminated $( in {text:?}")),
                }
            } else if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            if name.is_empty() || params::lookup(name).is_none() {
                // Not ours ($home, $user, or a lone $): keep it for whoever expands it later.
                out.push('$');
                rest = after;
                continue;
            }
            if stack.iter().any(|s| s == name) {
                return Err(format!("${name} refers to itself"));
            }
            stack.push(name.to_string());
            let value = self.expand_checked(&self.raw(name), stack)?;
            stack.pop();
            out.push_str(&value);
            rest = &after[consumed..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `yes`/`no` parameter (anything but `yes`/`true`/`1` is false; see [`Config::validate`]).
    pub fn get_bool(&self, name: &str) -> bool {
        parse_bool(&self.get(name)).unwrap_or(false)
    }

    /// Whole-number parameter (0 when invalid; see [`Config::validate`]).
    pub fn get_int(&self, name: &str) -> i64 {
        self.get(name).trim().parse().unwrap_or(0)
    }

    /// Time parameter.
    pub fn get_time(&self, name: &str) -> Duration {
        parse_time(&self.get(name)).unwrap_or_default()
    }

    /// List parameter: items separated by commas and/or white space.
    pub fn get_list(&self, name: &str) -> Vec<String> {
        split_list(&self.get(name))
    }

    /// Checks every explicitly set value against its kind, and every `$` expansion.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names: Vec<&String> = self.set.keys().collect();
        names.sort();
        for name in names {
            let (_, origin) = &self.set[name];
            let line = match origin {
                Origin::File(l) => *l,
                Origin::Override => 0,
            };
            self.check_param(name).map_err(|reason| ConfigError {
                file: self.file.clone(),
                line,
                reason,
            })?;
        }
        Ok(())
    }

    /// Checks the value `name` has here (as set, else its default), `$` expansions done,
    /// against its kind: what [`Config::validate`] checks for each parameter set. An unknown
    /// name passes. The error reads `name = value: reason`, or `name: reason` when the
    /// expansion fails.
    pub fn check_param(&self, name: &str) -> Result<(), String> {
        let Some(def) = params::lookup(name) else {
            return Ok(());
        };
        let value = self
            .expand_checked(&self.raw(name), &mut vec![name.to_string()])
            .map_err(|e| format!("{name}: {e}"))?;
        check_kind(def, &value).map_err(|e| format!("{name} = {value}: {e}"))
    }

    /// Every known parameter with its effective (expanded) value, sorted by name.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        PARAMS.iter().map(|d| (d.name, self.get(d.name))).collect()
    }

    /// The parameters set in the file (or by override), with their value as written.
    pub fn explicit(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .set
            .iter()
            .map(|(k, (val, _))| (k.clone(), val.clone()))
            .collect();
        v.sort();
        v
    }
}

/// One logical line of a `petrel.conf`, as the parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// 0-based index (as counted by [`str::lines`]) of the physical line it starts on.
    pub first: usize,
    /// 0-based index of its last continuation line (`first` when it has none). Blank and
    /// comment lines between `first` and `last` are skipped by the parser: they neither
    /// belong to the logical line nor end it.
    pub last: usize,
    /// Its text: the physical lines trimmed and joined with one space.
    pub text: String,
}

/// Splits a file into logical lines (continuations joined), with the first line's number.
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    logical_line_spans(text)
        .into_iter()
        .map(|l| (l.first + 1, l.text))
        .collect()
}

/// Splits a file into logical lines, with where each one lies. The parsers of
/// `petrel.conf` and `services.conf` read the lines this gives; `petrel config set` uses it
/// to find a setting exactly where the parser finds it.
pub fn logical_line_spans(text: &str) -> Vec<LogicalLine> {
    let mut out: Vec<LogicalLine> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.text.push(' ');
                last.text.push_str(trimmed);
                last.last = i;
                continue;
            }
        }
        out.push(LogicalLine {
            first: i,
            last: i,
            text: trimmed.to_string(),
        });
    }
    out
}

fn check_kind(def: &ParamDef, value: &str) -> Result<(), String> {
    match def.kind {
        Kind::Str | Kind::List => Ok(()),
        Kind::Bool => parse_bool(value).map(|_| ()),
        Kind::Int { min, max } => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| "not a whole number".to_string())?;
            if n < min || n > max {
                Err(format!("must be between {min} and {max}"))
            } else {
                Ok(())
            }
        }
        Kind::Time => parse_time(value).map(|_| ()),
    }
}

/// Parses `yes`/`no` (also `true`/`false`, `1`/`0`).
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "y" => Ok(true),
        "no" | "false" | "0" | "n" => Ok(false),
        other => Err(format!("{other:?} is not yes or no")),
    }
}

/// Parses a time: a number with an optional unit s, m, h, d or w (seconds by default).
pub fn parse_time(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a time (e.g. 300s, 5m, 1h, 5d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(format!(
                "{v:?}: unknown time unit {unit:?} (use s, m, h, d or w)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Splits a list value on commas and white space, dropping empty items.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn domain_of(host: &str) -> String {
    match host.split_once('.') {
        Some((_, d)) if !d.is_empty() => d.to_string(),
        _ => "localdomain".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/petrel/petrel.conf"))
    }

    #[test]
    fn name_value_comments_and_continuations() {
        let c = parse(
            "# comment\n\nmyhostname = mail.example.com\nmydestination = a.example,\n    b.example\n  # comment inside\n\tc.example\n",
        )
        .unwrap();
        assert_eq!(c.get("myhostname"), "mail.example.com");
        assert_eq!(
            c.get_list("mydestination"),
            vec!["a.example", "b.example", "c.example"]
        );
        assert_eq!(c.get("mydomain"), "example.com");
    }

    #[test]
    fn expansion_in_all_three_forms_and_late_binding() {
        let c = parse(
            "myorigin = ${mydomain}\nmydomain = example.org\nrelayhost = $(myorigin) $$x $home\n",
        )
        .unwrap();
        assert_eq!(c.get("myorigin"), "example.org");
        assert_eq!(c.get("relayhost"), "example.org $x $home");
        assert_eq!(
            c.get("mydestination"),
            format!("{}, localhost.example.org, localhost", c.get("myhostname"))
        );
    }

    #[test]
    fn self_reference_is_an_error_with_line() {
        let c = parse("\nmyorigin = $myhostname\nmyhostname = $myorigin\n").unwrap();
        let e = c.validate().unwrap_err();
        // Checked in name order: myhostname (line 3) is reported first.
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("refers to itself"), "{e}");
    }

    #[test]
    fn missing_equals_names_file_and_line() {
        let e = parse("myhostname = a\nthis is wrong\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/petrel/petrel.conf, line 2: missing '=' after parameter name: \"this is wrong\""
        );
    }

    #[test]
    fn bad_values_are_reported() {
        for (text, want) in [
            ("queue_run_delay = 5x\n", "unknown time unit"),
            ("message_size_limit = lots\n", "not a whole number"),
            ("hopcount_limit = 0\n", "between 1 and 1000"),
        ] {
            let e = parse(text).unwrap().validate().unwrap_err();
            assert_eq!(e.line, 1);
            assert!(e.reason.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_parameters_warn_but_load() {
        let c = parse("frobnicate = 1\nmyhostname=a.b\nmyhostname=c.d\n").unwrap();
        assert_eq!(c.warnings().len(), 2);
        assert!(c.warnings()[0].contains("unknown parameter frobnicate"));
        assert_eq!(c.get("myhostname"), "c.d");
    }

    #[test]
    fn times_and_overrides() {
        let mut c = parse("maximal_queue_lifetime = 2d\n").unwrap();
        assert_eq!(
            c.get_time("maximal_queue_lifetime"),
            Duration::from_secs(172800)
        );
        assert_eq!(c.get_time("queue_run_delay"), Duration::from_secs(300));
        c.apply_override_arg("queue_run_delay=1m").unwrap();
        assert_eq!(c.get_time("queue_run_delay"), Duration::from_secs(60));
        assert!(c.apply_override_arg("nonsense=1").is_err());
        assert_eq!(
            c.explicit(),
            vec![
                ("maximal_queue_lifetime".to_string(), "2d".to_string()),
                ("queue_run_delay".to_string(), "1m".to_string())
            ]
        );
    }

    #[test]
    fn logical_line_spans_cover_continuations_across_comments() {
        let spans = logical_line_spans("  lead = 1\n# c\na = x,\n  y\n  # c\n\n\tz\nb = 2\n");
        let got: Vec<(usize, usize, &str)> = spans
            .iter()
            .map(|l| (l.first, l.last, l.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, "lead = 1"), (2, 6, "a = x, y z"), (7, 7, "b = 2")]
        );
    }

    #[test]
    fn check_param_is_what_validate_checks() {
        let c = parse("message_size_limit = abc\nhopcount_limit = $message_size_limit\n").unwrap();
        assert_eq!(
            c.check_param("message_size_limit"),
            Err("message_size_limit = abc: not a whole number".to_string())
        );
        assert_eq!(
            c.check_param("hopcount_limit"),
            Err("hopcount_limit = abc: not a whole number".to_string())
        );
        assert_eq!(c.check_param("queue_run_delay"), Ok(()));
        assert_eq!(c.check_param("no_such_parameter"), Ok(()));
        assert_eq!(
            c.validate().unwrap_err().reason,
            "hopcount_limit = abc: not a whole number"
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let e = Config::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("petrel.conf: cannot read"), "{e}");
    }
}
