//! Response side: small helpers that write correct IMAP syntax.

use crate::mutf7::encode_mailbox;
use crate::types::{civil_from_days, Flag};

/// Longest string written as a quoted string; longer ones become literals.
const MAX_QUOTED: usize = 1024;

/// `"..."` (with `\` and `"` escaped) when every byte is a TEXT-CHAR and the string is
/// short, else a synchronising literal `{n}\r\n...` (which a server may always send).
pub fn quoted_or_literal(s: &[u8]) -> Vec<u8> {
    let quotable = s.len() <= MAX_QUOTED
        && s.iter()
            .all(|&b| (0x01..=0x7f).contains(&b) && b != b'\r' && b != b'\n');
    if quotable {
        let mut out = Vec::with_capacity(s.len() + 2);
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        out
    } else {
        let mut out = format!("{{{}}}\r\n", s.len()).into_bytes();
        out.extend_from_slice(s);
        out
    }
}

/// An `astring`: the bare atom when possible (not empty, only ASTRING-CHARs, and not
/// `NIL`, which a client might take for nil), else [`quoted_or_literal`].
pub fn astring(s: &[u8]) -> Vec<u8> {
    if !s.is_empty()
        && s.iter().all(|&b| crate::parse::is_astring_char(b))
        && !s.eq_ignore_ascii_case(b"NIL")
    {
        s.to_vec()
    } else {
        quoted_or_literal(s)
    }
}

/// An `nstring`: `NIL` for `None`, else [`quoted_or_literal`].
pub fn nstring(s: Option<&[u8]>) -> Vec<u8> {
    match s {
        None => b"NIL".to_vec(),
        Some(s) => quoted_or_literal(s),
    }
}

/// A mailbox name for a response: modified UTF-7, then [`astring`].
pub fn mailbox_name(name: &str) -> Vec<u8> {
    astring(encode_mailbox(name).as_bytes())
}

/// A parenthesised flag list: `(\Seen $Forwarded)`.
pub fn format_flags(flags: &[Flag]) -> String {
    let mut out = String::from("(");
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(f.as_str());
    }
    out.push(')');
    out
}

/// An INTERNALDATE value, without its quotes: `17-Jul-1996 02:44:25 -0700` for the
/// instant `epoch` seen in the zone `offset_minutes` east of UTC (clamped to ±23:59).
pub fn format_internal_date(epoch: i64, offset_minutes: i32) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off = offset_minutes.clamp(-1439, 1439);
    let local = epoch.saturating_add(i64::from(off) * 60);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.unsigned_abs();
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}",
        d,
        MONTHS[(m as usize - 1) % 12],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        sign,
        a / 60,
        a % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        assert_eq!(
            quoted_or_literal(b"a \"b\" \\c"),
            b"\"a \\\"b\\\" \\\\c\"".to_vec()
        );
        assert_eq!(quoted_or_literal(b"a\r\nb"), b"{4}\r\na\r\nb".to_vec());
        assert_eq!(
            quoted_or_literal("ü".as_bytes()),
            b"{2}\r\n\xc3\xbc".to_vec()
        );
        assert_eq!(quoted_or_literal(b""), b"\"\"".to_vec());
        assert_eq!(
            quoted_or_literal(&[b'x'; 2000])[..7].to_vec(),
            b"{2000}\r".to_vec()
        );
        assert_eq!(astring(b"INBOX"), b"INBOX".to_vec());
        assert_eq!(astring(b"a b"), b"\"a b\"".to_vec());
        assert_eq!(astring(b""), b"\"\"".to_vec());
        assert_eq!(astring(b"nil"), b"\"nil\"".to_vec());
        assert_eq!(nstring(None), b"NIL".to_vec());
        assert_eq!(nstring(Some(b"x")), b"\"x\"".to_vec());
        assert_eq!(mailbox_name("Entwürfe"), b"Entw&APw-rfe".to_vec());
        assert_eq!(mailbox_name("Tom & Jerry"), b"\"Tom &- Jerry\"".to_vec());
    }

    #[test]
    fn flags() {
        assert_eq!(format_flags(&[]), "()");
        assert_eq!(
            format_flags(&[Flag::Seen, Flag::Keyword("$Forwarded".into())]),
            "(\\Seen $Forwarded)"
        );
    }

    #[test]
    fn internal_dates() {
        // 1996-07-17 09:44:25 UTC.
        assert_eq!(
            format_internal_date(837_596_665, -420),
            "17-Jul-1996 02:44:25 -0700"
        );
        assert_eq!(format_internal_date(0, 0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(format_internal_date(-1, 90), "01-Jan-1970 01:29:59 +0130");
        let back =
            crate::parse_command(b"a APPEND x \"17-Jul-1996 02:44:25 -0700\" {0}\r\n").unwrap();
        match back.kind {
            crate::CommandKind::Append { date: Some(d), .. } => {
                assert_eq!(d.epoch, 837_596_665);
                assert_eq!(
                    format_internal_date(d.epoch, d.offset_minutes),
                    "17-Jul-1996 02:44:25 -0700"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
