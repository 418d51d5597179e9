//! The IMAP4rev1 protocol (RFC 3501) as bytes in, values out: no sockets, no files.
//!
//! - [`CommandReader`]: splits what a client sends into complete commands, literals
//!   included, with limits on line and literal sizes; it tells the server when to send a
//!   continuation request for a synchronising literal, and refuses an oversized literal
//!   before its data is read.
//! - [`parse_command`]: one complete command → [`Command`]: every command of RFC 3501 and
//!   of the extensions IDLE, UIDPLUS (`UID EXPUNGE`), MOVE, NAMESPACE, ID, ENABLE,
//!   LITERAL+ (`{n+}`), SASL-IR, UNSELECT, CHILDREN and SPECIAL-USE (LIST-EXTENDED
//!   selection and return options, `CREATE ... (USE (...))`), CONDSTORE (`SELECT ...
//!   (CONDSTORE)`, `CHANGEDSINCE`, `UNCHANGEDSINCE`, the `MODSEQ` search key and fetch
//!   item, `HIGHESTMODSEQ`), ESEARCH (`SEARCH RETURN (MIN MAX COUNT ALL)`).
//! - [`decode_mailbox`] / [`encode_mailbox`]: modified UTF-7 mailbox names.
//! - Response helpers: [`quoted_or_literal`], [`astring`], [`nstring`], [`mailbox_name`],
//!   [`format_flags`], [`format_internal_date`].
//!
//! # Why hand-written
//!
//! The `imap-codec` crate was considered. It is not in the local registry cache, so it
//! could not be built and checked against rustc 1.95 and our extension list (ID, ENABLE,
//! SASL-IR, SPECIAL-USE `CREATE ... USE`, LIST-EXTENDED options, CONDSTORE, ESEARCH
//! return options) in the time given, and hiding its rich types behind this API would
//! cost a good part of what the grammar itself costs. The commands a server must accept
//! are a small, well-specified grammar, so it is written here directly, with Petrel's
//! limits and error texts, and tested with realistic client traffic cut at every byte
//! boundary.
#![deny(missing_docs)]

mod mutf7;
mod parse;
mod reader;
mod response;
mod types;

pub use mutf7::{decode_mailbox, encode_mailbox};
pub use parse::{is_done_line, parse_command, MAX_DEPTH};
pub use reader::{CommandReader, ReadEvent, MAX_SKIP_LITERAL};
pub use response::{
    astring, format_flags, format_internal_date, mailbox_name, nstring, quoted_or_literal,
};
pub use types::{
    Command, CommandKind, Date, DateTime, FetchItem, Flag, ParseError, SearchKey, SearchReturn,
    Section, SectionText, SeqNum, SeqRange, SequenceSet, StatusItem, StoreMode, BADCHARSET,
};
