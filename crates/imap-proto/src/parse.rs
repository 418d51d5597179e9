//! One complete command (as [`CommandReader`](crate::CommandReader) gives it) → [`Command`].
//!
//! The grammar is RFC 3501 §9 with the extensions listed in the crate doc. Keywords are
//! case-insensitive; strings are atoms, quoted strings or literals (`{n}` / `{n+}` followed
//! by CRLF and n bytes, which the reader has put inline). Nothing here panics on any input:
//! every failure is a [`ParseError`] carrying the tag when it was readable.

use base64::Engine as _;

use crate::mutf7::{decode_mailbox, decode_mutf7};
use crate::types::{
    days_in_month, Command, CommandKind, Date, DateTime, FetchItem, Flag, ParseError, SearchKey,
    SearchReturn, SectionText, SeqNum, SeqRange, SequenceSet, StatusItem, StoreMode, BADCHARSET,
};
use crate::Section;

/// Deepest nesting of parenthesised lists and NOT/OR chains accepted.
pub const MAX_DEPTH: usize = 64;

/// `ATOM-CHAR`: any CHAR except atom-specials.
pub(crate) fn is_atom_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// `ASTRING-CHAR`.
pub(crate) fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// A character allowed in a tag (`ASTRING-CHAR` except `+`).
pub(crate) fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// `list-char`.
fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

/// Whether a line is the `DONE` that ends IDLE (case-insensitive, CRLF optional).
pub fn is_done_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.eq_ignore_ascii_case(b"DONE")
}

type R<T> = Result<T, String>;

/// Parses one complete command (without its final CRLF).
pub fn parse_command(bytes: &[u8]) -> Result<Command, ParseError> {
    if is_done_line(bytes) {
        return Ok(Command {
            tag: String::new(),
            kind: CommandKind::Done,
        });
    }
    let mut p = P {
        s: bytes,
        pos: 0,
        depth: 0,
    };
    let tag = p.tag().map_err(|text| ParseError { tag: None, text })?;
    let result = p.sp().and_then(|()| p.command());
    match result {
        Ok(kind) if p.pos == p.s.len() => Ok(Command { tag, kind }),
        Ok(_) => Err(ParseError {
            tag: Some(tag),
            text: "Unexpected extra arguments".to_string(),
        }),
        Err(text) => Err(ParseError {
            tag: Some(tag),
            text,
        }),
    }
}

struct P<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, what: &str) -> R<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else if self.pos >= self.s.len() {
            Err(format!("Missing {what}"))
        } else {
            Err(format!("Expected {what}"))
        }
    }

    fn sp(&mut self) -> R<()> {
        match self.peek() {
            Some(b' ') => {
                self.pos += 1;
                Ok(())
            }
            None => Err("Missing argument".to_string()),
            Some(_) => Err("Invalid characters in argument".to_string()),
        }
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err("Too deeply nested".to_string())
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let s: &'a [u8] = self.s;
        let start = self.pos;
        while self.pos < s.len() && f(s[self.pos]) {
            self.pos += 1;
        }
        &s[start..self.pos]
    }

    fn tag(&mut self) -> R<String> {
        let t = self.take_while(is_tag_char);
        if t.is_empty() || self.peek().is_some_and(|b| b != b' ') {
            return Err("Invalid tag".to_string());
        }
        // Tag characters are ASCII.
        Ok(String::from_utf8_lossy(t).into_owned())
    }

    /// An atom, upper-cased.
    fn atom_upper(&mut self, what: &str) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err(if self.pos >= self.s.len() {
                format!("Missing {what}")
            } else {
                format!("Invalid {what}")
            });
        }
        Ok(String::from_utf8_lossy(a).to_ascii_uppercase())
    }

    /// A word made of letters, digits, dots and dashes (fetch and section names), upper-cased.
    fn name_upper(&mut self) -> String {
        let a = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        String::from_utf8_lossy(a).to_ascii_uppercase()
    }

    fn number_raw(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            return Err("Expected a number".to_string());
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| "Number too big".to_string())
    }

    fn number(&mut self) -> R<u32> {
        u32::try_from(self.number_raw()?).map_err(|_| "Number too big".to_string())
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => Err("Zero is not allowed here".to_string()),
            n => Ok(n),
        }
    }

    /// `mod-sequence-value` (1..2^63-1) or with `allow_zero` `mod-sequence-valzer`.
    fn modseq(&mut self, allow_zero: bool) -> R<u64> {
        let n = self.number_raw()?;
        if n > i64::MAX as u64 || (n == 0 && !allow_zero) {
            return Err("Invalid mod-sequence".to_string());
        }
        Ok(n)
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"', "quote")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("Unterminated quoted string".to_string()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("Invalid escape in quoted string".to_string()),
                    }
                }
                Some(0 | b'\r' | b'\n') => {
                    return Err("Invalid character in quoted string".to_string())
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// A literal: `{n}` or `{n+}`, CRLF, n bytes. NUL is refused unless `allow_nul`.
    fn literal(&mut self, allow_nul: bool) -> R<Vec<u8>> {
        self.expect(b'{', "literal")?;
        let n = self.number_raw()?;
        self.eat(b'+');
        self.expect(b'}', "literal end")?;
        if !self.s[self.pos..].starts_with(b"\r\n") {
            return Err("Literal marker must end the line".to_string());
        }
        self.pos += 2;
        let n = usize::try_from(n).map_err(|_| "Literal too big".to_string())?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.s.len())
            .ok_or_else(|| "Literal data missing".to_string())?;
        let data = &self.s[self.pos..end];
        if !allow_nul && data.contains(&0) {
            return Err("NUL in literal".to_string());
        }
        self.pos = end;
        Ok(data.to_vec())
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(false),
            None => Err("Missing argument".to_string()),
            Some(_) => Err("Expected a string".to_string()),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    Err(if self.pos >= self.s.len() {
                        "Missing argument".to_string()
                    } else {
                        "Invalid characters in argument".to_string()
                    })
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn astring_utf8(&mut self) -> R<String> {
        utf8(self.astring()?)
    }

    fn nstring_utf8(&mut self) -> R<Option<String>> {
        if self.peek_word("NIL") {
            self.pos += 3;
            return Ok(None);
        }
        self.string().and_then(utf8).map(Some)
    }

    /// Whether the next atom is `w` (case-insensitive) — not consumed.
    fn peek_word(&self, w: &str) -> bool {
        let rest = &self.s[self.pos..];
        rest.len() >= w.len()
            && rest[..w.len()].eq_ignore_ascii_case(w.as_bytes())
            && rest.get(w.len()).is_none_or(|&b| !is_atom_char(b))
    }

    fn mailbox(&mut self) -> R<String> {
        decode_mailbox(&self.astring_utf8()?)
    }

    fn list_mailbox(&mut self) -> R<String> {
        let raw = match self.peek() {
            Some(b'"' | b'{') => self.string()?,
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err("Missing mailbox pattern".to_string());
                }
                a.to_vec()
            }
        };
        decode_mutf7(&utf8(raw)?)
    }

    fn command(&mut self) -> R<CommandKind> {
        let name = self.atom_upper("command")?;
        let none = |k: CommandKind| Ok(k);
        match name.as_str() {
            "CAPABILITY" => none(CommandKind::Capability),
            "NOOP" => none(CommandKind::Noop),
            "LOGOUT" => none(CommandKind::Logout),
            "STARTTLS" => none(CommandKind::StartTls),
            "CHECK" => none(CommandKind::Check),
            "CLOSE" => none(CommandKind::Close),
            "UNSELECT" => none(CommandKind::Unselect),
            "EXPUNGE" => none(CommandKind::Expunge),
            "IDLE" => none(CommandKind::Idle),
            "NAMESPACE" => none(CommandKind::Namespace),
            "AUTHENTICATE" => self.authenticate(),
            "LOGIN" => {
                self.sp()?;
                let user = self.astring_utf8()?;
                self.sp()?;
                let password = self.astring_utf8()?;
                Ok(CommandKind::Login { user, password })
            }
            "SELECT" | "EXAMINE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let condstore = self.select_params()?;
                Ok(if name == "SELECT" {
                    CommandKind::Select { mailbox, condstore }
                } else {
                    CommandKind::Examine { mailbox, condstore }
                })
            }
            "CREATE" => self.create(),
            "DELETE" => {
                self.sp()?;
                Ok(CommandKind::Delete(self.mailbox()?))
            }
            "SUBSCRIBE" => {
                self.sp()?;
                Ok(CommandKind::Subscribe(self.mailbox()?))
            }
            "UNSUBSCRIBE" => {
                self.sp()?;
                Ok(CommandKind::Unsubscribe(self.mailbox()?))
            }
            "RENAME" => {
                self.sp()?;
                let from = self.mailbox()?;
                self.sp()?;
                let to = self.mailbox()?;
                Ok(CommandKind::Rename { from, to })
            }
            "LIST" => self.list(),
            "LSUB" => {
                self.sp()?;
                let reference = decode_mutf7(&self.astring_utf8()?)?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                Ok(CommandKind::Lsub { reference, pattern })
            }
            "STATUS" => self.status(),
            "APPEND" => self.append(),
            "SEARCH" => self.search(false),
            "FETCH" => self.fetch(false),
            "STORE" => self.store(false),
            "COPY" => self.copy_move(false, false),
            "MOVE" => self.copy_move(false, true),
            "UID" => {
                self.sp()?;
                let sub = self.atom_upper("UID command")?;
                match sub.as_str() {
                    "SEARCH" => self.search(true),
                    "FETCH" => self.fetch(true),
                    "STORE" => self.store(true),
                    "COPY" => self.copy_move(true, false),
                    "MOVE" => self.copy_move(true, true),
                    "EXPUNGE" => {
                        self.sp()?;
                        Ok(CommandKind::UidExpunge(self.sequence_set()?))
                    }
                    _ => Err("Unknown UID command".to_string()),
                }
            }
            "ID" => self.id(),
            "ENABLE" => {
                let mut caps = Vec::new();
                while self.peek() == Some(b' ') {
                    self.sp()?;
                    caps.push(self.atom_upper("capability")?);
                }
                if caps.is_empty() {
                    return Err("Missing argument".to_string());
                }
                Ok(CommandKind::Enable(caps))
            }
            _ => Err("Unknown command".to_string()),
        }
    }

    fn authenticate(&mut self) -> R<CommandKind> {
        self.sp()?;
        let mechanism = self.atom_upper("mechanism")?;
        let initial = if self.eat(b' ') {
            let raw = self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            if raw == b"=" {
                Some(Vec::new())
            } else if raw.is_empty() {
                return Err("Invalid initial response".to_string());
            } else {
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .map_err(|_| "Invalid base64 in initial response".to_string())?,
                )
            }
        } else {
            None
        };
        Ok(CommandKind::Authenticate { mechanism, initial })
    }

    /// `[SP "(" select-param *(SP select-param) ")"]` → whether CONDSTORE was given.
    fn select_params(&mut self) -> R<bool> {
        if !self.eat(b' ') {
            return Ok(false);
        }
        self.expect(b'(', "(")?;
        // CONDSTORE is the only parameter we know, so a valid list always contains it.
        loop {
            if self.atom_upper("select parameter")? != "CONDSTORE" {
                return Err("Unknown select parameter".to_string());
            }
            if self.eat(b')') {
                return Ok(true);
            }
            self.sp()?;
        }
    }

    fn create(&mut self) -> R<CommandKind> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        let mut special_use = Vec::new();
        if self.eat(b' ') {
            self.expect(b'(', "(")?;
            loop {
                if self.atom_upper("create parameter")? != "USE" {
                    return Err("Unknown create parameter".to_string());
                }
                self.sp()?;
                self.expect(b'(', "(")?;
                loop {
                    self.expect(b'\\', "special-use attribute")?;
                    let a = self.take_while(is_atom_char);
                    if a.is_empty() {
                        return Err("Invalid special-use attribute".to_string());
                    }
                    special_use.push(format!("\\{}", String::from_utf8_lossy(a)));
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        Ok(CommandKind::Create {
            mailbox,
            special_use,
        })
    }

    /// `"(" [word *(SP word)] ")"`, words upper-cased.
    fn word_list(&mut self, what: &str) -> R<Vec<String>> {
        self.expect(b'(', "(")?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.atom_upper(what)?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn list(&mut self) -> R<CommandKind> {
        self.sp()?;
        let (mut select_special_use, mut select_subscribed, mut recursive_match) =
            (false, false, false);
        if self.peek() == Some(b'(') {
            for o in self.word_list("selection option")? {
                match o.as_str() {
                    "SPECIAL-USE" => select_special_use = true,
                    "SUBSCRIBED" => select_subscribed = true,
                    "RECURSIVEMATCH" => recursive_match = true,
                    "REMOTE" => {}
                    _ => return Err("Unknown LIST selection option".to_string()),
                }
            }
            self.sp()?;
        }
        let reference = decode_mutf7(&self.astring_utf8()?)?;
        self.sp()?;
        let mut patterns = Vec::new();
        if self.eat(b'(') {
            loop {
                patterns.push(self.list_mailbox()?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        } else {
            patterns.push(self.list_mailbox()?);
        }
        let (mut return_special_use, mut return_children, mut return_subscribed) =
            (false, false, false);
        if self.eat(b' ') {
            if self.atom_upper("RETURN")? != "RETURN" {
                return Err("Expected RETURN".to_string());
            }
            self.sp()?;
            for o in self.word_list("return option")? {
                match o.as_str() {
                    "SPECIAL-USE" => return_special_use = true,
                    "CHILDREN" => return_children = true,
                    "SUBSCRIBED" => return_subscribed = true,
                    _ => return Err("Unknown LIST return option".to_string()),
                }
            }
        }
        if recursive_match && !(select_subscribed || select_special_use) {
            return Err("RECURSIVEMATCH needs another selection option".to_string());
        }
        Ok(CommandKind::List {
            reference,
            patterns,
            select_special_use,
            select_subscribed,
            recursive_match,
            return_special_use,
            return_children,
            return_subscribed,
        })
    }

    fn status(&mut self) -> R<CommandKind> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.sp()?;
        let words = self.word_list("status item")?;
        if words.is_empty() {
            return Err("Missing status items".to_string());
        }
        let items = words
            .iter()
            .map(|w| match w.as_str() {
                "MESSAGES" => Ok(StatusItem::Messages),
                "RECENT" => Ok(StatusItem::Recent),
                "UIDNEXT" => Ok(StatusItem::UidNext),
                "UIDVALIDITY" => Ok(StatusItem::UidValidity),
                "UNSEEN" => Ok(StatusItem::Unseen),
                "HIGHESTMODSEQ" => Ok(StatusItem::HighestModSeq),
                "SIZE" => Ok(StatusItem::Size),
                _ => Err("Unknown status item".to_string()),
            })
            .collect::<R<Vec<_>>>()?;
        Ok(CommandKind::Status { mailbox, items })
    }

    fn append(&mut self) -> R<CommandKind> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.sp()?;
        let mut flags = Vec::new();
        if self.peek() == Some(b'(') {
            flags = self.flag_list()?;
            self.sp()?;
        }
        let mut date = None;
        if self.peek() == Some(b'"') {
            date = Some(self.date_time()?);
            self.sp()?;
        }
        if self.peek() != Some(b'{') {
            return Err("APPEND needs the message as a literal".to_string());
        }
        let message = self.literal(true)?;
        Ok(CommandKind::Append {
            mailbox,
            flags,
            date,
            message,
        })
    }

    fn flag(&mut self) -> R<Flag> {
        let back = self.eat(b'\\');
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("Invalid flag".to_string());
        }
        // Atom characters are ASCII.
        let a = String::from_utf8_lossy(a);
        Ok(if back {
            Flag::from_name(&format!("\\{a}"))
        } else {
            Flag::Keyword(a.into_owned())
        })
    }

    fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.expect(b'(', "(")?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.flag()?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn month(&mut self) -> R<u8> {
        const MONTHS: [&[u8; 3]; 12] = [
            b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
            b"DEC",
        ];
        let m = self.s.get(self.pos..self.pos + 3).ok_or("Invalid date")?;
        let i = MONTHS
            .iter()
            .position(|x| m.eq_ignore_ascii_case(&x[..]))
            .ok_or("Invalid month")?;
        self.pos += 3;
        Ok(i as u8 + 1)
    }

    fn digits(&mut self, min: usize, max: usize) -> R<u32> {
        let start = self.pos;
        while self.pos - start < max && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos - start < min {
            return Err("Invalid date".to_string());
        }
        Ok(self.s[start..self.pos]
            .iter()
            .fold(0, |n, &d| n * 10 + u32::from(d - b'0')))
    }

    /// `date-text` without quotes: d[d]-Mon-yyyy.
    fn date_text(&mut self) -> R<Date> {
        let day = self.digits(1, 2)?;
        self.expect(b'-', "date")?;
        let month = self.month()?;
        self.expect(b'-', "date")?;
        let year = self.digits(4, 4)?;
        let year = u16::try_from(year).map_err(|_| "Invalid date")?;
        if day == 0 || day > u32::from(days_in_month(year, month)) {
            return Err("Invalid date".to_string());
        }
        Ok(Date {
            year,
            month,
            day: day as u8,
        })
    }

    fn date(&mut self) -> R<Date> {
        if self.eat(b'"') {
            let d = self.date_text()?;
            self.expect(b'"', "quote")?;
            Ok(d)
        } else {
            self.date_text()
        }
    }

    /// `date-time`: "dd-Mon-yyyy hh:mm:ss +zzzz" (the day may be space-padded).
    fn date_time(&mut self) -> R<DateTime> {
        self.expect(b'"', "quote")?;
        self.eat(b' ');
        let d = self.date_text()?;
        self.expect(b' ', "time")?;
        let h = self.digits(2, 2)?;
        self.expect(b':', "time")?;
        let mi = self.digits(2, 2)?;
        self.expect(b':', "time")?;
        let s = self.digits(2, 2)?;
        self.expect(b' ', "zone")?;
        let sign: i32 = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("Invalid zone".to_string()),
        };
        self.pos += 1;
        let z = self.digits(4, 4)?;
        self.expect(b'"', "quote")?;
        if h > 23 || mi > 59 || s > 60 || z % 100 > 59 {
            return Err("Invalid time".to_string());
        }
        let offset_minutes = sign * (z / 100 * 60 + z % 100) as i32;
        let epoch = d.days_since_epoch() * 86_400 + i64::from(h * 3600 + mi * 60 + s)
            - i64::from(offset_minutes) * 60;
        Ok(DateTime {
            epoch,
            offset_minutes,
        })
    }

    fn seq_number(&mut self) -> R<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Last)
        } else {
            self.nz_number().map(SeqNum::Value)
        }
    }

    fn sequence_set(&mut self) -> R<SequenceSet> {
        if self.peek() == Some(b'$') {
            return Err("Saved search results ($) are not supported".to_string());
        }
        let mut v = Vec::new();
        loop {
            let start = self.seq_number()?;
            let end = if self.eat(b':') {
                self.seq_number()?
            } else {
                start
            };
            v.push(SeqRange { start, end });
            if !self.eat(b',') {
                return Ok(SequenceSet(v));
            }
        }
    }

    fn search(&mut self, uid: bool) -> R<CommandKind> {
        self.sp()?;
        let mut ret = None;
        if self.peek_word("RETURN") {
            self.pos += 6;
            self.sp()?;
            let mut opts = Vec::new();
            for w in self.word_list("return option")? {
                opts.push(match w.as_str() {
                    "MIN" => SearchReturn::Min,
                    "MAX" => SearchReturn::Max,
                    "COUNT" => SearchReturn::Count,
                    "ALL" => SearchReturn::All,
                    _ => return Err("Unknown SEARCH return option".to_string()),
                });
            }
            if opts.is_empty() {
                opts.push(SearchReturn::All);
            }
            ret = Some(opts);
            self.sp()?;
        }
        let mut charset = None;
        if self.peek_word("CHARSET") {
            self.pos += 7;
            self.sp()?;
            let cs = self.astring_utf8()?.to_ascii_uppercase();
            if cs != "UTF-8" && cs != "US-ASCII" {
                return Err(format!("{BADCHARSET} Unsupported charset"));
            }
            charset = Some(cs);
            self.sp()?;
        }
        let mut keys = vec![self.search_key()?];
        while self.eat(b' ') {
            keys.push(self.search_key()?);
        }
        let criteria = if keys.len() == 1 {
            keys.pop().unwrap_or(SearchKey::All)
        } else {
            SearchKey::And(keys)
        };
        Ok(CommandKind::Search {
            uid,
            charset,
            criteria,
            ret,
        })
    }

    fn search_string(&mut self) -> R<String> {
        self.sp()?;
        self.astring_utf8()
    }

    fn search_date(&mut self) -> R<Date> {
        self.sp()?;
        self.date()
    }

    fn search_key(&mut self) -> R<SearchKey> {
        self.enter()?;
        let k = self.search_key_inner();
        self.leave();
        k
    }

    fn search_key_inner(&mut self) -> R<SearchKey> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let mut keys = vec![self.search_key()?];
                while !self.eat(b')') {
                    self.sp()?;
                    keys.push(self.search_key()?);
                }
                return Ok(if keys.len() == 1 {
                    keys.pop().unwrap_or(SearchKey::All)
                } else {
                    SearchKey::And(keys)
                });
            }
            Some(b'0'..=b'9' | b'*' | b'$') => {
                return self.sequence_set().map(SearchKey::SequenceSet);
            }
            _ => {}
        }
        use SearchKey as K;
        let w = self.atom_upper("search key")?;
        Ok(match w.as_str() {
            "ALL" => K::All,
            "ANSWERED" => K::Answered,
            "DELETED" => K::Deleted,
            "DRAFT" => K::Draft,
            "FLAGGED" => K::Flagged,
            "NEW" => K::New,
            "OLD" => K::Old,
            "RECENT" => K::Recent,
            "SEEN" => K::Seen,
            "UNANSWERED" => K::Unanswered,
            "UNDELETED" => K::Undeleted,
            "UNDRAFT" => K::Undraft,
            "UNFLAGGED" => K::Unflagged,
            "UNSEEN" => K::Unseen,
            "BCC" => K::Bcc(self.search_string()?),
            "BODY" => K::Body(self.search_string()?),
            "CC" => K::Cc(self.search_string()?),
            "FROM" => K::From(self.search_string()?),
            "SUBJECT" => K::Subject(self.search_string()?),
            "TEXT" => K::Text(self.search_string()?),
            "TO" => K::To(self.search_string()?),
            "HEADER" => {
                let name = self.search_string()?;
                K::Header(name, self.search_string()?)
            }
            "BEFORE" => K::Before(self.search_date()?),
            "ON" => K::On(self.search_date()?),
            "SINCE" => K::Since(self.search_date()?),
            "SENTBEFORE" => K::SentBefore(self.search_date()?),
            "SENTON" => K::SentOn(self.search_date()?),
            "SENTSINCE" => K::SentSince(self.search_date()?),
            "KEYWORD" | "UNKEYWORD" => {
                self.sp()?;
                let a = self.take_while(is_atom_char);
                if a.is_empty() {
                    return Err("Invalid keyword".to_string());
                }
                // Atom characters are ASCII.
                let kw = String::from_utf8_lossy(a).into_owned();
                if w == "KEYWORD" {
                    K::Keyword(kw)
                } else {
                    K::Unkeyword(kw)
                }
            }
            "LARGER" => {
                self.sp()?;
                K::Larger(self.number_raw()?)
            }
            "SMALLER" => {
                self.sp()?;
                K::Smaller(self.number_raw()?)
            }
            "UID" => {
                self.sp()?;
                K::Uid(self.sequence_set()?)
            }
            "NOT" => {
                self.sp()?;
                K::Not(Box::new(self.search_key()?))
            }
            "OR" => {
                self.sp()?;
                let a = self.search_key()?;
                self.sp()?;
                K::Or(Box::new(a), Box::new(self.search_key()?))
            }
            "MODSEQ" => {
                self.sp()?;
                if self.peek() == Some(b'"') {
                    let name = self.quoted()?;
                    if !name.starts_with(b"/flags/") {
                        return Err("Invalid MODSEQ entry name".to_string());
                    }
                    self.sp()?;
                    match self.atom_upper("entry type")?.as_str() {
                        "PRIV" | "SHARED" | "ALL" => {}
                        _ => return Err("Invalid MODSEQ entry type".to_string()),
                    }
                    self.sp()?;
                }
                K::ModSeq(self.modseq(true)?)
            }
            _ => return Err("Unknown search key".to_string()),
        })
    }

    fn fetch(&mut self, uid: bool) -> R<CommandKind> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut items = Vec::new();
        if self.eat(b'(') {
            loop {
                self.fetch_att(&mut items, false)?;
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        } else {
            self.fetch_att(&mut items, true)?;
        }
        let mut changed_since = None;
        if self.eat(b' ') {
            self.expect(b'(', "(")?;
            loop {
                match self.atom_upper("fetch modifier")?.as_str() {
                    "CHANGEDSINCE" => {
                        self.sp()?;
                        changed_since = Some(self.modseq(true)?);
                    }
                    _ => return Err("Unknown FETCH modifier".to_string()),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        Ok(CommandKind::Fetch {
            uid,
            set,
            items,
            changed_since,
        })
    }

    fn fetch_att(&mut self, out: &mut Vec<FetchItem>, macros: bool) -> R<()> {
        use FetchItem as F;
        let name = self.name_upper();
        let item = match name.as_str() {
            "ALL" | "FAST" | "FULL" if macros => {
                out.extend([F::Flags, F::InternalDate, F::Rfc822Size]);
                if name != "FAST" {
                    out.push(F::Envelope);
                }
                if name == "FULL" {
                    out.push(F::Body);
                }
                return Ok(());
            }
            "ENVELOPE" => F::Envelope,
            "FLAGS" => F::Flags,
            "INTERNALDATE" => F::InternalDate,
            "RFC822" => F::Rfc822,
            "RFC822.HEADER" => F::Rfc822Header,
            "RFC822.SIZE" => F::Rfc822Size,
            "RFC822.TEXT" => F::Rfc822Text,
            "BODYSTRUCTURE" => F::BodyStructure,
            "UID" => F::Uid,
            "MODSEQ" => F::ModSeq,
            "BODY" if self.peek() != Some(b'[') => F::Body,
            "BODY" | "BODY.PEEK" => {
                let section = self.section()?;
                let partial = if self.eat(b'<') {
                    let off = self.number()?;
                    self.expect(b'.', "partial length")?;
                    let len = self.nz_number()?;
                    self.expect(b'>', ">")?;
                    Some((off, len))
                } else {
                    None
                };
                F::BodySection {
                    peek: name == "BODY.PEEK",
                    section,
                    partial,
                }
            }
            "" => {
                return Err(if self.pos >= self.s.len() {
                    "Missing fetch item".to_string()
                } else {
                    "Invalid fetch item".to_string()
                })
            }
            _ => return Err("Unknown fetch item".to_string()),
        };
        out.push(item);
        Ok(())
    }

    fn section(&mut self) -> R<Section> {
        self.expect(b'[', "[")?;
        let mut section = Section::default();
        if self.eat(b']') {
            return Ok(section);
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            section.part.push(self.nz_number()?);
            if !self.eat(b'.') {
                self.expect(b']', "]")?;
                return Ok(section);
            }
        }
        let word = self.take_while(|b| b.is_ascii_alphabetic() || b == b'.');
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        section.text = Some(match word.as_str() {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" if !section.part.is_empty() => SectionText::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                self.sp()?;
                self.expect(b'(', "(")?;
                let mut names = Vec::new();
                loop {
                    names.push(self.astring_utf8()?);
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
                if word == "HEADER.FIELDS" {
                    SectionText::HeaderFields(names)
                } else {
                    SectionText::HeaderFieldsNot(names)
                }
            }
            _ => return Err("Invalid body section".to_string()),
        });
        self.expect(b']', "]")?;
        Ok(section)
    }

    fn store(&mut self, uid: bool) -> R<CommandKind> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.eat(b'(') {
            loop {
                match self.atom_upper("store modifier")?.as_str() {
                    "UNCHANGEDSINCE" => {
                        self.sp()?;
                        unchanged_since = Some(self.modseq(true)?);
                    }
                    _ => return Err("Unknown STORE modifier".to_string()),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            self.sp()?;
        }
        let mode = if self.eat(b'+') {
            StoreMode::Add
        } else if self.eat(b'-') {
            StoreMode::Remove
        } else {
            StoreMode::Replace
        };
        let silent = match self.name_upper().as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("Invalid STORE data item".to_string()),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(CommandKind::Store {
            uid,
            set,
            mode,
            silent,
            flags,
            unchanged_since,
        })
    }

    fn copy_move(&mut self, uid: bool, is_move: bool) -> R<CommandKind> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mailbox = self.mailbox()?;
        Ok(if is_move {
            CommandKind::Move { uid, set, mailbox }
        } else {
            CommandKind::Copy { uid, set, mailbox }
        })
    }

    fn id(&mut self) -> R<CommandKind> {
        self.sp()?;
        if self.peek_word("NIL") {
            self.pos += 3;
            return Ok(CommandKind::Id(None));
        }
        self.expect(b'(', "(")?;
        let mut params = Vec::new();
        if self.eat(b')') {
            return Ok(CommandKind::Id(Some(params)));
        }
        loop {
            let key = self.string().and_then(utf8)?;
            self.sp()?;
            let value = self.nstring_utf8()?;
            params.push((key, value));
            if self.eat(b')') {
                return Ok(CommandKind::Id(Some(params)));
            }
            self.sp()?;
        }
    }
}

fn utf8(b: Vec<u8>) -> R<String> {
    String::from_utf8(b).map_err(|_| "Invalid UTF-8 in string".to_string())
}
