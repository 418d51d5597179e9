//! Acting as the recipient: local runs as root (with a reduced capability set) and takes
//! the recipient's effective uid and gid for each mailbox write, then returns to root.
//! In unprivileged mode (not started as root) every delivery runs as the invoking user.

use nix::unistd::{getegid, geteuid, setegid, seteuid, Gid, Uid};
use std::sync::atomic::{AtomicBool, Ordering};

static PRIVILEGED: AtomicBool = AtomicBool::new(false);

/// Called once at start: true when the suite runs privileged (master started as root with
/// a mail_owner to become). In unprivileged mode nobody changes identity.
pub fn set_privileged(on: bool) {
    PRIVILEGED.store(on, Ordering::Relaxed);
}

/// Whether identity changes happen.
pub fn can_switch() -> bool {
    PRIVILEGED.load(Ordering::Relaxed) && geteuid().is_root()
}

/// Runs `f` with effective uid `uid` and gid `gid` (when running as root), then switches
/// back, whatever `f` returned.
pub fn as_user<T>(
    uid: u32,
    gid: u32,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    if !can_switch() || uid == 0 {
        return f();
    }
    let (old_u, old_g) = (geteuid(), getegid());
    let groups = [Gid::from_raw(gid)];
    nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
    setegid(Gid::from_raw(gid)).map_err(std::io::Error::from)?;
    if let Err(e) = seteuid(Uid::from_raw(uid)) {
        let _ = setegid(old_g);
        return Err(e.into());
    }
    let r = f();
    // Back to root: if this fails the process must not go on delivering as someone else.
    if seteuid(old_u).is_err() || setegid(old_g).is_err() {
        petrel_log::fatal("cannot switch back to root after a delivery");
    }
    let _ = nix::unistd::setgroups(&[old_g]);
    r
}

/// uid and gid of a user name, for `default_privs`.
pub fn user_ids(name: &str) -> (u32, u32) {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        _ => (65534, 65534),
    }
}
