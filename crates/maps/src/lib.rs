//! Petrel's lookup tables: the aliases file and its expansion, `.forward` and `:include:`
//! files, and the user databases local delivery and authd consult.
//!
//! - [`aliases`]: the `/etc/aliases` format ([`aliases::parse`]), the destination lists of
//!   `.forward` and `:include:` files ([`aliases::parse_destinations`]);
//! - [`expand`](mod@expand): turning a local recipient into delivery targets by Postfix's
//!   rules ([`expand()`]);
//! - [`passwd_file`]: Dovecot's passwd-file format, read and written atomically;
//! - [`userdb`]: "who is this local user": the system's passwd or a passwd-file;
//! - [`table`]: Postfix-style `TYPE:/path` lookup tables (transport_maps,
//!   smtp_sasl_password_maps), read from their text files, and transport(5) lookups.
//!
//! Files are parsed from text the caller read, so parsing never touches the file system and
//! every error names the file and the line.
#![deny(missing_docs)]

pub mod aliases;
pub mod expand;
pub mod local_table;
pub mod passwd_file;
pub mod table;
pub mod userdb;

pub use aliases::{Aliases, Dest};
pub use expand::{expand, ExpandContext, ExpandError, Target, Via};
pub use userdb::{User, UserDb};

/// A problem in a map file, with the file and (when it has one) the line it is on: the
/// same shape as a configuration error, and printed the same way (`FILE, line N: reason`).
pub type LineError = petrel_config::ConfigError;
