//! qmgr — the Petrel queue manager.
//!
//! SYNOPSIS: started by master as the `qmgr` service (`public/qmgr`).
//!
//! DESCRIPTION: qmgr moves new messages from `incoming/` to `active/`, hands each
//! recipient to its delivery agent (`local` for the domains in mydestination, `smtp` for
//! the rest) over `private/TRANSPORT`, and acts on the outcome: delivered recipients are
//! finished; permanently failed ones are returned to the sender in an RFC 3464
//! non-delivery notification (never for mail from the null sender); temporarily failed
//! ones wait in `deferred/` and are retried with a back-off between minimal_backoff_time
//! and maximal_backoff_time until maximal_queue_lifetime, when they are returned too. A
//! message leaves the queue only when every recipient is finished; recipients finished
//! before that are marked in the queue file and fsynced. `petrel queue flush` and
//! `sendmail -q` send a flush notice that retries deferred mail at once.
//!
//! SECURITY: runs as mail_owner, may be chrooted to the queue directory.
//!
//! CONFIGURATION PARAMETERS: mydestination, queue_run_delay, minimal_backoff_time,
//! maximal_backoff_time, maximal_queue_lifetime, bounce_queue_lifetime,
//! local_concurrency_limit, myhostname.
//!
//! FILES: incoming/, active/, deferred/, corrupt/, defer/, public/qmgr, private/local.

mod bounce;
mod manager;
mod policy;

fn main() {
    let d = petrel_daemon::start("qmgr", petrel_daemon::RootNeeds::Nothing);
    let Some(fd) = d.listener else {
        petrel_log::fatal("no listening socket: qmgr must be started by master");
    };
    let c = &d.cfg;
    let settings = policy::Settings {
        mydestination: c.get_list("mydestination"),
        minimal_backoff: c.get_time("minimal_backoff_time"),
        maximal_backoff: c.get_time("maximal_backoff_time"),
        queue_run_delay: c
            .get_time("queue_run_delay")
            .max(std::time::Duration::from_secs(1)),
        maximal_queue_lifetime: c.get_time("maximal_queue_lifetime"),
        bounce_queue_lifetime: c.get_time("bounce_queue_lifetime"),
        local_concurrency: c.get_int("local_concurrency_limit").max(1) as usize,
        myhostname: c.get("myhostname"),
        active_limit: 1000,
    };
    let listener = std::os::unix::net::UnixListener::from(fd);
    let result = manager::Manager::new(listener, settings).and_then(|mut m| m.run());
    if let Err(e) = result {
        petrel_log::fatal(format!("qmgr: {e}"));
    }
}
