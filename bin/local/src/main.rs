//! local — Petrel's local delivery agent.
//!
//! SYNOPSIS: started by master as the `local` service (`private/local`), as root.
//!
//! DESCRIPTION: local delivers mail for the domains in mydestination. A recipient's local
//! part (without a `+extension` when recipient_delimiter is set) is looked up in
//! alias_maps (lists, `:include:` files, `/file` and `|command` destinations, loops
//! detected); what remains must be a user of user_database (`unix:passwd` or a Dovecot
//! style `passwd-file:`), otherwise the recipient bounces with 5.1.1. A user's `.forward`
//! (forward_path) replaces the mailbox. With `home_mailbox = Maildir/` mail goes to the
//! user's Maildir (tmp → new, fsynced, names derived from the queue id so that a repeated
//! attempt after a crash is recognised and not delivered twice); otherwise it is appended
//! to an mbox (home_mailbox, or mail_spool_directory/USER) under fcntl and dotlock locks
//! with mboxrd `>From ` quoting. Every copy gets `Return-Path:` and `Delivered-To:`; a
//! message that already carries this Delivered-To bounces as a forwarding loop. Addresses
//! in other domains named by aliases or .forward files are queued again through cleanup.
//! A mailbox that cannot be written (full disk, missing home) defers; nothing is dropped.
//! Each delivery is logged: `ID: to=<user@domain>, relay=local, delay=0.2, dsn=2.0.0,
//! status=sent (delivered to maildir)`.
//!
//! SECURITY: runs as root keeping only the capabilities to change identity and reach
//! mailboxes; every mailbox write happens with the recipient's effective uid and gid,
//! commands and files run as the user (or default_privs for root-owned alias files).
//! local serves one qmgr connection at a time and changes its effective uid per delivery
//! (a process-wide property), so concurrency comes from master running several local
//! processes (maxproc), not threads.
//!
//! CONFIGURATION PARAMETERS: mydestination, myorigin, recipient_delimiter, alias_maps,
//! user_database, forward_path, home_mailbox, mail_spool_directory,
//! allow_mail_to_commands, allow_mail_to_files, default_privs, command_time_limit,
//! double_bounce_sender, hopcount_limit.

mod deliver;
mod privs;
mod resolve;

use petrel_ipc::delivery::Request;
use petrel_ipc::Incoming;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

fn main() {
    let d = petrel_daemon::start("local", petrel_daemon::RootNeeds::SwitchUsers);
    privs::set_privileged(d.privileged);
    let c = &d.cfg;
    let userdb = match petrel_maps::userdb::UserDb::from_spec(&c.get("user_database")) {
        Ok(u) => u,
        Err(e) => petrel_log::fatal(format!("user_database: {e}")),
    };
    let strip_type = |s: String| match s.split_once(':') {
        Some((t, rest)) if !t.contains('/') => rest.to_string(),
        _ => s,
    };
    let mut agent = deliver::Agent {
        s: resolve::Settings {
            mydestination: c.get_list("mydestination"),
            myorigin: c.get("myorigin"),
            recipient_delimiter: c.get("recipient_delimiter"),
            alias_maps: c
                .get_list("alias_maps")
                .into_iter()
                .map(strip_type)
                .map(PathBuf::from)
                .collect(),
            userdb,
            forward_path: c.get_list("forward_path"),
            allow_commands: c.get_list("allow_mail_to_commands"),
            allow_files: c.get_list("allow_mail_to_files"),
            double_bounce: c.get("double_bounce_sender"),
            default_privs: privs::user_ids(&c.get("default_privs")),
        },
        cache: resolve::AliasCache::default(),
        home_mailbox: c.get("home_mailbox"),
        mail_spool: PathBuf::from(c.get("mail_spool_directory")),
        hopcount_limit: c.get_int("hopcount_limit").max(1) as usize,
        command_time_limit: c.get_time("command_time_limit"),
    };
    let Some(fd) = d.listener else {
        petrel_log::fatal("no listening socket: local must be started by master");
    };
    let listener = UnixListener::from(fd);
    loop {
        let mut conn = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        // One qmgr connection at a time, one request at a time.
        loop {
            match petrel_ipc::read_frame::<Request>(&mut conn) {
                Ok(Some(Incoming::Msg(req))) => {
                    let reply = agent.handle(&req);
                    if let Err(e) = petrel_ipc::write_frame(&mut conn, &reply) {
                        log::warn!("{}: reply to qmgr: {e}", req.queue_id);
                        break;
                    }
                }
                Ok(Some(Incoming::Trigger)) => {}
                Ok(None) => break,
                Err(e) => {
                    log::warn!("qmgr connection: {e}");
                    break;
                }
            }
        }
    }
}
