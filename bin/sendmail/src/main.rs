//! # sendmail, mailq, newaliases — Petrel's sendmail-compatible front end
//!
//! ## SYNOPSIS
//!
//! ```text
//! sendmail [-C dir] [-f sender] [-F full_name] [-t] [-i | -oi] [-bm] [--] [recipient...]
//! sendmail [-C dir] -bs
//! sendmail [-C dir] -bp          mailq [-C dir]
//! sendmail [-C dir] -q[interval]
//! sendmail [-C dir] -bi          newaliases [-C dir]
//! ```
//!
//! ## DESCRIPTION
//!
//! sendmail reads a message on standard input and hands it to postdrop(1), which writes it
//! into the maildrop queue; pickup(8) then feeds it to cleanup(8). Lines may end in CRLF or
//! LF (LF is stored). Unless `-i` or `-oi` is given, a line holding a single `.` ends the
//! message. Recipients are the arguments; with `-t` the recipients in the `To:`, `Cc:` and
//! `Bcc:` fields (or, when the message has any, only `Resent-To:`, `Resent-Cc:`,
//! `Resent-Bcc:`) are added to them, and the `Bcc:` and `Resent-Bcc:` fields are removed.
//! Addresses are passed on as written: cleanup qualifies `bob` with `myorigin`.
//!
//! The envelope sender is `-f` (or `-r`), else the login name of the real user. `-F name`
//! is recorded for cleanup, which uses it in the `From:` field it adds when there is none.
//!
//! `-bs` speaks SMTP on standard input and output instead (EHLO, MAIL, RCPT, DATA, RSET,
//! NOOP, QUIT); each message is queued through postdrop before it is acknowledged.
//!
//! Either way the message goes to postdrop framed: in chunks of at most 64 KiB, each after
//! its 4-byte big-endian length, then a zero-length chunk as the end marker, written only
//! once the whole message has been. A sendmail that dies halfway (even by SIGKILL) or
//! cannot read its input to the end leaves postdrop an input without the end marker, and
//! postdrop then removes its partial file: nothing truncated is queued.
//!
//! `-bp` (or running as `mailq`) runs `petrel -c DIR queue list`; `-q` with any interval
//! runs `petrel -c DIR queue flush`. `-bi` (or running as `newaliases`) checks every file in
//! `alias_database` and prints how many aliases each one has: local delivery reads the
//! text file itself, so there is no database to build.
//!
//! Accepted for compatibility and ignored: `-oX...` other than `-oi`, `-OX=Y`, `-v`,
//! `-N dsn`, `-R ret`, `-V envid`, `-B type`, `-L label`, `-X file`, `-A x`, `-h hops`,
//! `-G`, `-U`, `-m`, `-n`, and `-bm` (the default). The first argument that is not an
//! option, or `--`, ends the options.
//!
//! ## ENVIRONMENT
//!
//! `PETREL_CONFIG`: the configuration directory when `-C` is not given (default
//! /etc/petrel). `PETREL_POSTDROP` and `PETREL_CLI`: run these programs instead of
//! `daemon_directory/postdrop` and `command_directory/petrel` (for tests).
//!
//! ## DIAGNOSTICS
//!
//! Problems are reported on standard error as `sendmail: fatal: REASON`, with an exit status
//! from sysexits.h: 64 EX_USAGE (bad option, no recipients), 65 EX_DATAERR (bad address,
//! message too large, errors in an aliases file), 67 EX_NOUSER (the real user has no login
//! name and no `-f` was given), 70 EX_SOFTWARE, 71 EX_OSERR (a program could not be
//! run), 75 EX_TEMPFAIL (the message could not be queued now; try again), 78 EX_CONFIG
//! (petrel.conf unreadable or invalid). When postdrop fails, its status is sendmail's.
//!
//! ## CONFIGURATION PARAMETERS
//!
//! `daemon_directory`, `command_directory`, `alias_database`, `myhostname` (the `-bs`
//! greeting), `message_size_limit` (`-bs`; postdrop enforces it otherwise),
//! `header_size_limit` (how much of the header `-t` reads).
//!
//! ## SEE ALSO
//!
//! postdrop(1), pickup(8), cleanup(8), petrel(1)

mod addrlist;
mod aliases;
mod flags;
mod input;
mod queue;
mod smtp;
mod submit;

use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use petrel_config::Config;

use flags::{Mode, Options};
use submit::{Envelope, Postdrop};

pub(crate) use petrel_util::sysexits as exit;
pub(crate) use petrel_util::sysexits::Fatal;

fn main() {
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("sendmail")
        .to_string();
    let name = match program.as_str() {
        "mailq" | "newaliases" => program.as_str(),
        _ => "sendmail",
    };
    let code = match run(&program, argv) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{name}: fatal: {}", f.reason);
            f.code
        }
    };
    std::process::exit(code);
}

fn run(program: &str, argv: std::env::ArgsOs) -> Result<i32, Fatal> {
    let args = argv
        .map(|a| {
            a.into_string()
                .map_err(|a| Fatal::new(exit::USAGE, format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<String>, Fatal>>()?;
    let opts = flags::parse(program, &args)?;
    let dir = petrel_config::config_dir(opts.config_dir.as_deref());
    let cfg = Config::load(&dir).map_err(|e| Fatal::new(exit::CONFIG, e.to_string()))?;
    cfg.validate()
        .map_err(|e| Fatal::new(exit::CONFIG, e.to_string()))?;
    let postdrop = Postdrop {
        program: match std::env::var_os("PETREL_POSTDROP") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => Path::new(&cfg.get("daemon_directory")).join("postdrop"),
        },
        config_dir: dir.clone(),
    };
    match opts.mode {
        Mode::ListQueue => Err(queue::exec(&cfg, &dir, "list")),
        Mode::Flush => Err(queue::exec(&cfg, &dir, "flush")),
        Mode::NewAliases => Ok(aliases::check(
            &cfg.get_list("alias_database"),
            &mut io::stdout(),
            &mut io::stderr(),
        )),
        Mode::Smtp => smtp_session(&cfg, &opts, &postdrop),
        Mode::Deliver => deliver(&cfg, &opts, &postdrop),
    }
}

/// The login name of the real uid.
fn login_name() -> Result<String, Fatal> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok(u.name),
        _ => Err(Fatal::new(
            exit::NOUSER,
            format!("no login name found for user ID {uid}; use -f"),
        )),
    }
}

/// Reads the message on standard input and submits it.
fn deliver(cfg: &Config, opts: &Options, postdrop: &Postdrop) -> Result<i32, Fatal> {
    if !opts.extract && opts.recipients.is_empty() {
        return Err(Fatal::new(exit::USAGE, "no recipients specified"));
    }
    let sender = match &opts.sender {
        Some(s) => s.clone(),
        None => login_name()?,
    };
    let read_err = |e: io::Error| Fatal::new(exit::TEMPFAIL, format!("reading the message: {e}"));
    let mut input = input::Input::new(io::stdin().lock(), opts.ignore_dots);
    let mut head = Vec::new();
    let mut recipients = opts.recipients.clone();
    if opts.extract {
        let limit = usize::try_from(cfg.get_int("header_size_limit")).unwrap_or(102_400);
        let h = input::read_header(&mut input, limit).map_err(read_err)?;
        let e = input::extract(h.fields);
        for r in e.recipients {
            if !recipients.contains(&r) {
                recipients.push(r);
            }
        }
        head = e.kept.concat();
        head.extend(h.next.unwrap_or_default());
        if recipients.is_empty() {
            return Err(Fatal::new(
                exit::USAGE,
                "no recipient addresses found in message header",
            ));
        }
    }
    let env = Envelope {
        sender,
        fullname: opts.fullname.clone(),
        recipients,
    };
    let id = postdrop.submit(&env, |w| {
        w.write_all(&head)?;
        let mut line = Vec::new();
        while input.next_line(&mut line)? {
            w.write_all(&line)?;
        }
        Ok(())
    })?;
    if opts.verbose > 0 {
        eprintln!("sendmail: queued as {id}");
    }
    Ok(0)
}

/// `-bs`: an SMTP dialogue on standard input and output.
fn smtp_session(cfg: &Config, opts: &Options, postdrop: &Postdrop) -> Result<i32, Fatal> {
    let limit = u64::try_from(cfg.get_int("message_size_limit")).unwrap_or(0);
    let mut session = smtp::Session::new(&cfg.get("myhostname"), limit);
    let mut input = BufReader::new(io::stdin());
    let mut output = io::BufWriter::new(io::stdout().lock());
    smtp::serve(&mut session, &mut input, &mut output, |m| {
        let env = Envelope {
            sender: m.sender.clone(),
            fullname: opts.fullname.clone(),
            recipients: m.recipients.clone(),
        };
        postdrop
            .submit(&env, |w| w.write_all(&m.data))
            .map_err(|f| f.reason)
    })
    .map_err(|e| Fatal::new(exit::TEMPFAIL, format!("SMTP session: {e}")))?;
    Ok(0)
}
