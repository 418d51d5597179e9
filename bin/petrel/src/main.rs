//! petrel — control the Petrel mail system
//!
//! # SYNOPSIS
//!
//! ```text
//! petrel [-c config_dir] sandbox DIR [--port-base N] [--force]
//! petrel [-c config_dir] start | start-fg | stop | reload | status | check
//! petrel [-c config_dir] queue list | show ID | flush | hold ID...|ALL | release ID...|ALL | delete ID...|ALL
//! petrel [-c config_dir] config show [-n] [NAME...]
//! petrel [-c config_dir] config set NAME=VALUE...
//! petrel [-c config_dir] user add NAME | del NAME | list | passwd NAME
//! petrel [-c config_dir] set-permissions
//! ```
//!
//! # DESCRIPTION
//!
//! The operator's command. The configuration directory is `-c config_dir`, else
//! `$PETREL_CONFIG`, else `/etc/petrel`.
//!
//! - `sandbox DIR`: writes a self-contained configuration, spool and mail store under DIR
//!   for the invoking user (listeners on 127.0.0.1 at N+25, N+587, N+465, N+143, N+993,
//!   N+110, N+995 for the
//!   programs that are installed; default N is 10000) and an account `demo` whose password
//!   it prints. Refuses to overwrite an existing sandbox without `--force`.
//! - `start`: checks the configuration, creates the spool if needed and starts `master` in
//!   the background; `start-fg` runs it in the foreground (for service managers).
//!   `stop` stops it (SIGTERM, waiting up to 30 s), `reload` makes it re-read its
//!   configuration (SIGHUP), `status` tells whether it runs.
//! - `check`: reports configuration warnings and errors, services whose program is
//!   missing from `daemon_directory`, spool directories with the wrong mode or owner, and
//!   (as root) a postdrop that is not set-group-id `setgid_group`.
//! - `queue list` lists the queue like `mailq` (`*` after the id: being delivered, `!`: on
//!   hold); a user who may not read the queue gets the listing from showq, through
//!   `daemon_directory/postdrop -c DIR -q` (set-group-id), which `list` replaces itself
//!   with; `queue show` prints one queue file; `queue flush` asks qmgr to retry deferred
//!   mail now; `hold`, `release` and `delete` work like Postfix's `postsuper -h/-H/-d`.
//! - `config show` prints every parameter with its effective value, like `postconf`;
//!   `-n` prints only those `petrel.conf` sets to something other than the default, as
//!   written (what was changed).
//! - `config set` changes `petrel.conf` like `postconf -e`: each `NAME=VALUE` (or
//!   `NAME = VALUE` in one argument) replaces the line that sets NAME (the last one, the
//!   one in effect, when it is set twice; its continuation lines go) or is appended.
//!   Comments and every other line stay as they are. Names and values are checked first
//!   (a known parameter's value as `check` would); nothing is written when one is wrong;
//!   an unknown name is only warned about. The new file replaces the old by rename, with
//!   its mode and owner. Silent on success; a running system reads it on `reload`.
//! - `user` manages the accounts of a `user_database = passwd-file:PATH` (Dovecot's
//!   format, `auth_password_scheme` hashes). `add` and `passwd` read the password from
//!   standard input when it is not a terminal, else ask twice without echo. Run by root
//!   on an installed system, `add` gives the account `virtual_mail_owner`'s uid and gid
//!   and a home under `virtual_mailbox_base`.
//! - `set-permissions` (root only; after `make install`, and in the Debian postinst):
//!   creates the missing system users and groups (`setgid_group`, `mail_owner`,
//!   `auth_owner`, `virtual_mail_owner`), the spool and `data_directory` with their
//!   owners and modes, makes `postdrop` set-group-id `setgid_group`, gives
//!   `auth_password_file` to root and auth_owner's group (0640), and makes a self-signed
//!   certificate where the TLS parameters name missing files inside `config_directory`.
//!   It prints one line per change; a second run prints nothing.
//!
//! # DIAGNOSTICS
//!
//! Errors go to standard error as `petrel: fatal: reason` with exit status 1; usage errors
//! exit with status 64.

mod check;
mod confset;
mod confshow;
mod control;
mod perms;
mod queue;
mod sandbox;
mod users;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// How a command failed.
#[derive(Debug)]
pub enum Fail {
    /// Printed as `petrel: fatal: MSG`.
    Fatal(String),
    /// Printed as `petrel: MSG` (a state, not a malfunction: "is not running").
    Msg(String),
    /// Already reported.
    Silent,
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Fatal(s)
    }
}

/// What every command returns.
pub type Res<T = ()> = Result<T, Fail>;

#[derive(Parser, Debug)]
#[command(name = "petrel", version, about = "Control the Petrel mail system")]
struct Cli {
    /// Configuration directory (default: $PETREL_CONFIG, else /etc/petrel).
    #[arg(short = 'c', global = true, value_name = "DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a self-contained sandbox under DIR for the invoking user.
    Sandbox {
        /// Where to create it.
        dir: PathBuf,
        /// Listeners go on 127.0.0.1 at N+25, N+587, N+465, N+143, N+993, N+110, N+995.
        #[arg(long, value_name = "N", default_value_t = 10000)]
        port_base: u16,
        /// Overwrite an existing sandbox configuration.
        #[arg(long)]
        force: bool,
    },
    /// Start the mail system in the background.
    Start,
    /// Run the master process in the foreground.
    #[command(name = "start-fg")]
    StartFg,
    /// Stop the mail system.
    Stop,
    /// Make the running mail system re-read its configuration.
    Reload,
    /// Tell whether the mail system is running.
    Status,
    /// Check the configuration, the programs and the spool.
    Check,
    /// Look at and manage the mail queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// Show or change configuration parameters.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Manage the accounts of a passwd-file user database.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Create the users, groups, directories and files an installed system needs, with
    /// their owners and modes (run by root).
    #[command(name = "set-permissions")]
    SetPermissions,
}

#[derive(Subcommand, Debug)]
enum QueueCmd {
    /// List the queue, like mailq.
    List,
    /// Print one queue file, envelope and message.
    Show {
        /// Queue id.
        id: String,
    },
    /// Ask qmgr to retry every deferred message now.
    Flush,
    /// Put messages on hold.
    Hold {
        /// Queue ids, or ALL.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages.
    Release {
        /// Queue ids, or ALL.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete messages.
    Delete {
        /// Queue ids, or ALL.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print parameters as `name = value`.
    Show {
        /// Only the parameters petrel.conf changes from their default, as written.
        #[arg(short = 'n')]
        explicit: bool,
        /// Only these parameters.
        names: Vec<String>,
    },
    /// Change parameters in petrel.conf, like postconf -e.
    Set {
        /// `name=value` (or `name = value` as one argument); `name=` sets it empty.
        #[arg(required = true, value_name = "NAME=VALUE", value_parser = confset::has_equals)]
        settings: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Add an account.
    Add {
        /// User name.
        name: String,
    },
    /// Remove an account (its mail is left in place).
    Del {
        /// User name.
        name: String,
    },
    /// List the accounts.
    List,
    /// Change an account's password.
    Passwd {
        /// User name.
        name: String,
    },
}

fn run(cli: Cli) -> Res {
    let dir = petrel_config::config_dir(cli.config.as_deref());
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    match cli.cmd {
        Cmd::Sandbox {
            dir,
            port_base,
            force,
        } => sandbox::run(&dir, port_base, force),
        Cmd::Start => control::start(&dir),
        Cmd::StartFg => control::start_fg(&dir),
        Cmd::Stop => control::stop(&dir),
        Cmd::Reload => control::reload(&dir),
        Cmd::Status => control::status(&dir),
        Cmd::Check => check::run(&dir),
        Cmd::Queue { cmd } => match cmd {
            QueueCmd::List => queue::list(&dir),
            QueueCmd::Show { id } => queue::show(&dir, &id),
            QueueCmd::Flush => queue::flush(&dir),
            QueueCmd::Hold { ids } => queue::hold(&dir, &ids),
            QueueCmd::Release { ids } => queue::release(&dir, &ids),
            QueueCmd::Delete { ids } => queue::delete(&dir, &ids),
        },
        Cmd::Config { cmd } => match cmd {
            ConfigCmd::Show { explicit, names } => confshow::run(&dir, explicit, &names),
            ConfigCmd::Set { settings } => confset::run(&dir, &settings),
        },
        Cmd::User { cmd } => match cmd {
            UserCmd::Add { name } => users::add(&dir, &name),
            UserCmd::Del { name } => users::del(&dir, &name),
            UserCmd::List => users::list(&dir),
            UserCmd::Passwd { name } => users::passwd(&dir, &name),
        },
        Cmd::SetPermissions => perms::run(&dir),
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match run(cli) {
        Ok(()) => 0,
        Err(Fail::Fatal(m)) => {
            eprintln!("petrel: fatal: {m}");
            1
        }
        Err(Fail::Msg(m)) => {
            eprintln!("petrel: {m}");
            1
        }
        Err(Fail::Silent) => 1,
    };
    std::process::exit(code)
}

/// Loads petrel.conf (not validated); a broken file is fatal.
pub fn load_config(dir: &std::path::Path) -> Res<petrel_config::Config> {
    petrel_config::Config::load(dir).map_err(|e| Fail::Fatal(e.to_string()))
}
