//! The values the parser produces: commands and their arguments.

use std::fmt;

/// One parsed command: its tag and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client's tag (empty for [`CommandKind::Done`], which has none).
    pub tag: String,
    /// The command and its arguments.
    pub kind: CommandKind,
}

/// Every command of RFC 3501 plus the extensions Petrel's imapd offers.
///
/// Mailbox names are already decoded from modified UTF-7 ("INBOX" in any case becomes
/// "INBOX"); list references and patterns are decoded but not case-normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// `CAPABILITY`.
    Capability,
    /// `NOOP`.
    Noop,
    /// `LOGOUT`.
    Logout,
    /// `STARTTLS`.
    StartTls,
    /// `AUTHENTICATE mechanism [initial-response]` (SASL-IR).
    Authenticate {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The SASL-IR initial response, base64-decoded; `=` gives an empty vector.
        initial: Option<Vec<u8>>,
    },
    /// `LOGIN user password`.
    Login {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `SELECT mailbox [(CONDSTORE)]`.
    Select {
        /// The mailbox.
        mailbox: String,
        /// The CONDSTORE select parameter was given.
        condstore: bool,
    },
    /// `EXAMINE mailbox [(CONDSTORE)]`.
    Examine {
        /// The mailbox.
        mailbox: String,
        /// The CONDSTORE select parameter was given.
        condstore: bool,
    },
    /// `CREATE mailbox [(USE (\Attr ...))]` (RFC 6154).
    Create {
        /// The mailbox.
        mailbox: String,
        /// Special-use attributes requested, as sent (e.g. `\Sent`).
        special_use: Vec<String>,
    },
    /// `DELETE mailbox`.
    Delete(String),
    /// `RENAME from to`.
    Rename {
        /// The existing mailbox.
        from: String,
        /// The new name.
        to: String,
    },
    /// `SUBSCRIBE mailbox`.
    Subscribe(String),
    /// `UNSUBSCRIBE mailbox`.
    Unsubscribe(String),
    /// `LIST` (RFC 3501, with the RFC 5258 extended syntax).
    List {
        /// The reference name.
        reference: String,
        /// One or more patterns (`%` and `*` wildcards).
        patterns: Vec<String>,
        /// Selection option SPECIAL-USE.
        select_special_use: bool,
        /// Selection option SUBSCRIBED.
        select_subscribed: bool,
        /// Selection option RECURSIVEMATCH.
        recursive_match: bool,
        /// Return option SPECIAL-USE.
        return_special_use: bool,
        /// Return option CHILDREN.
        return_children: bool,
        /// Return option SUBSCRIBED.
        return_subscribed: bool,
    },
    /// `LSUB reference pattern`.
    Lsub {
        /// The reference name.
        reference: String,
        /// The pattern.
        pattern: String,
    },
    /// `STATUS mailbox (items)`.
    Status {
        /// The mailbox.
        mailbox: String,
        /// The requested items, in order.
        items: Vec<StatusItem>,
    },
    /// `APPEND mailbox [flags] [date-time] literal`.
    Append {
        /// The mailbox.
        mailbox: String,
        /// The flags to set.
        flags: Vec<Flag>,
        /// The internal date to give the message.
        date: Option<DateTime>,
        /// The message, as sent.
        message: Vec<u8>,
    },
    /// `CHECK`.
    Check,
    /// `CLOSE`.
    Close,
    /// `UNSELECT`.
    Unselect,
    /// `EXPUNGE`.
    Expunge,
    /// `UID EXPUNGE set` (UIDPLUS).
    UidExpunge(SequenceSet),
    /// `[UID] SEARCH [RETURN (...)] [CHARSET x] keys`.
    Search {
        /// `UID SEARCH`.
        uid: bool,
        /// The charset named, upper-cased (only UTF-8 and US-ASCII are accepted).
        charset: Option<String>,
        /// The criteria; several top-level keys become one [`SearchKey::And`].
        criteria: SearchKey,
        /// ESEARCH return options; `RETURN ()` is given as `[All]`.
        ret: Option<Vec<SearchReturn>>,
    },
    /// `[UID] FETCH set items [(CHANGEDSINCE n)]`.
    Fetch {
        /// `UID FETCH`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// The items, macros expanded. `UID FETCH` does not add [`FetchItem::Uid`] here.
        items: Vec<FetchItem>,
        /// CONDSTORE CHANGEDSINCE modifier.
        changed_since: Option<u64>,
    },
    /// `[UID] STORE set [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags`.
    Store {
        /// `UID STORE`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// Replace, add or remove.
        mode: StoreMode,
        /// `.SILENT`.
        silent: bool,
        /// The flags.
        flags: Vec<Flag>,
        /// CONDSTORE UNCHANGEDSINCE modifier.
        unchanged_since: Option<u64>,
    },
    /// `[UID] COPY set mailbox`.
    Copy {
        /// `UID COPY`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// The destination.
        mailbox: String,
    },
    /// `[UID] MOVE set mailbox`.
    Move {
        /// `UID MOVE`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// The destination.
        mailbox: String,
    },
    /// `IDLE`.
    Idle,
    /// The `DONE` line that ends IDLE (untagged).
    Done,
    /// `NAMESPACE`.
    Namespace,
    /// `ID (key value ...)` or `ID NIL`.
    Id(Option<Vec<(String, Option<String>)>>),
    /// `ENABLE cap ...`, capabilities upper-cased.
    Enable(Vec<String>),
}

/// A STATUS data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    /// MESSAGES.
    Messages,
    /// RECENT.
    Recent,
    /// UIDNEXT.
    UidNext,
    /// UIDVALIDITY.
    UidValidity,
    /// UNSEEN.
    Unseen,
    /// HIGHESTMODSEQ (CONDSTORE).
    HighestModSeq,
    /// SIZE (RFC 8438).
    Size,
}

impl StatusItem {
    /// The item's name as written in a STATUS response.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::Size => "SIZE",
        }
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `FLAGS`: replace.
    Replace,
    /// `+FLAGS`: add.
    Add,
    /// `-FLAGS`: remove.
    Remove,
}

/// An ESEARCH (RFC 4731) return option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    /// MIN.
    Min,
    /// MAX.
    Max,
    /// COUNT.
    Count,
    /// ALL.
    All,
}

/// A message flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// `\Seen`.
    Seen,
    /// `\Answered`.
    Answered,
    /// `\Flagged`.
    Flagged,
    /// `\Deleted`.
    Deleted,
    /// `\Draft`.
    Draft,
    /// `\Recent`.
    Recent,
    /// A keyword (`$Forwarded`, `Junk`), or an unknown `\Extension` flag with its backslash.
    Keyword(String),
}

impl Flag {
    /// The flag as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Flag::Seen => "\\Seen",
            Flag::Answered => "\\Answered",
            Flag::Flagged => "\\Flagged",
            Flag::Deleted => "\\Deleted",
            Flag::Draft => "\\Draft",
            Flag::Recent => "\\Recent",
            Flag::Keyword(k) => k,
        }
    }

    /// The flag for a wire name (system flags case-insensitively).
    pub fn from_name(name: &str) -> Flag {
        let system = [
            Flag::Seen,
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Draft,
            Flag::Recent,
        ];
        system
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(name))
            .unwrap_or_else(|| Flag::Keyword(name.to_string()))
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A calendar date as used by SEARCH (no time, no zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// The year (four digits on the wire).
    pub year: u16,
    /// The month, 1–12.
    pub month: u8,
    /// The day of the month, 1–31 (checked against the month).
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }
}

/// A date-time as in APPEND and INTERNALDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub epoch: i64,
    /// The zone the client gave, in minutes east of UTC.
    pub offset_minutes: i32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known civil-days formula).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days in a month of a year.
pub(crate) fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// One end of a sequence range: a number or `*` (the largest in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    /// A non-zero number.
    Value(u32),
    /// `*`.
    Last,
}

impl SeqNum {
    fn resolve(self, max: u32) -> u32 {
        match self {
            SeqNum::Value(v) => v,
            SeqNum::Last => max,
        }
    }
}

/// `a`, `a:b`, `*`, `a:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    /// First end as written.
    pub start: SeqNum,
    /// Second end as written (equal to `start` for a single number).
    pub end: SeqNum,
}

/// A sequence set (message sequence numbers or UIDs). `$` (SEARCHRES) is not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(pub Vec<SeqRange>);

impl SequenceSet {
    /// The set's ranges resolved against `max` (the value of `*`), as sorted, merged,
    /// inclusive `(low, high)` pairs, each clipped to `max`. A range is unordered (`5:2`
    /// is `2:5`), so `100:*` with `max` 50 is `50`, as RFC 3501 requires.
    pub fn ranges(&self, max: u32) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .0
            .iter()
            .filter_map(|r| {
                let a = r.start.resolve(max);
                let b = r.end.resolve(max);
                let (lo, hi) = (a.min(b), a.max(b).min(max));
                (lo >= 1 && lo <= hi).then_some((lo, hi))
            })
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// Whether `n` is in the set when `*` means `max` (numbers above `max` never are).
    pub fn contains(&self, n: u32, max: u32) -> bool {
        n >= 1
            && n <= max
            && self.0.iter().any(|r| {
                let a = r.start.resolve(max);
                let b = r.end.resolve(max);
                a.min(b) <= n && n <= a.max(b)
            })
    }

    /// The numbers in the set, ascending and without repeats, clipped to `max`.
    pub fn iter(&self, max: u32) -> impl Iterator<Item = u32> {
        self.ranges(max).into_iter().flat_map(|(lo, hi)| lo..=hi)
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let one = |n: SeqNum| match n {
                SeqNum::Value(v) => v.to_string(),
                SeqNum::Last => "*".to_string(),
            };
            if r.start == r.end {
                f.write_str(&one(r.start))?;
            } else {
                write!(f, "{}:{}", one(r.start), one(r.end))?;
            }
        }
        Ok(())
    }
}

/// A SEARCH key (every key of RFC 3501 §6.4.4, plus CONDSTORE's MODSEQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// ALL.
    All,
    /// ANSWERED.
    Answered,
    /// BCC string.
    Bcc(String),
    /// BEFORE date (internal date).
    Before(Date),
    /// BODY string.
    Body(String),
    /// CC string.
    Cc(String),
    /// DELETED.
    Deleted,
    /// DRAFT.
    Draft,
    /// FLAGGED.
    Flagged,
    /// FROM string.
    From(String),
    /// HEADER field-name string.
    Header(String, String),
    /// KEYWORD flag.
    Keyword(String),
    /// LARGER n.
    Larger(u64),
    /// NEW.
    New,
    /// NOT key.
    Not(Box<SearchKey>),
    /// OLD.
    Old,
    /// ON date (internal date).
    On(Date),
    /// OR key key.
    Or(Box<SearchKey>, Box<SearchKey>),
    /// RECENT.
    Recent,
    /// SEEN.
    Seen,
    /// SENTBEFORE date (Date: header).
    SentBefore(Date),
    /// SENTON date.
    SentOn(Date),
    /// SENTSINCE date.
    SentSince(Date),
    /// SINCE date (internal date).
    Since(Date),
    /// SMALLER n.
    Smaller(u64),
    /// SUBJECT string.
    Subject(String),
    /// TEXT string.
    Text(String),
    /// TO string.
    To(String),
    /// UID set.
    Uid(SequenceSet),
    /// UNANSWERED.
    Unanswered,
    /// UNDELETED.
    Undeleted,
    /// UNDRAFT.
    Undraft,
    /// UNFLAGGED.
    Unflagged,
    /// UNKEYWORD flag.
    Unkeyword(String),
    /// UNSEEN.
    Unseen,
    /// A bare sequence set.
    SequenceSet(SequenceSet),
    /// MODSEQ [entry type] n (CONDSTORE; the entry name and type are ignored).
    ModSeq(u64),
    /// A parenthesised list or several keys in a row: all must match.
    And(Vec<SearchKey>),
}

/// A FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    /// FLAGS.
    Flags,
    /// INTERNALDATE.
    InternalDate,
    /// RFC822.SIZE.
    Rfc822Size,
    /// ENVELOPE.
    Envelope,
    /// BODY (non-extensible structure).
    Body,
    /// BODYSTRUCTURE.
    BodyStructure,
    /// UID.
    Uid,
    /// RFC822 (sets \Seen).
    Rfc822,
    /// RFC822.HEADER.
    Rfc822Header,
    /// RFC822.TEXT (sets \Seen).
    Rfc822Text,
    /// MODSEQ (CONDSTORE).
    ModSeq,
    /// `BODY[section]<partial>` or `BODY.PEEK[...]`.
    BodySection {
        /// `.PEEK`: do not set \Seen.
        peek: bool,
        /// The section.
        section: Section,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
    },
}

/// A body section: a part path and what of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part numbers (`1.2` → `[1, 2]`); empty for the whole message.
    pub part: Vec<u32>,
    /// HEADER, TEXT, MIME ...; `None` for the whole part.
    pub text: Option<SectionText>,
}

/// What of a part a section means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// HEADER.
    Header,
    /// HEADER.FIELDS (names), names as sent.
    HeaderFields(Vec<String>),
    /// HEADER.FIELDS.NOT (names).
    HeaderFieldsNot(Vec<String>),
    /// TEXT.
    Text,
    /// MIME (only with a part number).
    Mime,
}

/// Why a command could not be parsed. `text` is for a `TAG BAD text` (or `* BAD` when
/// there is no tag), except a charset refusal, which wants `TAG NO` (see
/// [`is_badcharset`](ParseError::is_badcharset)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tag, if it could be read.
    pub tag: Option<String>,
    /// A short explanation.
    pub text: String,
}

/// The text of a SEARCH refused for its charset.
pub const BADCHARSET: &str = "[BADCHARSET (UTF-8 US-ASCII)]";

impl ParseError {
    /// The command named a charset we do not have: answer `TAG NO <text>`, not BAD.
    pub fn is_badcharset(&self) -> bool {
        self.text.starts_with(BADCHARSET)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: &[(SeqNum, SeqNum)]) -> SequenceSet {
        SequenceSet(
            r.iter()
                .map(|&(start, end)| SeqRange { start, end })
                .collect(),
        )
    }

    #[test]
    fn sequence_sets() {
        use SeqNum::*;
        let s = set(&[
            (Value(5), Value(2)),
            (Value(4), Last),
            (Value(20), Value(20)),
        ]);
        assert_eq!(s.ranges(10), vec![(2, 10)]);
        assert_eq!(s.iter(6).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
        assert!(s.contains(3, 10));
        assert!(!s.contains(20, 10));
        assert!(!s.contains(0, 10));
        let s = set(&[(Value(100), Last)]);
        assert_eq!(s.ranges(50), vec![(50, 50)]);
        assert!(s.contains(50, 50));
        assert_eq!(set(&[(Value(60), Value(70))]).ranges(50), vec![]);
        assert_eq!(set(&[(Last, Last)]).ranges(0), vec![]);
        assert_eq!(s.to_string(), "100:*");
        assert_eq!(
            set(&[(Value(1), Value(1)), (Value(3), Value(4))]).to_string(),
            "1,3:4"
        );
        let big = set(&[(Value(1), Value(u32::MAX)), (Value(3), Value(4))]);
        assert_eq!(big.ranges(u32::MAX), vec![(1, u32::MAX)]);
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-800_000, -1, 0, 1, 11_016, 20_000, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2024, 2), 29);
    }

    #[test]
    fn flags() {
        assert_eq!(Flag::from_name("\\SEEN"), Flag::Seen);
        assert_eq!(Flag::from_name("$Junk"), Flag::Keyword("$Junk".into()));
        assert_eq!(Flag::Deleted.to_string(), "\\Deleted");
    }
}
