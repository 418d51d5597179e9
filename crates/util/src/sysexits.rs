//! Exit statuses from sysexits.h, as sendmail-compatible programs use them, and the one
//! value a command gives up with: a status and a one-line reason.

/// Bad command line.
pub const USAGE: i32 = 64;
/// Bad input data.
pub const DATAERR: i32 = 65;
/// No such user.
pub const NOUSER: i32 = 67;
/// Our own bug.
pub const SOFTWARE: i32 = 70;
/// A system error.
pub const OSERR: i32 = 71;
/// Try again later.
pub const TEMPFAIL: i32 = 75;
/// Configuration error.
pub const CONFIG: i32 = 78;

/// Why a command gives up: the exit status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// Exit status (one of the constants above).
    pub code: i32,
    /// One line for standard error.
    pub reason: String,
}

impl Fatal {
    /// A reason to give up with `code`.
    pub fn new(code: i32, reason: impl Into<String>) -> Fatal {
        Fatal {
            code,
            reason: reason.into(),
        }
    }
}
