//! SEARCH: which messages of a folder match a key (RFC 3501 §6.4.4).
//!
//! [`search`] compiles the key once (sequence and UID sets resolved to sorted ranges,
//! search strings lower-cased, the cheap keys of every AND put first), then looks at each
//! message in two passes:
//!
//! 1. Only what the folder knows without reading the message: flags, `\Recent`, sequence
//!    number, UID, RFC822.SIZE, INTERNALDATE and MODSEQ. Keys that need the content are
//!    "unknown" here, and AND, OR and NOT combine the three values (Kleene logic), so a
//!    message that a cheap key rules out (or in) is decided without being read.
//! 2. Only when pass 1 left the answer unknown: the message is loaded (once) and the key
//!    evaluated again with its content. Decoded header values, the body text and the sent
//!    date are each worked out at most once per message.
//!
//! Matching follows RFC 3501 and Dovecot:
//!
//! - String keys are case-insensitive substring matches on decoded values (RFC 2047
//!   words decoded, charsets converted to UTF-8, see [`petrel_imap_mime::header_values`]
//!   and [`petrel_imap_mime::body_text`]). Case is folded with Unicode lower-casing, so
//!   `CAFÉ` finds `café` (but `STRASSE` does not find `straße`). A header key only
//!   matches messages that have the field; with an empty string it tests that the field
//!   exists (as Dovecot does). SUBJECT compares with runs of white space squeezed to one
//!   space on both sides. FROM, TO, CC and BCC search the decoded address header text
//!   (`Name <user@host>`).
//! - BODY searches the text of the text parts; TEXT searches the decoded header
//!   (`Name: value` lines) and the body text.
//! - BEFORE, ON and SINCE compare the day of INTERNALDATE in the server's local time zone,
//!   the zone FETCH INTERNALDATE shows it in (as Dovecot does).
//! - SENTBEFORE, SENTON and SENTSINCE compare the day of the `Date:` header as written
//!   there, in the sender's own zone (RFC 3501: "disregarding time and timezone"; Dovecot
//!   does the same). A message without a parsable `Date:` uses INTERNALDATE's local day.
//! - LARGER and SMALLER compare RFC822.SIZE (the CRLF size).
//! - A message whose file has vanished (the loader gives `None`, or its size had to be read
//!   from a file that is gone) does not match, whatever the key.

use std::borrow::Cow;
use std::io;

use petrel_imap_mime::{body_text, header_values, sent_date, to_crlf};
use petrel_imap_proto::{SearchKey, SequenceSet};
use petrel_mailstore::{Folder, MessageInfo};

/// Evaluates `key` over every message of `folder` (in sequence order) and returns the UIDs
/// of those that match, ascending. `\Recent` is [`MessageInfo::recent`]; see
/// [`search_view`] for a session's own view of a folder.
///
/// `load(uid)` gives a message's bytes (as stored: LF or CRLF) when a key needs the
/// content (HEADER, FROM, TO, CC, BCC, SUBJECT, BODY, TEXT, SENT*); it is called at most
/// once per message per search, and only for messages the cheap keys (flags, sequence
/// sets, UID, sizes, INTERNALDATE, MODSEQ) have not already decided. A message whose file
/// is gone (`load` gives `None`) does not match.
///
/// Errors are those of [`Folder::rfc822_size`] other than a vanished file (which only
/// makes that message not match).
pub fn search(
    folder: &mut Folder,
    key: &SearchKey,
    load: &mut dyn FnMut(u32) -> Option<Vec<u8>>,
) -> io::Result<Vec<u32>> {
    let view: Vec<u32> = folder.messages().map(|m| m.uid).collect();
    let recent: std::collections::HashSet<u32> = folder
        .messages()
        .filter(|m| m.recent)
        .map(|m| m.uid)
        .collect();
    search_view(folder, &view, &|u| recent.contains(&u), key, load)
}

/// As [`search`], over a session's view of a shared folder: `view` is the UIDs the client
/// knows, in its sequence order (sequence numbers and `*` are positions in it; a UID the
/// folder no longer has never matches), and `recent(uid)` tells the session's `\Recent`.
pub fn search_view(
    folder: &mut Folder,
    view: &[u32],
    recent: &dyn Fn(u32) -> bool,
    key: &SearchKey,
    load: &mut dyn FnMut(u32) -> Option<Vec<u8>>,
) -> io::Result<Vec<u32>> {
    let count = u32::try_from(view.len()).unwrap_or(u32::MAX);
    let max_uid = view.last().copied().unwrap_or(0);
    let node = compile(key, count, max_uid);
    let mut out = Vec::new();
    for (i, &uid) in view.iter().enumerate() {
        let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let Some(info) = folder.get(uid).cloned() else {
            continue;
        };
        let mut msg = Msg {
            info,
            seq,
            recent: recent(uid),
            size: None,
            content: None,
        };
        let matched = match eval(&node, &mut msg, folder) {
            Ok(Some(b)) => b,
            Ok(None) => match load(uid) {
                None => false,
                Some(bytes) => {
                    msg.content = Some(Content::new(bytes));
                    match eval(&node, &mut msg, folder) {
                        Ok(b) => b.unwrap_or(false),
                        Err(Stop::Gone) => false,
                        Err(Stop::Io(e)) => return Err(e),
                    }
                }
            },
            Err(Stop::Gone) => false,
            Err(Stop::Io(e)) => return Err(e),
        };
        if matched {
            out.push(uid);
        }
    }
    Ok(out)
}

/// A system flag as SEARCH names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SysFlag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
}

/// BEFORE / ON / SINCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Before,
    On,
    Since,
}

impl Cmp {
    /// Whether day `have` is BEFORE / ON / SINCE day `want` (both days since the epoch).
    fn test(self, have: i64, want: i64) -> bool {
        match self {
            Cmp::Before => have < want,
            Cmp::On => have == want,
            Cmp::Since => have >= want,
        }
    }
}

/// How a header key compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderMode {
    /// Plain substring of the decoded value.
    Plain,
    /// White space runs squeezed to one space first (SUBJECT).
    Squeeze,
}

/// A compiled search key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Const(bool),
    /// The flag is set (`true`) or not (`false`).
    Flag(SysFlag, bool),
    /// Has (`true`) or lacks (`false`) the keyword (ASCII case-insensitive).
    Keyword(String, bool),
    Recent(bool),
    /// Sequence numbers: sorted, merged, inclusive ranges.
    Seq(Vec<(u32, u32)>),
    /// UIDs: sorted, merged, inclusive ranges.
    Uid(Vec<(u32, u32)>),
    /// INTERNALDATE's local day compared with a day number.
    Internal(Cmp, i64),
    Larger(u64),
    Smaller(u64),
    ModSeq(u64),
    /// Field name and lower-cased needle.
    Header(String, String, HeaderMode),
    /// Lower-cased needle in the body text.
    Body(String),
    /// Lower-cased needle in the header text or the body text.
    Text(String),
    /// The sent date's day compared with a day number.
    Sent(Cmp, i64),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Box<Node>, Box<Node>),
}

impl Node {
    /// Rough cost of evaluating the node: 0 metadata, 1 may read the file's size, 2 the
    /// header, 3 the body.
    fn cost(&self) -> u8 {
        match self {
            Node::Larger(_) | Node::Smaller(_) => 1,
            Node::Header(..) | Node::Sent(..) => 2,
            Node::Body(_) | Node::Text(_) => 3,
            Node::Not(n) => n.cost(),
            Node::And(v) => v.iter().map(Node::cost).max().unwrap_or(0),
            Node::Or(a, b) => a.cost().max(b.cost()),
            _ => 0,
        }
    }
}

/// Lower-cases a needle or haystack for case-insensitive matching.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Squeezes runs of white space to one space and trims.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header(name: &str, needle: &str, mode: HeaderMode) -> Node {
    let needle = match mode {
        HeaderMode::Plain => fold(needle),
        HeaderMode::Squeeze => fold(&squeeze(needle)),
    };
    Node::Header(name.to_string(), needle, mode)
}

/// Compiles a key for a folder of `count` messages whose highest UID is `max_uid`.
fn compile(key: &SearchKey, count: u32, max_uid: u32) -> Node {
    use SearchKey as K;
    let c = |k: &SearchKey| compile(k, count, max_uid);
    match key {
        K::All => Node::Const(true),
        K::Answered => Node::Flag(SysFlag::Answered, true),
        K::Unanswered => Node::Flag(SysFlag::Answered, false),
        K::Deleted => Node::Flag(SysFlag::Deleted, true),
        K::Undeleted => Node::Flag(SysFlag::Deleted, false),
        K::Draft => Node::Flag(SysFlag::Draft, true),
        K::Undraft => Node::Flag(SysFlag::Draft, false),
        K::Flagged => Node::Flag(SysFlag::Flagged, true),
        K::Unflagged => Node::Flag(SysFlag::Flagged, false),
        K::Seen => Node::Flag(SysFlag::Seen, true),
        K::Unseen => Node::Flag(SysFlag::Seen, false),
        K::Keyword(k) => Node::Keyword(k.clone(), true),
        K::Unkeyword(k) => Node::Keyword(k.clone(), false),
        K::Recent => Node::Recent(true),
        K::Old => Node::Recent(false),
        K::New => Node::And(vec![Node::Recent(true), Node::Flag(SysFlag::Seen, false)]),
        K::SequenceSet(set) => Node::Seq(set.ranges(count)),
        K::Uid(set) => Node::Uid(uid_ranges(set, max_uid)),
        K::Before(d) => Node::Internal(Cmp::Before, d.days_since_epoch()),
        K::On(d) => Node::Internal(Cmp::On, d.days_since_epoch()),
        K::Since(d) => Node::Internal(Cmp::Since, d.days_since_epoch()),
        K::SentBefore(d) => Node::Sent(Cmp::Before, d.days_since_epoch()),
        K::SentOn(d) => Node::Sent(Cmp::On, d.days_since_epoch()),
        K::SentSince(d) => Node::Sent(Cmp::Since, d.days_since_epoch()),
        K::Larger(n) => Node::Larger(*n),
        K::Smaller(n) => Node::Smaller(*n),
        K::ModSeq(n) => Node::ModSeq(*n),
        K::From(s) => header("From", s, HeaderMode::Plain),
        K::To(s) => header("To", s, HeaderMode::Plain),
        K::Cc(s) => header("Cc", s, HeaderMode::Plain),
        K::Bcc(s) => header("Bcc", s, HeaderMode::Plain),
        K::Subject(s) => header("Subject", s, HeaderMode::Squeeze),
        K::Header(name, s) => header(name, s, HeaderMode::Plain),
        K::Body(s) => Node::Body(fold(s)),
        K::Text(s) => Node::Text(fold(s)),
        K::Not(k) => match c(k) {
            Node::Const(b) => Node::Const(!b),
            n => Node::Not(Box::new(n)),
        },
        K::Or(a, b) => {
            let (a, b) = (c(a), c(b));
            // The cheaper side first: it may decide without the other.
            if b.cost() < a.cost() {
                Node::Or(Box::new(b), Box::new(a))
            } else {
                Node::Or(Box::new(a), Box::new(b))
            }
        }
        K::And(keys) => {
            let mut v: Vec<Node> = keys.iter().map(c).collect();
            v.sort_by_key(Node::cost);
            Node::And(v)
        }
    }
}

/// A UID set's ranges: `*` is the highest UID; an empty folder has none.
fn uid_ranges(set: &SequenceSet, max_uid: u32) -> Vec<(u32, u32)> {
    if max_uid == 0 {
        return Vec::new();
    }
    set.ranges(max_uid)
}

/// Whether `n` is in sorted, merged, inclusive `ranges`.
fn in_ranges(ranges: &[(u32, u32)], n: u32) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= n);
    i > 0 && ranges[i - 1].1 >= n
}

/// Why evaluating one message stopped.
enum Stop {
    /// The message's file is gone: it does not match.
    Gone,
    /// Another I/O error: the search fails.
    Io(io::Error),
}

/// One message being looked at.
struct Msg {
    info: MessageInfo,
    seq: u32,
    /// `\Recent` in the searching session.
    recent: bool,
    /// RFC822.SIZE once asked for.
    size: Option<u64>,
    /// The content, once loaded (pass 2).
    content: Option<Content>,
}

impl Msg {
    fn size(&mut self, folder: &mut Folder) -> Result<u64, Stop> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let s = match folder.rfc822_size(self.info.uid) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Stop::Gone),
            Err(e) => return Err(Stop::Io(e)),
        };
        self.size = Some(s);
        Ok(s)
    }

    fn flag(&self, f: SysFlag) -> bool {
        let fl = &self.info.flags;
        match f {
            SysFlag::Seen => fl.seen,
            SysFlag::Answered => fl.answered,
            SysFlag::Flagged => fl.flagged,
            SysFlag::Deleted => fl.deleted,
            SysFlag::Draft => fl.draft,
        }
    }

    /// INTERNALDATE's day (the server's local time zone).
    fn internal_day(&self) -> i64 {
        crate::tz::local_day(self.info.internaldate)
    }
}

/// A loaded message (CRLF form) and what has been worked out from it.
struct Content {
    msg: Vec<u8>,
    /// Lower-cased name → decoded, lower-cased values (squeezed ones under a `\0` prefix).
    headers: Vec<(String, Vec<String>)>,
    header_text: Option<String>,
    body: Option<String>,
    sent_day: Option<Option<i64>>,
}

impl Content {
    fn new(bytes: Vec<u8>) -> Content {
        let converted = match to_crlf(&bytes) {
            Cow::Owned(v) => Some(v),
            Cow::Borrowed(_) => None,
        };
        Content {
            msg: converted.unwrap_or(bytes),
            headers: Vec::new(),
            header_text: None,
            body: None,
            sent_day: None,
        }
    }

    /// Decoded, lower-cased values of the fields called `name` (squeezed for
    /// [`HeaderMode::Squeeze`]).
    fn header(&mut self, name: &str, mode: HeaderMode) -> &[String] {
        let mut memo_key = name.to_ascii_lowercase();
        if mode == HeaderMode::Squeeze {
            memo_key.insert(0, '\0');
        }
        let i = match self.headers.iter().position(|(k, _)| *k == memo_key) {
            Some(i) => i,
            None => {
                let values = header_values(&self.msg, name)
                    .into_iter()
                    .map(|v| match mode {
                        HeaderMode::Plain => fold(&v),
                        HeaderMode::Squeeze => fold(&squeeze(&v)),
                    })
                    .collect();
                self.headers.push((memo_key, values));
                self.headers.len() - 1
            }
        };
        &self.headers[i].1
    }

    /// The decoded header as `Name: value` lines, lower-cased.
    fn header_text(&mut self) -> &str {
        let msg = &self.msg;
        self.header_text.get_or_insert_with(|| {
            let mut out = String::new();
            for (name, whole) in header_fields(msg) {
                let name = String::from_utf8_lossy(name);
                // Decoding the field on its own keeps this linear in the header size.
                let value = header_values(whole, &name).into_iter().next();
                out.push_str(&name);
                out.push_str(": ");
                out.push_str(&value.unwrap_or_default());
                out.push('\n');
            }
            fold(&out)
        })
    }

    /// The body text, lower-cased.
    fn body(&mut self) -> &str {
        let msg = &self.msg;
        self.body.get_or_insert_with(|| fold(&body_text(msg)))
    }

    /// The day of the `Date:` header in its own zone, when it parses.
    fn sent_day(&mut self) -> Option<i64> {
        if let Some(d) = self.sent_day {
            return d;
        }
        let d = sent_date(&self.msg).map(|utc| {
            let offset = header_values(&self.msg, "Date")
                .first()
                .map_or(0, |v| zone_offset_minutes(v));
            (utc + offset * 60).div_euclid(86_400)
        });
        self.sent_day = Some(d);
        d
    }
}

/// The fields of a message header (CRLF or LF form): `(name, whole field with its line
/// ends)`, up to the blank line; lines without a colon are skipped.
fn header_fields(msg: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    let line_end = |from: usize| {
        msg[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| from + i + 1)
    };
    while pos < msg.len() {
        let start = pos;
        let mut end = line_end(start);
        let first = &msg[start..end];
        if first == b"\r\n" || first == b"\n" {
            break;
        }
        while end < msg.len() && matches!(msg[end], b' ' | b'\t') {
            end = line_end(end);
        }
        pos = end;
        if matches!(first[0], b' ' | b'\t') {
            continue;
        }
        if let Some(colon) = first.iter().position(|&b| b == b':') {
            let name = first[..colon].trim_ascii_end();
            if !name.is_empty() {
                out.push((name, &msg[start..end]));
            }
        }
    }
    out
}

/// The zone of an RFC 5322 date (`+0200`, `-0800`, or an obsolete name such as `PST`) in
/// minutes east of UTC; 0 when there is none. Comments are ignored.
fn zone_offset_minutes(date: &str) -> i64 {
    let mut depth = 0u32;
    let mut plain = String::with_capacity(date.len());
    for ch in date.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => plain.push(ch),
            _ => {}
        }
    }
    let Some(zone) = plain.split_whitespace().last() else {
        return 0;
    };
    let b = zone.as_bytes();
    if b.len() == 5 && matches!(b[0], b'+' | b'-') && b[1..].iter().all(u8::is_ascii_digit) {
        let hh = i64::from(b[1] - b'0') * 10 + i64::from(b[2] - b'0');
        let mm = i64::from(b[3] - b'0') * 10 + i64::from(b[4] - b'0');
        let m = hh * 60 + mm;
        return if b[0] == b'-' { -m } else { m };
    }
    // The names mail-parser knows (upper case, as it matches them).
    let hours = match zone {
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => 0,
    };
    hours * 60
}

/// Kleene AND of two three-valued results.
fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Evaluates `node` for `m`: `Ok(None)` when the answer needs content not loaded yet.
fn eval(node: &Node, m: &mut Msg, folder: &mut Folder) -> Result<Option<bool>, Stop> {
    Ok(match node {
        Node::Const(b) => Some(*b),
        Node::Flag(f, want) => Some(m.flag(*f) == *want),
        Node::Keyword(k, want) => {
            let has = m
                .info
                .flags
                .keywords
                .iter()
                .any(|x| x.eq_ignore_ascii_case(k));
            Some(has == *want)
        }
        Node::Recent(want) => Some(m.recent == *want),
        Node::Seq(r) => Some(in_ranges(r, m.seq)),
        Node::Uid(r) => Some(in_ranges(r, m.info.uid)),
        Node::Internal(c, day) => Some(c.test(m.internal_day(), *day)),
        Node::Larger(n) => Some(m.size(folder)? > *n),
        Node::Smaller(n) => Some(m.size(folder)? < *n),
        Node::ModSeq(n) => Some(m.info.modseq >= *n),
        Node::Header(name, needle, mode) => {
            let Some(c) = m.content.as_mut() else {
                return Ok(None);
            };
            Some(
                c.header(name, *mode)
                    .iter()
                    .any(|v| v.contains(needle.as_str())),
            )
        }
        Node::Body(needle) => {
            let Some(c) = m.content.as_mut() else {
                return Ok(None);
            };
            Some(c.body().contains(needle.as_str()))
        }
        Node::Text(needle) => {
            let Some(c) = m.content.as_mut() else {
                return Ok(None);
            };
            Some(c.header_text().contains(needle.as_str()) || c.body().contains(needle.as_str()))
        }
        Node::Sent(cmp, day) => {
            let internal = m.internal_day();
            let Some(c) = m.content.as_mut() else {
                return Ok(None);
            };
            Some(cmp.test(c.sent_day().unwrap_or(internal), *day))
        }
        Node::Not(n) => eval(n, m, folder)?.map(|b| !b),
        Node::And(v) => {
            let mut acc = Some(true);
            for n in v {
                acc = and3(acc, eval(n, m, folder)?);
                if acc == Some(false) {
                    break;
                }
            }
            acc
        }
        Node::Or(a, b) => {
            let x = eval(a, m, folder)?;
            if x == Some(true) {
                return Ok(x);
            }
            // Kleene OR is NOT(AND(NOT a, NOT b)).
            and3(x.map(|v| !v), eval(b, m, folder)?.map(|v| !v)).map(|v| !v)
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::fs;
    use std::path::PathBuf;
    use std::time::{Duration, UNIX_EPOCH};

    use petrel_imap_proto::{parse_command, CommandKind, Date};
    use petrel_mailstore::{FlagSet, Store};

    use super::*;

    /// Seconds since the epoch of a UTC date and hour.
    fn at(year: u16, month: u8, day: u8, hour: i64) -> i64 {
        Date { year, month, day }.days_since_epoch() * 86_400 + hour * 3600
    }

    /// A SEARCH key as a client sends it (ASCII).
    fn key(text: &str) -> SearchKey {
        let cmd = parse_command(format!("t SEARCH {text}").as_bytes()).unwrap();
        match cmd.kind {
            CommandKind::Search { criteria, .. } => criteria,
            k => panic!("not a search: {k:?}"),
        }
    }

    const M1: &[u8] = b"From: Alice Example <alice@example.org>\n\
To: bob@example.net\n\
Cc: carol@example.com\n\
Subject: Quarterly   report\n\
Date: Mon, 1 Jan 2024 23:30:00 -0500\n\
X-Tag: alpha\n\
\n\
The numbers look good.\n";

    const M2: &[u8] = b"From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.de>\r\n\
To: team@example.de\r\n\
Bcc: secret@example.org\r\n\
Subject: =?UTF-8?B?R3LDvMOfZQ==?= aus\r\n =?UTF-8?Q?M=C3=BCnchen?=\r\n\
Date: Tue, 2 Jan 2024 08:00:00 +0000 (UTC)\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Caf\xe9 cr\xe8me, bitte.\r\n";

    fn m3() -> Vec<u8> {
        let mut m = b"From: dave@example.com\nSubject: Lunch\n\nSee you at noon.\n".to_vec();
        m.extend(std::iter::repeat_n(b'x', 2000));
        m.push(b'\n');
        m
    }

    const M4: &[u8] = b"From: erin@example.com\nSubject: fresh\nDate: not a date\n\nnew mail\n";

    struct Fx {
        _dir: tempfile::TempDir,
        folder: Folder,
    }

    /// INBOX with four messages: three appended (UIDs 1-3) and one delivered to `new/`
    /// (UID 4, \Recent, no `W=` in its name).
    fn fixture() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Maildir");
        let store = Store::open(&root).unwrap();
        // Appended through another folder object: \Recent there, not in `folder`.
        let mut other = store.folder("INBOX").unwrap();
        let flags = |names: &[&str]| FlagSet::from_imap(names.iter().copied());
        other
            .append(
                M1,
                &flags(&["\\Seen", "\\Flagged"]),
                Some(at(2024, 1, 3, 10)),
            )
            .unwrap();
        other
            .append(
                M2,
                &flags(&["\\Answered", "$Junk"]),
                Some(at(2024, 1, 5, 0)),
            )
            .unwrap();
        other
            .append(
                &m3(),
                &flags(&["\\Deleted", "\\Draft"]),
                Some(at(2024, 1, 10, 23)),
            )
            .unwrap();
        let new = root.join("new").join("1704000000.M1P1Q1.host");
        fs::write(&new, M4).unwrap();
        let f = fs::File::options().write(true).open(&new).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(at(2024, 1, 12, 12) as u64))
            .unwrap();
        drop(f);
        drop(other);
        let folder = store.folder("INBOX").unwrap();
        assert_eq!(
            folder.messages().map(|m| m.uid).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        Fx { _dir: dir, folder }
    }

    /// Runs a search; returns the UIDs found and the UIDs `load` was called for.
    fn run(folder: &mut Folder, key: &SearchKey) -> (Vec<u32>, Vec<u32>) {
        let paths: HashMap<u32, PathBuf> = folder
            .messages()
            .map(|m| (m.uid, folder.path(m.uid).unwrap()))
            .collect();
        let mut calls = Vec::new();
        let found = search(folder, key, &mut |uid| {
            calls.push(uid);
            fs::read(&paths[&uid]).ok()
        })
        .unwrap();
        (found, calls)
    }

    fn found(folder: &mut Folder, key: &SearchKey) -> Vec<u32> {
        run(folder, key).0
    }

    #[test]
    fn metadata_keys_never_load() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        for (text, want) in [
            ("ALL", &[1, 2, 3, 4][..]),
            ("ANSWERED", &[2]),
            ("UNANSWERED", &[1, 3, 4]),
            ("DELETED", &[3]),
            ("UNDELETED", &[1, 2, 4]),
            ("DRAFT", &[3]),
            ("UNDRAFT", &[1, 2, 4]),
            ("FLAGGED", &[1]),
            ("UNFLAGGED", &[2, 3, 4]),
            ("SEEN", &[1]),
            ("UNSEEN", &[2, 3, 4]),
            ("KEYWORD $junk", &[2]),
            ("UNKEYWORD $JUNK", &[1, 3, 4]),
            ("KEYWORD $Other", &[]),
            ("RECENT", &[4]),
            ("OLD", &[1, 2, 3]),
            ("NEW", &[4]),
            ("2:*", &[2, 3, 4]),
            ("*", &[4]),
            ("3,1", &[1, 3]),
            ("9", &[]),
            ("UID 3:*", &[3, 4]),
            ("UID 10:*", &[4]),
            ("UID 5", &[]),
            ("UID 1,4", &[1, 4]),
            ("BEFORE 5-Jan-2024", &[1]),
            ("ON 5-Jan-2024", &[2]),
            ("ON 10-Jan-2024", &[3]),
            ("SINCE 5-Jan-2024", &[2, 3, 4]),
            ("LARGER 1000", &[3]),
            ("SMALLER 1000", &[1, 2, 4]),
            ("NOT SEEN", &[2, 3, 4]),
            ("OR SEEN ANSWERED", &[1, 2]),
            ("NOT OR SEEN ANSWERED", &[3, 4]),
            ("(UNDELETED UNSEEN) OR RECENT FLAGGED", &[4]),
            ("OR (DELETED DRAFT) NOT OR SEEN RECENT", &[2, 3]),
            ("NOT NOT UID 2", &[2]),
        ] {
            let (got, calls) = run(f, &key(text));
            assert_eq!(got, want, "{text}");
            assert!(calls.is_empty(), "{text} loaded {calls:?}");
        }
    }

    #[test]
    fn sizes_are_rfc822_sizes() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        // M1 is stored with LF: its RFC822.SIZE counts CRLF.
        let lf_size = M1.len() as u64;
        let crlf = lf_size + M1.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(f.rfc822_size(1).unwrap(), crlf);
        let in_1 = |k: SearchKey, f: &mut Folder| found(f, &k).contains(&1);
        assert!(in_1(SearchKey::Larger(crlf - 1), f));
        assert!(!in_1(SearchKey::Larger(crlf), f));
        assert!(in_1(SearchKey::Smaller(crlf + 1), f));
        assert!(!in_1(SearchKey::Smaller(crlf), f));
        assert!(in_1(SearchKey::Larger(lf_size), f));
        // UID 4 has no W= in its name: its size is read from the file.
        let m4 = (M4.len() + M4.iter().filter(|&&b| b == b'\n').count()) as u64;
        assert!(found(f, &SearchKey::Larger(m4 - 1)).contains(&4));
        assert!(!found(f, &SearchKey::Larger(m4)).contains(&4));
        assert!(found(f, &SearchKey::Smaller(m4 + 1)).contains(&4));
        assert!(!found(f, &SearchKey::Smaller(m4)).contains(&4));
    }

    #[test]
    fn modseq() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        let mut flags = f.get(2).unwrap().flags.clone();
        flags.seen = true;
        f.set_flags(2, &flags).unwrap();
        let m2 = f.get(2).unwrap().modseq;
        assert!(f.messages().all(|m| m.uid == 2 || m.modseq < m2));
        let (got, calls) = run(f, &SearchKey::ModSeq(m2));
        assert_eq!(got, [2]);
        assert!(calls.is_empty());
        assert_eq!(found(f, &key("MODSEQ 1")), [1, 2, 3, 4]);
        assert_eq!(found(f, &SearchKey::ModSeq(m2 + 1)), Vec::<u32>::new());
        let m4 = f.get(4).unwrap().modseq;
        let want: Vec<u32> = f
            .messages()
            .filter(|m| m.modseq >= m4)
            .map(|m| m.uid)
            .collect();
        assert_eq!(found(f, &SearchKey::ModSeq(m4)), want);
    }

    #[test]
    fn header_keys_decode() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        let s = |x: &str| x.to_string();
        for (k, want) in [
            (SearchKey::From(s("jörg")), &[2][..]),
            (SearchKey::From(s("JÖRG <JOERG@")), &[2]),
            (SearchKey::From(s("ALICE@example")), &[1]),
            (SearchKey::From(s("example")), &[1, 2, 3, 4]),
            (SearchKey::To(s("bob")), &[1]),
            (SearchKey::To(s("example")), &[1, 2]),
            (SearchKey::Cc(s("CAROL")), &[1]),
            (SearchKey::Bcc(s("secret@")), &[2]),
            (SearchKey::Bcc(s("carol")), &[]),
            (SearchKey::Subject(s("grüße aus MÜNCHEN")), &[2]),
            (SearchKey::Subject(s("=?UTF-8")), &[]),
            (SearchKey::Subject(s("quarterly report")), &[1]),
            (SearchKey::Subject(s("Quarterly   Report")), &[1]),
            (SearchKey::Subject(s("lunch")), &[3]),
            (SearchKey::Subject(s("")), &[1, 2, 3, 4]),
            (SearchKey::Header(s("x-tag"), s("ALP")), &[1]),
            (SearchKey::Header(s("X-TAG"), s("")), &[1]),
            (SearchKey::Header(s("Date"), s("")), &[1, 2, 4]),
            (SearchKey::Header(s("Content-Type"), s("iso-8859")), &[2]),
            (SearchKey::Header(s("X-Missing"), s("")), &[]),
            (SearchKey::Cc(s("")), &[1]),
        ] {
            assert_eq!(found(f, &k), want, "{k:?}");
        }
    }

    #[test]
    fn body_and_text() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        let s = |x: &str| x.to_string();
        for (k, want) in [
            (SearchKey::Body(s("CAFÉ CRÈME")), &[2][..]),
            (SearchKey::Body(s("numbers LOOK")), &[1]),
            (SearchKey::Body(s("quarterly")), &[]),
            (SearchKey::Body(s("xxxxxxxxxx")), &[3]),
            (SearchKey::Body(s("")), &[1, 2, 3, 4]),
            (SearchKey::Text(s("quarterly")), &[1]),
            (SearchKey::Text(s("numbers")), &[1]),
            (SearchKey::Text(s("jörg")), &[2]),
            (SearchKey::Text(s("crème")), &[2]),
            (SearchKey::Text(s("x-tag: alpha")), &[1]),
            (SearchKey::Text(s("subject: grüße aus münchen")), &[2]),
            (SearchKey::Text(s("nowhere")), &[]),
        ] {
            assert_eq!(found(f, &k), want, "{k:?}");
        }
    }

    #[test]
    fn sent_dates_use_the_header_zone_or_internaldate() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        // M1: 1 Jan 23:30 -0500 (2 Jan in UTC); M2: 2 Jan; M3: no Date (INTERNALDATE
        // 10 Jan); M4: unparsable Date (INTERNALDATE 12 Jan).
        for (text, want) in [
            ("SENTON 1-Jan-2024", &[1][..]),
            ("SENTON 2-Jan-2024", &[2]),
            ("SENTBEFORE 2-Jan-2024", &[1]),
            ("SENTBEFORE 3-Jan-2024", &[1, 2]),
            ("SENTSINCE 2-Jan-2024", &[2, 3, 4]),
            ("SENTSINCE 10-Jan-2024", &[3, 4]),
            ("SENTON 12-Jan-2024", &[4]),
            ("SENTON 3-Jan-2024", &[]),
        ] {
            let (got, calls) = run(f, &key(text));
            assert_eq!(got, want, "{text}");
            assert_eq!(calls, [1, 2, 3, 4], "{text}");
        }
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset_minutes("Mon, 1 Jan 2024 23:30:00 -0500"), -300);
        assert_eq!(
            zone_offset_minutes("Mon, 1 Jan 2024 23:30:00 +0530 (IST)"),
            330
        );
        assert_eq!(zone_offset_minutes("1 Jan 2024 23:30 PST"), -480);
        assert_eq!(zone_offset_minutes("1 Jan 2024 23:30 GMT"), 0);
        assert_eq!(zone_offset_minutes(""), 0);
        assert_eq!(zone_offset_minutes("(only (nested) comment)"), 0);
    }

    #[test]
    fn nesting_mixes_cheap_and_content_keys() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        for (text, want) in [
            ("NOT SUBJECT quarterly", &[2, 3, 4][..]),
            ("UNDELETED OR SUBJECT lunch BODY bitte", &[2]),
            ("OR SUBJECT lunch BODY bitte", &[2, 3]),
            ("OR (SEEN FROM alice) (DELETED SUBJECT lunch)", &[1, 3]),
            ("NOT (FROM example NOT RECENT)", &[4]),
            ("OR NOT TEXT noon SMALLER 100", &[1, 2, 4]),
            ("NOT OR TEXT noon NOT FROM example", &[1, 2, 4]),
            (
                "(OR ON 3-Jan-2024 DRAFT) (OR BODY numbers SENTON 10-Jan-2024)",
                &[1, 3],
            ),
        ] {
            assert_eq!(found(f, &key(text)), want, "{text}");
        }
    }

    #[test]
    fn load_only_when_needed_and_once() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        for (text, want, loads) in [
            // Only the seen message needs its subject looked at.
            ("SEEN SUBJECT quarterly", &[1][..], &[1][..]),
            ("SUBJECT quarterly SEEN", &[1], &[1]),
            // A seen message matches the OR without its subject.
            ("OR SEEN SUBJECT lunch", &[1, 3], &[2, 3, 4]),
            ("OR SUBJECT lunch SEEN", &[1, 3], &[2, 3, 4]),
            ("NOT (UNSEEN BODY bitte)", &[1, 3, 4], &[2, 3, 4]),
            ("UID 2:3 NOT FROM nobody", &[2, 3], &[2, 3]),
            ("LARGER 1000 TEXT noon", &[3], &[3]),
            ("ANSWERED DELETED BODY x", &[], &[]),
            ("OR ALL BODY x", &[1, 2, 3, 4], &[]),
            // Many content keys: still one load per message.
            (
                "OR (TEXT numbers BODY look SUBJECT report FROM alice SENTON 1-Jan-2024 \
                 HEADER x-tag alpha) (TO team BCC secret CC nobody)",
                &[1],
                &[1, 2, 3, 4],
            ),
            ("TEXT a BODY b SUBJECT c HEADER d e", &[], &[1, 2, 3, 4]),
        ] {
            let (got, calls) = run(f, &key(text));
            assert_eq!(got, want, "{text}");
            assert_eq!(calls, loads, "{text}");
        }
    }

    #[test]
    fn vanished_files_do_not_match() {
        let mut fx = fixture();
        let f = &mut fx.folder;
        let paths: HashMap<u32, PathBuf> = f
            .messages()
            .map(|m| (m.uid, f.path(m.uid).unwrap()))
            .collect();
        fs::remove_file(&paths[&2]).unwrap();
        fs::remove_file(&paths[&4]).unwrap();
        let (got, calls) = run(f, &key("NOT SUBJECT nothing"));
        assert_eq!(got, [1, 3]);
        assert_eq!(calls, [1, 2, 3, 4]);
        // Metadata alone still answers (the next sync reports the expunge).
        assert_eq!(found(f, &key("ALL")), [1, 2, 3, 4]);
        // UID 2's size is in its name; UID 4's had to be read from the gone file.
        assert_eq!(found(f, &key("LARGER 0")), [1, 2, 3]);
        assert_eq!(found(f, &key("OR LARGER 0 SEEN")), [1, 2, 3]);
        let (got, calls) = run(f, &key("NOT SMALLER 0 NOT SUBJECT nothing"));
        assert_eq!(got, [1, 3]);
        assert_eq!(calls, [1, 2, 3]);
    }

    #[test]
    fn empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("Maildir")).unwrap();
        let mut f = store.folder("INBOX").unwrap();
        for text in ["ALL", "UID *", "UID 1:*", "*", "NOT UID 1", "BODY x"] {
            let (got, calls) = run(&mut f, &key(text));
            assert!(got.is_empty() && calls.is_empty(), "{text}");
        }
    }

    #[test]
    fn helpers() {
        assert!(in_ranges(&[(1, 3), (7, 7)], 3));
        assert!(in_ranges(&[(1, 3), (7, 7)], 7));
        assert!(!in_ranges(&[(1, 3), (7, 7)], 4));
        assert!(!in_ranges(&[(1, 3), (7, 7)], 8));
        assert!(!in_ranges(&[], 1));
        assert_eq!(squeeze("  a \t b\r\n c "), "a b c");
        let h = header_fields(b"A: 1\r\n 2\r\nno colon\r\nB : x\r\n\r\nC: body\r\n");
        let names: Vec<&[u8]> = h.iter().map(|f| f.0).collect();
        assert_eq!(names, [&b"A"[..], b"B"]);
        assert_eq!(h[0].1, b"A: 1\r\n 2\r\n");
        assert_eq!(and3(Some(true), None), None);
        assert_eq!(and3(None, Some(false)), Some(false));
        let k = compile(&key("BODY x SEEN LARGER 5 HEADER a b"), 0, 0);
        let Node::And(v) = k else { panic!() };
        let costs: Vec<u8> = v.iter().map(Node::cost).collect();
        assert_eq!(costs, [0, 1, 2, 3]);
    }
}
