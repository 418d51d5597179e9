//! Petrel's password checks and failed-login accounting, used by authd.
//!
//! - [`verify`] checks a password against a Dovecot-style `{SCHEME}hash` (SHA512-CRYPT,
//!   SHA256-CRYPT, BLF-CRYPT, ARGON2ID, ARGON2I, PLAIN, bare `$id$` crypt hashes);
//! - [`hash`] writes `{ARGON2ID}` (Dovecot's defaults) or `{SHA512-CRYPT}` hashes;
//! - [`throttle`] counts failures per client address and per user, with an injected clock.
//!
//! No I/O beyond reading `/dev/urandom` for salts.
#![deny(missing_docs)]

pub mod scheme;
pub mod throttle;

pub use scheme::{hash, try_hash, verify, Scheme};
pub use throttle::{Locked, Outcome, Settings, Throttle};
