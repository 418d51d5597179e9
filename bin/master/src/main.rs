//! master — the Petrel process manager
//!
//! # SYNOPSIS
//!
//! `master [-c config_dir]`
//!
//! # DESCRIPTION
//!
//! `master` is the one long-running process of the Petrel mail system that everything else
//! hangs off. It runs in the foreground (`petrel start` detaches it; `petrel start-fg` is
//! for service managers) and never parses network input. In order, it:
//!
//! 1. reads and validates `petrel.conf` (a bad value is fatal, with the file, line and
//!    reason), opens the log, and reads `services.conf`;
//! 2. changes to `queue_directory` and makes sure the spool exists with the right modes
//!    (and owners, when it runs as root);
//! 3. takes an exclusive lock on `pid/master.lock` for its whole life, so two masters never
//!    share a spool, and writes its process id to `pid/master.pid`;
//! 4. opens every listener: `private/NAME` (mode 0600) or `public/NAME` (mode 0660) for
//!    unix services, a TCP socket on `host:port` for inet services (every address in
//!    `inet_interfaces` when the host is empty);
//! 5. starts `maxproc` processes of each service as
//!    `daemon_directory/COMMAND -c CONFIG_DIR -n NAME -t unix|inet [-u] [-r] [ARGS...]`,
//!    with the listening socket on file descriptor 3 and `PETREL_LISTEN_FD=3`.
//!
//! It then supervises: a process that ends is logged (`warning: process PATH pid N exit
//! status S` or `... killed by signal S`) and restarted, at once after a clean exit, after
//! a growing delay (0 s, 1 s, 2 s, 4 s, ... up to `service_throttle_time`) when it keeps
//! failing; services with a `wakeup` time are poked every so many seconds.
//!
//! # PRIVILEGES
//!
//! Run by root, master opens the sockets and each service drops to `mail_owner` itself.
//! Run by anybody else (or by root when `mail_owner` is root), every service runs as that
//! user: "unprivileged mode", logged once at start-up.
//!
//! # SIGNALS
//!
//! - `SIGHUP`: re-read `petrel.conf` and `services.conf`. A bad file is logged
//!   (`error: reload: FILE, line N: reason`) and the running set is kept. Otherwise the
//!   listeners of unchanged services stay open, new ones are opened, removed ones closed,
//!   and every process is replaced by one of the new set.
//! - `SIGTERM`, `SIGINT`: stop every service (SIGTERM, then SIGKILL after 10 s), remove
//!   `pid/master.pid` and exit 0.
//!
//! # EXIT STATUS
//!
//! 0 after a clean stop; 1 on a fatal error, including `the Petrel mail system is already
//! running`; 64 on a usage error.
//!
//! # FILES
//!
//! `CONFIG_DIR/petrel.conf`, `CONFIG_DIR/services.conf`, `queue_directory/pid/master.pid`,
//! `queue_directory/pid/master.lock`.

mod backoff;
mod listen;
mod startup;
mod supervisor;

use std::path::PathBuf;

const USAGE: &str = "usage: master [-c config_dir]";

fn main() {
    let mut config_dir: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-c") => match args.next() {
                Some(d) => config_dir = Some(PathBuf::from(d)),
                None => usage(),
            },
            Some("-h") | Some("--help") => {
                println!("{USAGE}");
                return;
            }
            _ => usage(),
        }
    }
    supervisor::block_signals();
    let dir = petrel_config::config_dir(config_dir.as_deref());
    let started = startup::start(&dir);
    supervisor::Master::new(started).run()
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(64)
}
