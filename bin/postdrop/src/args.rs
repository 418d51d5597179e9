//! postdrop's command line and the checks on what it carries into the queue file.

use std::path::PathBuf;

use crate::{exit, Fatal};

/// Longest sender, recipient or attribute value accepted (RFC 5322's line limit).
pub const MAX_LEN: usize = 998;

/// Attributes a caller may add with `-A`; the rest postdrop records itself or leaves to
/// cleanup, so they cannot be forged by a user.
pub const CALLER_ATTRS: &[&str] = &["fullname", "envid", "ret"];

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-c DIR`.
    pub config_dir: Option<PathBuf>,
    /// `-f SENDER`, angle brackets removed; `Some("")` is the null sender.
    pub sender: Option<String>,
    /// `-A name=value`, in order.
    pub attrs: Vec<(String, String)>,
    /// The recipients.
    pub recipients: Vec<String>,
    /// `-q`: list the queue (through showq) instead of submitting.
    pub list: bool,
}

/// The arguments after the program name, which must be UTF-8.
pub fn os_args() -> Result<Vec<String>, Fatal> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| Fatal::new(exit::USAGE, format!("argument {a:?} is not UTF-8")))
        })
        .collect()
}

fn usage(msg: &str) -> Fatal {
    Fatal::new(
        exit::USAGE,
        format!(
            "{msg}; usage: postdrop [-c config_dir] [-f sender] [-A name=value]... [--] recipient... \
             (standard input: the message as chunks of a 4-byte big-endian length and at most \
             {} bytes, ending with a zero-length chunk), or postdrop [-c config_dir] -q",
            petrel_ipc::chunked::MAX_CHUNK
        ),
    )
}

/// Parses `[-c DIR] [-f SENDER] [-A name=value]... [--] RECIPIENT...` or `[-c DIR] -q`; an
/// option's value may be attached (`-fbob`) or the next argument.
pub fn parse(argv: &[String]) -> Result<Args, Fatal> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            i -= 1;
            break;
        }
        if arg == "-q" {
            a.list = true;
            continue;
        }
        let mut chars = arg[1..].chars();
        let flag = chars.next().unwrap_or('-');
        let attached = chars.as_str();
        let value = if !attached.is_empty() {
            attached.to_string()
        } else {
            let v = argv
                .get(i)
                .ok_or_else(|| usage(&format!("option -{flag} needs a value")))?;
            i += 1;
            v.clone()
        };
        match flag {
            'c' => a.config_dir = Some(PathBuf::from(value)),
            'f' => {
                let s = strip_brackets(&value);
                check_address("sender", s)?;
                a.sender = Some(s.to_string());
            }
            'A' => a.attrs.push(check_attr(&value)?),
            _ => return Err(usage(&format!("unknown option -{flag}"))),
        }
    }
    if a.list {
        if a.sender.is_some() || !a.attrs.is_empty() || i < argv.len() {
            return Err(usage("-q takes no sender, attributes or recipients"));
        }
        return Ok(a);
    }
    for r in &argv[i..] {
        if r.is_empty() {
            return Err(Fatal::new(exit::DATAERR, "empty recipient address"));
        }
        check_address("recipient", r)?;
        a.recipients.push(r.clone());
    }
    if a.recipients.is_empty() {
        return Err(usage("no recipients specified"));
    }
    Ok(a)
}

/// `<addr>` → `addr`; `<>` → the null sender.
pub fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(s)
}

fn clean(s: &str) -> bool {
    s.len() <= MAX_LEN && !s.chars().any(char::is_control)
}

/// Rejects addresses longer than [`MAX_LEN`] or with control characters (NUL included).
pub fn check_address(what: &str, s: &str) -> Result<(), Fatal> {
    if clean(s) {
        Ok(())
    } else {
        Err(Fatal::new(
            exit::DATAERR,
            format!(
                "bad {what} address {:?}: longer than {MAX_LEN} bytes or has control characters",
                s.chars().take(60).collect::<String>()
            ),
        ))
    }
}

fn check_attr(spec: &str) -> Result<(String, String), Fatal> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| usage(&format!("-A {spec}: expected name=value")))?;
    if !CALLER_ATTRS.contains(&name) {
        return Err(usage(&format!(
            "-A {name}: only {} may be given",
            CALLER_ATTRS.join(", ")
        )));
    }
    if !clean(value) {
        return Err(Fatal::new(
            exit::DATAERR,
            format!("-A {name}: value longer than {MAX_LEN} bytes or has control characters"),
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The real uid and its login name (the number as text when it has none).
pub fn real_user() -> (u32, String) {
    let uid = nix::unistd::getuid();
    let name = match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    };
    (uid.as_raw(), name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn full_command_line() {
        let a = parse(&v(&[
            "-c",
            "/tmp/etc",
            "-f",
            "<alice@example.org>",
            "-A",
            "fullname=Alice B",
            "-Aret=HDRS",
            "--",
            "-bob",
            "carol",
        ]))
        .unwrap();
        assert_eq!(a.config_dir, Some(PathBuf::from("/tmp/etc")));
        assert_eq!(a.sender.as_deref(), Some("alice@example.org"));
        assert_eq!(
            a.attrs,
            vec![
                ("fullname".to_string(), "Alice B".to_string()),
                ("ret".to_string(), "HDRS".to_string())
            ]
        );
        assert_eq!(a.recipients, v(&["-bob", "carol"]));
    }

    #[test]
    fn attached_values_null_sender_and_first_operand_ends_options() {
        let a = parse(&v(&["-f<>", "-c/x", "bob", "-f", "x"])).unwrap();
        assert_eq!(a.sender.as_deref(), Some(""));
        assert_eq!(a.config_dir, Some(PathBuf::from("/x")));
        assert_eq!(a.recipients, v(&["bob", "-f", "x"]));
        let a = parse(&v(&["-f", "", "bob"])).unwrap();
        assert_eq!(a.sender.as_deref(), Some(""));
    }

    #[test]
    fn list_the_queue() {
        for argv in [
            vec!["-q"],
            vec!["-c", "/x", "-q"],
            vec!["-q", "-c/x"],
            vec!["-q", "--"],
        ] {
            let a = parse(&v(&argv)).unwrap();
            assert!(a.list, "{argv:?}");
            assert!(a.recipients.is_empty());
        }
        assert_eq!(
            parse(&v(&["-c", "/x", "-q"])).unwrap().config_dir,
            Some(PathBuf::from("/x"))
        );
        for argv in [
            vec!["-q", "bob"],
            vec!["-q", "--", "bob"],
            vec!["-f", "a", "-q"],
            vec!["-q", "-A", "fullname=x"],
            vec!["-qx"],
        ] {
            let e = parse(&v(&argv)).unwrap_err();
            assert_eq!(e.code, exit::USAGE, "{argv:?}: {e:?}");
        }
        assert!(!parse(&v(&["bob"])).unwrap().list);
    }

    #[test]
    fn usage_errors() {
        for argv in [
            vec![],
            vec!["-f", "a"],
            vec!["--"],
            vec!["-x", "bob"],
            vec!["-f"],
            vec!["-A", "uid=0", "bob"],
            vec!["-A", "protocol=smtp", "bob"],
            vec!["-A", "novalue", "bob"],
            vec!["-é", "bob"],
        ] {
            let e = parse(&v(&argv)).unwrap_err();
            assert_eq!(e.code, exit::USAGE, "{argv:?}: {e:?}");
        }
    }

    #[test]
    fn bad_addresses_are_data_errors() {
        let long = "a".repeat(MAX_LEN + 1);
        for argv in [
            vec!["bo\0b"],
            vec!["bob\n"],
            vec!["-f", "a\rb", "bob"],
            vec![long.as_str()],
            vec![""],
            vec!["-A", "fullname=x\ny", "bob"],
        ] {
            let e = parse(&v(&argv)).unwrap_err();
            assert_eq!(e.code, exit::DATAERR, "{argv:?}: {e:?}");
        }
        let ok = "a".repeat(MAX_LEN);
        assert!(parse(&v(&[ok.as_str()])).is_ok());
        assert!(
            parse(&v(&["jörg@exämple.org"])).is_ok(),
            "UTF-8 is not a control character"
        );
    }
}
