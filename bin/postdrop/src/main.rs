//! # postdrop — write a local submission into the maildrop queue
//!
//! ## SYNOPSIS
//!
//! `postdrop [-c CONFIG_DIR] [-f SENDER] [-A name=value]... [--] RECIPIENT... < FRAMED_MESSAGE`
//!
//! `postdrop [-c CONFIG_DIR] -q`
//!
//! ## DESCRIPTION
//!
//! postdrop is the only program that creates files in `maildrop/`. It is an internal
//! program run by `sendmail`, which has already turned CRLF into LF and handled the lone
//! `.` line. postdrop reads the message from standard input in this framing, the only
//! input it accepts:
//!
//! - chunks, each a 4-byte big-endian length N (1 ≤ N ≤ 65536) followed by N bytes of
//!   the message;
//! - then a zero-length chunk (four zero bytes), the end marker, and the end of input.
//!
//! Only a sender that got to the end of the message writes the end marker, so a sendmail
//! killed halfway (even with SIGKILL) cannot get a truncated message queued. postdrop
//! copies the chunks' bytes unchanged into `queue_directory/maildrop/ID` (a queue file in
//! the format of `petrel_queue::file`) with:
//!
//! - the envelope sender from `-f` (`<>` or the empty string is the null sender; without
//!   `-f`, the login name of the real uid);
//! - the attributes `uid=` (real uid), `user=` (its login name, or the number when it has
//!   none), `protocol=local`, then every `-A name=value`; only `fullname`, `envid` and `ret`
//!   may be given with `-A`, so a user cannot forge what postdrop itself records;
//! - the recipients, in order.
//!
//! The file is written with mode 0600, fsynced, marked complete with mode 0644, and the
//! directory is fsynced (a user's postdrop may write into `maildrop/` but not read it, so
//! it cannot open it: then syncfs(2) on the file makes the new name durable instead).
//! Only then is the queue id printed on standard output and the exit
//! status 0; pickup is then poked through `public/pickup` (a stopped mail system is fine:
//! pickup finds the file on its next scan).
//!
//! With `-q` (and no sender, attribute or recipient) postdrop lists the queue instead, for
//! a user who may not read it: `petrel queue list` (so `mailq`) runs `postdrop -c DIR -q`
//! when it cannot read the queue directories. postdrop connects to
//! `queue_directory/public/showq` (showq(8)), copies everything it receives to standard
//! output without interpreting it, and exits 0. It waits at most 30 seconds for the
//! connection to be accepted and for each read, and stops after 64 MiB.
//!
//! ## SECURITY
//!
//! postdrop is installed set-group-id `setgid_group`, the only group that may write into
//! `maildrop/` (mode 1730) and reach the sockets in `public/` (showq's for `-q`). It runs
//! as the calling user otherwise. When a configuration directory other than /etc/petrel
//! is named (`-c` or `PETREL_CONFIG`) by anyone but root, postdrop gives up the group
//! privilege first: an alternative configuration only works for a spool the user can
//! write to anyway (a sandbox). Sender, recipients and attribute
//! values must be at most 998 bytes without control characters. On any error, and on
//! SIGHUP, SIGINT, SIGQUIT, SIGTERM or SIGXFSZ, the partial file is removed.
//!
//! Input that breaks the framing is refused the same way: when it ends without the end
//! marker (`message input ended early (no end marker)`, or `(K of the N bytes of a
//! chunk, no end marker)` when it stops inside a chunk or a length), when a chunk is
//! longer than 65536 bytes (`bad message input framing: chunk of N bytes, more than
//! 65536`), or when anything follows the end marker (`bad message input framing: data
//! after the end marker`), the partial file is removed and postdrop exits 75.
//!
//! ## DIAGNOSTICS
//!
//! One line on standard error, `postdrop: fatal: REASON`, and an exit status from
//! sysexits.h: 64 (EX_USAGE: bad option, no recipients, `-q` with anything but `-c`),
//! 65 (EX_DATAERR: bad address or attribute, message larger than `message_size_limit`),
//! 71 (EX_OSERR: a system call that should not fail did, or with `-q` standard output
//! could not be written), 75 (EX_TEMPFAIL: the maildrop file could not be written, or the
//! input ended early or broke the framing; try again. With `-q`: showq could not be
//! reached, `QUEUE/public/showq: REASON: is the mail system running?`, or did not answer
//! in time, sent nothing or more than 64 MiB), 78 (EX_CONFIG: unreadable or invalid
//! petrel.conf).
//!
//! ## CONFIGURATION PARAMETERS
//!
//! `queue_directory`, `message_size_limit` (0 = no limit).
//!
//! ## FILES
//!
//! `CONFIG_DIR/petrel.conf`, `queue_directory/maildrop/`, `queue_directory/public/pickup`,
//! `queue_directory/public/showq`.
//!
//! ## SEE ALSO
//!
//! sendmail(1), pickup(8), showq(8), cleanup(8)

mod args;
use petrel_ipc::chunked as frame;
mod list;
mod maildrop;
mod signals;

use std::io::Write;
use std::path::{Path, PathBuf};

use petrel_config::Config;

pub(crate) use petrel_util::sysexits as exit;
pub(crate) use petrel_util::sysexits::Fatal;

fn main() {
    let args = match args::os_args().and_then(|a| args::parse(&a)) {
        Ok(a) => a,
        Err(f) => fail(f),
    };
    if args.list {
        let done = enter_queue(args.config_dir.as_deref())
            .and_then(|(_, q)| list::run(&q.join(list::SOCKET), &mut std::io::stdout().lock()));
        if let Err(f) = done {
            fail(f);
        }
        return;
    }
    match submit(args) {
        Ok(id) => {
            // The file is durable: the id is the promise. A caller that went away is no
            // reason to fail now.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{id}");
            let _ = out.flush();
            drop(out);
            petrel_daemon::trigger(Path::new("public/pickup"));
        }
        Err(f) => fail(f),
    }
}

/// Reports `f` on standard error and exits with its status.
fn fail(f: Fatal) -> ! {
    // The caller may be gone (a killed sendmail): that must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "postdrop: fatal: {}", f.reason);
    std::process::exit(f.code);
}

/// Loads the configuration of `config_dir` (giving up the group privilege first for one
/// that is not the default) and changes to the queue directory; returns both.
fn enter_queue(config_dir: Option<&Path>) -> Result<(Config, PathBuf), Fatal> {
    let dir = petrel_config::config_dir(config_dir);
    if dir != Path::new(petrel_config::DEFAULT_CONFIG_DIR) {
        drop_setgid()?;
    }
    let cfg = Config::load(&dir).map_err(|e| Fatal::new(exit::CONFIG, e.to_string()))?;
    cfg.validate()
        .map_err(|e| Fatal::new(exit::CONFIG, e.to_string()))?;
    let queue_dir = PathBuf::from(cfg.get("queue_directory"));
    std::env::set_current_dir(&queue_dir).map_err(|e| {
        Fatal::new(
            exit::TEMPFAIL,
            format!("chdir {}: {e}", queue_dir.display()),
        )
    })?;
    Ok((cfg, queue_dir))
}

fn submit(args: args::Args) -> Result<petrel_queue::QueueId, Fatal> {
    let (cfg, _) = enter_queue(args.config_dir.as_deref())?;
    let limit = u64::try_from(cfg.get_int("message_size_limit")).unwrap_or(0);
    let (uid, user) = args::real_user();
    let sender = match args.sender {
        Some(s) => s,
        None => user.clone(),
    };
    let mut attrs = vec![
        ("uid".to_string(), uid.to_string()),
        ("user".to_string(), user),
        ("protocol".to_string(), "local".to_string()),
    ];
    attrs.extend(args.attrs);
    let sub = maildrop::Submission {
        sender,
        attrs,
        recipients: args.recipients,
        size_limit: limit,
    };
    signals::install()?;
    maildrop::write(Path::new("maildrop"), &sub, &mut std::io::stdin().lock())
}

/// Gives up the set-group-id privilege (a no-op when postdrop is not installed setgid, or
/// for root, who needs none).
fn drop_setgid() -> Result<(), Fatal> {
    use nix::unistd::{getegid, getgid, getuid, setresgid};
    let rgid = getgid();
    if getuid().is_root() || getegid() == rgid {
        return Ok(());
    }
    setresgid(rgid, rgid, rgid)
        .map_err(|e| Fatal::new(exit::OSERR, format!("cannot give up group privileges: {e}")))
}
