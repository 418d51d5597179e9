//! cleanup — canonicalise and enqueue Petrel mail.
//!
//! SYNOPSIS: started by master as the `cleanup` service (`private/cleanup`).
//!
//! DESCRIPTION: cleanup takes messages from pickup (a file in `maildrop/`), smtpd (a
//! stream) and Petrel's own programs (bounces, forwarded mail), and writes each as a queue
//! file in `incoming/`. On the way it qualifies addresses without a domain with
//! `myorigin`, removes duplicate recipients, enforces `message_size_limit`, puts a
//! `Received:` header on top and adds `Message-ID:`, `Date:` and (local submissions)
//! `From:` when missing. It answers "queued as ID" only after the file and its directory
//! are fsynced; then it tells qmgr. A client that goes away mid-message leaves no file.
//!
//! SECURITY: runs as mail_owner, may be chrooted to the queue directory; reads maildrop
//! files with O_NOFOLLOW and takes the submitting uid from the file's owner.
//!
//! CONFIGURATION PARAMETERS: myhostname, myorigin, message_size_limit,
//! header_size_limit, queue_directory.
//!
//! FILES: maildrop/, incoming/, corrupt/, private/cleanup, public/qmgr.

mod commit;
mod job;
mod server;

fn main() {
    let daemon = petrel_daemon::start("cleanup", petrel_daemon::RootNeeds::Nothing);
    if let Err(e) = server::run(daemon) {
        petrel_log::fatal(e);
    }
}
