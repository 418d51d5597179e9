//! The authenticated part of an IMAP session, without sockets: a [`session::Session`]
//! owns one user's [`petrel_mailstore::Store`], takes parsed commands
//! ([`petrel_imap_proto::Command`]) and gives back the response bytes; [`search`]
//! evaluates SEARCH keys over a folder. The sessions of one worker share their open
//! folders through a [`SharedFolders`]. The login process, TLS and the event loop live in
//! the imapd program.

#![deny(missing_docs)]

pub mod search;
pub mod session;
mod shared;
mod tz;

pub use shared::SharedFolders;
