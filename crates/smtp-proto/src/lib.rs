//! The SMTP protocol as bytes in, events out: no sockets, no clocks, no policy.
//!
//! - [`LineReader`]: splits what a client sends into command lines, with a length limit,
//!   telling bare LF, bare CR and NUL apart (they are hostile input in commands).
//! - [`parse_command`]: one command line → [`Command`] (RFC 5321 grammar plus the ESMTP
//!   parameters of SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING, AUTH).
//! - [`address`]: RFC 5321 Mailbox grammar (quoted local parts, address literals, source
//!   routes accepted and stripped, UTF-8 only with SMTPUTF8).
//! - [`DataDecoder`]: the DATA stream: only `CRLF . CRLF` ends it, dot-unstuffing, CRLF →
//!   LF, and every bare LF / bare CR counted, so SMTP smuggling cannot cut a message.
//! - [`BdatDecoder`]: RFC 3030 chunks (exact byte counts, no dot handling).
//! - [`Reply`]: a reply with its RFC 3463 enhanced code, formatted single- or multi-line.
//! - [`client`]: the other side, for the delivery agents: replies read from a server,
//!   EHLO/LHLO extensions, the DATA encoding of a message, xtext.
//!
//! Every parser here is tested with its input cut into pieces of 1, 2, 3 … 512 bytes.
#![deny(missing_docs)]

pub mod address;
pub mod client;
mod command;
mod data;
mod line;
mod reply;

pub use address::{Mailbox, ReversePath};
pub use command::{
    parse_command, Body, Command, CommandError, MailParams, Notify, RcptParams, Ret,
};
pub use data::{BdatDecoder, DataDecoder, DataEvent};
pub use line::{Line, LineReader};
pub use reply::Reply;
