//! qmgr — the Petrel queue manager.
//!
//! SYNOPSIS: started by master as the `qmgr` service (`public/qmgr`).
//!
//! DESCRIPTION: qmgr moves new messages from `incoming/` to `active/`, routes each
//! recipient (transport_maps, then local_transport for the domains in mydestination, then
//! default_transport with relayhost or the recipient's domain as next hop), hands the
//! recipients to their delivery agent over `private/TRANSPORT` in requests per next hop
//! (destination concurrency and recipient limits), and acts on the outcome: delivered
//! recipients are finished; permanently failed ones are returned to the sender in an RFC
//! 3464 non-delivery notification (a failed notice goes to 2bounce_notice_recipient, and
//! one of those that fails is dropped); a delay notice is sent once after
//! delay_warning_time; temporarily failed
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
//! local_concurrency_limit, myhostname, transport_maps, local_transport,
//! default_transport, relayhost, default_destination_concurrency_limit,
//! default_destination_recipient_limit, default_process_limit, delay_warning_time,
//! 2bounce_notice_recipient, double_bounce_sender.
//!
//! FILES: incoming/, active/, deferred/, corrupt/, defer/, public/qmgr, private/local,
//! private/smtp, private/lmtp.

mod bounce;
mod manager;
mod policy;

fn main() {
    let d = petrel_daemon::start("qmgr", petrel_daemon::RootNeeds::Nothing);
    let Some(fd) = d.listener else {
        petrel_log::fatal("no listening socket: qmgr must be started by master");
    };
    let c = &d.cfg;
    let transport_maps = match petrel_maps::table::Tables::open(&c.get_list("transport_maps")) {
        Ok(t) => t,
        Err(e) => petrel_log::fatal(format!("transport_maps: {e}")),
    };
    for w in transport_maps.warnings() {
        log::warn!("transport_maps: {w}");
    }
    let router = policy::Router {
        mydestination: c.get_list("mydestination"),
        transport_maps,
        local_transport: c.get("local_transport"),
        default_transport: c.get("default_transport"),
        relayhost: c.get("relayhost"),
        recipient_delimiter: c.get("recipient_delimiter"),
    };
    let settings = policy::Settings {
        minimal_backoff: c.get_time("minimal_backoff_time"),
        maximal_backoff: c.get_time("maximal_backoff_time"),
        queue_run_delay: c
            .get_time("queue_run_delay")
            .max(std::time::Duration::from_secs(1)),
        maximal_queue_lifetime: c.get_time("maximal_queue_lifetime"),
        bounce_queue_lifetime: c.get_time("bounce_queue_lifetime"),
        local_concurrency: c.get_int("local_concurrency_limit").max(1) as usize,
        dest_concurrency: c.get_int("default_destination_concurrency_limit").max(1) as usize,
        dest_recipient_limit: c.get_int("default_destination_recipient_limit").max(1) as usize,
        process_limit: c.get_int("default_process_limit").max(1) as usize,
        delay_warning: c.get_time("delay_warning_time"),
        myhostname: c.get("myhostname"),
        double_bounce_sender: c.get("double_bounce_sender"),
        notice_recipient: c.get("2bounce_notice_recipient"),
        active_limit: 1000,
    };
    let listener = std::os::unix::net::UnixListener::from(fd);
    let result = manager::Manager::new(listener, settings, router).and_then(|mut m| m.run());
    if let Err(e) = result {
        petrel_log::fatal(format!("qmgr: {e}"));
    }
}
