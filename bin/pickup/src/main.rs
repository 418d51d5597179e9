//! # pickup — feed local submissions from maildrop/ to cleanup
//!
//! ## SYNOPSIS
//!
//! `pickup [generic daemon options]` (started by master, from services.conf)
//!
//! ## DESCRIPTION
//!
//! pickup scans `maildrop/` in name order (queue ids sort by time) and hands every complete
//! file to cleanup(8) over `private/cleanup`, one request at a time on one connection kept
//! open across files: `Request::Maildrop { name }`, then cleanup's reply. cleanup reads the
//! file, writes the queue file and removes the maildrop file; pickup only reads directory
//! entries and file modes, so it needs no rights on the files themselves.
//!
//! - `Queued`: nothing to log (cleanup logs the queue id).
//! - `Failed`, temporary: the file stays and is tried again at the next scan.
//! - `Failed`, permanent: cleanup has moved the file to `corrupt/`; pickup logs a warning.
//! - cleanup unreachable: one warning per scan, and a new scan a few seconds later.
//!
//! A file postdrop has not finished (mode without the read bits of 0644) is skipped; after
//! a day it is moved to `corrupt/` with a warning, as is anything postdrop would not have
//! written (a name that is not a queue id, a symbolic link, a directory). pickup never
//! deletes a file.
//!
//! pickup scans when someone connects to its socket `public/pickup` (postdrop after each
//! submission, master every `wakeup` seconds), and at least every 60 seconds without. It
//! reads and discards what such clients send, never waiting for them.
//!
//! ## SECURITY
//!
//! pickup runs as `mail_owner` with no privileges (it refuses to run as root), optionally
//! chrooted to the queue directory. It trusts nothing in maildrop/: cleanup parses the
//! files, and treats them as written by the uid recorded by postdrop.
//!
//! ## DIAGNOSTICS
//!
//! Problems go to the mail log: `warning: connect to private/cleanup: ...`,
//! `warning: maildrop/NAME: ...; moved to corrupt/NAME`.
//!
//! ## CONFIGURATION PARAMETERS
//!
//! `queue_directory` (the daemon runs in it); the scan interval follows `wakeup` in
//! services.conf, with 60 seconds as the longest pause.
//!
//! ## FILES
//!
//! `maildrop/`, `corrupt/`, `private/cleanup`, `public/pickup` under `queue_directory`.
//!
//! ## SEE ALSO
//!
//! postdrop(1), cleanup(8), master(8)

mod scan;
mod wakeup;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use petrel_daemon::RootNeeds;

/// Longest pause between scans.
const SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before trying again when cleanup could not be reached.
const RETRY_DELAY: Duration = Duration::from_secs(5);

fn main() {
    let daemon = petrel_daemon::start("pickup", RootNeeds::Nothing);
    let listener = daemon.listener.map(UnixListener::from);
    if listener.is_none() {
        log::info!(
            "no wake-up socket from master; scanning every {}s",
            SCAN_INTERVAL.as_secs()
        );
    }
    let mut wake = match wakeup::Wakeup::new(listener) {
        Ok(w) => w,
        Err(e) => petrel_log::fatal(format!("wake-up socket: {e}")),
    };
    let mut pickup = scan::Pickup::new(Path::new("."));
    loop {
        let report = pickup.scan();
        let pause = if report.cleanup_down {
            RETRY_DELAY
        } else {
            SCAN_INTERVAL
        };
        if !wake.wait(pause) {
            // Idle for a whole interval: do not hold a cleanup connection meanwhile.
            pickup.disconnect();
        }
    }
}
