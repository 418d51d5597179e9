//! # showq — list the mail queue for users who may not read it
//!
//! ## SYNOPSIS
//!
//! `showq [generic daemon options]` (started by master, from services.conf)
//!
//! ## DESCRIPTION
//!
//! The queue directories belong to mail_owner (mode 0700), so an ordinary user's `mailq`
//! cannot read them. It asks showq instead: `mailq` runs `petrel queue list`, which, when
//! it may not read the queue, replaces itself with `postdrop -q`; postdrop (set-group-id
//! `setgid_group`) connects to showq's socket `public/showq` and copies what it gets to
//! standard output. This is Postfix's `postqueue -p` → `showq`.
//!
//! showq serves one client at a time: it accepts a connection, scans the queue
//! (`maildrop/`, `incoming/`, `active/`, `deferred/`, `hold/` and the reasons in
//! `defer/`), writes the listing `petrel queue list` prints (`petrel_queue::listing`),
//! byte for byte the same, and closes the connection. It reads nothing from the client.
//!
//! ## SECURITY
//!
//! showq runs as `mail_owner` with no privileges (it refuses to run as root), chrooted to
//! the queue directory in the default services.conf; it uses only paths relative to it.
//! It never reads from its clients. A client that does not read the listing holds showq
//! for at most 10 seconds per write. Everyone in `setgid_group` (and so every user, through
//! postdrop) may see the whole queue: senders, recipients and deferral reasons, as with
//! Postfix's default `authorized_mailq_users = static:anyone`; leave the service out of
//! services.conf to keep the queue to root and mail_owner. The local time zone is loaded
//! before the chroot, so the arrival times are those `petrel queue list` prints.
//! A listener that is not a Unix-domain socket (an `inet` line) is refused.
//!
//! ## DIAGNOSTICS
//!
//! Problems go to the mail log: `warning: client: timed out after 10s writing the
//! listing`, `warning: client: write the listing: REASON`, `warning: accept: REASON`.
//! None of them stops showq.
//!
//! ## CONFIGURATION PARAMETERS
//!
//! `queue_directory` (the daemon runs in it).
//!
//! ## FILES
//!
//! `public/showq`, `maildrop/`, `incoming/`, `active/`, `deferred/`, `hold/`, `defer/`
//! under `queue_directory`.
//!
//! ## SEE ALSO
//!
//! postdrop(1), petrel(1), sendmail(1), master(8)

mod serve;

use std::path::Path;
use std::time::Duration;

use petrel_daemon::RootNeeds;

/// How long one write to a client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let (daemon, ()) = petrel_daemon::start_with("showq", RootNeeds::Nothing, "mail_owner", |_| {
        // The first local-time conversion reads the time zone (/etc/localtime), which
        // the chroot would hide; later ones use what it read.
        petrel_queue::asctime_date(0);
        Ok(())
    });
    let Some(fd) = daemon.listener else {
        petrel_log::fatal("no listening socket from master (showq runs as a service)");
    };
    let listener = match serve::unix_listener(fd) {
        Ok(l) => l,
        Err(e) => petrel_log::fatal(e),
    };
    serve::run(&listener, Path::new("."), WRITE_TIMEOUT)
}
