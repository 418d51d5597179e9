//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes (RFC 2034).
//!
//! Wire form: every line but the last is `code-text`, the last `code text`, each ended
//! by CR LF; the enhanced code follows the basic code on every line when present
//! (`250-2.1.0 text`). The EHLO reply ([`Reply::ehlo`]) carries no enhanced code, as
//! RFC 2034 §3 wants. Text never breaks the framing: control characters (CR, LF, NUL,
//! TAB …) in a line are replaced by spaces when formatted.

/// A reply: basic code, optional enhanced code, one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit basic code (`250`).
    pub code: u16,
    /// The RFC 3463 enhanced code (`"2.1.0"`), or `None` (EHLO, or when not wanted).
    pub enhanced: Option<String>,
    /// The text lines; an empty list is formatted as one empty line.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply. An empty `enhanced` means none.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply::multi(code, enhanced, vec![text.into()])
    }

    /// A multi-line reply. An empty `enhanced` means none.
    pub fn multi(code: u16, enhanced: &str, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()),
            lines,
        }
    }

    /// The EHLO reply: `250-hostname greeting`, then one line per extension
    /// (`250-SIZE 10240000` …), the last one as `250 EXT`; no enhanced code.
    pub fn ehlo(hostname: &str, greeting: &str, extensions: &[String]) -> Reply {
        let first = if greeting.is_empty() {
            hostname.to_string()
        } else {
            format!("{hostname} {greeting}")
        };
        let mut lines = Vec::with_capacity(1 + extensions.len());
        lines.push(first);
        lines.extend(extensions.iter().cloned());
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }

    /// Wire form: `"250-2.0.0 first\r\n250-2.0.0 ...\r\n250 2.0.0 last\r\n"` (see the
    /// module documentation). Control characters in the text become spaces.
    pub fn to_bytes(&self) -> Vec<u8> {
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        let mut out = Vec::new();
        for (i, text) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let mut line = format!("{:03}{sep}", self.code);
            let mut words = Vec::with_capacity(2);
            if let Some(e) = self.enhanced.as_deref().filter(|e| !e.is_empty()) {
                words.push(e);
            }
            if !text.is_empty() {
                words.push(text);
            }
            line.push_str(&words.join(" "));
            let line: String = line.chars().map(sanitise).collect();
            out.extend_from_slice(line.trim_end_matches(' ').as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

fn sanitise(c: char) -> char {
    if c.is_control() {
        ' '
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_bytes()).expect("utf8")
    }

    #[test]
    fn single_line() {
        assert_eq!(wire(&Reply::new(250, "2.1.0", "Ok")), "250 2.1.0 Ok\r\n");
        assert_eq!(wire(&Reply::new(221, "", "Bye")), "221 Bye\r\n");
        assert_eq!(
            wire(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(wire(&Reply::new(250, "2.0.0", "")), "250 2.0.0\r\n");
        assert_eq!(wire(&Reply::new(250, "", "")), "250\r\n");
        let r = Reply::new(550, "5.1.1", "no such user");
        assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(r.lines, vec!["no such user".to_string()]);
        assert_eq!(Reply::new(250, "", "x").enhanced, None);
    }

    #[test]
    fn multi_line() {
        let r = Reply::multi(
            550,
            "5.7.1",
            vec!["first".into(), "second".into(), "last".into()],
        );
        assert_eq!(
            wire(&r),
            "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 last\r\n"
        );
        let r = Reply::multi(214, "", vec!["a".into(), "b".into()]);
        assert_eq!(wire(&r), "214-a\r\n214 b\r\n");
        assert_eq!(
            wire(&Reply::multi(250, "2.0.0", Vec::new())),
            "250 2.0.0\r\n"
        );
    }

    #[test]
    fn ehlo_format() {
        let exts: Vec<String> = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = Reply::ehlo("mx.example.com", "Petrel", &exts);
        assert_eq!(r.enhanced, None);
        assert_eq!(
            wire(&r),
            "250-mx.example.com Petrel\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        );
        assert_eq!(wire(&Reply::ehlo("mx", "hi", &[])), "250 mx hi\r\n");
        assert_eq!(
            wire(&Reply::ehlo("mx", "", &["DSN".into()])),
            "250-mx\r\n250 DSN\r\n"
        );
    }

    #[test]
    fn text_is_sanitised() {
        let r = Reply::new(550, "5.1.1", "bad\r\n250 2.0.0 Ok\nx\ry\0z\t");
        assert_eq!(wire(&r), "550 5.1.1 bad  250 2.0.0 Ok x y z\r\n");
        let r = Reply::multi(250, "2.0.0", vec!["a\r\nb".into(), "c".into()]);
        assert_eq!(wire(&r), "250-2.0.0 a  b\r\n250 2.0.0 c\r\n");
        let r = Reply::ehlo("host\r\n250 evil", "\n", &["X\rY".into()]);
        assert_eq!(wire(&r), "250-host  250 evil\r\n250 X Y\r\n");
        let r = Reply::new(250, "2.0.0\r\n", "ok");
        let w = wire(&r);
        assert_eq!(w.matches("\r\n").count(), 1);
        assert!(!w.contains('\n') || w.ends_with("\r\n"));
        // Non-ASCII text (SMTPUTF8 addresses echoed back) is kept.
        assert_eq!(
            wire(&Reply::new(250, "2.1.5", "<jösé@x> ok")),
            "250 2.1.5 <jösé@x> ok\r\n"
        );
    }

    #[test]
    fn positive() {
        assert!(Reply::new(250, "2.0.0", "").is_positive());
        assert!(Reply::new(354, "", "").is_positive());
        assert!(Reply::new(334, "", "").is_positive());
        assert!(!Reply::new(421, "4.3.0", "").is_positive());
        assert!(!Reply::new(550, "5.0.0", "").is_positive());
        assert!(!Reply::new(199, "", "").is_positive());
    }
}
