//! The header section of a message or MIME part: where it ends and its fields.

use std::ops::Range;

/// Splits an entity (CRLF form) into its header, including the blank line that ends it,
/// and its body. With no blank line the whole entity is header and the body is empty.
pub(crate) fn split(msg: &[u8], range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let bytes = &msg[range.clone()];
    let mut line_start = 0;
    loop {
        if bytes[line_start..].starts_with(b"\r\n") {
            let h = range.start + line_start + 2;
            return (range.start..h, h..range.end);
        }
        if bytes[line_start..].starts_with(b"\n") {
            let h = range.start + line_start + 1;
            return (range.start..h, h..range.end);
        }
        match memchr(b'\n', &bytes[line_start..]) {
            Some(i) => line_start += i + 1,
            None => return (range.clone(), range.end..range.end),
        }
    }
}

/// Position of the first `needle` byte in `hay`.
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// One header field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Field name as written (without the colon and trailing blanks).
    pub name: Range<usize>,
    /// The whole field: name, value and every continuation line with their line ends.
    pub whole: Range<usize>,
    /// The value: after the colon, up to (not including) the final line end.
    pub value: Range<usize>,
}

/// Iterates over the fields of a header range, up to the blank line that ends it (so a
/// whole message may be passed: iteration stops at the end of its header).
/// A line that is neither a field nor a continuation (no colon) becomes a field whose name
/// is the whole line and whose value is empty.
pub(crate) struct Fields<'a> {
    msg: &'a [u8],
    pos: usize,
    end: usize,
}

pub(crate) fn fields(msg: &[u8], header: Range<usize>) -> Fields<'_> {
    Fields {
        msg,
        pos: header.start,
        end: header.end,
    }
}

impl Iterator for Fields<'_> {
    type Item = Field;

    fn next(&mut self) -> Option<Field> {
        let msg = self.msg;
        loop {
            if self.pos >= self.end {
                return None;
            }
            let start = self.pos;
            let line_end = |from: usize| match memchr(b'\n', &msg[from..self.end]) {
                Some(i) => from + i + 1,
                None => self.end,
            };
            let mut end = line_end(start);
            let first_line = &msg[start..end];
            if first_line == b"\r\n" || first_line == b"\n" {
                self.pos = self.end;
                return None;
            }
            // A stray continuation line at the top: skip.
            if matches!(first_line[0], b' ' | b'\t') {
                self.pos = end;
                continue;
            }
            while end < self.end && matches!(msg[end], b' ' | b'\t') {
                end = line_end(end);
            }
            self.pos = end;
            let mut value_end = end;
            if value_end > start && msg[value_end - 1] == b'\n' {
                value_end -= 1;
                if value_end > start && msg[value_end - 1] == b'\r' {
                    value_end -= 1;
                }
            }
            let (name, value) = match memchr(b':', &msg[start..value_end]) {
                Some(i) => {
                    let mut name_end = start + i;
                    while name_end > start && matches!(msg[name_end - 1], b' ' | b'\t') {
                        name_end -= 1;
                    }
                    (start..name_end, start + i + 1..value_end)
                }
                None => (start..value_end, value_end..value_end),
            };
            return Some(Field {
                name,
                whole: start..end,
                value,
            });
        }
    }
}

/// The first field called `name` (ASCII case-insensitive) in a header range.
pub(crate) fn find<'a>(msg: &'a [u8], header: Range<usize>, name: &str) -> Option<&'a [u8]> {
    fields(msg, header)
        .find(|f| msg[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| &msg[f.value])
}

/// A field value unfolded (CR and LF removed) and trimmed of surrounding blanks.
pub(crate) fn unfold(value: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&v).to_vec()
}

/// `s` without leading and trailing spaces and tabs.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_header_body() {
        let m = b"A: 1\r\nB: 2\r\n\r\nbody\r\n";
        let (h, b) = split(m, 0..m.len());
        assert_eq!(&m[h], b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(&m[b], b"body\r\n");
        let m = b"\r\nbody";
        let (h, b) = split(m, 0..m.len());
        assert_eq!(&m[h], b"\r\n");
        assert_eq!(&m[b], b"body");
        let m = b"A: 1\r\nB: 2";
        let (h, b) = split(m, 0..m.len());
        assert_eq!(h, 0..m.len());
        assert!(b.is_empty());
    }

    #[test]
    fn field_iteration() {
        let m = b"Subject: a\r\n b\r\nX-Y : z\r\njunk\r\n\r\n";
        let f: Vec<Field> = fields(m, 0..m.len()).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(&m[f[0].name.clone()], b"Subject");
        assert_eq!(&m[f[0].value.clone()], b" a\r\n b");
        assert_eq!(&m[f[0].whole.clone()], b"Subject: a\r\n b\r\n");
        assert_eq!(&m[f[1].name.clone()], b"X-Y");
        assert_eq!(&m[f[2].name.clone()], b"junk");
        assert_eq!(find(m, 0..m.len(), "x-y"), Some(&b" z"[..]));
        assert_eq!(unfold(b" a\r\n b "), b"a b");
    }
}
