//! authd — Petrel's authentication service.
//!
//! SYNOPSIS: started by master as the `auth` service (`private/auth`).
//!
//! DESCRIPTION: authd answers one question for smtpd, imapd and pop3d: is this user's
//! password right? (the `auth` protocol of petrel-ipc). It is the only program that reads
//! the password file (`auth_password_file`, Dovecot's passwd-file format), which it reads
//! again when its modification time changes. Password checks run on two worker threads
//! (argon2 takes 64 MiB each), off the event loop. A failed login is answered only after
//! `auth_failure_delay`; failures are counted per client address and per user, and past
//! `auth_failure_limit` the address (or, after three times as many, the user) is refused
//! for `auth_failure_lockout`.
//!
//! SECURITY: runs as `auth_owner` (not mail_owner) with no capabilities and no_new_privs;
//! accepts connections only from mail_owner, root and its own uid (SO_PEERCRED). Never
//! logs a password.
//!
//! CONFIGURATION PARAMETERS: auth_owner, auth_password_file, auth_failure_delay,
//! auth_failure_limit, auth_failure_window, auth_failure_lockout, mail_owner.
//!
//! FILES: private/auth, auth_password_file.

mod db;
mod pool;
mod server;

fn main() {
    let daemon = petrel_daemon::start_as("authd", petrel_daemon::RootNeeds::Nothing, "auth_owner");
    if let Err(e) = server::run(daemon) {
        petrel_log::fatal(e);
    }
}
