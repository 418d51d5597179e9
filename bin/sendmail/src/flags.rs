//! sendmail's command line, parsed by hand: the legacy syntax (`-oi`, `-bs`, `-q30m`,
//! `-faddr` or `-f addr`, clustered flags like `-ti`) is older than any argument-parsing
//! library's idea of a command line.
//!
//! Options work like POSIX `getopt`: flags may be clustered, an option's value is the rest
//! of its argument or the next argument, and the first argument that is not an option (or
//! `--`) ends the options; everything after it is a recipient.

use std::path::PathBuf;

use crate::{exit, Fatal};

/// What sendmail was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read a message on standard input and submit it (`-bm`, the default).
    Deliver,
    /// An SMTP dialogue on standard input and output (`-bs`).
    Smtp,
    /// List the queue (`-bp`, `mailq`).
    ListQueue,
    /// Retry every deferred message now (`-q`).
    Flush,
    /// Check the alias files (`-bi`, `newaliases`).
    NewAliases,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// `-C DIR`: Petrel's configuration directory.
    pub config_dir: Option<PathBuf>,
    /// `-f ADDR` / `-r ADDR`, angle brackets removed (`Some("")` is the null sender).
    pub sender: Option<String>,
    /// `-F NAME`: the sender's full name.
    pub fullname: Option<String>,
    /// `-t`: take recipients from the message headers too.
    pub extract: bool,
    /// `-i` / `-oi`: a line with a single `.` does not end the message.
    pub ignore_dots: bool,
    /// `-v`, counted.
    pub verbose: u32,
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
}

/// Options whose value is the rest of the argument or the next argument.
const TAKES_VALUE: &str = "ABCFLNORVXbfhor";
/// Flags without a value that are accepted and ignored (sendmail habits).
const IGNORED_FLAGS: &str = "GUmn";

fn usage(msg: impl std::fmt::Display) -> Fatal {
    Fatal::new(exit::USAGE, msg.to_string())
}

/// Parses `args` (without the program name). `program` is argv[0]'s file name: `mailq`
/// and `newaliases` select their mode before any option is read.
pub fn parse(program: &str, args: &[String]) -> Result<Options, Fatal> {
    let mut o = Options {
        mode: match program {
            "mailq" => Mode::ListQueue,
            "newaliases" => Mode::NewAliases,
            _ => Mode::Deliver,
        },
        config_dir: None,
        sender: None,
        fullname: None,
        extract: false,
        ignore_dots: false,
        verbose: 0,
        recipients: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            i -= 1;
            break;
        };
        let mut rest = cluster;
        while let Some(flag) = rest.chars().next() {
            rest = &rest[flag.len_utf8()..];
            if TAKES_VALUE.contains(flag) {
                let value = if rest.is_empty() {
                    let v = args
                        .get(i)
                        .ok_or_else(|| usage(format!("option requires an argument -- {flag}")))?;
                    i += 1;
                    v.as_str()
                } else {
                    std::mem::take(&mut rest)
                };
                o.apply_value(flag, value)?;
                continue;
            }
            match flag {
                't' => o.extract = true,
                'i' => o.ignore_dots = true,
                'v' => o.verbose += 1,
                'q' => {
                    // -q, -q30m, -qIqueueid, -qRsite, -qSsender: all mean "flush now".
                    rest = "";
                    o.mode = Mode::Flush;
                }
                c if IGNORED_FLAGS.contains(c) => {}
                c => return Err(usage(format!("illegal option -- {c}"))),
            }
        }
    }
    o.recipients = args[i..].to_vec();
    Ok(o)
}

impl Options {
    fn apply_value(&mut self, flag: char, value: &str) -> Result<(), Fatal> {
        match flag {
            'b' => {
                self.mode = match value {
                    "m" => Mode::Deliver,
                    "s" => Mode::Smtp,
                    "p" => Mode::ListQueue,
                    "i" => Mode::NewAliases,
                    "d" | "D" => {
                        return Err(usage(
                            "-bd: sendmail does not run as a daemon here; use `petrel start`",
                        ))
                    }
                    other => return Err(usage(format!("-b{other}: unsupported mode"))),
                }
            }
            'C' => self.config_dir = Some(PathBuf::from(value)),
            'f' | 'r' => self.sender = Some(strip_brackets(value).to_string()),
            'F' => self.fullname = Some(value.to_string()),
            // -oi is the only sendmail option that changes anything here.
            'o' if value == "i" => self.ignore_dots = true,
            // -A, -B type, -L label, -N dsn, -O option=value, -R return, -V envid,
            // -X logfile, -h hops: accepted for compatibility, ignored.
            _ => {}
        }
        Ok(())
    }
}

/// `<addr>` → `addr`, `<>` → the null sender, anything else unchanged.
pub fn strip_brackets(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Options, Fatal> {
        parse(
            "sendmail",
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn plain_recipients_and_defaults() {
        let o = p("bob carol@example.org").unwrap();
        assert_eq!(o.mode, Mode::Deliver);
        assert_eq!(o.recipients, vec!["bob", "carol@example.org"]);
        assert!(!o.extract && !o.ignore_dots);
        assert_eq!(o.sender, None);
    }

    #[test]
    fn sender_forms() {
        for line in [
            "-f alice bob",
            "-falice bob",
            "-r alice bob",
            "-ralice bob",
            "-f <alice> bob",
        ] {
            let o = p(line).unwrap();
            assert_eq!(o.sender.as_deref(), Some("alice"), "{line}");
            assert_eq!(o.recipients, vec!["bob"], "{line}");
        }
        assert_eq!(p("-f<> bob").unwrap().sender.as_deref(), Some(""));
        let o = parse("sendmail", &["-f".into(), "".into(), "bob".into()]).unwrap();
        assert_eq!(o.sender.as_deref(), Some(""));
    }

    #[test]
    fn fullname_forms() {
        let o = parse(
            "sendmail",
            &["-F".into(), "Alice Liddell".into(), "bob".into()],
        )
        .unwrap();
        assert_eq!(o.fullname.as_deref(), Some("Alice Liddell"));
        assert_eq!(p("-FAlice bob").unwrap().fullname.as_deref(), Some("Alice"));
    }

    #[test]
    fn dots_and_extract() {
        for line in [
            "-i bob", "-oi bob", "-o i bob", "-ti", "-it", "-t -i", "-t -oi",
        ] {
            assert!(p(line).unwrap().ignore_dots, "{line}");
        }
        assert!(p("-t").unwrap().extract);
        assert!(p("-ti").unwrap().extract);
        assert!(
            !p("-oem bob").unwrap().ignore_dots,
            "other -o options are ignored"
        );
        assert!(!p("-odb -oQ/var bob").unwrap().ignore_dots);
    }

    #[test]
    fn modes() {
        assert_eq!(p("-bs").unwrap().mode, Mode::Smtp);
        assert_eq!(p("-b s").unwrap().mode, Mode::Smtp);
        assert_eq!(p("-bp").unwrap().mode, Mode::ListQueue);
        assert_eq!(p("-bi").unwrap().mode, Mode::NewAliases);
        assert_eq!(p("-bm bob").unwrap().mode, Mode::Deliver);
        for q in ["-q", "-q30m", "-q1h", "-qIABC", "-qRexample.org", "-v -q"] {
            assert_eq!(p(q).unwrap().mode, Mode::Flush, "{q}");
        }
        assert_eq!(parse("mailq", &[]).unwrap().mode, Mode::ListQueue);
        assert_eq!(parse("newaliases", &[]).unwrap().mode, Mode::NewAliases);
        assert_eq!(
            parse("mailq", &["-C".into(), "/x".into()]).unwrap().mode,
            Mode::ListQueue
        );
        assert_eq!(p("-bd").unwrap_err().code, exit::USAGE);
        assert_eq!(p("-bv bob").unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn config_dir_forms() {
        for line in ["-C /tmp/etc bob", "-C/tmp/etc bob"] {
            let o = p(line).unwrap();
            assert_eq!(o.config_dir, Some(PathBuf::from("/tmp/etc")), "{line}");
            assert_eq!(o.recipients, vec!["bob"]);
        }
    }

    #[test]
    fn ignored_options_take_their_values() {
        let o = p("-v -v -N success,failure -R hdrs -Venvid -V envid2 -B 8BITMIME -L tag -X /tmp/log -Ox=y -h 5 -G -U -m -n -Am bob").unwrap();
        assert_eq!(o.verbose, 2);
        assert_eq!(o.recipients, vec!["bob"]);
        let o = p("-N never -oee -- -dash").unwrap();
        assert_eq!(o.recipients, vec!["-dash"]);
    }

    #[test]
    fn first_operand_ends_options() {
        let o = p("bob -t").unwrap();
        assert!(!o.extract);
        assert_eq!(o.recipients, vec!["bob", "-t"]);
        assert_eq!(p("- bob").unwrap().recipients, vec!["-", "bob"]);
    }

    #[test]
    fn usage_errors() {
        for line in ["-z bob", "-f", "-t -C", "-é"] {
            let e = p(line).unwrap_err();
            assert_eq!(e.code, exit::USAGE, "{line}");
        }
        assert!(p("-z").unwrap_err().reason.contains("illegal option -- z"));
    }
}
