//! `petrel config set NAME=VALUE...`, like `postconf -e`: changes settings in petrel.conf
//! from a script.
//!
//! Everything is checked before anything is written: each argument's form, each name, and
//! each known parameter's value (with the kind check `Config::validate` makes, `$name`
//! expanded against the edited file). The edit itself ([`edit`]) is pure: a setting the
//! file has is replaced where the parser finds it in effect (the last one when it is set
//! twice), one missing is appended, and every other byte stays as it was. The new file
//! replaces the old by rename, under an exclusive lock on the old so that two concurrent
//! runs do not lose each other's changes.

use crate::{Fail, Res};
use nix::fcntl::{Flock, FlockArg};
use petrel_config::{Config, MAIN_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One `name = value` to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The parameter name.
    pub name: String,
    /// The value, trimmed; may be empty.
    pub value: String,
}

/// Whether `name` may be a parameter name: what the petrel.conf parser accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The command line's check of an argument (so that a missing `=` is a usage error,
/// exit status 64, before anything is read).
pub fn has_equals(arg: &str) -> Result<String, String> {
    if arg.contains('=') {
        Ok(arg.to_string())
    } else {
        Err("expected name=value".to_string())
    }
}

/// Reads the arguments: `name=value` or `name = value` in one argument. A missing `=`
/// (which the command line already refuses), a bad name or a line break in the value is
/// fatal. A name given twice takes the last value, in the place of the first.
pub fn parse_args(args: &[String]) -> Res<Vec<Setting>> {
    let mut out: Vec<Setting> = Vec::new();
    for arg in args {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(Fail::Fatal(format!("{arg:?}: expected name=value")));
        };
        let (name, value) = (name.trim(), value.trim());
        if !valid_name(name) {
            return Err(Fail::Fatal(format!("{arg:?}: bad parameter name {name:?}")));
        }
        if arg.contains(['\n', '\r']) {
            return Err(Fail::Fatal(format!(
                "{name}: a value cannot contain a line break"
            )));
        }
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.value = value.to_string(),
            None => out.push(Setting {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }
    Ok(out)
}

/// The line a setting is written as.
fn line_of(s: &Setting) -> String {
    if s.value.is_empty() {
        format!("{} =", s.name)
    } else {
        format!("{} = {}", s.name, s.value)
    }
}

/// `text` (a petrel.conf) with `settings` applied. A parameter the file sets has the
/// logical line in effect (the last, when it is set more than once) replaced by one line
/// `name = value`: its first line is rewritten (keeping its line end) and its
/// continuation lines dropped; blank and comment lines among them are kept, since the
/// parser skips them. Other parameters are appended in order, after a line break when the
/// text does not end with one. Nothing else changes, byte for byte; a commented-out
/// `#name = value` is not a setting and is left alone.
pub fn edit(text: &str, settings: &[Setting]) -> String {
    let spans = petrel_config::logical_line_spans(text);
    // For each setting, the span of the last logical line that sets it.
    let mut replace: Vec<(&petrel_config::LogicalLine, &Setting)> = Vec::new();
    let mut append: Vec<&Setting> = Vec::new();
    for s in settings {
        let found = spans.iter().rev().find(|l| {
            l.text
                .split_once('=')
                .is_some_and(|(name, _)| name.trim() == s.name)
        });
        match found {
            Some(l) => replace.push((l, s)),
            None => append.push(s),
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if let Some((_, s)) = replace.iter().find(|(l, _)| l.first == i) {
            out.push_str(&line_of(s));
            let body = line.trim_end_matches(['\r', '\n']);
            out.push_str(&line[body.len()..]);
            continue;
        }
        let continuation = replace.iter().any(|(l, _)| l.first < i && i <= l.last);
        let trimmed = line.trim();
        if continuation && !trimmed.is_empty() && !trimmed.starts_with('#') {
            continue;
        }
        out.push_str(line);
    }
    for s in append {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&line_of(s));
        out.push('\n');
    }
    out
}

/// `petrel config set`.
pub fn run(dir: &Path, args: &[String]) -> Res {
    let settings = parse_args(args)?;
    for s in &settings {
        if petrel_config::params::lookup(&s.name).is_none() {
            eprintln!("petrel: warning: {}: unknown parameter", s.name);
        }
    }
    let named = dir.join(MAIN_FILE);
    // Through a symbolic link: the file it points to is edited, the link stays.
    let path = fs::canonicalize(&named)
        .map_err(|e| Fail::Fatal(format!("{}: cannot read: {e}", named.display())))?;
    let (locked, text) = open_locked(&path)?;
    // A file that does not parse is reported as it is, with its own line numbers.
    Config::parse(&text, &named).map_err(|e| Fail::Fatal(e.to_string()))?;
    let new = edit(&text, &settings);
    let cfg = Config::parse(&new, &named).map_err(|e| Fail::Fatal(e.to_string()))?;
    for s in &settings {
        cfg.check_param(&s.name).map_err(Fail::Fatal)?;
    }
    if new == text {
        return Ok(());
    }
    let meta = locked
        .metadata()
        .map_err(|e| Fail::Fatal(format!("{}: {e}", path.display())))?;
    replace_file(&path, &named, &new, &meta)?;
    drop(locked);
    Ok(())
}

/// Opens `path` and takes an exclusive lock on it, making sure the locked file is still
/// the one at `path` (another `config set` may have renamed a new one over it while this
/// one waited); returns the locked file and its text.
fn open_locked(path: &Path) -> Res<(Flock<File>, String)> {
    let fatal = |e: &dyn std::fmt::Display| Fail::Fatal(format!("{}: {e}", path.display()));
    for _ in 0..100 {
        let f = File::open(path).map_err(|e| fatal(&format!("cannot read: {e}")))?;
        let mut f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| fatal(&format!("cannot lock: {e}")))?;
        let held = f.metadata().map_err(|e| fatal(&e))?;
        let now = fs::metadata(path).map_err(|e| fatal(&e))?;
        if (held.dev(), held.ino()) != (now.dev(), now.ino()) {
            continue;
        }
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| fatal(&format!("cannot read: {e}")))?;
        return Ok((f, text));
    }
    Err(fatal(&"changes too often to be locked"))
}

/// Replaces `path` with `text`: a temporary file in the same directory with the old
/// file's mode (and, as root, its owner and group), fsynced and read back (it must
/// parse; `named` is the name messages use), renamed over `path`, the directory fsynced.
fn replace_file(path: &Path, named: &Path, text: &str, old: &fs::Metadata) -> Res {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let fatal = |p: &Path, e: &dyn std::fmt::Display| Fail::Fatal(format!("{}: {e}", p.display()));
    // Only a crashed earlier run leaves one: this run holds the lock.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fatal(&tmp, &e)),
    }
    let written = (|| -> Res {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| fatal(&tmp, &format!("cannot create: {e}")))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))
                .map_err(|e| fatal(&tmp, &format!("cannot change owner: {e}")))?;
        }
        f.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
            .map_err(|e| fatal(&tmp, &format!("cannot change mode: {e}")))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| fatal(&tmp, &format!("cannot write: {e}")))?;
        drop(f);
        let back =
            fs::read_to_string(&tmp).map_err(|e| fatal(&tmp, &format!("cannot read: {e}")))?;
        if back != text {
            return Err(fatal(&tmp, &"read back differs from what was written"));
        }
        Config::parse(&back, named).map_err(|e| Fail::Fatal(e.to_string()))?;
        fs::rename(&tmp, path).map_err(|e| fatal(path, &format!("cannot replace: {e}")))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fatal(&dir, &format!("cannot fsync: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Vec<Setting> {
        pairs
            .iter()
            .map(|(n, v)| Setting {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// What the parser reads from `text` for `name`.
    fn parsed(text: &str, name: &str) -> String {
        Config::parse(text, Path::new("petrel.conf"))
            .expect("parses")
            .raw(name)
    }

    #[test]
    fn replaces_a_single_line_in_place() {
        let text = "# top\nmyhostname = old.example\n\nmydomain = example\n";
        let new = edit(text, &set(&[("myhostname", "new.example")]));
        assert_eq!(
            new,
            "# top\nmyhostname = new.example\n\nmydomain = example\n"
        );
    }

    #[test]
    fn replaces_a_line_with_continuations_keeping_comments_among_them() {
        let text = "mydestination = a.example,\n    b.example,\n  # a comment\n\n\tc.example\n\
                    # after\nmynetworks = 127.0.0.0/8\n";
        let new = edit(text, &set(&[("mydestination", "$myhostname, localhost")]));
        assert_eq!(
            new,
            "mydestination = $myhostname, localhost\n  # a comment\n\n\
             # after\nmynetworks = 127.0.0.0/8\n"
        );
        assert_eq!(parsed(&new, "mydestination"), "$myhostname, localhost");
        assert_eq!(parsed(&new, "mynetworks"), "127.0.0.0/8");
    }

    #[test]
    fn continuation_with_the_equals_sign_is_found_too() {
        let text = "relayhost\n  = [old.example]\nmyhostname = h\n";
        let new = edit(text, &set(&[("relayhost", "[new.example]")]));
        assert_eq!(new, "relayhost = [new.example]\nmyhostname = h\n");
    }

    #[test]
    fn appends_what_is_not_set() {
        let text = "# only a comment\nmyhostname = h\n";
        let new = edit(
            text,
            &set(&[("message_size_limit", "2000000"), ("relayhost", "")]),
        );
        assert_eq!(
            new,
            "# only a comment\nmyhostname = h\nmessage_size_limit = 2000000\nrelayhost =\n"
        );
        assert_eq!(parsed(&new, "relayhost"), "");
        assert_eq!(edit("", &set(&[("a", "1")])), "a = 1\n");
    }

    #[test]
    fn appends_to_a_file_without_a_final_newline() {
        assert_eq!(
            edit("myhostname = h", &set(&[("mydomain", "d.example")])),
            "myhostname = h\nmydomain = d.example\n"
        );
        assert_eq!(
            edit("# no newline", &set(&[("mydomain", "d")])),
            "# no newline\nmydomain = d\n"
        );
        // Replacing the last line keeps its missing newline.
        assert_eq!(
            edit("a = 1\nmyhostname = h", &set(&[("myhostname", "x")])),
            "a = 1\nmyhostname = x"
        );
    }

    #[test]
    fn duplicates_replace_the_last_one_which_is_in_effect() {
        let text = "myhostname = first\nmydomain = d\nmyhostname = second\n  more\nx = 1\n";
        let new = edit(text, &set(&[("myhostname", "third")]));
        assert_eq!(
            new,
            "myhostname = first\nmydomain = d\nmyhostname = third\nx = 1\n"
        );
        assert_eq!(parsed(&new, "myhostname"), "third");
    }

    #[test]
    fn commented_out_lines_are_left_alone() {
        let text = "#myhostname = commented\n# myhostname = also\n";
        let new = edit(text, &set(&[("myhostname", "h")]));
        assert_eq!(
            new,
            "#myhostname = commented\n# myhostname = also\nmyhostname = h\n"
        );
    }

    #[test]
    fn a_name_that_is_a_prefix_of_another_is_not_confused() {
        let text = "smtpd_tls_cert_file_extra = e\nmyhostname_x = x\n\
                    smtpd_tls_cert_file = c\nmyhostname = h\n";
        let new = edit(
            text,
            &set(&[("smtpd_tls_cert_file", "C"), ("myhostname", "H")]),
        );
        assert_eq!(
            new,
            "smtpd_tls_cert_file_extra = e\nmyhostname_x = x\n\
             smtpd_tls_cert_file = C\nmyhostname = H\n"
        );
        let new = edit(
            "smtpd_tls_cert_file_extra = e\nmyhostname_x = x\n",
            &set(&[("myhostname", "H")]),
        );
        assert_eq!(
            new,
            "smtpd_tls_cert_file_extra = e\nmyhostname_x = x\nmyhostname = H\n"
        );
    }

    #[test]
    fn every_spacing_around_equals_in_the_file_is_matched() {
        for line in [
            "myhostname=old",
            "myhostname = old",
            "myhostname  =old",
            "myhostname\t=\told  ",
        ] {
            let text = format!("# c\n{line}\nz = 1\n");
            let new = edit(&text, &set(&[("myhostname", "new")]));
            assert_eq!(new, "# c\nmyhostname = new\nz = 1\n", "{line:?}");
        }
    }

    #[test]
    fn values_with_expansions_and_equals_signs_are_kept_verbatim() {
        let v = "${myhostname} $(mydomain) $$x a=b==c";
        let new = edit("relayhost = old\n", &set(&[("relayhost", v)]));
        assert_eq!(new, format!("relayhost = {v}\n"));
        assert_eq!(parsed(&new, "relayhost"), v);
        let s = parse_args(&args(&["smtpd_banner = $myhostname ESMTP x=y"]))
            .unwrap_or_else(|_| panic!("parses"));
        assert_eq!(s, set(&[("smtpd_banner", "$myhostname ESMTP x=y")]));
    }

    #[test]
    fn crlf_line_ends_are_kept_on_a_replaced_line() {
        let new = edit("a = 1\r\nb = 2\r\n", &set(&[("a", "3")]));
        assert_eq!(new, "a = 3\r\nb = 2\r\n");
    }

    #[test]
    fn several_settings_at_once() {
        let text = "b = 1\n# keep\na = 1\n";
        let new = edit(
            text,
            &set(&[("a", "2"), ("c", "3"), ("b", "4"), ("d", "5")]),
        );
        assert_eq!(new, "b = 4\n# keep\na = 2\nc = 3\nd = 5\n");
    }

    #[test]
    fn arguments() {
        let ok = parse_args(&args(&[
            "myhostname=mail.example",
            " message_size_limit = 2000000 ",
            "relayhost=",
            "smtp_tls_CAfile = /x",
            "myhostname = again",
        ]))
        .unwrap_or_else(|_| panic!("parses"));
        assert_eq!(
            ok,
            set(&[
                ("myhostname", "again"),
                ("message_size_limit", "2000000"),
                ("relayhost", ""),
                ("smtp_tls_CAfile", "/x"),
            ])
        );
        assert!(matches!(
            parse_args(&args(&["myhostname"])),
            Err(Fail::Fatal(m)) if m.contains("expected name=value")
        ));
        assert!(has_equals("myhostname").is_err());
        assert_eq!(has_equals("a=").as_deref(), Ok("a="));
        for bad in ["=x", "my host=x", "my-host=x", "a=b\nc=d", "a=b\r"] {
            assert!(
                matches!(parse_args(&args(&[bad])), Err(Fail::Fatal(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn run_checks_before_writing_and_keeps_the_mode() {
        let t = tempfile::tempdir().expect("tempdir");
        let conf = t.path().join(MAIN_FILE);
        let text = "# mine\nmyhostname = a.example\n";
        fs::write(&conf, text).expect("write");
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).expect("chmod");

        let e = run(t.path(), &args(&["message_size_limit=abc"]));
        assert!(
            matches!(&e, Err(Fail::Fatal(m)) if m == "message_size_limit = abc: not a whole number"),
            "{e:?}"
        );
        // An expansion is checked as expanded.
        let e = run(
            t.path(),
            &args(&["myhostname=$myorigin", "myorigin=$myhostname"]),
        );
        assert!(
            matches!(&e, Err(Fail::Fatal(m)) if m.contains("refers to itself")),
            "{e:?}"
        );
        assert_eq!(fs::read_to_string(&conf).expect("read"), text);

        // "$x" is not a parameter: it stays "$x", which is not a number; the good
        // settings given with it are not written either.
        let e = run(
            t.path(),
            &args(&["myhostname=b.example", "hopcount_limit = $x", "frob=1"]),
        );
        assert!(
            matches!(&e, Err(Fail::Fatal(m)) if m.starts_with("hopcount_limit = $x: ")),
            "{e:?}"
        );
        assert_eq!(fs::read_to_string(&conf).expect("read"), text);

        run(
            t.path(),
            &args(&["myhostname=b.example", "hopcount_limit = 20", "frob=1"]),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            fs::read_to_string(&conf).expect("read"),
            "# mine\nmyhostname = b.example\nhopcount_limit = 20\nfrob = 1\n"
        );
        let mode = fs::metadata(&conf).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(!t.path().join("petrel.conf.tmp").exists());
        let cfg = Config::load(t.path()).expect("loads");
        assert_eq!(cfg.get("myhostname"), "b.example");
        assert_eq!(cfg.get_int("hopcount_limit"), 20);
    }

    #[test]
    fn run_edits_through_a_symlink_and_reports_a_missing_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let e = run(t.path(), &args(&["myhostname=x"]));
        assert!(
            matches!(&e, Err(Fail::Fatal(m)) if m.contains("petrel.conf: cannot read")),
            "{e:?}"
        );
        let real = t.path().join("real.conf");
        fs::write(&real, "myhostname = a\n").expect("write");
        std::os::unix::fs::symlink("real.conf", t.path().join(MAIN_FILE)).expect("symlink");
        run(t.path(), &args(&["myhostname=b"])).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(fs::read_to_string(&real).expect("read"), "myhostname = b\n");
        assert!(fs::symlink_metadata(t.path().join(MAIN_FILE))
            .expect("lstat")
            .file_type()
            .is_symlink());
    }
}
