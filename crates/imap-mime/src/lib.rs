//! The MIME side of IMAP FETCH and SEARCH (RFC 3501), for Petrel's imapd. Pure functions,
//! no I/O.
//!
//! Messages are stored with LF line ends by Petrel's local agent (and CRLF by Dovecot), but
//! IMAP counts every size and offset (RFC822.SIZE, partial fetches, body part sizes and
//! line counts) on the CRLF form. So every function here but [`to_crlf`] takes the
//! CRLF-normalised message: call [`to_crlf`] once and pass its result around.
//!
//! - [`envelope`]: the ENVELOPE structure, header values raw as RFC 3501 wants them.
//! - [`body_structure`]: BODYSTRUCTURE or BODY.
//! - [`section`]: the content of `BODY[section]`.
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
//! store caches them anyway. [`body_structure`] and [`section`] parse the MIME tree
//! (this crate's own scanner, linear in the message size, nesting capped at 64 levels).
#![deny(missing_docs)]

use std::borrow::Cow;

mod address;
mod envelope;
mod header;
mod mime;
mod quote;
mod search;
mod section;

/// Converts a stored message to the CRLF form IMAP counts in: every LF not already
/// preceded by CR gets one. Borrowed when there is nothing to change (the Dovecot-written
/// CRLF case). A bare CR is left as it is.
pub fn to_crlf(msg: &[u8]) -> Cow<'_, [u8]> {
    let bare = msg
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || msg[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len() + bare);
    let mut prev = 0u8;
    for &b in msg {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Cow::Owned(out)
}

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
pub fn section(msg: &[u8], part: &[u32], text: Option<&SectionText>) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_conversion() {
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(&*to_crlf(b"\n"), b"\r\n");
        assert_eq!(&*to_crlf(b"a\rb"), b"a\rb");
    }
}
