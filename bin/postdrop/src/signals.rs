//! Removing the partial maildrop file when postdrop is interrupted.
//!
//! The handler may only make async-signal-safe calls: it takes the path (a C string
//! published through an atomic pointer), unlinks it and `_exit`s with EX_TEMPFAIL.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{exit, Fatal};

static PARTIAL: AtomicPtr<libc::c_char> = AtomicPtr::new(ptr::null_mut());

extern "C" fn on_signal(_: libc::c_int) {
    let p = PARTIAL.swap(ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink and _exit are async-signal-safe; `p` is null or a C string leaked by
    // `arm` that nobody else can free any more (we took it out of PARTIAL).
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::_exit(exit::TEMPFAIL);
    }
}

/// Installs the handler for SIGHUP, SIGINT, SIGQUIT, SIGTERM and SIGXFSZ.
pub fn install() -> Result<(), Fatal> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::all(),
    );
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGXFSZ,
    ] {
        // SAFETY: the handler only uses async-signal-safe calls (see the module docs).
        unsafe { sigaction(sig, &act) }
            .map_err(|e| Fatal::new(exit::OSERR, format!("sigaction {sig}: {e}")))?;
    }
    Ok(())
}

/// From now on a signal removes `path`.
pub fn arm(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    free(PARTIAL.swap(c.into_raw(), Ordering::SeqCst));
}

/// A signal no longer removes anything.
pub fn disarm() {
    free(PARTIAL.swap(ptr::null_mut(), Ordering::SeqCst));
}

fn free(p: *mut libc::c_char) {
    if !p.is_null() {
        // SAFETY: every non-null pointer in PARTIAL came from CString::into_raw in `arm`,
        // and swapping it out made this the only owner.
        drop(unsafe { CString::from_raw(p) });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    #[test]
    fn arm_and_disarm_do_not_leak_or_double_free() {
        super::arm(std::path::Path::new("maildrop/A"));
        super::arm(std::path::Path::new("maildrop/B"));
        super::disarm();
        super::disarm();
    }
}
