//! The MIME side of IMAP FETCH and SEARCH (RFC 3501), for Petrel's imapd. Pure functions,
//! no I/O.
//!
//! Messages are stored with LF line ends by Petrel's local agent (and CRLF by Dovecot), but
//! IMAP counts every size and offset (RFC822.SIZE, partial fetches, body part sizes and
//! line counts) on the CRLF form. So every function here but the CRLF ones takes the
//! CRLF-normalised message: call [`to_crlf`] once and pass its result around, except
//! when the whole message is all that is wanted (`BODY[]`, `RFC822`): then
//! [`crlf_len`] gives the literal's length and [`to_crlf_into`] appends the message to
//! the response, with no intermediate copy.
//!
//! - [`envelope`]: the ENVELOPE structure, header values raw as RFC 3501 wants them.
//! - [`body_structure`]: BODYSTRUCTURE or BODY.
//! - [`section`], [`section_ref`]: the content of `BODY[section]`.
//! - [`to_crlf`], [`to_crlf_into`], [`crlf_len`] (and [`CrlfEncoder`], [`CrlfCounter`] for
//!   chunks): the CRLF form, as a copy, appended to a buffer, or only its length.
//! - [`header_values`], [`body_text`], [`sent_date`]: decoded values for SEARCH.
//!
//! The header, MIME tree and IMAP output are this crate's own code (byte-exact offsets,
//! raw values); decoding (RFC 2047 words, transfer encodings, charsets, dates) is
//! mail-parser's. The output follows Dovecot's where RFC 3501 leaves a choice (its tests
//! compare with Dovecot's answers for the same messages): `MISSING_DOMAIN` and
//! `MISSING_MAILBOX` for incomplete addresses, a trailing comment as the display name,
//! `("charset" "us-ascii")` added to text parts without one, a multipart without any
//! part given one empty text/plain part, RFC 2231 continuations joined, the Content-MD5
//! value as the body MD5.
//!
//! Speed: [`envelope`] scans only the header (no MIME parse): about 5 µs for a 4 KiB
//! message with 30 header fields in a release build on the project's machines (a test
//! prints it; nothing asserts it), so 100,000 ENVELOPEs take about half a second; the
//! store caches them anyway. [`body_structure`] and [`section`] with part numbers parse
//! the MIME tree (this crate's own scanner, linear in the message size, nesting capped at
//! 64 levels); sections of the whole message do not. [`to_crlf_into`] copies the runs
//! between LFs in bulk (memchr): about 4 GB/s for 2–8 KiB messages, five times the
//! byte-by-byte conversion, and [`crlf_len`] counts at about 8 GB/s (release build;
//! `cargo run --release -p petrel-imap-mime --example crlf_bench` measures them).
#![deny(missing_docs)]

use std::borrow::Cow;

mod address;
mod crlf;
mod envelope;
mod header;
mod mime;
mod quote;
mod search;
mod section;

pub use crlf::{crlf_len, to_crlf, to_crlf_into, CrlfCounter, CrlfEncoder};

/// The RFC 3501 ENVELOPE of a message (CRLF form):
/// `("date" "subject" (from) (sender) (reply-to) (to) (cc) (bcc) "in-reply-to" "message-id")`.
///
/// A missing field is NIL; sender and reply-to default to from when missing or empty.
/// Address lists are `((name adl mailbox host) ...)` or NIL when empty; a group is
/// `(NIL NIL "group" NIL)` then its members then `(NIL NIL NIL NIL)`. Values are raw:
/// encoded words are sent as they are; line ends in folded values are removed. A string is
/// quoted, or sent as a literal `{n}\r\n...` when it has CR, LF, other controls or 8-bit
/// bytes. The first occurrence of each field counts.
///
/// Only the header is scanned: about 5 µs for a 4 KiB message (release build).
pub fn envelope(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // The field scan stops at the end of the header.
    envelope::write(&mut out, msg, 0..msg.len());
    out
}

/// BODYSTRUCTURE (`extensible == true`) or BODY (`false`) of a message (CRLF form).
///
/// A multipart is `(part1)(part2)... "subtype"`, followed for BODYSTRUCTURE by
/// `(params) disposition language location`. A leaf is
/// `"type" "subtype" (params) id description encoding size`, then the line count for
/// `text/*`, or envelope, body structure and line count for `message/rfc822`; for
/// BODYSTRUCTURE then `md5 disposition language location`. Without a (valid)
/// Content-Type a part is `text/plain` (`message/rfc822` inside `multipart/digest`);
/// text parts without a charset get `("charset" "us-ascii")`; the encoding defaults to
/// `7bit`. Sizes and line counts are those of the part body in CRLF form. Types, subtypes,
/// parameters and encodings are sent as written (RFC 3501 makes them case-insensitive).
pub fn body_structure(msg: &[u8], extensible: bool) -> Vec<u8> {
    let root = mime::parse(msg, 0..msg.len());
    let mut out = Vec::with_capacity(256);
    mime::write_body(&mut out, msg, &root, extensible);
    out
}

/// The text part of a `BODY[section]` specifier (RFC 3501 §6.4.5), after the part numbers,
/// as the command parser gives it.
pub use petrel_imap_proto::SectionText;

/// The content of `BODY[section]` for a message (CRLF form).
///
/// `part` is the list of part numbers (empty: the whole message). With `text == None` the
/// result is the part's body (for an empty `part`, the whole message, header included).
/// Per RFC 3501 §6.4.5, part 1 of a non-multipart message is its body (and its MIME
/// header the message header); a message/rfc822 part's HEADER, HEADER.FIELDS(.NOT) and
/// TEXT refer to the encapsulated message, and its subparts are those of that message.
/// HEADER, HEADER.FIELDS and TEXT of any other part are empty, as is a missing part.
/// Returned header fields keep their folding and end with the blank line.
///
/// A copy of [`section_ref`]'s answer: prefer that one to append the content somewhere.
pub fn section(msg: &[u8], part: &[u32], text: Option<&SectionText>) -> Vec<u8> {
    section_ref(msg, part, text).into_owned()
}

/// [`section`] without the copy: borrowed from `msg` for everything but HEADER.FIELDS and
/// HEADER.FIELDS.NOT (which pick fields out of the header).
///
/// Sections of the whole message (`part` empty: `BODY[]`, `BODY[HEADER]`, `BODY[TEXT]`,
/// `BODY[HEADER.FIELDS (...)]`, and so RFC822, RFC822.HEADER and RFC822.TEXT) only look
/// for the end of the header; the MIME tree is parsed only for part numbers. `BODY[]`
/// itself is `msg` as it is.
pub fn section_ref<'a>(msg: &'a [u8], part: &[u32], text: Option<&SectionText>) -> Cow<'a, [u8]> {
    if part.is_empty() {
        return section::whole_message(msg, text);
    }
    let root = mime::parse(msg, 0..msg.len());
    section::section(msg, &root, part, text)
}

/// The decoded values (RFC 2047 words decoded, charsets converted to UTF-8, folding
/// removed, trimmed) of every field called `name` (case-insensitive) in the message
/// header, in order; for SEARCH HEADER, FROM, SUBJECT and the like. 8-bit bytes that are
/// not UTF-8 become U+FFFD.
pub fn header_values(msg: &[u8], name: &str) -> Vec<String> {
    search::header_values(msg, name)
}

/// The decoded bodies of all text parts (text/plain, text/html, and those of attached
/// messages), transfer encoding undone and converted to UTF-8, joined by newlines; for
/// SEARCH BODY and TEXT (a case-insensitive substring search on the result).
pub fn body_text(msg: &[u8]) -> String {
    search::body_text(msg)
}

/// The message's Date header as seconds since the epoch (UTC), for SENTBEFORE, SENTON
/// and SENTSINCE; `None` when it is missing or cannot be parsed.
pub fn sent_date(msg: &[u8]) -> Option<i64> {
    search::sent_date(msg)
}
